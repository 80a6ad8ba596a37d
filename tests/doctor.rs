//! `portbound doctor`, run as a platform's CI would run it: on this
//! repository (no finding at all), and on copies of its manifests with one
//! thing broken at a time, where the finding for that thing must fire at
//! the right file and line, say what the platform does and where that is
//! documented, and fail the run (exit 1) if it is an error.
//!
//! Every check id the doctor module can emit has a case below; a test
//! reads the module's source to make sure none is left out.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use common::{ScratchDir, run_binary, scratch_dir};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every manifest doctor reads, as this repository has them.
const MANIFESTS: &[&str] = &[
    "Dockerfile",
    "rust-toolchain.toml",
    "heroku.yml",
    "app.json",
    "fly.toml",
    "deploy/cloudrun/service.yaml",
    ".railway/railway.ts",
    "render.yaml",
    "deploy/kubernetes/deployment.yaml",
    "deploy/kubernetes/service.yaml",
    "deploy/kubernetes/hpa.yaml",
    "deploy/kubernetes/kustomization.yaml",
    "docker-compose.yml",
    "deploy/systemd/portbound.service",
    "deploy/systemd/portbound.socket",
    "Cargo.toml",
    "Cargo.lock",
];

/// A scratch copy of the manifests (removed when dropped).
struct Copy(ScratchDir);

impl Copy {
    fn new(name: &str) -> Copy {
        let dir = scratch_dir(&format!("doctor-{name}"));
        for file in MANIFESTS {
            let from = repo(file);
            if !from.exists() {
                continue;
            }
            let to = dir.join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&from, &to).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
        Copy(dir)
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.0.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.0.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// `portbound doctor --format json --dir DIR`: (exit code, the report).
fn doctor(dir: &Path) -> (i32, Json) {
    let dir_arg = dir.to_string_lossy().into_owned();
    let cwd = scratch_dir("doctor-cwd");
    let (code, out, err) = run_binary(
        &["doctor", "--format", "json", "--dir", &dir_arg],
        &[],
        &cwd,
    );
    let report = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("doctor printed no JSON ({e}):\n{out}\n{err}"));
    (code, report)
}

fn findings(report: &Json) -> &[Json] {
    report["findings"].as_array().expect("findings").as_slice()
}

#[test]
fn this_repository_has_no_finding_at_all() {
    let (code, report) = doctor(&repo(""));
    assert!(
        findings(&report).is_empty(),
        "{}",
        serde_json::to_string_pretty(&report["findings"]).unwrap()
    );
    assert_eq!(code, 0);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["warnings"], 0);
    let checked: BTreeSet<&str> = report["checked"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Json::as_str)
        .collect();
    for file in MANIFESTS {
        assert!(checked.contains(file), "{file} was not read: {checked:?}");
    }
}

#[test]
fn text_output_and_the_default_directory() {
    let copy = Copy::new("text");
    let (code, out, err) = run_binary(&["doctor"], &[], &copy.0);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("doctor: 0 errors, 0 warnings in ."), "{out}");
    copy.write(
        "fly.toml",
        &copy.read("fly.toml").replace("kill_timeout = 30\n", ""),
    );
    let (code, out, _) = run_binary(&["doctor", "--format", "text"], &[], &copy.0);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("fly.toml:1: error[fly-kill-timeout]: "),
        "{out}"
    );
    for label in ["    platform: ", "    fix:      ", "    source:   https://"] {
        assert!(out.contains(label), "{label:?} in {out}");
    }
    let (code, _, err) = run_binary(&["doctor", "--dir", "/nonexistent/portbound"], &[], &copy.0);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_directory_without_manifests_has_nothing_to_report() {
    let dir = scratch_dir("doctor-empty");
    let (code, report) = doctor(&dir);
    assert_eq!(code, 0);
    assert!(findings(&report).is_empty(), "{report}");
    assert_eq!(report["checked"], serde_json::json!([]));
}

/// One broken thing and the finding it must produce.
struct Case {
    check: &'static str,
    severity: &'static str,
    /// (file, text, replacement): the text's first occurrence is replaced.
    edits: &'static [(&'static str, &'static str, &'static str)],
    /// Files to create (file, content).
    create: &'static [(&'static str, &'static str)],
    /// Where the finding must point: (file, a text on that line, or "" for
    /// line 1).
    at: (&'static str, &'static str),
}

const CASES: &[Case] = &[
    Case {
        check: "parse-error",
        severity: "error",
        edits: &[("fly.toml", "kill_timeout = 30", "kill_timeout = = 30")],
        create: &[],
        at: ("fly.toml", "kill_timeout = = 30"),
    },
    Case {
        check: "invalid-variable",
        severity: "error",
        edits: &[(
            "deploy/kubernetes/deployment.yaml",
            "value: \"20\"",
            "value: \"soon\"",
        )],
        create: &[],
        at: (
            "deploy/kubernetes/deployment.yaml",
            "- name: SHUTDOWN_TIMEOUT",
        ),
    },
    Case {
        check: "probe-path",
        severity: "error",
        edits: &[(
            "render.yaml",
            "healthCheckPath: /healthz",
            "healthCheckPath: /health",
        )],
        create: &[],
        at: ("render.yaml", "healthCheckPath: /health"),
    },
    Case {
        check: "dockerfile-path",
        severity: "error",
        edits: &[(
            "fly.toml",
            "dockerfile = \"Dockerfile\"",
            "dockerfile = \"Dockerfile.gone\"",
        )],
        create: &[],
        at: ("fly.toml", "dockerfile = \"Dockerfile.gone\""),
    },
    Case {
        check: "dockerfile-base-image",
        severity: "error",
        edits: &[(
            "Dockerfile",
            "FROM rust:1.95.0-slim-trixie AS chef",
            "FROM rust:1.95.0-slim-jessie AS chef",
        )],
        create: &[],
        at: ("Dockerfile", "FROM rust:1.95.0-slim-jessie AS chef"),
    },
    Case {
        check: "dockerfile-base-image",
        severity: "warning",
        edits: &[(
            "Dockerfile",
            "FROM rust:1.95.0-slim-trixie AS chef",
            "FROM rust:1.95-slim-trixie AS chef",
        )],
        create: &[],
        at: ("Dockerfile", "FROM rust:1.95-slim-trixie AS chef"),
    },
    Case {
        check: "dockerfile-toolchain",
        severity: "error",
        edits: &[(
            "rust-toolchain.toml",
            "channel = \"1.95.0\"",
            "channel = \"1.96.0\"",
        )],
        create: &[],
        at: ("Dockerfile", "FROM rust:1.95.0-slim-trixie AS chef"),
    },
    Case {
        check: "dockerfile-glibc",
        severity: "error",
        edits: &[(
            "Dockerfile",
            "FROM gcr.io/distroless/cc-debian13:nonroot AS runtime",
            "FROM gcr.io/distroless/cc-debian12:nonroot AS runtime",
        )],
        create: &[],
        at: ("Dockerfile", "FROM gcr.io/distroless/cc-debian12:nonroot"),
    },
    Case {
        check: "dockerfile-command",
        severity: "error",
        // The instruction, not the comment above it that quotes it.
        edits: &[("Dockerfile", "\nCMD [\"serve\"]", "\nCMD [\"healthcheck\"]")],
        create: &[],
        at: ("Dockerfile", "CMD [\"healthcheck\"]"),
    },
    Case {
        check: "dockerfile-port",
        severity: "warning",
        edits: &[("Dockerfile", "EXPOSE 8080", "EXPOSE 9090")],
        create: &[],
        at: ("Dockerfile", "EXPOSE 9090"),
    },
    Case {
        check: "dockerfile-stopsignal",
        severity: "error",
        edits: &[("Dockerfile", "STOPSIGNAL SIGTERM", "STOPSIGNAL SIGQUIT")],
        create: &[],
        at: ("Dockerfile", "STOPSIGNAL SIGQUIT"),
    },
    Case {
        check: "healthcheck-command",
        severity: "error",
        edits: &[(
            "Dockerfile",
            "CMD [\"/usr/local/bin/portbound\", \"healthcheck\"]",
            "CMD [\"curl\", \"-f\", \"http://localhost:8080/healthz\"]",
        )],
        create: &[],
        at: ("Dockerfile", "HEALTHCHECK --interval"),
    },
    Case {
        check: "healthcheck-command",
        severity: "error",
        // api's healthcheck (the first): a shell the image does not have.
        edits: &[(
            "docker-compose.yml",
            "test: [\"CMD\", \"/usr/local/bin/portbound\", \"healthcheck\"]",
            "test: [\"CMD-SHELL\", \"curl -f http://localhost:5000/healthz\"]",
        )],
        create: &[],
        at: ("docker-compose.yml", "test: [\"CMD-SHELL\""),
    },
    Case {
        check: "heroku-grace",
        severity: "error",
        edits: &[(
            "app.json",
            "\"SHUTDOWN_TIMEOUT\": {",
            "\"SHUTDOWN_TIMEOUT\": {\n      \"value\": \"40\",",
        )],
        create: &[],
        at: ("app.json", "\"SHUTDOWN_TIMEOUT\": {"),
    },
    Case {
        check: "heroku-run",
        severity: "error",
        edits: &[(
            "heroku.yml",
            "    web: Dockerfile\n",
            "    web: Dockerfile\nrun:\n  web: /usr/local/bin/portbound healthcheck\n",
        )],
        create: &[],
        at: ("heroku.yml", "web: /usr/local/bin/portbound healthcheck"),
    },
    Case {
        check: "procfile-command",
        severity: "error",
        edits: &[],
        create: &[("Procfile", "release: ./migrate\nweb: ./bin/other-server\n")],
        at: ("Procfile", "web: ./bin/other-server"),
    },
    Case {
        check: "fly-port",
        severity: "error",
        edits: &[("fly.toml", "internal_port = 8080", "internal_port = 8081")],
        create: &[],
        at: ("fly.toml", "internal_port = 8081"),
    },
    Case {
        check: "fly-metrics-port",
        severity: "error",
        edits: &[(
            "fly.toml",
            "METRICS_PORT = \"9091\"",
            "METRICS_PORT = \"9092\"",
        )],
        create: &[],
        at: ("fly.toml", "  port = 9091"),
    },
    Case {
        check: "fly-kill-signal",
        severity: "error",
        edits: &[(
            "fly.toml",
            "kill_signal = \"SIGTERM\"",
            "kill_signal = \"SIGQUIT\"",
        )],
        create: &[],
        at: ("fly.toml", "kill_signal = \"SIGQUIT\""),
    },
    Case {
        check: "fly-kill-timeout",
        severity: "error",
        // Missing: Fly's default of 5 s applies, and the finding points at
        // the start of the file.
        edits: &[("fly.toml", "kill_timeout = 30\n", "")],
        create: &[],
        at: ("fly.toml", ""),
    },
    Case {
        check: "cloudrun-port",
        severity: "error",
        edits: &[(
            "deploy/cloudrun/service.yaml",
            "            - name: LOG_FORMAT\n",
            "            - name: PORT\n              value: \"8080\"\n            - name: LOG_FORMAT\n",
        )],
        create: &[],
        at: ("deploy/cloudrun/service.yaml", "- name: PORT"),
    },
    Case {
        check: "cloudrun-grace",
        severity: "error",
        edits: &[(
            "deploy/cloudrun/service.yaml",
            "            - name: LOG_FORMAT\n",
            "            - name: SHUTDOWN_TIMEOUT\n              value: \"10\"\n            - name: LOG_FORMAT\n",
        )],
        create: &[],
        at: ("deploy/cloudrun/service.yaml", "- name: SHUTDOWN_TIMEOUT"),
    },
    Case {
        check: "cloudrun-cpu-throttling",
        severity: "warning",
        edits: &[(
            "deploy/cloudrun/service.yaml",
            "run.googleapis.com/cpu-throttling: \"false\"",
            "run.googleapis.com/cpu-throttling: \"true\"",
        )],
        create: &[],
        at: (
            "deploy/cloudrun/service.yaml",
            "run.googleapis.com/cpu-throttling: \"true\"",
        ),
    },
    Case {
        check: "railway-draining",
        severity: "error",
        edits: &[(
            ".railway/railway.ts",
            "RAILWAY_DEPLOYMENT_DRAINING_SECONDS: \"30\"",
            "RAILWAY_DEPLOYMENT_DRAINING_SECONDS: \"0\"",
        )],
        create: &[],
        at: (
            ".railway/railway.ts",
            "RAILWAY_DEPLOYMENT_DRAINING_SECONDS: \"0\"",
        ),
    },
    Case {
        check: "render-grace",
        severity: "error",
        edits: &[(
            "render.yaml",
            "maxShutdownDelaySeconds: 30",
            "maxShutdownDelaySeconds: 20",
        )],
        create: &[],
        at: ("render.yaml", "maxShutdownDelaySeconds: 20"),
    },
    Case {
        check: "k8s-port",
        severity: "error",
        edits: &[(
            "deploy/kubernetes/deployment.yaml",
            "containerPort: 8080",
            "containerPort: 8081",
        )],
        create: &[],
        at: ("deploy/kubernetes/deployment.yaml", "          ports:"),
    },
    Case {
        check: "k8s-grace",
        severity: "error",
        edits: &[(
            "deploy/kubernetes/deployment.yaml",
            "terminationGracePeriodSeconds: 30",
            "terminationGracePeriodSeconds: 25",
        )],
        create: &[],
        at: (
            "deploy/kubernetes/deployment.yaml",
            "terminationGracePeriodSeconds: 25",
        ),
    },
    Case {
        check: "k8s-prestop",
        severity: "error",
        edits: &[(
            "deploy/kubernetes/deployment.yaml",
            "          imagePullPolicy: IfNotPresent\n",
            "          imagePullPolicy: IfNotPresent\n          lifecycle:\n            preStop:\n              exec:\n                command: [\"sleep\", \"5\"]\n",
        )],
        create: &[],
        at: ("deploy/kubernetes/deployment.yaml", "preStop:"),
    },
    Case {
        check: "k8s-replicas",
        severity: "warning",
        edits: &[(
            "deploy/kubernetes/deployment.yaml",
            "  selector:\n    matchLabels:\n",
            "  replicas: 3\n  selector:\n    matchLabels:\n",
        )],
        create: &[],
        at: ("deploy/kubernetes/deployment.yaml", "replicas: 3"),
    },
    Case {
        check: "compose-port",
        severity: "error",
        edits: &[("docker-compose.yml", "\"8080:5000\"", "\"8080:5001\"")],
        create: &[],
        at: ("docker-compose.yml", "\"8080:5001\""),
    },
    Case {
        check: "compose-grace",
        severity: "error",
        edits: &[(
            "docker-compose.yml",
            "      PORT: \"5001\"\n",
            "      PORT: \"5001\"\n      SHUTDOWN_TIMEOUT: \"40\"\n",
        )],
        create: &[],
        // auth's stop_grace_period: the third in the file (api's,
        // postgres's, auth's).
        at: ("docker-compose.yml", "stop_grace_period: 30s#3"),
    },
    Case {
        check: "compose-stop-signal",
        severity: "error",
        edits: &[(
            "docker-compose.yml",
            "stop_signal: SIGTERM",
            "stop_signal: SIGKILL",
        )],
        create: &[],
        at: ("docker-compose.yml", "stop_signal: SIGKILL"),
    },
    Case {
        check: "compose-build",
        severity: "warning",
        // auth builds the image api builds.
        edits: &[(
            "docker-compose.yml",
            "    image: portbound-auth:local\n",
            "    image: portbound-notes:local\n",
        )],
        create: &[],
        // auth's: the second `build:` key.
        at: ("docker-compose.yml", "    build:#2"),
    },
    Case {
        check: "compose-pull-policy",
        severity: "warning",
        // migrate's: the release step runs the image api builds.
        edits: &[(
            "docker-compose.yml",
            "    image: portbound-notes:local\n    pull_policy: never\n",
            "    image: portbound-notes:local\n",
        )],
        create: &[],
        at: ("docker-compose.yml", "image: portbound-notes:local#2"),
    },
    Case {
        check: "release-step",
        severity: "error",
        edits: &[(
            "fly.toml",
            "  release_command = \"/usr/local/bin/portbound migrate\"\n",
            "",
        )],
        create: &[(
            "migrations/20261205000000_notes.sql",
            "CREATE TABLE notes (id bigserial PRIMARY KEY);\n",
        )],
        at: ("fly.toml", ""),
    },
    Case {
        check: "release-step",
        severity: "error",
        // api sets DATABASE_URL, so it must wait for the migrations.
        edits: &[(
            "docker-compose.yml",
            "      migrate:\n        condition: service_completed_successfully\n",
            "",
        )],
        create: &[],
        at: ("docker-compose.yml", "  api:"),
    },
    Case {
        check: "release-command",
        severity: "error",
        edits: &[(
            "heroku.yml",
            "    - /usr/local/bin/portbound migrate",
            "    - /usr/local/bin/portbound serve",
        )],
        create: &[],
        at: ("heroku.yml", "  command:"),
    },
    Case {
        check: "release-direct-url",
        severity: "error",
        edits: &[(
            "fly.toml",
            "  PORT = \"8080\"\n",
            "  PORT = \"8080\"\n  DATABASE_URL = \"postgres://app:secret@db.internal:6432/app\"\n",
        )],
        create: &[],
        at: ("fly.toml", "  DATABASE_URL = "),
    },
    Case {
        check: "systemd-exec-start",
        severity: "error",
        edits: &[(
            "deploy/systemd/portbound.service",
            "ExecStart=/usr/local/bin/portbound",
            "ExecStart=/usr/local/bin/portbound openapi",
        )],
        create: &[],
        at: ("deploy/systemd/portbound.service", "ExecStart="),
    },
    Case {
        check: "systemd-kill-signal",
        severity: "error",
        edits: &[(
            "deploy/systemd/portbound.service",
            "KillSignal=SIGTERM",
            "KillSignal=SIGHUP",
        )],
        create: &[],
        at: ("deploy/systemd/portbound.service", "KillSignal=SIGHUP"),
    },
    Case {
        check: "systemd-timeout",
        severity: "error",
        edits: &[(
            "deploy/systemd/portbound.service",
            "TimeoutStopSec=30",
            "TimeoutStopSec=20s",
        )],
        create: &[],
        at: ("deploy/systemd/portbound.service", "TimeoutStopSec=20s"),
    },
    Case {
        check: "systemd-socket",
        severity: "error",
        edits: &[("deploy/systemd/portbound.socket", "Accept=no", "Accept=yes")],
        create: &[],
        at: ("deploy/systemd/portbound.socket", "Accept=yes"),
    },
    Case {
        check: "systemd-socket",
        severity: "warning",
        edits: &[(
            "deploy/systemd/portbound.socket",
            "ListenStream=[::]:5000",
            "ListenStream=[::]:8080",
        )],
        create: &[],
        at: ("deploy/systemd/portbound.socket", "ListenStream=[::]:8080"),
    },
    Case {
        check: "actix-http-patch",
        severity: "warning",
        edits: &[(
            "Cargo.toml",
            "actix-http = { path = \"vendor/actix-http\" }",
            "",
        )],
        create: &[],
        at: ("Cargo.toml", "[patch.crates-io]"),
    },
    Case {
        check: "actix-http-patch",
        severity: "warning",
        edits: &[(
            "Cargo.lock",
            "name = \"actix-http\"\nversion = \"3.19.0\"\n",
            "name = \"actix-http\"\nversion = \"3.19.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
        )],
        create: &[],
        at: ("Cargo.lock", "name = \"actix-http\""),
    },
];

/// The 1-based line of the `n`th (from 1) line containing `text` (written
/// `text#n`; `#1` by default); line 1 for "".
fn line_of(content: &str, marker: &str) -> usize {
    if marker.is_empty() {
        return 1;
    }
    let (text, nth) = match marker.rsplit_once('#') {
        Some((t, n)) if n.parse::<usize>().is_ok() => (t, n.parse().unwrap()),
        _ => (marker, 1),
    };
    content
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(text))
        .nth(nth - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or_else(|| panic!("{text:?} (#{nth}) is not in the edited file"))
}

fn run_case(i: usize, case: &Case) -> Result<(), String> {
    let copy = Copy::new(&format!("{}-{i}", case.check));
    for (file, from, to) in case.edits {
        let text = copy.read(file);
        if !text.contains(from) {
            return Err(format!("{file}: {from:?} is not there"));
        }
        copy.write(file, &text.replacen(from, to, 1));
    }
    for (file, content) in case.create {
        copy.write(file, content);
    }
    let (file, marker) = case.at;
    let line = line_of(&copy.read(file), marker);
    let (code, report) = doctor(&copy.0);
    let all = findings(&report);
    let found = all.iter().find(|f| {
        f["check"] == case.check
            && f["file"] == file
            && f["line"] == line
            && f["severity"] == case.severity
    });
    let Some(found) = found else {
        return Err(format!(
            "no {} {} at {file}:{line}; found: {}",
            case.severity,
            case.check,
            serde_json::to_string_pretty(all).unwrap()
        ));
    };
    for field in ["message", "platform", "fix"] {
        if found[field].as_str().is_none_or(str::is_empty) {
            return Err(format!("{}: empty {field}: {found}", case.check));
        }
    }
    if !found["source"]
        .as_str()
        .is_some_and(|s| s.starts_with("https://"))
    {
        return Err(format!("{}: source is not a URL: {found}", case.check));
    }
    let errors = report["errors"].as_u64().unwrap();
    match case.severity {
        "error" if code != 1 => Err(format!("{}: exit {code}, expected 1", case.check)),
        // A warning alone passes: nothing else broke, and the exit is 0.
        "warning" if errors != 0 || code != 0 => Err(format!(
            "{}: exit {code} with {errors} errors, expected 0 and 0: {}",
            case.check,
            serde_json::to_string_pretty(all).unwrap()
        )),
        _ => Ok(()),
    }
}

#[test]
fn each_check_fires_at_the_line_it_is_about() {
    let failures: Vec<String> = CASES
        .iter()
        .enumerate()
        .filter_map(|(i, case)| run_case(i, case).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n\n")
    );
}

/// The check ids the doctor module can emit, read from its source: the
/// first argument of `Finding::error(` / `Finding::warning(` and of the
/// context's `stop_signal(` and `grace(` helpers, when it is a literal.
fn check_ids_in_source() -> BTreeSet<String> {
    let dir = repo("crates/portbound/src/doctor");
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for call in [
            "Finding::error(",
            "Finding::warning(",
            ".stop_signal(",
            ".grace(",
        ] {
            for (at, _) in text.match_indices(call) {
                let rest = text[at + call.len()..].trim_start();
                if let Some(literal) = rest.strip_prefix('"') {
                    let id = &literal[..literal.find('"').unwrap()];
                    let kebab = id
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if kebab && id.len() > 1 {
                        ids.insert(id.to_owned());
                    }
                }
            }
        }
    }
    ids
}

#[test]
fn every_check_id_has_a_case() {
    let ids = check_ids_in_source();
    assert!(ids.len() > 30, "{ids:?}");
    let covered: BTreeSet<String> = CASES.iter().map(|c| c.check.to_owned()).collect();
    let missing: Vec<&String> = ids.difference(&covered).collect();
    assert!(missing.is_empty(), "check ids without a case: {missing:?}");
    let unknown: Vec<&String> = covered.difference(&ids).collect();
    assert!(
        unknown.is_empty(),
        "cases of unknown check ids: {unknown:?}"
    );
}
