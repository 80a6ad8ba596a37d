//! The service as a whole: its spec snapshot is current, every route it
//! serves is documented (and every documented route served), and its binary
//! serves under its own name and drains on SIGTERM.

use std::path::Path;
use std::time::Duration;

use portbound::testing::{get, request, scratch_dir, spawn_app, spawn_program};

use portbound_service::app::{NAME, routes, service};

/// Every documented route: the runtime's and the service's.
fn documented_routes() -> Vec<portbound::routes::Route> {
    let mut all = portbound::routes::builtin().to_vec();
    all.extend(routes());
    all
}

#[test]
fn the_committed_openapi_json_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == service().openapi_json(),
        "openapi.json is out of date with the code; regenerate with:\n    \
         cargo run --quiet -- openapi > openapi.json"
    );
}

#[test]
fn every_route_the_app_serves_is_in_the_spec() {
    let spec = service().openapi_doc();
    let app = spawn_app(service);
    for route in documented_routes() {
        let item = spec
            .paths
            .paths
            .get(route.path)
            .unwrap_or_else(|| panic!("{} is served but not in the spec", route.path));
        for method in route.allow.split(", ").filter(|m| *m != "HEAD") {
            let documented = match method {
                "GET" => item.get.is_some(),
                "POST" => item.post.is_some(),
                "PUT" => item.put.is_some(),
                "DELETE" => item.delete.is_some(),
                other => panic!("add {other} to this test"),
            };
            assert!(documented, "{method} {} is not in the spec", route.path);
        }
        // and the route really is served (a 404 would mean the table lies)
        let res = request(
            app.addr,
            route.allow.split(", ").next().unwrap(),
            route.path,
            &[],
            b"",
        );
        assert_ne!(
            res.status, 404,
            "{} is in the table but not served",
            route.path
        );
    }
    // and nothing in the spec is missing from the table
    let served: Vec<&str> = documented_routes().iter().map(|r| r.path).collect();
    for path in spec.paths.paths.keys() {
        assert!(
            served.contains(&path.as_str()),
            "{path} is documented but not served"
        );
    }
}

#[test]
fn the_binary_serves_under_its_own_name_and_drains_on_sigterm() {
    let dir = scratch_dir("app");
    let mut p = spawn_program(Path::new(env!("CARGO_BIN_EXE_portbound")), &[], &[], &dir);
    let res = get(p.addr(), "/");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["service"], NAME);
    let info = get(p.addr(), "/api/v1/info").json();
    assert_eq!(info["runtime"], portbound::RUNTIME);
    p.signal("TERM");
    let (status, _) = p.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", p.stdout());
    assert!(p.stdout().contains("drain complete"), "{}", p.stdout());
}
