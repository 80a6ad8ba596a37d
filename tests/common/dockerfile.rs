//! The Dockerfile read by hand: instructions, build stages, and the
//! `.dockerignore` filter that decides the build context.

use std::path::{Path, PathBuf};

/// One instruction: (KEYWORD, arguments), comments dropped, backslash
/// continuations joined. `comment` is the comment block right above it.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub keyword: String,
    pub args: String,
    pub comment: String,
}

/// Every instruction of a Dockerfile's text.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut comment = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if current.is_empty() {
                comment.clear();
            }
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            if current.is_empty() {
                comment.push_str(c.trim());
                comment.push('\n');
            }
            continue;
        }
        if let Some(start) = line.strip_suffix('\\') {
            current.push_str(start);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (keyword, args) = current
            .split_once(char::is_whitespace)
            .unwrap_or((&current, ""));
        out.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
            comment: std::mem::take(&mut comment),
        });
        current.clear();
    }
    out
}

/// A build stage: `FROM base [AS name]` and what follows it.
#[derive(Debug, Clone)]
pub struct Stage {
    pub base: String,
    pub name: Option<String>,
    /// The comment above its `FROM`.
    pub comment: String,
    pub instructions: Vec<Instruction>,
}

/// The Dockerfile as global `ARG`s (name, default) and stages.
pub struct Dockerfile {
    pub global_args: Vec<(String, String)>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn parse(text: &str) -> Dockerfile {
        let mut global_args = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for i in instructions(text) {
            if i.keyword == "FROM" {
                let words: Vec<&str> = i.args.split_whitespace().collect();
                let (base, name) = match words.as_slice() {
                    [base] => (*base, None),
                    [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*base, Some((*name).to_owned()))
                    }
                    _ => panic!("FROM {}: expected `image [AS name]`", i.args),
                };
                stages.push(Stage {
                    base: base.to_owned(),
                    name,
                    comment: i.comment,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = stages.last_mut() {
                stage.instructions.push(i);
            } else if i.keyword == "ARG" {
                let (k, v) = i.args.split_once('=').unwrap_or((&i.args, ""));
                global_args.push((k.to_owned(), v.trim_matches('"').to_owned()));
            }
        }
        Dockerfile {
            global_args,
            stages,
        }
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> &Stage {
        self.stages
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no stage named {name}"))
    }

    /// The last stage: the image.
    pub fn image(&self) -> &Stage {
        self.stages.last().expect("a FROM")
    }

    /// Stages whose base is an image from a registry, not an earlier stage.
    pub fn external_bases(&self) -> Vec<&Stage> {
        self.stages
            .iter()
            .enumerate()
            .filter(|(i, s)| {
                !self.stages[..*i]
                    .iter()
                    .any(|earlier| earlier.name.as_deref() == Some(s.base.as_str()))
            })
            .map(|(_, s)| s)
            .collect()
    }
}

impl Stage {
    /// The `ARG name=default` pairs declared in this stage.
    pub fn args(&self) -> Vec<(String, String)> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "ARG")
            .map(|i| {
                let (k, v) = i.args.split_once('=').unwrap_or((&i.args, ""));
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect()
    }

    /// `ENV` pairs, in either form (`K=V ...` or `K V`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "ENV")
            .flat_map(|i| env_pairs(&i.args))
            .collect()
    }

    /// The arguments of the last `keyword` in the stage.
    pub fn last(&self, keyword: &str) -> Option<&str> {
        self.instructions
            .iter()
            .rev()
            .find(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }
}

/// The pairs of one `ENV` instruction, in either form (`K=V ...` or `K V`).
pub fn env_pairs(args: &str) -> Vec<(String, String)> {
    if args
        .split_whitespace()
        .next()
        .is_some_and(|t| t.contains('='))
    {
        args.split_whitespace()
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("ENV key=value");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect()
    } else {
        let (k, v) = args.split_once(char::is_whitespace).expect("ENV key value");
        vec![(k.to_owned(), v.trim().to_owned())]
    }
}

/// An exec-form (JSON array) command line.
pub fn exec_form(what: &str, args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|_| panic!("{what} must be exec form (a JSON array), not {args:?}"))
}

/// What the image runs: `ENTRYPOINT` followed by `CMD`, as Docker joins them.
pub fn command_line(image: &Stage) -> Vec<String> {
    let mut argv = image
        .last("ENTRYPOINT")
        .map(|a| exec_form("ENTRYPOINT", a))
        .unwrap_or_default();
    argv.extend(
        image
            .last("CMD")
            .map(|a| exec_form("CMD", a))
            .unwrap_or_default(),
    );
    argv
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
