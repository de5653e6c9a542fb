//! The Alertmanager gate's client: whether an alert matching configured label matchers is
//! firing (active: neither silenced nor inhibited), asked of Alertmanager's API v2 before an
//! automatic restart, which waits while one is (a database outage is not cured by restarting
//! the app).
//!
//! Matchers are written as amtool and Alertmanager's `filter` parameter take them. Regular
//! expressions are not compiled here (no regex engine in the binary): Alertmanager filters, each
//! matcher sent in its canonical form as one `filter` value.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::http::{self, FetchError, HealthUrl};

/// The most of an answer read: a few hundred matching alerts are far less.
const MAX_ANSWER: usize = 1 << 20;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `=~` (the whole value matches the regular expression)
    Matches,
    /// `!~`
    NotMatches,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::NotEqual => "!=",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `label OP value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matcher {
    pub label: String,
    pub op: Op,
    pub value: String,
}

impl fmt::Display for Matcher {
    /// `label OP "value"`, the value quoted and escaped as Alertmanager reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}\"", self.label, self.op)?;
        for c in self.value.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// At least one matcher, all of which an alert must satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Matchers(Vec<Matcher>);

impl Matchers {
    pub fn matchers(&self) -> &[Matcher] {
        &self.0
    }
}

impl fmt::Display for Matchers {
    /// `{alertname="DatabaseDown",severity=~"crit.*"}`, which parses back to the same.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('{')?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char(',')?;
            }
            write!(f, "{m}")?;
        }
        f.write_char('}')
    }
}

/// What is wrong in a matcher list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("a label name is expected ([a-zA-Z_][a-zA-Z0-9_]*)")]
    BadLabel,
    #[error("an operator (=, !=, =~ or !~) is expected after the label")]
    NoOperator,
    #[error("the quoted value has no closing quote")]
    UnterminatedQuote,
    #[error("a double quote inside an unquoted value (quote the whole value)")]
    QuoteInBareValue,
    #[error("an empty matcher between commas")]
    EmptyMatcher,
    #[error("the '{{' has no closing '}}'")]
    Unclosed,
    #[error("unexpected text (a ',' or the end of the list is expected)")]
    Trailing,
}

/// Why a matcher list does not parse, with where: the column (in characters, from 1) and the
/// text from there, for a configuration error to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchersError {
    #[error("no matchers: at least one is needed, such as alertname=\"DatabaseDown\"")]
    Empty,
    #[error("{problem} at column {column}: {near:?}")]
    Syntax {
        problem: Problem,
        column: usize,
        near: String,
    },
}

/// How much of the text at an error is shown.
const NEAR: usize = 32;

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, token: &str) -> bool {
        let found = self.s[self.pos..].starts_with(token);
        if found {
            self.pos += token.len();
        }
        found
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn error(&self, at: usize, problem: Problem) -> MatchersError {
        MatchersError::Syntax {
            problem,
            column: self.s[..at].chars().count() + 1,
            near: self.s[at..].chars().take(NEAR).collect(),
        }
    }
}

fn is_label(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One `label OP value`, the cursor after it.
fn matcher(c: &mut Cursor<'_>) -> Result<Matcher, MatchersError> {
    let start = c.pos;
    // The label is read up to what may follow it, so that a bad character shows the whole name.
    while c
        .peek()
        .is_some_and(|ch| !ch.is_whitespace() && !"=!~,{}\"".contains(ch))
    {
        c.bump();
    }
    let label = &c.s[start..c.pos];
    if label.is_empty() && c.peek() == Some(',') {
        return Err(c.error(start, Problem::EmptyMatcher));
    }
    if !is_label(label) {
        return Err(c.error(start, Problem::BadLabel));
    }
    c.skip_space();
    let at = c.pos;
    // `=~` before `=`: the longer operator first.
    let op = [Op::Matches, Op::NotEqual, Op::NotMatches, Op::Equal]
        .into_iter()
        .find(|op| c.eat(op.as_str()))
        .ok_or_else(|| c.error(at, Problem::NoOperator))?;
    c.skip_space();
    let value = if c.peek() == Some('"') {
        quoted(c)?
    } else {
        let start = c.pos;
        while let Some(ch) = c.peek() {
            match ch {
                ',' | '{' | '}' => break,
                '"' => return Err(c.error(c.pos, Problem::QuoteInBareValue)),
                _ => {
                    c.bump();
                }
            }
        }
        c.s[start..c.pos].trim().to_string()
    };
    Ok(Matcher {
        label: label.to_string(),
        op,
        value,
    })
}

/// A double-quoted value, the cursor on its opening quote. The escapes are Alertmanager's:
/// `\"`, `\\` and `\n`; any other backslash is kept as written (a regex's `\d`).
fn quoted(c: &mut Cursor<'_>) -> Result<String, MatchersError> {
    let open = c.pos;
    c.bump();
    let mut value = String::new();
    loop {
        match c.bump() {
            None => return Err(c.error(open, Problem::UnterminatedQuote)),
            Some('"') => return Ok(value),
            Some('\\') => match c.bump() {
                None => return Err(c.error(open, Problem::UnterminatedQuote)),
                Some('n') => value.push('\n'),
                Some(e @ ('"' | '\\')) => value.push(e),
                Some(other) => {
                    value.push('\\');
                    value.push(other);
                }
            },
            Some(ch) => value.push(ch),
        }
    }
}

impl FromStr for Matchers {
    type Err = MatchersError;

    /// `{a="b", c=~d}` or `a="b",c=~d`; one trailing comma is allowed, as Alertmanager does.
    fn from_str(s: &str) -> Result<Matchers, MatchersError> {
        let mut c = Cursor { s, pos: 0 };
        c.skip_space();
        let open = c.pos;
        let braced = c.eat("{");
        let mut list = Vec::new();
        loop {
            c.skip_space();
            // The end of the list, when empty or after a trailing comma.
            match c.peek() {
                None if braced => return Err(c.error(open, Problem::Unclosed)),
                None => break,
                Some('}') if braced => {
                    c.bump();
                    break;
                }
                _ => {}
            }
            list.push(matcher(&mut c)?);
            c.skip_space();
            match c.peek() {
                Some(',') => {
                    c.bump();
                }
                Some('}') if braced => {
                    c.bump();
                    break;
                }
                None if braced => return Err(c.error(open, Problem::Unclosed)),
                None => break,
                Some(_) => return Err(c.error(c.pos, Problem::Trailing)),
            }
        }
        c.skip_space();
        if c.peek().is_some() {
            return Err(c.error(c.pos, Problem::Trailing));
        }
        if list.is_empty() {
            return Err(MatchersError::Empty);
        }
        Ok(Matchers(list))
    }
}

/// An active alert: firing, neither silenced nor inhibited.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Firing {
    /// Its `alertname` label, or empty.
    pub name: String,
    pub fingerprint: String,
    /// As Alertmanager wrote it (RFC 3339).
    pub starts_at: String,
    pub labels: BTreeMap<String, String>,
}

/// Why the gate got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// No connection, or no answer in time.
    #[error("Alertmanager unreachable: {0}")]
    Unreachable(String),
    /// An answer that is an error, or not the API's.
    #[error("Alertmanager answered {status}: {detail}")]
    Refused { status: u16, detail: String },
}

/// Why an answer is not a list of alerts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a list of alerts (a JSON array is expected)")]
    NotAList,
}

/// The active alerts of `GET /api/v2/alerts`'s answer. An alert lacking a field has it empty;
/// one whose state is not `active` (or not given) is left out; what is not an object is skipped.
pub fn parse_alerts(body: &[u8]) -> Result<Vec<Firing>, AnswerError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AnswerError::NotJson(e.to_string()))?;
    let alerts = v.as_array().ok_or(AnswerError::NotAList)?;
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(alerts
        .iter()
        .filter(|a| a["status"]["state"] == "active")
        .map(|a| {
            let labels: BTreeMap<String, String> = a["labels"]
                .as_object()
                .map(|ls| {
                    ls.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            Firing {
                name: labels.get("alertname").cloned().unwrap_or_default(),
                fingerprint: text(&a["fingerprint"]),
                starts_at: text(&a["startsAt"]),
                labels,
            }
        })
        .collect())
}

/// `%XX` for every byte but the unreserved ones (RFC 3986), for a query parameter's value.
fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The request's path and query under `base` (a route prefix, or `/`): the active alerts only,
/// each matcher one `filter`.
fn alerts_path(base: &str, m: &Matchers) -> String {
    // The base is a path prefix; a query or fragment written with it has no place here.
    let base = base.split(['?', '#']).next().unwrap_or_default();
    let mut path = format!(
        "{}/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false",
        base.trim_end_matches('/')
    );
    for one in &m.0 {
        path.push_str("&filter=");
        percent_encode(&one.to_string(), &mut path);
    }
    path
}

/// An Alertmanager, through its base URL (`http://host:port`, with its route prefix if it has
/// one).
#[derive(Debug, Clone)]
pub struct Alertmanager {
    url: HealthUrl,
    timeout: Duration,
}

impl Alertmanager {
    /// `timeout` bounds each call's whole exchange.
    pub fn new(url: HealthUrl, timeout: Duration) -> Alertmanager {
        Alertmanager { url, timeout }
    }

    pub fn url(&self) -> &HealthUrl {
        &self.url
    }

    /// The active alerts that every one of `m` matches. Blocking: run it off the async runtime.
    pub fn firing(&self, m: &Matchers) -> Result<Vec<Firing>, GateError> {
        let url = HealthUrl {
            path: alerts_path(&self.url.path, m),
            ..self.url.clone()
        };
        // One byte over the limit read tells a cut answer from a whole one.
        match http::fetch(&url, self.timeout, MAX_ANSWER + 1) {
            Ok(a) if !(200..300).contains(&a.status) => Err(GateError::Refused {
                status: a.status,
                detail: String::from_utf8_lossy(&a.body[..a.body.len().min(512)]).into_owned(),
            }),
            Ok(a) if a.body.len() > MAX_ANSWER => Err(GateError::Refused {
                status: a.status,
                detail: format!("an answer of more than {MAX_ANSWER} bytes"),
            }),
            Ok(a) => parse_alerts(&a.body).map_err(|e| GateError::Refused {
                status: a.status,
                detail: e.to_string(),
            }),
            Err(FetchError::TimedOut(t)) => Err(GateError::Unreachable(format!(
                "{}: no answer in {t:?}",
                self.url
            ))),
            Err(FetchError::Failed(e)) => Err(GateError::Unreachable(format!("{}: {e}", self.url))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::{Read as _, Write as _};

    fn m(label: &str, op: Op, value: &str) -> Matcher {
        Matcher {
            label: label.into(),
            op,
            value: value.into(),
        }
    }

    fn parsed(s: &str) -> Vec<Matcher> {
        match s.parse::<Matchers>() {
            Ok(ms) => ms.0,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    #[test]
    fn accepted_forms() {
        let db = vec![m("alertname", Op::Equal, "DatabaseDown")];
        for s in [
            r#"{alertname="DatabaseDown"}"#,
            r#"alertname="DatabaseDown""#,
            "alertname=DatabaseDown",
            "{alertname=DatabaseDown}",
            " { alertname = \"DatabaseDown\" } ",
            "\talertname =  DatabaseDown  \n",
            r#"{alertname="DatabaseDown",}"#,
            "alertname=DatabaseDown,",
        ] {
            assert_eq!(parsed(s), db, "{s:?}");
        }
        assert_eq!(
            parsed(r#"{a="x", b!="y", c=~"crit.*", d!~"^(a|b)$"}"#),
            [
                m("a", Op::Equal, "x"),
                m("b", Op::NotEqual, "y"),
                m("c", Op::Matches, "crit.*"),
                m("d", Op::NotMatches, "^(a|b)$"),
            ]
        );
        assert_eq!(
            parsed("a=x,b!=y,c=~crit.*,d!~warn|info"),
            [
                m("a", Op::Equal, "x"),
                m("b", Op::NotEqual, "y"),
                m("c", Op::Matches, "crit.*"),
                m("d", Op::NotMatches, "warn|info"),
            ]
        );
        // Escapes in a quoted value; a comma, a brace and spaces inside quotes are the value's.
        assert_eq!(
            parsed(r#"msg="say \"hi\", {now} \\ \n\d ""#),
            [m("msg", Op::Equal, "say \"hi\", {now} \\ \n\\d ")]
        );
        // A bare value is trimmed, and may be empty; so may a quoted one.
        assert_eq!(
            parsed("{ team = db ops , x= , y=\"\"}"),
            [
                m("team", Op::Equal, "db ops"),
                m("x", Op::Equal, ""),
                m("y", Op::Equal, ""),
            ]
        );
        // `=` then a bare value starting with `=`: Alertmanager's own reading too.
        assert_eq!(parsed("a==b"), [m("a", Op::Equal, "=b")]);
        assert_eq!(parsed("_under_9=é"), [m("_under_9", Op::Equal, "é")]);
    }

    fn refused(s: &str) -> MatchersError {
        match s.parse::<Matchers>() {
            Ok(ms) => panic!("{s:?} parsed as {ms}"),
            Err(e) => e,
        }
    }

    fn syntax(problem: Problem, column: usize, near: &str) -> MatchersError {
        MatchersError::Syntax {
            problem,
            column,
            near: near.into(),
        }
    }

    #[test]
    fn rejected_forms_say_what_and_where() {
        for empty in ["", "  ", "{}", "{ }", " {\n} "] {
            assert_eq!(refused(empty), MatchersError::Empty, "{empty:?}");
        }
        let cases = [
            ("alertname", syntax(Problem::NoOperator, 10, "")),
            (
                "{alertname DatabaseDown}",
                syntax(Problem::NoOperator, 12, "DatabaseDown}"),
            ),
            ("9lives=x", syntax(Problem::BadLabel, 1, "9lives=x")),
            ("{a-b=\"x\"}", syntax(Problem::BadLabel, 2, "a-b=\"x\"}")),
            ("=x", syntax(Problem::BadLabel, 1, "=x")),
            ("a=\"open", syntax(Problem::UnterminatedQuote, 3, "\"open")),
            (
                "a=\"ends in \\",
                syntax(Problem::UnterminatedQuote, 3, "\"ends in \\"),
            ),
            ("{a=\"x\"} extra", syntax(Problem::Trailing, 9, "extra")),
            ("a=\"x\" b=\"y\"", syntax(Problem::Trailing, 7, "b=\"y\"")),
            ("a=x}", syntax(Problem::Trailing, 4, "}")),
            ("{a=x", syntax(Problem::Unclosed, 1, "{a=x")),
            ("{a=\"x\",", syntax(Problem::Unclosed, 1, "{a=\"x\",")),
            ("a=b\"c\"", syntax(Problem::QuoteInBareValue, 4, "\"c\"")),
            ("a=x,,b=y", syntax(Problem::EmptyMatcher, 5, ",b=y")),
            (",", syntax(Problem::EmptyMatcher, 1, ",")),
            ("a=x{", syntax(Problem::Trailing, 4, "{")),
        ];
        for (s, want) in cases {
            assert_eq!(refused(s), want, "{s:?}");
        }
        // The column counts characters, not bytes.
        assert_eq!(refused("é=1,ü"), syntax(Problem::BadLabel, 1, "é=1,ü"),);
        assert_eq!(refused("a=é,ü"), syntax(Problem::BadLabel, 5, "ü"));
        // The text shown is cut short.
        let long = format!("a=\"{}", "x".repeat(100));
        match refused(&long) {
            MatchersError::Syntax { near, .. } => assert_eq!(near.chars().count(), NEAR),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_read_as_messages() {
        assert_eq!(
            refused("{alertname DatabaseDown}").to_string(),
            "an operator (=, !=, =~ or !~) is expected after the label at column 12: \"DatabaseDown}\""
        );
        assert_eq!(
            refused("{a=x").to_string(),
            "the '{' has no closing '}' at column 1: \"{a=x\""
        );
        assert_eq!(
            refused("").to_string(),
            "no matchers: at least one is needed, such as alertname=\"DatabaseDown\""
        );
    }

    #[test]
    fn the_canonical_form_parses_back() {
        let ms: Matchers = r#" alertname = DatabaseDown , severity=~"crit.*" "#
            .parse()
            .unwrap();
        assert_eq!(
            ms.to_string(),
            r#"{alertname="DatabaseDown",severity=~"crit.*"}"#
        );
        let tricky: Matchers = r#"{m!~"a \"b\" \\ \n \d", e=""}"#.parse().unwrap();
        assert_eq!(tricky.to_string(), r#"{m!~"a \"b\" \\ \n \\d",e=""}"#);
        for ms in [ms, tricky] {
            assert_eq!(ms.to_string().parse::<Matchers>(), Ok(ms));
        }
    }

    #[test]
    fn each_matcher_is_one_filter() {
        let ms: Matchers = r#"alertname="DatabaseDown",severity=~"crit.*""#.parse().unwrap();
        assert_eq!(
            alerts_path("/", &ms),
            "/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false\
             &filter=alertname%3D%22DatabaseDown%22&filter=severity%3D~%22crit.%2A%22"
        );
        // A route prefix is kept, with or without its slash; a query written with it is not.
        let one: Matchers = "a!=b c".parse().unwrap();
        for base in ["/am", "/am/", "/am/?x=1"] {
            assert_eq!(
                alerts_path(base, &one),
                "/am/api/v2/alerts?active=true&silenced=false&inhibited=false&unprocessed=false\
                 &filter=a%21%3D%22b%20c%22",
                "{base}"
            );
        }
        let utf8: Matchers = "a=\"é&\\\"\"".parse().unwrap();
        assert!(
            alerts_path("/", &utf8).ends_with("&filter=a%3D%22%C3%A9%26%5C%22%22"),
            "{}",
            alerts_path("/", &utf8)
        );
    }

    #[test]
    fn answers_keep_the_active_alerts() {
        let body = br#"[
            {"labels": {"alertname": "DatabaseDown", "severity": "critical"},
             "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
             "startsAt": "2026-11-30T10:00:00.000Z", "fingerprint": "c0ffee",
             "annotations": {}, "receivers": [{"name": "null"}]},
            {"labels": {"alertname": "Muted"}, "status": {"state": "suppressed"},
             "startsAt": "2026-11-30T10:00:00Z", "fingerprint": "bad"},
            {"labels": {"alertname": "New"}, "status": {"state": "unprocessed"}},
            {"labels": {"alertname": "NoState"}},
            {"status": {"state": "active"}},
            {"labels": {"severity": "page", "n": 3, "alertname": null},
             "status": {"state": "active"}, "fingerprint": 7},
            "not an alert", 42, null
        ]"#;
        let got = parse_alerts(body).unwrap();
        assert_eq!(
            got,
            [
                Firing {
                    name: "DatabaseDown".into(),
                    fingerprint: "c0ffee".into(),
                    starts_at: "2026-11-30T10:00:00.000Z".into(),
                    labels: [("alertname", "DatabaseDown"), ("severity", "critical")]
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .into(),
                },
                Firing {
                    name: String::new(),
                    fingerprint: String::new(),
                    starts_at: String::new(),
                    labels: BTreeMap::new(),
                },
                Firing {
                    name: String::new(),
                    fingerprint: String::new(),
                    starts_at: String::new(),
                    labels: [("severity".to_string(), "page".to_string())].into(),
                },
            ]
        );
        assert_eq!(parse_alerts(b"[]"), Ok(vec![]));
    }

    #[test]
    fn answers_that_are_not_alerts_are_refused() {
        for body in [&b"{\"alerts\": []}"[..], b"null", b"\"x\"", b"3"] {
            assert_eq!(parse_alerts(body), Err(AnswerError::NotAList), "{body:?}");
        }
        for body in [&b""[..], b"<html>", b"[{", b"\xff\xfe"] {
            assert!(
                matches!(parse_alerts(body), Err(AnswerError::NotJson(_))),
                "{body:?}"
            );
        }
        // Deep nesting stops at serde_json's recursion limit, not the stack's.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse_alerts(deep.as_bytes()),
            Err(AnswerError::NotJson(_))
        ));
    }

    /// A server that answers one connection with `answer`; the request it read comes back.
    fn serve_once(answer: Vec<u8>) -> (HealthUrl, std::thread::JoinHandle<String>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/am/", l.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = c.write_all(&answer);
            String::from_utf8_lossy(&req).into_owned()
        });
        (url, t)
    }

    fn gate(url: HealthUrl) -> Alertmanager {
        Alertmanager::new(url, Duration::from_secs(2))
    }

    #[test]
    fn firing_asks_under_the_prefix_and_reads_the_answer() {
        let (url, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n\
              [{\"labels\":{\"alertname\":\"DatabaseDown\"},\"status\":{\"state\":\"active\"}}]"
                .to_vec(),
        );
        let ms: Matchers = "alertname=DatabaseDown".parse().unwrap();
        let got = gate(url).firing(&ms).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, "DatabaseDown");
        let req = server.join().unwrap();
        assert!(
            req.starts_with(
                "GET /am/api/v2/alerts?active=true&silenced=false&inhibited=false\
                 &unprocessed=false&filter=alertname%3D%22DatabaseDown%22 HTTP/1.0\r\n"
            ),
            "{req}"
        );
    }

    #[test]
    fn errors_and_foreign_answers_are_refused() {
        let ms: Matchers = "a=b".parse().unwrap();
        let (url, _) = serve_once(
            b"HTTP/1.1 400 Bad Request\r\n\r\n{\"code\":400,\"message\":\"bad matcher format\"}"
                .to_vec(),
        );
        assert_eq!(
            gate(url).firing(&ms),
            Err(GateError::Refused {
                status: 400,
                detail: "{\"code\":400,\"message\":\"bad matcher format\"}".into()
            })
        );
        let (url, _) = serve_once(b"HTTP/1.0 200 OK\r\n\r\n<html>hello</html>".to_vec());
        assert!(
            matches!(gate(url).firing(&ms), Err(GateError::Refused { status: 200, ref detail }) if detail.starts_with("not JSON")),
        );
        let mut big = b"HTTP/1.0 200 OK\r\n\r\n[".to_vec();
        big.resize(big.len() + MAX_ANSWER + 10, b' ');
        let (url, _) = serve_once(big);
        assert_eq!(
            gate(url).firing(&ms),
            Err(GateError::Refused {
                status: 200,
                detail: format!("an answer of more than {MAX_ANSWER} bytes")
            })
        );
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url: HealthUrl = format!("http://127.0.0.1:{port}").parse().unwrap();
        let ms: Matchers = "a=b".parse().unwrap();
        match gate(url).firing(&ms) {
            Err(GateError::Unreachable(why)) => assert!(why.contains(&port.to_string()), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    fn any_matcher() -> impl Strategy<Value = Matcher> {
        (
            "[a-zA-Z_][a-zA-Z0-9_]{0,8}",
            prop_oneof![
                Just(Op::Equal),
                Just(Op::NotEqual),
                Just(Op::Matches),
                Just(Op::NotMatches)
            ],
            "(\\PC|[\"\\\\\n ,{}=~!])*",
        )
            .prop_map(|(label, op, value)| Matcher { label, op, value })
    }

    proptest! {
        #[test]
        fn every_matcher_list_round_trips(list in prop::collection::vec(any_matcher(), 1..5)) {
            let ms = Matchers(list);
            prop_assert_eq!(ms.to_string().parse::<Matchers>(), Ok(ms));
        }

        #[test]
        fn any_text_parses_or_is_refused(s in "(\\PC|[\"\\\\{},=~! \n])*") {
            if let Ok(ms) = s.parse::<Matchers>() {
                prop_assert!(!ms.0.is_empty());
                prop_assert_eq!(ms.to_string().parse::<Matchers>(), Ok(ms));
            }
        }

        #[test]
        fn any_answer_is_read_or_refused(s in "\\PC{0,200}") {
            let _ = parse_alerts(s.as_bytes());
        }
    }
}
