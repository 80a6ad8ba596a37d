//! Turns the configuration into bound sockets: `HOST`/`PORT`, dual-stack,
//! port 0, and a clear message when the port is taken.
//!
//! The service binds its own listeners and hands them to actix, so the tests
//! run exactly this path with port 0 and read back the real port.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// Pending connections the kernel queues before we accept them. actix's own
/// default: enough for a burst when a router sends traffic to a new instance.
const BACKLOG: i32 = 2048;

/// A listener that could not be bound, with what to do about it.
#[derive(Debug)]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (addr, port) = (self.addr, self.addr.port());
        match self.source.kind() {
            io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen on {addr}: port {port} is already in use by another process; \
                 stop that process or set PORT to a free port (PORT=0 lets the OS pick one)"
            ),
            io::ErrorKind::PermissionDenied => write!(
                f,
                "cannot listen on {addr}: port {port} needs privileges this process does not \
                 have; set PORT to a port above 1023"
            ),
            io::ErrorKind::AddrNotAvailable => write!(
                f,
                "cannot listen on {addr}: {} is not an address of this machine; set HOST to \
                 one of its addresses, or to :: for every interface",
                addr.ip()
            ),
            _ => write!(f, "cannot listen on {addr}: {}", self.source),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Binds the configured address. With the default `HOST` (`::`, every IPv4
/// and IPv6 interface), a machine without IPv6 falls back to `0.0.0.0`.
pub fn bind_listeners(config: &Config) -> Result<Vec<TcpListener>, BindError> {
    let addr = SocketAddr::new(config.host, config.port);
    match bind_tcp(addr) {
        Ok(listener) => Ok(vec![listener]),
        Err(e) if config.host_is_default && ipv6_unavailable(&e.source) => {
            let fallback = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), config.port);
            log::warn!(
                "IPv6 is not available on this machine ({}); listening on {fallback} instead \
                 (IPv4 only)",
                e.source
            );
            Ok(vec![bind_tcp(fallback)?])
        }
        Err(e) => Err(e),
    }
}

/// Binds one TCP listener. On `::` it clears `IPV6_V6ONLY` explicitly, so
/// the socket accepts IPv4 too whatever the system default
/// (`net.ipv6.bindv6only`) says; IPv4 peers then appear as `::ffff:a.b.c.d`.
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |source| BindError { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        socket.set_only_v6(false).map_err(err)?;
    }
    // Lets a restarted process bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(BACKLOG).map_err(err)?;
    Ok(socket.into())
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    // EAFNOSUPPORT: the kernel has no IPv6; EADDRNOTAVAIL: IPv6 is disabled.
    const EAFNOSUPPORT: i32 = 97;
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_gets_a_real_port() {
        let l = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
    }

    #[test]
    fn a_taken_port_says_which_and_what_to_do() {
        let held = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind_tcp(addr).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("already in use"), "{text}");
        assert!(text.contains("set PORT to a free port"), "{text}");
    }
}
