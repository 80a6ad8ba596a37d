//! HTTP/1.1 conformance over raw sockets, against the built binary: what a
//! client can make the service log, and how it answers requests RFC 9110 and
//! RFC 9112 say something about. Each case checks the status, the body's
//! type and whether the connection was closed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{DEADLINE, Process, metrics_addr, sample, scrape, spawn_binary};

/// Sends raw bytes on a new connection and reads until the server closes
/// it or goes quiet; returns everything it sent back.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lines at WARN or above in a text log, but for the test-routes notice the
/// test binary always prints.
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains("PORTBOUND_TEST_ROUTES"))
        .collect()
}

/// Malformed heads a scanner sends: a bad header byte, obs-fold, a bad
/// version, duplicate Content-Length, CL and TE together.
const MALFORMED: [&[u8]; 5] = [
    b"GET / HTTP/1.1\r\nHost: t\r\nBad\x01Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /api/v1/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

#[test]
fn a_flood_of_malformed_requests_writes_no_error_and_is_counted() {
    let p = spawn_binary(&[("METRICS_PORT", "0"), ("LOG_FORMAT", "text")]);
    let addr = p.addr();
    let metrics = metrics_addr(&p);
    let rounds = 40;
    for _ in 0..rounds {
        for bytes in MALFORMED {
            let reply = exchange(addr, bytes);
            assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
        }
    }
    let total = (rounds * MALFORMED.len()) as f64;
    let text = scrape(metrics);
    let parse = sample(&text, r#"http_protocol_errors_total{kind="parse"}"#);
    assert_eq!(parse, Some(total), "{text}");

    // One summary line at info for the whole flood, no more.
    let log = p.stdout();
    assert!(loud_lines(&log).is_empty(), "{:?}", loud_lines(&log));
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("client protocol error (parse)"))
        .collect();
    assert!((1..=2).contains(&lines.len()), "{lines:?}");
    assert!(lines[0].contains(" INFO "), "{}", lines[0]);
}

#[test]
fn with_rust_log_warn_a_malformed_request_writes_nothing() {
    let p = spawn_binary(&[
        ("RUST_LOG", "warn,portbound::server=info"),
        ("LOG_FORMAT", "text"),
    ]);
    let addr = p.addr();
    for bytes in MALFORMED {
        exchange(addr, bytes);
    }
    // A well-formed request after them is answered, so the malformed ones
    // were all handled first.
    assert_eq!(common::get(addr, "/healthz").status, 200);
    let log = p.stdout();
    assert!(loud_lines(&log).is_empty(), "{log}");
    assert!(!log.contains("parse error"), "{log}");
}

fn drain_and_read_log(mut p: Process) -> String {
    p.signal("TERM");
    let (status, _) = p.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", p.stdout());
    p.wait_for_log("drain complete");
    format!("{}\n{}", p.stdout(), p.stderr())
}

#[test]
fn a_graceful_stop_logs_no_error() {
    let p = spawn_binary(&[("LOG_FORMAT", "text"), ("RUST_LOG", "debug")]);
    assert_eq!(common::get(p.addr(), "/").status, 200);
    let log = drain_and_read_log(p);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:?}");
}
