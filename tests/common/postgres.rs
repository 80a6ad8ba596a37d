//! A throwaway PostgreSQL cluster for one test: `initdb` into a scratch
//! directory, `pg_ctl start` on a loopback port of the OS's choosing and a
//! unix socket in that directory, with a password for TCP connections and,
//! when asked, TLS with a self-signed certificate. Stopped and removed when
//! dropped.
//!
//! PostgreSQL refuses to run as root, so as root (CI) every server command
//! runs as the `postgres` user through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{ScratchDir, free_port, scratch_dir};

/// The password of the cluster's `app` role: distinctive, so a test can
/// prove it never leaves the service.
pub const PASSWORD: &str = "s3cret-Pw-7f3a9c";

/// A running cluster.
pub struct Cluster {
    dir: ScratchDir,
    bin: PathBuf,
    /// The loopback port it listens on.
    pub port: u16,
}

/// The newest PostgreSQL's programs (`/usr/lib/postgresql/N/bin`, Debian's
/// layout).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb under /usr/lib/postgresql")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `program args`, as `postgres` when we are root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program).args(args);
        cmd
    } else {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cmd
    }
}

fn check(what: &str, out: std::io::Result<Output>) -> String {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

impl Cluster {
    /// A new cluster; with `tls`, `ssl = on` with a self-signed certificate.
    pub fn start(tls: bool) -> Cluster {
        let dir = scratch_dir("postgres");
        let bin = bin_dir();
        std::fs::write(dir.join("pw"), PASSWORD).unwrap();
        if tls {
            super::tls::test_ca(&dir);
        }
        if is_root() {
            check(
                "chown",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .output(),
            );
        }
        check(
            "chmod",
            Command::new("chmod").arg("0700").arg(dir.path()).output(),
        );
        if tls {
            check(
                "chmod key",
                Command::new("chmod")
                    .arg("0600")
                    .arg(dir.join("server.key"))
                    .output(),
            );
        }
        let data = dir.join("data");
        let pwfile = format!("--pwfile={}", dir.join("pw").display());
        check(
            "initdb",
            command(
                &bin.join("initdb"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "app",
                    &pwfile,
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            )
            .output(),
        );
        let cluster = Cluster {
            dir,
            bin,
            port: free_port(),
        };
        let mut options = format!(
            "-c port={} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            cluster.port,
            cluster.dir.display()
        );
        if tls {
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                cluster.dir.display()
            ));
        }
        std::fs::write(cluster.dir.join("options"), options).unwrap();
        cluster.resume();
        cluster
    }

    /// `postgres://app:PASSWORD@127.0.0.1:PORT/postgres?QUERY`.
    pub fn url(&self, query: &str) -> String {
        let mut url = format!("postgres://app:{PASSWORD}@127.0.0.1:{}/postgres", self.port);
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url
    }

    /// The directory of its unix socket (`.s.PGSQL.PORT`), where local
    /// connections need no password.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the server's certificate (a TLS cluster's).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Stops the server (fast: open connections are cut), keeping its data.
    pub fn pause(&self) {
        let data = self.dir.join("data");
        check(
            "pg_ctl stop",
            command(
                &self.bin.join("pg_ctl"),
                &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
            )
            .output(),
        );
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let data = self.dir.join("data");
        let log = self.dir.join("log");
        let options = std::fs::read_to_string(self.dir.join("options")).unwrap();
        check(
            "pg_ctl start",
            command(
                &self.bin.join("pg_ctl"),
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-l",
                    log.to_str().unwrap(),
                    "-o",
                    &options,
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            )
            .output(),
        );
    }

    /// Runs SQL over the unix socket with psql; returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let port = self.port.to_string();
        let out = check(
            "psql",
            command(
                &self.bin.join("psql"),
                &[
                    "-h",
                    self.dir.to_str().unwrap(),
                    "-p",
                    &port,
                    "-U",
                    "app",
                    "-d",
                    "postgres",
                    "-X",
                    "-A",
                    "-t",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    sql,
                ],
            )
            .output(),
        );
        out.trim().to_owned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = command(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
        .output();
    }
}
