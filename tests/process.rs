//! The built binary as a real process: PORT, binding on every interface,
//! bad configuration, a taken port, the subcommands, `.env`.

mod common;

use std::net::{SocketAddr, TcpStream};

use common::{get, run_binary, scratch_dir, spawn_binary, spawn_binary_with};

#[test]
fn port_is_honoured() {
    let port = common::free_port();
    let p = spawn_binary(&[("PORT", &port.to_string())]);
    assert_eq!(p.port(), port);
    assert_eq!(
        get(SocketAddr::from(([127, 0, 0, 1], port)), "/").status,
        200
    );
}

#[test]
fn port_zero_logs_the_real_port() {
    let p = spawn_binary(&[]);
    let port = p.port();
    assert_ne!(port, 0);
    let info = get(p.addr(), "/api/v1/info").json();
    assert_eq!(info["ports"][0], port);
}

#[test]
fn the_default_host_listens_on_every_interface() {
    let p = spawn_binary(&[]);
    let port = p.port();
    // 127.0.0.2 answers only on an all-interfaces bind, [::1] only on IPv6.
    for ip in ["127.0.0.1", "127.0.0.2"] {
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        assert_eq!(get(addr, "/healthz").status, 200, "{addr}");
    }
    let v6: SocketAddr = format!("[::1]:{port}").parse().unwrap();
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 on this machine; [::1] not checked");
    } else {
        assert_eq!(get(v6, "/healthz").status, 200, "{v6}");
    }
}

#[test]
fn host_127_0_0_1_keeps_the_server_private() {
    let p = spawn_binary(&[("HOST", "127.0.0.1")]);
    let port = p.port();
    assert_eq!(get(p.addr(), "/healthz").status, 200);
    let other: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    assert!(
        TcpStream::connect(other).is_err(),
        "127.0.0.2 should be refused"
    );
}

#[test]
fn bad_variables_exit_78_naming_each_one() {
    let (code, out, err) = run_binary(
        &[],
        &[
            ("PORT", "abc"),
            ("WEB_CONCURRENCY", "0"),
            ("HOST", "nonsense"),
            ("SHUTDOWN_TIMEOUT", "soon"),
        ],
        &scratch_dir("badvars"),
    );
    assert_eq!(code, 78, "stdout:{out}\nstderr:{err}");
    for needle in [
        r#"PORT="abc": expected a whole number from 0 to 65535"#,
        r#"WEB_CONCURRENCY="0": expected a whole number of workers from 1 to 512"#,
        r#"HOST="nonsense": expected an IP address"#,
        r#"SHUTDOWN_TIMEOUT="soon": expected whole seconds"#,
        "4 problems",
    ] {
        assert!(err.contains(needle), "{needle:?} not in:\n{err}");
    }
    assert!(!out.contains("listening"), "it must not bind: {out}");
}

#[test]
fn out_of_range_port_exits_78() {
    let (code, _, err) = run_binary(&[], &[("PORT", "70000")], &scratch_dir("port70000"));
    assert_eq!(code, 78);
    assert!(err.contains(r#"PORT="70000""#), "{err}");
}

#[test]
fn a_taken_port_gives_a_clear_message() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let (code, _, err) = run_binary(
        &[],
        &[("HOST", "127.0.0.1"), ("PORT", &port)],
        &scratch_dir("taken"),
    );
    assert_ne!(code, 0);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("already in use"), "{err}");
    assert!(err.contains("set PORT to a free port"), "{err}");
    assert!(!err.contains("Os {"), "raw debug output: {err}");
}

#[test]
fn a_malformed_dotenv_exits_78_naming_the_line() {
    let dir = scratch_dir("baddotenv");
    std::fs::write(dir.join(".env"), "PORT=0\nnot a variable line\n").unwrap();
    let (code, _, err) = run_binary(&[], &[], &dir);
    assert_eq!(code, 78, "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn dotenv_sets_the_port_and_the_environment_wins() {
    let dir = scratch_dir("dotenv");
    let port = common::free_port();
    std::fs::write(
        dir.join(".env"),
        format!("PORT={port}\nWEB_CONCURRENCY=1\n"),
    )
    .unwrap();
    let p = spawn_binary_with(&[], &[("PORT", common::UNSET)], &dir);
    assert_eq!(p.port(), port, "PORT from .env");
    drop(p);
    let p = spawn_binary_with(&[], &[("PORT", "0")], &dir);
    assert_ne!(
        p.port(),
        port,
        "the environment's PORT=0 must win over .env"
    );
}

#[test]
fn healthcheck_subcommand_reports_the_instance_health() {
    let p = spawn_binary(&[]);
    let port = p.port().to_string();
    let dir = scratch_dir("hc");
    let (code, _, err) = run_binary(&["healthcheck"], &[("PORT", &port)], &dir);
    assert_eq!(code, 0, "{err}");
    drop(p);
    let (code, _, err) = run_binary(&["healthcheck"], &[("PORT", &port)], &dir);
    assert_eq!(code, 1);
    assert!(err.contains("unhealthy"), "{err}");
}

#[test]
fn openapi_subcommand_prints_the_spec() {
    let (code, out, _) = run_binary(&["openapi"], &[], &scratch_dir("openapi"));
    assert_eq!(code, 0);
    assert_eq!(out, portbound_service::app::service().openapi_json());
}

#[test]
fn help_and_version_work() {
    let (code, out, _) = run_binary(&["--version"], &[], &scratch_dir("version"));
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("portbound {}", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run_binary(&["--help"], &[], &scratch_dir("help"));
    assert_eq!(code, 0);
    for sub in ["serve", "healthcheck", "openapi"] {
        assert!(out.contains(sub), "{out}");
    }
}

#[test]
fn startup_line_names_addresses_workers_platform_and_version() {
    let p = spawn_binary(&[("WEB_CONCURRENCY", "3"), ("DYNO", "web.1")]);
    let line = p.wait_for_log(" listening on ");
    assert!(
        line.contains(&format!("portbound {}", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(line.contains("3 worker(s)"), "{line}");
    assert!(line.contains("platform heroku"), "{line}");
    let docs = p.wait_for_log("docs: http://localhost:");
    assert!(
        docs.contains("/docs/") && docs.contains("/healthz"),
        "{docs}"
    );
}

#[test]
fn logs_go_to_stdout() {
    let p = spawn_binary(&[]);
    p.port(); // read from stdout
    assert!(!p.stderr().contains("listening"), "{}", p.stderr());
}
