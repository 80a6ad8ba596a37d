//! Zero-downtime deploys, on the real binary: a rolling restart of two
//! instances behind the shipped nginx configuration while a steady load runs
//! through it (with and without the Kubernetes-style `SHUTDOWN_DELAY`), and a
//! single instance drained while many requests are in flight, including a
//! drain that runs out of `SHUTDOWN_TIMEOUT`.
//!
//! Every port comes from the OS, every wait is a poll with a deadline, and
//! every load loop is bounded in requests and in time. The figures each test
//! measures are printed (`cargo test --test deploys -- --nocapture`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::nginx::{Nginx, nginx_conf, start_nginx};
use common::{DEADLINE, Process, scratch_dir, spawn_binary, spawn_binary_in};

// ---------------------------------------------------------------------------
// A minimal keep-alive HTTP/1.1 client that insists on complete responses
// ---------------------------------------------------------------------------

/// One complete response: its status, whether it closes the connection, and
/// its body.
struct Reply {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Writes `request` and reads exactly one response. Anything short of a
/// complete response (no bytes, a cut head, a body shorter than its
/// `Content-Length`) is an error that says how far it got.
fn exchange(stream: &mut TcpStream, request: &[u8]) -> Result<Reply, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("closed after {} bytes of the head", buf.len())),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read after {} bytes of the head: {e}", buf.len())),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let mut length = None;
    let mut close = false;
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => return Err(format!("unexpected transfer-encoding {value}")),
            _ => {}
        }
    }
    let length = length.ok_or_else(|| format!("no content-length: {head:?}"))?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("body cut at {} of {length} bytes", body.len())),
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("body cut at {} of {length} bytes: {e}", body.len())),
        }
    }
    if body.len() != length {
        return Err(format!(
            "{} body bytes for a length of {length}",
            body.len()
        ));
    }
    Ok(Reply {
        status,
        close,
        body,
    })
}

fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The three kinds of request in the load: 5 in 10 `GET /`, 2 in 10
/// `GET /api/v1/info`, 3 in 10 `POST /__test/echo`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Root,
    Info,
    Echo,
}

impl Kind {
    fn of(i: usize) -> Kind {
        match i % 10 {
            0..=4 => Kind::Root,
            5 | 6 => Kind::Info,
            _ => Kind::Echo,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A request of `kind` with its own id (nginx keeps ids of 20 to 200
/// `[A-Za-z0-9+/=-]`, so it reaches the app and its access log).
fn build_request(kind: Kind, id: &str, close: bool) -> Vec<u8> {
    let connection = if close { "close" } else { "keep-alive" };
    match kind {
        Kind::Root | Kind::Info => {
            let path = if kind == Kind::Root {
                "/"
            } else {
                "/api/v1/info"
            };
            format!(
                "GET {path} HTTP/1.1\r\nHost: deploys\r\nX-Request-ID: {id}\r\n\
                 Connection: {connection}\r\n\r\n"
            )
            .into_bytes()
        }
        Kind::Echo => {
            let body = format!(r#"{{"message":"{id}"}}"#);
            format!(
                "POST /__test/echo HTTP/1.1\r\nHost: deploys\r\nX-Request-ID: {id}\r\n\
                 Connection: {connection}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
    }
}

/// Checks a response to a request of `kind` with id `id`; returns the port
/// `/api/v1/info` reported, if that was the request.
fn check_reply(kind: Kind, id: &str, reply: &Reply) -> Result<Option<u16>, String> {
    if reply.status != 200 {
        return Err(format!("status {}: {}", reply.status, reply.text()));
    }
    let json: serde_json::Value = serde_json::from_slice(&reply.body)
        .map_err(|e| format!("not JSON ({e}): {}", reply.text()))?;
    match kind {
        Kind::Root if json["status"] == "healthy" => Ok(None),
        Kind::Info => json["ports"][0]
            .as_u64()
            .map(|p| Some(p as u16))
            .ok_or_else(|| format!("no port: {json}")),
        Kind::Echo if json["body"]["message"] == id => Ok(None),
        _ => Err(format!("unexpected body: {json}")),
    }
}

// ---------------------------------------------------------------------------
// A steady, bounded load through nginx
// ---------------------------------------------------------------------------

/// Upper bounds of every load loop.
const LOAD_TIME_LIMIT: Duration = Duration::from_secs(150);
const LOAD_REQUESTS_PER_CLIENT: usize = 60_000;
/// The pause between two requests of one client: a steady load that leaves
/// a 2-core machine room for nginx and two instances.
const PACE: Duration = Duration::from_millis(2);

/// What one client thread saw, and (summed by `Load::finish`) all of them.
#[derive(Default)]
struct LoadReport {
    sent: usize,
    completed: usize,
    by_kind: [usize; 3],
    failures: Vec<String>,
    /// (when the response arrived, the port `/api/v1/info` reported).
    info_ports: Vec<(Instant, u16)>,
}

struct Load {
    stop: Arc<AtomicBool>,
    completed: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    clients: Vec<JoinHandle<LoadReport>>,
    started: Instant,
}

impl Load {
    /// `clients` threads, each on its own keep-alive connection to `addr`
    /// (reconnecting only when a response says `Connection: close` or an
    /// exchange fails), until stopped or a bound is reached.
    fn start(addr: SocketAddr, clients: usize, tag: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let completed = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let clients = (0..clients)
            .map(|c| {
                let (stop, completed, failed) = (stop.clone(), completed.clone(), failed.clone());
                thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let mut conn: Option<TcpStream> = None;
                    for i in 0..LOAD_REQUESTS_PER_CLIENT {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > LOAD_TIME_LIMIT {
                            break;
                        }
                        let kind = Kind::of(i);
                        let id = format!("deploys-{tag}-c{c}-{i:06}");
                        let request = build_request(kind, &id, false);
                        report.sent += 1;
                        let at = started.elapsed();
                        let outcome = match conn.as_mut() {
                            Some(stream) => Ok(stream),
                            None => connect(addr)
                                .map(|s| conn.insert(s))
                                .map_err(|e| format!("connect to nginx: {e}")),
                        }
                        .and_then(|stream| exchange(stream, &request))
                        .and_then(|reply| {
                            check_reply(kind, &id, &reply).map(|port| (port, reply.close))
                        });
                        match outcome {
                            Ok((port, close)) => {
                                report.completed += 1;
                                report.by_kind[kind.index()] += 1;
                                completed.fetch_add(1, Ordering::Relaxed);
                                if let Some(port) = port {
                                    report.info_ports.push((Instant::now(), port));
                                }
                                if close {
                                    conn = None;
                                }
                            }
                            Err(e) => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                report.failures.push(format!(
                                    "{:>8.3}s {kind:?} request_id={id}: {e}",
                                    at.as_secs_f64()
                                ));
                                conn = None;
                            }
                        }
                        thread::sleep(PACE);
                    }
                    report
                })
            })
            .collect();
        Load {
            stop,
            completed,
            failed,
            clients,
            started,
        }
    }

    fn completed(&self) -> usize {
        self.completed.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests than now have completed (the load is
    /// moving), failing if it stalls.
    fn wait_progress(&self, n: usize) {
        let target = self.completed() + n;
        let deadline = Instant::now() + DEADLINE;
        while self.completed() < target {
            assert!(
                Instant::now() < deadline,
                "the load stalled at {} completed, {} failed",
                self.completed(),
                self.failed.load(Ordering::Relaxed)
            );
            assert!(
                self.started.elapsed() < LOAD_TIME_LIMIT,
                "the load reached its time limit"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn finish(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        for client in std::mem::take(&mut self.clients) {
            let r = client.join().expect("a load client panicked");
            total.sent += r.sent;
            total.completed += r.completed;
            for (t, n) in total.by_kind.iter_mut().zip(r.by_kind) {
                *t += n;
            }
            total.failures.extend(r.failures);
            total.info_ports.extend(r.info_ports);
        }
        total.failures.sort();
        total
    }
}

impl Drop for Load {
    /// A test that fails midway stops its clients too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Access lines an instance wrote (every request it answered, probes aside).
fn served(p: &Process) -> usize {
    p.stdout().matches("portbound::access:").count()
}

/// Polls until nginx has routed at least one request to `p`: the new
/// instance is in the load balancer's rotation. nginx skips an address for
/// `fail_timeout` (10 s) after it refused three connections, so this can
/// take that long.
fn wait_in_rotation(p: &Process, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while served(p) == 0 {
        assert!(
            Instant::now() < deadline,
            "nginx never routed a request to {name}:\n{}",
            p.stdout()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn spawn_instance(name: &str, env: &[(&str, &str)]) -> Process {
    let p = spawn_binary_in(&[], env, &format!("deploys-{name}"));
    p.wait_for_log(" listening on http://");
    p
}

/// nginx's access log: how many requests it sent to a second instance after
/// the first failed (`upstream=a, b`), and every line answered with a status
/// other than 200.
fn nginx_retries_and_errors(nginx: &Nginx) -> (usize, Vec<String>) {
    let log = nginx.0.stdout();
    let retried = log
        .lines()
        .filter(|l| {
            l.contains("upstream=")
                && l.split("upstream=")
                    .nth(1)
                    .is_some_and(|u| u.split(' ').next().is_some_and(|a| a.ends_with(',')))
        })
        .count();
    let errors = log
        .lines()
        .filter(|l| !l.contains("\" 200 "))
        .map(str::to_owned)
        .collect();
    (retried, errors)
}

// ---------------------------------------------------------------------------
// Rolling restart behind nginx
// ---------------------------------------------------------------------------

/// Two instances, A and B, behind the shipped nginx.conf; a steady load
/// through nginx; then A is replaced by A2 and B by B2 as an orchestrator
/// does it: the replacement is started and taken into rotation first, then
/// the old instance gets SIGTERM and drains.
///
/// The load balancer knows three upstream slots from the start (A, B, and a
/// port reserved for A2); B2 takes the slot A freed. nginx is never reloaded:
/// a reload replaces nginx's workers, which close their clients' keep-alive
/// connections without `Connection: close`, and that would measure nginx, not
/// the app. nginx learns of a stopped instance the way the shipped
/// configuration describes: its listener refuses, and the request moves to
/// the next instance (`proxy_next_upstream error`).
///
/// `during_delay` runs as soon as the old instance has logged the signal,
/// with the time it was sent: its `SHUTDOWN_DELAY`, if `env` sets one, is
/// under way.
///
/// (B2 reuses A's port once A has exited; like `common::free_port`, that
/// leaves a small chance that another process takes the port first.)
fn rolling_restart(
    tag: &'static str,
    env: &[(&str, &str)],
    mut during_delay: impl FnMut(&Process, &Load, Instant),
) -> LoadReport {
    let mut a = spawn_instance("a", env);
    let mut b = spawn_instance("b", env);
    let (port_a, port_b) = (a.port(), b.port());
    let port_a2 = common::free_port();
    let listen = common::free_port();
    let dir = scratch_dir(&format!("deploys-nginx-{tag}"));
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(&[port_a, port_b, port_a2], listen, &dir),
    )
    .unwrap();
    let mut nginx = start_nginx(&dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    nginx.wait_answering(addr, "/healthz");

    let load = Load::start(addr, 4, tag);
    load.wait_progress(200);
    wait_in_rotation(&a, "A");
    wait_in_rotation(&b, "B");

    let mut replace = |old: &mut Process, old_name: &str, port: u16, new_name: &str| {
        let port = port.to_string();
        let mut new_env = env.to_vec();
        new_env.push(("PORT", &port));
        let new = spawn_instance(new_name, &new_env);
        wait_in_rotation(&new, new_name);
        load.wait_progress(100);
        let start = Instant::now();
        old.signal("TERM");
        old.wait_for_log("TERM received: draining");
        during_delay(old, &load, start);
        let (status, _) = old.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{old_name}:\n{}", old.stdout());
        old.wait_for_log("drain complete: every request finished");
        println!(
            "{tag}: {old_name} stopped {} ms after SIGTERM",
            start.elapsed().as_millis()
        );
        // The load goes on through the instances left.
        load.wait_progress(200);
        new
    };
    let a2 = replace(&mut a, "A", port_a2, "A2");
    let b2 = replace(&mut b, "B", port_a, "B2");
    load.wait_progress(200);
    let report = load.finish();

    let (retried, nginx_errors) = nginx_retries_and_errors(&nginx);
    let served = [
        ("A".to_owned(), served(&a)),
        ("B".to_owned(), served(&b)),
        ("A2".to_owned(), served(&a2)),
        ("B2".to_owned(), served(&b2)),
    ];
    println!(
        "{tag}: {} requests sent, {} completed, {} failed \
         (GET / {}, GET /api/v1/info {}, POST /__test/echo {} completed); \
         served by {}; nginx moved {retried} request(s) to the next instance",
        report.sent,
        report.completed,
        report.failures.len(),
        report.by_kind[0],
        report.by_kind[1],
        report.by_kind[2],
        served
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    if !report.failures.is_empty() {
        println!("{tag}: failures:\n{}", report.failures.join("\n"));
        println!(
            "{tag}: nginx answered other than 200:\n{}",
            nginx_errors.join("\n")
        );
        let after_connect: Vec<String> = nginx
            .0
            .stderr()
            .lines()
            .filter(|l| !l.contains("connect() failed") && !l.contains("temporarily disabled"))
            .map(str::to_owned)
            .collect();
        println!(
            "{tag}: nginx errors other than a refused connection:\n{}",
            after_connect.join("\n")
        );
    }
    assert_eq!(
        report.failures.len(),
        0,
        "{} of {} requests failed:\n{}",
        report.failures.len(),
        report.sent,
        report.failures.join("\n")
    );
    assert_eq!(report.completed, report.sent);
    for (name, count) in &served {
        assert!(*count > 0, "{name} served no request");
    }
    report
}

#[test]
#[ignore = "needs nginx: apt-get install nginx-light"]
fn a_rolling_restart_behind_nginx_fails_no_request() {
    rolling_restart("rolling", &[], |_, _, _| {});
}

#[test]
#[ignore = "needs nginx: apt-get install nginx-light"]
fn a_rolling_restart_with_the_kubernetes_delay_keeps_serving_while_readiness_is_503() {
    // Not kept when the service was generated without Kubernetes (the
    // template itself has every platform's files).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join("deploy/kubernetes").exists() && !root.join("cargo-generate.toml").exists() {
        return;
    }
    // The Deployment's values, with the delay shortened for a test.
    let manifest: serde_norway::Value =
        serde_norway::from_str(&common::read_repo_file("deploy/kubernetes/deployment.yaml"))
            .unwrap();
    let env = &manifest["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .and_then(|v| v["value"].as_str())
            .unwrap_or_else(|| panic!("{name} in deployment.yaml"))
            .to_owned()
    };
    assert_eq!(value("SHUTDOWN_DELAY"), "5");
    let timeout = value("SHUTDOWN_TIMEOUT");
    let delay = Duration::from_secs(2);

    let figures = Mutex::new(Vec::new());
    let load = rolling_restart(
        "rolling-delay",
        &[("SHUTDOWN_DELAY", "2"), ("SHUTDOWN_TIMEOUT", &timeout)],
        |old, load, signalled| {
            // The old instance's own view, asked directly as a platform's
            // readiness probe does: 503 `draining` until the listener closes.
            let direct = old.addr();
            let port = direct.port();
            let before = load.completed();
            let failed_before = load.failed.load(Ordering::Relaxed);
            let mut probes = 0;
            let deadline = Instant::now() + DEADLINE;
            while !old.stdout().contains("listener closed;") {
                assert!(Instant::now() < deadline, "the delay never ended");
                let ready = common::raw(
                    direct,
                    b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                let root = common::raw(
                    direct,
                    b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                match (ready, root) {
                    (Ok(ready), Ok(root)) => {
                        assert_eq!(ready.status, 503, "{}", ready.text());
                        assert_eq!(ready.json()["status"], "draining");
                        assert_eq!(root.status, 200, "{}", root.text());
                        assert_eq!(root.header("connection"), Some("close"));
                        probes += 1;
                    }
                    // The listener closed between the log check and the
                    // request: the loop sees the log line next.
                    _ => {
                        old.wait_for_log("listener closed;");
                    }
                }
                thread::sleep(Duration::from_millis(50));
            }
            let delay_seen = signalled.elapsed();
            let through_nginx = load.completed() - before;
            let failed = load.failed.load(Ordering::Relaxed) - failed_before;
            println!(
                "rolling-delay: instance on port {port}: listener closed {} ms after SIGTERM; \
                 meanwhile /readyz answered 503 \"draining\" to {probes} probe(s) and GET / 200 \
                 with Connection: close to as many direct requests, and {through_nginx} \
                 requests completed through nginx ({failed} failed)",
                delay_seen.as_millis()
            );
            figures
                .lock()
                .unwrap()
                .push((port, signalled, Instant::now()));
            assert!(probes > 0, "readiness was never seen at 503");
            assert!(
                delay_seen >= delay,
                "the listener closed after {delay_seen:?}, before SHUTDOWN_DELAY"
            );
        },
    );
    for (port, from, to) in figures.into_inner().unwrap() {
        // Responses nginx got from the draining instance during its delay.
        let from_old = load
            .info_ports
            .iter()
            .filter(|(at, p)| *p == port && *at >= from && *at <= to)
            .count();
        println!(
            "rolling-delay: instance on port {port}: {from_old} GET /api/v1/info answered by it \
             between SIGTERM and the listener closing"
        );
        assert!(
            from_old > 0,
            "nginx sent the draining instance no traffic during its delay"
        );
    }
}

// ---------------------------------------------------------------------------
// Drain under load, one instance, no proxy
// ---------------------------------------------------------------------------

/// Counts the stdout lines of `p` that contain `needle`.
fn count_log(p: &Process, needle: &str) -> usize {
    p.stdout().matches(needle).count()
}

fn wait_log_count(p: &Process, needle: &str, n: usize) {
    let deadline = Instant::now() + DEADLINE;
    while count_log(p, needle) < n {
        assert!(
            Instant::now() < deadline,
            "saw {} of {n} {needle:?}:\n{}",
            count_log(p, needle),
            p.stdout()
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `GET /__test/slow?ms=MS` in its own thread and connection.
fn slow_get(addr: SocketAddr, ms: u64) -> JoinHandle<(Result<common::Response, String>, Instant)> {
    thread::spawn(move || {
        let res = common::raw(
            addr,
            format!("GET /__test/slow?ms={ms} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .map_err(|e| e.to_string());
        (res, Instant::now())
    })
}

/// The "N in flight" of the line logged when the stop signal arrives.
fn in_flight_at_signal(p: &Process) -> usize {
    let line = p.wait_for_log("TERM received: draining");
    line.split(" in flight")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no in-flight count in {line:?}"))
}

/// One fast request that got no complete answer.
struct Lost {
    id: String,
    sent: Instant,
    error: String,
}

#[test]
fn a_drain_under_load_answers_every_request_it_accepted() {
    const SLOW: u64 = 24;
    const FAST_CLIENTS: usize = 8;
    let mut p = spawn_binary(&[("SHUTDOWN_TIMEOUT", "10")]);
    let addr = p.addr();

    // Slow requests of 300 to 1500 ms, all started before the signal.
    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            let ms = 300 + i * 1200 / (SLOW - 1);
            (ms, slow_get(addr, ms))
        })
        .collect();
    // Fast ones: a steady stream from several clients, a new connection per
    // request (so no keep-alive race is measured), until the listener refuses
    // (bounded in count and time).
    let stop = Arc::new(AtomicBool::new(false));
    let fast_done = Arc::new(AtomicUsize::new(0));
    let fast: Vec<_> = (0..FAST_CLIENTS)
        .map(|c| {
            let (stop, fast_done) = (stop.clone(), fast_done.clone());
            thread::spawn(move || {
                let started = Instant::now();
                let mut ok = 0;
                let mut refused = 0;
                let mut lost = Vec::new();
                for i in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    let kind = if i % 3 == 2 { Kind::Echo } else { Kind::Root };
                    let id = format!("deploys-drain-c{c}-{i:05}");
                    let sent = Instant::now();
                    let outcome = match connect(addr) {
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                            // The listener is closed: nothing was sent.
                            refused += 1;
                            break;
                        }
                        Err(e) => Err(format!("connect: {e}")),
                        Ok(mut stream) => exchange(&mut stream, &build_request(kind, &id, true))
                            .and_then(|r| check_reply(kind, &id, &r)),
                    };
                    match outcome {
                        Ok(_) => {
                            ok += 1;
                            fast_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => lost.push(Lost { id, sent, error }),
                    }
                    thread::sleep(PACE);
                }
                (ok, refused, lost)
            })
        })
        .collect();

    wait_log_count(&p, "test slow request started", SLOW as usize);
    let deadline = Instant::now() + DEADLINE;
    while fast_done.load(Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "the fast load stalled");
        thread::sleep(Duration::from_millis(5));
    }
    let signalled = Instant::now();
    p.signal("TERM");
    let in_flight = in_flight_at_signal(&p);
    let (status, _) = p.wait_exit(Duration::from_secs(10));
    let exited = signalled.elapsed();
    stop.store(true, Ordering::Relaxed);
    assert_eq!(status.code(), Some(0), "{}", p.stdout());
    p.wait_for_log("drain complete: every request finished");

    let slow: Vec<_> = slow
        .into_iter()
        .map(|(ms, h)| (ms, h.join().unwrap().0))
        .collect();
    let slow_ok = slow
        .iter()
        .filter(|(ms, r)| {
            r.as_ref()
                .is_ok_and(|r| r.status == 200 && r.json()["slept_ms"] == *ms)
        })
        .count();
    let (mut fast_ok, mut fast_refused, mut lost) = (0, 0, Vec::new());
    for h in fast {
        let (ok, refused, l) = h.join().unwrap();
        fast_ok += ok;
        fast_refused += refused;
        lost.extend(l);
    }
    let log = p.stdout();
    let answered = log.matches("request_id=deploys-drain-").count();
    // Requests that got no answer: when each was sent, and whether the app
    // had answered it (a lost response) or never had it in a handler.
    let describe = |l: &Lost| {
        let sent = if l.sent >= signalled {
            format!("+{} ms", (l.sent - signalled).as_millis())
        } else {
            format!("-{} ms", (signalled - l.sent).as_millis())
        };
        format!("{} sent {sent} from SIGTERM: {}", l.id, l.error)
    };
    let (answered_but_lost, unanswered): (Vec<&Lost>, Vec<&Lost>) = lost
        .iter()
        .partition(|l| log.contains(&format!("request_id={}", l.id)));
    println!(
        "drain under load: {in_flight} in flight at SIGTERM; {slow_ok} of {SLOW} slow requests \
         (300-1500 ms) completed with 200; {fast_ok} fast requests completed with 200; {} \
         connection(s) opened around SIGTERM got no answer and never reached a handler; then \
         {fast_refused} connection(s) refused once the listener closed; exit 0 {} ms after \
         SIGTERM (SHUTDOWN_TIMEOUT=10)",
        unanswered.len(),
        exited.as_millis()
    );
    for l in &unanswered {
        println!("  no answer: {}", describe(l));
    }
    // Every request in flight when the signal came (the slow ones) finishes.
    for (ms, r) in &slow {
        let r = r
            .as_ref()
            .unwrap_or_else(|e| panic!("the {ms} ms request was cut: {e}"));
        assert_eq!(r.status, 200, "{ms} ms: {}", r.text());
        assert_eq!(r.json()["slept_ms"], *ms);
    }
    // (The longer ones at least were still running when it came.)
    let long = slow.iter().filter(|(ms, _)| *ms >= 1000).count();
    assert!(in_flight >= long, "{in_flight} in flight at the signal");
    // Every request the app handled reached its client, complete.
    assert!(
        answered_but_lost.is_empty(),
        "the app answered, the client got no complete response:\n{}",
        answered_but_lost
            .iter()
            .map(|l| describe(l))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(answered, fast_ok, "every request the app answered arrived");
    assert!(exited < Duration::from_secs(10), "took {exited:?}");
}

#[test]
fn a_drain_that_runs_out_of_time_under_load_cuts_exactly_what_is_in_flight() {
    const LONG: usize = 6;
    const SHORT: usize = 4;
    let mut p = spawn_binary(&[("SHUTDOWN_TIMEOUT", "1")]);
    let addr = p.addr();
    let long: Vec<_> = (0..LONG).map(|_| slow_get(addr, 5000)).collect();
    let short: Vec<_> = (0..SHORT)
        .map(|i| slow_get(addr, 100 + 100 * i as u64))
        .collect();
    wait_log_count(&p, "test slow request started", LONG + SHORT);
    let signalled = Instant::now();
    p.signal("TERM");
    let in_flight = in_flight_at_signal(&p);
    let (status, _) = p.wait_exit(Duration::from_secs(10));
    let exited = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.stdout());

    let mut cut = 0;
    for h in long {
        let (res, at) = h.join().unwrap();
        assert!(
            res.is_err(),
            "a 5 s request completed: {:?}",
            res.map(|r| r.status)
        );
        assert!(at >= signalled);
        cut += 1;
    }
    let mut short_ok = 0;
    for h in short {
        let (res, _) = h.join().unwrap();
        let res = res.unwrap_or_else(|e| panic!("a short request was cut: {e}"));
        assert_eq!(res.status, 200);
        short_ok += 1;
    }
    let line = p.wait_for_log("drain timed out after 1 s (SHUTDOWN_TIMEOUT): cutting ");
    println!(
        "drain out of time: {in_flight} in flight at SIGTERM; {short_ok} short requests \
         completed with 200; {cut} requests of 5 s cut; exit 0 {} ms after SIGTERM \
         (SHUTDOWN_TIMEOUT=1); log: {line}",
        exited.as_millis()
    );
    assert!(
        line.contains(&format!("cutting {cut} in-flight request(s)")),
        "the log must count the {cut} requests the client saw cut: {line}"
    );
    assert!(exited < Duration::from_millis(2500), "took {exited:?}");
}
