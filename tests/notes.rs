//! `examples/notes.rs`, a second service on the runtime, run as a process:
//! its routes sit in its spec next to the built-in ones, its readiness check
//! turns `/readyz` to 503 and back, and SIGTERM stops its background task
//! inside the drain, runs its drain hook and exits 0.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{DEADLINE, Process, Response, example, get, post_json, request, scratch_dir};

/// The example in `dir`, its snapshot at `snapshot`, checks every second.
fn spawn_notes(dir: &Path, snapshot: &Path) -> Process {
    common::spawn_program(
        &example("notes"),
        &[],
        &[
            ("NOTES_SNAPSHOT", snapshot.to_str().unwrap()),
            ("SERVICE_PROBE_INTERVAL", "1"),
        ],
        dir,
    )
}

/// Asks `path` until `done` holds for the answer, failing after the
/// deadline; returns the answer that passed.
fn poll(p: &Process, path: &str, done: impl Fn(&Response) -> bool) -> Response {
    let start = Instant::now();
    loop {
        let res = get(p.addr(), path);
        if done(&res) {
            return res;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{path} never changed; last: {} {}",
            res.status,
            res.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn its_routes_are_in_its_spec_next_to_the_built_in_ones_and_answer() {
    let dir = scratch_dir("notes-routes");
    let p = spawn_notes(&dir, &dir.join("notes.json"));
    let spec = get(p.addr(), "/api-docs/openapi.json").json();
    assert_eq!(spec["info"]["title"], "notes");
    for path in [
        "/api/v1/notes",
        "/api/v1/notes/{id}",
        "/",
        "/healthz",
        "/readyz",
        "/api/v1/info",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} not in the spec");
    }
    assert!(spec["paths"]["/api/v1/echo"].is_null(), "the app's routes");
    for schema in ["Note", "NewNote", "ProblemDetails"] {
        assert!(
            spec["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
    // The runtime's shared errors reach the service's operations too.
    assert!(spec["paths"]["/api/v1/notes"]["post"]["responses"]["415"].is_object());

    // The routes answer, through the runtime's middleware.
    let created = post_json(p.addr(), "/api/v1/notes", r#"{"title":"milk"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    assert!(created.header("x-request-id").is_some());
    let id = created.json()["id"].as_u64().unwrap();
    assert_eq!(
        created.header("location"),
        Some(format!("/api/v1/notes/{id}").as_str())
    );
    let one = get(p.addr(), &format!("/api/v1/notes/{id}"));
    assert_eq!(one.json()["title"], "milk");
    assert_eq!(
        get(p.addr(), "/api/v1/notes")
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let problem = post_json(p.addr(), "/api/v1/notes", r#"{"title":""}"#).assert_problem(422);
    assert_eq!(problem["errors"][0]["pointer"], "/title");
    let put = request(p.addr(), "PUT", "/api/v1/notes", &[], b"");
    put.assert_problem(405);
    assert_eq!(put.header("allow"), Some("GET, HEAD, POST"));
    let gone = request(p.addr(), "DELETE", &format!("/api/v1/notes/{id}"), &[], b"");
    assert_eq!(gone.status, 204);
    get(p.addr(), &format!("/api/v1/notes/{id}")).assert_problem(404);

    // The runtime's routes name the service.
    assert_eq!(get(p.addr(), "/").json()["service"], "notes");
    let info = get(p.addr(), "/api/v1/info").json();
    assert_eq!(info["service"], "notes");
    assert_eq!(info["services"][0]["name"], "snapshot");
}

#[test]
fn its_readiness_check_turns_readyz_to_503_and_back() {
    let dir = scratch_dir("notes-ready");
    let data: PathBuf = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let p = spawn_notes(&dir, &data.join("notes.json"));
    poll(&p, "/readyz", |r| r.status == 200);

    // The snapshot's folder goes away: not ready.
    std::fs::remove_dir_all(&data).unwrap();
    let down = poll(&p, "/readyz", |r| r.status == 503);
    let body = down.json();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["services"][0]["name"], "snapshot");
    assert_eq!(body["services"][0]["up"], false);
    p.wait_for_log("readiness check snapshot is down");

    // And back.
    std::fs::create_dir_all(&data).unwrap();
    poll(&p, "/readyz", |r| r.status == 200);
    p.wait_for_log("readiness check snapshot is up");
}

#[test]
fn sigterm_stops_its_task_inside_the_drain_runs_its_hook_and_exits_0() {
    let dir = scratch_dir("notes-drain");
    let snapshot = dir.join("notes.json");
    let mut p = spawn_notes(&dir, &snapshot);
    p.wait_for_log("task snapshotter started");
    let created = post_json(p.addr(), "/api/v1/notes", r#"{"title":"kept"}"#);
    assert_eq!(created.status, 201);

    p.signal("TERM");
    let (status, _) = p.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", p.stdout());
    let log = p.stdout();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    // The task stops when the drain begins; the hook runs after the last
    // request, before the exit.
    assert!(at("SIGTERM received") < at("task snapshotter stopped"));
    assert!(at("drain complete") < at("drain hook final-snapshot done"));
    assert!(!log.contains(" cut"), "{log}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&snapshot).unwrap()).unwrap();
    assert_eq!(saved[0]["title"], "kept");
}
