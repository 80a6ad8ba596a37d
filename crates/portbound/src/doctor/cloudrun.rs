//! Cloud Run: `deploy/cloudrun/service.yaml` (the Knative Service that
//! `gcloud run services replace` applies).
//!
//! Checks: `PORT` is left to Cloud Run, the probes dial `containerPort`,
//! and an `h2c` port is served as h2c (`cloudrun-port`); the drain ends
//! within Cloud Run's fixed 10 s (`cloudrun-grace`); the CPU is not
//! throttled between requests (`cloudrun-cpu-throttling`); every probe
//! hits a route of the service (`probe-path`); the env holds values the
//! runtime accepts (`invalid-variable`).

use serde_norway::Value as Yaml;

use super::locate::{Index, Key, Seg, yaml_line};
use super::{Ctx, Finding, Stop, yaml_error_line, yaml_scalar};
use crate::platform::{Platform, PortRule};

const FILE: &str = "deploy/cloudrun/service.yaml";
/// The service.yaml reference.
const FORMAT: &str = "https://cloud.google.com/run/docs/reference/yaml/v1";
const PROBES: [&str; 3] = ["startupProbe", "livenessProbe", "readinessProbe"];
const THROTTLING: &str = "run.googleapis.com/cpu-throttling";

/// Checks deploy/cloudrun/service.yaml.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let run = Platform::CloudRun.contract();
    let Some(text) = ctx.read(FILE) else {
        return;
    };
    let doc: Yaml = match serde_norway::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => return ctx.parse_error(FILE, yaml_error_line(&e), &e, (run.name, FORMAT)),
    };
    let containers = doc["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    // The ingress container is the one with a port (one container may).
    let index = containers
        .iter()
        .position(|c| c.get("ports").is_some())
        .unwrap_or(0);
    let Some(container) = containers.get(index) else {
        return;
    };
    let base = [
        Key("spec"),
        Key("template"),
        Key("spec"),
        Key("containers"),
        Index(index),
    ];
    let at = |more: &[Seg<'_>]| yaml_line(&text, 0, &[&base[..], more].concat());

    let env = super::container_env(container, at);

    let default_port = match run.port.value {
        PortRule::FromSetting { default, .. } => default,
        _ => 8080,
    };
    let port_spec = &container["ports"][0];
    let port = port_spec["containerPort"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(default_port);

    if let Some(v) = super::var(&env, "PORT") {
        ctx.push(
            Finding::error("cloudrun-port", FILE, Some(v.line))
                .message("the container's env sets PORT, which Cloud Run reserves")
                .platform(format!(
                    "Cloud Run sets PORT itself, to containerPort ({port}), and refuses a \
                     revision that sets it"
                ))
                .source(run.port.source)
                .fix("remove PORT from env; change containerPort to move the port"),
        );
    }
    if port_spec["name"].as_str() == Some("h2c") {
        let http2 = super::var(&env, "HTTP2").is_some_and(|v| {
            matches!(
                v.value.to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        if !http2 {
            ctx.push(
                Finding::error(
                    "cloudrun-port",
                    FILE,
                    at(&[Key("ports"), Index(0), Key("name")]),
                )
                .message("the port is named h2c, but HTTP2 is not on in the container's env")
                .platform(
                    "with a port named h2c Cloud Run speaks cleartext HTTP/2 (prior \
                         knowledge) to the container; the runtime serves it only with HTTP2=on",
                )
                .source("https://cloud.google.com/run/docs/configuring/http2")
                .fix("add HTTP2=on to env, or name the port http1"),
            );
        }
    }
    for probe in PROBES {
        let dialed = &container[probe]["httpGet"]["port"];
        if let Some(p) = dialed.as_u64()
            && p != u64::from(port)
        {
            ctx.push(
                Finding::error("cloudrun-port", FILE, at(&[Key(probe), Key("httpGet"), Key("port")]))
                    .message(format!("{probe} dials port {p}, but the server binds containerPort {port}"))
                    .platform("Cloud Run runs the probe against the port it names; nothing answers there, so the probe fails and the instance is replaced")
                    .source("https://cloud.google.com/run/docs/configuring/healthchecks")
                    .fix(format!("set {probe}.httpGet.port to {port}, or leave it out")),
            );
        }
        if container[probe].get("httpGet").is_some() {
            let path = container[probe]["httpGet"]["path"].as_str().unwrap_or("/");
            let line = at(&[Key(probe), Key("httpGet"), Key("path")]).or(at(&[Key(probe)]));
            ctx.probe_path(FILE, line, path, "GET", &run);
        }
    }

    let port_text = port.to_string();
    let markers = [("K_SERVICE", "service"), ("PORT", port_text.as_str())];
    if let Some(drain) = ctx.drain(FILE, &env, &markers) {
        let line = ["SHUTDOWN_TIMEOUT", "SHUTDOWN_DELAY"]
            .iter()
            .find_map(|n| super::var(&env, n))
            .map(|v| v.line);
        let stop = Stop {
            line,
            secs: run.grace.value.default_secs(),
            signal: run.stop_signal.value.default,
        };
        ctx.grace("cloudrun-grace", FILE, stop, drain, &run);
    }

    // Request-based billing ("true", the default) throttles the CPU outside
    // requests. The runtime works after the response: each worker hands
    // its access lines to a writer thread on a 20 ms timer, the backing
    // services and readiness checks are probed on a timer, and a service's
    // `task`s run in the background. Google: "You shouldn't start
    // background threads or routines that run outside the scope of the
    // request handlers if you use this type of billing"
    // (https://cloud.google.com/run/docs/tips/general#avoid_background_activities_if_using_request-based_billing).
    // A warning, not an error: requests are still served; what suffers is
    // the timeliness of logs and of /readyz.
    let annotations = &doc["spec"]["template"]["metadata"]["annotations"];
    let throttled = yaml_scalar(&annotations[THROTTLING]);
    if throttled.as_deref() != Some("false") {
        let line = yaml_line(
            &text,
            0,
            &[
                Key("spec"),
                Key("template"),
                Key("metadata"),
                Key("annotations"),
                Key(THROTTLING),
            ],
        );
        ctx.push(
            Finding::warning("cloudrun-cpu-throttling", FILE, line)
                .message(match throttled {
                    Some(v) => format!("{THROTTLING} is \"{v}\": request-based billing"),
                    None => format!("{THROTTLING} is not set, so the revision has request-based billing (the default)"),
                })
                .platform(
                    "with request-based billing Cloud Run allocates CPU only while a request is \
                     in flight; the runtime's access-log writer, its backing-service probes and \
                     the service's background tasks then run late or not at all, so log lines \
                     arrive with the next request and /readyz reports stale state",
                )
                .source("https://cloud.google.com/run/docs/configuring/billing-settings")
                .fix(format!(
                    "set the revision annotation {THROTTLING}: \"false\" (instance-based billing)"
                )),
        );
    }
}
