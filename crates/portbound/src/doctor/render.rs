//! Render: `render.yaml`, the Blueprint; each `type: web` service.
//!
//! Checks: `maxShutdownDelaySeconds` (30 by default, at most 300) outlasts
//! the drain (`render-grace`); `healthCheckPath` is a route of the service
//! (`probe-path`); `dockerfilePath` exists (`dockerfile-path`); `envVars`
//! hold values the runtime accepts (`invalid-variable`). Render injects
//! `PORT` and routes to it, so there is no port to mismatch.

use serde_norway::Value as Yaml;

use super::locate::{Index, Key, yaml_line};
use super::{Ctx, Finding, Stop, Var, yaml_error_line, yaml_scalar};
use crate::platform::{Grace, Platform};

const FILE: &str = "render.yaml";
/// The Blueprint reference.
const FORMAT: &str = "https://render.com/docs/blueprint-spec";

/// Checks render.yaml.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let render = Platform::Render.contract();
    let Some(text) = ctx.read(FILE) else {
        return;
    };
    let doc: Yaml = match serde_norway::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => return ctx.parse_error(FILE, yaml_error_line(&e), &e, (render.name, FORMAT)),
    };
    let services = doc["services"].as_sequence().cloned().unwrap_or_default();
    for (i, service) in services.iter().enumerate() {
        if service["type"].as_str() != Some("web") {
            continue;
        }
        let at = |key: &str| yaml_line(&text, 0, &[Key("services"), Index(i), Key(key)]);
        // envVars: `{key, value}`; `fromDatabase`/`sync: false` have no value here.
        let env: Vec<Var> = service["envVars"]
            .as_sequence()
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(j, item)| {
                let name = yaml_scalar(&item["key"])?;
                let value = yaml_scalar(&item["value"])?;
                let line = yaml_line(
                    &text,
                    0,
                    &[
                        Key("services"),
                        Index(i),
                        Key("envVars"),
                        Index(j),
                        Key("key"),
                    ],
                );
                Some(Var::new(&name, &value, line))
            })
            .collect();

        let (key, default, max) = match render.grace.value {
            Grace::Setting {
                key, default, max, ..
            } => (key, default, max),
            Grace::Fixed { secs } => ("maxShutdownDelaySeconds", secs, None),
        };
        let grace = service[key].as_u64().unwrap_or(default);
        let line = at(key);
        if let Some(max) = max
            && grace > max
        {
            ctx.push(
                Finding::error("render-grace", FILE, line)
                    .message(format!("{key} is {grace}, above Render's maximum of {max}"))
                    .platform("Render rejects a Blueprint whose maxShutdownDelaySeconds is outside 1 to 300")
                    .source(render.grace.source)
                    .fix(format!("set {key} to at most {max}")),
            );
        }
        if let Some(drain) = ctx.drain(FILE, &env, &[("RENDER", "true")]) {
            let stop = Stop {
                line,
                secs: grace.min(max.unwrap_or(u64::MAX)),
                signal: render.stop_signal.value.default,
            };
            ctx.grace("render-grace", FILE, stop, drain, &render);
        }
        if let Some(path) = service["healthCheckPath"].as_str() {
            ctx.probe_path(FILE, at("healthCheckPath"), path, "GET", &render);
        }
        if service["runtime"].as_str().or(service["env"].as_str()) == Some("docker") {
            let path = service["dockerfilePath"].as_str().unwrap_or("./Dockerfile");
            let source = "https://render.com/docs/blueprint-spec#dockerfilepath";
            let line = at("dockerfilePath");
            super::dockerfile_path(ctx, FILE, line, path, (render.name, source));
        }
    }
}
