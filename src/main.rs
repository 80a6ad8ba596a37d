//! The service's binary: its routes (`src/app/`) on the runtime. It reads the
//! configuration, binds the port and serves until a stop signal has been
//! drained; the `openapi`, `healthcheck` and `doctor` commands print the
//! spec, probe a running instance and check the deploy manifests.

fn main() -> std::process::ExitCode {
    portbound_service::app::service().run()
}
