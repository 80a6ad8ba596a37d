//! Where a value is: the 1-based line of a key in a manifest's text, so a
//! finding can point at it.
//!
//! The values themselves come from real parsers (`toml`, `serde_norway`,
//! `serde_json`); only TOML's parser keeps positions, so YAML and JSON are
//! located by a small scanner of their text that follows the same path of
//! keys and indexes. It understands block YAML as manifests are written
//! (indentation, `- ` items, `|`/`>` block scalars, `---` documents); a
//! key it cannot find (inside a flow mapping, say) gives `None`, and the
//! finding then points at the start of the file.

/// One step of a path into a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A sequence index.
    Index(usize),
}

pub use Seg::{Index, Key};

/// The line `offset` (a byte offset) falls on.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------
// TOML: the parser's own spans
// ---------------------------------------------------------------------------

/// The line of `path` in a TOML document (a key's line; an array item's
/// own line).
pub fn toml_line(text: &str, path: &[Seg<'_>]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let root = DeTable::parse(text).ok()?;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    let mut value: Option<&DeValue<'_>> = None;
    let mut span = None;
    for seg in path {
        let next = match (seg, table, value) {
            (Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == *k)
                .map(|(key, v)| (key.span(), v)),
            (Index(i), _, Some(DeValue::Array(items))) => items.get(*i).map(|v| (v.span(), v)),
            _ => None,
        };
        let (at, v) = next?;
        span = Some(at);
        value = Some(v.get_ref());
        table = match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    span.map(|s| line_of_offset(text, s.start))
}

// ---------------------------------------------------------------------------
// JSON: keys searched in order in the text
// ---------------------------------------------------------------------------

/// The line of the last key of `keys` in a JSON text: each key is searched
/// (as `"key":`) after the previous one. Good for JSON written one key a
/// line, as app.json is; no index steps.
pub fn json_line(text: &str, keys: &[&str]) -> Option<usize> {
    let mut from = 0;
    let mut at = None;
    for key in keys {
        let quoted = format!("\"{key}\"");
        let found = text[from..].match_indices(&quoted).find_map(|(i, _)| {
            let after = text[from + i + quoted.len()..].trim_start();
            after.starts_with(':').then_some(from + i)
        })?;
        at = Some(found);
        from = found + quoted.len();
    }
    at.map(|offset| line_of_offset(text, offset))
}

// ---------------------------------------------------------------------------
// YAML: an indentation scanner
// ---------------------------------------------------------------------------

/// One line that carries structure (not blank, not a comment, not inside a
/// block scalar).
#[derive(Debug, Clone)]
struct YamlLine {
    /// 1-based line number.
    no: usize,
    /// Column of the first character.
    start: usize,
    /// Each `- ` on the line: (column of the dash, column of what follows,
    /// `None` when nothing follows on this line).
    dashes: Vec<(usize, Option<usize>)>,
    /// The mapping key on the line: (column, key).
    key: Option<(usize, String)>,
}

impl YamlLine {
    fn starts_with_dash(&self) -> bool {
        self.dashes
            .first()
            .is_some_and(|(col, _)| *col == self.start)
    }
}

/// The structural lines of each `---`-separated document.
fn yaml_documents(text: &str) -> Vec<Vec<YamlLine>> {
    let mut docs = vec![Vec::new()];
    // A block scalar (`key: |`) owns the lines indented deeper than its key.
    let mut scalar_of: Option<usize> = None;
    for (n, raw) in text.lines().enumerate() {
        let content = raw.trim_start();
        let start = raw.len() - content.len();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if let Some(col) = scalar_of {
            if start > col {
                continue;
            }
            scalar_of = None;
        }
        if start == 0 && (content == "---" || content.starts_with("--- ") || content == "...") {
            docs.push(Vec::new());
            continue;
        }
        let mut line = YamlLine {
            no: n + 1,
            start,
            dashes: Vec::new(),
            key: None,
        };
        let mut col = start;
        let mut rest = content;
        while rest == "-" || rest.starts_with("- ") {
            let after = rest[1..].trim_start();
            let next = col + (rest.len() - after.len());
            line.dashes.push((col, (!after.is_empty()).then_some(next)));
            col = next;
            rest = after;
        }
        if let Some((key, value)) = split_key(rest) {
            let value = value.split(" #").next().unwrap_or("").trim();
            if value.starts_with('|') || value.starts_with('>') {
                scalar_of = Some(col);
            }
            line.key = Some((col, key));
        }
        docs.last_mut().expect("one document at least").push(line);
    }
    docs.retain(|d| !d.is_empty());
    docs
}

/// `key: value` (or `key:`) into the key, unquoted, and the value text.
fn split_key(text: &str) -> Option<(String, &str)> {
    if text.starts_with(['{', '[', '&', '*', '!', '|', '>']) {
        return None;
    }
    let (key, rest) = if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let close = text[1..].find(q)? + 1;
        (&text[1..close], &text[close + 1..])
    } else {
        let at = text
            .match_indices(':')
            .map(|(i, _)| i)
            .find(|i| text[i + 1..].is_empty() || text[i + 1..].starts_with([' ', '\t']))?;
        (&text[..at], &text[at..])
    };
    let value = rest.strip_prefix(':')?;
    if !(value.is_empty() || value.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key.trim().to_owned(), value))
}

/// The lines of the value of the key (or item) at `i`, whose content sits
/// at column `col`: the lines after it indented deeper, and a sequence
/// written at the key's own indentation (`key:\n- item`).
fn value_block(lines: &[YamlLine], i: usize, col: usize, hi: usize) -> usize {
    let mut end = i + 1;
    while end < hi {
        let l = &lines[end];
        if l.start > col || (l.start == col && l.starts_with_dash() && lines[i].key.is_some()) {
            end += 1;
        } else {
            break;
        }
    }
    end
}

/// The line of `path` in document `doc` (0-based) of a YAML text.
pub fn yaml_line(text: &str, doc: usize, path: &[Seg<'_>]) -> Option<usize> {
    let docs = yaml_documents(text);
    let lines = docs.get(doc)?;
    let (mut lo, mut hi) = (0, lines.len());
    // The column the current container's entries start at; `None`: that of
    // the first line of the range.
    let mut col: Option<usize> = None;
    let mut found = None;
    for seg in path {
        if lo >= hi {
            return None;
        }
        let first = &lines[lo];
        match seg {
            Key(k) => {
                let cc = col.unwrap_or(match first.dashes.last() {
                    Some((_, Some(content))) if first.starts_with_dash() => *content,
                    _ => first.start,
                });
                let i = (lo..hi).find(|&i| {
                    lines[i]
                        .key
                        .as_ref()
                        .is_some_and(|(c, key)| *c == cc && key == k)
                })?;
                found = Some(lines[i].no);
                let end = value_block(lines, i, cc, hi);
                (lo, hi, col) = (i + 1, end, None);
            }
            Index(n) => {
                let cc = first.start;
                let items: Vec<usize> = (lo..hi)
                    .filter(|&i| lines[i].start == cc && lines[i].starts_with_dash())
                    .collect();
                let i = *items.get(*n)?;
                let end = items.get(n + 1).copied().unwrap_or(hi);
                found = Some(lines[i].no);
                match lines[i].dashes[0].1 {
                    // `- key: value`: the item's entries start after the dash.
                    Some(content) => (lo, hi, col) = (i, end, Some(content)),
                    // `-` alone: they start on the next line.
                    None => (lo, hi, col) = (i + 1, end, None),
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
# comment
apiVersion: apps/v1
kind: Deployment
spec:
  template:
    metadata:
      annotations:
        run.googleapis.com/cpu-throttling: \"false\"
        note: |
          replicas: 3
          not: a key
    spec:
      containers:
        - name: app
          env:
            - name: PORT
              value: \"8080\"
            -
              name: SHUTDOWN_DELAY
              value: \"5\"
          ports:
          - containerPort: 8080
      terminationGracePeriodSeconds: 30
---
kind: HorizontalPodAutoscaler
spec:
  scaleTargetRef:
    name: app
";

    #[test]
    fn yaml_paths_find_keys_items_and_documents() {
        let at = |doc, path: &[Seg]| yaml_line(YAML, doc, path);
        assert_eq!(at(0, &[Key("kind")]), Some(3));
        let annotations = [
            Key("spec"),
            Key("template"),
            Key("metadata"),
            Key("annotations"),
        ];
        let mut throttling = annotations.to_vec();
        throttling.push(Key("run.googleapis.com/cpu-throttling"));
        assert_eq!(at(0, &throttling), Some(8));
        let c = [
            Key("spec"),
            Key("template"),
            Key("spec"),
            Key("containers"),
            Index(0),
        ];
        let with = |more: &[Seg<'static>]| [&c[..], more].concat();
        assert_eq!(at(0, &with(&[Key("name")])), Some(14));
        assert_eq!(
            at(0, &with(&[Key("env"), Index(0), Key("value")])),
            Some(17)
        );
        assert_eq!(at(0, &with(&[Key("env"), Index(1), Key("name")])), Some(19));
        assert_eq!(
            at(0, &with(&[Key("ports"), Index(0), Key("containerPort")])),
            Some(22)
        );
        assert_eq!(
            at(
                0,
                &[
                    Key("spec"),
                    Key("template"),
                    Key("spec"),
                    Key("terminationGracePeriodSeconds")
                ]
            ),
            Some(23)
        );
        // Inside a block scalar nothing is a key.
        assert_eq!(at(0, &[Key("replicas")]), None);
        assert_eq!(at(0, &[Key("spec"), Key("replicas")]), None);
        assert_eq!(
            at(1, &[Key("spec"), Key("scaleTargetRef"), Key("name")]),
            Some(28)
        );
    }

    #[test]
    fn keys_with_colons_in_values_and_quoted_keys() {
        assert_eq!(
            split_key("value: http://auth:5001"),
            Some(("value".into(), " http://auth:5001"))
        );
        assert_eq!(split_key("\"a:b\": 1"), Some(("a:b".into(), " 1")));
        assert_eq!(split_key("\"8080:5000\""), None);
        assert_eq!(split_key("8080:5000"), None);
        assert_eq!(split_key("ports:"), Some(("ports".into(), "")));
    }

    #[test]
    fn toml_and_json_lines() {
        let toml = "app = \"x\"\nkill_timeout = 5\n\n[http_service]\n  internal_port = 8080\n\n  [[http_service.checks]]\n    path = \"/a\"\n\n  [[http_service.checks]]\n    path = \"/b\"\n";
        assert_eq!(toml_line(toml, &[Key("kill_timeout")]), Some(2));
        assert_eq!(
            toml_line(toml, &[Key("http_service"), Key("internal_port")]),
            Some(5)
        );
        assert_eq!(
            toml_line(
                toml,
                &[Key("http_service"), Key("checks"), Index(1), Key("path")]
            ),
            Some(11)
        );
        assert_eq!(toml_line(toml, &[Key("kill_signal")]), None);
        let json = "{\n  \"env\": {\n    \"A\": {\n      \"value\": \"1\"\n    },\n    \"B\": {\n      \"value\": \"2\"\n    }\n  }\n}\n";
        assert_eq!(json_line(json, &["env", "B", "value"]), Some(7));
        assert_eq!(json_line(json, &["env", "C"]), None);
        assert_eq!(line_of_offset("a\nb\nc", 4), 3);
    }
}
