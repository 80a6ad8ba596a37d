//! The Dockerfile, read by hand: instructions (with the line each starts
//! on and the comment block above it), build stages, `ARG`s and `ENV`s, and
//! the command line the image runs. `doctor` checks it; the service's own
//! tests (tests/image.rs, tests/platforms.rs in portbound's repository) play it.
//!
//! Reading never fails: Docker's syntax is line-based, and what this reader
//! cannot make sense of (a `FROM` of an unexpected shape) is kept in
//! [`Dockerfile::problems`] with its line, for `doctor` to report. Heredocs
//! (`RUN <<EOF`) are not understood; none of the instructions doctor checks
//! takes one.

/// One instruction: `KEYWORD arguments`, comments dropped, backslash
/// continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// The keyword, upper-cased (`FROM`, `RUN`, ...).
    pub keyword: String,
    /// Everything after the keyword, continuations joined with a space.
    pub args: String,
    /// The comment block right above the instruction, `#` removed, one line
    /// of text a line.
    pub comment: String,
    /// The 1-based line the instruction starts on.
    pub line: usize,
}

/// Every instruction of a Dockerfile's text, in order.
pub fn instructions(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut comment = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            // A blank line ends a comment block that belongs to nothing.
            if current.is_empty() {
                comment.clear();
            }
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            // Comment lines inside a continuation are skipped by Docker too.
            if current.is_empty() {
                comment.push_str(c.trim());
                comment.push('\n');
            }
            continue;
        }
        if current.is_empty() {
            start = n + 1;
        }
        if let Some(head) = line.strip_suffix('\\') {
            current.push_str(head.trim_end());
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
            line: start,
        });
        current.clear();
    }
    out
}

/// A build stage: `FROM base [AS name]` and the instructions after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The image (or earlier stage) it starts from, as written.
    pub base: String,
    /// Its name (`AS name`), if it has one.
    pub name: Option<String>,
    /// The comment above its `FROM`.
    pub comment: String,
    /// The line of its `FROM`.
    pub line: usize,
    /// Its instructions, `FROM` excluded.
    pub instructions: Vec<Instruction>,
}

/// A Dockerfile: the `ARG`s before the first `FROM` and the stages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dockerfile {
    /// `ARG name=default` pairs declared before the first `FROM` (the only
    /// ones a `FROM` line may use).
    pub global_args: Vec<(String, String)>,
    /// The build stages, in order; the last is the image.
    pub stages: Vec<Stage>,
    /// Lines this reader could not make sense of: (line, what is wrong).
    pub problems: Vec<(usize, String)>,
}

impl Dockerfile {
    /// Reads a Dockerfile's text.
    pub fn parse(text: &str) -> Dockerfile {
        let mut file = Dockerfile::default();
        for i in instructions(text) {
            if i.keyword == "FROM" {
                // `FROM [--platform=...] image [AS name]`.
                let words: Vec<&str> = i
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (base, name) = match words.as_slice() {
                    [base] => (*base, None),
                    [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                        (*base, Some((*name).to_owned()))
                    }
                    _ => {
                        file.problems.push((
                            i.line,
                            format!("FROM {}: expected `image [AS name]`", i.args),
                        ));
                        (words.first().copied().unwrap_or(""), None)
                    }
                };
                file.stages.push(Stage {
                    base: base.to_owned(),
                    name,
                    comment: i.comment,
                    line: i.line,
                    instructions: Vec::new(),
                });
            } else if let Some(stage) = file.stages.last_mut() {
                stage.instructions.push(i);
            } else if i.keyword == "ARG" {
                file.global_args.push(arg_pair(&i.args));
            } else {
                file.problems.push((
                    i.line,
                    format!(
                        "{} before the first FROM (only ARG may come first)",
                        i.keyword
                    ),
                ));
            }
        }
        if file.stages.is_empty() {
            file.problems.push((1, "no FROM: there is no image".into()));
        }
        file
    }

    /// The stage named `name`.
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name.as_deref() == Some(name))
    }

    /// The last stage: the image.
    pub fn image(&self) -> Option<&Stage> {
        self.stages.last()
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

    /// `text` with `$NAME` and `${NAME}` replaced by the global `ARG`
    /// defaults, as Docker expands a `FROM` line. Unknown names stay as
    /// written.
    pub fn expand(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (name, value) in &self.global_args {
            out = out
                .replace(&format!("${{{name}}}"), value)
                .replace(&format!("${name}"), value);
        }
        out
    }
}

impl Stage {
    /// The `ARG name=default` pairs declared in this stage.
    pub fn args(&self) -> Vec<(String, String)> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "ARG")
            .map(|i| arg_pair(&i.args))
            .collect()
    }

    /// The `ENV` pairs of this stage, in either form (`K=V ...` or `K V`).
    pub fn env(&self) -> Vec<(String, String)> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "ENV")
            .flat_map(|i| env_pairs(&i.args))
            .collect()
    }

    /// The arguments of the last `keyword` in the stage.
    pub fn last(&self, keyword: &str) -> Option<&str> {
        self.last_instruction(keyword).map(|i| i.args.as_str())
    }

    /// The last `keyword` instruction in the stage.
    pub fn last_instruction(&self, keyword: &str) -> Option<&Instruction> {
        self.instructions
            .iter()
            .rev()
            .find(|i| i.keyword == keyword)
    }
}

/// `name=default` (or a bare `name`) of an `ARG`.
fn arg_pair(args: &str) -> (String, String) {
    let (k, v) = args.split_once('=').unwrap_or((args, ""));
    (k.trim().to_owned(), unquote(v.trim()).to_owned())
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// The pairs of one `ENV` instruction: `K=V K2="v w"` (quotes group words),
/// or the legacy `K value with spaces`.
pub fn env_pairs(args: &str) -> Vec<(String, String)> {
    let first = args.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = args.split_once(char::is_whitespace).unwrap_or((args, ""));
        return vec![(k.to_owned(), v.trim().to_owned())];
    }
    words(args)
        .into_iter()
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((&pair, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// Splits on whitespace outside double or single quotes, and drops the
/// quotes (`A="x y" B=z` is `A=x y`, `B=z`): the Dockerfile's `ENV` and shell
/// form, and systemd's command lines and `Environment=` values alike.
pub(crate) fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    let mut in_word = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// An exec-form (JSON array) command line; `None` for the shell form.
pub fn exec_form(args: &str) -> Option<Vec<String>> {
    serde_json::from_str(args).ok()
}

/// What the image runs: `ENTRYPOINT` followed by `CMD`, as Docker joins
/// them. An error names the instruction in shell form: Docker would run it
/// through `/bin/sh -c`, which then is PID 1, does not pass SIGTERM on, and
/// does not exist in a distroless image.
pub fn command_line(image: &Stage) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    for keyword in ["ENTRYPOINT", "CMD"] {
        if let Some(args) = image.last(keyword) {
            match exec_form(args) {
                Some(words) => argv.extend(words),
                None => {
                    return Err(format!(
                        "{keyword} {args} is in shell form, not exec form (a JSON array)"
                    ));
                }
            }
        }
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "\
# syntax=docker/dockerfile:1
ARG RUST=1.95.0

# the builder
FROM --platform=$BUILDPLATFORM rust:${RUST}-slim-trixie AS chef
RUN apt-get update \\
    # a comment inside a continuation
    && true
ENV A=1 B=\"two words\"
ENV LEGACY some value

FROM chef AS builder
WORKDIR /app

# the image
FROM gcr.io/distroless/cc-debian13:nonroot
EXPOSE 8080
ENTRYPOINT [\"/usr/local/bin/svc\"]
CMD [\"serve\"]
";

    #[test]
    fn instructions_keep_their_first_line_and_the_comment_above() {
        let all = instructions(FILE);
        let run = all.iter().find(|i| i.keyword == "RUN").unwrap();
        assert_eq!(run.line, 6);
        assert_eq!(run.args, "apt-get update && true");
        let from = all.iter().filter(|i| i.keyword == "FROM").nth(2).unwrap();
        assert_eq!(from.line, 16);
        assert_eq!(from.comment, "the image\n");
    }

    #[test]
    fn stages_args_env_and_command_line() {
        let file = Dockerfile::parse(FILE);
        assert!(file.problems.is_empty(), "{:?}", file.problems);
        assert_eq!(file.global_args, [("RUST".into(), "1.95.0".into())]);
        assert_eq!(file.stages.len(), 3);
        let chef = file.stage("chef").unwrap();
        assert_eq!(file.expand(&chef.base), "rust:1.95.0-slim-trixie");
        assert_eq!(
            chef.env(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("LEGACY".into(), "some value".into())
            ]
        );
        let bases: Vec<&str> = file
            .external_bases()
            .iter()
            .map(|s| s.base.as_str())
            .collect();
        assert_eq!(
            bases,
            [
                "rust:${RUST}-slim-trixie",
                "gcr.io/distroless/cc-debian13:nonroot"
            ]
        );
        let image = file.image().unwrap();
        assert_eq!(image.line, 16);
        assert_eq!(
            command_line(image).unwrap(),
            ["/usr/local/bin/svc", "serve"]
        );
        assert_eq!(image.last_instruction("EXPOSE").unwrap().line, 17);
    }

    #[test]
    fn shell_form_and_odd_lines_are_reported_not_fatal() {
        let file = Dockerfile::parse("RUN true\nFROM a b c d\nCMD svc serve\n");
        assert_eq!(file.problems.len(), 2, "{:?}", file.problems);
        assert_eq!(file.problems[0].0, 1);
        assert_eq!(file.problems[1].0, 2);
        let err = command_line(file.image().unwrap()).unwrap_err();
        assert!(err.contains("shell form"), "{err}");
        assert!(
            Dockerfile::parse("# nothing\n").problems[0]
                .1
                .contains("no FROM")
        );
    }
}
