//! `SERVICE doctor`: reads a service's deploy manifests and checks each
//! against the runtime contract of the platform it is for
//! ([`crate::platform::Contract`]) and against the service itself: the port
//! it binds, the drain it runs after the stop signal (computed by
//! [`crate::config::Config`], the code the service runs), the signals it
//! drains on, the paths of its OpenAPI document, its binary's name.
//!
//! Every problem is one [`Finding`]: severity, a stable check id, the file
//! and line, what is wrong, what the platform does about it (with the page
//! that says so) and the fix. A manifest that is absent is skipped (a
//! service keeps only the platforms it deploys to); one that does not parse
//! is an error. Errors mean a deploy that will break (a port nobody
//! dials, requests cut by SIGKILL, a probe that 404s); warnings mean one
//! that works worse than it could.
//!
//! One file a manifest family: [`image`] (Dockerfile, rust-toolchain.toml),
//! [`heroku`], [`fly`], [`cloudrun`], [`railway`], [`render`],
//! [`kubernetes`], [`compose`], [`systemd`], [`release`] (every
//! platform's release step) and [`cargo`] (the carried
//! actix-http). [`dockerfile`] is the Dockerfile reader and [`locate`]
//! finds the line of a key.
//!
//! The check ids, stable for CI to filter on:
//!
//! | id | severity | what |
//! |---|---|---|
//! | `parse-error` | error | a manifest that does not parse |
//! | `invalid-variable` | error | a manifest sets a value the runtime refuses to start with |
//! | `probe-path` | error | a health check probes a path (or method) the OpenAPI document lacks |
//! | `dockerfile-path` | error | a manifest builds a Dockerfile that does not exist |
//! | `healthcheck-command` | error | a Dockerfile or Compose health check the image cannot run |
//! | `dockerfile-base-image` | error / warning | a `FROM` tag its publisher does not produce / a moving or unsupported one |
//! | `dockerfile-toolchain` | error | the rust image's release is not rust-toolchain.toml's |
//! | `dockerfile-glibc` | error | built on a newer Debian than it runs on |
//! | `dockerfile-command` | error | `ENTRYPOINT` + `CMD` does not run the server, in exec form |
//! | `dockerfile-port` | warning | `EXPOSE` is not the port the server binds |
//! | `dockerfile-stopsignal` | error | `STOPSIGNAL` the runtime does not drain on |
//! | `heroku-grace` | error | the drain outlasts Heroku's fixed 30 s |
//! | `heroku-run` | error | heroku.yml `run.web` does not run the server |
//! | `procfile-command` | error | the Procfile's `web:` does not run the server |
//! | `fly-port` | error | `internal_port` is not the port the server binds |
//! | `fly-metrics-port` | error | `[metrics] port` is not `METRICS_PORT` |
//! | `fly-kill-signal` | error | `kill_signal` the runtime does not drain on |
//! | `fly-kill-timeout` | error | `kill_timeout` (5 s by default) shorter than the drain |
//! | `cloudrun-port` | error | env sets the reserved `PORT`, a probe dials another port, or h2c without `HTTP2` |
//! | `cloudrun-grace` | error | the drain outlasts Cloud Run's fixed 10 s |
//! | `cloudrun-cpu-throttling` | warning | request-based billing throttles the runtime's background work |
//! | `railway-draining` | error | `RAILWAY_DEPLOYMENT_DRAINING_SECONDS` unset, 0 or shorter than the drain |
//! | `render-grace` | error | `maxShutdownDelaySeconds` shorter than the drain, or above 300 |
//! | `k8s-port` | error | `PORT`, `containerPort`, probe ports and Service `targetPort` disagree |
//! | `k8s-grace` | error | `terminationGracePeriodSeconds` shorter than preStop + drain |
//! | `k8s-prestop` | error / warning | a preStop `exec` the image cannot run / a preStop sleep on top of `SHUTDOWN_DELAY` |
//! | `k8s-replicas` | warning | `spec.replicas` beside an HPA that scales the workload |
//! | `compose-port` | error | a published container port is not `PORT`, or a host port is published twice |
//! | `compose-grace` | error | `stop_grace_period` (10 s by default) shorter than the drain |
//! | `compose-stop-signal` | error | `stop_signal` the runtime does not drain on |
//! | `compose-build` | warning | several services build one image (or one context) |
//! | `compose-pull-policy` | warning | a service runs the locally built image without `pull_policy: never` |
//! | `systemd-exec-start` | error | `ExecStart` does not run the server |
//! | `systemd-kill-signal` | error | `KillSignal` the runtime does not drain on |
//! | `systemd-timeout` | error | `TimeoutStopSec` (90 s by default) shorter than the drain |
//! | `systemd-socket` | error / warning | socket unit missing, `Accept=yes` or no address / a port other than the service's |
//! | `release-step` | error | the service has migrations and a platform's manifest runs no release step, or a Compose service does not wait for it |
//! | `release-command` | error | a release step does not run `SERVICE migrate` |
//! | `release-direct-url` | error | `DATABASE_URL` is a pooler's and no `DATABASE_DIRECT_URL` is set |
//! | `actix-http-patch` | warning | the service builds the runtime without the carried actix-http |

pub mod cargo;
pub mod cloudrun;
pub mod compose;
pub mod dockerfile;
pub mod fly;
pub mod heroku;
pub mod image;
pub mod kubernetes;
pub mod locate;
pub mod railway;
pub mod release;
pub mod render;
pub mod systemd;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Env};
use crate::platform::Contract;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Works, but worse than it could (exit status unaffected).
    Warning,
    /// The deploy will break or lose requests (exit status 1).
    Error,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem in one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The check that found it: stable, kebab-case (`fly-kill-timeout`).
    pub check: &'static str,
    /// The manifest, relative to the directory checked.
    pub file: String,
    /// The 1-based line of the offending key or instruction (1 when the
    /// key is missing).
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// What the platform does, which makes it wrong.
    pub platform: String,
    /// Where the platform's behaviour is documented.
    pub source: String,
    /// What to change.
    pub fix: String,
}

impl Finding {
    fn new(severity: Severity, check: &'static str, file: &str, line: Option<usize>) -> Finding {
        Finding {
            severity,
            check,
            file: file.to_owned(),
            line: line.unwrap_or(1),
            message: String::new(),
            platform: String::new(),
            source: String::new(),
            fix: String::new(),
        }
    }

    /// An error of `check` at `file:line` (line 1 when `None`).
    pub(crate) fn error(check: &'static str, file: &str, line: Option<usize>) -> Finding {
        Finding::new(Severity::Error, check, file, line)
    }

    /// A warning of `check` at `file:line` (line 1 when `None`).
    pub(crate) fn warning(check: &'static str, file: &str, line: Option<usize>) -> Finding {
        Finding::new(Severity::Warning, check, file, line)
    }

    pub(crate) fn message(mut self, text: impl Into<String>) -> Finding {
        self.message = text.into();
        self
    }

    pub(crate) fn platform(mut self, text: impl Into<String>) -> Finding {
        self.platform = text.into();
        self
    }

    pub(crate) fn source(mut self, url: impl Into<String>) -> Finding {
        self.source = url.into();
        self
    }

    pub(crate) fn fix(mut self, text: impl Into<String>) -> Finding {
        self.fix = text.into();
        self
    }
}

/// What `doctor` found in one directory.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The directory checked.
    pub dir: PathBuf,
    /// The manifests that were there and were read, relative to `dir`.
    pub checked: Vec<String>,
    /// Every finding, ordered by file and line.
    pub findings: Vec<Finding>,
}

impl Report {
    /// How many findings are errors.
    pub fn errors(&self) -> usize {
        self.count(Severity::Error)
    }

    /// How many findings are warnings.
    pub fn warnings(&self) -> usize {
        self.count(Severity::Warning)
    }

    fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The process's exit status: 1 if any finding is an error, else 0
    /// (warnings alone pass, so CI can adopt the command before fixing them).
    pub fn exit_status(&self) -> u8 {
        u8::from(self.errors() > 0)
    }

    /// The report for a person: one block a finding, then a summary line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = writeln!(
                out,
                "{}:{}: {}[{}]: {}",
                f.file,
                f.line,
                f.severity.as_str(),
                f.check,
                f.message
            );
            let _ = writeln!(out, "    platform: {}", f.platform);
            let _ = writeln!(out, "    fix:      {}", f.fix);
            let _ = writeln!(out, "    source:   {}", f.source);
        }
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let _ = writeln!(
            out,
            "doctor: {}, {} in {} ({}: {})",
            plural(self.errors(), "error"),
            plural(self.warnings(), "warning"),
            self.dir.display(),
            plural(self.checked.len(), "manifest"),
            if self.checked.is_empty() {
                "none found".to_owned()
            } else {
                self.checked.join(", ")
            }
        );
        out
    }

    /// The report for CI: `{"dir", "checked", "errors", "warnings",
    /// "findings": [{severity, check, file, line, message, platform,
    /// source, fix}]}`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "dir": self.dir,
            "checked": self.checked,
            "errors": self.errors(),
            "warnings": self.warnings(),
            "findings": self.findings,
        });
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// Checks the manifests in `dir` for the service whose binary is `binary`
/// and whose OpenAPI document is `openapi`.
pub fn check(dir: &Path, binary: &str, openapi: &utoipa::openapi::OpenApi) -> Report {
    let mut ctx = Ctx::new(dir, binary, Routes::from_openapi(openapi));
    // The image first: the other platforms run it, so its ENV is the base
    // of every manifest's environment and its base image decides what a
    // hook or a health check can execute.
    image::check(&mut ctx);
    heroku::check(&mut ctx);
    fly::check(&mut ctx);
    cloudrun::check(&mut ctx);
    railway::check(&mut ctx);
    render::check(&mut ctx);
    kubernetes::check(&mut ctx);
    compose::check(&mut ctx);
    systemd::check(&mut ctx);
    release::check(&mut ctx);
    cargo::check(&mut ctx);
    let mut findings = ctx.findings;
    findings.sort_by(|a, b| (&a.file, a.line, a.check).cmp(&(&b.file, b.line, b.check)));
    Report {
        dir: dir.to_path_buf(),
        checked: ctx.checked,
        findings,
    }
}

/// The paths of the service's OpenAPI document, with the methods each has.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// (path template, methods in upper case).
    paths: Vec<(String, BTreeSet<&'static str>)>,
}

impl Routes {
    /// The routes of an OpenAPI document.
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> Routes {
        let paths = doc
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("OPTIONS", item.options.is_some()),
                ]
                .into_iter()
                .filter(|(_, has)| *has)
                .map(|(m, _)| m)
                .collect();
                (path.clone(), methods)
            })
            .collect();
        Routes { paths }
    }

    /// The methods the document lists for `path` (a concrete path; `{x}`
    /// segments of a template match any one segment). `None`: no such
    /// path. A query string is ignored.
    pub fn methods(&self, path: &str) -> Option<&BTreeSet<&'static str>> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        self.paths
            .iter()
            .find(|(template, _)| template_matches(template, path))
            .map(|(_, methods)| methods)
    }
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// A variable a manifest sets, and the line that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    /// Its name.
    pub name: String,
    /// Its value, as the process would see it.
    pub value: String,
    /// The line of the manifest that sets it (1 when unknown).
    pub line: usize,
}

impl Var {
    pub(crate) fn new(name: &str, value: &str, line: Option<usize>) -> Var {
        Var {
            name: name.to_owned(),
            value: value.to_owned(),
            line: line.unwrap_or(1),
        }
    }
}

/// The value of `name` in `vars` (the last one wins, as in an environment).
pub(crate) fn var<'a>(vars: &'a [Var], name: &str) -> Option<&'a Var> {
    vars.iter().rev().find(|v| v.name == name)
}

/// What the runtime does after the stop signal under some environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drain {
    /// Seconds a Kubernetes preStop hook takes before the signal is sent
    /// (it counts against the same grace period).
    pub hook: u64,
    /// `SHUTDOWN_DELAY`: seconds of serving with readiness at 503.
    pub delay: u64,
    /// `SHUTDOWN_TIMEOUT`: seconds in-flight requests get after that.
    pub timeout: u64,
}

impl Drain {
    /// The whole budget: the platform's SIGKILL must come later.
    pub fn total(self) -> u64 {
        // Saturating: a manifest may hold any number (a preStop sleep of
        // u64::MAX seconds), and a check must report it, not overflow.
        self.hook
            .saturating_add(self.delay)
            .saturating_add(self.timeout)
    }

    /// `25 s (SHUTDOWN_DELAY 0 + SHUTDOWN_TIMEOUT 25)`.
    pub fn describe(self) -> String {
        let hook = if self.hook > 0 {
            format!("preStop {} + ", self.hook)
        } else {
            String::new()
        };
        format!(
            "{} s ({hook}SHUTDOWN_DELAY {} + SHUTDOWN_TIMEOUT {})",
            self.total(),
            self.delay,
            self.timeout
        )
    }
}

/// How a platform stops the process, as one manifest configures it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop<'s> {
    /// The line that sets the grace (`None`: the default applies).
    pub line: Option<usize>,
    /// Seconds between the signal and SIGKILL.
    pub secs: u64,
    /// The signal sent.
    pub signal: &'s str,
}

/// The state of one run: the directory, the service, what the image says,
/// and the findings so far.
pub(crate) struct Ctx<'a> {
    dir: &'a Path,
    /// The service's binary name, which every command line must run.
    pub binary: &'a str,
    /// The service's routes, which every probe must hit.
    pub routes: Routes,
    /// The image's facts, once `image::check` has read the Dockerfile.
    pub image: Option<image::Image>,
    findings: Vec<Finding>,
    checked: Vec<String>,
}

impl<'a> Ctx<'a> {
    fn new(dir: &'a Path, binary: &'a str, routes: Routes) -> Ctx<'a> {
        Ctx {
            dir,
            binary,
            routes,
            image: None,
            findings: Vec::new(),
            checked: Vec::new(),
        }
    }

    /// Records a finding.
    pub fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// The text of `file` (relative to the directory), if it is there; it
    /// then counts as checked. A file that exists but cannot be read is an
    /// error finding.
    pub fn read(&mut self, file: &str) -> Option<String> {
        let path = self.dir.join(file);
        if !path.is_file() {
            return None;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                if !self.checked.iter().any(|f| f == file) {
                    self.checked.push(file.to_owned());
                }
                Some(text)
            }
            Err(e) => {
                self.push(
                    Finding::error("parse-error", file, None)
                        .message(format!("{file} cannot be read: {e}"))
                        .platform("a platform that cannot read its manifest does not deploy")
                        .source("https://doc.rust-lang.org/std/fs/fn.read_to_string.html")
                        .fix(format!("make {file} a readable UTF-8 text file")),
                );
                None
            }
        }
    }

    /// Whether `file` (relative to the directory) exists.
    pub fn exists(&self, file: &str) -> bool {
        self.dir.join(file).exists()
    }

    /// The directory checked.
    pub fn dir(&self) -> &Path {
        self.dir
    }

    /// Records that `file` did not parse (`line` from the parser's
    /// error); `reader` is who reads the file and the reference of its
    /// format.
    pub fn parse_error(
        &mut self,
        file: &str,
        line: Option<usize>,
        error: impl std::fmt::Display,
        (reader, format): (&str, &str),
    ) {
        self.push(
            Finding::error("parse-error", file, line)
                .message(format!("{file} does not parse: {error}"))
                .platform(format!(
                    "{reader} rejects a file it cannot parse, and nothing in it applies"
                ))
                .source(format)
                .fix(format!("correct the syntax of {file} at the line given")),
        );
    }

    /// The drain the runtime runs under the image's `ENV`, then `vars`,
    /// then the platform's own `markers` (the variables by which it is
    /// detected), exactly as `Config` computes it. A variable of `vars` the
    /// runtime rejects is an `invalid-variable` finding in `file`, and the
    /// drain is then unknown.
    pub fn drain(&mut self, file: &str, vars: &[Var], markers: &[(&str, &str)]) -> Option<Drain> {
        let mut pairs: Vec<(String, String)> = self
            .image
            .as_ref()
            .map(|i| {
                i.env
                    .iter()
                    .map(|v| (v.name.clone(), v.value.clone()))
                    .collect()
            })
            .unwrap_or_default();
        pairs.extend(vars.iter().map(|v| (v.name.clone(), v.value.clone())));
        pairs.extend(markers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        match Config::from_vars(&Env::from_pairs(pairs)) {
            Ok(c) => Some(Drain {
                hook: 0,
                delay: c.shutdown_delay.as_secs(),
                timeout: c.shutdown_timeout.as_secs(),
            }),
            Err(e) => {
                for p in e.problems {
                    // A problem of the image's own ENV is the Dockerfile's
                    // finding, reported once by `image::check`.
                    if let Some(v) = var(vars, &p.variable) {
                        let line = Some(v.line);
                        self.push(
                            Finding::error("invalid-variable", file, line)
                                .message(format!("{file} sets {p}"))
                                .platform(
                                    "the runtime refuses to start on a variable it cannot read \
                                     (exit status 78, the variable named in the log), so the \
                                     platform sees a crash loop",
                                )
                                .source("https://12factor.net/config")
                                .fix(format!("give {} {}", p.variable, p.expected)),
                        );
                    }
                }
                None
            }
        }
    }

    /// Checks that a probe's `path` (with `method`) is a route of the
    /// service's OpenAPI document.
    pub fn probe_path(
        &mut self,
        file: &str,
        line: Option<usize>,
        path: &str,
        method: &str,
        contract: &Contract,
    ) {
        let method = method.to_ascii_uppercase();
        let problem = match self.routes.methods(path) {
            None => Some(format!("probes {path}, which is not a path of the service")),
            Some(methods) if !methods.contains(method.as_str()) => Some(format!(
                "probes {method} {path}, but the service documents only {} there",
                methods.iter().copied().collect::<Vec<_>>().join(", ")
            )),
            Some(_) => None,
        };
        if let Some(message) = problem {
            self.push(
                Finding::error("probe-path", file, line)
                    .message(message)
                    .platform(format!(
                        "{} probes: {}; a 404 never passes, so the instance never becomes \
                         healthy (or is restarted)",
                        contract.name, contract.health_check.value
                    ))
                    .source(contract.health_check.source)
                    .fix(
                        "probe /healthz (liveness: the process answers) or /readyz (readiness: \
                         it and its backing services are up), both served by the runtime",
                    ),
            );
        }
    }

    /// Checks that a stop signal `signal` (as written at `file:line`) is
    /// one the runtime drains on.
    pub fn stop_signal(
        &mut self,
        check: &'static str,
        file: &str,
        line: Option<usize>,
        signal: &str,
        contract: &Contract,
    ) {
        if drains_on(signal) {
            return;
        }
        self.push(
            Finding::error(check, file, line)
                .message(format!(
                    "stops the service with {signal}, which the runtime does not drain on"
                ))
                .platform(format!(
                    "{} sends {signal}, then SIGKILL at the end of the grace period; the runtime \
                     drains (finishes in-flight requests) only on SIGTERM and SIGINT, so \
                     {signal} ends it at once or not at all",
                    contract.name
                ))
                .source(contract.stop_signal.source)
                .fix("send SIGTERM"),
        );
    }

    /// Checks that the platform's grace (`stop.secs`, written at
    /// `stop.line` or its default) exceeds the `drain`.
    pub fn grace(
        &mut self,
        check: &'static str,
        file: &str,
        stop: Stop<'_>,
        drain: Drain,
        contract: &Contract,
    ) {
        let Stop {
            line,
            secs: grace,
            signal,
        } = stop;
        if grace > drain.total() {
            return;
        }
        let key = match contract.grace.value {
            crate::platform::Grace::Setting { key, .. } => Some(key),
            crate::platform::Grace::Fixed { .. } => None,
        };
        let fix = match key {
            Some(key) => format!(
                "set {key} to {} (the drain plus a 5 s margin), or lower SHUTDOWN_TIMEOUT",
                drain.total() + 5
            ),
            None => format!(
                "set SHUTDOWN_TIMEOUT (and SHUTDOWN_DELAY) so that their sum is below {grace} s; \
                 {} does not let you change its {grace} s",
                contract.name
            ),
        };
        self.push(
            Finding::error(check, file, line)
                .message(format!(
                    "the platform kills the process {grace} s after {signal}, but the drain takes {}",
                    drain.describe()
                ))
                .platform(format!(
                    "{} sends {signal} and SIGKILL {grace} s later; requests still in flight then \
                     are cut",
                    contract.name
                ))
                .source(contract.grace.source)
                .fix(fix),
        );
    }
}

/// `dockerfile-path`: a manifest that builds `path` (relative to the
/// directory) names a file that exists.
pub(crate) fn dockerfile_path(
    ctx: &mut Ctx<'_>,
    file: &str,
    line: Option<usize>,
    path: &str,
    (platform, source): (&str, &str),
) {
    let relative = path.trim_start_matches("./");
    if ctx.exists(relative) {
        return;
    }
    ctx.push(
        Finding::error("dockerfile-path", file, line)
            .message(format!("builds {path}, which does not exist"))
            .platform(format!(
                "{platform} builds the image from that file; without it the build fails and \
                 nothing is deployed"
            ))
            .source(source)
            .fix(format!("point it at the Dockerfile ({})", image::FILE)),
    );
}

/// The port the server binds under `vars` over the image's `ENV`:
/// `PORT`, or the runtime's default. `None` when `PORT` does not parse
/// (an `invalid-variable` finding says so).
pub(crate) fn bound_port(ctx: &Ctx<'_>, vars: &[Var]) -> Option<u16> {
    match var(vars, "PORT") {
        Some(v) => v.value.trim().parse().ok(),
        None => Some(
            ctx.image
                .as_ref()
                .and_then(image::Image::port)
                .unwrap_or(crate::config::DEFAULT_PORT),
        ),
    }
}

/// The signal a name or number means: `SIGTERM` for `TERM`, `sigterm`, `15`.
pub(crate) fn signal_name(text: &str) -> String {
    let t = text.trim().trim_matches('"').to_ascii_uppercase();
    match t.as_str() {
        "2" => "SIGINT".into(),
        "15" => "SIGTERM".into(),
        "3" => "SIGQUIT".into(),
        "9" => "SIGKILL".into(),
        "1" => "SIGHUP".into(),
        _ if t.starts_with("SIG") => t,
        _ => format!("SIG{t}"),
    }
}

/// Whether the runtime drains on `signal`: SIGTERM, and SIGINT because Fly
/// sends it by default (the runtime treats both as graceful).
pub(crate) fn drains_on(signal: &str) -> bool {
    matches!(signal_name(signal).as_str(), "SIGTERM" | "SIGINT")
}

/// A duration as platforms write it: `30s`, `1m30s`, `500ms`, `1.5s`,
/// systemd's `1min 30s` or `infinity`, or a bare number of seconds. `None`
/// when it is none of these; `Duration::MAX` for `infinity`.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim().trim_matches('"');
    if text.eq_ignore_ascii_case("infinity") {
        return Some(Duration::MAX);
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = text;
    let mut any = false;
    while !rest.trim_start().is_empty() {
        rest = rest.trim_start();
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = rest[num_end..].trim_start();
        let unit_end = rest
            .find(|c: char| !c.is_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" | "nsec" => 1e-9,
            "us" | "µs" | "usec" => 1e-6,
            "ms" | "msec" => 1e-3,
            "" | "s" | "sec" | "second" | "seconds" => 1.0,
            "m" | "min" | "minute" | "minutes" => 60.0,
            "h" | "hr" | "hour" | "hours" => 3600.0,
            "d" | "day" | "days" => 86400.0,
            _ => return None,
        };
        total += n * seconds;
        rest = &rest[unit_end..];
        any = true;
    }
    // A number too large for a Duration is no duration (and must not panic).
    if any {
        Duration::try_from_secs_f64(total).ok()
    } else {
        None
    }
}

/// The last path component of a command (`/usr/local/bin/svc` is `svc`).
pub(crate) fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Whether `argv` runs the service's server: the binary itself, with no
/// argument or `serve`. `Err` says what it runs instead.
pub(crate) fn runs_server(binary: &str, argv: &[String]) -> Result<(), String> {
    match argv {
        [] => Err("runs nothing".into()),
        [program, ..] if basename(program) != binary => {
            Err(format!("runs {program}, not the service's binary {binary}"))
        }
        [_] => Ok(()),
        [_, sub] if sub == "serve" => Ok(()),
        [_, rest @ ..] => Err(format!(
            "runs {binary} {}: the server is `{binary}` or `{binary} serve`",
            rest.join(" ")
        )),
    }
}

/// A YAML scalar as the string a process would see in its environment.
/// A Kubernetes-shaped container's `env` (Cloud Run's service YAML is the
/// same shape): each literal `name`/`value` pair, with the line of its name
/// (`line` takes the path below the container).
pub(crate) fn container_env(
    container: &serde_norway::Value,
    line: impl Fn(&[locate::Seg<'_>]) -> Option<usize>,
) -> Vec<Var> {
    use locate::Seg::{Index, Key};
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, item)| {
            let name = yaml_scalar(&item["name"])?;
            let value = yaml_scalar(&item["value"])?;
            Some(Var::new(
                &name,
                &value,
                line(&[Key("env"), Index(i), Key("name")]),
            ))
        })
        .collect()
}

pub(crate) fn yaml_scalar(v: &serde_norway::Value) -> Option<String> {
    use serde_norway::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The `*.yaml` and `*.yml` files of `dir` (relative to the directory
/// checked), as `dir/name`, sorted; none when `dir` is absent.
pub(crate) fn yaml_files(ctx: &Ctx<'_>, dir: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(ctx.dir().join(dir)) else {
        return Vec::new();
    };
    let mut files: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    files.sort();
    files
}

/// Every document of a (possibly multi-document) YAML text.
pub(crate) fn yaml_documents(text: &str) -> Result<Vec<serde_norway::Value>, serde_norway::Error> {
    use serde::Deserialize;
    serde_norway::Deserializer::from_str(text)
        .map(serde_norway::Value::deserialize)
        .collect()
}

/// The line a YAML parse error points at.
pub(crate) fn yaml_error_line(e: &serde_norway::Error) -> Option<usize> {
    e.location().map(|l| l.line())
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_too_large_are_no_duration_and_no_panic() {
        assert_eq!(parse_duration("99999999999999999999"), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
        let drain = Drain {
            hook: u64::MAX,
            delay: 5,
            timeout: 25,
        };
        assert_eq!(drain.total(), u64::MAX);
    }

    use super::*;

    #[test]
    fn durations_in_every_spelling_platforms_use() {
        let s = |t| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(s("30"), Some(30.0));
        assert_eq!(s("30s"), Some(30.0));
        assert_eq!(s("1m30s"), Some(90.0));
        assert_eq!(s("1min 30s"), Some(90.0));
        assert_eq!(s("500ms"), Some(0.5));
        assert_eq!(s("1.5s"), Some(1.5));
        assert_eq!(s("\"10s\""), Some(10.0));
        assert_eq!(parse_duration("infinity"), Some(Duration::MAX));
        assert_eq!(s("soon"), None);
        assert_eq!(s(""), None);
        assert_eq!(s("5 parsecs"), None);
    }

    #[test]
    fn signals_by_name_number_and_case() {
        for s in ["SIGTERM", "TERM", "sigterm", "15", "SIGINT", "INT", "2"] {
            assert!(drains_on(s), "{s}");
        }
        for s in ["SIGQUIT", "QUIT", "3", "SIGKILL", "SIGUSR1", "SIGHUP"] {
            assert!(!drains_on(s), "{s}");
        }
        assert_eq!(signal_name("quit"), "SIGQUIT");
    }

    #[test]
    fn command_lines_that_run_the_server() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(runs_server("svc", &argv(&["/usr/local/bin/svc"])).is_ok());
        assert!(runs_server("svc", &argv(&["svc", "serve"])).is_ok());
        assert!(runs_server("svc", &argv(&["svc", "healthcheck"])).is_err());
        assert!(runs_server("svc", &argv(&["/bin/other"])).is_err());
        assert!(runs_server("svc", &argv(&[])).is_err());
    }

    #[test]
    fn routes_match_templates_and_ignore_queries() {
        let routes = Routes {
            paths: vec![
                ("/healthz".into(), BTreeSet::from(["GET"])),
                (
                    "/api/v1/notes/{id}".into(),
                    BTreeSet::from(["GET", "DELETE"]),
                ),
            ],
        };
        assert!(routes.methods("/healthz?probe=1").is_some());
        assert!(
            routes
                .methods("/api/v1/notes/7")
                .unwrap()
                .contains("DELETE")
        );
        assert!(routes.methods("/api/v1/notes").is_none());
        assert!(routes.methods("/readyz").is_none());
    }

    #[test]
    fn the_report_counts_and_exits_1_only_on_errors() {
        let mut report = Report {
            dir: PathBuf::from("."),
            checked: vec!["fly.toml".into()],
            findings: vec![
                Finding::warning("w", "fly.toml", Some(3))
                    .message("m")
                    .platform("p")
                    .source("s")
                    .fix("f"),
            ],
        };
        assert_eq!((report.errors(), report.warnings()), (0, 1));
        assert_eq!(report.exit_status(), 0);
        let text = report.to_text();
        assert!(text.starts_with("fly.toml:3: warning[w]: m\n"), "{text}");
        assert!(text.contains("0 errors, 1 warning in"), "{text}");
        report.findings.push(Finding::error("e", "fly.toml", None));
        assert_eq!(report.exit_status(), 1);
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["errors"], 1);
        assert_eq!(json["findings"][1]["severity"], "error");
        assert_eq!(json["findings"][1]["line"], 1);
    }
}
