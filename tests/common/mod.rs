//! Shared test helpers: the runtime's (`portbound::testing`: the service
//! in-process, a child process, a raw HTTP/1.1 client), bound to this
//! service's binary and routes.
//!
//! Every port comes from the OS; every wait is a poll with a deadline.

#![allow(dead_code)] // each test binary uses its own subset

pub mod compose;
pub mod dockerfile;
pub mod nginx;
pub mod otlp;
pub mod postgres;
pub mod tls;

use std::path::{Path, PathBuf};

pub use portbound::testing::*;

/// The binary Cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_portbound")
}

/// The service in-process, on a real socket.
pub fn spawn_app() -> TestApp {
    portbound::testing::spawn_app(portbound_service::app::service)
}

/// The service in-process with this configuration.
pub fn spawn_app_with(config: portbound::config::Config) -> TestApp {
    portbound::testing::spawn_app_with(config, portbound_service::app::service)
}

/// `portbound` with the test environment plus `env`, in a scratch directory.
pub fn spawn_binary(env: &[(&str, &str)]) -> Process {
    let dir = scratch_dir("run");
    spawn_binary_with(&[], env, &dir).in_scratch(dir)
}

/// Spawns `portbound ARGS` in `dir`; its output is collected as it comes.
pub fn spawn_binary_with(args: &[&str], env: &[(&str, &str)], dir: &Path) -> Process {
    spawn_program(Path::new(binary()), args, env, dir)
}

/// Spawns `portbound ARGS` in a new scratch directory named after `name`,
/// removed once the process has been stopped.
pub fn spawn_binary_in(args: &[&str], env: &[(&str, &str)], name: &str) -> Process {
    let dir = scratch_dir(name);
    spawn_binary_with(args, env, &dir).in_scratch(dir)
}

/// Runs `portbound ARGS` to completion (it must exit within the deadline);
/// returns (exit code, stdout, stderr).
pub fn run_binary(args: &[&str], env: &[(&str, &str)], dir: &Path) -> (i32, String, String) {
    run_program(Path::new(binary()), args, env, dir)
}

/// An example of the runtime's, which Cargo built beside the tests (`cargo
/// test` at the workspace root builds every member's examples first).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/TEST -> target/debug/examples/NAME
    let debug = exe.parent().and_then(Path::parent).expect("target/debug");
    debug.join("examples").join(name)
}

/// A file of the repository, as text.
pub fn read_repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Polls `f` until it returns `Some`, every 50 ms, failing after
/// [`DEADLINE`] with `what` it waited for.
pub fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
