//! The status document as observed now: built from the settings and the state, with what the
//! files and the live Gunicorn master show (blocking I/O: run it off the event loop), and
//! published for applications that do not speak D-Bus.

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::control::status::{
    self, AgentInfo, DocumentSource, FilesPresent, Gunicorn, Observed, StatusDoc, Validation,
    Worker,
};
use crate::ledger::state::StateDoc;
use crate::platform::process::{Role, children, classify, read_pid_file, started_at};
use crate::recovery::watcher::RecoveryStatus;

/// The running agent, for the document's `agent` section.
#[derive(Debug, Clone)]
pub struct Meta {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub watchdog_usec: Option<u64>,
    /// Why the state file is behind the history the agent holds (its last write failed).
    pub state_write_error: Option<String>,
    /// Its reload slot, when the fleet coordinates.
    pub fleet: Option<crate::fleet::coordinator::FleetView>,
}

/// Builds the status document from the state and what is observed now. `agent`: `None` when
/// the document comes from the state file with no agent answering (and so has no probes).
pub fn document(
    s: &Settings,
    doc: &StateDoc,
    validation: &Validation,
    agent: Option<(&Meta, &RecoveryStatus)>,
) -> StatusDoc {
    let master = read_pid_file(&s.pid_file.value)
        .ok()
        .filter(|p| matches!(classify(*p), Role::Master));
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    let workers = master.map(children).unwrap_or_default();
    // The newest worker: the last reload's (or the last replacement of a dead one).
    let newest_worker = workers
        .iter()
        .filter_map(|&pid| Some((pid, started_at(pid)?)))
        .max_by_key(|(_, t)| *t)
        .map(|(pid, t)| Worker {
            pid,
            started_at: t.into(),
        });
    status::document(&Observed {
        settings: s,
        state: doc,
        now: Utc::now(),
        validation: validation.clone(),
        files: FilesPresent {
            flag: exists(&s.restart_flag.value),
            pid: exists(&s.pid_file.value),
            state: exists(&s.state_file.value),
        },
        recovery: agent.map(|(_, r)| r.clone()),
        fleet: agent.and_then(|(m, _)| m.fleet.as_ref().map(|f| f.status())),
        agent: agent.map(|(m, _)| AgentInfo {
            pid: m.pid,
            version: env!("CARGO_PKG_VERSION"),
            started_at: m.started_at,
            watchdog_usec: m.watchdog_usec,
            state_write_error: m.state_write_error.as_deref(),
        }),
        gunicorn: Gunicorn {
            master_pid: master,
            workers,
            bind: s.bind.value.to_string(),
        },
        newest_worker,
        source: if agent.is_some() {
            DocumentSource::Agent
        } else {
            DocumentSource::StateFile
        },
    })
}

/// Writes `WARDEN_STATUS_FILE` (readable by the app: 0644).
pub fn publish_status(path: &Path, d: &StatusDoc) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(d).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::platform::fs::write_atomic(path, &bytes, 0o644)
}
