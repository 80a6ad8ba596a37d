//! The `portbound` binary: the reference service (`src/app/`) on the
//! runtime. It reads the configuration, binds the port and serves until a
//! stop signal has been drained; `portbound openapi` prints its spec and
//! `portbound healthcheck` probes a running instance.

fn main() -> std::process::ExitCode {
    portbound_service::app::service().run()
}
