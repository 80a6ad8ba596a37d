//! The seam between runtime and app. Cargo enforces the direction (the
//! runtime crate cannot depend on the service that depends on it); these
//! tests keep the shape a generated service copies: the service's `src/`
//! holds only its binary, its library root and its `app/`, and the runtime
//! names no service.

use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_service_holds_only_its_own_code() {
    let src = root().join("src");
    let mut found = Vec::new();
    files(&src, &mut found);
    for path in &found {
        let rel = path.strip_prefix(&src).unwrap();
        assert!(
            rel == Path::new("main.rs") || rel == Path::new("lib.rs") || rel.starts_with("app"),
            "src/{} is not the service's own: runtime code belongs in crates/portbound",
            rel.display()
        );
    }
    assert!(found.len() >= 3, "{found:?}");
}

#[test]
fn the_runtime_names_no_service() {
    let runtime = root().join("crates/portbound");
    let manifest = std::fs::read_to_string(runtime.join("Cargo.toml")).unwrap();
    assert!(!manifest.contains("portbound-service"), "{manifest}");
    let mut found = Vec::new();
    files(&runtime.join("src"), &mut found);
    assert!(found.len() > 10, "{found:?}");
    for path in found {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains("portbound_service"),
                "{}:{}: the runtime names the reference service: {line}",
                path.display(),
                n + 1
            );
        }
    }
}
