//! Railway: `.railway/railway.ts`, Railway's Infrastructure as Code.
//!
//! The file is a TypeScript program; doctor reads its literal settings
//! from the text (comments blanked out, lines kept), as the service's own
//! tests do: `key: "value"` or `key: 123`, and the `variables: { ... }`
//! block. Settings computed at run time are not seen.
//!
//! Checks: the service sets `RAILWAY_DEPLOYMENT_DRAINING_SECONDS`, above
//! the drain (`railway-draining`: Railway's default is 0, SIGKILL right
//! after SIGTERM); the healthcheck probes a route (`probe-path`);
//! `dockerfilePath` exists (`dockerfile-path`); variables hold values the
//! runtime accepts (`invalid-variable`).

use super::locate::line_of_offset;
use super::{Ctx, Finding, Stop, Var};
use crate::platform::{Grace, Platform};

const FILE: &str = ".railway/railway.ts";

/// The source with `//` and `/* */` comments replaced by spaces (newlines
/// kept, so offsets still give lines), string literals left alone.
pub(crate) fn strip_comments(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                out.push(c);
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => {
                quote = Some(c);
                out.push(c);
            }
            None if c == '/' && chars.peek() == Some(&'/') => {
                while let Some(&n) = chars.peek() {
                    if n == '\n' {
                        break;
                    }
                    chars.next();
                }
            }
            None if c == '/' && chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
            }
            None => out.push(c),
        }
    }
    out
}

/// The literal after the first `key:` (a whole word) and its offset.
pub(crate) fn literal(code: &str, key: &str) -> Option<(String, usize)> {
    let pattern = format!("{key}:");
    let at = code
        .match_indices(&pattern)
        .map(|(i, _)| i)
        .find(|&i| i == 0 || !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))?;
    let rest = code[at + pattern.len()..].trim_start();
    let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
    let value = rest[..end].trim().trim_matches(['"', '\'', '`']).to_owned();
    Some((value, at))
}

/// The `variables: { NAME: "value", ... }` block's pairs, with offsets.
fn variables(code: &str) -> Vec<(String, String, usize)> {
    let Some((_, at)) = literal(code, "variables") else {
        return Vec::new();
    };
    let Some(open) = code[at..].find('{').map(|i| at + i + 1) else {
        return Vec::new();
    };
    let close = code[open..].find('}').map_or(code.len(), |i| open + i);
    let mut out = Vec::new();
    let mut offset = open;
    for pair in code[open..close].split(',') {
        if let Some((k, v)) = pair.split_once(':') {
            let name = k.trim().trim_matches(['"', '\'']);
            let lead = pair.len() - pair.trim_start().len();
            if !name.is_empty() {
                let value = v.trim().trim_matches(['"', '\'', '`']);
                out.push((name.to_owned(), value.to_owned(), offset + lead));
            }
        }
        offset += pair.len() + 1;
    }
    out
}

/// Checks .railway/railway.ts.
pub(crate) fn check(ctx: &mut Ctx<'_>) {
    let railway = Platform::Railway.contract();
    let Some(source) = ctx.read(FILE) else {
        return;
    };
    let code = strip_comments(&source);
    let line = |offset: usize| Some(line_of_offset(&code, offset));
    let vars: Vec<Var> = variables(&code)
        .into_iter()
        .map(|(k, v, at)| Var::new(&k, &v, line(at)))
        .collect();

    let key = match railway.grace.value {
        Grace::Setting { key, .. } => key,
        Grace::Fixed { .. } => "RAILWAY_DEPLOYMENT_DRAINING_SECONDS",
    };
    let draining = super::var(&vars, key);
    let seconds = draining.map(|v| v.value.trim().parse::<u64>());
    match seconds {
        // Not a number: the runtime rejects it too (`invalid-variable`).
        Some(Err(_)) => {
            ctx.drain(FILE, &vars, &[("RAILWAY_SERVICE_NAME", "service")]);
        }
        None | Some(Ok(0)) => {
            let at = draining.map(|v| v.line);
            ctx.drain(FILE, &vars, &[("RAILWAY_SERVICE_NAME", "service")]);
            ctx.push(
                Finding::error("railway-draining", FILE, at)
                    .message(format!(
                        "{key} is {}: no time to drain",
                        if draining.is_some() { "0" } else { "not set" }
                    ))
                    .platform(
                        "Railway sends SIGTERM and then SIGKILL after the service's draining \
                         time, which is 0 unless the service sets the variable: requests in \
                         flight are cut at every deploy",
                    )
                    .source(railway.grace.source)
                    .fix(format!("set {key}: \"30\" in the service's variables")),
            );
        }
        Some(Ok(secs)) => {
            let markers = [("RAILWAY_SERVICE_NAME", "service")];
            if let Some(drain) = ctx.drain(FILE, &vars, &markers) {
                let stop = Stop {
                    line: draining.map(|v| v.line),
                    secs,
                    signal: railway.stop_signal.value.default,
                };
                ctx.grace("railway-draining", FILE, stop, drain, &railway);
            }
        }
    }

    let healthcheck = literal(&code, "healthcheck").or_else(|| literal(&code, "healthcheckPath"));
    if let Some((path, at)) = healthcheck {
        ctx.probe_path(FILE, line(at), &path, "GET", &railway);
    }
    if let Some((path, at)) = literal(&code, "dockerfilePath") {
        let source = "https://docs.railway.com/guides/dockerfiles#custom-dockerfile-path";
        super::dockerfile_path(ctx, FILE, line(at), &path, (railway.name, source));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = r#"// a comment with healthcheck: "/nope"
export default defineRailway(() => {
  const s = service("x", {
    build: { builder: "DOCKERFILE", dockerfilePath: "Dockerfile" },
    /* healthcheck: "/also-nope" */
    healthcheck: "/readyz", // trailing
    url: "https://example.com/a", // a URL is not a comment
    variables: {
      RAILWAY_DEPLOYMENT_DRAINING_SECONDS: "30",
      OTHER: "x",
    },
  });
});
"#;

    #[test]
    fn literals_and_variables_are_read_outside_comments() {
        let code = strip_comments(TS);
        assert_eq!(code.lines().count(), TS.lines().count());
        let (path, at) = literal(&code, "healthcheck").unwrap();
        assert_eq!(path, "/readyz");
        assert_eq!(line_of_offset(&code, at), 6);
        assert_eq!(literal(&code, "url").unwrap().0, "https://example.com/a");
        assert_eq!(literal(&code, "dockerfilePath").unwrap().0, "Dockerfile");
        let vars = variables(&code);
        assert_eq!(vars.len(), 2);
        assert_eq!(vars[0].0, "RAILWAY_DEPLOYMENT_DRAINING_SECONDS");
        assert_eq!(vars[0].1, "30");
        assert_eq!(line_of_offset(&code, vars[0].2), 9);
        assert_eq!(line_of_offset(&code, vars[1].2), 10);
    }
}
