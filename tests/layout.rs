//! The seam between runtime and app: the runtime (every module but `app`)
//! never names the app. Whatever it needs of the app, it takes as a value
//! through `portbound::Service`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_runtime_never_names_the_app() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let runtime: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !p.starts_with(src.join("app")))
        // The crate root declares the module; the binary runs the service.
        .filter(|p| **p != src.join("lib.rs") && **p != src.join("main.rs"))
        .collect();
    assert!(runtime.len() > 10, "{runtime:?}");
    for path in runtime {
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            assert!(
                !line.contains("crate::app") && !line.contains("super::app"),
                "{}:{}: the runtime names the app: {line}",
                path.display(),
                n + 1
            );
        }
        // `use crate::{app, …}`, over any number of lines.
        let flat: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        for root in ["crate::{", "super::{"] {
            for (at, _) in flat.match_indices(root) {
                assert!(
                    !group_names_app(&flat[at + root.len()..]),
                    "{}: the runtime names the app in a `use {root}…}}` group",
                    path.display()
                );
            }
        }
    }
}

/// Whether a use group (the text after its `{`, whitespace removed) has
/// `app` among its top-level items.
fn group_names_app(rest: &str) -> bool {
    let mut depth = 0;
    let mut item = String::new();
    for c in rest.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                if is_app(&item) {
                    return true;
                }
                item.clear();
                continue;
            }
            _ => {}
        }
        item.push(c);
    }
    is_app(&item)
}

fn is_app(item: &str) -> bool {
    item == "app" || item.starts_with("app::") || item.starts_with("appas")
}

#[test]
fn a_use_group_naming_the_app_is_found() {
    assert!(group_names_app("app,routes};"));
    assert!(group_names_app("routes,app::echo};"));
    assert!(group_names_app("x::{y,z},appasa};"));
    assert!(!group_names_app("routes,apple,x::{app}};"));
}
