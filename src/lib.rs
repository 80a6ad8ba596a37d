//! portbound: a web service that is its own server. It takes its port from
//! the environment, binds it, and starts unchanged on the platforms that hand
//! a process a port (Heroku, Fly.io, Cloud Run, Railway, Render).
//!
//! The crate has two halves, and the arrow runs one way:
//!
//! - the **runtime**: configuration, listeners, the server and its drain,
//!   telemetry, problem+json errors, the probes, `/api/v1/info` and the
//!   docs. [`Service`] is its front door.
//! - the **app** ([`app`]): this service's own routes and OpenAPI paths. A
//!   service started from this template replaces it; the runtime never
//!   names it.
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     portbound::app::service().run()
//! }
//! ```
//!
//! The binary (`src/main.rs`) is that; tests drive the library through the
//! same functions.

#![warn(missing_docs)]

pub mod app;

pub mod backing;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod listener;
pub mod openapi;
pub mod platform;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;

pub use service::{BoxError, Service, StopSignal};
