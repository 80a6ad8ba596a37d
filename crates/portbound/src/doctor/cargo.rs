//! The carried actix-http: the service's `Cargo.toml` must patch
//! `actix-http` (`[patch.crates-io]`), and `Cargo.lock` must then hold an
//! actix-http that does not come from crates.io (`actix-http-patch`).
//!
//! Cargo reads `[patch]` only at the workspace root, so a service built on
//! the runtime carries the entry itself: without it, the runtime builds
//! against actix-http as published and loses the fixes the runtime's
//! vendor/README.md lists. A warning: the service works, with weaker
//! protocol behaviour.

use super::locate::{Key, toml_line};
use super::{Ctx, Finding};

const MANIFEST: &str = "Cargo.toml";
const LOCK: &str = "Cargo.lock";
const SOURCE: &str =
    "https://doc.rust-lang.org/cargo/reference/overriding-dependencies.html#the-patch-section";

/// What a build without the patch loses (vendor/README.md's table).
const LOST: &str = "HTTP/2 SETTINGS limits (100 concurrent streams, a 64 KiB header list), the \
                    lingering close that shuts the write half first, `100 Continue` sent only \
                    when the body is read, and problem+json bodies on the dispatcher's own 400, \
                    431 and 408";

/// Checks Cargo.toml's patch and Cargo.lock's actix-http.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let Some(text) = ctx.read(MANIFEST) else {
        return;
    };
    let manifest = match toml::from_str::<toml::Table>(&text) {
        Ok(m) => m,
        Err(e) => {
            let line = e
                .span()
                .map(|s| super::locate::line_of_offset(&text, s.start));
            ctx.push(
                Finding::error("parse-error", MANIFEST, line)
                    .message(format!("{MANIFEST} does not parse: {}", e.message()))
                    .platform("cargo, and so every platform's image build, rejects it")
                    .source("https://doc.rust-lang.org/cargo/reference/manifest.html")
                    .fix(format!("correct the syntax of {MANIFEST}")),
            );
            return;
        }
    };
    let patched = manifest
        .get("patch")
        .and_then(|p| p.get("crates-io"))
        .and_then(|p| p.get("actix-http"))
        .is_some();
    let problem = if !patched {
        Some((
            format!("{MANIFEST} has no [patch.crates-io] actix-http entry"),
            toml_line(&text, &[Key("patch"), Key("crates-io")]),
        ))
    } else {
        ctx.read(LOCK).and_then(|lock| {
            locked_from_crates_io(&lock).map(|line| {
                (
                    format!(
                        "{MANIFEST} patches actix-http, but {LOCK} still locks actix-http from \
                         crates.io"
                    ),
                    Some(line),
                )
            })
        })
    };
    if let Some((message, line)) = problem {
        let file = if patched { LOCK } else { MANIFEST };
        ctx.push(
            Finding::warning("actix-http-patch", file, line)
                .message(message)
                .platform(format!(
                    "cargo applies [patch] only from the workspace root's Cargo.toml, so the \
                     runtime is built against actix-http as published and loses: {LOST}"
                ))
                .source(SOURCE)
                .fix(format!(
                    "add `[patch.crates-io] actix-http = {{ git = \"{REPOSITORY}\", tag = \"v{}\" }}` \
                     (the same source as the runtime: its carried copy, vendor/README.md; a path \
                     to a checkout's vendor/actix-http works too) and run `cargo update -p \
                     actix-http`",
                    crate::VERSION
                )),
        );
    }
}

/// Where the runtime and its carried actix-http are published.
const REPOSITORY: &str = "https://github.com/portbound/portbound";

/// The line of a `[[package]] name = "actix-http"` whose `source` is the
/// crates.io registry, if Cargo.lock has one.
fn locked_from_crates_io(lock: &str) -> Option<usize> {
    let lines: Vec<&str> = lock.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() == "name = \"actix-http\"" {
            let start = i;
            let mut j = i + 1;
            while j < lines.len() && !lines[j].trim().is_empty() && !lines[j].starts_with("[[") {
                if lines[j].starts_with("source = \"registry+") {
                    return Some(start + 1);
                }
                j += 1;
            }
            i = j;
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_actix_http_from_crates_io_is_found() {
        let patched = "[[package]]\nname = \"actix-http\"\nversion = \"3.19.0\"\ndependencies = [\n \"bytes\",\n]\n";
        assert_eq!(locked_from_crates_io(patched), None);
        let published = "[[package]]\nname = \"actix-codec\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n\n[[package]]\nname = \"actix-http\"\nversion = \"3.19.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n";
        assert_eq!(locked_from_crates_io(published), Some(6));
    }
}
