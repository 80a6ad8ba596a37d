//! nginx (Debian's nginx-light) as a child process in front of test
//! instances, run unprivileged-style from a scratch directory with the
//! shipped configuration.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{DEADLINE, Process};

/// nginx as a child; stopped (gracefully, then for good) when dropped.
pub struct Nginx(pub Process);

impl Drop for Nginx {
    fn drop(&mut self) {
        // TERM lets the master take its workers down with it.
        let _ = Command::new("kill")
            .args(["-s", "TERM", &self.0.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.0.child.try_wait(), Ok(None)) {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// deploy/nginx/nginx.conf with the substitutions of deploy/README.md.
pub fn nginx_conf(upstreams: &[u16], listen: u16, dir: &Path) -> String {
    let mut conf = super::read_repo_file("deploy/nginx/nginx.conf");
    let mut replace_once = |from: &str, to: &str| {
        assert_eq!(conf.matches(from).count(), 1, "{from:?} must occur once");
        conf = conf.replace(from, to);
    };
    let servers: Vec<String> = upstreams
        .iter()
        .map(|p| format!("server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;"))
        .collect();
    replace_once(
        "server api:5000 max_fails=3 fail_timeout=10s;",
        &servers.join("\n        "),
    );
    replace_once("listen 80;", &format!("listen 127.0.0.1:{listen};"));
    replace_once("listen [::]:80;", "");
    assert!(conf.contains("/tmp/"));
    conf.replace("/tmp/", &format!("{}/", dir.display()))
}

pub fn start_nginx(dir: &Path) -> Nginx {
    let conf = dir.join("nginx.conf");
    let child = Command::new("nginx")
        .arg("-e")
        .arg("stderr")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        // Ours, so nginx can reopen it as /dev/stdout for the access log.
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nginx");
    Nginx(Process::from_child(child))
}

impl Nginx {
    /// Polls until nginx answers `GET path` on `addr` with 200; fails with
    /// nginx's stderr if it exits or never answers.
    pub fn wait_answering(&mut self, addr: SocketAddr, path: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if matches!(super::raw(addr, req.as_bytes()), Ok(r) if r.status == 200) {
                return;
            }
            if let Some(status) = self.0.child.try_wait().unwrap() {
                panic!("nginx exited ({status}):\n{}", self.0.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "nginx never answered:\n{}",
                self.0.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}
