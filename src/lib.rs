//! The reference service: the [`portbound`] runtime with this package's own
//! routes ([`app`]). `src/main.rs` runs it; the tests start it the same way.

#![warn(missing_docs)]

pub mod app;
