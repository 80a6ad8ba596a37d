//! docker-compose.yml, played without Docker: the services that run one of
//! the runtime's examples (`api` is notes, `auth` is auth: the Dockerfile's
//! `PORTBOUND_EXAMPLE` build argument) start as real processes, built with the
//! features their images are built with, with the environment Compose
//! gives them. A real PostgreSQL stands in for `postgres`, initialised
//! from that service's `POSTGRES_*` settings as its image would be; a real
//! OTLP receiver stands in for `jaeger`. Each `host:port` of another
//! service becomes the address its stand-in listens on; each service's own
//! `PORT` becomes one the OS picks.
//!
//! Played in Compose's order (`depends_on`): the release step (`migrate`),
//! then auth, then api. Then each healthcheck passes, api's readiness
//! probes auth and the database, a write with the stack's token is
//! verified by auth under one request id, a write without it is refused,
//! and one trace runs from api to auth.
//!
//! Built only with `--features postgres,upstreams,otel`, as api's image
//! is; ignored by a plain `cargo test` (it needs PostgreSQL). `.ci/run`
//! builds each example with its image's features (auth with `otel` alone)
//! and runs it.

#![cfg(all(feature = "postgres", feature = "upstreams", feature = "otel"))]

mod common;

use std::collections::BTreeMap;

use common::compose::{Yaml, scalar};
use common::otlp::{CLIENT, SERVER, receiver};
use common::postgres::Cluster;
use common::{Process, eventually, example, get, request, run_program};

/// A service's `environment:`.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    common::compose::env(&service["environment"])
}

/// The example a service's image holds: its own build's `PORTBOUND_EXAMPLE`, or
/// that of the service that builds its `image:`.
fn example_of(compose: &Yaml, service: &Yaml) -> String {
    let image = service["image"].as_str().expect("image");
    let args = common::compose::build_args(compose, image)
        .unwrap_or_else(|| panic!("no service builds {image}"));
    let example = scalar(&args["PORTBOUND_EXAMPLE"]);
    let features = args["PORTBOUND_FEATURES"].as_str().unwrap_or("");
    // .ci/run builds each example with its image's features exactly.
    let built = match example.as_str() {
        "notes" => "postgres,upstreams,otel",
        "auth" => "otel",
        other => panic!("{image}: .ci/run builds no {other:?} for this test"),
    };
    assert_eq!(
        features, built,
        "{image}: .ci/run builds {example} with {built}"
    );
    example
}

/// `env` as the process gets it: each `host:port` of another service
/// replaced by its stand-in's address, its own `PORT` and `METRICS_PORT`
/// left for the OS to pick.
fn played_env(
    env: &[(String, String)],
    addresses: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    env.iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "PORT" | "METRICS_PORT" => "0".to_owned(),
                _ => addresses.iter().fold(v.clone(), |v, (from, to)| {
                    v.replace(&format!("@{from}"), &format!("@{to}"))
                        .replace(&format!("//{from}"), &format!("//{to}"))
                }),
            };
            (k.clone(), v)
        })
        .collect()
}

fn refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `service`'s healthcheck (`["CMD", program, args...]`), run against the
/// process as it would run inside its container: the same environment,
/// with the port the process bound.
fn healthcheck(
    name: &str,
    service: &Yaml,
    program: &std::path::Path,
    env: &[(String, String)],
    p: &Process,
) {
    let test: Vec<String> = service["healthcheck"]["test"]
        .as_sequence()
        .expect("healthcheck test")
        .iter()
        .map(scalar)
        .collect();
    assert_eq!(test[0], "CMD", "{name}: {test:?}");
    assert_eq!(
        test[1], "/usr/local/bin/portbound",
        "{name}: the image's one program"
    );
    let port = p.port().to_string();
    let mut env: Vec<(&str, &str)> = refs(env)
        .into_iter()
        .filter(|(k, _)| *k != "PORT")
        .collect();
    env.push(("PORT", &port));
    let args: Vec<&str> = test[2..].iter().map(String::as_str).collect();
    let dir = common::scratch_dir("compose-healthcheck");
    let (code, out, err) = run_program(program, &args, &env, &dir);
    assert_eq!(code, 0, "{name}: {test:?}: {out}{err}");
}

#[test]
#[ignore = "needs PostgreSQL (apt-get install postgresql) and the examples built with --features postgres,upstreams,otel: run by .ci/run"]
fn compose_api_calls_its_auth_with_one_request_id_and_one_trace() {
    let compose = common::compose::file();
    let services = &compose["services"];
    let (api, auth, migrate) = (&services["api"], &services["auth"], &services["migrate"]);
    assert_eq!(example_of(&compose, api), "notes");
    assert_eq!(example_of(&compose, auth), "auth");
    assert_eq!(example_of(&compose, migrate), "notes");
    let mut addresses = BTreeMap::new();

    // jaeger: a receiver on its OTLP/HTTP port.
    let (otlp, spans, _) = receiver();
    addresses.insert("jaeger:4318".to_owned(), format!("127.0.0.1:{otlp}"));

    // postgres: a cluster with the role and database the image's
    // POSTGRES_* settings create.
    let db = Cluster::start(false);
    let pg: BTreeMap<String, String> = environment(&services["postgres"]).into_iter().collect();
    let (user, password, database) = (
        &pg["POSTGRES_USER"],
        &pg["POSTGRES_PASSWORD"],
        &pg["POSTGRES_DB"],
    );
    db.psql(&format!("CREATE ROLE {user} LOGIN PASSWORD '{password}'"));
    db.psql(&format!("CREATE DATABASE {database} OWNER {user}"));
    addresses.insert("postgres:5432".to_owned(), format!("127.0.0.1:{}", db.port));

    // The release step: `migrate`, with its own environment.
    let notes = example("notes");
    let command: Vec<String> = migrate["command"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(scalar)
        .collect();
    let env = played_env(&environment(migrate), &addresses);
    let args: Vec<&str> = command.iter().map(String::as_str).collect();
    let dir = common::scratch_dir("compose-migrate");
    let (code, out, err) = run_program(&notes, &args, &refs(&env), &dir);
    assert_eq!(code, 0, "migrate: {out}{err}");

    // auth, then api, which depends on it.
    let auth_env = played_env(&environment(auth), &addresses);
    let auth_dir = common::scratch_dir("compose-auth");
    let auth_p = common::spawn_program(&example("auth"), &[], &refs(&auth_env), &auth_dir);
    healthcheck("auth", auth, &example("auth"), &auth_env, &auth_p);
    let auth_port: BTreeMap<String, String> = environment(auth).into_iter().collect();
    addresses.insert(
        format!("auth:{}", auth_port["PORT"]),
        format!("127.0.0.1:{}", auth_p.port()),
    );
    let api_env = played_env(&environment(api), &addresses);
    assert!(
        api_env
            .iter()
            .any(|(k, v)| k == "AUTH_SERVICE_URL" && v.contains(&auth_p.port().to_string())),
        "api names auth: {api_env:?}"
    );
    let api_dir = common::scratch_dir("compose-api");
    let api_p = common::spawn_program(&notes, &[], &refs(&api_env), &api_dir);
    healthcheck("api", api, &notes, &api_env, &api_p);

    // Ready: its readiness probes auth and the migrated table.
    eventually("api ready", || {
        let res = get(api_p.addr(), "/readyz");
        (res.status == 200).then_some(res)
    });

    // A write with the stack's token: auth verifies it, under api's
    // request id.
    let token = environment(auth)
        .into_iter()
        .find(|(k, _)| k == "AUTH_TOKENS")
        .map(|(_, v)| v.split('=').next().unwrap().to_owned())
        .expect("AUTH_TOKENS");
    let write = |bearer: Option<&str>, id: &str| {
        let bearer = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json"), ("X-Request-ID", id)];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        request(
            api_p.addr(),
            "POST",
            "/api/v1/notes",
            &headers,
            br#"{"title":"from compose"}"#,
        )
    };
    let id = "compose-0123456789abcdef";
    let res = write(Some(&token), id);
    assert_eq!(res.status, 201, "{}", res.text());
    api_p.wait_for_log(&format!("request_id={id}"));
    let line = auth_p.wait_for_log(&format!("request_id={id}"));
    assert!(line.contains("POST /api/v1/verify"), "{line}");
    let res = write(None, "compose-no-token");
    assert_eq!(res.status, 401, "{}", res.text());

    // One trace: api's server span, its client span to auth, and auth's
    // server span under it, named as Compose names them.
    let (server, client, remote) = eventually("the api -> auth trace", || {
        let spans = spans.lock().unwrap();
        let client = spans.iter().find(|s| {
            s.service == "api"
                && s.kind == CLIENT
                && s.attributes.get("peer.service").map(String::as_str) == Some("auth")
        })?;
        let server = spans.iter().find(|s| s.span_id == client.parent)?;
        let remote = spans.iter().find(|s| s.parent == client.span_id)?;
        Some((server.clone(), client.clone(), remote.clone()))
    });
    assert_eq!((server.service.as_str(), server.kind), ("api", SERVER));
    assert_eq!(server.name, "POST /api/v1/notes");
    assert_eq!((remote.service.as_str(), remote.kind), ("auth", SERVER));
    assert_eq!(remote.name, "POST /api/v1/verify");
    assert_eq!(remote.trace_id, server.trace_id);
    assert_eq!(client.attributes["http.response.status_code"], "200");
}
