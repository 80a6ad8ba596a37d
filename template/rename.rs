//! Turns a copy of the portbound template into a service of its own name:
//! run by `cargo generate`'s hook (`template/generate.rhai`), compiled with
//! plain `rustc` (the standard library only), in the new project's folder.
//!
//! ```text
//! rename NAME REPOSITORY_URL [--drop PATH]... [--no-websocket] [--no-echo]
//! ```
//!
//! Every text file's `portbound` becomes NAME in the form its context needs
//! (`acme_api::access` for a log target, `acme_api_ready` for a metric,
//! `ACME_API_TEST_ROUTES` for a variable, `acme-api` everywhere else), file
//! names follow, the template's own URL becomes REPOSITORY_URL, each
//! `--drop` path is removed, and `--no-websocket` and `--no-echo` remove the
//! app's examples (the echo from the spec snapshot too). The README keeps
//! one line of credit.
//!
//! (cargo-generate runs a hook's command through `sh -c` with its arguments
//! joined by spaces, so no argument may hold a space or a shell character.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The template's name and address.
const OLD: &str = "portbound";
const OLD_URL: &str = "https://github.com/portbound/portbound";

/// The WebSocket example's own files.
const WEBSOCKET_FILES: [&str; 2] = ["src/app/ws.rs", "tests/websocket.rs"];
/// The app module, and the starts of its lines that name the WebSocket.
const APP: &str = "src/app/mod.rs";
const WEBSOCKET_LINES: [&str; 3] = ["pub mod ws;", "ws::configure(", "//! - `GET /ws/echo`"];

/// The echo example's file, and the starts of the app module's lines that
/// name it.
const ECHO_FILE: &str = "src/app/echo.rs";
const ECHO_LINES: [&str; 4] = [
    "pub mod echo;",
    "echo::echo,",
    "echo::ROUTE,",
    "//! - `POST /api/v1/echo`",
];
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

/// Removes the echo's members from the spec snapshot.
fn drop_from_spec(path: &Path) -> std::io::Result<()> {
    let mut text = fs::read_to_string(path)?;
    for (indent, key) in ECHO_SPEC {
        text = remove_member(&text, indent, key).ok_or_else(|| {
            std::io::Error::other(format!("no member {key:?} at {indent} spaces"))
        })?;
    }
    fs::write(path, text)
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

/// Folders that are not the project's text: build output, version control,
/// installed tools, and the carried crate (whose text is upstream's).
const SKIP: [&str; 4] = ["target", ".git", "node_modules", "vendor"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(url)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: rename NAME REPOSITORY_URL [--drop PATH]... [--no-websocket] [--no-echo]"
        );
        return ExitCode::from(2);
    };
    if !is_valid_name(name) {
        eprintln!(
            "rename: NAME={name:?}: expected lowercase letters, digits and single dashes, \
             starting with a letter (a Cargo package, a DNS label and a metric prefix at once)"
        );
        return ExitCode::from(2);
    }
    let mut drops = Vec::new();
    let mut strips = Vec::new();
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-websocket" {
            drops.extend(WEBSOCKET_FILES.map(String::from));
            strips.extend(WEBSOCKET_LINES.map(|start| (APP.to_owned(), start.to_owned())));
            continue;
        }
        if flag == "--no-echo" {
            drops.push(ECHO_FILE.to_owned());
            strips.extend(ECHO_LINES.map(|start| (APP.to_owned(), start.to_owned())));
            if let Err(e) = drop_from_spec(Path::new(SPEC)) {
                eprintln!("rename: {SPEC}: {e}");
                return ExitCode::FAILURE;
            }
            continue;
        }
        match (flag.as_str(), rest.next()) {
            ("--drop", Some(path)) => drops.push(path.clone()),
            _ => {
                eprintln!("rename: unexpected argument {flag:?}");
                return ExitCode::from(2);
            }
        }
    }
    if let Err(e) = strip(Path::new("."), &strips) {
        eprintln!("rename: {e}");
        return ExitCode::FAILURE;
    }
    match rename(Path::new("."), name, url, &drops) {
        Ok(files) => {
            println!("{name}: {files} files renamed from {OLD}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rename: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A name that is a Cargo package name, a DNS-1123 label (Kubernetes, Cloud
/// Run, Fly) and, with `_` for `-`, a Rust identifier and a metric prefix.
fn is_valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && !name.contains("--")
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn rename(root: &Path, name: &str, url: &str, drops: &[String]) -> std::io::Result<usize> {
    for path in drops {
        let path = root.join(path);
        if path.is_dir() {
            fs::remove_dir_all(&path)?;
        } else if path.exists() {
            fs::remove_file(&path)?;
        }
    }
    let snake = name.replace('-', "_");
    let upper = snake.to_ascii_uppercase();
    // The forms, most specific first: what is left is the plain name.
    let rules = [
        (OLD_URL.to_owned(), url.to_owned()),
        (OLD.to_ascii_uppercase(), upper),
        (format!("{OLD}::"), format!("{snake}::")),
        (format!("{OLD}="), format!("{snake}=")),
        (format!("{OLD}_"), format!("{snake}_")),
        (OLD.to_owned(), name.to_owned()),
    ];
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut changed = 0;
    for file in &files {
        // Binary files (images) are not text, and keep their bytes.
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        if !text.contains(OLD) && !text.contains(&OLD.to_ascii_uppercase()) {
            continue;
        }
        let mut new = text;
        for (from, to) in &rules {
            new = new.replace(from.as_str(), to);
        }
        fs::write(file, new)?;
        changed += 1;
    }
    // File names: deploy/systemd/portbound.service and the like.
    for file in files.iter().rev() {
        let Some(file_name) = file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.contains(OLD) {
            fs::rename(file, file.with_file_name(file_name.replace(OLD, name)))?;
        }
    }
    let readme = root.join("README.md");
    if let Ok(text) = fs::read_to_string(&readme) {
        fs::write(
            &readme,
            format!("{text}\n---\n\nStarted from the [{OLD}]({OLD_URL}) template.\n"),
        )?;
    }
    Ok(changed)
}

/// Removes the lines of each file that start with the given text (and a
/// blank line left doubled), as rustfmt would leave the file.
fn strip(root: &Path, strips: &[(String, String)]) -> std::io::Result<()> {
    for (file, start) in strips {
        let path = root.join(file);
        let text = fs::read_to_string(&path)?;
        let mut kept: Vec<&str> = Vec::new();
        for line in text.lines() {
            // Two blank lines where a removed one stood between them: one.
            let doubled = line.is_empty() && kept.last().is_some_and(|l| l.is_empty());
            if !line.trim_start().starts_with(start.as_str()) && !doubled {
                kept.push(line);
            }
        }
        fs::write(&path, kept.join("\n") + "\n")?;
    }
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
