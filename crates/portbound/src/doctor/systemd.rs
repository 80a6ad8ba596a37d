//! systemd: every `*.service` in `deploy/systemd/` and the `.socket` units
//! they use.
//!
//! Checks: `ExecStart` runs the service's server (`systemd-exec-start`);
//! `KillSignal` is one the runtime drains on (`systemd-kill-signal`);
//! `TimeoutStopSec` (90 s by default) outlasts the drain
//! (`systemd-timeout`); the socket unit exists, hands over a listening
//! socket (`Accept=no`) on the port the service would bind without it
//! (`systemd-socket`); `Environment=` holds values the runtime accepts
//! (`invalid-variable`).

use super::dockerfile::words;
use super::{Ctx, Finding, Stop, Var, parse_duration, runs_server, signal_name};
use crate::config::DEFAULT_PORT;
use crate::platform::SYSTEMD;

const DIR: &str = "deploy/systemd";
const SOCKET: &str = "https://www.freedesktop.org/software/systemd/man/latest/systemd.socket.html";

/// One `Key=value` of a unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    section: String,
    key: String,
    value: String,
    line: usize,
}

/// A unit file's entries, in order (continuations joined, comments out).
fn parse_unit(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut section = String::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some((start, mut joined)) = pending.take() {
            // A continuation line carries on the previous value.
            let (part, more) = match line.strip_suffix('\\') {
                Some(p) => (p, true),
                None => (line, false),
            };
            joined.push(' ');
            joined.push_str(part.trim());
            if more {
                pending = Some((start, joined));
            } else {
                push_entry(&mut entries, &section, start, &joined);
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].to_owned();
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending = Some((n + 1, head.trim().to_owned())),
            None => push_entry(&mut entries, &section, n + 1, line),
        }
    }
    if let Some((start, joined)) = pending {
        push_entry(&mut entries, &section, start, &joined);
    }
    entries
}

fn push_entry(entries: &mut Vec<Entry>, section: &str, line: usize, text: &str) {
    if let Some((k, v)) = text.split_once('=') {
        entries.push(Entry {
            section: section.to_owned(),
            key: k.trim().to_owned(),
            value: v.trim().to_owned(),
            line,
        });
    }
}

/// The last value of `section.key` (systemd: the last assignment wins).
fn last<'a>(entries: &'a [Entry], section: &str, key: &str) -> Option<&'a Entry> {
    entries
        .iter()
        .rev()
        .find(|e| e.section == section && e.key == key)
}

/// The TCP port of a `ListenStream=` (`5000`, `0.0.0.0:5000`,
/// `[::]:5000`); `None` for a unix socket path or an abstract name.
fn listen_port(value: &str) -> Option<Result<u16, ()>> {
    let v = value.trim();
    if v.starts_with('/') || v.starts_with('@') {
        return None;
    }
    let port = v.rsplit(':').next().unwrap_or(v);
    Some(port.parse::<u16>().map_err(|_| ()))
}

/// Checks the units in deploy/systemd/.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let Ok(entries) = std::fs::read_dir(ctx.dir().join(DIR)) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    names.sort();
    for name in names {
        let file = format!("{DIR}/{name}");
        if let Some(text) = ctx.read(&file) {
            service(ctx, &file, &name, &text);
        }
    }
}

fn service(ctx: &mut Ctx<'_>, file: &str, name: &str, text: &str) {
    let unit = parse_unit(text);
    let binary = ctx.binary;

    // ExecStart: the last non-empty assignment, prefixes (@-:+!|) removed.
    let exec = last(&unit, "Service", "ExecStart");
    let argv: Vec<String> = exec
        .map(|e| words(e.value.trim_start_matches(['@', '-', ':', '+', '!', '|'])))
        .unwrap_or_default();
    if let Err(problem) = runs_server(binary, &argv) {
        ctx.push(
            Finding::error("systemd-exec-start", file, exec.map(|e| e.line))
                .message(format!("ExecStart {problem}"))
                .platform("systemd starts the service's main process with ExecStart and stops it with KillSignal")
                .source("https://www.freedesktop.org/software/systemd/man/latest/systemd.service.html#ExecStart=")
                .fix(format!("ExecStart=/usr/local/bin/{binary}")),
        );
    }

    let kill = last(&unit, "Service", "KillSignal");
    let signal = kill
        .map(|e| signal_name(&e.value))
        .unwrap_or_else(|| SYSTEMD.stop_signal.value.default.to_owned());
    if let Some(e) = kill {
        ctx.stop_signal("systemd-kill-signal", file, Some(e.line), &signal, &SYSTEMD);
    }

    let vars: Vec<Var> = unit
        .iter()
        .filter(|e| e.section == "Service" && e.key == "Environment")
        .flat_map(|e| {
            words(&e.value)
                .into_iter()
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some(Var::new(k, v, Some(e.line)))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let timeout =
        last(&unit, "Service", "TimeoutStopSec").or_else(|| last(&unit, "Service", "TimeoutSec"));
    let secs = match timeout {
        None => Some(SYSTEMD.grace.value.default_secs()),
        Some(e) => parse_duration(&e.value).map(|d| d.as_secs()),
    };
    // The runtime under systemd is `Local`, with the unit's variables only
    // (EnvironmentFile= names a file on the host, not in the repository).
    let drain = ctx.drain(file, &vars, &[]);
    match (secs, drain) {
        (Some(secs), Some(drain)) => {
            let stop = Stop {
                line: timeout.map(|e| e.line),
                secs,
                signal: &signal,
            };
            ctx.grace("systemd-timeout", file, stop, drain, &SYSTEMD);
        }
        (None, _) => ctx.push(
            Finding::error("systemd-timeout", file, timeout.map(|e| e.line))
                .message("TimeoutStopSec is not a time span systemd reads")
                .platform(
                    "systemd ignores an assignment it cannot parse, and the 90 s default applies",
                )
                .source(SYSTEMD.grace.source)
                .fix("TimeoutStopSec=30"),
        ),
        (Some(_), None) => {}
    }

    // The socket units this service uses: Sockets=, or a Requires=/Wants=
    // of a .socket, or the socket of the same name.
    let mut sockets: Vec<(String, usize)> = unit
        .iter()
        .filter(|e| matches!(e.key.as_str(), "Sockets" | "Requires" | "Wants" | "BindsTo"))
        .flat_map(|e| {
            e.value
                .split_whitespace()
                .filter(|u| u.ends_with(".socket"))
                .map(|u| (u.to_owned(), e.line))
                .collect::<Vec<_>>()
        })
        .collect();
    let same_name = name.replace(".service", ".socket");
    if sockets.is_empty() && ctx.exists(&format!("{DIR}/{same_name}")) {
        sockets.push((same_name, 1));
    }
    sockets.dedup_by(|a, b| a.0 == b.0);
    let expected = super::var(&vars, "PORT")
        .and_then(|v| v.value.parse::<u16>().ok())
        .unwrap_or(DEFAULT_PORT);
    for (socket, line) in sockets {
        socket_unit(ctx, file, &socket, line, expected);
    }
}

fn socket_unit(ctx: &mut Ctx<'_>, service: &str, socket: &str, line: usize, expected: u16) {
    let file = format!("{DIR}/{socket}");
    let Some(text) = ctx.read(&file) else {
        ctx.push(
            Finding::error("systemd-socket", service, Some(line))
                .message(format!("the service needs {socket}, which is not in {DIR}"))
                .platform(
                    "systemd refuses to start a unit whose required socket unit does not exist",
                )
                .source(format!("{SOCKET}#Description"))
                .fix(format!(
                    "add {socket} beside the service, or drop the reference"
                )),
        );
        return;
    };
    let unit = parse_unit(&text);
    if let Some(e) = last(&unit, "Socket", "Accept")
        && matches!(
            e.value.to_ascii_lowercase().as_str(),
            "yes" | "true" | "on" | "1"
        )
    {
        ctx.push(
            Finding::error("systemd-socket", &file, Some(e.line))
                .message("Accept=yes hands each connection to a new service instance")
                .platform(
                    "with Accept=yes systemd accepts the connection itself and passes only the \
                     connected socket; the runtime expects the listening socket (Accept=no) and \
                     serves it with its own workers",
                )
                .source(format!("{SOCKET}#Accept="))
                .fix("Accept=no"),
        );
    }
    let listen = unit
        .iter()
        .filter(|e| e.section == "Socket" && e.key == "ListenStream")
        .collect::<Vec<_>>();
    if listen.is_empty() {
        ctx.push(
            Finding::error("systemd-socket", &file, None)
                .message("the socket unit has no ListenStream=")
                .platform("the runtime serves the TCP or unix stream sockets systemd passes; this unit passes none")
                .source(format!("{SOCKET}#ListenStream="))
                .fix(format!("ListenStream=[::]:{expected}")),
        );
    }
    for e in listen {
        match listen_port(&e.value) {
            Some(Err(())) => ctx.push(
                Finding::error("systemd-socket", &file, Some(e.line))
                    .message(format!(
                        "ListenStream={} is not an address systemd reads",
                        e.value
                    ))
                    .platform(
                        "systemd refuses to start a socket unit whose address it cannot parse",
                    )
                    .source(format!("{SOCKET}#ListenStream="))
                    .fix(format!("ListenStream=[::]:{expected}")),
            ),
            Some(Ok(port)) if port != expected => ctx.push(
                Finding::warning("systemd-socket", &file, Some(e.line))
                    .message(format!(
                        "the socket listens on {port}, but without it the service binds {expected}"
                    ))
                    .platform(
                        "while the socket unit runs, the runtime serves the socket systemd \
                         passes (LISTEN_FDS) and ignores PORT; started without it (or after \
                         `systemctl stop portbound.socket`) it binds PORT, so the port moves",
                    )
                    .source(SYSTEMD.port.source)
                    .fix(format!(
                        "ListenStream=[::]:{expected}, or Environment=PORT={port} in the service"
                    )),
            ),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_sections_continuations_and_the_last_assignment() {
        let unit = parse_unit(
            "# c\n[Service]\nExecStart=/bin/a \\\n  --flag\nEnvironment=A=1 \"B=2 3\"\n; c\nKillSignal=SIGINT\nKillSignal=SIGTERM\n[Socket]\nListenStream=[::]:5000\n",
        );
        let exec = last(&unit, "Service", "ExecStart").unwrap();
        assert_eq!((exec.value.as_str(), exec.line), ("/bin/a --flag", 3));
        assert_eq!(last(&unit, "Service", "KillSignal").unwrap().line, 8);
        assert_eq!(
            words(&last(&unit, "Service", "Environment").unwrap().value),
            ["A=1", "B=2 3"]
        );
        assert_eq!(
            listen_port(&last(&unit, "Socket", "ListenStream").unwrap().value),
            Some(Ok(5000))
        );
        assert_eq!(listen_port("/run/x.sock"), None);
        assert_eq!(listen_port("0.0.0.0:http"), Some(Err(())));
    }
}
