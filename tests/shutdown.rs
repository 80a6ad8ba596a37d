//! The platforms' stop contract, on the real binary: SIGTERM and SIGINT both
//! drain; readiness turns 503 at once; the listener closes after
//! SHUTDOWN_DELAY; in-flight requests finish; a second signal stops at once;
//! a drain that runs out of time says how many requests it cut.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{get, slow_request, spawn_binary, wait_refused};

fn drains_on(signal: &str) {
    let mut p = spawn_binary(&[("SHUTDOWN_TIMEOUT", "10")]);
    let addr = p.addr();
    let inflight = slow_request(&p, 1500);
    p.signal(signal);
    p.wait_for_log(&format!("{signal} received: draining"));
    // no new connections once the drain has begun (SHUTDOWN_DELAY=0)
    wait_refused(addr);
    let res = inflight
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("connection"), Some("close"));
    let (status, _) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", p.stdout());
    p.wait_for_log("drain complete: every request finished");
}

#[test]
fn sigterm_drains_in_flight_requests_and_exits_0() {
    drains_on("TERM");
}

#[test]
fn sigint_drains_too() {
    // Fly.io's default kill_signal; actix alone would cut the request.
    drains_on("INT");
}

#[test]
fn during_the_delay_readiness_is_503_but_requests_are_served() {
    let mut p = spawn_binary(&[("SHUTDOWN_DELAY", "1")]);
    let addr = p.addr();
    assert_eq!(get(addr, "/readyz").status, 200);
    let start = Instant::now();
    p.signal("TERM");
    p.wait_for_log("TERM received: draining");
    let ready = get(addr, "/readyz");
    let root = get(addr, "/");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "the checks must run inside the delay"
    );
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "draining");
    assert_eq!(root.status, 200);
    assert_eq!(root.header("connection"), Some("close"));
    let (status, elapsed) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(elapsed + start.elapsed() >= Duration::from_secs(1));
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut p = spawn_binary(&[("SHUTDOWN_TIMEOUT", "25")]);
    let inflight = slow_request(&p, 20_000);
    p.signal("TERM");
    p.wait_for_log("TERM received: draining");
    p.signal("INT");
    let (status, elapsed) = p.wait_exit(Duration::from_secs(5));
    assert!(elapsed < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "128 + SIGINT");
    p.wait_for_log("second stop signal (SIGINT): stopping at once, cutting 1");
    assert!(
        inflight.join().unwrap().is_err(),
        "the slow request was cut"
    );
}

#[test]
fn a_drain_that_runs_out_of_time_exits_on_time_and_counts_the_cut() {
    let mut p = spawn_binary(&[("SHUTDOWN_TIMEOUT", "1")]);
    let inflight = slow_request(&p, 20_000);
    let start = Instant::now();
    p.signal("TERM");
    let (status, _) = p.wait_exit(Duration::from_secs(5));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    assert_eq!(status.code(), Some(0));
    p.wait_for_log("drain timed out after 1 s (SHUTDOWN_TIMEOUT): cutting 1 in-flight request(s)");
    assert!(inflight.join().unwrap().is_err());
}

#[test]
fn an_idle_keep_alive_connection_does_not_hold_the_drain() {
    use std::io::Write;
    let mut p = spawn_binary(&[("SHUTDOWN_TIMEOUT", "10")]);
    let addr: SocketAddr = p.addr();
    let mut idle = std::net::TcpStream::connect(addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let res = common::read_response(&mut idle).unwrap();
    assert_eq!(res.status, 200);
    let start = Instant::now();
    p.signal("TERM");
    let (status, _) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}
