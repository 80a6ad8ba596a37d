//! HTTP/1.1 conformance over raw sockets, against the built binary: what a
//! client can make the service log, and how it answers requests RFC 9110 and
//! RFC 9112 say something about. Each case checks the status, the body's
//! type and whether the connection was closed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{
    DEADLINE, Process, Response, metrics_addr, read_response, sample, scrape, spawn_binary,
};

/// Sends raw bytes on a new connection and reads until the server closes
/// it or goes quiet for 2 s; returns everything it sent back.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let (text, _) = exchange_until_closed(addr, bytes);
    text
}

/// As `exchange`, and whether the server closed the connection (EOF) rather
/// than going quiet.
fn exchange_until_closed(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Lines at WARN or above in a text log, but for the test-routes notice the
/// test binary always prints.
fn loud_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .filter(|l| !l.contains("PORTBOUND_TEST_ROUTES"))
        .collect()
}

/// Malformed heads a scanner sends: a bad header byte, obs-fold, a bad
/// version, duplicate Content-Length, CL and TE together.
const MALFORMED: [&[u8]; 5] = [
    b"GET / HTTP/1.1\r\nHost: t\r\nBad\x01Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: t\r\n\r\n",
    b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

#[test]
fn a_flood_of_malformed_requests_writes_no_error_and_is_counted() {
    let p = spawn_binary(&[("METRICS_PORT", "0"), ("LOG_FORMAT", "text")]);
    let addr = p.addr();
    let metrics = metrics_addr(&p);
    let rounds = 40;
    for _ in 0..rounds {
        for bytes in MALFORMED {
            let reply = exchange(addr, bytes);
            assert!(reply.starts_with("HTTP/1.1 4"), "{reply}");
        }
    }
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    for _ in 0..3 {
        assert!(exchange(addr, many_headers.as_bytes()).starts_with("HTTP/1.1 431"));
    }
    let total = (rounds * MALFORMED.len()) as f64;
    let text = scrape(metrics);
    let parse = sample(&text, r#"http_protocol_errors_total{kind="parse"}"#);
    assert_eq!(parse, Some(total), "{text}");
    let large = sample(
        &text,
        r#"http_protocol_errors_total{kind="head_too_large"}"#,
    );
    assert_eq!(large, Some(3.0), "{text}");

    // The whole log, once the process has flushed it and exited: one info
    // line per kind for the whole flood, nothing louder.
    let log = drain_and_read_log(p);
    assert!(loud_lines(&log).is_empty(), "{:?}", loud_lines(&log));
    for kind in ["parse", "head_too_large"] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&format!("client protocol error ({kind})")))
            .collect();
        assert!((1..=2).contains(&lines.len()), "{kind}: {lines:?}");
        assert!(lines[0].contains(" INFO "), "{}", lines[0]);
    }
}

#[test]
fn with_rust_log_warn_a_malformed_request_writes_nothing() {
    let p = spawn_binary(&[
        ("RUST_LOG", "warn,portbound::server=info"),
        ("LOG_FORMAT", "text"),
    ]);
    let addr = p.addr();
    for bytes in MALFORMED {
        exchange(addr, bytes);
    }
    let log = drain_and_read_log(p);
    assert!(loud_lines(&log).is_empty(), "{log}");
    assert!(!log.contains("parse error"), "{log}");
}

fn drain_and_read_log(mut p: Process) -> String {
    p.signal("TERM");
    let (status, _) = p.wait_exit(DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", p.stdout());
    p.wait_for_log("drain complete");
    format!("{}\n{}", p.stdout(), p.stderr())
}

#[test]
fn a_graceful_stop_logs_no_error() {
    let p = spawn_binary(&[("LOG_FORMAT", "text"), ("RUST_LOG", "debug")]);
    assert_eq!(common::get(p.addr(), "/").status, 200);
    let log = drain_and_read_log(p);
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:?}");
}

// ---------------------------------------------------------------------------
// Answers the RFCs give
// ---------------------------------------------------------------------------

/// One request on a fresh connection: the response, and whether the server
/// closed the connection after it.
fn ask(addr: SocketAddr, request: &[u8]) -> (Response, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request).unwrap();
    let res = read_response(&mut stream).expect("a response");
    // Closed means EOF now; open means the read waits (keep-alive).
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let closed = matches!(stream.read(&mut byte), Ok(0));
    (res, closed)
}

fn get_with_host(host: &str) -> Vec<u8> {
    format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

#[test]
fn an_unknown_method_gets_501_and_a_known_one_a_route_does_not_take_gets_405() {
    let p = spawn_binary(&[]);
    let (res, closed) = ask(p.addr(), b"FROB /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    res.assert_problem(501);
    assert!(!closed, "a 501 need not close the connection");

    let (res, _) = ask(p.addr(), b"DELETE /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    res.assert_problem(405);
    let (res, _) = ask(p.addr(), b"QUERY /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    res.assert_problem(405);
    let allow = res.header("allow").expect("405 carries Allow");
    assert!(allow.contains("GET"), "{allow}");
}

#[test]
fn connect_gets_501_and_options_star_describes_the_server() {
    let p = spawn_binary(&[]);
    let (res, _) = ask(
        p.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    res.assert_problem(501);

    let (res, closed) = ask(p.addr(), b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.status, 200, "{}", res.text());
    let allow = res.header("allow").expect("Allow");
    for m in ["GET", "HEAD", "POST", "OPTIONS"] {
        assert!(allow.contains(m), "{allow}");
    }
    assert!(res.body.is_empty());
    assert!(res.header("x-request-id").is_some());
    assert!(!closed);
}

#[test]
fn an_invalid_host_gets_400_and_valid_ones_are_served() {
    let p = spawn_binary(&[]);
    for bad in [
        "a b/c",
        "a/b",
        "user@host",
        "host:port",
        "host:80:81",
        "[::1",
        "[zz]:80",
        "[::1]x",
        "a%zz",
        "a%2",
        "[fe80::1%25]",
        "[v.x]",
    ] {
        let (res, _) = ask(p.addr(), &get_with_host(bad));
        let problem = res.assert_problem(400);
        assert!(
            problem["detail"].as_str().unwrap().contains("Host"),
            "{bad}: {problem}"
        );
    }
    // RFC 9110 §7.2 has clients send an empty Host for a URI without an
    // authority, and RFC 3986 lets the port be empty or long.
    for good in [
        "example.com",
        "example.com:8080",
        "example.com:",
        "127.0.0.1:5000",
        "[::1]:80",
        "[::1]",
        "xn--bcher-kva.example",
        "a%2Db",
        "[fe80::1%25eth0]:80",
        "[v1.fe80::a+en1]",
        "",
        "h:123456",
    ] {
        let (res, _) = ask(p.addr(), &get_with_host(good));
        assert_eq!(res.status, 200, "{good}: {}", res.text());
    }
}

#[test]
fn an_over_long_target_gets_414_as_a_problem() {
    let p = spawn_binary(&[]);
    let long = format!("/{}", "a".repeat(9000));
    let (res, _) = ask(
        p.addr(),
        format!("GET {long} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    let problem = res.assert_problem(414);
    assert!(
        problem["detail"].as_str().unwrap().contains("8192"),
        "{problem}"
    );
    // Just under the limit, the request is routed (to a 404 here).
    let near = format!("/{}", "a".repeat(8000));
    let (res, _) = ask(
        p.addr(),
        format!("GET {near} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    res.assert_problem(404);
}

#[test]
fn api_probe_and_error_responses_are_not_stored_by_caches() {
    let p = spawn_binary(&[]);
    for path in [
        "/",
        "/healthz",
        "/readyz",
        "/api/v1/info",
        "/nowhere",
        "/api-docs/openapi.json",
    ] {
        let res = common::get(p.addr(), path);
        assert_eq!(
            res.header("cache-control"),
            Some("no-store"),
            "{path}: {}",
            res.status
        );
    }
    let (res, _) = ask(p.addr(), b"FROB / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(res.header("cache-control"), Some("no-store"));
}

// ---------------------------------------------------------------------------
// Connection semantics
// ---------------------------------------------------------------------------

/// Every response in `text`, as (status line, head).
fn responses(text: &str) -> Vec<(&str, String)> {
    text.split("HTTP/1.1 ")
        .skip(1)
        .map(|r| {
            let head = r.split("\r\n\r\n").next().unwrap_or("");
            (head.lines().next().unwrap_or(""), head.to_ascii_lowercase())
        })
        .collect()
}

#[test]
fn nothing_pipelined_after_connection_close_is_processed_and_the_connection_closes() {
    let p = spawn_binary(&[("LOG_FORMAT", "text")]);
    // Two requests in one write: the first asks to close.
    let (reply, closed) = exchange_until_closed(
        p.addr(),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n\
          POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
          Content-Length: 19\r\n\r\n{\"message\":\"again\"}",
    );
    assert!(closed, "the connection stayed open: {reply}");
    let all = responses(&reply);
    assert!(!all.is_empty(), "{reply}");
    assert!(all[0].0.starts_with("200"), "{reply}");
    assert!(all[0].1.contains("connection: close"), "{reply}");
    // The echo was not run: no 200 for it, and no access line.
    assert!(
        all[1..]
            .iter()
            .all(|(status, _)| !status.starts_with("200")),
        "{reply}"
    );
    assert!(!reply.contains("again"), "{reply}");
    let log = drain_and_read_log(p);
    assert!(
        !log.contains(r#""POST /__test/echo HTTP/1.1" 200"#),
        "{log}"
    );
}

#[test]
fn a_keep_alive_connection_still_serves_pipelined_requests() {
    let p = spawn_binary(&[]);
    let mut stream = TcpStream::connect(p.addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // Both answers arrive, and the connection stays open for more.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while responses(&String::from_utf8_lossy(&got)).len() < 2 {
        let n = stream
            .read(&mut buf)
            .expect("both responses before the deadline");
        assert!(n > 0, "closed after {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let all = responses(&text);
    assert!(all.iter().all(|(s, _)| s.starts_with("200")), "{text}");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 200);
}

// ---------------------------------------------------------------------------
// Smuggling shapes and actix's own parser
// ---------------------------------------------------------------------------

/// Heads actix-http's parser refuses before any of our code runs: each gets
/// a 400 (431 for too many header fields) problem document from the carried
/// actix-http patch, without a request id as no request was read, and the
/// connection is closed, so nothing after it can be read as a second
/// request.
const REFUSED_BY_THE_PARSER: [(&str, &[u8], u16); 16] = [
    ("CL+CL", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    ("CL+TE", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE xchunked", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("TE chunked, identity", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400),
    ("TE twice", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE with a space before the colon", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("Content-Length not a number", b"POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\r\n  folded\r\n\r\n", 400),
    ("bare CR", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\rb\r\n\r\n", 400),
    ("NUL", b"GET / HTTP/1.1\r\nHost: t\r\nX-A: a\x00b\r\n\r\n", 400),
    ("no Host in HTTP/1.1", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("unknown version", b"GET / HTTP/9.9\r\nHost: t\r\n\r\n", 400),
    ("a target over 65,534 bytes", b"", 400),
    ("more than 96 header fields", b"", 431),
    ("a head over 128 KiB", b"", 431),
];

#[test]
fn smuggling_shapes_get_a_problem_and_a_closed_connection() {
    let p = spawn_binary(&[]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(70_000));
    let many_headers = format!(
        "GET / HTTP/1.1\r\nHost: t\r\n{}\r\n",
        (0..100)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    let huge_head = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(130 * 1024)
    );
    for (name, bytes, status) in REFUSED_BY_THE_PARSER {
        let bytes = match name {
            "a target over 65,534 bytes" => long_target.as_bytes(),
            "more than 96 header fields" => many_headers.as_bytes(),
            "a head over 128 KiB" => huge_head.as_bytes(),
            _ => bytes,
        };
        // A second, well-formed request follows in the same write: it must
        // not be answered.
        let mut wire = bytes.to_vec();
        wire.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        let (reply, closed) = exchange_until_closed(p.addr(), &wire);
        assert!(closed, "{name}: the connection stayed open: {reply}");
        let all = responses(&reply);
        assert_eq!(all.len(), 1, "{name}: {reply}");
        assert!(all[0].0.starts_with(&status.to_string()), "{name}: {reply}");
        assert!(
            all[0].1.contains("content-type: application/problem+json"),
            "{name}: {reply}"
        );
        assert!(all[0].1.contains("cache-control: no-store"), "{name}");
        let body = reply.split("\r\n\r\n").nth(1).unwrap_or_default();
        let problem: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {reply}"));
        assert_eq!(problem["status"], status, "{name}");
        assert!(problem["detail"].is_string(), "{name}: {problem}");
    }
    assert_eq!(common::get(p.addr(), "/healthz").status, 200);
}

#[test]
fn refusals_are_counted_and_logged_like_any_request() {
    let p = spawn_binary(&[("METRICS_PORT", "0"), ("LOG_FORMAT", "text")]);
    let metrics = metrics_addr(&p);
    let (res, _) = ask(p.addr(), b"FROB /wp-login.php HTTP/1.1\r\nHost: t\r\n\r\n");
    res.assert_problem(501);
    assert_eq!(res.header("x-content-type-options"), Some("nosniff"));
    assert!(res.header("content-security-policy").is_some());
    let (res, _) = ask(p.addr(), b"GET /api/v1/info HTTP/1.1\r\nHost: a b\r\n\r\n");
    res.assert_problem(400);
    let text = scrape(metrics);
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("http_requests_total{")
                && (l.contains(r#"status="501""#) || l.contains(r#"status="400""#))
        })
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    let log = drain_and_read_log(p);
    assert!(
        log.contains(r#""FROB /wp-login.php HTTP/1.1" 501"#),
        "{log}"
    );
    assert!(
        log.contains(r#""GET /healthz HTTP/1.1" 400"#) || log.contains(" 400 "),
        "{log}"
    );
}

/// With `HTTP2=on`, the server's SETTINGS bound what one connection may hold
/// (RFC 9113 §5.1.2 recommends a stream limit of at least 100), and a client
/// that sends more requests than that at once still gets every answer.
#[test]
fn http2_advertises_a_stream_limit_and_serves_past_it_in_turn() {
    let p = spawn_binary(&[("HTTP2", "on")]);
    let addr = p.addr();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
        // Drive the connection until the first answer: the server's SETTINGS
        // arrive before it.
        let request = || {
            http::Request::get(format!("http://{addr}/"))
                .body(())
                .unwrap()
        };
        let (first, _) = client.clone().send_request(request(), true).unwrap();
        let first = tokio::select! {
            res = first => res.unwrap(),
            res = &mut connection => panic!("the connection ended first: {res:?}"),
        };
        assert_eq!(first.status(), 200);
        assert_eq!(connection.max_concurrent_send_streams(), 100);

        // 150 requests at once: the client holds back what the limit does
        // not admit, and every one is answered.
        let driver = tokio::spawn(connection);
        let mut answers = Vec::new();
        for _ in 0..150 {
            let mut client = client.clone().ready().await.unwrap();
            let (res, _) = client.send_request(request(), true).unwrap();
            answers.push(tokio::spawn(res));
        }
        for answer in answers {
            assert_eq!(answer.await.unwrap().unwrap().status(), 200);
        }
        drop(client);
        driver.abort();
    });
}

/// `Expect: 100-continue` with a request the service refuses before reading
/// its body: the final status comes instead of `100 Continue`, so the client
/// never uploads a body that would be thrown away (RFC 9110 §10.1.1).
#[test]
fn expect_100_continue_gets_the_final_status_when_the_request_is_refused() {
    let p = spawn_binary(&[("MAX_BODY_BYTES", "1024")]);
    let head = |path: &str, content_type: &str, length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n\
             Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        )
    };
    for (request, status) in [
        (head("/__test/echo", "text/plain", 10), 415),
        (head("/__test/echo", "application/json", 4096), 413),
        (head("/healthz", "application/json", 10), 405),
        (head("/nowhere", "application/json", 10), 404),
    ] {
        // Only the head is sent: a server that says 100 waits for the body.
        let (res, closed) = ask(p.addr(), request.as_bytes());
        assert_eq!(res.status, status, "{request}");
        res.assert_problem(status);
        // The unread body would otherwise be read as the next request.
        assert!(closed, "{request}: the connection stays open");
    }
}

/// And with a request the service takes, `100 Continue` comes first, then
/// the answer to the body sent after it.
#[test]
fn expect_100_continue_is_answered_when_the_service_reads_the_body() {
    let p = spawn_binary(&[]);
    let mut stream = TcpStream::connect(p.addr()).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let body = br#"{"message":"hello"}"#;
    write!(
        stream,
        "POST /__test/echo HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    )
    .unwrap();
    // An interim response is a head alone.
    let mut interim = Vec::new();
    let mut byte = [0u8; 1];
    while !interim.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("an interim response");
        interim.push(byte[0]);
    }
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body).unwrap();
    let res = read_response(&mut stream).expect("the final response");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["body"]["message"], "hello");
}

/// What `curl --http2` sends to an `http://` URL. The server does not switch
/// (RFC 9110 §7.8 lets it ignore `Upgrade`), with `HTTP2` off or on (on, it
/// takes HTTP/2 with prior knowledge only), so it answers as if the header
/// were absent: no `upgrade` connection option, and the connection kept.
#[test]
fn an_h2c_upgrade_is_ignored_and_the_connection_kept() {
    for http2 in ["off", "on"] {
        let p = spawn_binary(&[("HTTP2", http2)]);
        let mut stream = TcpStream::connect(p.addr()).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream
            .write_all(
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                  Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            )
            .unwrap();
        let first = read_response(&mut stream).unwrap();
        assert_eq!(first.status, 200, "HTTP2={http2}: {}", first.text());
        assert!(
            !first
                .header("connection")
                .unwrap_or_default()
                .to_ascii_lowercase()
                .contains("upgrade"),
            "HTTP2={http2}: connection: {:?}",
            first.header("connection")
        );
        // The same connection serves the next request.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(&mut stream).unwrap().status,
            200,
            "HTTP2={http2}"
        );
    }
    // With keep-alive off, the ignored upgrade does not keep the connection
    // either: answered, then closed.
    let p = spawn_binary(&[("KEEP_ALIVE", "0")]);
    let (reply, closed) = exchange_until_closed(
        p.addr(),
        b"GET / HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    let all = responses(&reply);
    assert!(all[0].0.starts_with("200"), "{reply}");
    assert!(!all[0].1.contains("upgrade"), "{reply}");
    assert!(closed, "KEEP_ALIVE=0 left the connection open: {reply}");
}
