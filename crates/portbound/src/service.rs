//! [`Service`]: the builder a service's `main.rs` calls. It takes what is the
//! service's own (routes, OpenAPI paths, shared state, readiness checks,
//! background tasks, drain hooks) and runs it inside the runtime: the
//! configuration, the listeners, the middleware stack, the probes and the
//! drain.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::web;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::Config;
use crate::state::DrainState;

/// The error a readiness check, a background task or a drain hook returns:
/// anything that converts with `?` or `.into()`, a `String` included.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A future the runtime drives on its own thread (it need not be `Send`).
pub(crate) type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// One route-configuring function, run once per worker.
type Configure = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// A readiness check of the service's own.
pub(crate) struct ReadinessCheck {
    pub(crate) name: String,
    pub(crate) run: Rc<dyn Fn() -> LocalFuture<Result<(), BoxError>>>,
}

/// A background task, started with the server.
pub(crate) struct Task {
    pub(crate) name: String,
    pub(crate) run: Box<dyn FnOnce(StopSignal) -> LocalFuture<Result<(), BoxError>>>,
}

/// Work to do once the requests and tasks have finished.
pub(crate) struct DrainHook {
    pub(crate) name: String,
    pub(crate) run: Box<dyn FnOnce() -> LocalFuture<Result<(), BoxError>>>,
}

/// What every worker's app needs of the service: its name, its routes and
/// its OpenAPI document. Shared by all workers.
pub struct AppParts {
    /// The service's name, as `/`, `/api/v1/info`, the log and the metrics
    /// show it.
    pub name: &'static str,
    /// The running version.
    pub version: &'static str,
    configure: Vec<Configure>,
    /// The OpenAPI document: the service's paths and the runtime's.
    pub openapi: utoipa::openapi::OpenApi,
    /// The names of the readiness checks, in their order.
    pub checks: Vec<String>,
}

impl std::fmt::Debug for AppParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppParts")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("configure", &self.configure.len())
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
}

impl AppParts {
    /// Mounts the service's routes and shared state on one worker's app.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        for configure in &self.configure {
            configure(cfg);
        }
    }
}

/// Tells a background task that the drain has begun: finish the work at
/// hand, then return. The drain waits for the task until `SHUTDOWN_TIMEOUT`,
/// then cuts it like a request.
#[derive(Debug, Clone)]
pub struct StopSignal(DrainState);

impl StopSignal {
    pub(crate) fn new(drain: DrainState) -> StopSignal {
        StopSignal(drain)
    }

    /// Resolves when the drain begins (at once if it has).
    pub async fn requested(&self) {
        self.0.wait_draining().await;
    }

    /// Whether the drain has begun.
    pub fn is_requested(&self) -> bool {
        self.0.is_draining()
    }
}

/// A port-bound service: the runtime plus what is the service's own.
///
/// ```no_run
/// use actix_web::{HttpResponse, web};
/// use portbound::Service;
///
/// async fn hello() -> HttpResponse {
///     HttpResponse::Ok().body("hello")
/// }
///
/// fn main() -> std::process::ExitCode {
///     Service::new("hello", "0.1.0")
///         .configure(|cfg| {
///             cfg.route("/hello", web::get().to(hello));
///         })
///         .run()
/// }
/// ```
pub struct Service {
    name: &'static str,
    version: &'static str,
    openapi: Option<utoipa::openapi::OpenApi>,
    configure: Vec<Configure>,
    pub(crate) checks: Vec<ReadinessCheck>,
    pub(crate) tasks: Vec<Task>,
    pub(crate) hooks: Vec<DrainHook>,
    #[cfg(feature = "postgres")]
    migrations: Option<sqlx::migrate::Migrator>,
    #[cfg(feature = "postgres")]
    pub(crate) readiness_query: &'static str,
}

impl Service {
    /// A service with this name and version (usually
    /// `env!("CARGO_PKG_NAME")` and `env!("CARGO_PKG_VERSION")`), serving
    /// the built-in routes until more are added.
    pub fn new(name: &'static str, version: &'static str) -> Service {
        Service {
            name,
            version,
            openapi: None,
            configure: Vec::new(),
            checks: Vec::new(),
            tasks: Vec::new(),
            hooks: Vec::new(),
            #[cfg(feature = "postgres")]
            migrations: None,
            #[cfg(feature = "postgres")]
            readiness_query: "SELECT 1",
        }
    }

    /// The statement `/readyz` runs through the pool to call the database
    /// ready (the `postgres` feature); `SELECT 1` by default. One that reads
    /// the service's own table also turns readiness 503 while the
    /// migrations have not run, or a permission is missing:
    ///
    /// ```ignore
    /// portbound::Service::new("notes", "0.1.0").readiness_query("SELECT 1 FROM notes LIMIT 1")
    /// ```
    ///
    /// It runs in the background on the probe interval, bounded like every
    /// probe, never on a request's path. Keep it cheap: it runs on every
    /// instance every few seconds.
    #[cfg(feature = "postgres")]
    pub fn readiness_query(mut self, sql: &'static str) -> Service {
        self.readiness_query = sql;
        self
    }

    /// The service's migrations, which `SERVICE migrate` applies (the
    /// `postgres` feature). Embed them with sqlx's macro, so the binary
    /// carries them and the release phase needs nothing else:
    ///
    /// ```ignore
    /// portbound::Service::new("notes", "0.1.0").migrations(sqlx::migrate!())
    /// ```
    ///
    /// The web process never applies them: each platform runs `migrate` as a
    /// one-off process in its release phase, so replicas do not race and a
    /// failure stops the deploy.
    #[cfg(feature = "postgres")]
    pub fn migrations(mut self, migrator: sqlx::migrate::Migrator) -> Service {
        self.migrations = Some(migrator);
        self
    }

    /// The service's OpenAPI document (its `info` and its paths). It is
    /// merged with the runtime's paths (`/`, `/healthz`, `/readyz`,
    /// `/api/v1/info`) into the one document `/api-docs/openapi.json` serves
    /// and Swagger UI shows.
    pub fn openapi(mut self, doc: utoipa::openapi::OpenApi) -> Service {
        self.openapi = Some(doc);
        self
    }

    /// Mounts the service's routes (and anything else an actix
    /// `ServiceConfig` takes) inside the middleware stack, so they get
    /// request ids, access lines, metrics and problem+json errors. Runs once
    /// per worker.
    ///
    /// ```
    /// # use actix_web::{HttpResponse, web};
    /// # async fn list() -> HttpResponse { HttpResponse::Ok().finish() }
    /// portbound::Service::new("notes", "0.1.0").configure(|cfg| {
    ///     cfg.route("/api/v1/notes", web::get().to(list));
    /// });
    /// ```
    pub fn configure<F>(mut self, configure: F) -> Service
    where
        F: Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    {
        self.configure.push(Arc::new(configure));
        self
    }

    /// Shares `data` with every worker's handlers, as actix's `app_data`
    /// does: pass a `web::Data<T>` (an `Arc`) and extract it in a handler
    /// with `web::Data<T>`. A database pool or an HTTP client goes here.
    ///
    /// ```
    /// # use actix_web::web;
    /// struct Pool;
    /// portbound::Service::new("notes", "0.1.0").app_data(web::Data::new(Pool));
    /// ```
    pub fn app_data<T>(self, data: T) -> Service
    where
        T: Clone + Send + Sync + 'static,
    {
        self.configure(move |cfg| {
            cfg.app_data(data.clone());
        })
    }

    /// A readiness check of the service's own. It runs in the background
    /// every `SERVICE_PROBE_INTERVAL` (never on a probe's request path), and
    /// its last result joins the backing services in `/readyz` (503 while it
    /// fails), `/api/v1/info` and the metrics. A check that takes longer
    /// than the probe timeout (2 s at most) has failed.
    ///
    /// ```
    /// portbound::Service::new("notes", "0.1.0").readiness("database", || async {
    ///     // e.g. sqlx::query("SELECT 1").execute(&pool).await?;
    ///     Ok::<(), portbound::BoxError>(())
    /// });
    /// ```
    pub fn readiness<F, Fut, E>(mut self, name: &str, check: F) -> Service
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: Into<BoxError>,
    {
        self.checks.push(ReadinessCheck {
            name: name.to_owned(),
            run: Rc::new(move || {
                let fut = check();
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        });
        self
    }

    /// A background task, started with the server. When the drain begins
    /// its [`StopSignal`] resolves; the drain then waits for the task until
    /// `SHUTDOWN_TIMEOUT` (alongside the requests), logs how it ended, and
    /// cuts it if it is still running then.
    ///
    /// ```
    /// use std::time::Duration;
    /// portbound::Service::new("notes", "0.1.0").task("sweeper", |stop| async move {
    ///     loop {
    ///         tokio::select! {
    ///             _ = stop.requested() => return Ok::<(), portbound::BoxError>(()),
    ///             _ = tokio::time::sleep(Duration::from_secs(60)) => { /* sweep */ }
    ///         }
    ///     }
    /// });
    /// ```
    pub fn task<F, Fut, E>(mut self, name: &str, task: F) -> Service
    where
        F: FnOnce(StopSignal) -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: Into<BoxError>,
    {
        self.tasks.push(Task {
            name: name.to_owned(),
            run: Box::new(move |stop| {
                let fut = task(stop);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        });
        self
    }

    /// Work for the end of the drain: it runs after the in-flight requests
    /// and the background tasks have finished, before the process exits,
    /// within what is left of `SHUTDOWN_TIMEOUT`. When a service has hooks,
    /// requests still running are cut early enough to leave them a quarter
    /// of that budget (at most 5 s) even when requests or idle connections
    /// would take it all. Hooks run one after the other, in the order they
    /// were added. Flush a queue or close a pool here.
    ///
    /// ```
    /// portbound::Service::new("notes", "0.1.0").on_drain("flush", || async {
    ///     Ok::<(), portbound::BoxError>(())
    /// });
    /// ```
    pub fn on_drain<F, Fut, E>(mut self, name: &str, hook: F) -> Service
    where
        F: FnOnce() -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: Into<BoxError>,
    {
        self.hooks.push(DrainHook {
            name: name.to_owned(),
            run: Box::new(move || {
                let fut = hook();
                Box::pin(async move { fut.await.map_err(Into::into) })
            }),
        });
        self
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The one OpenAPI document: the service's paths and the runtime's,
    /// with the error responses every operation can return.
    pub fn openapi_doc(&self) -> utoipa::openapi::OpenApi {
        crate::openapi::document(self.name, self.version, self.openapi.clone())
    }

    /// The OpenAPI document as pretty JSON, as `SERVICE openapi` prints it
    /// and as the service's `openapi.json` snapshot holds it.
    pub fn openapi_json(&self) -> String {
        let mut json = self
            .openapi_doc()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        json.push('\n');
        json
    }

    /// What every worker's app needs of the service (its name, routes and
    /// document), for [`crate::state::AppState::new`].
    pub fn parts(&self) -> Arc<AppParts> {
        Arc::new(AppParts {
            name: self.name,
            version: self.version,
            configure: self.configure.clone(),
            openapi: self.openapi_doc(),
            checks: self.checks.iter().map(|c| c.name.clone()).collect(),
        })
    }

    /// Runs the command line: `serve` (the default), `healthcheck`,
    /// `openapi`, `migrate` (the release phase's command) or (with the
    /// `doctor` feature) `doctor`. Returns the
    /// process's exit code: 0 after an orderly stop, 78 for a bad variable
    /// (with a message naming it), 128 + the signal after a forced stop;
    /// `doctor` exits 1 when it finds an error.
    pub fn run(self) -> ExitCode {
        // The command line names this service, not the crate that built it.
        let matches = Cli::command()
            .name(self.name)
            .bin_name(self.name)
            .version(self.version)
            .get_matches_from(arguments());
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        match cli.command.unwrap_or(Command::Serve) {
            Command::Openapi => {
                print!("{}", self.openapi_json());
                ExitCode::SUCCESS
            }
            #[cfg(not(feature = "postgres"))]
            Command::Migrate => {
                // Every manifest's release step runs `migrate`; a build
                // without a database has nothing for it to do.
                println!(
                    "{} migrate: the service has no migrations (built without the `postgres` \
                     feature); nothing to do",
                    self.name
                );
                ExitCode::SUCCESS
            }
            #[cfg(feature = "postgres")]
            Command::Migrate => match load_config(self.name) {
                Err(code) => code,
                Ok(config) => {
                    let from_folder = config.test_migrations.as_deref().map(test_migrations);
                    match from_folder {
                        Some(Err(code)) => code,
                        Some(Ok(migrator)) => {
                            crate::migrate::run(self.name, &config, Some(&migrator))
                        }
                        None => crate::migrate::run(self.name, &config, self.migrations.as_ref()),
                    }
                }
            },
            Command::Healthcheck => match load_config(self.name) {
                Err(code) => code,
                Ok(config) => {
                    let target = crate::healthcheck::target(&config);
                    match crate::healthcheck::probe(target) {
                        Ok(()) => ExitCode::SUCCESS,
                        Err(e) => {
                            eprintln!("{}: unhealthy: {e}", self.name);
                            ExitCode::FAILURE
                        }
                    }
                }
            },
            Command::Serve => match load_config(self.name) {
                Err(code) => code,
                Ok(config) => self.serve(config),
            },
            #[cfg(feature = "doctor")]
            Command::Doctor { format, dir } => {
                // Reads files only: no configuration, no sockets.
                if !dir.is_dir() {
                    eprintln!(
                        "{}: doctor: {} is not a directory",
                        self.name,
                        dir.display()
                    );
                    return ExitCode::from(2);
                }
                // The manifests run the executable, whose name may differ
                // from the service's (`Service::new`'s first argument).
                let binary = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .unwrap_or_else(|| self.name.to_owned());
                let report = crate::doctor::check(&dir, &binary, &self.openapi_doc());
                match format {
                    DoctorFormat::Text => print!("{}", report.to_text()),
                    DoctorFormat::Json => print!("{}", report.to_json()),
                }
                ExitCode::from(report.exit_status())
            }
        }
    }

    /// Serves until a stop signal has been drained: logging, listeners,
    /// server, background work.
    fn serve(self, config: Config) -> ExitCode {
        crate::telemetry::logging::init(
            &config.log_filter,
            config.log_format,
            config.google_cloud_project.clone(),
        );
        // Panics are logged as one line in the chosen format (the request
        // middleware turns a handler's panic into a 500 with the request id).
        std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
        #[cfg(feature = "otel")]
        if let Some(otel) = &config.otel
            && let Err(e) = crate::telemetry::otel::init(
                otel,
                (self.name, self.version),
                config.platform,
                &config.instance,
            )
        {
            eprintln!("{}: {e}", self.name);
            return ExitCode::FAILURE;
        }
        // A build without the exporter says so, rather than send nothing
        // while the platform's settings say traces go somewhere.
        #[cfg(not(feature = "otel"))]
        for variable in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            if std::env::var_os(variable).is_some_and(|v| !v.is_empty()) {
                log::warn!(
                    "{variable} is set, but this build has no trace exporter: nothing is \
                     sent (build with the otel feature)"
                );
            }
        }
        let name = self.name;
        let result = actix_rt::System::new().block_on(async {
            let listeners = crate::listener::bind_listeners(&config).map_err(|e| e.to_string())?;
            let server =
                crate::server::build(&config, listeners, self).map_err(|e| e.to_string())?;
            crate::server::log_startup(&config, &server);
            crate::server::serve(&config, server)
                .await
                .map_err(|e| format!("server error: {e}"))
        });
        let code = match result {
            Ok(shutdown) => ExitCode::from(shutdown.exit_code() as u8),
            Err(message) => {
                log::error!("{message}");
                eprintln!("{name}: {message}");
                ExitCode::FAILURE
            }
        };
        // Off the workers, after the drain: the spans still queued.
        #[cfg(feature = "otel")]
        crate::telemetry::otel::shutdown();
        crate::telemetry::logging::flush();
        code
    }
}

/// The test suite's migrations, read from a folder (`PORTBOUND_TEST_MIGRATIONS`).
#[cfg(feature = "postgres")]
fn test_migrations(dir: &std::path::Path) -> Result<sqlx::migrate::Migrator, ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|_| ExitCode::FAILURE)?;
    runtime
        .block_on(sqlx::migrate::Migrator::new(dir))
        .map_err(|e| {
            eprintln!("PORTBOUND_TEST_MIGRATIONS={}: {e}", dir.display());
            ExitCode::from(EX_CONFIG)
        })
}

/// The command line, without the binary's own path when a platform passes
/// it again as the first argument.
///
/// Release steps are written as one string, `/usr/local/bin/SERVICE
/// migrate`, and the platforms differ on what they do with the image's
/// `ENTRYPOINT` (`/usr/local/bin/SERVICE`): Fly keeps it and passes the
/// string as its arguments (superfly/docs `reference/configuration`,
/// `release_command`), so the binary sees its own path twice. Dropping a
/// first argument that names this executable lets one spelling work whether
/// the entrypoint is kept or replaced.
fn arguments() -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let own = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_owned()));
    if let (Some(own), Some(first)) = (own, args.get(1))
        && std::path::Path::new(first).file_name() == Some(own.as_os_str())
        && std::path::Path::new(first).is_absolute()
    {
        args.remove(1);
    }
    args
}

/// sysexits.h: "configuration error".
const EX_CONFIG: u8 = 78;

fn load_config(name: &str) -> Result<Config, ExitCode> {
    Config::from_env().map_err(|e| {
        eprint!("{name}: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

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
    /// Apply the service's database migrations (DATABASE_DIRECT_URL, else
    /// DATABASE_URL) and exit: the release phase's command.
    Migrate,
    /// Check the deploy manifests in DIR against the platforms' contracts
    /// and this service (port, drain, signals, probe paths, binary); exit 1
    /// if any finding is an error.
    #[cfg(feature = "doctor")]
    Doctor {
        /// `text` for a person, `json` for CI.
        #[arg(long, value_enum, default_value_t = DoctorFormat::Text)]
        format: DoctorFormat,
        /// The service's repository root, where its manifests are.
        #[arg(long, default_value = ".")]
        dir: std::path::PathBuf,
    },
}

/// How `doctor` prints its report.
#[cfg(feature = "doctor")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DoctorFormat {
    /// One block a finding, for a person.
    Text,
    /// One JSON object with a `findings` array, for CI.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builder_keeps_what_it_is_given_in_order() {
        let service = Service::new("svc", "1.2.3")
            .readiness("first", || async { Ok::<(), BoxError>(()) })
            .readiness("second", || async { Err::<(), _>("down") })
            .task("worker", |_| async { Ok::<(), BoxError>(()) })
            .on_drain("flush", || async { Ok::<(), BoxError>(()) })
            .app_data(web::Data::new(7_u32));
        let parts = service.parts();
        assert_eq!((parts.name, parts.version), ("svc", "1.2.3"));
        assert_eq!(parts.checks, ["first", "second"]);
        assert_eq!(parts.configure.len(), 1);
        assert_eq!(service.tasks[0].name, "worker");
        assert_eq!(service.hooks[0].name, "flush");
        assert_eq!(parts.openapi.info.title, "svc");
        assert_eq!(parts.openapi.info.version, "1.2.3");
    }
}
