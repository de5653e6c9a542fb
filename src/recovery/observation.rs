//! What one probe of the app saw, read from its answer: the HTTP outcome, the health document's
//! fields (at paths an app configures; the MES dashboard's by default), the master and its
//! workers. Pure: the agent's probe gathers the facts, this reads them.

use serde::{Deserialize, Serialize};

use super::recommend::{CIRCUIT_OPEN, DATABASE_UNREACHABLE, REDIS_UNAVAILABLE};
use crate::config::{FieldPaths, JsonPath};

/// The app's own account of its health, where its document gives one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppHealth {
    /// `None` while the app says it is not degraded (absent or `null`).
    pub degraded_reason: Option<String>,
    pub pool_saturation: Option<f64>,
    pub circuit_state: Option<String>,
}

fn at<'v>(v: &'v serde_json::Value, path: &JsonPath) -> Option<&'v serde_json::Value> {
    path.0
        .split('.')
        .filter(|k| !k.is_empty())
        .try_fold(v, |v, k| v.as_object()?.get(k))
}

/// Reads the fields from a health document; `None` when the body is not a JSON object (an app
/// whose health URL answers plain text is judged by its status code alone).
pub fn read_health(body: &[u8], paths: &FieldPaths) -> Option<AppHealth> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if !v.is_object() {
        return None;
    }
    // A text field is taken as text; a number or a flag is no reason (`false` is "not
    // degraded" in some apps' documents).
    let text = |p: &JsonPath| at(&v, p).and_then(|x| x.as_str()).map(str::to_string);
    Some(AppHealth {
        degraded_reason: text(&paths.degraded_reason),
        pool_saturation: at(&v, &paths.pool_saturation)
            .and_then(|x| x.as_f64())
            .filter(|s| s.is_finite()),
        circuit_state: text(&paths.circuit_state),
    })
}

/// The HTTP side of a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Http {
    /// The app answered: its status code and the time to the whole answer.
    Answered { status: u16, latency_ms: f64 },
    /// No answer within the probe's timeout.
    TimedOut { after_ms: f64 },
    /// Refused, reset, not HTTP.
    Failed { error: String },
}

/// One probe's facts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// When the probe was sent (UTC milliseconds).
    pub at_ms: i64,
    pub http: Http,
    /// The document's fields, when it had any.
    pub app: Option<AppHealth>,
    /// The Gunicorn master's live workers (`None`: no master found).
    pub workers: Option<u32>,
}

impl Observation {
    /// Whether the health URL answered 2xx.
    pub fn answered_ok(&self) -> bool {
        matches!(self.http, Http::Answered { status, .. } if (200..300).contains(&status))
    }

    /// The degraded reason the app gave, if any.
    pub fn degraded_reason(&self) -> Option<&str> {
        self.app.as_ref()?.degraded_reason.as_deref()
    }

    pub fn pool_saturation(&self) -> Option<f64> {
        self.app.as_ref()?.pool_saturation
    }

    pub fn circuit_state(&self) -> Option<&str> {
        self.app.as_ref()?.circuit_state.as_deref()
    }

    /// What a restart cannot fix, as the app says it: its database or Redis unreachable, its
    /// circuit breaker open. A failing answer that names one of these is no case for a restart.
    pub fn unfixable(&self) -> Option<&str> {
        match self.degraded_reason() {
            Some(r @ (DATABASE_UNREACHABLE | REDIS_UNAVAILABLE)) => Some(r),
            _ if self.circuit_state() == Some(CIRCUIT_OPEN) => Some("circuit_breaker_open"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mes_document_is_read_at_its_paths() {
        let body = br#"{"degraded_reason":"db_pool_saturated","database_pool":{"state":{"saturation":1.0}},"circuit_breaker":{"state":"CLOSED"}}"#;
        let h = read_health(body, &FieldPaths::default()).unwrap();
        assert_eq!(h.degraded_reason.as_deref(), Some("db_pool_saturated"));
        assert_eq!(h.pool_saturation, Some(1.0));
        assert_eq!(h.circuit_state.as_deref(), Some("CLOSED"));
    }

    #[test]
    fn other_apps_name_their_own_paths_and_odd_values_are_no_facts() {
        let p = |s: &str| JsonPath(s.to_string());
        let paths = FieldPaths {
            degraded_reason: p("status.why"),
            pool_saturation: p("db.use"),
            circuit_state: p("cb"),
        };
        let h = read_health(
            br#"{"status":{"why":null},"db":{"use":"high"},"cb":1}"#,
            &paths,
        )
        .unwrap();
        assert_eq!(h, AppHealth::default());
        let h = read_health(br#"{"status":{"why":"slow"},"db":{"use":0.5}}"#, &paths).unwrap();
        assert_eq!(h.degraded_reason.as_deref(), Some("slow"));
        assert_eq!(h.pool_saturation, Some(0.5));
        assert_eq!(read_health(b"OK", &paths), None);
        assert_eq!(read_health(b"[1]", &paths), None);
    }

    #[test]
    fn what_a_restart_cannot_fix() {
        let o = |reason: Option<&str>, circuit: Option<&str>| Observation {
            at_ms: 0,
            http: Http::Answered {
                status: 503,
                latency_ms: 1.0,
            },
            app: Some(AppHealth {
                degraded_reason: reason.map(str::to_string),
                pool_saturation: None,
                circuit_state: circuit.map(str::to_string),
            }),
            workers: Some(2),
        };
        assert_eq!(
            o(Some("database_unreachable"), None).unfixable(),
            Some("database_unreachable")
        );
        assert_eq!(
            o(Some("redis_unavailable"), None).unfixable(),
            Some("redis_unavailable")
        );
        assert_eq!(
            o(None, Some("OPEN")).unfixable(),
            Some("circuit_breaker_open")
        );
        assert_eq!(
            o(Some("db_pool_saturated"), Some("CLOSED")).unfixable(),
            None
        );
    }
}
