//! notes: a small service of its own on the portbound runtime, keeping its
//! notes in a database, and using every extension point. Copy it to start a
//! service.
//!
//! - **Routes and schemas**: `GET`/`POST /api/v1/notes` (keyset paging),
//!   `GET`/`PUT`/`DELETE /api/v1/notes/{id}`, each documented where it is
//!   written with `#[utoipa::path]`; the runtime merges them with its own.
//! - **Where the notes live**: with the `postgres` feature and a
//!   PostgreSQL `DATABASE_URL`, in PostgreSQL, through the runtime's pool;
//!   its migrations (`examples/notes_migrations/postgres`) are embedded and
//!   applied by `notes migrate`, each platform's release step. With no
//!   `DATABASE_URL`, on a laptop, in an embedded SQLite file
//!   (`NOTES_SQLITE`, `notes.sqlite3` by default), migrated at start: one
//!   process, one file, no release phase. On a platform (Heroku, Fly, Cloud
//!   Run, Railway, Render, Kubernetes) without `DATABASE_URL` it refuses to
//!   start (exit 78): the instance's disk does not outlive it.
//! - **Lost updates**: every note has a `version`, sent as its `ETag`. `PUT`
//!   must carry `If-Match` (428 without it), and a stale one gets 412, so
//!   two writers never overwrite each other silently.
//! - **Who may write**: started with `AUTH_SERVICE_URL` (the `upstreams`
//!   feature), notes asks the `auth` example to verify the caller's bearer
//!   token before any write, through the runtime's upstream client (the
//!   request id and trace context go along; a down `auth` is a fast 503).
//!   Without the variable anyone may write, as before.
//! - **A readiness check**, **a background task** and **a drain hook** for
//!   the embedded file: `store` (the file is still there and answers),
//!   `checkpointer` (folds SQLite's write-ahead log into the file every
//!   `NOTES_CHECKPOINT_SECS`), `close-store` (a last checkpoint and the
//!   file closed after the last request). PostgreSQL needs none of them: the
//!   runtime probes and closes its pool.
//!
//! ```text
//! cargo run -p portbound --example notes                      # SQLite, notes.sqlite3
//! DATABASE_URL=postgres://... cargo run -p portbound --features postgres --example notes migrate
//! DATABASE_URL=postgres://... cargo run -p portbound --features postgres --example notes
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use portbound::config::Config;
use portbound::error::{ApiError, FieldError, ProblemDetails};
use portbound::platform::Platform;
use portbound::routes::Route;
use portbound::{BoxError, Service};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use utoipa::{IntoParams, OpenApi, ToSchema};

/// One note.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "title": "groceries", "body": "eggs, flour", "version": 1}))]
struct Note {
    /// Given by the service.
    id: i64,
    /// 1 to 100 characters, unique.
    title: String,
    /// Up to 10,000 characters.
    body: String,
    /// Raised by every change; the `ETag` is `"<version>"`.
    version: i64,
}

/// A note to create, or a note's new content.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "groceries", "body": "eggs, flour"}))]
struct NoteInput {
    /// 1 to 100 characters, unique.
    title: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    body: String,
}

impl NoteInput {
    /// The rules a note must keep, as 422 problem+json.
    fn validate(&self) -> Result<(), ApiError> {
        if !(1..=100).contains(&self.title.chars().count()) {
            return Err(rule("/title", "title must be 1 to 100 characters long"));
        }
        if self.body.chars().count() > 10_000 {
            return Err(rule("/body", "body must be at most 10,000 characters long"));
        }
        Ok(())
    }
}

fn rule(pointer: &'static str, detail: &'static str) -> ApiError {
    ApiError::unprocessable(
        format!("the note is not valid: {detail}"),
        vec![FieldError {
            pointer: std::borrow::Cow::Borrowed(pointer),
            detail: std::borrow::Cow::Borrowed(detail),
        }],
    )
}

/// One page of notes.
#[derive(Debug, Serialize, ToSchema)]
struct Page {
    /// Oldest first.
    items: Vec<Note>,
    /// The `after` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<i64>,
}

/// Which page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// Notes with an id above this one (the previous page's `next_after`).
    #[serde(default)]
    after: i64,
    /// 1 to 100; 20 by default.
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    20
}

// The statements, one text for both databases: `$n` placeholders are
// PostgreSQL's, and SQLite takes them too (numbered in order of appearance).
const INSERT: &str =
    "INSERT INTO notes (title, body) VALUES ($1, $2) RETURNING id, title, body, version";
const PAGE: &str = "SELECT id, title, body, version FROM notes WHERE id > $1 ORDER BY id LIMIT $2";
const ONE: &str = "SELECT id, title, body, version FROM notes WHERE id = $1";
const UPDATE: &str = "UPDATE notes SET title = $1, body = $2, version = version + 1 \
                      WHERE id = $3 AND version = $4 RETURNING id, title, body, version";
const DELETE: &str = "DELETE FROM notes WHERE id = $1";

/// Where this request's notes are: the extractor every handler takes.
enum Notes {
    /// The embedded SQLite file.
    Embedded(SqlitePool),
    /// PostgreSQL, through the runtime's pool.
    #[cfg(feature = "postgres")]
    Postgres(web::Data<portbound::database::Database>),
}

impl FromRequest for Notes {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Notes, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        #[cfg(feature = "postgres")]
        if let Some(db) = req.app_data::<web::Data<portbound::database::Database>>() {
            return std::future::ready(Ok(Notes::Postgres(db.clone())));
        }
        std::future::ready(
            req.app_data::<web::Data<SqlitePool>>()
                .map(|pool| Notes::Embedded(pool.get_ref().clone()))
                .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no store")),
        )
    }
}

/// Runs the same sqlx code on whichever database holds the notes: `$conn`
/// is a `&mut` connection of that database inside `$body`.
macro_rules! on_notes {
    ($notes:expr, |$conn:ident| $body:expr) => {
        match $notes {
            Notes::Embedded(pool) => async move {
                let mut $conn = pool.acquire().await?;
                $body.await
            }
            .await
            .map_err(embedded_error),
            #[cfg(feature = "postgres")]
            Notes::Postgres(db) => db
                .run(move |mut $conn| async move { $body.await })
                .await
                .map_err(postgres_error),
        }
    };
}

/// The errors a client can cause, from either database.
enum Failure {
    /// The title is taken (a unique violation).
    Duplicate,
    /// Anything else, already mapped.
    Other(ApiError),
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> ApiError {
        match f {
            Failure::Duplicate => rule("/title", "a note with this title exists"),
            Failure::Other(e) => e,
        }
    }
}

fn embedded_error(e: sqlx::Error) -> Failure {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => Failure::Duplicate,
        sqlx::Error::PoolTimedOut => Failure::Other(ApiError::unavailable(
            "the notes' file is busy; retry shortly",
            1,
        )),
        _ => {
            log::error!("notes: {e}");
            Failure::Other(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the note could not be stored",
            ))
        }
    }
}

#[cfg(feature = "postgres")]
fn postgres_error(e: portbound::database::DatabaseError) -> Failure {
    // 23505: unique_violation (PostgreSQL's SQLSTATE table).
    if e.code().as_deref() == Some("23505") {
        return Failure::Duplicate;
    }
    Failure::Other(ApiError::from(e))
}

/// The note as a response: its body, and its version as the `ETag`.
fn with_etag(mut builder: actix_web::HttpResponseBuilder, note: &Note) -> HttpResponse {
    builder
        .insert_header((header::ETAG, format!("\"{}\"", note.version)))
        .json(note)
}

/// The version an `If-Match` names: `None` when the header is absent;
/// `Some(None)` for `*` (any version).
fn if_match(req: &HttpRequest) -> Result<Option<Option<i64>>, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(Some(None));
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(|v| Some(Some(v)))
        .map_err(|_| ApiError::bad_request("If-Match must be a note's ETag (\"<version>\") or *"))
}

/// With an `auth` upstream: the caller's bearer token must be one `auth`
/// verifies. Without one: anyone may write.
#[cfg(feature = "upstreams")]
async fn authorize(req: &HttpRequest) -> Result<(), ApiError> {
    use portbound::upstream::Upstreams;
    let upstreams = Upstreams::for_request(req);
    if !upstreams.has("auth") {
        return Ok(());
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <token> to change notes",
            )
        })?;
    let reply = upstreams
        .get("auth")?
        .post("/api/v1/verify")
        .json(&serde_json::json!({ "token": token }))
        // Checking a token changes nothing: safe to ask twice.
        .safe_to_retry()
        .send()
        .await?;
    match reply.status.as_u16() {
        200 => Ok(()),
        401 | 403 => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token was refused",
        )),
        _ => Err(reply.problem()),
    }
}

#[cfg(not(feature = "upstreams"))]
async fn authorize(_: &HttpRequest) -> Result<(), ApiError> {
    Ok(())
}

/// A page of notes.
#[utoipa::path(
    get,
    path = "/api/v1/notes",
    tag = "notes",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of notes, oldest first", body = Page),
        (status = 400, description = "A bad query", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn list(notes: Notes, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let PageQuery { after, limit } = query.into_inner();
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 100"));
    }
    // One more than asked: whether there is a next page.
    let mut items: Vec<Note> = on_notes!(notes, |conn| sqlx::query_as(PAGE)
        .bind(after)
        .bind(limit + 1)
        .fetch_all(&mut *conn))?;
    let next_after = (items.len() as i64 > limit).then(|| {
        items.truncate(limit as usize);
        items.last().map_or(after, |n| n.id)
    });
    Ok(HttpResponse::Ok().json(Page { items, next_after }))
}

/// Creates a note.
#[utoipa::path(
    post,
    path = "/api/v1/notes",
    tag = "notes",
    request_body(content = NoteInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The note, with its id", body = Note),
        (status = 401, description = "With AUTH_SERVICE_URL: no bearer token, or one auth refused",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 400, description = "The body is not JSON", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 422, description = "The note breaks a rule, or its title is taken",
            body = ProblemDetails, content_type = "application/problem+json")
    )
)]
async fn create(
    req: HttpRequest,
    notes: Notes,
    input: web::Json<NoteInput>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req).await?;
    let input = input.into_inner();
    input.validate()?;
    let note: Note = on_notes!(notes, |conn| sqlx::query_as(INSERT)
        .bind(input.title)
        .bind(input.body)
        .fetch_one(&mut *conn))?;
    let mut created = HttpResponse::Created();
    created.insert_header((header::LOCATION, format!("/api/v1/notes/{}", note.id)));
    Ok(with_etag(created, &note))
}

/// One note.
#[utoipa::path(
    get,
    path = "/api/v1/notes/{id}",
    tag = "notes",
    params(("id" = i64, Path, description = "The note's id")),
    responses(
        (status = 200, description = "The note, with its version as the ETag", body = Note),
        (status = 404, description = "No such note", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn get_one(notes: Notes, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let note: Option<Note> = on_notes!(notes, |conn| sqlx::query_as(ONE)
        .bind(id)
        .fetch_optional(&mut *conn))?;
    let note = note.ok_or_else(ApiError::not_found)?;
    Ok(with_etag(HttpResponse::Ok(), &note))
}

/// Replaces a note's title and body, if it is still the version the
/// client read.
#[utoipa::path(
    put,
    path = "/api/v1/notes/{id}",
    tag = "notes",
    params(
        ("id" = i64, Path, description = "The note's id"),
        ("If-Match" = String, Header, description = "The ETag the client read, or `*`")
    ),
    request_body(content = NoteInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The note, its version raised", body = Note),
        (status = 401, description = "With AUTH_SERVICE_URL: no bearer token, or one auth refused",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such note", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 412, description = "The note changed since it was read", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 422, description = "The note breaks a rule", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 428, description = "No If-Match", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn update(
    req: HttpRequest,
    notes: Notes,
    id: web::Path<i64>,
    input: web::Json<NoteInput>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req).await?;
    let id = id.into_inner();
    let Some(wanted) = if_match(&req)? else {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match with the note's ETag, so a change made since you read it is not \
             overwritten",
        ));
    };
    let input = input.into_inner();
    input.validate()?;
    // `*`: whatever version is there now (read in the same statement).
    let (title, body) = (input.title, input.body);
    let updated: Option<Note> = on_notes!(notes, |conn| async move {
        let version = match wanted {
            Some(v) => Some(v),
            None => {
                sqlx::query_scalar("SELECT version FROM notes WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
            }
        };
        let Some(version) = version else {
            return Ok(None);
        };
        sqlx::query_as(UPDATE)
            .bind(title)
            .bind(body)
            .bind(id)
            .bind(version)
            .fetch_optional(&mut *conn)
            .await
    })?;
    match updated {
        Some(note) => Ok(with_etag(HttpResponse::Ok(), &note)),
        None => {
            let exists: Option<Note> = on_notes!(notes_again(&req)?, |conn| sqlx::query_as(ONE)
                .bind(id)
                .fetch_optional(&mut *conn))?;
            Err(match exists {
                None => ApiError::not_found(),
                Some(_) => ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "the note changed since you read it: GET it again, then retry with its ETag",
                ),
            })
        }
    }
}

/// The store again, for a second statement in one handler.
fn notes_again(req: &HttpRequest) -> Result<Notes, ApiError> {
    Notes::extract(req).into_inner()
}

/// Deletes a note (only the version `If-Match` names, when it is sent).
#[utoipa::path(
    delete,
    path = "/api/v1/notes/{id}",
    tag = "notes",
    params(("id" = i64, Path, description = "The note's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "With AUTH_SERVICE_URL: no bearer token, or one auth refused",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "No such note", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 412, description = "The note changed since it was read", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn delete(
    req: HttpRequest,
    notes: Notes,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req).await?;
    let id = id.into_inner();
    let wanted = if_match(&req)?.flatten();
    let deleted: Option<i64> = on_notes!(notes, |conn| async move {
        let version: Option<i64> = sqlx::query_scalar("SELECT version FROM notes WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        match (version, wanted) {
            (Some(v), Some(w)) if v != w => Ok(Some(v)),
            (Some(_), _) => sqlx::query(DELETE)
                .bind(id)
                .execute(&mut *conn)
                .await
                .map(|_| None),
            (None, _) => Ok(Some(-1)),
        }
    })?;
    match deleted {
        None => Ok(HttpResponse::NoContent().finish()),
        Some(-1) => Err(ApiError::not_found()),
        Some(_) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "the note changed since you read it",
        )),
    }
}

/// The service's routes: each answers other methods with a 405 and `Allow`.
const ROUTES: [Route; 2] = [
    Route {
        path: "/api/v1/notes",
        allow: "GET, HEAD, POST",
        mount: |r| r.get(list).head(list).post(create),
    },
    Route {
        path: "/api/v1/notes/{id}",
        allow: "GET, HEAD, PUT, DELETE",
        mount: |r| r.get(get_one).head(get_one).put(update).delete(delete),
    },
];

/// The service's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "notes",
        description = "Notes, kept in PostgreSQL (or an embedded SQLite file on a laptop): \
                       an example service on the portbound runtime."
    ),
    paths(list, create, get_one, update, delete),
    tags((name = "notes", description = "The notes"))
)]
struct NotesDoc;

/// The embedded store: the SQLite file, created and migrated if need be.
struct Embedded {
    pool: SqlitePool,
    path: PathBuf,
}

impl Embedded {
    /// Opens (creating) the file and applies the embedded migrations. One
    /// process owns the file, so there is no release phase to wait for.
    async fn open(path: PathBuf) -> Result<Embedded, String> {
        let options = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| e.to_string())?
            .filename(&path)
            .create_if_missing(true)
            // Readers never wait for the writer; the log is folded back by
            // the checkpointer.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(2));
        let pool = SqlitePoolOptions::new()
            // One writer at a time is SQLite's rule; a few connections
            // let readers run beside it.
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(2))
            // No background reaper: it would live on whichever runtime
            // opened the pool, which is this short-lived one.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| format!("{} cannot be opened: {e}", path.display()))?;
        sqlx::migrate!("examples/notes_migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Embedded { pool, path })
    }

    /// Ready while the file is still where it was opened and answers.
    async fn check(&self) -> Result<(), BoxError> {
        if !self.path.exists() {
            return Err(format!("{} is gone", self.path.display()).into());
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Folds the write-ahead log back into the file.
    async fn checkpoint(&self) -> Result<(), BoxError> {
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// The add-on that gives `DATABASE_URL` on each platform, for the message
/// that refuses to start without one.
fn attach_hint(platform: Platform) -> &'static str {
    match platform {
        Platform::Heroku => "heroku addons:create heroku-postgresql:essential-0",
        Platform::Fly => "fly mpg create, then fly mpg attach",
        Platform::CloudRun => "a Cloud SQL for PostgreSQL instance, its URL as a secret",
        Platform::Railway => "a Postgres service, and DATABASE_URL=${{Postgres.DATABASE_URL}}",
        Platform::Render => "a Render Postgres database, and fromDatabase in render.yaml",
        Platform::Kubernetes => "a PostgreSQL, its URL in the portbound-database Secret",
        Platform::Local => "a PostgreSQL database",
    }
}

fn main() -> ExitCode {
    let service = Service::new("notes", env!("CARGO_PKG_VERSION"))
        .openapi(NotesDoc::openapi())
        .configure(|cfg| {
            for route in ROUTES {
                route.register(cfg);
            }
        });
    // Ready only once the release step has made the table.
    #[cfg(feature = "postgres")]
    let service = service
        .migrations(sqlx::migrate!("examples/notes_migrations/postgres"))
        .readiness_query("SELECT 1 FROM notes LIMIT 1");

    // The runtime reads (and reports) the configuration again in `run`; here
    // it only decides where the notes live. A bad variable is left for
    // `run` to report, with its exit 78.
    let Ok(config) = Config::from_env() else {
        return service.run();
    };
    if !cfg!(feature = "upstreams") && config.services.iter().any(|s| s.name == "auth") {
        eprintln!(
            "notes: AUTH_SERVICE_URL is set, but this build cannot call it, so writes would \
             go unchecked: build with --features upstreams"
        );
        return ExitCode::from(78);
    }
    let command = std::env::args().nth(1);
    let serving = matches!(command.as_deref(), None | Some("serve"));
    let database_url = config.services.iter().any(|s| s.variable == "DATABASE_URL");
    if !serving || database_url {
        if database_url && config.database.is_none() {
            eprintln!(
                "notes: DATABASE_URL is set, but notes keeps its notes in PostgreSQL only \
                 (postgres:// or postgresql://)"
            );
            return ExitCode::from(78);
        }
        if database_url && !cfg!(feature = "postgres") {
            eprintln!(
                "notes: DATABASE_URL is set, but this build has no PostgreSQL driver: build \
                 with --features postgres"
            );
            return ExitCode::from(78);
        }
        return service.run();
    }
    if config.platform != Platform::Local {
        eprintln!(
            "notes: DATABASE_URL is not set. On {} the instance's disk does not outlive it \
             (a restart or a deploy starts from the image), so notes kept in a local file \
             would be lost. Attach a database: {}.",
            config.platform.contract().name,
            attach_hint(config.platform)
        );
        return ExitCode::from(78);
    }

    // A laptop: the embedded file.
    let path = std::env::var_os("NOTES_SQLITE")
        .map_or_else(|| PathBuf::from("notes.sqlite3"), PathBuf::from);
    let every = match std::env::var("NOTES_CHECKPOINT_SECS").as_deref() {
        Err(_) => Duration::from_secs(30),
        Ok(text) => match text.parse::<u64>() {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => {
                eprintln!(
                    "notes: NOTES_CHECKPOINT_SECS={text:?} is not valid: expected whole \
                     seconds above 0"
                );
                return ExitCode::from(78);
            }
        },
    };
    let opened = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(Embedded::open(path.clone())));
    let store = match opened {
        Ok(store) => web::Data::new(store),
        Err(e) => {
            eprintln!("notes: NOTES_SQLITE: {e}");
            return ExitCode::from(78);
        }
    };
    eprintln!(
        "notes: no DATABASE_URL; keeping the notes in the embedded SQLite file {} (for a \
         laptop: set DATABASE_URL to a PostgreSQL on a platform)",
        Path::new(&path).display()
    );
    let (check, task, last) = (store.clone(), store.clone(), store.clone());
    service
        .app_data(web::Data::new(store.pool.clone()))
        .readiness("store", move || {
            let store = check.clone();
            async move { store.check().await }
        })
        .task("checkpointer", move |stop| async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = stop.requested() => return Ok::<(), BoxError>(()),
                    _ = tick.tick() => {
                        if let Err(e) = task.checkpoint().await {
                            log::warn!("checkpoint not done: {e}");
                        }
                    }
                }
            }
        })
        .on_drain("close-store", move || async move {
            let checkpoint = last.checkpoint().await;
            last.pool.close().await;
            checkpoint
        })
        .run()
}
