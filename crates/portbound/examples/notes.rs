//! notes: a small service of its own on the portbound runtime, using every
//! extension point. Copy it to start a service.
//!
//! - **Routes and schemas**: `GET`/`POST /api/v1/notes`, `GET`/`DELETE
//!   /api/v1/notes/{id}`, each documented where it is written with
//!   `#[utoipa::path]`; the runtime merges them with its own paths.
//! - **Shared state**: the store, one `web::Data` every worker shares.
//! - **A readiness check**: `snapshot`, down while the snapshot's folder
//!   cannot be written (so `/readyz` answers 503 and the platform routes
//!   elsewhere).
//! - **A background task**: `snapshotter` writes the notes to the snapshot
//!   file every second, and stops when the drain begins.
//! - **A drain hook**: `final-snapshot` writes the notes one last time after
//!   the last request has finished.
//!
//! ```text
//! NOTES_SNAPSHOT=/tmp/notes.json PORT=8080 cargo run --example notes
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use portbound::error::{ApiError, FieldError, ProblemDetails};
use portbound::routes::Route;
use portbound::{BoxError, Service};
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// One note.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"id": 1, "title": "groceries", "body": "eggs, flour"}))]
struct Note {
    /// Given by the service.
    id: u64,
    /// 1 to 100 characters.
    title: String,
    /// Up to 10,000 characters.
    body: String,
}

/// A note to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "groceries", "body": "eggs, flour"}))]
struct NewNote {
    /// 1 to 100 characters.
    title: String,
    /// Up to 10,000 characters.
    #[serde(default)]
    body: String,
}

/// The notes, in memory, with a snapshot on disk.
struct Store {
    notes: Mutex<BTreeMap<u64, Note>>,
    next_id: AtomicU64,
    /// Set by every change, cleared by a snapshot.
    dirty: AtomicBool,
    snapshot: PathBuf,
}

impl Store {
    /// The store, with the notes of an earlier snapshot if there is one.
    fn open(snapshot: PathBuf) -> Result<Store, String> {
        let notes: Vec<Note> = match std::fs::read(&snapshot) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{} is not a notes snapshot: {e}", snapshot.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            // Anything else (permissions, I/O): starting empty would let the
            // next snapshot overwrite the notes.
            Err(e) => return Err(format!("{} cannot be read: {e}", snapshot.display())),
        };
        let next_id = notes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        Ok(Store {
            notes: Mutex::new(notes.into_iter().map(|n| (n.id, n)).collect()),
            next_id: AtomicU64::new(next_id),
            dirty: AtomicBool::new(false),
            snapshot,
        })
    }

    fn notes(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Note>> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the notes to the snapshot file (through a temporary file, so a
    /// crash never leaves half a snapshot) if they changed since the last.
    fn write_snapshot(&self) -> Result<(), BoxError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let notes: Vec<Note> = self.notes().values().cloned().collect();
        let written = serde_json::to_vec(&notes)
            .map_err(BoxError::from)
            .and_then(|bytes| {
                let tmp = self.snapshot.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &self.snapshot)?;
                Ok(())
            });
        if written.is_err() {
            // Try again next time.
            self.dirty.store(true, Ordering::Release);
        }
        written
    }

    /// Ready while the snapshot's folder takes a file.
    fn check_writable(&self) -> Result<(), BoxError> {
        let dir = match self.snapshot.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let probe = dir.join(".notes-ready");
        std::fs::write(&probe, b"")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|e| format!("cannot write to {}: {e}", dir.display()).into())
    }
}

/// Every note.
#[utoipa::path(
    get,
    path = "/api/v1/notes",
    tag = "notes",
    responses((status = 200, description = "Every note, oldest first", body = [Note]))
)]
async fn list(store: web::Data<Store>) -> HttpResponse {
    let notes: Vec<Note> = store.notes().values().cloned().collect();
    HttpResponse::Ok().json(notes)
}

/// Creates a note.
#[utoipa::path(
    post,
    path = "/api/v1/notes",
    tag = "notes",
    request_body(content = NewNote, content_type = "application/json"),
    responses(
        (status = 201, description = "The note, with its id", body = Note),
        (status = 400, description = "The body is not JSON", body = ProblemDetails,
            content_type = "application/problem+json"),
        (status = 422, description = "The note breaks a rule", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn create(
    store: web::Data<Store>,
    new: web::Json<NewNote>,
) -> Result<HttpResponse, ApiError> {
    let NewNote { title, body } = new.into_inner();
    let rule = |pointer, detail| {
        ApiError::unprocessable(
            format!("the note is not valid: {detail}"),
            vec![FieldError {
                pointer: std::borrow::Cow::Borrowed(pointer),
                detail: std::borrow::Cow::Borrowed(detail),
            }],
        )
    };
    if !(1..=100).contains(&title.chars().count()) {
        return Err(rule("/title", "title must be 1 to 100 characters long"));
    }
    if body.chars().count() > 10_000 {
        return Err(rule("/body", "body must be at most 10,000 characters long"));
    }
    let id = store.next_id.fetch_add(1, Ordering::Relaxed);
    let note = Note { id, title, body };
    store.notes().insert(id, note.clone());
    store.dirty.store(true, Ordering::Release);
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/notes/{id}")))
        .json(note))
}

/// One note.
#[utoipa::path(
    get,
    path = "/api/v1/notes/{id}",
    tag = "notes",
    params(("id" = u64, Path, description = "The note's id")),
    responses(
        (status = 200, description = "The note", body = Note),
        (status = 404, description = "No such note", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn get_one(store: web::Data<Store>, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    let note = store
        .notes()
        .get(&id)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok().json(note))
}

/// Deletes a note.
#[utoipa::path(
    delete,
    path = "/api/v1/notes/{id}",
    tag = "notes",
    params(("id" = u64, Path, description = "The note's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such note", body = ProblemDetails,
            content_type = "application/problem+json")
    )
)]
async fn delete(store: web::Data<Store>, id: web::Path<u64>) -> Result<HttpResponse, ApiError> {
    store.notes().remove(&id).ok_or_else(ApiError::not_found)?;
    store.dirty.store(true, Ordering::Release);
    Ok(HttpResponse::NoContent().finish())
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
        allow: "GET, HEAD, DELETE",
        mount: |r| r.get(get_one).head(get_one).delete(delete),
    },
];

/// The service's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "notes",
        description = "Notes, kept in memory and snapshotted to disk: an example service \
                       on the portbound runtime."
    ),
    paths(list, create, get_one, delete),
    tags((name = "notes", description = "The notes"))
)]
struct NotesDoc;

fn main() -> ExitCode {
    // The service's own setting; the runtime's are read by the runtime.
    let snapshot = std::env::var_os("NOTES_SNAPSHOT")
        .map_or_else(|| PathBuf::from("notes.json"), PathBuf::from);
    let store = match Store::open(snapshot) {
        Ok(store) => web::Data::new(store),
        Err(e) => {
            eprintln!("notes: NOTES_SNAPSHOT: {e}");
            return ExitCode::from(78);
        }
    };
    let check = store.clone();
    let snapshotter = store.clone();
    let last = store.clone();
    Service::new("notes", env!("CARGO_PKG_VERSION"))
        .openapi(NotesDoc::openapi())
        .app_data(store)
        .configure(|cfg| {
            for route in ROUTES {
                route.register(cfg);
            }
        })
        .readiness("snapshot", move || {
            let store = check.clone();
            async move { store.check_writable() }
        })
        .task("snapshotter", move |stop| async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.requested() => return Ok::<(), BoxError>(()),
                    _ = tick.tick() => {
                        if let Err(e) = snapshotter.write_snapshot() {
                            log::warn!("snapshot not written: {e}");
                        }
                    }
                }
            }
        })
        .on_drain(
            "final-snapshot",
            move || async move { last.write_snapshot() },
        )
        .run()
}
