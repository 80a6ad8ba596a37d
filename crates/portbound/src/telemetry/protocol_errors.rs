//! Clients' protocol mistakes that actix logs as errors, brought down to
//! `info`, collapsed, and counted.
//!
//! actix-http logs a malformed request head ("stream error: request parse
//! error: ...") and a bad WebSocket frame ("Unfinished fragment") at ERROR,
//! with no request id. Any scanner could then write ERROR lines at will (on
//! Cloud Run they page as severity ERROR) and grow the log without bound.
//! The rule here: a client's mistake is never logged above `info`; of each
//! kind at most one line a minute is written, saying how many were counted
//! since the last; and every one is counted in
//! `http_protocol_errors_total{kind}`. ERROR stays for faults of the
//! service itself.
//!
//! actix's events reach `log` through `tracing`'s log bridge under their
//! module path (no tracing subscriber is installed), so [`Relevel`] sits
//! between `log` and the real logger and looks at Error and Warn records
//! of `actix_http` and `actix_server` only.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, Log, Metadata, Record};

/// What the client got wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A request head that does not parse (bad bytes, duplicate
    /// Content-Length, obs-fold, a bad version...).
    Parse,
    /// A request head with more than 96 fields or over actix's 128 KiB.
    HeadTooLarge,
    /// The connection broke under us (a reset, a half-sent body).
    Io,
    /// The client was too slow to send its head or to close.
    Timeout,
    /// A WebSocket frame that breaks RFC 6455.
    WebSocket,
}

impl Kind {
    const ALL: [Kind; 5] = [
        Kind::Parse,
        Kind::HeadTooLarge,
        Kind::Io,
        Kind::Timeout,
        Kind::WebSocket,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Parse => "parse",
            Kind::HeadTooLarge => "head_too_large",
            Kind::Io => "io",
            Kind::Timeout => "timeout",
            Kind::WebSocket => "websocket",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a record is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A client's mistake: counted, and logged at `info` at most once an
    /// interval.
    Client(Kind),
    /// Our own doing: the accept loop's EINVAL once the drain has shut the
    /// listening socket for reading. Logged at `debug`.
    Ours,
}

/// Seconds in which at most one line of each kind is written.
pub const INTERVAL_SECS: u64 = 60;

static COUNTS: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// The interval (seconds since the epoch / INTERVAL_SECS, plus one) in
/// which each kind last wrote a line; 0 for never.
static LOGGED_IN: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Counted but not written since the last line, per kind.
static QUIET: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];
/// Set when the drain shuts the listening sockets for reading.
static LISTENERS_SHUT: AtomicBool = AtomicBool::new(false);

/// Says that the drain is about to shut the listening sockets, so that the
/// accept loop's EINVAL that follows is known to be ours.
pub fn listeners_shut() {
    LISTENERS_SHUT.store(true, Ordering::Release);
}

/// Every kind with its count so far, for the metrics.
pub fn counts() -> impl Iterator<Item = (&'static str, u64)> {
    Kind::ALL
        .iter()
        .map(|k| (k.label(), COUNTS[k.index()].load(Ordering::Relaxed)))
}

/// Sorts a record of actix's by its target and message; None for what is
/// not a client's mistake (a fault of the service keeps its level).
pub fn classify(target: &str, message: &str) -> Option<Class> {
    if target.starts_with("actix_server::accept") {
        return (message.starts_with("Error accepting connection")
            && message.contains("os error 22")
            && LISTENERS_SHUT.load(Ordering::Acquire))
        .then_some(Class::Ours);
    }
    if target.starts_with("actix_http::ws") {
        // "Unfinished fragment", "Received ... frame" and the like; the
        // "This is a bug" line is ours, not the client's.
        return (!message.contains("This is a bug")).then_some(Class::Client(Kind::WebSocket));
    }
    if !target.starts_with("actix_http::h1") && !target.starts_with("actix_http::h2") {
        return None;
    }
    // actix-http's DispatchError Display texts, after "stream error: ".
    // "request parse error: message head is too large" is actix's
    // ParseError::TooLarge: more than 96 header fields or a head over its
    // 128 KiB buffer.
    let kind = if message.contains("message head is too large") {
        Kind::HeadTooLarge
    } else if message.contains("request parse error") {
        Kind::Parse
    } else if message.contains("I/O error")
        || message.contains("Send data error")
        || message.contains("handler dropped payload")
    {
        Kind::Io
    } else if message.contains("did not complete within") || message.contains("shutdown timeout") {
        Kind::Timeout
    } else {
        return None;
    };
    Some(Class::Client(kind))
}

/// Counts one mistake of `kind` at `now_secs`. Returns how many went
/// unwritten before it when this one is to be written, None when it is only
/// counted.
pub fn admit(kind: Kind, now_secs: u64) -> Option<u64> {
    let i = kind.index();
    COUNTS[i].fetch_add(1, Ordering::Relaxed);
    let interval = now_secs / INTERVAL_SECS + 1;
    let last = LOGGED_IN[i].load(Ordering::Relaxed);
    if last != interval
        && LOGGED_IN[i]
            .compare_exchange(last, interval, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        Some(QUIET[i].swap(0, Ordering::Relaxed))
    } else {
        QUIET[i].fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A `log::Log` that re-levels actix's records of clients' mistakes and
/// passes everything else to `inner` untouched.
pub struct Relevel<L> {
    inner: L,
}

impl<L: Log> Relevel<L> {
    /// Wraps `inner`, which writes what passes.
    pub fn new(inner: L) -> Relevel<L> {
        Relevel { inner }
    }
}

fn watched(metadata: &Metadata<'_>) -> bool {
    metadata.level() <= Level::Warn && metadata.target().starts_with("actix_")
}

impl<L: Log> Log for Relevel<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Counted even when the filter would not show them.
        watched(metadata) || self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !watched(record.metadata()) {
            return self.inner.log(record);
        }
        let message = record.args().to_string();
        match classify(record.target(), &message) {
            None => self.inner.log(record),
            Some(Class::Ours) => self.inner.log(
                &Record::builder()
                    .level(Level::Debug)
                    .target(record.target())
                    .args(format_args!(
                        "{message} (the drain shut this listening socket; expected)"
                    ))
                    .build(),
            ),
            Some(Class::Client(kind)) => {
                if let Some(quiet) = admit(kind, now_secs()) {
                    self.inner.log(
                        &Record::builder()
                            .level(Level::Info)
                            .target(record.target())
                            .args(format_args!(
                                "client protocol error ({}): {message}; {quiet} more since the \
                                 last such line (at most one a minute; all are counted in \
                                 http_protocol_errors_total)",
                                kind.label()
                            ))
                            .build(),
                    );
                }
            }
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn actix_messages_sort_into_kinds() {
        let h1 = "actix_http::h1::dispatcher";
        for (message, kind) in [
            (
                "stream error: request parse error: invalid Header provided",
                Kind::Parse,
            ),
            (
                "stream error: request parse error: message head is too large",
                Kind::HeadTooLarge,
            ),
            (
                "stream error: I/O error: Connection reset by peer",
                Kind::Io,
            ),
            (
                "stream error: request did not complete within the specified timeout",
                Kind::Timeout,
            ),
        ] {
            assert_eq!(
                classify(h1, message),
                Some(Class::Client(kind)),
                "{message}"
            );
        }
        assert_eq!(
            classify("actix_http::ws::codec", "Unfinished fragment Text"),
            Some(Class::Client(Kind::WebSocket))
        );
        // Faults of the service keep their level.
        for message in [
            "stream error: service error",
            "Internal server error: unexpected eof",
            "stream error: body error: oops",
        ] {
            assert_eq!(classify(h1, message), None, "{message}");
        }
        assert_eq!(
            classify("actix_http::ws::proto", "invalid opcode. This is a bug."),
            None
        );
        assert_eq!(classify("portbound::server", "request parse error"), None);
    }

    #[test]
    fn the_accept_error_is_ours_only_once_the_drain_shut_the_socket() {
        let target = "actix_server::accept";
        let einval = "Error accepting connection: Invalid argument (os error 22)";
        assert_eq!(classify(target, einval), None, "before the drain");
        listeners_shut();
        assert_eq!(classify(target, einval), Some(Class::Ours));
        assert_eq!(
            classify(
                target,
                "Error accepting connection: Too many open files (os error 24)"
            ),
            None
        );
    }

    #[test]
    fn one_line_an_interval_and_every_one_counted() {
        let kind = Kind::Timeout;
        let before = COUNTS[kind.index()].load(Ordering::Relaxed);
        let t = 1_000 * INTERVAL_SECS;
        let written: Vec<Option<u64>> = (0..100).map(|i| admit(kind, t + i % 30)).collect();
        assert_eq!(written[0], Some(0));
        assert!(written[1..].iter().all(Option::is_none));
        // The next interval writes one line, carrying the 99 it kept quiet.
        assert_eq!(admit(kind, t + INTERVAL_SECS), Some(99));
        assert_eq!(admit(kind, t + INTERVAL_SECS + 1), None);
        assert_eq!(COUNTS[kind.index()].load(Ordering::Relaxed) - before, 102);
    }

    /// A logger that keeps what reaches it.
    #[derive(Default)]
    struct Keep(Mutex<Vec<(Level, String, String)>>);

    impl Log for Keep {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            m.level() <= Level::Info
        }
        fn log(&self, r: &Record<'_>) {
            if self.enabled(r.metadata()) {
                self.0.lock().unwrap().push((
                    r.level(),
                    r.target().to_owned(),
                    r.args().to_string(),
                ));
            }
        }
        fn flush(&self) {}
    }

    fn record(logger: &impl Log, level: Level, target: &str, message: &str) {
        logger.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        );
    }

    #[test]
    fn a_flood_of_parse_errors_writes_one_info_line() {
        let logger = Relevel::new(Keep::default());
        let target = "actix_http::h1::dispatcher";
        assert!(
            logger.enabled(
                &Metadata::builder()
                    .level(Level::Error)
                    .target(target)
                    .build()
            )
        );
        let before = COUNTS[Kind::Parse.index()].load(Ordering::Relaxed);
        for _ in 0..1000 {
            record(
                &logger,
                Level::Error,
                target,
                "stream error: request parse error: invalid Header provided",
            );
        }
        record(&logger, Level::Error, target, "stream error: service error");
        record(&logger, Level::Info, "portbound::server", "hello");
        let kept = logger.inner.0.lock().unwrap();
        let parse: Vec<_> = kept
            .iter()
            .filter(|(_, _, m)| m.contains("parse error"))
            .collect();
        // One line, or two if the minute turned during the loop.
        assert!((1..=2).contains(&parse.len()), "{parse:?}");
        assert!(
            parse.iter().all(
                |(l, _, m)| *l == Level::Info && m.starts_with("client protocol error (parse)")
            )
        );
        assert!(
            kept.iter()
                .any(|(l, _, m)| *l == Level::Error && m == "stream error: service error")
        );
        assert!(
            kept.iter()
                .any(|(l, _, m)| *l == Level::Info && m == "hello")
        );
        assert!(COUNTS[Kind::Parse.index()].load(Ordering::Relaxed) - before >= 1000);
    }
}
