//! Observability behind proxies, on the real binary: client addresses and
//! schemes only from trusted proxies, request ids, log formats, metrics on
//! their own port, and backing-service readiness.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{
    Process, Response, get, metrics_addr, read_response, request, sample, scrape, spawn_binary,
};

/// Sends `request` from the local address `from` (a loopback alias), so a
/// test can play a proxy on 127.0.0.2 and a client on 127.0.0.1.
fn request_from(from: &str, to: SocketAddr, request: &str) -> Response {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket.bind(&local.into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    read_response(&mut stream).unwrap()
}

fn echo_with(headers: &str) -> String {
    let body = r#"{"message":"hi"}"#;
    format!(
        "POST /__test/echo HTTP/1.1\r\nHost: api.example\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )
}

const SPOOF: &str = "X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
                     Forwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-Proto: https\r\n";

/// Every stdout line written so far, parsed as JSON.
fn json_lines(p: &Process) -> Vec<serde_json::Value> {
    p.stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn access_line_for(p: &Process, request_id: &str) -> serde_json::Value {
    p.wait_for_log(&format!("\"request_id\":\"{request_id}\""));
    json_lines(p)
        .into_iter()
        .find(|v| v["request_id"] == request_id && v.get("httpRequest").is_some())
        .expect("an access line with the request id")
}

#[test]
fn a_client_cannot_spoof_its_address_or_scheme() {
    let p = spawn_binary(&[("TRUSTED_PROXIES", "127.0.0.2"), ("LOG_FORMAT", "json")]);
    let res = request_from(
        "127.0.0.1",
        p.addr(),
        &echo_with(&format!("{SPOOF}X-Request-ID: spoof-attempt-1\r\n")),
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["request"]["client"], "127.0.0.1");
    assert_eq!(v["request"]["scheme"], "http");
    let line = access_line_for(&p, "spoof-attempt-1");
    assert_eq!(line["httpRequest"]["remoteIp"], "127.0.0.1");
}

#[test]
fn a_trusted_proxy_is_believed_right_to_left() {
    let p = spawn_binary(&[("TRUSTED_PROXIES", "127.0.0.2"), ("LOG_FORMAT", "json")]);
    // The client forged 6.6.6.6; the proxy appended the address it saw.
    let res = request_from(
        "127.0.0.2",
        p.addr(),
        &echo_with(
            "X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\nX-Forwarded-Proto: https\r\n\
             X-Request-ID: via-proxy-1\r\n",
        ),
    );
    let v = res.json();
    assert_eq!(v["request"]["client"], "198.51.100.7");
    assert_eq!(v["request"]["scheme"], "https");
    let line = access_line_for(&p, "via-proxy-1");
    assert_eq!(line["httpRequest"]["remoteIp"], "198.51.100.7");
    // RFC 7239 and X-Real-IP too
    let res = request_from(
        "127.0.0.2",
        p.addr(),
        &echo_with("Forwarded: for=\"[2001:db8::7]:443\";proto=https\r\n"),
    );
    assert_eq!(res.json()["request"]["client"], "2001:db8::7");
    let res = request_from(
        "127.0.0.2",
        p.addr(),
        &echo_with("X-Real-IP: 192.0.2.44\r\n"),
    );
    assert_eq!(res.json()["request"]["client"], "192.0.2.44");
}

#[test]
fn force_https_redirects_only_what_a_trusted_proxy_says_is_http() {
    let p = spawn_binary(&[("TRUSTED_PROXIES", "127.0.0.2"), ("FORCE_HTTPS", "true")]);
    let get_from = |from: &str, path: &str, proto: &str| {
        request_from(
            from,
            p.addr(),
            &format!(
                "GET {path} HTTP/1.1\r\nHost: api.example\r\nX-Forwarded-Proto: {proto}\r\n\
                 Connection: close\r\n\r\n"
            ),
        )
    };
    let res = get_from("127.0.0.2", "/api/v1/info?x=1", "http");
    assert_eq!(res.status, 308);
    assert_eq!(
        res.header("location"),
        Some("https://api.example/api/v1/info?x=1")
    );
    assert!(res.header("x-request-id").is_some());
    // https through the proxy: served, with HSTS
    let res = get_from("127.0.0.2", "/api/v1/info", "https");
    assert_eq!(res.status, 200);
    assert!(
        res.header("strict-transport-security")
            .unwrap()
            .starts_with("max-age=")
    );
    // the platform probes health over plain http: never redirected
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(get_from("127.0.0.2", probe, "http").status, 200, "{probe}");
    }
    // an untrusted client's claim of http is not believed either way
    assert_eq!(get_from("127.0.0.1", "/api/v1/info", "http").status, 200);
}

#[test]
fn request_ids_are_reused_when_valid_and_replaced_when_not() {
    let p = spawn_binary(&[("LOG_FORMAT", "json")]);
    let addr = p.addr();
    let with_id = |id: &str, path: &str, method: &str| {
        request(addr, method, path, &[("X-Request-ID", id)], b"")
    };
    let res = with_id("abc-DEF_123.x", "/", "GET");
    assert_eq!(res.header("x-request-id"), Some("abc-DEF_123.x"));
    // present on errors too, in the header and the body
    for (path, method, status) in [("/nope", "GET", 404), ("/healthz", "DELETE", 405)] {
        let res = with_id("err-id-0001", path, method);
        assert_eq!(res.header("x-request-id"), Some("err-id-0001"));
        assert_eq!(res.assert_problem(status)["request_id"], "err-id-0001");
    }
    let big = format!(r#"{{"message":"{}"}}"#, "a".repeat(100 * 1024));
    let res = request(
        addr,
        "POST",
        "/__test/echo",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-ID", "big-body-01"),
        ],
        big.as_bytes(),
    );
    res.assert_problem(413);
    assert_eq!(res.header("x-request-id"), Some("big-body-01"));
    // invalid or oversized ids are replaced, never echoed
    for bad in ["has space", "semi;colon", "quote\"q", &"x".repeat(201)] {
        let res = with_id(bad, "/", "GET");
        let id = res.header("x-request-id").unwrap();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    // Railway's header, and Cloud Run's trace, when there is no X-Request-ID
    let res = request(
        addr,
        "GET",
        "/",
        &[("X-Railway-Request-Id", "rw-req-42")],
        b"",
    );
    assert_eq!(res.header("x-request-id"), Some("rw-req-42"));
    let res = request(
        addr,
        "GET",
        "/",
        &[(
            "X-Cloud-Trace-Context",
            "4bf92f3577b34da6a3ce929d0e0e4736/1;o=1",
        )],
        b"",
    );
    assert_eq!(
        res.header("x-request-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    // and in the access log line
    let line = access_line_for(&p, "abc-DEF_123.x");
    assert_eq!(line["httpRequest"]["requestUrl"], "/");
}

#[test]
fn json_logs_are_one_cloud_logging_object_a_line() {
    let p = spawn_binary(&[
        ("K_SERVICE", "portbound"),
        ("K_REVISION", "portbound-00001"),
        ("GOOGLE_CLOUD_PROJECT", "demo-project"),
    ]);
    let res = request(
        p.addr(),
        "GET",
        "/api/v1/info",
        &[
            (
                "X-Cloud-Trace-Context",
                "4bf92f3577b34da6a3ce929d0e0e4736/42;o=1",
            ),
            ("User-Agent", "probe \"quoted\" back\\slash"),
        ],
        b"",
    );
    assert_eq!(res.json()["platform"], "cloud-run");
    let line = access_line_for(&p, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(line["severity"], "INFO");
    assert_eq!(
        line["logging.googleapis.com/trace"],
        "projects/demo-project/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(line["httpRequest"]["status"], 200);
    assert_eq!(
        line["httpRequest"]["userAgent"],
        "probe \"quoted\" back\\slash"
    );
    for v in json_lines(&p) {
        assert!(v["severity"].is_string(), "{v}");
        assert!(v["time"].is_string(), "{v}");
    }
}

#[test]
fn logfmt_logs_are_key_value_pairs() {
    let p = spawn_binary(&[("DYNO", "web.1")]);
    let res = request(
        p.addr(),
        "GET",
        "/",
        &[("X-Request-ID", "logfmt-req-1")],
        b"",
    );
    assert_eq!(res.status, 200);
    let line = p.wait_for_log("request_id=logfmt-req-1");
    assert!(
        line.contains(" status=200 ") && line.contains(" method=GET "),
        "{line}"
    );
    for line in p.stdout().lines() {
        let pairs = logfmt_pairs(line);
        assert!(pairs.iter().any(|(k, _)| k == "time"), "{line}");
        assert!(pairs.iter().any(|(k, _)| k == "level"), "{line}");
    }
}

/// A small logfmt reader: `key=value` or `key="quoted \"value\""`; panics on
/// anything else.
fn logfmt_pairs(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = line.trim_end();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("no '=' in {rest:?} of {line:?}"));
        assert!(
            !key.is_empty() && !key.contains(' '),
            "bad key {key:?} in {line:?}"
        );
        let (value, after) = if let Some(q) = after.strip_prefix('"') {
            let mut end = None;
            let mut escaped = false;
            for (i, c) in q.char_indices() {
                match c {
                    '\\' if !escaped => escaped = true,
                    '"' if !escaped => {
                        end = Some(i);
                        break;
                    }
                    _ => escaped = false,
                }
            }
            let end = end.unwrap_or_else(|| panic!("unterminated quote in {line:?}"));
            (q[..end].to_owned(), &q[end + 1..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        out.push((key.to_owned(), value));
        rest = after.trim_start();
    }
    out
}

#[test]
fn metrics_count_requests_on_their_own_port() {
    let p = spawn_binary(&[("METRICS_PORT", "0")]);
    let addr = p.addr();
    let metrics = metrics_addr(&p);
    for _ in 0..7 {
        assert_eq!(get(addr, "/api/v1/info").status, 200);
    }
    get(addr, "/healthz");
    let text = scrape(metrics);
    assert_eq!(
        sample(
            &text,
            r#"http_requests_total{method="GET",route="/api/v1/info",status="200"}"#
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"http_request_duration_seconds_count{method="GET",route="/api/v1/info",status="200"}"#
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(sample(&text, "portbound_ready"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "portbound_draining"), Some(0.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"portbound_build_info{{service="portbound",version="{}",runtime="{}"}}"#,
                env!("CARGO_PKG_VERSION"),
                portbound::VERSION
            )
        ),
        Some(1.0)
    );
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 0.0);
    // the public port does not serve metrics
    get(addr, "/metrics").assert_problem(404);
}

#[test]
fn random_paths_and_methods_do_not_grow_the_label_set() {
    let p = spawn_binary(&[("METRICS_PORT", "0")]);
    let addr = p.addr();
    for i in 0..40 {
        let path = format!("/random/{i}/{}", i * 7919);
        let method = if i % 2 == 0 { "GET" } else { "FROBNICATE" };
        request(addr, method, &path, &[], b"");
    }
    let text = scrape(metrics_addr(&p));
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .collect();
    assert!(series.len() <= 3, "{series:#?}");
    assert!(!text.contains("/random/"), "a raw path became a label");
    assert_eq!(
        sample(
            &text,
            r#"http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        Some(20.0),
        "{text}"
    );
}

/// Polls `/readyz` until it answers `status`, returning the body.
fn wait_ready_status(addr: SocketAddr, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let res = get(addr, "/readyz");
        if res.status == status {
            return res.json();
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {}: {}",
            res.status,
            res.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn readiness_follows_a_backing_service() {
    // The article's shape: an API that calls an auth service, both portbound.
    let auth_port = common::free_port();
    let auth_env = [("PORT", auth_port.to_string())];
    let auth_env: Vec<(&str, &str)> = auth_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut auth = spawn_binary(&auth_env);
    assert_eq!(auth.port(), auth_port);

    let url = format!("http://user:secret@127.0.0.1:{auth_port}");
    let api = spawn_binary(&[("AUTH_SERVICE_URL", &url), ("SERVICE_PROBE_INTERVAL", "1")]);
    let v = wait_ready_status(api.addr(), 200);
    assert_eq!(v["services"][0]["name"], "auth");
    assert_eq!(v["services"][0]["up"], true);
    let info = get(api.addr(), "/api/v1/info").text();
    assert!(info.contains("\"name\":\"auth\""), "{info}");
    assert!(!info.contains("secret"), "credentials leaked: {info}");

    auth.signal("TERM");
    auth.wait_exit(Duration::from_secs(10));
    let v = wait_ready_status(api.addr(), 503);
    assert_eq!(v["status"], "unavailable");
    assert_eq!(v["services"][0]["name"], "auth");
    assert_eq!(v["services"][0]["up"], false);
    api.wait_for_log("backing service auth (http://127.0.0.1:");

    let auth = spawn_binary(&auth_env);
    assert_eq!(auth.port(), auth_port);
    wait_ready_status(api.addr(), 200);
}

#[test]
fn a_bad_service_url_is_a_configuration_error() {
    let (code, _, err) = common::run_binary(
        &[],
        &[("AUTH_SERVICE_URL", "auth-service:5001")],
        &common::scratch_dir("badurl"),
    );
    assert_eq!(code, 78);
    assert!(
        err.contains(r#"AUTH_SERVICE_URL="auth-service:5001": expected an absolute URL"#),
        "{err}"
    );
}

#[test]
fn the_metrics_listener_answers_head_refuses_other_methods_and_ids_every_answer() {
    let p = spawn_binary(&[("METRICS_PORT", "0")]);
    let metrics = metrics_addr(&p);

    // HEAD: GET's status and headers, no body.
    let mut stream = TcpStream::connect(metrics).unwrap();
    stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
    write!(
        stream,
        "HEAD /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    std::io::Read::read_to_end(&mut stream, &mut all).unwrap();
    let text = String::from_utf8_lossy(&all);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-request-id: "),
        "{head}"
    );
    assert!(body.is_empty(), "HEAD sent a body: {body:?}");

    let res = request(metrics, "POST", "/metrics", &[], b"");
    res.assert_problem(405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));

    let res = request(
        metrics,
        "GET",
        "/nowhere",
        &[("X-Request-ID", "scrape-7f3a-0001-abcd")],
        b"",
    );
    let problem = res.assert_problem(404);
    assert_eq!(res.header("x-request-id"), Some("scrape-7f3a-0001-abcd"));
    let detail = problem["detail"].as_str().unwrap();
    assert!(!detail.contains("openapi"), "{detail}");
    assert!(detail.contains("/metrics"), "{detail}");

    let res = get(metrics, "/metrics");
    assert!(res.header("x-request-id").is_some());
}

#[test]
fn database_and_redis_urls_are_probed_and_their_credentials_never_shown() {
    // Stand-ins for Postgres and Redis: the probe is a TCP connect.
    let db = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cache = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let db_url = format!(
        "postgres://app:hunter2@127.0.0.1:{}/app?sslmode=disable",
        db.local_addr().unwrap().port()
    );
    let redis_url = format!(
        "redis://:s3cr3t@127.0.0.1:{}",
        cache.local_addr().unwrap().port()
    );
    let p = spawn_binary(&[
        ("DATABASE_URL", &db_url),
        ("REDIS_URL", &redis_url),
        ("SERVICE_PROBE_INTERVAL", "1"),
        ("METRICS_PORT", "0"),
    ]);
    let v = wait_ready_status(p.addr(), 200);
    let names: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["database", "redis"], "{v}");
    let metrics = scrape(metrics_addr(&p));
    assert_eq!(
        sample(
            &metrics,
            r#"portbound_backing_service_up{service="database"}"#
        ),
        Some(1.0),
        "{metrics}"
    );

    // The database goes away: not ready.
    drop(db);
    let v = wait_ready_status(p.addr(), 503);
    assert_eq!(v["services"][0]["up"], false, "{v}");

    let shown = [
        get(p.addr(), "/api/v1/info").text(),
        get(p.addr(), "/readyz").text(),
        metrics,
        p.stdout(),
        p.stderr(),
    ]
    .concat();
    for secret in ["hunter2", "s3cr3t", "app:"] {
        assert!(!shown.contains(secret), "{secret} leaked");
    }
    assert!(shown.contains("postgres://127.0.0.1:"), "{shown}");
}

#[test]
fn every_route_is_labelled_by_its_pattern() {
    let p = spawn_binary(&[("METRICS_PORT", "0")]);
    let metrics = metrics_addr(&p);
    for path in [
        "/api/v1/info",
        "/docs/swagger-ui.css",
        "/docs/index.html",
        "/api-docs/openapi.json",
        "/docs",
        "/nowhere/1",
        "/nowhere/2",
    ] {
        get(p.addr(), path);
    }
    let text = scrape(metrics);
    for (route, status, count) in [
        ("/api/v1/info", 200, 1.0),
        ("/docs/{file}", 200, 2.0),
        ("/api-docs/openapi.json", 200, 1.0),
        ("/docs", 308, 1.0),
        ("unmatched", 404, 2.0),
    ] {
        let name =
            format!(r#"http_requests_total{{method="GET",route="{route}",status="{status}"}}"#);
        assert_eq!(sample(&text, &name), Some(count), "{name}\n{text}");
    }
}

#[test]
#[cfg(not(feature = "otel"))]
fn a_build_without_the_exporter_says_so_when_traces_are_configured() {
    let p = spawn_binary(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]);
    let line = p.wait_for_log("has no trace exporter");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{line}");
    // and it serves all the same
    assert_eq!(get(p.addr(), "/healthz").status, 200);
}
