//! Turns a copy of the portbound repository into a service of its own: run by
//! `cargo generate`'s hook (`template/generate.rhai`), compiled with plain
//! `rustc` (the standard library only), in the new project's folder.
//!
//! ```text
//! generate NAME REPOSITORY_URL RUNTIME [--drop PATH]... [--no-websocket] [--no-echo] [--database]
//! ```
//!
//! The new service keeps only what is its own: `src/main.rs`, `src/app/`,
//! its tests (`tests/app*.rs`), the manifests, `.env.example` and
//! `openapi.json`. It gets a `Cargo.toml`, a README and a `.ci/run` from
//! `template/service/`, with the runtime as a dependency: by git tag
//! (`RUNTIME` is `-`) or by the path of a portbound checkout (`RUNTIME` is
//! that path, as `template/check` uses it). The runtime's source and tests,
//! the carried actix-http, the benchmark and the template are left out.
//!
//! What named the reference service is renamed: `portbound` becomes NAME in
//! the form each place needs (`acme-api` in a manifest, `ACME_API_SERVICE_URL`
//! for a variable, `acme_api` for the library), while what names the runtime
//! (`portbound::Service`, `PORTBOUND_TEST_ROUTES`, `portbound 0.2.0`) stays.
//! `--drop` removes a path, and `--no-websocket` and `--no-echo` remove the
//! app's examples (the echo from the spec snapshot too). `--database` turns
//! the runtime's `postgres` feature on and adds a resource kept in
//! PostgreSQL (`template/service/database/`): `src/app/notes.rs`, its
//! `migrations/`, its test against a real PostgreSQL and the `.ci/run` step
//! that starts one, its paths in the spec snapshot, and a README section.
//!
//! (cargo-generate runs a hook's command through `sh -c` with its arguments
//! joined by spaces, so no argument may hold a space or a shell character.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The reference service's binary name, its package and library names, and
/// the repository's address.
const OLD: &str = "portbound";
const OLD_PACKAGE: &str = "portbound-service";
const OLD_LIB: &str = "portbound_service";
const URL: &str = "https://github.com/portbound/portbound";

/// What a new service does not carry: the runtime (a dependency now), its
/// carried actix-http, the benchmark, the reference docs, the repository's
/// own lint configuration, and its files that `template/service/` replaces.
const NOT_CARRIED: [&str; 9] = [
    "crates",
    "vendor",
    "bench",
    "docs",
    "deny.toml",
    "redocly.yaml",
    ".spectral.yaml",
    "README.md",
    ".ci/run",
];
/// The service's own tests, in `tests/`; the rest there are the runtime's.
const OWN_TESTS: [&str; 3] = ["app.rs", "app_echo.rs", "app_ws.rs"];

/// Names of the runtime's that contain `portbound` and must stay as they
/// are: the prefixes of the variables it reads for tests and benchmarks
/// (`PORTBOUND_TEST_ROUTES`, `PORTBOUND_TEST_MIGRATIONS`,
/// `PORTBOUND_BENCH_OFF`), its version string, and its log targets.
/// `portbound=` is a log filter's directive for the runtime's log targets.
const RUNTIME_NAMES: [&str; 4] = [
    "PORTBOUND_TEST_",
    "PORTBOUND_BENCH_",
    "`portbound VERSION`",
    "portbound=",
];

/// The WebSocket example's own files, and the starts of the lines that name
/// it in the app module and in the new Cargo.toml.
const WEBSOCKET_FILES: [&str; 2] = ["src/app/ws.rs", "tests/app_ws.rs"];
const APP: &str = "src/app/mod.rs";
const WEBSOCKET_LINES: [(&str, &str); 6] = [
    (APP, "pub mod ws;"),
    (APP, "ws::configure("),
    (APP, "//! - `GET /ws/echo`"),
    ("Cargo.toml", "# The WebSocket example's"),
    ("Cargo.toml", "actix-ws ="),
    ("Cargo.toml", "tungstenite ="),
];

/// The echo example's files, and the starts of the app module's lines that
/// name it.
const ECHO_FILES: [&str; 2] = ["src/app/echo.rs", "tests/app_echo.rs"];
const ECHO_LINES: [(&str, &str); 4] = [
    (APP, "pub mod echo;"),
    (APP, "echo::echo,"),
    (APP, "echo::ROUTE,"),
    (APP, "//! - `POST /api/v1/echo`"),
];
/// `--database`: what it adds (from `template/service/database/`, to the
/// service), and the lines of the app module it adds after the line that
/// starts with the first text (or, for the last, the text it replaces).
const DATABASE: &str = "template/service/database";
const DATABASE_FILES: [(&str, &str); 4] = [
    ("build.rs", "build.rs"),
    ("notes.rs", "src/app/notes.rs"),
    ("app_notes.rs", "tests/app_notes.rs"),
    (
        "migrations/20261205000000_create_notes.sql",
        "migrations/20261205000000_create_notes.sql",
    ),
];
const DATABASE_LINES: [(&str, &str); 4] = [
    ("//! The reference service's own routes:", "//! - `/api/v1/notes`, notes kept in PostgreSQL;"),
    ("pub mod echo;", "pub mod notes;"),
    ("    paths(", "        notes::list, notes::create, notes::get_one, notes::update, notes::delete,"),
    ("        // One line a route", "        notes::LIST,\n        notes::ONE,"),
];
const DATABASE_SERVICE: (&str, &str) = (
    "        .configure(configure)\n}",
    "        .configure(configure)\n        \
     // The notes' table: applied by `migrate` in each platform's release phase;\n        \
     // an instance is ready once it is there.\n        \
     .migrations(sqlx::migrate!())\n        \
     .readiness_query(\"SELECT 1 FROM notes LIMIT 1\")\n}",
);
/// The notes' members of the spec snapshot (`openapi.json`), each inserted
/// before the member it precedes in the order the runtime writes them.
const DATABASE_SPEC: &str = "template/service/database/openapi-members.txt";

/// The committed spec, and what of it is the echo's: its path (a member of
/// `paths`, 4 spaces in) and its schemas (members of `components.schemas`,
/// 6 spaces in), as serde_json's pretty printer writes them.
const SPEC: &str = "openapi.json";
const ECHO_SPEC: [(usize, &str); 4] = [
    (4, "/api/v1/echo"),
    (6, "EchoRequest"),
    (6, "EchoResponse"),
    (6, "RequestMeta"),
];

/// The Dockerfile's lines that copy the carried actix-http into the build (a
/// service takes it from the runtime's repository instead): from the first
/// line that starts with the first text to the line that is the second.
const DOCKERFILE_VENDOR: (&str, &str) = ("# The patched actix-http (vendor", "COPY vendor vendor");

/// docker-compose.yml's services that call each other: its api is the
/// runtime's notes example calling its auth example, traced to Jaeger. A
/// service's own stack is the service, its release step, PostgreSQL and
/// nginx: these keys go, each with its nested lines and the comment above
/// it, by indentation and name (the first of each).
const COMPOSE: &str = "docker-compose.yml";
const COMPOSE_PAIR_KEYS: [(usize, &str); 8] = [
    // The services.
    (2, "auth"),
    (2, "jaeger"),
    // api's build of the example, its variables naming the others, and its
    // waits for them.
    (6, "args"),
    (6, "AUTH_SERVICE_URL"),
    (6, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    (6, "OTEL_SERVICE_NAME"),
    (6, "auth"),
    (6, "jaeger"),
];
/// ... the header's paragraph about them, and the name of api's image.
const COMPOSE_PAIR_HEADER: (&str, &str) = (
    "# The services that call each other:",
    "#   open http://localhost:16686/      # Jaeger: the trace from api to auth",
);
const COMPOSE_PAIR_IMAGE: (&str, &str) = ("portbound-notes:local", "portbound:local");
/// ... and deploy/README.md's row for Compose.
const COMPOSE_PAIR_ROW: (&str, &str, &str) = (
    "deploy/README.md",
    "`Dockerfile` (`PORTBOUND_EXAMPLE`: notes for api, auth for auth) | api 5000, auth 5001, \
     nginx 80, Jaeger 16686 |",
    "`Dockerfile` | api 5000, nginx 80 |",
);

/// Folders that are not the project's text.
const SKIP: [&str; 3] = ["target", ".git", "node_modules"];

fn main() -> ExitCode {
    match run() {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("generate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name, url, runtime, ..] = args.as_slice() else {
        return Err("usage: generate NAME REPOSITORY_URL RUNTIME [--drop PATH]... \
                    [--no-websocket] [--no-echo]"
            .into());
    };
    if !is_valid_name(name) {
        return Err(format!(
            "NAME={name:?}: expected lowercase letters, digits and single dashes, starting \
             with a letter (a Cargo package, a DNS label and a metric prefix at once), and \
             not containing \"{OLD}\", the runtime's name"
        ));
    }
    let root = Path::new(".");
    let version = manifest_value(&read(root.join("crates/portbound/Cargo.toml"))?, "version")?;
    let rust_version = manifest_value(&read(root.join("Cargo.toml"))?, "rust-version")?;

    let (dep, patch) = if runtime == "-" {
        let tag = format!("tag = \"v{version}\"");
        (format!("git = \"{URL}\", {tag}"), format!("{{ git = \"{URL}\", {tag} }}"))
    } else {
        let checkout = Path::new(runtime);
        if !checkout.join("crates/portbound/Cargo.toml").is_file() {
            return Err(format!("RUNTIME={runtime:?}: not a portbound checkout"));
        }
        (
            format!("path = \"{runtime}/crates/portbound\""),
            format!("{{ path = \"{runtime}/vendor/actix-http\" }}"),
        )
    };
    let database = args.iter().any(|a| a == "--database");
    // The database's additions to the service's Cargo.toml, .ci/run and
    // README, each a whole-line placeholder there.
    let (features, deps, step, section) = if database {
        let dir = root.join(DATABASE);
        (
            ", features = [\"postgres\"]",
            read(dir.join("dependencies.toml"))?,
            read(dir.join("ci-step"))?,
            read(dir.join("README.md"))?,
        )
    } else {
        ("", String::new(), String::new(), String::new())
    };
    let fill = |text: String| {
        text.replace("@DATABASE_DEPENDENCIES@\n", &deps)
            .replace("@DATABASE_STEP@\n", &step)
            .replace("@DATABASE_README@\n", &section)
            .replace("@NAME@", name)
            .replace("@REPOSITORY@", url)
            .replace("@RUST_VERSION@", &rust_version)
            .replace("@RUNTIME_VERSION@", &format!("{OLD} {version}"))
            .replace("@RUNTIME_URL@", URL)
            .replace("@RUNTIME_TESTING@", &format!("{{ {dep}, features = [\"testing\"] }}"))
            .replace("@RUNTIME@", &format!("{{ {dep}{features} }}"))
            .replace("@PATCH@", &patch)
    };
    let service = root.join("template/service");
    let manifest = fill(read(service.join("Cargo.toml"))?);
    let readme = fill(read(service.join("README.md"))?);
    let ci = fill(read(service.join("ci-run"))?);

    // The reference service's lockfile pins the versions the new service
    // starts from, so its first build does not pick up newer releases (which
    // may need a newer Rust). That first build resolves the runtime's own
    // source and drops what the service does not use; its README says to
    // commit the result, since the Dockerfile builds with --locked.
    let lock = read(root.join("Cargo.lock"))?
        .replace(&format!("name = \"{OLD_PACKAGE}\""), &format!("name = \"{name}\""));

    for path in NOT_CARRIED {
        remove(&root.join(path))?;
    }
    for entry in fs::read_dir(root.join("tests")).map_err(|e| format!("tests/: {e}"))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let file = entry.file_name();
        if !OWN_TESTS.iter().any(|own| file == *own) {
            remove(&entry.path())?;
        }
    }
    write(&root.join("Cargo.toml"), &manifest)?;
    write(&root.join("Cargo.lock"), &lock)?;
    write(&root.join("README.md"), &readme)?;
    write(&root.join(".ci/run"), &ci)?;
    make_executable(&root.join(".ci/run"))?;
    strip_block(&root.join("Dockerfile"), DOCKERFILE_VENDOR)?;
    compose_for_service(&root.join(COMPOSE))?;

    let mut strips: Vec<(&str, &str)> = Vec::new();
    let mut rest = args[3..].iter();
    while let Some(flag) = rest.next() {
        match flag.as_str() {
            "--no-websocket" => {
                for file in WEBSOCKET_FILES {
                    remove(&root.join(file))?;
                }
                strips.extend(WEBSOCKET_LINES);
            }
            "--no-echo" => {
                for file in ECHO_FILES {
                    remove(&root.join(file))?;
                }
                strips.extend(ECHO_LINES);
                drop_from_spec(&root.join(SPEC))?;
            }
            "--database" => add_database(root)?,
            "--drop" => {
                let path = rest.next().ok_or("--drop needs a path")?;
                remove(&root.join(path))?;
            }
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    for (file, start) in strips {
        strip_lines(&root.join(file), start)?;
    }
    let changed = rename(root, name, url, &version)?;
    Ok(format!(
        "{name}: a service on {OLD} {version}; {changed} files renamed from {OLD}"
    ))
}

/// `--database`: the notes resource, its migration and test, its lines in
/// the app module, and its paths and schemas in the spec snapshot.
fn add_database(root: &Path) -> Result<(), String> {
    let from = root.join(DATABASE);
    for (file, to) in DATABASE_FILES {
        write(&root.join(to), &read(from.join(file))?)?;
    }
    let app = root.join(APP);
    let mut text = read(&app)?;
    for (after, line) in DATABASE_LINES {
        text = insert_after(&text, after, line)
            .ok_or_else(|| format!("{APP}: no line starting {after:?}"))?;
    }
    let (old, new) = DATABASE_SERVICE;
    if !text.contains(old) {
        return Err(format!("{APP}: no {old:?}"));
    }
    write(&app, &text.replacen(old, new, 1))?;
    add_to_spec(&root.join(SPEC), &read(root.join(DATABASE_SPEC))?)
}

/// docker-compose.yml without the services that call each other (see
/// [`COMPOSE_PAIR_KEYS`]).
fn compose_for_service(path: &Path) -> Result<(), String> {
    strip_block(path, COMPOSE_PAIR_HEADER)?;
    let mut text = read(path)?.replace("#\n#\n", "#\n");
    for (indent, key) in COMPOSE_PAIR_KEYS {
        text = strip_key(&text, indent, key)
            .ok_or_else(|| format!("{}: no {key:?} at indent {indent}", path.display()))?;
    }
    let (old, new) = COMPOSE_PAIR_IMAGE;
    write(path, &text.replace(old, new))?;
    let (file, old, new) = COMPOSE_PAIR_ROW;
    let readme = path.with_file_name(file);
    let text = read(&readme)?;
    if !text.contains(old) {
        return Err(format!("{file}: no row {old:?}"));
    }
    write(&readme, &text.replace(old, new))
}

/// `text` without its first YAML key `key` at `indent` spaces: the key's
/// line, the lines nested under it, and the comment lines just above it.
fn strip_key(text: &str, indent: usize, key: &str) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let depth = |l: &str| l.len() - l.trim_start().len();
    let at = lines.iter().position(|l| {
        depth(l) == indent
            && l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let mut end = at + 1;
    for (i, line) in lines.iter().enumerate().skip(at + 1) {
        if line.trim().is_empty() {
            continue;
        }
        if depth(line) <= indent {
            break;
        }
        end = i + 1;
    }
    let mut start = at;
    while start > 0 && depth(lines[start - 1]) == indent && lines[start - 1].trim_start().starts_with('#') {
        start -= 1;
    }
    let mut kept: Vec<&str> = Vec::new();
    for line in lines[..start].iter().chain(&lines[end..]) {
        if !(line.is_empty() && kept.last().is_some_and(|l| l.is_empty())) {
            kept.push(line);
        }
    }
    Some(kept.join("\n") + "\n")
}

/// `text` with `line` after its first line that starts with `after`.
fn insert_after(text: &str, after: &str, line: &str) -> Option<String> {
    let mut lines: Vec<&str> = text.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(after))?;
    lines.insert(at + 1, line);
    Some(lines.join("\n") + "\n")
}

/// A name that is a Cargo package name, a DNS-1123 label (Kubernetes, Cloud
/// Run, Fly) and, with `_` for `-`, a Rust identifier and a metric prefix.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    // A name holding the runtime's would collide with its crate, its log
    // targets and its metrics, and defeat the renaming.
    !name.contains(OLD)
        && !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && !name.contains("--")
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// The first `key = "value"` of a manifest (its `[package]` comes first).
fn manifest_value(text: &str, key: &str) -> Result<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .find_map(|v| v.trim().strip_prefix('"')?.strip_suffix('"').map(String::from))
        .ok_or_else(|| format!("no {key} in the manifest"))
}

/// Renames what named the reference service; returns how many files changed.
fn rename(root: &Path, name: &str, url: &str, version: &str) -> Result<usize, String> {
    let snake = name.replace('-', "_");
    let upper = snake.to_ascii_uppercase();
    // What names the runtime stays: each is swapped out for a marker first.
    let mut keep: Vec<String> = RUNTIME_NAMES.map(String::from).to_vec();
    keep.push(format!("{OLD} {version}"));
    // In Rust, only what names this service changes: `portbound::` is the
    // runtime's crate.
    let rust_rules = [
        (OLD_LIB.to_owned(), snake.clone()),
        (format!("\"{OLD}\""), format!("\"{name}\"")),
        (format!("CARGO_BIN_EXE_{OLD}"), format!("CARGO_BIN_EXE_{name}")),
    ];
    // Elsewhere (manifests, .env.example, openapi.json), every form, the most
    // specific first: what is left is the plain name.
    let text_rules = [
        (OLD.to_ascii_uppercase(), upper),
        (format!("{OLD}_"), format!("{snake}_")),
        (OLD.to_owned(), name.to_owned()),
    ];
    // Written from template/service/ just now: they name the runtime on
    // purpose.
    let written = ["Cargo.toml", "Cargo.lock", "README.md", ".ci/run"].map(|f| root.join(f));
    let mut files = Vec::new();
    walk(root, &mut files).map_err(|e| e.to_string())?;
    let mut changed = 0;
    for file in &files {
        if written.contains(file) {
            continue;
        }
        // Binary files (images) are not text, and keep their bytes.
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        let rules: &[(String, String)] = if file.extension().is_some_and(|e| e == "rs") {
            &rust_rules
        } else {
            &text_rules
        };
        // The repository's URL becomes the service's, which no later rule
        // may touch (it may well contain "portbound").
        let mut new = text.replace(URL, "\u{0}url\u{0}");
        for (i, name) in keep.iter().enumerate() {
            new = new.replace(name.as_str(), &format!("\u{0}{i}\u{0}"));
        }
        for (from, to) in rules {
            new = new.replace(from.as_str(), to);
        }
        for (i, name) in keep.iter().enumerate() {
            new = new.replace(&format!("\u{0}{i}\u{0}"), name);
        }
        let new = new.replace("\u{0}url\u{0}", url);
        if new != text {
            write(file, &new)?;
            changed += 1;
        }
    }
    // File names: deploy/systemd/portbound.service and the like.
    for file in files.iter().rev() {
        let Some(file_name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.contains(OLD) {
            let to = file.with_file_name(file_name.replace(OLD, name));
            fs::rename(file, &to).map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    Ok(changed)
}

/// Adds members to the spec snapshot: `members` holds blocks, each after a
/// line `before INDENT KEY` naming the member (`INDENT` spaces in) that it
/// goes before; `#` lines are comments.
fn add_to_spec(path: &Path, members: &str) -> Result<(), String> {
    let mut text = read(path)?;
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    for line in members.lines().filter(|l| !l.starts_with('#')) {
        if let Some(place) = line.strip_prefix("before ") {
            let (indent, key) = place.split_once(' ').ok_or("a before line: INDENT KEY")?;
            let indent: usize = indent.parse().map_err(|_| "a before line's INDENT")?;
            blocks.push((format!("{}\"{key}\": {{", " ".repeat(indent)), Vec::new()));
        } else {
            blocks
                .last_mut()
                .ok_or("a member before any before line")?
                .1
                .push(line);
        }
    }
    for (anchor, block) in blocks {
        let at = text
            .find(&format!("\n{anchor}\n"))
            .ok_or_else(|| format!("{}: no member {anchor:?}", path.display()))?;
        text.insert_str(at + 1, &(block.join("\n") + "\n"));
    }
    write(path, &text)
}

/// Removes the echo's members from the spec snapshot.
fn drop_from_spec(path: &Path) -> Result<(), String> {
    let mut text = read(path)?;
    for (indent, key) in ECHO_SPEC {
        text = remove_member(&text, indent, key)
            .ok_or_else(|| format!("{}: no member {key:?} at {indent} spaces", path.display()))?;
    }
    write(path, &text)
}

/// `text` without the object member `key` that starts a line `indent`
/// spaces in; the member before loses its comma if `key` was the last.
fn remove_member(text: &str, indent: usize, key: &str) -> Option<String> {
    let pad = " ".repeat(indent);
    let lines: Vec<&str> = text.lines().collect();
    let open = format!("{pad}\"{key}\": {{");
    let start = lines.iter().position(|l| *l == open)?;
    let (close, close_comma) = (format!("{pad}}}"), format!("{pad}}},"));
    let end = (start + 1..lines.len()).find(|&i| lines[i] == close || lines[i] == close_comma)?;
    let mut out: Vec<String> = lines[..start].iter().map(|l| l.to_string()).collect();
    if lines[end] == close {
        if let Some(previous) = out.last_mut() {
            if previous.ends_with(',') {
                previous.pop();
            }
        }
    }
    out.extend(lines[end + 1..].iter().map(|l| l.to_string()));
    Some(out.join("\n") + "\n")
}

/// Removes the lines of a file that start with the given text (and a blank
/// line left doubled), as rustfmt would leave the file.
fn strip_lines(path: &Path, start: &str) -> Result<(), String> {
    let text = read(path)?;
    let mut kept: Vec<&str> = Vec::new();
    for line in text.lines() {
        let doubled = line.is_empty() && kept.last().is_some_and(|l| l.is_empty());
        if !line.trim_start().starts_with(start) && !doubled {
            kept.push(line);
        }
    }
    write(path, &(kept.join("\n") + "\n"))
}

/// Removes the block from the first line starting with `from` to the line
/// equal to `to`, both included.
fn strip_block(path: &Path, (from, to): (&str, &str)) -> Result<(), String> {
    let text = read(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.starts_with(from));
    let end = start.and_then(|s| (s..lines.len()).find(|&i| lines[i] == to));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(format!("{}: no block from {from:?} to {to:?}", path.display()));
    };
    let kept: Vec<&str> = lines[..start].iter().chain(&lines[end + 1..]).copied().collect();
    write(path, &(kept.join("\n") + "\n"))
}

fn read(path: impl AsRef<Path>) -> Result<String, String> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn remove(path: &Path) -> Result<(), String> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else if path.exists() {
        fs::remove_file(path)
    } else {
        Ok(())
    };
    result.map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> Result<(), String> {
    Ok(())
}

/// Every file under `dir`, but for the folders in `SKIP`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            if !SKIP.contains(&entry.file_name().to_str().unwrap_or_default()) {
                walk(&path, out)?;
            }
        } else if file_type.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
