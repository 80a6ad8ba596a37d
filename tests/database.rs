//! `DATABASE_URL` as a PostgreSQL pool (the `postgres` feature), against a
//! real PostgreSQL started for each test (`common::postgres`): every worker
//! queries the one pool under load and through a drain, a database that goes
//! away gives fast 503s and readiness 503 and comes back without a restart,
//! TLS follows `sslmode`, a drain leaves no half-written transaction, and the
//! password never leaves the process.
//!
//! Built only with `--features postgres`; ignored by a plain `cargo test`
//! (it needs PostgreSQL's programs). `.ci/run` runs it.

#![cfg(feature = "postgres")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::postgres::{Cluster, PASSWORD};
use common::{DEADLINE, Process, Response, eventually, get, request, spawn_binary};

/// A `SELECT count(*) ...` through psql, as a number.
fn count(db: &Cluster, sql: &str) -> usize {
    db.psql(sql)
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn ready(addr: SocketAddr) -> u16 {
    get(addr, "/readyz").status
}

/// Every line the process wrote, both streams.
fn output(p: &Process) -> String {
    format!("{}\n{}", p.stdout(), p.stderr())
}

/// What a failure of the pool shared across actix's per-worker runtimes
/// looks like (sqlx #531, #1396, #1639, #2938).
const RUNTIME_ERRORS: [&str; 3] = ["IO driver has terminated", "reactor", "panicked"];

/// None of `bad` in anything the process wrote.
fn assert_output_lacks(p: &Process, bad: &[&str]) {
    let text = output(p);
    for bad in bad {
        assert!(!text.contains(bad), "{bad:?} in the output:\n{text}");
    }
}

/// No runtime error, and no error line at all.
fn assert_no_runtime_errors(p: &Process) {
    assert_output_lacks(p, &RUNTIME_ERRORS);
    assert_output_lacks(p, &[" ERROR "]);
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn every_worker_queries_the_one_pool_under_load_and_through_a_drain() {
    let db = Cluster::start(false);
    let url = db.url("");
    let mut p = spawn_binary(&[
        ("DATABASE_URL", &url),
        ("WEB_CONCURRENCY", "4"),
        ("SHUTDOWN_TIMEOUT", "20"),
    ]);
    let addr = p.addr();
    eventually("readiness", || (ready(addr) == 200).then_some(()));

    // Load: 16 clients, a new connection per request, so actix hands them
    // to every worker in turn.
    let workers: BTreeSet<String> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(move || {
                    (0..20)
                        .map(|_| {
                            let res = get(addr, "/__test/db?ms=2");
                            assert_eq!(res.status, 200, "{}", res.text());
                            res.json()["worker"].as_str().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(workers.len(), 4, "workers that queried: {workers:?}");
    // One pool for the process: never more connections than its size.
    let open = count(
        &db,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' AND application_name <> 'psql'",
    );
    assert!(open <= 5, "{open} connections for a pool of 5");

    // The drain: five queries in flight (the pool's size) when SIGTERM
    // arrives all finish, and the pool closes after them.
    let slow: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || get(addr, "/__test/db?ms=700")))
        .collect();
    eventually("five queries in flight", || {
        let n = count(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep%' AND state = 'active' AND query NOT LIKE '%pg_stat_activity%'",
        );
        (n == 5).then_some(())
    });
    p.signal("TERM");
    for t in slow {
        let res = t.join().unwrap();
        assert_eq!(res.status, 200, "{}", res.text());
    }
    let (status, _) = p.wait_exit(DEADLINE);
    assert!(status.success(), "{status:?}\n{}", output(&p));
    assert!(p.stdout().contains("drain hook database"), "{}", p.stdout());
    assert_no_runtime_errors(&p);
    eventually("the pool's connections to close", || {
        let n = count(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND application_name <> 'psql' AND backend_type = 'client backend'",
        );
        (n == 0).then_some(())
    });
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn a_database_that_goes_away_answers_503_fast_and_comes_back_without_a_restart() {
    let db = Cluster::start(false);
    let url = db.url("");
    let p = spawn_binary(&[
        ("DATABASE_URL", &url),
        ("SERVICE_PROBE_INTERVAL", "1"),
        ("DATABASE_ACQUIRE_TIMEOUT", "1"),
        ("REQUEST_TIMEOUT", "30"),
    ]);
    let addr = p.addr();
    eventually("readiness", || (ready(addr) == 200).then_some(()));
    assert_eq!(get(addr, "/__test/db?ms=1").status, 200);

    db.pause();
    let started = Instant::now();
    let res = get(addr, "/__test/db?ms=1");
    let took = started.elapsed();
    let problem = res.assert_problem(503);
    assert_eq!(res.header("retry-after"), Some("1"), "{problem}");
    // Bounded by DATABASE_ACQUIRE_TIMEOUT (1 s), not REQUEST_TIMEOUT (30 s).
    assert!(took < Duration::from_secs(10), "a 503 after {took:?}");
    eventually("readiness to turn 503", || {
        (ready(addr) == 503).then_some(())
    });
    let readyz = get(addr, "/readyz").json();
    let database = readyz["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "database")
        .cloned()
        .expect("database in /readyz");
    assert_eq!(database["up"], false, "{readyz}");

    db.resume();
    eventually("queries to succeed again", || {
        (get(addr, "/__test/db?ms=1").status == 200).then_some(())
    });
    eventually("readiness to recover", || {
        (ready(addr) == 200).then_some(())
    });
    assert_no_runtime_errors(&p);
}

/// Serves with a `DATABASE_URL` the database refuses: a query gets 503, and
/// the line that says why the database is down is returned.
fn refused(url: &str) -> String {
    let p = spawn_binary(&[("DATABASE_URL", url), ("SERVICE_PROBE_INTERVAL", "1")]);
    get(p.addr(), "/__test/db?ms=1").assert_problem(503);
    p.wait_for_log(" is down: ")
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn sslmode_require_uses_tls_verify_full_checks_the_ca_and_both_fail_clearly() {
    let with_tls = Cluster::start(true);
    let url = with_tls.url("sslmode=require");
    let p = spawn_binary(&[("DATABASE_URL", &url)]);
    let res = get(p.addr(), "/__test/db?ms=1");
    assert_eq!(res.status, 200, "{}", res.text());
    let backend = res.json()["backend"].as_i64().unwrap();
    assert_eq!(
        with_tls.psql(&format!(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = {backend}"
        )),
        "t",
        "the pool's connection is not encrypted"
    );

    // verify-full: the server's certificate checked against the CA given.
    let verified = format!(
        "postgres://app:{PASSWORD}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        with_tls.port,
        with_tls.ca().display()
    );
    let p = spawn_binary(&[("DATABASE_URL", &verified)]);
    let res = get(p.addr(), "/__test/db?ms=1");
    assert_eq!(res.status, 200, "{}", res.text());
    // ... and refused with a CA that did not sign it.
    let other_ca = Cluster::start(true);
    let unverified = verified.replace(
        &with_tls.ca().display().to_string(),
        &other_ca.ca().display().to_string(),
    );
    let line = refused(&unverified);
    assert!(
        line.contains("invalid peer certificate"),
        "the log does not say the certificate failed: {line}"
    );

    let without_tls = Cluster::start(false);
    let url = without_tls.url("sslmode=require");
    let line = refused(&url);
    assert!(
        line.contains("TLS"),
        "the log does not say TLS failed: {line}"
    );
}

/// Four requests that each write a pair of rows in one transaction, `ms`
/// apart; returns once all four transactions are open in the database.
fn pair_writes(db: &Cluster, addr: SocketAddr, ms: u64) -> Vec<std::thread::JoinHandle<Response>> {
    let writes = (0..4)
        .map(|id| {
            std::thread::spawn(move || {
                let path = format!("/__test/db/pair?id={id}&ms={ms}");
                request(addr, "POST", &path, &[], b"")
            })
        })
        .collect();
    eventually("four open transactions", || {
        let n = count(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'",
        );
        (n == 4).then_some(())
    });
    writes
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn a_drain_leaves_no_half_written_transaction() {
    let db = Cluster::start(false);
    db.psql("CREATE TABLE pairs (id bigint NOT NULL, half text NOT NULL)");
    let url = db.url("");
    // SHUTDOWN_TIMEOUT 1: the requests, each holding its transaction open
    // for 3 s between its two rows, are cut long before they finish.
    let mut p = spawn_binary(&[("DATABASE_URL", &url), ("SHUTDOWN_TIMEOUT", "1")]);
    let writes = pair_writes(&db, p.addr(), 3000);
    p.signal("TERM");
    let _ = p.wait_exit(DEADLINE);
    for w in writes {
        let _ = w.join();
    }
    // Each pair is whole or absent: the transaction committed, or died
    // with its connection and rolled back.
    let halves = db.psql("SELECT id FROM pairs GROUP BY id HAVING count(*) <> 2");
    assert_eq!(halves, "", "pairs written by half");
    // The drain cuts the requests (an error line each); no runtime error.
    assert_output_lacks(&p, &RUNTIME_ERRORS);
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn a_drain_with_time_to_spare_commits_every_transaction() {
    let db = Cluster::start(false);
    db.psql("CREATE TABLE pairs (id bigint NOT NULL, half text NOT NULL)");
    let url = db.url("");
    let mut p = spawn_binary(&[("DATABASE_URL", &url), ("SHUTDOWN_TIMEOUT", "15")]);
    let writes = pair_writes(&db, p.addr(), 500);
    p.signal("TERM");
    for w in writes {
        assert_eq!(w.join().unwrap().status, 204);
    }
    let (status, _) = p.wait_exit(DEADLINE);
    assert!(status.success(), "{status:?}\n{}", output(&p));
    assert_eq!(db.psql("SELECT count(*) FROM pairs"), "8");
    assert_no_runtime_errors(&p);
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn the_password_never_leaves_the_process() {
    let db = Cluster::start(false);
    let url = db.url("");
    let metrics_port = common::free_port().to_string();
    let p = spawn_binary(&[
        ("DATABASE_URL", &url),
        ("METRICS_PORT", &metrics_port),
        ("SERVICE_PROBE_INTERVAL", "1"),
        ("RUST_LOG", "debug"),
    ]);
    let addr = p.addr();
    eventually("readiness", || (ready(addr) == 200).then_some(()));
    let mut seen = vec![
        get(addr, "/__test/db?ms=1").text(),
        get(addr, "/api/v1/info").text(),
        get(addr, "/readyz").text(),
    ];
    db.pause();
    seen.push(get(addr, "/__test/db?ms=1").text());
    eventually("readiness to turn 503", || {
        (ready(addr) == 503).then_some(())
    });
    seen.push(get(addr, "/readyz").text());
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port.parse().unwrap()));
    let scrape = common::scrape(metrics);
    assert!(
        scrape.contains("database_pool_max_connections 5"),
        "{scrape}"
    );
    seen.push(scrape);
    seen.push(output(&p));
    for text in seen {
        assert!(!text.contains(PASSWORD), "the password leaked:\n{text}");
    }
    // A bad URL is refused at start with 78, named, and without its password.
    let bad = format!("{url}?sslmode=sometimes");
    let dir = common::scratch_dir("bad-database-url");
    let (code, _, err) = common::run_binary(&[], &[("DATABASE_URL", &bad)], &dir);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("DATABASE_URL"), "{err}");
    assert!(!err.contains(PASSWORD), "{err}");
}

/// A folder of migrations for `portbound migrate` (read at run time through
/// the test-only PORTBOUND_TEST_MIGRATIONS), from (file name, SQL) pairs.
fn migrations(name: &str, files: &[(&str, &str)]) -> common::ScratchDir {
    let dir = common::scratch_dir(name);
    for (file, sql) in files {
        std::fs::write(dir.join(file), sql).unwrap();
    }
    dir
}

/// `portbound migrate` with these migrations and variables.
fn migrate(dir: &std::path::Path, env: &[(&str, &str)]) -> common::Process {
    let folder = dir.to_string_lossy().into_owned();
    let mut all = vec![("PORTBOUND_TEST_MIGRATIONS", folder.as_str())];
    all.extend_from_slice(env);
    common::spawn_binary_with(&["migrate"], &all, dir)
}

fn finish(mut p: Process) -> (i32, String) {
    let (status, _) = p.wait_exit(DEADLINE);
    (status.code().unwrap_or(-1), output(&p))
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn migrate_applies_once_even_when_two_run_at_once() {
    let db = Cluster::start(false);
    let url = db.url("");
    // The first migration holds the lock for a second, so the two runs
    // overlap; without the lock both would create the table, and one fail.
    let dir = migrations(
        "migrations-twice",
        &[
            (
                "1_create_notes.sql",
                "SELECT pg_sleep(1); CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);",
            ),
            (
                "2_index_notes.sql",
                "CREATE INDEX notes_body ON notes (body);",
            ),
        ],
    );
    let env = [("DATABASE_URL", url.as_str())];
    let (a, b) = (migrate(&dir, &env), migrate(&dir, &env));
    let (code_a, out_a) = finish(a);
    let (code_b, out_b) = finish(b);
    assert_eq!((code_a, code_b), (0, 0), "{out_a}\n---\n{out_b}");
    let both = format!("{out_a}\n{out_b}");
    assert!(
        both.contains("applied 2") && both.contains("the schema is current, at version 2"),
        "one run applies both, the other finds them applied:\n{both}"
    );
    assert_eq!(
        db.psql("SELECT string_agg(version::text, ',' ORDER BY version) FROM _sqlx_migrations"),
        "1,2"
    );
    assert!(!both.contains(PASSWORD), "{both}");
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn a_failing_migration_names_itself_and_leaves_the_schema_as_it_was() {
    let db = Cluster::start(false);
    let url = db.url("");
    let dir = migrations(
        "migrations-broken",
        &[
            ("1_create_notes.sql", "CREATE TABLE notes (id bigint);"),
            (
                "2_half_done.sql",
                "CREATE TABLE half (id bigint); SELECT no_such_column FROM notes;",
            ),
        ],
    );
    let (code, out) = finish(migrate(&dir, &[("DATABASE_URL", &url)]));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("migration 2 (half done) failed"), "{out}");
    assert!(out.contains("the schema is as it was"), "{out}");
    assert_eq!(
        db.psql("SELECT to_regclass('half') IS NULL"),
        "t",
        "half was left behind"
    );
    assert_eq!(
        db.psql("SELECT count(*) FROM _sqlx_migrations WHERE success"),
        "1"
    );
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn a_migration_changed_after_it_was_applied_is_refused() {
    let db = Cluster::start(false);
    let url = db.url("");
    let dir = migrations(
        "migrations-changed",
        &[("1_create_notes.sql", "CREATE TABLE notes (id bigint);")],
    );
    let (code, out) = finish(migrate(&dir, &[("DATABASE_URL", &url)]));
    assert_eq!(code, 0, "{out}");
    std::fs::write(
        dir.join("1_create_notes.sql"),
        "CREATE TABLE notes (id bigint, body text);",
    )
    .unwrap();
    let (code, out) = finish(migrate(&dir, &[("DATABASE_URL", &url)]));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("migration 1 (create notes) was changed after it was applied"),
        "{out}"
    );
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn migrate_takes_the_direct_url_over_a_pooler_and_needs_a_database() {
    let db = Cluster::start(false);
    let dir = migrations(
        "migrations-direct",
        &[("1_create_notes.sql", "CREATE TABLE notes (id bigint);")],
    );
    // DATABASE_URL names a port nothing listens on, as a pooler the web
    // process uses would be a different address; the direct URL is used.
    let pooler = format!(
        "postgres://app:{PASSWORD}@127.0.0.1:{}/postgres",
        common::free_port()
    );
    let direct = db.url("");
    let (code, out) = finish(migrate(
        &dir,
        &[("DATABASE_URL", &pooler), ("DATABASE_DIRECT_URL", &direct)],
    ));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("applied 1"), "{out}");

    let (code, out) = finish(migrate(&dir, &[("DATABASE_URL", common::UNSET)]));
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("DATABASE_URL"), "{out}");
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn the_unix_socket_form_cloud_sql_uses_connects() {
    let db = Cluster::start(false);
    // Cloud SQL's form on Cloud Run: no host, the socket's directory in host=.
    let url = format!(
        "postgres://app@/postgres?host={}&port={}",
        db.socket_dir().display(),
        db.port
    );
    let p = spawn_binary(&[("DATABASE_URL", &url)]);
    let res = get(p.addr(), "/__test/db?ms=1");
    assert_eq!(res.status, 200, "{}", res.text());
    let backend = res.json()["backend"].as_i64().unwrap();
    // A unix-socket backend has no client address.
    assert_eq!(
        db.psql(&format!(
            "SELECT client_addr IS NULL FROM pg_stat_activity WHERE pid = {backend}"
        )),
        "t"
    );
    eventually("readiness", || (ready(p.addr()) == 200).then_some(()));
}

#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn sql_is_logged_at_debug_only_and_the_pool_has_its_metrics() {
    let db = Cluster::start(false);
    let url = db.url("");
    let metrics_port = common::free_port().to_string();
    let p = spawn_binary(&[("DATABASE_URL", &url), ("METRICS_PORT", &metrics_port)]);
    assert_eq!(get(p.addr(), "/__test/db?ms=1").status, 200);
    db.pause();
    get(p.addr(), "/__test/db?ms=1").assert_problem(503);
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port.parse().unwrap()));
    let scrape = common::scrape(metrics);
    for family in [
        "database_pool_connections{state=\"idle\"}",
        "database_pool_connections{state=\"in_use\"}",
        "database_pool_max_connections 5",
        "database_acquire_duration_seconds_count",
        "database_errors_total{kind=\"unavailable\"} 1",
    ] {
        assert!(scrape.contains(family), "{family} missing:\n{scrape}");
    }
    // At info (the tests' level), no statement is logged...
    assert_output_lacks(&p, &["pg_backend_pid"]);
    // ... and at debug it is, so the check above can fail.
    db.resume();
    let p = spawn_binary(&[("DATABASE_URL", &url), ("RUST_LOG", "debug")]);
    assert_eq!(get(p.addr(), "/__test/db?ms=1").status, 200);
    p.wait_for_log("pg_backend_pid");
}

/// The Procfile, run by a real Procfile runner (honcho, as Heroku's `heroku
/// local`, foreman and Dokku read the same file): `release` migrates and
/// exits 0, then `web` serves with the database ready and drains on the
/// runner's SIGTERM.
#[test]
#[ignore = "needs PostgreSQL and honcho (pip install honcho): run by .ci/run"]
fn the_procfile_migrates_in_release_then_serves_and_drains_under_honcho() {
    let db = Cluster::start(false);
    let url = db.url("");
    let dir = migrations(
        "procfile",
        &[(
            "1_create_notes.sql",
            "CREATE TABLE notes (id bigserial PRIMARY KEY, body text NOT NULL);",
        )],
    );
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Procfile"),
        dir.join("Procfile"),
    )
    .unwrap();
    // The Procfile names the binary as a deployed slug has it: on PATH.
    let bin = std::path::Path::new(common::binary()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let folder = dir.to_string_lossy().into_owned();
    let env = [
        ("PATH", path.as_str()),
        ("DATABASE_URL", url.as_str()),
        ("PORTBOUND_TEST_MIGRATIONS", folder.as_str()),
        ("SHUTDOWN_TIMEOUT", "3"),
        // honcho's own: no colour codes in what the test reads.
        ("TERM", "dumb"),
    ];
    let honcho = std::path::PathBuf::from("honcho");
    let (code, out, err) =
        common::run_program(&honcho, &["start", "--no-colour", "release"], &env, &dir);
    assert_eq!(code, 0, "release:\n{out}{err}");
    assert!(out.contains("applied 1"), "{out}");
    assert_eq!(count(&db, "SELECT count(*) FROM notes"), 0);

    // `PORT=0` (the test environment's) is honcho's base port, so `web`, the
    // first process it starts, binds a port the OS picks.
    // On a failed assertion the runner must still stop `web`: SIGKILL would
    // leave it running in the session honcho gave it.
    struct Runner(Process);
    impl Drop for Runner {
        fn drop(&mut self) {
            // Already gone when the test got that far: nothing to do.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &self.0.pid().to_string()])
                .stderr(std::process::Stdio::null())
                .status();
            let _ = self.0.wait_exit(DEADLINE);
        }
    }
    let mut runner = Runner(common::spawn_program(
        &honcho,
        &["start", "--no-colour", "web"],
        &env,
        &dir,
    ));
    let web = &mut runner.0;
    let addr = web.addr();
    eventually("readiness", || (ready(addr) == 200).then_some(()));
    let res = get(addr, "/__test/db?ms=0");
    assert_eq!(res.status, 200, "{}", res.text());
    web.signal("SIGTERM");
    let (status, _) = web.wait_exit(DEADLINE);
    let text = output(web);
    // honcho exits 143 for the SIGTERM it was sent; `exec` in the Procfile
    // makes it wait for the binary's own exit, after the drain, and report
    // that status (without it, honcho sees only `sh -c` die of the signal).
    assert_eq!(status.code(), Some(143), "{text}");
    assert!(text.contains("web.1 stopped (rc=0)"), "{text}");
    assert!(text.contains("drain complete"), "{text}");
    assert!(!text.contains(PASSWORD), "{text}");
}

/// The notes example on PostgreSQL (built with `--features postgres`, as
/// `.ci/run` builds it): `notes migrate` is the release step, the web
/// process never migrates, and two instances on one database are one
/// service: each sees the other's writes, and `If-Match` keeps either from
/// overwriting the other's change.
#[test]
#[ignore = "needs PostgreSQL (initdb, pg_ctl, psql: apt-get install postgresql): run by .ci/run"]
fn notes_on_postgres_migrate_once_and_two_instances_agree() {
    let db = Cluster::start(false);
    let url = db.url("");
    let notes = common::example("notes");
    let dir = common::scratch_dir("notes-postgres");
    let env = [("DATABASE_URL", url.as_str())];

    // Before `migrate` there is no table: the web process does not make it,
    // and its readiness query (the table's) keeps it out of rotation.
    let early = common::spawn_program(
        &notes,
        &[],
        &[
            ("DATABASE_URL", url.as_str()),
            ("SERVICE_PROBE_INTERVAL", "1"),
        ],
        &dir,
    );
    early.wait_for_log("backing service database");
    let res = post_json_to(&early, r#"{"title":"too soon"}"#);
    assert_eq!(res.status, 500, "{}", res.text());
    let not_ready = eventually("readiness 503", || {
        let res = get(early.addr(), "/readyz");
        (res.status == 503).then_some(res)
    });
    assert!(
        not_ready.text().contains("\"up\":false"),
        "{}",
        not_ready.text()
    );

    let (code, out, err) = common::run_program(&notes, &["migrate"], &env, &dir);
    assert_eq!(
        code, 0,
        "notes migrate (built with --features postgres?):\n{out}{err}"
    );
    assert!(out.contains("applied 1"), "{out}");
    let (code, out, _) = common::run_program(&notes, &["migrate"], &env, &dir);
    assert_eq!(code, 0);
    assert!(out.contains("the schema is current"), "{out}");
    // Migrated: the instance that was waiting turns ready by itself.
    eventually("readiness 200", || {
        (ready(early.addr()) == 200).then_some(())
    });
    drop(early);

    let a = common::spawn_program(&notes, &[], &env, &dir);
    let b = common::spawn_program(&notes, &[], &env, &dir);
    let created = post_json_to(&a, r#"{"title":"shared","body":"from a"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let path = format!("/api/v1/notes/{}", created.json()["id"]);
    let seen = get(b.addr(), &path);
    assert_eq!(seen.json()["body"], "from a");
    let etag = seen.header("etag").unwrap().to_owned();

    // b changes it; a, still holding version 1, is refused.
    let put = |p: &Process, etag: &str, body: &str| {
        request(
            p.addr(),
            "PUT",
            &path,
            &[("Content-Type", "application/json"), ("If-Match", etag)],
            body.as_bytes(),
        )
    };
    assert_eq!(
        put(&b, &etag, r#"{"title":"shared","body":"from b"}"#).status,
        200
    );
    put(&a, &etag, r#"{"title":"shared","body":"a again"}"#).assert_problem(412);
    assert_eq!(get(a.addr(), &path).json()["body"], "from b");
    // A duplicate title is the database's unique violation, as 422.
    let dup = post_json_to(&b, r#"{"title":"shared"}"#).assert_problem(422);
    assert_eq!(dup["errors"][0]["pointer"], "/title");
    assert_eq!(count(&db, "SELECT count(*) FROM notes"), 1);
    for p in [&a, &b] {
        assert_output_lacks(p, &[PASSWORD]);
    }
}

/// POST /api/v1/notes on `p`.
fn post_json_to(p: &Process, body: &str) -> Response {
    common::post_json(p.addr(), "/api/v1/notes", body)
}
