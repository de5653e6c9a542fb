//! Scripts and documentation: the values of contract variables they state must be the
//! contract's. Scripts are read for shell defaults (`${VAR:-value}`) and assignments; docs for
//! `VAR=value` anywhere in the text, code blocks included.

use std::path::Path;

use super::Context;
use crate::config::Settings;
use crate::config::values::{parse_bool, parse_count};
use crate::config::vars::{self, Kind, Var};
use crate::contract::finding::{Code, Finding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MentionKind {
    /// `${VAR:-value}` / `${VAR-value}` / `${VAR:=value}`
    Default,
    /// `VAR=value`
    Assignment,
}

/// A value a text states for a contract variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub var: String,
    pub value: String,
    pub line: usize,
    pub kind: MentionKind,
}

/// The longest value a text can state for a contract variable (a path is at most `PATH_MAX`).
/// A longer run is not a value; stopping there keeps the scan linear in the text on any input.
const MAX_VALUE: usize = 4096;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Finds every stated value of a contract variable in `text`. Nested defaults are returned
/// unexpanded (`${WATCHDOG_RUNTIME_DIR}/gunicorn.pid`); the caller expands them.
pub fn scan(text: &str) -> Vec<Mention> {
    let mut out = Vec::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        for var in vars::contract().map(|v| v.name) {
            let mut from = 0;
            while let Some(pos) = line[from..].find(var) {
                let start = from + pos;
                let end = start + var.len();
                from = end;
                let before = line[..start].chars().next_back();
                if before.is_some_and(is_name_char) {
                    continue;
                }
                let rest = &line[end..];
                if before == Some('{') {
                    // ${VAR:-value} / ${VAR-value} / ${VAR:=value}
                    let op = ["::-", ":-", ":=", "-", "="]
                        .iter()
                        .find(|op| rest.starts_with(**op));
                    if let Some(op) = op
                        && let Some(v) = braced_tail(&rest[op.len()..])
                        // `${VAR:-…}` in prose shows the syntax, not a value.
                        && !placeholder(&clean(&v))
                    {
                        out.push(Mention {
                            var: var.to_string(),
                            value: clean(&v),
                            line: lineno,
                            kind: MentionKind::Default,
                        });
                    }
                    continue;
                }
                if let Some(v) = rest.strip_prefix('=') {
                    let v = first_token(v);
                    // `VAR="${VAR:-x}"` is a default, reported by the braced form above.
                    if v.is_empty() || v.contains("${") || v.starts_with('$') || placeholder(&v) {
                        continue;
                    }
                    out.push(Mention {
                        var: var.to_string(),
                        value: v,
                        line: lineno,
                        kind: MentionKind::Assignment,
                    });
                }
            }
        }
    }
    out.sort_by_key(|m| m.line);
    out
}

/// The text up to the `}` closing a `${…}`, allowing nested `${…}`; `None` if there is none
/// within [`MAX_VALUE`] bytes.
fn braced_tail(s: &str) -> Option<String> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if i > MAX_VALUE {
            return None;
        }
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return Some(s[..i].to_string()),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A value as far as the first blank, without surrounding quotes, backticks or sentence
/// punctuation; empty if it runs on past [`MAX_VALUE`] bytes.
fn first_token(v: &str) -> String {
    let v = v.trim_start();
    let tok = if let Some(q) = v.chars().next().filter(|c| *c == '"' || *c == '\'') {
        token(&v[1..], |c| c == q)
    } else {
        token(v, |c| c.is_whitespace() || c == '`' || c == '|')
    };
    tok.unwrap_or("")
        .trim_end_matches([',', '.', ';', ')', ']', '`', '"', '\''])
        .to_string()
}

/// `s` up to the first character `stop` accepts, or to its end; `None` past [`MAX_VALUE`] bytes.
fn token(s: &str, stop: impl Fn(char) -> bool) -> Option<&str> {
    for (i, c) in s.char_indices() {
        if i > MAX_VALUE {
            return None;
        }
        if stop(c) {
            return Some(&s[..i]);
        }
    }
    (s.len() <= MAX_VALUE).then_some(s)
}

fn clean(v: &str) -> String {
    v.trim().trim_matches(['"', '\'']).to_string()
}

/// Placeholders a document uses instead of a value.
fn placeholder(v: &str) -> bool {
    v.starts_with('<') || v.contains("...") || v.contains('…') || v == "VALUE"
}

/// The contract's value of the variable named `name`, as text.
fn contract_value(s: &Settings, name: &str) -> Option<String> {
    vars::by_name(name)
        .and_then(|v| s.stated(v))
        .map(|x| x.value.clone())
}

/// Expands `$NAME`, `${NAME}` and `${NAME:-default}` (also `-`, `:=`, `=`) the way the shell
/// would in an environment holding the contract: a known variable gives its value, an unknown
/// one its (expanded) default. `depth` is 0 at the top; defaults nest at most 8 deep.
pub fn expand_shell(text: &str, lookup: &dyn Fn(&str) -> Option<String>, depth: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let name_len = |s: &str| s.find(|c: char| !is_name_char(c)).unwrap_or(s.len());
        if let Some(inner) = after.strip_prefix('{') {
            let n = name_len(inner);
            let (name, tail) = inner.split_at(n);
            let op = ["}", ":-", ":=", "-", "="]
                .into_iter()
                .find(|op| tail.starts_with(op));
            match op {
                Some("}") => {
                    out.push_str(&lookup(name).unwrap_or_default());
                    rest = &tail[1..];
                }
                Some(op) if depth < 8 => match braced_tail(&tail[op.len()..]) {
                    Some(default) => {
                        let consumed = op.len() + default.len() + 1;
                        let v = lookup(name)
                            .unwrap_or_else(|| expand_shell(&default, lookup, depth + 1));
                        out.push_str(&v);
                        rest = &tail[consumed..];
                    }
                    None => {
                        out.push_str("${");
                        rest = inner;
                    }
                },
                _ => {
                    out.push_str("${");
                    rest = inner;
                }
            }
        } else {
            let n = name_len(after);
            match lookup(&after[..n]) {
                Some(v) if n > 0 => out.push_str(&v),
                _ => out.push_str(&rest[i..i + 1 + n]),
            }
            rest = &after[n..];
        }
    }
    out.push_str(rest);
    out
}

/// Whether a stated value means the contract's value, read as the variable's kind reads it.
fn agrees(s: &Settings, var: &Var, stated: &str) -> bool {
    let Some(want) = s.stated(var) else {
        return true;
    };
    let want = want.value.as_str();
    // Expand references to other contract variables (`${WATCHDOG_RUNTIME_DIR:-/run/x}/g.pid`).
    let expanded = expand_shell(stated, &|k| contract_value(s, k), 0);
    match var.kind {
        Kind::Bool => parse_bool(&expanded).is_some() && parse_bool(&expanded) == parse_bool(want),
        Kind::Count { .. } | Kind::Seconds { .. } => {
            parse_count(&expanded, 0).ok().is_some()
                && parse_count(&expanded, 0) == parse_count(want, 0)
        }
        Kind::Path | Kind::PromFile if want.starts_with('/') => {
            super::same_path(Path::new(&expanded), Path::new(want))
        }
        _ => expanded == want,
    }
}

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let s = ctx.settings;
    for (inputs, code, what) in [
        (ctx.inputs.scripts, Code::ScriptDrift, "the script"),
        (ctx.inputs.docs, Code::DocsDrift, "the documentation"),
    ] {
        for t in inputs {
            for m in scan(&t.text) {
                let Some(var) = vars::by_name(&m.var) else {
                    continue;
                };
                // The version is the version rule's, with every declaration side by side.
                if std::ptr::eq(var, &vars::RUNTIME_CONTRACT_VERSION) || agrees(s, var, &m.value) {
                    continue;
                }
                let (want, src) = s
                    .stated(var)
                    .map(|w| (w.value.clone(), w.source.to_string()))
                    .unwrap_or_default();
                out.push(Finding::new(
                    code,
                    format!("{}:{}", t.path.display(), m.line),
                    format!(
                        "{what} states {}={} ({}), the contract has {}={want} (from {src})",
                        m.var,
                        m.value,
                        match m.kind {
                            MentionKind::Default => "shell default",
                            MentionKind::Assignment => "assignment",
                        },
                        m.var
                    ),
                    format!(
                        "change line {} to {}={want}, or change the contract if the text is right",
                        m.line, m.var
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_defaults_and_assignments() {
        let t = r#"PID="${WATCHDOG_PID_FILE:-${WATCHDOG_RUNTIME_DIR}/gunicorn.pid}"
export GUNICORN_BIND=0.0.0.0:8080
MY_WATCHDOG_PID_FILE=/nope
Set `WATCHDOG_STATE_FILE=/var/lib/mes-dashboard/restart_state.json`.
WATCHDOG_RUNTIME_DIR=<runtime dir>
: "${CONDA_ENV_NAME:=mes-dashboard}"
shell defaults (`${WATCHDOG_PID_FILE:-…}`) are compared
"#;
        let m = scan(t);
        let got: Vec<_> = m
            .iter()
            .map(|m| (m.var.as_str(), m.value.as_str(), m.line))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "WATCHDOG_PID_FILE",
                    "${WATCHDOG_RUNTIME_DIR}/gunicorn.pid",
                    1
                ),
                ("GUNICORN_BIND", "0.0.0.0:8080", 2),
                (
                    "WATCHDOG_STATE_FILE",
                    "/var/lib/mes-dashboard/restart_state.json",
                    4
                ),
                ("CONDA_ENV_NAME", "mes-dashboard", 6),
            ]
        );
    }

    #[test]
    fn shell_defaults_expand() {
        let env = |k: &str| (k == "RT").then(|| "/run/app".to_string());
        assert_eq!(expand_shell("${RT}/g.pid", &env, 0), "/run/app/g.pid");
        assert_eq!(
            expand_shell("${PID:-${RT:-/x}/g.pid}", &env, 0),
            "/run/app/g.pid"
        );
        assert_eq!(expand_shell("${NOPE:-/tmp/${NOPE2-d}}", &env, 0), "/tmp/d");
        assert_eq!(expand_shell("$RT/a $5 ${", &env, 0), "/run/app/a $5 ${");
    }

    #[test]
    fn run_on_values_are_not_values() {
        // Each of these made the scan quadratic in time and memory: every mention's value ran to
        // the end of the line (64 KiB took 17 s and 300 MB under the fuzzer).
        for unit in ["${WATCHDOG_PID_FILE:-", "WATCHDOG_PID_FILE="] {
            let t = unit.repeat((64 << 10) / unit.len());
            for m in scan(&t) {
                assert!(m.value.len() <= MAX_VALUE);
                let _ = expand_shell(&m.value, &|_| None, 0);
            }
        }
        // Up to the limit a value is still a value.
        let long = format!("/{}", "d".repeat(MAX_VALUE - 1));
        let m = scan(&format!(
            "WATCHDOG_PID_FILE={long} ${{GUNICORN_BIND:-{long}}}"
        ));
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.value == long));
        assert!(scan(&format!("WATCHDOG_PID_FILE={long}x")).is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = scan(&s);
            let _ = expand_shell(&s, &|_| Some("v".into()), 0);
        }

        #[test]
        fn finds_planted_values(pre in "[ a-z]{0,10}", v in "/[a-z]{1,10}(/[a-z]{1,8}){0,3}") {
            let m = scan(&format!("{pre} WATCHDOG_PID_FILE={v} trailing"));
            prop_assert_eq!(m.len(), 1);
            prop_assert_eq!(&m[0].value, &v);
        }
    }
}
