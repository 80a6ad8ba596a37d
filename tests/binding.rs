//! Port binding beyond PORT, on the real binary: sockets inherited through
//! systemd's protocol (LISTEN_FDS) and handed from one process to the next
//! without refusing a connection, unix domain sockets, and HTTP/2 cleartext.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Process, get, scratch_dir, spawn_binary, spawn_binary_with};

/// Starts the binary with `fd` as its fd 3 and LISTEN_FDS=1, as
/// `systemfd --no-pid` does (no LISTEN_PID: the pid is not known before
/// spawning).
fn spawn_with_socket(fd: RawFd, env: &[(&str, &str)]) -> Process {
    let dir = scratch_dir("activation");
    let mut cmd = Command::new(common::binary());
    cmd.current_dir(&dir)
        .env_remove("LISTEN_PID")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_FDNAMES", "http")
        .env("WEB_CONCURRENCY", "1")
        .env("PORTBOUND_TEST_ROUTES", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears FD_CLOEXEC on the new fd, so fd 3 survives exec; if
            // the socket already is fd 3, dup2 does nothing and the flag must
            // be cleared by hand.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(fd, 3) >= 0
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    Process::from_child(cmd.spawn().expect("spawn portbound")).in_scratch(dir)
}

#[test]
fn an_inherited_socket_is_served_and_port_is_not_bound() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let unused_port = common::free_port();
    let p = spawn_with_socket(socket.as_raw_fd(), &[("PORT", &unused_port.to_string())]);
    let line = p.wait_for_log("listener http://");
    assert!(
        line.contains(&addr.to_string()) && line.contains("inherited fd 3 named \"http\""),
        "{line}"
    );
    assert_eq!(get(addr, "/healthz").status, 200);
    let not_bound = SocketAddr::from(([127, 0, 0, 1], unused_port));
    assert!(TcpStream::connect(not_bound).is_err(), "PORT was bound too");
    let info = get(addr, "/api/v1/info").json();
    assert_eq!(info["ports"][0], addr.port());
}

#[test]
fn a_socket_handed_to_a_new_process_refuses_nothing() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let mut old = spawn_with_socket(socket.as_raw_fd(), &[]);
    old.wait_for_log("listener http://");

    // A steady, bounded load: new connection per request, for at most 20 s.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let load = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
                sent.fetch_add(1, Ordering::Relaxed);
                match common::raw(
                    addr,
                    b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                ) {
                    Ok(res) if res.status == 200 => {}
                    Ok(res) => errors.push(format!("status {}", res.status)),
                    Err(e) => errors.push(e.to_string()),
                }
            }
            errors
        })
    };
    let wait_sent = |n: usize| {
        let deadline = Instant::now() + common::DEADLINE;
        while sent.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::yield_now();
        }
    };
    wait_sent(50);
    // The new process takes the same socket; then the old one drains.
    let new = spawn_with_socket(socket.as_raw_fd(), &[]);
    new.wait_for_log("listener http://");
    let before = sent.load(Ordering::Relaxed);
    old.signal("TERM");
    let (status, _) = old.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    wait_sent(before + 100);
    stop.store(true, Ordering::Relaxed);
    let errors = load.join().unwrap();
    let total = sent.load(Ordering::Relaxed);
    println!("handover: {total} requests sent, {} failed", errors.len());
    assert!(
        errors.is_empty(),
        "{} of {total} failed: {errors:?}",
        errors.len()
    );
    assert_eq!(get(addr, "/healthz").status, 200, "the new process serves");
    drop(new);
}

fn unix_get(path: &std::path::Path, target: &str) -> common::Response {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(common::DEADLINE)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    common::Response {
        status: head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        headers: head
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        body: body.as_bytes().to_vec(),
    }
}

#[test]
fn a_unix_socket_is_served_alone_and_removed_on_exit() {
    let dir = scratch_dir("uds");
    let path = dir.join("portbound.sock");
    let path_str = path.to_str().unwrap();
    // a stale file from a crashed process is replaced
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let mut p = spawn_binary_with(
        &[],
        &[
            ("UNIX_SOCKET", path_str),
            ("PORT", common::UNSET),
            ("LOG_FORMAT", "json"),
        ],
        &dir,
    );
    p.wait_for_log("removed a stale socket file");
    p.wait_for_log(&format!("listener unix:{path_str}"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let res = unix_get(&path, "/api/v1/info");
    assert_eq!(res.status, 200, "{}", res.text());
    let info = res.json();
    assert_eq!(info["listeners"][0], format!("unix:{path_str}"));
    assert_eq!(
        info["ports"].as_array().unwrap().len(),
        0,
        "no TCP without PORT"
    );
    assert!(
        !p.stdout().contains("listening on http://["),
        "TCP was bound"
    );
    // a unix-socket peer is the local proxy: its forwarding headers count
    p.signal("TERM");
    let (status, _) = p.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists(), "the socket file is removed on exit");
}

#[test]
fn a_unix_socket_beside_the_port() {
    let dir = scratch_dir("uds2");
    let path = dir.join("pb.sock");
    let p = spawn_binary_with(
        &[],
        &[
            ("UNIX_SOCKET", path.to_str().unwrap()),
            ("UNIX_SOCKET_MODE", "600"),
        ],
        &dir,
    );
    assert_eq!(get(p.addr(), "/healthz").status, 200);
    assert_eq!(unix_get(&path, "/healthz").status, 200);
}

#[test]
fn http2_on_still_serves_http_1_1() {
    let p = spawn_binary(&[("HTTP2", "on")]);
    p.wait_for_log("HTTP/2 with prior knowledge (h2c) is on");
    assert_eq!(get(p.addr(), "/").status, 200);
}

#[test]
#[ignore = "needs h2load: apt-get install nghttp2-client"]
fn http2_prior_knowledge_with_a_real_client() {
    let p = spawn_binary(&[("HTTP2", "on"), ("RUST_LOG", "info,portbound::access=off")]);
    let url = format!("http://127.0.0.1:{}/", p.port());
    let out = Command::new("h2load")
        .args(["-n", "200", "-c", "4", "-m", "8", &url])
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Application protocol: h2c"), "{text}");
    assert!(
        text.contains("200 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    assert!(text.contains("status codes: 200 2xx"), "{text}");
    // and without HTTP2=on, a prior-knowledge client is refused
    let off = spawn_binary(&[]);
    let out = Command::new("h2load")
        .args([
            "-n",
            "4",
            "-c",
            "1",
            &format!("http://127.0.0.1:{}/", off.port()),
        ])
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("4 succeeded"), "{text}");
}

#[test]
#[ignore = "needs nginx: apt-get install nginx-light"]
fn a_unix_socket_behind_the_shipped_nginx_example() {
    let dir = scratch_dir("uds-nginx");
    let sock = dir.join("portbound.sock");
    // nginx's workers run as an unprivileged user: let them connect.
    let app = spawn_binary_with(
        &[],
        &[
            ("UNIX_SOCKET", sock.to_str().unwrap()),
            ("UNIX_SOCKET_MODE", "666"),
            ("PORT", common::UNSET),
        ],
        &dir,
    );
    app.wait_for_log("listener unix:");
    let listen = common::free_port();
    let site = common::read_repo_file("deploy/nginx/unix-socket.conf")
        .replace(
            "unix:/run/portbound/portbound.sock",
            &format!("unix:{}", sock.display()),
        )
        .replace("listen 80;", &format!("listen 127.0.0.1:{listen};"))
        .replace("listen [::]:80;", "");
    let d = dir.display();
    let conf = format!(
        "pid {d}/nginx.pid;\nevents {{}}\nhttp {{\n  access_log off;\n  \
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  \
         scgi_temp_path {d}/scgi;\n{site}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    // the scratch directory must be traversable by nginx's workers
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut nginx = common::nginx::start_nginx(&dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    nginx.wait_answering(addr, "/healthz");
    let res = common::request(
        addr,
        "POST",
        "/__test/echo",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-ID", "via-unix-socket"),
        ],
        br#"{"message":"over a unix socket"}"#,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["body"]["message"], "over a unix socket");
    // nginx forwarded the client's address; over a unix socket it is trusted
    assert_eq!(v["request"]["client"], "127.0.0.1");
}
