//! portbound: a web service that is its own server. It takes its port from
//! the environment, binds it, and starts unchanged on the platforms that hand
//! a process a port (Heroku, Fly.io, Cloud Run, Railway, Render).
//!
//! The binary (`src/main.rs`) is thin; tests drive this library through the
//! same functions it calls.

pub mod backing;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod listener;
pub mod openapi;
pub mod platform;
pub mod routes;
pub mod server;
pub mod state;
pub mod telemetry;

/// The crate version, shown in logs, `/` and `/api/v1/info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
