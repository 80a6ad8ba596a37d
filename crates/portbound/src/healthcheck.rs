//! `portbound healthcheck`: probes this instance's own `/healthz` and exits
//! 0 or 1, for Docker `HEALTHCHECK` in images that have no curl or shell.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;

/// Docker's own default `--timeout` is 30 s; a probe that takes 3 s is
/// already a failed probe.
const TIMEOUT: Duration = Duration::from_secs(3);

/// The address the probe connects to: loopback when we listen everywhere.
pub fn target(config: &Config) -> SocketAddr {
    let ip = match config.host {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, config.port)
}

/// GETs `/healthz`; Ok when it answers 200.
pub fn probe(addr: SocketAddr) -> Result<(), String> {
    // With the default `::`, IPv4-only machines listen on 0.0.0.0 instead.
    let candidates = if addr.ip() == IpAddr::V6(Ipv6Addr::LOCALHOST) {
        vec![
            addr,
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port()),
        ]
    } else {
        vec![addr]
    };
    let mut last = String::new();
    for addr in candidates {
        match probe_one(addr) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn probe_one(addr: SocketAddr) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("http://{addr}/healthz: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(fail)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(fail)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(fail)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nUser-Agent: portbound-healthcheck\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).map_err(fail)?;
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "http://{addr}/healthz answered {:?}",
            line.lines().next().unwrap_or("")
        ))
    }
}
