//! `examples/notes.rs`, a second service on the runtime, run as a process on
//! its laptop store (an embedded SQLite file): its routes sit in its spec
//! next to the built-in ones and keep their rules (422, 404, 412, 428), its
//! notes survive a restart, its readiness check turns `/readyz` to 503 and
//! back, SIGTERM stops its background task inside the drain and runs its
//! drain hook, and on a platform it refuses to start without a database.
//! tests/database.rs runs it on PostgreSQL.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{DEADLINE, Process, Response, example, get, post_json, request, scratch_dir};

/// The example in `dir`, its file at `file`, checks every second.
fn spawn_notes(dir: &Path, file: &Path) -> Process {
    common::spawn_program(
        &example("notes"),
        &[],
        &[
            ("NOTES_SQLITE", file.to_str().unwrap()),
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

/// A JSON request with extra headers.
fn send(p: &Process, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(p.addr(), method, path, &all, body.as_bytes())
}

#[test]
fn its_routes_are_in_its_spec_next_to_the_built_in_ones_and_answer() {
    let dir = scratch_dir("notes-routes");
    let p = spawn_notes(&dir, &dir.join("notes.sqlite3"));
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
    for schema in ["Note", "NoteInput", "Page", "ProblemDetails"] {
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
    assert_eq!(one.header("etag"), Some("\"1\""));
    assert_eq!(
        get(p.addr(), "/api/v1/notes").json()["items"]
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
    assert_eq!(info["services"][0]["name"], "store");
}

#[test]
fn bad_notes_get_problems_and_no_write_is_lost_silently() {
    let dir = scratch_dir("notes-rules");
    let p = spawn_notes(&dir, &dir.join("notes.sqlite3"));
    let first = post_json(
        p.addr(),
        "/api/v1/notes",
        r#"{"title":"milk","body":"2 l"}"#,
    );
    assert_eq!(first.status, 201, "{}", first.text());
    let id = first.json()["id"].as_i64().unwrap();
    let path = format!("/api/v1/notes/{id}");

    // Duplicate, over-long, malformed: 422, naming the field.
    for (body, pointer) in [
        (r#"{"title":"milk"}"#.to_owned(), "/title"),
        (format!(r#"{{"title":"{}"}}"#, "x".repeat(101)), "/title"),
        (
            format!(r#"{{"title":"long","body":"{}"}}"#, "é".repeat(10_001)),
            "/body",
        ),
    ] {
        let problem = post_json(p.addr(), "/api/v1/notes", &body).assert_problem(422);
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let problem = post_json(p.addr(), "/api/v1/notes", r#"{"title":5}"#).assert_problem(422);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("expected a string"),
        "{problem}"
    );
    get(p.addr(), "/api/v1/notes/999999").assert_problem(404);
    get(p.addr(), "/api/v1/notes?limit=0").assert_problem(400);

    // A change needs the version it was made from.
    send(&p, "PUT", &path, &[], r#"{"title":"oat milk"}"#).assert_problem(428);
    let changed = send(
        &p,
        "PUT",
        &path,
        &[("If-Match", "\"1\"")],
        r#"{"title":"oat milk"}"#,
    );
    assert_eq!(changed.status, 200, "{}", changed.text());
    assert_eq!(changed.header("etag"), Some("\"2\""));
    // A second writer that read version 1 is refused, and the first write
    // stands.
    send(
        &p,
        "PUT",
        &path,
        &[("If-Match", "\"1\"")],
        r#"{"title":"soy milk"}"#,
    )
    .assert_problem(412);
    assert_eq!(get(p.addr(), &path).json()["title"], "oat milk");
    send(&p, "DELETE", &path, &[("If-Match", "\"1\"")], "").assert_problem(412);
    send(
        &p,
        "PUT",
        "/api/v1/notes/999999",
        &[("If-Match", "*")],
        r#"{"title":"x"}"#,
    )
    .assert_problem(404);

    // Keyset pages: every note once, in order.
    for i in 0..5 {
        let res = post_json(p.addr(), "/api/v1/notes", &format!(r#"{{"title":"n{i}"}}"#));
        assert_eq!(res.status, 201);
    }
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = get(p.addr(), &format!("/api/v1/notes?limit=2&after={after}")).json();
        for note in page["items"].as_array().unwrap() {
            seen.push(note["title"].as_str().unwrap().to_owned());
        }
        match page["next_after"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(seen, ["oat milk", "n0", "n1", "n2", "n3", "n4"]);
}

#[test]
fn its_notes_survive_a_restart() {
    let dir = scratch_dir("notes-restart");
    let file = dir.join("notes.sqlite3");
    let mut p = spawn_notes(&dir, &file);
    // It says where the notes are, before it serves.
    let start = Instant::now();
    while !p
        .stderr()
        .contains("keeping the notes in the embedded SQLite file")
    {
        assert!(start.elapsed() < DEADLINE, "{}", p.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let created = post_json(p.addr(), "/api/v1/notes", r#"{"title":"kept"}"#);
    assert_eq!(created.status, 201);
    p.signal("TERM");
    assert_eq!(p.wait_exit(DEADLINE).0.code(), Some(0), "{}", p.stdout());

    let p = spawn_notes(&dir, &file);
    let page = get(p.addr(), "/api/v1/notes").json();
    assert_eq!(page["items"][0]["title"], "kept", "{page}");
}

#[test]
fn on_a_platform_without_a_database_it_refuses_to_start() {
    let dir = scratch_dir("notes-platform");
    for (marker, value, hint) in [
        ("DYNO", "web.1", "heroku addons:create heroku-postgresql"),
        ("FLY_APP_NAME", "notes", "fly mpg attach"),
        ("K_SERVICE", "notes", "Cloud SQL"),
    ] {
        let (code, out, err) = common::run_program(
            &example("notes"),
            &[],
            &[(marker, value), ("NOTES_SQLITE", "notes.sqlite3")],
            &dir,
        );
        assert_eq!(code, 78, "{marker}: {out}{err}");
        assert!(err.contains("DATABASE_URL is not set"), "{err}");
        assert!(err.contains("does not outlive it"), "{err}");
        assert!(err.contains(hint), "{marker}: {err}");
        assert!(!dir.join("notes.sqlite3").exists(), "no file is made");
    }
}

#[test]
fn its_readiness_check_turns_readyz_to_503_and_back() {
    let dir = scratch_dir("notes-ready");
    let file = dir.join("notes.sqlite3");
    let p = spawn_notes(&dir, &file);
    poll(&p, "/readyz", |r| r.status == 200);

    // The file goes away: the notes would be lost, so not ready.
    let away = dir.join("moved.sqlite3");
    std::fs::rename(&file, &away).unwrap();
    let down = poll(&p, "/readyz", |r| r.status == 503);
    let body = down.json();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["services"][0]["name"], "store");
    assert_eq!(body["services"][0]["up"], false);
    p.wait_for_log("readiness check store is down");

    // And back.
    std::fs::rename(&away, &file).unwrap();
    poll(&p, "/readyz", |r| r.status == 200);
    p.wait_for_log("readiness check store is up");
}

#[test]
fn sigterm_stops_its_task_inside_the_drain_runs_its_hook_and_exits_0() {
    let dir = scratch_dir("notes-drain");
    let file = dir.join("notes.sqlite3");
    let mut p = spawn_notes(&dir, &file);
    p.wait_for_log("task checkpointer started");
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
    assert!(at("SIGTERM received") < at("task checkpointer stopped"));
    assert!(at("drain complete") < at("drain hook close-store done"));
    assert!(!log.contains(" cut"), "{log}");
    // The hook's last checkpoint folded the write-ahead log into the file:
    // the file alone holds the note.
    let wal = dir.join("notes.sqlite3-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "the log was not folded back"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.windows(4).any(|w| w == b"kept"),
        "the note is in the file"
    );
}
