//! What the agent shows of itself: the status document (observed from the files and the live
//! Gunicorn master; blocking I/O, run off the event loop), the D-Bus properties, the metrics'
//! gauges, and the files it publishes for applications (status, kill-switch).

use std::path::Path;

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::control::dbus::Snapshot;
use crate::control::metrics::Metrics;
use crate::control::status::{
    self, AgentInfo, FilesPresent, Gunicorn, Inputs, Source, StatusDoc, Validation,
};
use crate::ledger::state::{KillSwitch, StateDoc};
use crate::platform::process::{Role, children, classify, read_pid_file};

/// The running agent, for the document's `agent` section.
#[derive(Debug, Clone)]
pub struct Meta {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub watchdog_usec: Option<u64>,
    /// Why the state file is behind the history the agent holds (its last write failed).
    pub state_write_error: Option<String>,
}

/// Builds the status document from the state and what is observed now. `agent`: `None` when
/// the document comes from the state file with no agent answering.
pub fn document(
    s: &Settings,
    doc: &StateDoc,
    validation: &Validation,
    agent: Option<&Meta>,
) -> StatusDoc {
    let master = read_pid_file(&s.pid_file.value)
        .ok()
        .filter(|p| matches!(classify(*p), Role::Master));
    let exists = |p: &Path| p.symlink_metadata().is_ok();
    status::document(&Inputs {
        settings: s,
        state: doc,
        now: Utc::now(),
        validation: validation.clone(),
        files: FilesPresent {
            flag: exists(&s.restart_flag.value),
            pid: exists(&s.pid_file.value),
            state: exists(&s.state_file.value),
        },
        agent: agent.map(|m| AgentInfo {
            pid: m.pid,
            version: env!("CARGO_PKG_VERSION"),
            started_at: m.started_at,
            watchdog_usec: m.watchdog_usec,
            state_write_error: m.state_write_error.as_deref(),
        }),
        gunicorn: Gunicorn {
            master_pid: master,
            workers: master.map(children).unwrap_or_default(),
            bind: s.bind.value.clone(),
        },
        source: if agent.is_some() {
            Source::Agent
        } else {
            Source::StateFile
        },
    })
}

/// The D-Bus properties for `doc` now.
pub fn snapshot(s: &Settings, doc: &StateDoc, contract_valid: bool) -> Snapshot {
    let now = Utc::now().timestamp_millis();
    let e = crate::ledger::policy::evaluate(&doc.executed(), now, &s.policy);
    let ks = doc.kill_switch.clone().unwrap_or_default();
    let last_executed = doc
        .history
        .iter()
        .rev()
        .find(|h| h.executed())
        .and_then(|h| h.executed_at_ms())
        .and_then(|ms| {
            DateTime::<Utc>::from_timestamp_millis(ms).map(crate::ledger::state::format_time)
        });
    Snapshot {
        policy_state: e.state.as_str().into(),
        cooldown_remaining: e.cooldown_remaining_seconds,
        attempts_in_window: e.attempts_in_window,
        kill_switch_engaged: ks.engaged,
        kill_switch_reason: ks.reason.unwrap_or_default(),
        last_restart_at: last_executed.unwrap_or_default(),
        last_restart_decision: doc
            .last_restart
            .as_ref()
            .and_then(|l| l.decision.clone())
            .unwrap_or_default(),
        contract_valid,
    }
}

/// Refreshes the gauges that follow the state.
pub fn gauges(m: &Metrics, s: &Settings, doc: &StateDoc) {
    let now = Utc::now().timestamp_millis();
    m.set_policy(&crate::ledger::policy::evaluate(
        &doc.executed(),
        now,
        &s.policy,
    ));
    m.set_kill_switch(doc.kill_switch.as_ref().is_some_and(|k| k.engaged));
}

/// Writes `WARDEN_STATUS_FILE` (readable by the app: 0644).
pub fn publish_status(path: &Path, d: &StatusDoc) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(d).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::platform::fs::write_atomic(path, &bytes, 0o644)
}

/// Writes `WARDEN_KILL_SWITCH_FILE`: `{engaged, reason, changed_by, changed_at}` (0644).
pub fn publish_kill_switch(path: &Path, k: &KillSwitch) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec_pretty(k).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    crate::platform::fs::write_atomic(path, &bytes, 0o644)
}
