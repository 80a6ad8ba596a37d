//! `POST /api/v1/echo`, the JSON example: a valid body echoes with the
//! request's metadata, an invalid one is a 422 problem naming the field.
//! (A service that drops the example drops this file with it.)

use portbound::testing::{post_json, request, spawn_app};

use portbound_service::app::service;

#[test]
fn echo_returns_the_message_with_request_metadata() {
    let app = spawn_app(service);
    let res = request(
        app.addr,
        "POST",
        "/api/v1/echo",
        &[
            ("Content-Type", "application/json"),
            ("X-Request-ID", "test-request-0001"),
        ],
        br#"{"message":"h\u00e9llo"}"#,
    );
    assert_eq!(res.status, 200, "{}", res.text());
    let v = res.json();
    assert_eq!(v["message"], "héllo");
    assert_eq!(v["length"], 5);
    assert_eq!(v["request"]["method"], "POST");
    assert_eq!(v["request"]["path"], "/api/v1/echo");
    assert_eq!(v["request"]["request_id"], "test-request-0001");
    assert_eq!(res.header("x-request-id"), Some("test-request-0001"));
}

#[test]
fn echo_accepts_exactly_1_to_1000_characters() {
    let app = spawn_app(service);
    let ok = "é".repeat(1000);
    let res = post_json(
        app.addr,
        "/api/v1/echo",
        &format!(r#"{{"message":"{ok}"}}"#),
    );
    assert_eq!(res.status, 200);
    for bad in [String::new(), "x".repeat(1001)] {
        let res = post_json(
            app.addr,
            "/api/v1/echo",
            &format!(r#"{{"message":"{bad}"}}"#),
        );
        let v = res.assert_problem(422);
        assert_eq!(v["errors"][0]["pointer"], "/message");
    }
}
