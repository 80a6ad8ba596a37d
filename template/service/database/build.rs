//! Rebuilds the binary when a migration is added or changed:
//! `sqlx::migrate!()` embeds `migrations/` at build time, and Cargo does not
//! know the macro read it (sqlx's docs, "Triggering Recompilation on
//! Migration Changes":
//! <https://docs.rs/sqlx/latest/sqlx/macro.migrate.html#triggering-recompilation-on-migration-changes>).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
