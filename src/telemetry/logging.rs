//! Logging to stdout through `log` and `env_logger`, as 12-factor logs are a
//! stream of events on stdout that the platform collects (env_logger's own
//! default is stderr, and errors only when `RUST_LOG` is unset).

use std::io::Write;

/// Installs the logger with the `RUST_LOG` filter from the configuration.
/// Calling it twice keeps the first logger (tests start many servers).
pub fn init(filter: &str) {
    let _ = env_logger::Builder::new()
        .parse_filters(filter)
        .target(env_logger::Target::Stdout)
        .format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        })
        .try_init();
}
