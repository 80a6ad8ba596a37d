//! Fly.io: `fly.toml`.
//!
//! Checks: the port Fly dials (`internal_port`, 8080 by default) is the
//! one the server binds, since Fly injects no `PORT` (`fly-port`); the
//! `[metrics]` port is served (`fly-metrics-port`); `kill_signal` is one
//! the runtime drains on (`fly-kill-signal`) and `kill_timeout` outlasts
//! the drain (`fly-kill-timeout`: Fly's default is 5 s); every check
//! probes a route of the service (`probe-path`); `[build] dockerfile`
//! exists (`dockerfile-path`); `[env]` holds values the runtime accepts
//! (`invalid-variable`).

use toml::{Table, Value};

use super::locate::{Index, Key, Seg, line_of_offset, toml_line};
use super::{Ctx, Finding, Stop, Var, bound_port, parse_duration, signal_name};
use crate::platform::{Platform, PortRule};

const FILE: &str = "fly.toml";
/// The fly.toml reference.
const FORMAT: &str = "https://fly.io/docs/reference/configuration/";

/// Checks fly.toml.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let fly = Platform::Fly.contract();
    let Some(text) = ctx.read(FILE) else {
        return;
    };
    let table = match toml::from_str::<Table>(&text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map(|s| line_of_offset(&text, s.start));
            ctx.parse_error(FILE, line, e.message(), (fly.name, FORMAT));
            return;
        }
    };
    let at = |path: &[Seg<'_>]| toml_line(&text, path);

    let env: Vec<Var> = table
        .get("env")
        .and_then(Value::as_table)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            // [env] values are strings; numbers and booleans as written.
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Integer(n) => n.to_string(),
                Value::Float(f) => f.to_string(),
                Value::Boolean(b) => b.to_string(),
                _ => return None,
            };
            Some(Var::new(k, &value, at(&[Key("env"), Key(k)])))
        })
        .collect();
    let app = table.get("app").and_then(Value::as_str).unwrap_or("app");
    let drain = ctx.drain(FILE, &env, &[("FLY_APP_NAME", app)]);

    // Ports Fly dials: [http_service] and each [[services]] internal_port.
    let default_port = match fly.port.value {
        PortRule::Dialed { default, .. } => default,
        _ => None,
    };
    let bound = bound_port(ctx, &env);
    let mut dialed = Vec::new();
    if let Some(http) = table.get("http_service") {
        let line = at(&[Key("http_service"), Key("internal_port")]);
        let port = http.get("internal_port").and_then(Value::as_integer);
        dialed.push((
            port.or(default_port.map(i64::from)),
            line.or(at(&[Key("http_service")])),
        ));
    }
    for (i, service) in array(&table, "services").iter().enumerate() {
        let line = at(&[Key("services"), Index(i), Key("internal_port")]);
        dialed.push((
            service.get("internal_port").and_then(Value::as_integer),
            line,
        ));
    }
    if let Some(bound) = bound {
        for (port, line) in dialed {
            if let Some(port) = port
                && port != i64::from(bound)
            {
                ctx.push(
                    Finding::error("fly-port", FILE, line)
                        .message(format!(
                            "Fly sends traffic to internal_port {port}, but the server binds {bound}"
                        ))
                        .platform(
                            "Fly injects no PORT: its proxy dials internal_port (8080 by \
                             default), and a Machine listening elsewhere fails its checks and \
                             gets no traffic",
                        )
                        .source(fly.port.source)
                        .fix(format!(
                            "set internal_port = {bound}, or [env] PORT = \"{port}\" (the two \
                             must be equal)"
                        )),
                );
            }
        }
    }

    // [metrics] port must be the one the runtime serves metrics on.
    if let Some(metrics) = table.get("metrics") {
        let port = metrics.get("port").and_then(Value::as_integer);
        let served = super::var(&env, "METRICS_PORT").map(|v| v.value.clone());
        if let Some(port) = port
            && served.as_deref() != Some(port.to_string().as_str())
        {
            ctx.push(
                Finding::error("fly-metrics-port", FILE, at(&[Key("metrics"), Key("port")]))
                    .message(format!(
                        "Fly scrapes metrics on port {port}, but the runtime serves them {}",
                        match &served {
                            Some(p) => format!("on METRICS_PORT {p}"),
                            None => "nowhere: METRICS_PORT is not set in [env]".into(),
                        }
                    ))
                    .platform(
                        "Fly's scraper dials [metrics] port on each Machine's private address",
                    )
                    .source("https://fly.io/docs/reference/metrics/#custom-metrics")
                    .fix(format!("set [env] METRICS_PORT = \"{port}\"")),
            );
        }
    }

    // kill_signal: Fly's default is SIGINT, which the runtime drains on.
    let signal = table
        .get("kill_signal")
        .and_then(Value::as_str)
        .map(signal_name)
        .unwrap_or_else(|| fly.stop_signal.value.default.to_owned());
    let signal_line = at(&[Key("kill_signal")]);
    ctx.stop_signal("fly-kill-signal", FILE, signal_line, &signal, &fly);

    // kill_timeout: whole seconds or a duration string; 5 s by default.
    let timeout_line = at(&[Key("kill_timeout")]);
    let timeout = match table.get("kill_timeout") {
        None => Some(fly.grace.value.default_secs()),
        Some(Value::Integer(n)) => u64::try_from(*n).ok(),
        Some(Value::String(s)) => parse_duration(s).map(|d| d.as_secs()),
        Some(_) => None,
    };
    match (timeout, drain) {
        (Some(secs), Some(drain)) => {
            let stop = Stop {
                line: timeout_line,
                secs,
                signal: &signal,
            };
            ctx.grace("fly-kill-timeout", FILE, stop, drain, &fly);
        }
        (None, _) => ctx.push(
            Finding::error("fly-kill-timeout", FILE, timeout_line)
                .message("kill_timeout is neither whole seconds nor a duration such as \"30s\"")
                .platform("Fly rejects a fly.toml whose kill_timeout it cannot read")
                .source(fly.grace.source)
                .fix("kill_timeout = 30"),
        ),
        (Some(_), None) => {}
    }

    // Every HTTP check probes a route of the service.
    let mut probes = Vec::new();
    for (i, c) in table
        .get("http_service")
        .map(|h| array_in(h, "checks"))
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        probes.push((
            c.clone(),
            at(&[Key("http_service"), Key("checks"), Index(i), Key("path")]),
        ));
    }
    for (s, service) in array(&table, "services").iter().enumerate() {
        for (i, c) in array_in(service, "http_checks").iter().enumerate() {
            let path = [
                Key("services"),
                Index(s),
                Key("http_checks"),
                Index(i),
                Key("path"),
            ];
            probes.push((c.clone(), at(&path)));
        }
    }
    if let Some(checks) = table.get("checks").and_then(Value::as_table) {
        for (name, c) in checks {
            if c.get("type").and_then(Value::as_str) == Some("http") {
                probes.push((c.clone(), at(&[Key("checks"), Key(name), Key("path")])));
            }
        }
    }
    for (probe, line) in probes {
        let path = probe.get("path").and_then(Value::as_str).unwrap_or("/");
        let method = probe.get("method").and_then(Value::as_str).unwrap_or("GET");
        ctx.probe_path(FILE, line, path, method, &fly);
    }

    if let Some(dockerfile) = table
        .get("build")
        .and_then(|b| b.get("dockerfile"))
        .and_then(Value::as_str)
    {
        let line = at(&[Key("build"), Key("dockerfile")]);
        let source = "https://fly.io/docs/reference/configuration/#the-build-section";
        super::dockerfile_path(ctx, FILE, line, dockerfile, (fly.name, source));
    }
}

/// `table[key]` as an array of tables (`[[key]]`), empty if absent.
fn array(table: &Table, key: &str) -> Vec<Value> {
    table
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn array_in(value: &Value, key: &str) -> Vec<Value> {
    value
        .get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}
