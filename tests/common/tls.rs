//! A certificate authority of the test's own, made with the `openssl`
//! command: `ca.crt`, and `server.crt`/`server.key` it signs for
//! `localhost` and `127.0.0.1`, so that a client verifying the server
//! (PostgreSQL's `verify-full`, an `https://` upstream) has something to
//! verify against.

use std::path::Path;
use std::process::Command;

/// Writes `ca.crt`, `ca.key`, `server.crt` and `server.key` into `dir`.
pub fn test_ca(dir: &Path) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap_or_else(|e| panic!("openssl {}: {e}", args[0]));
        assert!(
            out.status.success(),
            "openssl {} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=portbound test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
    ]);
}
