//! Docker Compose: `compose.yaml` (or `compose.yml`, `docker-compose.yml`,
//! `docker-compose.yaml`, the first found). The services that run the
//! service's image (they build it, or run the image another one builds,
//! or an image named after the binary) are checked against it; the others
//! (nginx in front, a database) only for clashing host ports.
//!
//! Checks: each published container port is the service's `PORT` and no
//! host port is published twice (`compose-port`); `stop_grace_period`
//! (10 s by default) outlasts the drain (`compose-grace`); `stop_signal`
//! is one the runtime drains on (`compose-stop-signal`); the healthcheck
//! can run in the image (`healthcheck-command`); one image is built by one
//! service (`compose-build`) and the others do not try to pull it
//! (`compose-pull-policy`); `environment` holds values the runtime
//! accepts (`invalid-variable`).

use std::collections::BTreeMap;

use serde_norway::Value as Yaml;

use super::image::healthcheck_problem;
use super::locate::{Index, Key, yaml_line};
use super::{
    Ctx, Finding, Stop, Var, bound_port, parse_duration, signal_name, yaml_error_line, yaml_scalar,
};
use crate::platform::Platform;

pub(crate) const FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];
const SERVICES: &str = "https://docs.docker.com/reference/compose-file/services/";
/// The Compose file reference.
const FORMAT: &str = "https://docs.docker.com/reference/compose-file/";

/// (host, container) ports of one `ports:` entry, short or long syntax.
fn port_entry(entry: &Yaml) -> Option<(Option<String>, String)> {
    if entry.is_mapping() {
        let target = yaml_scalar(&entry["target"])?;
        return Some((yaml_scalar(&entry["published"]), target));
    }
    let text = yaml_scalar(entry)?;
    let text = text.split('/').next().unwrap_or(&text);
    let mut parts = text.rsplit(':');
    let container = parts.next()?.to_owned();
    Some((parts.next().map(str::to_owned), container))
}

/// `environment:` as a map or a list of `NAME=value` (a bare `NAME` takes
/// the shell's value, unknown here, and is skipped).
pub(crate) fn environment(text: &str, service: &str, spec: &Yaml) -> Vec<Var> {
    let line = |key: Option<&str>, i: Option<usize>| {
        let mut path = vec![Key("services"), Key(service), Key("environment")];
        path.extend(key.map(Key));
        path.extend(i.map(Index));
        yaml_line(text, 0, &path)
    };
    match &spec["environment"] {
        Yaml::Mapping(map) => map
            .iter()
            .filter_map(|(k, v)| {
                let name = yaml_scalar(k)?;
                let value = yaml_scalar(v)?;
                Some(Var::new(&name, &value, line(Some(&name), None)))
            })
            .collect(),
        Yaml::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item = yaml_scalar(item)?;
                let (k, v) = item.split_once('=')?;
                Some(Var::new(k, v, line(None, Some(i))))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// What a `build:` builds: (context, dockerfile, target).
fn build_key(build: &Yaml) -> String {
    match build {
        Yaml::Mapping(_) => format!(
            "{} {} {}",
            yaml_scalar(&build["context"]).unwrap_or_else(|| ".".into()),
            yaml_scalar(&build["dockerfile"]).unwrap_or_else(|| "Dockerfile".into()),
            yaml_scalar(&build["target"]).unwrap_or_default()
        ),
        other => format!(
            "{} Dockerfile ",
            yaml_scalar(other).unwrap_or_else(|| ".".into())
        ),
    }
}

/// The repository part of an image reference (`portbound` of
/// `registry/x/portbound:local`).
fn repository(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((n, tag)) if !tag.contains('/') => n,
        _ => name,
    };
    name.rsplit('/').next().unwrap_or(name)
}

/// The images the file's services build.
fn built_images(doc: &Yaml) -> Vec<String> {
    doc["services"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(|(_, s)| s.get("build").is_some())
        .filter_map(|(_, s)| s["image"].as_str().map(str::to_owned))
        .collect()
}

/// Whether service `s` runs the service's image: it builds it, runs the
/// image another service builds, or an image named after the binary.
pub(crate) fn runs_ours(doc: &Yaml, binary: &str, s: &Yaml) -> bool {
    s.get("build").is_some()
        || s["image"]
            .as_str()
            .is_some_and(|i| built_images(doc).iter().any(|b| b == i) || repository(i) == binary)
}

/// Whether service `s` is the one-shot release step (`command:
/// ["migrate"]`), which exits instead of serving: no port, no drain.
pub(crate) fn is_release_step(s: &Yaml) -> bool {
    match &s["command"] {
        Yaml::Sequence(items) => items.first().and_then(yaml_scalar).as_deref() == Some("migrate"),
        other => yaml_scalar(other).is_some_and(|c| c.split_whitespace().next() == Some("migrate")),
    }
}

/// Checks the Compose file.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let docker = Platform::Local.contract();
    let Some(file) = FILES.into_iter().find(|f| ctx.exists(f)) else {
        return;
    };
    let Some(text) = ctx.read(file) else {
        return;
    };
    let doc: Yaml = match serde_norway::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => return ctx.parse_error(file, yaml_error_line(&e), &e, ("Compose", FORMAT)),
    };
    let Some(services) = doc["services"].as_mapping() else {
        return;
    };
    let services: Vec<(String, Yaml)> = services
        .iter()
        .filter_map(|(k, v)| Some((yaml_scalar(k)?, v.clone())))
        .collect();
    let at =
        |service: &str, key: &str| yaml_line(&text, 0, &[Key("services"), Key(service), Key(key)]);

    // Who builds what.
    let built = built_images(&doc);
    let binary = ctx.binary;
    // The release step (release.rs checks it) serves nothing.
    let runs_ours = |s: &Yaml| runs_ours(&doc, binary, s) && !is_release_step(s);

    // compose-build: one build per image (or per context and target).
    let mut builders: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (name, s) in services.iter().filter(|(_, s)| s.get("build").is_some()) {
        let key = match s["image"].as_str() {
            Some(image) => format!("image {image}"),
            None => format!("context {}", build_key(&s["build"])),
        };
        builders.entry(key).or_default().push(name);
    }
    for (what, names) in &builders {
        for name in names.iter().skip(1) {
            ctx.push(
                Finding::warning("compose-build", file, at(name, "build"))
                    .message(format!("{name} builds the same {what} as {}", names[0]))
                    .platform(
                        "Compose builds every service's `build:` in parallel (buildx bake); two \
                         builds of one image race, and the second export fails with \"image \
                         already exists\", or the same image is built twice",
                    )
                    .source("https://github.com/docker/compose/blob/main/pkg/compose/build.go")
                    .fix(format!(
                        "build once (in {}) and give {name} `image:` of that build with \
                         `pull_policy: never`",
                        names[0]
                    )),
            );
        }
    }

    let mut host_ports: BTreeMap<String, String> = BTreeMap::new();
    for (name, s) in &services {
        let ours = runs_ours(s);
        let env = if ours {
            environment(&text, name, s)
        } else {
            Vec::new()
        };
        let bound = if ours { bound_port(ctx, &env) } else { None };
        for (i, entry) in s["ports"].as_sequence().into_iter().flatten().enumerate() {
            let line = yaml_line(
                &text,
                0,
                &[Key("services"), Key(name), Key("ports"), Index(i)],
            );
            let Some((host, container)) = port_entry(entry) else {
                continue;
            };
            if let Some(host) = host {
                if let Some(first) = host_ports.get(&host) {
                    ctx.push(
                        Finding::error("compose-port", file, line)
                            .message(format!("{name} publishes host port {host}, which {first} publishes too"))
                            .platform("Docker can bind a host port for one container only; the second fails to start (\"port is already allocated\")")
                            .source(docker.port.source)
                            .fix(format!("publish {name} on another host port")),
                    );
                } else {
                    host_ports.insert(host, name.clone());
                }
            }
            if let Some(bound) = bound
                && container.parse::<u16>().ok() != Some(bound)
            {
                ctx.push(
                    Finding::error("compose-port", file, line)
                        .message(format!(
                            "{name} publishes container port {container}, but its server binds {bound}"
                        ))
                        .platform(
                            "Docker injects no PORT and forwards the host port to the container \
                             port as written; nothing listens there, so every request is refused",
                        )
                        .source(docker.port.source)
                        .fix(format!(
                            "publish HOST:{bound}, or set {name}'s PORT to {container}"
                        )),
                );
            }
        }
        // Any service that only runs an image this file builds, the release
        // step among them.
        let pulls = !matches!(s["pull_policy"].as_str(), Some("never" | "build"));
        let image = s["image"].as_str().unwrap_or_default();
        if s.get("build").is_none() && pulls && built.iter().any(|b| b == image) {
            ctx.push(
                Finding::warning("compose-pull-policy", file, at(name, "image"))
                    .message(format!(
                        "{name} runs {image}, which this file builds, without pull_policy: never"
                    ))
                    .platform(
                        "Compose pulls an image-only service's image unless pull_policy is never \
                         or build; a locally built image is on no registry, so the pull fails or \
                         fetches someone else's image of that name",
                    )
                    .source("https://github.com/docker/compose/blob/main/pkg/compose/pull.go")
                    .fix("add `pull_policy: never` to the service"),
            );
        }
        if !ours {
            continue;
        }

        if let Some(signal) = yaml_scalar(&s["stop_signal"]) {
            let signal = signal_name(&signal);
            ctx.stop_signal(
                "compose-stop-signal",
                file,
                at(name, "stop_signal"),
                &signal,
                &docker,
            );
        }
        let signal = yaml_scalar(&s["stop_signal"])
            .map(|s| signal_name(&s))
            .unwrap_or_else(|| docker.stop_signal.value.default.to_owned());
        let grace_line = at(name, "stop_grace_period");
        let grace = match yaml_scalar(&s["stop_grace_period"]) {
            None => Some(docker.grace.value.default_secs()),
            Some(text) => parse_duration(&text).map(|d| d.as_secs()),
        };
        let drain = ctx.drain(file, &env, &[]);
        match (grace, drain) {
            (Some(secs), Some(drain)) => {
                let stop = Stop {
                    line: grace_line,
                    secs,
                    signal: &signal,
                };
                ctx.grace("compose-grace", file, stop, drain, &docker);
            }
            (None, _) => ctx.push(
                Finding::error("compose-grace", file, grace_line)
                    .message(format!("{name}'s stop_grace_period is not a duration"))
                    .platform("Compose rejects a file whose stop_grace_period it cannot read")
                    .source(docker.grace.source)
                    .fix("stop_grace_period: 30s"),
            ),
            (Some(_), None) => {}
        }

        healthcheck(ctx, file, &text, name, s);
    }
}

/// `healthcheck-command` for one service's `healthcheck.test`.
fn healthcheck(ctx: &mut Ctx<'_>, file: &str, text: &str, name: &str, s: &Yaml) {
    let check = &s["healthcheck"];
    if check["disable"].as_bool() == Some(true) || check["test"].is_null() {
        return;
    }
    let test = &check["test"];
    // ["CMD", argv...], ["CMD-SHELL", "cmd"], ["NONE"], or a string (shell).
    let argv: Option<Vec<String>> = match test {
        Yaml::Sequence(items) => {
            let words: Vec<String> = items.iter().filter_map(yaml_scalar).collect();
            match words.first().map(String::as_str) {
                Some("NONE") => return,
                Some("CMD") => Some(words[1..].to_vec()),
                _ => None,
            }
        }
        _ => None,
    };
    let no_shell = ctx.image.as_ref().is_some_and(|i| i.no_shell);
    if let Some(problem) = healthcheck_problem(ctx.binary, argv.as_deref(), no_shell) {
        let binary = ctx.binary;
        let line = yaml_line(
            text,
            0,
            &[Key("services"), Key(name), Key("healthcheck"), Key("test")],
        );
        ctx.push(
            Finding::error("healthcheck-command", file, line)
                .message(format!("{name}'s healthcheck {problem}"))
                .platform(
                    "Compose runs the test inside the container; one that cannot run there marks \
                     the container unhealthy, and services that depend on it being healthy \
                     never start",
                )
                .source(format!("{SERVICES}#healthcheck"))
                .fix(format!(
                    "test: [\"CMD\", \"/usr/local/bin/{binary}\", \"healthcheck\"]"
                )),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_entries_in_both_syntaxes() {
        let y = |t: &str| serde_norway::from_str::<Yaml>(t).unwrap();
        assert_eq!(
            port_entry(&y("\"8080:5000\"")),
            Some((Some("8080".into()), "5000".into()))
        );
        assert_eq!(
            port_entry(&y("\"127.0.0.1:8080:5000/tcp\"")),
            Some((Some("8080".into()), "5000".into()))
        );
        assert_eq!(port_entry(&y("5000")), Some((None, "5000".into())));
        assert_eq!(
            port_entry(&y("{target: 5000, published: \"8080\"}")),
            Some((Some("8080".into()), "5000".into()))
        );
        assert_eq!(
            repository("registry.example/x/portbound:local"),
            "portbound"
        );
        assert_eq!(repository("localhost:5000/portbound"), "portbound");
    }
}
