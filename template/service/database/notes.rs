//! `/api/v1/notes`: a resource kept in PostgreSQL, to copy for your own.
//!
//! - The table is `migrations/`'s, embedded in the binary and applied by
//!   `SERVICE migrate`, which every platform file runs in its release phase
//!   (the web process never migrates: replicas would race, and a failure
//!   would crash-loop instead of stopping the deploy).
//! - Every query goes through the runtime's pool (`Database::run`): bounded
//!   waits, a 503 problem with `Retry-After` while the database is away, and
//!   a transaction that runs to its end even if the request is cut.
//! - Lost updates are refused: each note has a `version`, sent as its
//!   `ETag`; `PUT` must carry `If-Match` (428 without it, 412 when stale).
//! - Paging is by key (`?after=<id>&limit=<n>`), so a page costs the same
//!   wherever it starts.
//!
//! With no `DATABASE_URL` the service still starts, and these routes answer
//! 503 naming the variable; the runtime's `notes` example shows an embedded
//! SQLite fallback for a laptop.

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use portbound::database::{Database, DatabaseError};
use portbound::error::{ApiError, FieldError, ProblemDetails};
use portbound::routes::Route;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// One note.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "title": "groceries", "body": "eggs, flour", "version": 1}))]
pub struct Note {
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
pub struct NoteInput {
    /// 1 to 100 characters, unique.
    title: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    body: String,
}

impl NoteInput {
    /// The rules a note keeps (the table's `CHECK`s too), as 422 problems.
    fn validate(&self) -> Result<(), ApiError> {
        if !(1..=100).contains(&self.title.chars().count()) {
            return Err(rule("/title", "title must be 1 to 100 characters long"));
        }
        if self.body.chars().count() > 10_000 {
            return Err(rule("/body", "body must be at most 10,000 characters long"));
        }
        // PostgreSQL's text cannot hold NUL (SQLSTATE 22021): refused here,
        // as the client's mistake, not stored as the server's.
        if self.title.contains('\0') {
            return Err(rule("/title", "title must not contain NUL (U+0000)"));
        }
        if self.body.contains('\0') {
            return Err(rule("/body", "body must not contain NUL (U+0000)"));
        }
        Ok(())
    }
}

fn rule(pointer: &'static str, detail: &'static str) -> ApiError {
    ApiError::unprocessable(
        format!("the note is not valid: {detail}"),
        vec![FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        }],
    )
}

/// One page of notes.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    /// Oldest first.
    items: Vec<Note>,
    /// The `after` of the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<i64>,
}

/// Which page.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
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

// The statements: constant text, with every value bound (sqlx takes only
// `&'static str` or an audited string as SQL).
const PAGE: &str = "SELECT id, title, body, version FROM notes WHERE id > $1 ORDER BY id LIMIT $2";
const INSERT: &str =
    "INSERT INTO notes (title, body) VALUES ($1, $2) RETURNING id, title, body, version";
const SELECT_ONE: &str = "SELECT id, title, body, version FROM notes WHERE id = $1";
const DELETE: &str = "DELETE FROM notes WHERE id = $1";
const UPDATE: &str = "UPDATE notes SET title = $1, body = $2, version = version + 1 \
                      WHERE id = $3 RETURNING id, title, body, version";

/// The runtime's pool, or a 503 naming `DATABASE_URL` when it is not set.
pub struct Db(web::Data<Database>);

impl FromRequest for Db {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Db, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(
            req.app_data::<web::Data<Database>>()
                .map(|db| Db(db.clone()))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no database: set DATABASE_URL to a PostgreSQL URL",
                    )
                }),
        )
    }
}

/// A taken title is the client's to fix (422); the rest is the runtime's
/// mapping (503 with `Retry-After` while the database is away, 500 else,
/// never the SQL or the URL).
fn stored(e: DatabaseError) -> ApiError {
    // 23505: unique_violation (PostgreSQL's SQLSTATE table, Appendix A).
    if e.code().as_deref() == Some("23505") {
        return rule("/title", "a note with this title exists");
    }
    ApiError::from(e)
}

/// The note as a response: its body, and its version as the `ETag`.
fn with_etag(mut builder: actix_web::HttpResponseBuilder, note: &Note) -> HttpResponse {
    builder
        .insert_header((header::ETAG, format!("\"{}\"", note.version)))
        .json(note)
}

/// What an `If-Match` asks (RFC 9110 §13.1.1): nothing (absent), any
/// current note (`*`), or one of these versions. Entity tags are compared
/// strongly: a weak one (`W/"1"`) never matches.
enum Precondition {
    Absent,
    Any,
    Versions(Vec<i64>),
}

impl Precondition {
    /// Whether a note at `version` (or none) meets it.
    fn met_by(&self, version: Option<i64>) -> bool {
        match (self, version) {
            (Precondition::Absent, _) => true,
            (_, None) => false,
            (Precondition::Any, Some(_)) => true,
            (Precondition::Versions(v), Some(version)) => v.contains(&version),
        }
    }
}

fn if_match(req: &HttpRequest) -> Result<Precondition, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(Precondition::Absent);
    };
    let bad = || ApiError::bad_request("If-Match must be * or a list of ETags (\"<version>\")");
    let text = value.to_str().map_err(|_| bad())?.trim();
    if text == "*" {
        return Ok(Precondition::Any);
    }
    let mut versions = Vec::new();
    for tag in text.split(',').map(str::trim) {
        let weak = tag.starts_with("W/");
        let opaque = tag
            .trim_start_matches("W/")
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or_else(bad)?;
        // A weak tag, or one this service never sent, matches no note.
        if let (false, Ok(version)) = (weak, opaque.parse::<i64>()) {
            versions.push(version);
        }
    }
    Ok(Precondition::Versions(versions))
}

/// A page of notes.
#[utoipa::path(
    get,
    path = "/api/v1/notes",
    tag = "api",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of notes, oldest first", body = Page),
        (status = 400, description = "A bad query", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
pub async fn list(db: Db, query: web::Query<PageQuery>) -> Result<HttpResponse, ApiError> {
    let PageQuery { after, limit } = query.into_inner();
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("limit must be 1 to 100"));
    }
    // One more than asked: whether there is a next page.
    let mut items: Vec<Note> =
        db.0.run(move |mut conn| async move {
            sqlx::query_as(PAGE)
                .bind(after)
                .bind(limit + 1)
                .fetch_all(&mut *conn)
                .await
        })
        .await
        .map_err(stored)?;
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
    tag = "api",
    request_body(content = NoteInput, content_type = "application/json"),
    responses(
        (status = 201, description = "The note, with its id", body = Note),
        (status = 400, description = "The body is not JSON", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 422, description = "The note breaks a rule, or its title is taken",
            body = ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn create(db: Db, input: web::Json<NoteInput>) -> Result<HttpResponse, ApiError> {
    let input = input.into_inner();
    input.validate()?;
    let NoteInput { title, body } = input;
    let note: Note =
        db.0.run(move |mut conn| async move {
            sqlx::query_as(INSERT)
                .bind(title)
                .bind(body)
                .fetch_one(&mut *conn)
                .await
        })
        .await
        .map_err(stored)?;
    let mut created = HttpResponse::Created();
    created.insert_header((header::LOCATION, format!("/api/v1/notes/{}", note.id)));
    Ok(with_etag(created, &note))
}

/// One note.
#[utoipa::path(
    get,
    path = "/api/v1/notes/{id}",
    tag = "api",
    params(("id" = i64, Path, description = "The note's id")),
    responses(
        (status = 200, description = "The note, with its version as the ETag", body = Note),
        (status = 404, description = "No such note", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
pub async fn get_one(db: Db, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let note: Option<Note> =
        db.0.run(move |mut conn| async move {
            sqlx::query_as(SELECT_ONE)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await
        })
        .await
        .map_err(stored)?;
    let note = note.ok_or_else(ApiError::not_found)?;
    Ok(with_etag(HttpResponse::Ok(), &note))
}

/// What a guarded change found: done, no such note, or another version.
enum Outcome {
    Done(Option<Note>),
    Missing,
    Stale,
}

/// Replaces a note's title and body, if it is still the version the client
/// read.
#[utoipa::path(
    put,
    path = "/api/v1/notes/{id}",
    tag = "api",
    params(
        ("id" = i64, Path, description = "The note's id"),
        ("If-Match" = String, Header, description = "The ETag the client read, or `*`")
    ),
    request_body(content = NoteInput, content_type = "application/json"),
    responses(
        (status = 200, description = "The note, its version raised", body = Note),
        (status = 412, description = "The note changed or went since it was read",
            body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "The note breaks a rule", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 428, description = "No If-Match", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
pub async fn update(
    db: Db,
    req: HttpRequest,
    id: web::Path<i64>,
    input: web::Json<NoteInput>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let wanted = if_match(&req)?;
    if let Precondition::Absent = wanted {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_REQUIRED,
            "send If-Match with the note's ETag, so a change made since you read it is not \
             overwritten",
        ));
    }
    let input = input.into_inner();
    input.validate()?;
    let NoteInput { title, body } = input;
    // One transaction: the version read and the guarded write agree.
    let outcome =
        db.0.run(move |mut conn| async move {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let version = locked_version(&mut tx, id).await?;
            // If-Match on a note that is gone fails too (412), as RFC 9110
            // §13.1.1 says: it was deleted since the client read it.
            let outcome = if !wanted.met_by(version) {
                Outcome::Stale
            } else {
                Outcome::Done(Some(
                    sqlx::query_as(UPDATE)
                        .bind(title)
                        .bind(body)
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?,
                ))
            };
            tx.commit().await?;
            Ok(outcome)
        })
        .await
        .map_err(stored)?;
    finish(outcome)
}

/// Deletes a note (only a version `If-Match` names, when it is sent).
#[utoipa::path(
    delete,
    path = "/api/v1/notes/{id}",
    tag = "api",
    params(("id" = i64, Path, description = "The note's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such note (without If-Match)", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 412, description = "The note changed or went since it was read",
            body = ProblemDetails, content_type = "application/problem+json")
    )
)]
pub async fn delete(
    db: Db,
    req: HttpRequest,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let wanted = if_match(&req)?;
    let outcome =
        db.0.run(move |mut conn| async move {
            let mut tx = sqlx::Connection::begin(&mut *conn).await?;
            let version = locked_version(&mut tx, id).await?;
            let outcome = match (version, &wanted) {
                // No note and no precondition: nothing to delete.
                (None, Precondition::Absent) => Outcome::Missing,
                _ if !wanted.met_by(version) => Outcome::Stale,
                _ => {
                    sqlx::query(DELETE).bind(id).execute(&mut *tx).await?;
                    Outcome::Done(None)
                }
            };
            tx.commit().await?;
            Ok(outcome)
        })
        .await
        .map_err(stored)?;
    finish(outcome)
}

/// The note's version, its row locked until the transaction ends, so the
/// precondition checked and the write that follows agree.
async fn locked_version(
    conn: &mut sqlx::PgConnection,
    id: i64,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM notes WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
}

fn finish(outcome: Outcome) -> Result<HttpResponse, ApiError> {
    match outcome {
        Outcome::Done(Some(note)) => Ok(with_etag(HttpResponse::Ok(), &note)),
        Outcome::Done(None) => Ok(HttpResponse::NoContent().finish()),
        Outcome::Missing => Err(ApiError::not_found()),
        Outcome::Stale => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "the note changed since you read it: GET it again, then retry with its ETag",
        )),
    }
}

/// `/api/v1/notes`: each route answers other methods with a 405 and `Allow`.
pub const LIST: Route = Route {
    path: "/api/v1/notes",
    allow: "GET, HEAD, POST",
    mount: |r| r.get(list).head(list).post(create),
};

/// `/api/v1/notes/{id}`.
pub const ONE: Route = Route {
    path: "/api/v1/notes/{id}",
    allow: "GET, HEAD, PUT, DELETE",
    mount: |r| r.get(get_one).head(get_one).put(update).delete(delete),
};
