//! Property tests of everything that parses what a client sends: forwarded
//! headers, request ids, and JSON bodies. Generated inputs, fixed seeds per
//! run by proptest; any failure is saved under proptest-regressions/ and
//! replayed first from then on.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::test as actix_test;
use portbound::config::Config;
use portbound::telemetry::RequestId;
use portbound::telemetry::client_addr::resolve;
use portbound::telemetry::request_id::is_well_formed;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};

/// Bytes a client can put in a header value (visible ASCII, space, tab,
/// obs-text); what the HTTP parser lets through to us.
fn header_value() -> impl Strategy<Value = HeaderValue> {
    proptest::collection::vec(
        prop_oneof![Just(b'\t'), 0x20u8..=0x7e, 0x80u8..=0xff],
        0..300,
    )
    .prop_map(|b| HeaderValue::from_bytes(&b).expect("valid header bytes"))
}

/// Values shaped like real forwarding headers, mixed with garbage.
fn forwarded_like() -> impl Strategy<Value = String> {
    let node = prop_oneof![
        any::<[u8; 4]>().prop_map(|o| IpAddr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", IpAddr::from(s))),
        any::<([u8; 4], u16)>().prop_map(|(o, p)| format!("{}:{p}", IpAddr::from(o))),
        Just("unknown".to_owned()),
        "[ -~]{0,20}",
    ];
    proptest::collection::vec(node, 0..8).prop_map(|v| v.join(", "))
}

fn peer() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        any::<([u8; 4], u16)>().prop_map(|(o, p)| SocketAddr::from((o, p))),
        any::<([u16; 8], u16)>().prop_map(|(s, p)| SocketAddr::from((s, p))),
    ]
}

fn headers(pairs: Vec<(&'static str, HeaderValue)>) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(HeaderName::from_static(k), v);
    }
    h
}

proptest! {
    #![proptest_config(RunnerConfig::with_cases(512))]

    #[test]
    fn an_untrusted_peer_is_always_the_client(
        peer in peer(),
        xff in forwarded_like(),
        fwd in header_value(),
        real in header_value(),
    ) {
        let trusted = portbound::platform::parse_cidrs("127.0.0.0/8").unwrap();
        prop_assume!(!peer.ip().to_canonical().is_loopback());
        let h = headers(vec![
            ("x-forwarded-for", HeaderValue::from_str(&xff).unwrap()),
            ("forwarded", fwd),
            ("x-real-ip", real),
        ]);
        let c = resolve(Some(peer), &h, &trusted);
        prop_assert_eq!(c.ip, Some(peer.ip().to_canonical()));
        prop_assert_eq!(c.forwarded_scheme, None);
    }

    #[test]
    fn a_trusted_peer_yields_the_peer_or_an_address_from_the_headers(
        xff in forwarded_like(),
        fwd in header_value(),
        proto in header_value(),
    ) {
        let trusted = portbound::platform::parse_cidrs("127.0.0.0/8").unwrap();
        let h = headers(vec![
            ("x-forwarded-for", HeaderValue::from_str(&xff).unwrap()),
            ("forwarded", fwd.clone()),
            ("x-forwarded-proto", proto),
        ]);
        let c = resolve(Some("127.0.0.1:9".parse().unwrap()), &h, &trusted);
        let ip = c.ip.unwrap();
        let text = format!("{xff} {}", String::from_utf8_lossy(fwd.as_bytes()));
        let v4mapped = match ip { IpAddr::V4(v4) => v4.to_ipv6_mapped().to_string(), _ => String::new() };
        prop_assert!(
            ip.is_loopback() || text.contains(&ip.to_string()) || text.contains(&v4mapped)
                || text.to_ascii_lowercase().contains(&ip.to_string()),
            "{ip} came from nowhere: {text}"
        );
    }

    #[test]
    fn request_ids_are_always_safe_to_log(id in header_value(), railway in header_value()) {
        let h = headers(vec![("x-request-id", id), ("x-railway-request-id", railway)]);
        let got = RequestId::from_headers(&h);
        prop_assert!(is_well_formed(got.as_str().as_bytes()), "{got}");
    }
}

/// Arbitrary bytes and arbitrary JSON values as echo bodies: never a 5xx,
/// always problem+json when rejected. Runs the app in-process.
#[test]
fn echo_never_fails_on_any_body() {
    // The app's echo, unless a service generated from the template dropped
    // it (the template itself has it: its cargo-generate.toml is there).
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if !root.join("src/app/echo.rs").exists() && !root.join("cargo-generate.toml").exists() {
        return;
    }
    let rt = actix_rt::System::new();
    rt.block_on(async {
        let mut config = Config::for_tests();
        config.test_routes = false;
        let state = portbound::state::AppState::new(
            &config,
            vec![],
            vec![],
            portbound_service::app::service().parts(),
        );
        let app = actix_test::init_service(portbound::server::app(state)).await;

        let json = prop_oneof![
            any::<String>().prop_map(|s| serde_json::json!({ "message": s }).to_string()),
            any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[\\[\\]{}\":,0-9a-z ]{0,200}",
            any::<(String, i64, bool)>().prop_map(|(k, n, b)| {
                serde_json::json!({ "message": k.clone(), k: n, "flag": b }).to_string()
            }),
        ];
        let mut runner = TestRunner::new(RunnerConfig::default());
        for _ in 0..512 {
            let body = json.new_tree(&mut runner).unwrap().current();
            let req = actix_test::TestRequest::post()
                .uri("/api/v1/echo")
                .insert_header(("content-type", "application/json"))
                .set_payload(body.clone())
                .to_request();
            let res = actix_test::call_service(&app, req).await;
            let status = res.status().as_u16();
            assert!(status < 500, "{status} for {body:?}");
            if status >= 400 {
                let ct = res
                    .headers()
                    .get("content-type")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert_eq!(ct, "application/problem+json", "{body:?}");
            }
        }
    });
}
