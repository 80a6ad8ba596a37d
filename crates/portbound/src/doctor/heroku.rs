//! Heroku's container stack: `heroku.yml` (what to build and run),
//! `app.json` (the config vars a new app gets) and a `Procfile`, if there
//! is one.
//!
//! Checks: each `build.docker` Dockerfile exists (`dockerfile-path`), a
//! `run:` command runs the service's server (`heroku-run`), a Procfile's
//! `web:` does too (`procfile-command`), and the drain under app.json's
//! values ends before Heroku's fixed 30 s SIGKILL (`heroku-grace`, with
//! `invalid-variable` for a value the runtime refuses). Heroku has no
//! health check to configure, so there is no probe path to check.

use serde_norway::Value as Yaml;

use super::locate::{Key, json_line, yaml_line};
use super::{Ctx, Finding, Stop, Var, runs_server, yaml_error_line, yaml_scalar};
use crate::platform::Platform;

const HEROKU_YML: &str = "heroku.yml";
const APP_JSON: &str = "app.json";
const PROCFILE: &str = "Procfile";
/// heroku.yml's `build` and `run` sections.
const BUILD: &str = "https://devcenter.heroku.com/articles/build-docker-images-heroku-yml";
/// The app.json schema.
const APP_JSON_FORMAT: &str = "https://devcenter.heroku.com/articles/app-json-schema";

/// Checks heroku.yml, app.json and the Procfile.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let heroku = Platform::Heroku.contract();
    if let Some(text) = ctx.read(HEROKU_YML) {
        match serde_norway::from_str::<Yaml>(&text) {
            Err(e) => ctx.parse_error(HEROKU_YML, yaml_error_line(&e), &e, (heroku.name, BUILD)),
            Ok(doc) => heroku_yml(ctx, &text, &doc),
        }
    }
    let mut vars = Vec::new();
    let mut grace_file = ctx.exists(HEROKU_YML).then_some(HEROKU_YML);
    if let Some(text) = ctx.read(APP_JSON) {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => ctx.parse_error(APP_JSON, Some(e.line()), &e, (heroku.name, APP_JSON_FORMAT)),
            Ok(app) => {
                grace_file = Some(APP_JSON);
                // `"NAME": {"value": "..."}` or `"NAME": "value"`.
                for (name, spec) in app["env"].as_object().into_iter().flatten() {
                    let value = spec.as_str().or_else(|| spec["value"].as_str());
                    if let Some(value) = value {
                        let line = json_line(&text, &["env", name]);
                        vars.push(Var::new(name, value, line));
                    }
                }
            }
        }
    }
    // Heroku's grace is fixed: checked once, against the values app.json
    // gives a new app (or the image's alone).
    if let Some(file) = grace_file
        && let Some(drain) = ctx.drain(file, &vars, &[("DYNO", "web.1")])
    {
        let line = ["SHUTDOWN_TIMEOUT", "SHUTDOWN_DELAY"]
            .iter()
            .find_map(|n| super::var(&vars, n))
            .map(|v| v.line);
        let stop = Stop {
            line,
            secs: heroku.grace.value.default_secs(),
            signal: heroku.stop_signal.value.default,
        };
        ctx.grace("heroku-grace", file, stop, drain, &heroku);
    }
    if let Some(text) = ctx.read(PROCFILE) {
        procfile(ctx, &text);
    }
}

fn heroku_yml(ctx: &mut Ctx<'_>, text: &str, doc: &Yaml) {
    let heroku = Platform::Heroku.contract();
    if let Some(builds) = doc["build"]["docker"].as_mapping() {
        for (process, dockerfile) in builds {
            let (Some(process), Some(path)) = (yaml_scalar(process), yaml_scalar(dockerfile))
            else {
                continue;
            };
            let line = yaml_line(text, 0, &[Key("build"), Key("docker"), Key(&process)]);
            super::dockerfile_path(ctx, HEROKU_YML, line, &path, (heroku.name, BUILD));
        }
    }
    // `run: web: CMD` or `run: web: {command: [CMD], image: web}`.
    let web = &doc["run"]["web"];
    let command = match web {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Mapping(_) => match &web["command"] {
            Yaml::Sequence(items) => items.first().and_then(yaml_scalar),
            other => yaml_scalar(other),
        },
        _ => None,
    };
    if let Some(command) = command {
        let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if let Err(problem) = runs_server(ctx.binary, &argv) {
            let binary = ctx.binary;
            let line = yaml_line(text, 0, &[Key("run"), Key("web")]);
            ctx.push(
                Finding::error("heroku-run", HEROKU_YML, line)
                    .message(format!("run.web {problem}"))
                    .platform(
                        "Heroku starts web dynos with run.web instead of the image's CMD; the \
                         router sends traffic only to a process that binds PORT",
                    )
                    .source(BUILD)
                    .fix(format!(
                        "remove `run:` so Heroku runs the image's CMD, or run `{binary} serve`"
                    )),
            );
        }
    }
}

fn procfile(ctx: &mut Ctx<'_>, text: &str) {
    for (n, line) in text.lines().enumerate() {
        let Some(command) = line.trim().strip_prefix("web:") else {
            continue;
        };
        // The runners start each line with `sh -c`; `exec` makes the
        // binary the process they signal and wait for.
        let argv: Vec<String> = command
            .split_whitespace()
            .skip_while(|w| *w == "exec")
            .map(str::to_owned)
            .collect();
        if let Err(problem) = runs_server(ctx.binary, &argv) {
            let binary = ctx.binary;
            ctx.push(
                Finding::error("procfile-command", PROCFILE, Some(n + 1))
                    .message(format!("the web process {problem}"))
                    .platform(
                        "Heroku runs the Procfile's web command on every web dyno and routes \
                         requests only to a process that binds PORT",
                    )
                    .source("https://devcenter.heroku.com/articles/procfile")
                    .fix(format!("web: {binary} serve")),
            );
        }
    }
}
