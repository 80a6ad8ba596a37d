//! Turns the configuration into listening sockets: `HOST`/`PORT` (dual-stack,
//! port 0), sockets inherited from systemd or `systemfd` (`LISTEN_FDS`), and a
//! unix socket (`UNIX_SOCKET`). A taken port gets a message saying what to do.
//!
//! The service binds (or adopts) its own listeners and hands them to actix,
//! so the tests run exactly this path with port 0 and read back the port.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;

/// Pending connections the kernel queues before we accept them: enough for
/// the burst a router sends to a new instance.
const BACKLOG: i32 = 2048;

/// Every socket the service will serve on.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The bound TCP listeners.
    pub tcp: Vec<TcpListener>,
    /// The bound unix-socket listeners.
    pub unix: Vec<UnixListener>,
    /// Socket files we created, removed again on exit.
    pub socket_files: Vec<SocketFile>,
    /// Where each listener came from, for the startup log.
    pub origins: Vec<String>,
    /// Handles on the sockets this process bound itself (not inherited ones,
    /// which another process may share), to stop the kernel accepting on
    /// them the moment the drain closes the listener.
    pub owned: Vec<Socket>,
}

/// Stops the kernel completing new handshakes on sockets this process owns,
/// while the connections it has already completed wait in the accept queue
/// for actix to take them: the first step of closing the listener.
///
/// Closing (or shutting) a listening socket resets every connection still
/// in its accept queue (Linux `inet_csk_listen_stop` calls `disconnect` on
/// each child, net/ipv4/inet_connection_sock.c). Such a client has often
/// sent its request already, and a proxy cannot retry a POST it has sent:
/// nginx answered it with 502. So the gate closes first: a classic BPF
/// filter that drops every packet opening a connection, a SYN without ACK
/// (`SO_ATTACH_FILTER`, socket(7); TCP runs a listener's filter on what
/// reaches it, with the TCP header first, in `tcp_v4_rcv`/`tcp_v6_rcv`). A
/// new client's SYN is dropped, its kernel sends it again about a second
/// later, and by then [`stop_accepting`] has closed the socket: "connection
/// refused", which a proxy retries elsewhere for any method. The final ACK
/// of a handshake already under way still passes, so that connection joins
/// the queue and is accepted.
pub fn close_gate(owned: &[Socket]) {
    use socket2::SockFilter;
    const SYN_ONLY: [SockFilter; 5] = [
        // BPF_LD | BPF_B | BPF_ABS: the TCP flags, byte 13 of the header.
        SockFilter::new(0x30, 0, 0, 13),
        // BPF_ALU | BPF_AND | BPF_K: keep SYN (0x02) and ACK (0x10).
        SockFilter::new(0x54, 0, 0, 0x12),
        // BPF_JMP | BPF_JEQ | BPF_K: SYN alone? then drop, else keep.
        SockFilter::new(0x15, 0, 1, 0x02),
        // BPF_RET | BPF_K: keep 0 bytes, that is drop the packet...
        SockFilter::new(0x06, 0, 0, 0),
        // ...or keep all of it.
        SockFilter::new(0x06, 0, 0, u32::MAX),
    ];
    for socket in owned {
        if matches!(socket.domain(), Ok(d) if d == Domain::IPV4 || d == Domain::IPV6)
            && let Err(e) = socket.attach_filter(&SYN_ONLY)
        {
            log::debug!("listener gate not closed ({e}); its queue is reset at the stop");
        }
    }
}

/// Makes the kernel refuse new connections on sockets this process owns:
/// a client (or a proxy such as nginx) gets "connection refused", which it
/// retries elsewhere for any method. Call [`close_gate`] first and give
/// the accept loop a moment, or the connections still queued are reset.
pub fn stop_accepting(owned: &[Socket]) {
    for socket in owned {
        let _ = socket.shutdown(std::net::Shutdown::Read);
    }
}

impl Listeners {
    /// The TCP addresses, in order.
    pub fn tcp_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.tcp.iter().map(TcpListener::local_addr).collect()
    }
}

/// A unix socket file this process created; removed when dropped (after the
/// server has stopped), so a restart finds no stale file.
#[derive(Debug)]
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A listener that could not be set up, with what to do about it.
#[derive(Debug)]
pub enum BindError {
    /// A TCP address could not be bound.
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// Why not.
        source: io::Error,
    },
    /// A unix socket could not be set up.
    Unix {
        /// The socket's path.
        path: PathBuf,
        /// Why not, and what to do.
        problem: String,
    },
    /// An inherited socket (`LISTEN_FDS`) is not one we can serve.
    Inherited {
        /// The file descriptor.
        fd: RawFd,
        /// Why not, and what to do.
        problem: String,
    },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::Tcp { addr, source } => {
                let port = addr.port();
                match source.kind() {
                    io::ErrorKind::AddrInUse => write!(
                        f,
                        "cannot listen on {addr}: port {port} is already in use by another \
                         process; stop that process or set PORT to a free port (PORT=0 lets the \
                         OS pick one)"
                    ),
                    io::ErrorKind::PermissionDenied => write!(
                        f,
                        "cannot listen on {addr}: port {port} needs privileges this process \
                         does not have; set PORT to a port above 1023"
                    ),
                    io::ErrorKind::AddrNotAvailable => write!(
                        f,
                        "cannot listen on {addr}: {} is not an address of this machine; set \
                         HOST to one of its addresses, or to :: for every interface",
                        addr.ip()
                    ),
                    _ => write!(f, "cannot listen on {addr}: {source}"),
                }
            }
            BindError::Unix { path, problem } => {
                write!(
                    f,
                    "cannot listen on unix socket {}: {problem}",
                    path.display()
                )
            }
            BindError::Inherited { fd, problem } => write!(
                f,
                "cannot use inherited socket fd {fd} (LISTEN_FDS): {problem}; start the \
                 process from systemd socket activation or systemfd, or unset LISTEN_FDS"
            ),
        }
    }
}

impl std::error::Error for BindError {}

/// Binds (or adopts) every listener the configuration asks for:
/// - inherited sockets (`LISTEN_FDS`), when present, instead of `PORT`;
/// - otherwise `HOST`:`PORT`, unless only `UNIX_SOCKET` was asked for;
/// - `UNIX_SOCKET`, beside either.
pub fn bind_listeners(config: &Config) -> Result<Listeners, BindError> {
    let mut out = Listeners::default();
    if !config.inherited_fds.is_empty() {
        for (i, &fd) in config.inherited_fds.iter().enumerate() {
            let name = config.inherited_fd_names.get(i).map(String::as_str);
            adopt(fd, name, &mut out)?;
        }
    } else if config.serve_tcp() {
        let listener = bind_host_port(config, config.port)?;
        let addr = listener.local_addr().map_err(|source| BindError::Tcp {
            addr: SocketAddr::new(config.host, config.port),
            source,
        })?;
        out.origins.push(format!("http://{addr} (HOST and PORT)"));
        if let Ok(handle) = listener.try_clone() {
            out.owned.push(handle.into());
        }
        out.tcp.push(listener);
    }
    if let Some(path) = &config.unix_socket {
        let (listener, file) = bind_unix(path, config.unix_socket_mode)?;
        out.origins.push(format!(
            "unix:{} (UNIX_SOCKET, mode {:o})",
            path.display(),
            config.unix_socket_mode
        ));
        if let Ok(handle) = listener.try_clone() {
            out.owned.push(handle.into());
        }
        out.unix.push(listener);
        out.socket_files.push(file);
    }
    Ok(out)
}

/// `HOST`:`port`; with the default `HOST` (`::`), a machine without IPv6
/// falls back to `0.0.0.0`.
pub fn bind_host_port(config: &Config, port: u16) -> Result<TcpListener, BindError> {
    let addr = SocketAddr::new(config.host, port);
    match bind_tcp(addr) {
        Err(BindError::Tcp { source, .. })
            if config.host_is_default && ipv6_unavailable(&source) =>
        {
            let fallback = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
            log::warn!(
                "IPv6 is not available on this machine ({source}); listening on {fallback} \
                 instead (IPv4 only)"
            );
            bind_tcp(fallback)
        }
        other => other,
    }
}

/// Binds one TCP listener. On `::` it clears `IPV6_V6ONLY` explicitly, so the
/// socket accepts IPv4 too whatever `net.ipv6.bindv6only` says; IPv4 peers
/// then appear as `::ffff:a.b.c.d`.
pub fn bind_tcp(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |source| BindError::Tcp { addr, source };
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

/// Takes over a socket the parent passed (systemd's protocol: fds from 3).
/// Checked before use: it must be a listening stream socket, TCP or unix.
/// Written with socket2 rather than the listenfd crate, which removes the
/// LISTEN_* variables from the process environment as it reads them (unsound
/// once threads run); the configuration has already read and validated them.
fn adopt(fd: RawFd, name: Option<&str>, out: &mut Listeners) -> Result<(), BindError> {
    let bad = |problem: String| BindError::Inherited { fd, problem };
    // SAFETY: the parent passed this fd for us to own (LISTEN_FDS), and no
    // other code in the process uses fds from LISTEN_FDS. It stays wrapped in
    // ManuallyDrop until checked, so a wrong fd is reported, never closed.
    let socket = std::mem::ManuallyDrop::new(unsafe { Socket::from_raw_fd(fd) });
    let listening = socket
        .is_listener()
        .map_err(|e| bad(format!("not a socket ({e})")))?;
    if !listening || socket.r#type().ok() != Some(Type::STREAM) {
        return Err(bad("not a listening stream socket".into()));
    }
    let socket = std::mem::ManuallyDrop::into_inner(socket);
    socket
        .set_cloexec(true)
        .map_err(|e| bad(format!("cannot mark it close-on-exec ({e})")))?;
    let from = match name {
        Some(n) => format!("inherited fd {fd} named {n:?} (LISTEN_FDS)"),
        None => format!("inherited fd {fd} (LISTEN_FDS)"),
    };
    match socket.domain().map_err(|e| bad(e.to_string()))? {
        Domain::UNIX => {
            let listener: UnixListener = socket.into();
            let path = listener
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf));
            let shown = path.map_or_else(
                || "unix:(unnamed)".to_owned(),
                |p| format!("unix:{}", p.display()),
            );
            out.origins.push(format!("{shown} ({from})"));
            out.unix.push(listener);
        }
        _ => {
            let listener: TcpListener = socket.into();
            let addr = listener.local_addr().map_err(|e| bad(e.to_string()))?;
            out.origins.push(format!("http://{addr} ({from})"));
            out.tcp.push(listener);
        }
    }
    Ok(())
}

/// Binds a unix socket at `path`, replacing a stale file left by a crashed
/// process but never one a live process still serves on.
fn bind_unix(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), BindError> {
    let bad = |problem: String| BindError::Unix {
        path: path.to_path_buf(),
        problem,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(bad(
                "the path exists and is not a socket; remove it or choose another UNIX_SOCKET"
                    .into(),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(bad(
                "another process is serving on it; stop it or choose another UNIX_SOCKET".into(),
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| bad(format!("cannot remove the stale socket ({e})")))?;
        log::info!("removed a stale socket file at {}", path.display());
    }
    let listener = UnixListener::bind(path).map_err(|e| bad(e.to_string()))?;
    let file = SocketFile(path.to_path_buf());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| bad(format!("cannot set its permissions to {mode:o} ({e})")))?;
    Ok((listener, file))
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    // EAFNOSUPPORT: the kernel has no IPv6; EADDRNOTAVAIL: IPv6 is disabled.
    const EAFNOSUPPORT: i32 = 97;
    e.kind() == io::ErrorKind::AddrNotAvailable || e.raw_os_error() == Some(EAFNOSUPPORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The listener closes in two steps, and a client is never reset after
    /// its handshake: one already queued is still accepted with its request
    /// after the gate closes, one arriving after that never completes its
    /// handshake, and once the socket is shut it is refused.
    #[test]
    fn closing_the_listener_refuses_new_clients_and_resets_no_queued_one() {
        use std::io::{Read, Write};
        use std::time::Duration;
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let owned = [Socket::from(listener.try_clone().unwrap())];
        let mut queued = std::net::TcpStream::connect(addr).unwrap();
        queued.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();

        close_gate(&owned);
        // The SYN is dropped, not answered: no handshake in 300 ms (the
        // kernel resends a SYN after 1 s).
        let late = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(
            late.as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::TimedOut),
            "a connection completed behind the closed gate: {late:?}"
        );
        let (mut conn, _) = listener.accept().unwrap();
        let mut head = [0; 18];
        conn.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"GET / HTTP/1.1\r\n\r\n");

        stop_accepting(&owned);
        conn.write_all(b"answered").unwrap();
        let mut answer = [0; 8];
        queued.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"answered");
        let refused = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn port_zero_gets_a_real_port() {
        let l = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
    }

    #[test]
    fn a_taken_port_says_which_and_what_to_do() {
        let held = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        let text = bind_tcp(addr).unwrap_err().to_string();
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.contains("already in use"), "{text}");
        assert!(text.contains("set PORT to a free port"), "{text}");
    }

    #[test]
    fn unix_sockets_replace_stale_files_but_not_live_ones() {
        let dir = std::env::temp_dir().join(format!("portbound-uds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // a live socket is refused
        let (live, file) = bind_unix(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let err = bind_unix(&path, 0o660).unwrap_err().to_string();
        assert!(err.contains("another process is serving on it"), "{err}");
        // a stale one (listener gone, file left behind) is replaced
        drop(live);
        std::mem::forget(file); // leave the file, as a crash would
        assert!(path.exists());
        let (_again, file) = bind_unix(&path, 0o600).unwrap();
        drop(file);
        assert!(!path.exists(), "the file is removed on drop");
        // a regular file is never removed
        std::fs::write(&path, b"data").unwrap();
        let err = bind_unix(&path, 0o660).unwrap_err().to_string();
        assert!(err.contains("is not a socket"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_fd_that_is_not_a_listening_socket_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        let mut out = Listeners::default();
        let err = adopt(file.as_raw_fd(), None, &mut out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("LISTEN_FDS"), "{err}");
        drop(file);
    }
}
