//! The service's own code: its routes and OpenAPI paths ([`app`]), on the
//! [`portbound`] runtime. `src/main.rs` runs it; the tests start it the same
//! way.

#![warn(missing_docs)]

pub mod app;
