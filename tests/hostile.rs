//! Hostile and broken clients against the real binary: panics, slow clients,
//! limits, and a corpus of bad inputs against every route. Every answer is a
//! 4xx problem (a 500 only for the deliberate panic), never a dropped
//! connection, and the process keeps serving.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Process, get, raw, request, spawn_binary};

fn assert_still_serving(p: &Process) {
    assert_eq!(
        get(p.addr(), "/healthz").status,
        200,
        "the process stopped serving"
    );
}

#[test]
fn a_panicking_handler_becomes_a_500_problem_and_the_worker_lives() {
    // One worker: if the panic killed it, nothing would answer afterwards.
    let p = spawn_binary(&[("WEB_CONCURRENCY", "1")]);
    for _ in 0..3 {
        let res = request(
            p.addr(),
            "GET",
            "/__test/panic",
            &[("X-Request-ID", "panic-req-1")],
            b"",
        );
        let v = res.assert_problem(500);
        assert_eq!(v["request_id"], "panic-req-1");
        let text = res.text();
        assert!(
            !text.contains("panicked on purpose") && !text.contains(".rs"),
            "{text}"
        );
        assert_still_serving(&p);
    }
    let line = p.wait_for_log("request panic-req-1 failed: the handler panicked");
    assert!(line.contains("ERROR"), "{line}");
}

#[test]
fn application_logs_carry_the_request_id() {
    let p = spawn_binary(&[]);
    let res = request(
        p.addr(),
        "GET",
        "/__test/log",
        &[("X-Request-ID", "app-log-req-7")],
        b"",
    );
    assert_eq!(res.status, 204);
    let line = p.wait_for_log("test route writes an application log line");
    assert!(line.contains("request_id=app-log-req-7"), "{line}");
}

/// Reads until the server closes the connection or `within` passes; returns
/// what arrived and how long it took.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
    }
    (got, start.elapsed())
}

#[test]
fn a_head_sent_one_byte_at_a_time_is_cut_off() {
    let p = spawn_binary(&[]);
    let mut stream = TcpStream::connect(p.addr()).unwrap();
    let head = b"GET / HTTP/1.1\r\nHost: slowloris\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let start = Instant::now();
    // The attack: one byte every 250 ms (bounded: at most the whole head).
    for b in head {
        if stream.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        if start.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let (got, _) = read_until_closed(&mut stream, Duration::from_secs(10));
    let elapsed = start.elapsed();
    assert!(elapsed < Duration::from_secs(15), "held for {elapsed:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_still_serving(&p);
}

#[test]
fn a_head_that_stops_arriving_gets_a_whole_408_problem_document() {
    let p = spawn_binary(&[]);
    let mut stream = TcpStream::connect(p.addr()).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: stalled\r\n")
        .unwrap();
    // Nothing more is sent: actix's head timeout (5 s) answers, then closes.
    let (got, _) = read_until_closed(&mut stream, Duration::from_secs(15));
    let text = String::from_utf8_lossy(&got);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text:?}"));
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {head}"));
    assert_eq!(body.len(), length, "the whole body arrives: {body:?}");
    let doc: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(doc["status"], 408, "{doc}");
    assert_still_serving(&p);
}

/// Opens a request that promises a body and drips it, one byte a second.
fn drip_body(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(
        b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 1000\r\n\r\n{\"message\":\"",
    )
    .unwrap();
    s
}

#[test]
fn a_body_dripped_one_byte_a_second_gets_408() {
    let p = spawn_binary(&[("REQUEST_TIMEOUT", "2")]);
    let mut s = drip_body(p.addr());
    let start = Instant::now();
    let mut got = Vec::new();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    // Drip until the server answers (bounded: 10 s).
    while start.elapsed() < Duration::from_secs(10) {
        let _ = s.write_all(b"a");
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_secs(1) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
        if !got.is_empty() {
            break;
        }
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    p.wait_for_log("timed out after 2 s (REQUEST_TIMEOUT)");
    assert_still_serving(&p);
}

#[test]
fn request_timeout_bounds_requests_with_a_body_from_their_start() {
    let p = spawn_binary(&[("REQUEST_TIMEOUT", "1")]);
    // The whole body arrives with the head; the handler is what is slow.
    let start = Instant::now();
    let res = raw(
        p.addr(),
        b"GET /__test/slow?ms=20000 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 2\r\n\r\n{}",
    )
    .unwrap();
    let elapsed = start.elapsed();
    res.assert_problem(408);
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "answered after {elapsed:?}"
    );
    // Without a body a request is bounded by its handler alone.
    let start = Instant::now();
    let res = request(p.addr(), "GET", "/__test/slow?ms=1500", &[], b"");
    assert_eq!(res.status, 200, "{}", res.text());
    assert!(start.elapsed() >= Duration::from_millis(1500));
    assert_still_serving(&p);
}

#[test]
fn many_slow_clients_do_not_stop_normal_requests() {
    let p = spawn_binary(&[("WEB_CONCURRENCY", "1"), ("REQUEST_TIMEOUT", "30")]);
    let slow: Vec<TcpStream> = (0..100).map(|_| drip_body(p.addr())).collect();
    let mut heads: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(p.addr()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(p.addr(), "/").status, 200);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(slow);
    heads.clear();
}

#[test]
fn limits_answer_with_problems() {
    let p = spawn_binary(&[("MAX_BODY_BYTES", "1024")]);
    let addr = p.addr();
    // body over MAX_BODY_BYTES, with a length and chunked
    let big = format!(r#"{{"message":"{}"}}"#, "a".repeat(2000));
    common::post_json(addr, "/__test/echo", &big).assert_problem(413);
    let chunked = format!(
        "POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    raw(addr, chunked.as_bytes()).unwrap().assert_problem(413);
    // headers too large in all: a problem with the request id; too many for
    // actix's parser: a problem from actix-http, without one
    let huge = "a".repeat(40 * 1024);
    request(addr, "GET", "/", &[("X-Huge", &huge)], b"").assert_problem(431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let res = raw(addr, many.as_bytes()).unwrap();
    assert_eq!(res.status, 431);
    assert_eq!(res.json()["status"], 431, "{}", res.text());
    // malformed request line
    assert_eq!(raw(addr, b"GARBAGE\r\n\r\n").unwrap().status, 400);
    assert_eq!(raw(addr, b"GET / HTTP/9.9\r\n\r\n").unwrap().status, 400);
    // an unknown method: 501 (RFC 9110 §9.1); a known one the route does
    // not take: 405 with Allow
    let res = request(addr, "FROBNICATE", "/healthz", &[], b"");
    res.assert_problem(501);
    let res = request(addr, "PUT", "/healthz", &[], b"");
    res.assert_problem(405);
    assert_eq!(res.header("allow"), Some("GET, HEAD"));
    assert_still_serving(&p);
}

#[test]
fn responses_carry_the_security_headers() {
    let p = spawn_binary(&[]);
    for path in ["/", "/nope", "/docs/"] {
        let res = get(p.addr(), path);
        assert_eq!(
            res.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(res.header("referrer-policy"), Some("no-referrer"), "{path}");
        let csp = res.header("content-security-policy").unwrap();
        // the API gets the strictest policy; Swagger UI what it needs
        let expected = if path == "/docs/" {
            "default-src 'self'"
        } else {
            "default-src 'none'"
        };
        assert!(
            csp.contains(expected) && csp.contains("frame-ancestors 'none'"),
            "{path}: {csp}"
        );
        assert!(
            res.header("server").is_none(),
            "{path}: {:?}",
            res.header("server")
        );
    }
}

#[test]
fn docs_can_be_turned_off() {
    let p = spawn_binary(&[("DOCS_ENABLED", "false")]);
    for path in ["/docs", "/docs/", "/api-docs/openapi.json"] {
        get(p.addr(), path).assert_problem(404);
    }
    assert_eq!(get(p.addr(), "/api/v1/info").status, 200);
}

/// The bad-input corpus: (name, content type, body).
fn bad_bodies() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_obj = format!(
        r#"{{"message":{}"x"{}}}"#,
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    vec![
        (
            "invalid UTF-8",
            "application/json",
            b"{\"message\":\"\xff\xfe\"}".to_vec(),
        ),
        ("deeply nested array", "application/json", deep.into_bytes()),
        (
            "deeply nested object",
            "application/json",
            deep_obj.into_bytes(),
        ),
        (
            "huge number",
            "application/json",
            format!(r#"{{"message":{}}}"#, "9".repeat(5000)).into_bytes(),
        ),
        (
            "number for string",
            "application/json",
            br#"{"message":42}"#.to_vec(),
        ),
        (
            "array for object",
            "application/json",
            br#"["message"]"#.to_vec(),
        ),
        ("null", "application/json", b"null".to_vec()),
        (
            "null message",
            "application/json",
            br#"{"message":null}"#.to_vec(),
        ),
        (
            "duplicate keys",
            "application/json",
            br#"{"message":"a","message":"b"}"#.to_vec(),
        ),
        (
            "unknown key",
            "application/json",
            br#"{"message":"a","admin":true}"#.to_vec(),
        ),
        ("empty body", "application/json", Vec::new()),
        ("whitespace body", "application/json", b"   \n ".to_vec()),
        (
            "truncated",
            "application/json",
            br#"{"message":"ab"#.to_vec(),
        ),
        (
            "trailing garbage",
            "application/json",
            br#"{"message":"a"} x"#.to_vec(),
        ),
        (
            "null byte in string",
            "application/json",
            b"{\"message\":\"a\x00b\"}".to_vec(),
        ),
        (
            "escaped null",
            "application/json",
            br#"{"message":"a\u0000b"}"#.to_vec(),
        ),
        (
            "lone surrogate",
            "application/json",
            br#"{"message":"\ud800"}"#.to_vec(),
        ),
        (
            "empty message",
            "application/json",
            br#"{"message":""}"#.to_vec(),
        ),
        (
            "too long message",
            "application/json",
            format!(r#"{{"message":"{}"}}"#, "x".repeat(1001)).into_bytes(),
        ),
        (
            "wrong content type",
            "text/plain",
            br#"{"message":"a"}"#.to_vec(),
        ),
        (
            "form content type",
            "application/x-www-form-urlencoded",
            b"message=a".to_vec(),
        ),
        ("no content type", "", br#"{"message":"a"}"#.to_vec()),
    ]
}

fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> common::Response {
    let headers: Vec<(&str, &str)> = if content_type.is_empty() {
        vec![]
    } else {
        vec![("Content-Type", content_type)]
    };
    request(addr, "POST", path, &headers, body)
}

#[test]
fn every_bad_body_gets_a_4xx_problem() {
    let p = spawn_binary(&[]);
    let mut tried = 0;
    for (name, ct, body) in bad_bodies() {
        let res = post(p.addr(), "/api/v1/echo", ct, &body);
        assert!(
            (400..500).contains(&res.status),
            "{name}: {} {}",
            res.status,
            res.text()
        );
        res.assert_problem(res.status);
        tried += 1;
    }
    // lone surrogates and escaped nulls are valid JSON strings; what matters
    // is that none of this is a 5xx or a dropped connection.
    assert_eq!(tried, bad_bodies().len());
    assert_still_serving(&p);
}

#[test]
fn every_route_survives_the_corpus() {
    let p = spawn_binary(&[]);
    let routes: Vec<&str> = portbound::routes::builtin()
        .iter()
        .chain(portbound_service::app::routes().iter())
        .map(|r| r.path)
        .collect();
    let weird_paths = [
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/api/v1/..%2f..%2fsecret",
        "/a%00b",
        "/%ff%fe",
        "/api/v1/info%0d%0aSet-Cookie:x",
        "//double//slashes",
        "/api/v1/info?x=%00&y=%ff",
    ];
    let mut cases = 0;
    for route in routes.iter().copied().chain(weird_paths) {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            for (name, ct, body) in bad_bodies() {
                let headers: Vec<(&str, &str)> = if ct.is_empty() {
                    vec![]
                } else {
                    vec![("Content-Type", ct)]
                };
                let res = request(p.addr(), method, route, &headers, &body);
                cases += 1;
                assert!(
                    res.status < 500,
                    "{method} {route} {name}: {} {}",
                    res.status,
                    res.text()
                );
                if res.status >= 400 {
                    assert_eq!(
                        res.header("content-type"),
                        Some("application/problem+json"),
                        "{method} {route} {name}"
                    );
                }
            }
        }
    }
    println!("bad-input cases tried: {cases}");
    assert!(cases > 1000);
    assert_still_serving(&p);
}

#[test]
fn cors_is_off_by_default_and_exact_when_enabled() {
    let preflight = |addr: SocketAddr, origin: &str| {
        request(
            addr,
            "OPTIONS",
            "/__test/echo",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            b"",
        )
    };
    let off = spawn_binary(&[]);
    let res = preflight(off.addr(), "https://app.example");
    assert!(res.header("access-control-allow-origin").is_none());
    res.assert_problem(405);

    let on = spawn_binary(&[("CORS_ALLOWED_ORIGINS", "https://app.example")]);
    let res = preflight(on.addr(), "https://app.example");
    assert!(res.status < 300, "{}", res.status);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let res = request(
        on.addr(),
        "GET",
        "/api/v1/info",
        &[("Origin", "https://app.example")],
        b"",
    );
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        res.header("access-control-expose-headers")
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-request-id")
    );
    let res = preflight(on.addr(), "https://evil.example");
    assert!(res.header("access-control-allow-origin").is_none());
    assert!(res.status >= 400);
    assert_eq!(res.header("content-type"), Some("application/problem+json"));
}
