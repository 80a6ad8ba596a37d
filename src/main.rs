//! The `portbound` binary: reads the configuration, binds the port and serves
//! until a stop signal has been drained. All the work is in the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use portbound::config::Config;
use portbound::{healthcheck, listener, openapi, server, telemetry};

/// sysexits.h: "configuration error".
const EX_CONFIG: u8 = 78;

/// A web service that is its own server: it reads PORT and serves.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP on PORT (the default).
    Serve,
    /// Probe this instance's /healthz on PORT; exit 0 if healthy, 1 if not.
    Healthcheck,
    /// Print the OpenAPI document.
    Openapi,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", openapi::spec_json());
            ExitCode::SUCCESS
        }
        Command::Healthcheck => match load_config() {
            Err(code) => code,
            Ok(config) => match healthcheck::probe(healthcheck::target(&config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("portbound: unhealthy: {e}");
                    ExitCode::FAILURE
                }
            },
        },
        Command::Serve => match load_config() {
            Err(code) => code,
            Ok(config) => serve(config),
        },
    }
}

fn load_config() -> Result<Config, ExitCode> {
    Config::from_env().map_err(|e| {
        eprint!("portbound: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

fn serve(config: Config) -> ExitCode {
    telemetry::logging::init(
        &config.log_filter,
        config.log_format,
        config.google_cloud_project.clone(),
    );
    // Panics are logged as one line in the chosen format (the request
    // middleware turns a handler's panic into a 500 with the request id).
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    let result = actix_rt::System::new().block_on(async {
        let listeners = listener::bind_listeners(&config).map_err(|e| e.to_string())?;
        let server = server::build(&config, listeners).map_err(|e| e.to_string())?;
        server::log_startup(&config, &server);
        server::serve(&config, server)
            .await
            .map_err(|e| format!("server error: {e}"))
    });
    let code = match result {
        Ok(shutdown) => ExitCode::from(shutdown.exit_code() as u8),
        Err(message) => {
            log::error!("{message}");
            eprintln!("portbound: {message}");
            ExitCode::FAILURE
        }
    };
    telemetry::logging::flush();
    code
}
