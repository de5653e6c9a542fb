//! Parser for systemd `EnvironmentFile=` syntax.
//!
//! Follows the state machine of systemd's `env-file.c` so that warden reads a file exactly as the
//! unit that loads it would: `#`/`;` comments, single and double quotes, backslash escapes and
//! backslash-newline continuation. Lines systemd ignores (no `=`, an invalid name) are reported
//! back as problems instead of being dropped silently.

use std::fmt;

/// One `KEY=VALUE` assignment and the 1-based line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A line systemd would skip, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub reason: ProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A line with a key but no `=`.
    MissingEquals(String),
    /// The key is not a valid environment variable name.
    InvalidName(String),
    /// A quote opened and never closed before the end of the file.
    UnterminatedQuote,
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProblemKind::MissingEquals(k) => write!(f, "`{k}` has no `=`; systemd ignores it"),
            ProblemKind::InvalidName(k) => {
                write!(f, "`{k}` is not a valid variable name; systemd ignores it")
            }
            ProblemKind::UnterminatedQuote => write!(f, "a quote is never closed"),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EnvFile {
    pub assignments: Vec<Assignment>,
    pub problems: Vec<Problem>,
}

impl EnvFile {
    /// The value systemd would export for `key` (the last assignment wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.assignments
            .iter()
            .rev()
            .find(|a| a.key == key)
            .map(|a| a.value.as_str())
    }
}

/// Whether systemd accepts `name` as an environment variable name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    PreKey,
    Key,
    PreValue,
    Value,
    ValueEscape,
    SingleQuote,
    DoubleQuote,
    DoubleQuoteEscape,
    Comment,
    CommentEscape,
}

/// Parses the text of an environment file. Never fails: what systemd would skip is reported in
/// [`EnvFile::problems`].
pub fn parse(text: &str) -> EnvFile {
    let mut out = EnvFile::default();
    let mut state = State::PreKey;
    let mut key = String::new();
    let mut value = String::new();
    // Length of `value` up to the last non-whitespace character, so trailing blanks of an
    // unquoted value are trimmed as systemd does.
    let mut value_trim = 0usize;
    let mut line = 1usize;
    let mut start_line = 1usize;

    let finish = |out: &mut EnvFile, key: &mut String, value: &mut String, start_line: usize| {
        let k = key.trim().to_string();
        if valid_name(&k) {
            out.assignments.push(Assignment {
                key: k,
                value: std::mem::take(value),
                line: start_line,
            });
        } else {
            out.problems.push(Problem {
                line: start_line,
                reason: ProblemKind::InvalidName(k),
            });
        }
        key.clear();
        value.clear();
    };

    for c in text.chars() {
        match state {
            State::PreKey => {
                if c == '#' || c == ';' {
                    state = State::Comment;
                } else if !c.is_whitespace() {
                    state = State::Key;
                    start_line = line;
                    key.clear();
                    key.push(c);
                }
            }
            State::Key => {
                if c == '\n' {
                    out.problems.push(Problem {
                        line: start_line,
                        reason: ProblemKind::MissingEquals(key.trim().to_string()),
                    });
                    key.clear();
                    state = State::PreKey;
                } else if c == '=' {
                    state = State::PreValue;
                    value.clear();
                    value_trim = 0;
                } else {
                    key.push(c);
                }
            }
            State::PreValue => {
                if c == '\n' {
                    finish(&mut out, &mut key, &mut value, start_line);
                    state = State::PreKey;
                } else if c == '\'' {
                    state = State::SingleQuote;
                } else if c == '"' {
                    state = State::DoubleQuote;
                } else if c == '\\' {
                    state = State::ValueEscape;
                } else if !c.is_whitespace() {
                    state = State::Value;
                    value.push(c);
                    value_trim = value.len();
                }
            }
            State::Value => {
                if c == '\n' {
                    value.truncate(value_trim);
                    finish(&mut out, &mut key, &mut value, start_line);
                    state = State::PreKey;
                } else if c == '\\' {
                    state = State::ValueEscape;
                } else {
                    value.push(c);
                    if !c.is_whitespace() {
                        value_trim = value.len();
                    }
                }
            }
            State::ValueEscape => {
                state = State::Value;
                if c != '\n' {
                    value.push(c);
                    value_trim = value.len();
                }
            }
            State::SingleQuote => {
                if c == '\'' {
                    state = State::PreValue;
                    value_trim = value.len();
                } else {
                    value.push(c);
                }
            }
            State::DoubleQuote => {
                if c == '"' {
                    state = State::PreValue;
                    value_trim = value.len();
                } else if c == '\\' {
                    state = State::DoubleQuoteEscape;
                } else {
                    value.push(c);
                }
            }
            State::DoubleQuoteEscape => {
                state = State::DoubleQuote;
                if matches!(c, '"' | '\\' | '`' | '$') {
                    value.push(c);
                } else if c != '\n' {
                    value.push('\\');
                    value.push(c);
                }
            }
            State::Comment => {
                if c == '\\' {
                    state = State::CommentEscape;
                } else if c == '\n' {
                    state = State::PreKey;
                }
            }
            State::CommentEscape => state = State::Comment,
        }
        if c == '\n' {
            line += 1;
        }
    }

    match state {
        State::Key => {
            let k = key.trim().to_string();
            if !k.is_empty() {
                out.problems.push(Problem {
                    line: start_line,
                    reason: ProblemKind::MissingEquals(k),
                });
            }
        }
        State::PreValue | State::Value | State::ValueEscape => {
            if state == State::Value {
                value.truncate(value_trim);
            }
            finish(&mut out, &mut key, &mut value, start_line);
        }
        State::SingleQuote | State::DoubleQuote | State::DoubleQuoteEscape => {
            out.problems.push(Problem {
                line: start_line,
                reason: ProblemKind::UnterminatedQuote,
            });
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn kv(text: &str) -> Vec<(String, String)> {
        parse(text)
            .assignments
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect()
    }

    #[test]
    fn plain_comments_and_blanks() {
        let t = "# comment\n; other\n\nA=1\n  B = two words  \n";
        assert_eq!(
            kv(t),
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        let t = "A='x # y'\nB=\"a \\\"q\\\" \\$HOME\"\nC=a\\ b\nD=\"keep\\n\"\n";
        assert_eq!(
            kv(t),
            vec![
                ("A".into(), "x # y".into()),
                ("B".into(), "a \"q\" $HOME".into()),
                ("C".into(), "a b".into()),
                ("D".into(), "keep\\n".into()),
            ]
        );
    }

    #[test]
    fn continuation_lines() {
        let t = "A=one \\\ntwo\nB=\"x\\\ny\"\nC=3";
        assert_eq!(
            kv(t),
            vec![
                ("A".into(), "one two".into()),
                ("B".into(), "xy".into()),
                ("C".into(), "3".into()),
            ]
        );
        assert_eq!(parse(t).assignments[2].line, 5);
    }

    #[test]
    fn problems_are_reported() {
        let f = parse("JUSTAKEY\n1BAD=x\nGOOD=y\nQ='open\n");
        assert_eq!(f.assignments.len(), 1);
        assert_eq!(f.problems.len(), 3);
        assert_eq!(f.problems[0].line, 1);
        assert_eq!(f.problems[1].line, 2);
        assert!(matches!(
            f.problems[2].reason,
            ProblemKind::UnterminatedQuote
        ));
    }

    #[test]
    fn last_assignment_wins() {
        let f = parse("A=1\nA=2\n");
        assert_eq!(f.get("A"), Some("2"));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn simple_values_round_trip(
            key in "[A-Z_][A-Z0-9_]{0,12}",
            value in "[a-zA-Z0-9/._:-]{0,30}",
        ) {
            let f = parse(&format!("{key}={value}\n"));
            prop_assert_eq!(f.get(&key), Some(value.as_str()));
        }

        #[test]
        fn single_quoted_values_round_trip(
            key in "[A-Z_][A-Z0-9_]{0,12}",
            value in "[^'\\n]{0,30}",
        ) {
            let f = parse(&format!("{key}='{value}'\n"));
            prop_assert_eq!(f.get(&key), Some(value.as_str()));
        }
    }
}
