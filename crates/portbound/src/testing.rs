//! Helpers for a service's own tests (the `testing` feature): the service
//! in-process on a real socket ([`spawn_app`]), its binary as a child process
//! ([`spawn_program`], [`Process`]), and a small blocking HTTP/1.1 client
//! that shows exactly what went over the wire ([`raw`], [`get`],
//! [`post_json`]).
//!
//! Every port comes from the OS; every wait is a poll with a deadline; every
//! scratch directory is removed when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::Service;
use crate::config::Config;

/// How long any single wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A scratch directory under the system's temporary one (so a `.env` in the
/// project is never read), removed with everything in it when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

/// A new, empty scratch directory whose name says which test made it.
pub fn scratch_dir(name: &str) -> ScratchDir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portbound-test-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    ScratchDir(dir)
}

impl ScratchDir {
    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for ScratchDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for ScratchDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Lines a child wrote, shared with the thread that reads them.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    /// Set, under `lines`' lock, when the stream reached its end.
    closed: AtomicBool,
    changed: Condvar,
}

/// The built binary running as a child process.
pub struct Process {
    /// The child process.
    pub child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    /// A scratch directory the process runs in, removed after it exits.
    scratch: Option<ScratchDir>,
}

/// Environment every spawned server gets unless a test overrides it: an
/// OS-picked port, one worker, the test-only routes (`/__test/slow`).
fn base_env() -> Vec<(&'static str, String)> {
    vec![
        ("PORT", "0".into()),
        ("WEB_CONCURRENCY", "1".into()),
        ("RUST_LOG", "info".into()),
        ("PORTBOUND_TEST_ROUTES", "true".into()),
    ]
}

/// Variables of the test runner's own environment that would change what
/// the child detects.
const PLATFORM_MARKERS: [&str; 6] = [
    "DYNO",
    "FLY_APP_NAME",
    "K_SERVICE",
    "RENDER",
    "KUBERNETES_SERVICE_HOST",
    "RAILWAY_ENVIRONMENT_NAME",
];

/// `PROGRAM ARGS` in `dir` with the base environment plus `env`.
fn command_for(program: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for name in PLATFORM_MARKERS {
        cmd.env_remove(name);
    }
    for (k, v) in base_env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        if *v == UNSET {
            cmd.env_remove(k);
        } else {
            cmd.env(k, v);
        }
    }
    cmd
}

/// A value for `spawn_binary`'s environment that removes the variable.
pub const UNSET: &str = "\u{0}unset";

/// Spawns `PROGRAM ARGS` in `dir` with the test environment (`PORT=0`, one
/// worker, the test routes, no platform markers) plus `env`; its output is
/// collected as it comes.
pub fn spawn_program(program: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Process {
    let mut child = command_for(program, args, env, dir)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    Process {
        child,
        stdout,
        stderr,
        scratch: None,
    }
}

/// Runs `PROGRAM ARGS` in `dir` to completion, with the environment
/// [`spawn_program`] gives; it must exit within [`DEADLINE`]. Returns (exit
/// code, stdout, stderr).
pub fn run_program(
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    dir: &Path,
) -> (i32, String, String) {
    let mut child = command_for(program, args, env, dir)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!(
                "{} {args:?} did not exit within {DEADLINE:?}",
                program.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut err);
    }
    (status.code().unwrap_or(-1), out, err)
}

fn collect(stream: impl Read + Send + 'static) -> Arc<Lines> {
    let lines = Arc::new(Lines::default());
    let writer = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            writer.lines.lock().unwrap().push(line);
            writer.changed.notify_all();
        }
        let _guard = writer.lines.lock().unwrap();
        writer.closed.store(true, Ordering::SeqCst);
        writer.changed.notify_all();
    });
    lines
}

impl Lines {
    /// Waits until the stream has ended (every line is in), or `within`
    /// passes: a grandchild that inherited the pipe may hold it open.
    fn wait_closed(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let mut lines = self.lines.lock().unwrap();
        while !self.closed.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = self.lines.lock().unwrap();
        loop {
            if let Some(line) = lines.iter().find(|l| pred(l)) {
                return line.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; saw:\n{}",
                lines.join("\n")
            );
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }
}

impl Process {
    /// Keeps `dir` (the process's working directory) until the process has
    /// been stopped, then removes it.
    pub fn in_scratch(mut self, dir: ScratchDir) -> Process {
        self.scratch = Some(dir);
        self
    }

    /// Waits for a stdout line containing `needle` and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.stdout.wait_for(needle, |l| l.contains(needle))
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> String {
        self.stdout.lines.lock().unwrap().join("\n")
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lines.lock().unwrap().join("\n")
    }

    /// The port from the startup line (`listening on http://[::]:PORT`).
    pub fn port(&self) -> u16 {
        let line = self.wait_for_log(" listening on http://");
        let addr = line
            .split("listening on http://")
            .nth(1)
            .and_then(|rest| rest.split([' ', ',']).next())
            .expect("an address in the startup line");
        addr.parse::<SocketAddr>().expect("a socket address").port()
    }

    /// 127.0.0.1 and the bound port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (by name, as `kill -s` takes it).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to exit, failing the test after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                let elapsed = start.elapsed();
                // The reader threads may not have drained the pipes yet:
                // without this, a caller that reads the output at once can
                // see none of it.
                self.stdout.wait_closed(Duration::from_secs(5));
                self.stderr.wait_closed(Duration::from_secs(5));
                return (status, elapsed);
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "process did not exit within {within:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port, from the OS. (Released before use, so another process could
/// take it first; only the test that must pass an explicit PORT uses it.)
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The app in-process, on real sockets bound to 127.0.0.1:0, in its own
/// thread and actix system. Stopped when dropped.
pub struct TestApp {
    /// Where it listens (127.0.0.1 and an OS-picked port).
    pub addr: SocketAddr,
    /// Its shared state: the drain, the probes, the facts.
    pub state: crate::state::AppState,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The service that `service` makes, in-process with [`Config::for_tests`]:
/// loopback, an OS-picked port, one worker, short drains. (A [`Service`]
/// holds per-thread closures, so it is made on the server's own thread.)
///
/// ```no_run
/// let app = portbound::testing::spawn_app(|| portbound::Service::new("svc", "0.1.0"));
/// assert_eq!(portbound::testing::get(app.addr, "/healthz").status, 200);
/// ```
pub fn spawn_app<F>(service: F) -> TestApp
where
    F: FnOnce() -> Service + Send + 'static,
{
    spawn_app_with(Config::for_tests(), service)
}

/// The service that `service` makes, in-process with this configuration.
pub fn spawn_app_with<F>(config: Config, service: F) -> TestApp
where
    F: FnOnce() -> Service + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let listeners = crate::listener::bind_listeners(&config).expect("bind");
            let server = crate::server::build(&config, listeners, service()).expect("build");
            tx.send((server.addrs[0], server.state.clone(), server.handle()))
                .unwrap();
            let _ = server.server.await;
        });
    });
    let (addr, state, handle) = rx.recv_timeout(DEADLINE).expect("server started");
    TestApp {
        addr,
        state,
        handle,
        thread: Some(thread),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let stop = self.handle.stop(false);
        drop(stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, names lowercased (the last of a repeated name).
    pub headers: HashMap<String, String>,
    /// The body, as sent.
    pub body: Vec<u8>,
}

impl Response {
    /// A header field's value, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts an RFC 9457 body with this status and the request id echoed.
    pub fn assert_problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text()
        );
        let v = self.json();
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], "about:blank");
        assert!(v["title"].is_string() && v["detail"].is_string(), "{v}");
        let id = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(v["request_id"], id);
        v
    }
}

/// Sends raw bytes and reads the response until the server closes.
pub fn raw(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(DEADLINE))?;
    stream.write_all(request)?;
    read_response(&mut stream)
}

/// Reads one response (Content-Length framed, or until EOF).
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = read_some(stream, &mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed after {} bytes", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = buf[head_end + 4..].to_vec();
    match headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(len) => {
            while body.len() < len {
                let n = read_some(stream, &mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `read`, again when a signal interrupted it (EINTR), as `read_exact` and
/// `read_to_end` do: a test process whose in-process servers installed
/// signal handlers can see one in the middle of a read.
fn read_some(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD path` with optional headers and body, `Connection: close`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    raw(addr, &bytes).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[], b"")
}

/// `POST path` with a JSON body.
pub fn post_json(addr: SocketAddr, path: &str, body: &str) -> Response {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// Polls until connecting to `addr` is refused (the listener is closed).
pub fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ if Instant::now() > deadline => panic!("{addr} still accepts connections"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Process {
    /// Wraps another program's child (nginx in the proxy test), started with
    /// piped stdout and stderr, and collects its output like the binary's.
    pub fn from_child(mut child: Child) -> Process {
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Process {
            child,
            stdout,
            stderr,
            scratch: None,
        }
    }
}

/// Starts a slow request (the test-only `/__test/slow` route) in a thread and
/// returns once the server has it in flight.
pub fn slow_request(p: &Process, ms: u64) -> std::thread::JoinHandle<std::io::Result<Response>> {
    let addr = p.addr();
    let handle = std::thread::spawn(move || {
        raw(
            addr,
            format!("GET /__test/slow?ms={ms} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
    });
    p.wait_for_log("test slow request started");
    handle
}

/// The metrics listener, from its startup line.
pub fn metrics_addr(p: &Process) -> SocketAddr {
    let line = p.wait_for_log("metrics: http://");
    let url = line.split("metrics: http://").nth(1).unwrap();
    let addr: SocketAddr = url.trim_end_matches("/metrics").parse().unwrap();
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// GET /metrics: 200, text/plain.
pub fn scrape(addr: SocketAddr) -> String {
    let res = get(addr, "/metrics");
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    res.text()
}

/// The value of one sample, `name{labels}`, in an exposition.
pub fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
