//! `SERVICE migrate` (the `postgres` feature): applies the service's
//! migrations ([`crate::Service::migrations`], usually `sqlx::migrate!()`,
//! embedded in the binary) and exits: 0 when the schema is current, 1 with a
//! message that names the migration when one fails. It is the one-off
//! process each platform runs in its release phase, so a failure stops the
//! deploy instead of crash-looping every replica; the web process never
//! migrates by itself.
//!
//! - It connects to `DATABASE_DIRECT_URL` when set, else `DATABASE_URL`:
//!   sqlx's migrator takes a session-level advisory lock before it touches
//!   `_sqlx_migrations` (sqlx-core 0.9 `migrate/migrator.rs`, `run_direct`),
//!   so two `migrate` runs wait for each other instead of racing, and a
//!   transaction-mode pooler cannot hold that lock: the URL `fly mpg attach`
//!   hands the web process is PgBouncer in transaction mode, with a direct
//!   URL for migrations (superfly/docs `mpg/client-configuration.html.md`),
//!   and Render's `connectionPoolString` is one too (render-oss/skills
//!   `render-postgres`).
//! - Each migration runs in a transaction (unless it opts out), so a failed
//!   one leaves the schema as it was.
//! - A migration changed after it was applied is refused (its checksum).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::PgConnection;

use crate::config::Config;

/// How long `migrate` waits to connect: a release phase should fail, with a
/// message, rather than hang until the platform's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `migrator` against the configured database; prints what it did.
pub fn run(name: &str, config: &Config, migrator: Option<&Migrator>) -> ExitCode {
    let Some(migrator) = migrator.filter(|m| m.iter().next().is_some()) else {
        println!("{name} migrate: the service has no migrations; nothing to do");
        return ExitCode::SUCCESS;
    };
    let Some(settings) = &config.database else {
        eprintln!(
            "{name} migrate: DATABASE_URL is not set to a PostgreSQL URL \
             (postgres://user:password@host:5432/db); the migrations need a database"
        );
        return ExitCode::from(78);
    };
    let (url, variable) = match settings.direct_url() {
        Some(direct) => (direct, "DATABASE_DIRECT_URL"),
        None => (settings.url(), "DATABASE_URL"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{name} migrate: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(apply(migrator, url, config)) {
        Ok(report) => {
            println!("{name} migrate: {report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name} migrate ({variable}): {e}");
            ExitCode::FAILURE
        }
    }
}

/// Connects, applies what is pending, and says what it did.
async fn apply(migrator: &Migrator, url: &str, config: &Config) -> Result<String, String> {
    let options = crate::database::connect_options(url, config.platform)?;
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
        .await
        .map_err(|_| format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))?
        .map_err(|e| {
            format!(
                "cannot connect: {}",
                crate::backing::redact_credentials(&e.to_string())
            )
        })?;
    // The migrator's own lock, taken first so that what was applied before
    // is read under it: a run that waited for another finds its work done.
    // PostgreSQL's session advisory locks stack, so the migrator taking it
    // again inside is fine; closing the connection releases it either way.
    conn.lock().await.map_err(|e| explain(migrator, e))?;
    let before = applied(&mut conn).await;
    let started = Instant::now();
    let result = migrator.run(&mut conn).await;
    let after = applied(&mut conn).await;
    let _ = conn.unlock().await;
    let _ = conn.close().await;
    result.map_err(|e| explain(migrator, e))?;
    let new: Vec<String> = migrator
        .iter()
        .filter(|m| after.contains(&m.version) && !before.contains(&m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    let latest = after.iter().max().copied().unwrap_or_default();
    Ok(if new.is_empty() {
        format!("the schema is current, at version {latest}")
    } else {
        format!(
            "applied {} in {} ms: {}; the schema is at version {latest}",
            new.len(),
            started.elapsed().as_millis(),
            new.join(", ")
        )
    })
}

/// The versions `_sqlx_migrations` lists as applied (none before the first
/// run, when the table does not exist yet).
async fn applied(conn: &mut PgConnection) -> Vec<i64> {
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(conn)
        .await
        .unwrap_or_default()
}

/// What went wrong, naming the migration.
fn explain(migrator: &Migrator, e: MigrateError) -> String {
    let describe = |version: i64| {
        migrator.iter().find(|m| m.version == version).map_or_else(
            || version.to_string(),
            |m| format!("{version} ({})", m.description),
        )
    };
    match e {
        MigrateError::ExecuteMigration(cause, version) => format!(
            "migration {} failed: {}; it ran in a transaction, so the schema is as it was",
            describe(version),
            crate::backing::redact_credentials(&cause.to_string())
        ),
        MigrateError::VersionMismatch(version) => format!(
            "migration {} was changed after it was applied (its checksum differs): restore \
             it, and put the change in a new migration",
            describe(version)
        ),
        MigrateError::VersionMissing(version) => format!(
            "migration {version} was applied to this database but is not in this build: \
             deploy a build that has it"
        ),
        MigrateError::Dirty(version) => format!(
            "migration {} failed part-way earlier (it opted out of a transaction): repair \
             the schema by hand, then delete its row from _sqlx_migrations",
            describe(version)
        ),
        other => crate::backing::redact_credentials(&other.to_string()),
    }
}
