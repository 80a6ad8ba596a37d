//! portbound: the runtime of a web service that is its own server. It takes
//! its port from the environment, binds it, and starts unchanged on the
//! platforms that hand a process a port (Heroku, Fly.io, Cloud Run, Railway,
//! Render, Kubernetes).
//!
//! A service depends on this crate and keeps only its own code: its routes,
//! its OpenAPI paths, its state and checks. [`Service`] is the front door;
//! the runtime brings the configuration, the listeners, the middleware
//! stack, problem+json errors, the probes, `/api/v1/info`, the docs and the
//! drain, and never names the service it runs.
//!
//! ```no_run
//! use actix_web::{HttpResponse, web};
//!
//! async fn hello() -> HttpResponse {
//!     HttpResponse::Ok().body("hello")
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     portbound::Service::new("hello", "0.1.0")
//!         .configure(|cfg| {
//!             cfg.route("/hello", web::get().to(hello));
//!         })
//!         .run()
//! }
//! ```

#![warn(missing_docs)]

pub mod backing;
pub mod config;
#[cfg(feature = "postgres")]
pub mod database;
#[cfg(feature = "doctor")]
pub mod doctor;
pub mod error;
pub mod healthcheck;
pub mod listener;
#[cfg(feature = "postgres")]
pub mod migrate;
pub mod openapi;
pub mod overload;
pub mod platform;
pub mod routes;
pub mod server;
pub mod service;
pub mod state;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "upstreams")]
pub mod upstream;

pub use service::{BoxError, Service, StopSignal};

/// This runtime's version, as `/api/v1/info` and the startup line report it
/// (`"runtime": "portbound 0.2.0"`), so an operator can tell which platform
/// fixes a deployed service has.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `portbound VERSION`: the runtime that serves, in one string.
pub const RUNTIME: &str = concat!("portbound ", env!("CARGO_PKG_VERSION"));
