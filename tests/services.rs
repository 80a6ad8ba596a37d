//! Port-bound services calling each other (the `upstreams` feature): the
//! notes example, started with `AUTH_SERVICE_URL`, asks the auth example to
//! verify each writer's token. Both run as real processes, notes behind
//! nginx: one request id runs through nginx, notes and auth; a stopped auth
//! gives fast, clear 503s and opens notes' circuit breaker; auth back on its
//! port heals notes without a restart.
//!
//! Built only with `--features upstreams`; ignored by a plain `cargo test`
//! (it needs nginx). `.ci/run` builds the examples with the feature and runs
//! it.

#![cfg(feature = "upstreams")]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nginx::{nginx_conf, start_nginx};
use common::{DEADLINE, Process, Response, eventually, example, get, request, scratch_dir};

const TOKEN: &str = "s3cret-token-for-tests";

fn spawn_auth(dir: &std::path::Path, port: &str) -> Process {
    common::spawn_program(
        &example("auth"),
        &[],
        &[("AUTH_TOKENS", &format!("{TOKEN}=alice")), ("PORT", port)],
        dir,
    )
}

/// POST a note through `addr`, with `token` as the bearer (or none).
fn post(addr: SocketAddr, title: &str, token: Option<&str>) -> Response {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    request(
        addr,
        "POST",
        "/api/v1/notes",
        &headers,
        format!(r#"{{"title":"{title}"}}"#).as_bytes(),
    )
}

#[test]
#[ignore = "needs nginx (apt-get install nginx-light) and the examples built with --features upstreams: run by .ci/run"]
fn notes_calls_auth_by_name_behind_nginx_with_one_request_id_and_heals() {
    let dir = scratch_dir("services");
    let mut auth = spawn_auth(&dir, "0");
    let auth_port = auth.port();
    let auth_url = format!("http://127.0.0.1:{auth_port}");
    let file = dir.join("notes.sqlite3");
    let notes = common::spawn_program(
        &example("notes"),
        &[],
        &[
            ("NOTES_SQLITE", file.to_str().unwrap()),
            ("AUTH_SERVICE_URL", &auth_url),
            // Opens after 4 calls at least half failed, for 1 s.
            ("AUTH_SERVICE_BREAKER", "0.5,4,30,1"),
            ("SERVICE_PROBE_INTERVAL", "1"),
            ("METRICS_PORT", "0"),
        ],
        &dir,
    );
    let listen = common::free_port();
    std::fs::write(
        dir.join("nginx.conf"),
        nginx_conf(&[notes.port()], listen, &dir),
    )
    .unwrap();
    let mut nginx = start_nginx(&dir);
    let front = SocketAddr::from(([127, 0, 0, 1], listen));
    nginx.wait_answering(front, "/healthz");

    // /readyz GETs auth's /healthz.
    eventually("auth up in notes' readiness", || {
        let res = get(notes.addr(), "/readyz");
        (res.status == 200 && res.text().contains(r#""name":"auth""#)).then_some(())
    });

    // No token, a bad token, then a good one, through nginx.
    post(front, "no token", None).assert_problem(401);
    post(front, "bad token", Some("nope")).assert_problem(401);
    let created = post(front, "kept", Some(TOKEN));
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.header("x-request-id").unwrap().to_owned();
    // nginx made the id ($request_id, 32 hex digits); notes logged it, and
    // so did auth, which notes called with it.
    assert_eq!(id.len(), 32, "{id}");
    let line = notes.wait_for_log(&format!("request_id={id}"));
    assert!(line.contains("POST /api/v1/notes"), "{line}");
    let line = auth.wait_for_log(&format!("request_id={id}"));
    assert!(line.contains("POST /api/v1/verify"), "{line}");
    assert!(!auth.stdout().contains(TOKEN), "the token is never logged");

    // auth stops: writes get fast 503s with Retry-After, naming auth, and
    // never its address.
    auth.signal("TERM");
    assert!(auth.wait_exit(DEADLINE).0.success());
    for i in 0..6 {
        let started = Instant::now();
        let res = post(front, &format!("while down {i}"), Some(TOKEN));
        let took = started.elapsed();
        let problem = res.assert_problem(503);
        assert!(res.header("retry-after").is_some(), "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains("auth"), "{detail}");
        assert!(
            !res.text().contains(&auth_port.to_string()),
            "{}",
            res.text()
        );
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    notes.wait_for_log("upstream auth: circuit open");
    // Reads do not need auth, and still work.
    assert_eq!(get(front, "/api/v1/notes").status, 200);
    eventually("auth down in notes' readiness", || {
        (get(notes.addr(), "/readyz").status == 503).then_some(())
    });

    // auth back on its port: notes heals by itself.
    let auth = spawn_auth(&dir, &auth_port.to_string());
    assert_eq!(auth.port(), auth_port);
    let healed = eventually("a write after auth came back", || {
        let res = post(front, "after", Some(TOKEN));
        (res.status == 201).then_some(res)
    });
    assert!(healed.header("x-request-id").is_some());
    notes.wait_for_log("upstream auth: circuit closed");
    eventually("notes ready again", || {
        (get(notes.addr(), "/readyz").status == 200).then_some(())
    });

    // What the metrics say.
    let metrics = common::scrape(common::metrics_addr(&notes));
    for needle in [
        r#"upstream_requests_total{upstream="auth",method="POST",status="200"}"#,
        r#"upstream_requests_total{upstream="auth",method="POST",status="circuit_open"}"#,
        r#"upstream_requests_total{upstream="auth",method="POST",status="refused"}"#,
        r#"upstream_circuit_open{upstream="auth"} 0"#,
        r#"upstream_request_duration_seconds_count{upstream="auth"}"#,
    ] {
        assert!(metrics.contains(needle), "{needle} not in:\n{metrics}");
    }
}

// ---------------------------------------------------------------------------
// The client's rules, in-process: an upstream service and a caller on real
// sockets.
// ---------------------------------------------------------------------------

/// An `https://` upstream: auth behind nginx with TLS, its certificate from
/// a CA of the test's own. Trusted through `SSL_CERT_FILE`, writes go
/// through; with the system's roots only, the handshake fails and the write
/// is a fast 502 or 503 naming auth, never a write let through unchecked.
#[test]
#[ignore = "needs nginx (apt-get install nginx-light), openssl and the examples built with --features upstreams: run by .ci/run"]
fn an_https_upstream_is_verified_against_the_trusted_roots() {
    let dir = scratch_dir("services-tls");
    common::tls::test_ca(&dir);
    let auth = spawn_auth(&dir, "0");
    let listen = common::free_port();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nevents {{}}\nhttp {{\n\
             log_format probe '$request $http_user_agent';\n\
             access_log {d}/tls-access.log probe;\n\
             client_body_temp_path {d};\nproxy_temp_path {d};\n\
             server {{\nlisten 127.0.0.1:{listen} ssl;\n\
             ssl_certificate {d}/server.crt;\nssl_certificate_key {d}/server.key;\n\
             location / {{ proxy_pass http://127.0.0.1:{auth}; \
             proxy_set_header X-Request-ID $http_x_request_id; }}\n}}\n}}\n",
            d = dir.display(),
            auth = auth.port(),
        ),
    )
    .unwrap();
    let nginx = start_nginx(&dir);
    let auth_url = format!("https://localhost:{listen}");
    let ca = dir.join("ca.crt");
    let notes_with = |trust: &[(&str, &str)], name: &str| {
        let file = dir.join(format!("{name}.sqlite3"));
        let mut env = vec![
            ("NOTES_SQLITE", file.to_str().unwrap().to_owned()),
            ("AUTH_SERVICE_URL", auth_url.clone()),
            ("SERVICE_PROBE_INTERVAL", "1".to_owned()),
        ];
        env.extend(trust.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        common::spawn_program(&example("notes"), &[], &env, &dir)
    };

    let trusted = notes_with(&[("SSL_CERT_FILE", ca.to_str().unwrap())], "trusted");
    eventually("auth up over https in notes' readiness", || {
        (get(trusted.addr(), "/readyz").status == 200).then_some(())
    });
    // Readiness GETs auth's health path through the TLS hop, as it does
    // over http: not a bare TCP connect.
    eventually("the probe's GET in nginx's log", || {
        let log = std::fs::read_to_string(dir.join("tls-access.log")).unwrap_or_default();
        log.contains("GET /healthz HTTP/1.1 portbound-probe")
            .then_some(())
    });
    post(trusted.addr(), "bad token", Some("nope")).assert_problem(401);
    let created = post(trusted.addr(), "over tls", Some(TOKEN));
    assert_eq!(created.status, 201, "{}", created.text());
    // The request id crossed the TLS hop into auth's access log.
    let id = created.header("x-request-id").unwrap();
    auth.wait_for_log(&format!("request_id={id}"));

    // The system's roots do not know the test's CA.
    let untrusted = notes_with(
        &[
            ("SSL_CERT_FILE", common::UNSET),
            ("SSL_CERT_DIR", common::UNSET),
        ],
        "untrusted",
    );
    // Its readiness says auth is down: the port answers, but a certificate
    // that does not verify serves no call.
    let line = untrusted.wait_for_log("/readyz answers 503");
    assert!(
        line.contains("backing service auth") && line.contains("certificate"),
        "{line}"
    );
    assert_eq!(get(untrusted.addr(), "/readyz").status, 503);
    let started = Instant::now();
    let refused = post(untrusted.addr(), "unchecked", Some(TOKEN));
    assert!(
        matches!(refused.status, 502 | 503),
        "{} {}",
        refused.status,
        refused.text()
    );
    let problem = refused.assert_problem(refused.status);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("auth"),
        "{problem}"
    );
    assert!(
        !refused.text().contains("localhost:"),
        "no URL: {}",
        refused.text()
    );
    drop(nginx);
}

mod rules {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use actix_web::http::Method;
    use actix_web::{HttpRequest, HttpResponse, web};
    use portbound::Service;
    use portbound::config::{Config, Env};
    use portbound::error::ApiError;
    use portbound::testing::{TestApp, get, request, spawn_app, spawn_app_with};
    use portbound::upstream::Upstreams;

    /// Hits of the upstream's flaky route.
    #[derive(Default)]
    struct Hits(AtomicUsize);

    /// The upstream: what it was sent, a route that fails twice then
    /// answers, a slow one, and one that answers a problem.
    fn upstream() -> (TestApp, Arc<Hits>) {
        let hits = Arc::new(Hits::default());
        let data = web::Data::from(hits.clone());
        let app = spawn_app(move || {
            Service::new("up", "1.0.0").app_data(data).configure(|cfg| {
                cfg.route(
                    "/headers",
                    web::get().to(|req: HttpRequest| async move {
                        let pick = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned)
                        };
                        HttpResponse::Ok().json(serde_json::json!({
                            "x-request-id": pick("x-request-id"),
                            "traceparent": pick("traceparent"),
                            "tracestate": pick("tracestate"),
                        }))
                    }),
                )
                .route(
                    "/flaky",
                    web::route().to(|hits: web::Data<Hits>| async move {
                        if hits.0.fetch_add(1, Ordering::SeqCst) % 3 < 2 {
                            HttpResponse::ServiceUnavailable()
                                .insert_header(("Retry-After", "0"))
                                .finish()
                        } else {
                            HttpResponse::Ok().json(serde_json::json!({"ok": true}))
                        }
                    }),
                )
                .route(
                    "/slow",
                    web::get().to(|| async {
                        actix_rt::time::sleep(Duration::from_secs(3)).await;
                        HttpResponse::Ok().finish()
                    }),
                )
                .route(
                    "/missing",
                    web::get().to(|| async {
                        ApiError::new(
                            actix_web::http::StatusCode::NOT_FOUND,
                            "no such thing upstream",
                        )
                        .to_response(None)
                    }),
                );
            })
        });
        (app, hits)
    }

    /// The caller: `GET /call?method=M&path=P` calls `up` (named, or
    /// `external=1`) and answers with what it got.
    fn caller(up: &TestApp, extra: &[(&str, &str)]) -> TestApp {
        let url = format!("http://{}", up.addr);
        let mut vars = vec![
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("WEB_CONCURRENCY", "1"),
            ("LOG_FORMAT", "text"),
            ("UP_SERVICE_URL", url.as_str()),
        ];
        vars.extend_from_slice(extra);
        let config = Config::from_vars(&Env::from_pairs(vars)).expect("valid");
        let base = url.clone();
        spawn_app_with(config, move || {
            Service::new("caller", "1.0.0").configure(move |cfg| {
                let base = base.clone();
                cfg.route(
                    "/call",
                    web::route().to(
                        move |up: Upstreams, q: web::Query<std::collections::HashMap<String, String>>| {
                            let base = base.clone();
                            async move {
                                let method: Method =
                                    q.get("method").map_or("GET", |m| m.as_str()).parse().unwrap();
                                let path = q.get("path").cloned().unwrap_or_default();
                                let call = if q.contains_key("external") {
                                    up.external(method, format!("{base}{path}").parse().unwrap())
                                } else {
                                    up.get("up")?.request(method, &path)
                                };
                                let reply = call.send().await?;
                                let body: serde_json::Value = reply.json()?;
                                Ok::<_, ApiError>(HttpResponse::Ok().json(body))
                            }
                        },
                    ),
                );
            })
        })
    }

    #[test]
    fn a_named_upstream_gets_the_request_id_and_trace_context_an_external_origin_none() {
        let (up, _) = upstream();
        let me = caller(&up, &[]);
        let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = [
            ("X-Request-ID", "req-1234567890abcdefghij"),
            ("traceparent", traceparent),
            ("tracestate", "vendor=1"),
        ];
        let named = request(me.addr, "GET", "/call?path=/headers", &headers, b"");
        assert_eq!(named.status, 200, "{}", named.text());
        let seen = named.json();
        assert_eq!(seen["x-request-id"], "req-1234567890abcdefghij");
        assert_eq!(seen["traceparent"], traceparent);
        assert_eq!(seen["tracestate"], "vendor=1");

        let external = request(
            me.addr,
            "GET",
            "/call?path=/headers&external=1",
            &headers,
            b"",
        );
        assert_eq!(external.status, 200, "{}", external.text());
        let seen = external.json();
        for h in ["x-request-id", "traceparent", "tracestate"] {
            assert!(seen[h].is_null(), "{h} went to an external origin: {seen}");
        }
    }

    #[test]
    fn idempotent_calls_are_retried_after_503_and_posts_are_not() {
        let (up, hits) = upstream();
        let me = caller(&up, &[]);
        let res = get(me.addr, "/call?path=/flaky");
        assert_eq!(res.status, 200, "{}", res.text());
        assert_eq!(
            hits.0.load(Ordering::SeqCst),
            3,
            "two retries, then the answer"
        );

        // A POST is sent once: its 503 comes back as the caller's 503,
        // naming the upstream.
        hits.0.store(0, Ordering::SeqCst);
        let res = get(me.addr, "/call?method=POST&path=/flaky");
        let problem = res.assert_problem(503);
        assert_eq!(hits.0.load(Ordering::SeqCst), 1);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("the up service")
        );
        assert!(res.header("retry-after").is_some());
        assert!(!res.text().contains(&up.addr.to_string()), "{}", res.text());
    }

    #[test]
    fn a_call_never_outlives_its_request_and_an_upstream_problem_is_passed_on() {
        let (up, _) = upstream();
        // The caller's own budget is 1 s; the upstream would take 3.
        let me = caller(&up, &[("REQUEST_TIMEOUT", "1")]);
        let started = Instant::now();
        let res = get(me.addr, "/call?path=/slow");
        let took = started.elapsed();
        let problem = res.assert_problem(504);
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("did not answer in time")
        );
        assert!(took < Duration::from_millis(1500), "took {took:?}");

        let res = get(me.addr, "/call?path=/missing");
        let problem = res.assert_problem(404);
        assert_eq!(problem["detail"], "no such thing upstream");
    }

    #[test]
    fn a_bad_upstream_setting_stops_the_process_naming_it() {
        for (name, value) in [
            ("UP_SERVICE_TIMEOUT", "soon"),
            ("UP_SERVICE_RETRIES", "9"),
            ("UP_SERVICE_BREAKER", "0.5,20"),
            ("UP_SERVICE_RETRY_BUDGET", "2"),
            ("UP_SERVICE_HEALTH_PATH", "healthz"),
            ("OTHER_SERVICE_TIMEOUT", "5"),
        ] {
            let err = Config::from_vars(&Env::from_pairs([
                ("UP_SERVICE_URL", "http://127.0.0.1:9"),
                (name, value),
            ]))
            .expect_err(name);
            assert!(err.to_string().contains(name), "{err}");
        }
    }
}

// ---------------------------------------------------------------------------
// Traces: one write, one trace across notes and auth, exported over OTLP to
// a receiver that decodes it with the protocol's own definitions.
// ---------------------------------------------------------------------------

#[cfg(feature = "otel")]
mod traces {
    use super::*;
    use common::otlp::{CLIENT, Got, SERVER, receiver};

    #[test]
    #[ignore = "needs the examples built with --features upstreams,otel: run by .ci/run"]
    fn a_write_is_one_trace_across_notes_and_auth_exported_over_otlp() {
        let (port, spans, headers) = receiver();
        let endpoint = format!("http://127.0.0.1:{port}");
        let otel = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=k%3D1"),
            // The batch's delay, read by the SDK: the test need not wait 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ];
        let dir = scratch_dir("traces");
        let mut env: Vec<(&str, &str)> = otel.to_vec();
        let tokens = format!("{TOKEN}=alice");
        env.extend([("AUTH_TOKENS", tokens.as_str())]);
        let auth = common::spawn_program(&example("auth"), &[], &env, &dir);
        let auth_url = format!("http://127.0.0.1:{}", auth.port());
        let file = dir.join("notes.sqlite3");
        let mut env: Vec<(&str, &str)> = otel.to_vec();
        env.extend([
            ("AUTH_SERVICE_URL", auth_url.as_str()),
            ("NOTES_SQLITE", file.to_str().unwrap()),
        ]);
        let notes = common::spawn_program(&example("notes"), &[], &env, &dir);
        notes.wait_for_log("traces: exported over OTLP to");

        // The caller is traced too: its traceparent makes notes' span a child.
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let caller = "00f067aa0ba902b7";
        let bearer = format!("Bearer {TOKEN}");
        let traceparent = format!("00-{trace}-{caller}-01");
        let res = request(
            notes.addr(),
            "POST",
            "/api/v1/notes",
            &[
                ("Content-Type", "application/json"),
                ("Authorization", bearer.as_str()),
                ("traceparent", traceparent.as_str()),
            ],
            br#"{"title":"traced"}"#,
        );
        assert_eq!(res.status, 201, "{}", res.text());

        let find = |service: &str, kind: i32| -> Option<Got> {
            spans
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.service == service && s.kind == kind && s.trace_id == trace)
                .cloned()
        };
        let (server, client, upstream) = eventually("the three spans", || {
            Some((
                find("notes", SERVER)?,
                find("notes", CLIENT)?,
                find("auth", SERVER)?,
            ))
        });
        // One trace: caller -> notes (server) -> notes' call (client) ->
        // auth (server).
        assert_eq!(server.parent, caller, "{server:?}");
        assert_eq!(client.parent, server.span_id, "{client:?}");
        assert_eq!(upstream.parent, client.span_id, "{upstream:?}");
        assert_eq!(server.name, "POST /api/v1/notes");
        assert_eq!(server.attributes["http.route"], "/api/v1/notes");
        assert_eq!(server.attributes["http.response.status_code"], "201");
        assert_eq!(server.attributes["http.request.method"], "POST");
        assert_eq!(client.attributes["peer.service"], "auth");
        assert_eq!(client.attributes["http.response.status_code"], "200");
        assert_eq!(client.attributes["server.address"], "127.0.0.1");
        assert_eq!(upstream.name, "POST /api/v1/verify");
        // Nothing of the token in any span.
        for span in spans.lock().unwrap().iter() {
            for value in span.attributes.values() {
                assert!(!value.contains(TOKEN), "{span:?}");
            }
        }
        // The access line names the same trace and span.
        let line = notes.wait_for_log(&format!("span_id={}", server.span_id));
        assert!(line.contains(&format!("trace_id={trace}")), "{line}");
        // The export carried the configured header, URL-decoded.
        assert!(
            headers
                .lock()
                .unwrap()
                .iter()
                .any(|h| h == "x-api-key: k=1"),
            "{:?}",
            headers.lock().unwrap()
        );
    }

    /// A collector that is not there costs no request: spans are queued and
    /// dropped off the workers, and the drain still ends in time.
    #[test]
    #[ignore = "needs the examples built with --features upstreams,otel: run by .ci/run"]
    fn a_dead_collector_costs_no_request() {
        // A port nothing listens on.
        let dead = format!("http://127.0.0.1:{}", common::free_port());
        let dir = scratch_dir("traces-dead");
        let file = dir.join("notes.sqlite3");
        let mut notes = common::spawn_program(
            &example("notes"),
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("NOTES_SQLITE", file.to_str().unwrap()),
                ("SHUTDOWN_TIMEOUT", "3"),
                ("METRICS_PORT", "0"),
            ],
            &dir,
        );
        notes.wait_for_log("traces: exported over OTLP to");
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let started = Instant::now();
            let res = common::post_json(
                notes.addr(),
                "/api/v1/notes",
                &format!(r#"{{"title":"n{i}"}}"#),
            );
            slowest = slowest.max(started.elapsed());
            assert_eq!(res.status, 201, "{}", res.text());
        }
        eprintln!("200 writes with a dead collector: slowest {slowest:?}");
        assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
        // What could not be sent is counted, not silently lost.
        let metrics = common::metrics_addr(&notes);
        let dropped = eventually("dropped spans counted", || {
            common::sample(
                &common::scrape(metrics),
                r#"otel_spans_dropped_total{reason="export_failed"}"#,
            )
            .filter(|n| *n > 0.0)
        });
        eprintln!("spans dropped so far: {dropped}");
        assert!(
            common::sample(&common::scrape(metrics), "otel_spans_exported_total").is_none(),
            "nothing can have been exported to a dead collector"
        );
        notes.signal("TERM");
        let (status, took) = notes.wait_exit(DEADLINE);
        assert!(status.success(), "{}", notes.stdout());
        // The drain (none in flight) plus the bounded last export.
        assert!(took < Duration::from_secs(5), "stopped after {took:?}");
    }

    /// A collector that takes the connection and never answers: the export
    /// hangs until its timeout, the spans pile up behind it, and past
    /// `OTEL_BSP_MAX_QUEUE_SIZE` each is dropped and counted, while every
    /// request is answered as fast as ever.
    #[test]
    #[ignore = "needs the examples built with --features upstreams,otel: run by .ci/run"]
    fn a_slow_collector_fills_the_queue_and_each_span_dropped_is_counted() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        let dir = scratch_dir("traces-slow");
        let file = dir.join("notes.sqlite3");
        let notes = common::spawn_program(
            &example("notes"),
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_BSP_SCHEDULE_DELAY", "50"),
                ("OTEL_BSP_MAX_QUEUE_SIZE", "8"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
                ("NOTES_SQLITE", file.to_str().unwrap()),
                ("METRICS_PORT", "0"),
            ],
            &dir,
        );
        notes.wait_for_log("traces: exported over OTLP to");
        // One request's span goes out in an export that reaches the
        // collector, and hangs there.
        assert_eq!(get(notes.addr(), "/api/v1/notes").status, 200);
        silent.set_nonblocking(true).unwrap();
        let _hanging = eventually("the first export", || silent.accept().ok());
        let metrics = common::metrics_addr(&notes);
        let queue_full = || {
            common::sample(
                &common::scrape(metrics),
                r#"otel_spans_dropped_total{reason="queue_full"}"#,
            )
            .unwrap_or(0.0)
        };
        let mut slowest = Duration::ZERO;
        for _ in 0..100 {
            let started = Instant::now();
            let res = get(notes.addr(), "/api/v1/notes");
            slowest = slowest.max(started.elapsed());
            assert_eq!(res.status, 200, "{}", res.text());
        }
        assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
        // 100 spans (one a request) against 8 held at most: at least 92
        // dropped, each counted; none exported.
        let dropped = queue_full();
        assert!(dropped >= 92.0, "{dropped} counted");
        assert!(
            common::sample(&common::scrape(metrics), "otel_spans_exported_total").is_none(),
            "the collector answered nothing"
        );
    }
}
