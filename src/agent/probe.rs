//! One probe of the app (blocking: the event loop runs it on a thread): the health URL's
//! status, answer time and health document, and the Gunicorn master's live workers.

use std::path::Path;

use chrono::Utc;

use crate::config::ProbeSettings;
use crate::platform::http::{self, FetchError};
use crate::platform::process::{self, Role};
use crate::recovery::observation::{Http, Observation, read_health};

/// The most of a health document read: the MES dashboard's is a few KiB.
pub const MAX_DOCUMENT: usize = 64 * 1024;

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn probe(s: &ProbeSettings, pid_file: &Path) -> Observation {
    let at_ms = Utc::now().timestamp_millis();
    let (http, app) = match http::fetch(&s.url, s.timeout, MAX_DOCUMENT) {
        Ok(a) => (
            Http::Answered {
                status: a.status,
                latency_ms: ms(a.elapsed),
            },
            read_health(&a.body, &s.fields),
        ),
        Err(FetchError::TimedOut(after)) => (
            Http::TimedOut {
                after_ms: ms(after),
            },
            None,
        ),
        Err(FetchError::Failed(error)) => (Http::Failed { error }, None),
    };
    let workers = process::read_pid_file(pid_file)
        .ok()
        .filter(|&p| matches!(process::classify(p), Role::Master))
        .map(|p| u32::try_from(process::children(p).len()).unwrap_or(u32::MAX));
    Observation {
        at_ms,
        http,
        app,
        workers,
    }
}
