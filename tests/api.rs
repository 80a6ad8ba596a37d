//! Every route and every problem+json error, against the app in-process on a
//! real socket; the spec snapshot and the proof that every route is in it.

mod common;

use common::{get, post_json, request, spawn_app};

#[test]
fn root_answers_the_health_document() {
    let app = spawn_app();
    let res = get(app.addr, "/");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let v = res.json();
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["service"], "portbound");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(res.header("x-request-id").is_some());
}

#[test]
fn probes_answer_and_readiness_turns_503_while_draining() {
    let app = spawn_app();
    assert_eq!(get(app.addr, "/healthz").json()["status"], "ok");
    let ready = get(app.addr, "/readyz");
    assert_eq!(
        (ready.status, ready.json()["status"].clone()),
        (200, "ready".into())
    );

    app.state.drain.begin();
    let draining = get(app.addr, "/readyz");
    assert_eq!(draining.status, 503);
    assert_eq!(draining.header("content-type"), Some("application/json"));
    assert_eq!(draining.json()["status"], "draining");
    assert_eq!(draining.header("connection"), Some("close"));
    // liveness and the API keep answering during the drain
    assert_eq!(get(app.addr, "/healthz").status, 200);
    assert_eq!(get(app.addr, "/").status, 200);
}

#[test]
fn head_is_answered_wherever_get_is() {
    let app = spawn_app();
    for path in ["/", "/healthz", "/readyz", "/api/v1/info"] {
        let res = request(app.addr, "HEAD", path, &[], b"");
        assert_eq!(res.status, 200, "HEAD {path}");
    }
}

#[test]
fn info_reports_the_runtime_facts() {
    let app = spawn_app();
    let v = get(app.addr, "/api/v1/info").json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["platform"], "local");
    assert_eq!(v["workers"], 1);
    assert_eq!(v["ports"][0], app.addr.port());
    assert_eq!(v["listeners"][0], app.addr.to_string());
    assert!(v["uptime_seconds"].is_u64());
}

#[test]
fn every_error_is_problem_json() {
    let app = spawn_app();
    // unknown path
    get(app.addr, "/no/such/thing").assert_problem(404);
    // wrong method: 405 with Allow
    let res = request(app.addr, "DELETE", "/healthz", &[], b"");
    res.assert_problem(405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    // The rest is the app's echo.
    let res = get(app.addr, "/api/v1/echo");
    res.assert_problem(405);
    assert_eq!(res.header("allow"), Some("POST"));
    // malformed JSON
    post_json(app.addr, "/api/v1/echo", "{not json").assert_problem(400);
    // empty body
    post_json(app.addr, "/api/v1/echo", "").assert_problem(400);
    // wrong shape: a number, a missing field, an unknown field
    for body in [r#"{"message":1}"#, "{}", r#"{"message":"a","extra":1}"#] {
        post_json(app.addr, "/api/v1/echo", body).assert_problem(422);
    }
    // wrong content type
    let res = request(
        app.addr,
        "POST",
        "/api/v1/echo",
        &[("Content-Type", "text/plain")],
        br#"{"message":"a"}"#,
    );
    res.assert_problem(415);
    // too large
    let big = format!(r#"{{"message":"{}"}}"#, "a".repeat(70 * 1024));
    post_json(app.addr, "/api/v1/echo", &big).assert_problem(413);
}

#[test]
fn problems_never_reveal_internals() {
    let app = spawn_app();
    let res = post_json(app.addr, "/api/v1/echo", r#"{"message":1}"#);
    let text = res.text();
    for leak in ["src/", ".rs", "panicked", "serde", "actix"] {
        assert!(!text.contains(leak), "{leak} in {text}");
    }
}

#[test]
fn docs_redirect_and_swagger_ui_is_served() {
    let app = spawn_app();
    let res = get(app.addr, "/docs");
    assert_eq!(res.status, 308);
    assert_eq!(res.header("location"), Some("/docs/"));
    let page = get(app.addr, "/docs/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("swagger-ui"), "{}", page.text());
    let init = get(app.addr, "/docs/swagger-initializer.js").text();
    assert!(init.contains("/api-docs/openapi.json"), "{init}");
    assert!(init.contains(r#""validatorUrl": "none""#), "{init}");
    let spec = get(app.addr, "/api-docs/openapi.json");
    assert_eq!(spec.status, 200);
    assert_eq!(
        spec.json(),
        serde_json::from_str::<serde_json::Value>(
            &portbound_service::app::service().openapi_json()
        )
        .unwrap()
    );
}

#[test]
fn test_routes_are_off_unless_enabled() {
    let app = spawn_app();
    get(app.addr, "/__test/slow?ms=1").assert_problem(404);
}

#[test]
fn swagger_ui_assets_are_gzipped_for_clients_that_accept_it_and_revalidate_with_304() {
    let app = spawn_app();
    let path = "/docs/swagger-ui-bundle.js";
    let plain = request(app.addr, "GET", path, &[], b"");
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.body.len() > 500_000, "{} bytes", plain.body.len());
    let etag = plain.header("etag").expect("an ETag").to_owned();
    let cache = plain.header("cache-control").expect("Cache-Control");
    assert!(cache.contains("max-age=86400"), "{cache}");
    assert_eq!(plain.header("vary"), Some("Accept-Encoding"));

    let gz = request(
        app.addr,
        "GET",
        path,
        &[("Accept-Encoding", "gzip, br")],
        b"",
    );
    assert_eq!(gz.status, 200);
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert!(
        gz.body.len() * 3 < plain.body.len(),
        "gzip {} of {} bytes",
        gz.body.len(),
        plain.body.len()
    );
    let mut unzipped = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&gz.body[..]),
        &mut unzipped,
    )
    .unwrap();
    assert!(unzipped == plain.body, "gzip does not decode to the file");
    let gz_etag = gz.header("etag").unwrap().to_owned();
    assert_ne!(gz_etag, etag, "two encodings, two validators");

    // The second load: 304 and no body, when the validator is the one of
    // the representation this request would get.
    let again = request(app.addr, "GET", path, &[("If-None-Match", &etag)], b"");
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let again = request(
        app.addr,
        "GET",
        path,
        &[("If-None-Match", &gz_etag), ("Accept-Encoding", "gzip")],
        b"",
    );
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(gz_etag.as_str()));
    // A cache holding the gzipped copy asking for the plain one gets it.
    let other = request(app.addr, "GET", path, &[("If-None-Match", &gz_etag)], b"");
    assert_eq!(other.status, 200);
    let changed = request(
        app.addr,
        "GET",
        path,
        &[("If-None-Match", "\"other\"")],
        b"",
    );
    assert_eq!(changed.status, 200);
    // A missing docs file is a problem like any other: with the request's
    // id in its body, equal to the header's.
    let missing = request(app.addr, "GET", "/docs/nope.js", &[], b"");
    let problem = missing.assert_problem(404);
    assert_eq!(
        problem["request_id"].as_str(),
        missing.header("x-request-id"),
        "{problem}"
    );
}
