//! The Dockerfile as the tests read it: the runtime's reader
//! (`portbound::doctor::dockerfile`, which `SERVICE doctor` uses too),
//! wrapped so that what a test expects to be there panics with a message
//! when it is not; and the `.dockerignore` filter that decides the build
//! context, which only the played build needs.

use std::ops::Deref;
use std::path::{Path, PathBuf};

use portbound::doctor::dockerfile as reader;
// Each test binary uses its own subset.
#[allow(unused_imports)]
pub use portbound::doctor::dockerfile::{Stage, env_pairs};

/// The runtime's `Dockerfile`, whose lookups panic instead of returning
/// `None` (fields and other methods are the runtime's, through `Deref`).
pub struct Dockerfile(reader::Dockerfile);

impl Deref for Dockerfile {
    type Target = reader::Dockerfile;

    fn deref(&self) -> &reader::Dockerfile {
        &self.0
    }
}

impl Dockerfile {
    /// Reads a Dockerfile; a line the reader could not make sense of fails
    /// the test.
    pub fn parse(text: &str) -> Dockerfile {
        let file = reader::Dockerfile::parse(text);
        assert!(file.problems.is_empty(), "Dockerfile: {:?}", file.problems);
        Dockerfile(file)
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> &Stage {
        self.0
            .stage(name)
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }

    /// The last stage: the image.
    pub fn image(&self) -> &Stage {
        self.0.image().expect("a FROM")
    }
}

/// An exec-form (JSON array) command line.
pub fn exec_form(what: &str, args: &str) -> Vec<String> {
    reader::exec_form(args)
        .unwrap_or_else(|| panic!("{what} must be exec form (a JSON array), not {args:?}"))
}

/// What the image runs: `ENTRYPOINT` followed by `CMD`, as Docker joins them.
pub fn command_line(image: &Stage) -> Vec<String> {
    reader::command_line(image).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------
// .dockerignore
// ---------------------------------------------------------------------------

/// The rules of a `.dockerignore`, as Docker reads them
/// (https://docs.docker.com/build/concepts/context/#dockerignore-files):
/// one pattern a line, `#` comments, a leading `!` re-includes, paths are
/// cleaned and taken relative to the context root, `**` matches any number
/// of directories, and the last pattern that matches a path decides.
pub struct DockerIgnore {
    rules: Vec<(bool, String)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> DockerIgnore {
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (keep, pattern) = match l.strip_prefix('!') {
                    Some(p) => (true, p.trim()),
                    None => (false, l),
                };
                let cleaned = pattern.trim_start_matches('/').trim_end_matches('/');
                (keep, cleaned.to_owned())
            })
            .collect();
        DockerIgnore { rules }
    }

    /// True when `path` (relative, `/`-separated) or a directory above it is
    /// excluded and no later `!` rule brings it back.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for (keep, pattern) in &self.rules {
            // A pattern matches the path itself or any parent directory.
            let mut candidates = vec![path];
            let mut at = path;
            while let Some((parent, _)) = at.rsplit_once('/') {
                candidates.push(parent);
                at = parent;
            }
            if candidates
                .iter()
                .any(|c| glob(pattern.as_bytes(), c.as_bytes()))
            {
                excluded = !keep;
            }
        }
        excluded
    }

    /// Whether any rule re-includes (then no excluded directory may be
    /// skipped without looking inside).
    fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|(keep, _)| *keep)
    }

    /// Copies the build context `root` into `into`, leaving out what this
    /// file excludes, as Docker sends it to the builder.
    pub fn copy_context(&self, root: &Path, into: &Path) -> Vec<PathBuf> {
        let mut copied = Vec::new();
        self.copy_dir(root, root, into, &mut copied);
        copied
    }

    fn copy_dir(&self, root: &Path, dir: &Path, into: &Path, copied: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap();
            let rel_str = rel.to_string_lossy().replace('\\', "/");
            let kind = entry.file_type().unwrap();
            let excluded = self.excludes(&rel_str);
            if kind.is_dir() {
                if excluded && !self.has_exceptions() {
                    continue;
                }
                self.copy_dir(root, &path, into, copied);
            } else if !excluded {
                let target = into.join(rel);
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                std::fs::copy(&path, &target).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                copied.push(rel.to_path_buf());
            }
        }
    }
}

/// Go's `filepath.Match` with Docker's `**`: `*` is any run of characters
/// but `/`, `?` one such character, `**` any number of path segments.
pub fn glob(p: &[u8], s: &[u8]) -> bool {
    if p.starts_with(b"**") {
        let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
        if rest.is_empty() {
            return true;
        }
        // `**/x` matches x at any depth, the top included.
        return (0..=s.len())
            .filter(|&i| i == 0 || s[i - 1] == b'/')
            .any(|i| glob(rest, &s[i..]));
    }
    match (p.first(), s.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(b'*'), _) => {
            let rest = &p[1..];
            (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| glob(rest, &s[i..]))
        }
        (Some(b'?'), Some(c)) if *c != b'/' => glob(&p[1..], &s[1..]),
        (Some(pc), Some(sc)) if pc == sc => glob(&p[1..], &s[1..]),
        _ => false,
    }
}
