//! `/api/v1/notes` against a real PostgreSQL, through the built binary:
//! `migrate` as the release phase runs it, then the routes, a restart and
//! two instances on one database. `.ci/run` starts a throwaway cluster and
//! passes its URL as `TEST_DATABASE_URL`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portbound::testing::{Process, Response, get, request, scratch_dir, spawn_program};

const DEADLINE: Duration = Duration::from_secs(30);

fn database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .expect("TEST_DATABASE_URL: a PostgreSQL this test may create a table in")
}

fn binary(args: &[&str]) -> Process {
    let dir = scratch_dir("notes");
    let url = database_url();
    spawn_program(
        Path::new(env!("CARGO_BIN_EXE_portbound")),
        args,
        &[("DATABASE_URL", url.as_str())],
        &dir,
    )
    .in_scratch(dir)
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request(addr, method, path, &all, body.as_bytes())
}

#[test]
#[ignore = "needs PostgreSQL (TEST_DATABASE_URL): .ci/run starts a throwaway cluster"]
fn notes_migrate_once_then_live_in_postgres_across_restarts_and_instances() {
    // The release phase: applies the migration, then finds nothing to do.
    for expected in ["applied 1", "the schema is current"] {
        let mut migrate = binary(&["migrate"]);
        let (status, _) = migrate.wait_exit(DEADLINE);
        let out = format!("{}\n{}", migrate.stdout(), migrate.stderr());
        assert!(status.success(), "{out}");
        assert!(out.contains(expected), "{expected:?} not in:\n{out}");
    }

    let a = binary(&[]);
    let created = send(
        a.addr(),
        "POST",
        "/api/v1/notes",
        &[],
        r#"{"title":"groceries","body":"eggs"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("etag"), Some("\"1\""));
    let location = created.header("location").expect("a Location").to_owned();

    // The rules: a taken title and a bad field are 422, a missing note 404.
    let taken = send(
        a.addr(),
        "POST",
        "/api/v1/notes",
        &[],
        r#"{"title":"groceries"}"#,
    );
    taken.assert_problem(422);
    send(a.addr(), "POST", "/api/v1/notes", &[], r#"{"title":""}"#).assert_problem(422);
    get(a.addr(), "/api/v1/notes/999999").assert_problem(404);

    // Lost updates: If-Match is required, and a stale one refused.
    let edit = r#"{"title":"groceries","body":"eggs, flour"}"#;
    send(a.addr(), "PUT", &location, &[], edit).assert_problem(428);
    let updated = send(a.addr(), "PUT", &location, &[("If-Match", "\"1\"")], edit);
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_eq!(updated.header("etag"), Some("\"2\""));
    send(a.addr(), "PUT", &location, &[("If-Match", "\"1\"")], edit).assert_problem(412);
    // Strong comparison: a weak tag never matches; a list matches by any.
    send(a.addr(), "PUT", &location, &[("If-Match", "W/\"2\"")], edit).assert_problem(412);
    let listed = send(
        a.addr(),
        "PUT",
        &location,
        &[("If-Match", "\"1\", \"2\"")],
        edit,
    );
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.header("etag"), Some("\"3\""));
    // NUL is the client's mistake (PostgreSQL's text cannot hold it).
    send(
        a.addr(),
        "POST",
        "/api/v1/notes",
        &[],
        r#"{"title":"a\u0000b"}"#,
    )
    .assert_problem(422);

    // A second instance on the same database sees the write: scale-out.
    let b = binary(&[]);
    let seen = get(b.addr(), &location);
    assert_eq!(seen.status, 200, "{}", seen.text());
    assert_eq!(seen.json()["body"], "eggs, flour");
    let page = get(b.addr(), "/api/v1/notes?limit=1").json();
    assert_eq!(page["items"][0]["title"], "groceries", "{page}");
    assert_eq!(get(b.addr(), "/readyz").status, 200);

    // A restart keeps the note; a delete removes it everywhere.
    drop(a);
    let c = binary(&[]);
    assert_eq!(get(c.addr(), &location).status, 200);
    send(c.addr(), "DELETE", &location, &[("If-Match", "\"1\"")], "").assert_problem(412);
    assert_eq!(send(c.addr(), "DELETE", &location, &[], "").status, 204);
    get(b.addr(), &location).assert_problem(404);
    // Gone: with If-Match the precondition fails (412), without it 404.
    send(c.addr(), "PUT", &location, &[("If-Match", "*")], edit).assert_problem(412);
    send(c.addr(), "DELETE", &location, &[("If-Match", "\"3\"")], "").assert_problem(412);
    send(c.addr(), "DELETE", &location, &[], "").assert_problem(404);
}
