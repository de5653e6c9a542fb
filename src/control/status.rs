//! The status document: what the MES dashboard's `GET /admin/api/worker/status` serves as its
//! `data` object, built from warden's settings, state file and observations, plus warden's own
//! sections (`kill_switch`, `agent`, `gunicorn`, `source`). Pure: the caller gathers the inputs.
//!
//! Key for key as the original's route (`admin_routes.api_worker_status`): `thresholds`,
//! `alerts`, `restart_churn`, `policy_state` and `recovery_recommendation` nest under
//! `resilience` there too; nothing of them is at the top level. (Its system-status route has a
//! different `runtime_resilience` object; that is not this document.) The values follow
//! warden's semantics, not the original's defects:
//! - the policy numbers are [`policy::evaluate`]'s: only executed restarts count toward the
//!   window and the cooldown, so `restart_churn` counts what the policy counts and
//!   `cooldown` runs from the last executed restart, not the last request;
//! - timestamps are UTC RFC 3339 (the original's naive local ones are converted; one that does
//!   not parse is shown as stored);
//! - `thresholds.restart_churn_*` are the policy's own threshold and window (warden reads one
//!   set of variables for both); the pool and degraded-state thresholds are the app's, which
//!   warden does not read: the original's defaults are shown.
//!
//! The original's top-level `worker_pid` and `worker_start_time` describe the Flask worker that
//! answered the request; warden, outside the app, gives the newest worker of the master (the
//! last reload's), which is what the dashboard's worker tab shows.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{AutoRecovery, Settings};
use crate::fleet::coordinator::FleetStatus;
use crate::ledger::policy::{self, Evaluation};
use crate::ledger::state::{self, Entry, StateDoc};
pub use crate::recovery::recommend::{self, Recommendation, RecoveryAction, RecoveryReason};
use crate::recovery::watcher::RecoveryStatus;

/// How many history entries the document carries, the newest: as many as the original shows.
pub const HISTORY_SHOWN: usize = 20;

/// Where the document's facts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DocumentSource {
    /// The running agent.
    Agent,
    /// The state file, read while no agent answered.
    StateFile,
}

/// The runtime contract's validation, as the document carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    pub valid: bool,
    pub errors: Vec<String>,
}

/// Whether the contract's files exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesPresent {
    pub flag: bool,
    pub pid: bool,
    pub state: bool,
}

/// The agent that answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo<'a> {
    pub pid: u32,
    pub version: &'a str,
    pub started_at: DateTime<Utc>,
    /// systemd's `WATCHDOG_USEC`, when the agent runs under a watchdog.
    pub watchdog_usec: Option<u64>,
    /// Why the state file is behind the agent's history (its last write failed, e.g. on a full
    /// disk): the agent is degraded and retries.
    pub state_write_error: Option<&'a str>,
}

/// The Gunicorn master and its workers as observed, and the bind it serves (also the
/// document's `gunicorn` section).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gunicorn {
    pub master_pid: Option<u32>,
    pub workers: Vec<u32>,
    pub bind: String,
}

/// A Gunicorn worker and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Worker {
    pub pid: u32,
    pub started_at: DateTime<Utc>,
}

/// Everything the document is built from.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub settings: &'a Settings,
    pub state: &'a StateDoc,
    pub now: DateTime<Utc>,
    pub validation: Validation,
    pub files: FilesPresent,
    /// `None` when no agent answered (the document then comes from the state file).
    pub agent: Option<AgentInfo<'a>>,
    pub gunicorn: Gunicorn,
    /// The master's newest worker.
    pub newest_worker: Option<Worker>,
    /// The agent's probes and breaker (`None` from the state file).
    pub recovery: Option<RecoveryStatus>,
    /// The agent's reload slot in its fleet group (`None` without a fleet, or an agent).
    pub fleet: Option<FleetStatus>,
    pub source: DocumentSource,
}

/// The status document. Field order is the serialized order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    /// The original's: the worker that answered. warden's: the newest worker of the master,
    /// whose start is the last reload's (`null` without one).
    pub worker_pid: Option<u32>,
    pub worker_start_time: Option<String>,
    pub runtime_contract: RuntimeContract,
    pub cooldown: Cooldown,
    pub resilience: Resilience,
    /// The newest [`HISTORY_SHOWN`] entries, oldest first, as stored (timestamps in UTC).
    pub restart_history: Vec<Entry>,
    pub last_restart: LastRestart,
    pub kill_switch: KillSwitchStatus,
    /// `null` when no agent answered.
    pub agent: Option<AgentSection>,
    pub gunicorn: Gunicorn,
    /// Whether a reload is preceded by the app's own `gunicorn --check-config`.
    pub preflight: PreflightStatus,
    /// The agent's probes of the app, automatic recovery and its breaker (`null` when no agent
    /// answered).
    #[serde(default)]
    pub recovery: Option<RecoveryStatus>,
    /// The agent's reload slot in its fleet group (`null` without a fleet, or an agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
    pub source: DocumentSource,
}

/// The preflight as configured (`WARDEN_PREFLIGHT`, `WARDEN_PREFLIGHT_TIMEOUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreflightStatus {
    pub enabled: bool,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeContract {
    pub version: String,
    pub validation: Validation,
    pub single_port_bind: String,
    pub watchdog: WatchdogPaths,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogPaths {
    pub runtime_dir: String,
    pub flag_path: String,
    pub flag_exists: bool,
    pub pid_path: String,
    pub pid_exists: bool,
    pub state_path: String,
    pub state_exists: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldown {
    pub active: bool,
    pub remaining_seconds: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resilience {
    pub thresholds: Thresholds,
    pub alerts: Alerts,
    pub restart_churn: RestartChurn,
    pub policy_state: Evaluation,
    pub recovery_recommendation: Recommendation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub degraded_alert_seconds: u64,
    pub pool_saturation_warning: f64,
    pub pool_saturation_critical: f64,
    pub restart_churn_window_seconds: u64,
    pub restart_churn_threshold: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerts {
    pub restart_churn_exceeded: bool,
    pub restart_blocked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartChurn {
    pub window_seconds: u64,
    pub threshold: u32,
    pub count: u32,
    pub exceeded: bool,
    /// The newest executed restart's completion.
    pub last_completed_at: Option<String>,
}

/// The serde name of a unit variant.
fn word<T: Serialize>(t: &T) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The last request's summary, as the original's route shapes it (every key, `null` if unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRestart {
    pub requested_by: Option<String>,
    pub requested_at: Option<String>,
    pub requested_ip: Option<String>,
    pub completed_at: Option<String>,
    pub success: Option<bool>,
}

/// The kill switch with every key present (`engaged: false` if never flipped).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitchStatus {
    pub engaged: bool,
    pub reason: Option<String>,
    pub changed_by: Option<String>,
    pub changed_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentSection {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub watchdog_usec: Option<u64>,
    /// `null` while the state file holds the agent's history; else why it could not be
    /// written (the agent retries each second).
    #[serde(default)]
    pub state_write_error: Option<String>,
}

/// A stored timestamp in UTC RFC 3339; one that does not parse is passed through.
fn utc(t: Option<&str>) -> Option<String> {
    t.map(|s| {
        state::parse_time(s)
            .map(state::format_time)
            .unwrap_or_else(|| s.to_string())
    })
}

fn utc_entry(e: &Entry) -> Entry {
    Entry {
        requested_at: utc(e.requested_at.as_deref()),
        completed_at: utc(e.completed_at.as_deref()),
        ..e.clone()
    }
}

/// The original's recommendation: from the latest probe of the app and the policy, as its
/// `/health` computes it; without a probe, as its status route does, from the policy alone.
fn recommendation(
    recovery: Option<&RecoveryStatus>,
    eval: &Evaluation,
    churn_exceeded: bool,
) -> Recommendation {
    match recovery.and_then(|r| r.probe.as_ref()?.last.as_ref()) {
        Some(o) => recommend::recommend(&recommend::Inputs {
            degraded_reason: o.degraded_reason(),
            pool_saturation: o.pool_saturation(),
            circuit_state: o.circuit_state(),
            restart_churn_exceeded: churn_exceeded,
            cooldown_active: eval.cooldown,
        }),
        None => recommend::from_policy(eval.blocked, churn_exceeded, eval.cooldown),
    }
}

/// Builds the document.
pub fn document(i: &Observed) -> StatusDoc {
    let s = i.settings;
    let cfg = &s.policy;
    let eval = policy::evaluate(&i.state.executed(), i.now.timestamp_millis(), cfg);
    let last_completed = i
        .state
        .history
        .iter()
        .filter(|e| e.executed())
        .filter_map(|e| e.completed_at.as_deref().and_then(state::parse_time))
        .max();
    let churn = RestartChurn {
        window_seconds: eval.window_seconds,
        threshold: eval.churn_threshold,
        count: eval.attempts_in_window,
        exceeded: eval.attempts_in_window >= eval.churn_threshold,
        last_completed_at: last_completed.map(state::format_time),
    };
    let path = |p: &std::path::Path| p.display().to_string();
    let last = i.state.last_restart.as_ref();
    let skip = i.state.history.len().saturating_sub(HISTORY_SHOWN);
    StatusDoc {
        worker_pid: i.newest_worker.map(|w| w.pid),
        worker_start_time: i.newest_worker.map(|w| state::format_time(w.started_at)),
        runtime_contract: RuntimeContract {
            version: s.contract_version.value.clone(),
            validation: i.validation.clone(),
            single_port_bind: s.bind.value.to_string(),
            watchdog: WatchdogPaths {
                runtime_dir: path(&s.runtime_dir.value),
                flag_path: path(&s.restart_flag.value),
                flag_exists: i.files.flag,
                pid_path: path(&s.pid_file.value),
                pid_exists: i.files.pid,
                state_path: path(&s.state_file.value),
                state_exists: i.files.state,
            },
        },
        cooldown: Cooldown {
            active: eval.cooldown,
            remaining_seconds: eval.cooldown_remaining_seconds,
        },
        resilience: Resilience {
            thresholds: Thresholds {
                degraded_alert_seconds: s.resilience.degraded_alert_seconds,
                pool_saturation_warning: s.resilience.pool_saturation_warning,
                pool_saturation_critical: s.resilience.pool_saturation_critical,
                restart_churn_window_seconds: eval.window_seconds,
                restart_churn_threshold: eval.churn_threshold,
            },
            alerts: Alerts {
                restart_churn_exceeded: churn.exceeded,
                restart_blocked: eval.blocked,
            },
            recovery_recommendation: recommendation(i.recovery.as_ref(), &eval, churn.exceeded),
            restart_churn: churn,
            policy_state: eval,
        },
        restart_history: i.state.history[skip..].iter().map(utc_entry).collect(),
        last_restart: LastRestart {
            requested_by: last.and_then(|l| l.requested_by.clone()),
            requested_at: utc(last.and_then(|l| l.requested_at.as_deref())),
            requested_ip: last.and_then(|l| l.requested_ip.clone()),
            completed_at: utc(last.and_then(|l| l.completed_at.as_deref())),
            success: last.and_then(|l| l.success),
        },
        kill_switch: i
            .state
            .kill_switch
            .as_ref()
            .map(|k| KillSwitchStatus {
                engaged: k.engaged,
                reason: k.reason.clone(),
                changed_by: k.changed_by.clone(),
                changed_at: utc(k.changed_at.as_deref()),
            })
            .unwrap_or_default(),
        agent: i.agent.as_ref().map(|a| AgentSection {
            pid: a.pid,
            version: a.version.to_string(),
            started_at: state::format_time(a.started_at),
            watchdog_usec: a.watchdog_usec,
            state_write_error: a.state_write_error.map(str::to_string),
        }),
        gunicorn: i.gunicorn.clone(),
        preflight: PreflightStatus {
            enabled: i.settings.preflight.is_some(),
            timeout_seconds: i.settings.preflight.map(|t| t.as_secs()),
        },
        recovery: i.recovery.clone(),
        fleet: i.fleet.clone(),
        source: i.source,
    }
}

/// Text from the state file, safe to print: control characters (terminal escapes, forged
/// lines) are shown escaped.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The dotted paths of every object key of `v`, not descending into lists: what
/// [`KEY_PATHS`] lists for a status document.
pub fn key_paths(v: &serde_json::Value) -> std::collections::BTreeSet<String> {
    fn walk(v: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(child, &p, out);
                out.insert(p);
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// Reads a document back from its JSON (the CLI's copy of the agent's `Status()`). The history
/// is read as the state file's is, leniently: an entry another writer shaped differently is
/// kept as it is, not refused.
pub fn from_json(mut v: serde_json::Value) -> Result<StatusDoc, String> {
    let history = v
        .get_mut("restart_history")
        .map(serde_json::Value::take)
        .unwrap_or_default();
    v["restart_history"] = serde_json::Value::Array(vec![]);
    let mut d: StatusDoc = serde_json::from_value(v).map_err(|e| e.to_string())?;
    let wrapped = serde_json::json!({ "history": history }).to_string();
    d.restart_history = crate::ledger::state::parse(wrapped.as_bytes())?.history;
    Ok(d)
}

/// The probes and the breaker, for people (`warden recovery`).
pub fn recovery_summary(d: &StatusDoc) -> Vec<String> {
    use crate::recovery::observation::Http;
    let Some(r) = &d.recovery else {
        return vec![
            "no agent answered: the probes and the breaker are the running agent's".into(),
        ];
    };
    let mut out = vec![format!("automatic recovery: {}", r.mode)];
    match &r.probe {
        None => out.push("probes: off (set WARDEN_HEALTH_URL and WARDEN_PROBE_INTERVAL)".into()),
        Some(p) => {
            out.push(format!(
                "probes: {} every {} s (timeout {} s)",
                clean(&p.url),
                p.interval_seconds,
                p.timeout_seconds
            ));
            if let Some(o) = &p.last {
                let http = match &o.http {
                    Http::Answered { status, latency_ms } => {
                        format!("{status} in {latency_ms:.1} ms")
                    }
                    Http::TimedOut { after_ms } => format!("no answer within {after_ms:.0} ms"),
                    Http::Failed { error } => clean(error),
                };
                let mut line = format!("last probe: {http}");
                if let Some(reason) = o.degraded_reason() {
                    line += &format!(", degraded: {}", clean(reason));
                }
                if let Some(s) = o.pool_saturation() {
                    line += &format!(", pool saturation {s}");
                }
                if let Some(w) = o.workers {
                    line += &format!(", {w} workers");
                }
                out.push(line);
            }
            if p.consecutive_failures > 0 {
                out.push(format!(
                    "failing probes in a row: {}",
                    p.consecutive_failures
                ));
            }
        }
    }
    let b = &r.breaker;
    let mut line = format!(
        "breaker: {} since {} ({} of {} probes call for a restart)",
        b.state,
        clean(&b.since),
        b.evidence,
        b.needed
    );
    if let Some(t) = &b.last_transition {
        line += &format!("; last change: {} → {} ({})", t.from, t.to, t.why);
    }
    out.push(line);
    let rec = &d.resilience.recovery_recommendation;
    out.push(format!(
        "recommendation: {} ({})",
        word(&rec.action),
        clean(rec.reason.as_str())
    ));
    out
}

/// A few lines for people (`warden status` without `--json`).
pub fn summary(d: &StatusDoc) -> String {
    let p = &d.resilience.policy_state;
    let mut out = Vec::new();
    let mut line = format!(
        "policy: {}, {}/{} restarts in the last {} s",
        p.state.as_str(),
        p.attempts_in_window,
        p.retry_budget.min(p.churn_threshold),
        p.window_seconds
    );
    if d.cooldown.active {
        line += &format!(", cooldown {} s left", d.cooldown.remaining_seconds);
    }
    out.push(line);
    let r = &d.resilience.recovery_recommendation;
    if r.action != RecoveryAction::None {
        out.push(format!(
            "recommendation: {} ({})",
            word(&r.action),
            word(&r.reason)
        ));
    }
    if let Some(r) = &d.recovery
        && (r.probe.is_some() || r.mode != AutoRecovery::Off)
    {
        out.push(format!(
            "automatic recovery: {}, breaker {}",
            r.mode, r.breaker.state
        ));
    }
    if let Some(f) = &d.fleet {
        out.push(match (&f.held_slot, &f.waiting_since) {
            (Some(slot), _) => format!(
                "fleet: group {}, slot {slot} held since {}{}",
                f.group,
                f.held_since.as_deref().unwrap_or("?"),
                if f.kept_after_failure {
                    " (kept after a failed reload: warden fleet release gives it back)"
                } else {
                    ""
                }
            ),
            (None, Some(since)) => {
                format!("fleet: group {}, waiting for a slot since {since}", f.group)
            }
            (None, None) => format!("fleet: group {}, {} slot(s), none held", f.group, f.slots),
        });
    }
    let k = &d.kill_switch;
    out.push(if k.engaged {
        format!(
            "kill switch: ENGAGED by {} at {}: {}",
            clean(k.changed_by.as_deref().unwrap_or("unknown")),
            clean(k.changed_at.as_deref().unwrap_or("an unknown time")),
            clean(k.reason.as_deref().unwrap_or("no reason recorded"))
        )
    } else {
        "kill switch: off".to_string()
    });
    // The newest history entry carries the decision; the original's last_restart does not.
    out.push(match d.restart_history.last() {
        Some(e) => format!(
            "last request: {}{} at {}",
            clean(
                &e.decision
                    .as_ref()
                    .map_or_else(|| "undecided".to_string(), ToString::to_string)
            ),
            e.decision_reason
                .as_ref()
                .map(|r| format!(" ({})", clean(&r.to_string())))
                .unwrap_or_default(),
            clean(
                e.completed_at
                    .as_deref()
                    .or(e.requested_at.as_deref())
                    .unwrap_or("an unknown time")
            )
        ),
        // A file whose history was not a list may still name its last request.
        None => match (d.last_restart.completed_at.as_deref())
            .or(d.last_restart.requested_at.as_deref())
        {
            Some(t) => format!("last request: at {} (no decision recorded)", clean(t)),
            None => "last request: none recorded".to_string(),
        },
    });
    let g = &d.gunicorn;
    out.push(format!(
        "gunicorn: {}, {} worker(s), bind {}",
        g.master_pid
            .map_or("no master found".to_string(), |m| format!("master {m}")),
        g.workers.len(),
        clean(&g.bind)
    ));
    if !d.preflight.enabled {
        out.push("preflight: off (WARDEN_PREFLIGHT=false): reloads are not checked first".into());
    }
    let v = &d.runtime_contract.validation;
    if !v.valid {
        out.push(format!(
            "contract {}: INVALID: {}{}",
            clean(&d.runtime_contract.version),
            clean(v.errors.first().map_or("no error given", String::as_str)),
            match v.errors.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            }
        ));
    }
    out.push(match (&d.source, &d.agent) {
        (DocumentSource::Agent, Some(a)) => format!(
            "source: agent (pid {}, warden {}, since {})",
            a.pid,
            clean(&a.version),
            a.started_at
        ),
        (DocumentSource::Agent, None) => "source: agent".to_string(),
        (DocumentSource::StateFile, _) => "source: state file (no agent answered)".to_string(),
    });
    out.join("\n")
}

/// Every key of the document: the original's (as `api_worker_status` builds them) and
/// warden's own. `restart_history` is a list of stored entries.
pub const KEY_PATHS: &[&str] = &[
    "worker_pid",
    "worker_start_time",
    "runtime_contract",
    "runtime_contract.version",
    "runtime_contract.validation",
    "runtime_contract.validation.valid",
    "runtime_contract.validation.errors",
    "runtime_contract.single_port_bind",
    "runtime_contract.watchdog",
    "runtime_contract.watchdog.runtime_dir",
    "runtime_contract.watchdog.flag_path",
    "runtime_contract.watchdog.flag_exists",
    "runtime_contract.watchdog.pid_path",
    "runtime_contract.watchdog.pid_exists",
    "runtime_contract.watchdog.state_path",
    "runtime_contract.watchdog.state_exists",
    "cooldown",
    "cooldown.active",
    "cooldown.remaining_seconds",
    "resilience",
    "resilience.thresholds",
    "resilience.thresholds.degraded_alert_seconds",
    "resilience.thresholds.pool_saturation_warning",
    "resilience.thresholds.pool_saturation_critical",
    "resilience.thresholds.restart_churn_window_seconds",
    "resilience.thresholds.restart_churn_threshold",
    "resilience.alerts",
    "resilience.alerts.restart_churn_exceeded",
    "resilience.alerts.restart_blocked",
    "resilience.restart_churn",
    "resilience.restart_churn.window_seconds",
    "resilience.restart_churn.threshold",
    "resilience.restart_churn.count",
    "resilience.restart_churn.exceeded",
    "resilience.restart_churn.last_completed_at",
    "resilience.policy_state",
    "resilience.policy_state.state",
    "resilience.policy_state.allowed",
    "resilience.policy_state.cooldown",
    "resilience.policy_state.blocked",
    "resilience.policy_state.cooldown_remaining_seconds",
    "resilience.policy_state.attempts_in_window",
    "resilience.policy_state.retry_budget",
    "resilience.policy_state.churn_threshold",
    "resilience.policy_state.window_seconds",
    "resilience.recovery_recommendation",
    "resilience.recovery_recommendation.action",
    "resilience.recovery_recommendation.reason",
    "restart_history",
    "last_restart",
    "last_restart.requested_by",
    "last_restart.requested_at",
    "last_restart.requested_ip",
    "last_restart.completed_at",
    "last_restart.success",
    "kill_switch",
    "kill_switch.engaged",
    "kill_switch.reason",
    "kill_switch.changed_by",
    "kill_switch.changed_at",
    "agent",
    "agent.pid",
    "agent.version",
    "agent.started_at",
    "agent.watchdog_usec",
    "agent.state_write_error",
    "gunicorn",
    "gunicorn.master_pid",
    "gunicorn.workers",
    "gunicorn.bind",
    "preflight",
    "preflight.enabled",
    "preflight.timeout_seconds",
    "recovery",
    "recovery.mode",
    "recovery.probe",
    "recovery.breaker",
    "recovery.breaker.state",
    "recovery.breaker.since",
    "recovery.breaker.evidence",
    "recovery.breaker.needed",
    "recovery.breaker.settle_seconds",
    "recovery.breaker.last_transition",
    "source",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layers, PolicyConfig};
    use crate::ledger::model::{Decision, Reason, Recorded};
    use crate::ledger::policy::PolicyState as State;
    use crate::ledger::state::KillSwitch;
    use proptest::prelude::*;
    use serde_json::Value;
    use std::collections::BTreeSet;

    fn settings() -> Settings {
        let l =
            Layers::load_from([("WARDEN_PROJECT_ROOT".into(), "/srv/app".into())], &[]).unwrap();
        Settings::resolve(&l, std::path::Path::new("/")).0
    }

    fn t(s: &str) -> DateTime<Utc> {
        state::parse_time(s).unwrap()
    }

    fn inputs<'a>(s: &'a Settings, d: &'a StateDoc, now: &str) -> Observed<'a> {
        Observed {
            settings: s,
            state: d,
            now: t(now),
            validation: Validation {
                valid: true,
                errors: vec![],
            },
            files: FilesPresent {
                flag: false,
                pid: true,
                state: true,
            },
            agent: Some(AgentInfo {
                pid: 4242,
                version: "0.1.0",
                started_at: t("2026-02-10T07:00:00Z"),
                watchdog_usec: Some(30_000_000),
                state_write_error: None,
            }),
            gunicorn: Gunicorn {
                master_pid: Some(100),
                workers: vec![101, 102, 103, 104],
                bind: "0.0.0.0:8080".into(),
            },
            newest_worker: Some(Worker {
                pid: 104,
                started_at: t("2026-02-10T07:30:00Z"),
            }),
            recovery: Some(crate::recovery::watcher::Watcher::new(s, 0).status(0)),
            fleet: None,
            source: DocumentSource::Agent,
        }
    }

    fn executed(at: &str) -> Entry {
        Entry {
            requested_at: Some(at.into()),
            completed_at: Some(at.into()),
            success: Some(true),
            decision: Some(Decision::Executed.into()),
            decision_reason: Some(Reason::PolicyAllowsManualRestart.into()),
            ..Entry::default()
        }
    }

    fn doc_with(history: Vec<Entry>) -> StateDoc {
        let mut d = StateDoc::default();
        for e in history {
            d.push(
                e,
                50,
                crate::ledger::policy::retain(&PolicyConfig::defaults(), 0),
            );
        }
        d
    }

    /// A file in the original's format (naive local and offset times, its decisions, an entry
    /// of the wrong shape, a blocked request).
    const ORIGINAL: &str = r#"{
      "last_restart": {"requested_by": "admin", "requested_at": "2026-02-10T08:00:00.123456",
        "requested_ip": "10.0.0.5", "completed_at": "2026-02-10T08:00:01.5", "success": true,
        "source": "manual", "decision": "executed", "decision_reason": "signal_sighup",
        "manual_override": false, "policy_state": {"state": "allowed", "guarded_mode": false}},
      "history": [
        {"requested_by": "admin", "requested_at": "2026-02-10T07:50:00+00:00",
         "completed_at": "2026-02-10T07:50:01", "success": true, "source": "auto",
         "decision": "allowed"},
        {"requested_by": "bob", "requested_at": "2026-02-10T07:55:00Z", "success": false,
         "source": "manual", "decision": "blocked",
         "decision_reason": "cooldown_override_required"},
        "garbage",
        {"requested_by": 42, "success": "yes"},
        {"requested_by": "admin", "requested_at": "2026-02-10T08:00:00.123456",
         "requested_ip": "10.0.0.5", "completed_at": "2026-02-10T08:00:01.5", "success": true,
         "source": "manual", "decision": "executed", "decision_reason": "signal_sighup",
         "manual_override": false, "policy_state": {"state": "allowed"}}
      ],
      "history_limit": 50
    }"#;

    #[test]
    fn a_document_from_the_originals_file_has_every_key() {
        let s = settings();
        let d = state::parse(ORIGINAL.as_bytes()).unwrap();
        let doc = document(&inputs(&s, &d, "2026-02-10T08:05:00Z"));
        let v = serde_json::to_value(&doc).unwrap();
        // The CLI reads the agent's JSON back into the document for its summary.
        assert_eq!(from_json(v.clone()).unwrap(), doc);
        let got = key_paths(&v);
        let want: BTreeSet<String> = KEY_PATHS.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            want,
            "missing: {:?}; extra: {:?}",
            want.difference(&got),
            got.difference(&want)
        );
        assert_eq!(v["source"], "agent");
        assert_eq!(v["runtime_contract"]["version"], "2026.02-p2");
        assert_eq!(
            v["runtime_contract"]["watchdog"]["flag_path"],
            "/srv/app/tmp/mes_dashboard_restart.flag"
        );
        assert_eq!(
            v["resilience"]["thresholds"]["pool_saturation_warning"],
            0.9
        );
        // Entries as stored, their times in UTC; the wrong-shaped one kept verbatim.
        let h = v["restart_history"].as_array().unwrap();
        assert_eq!(h.len(), 4);
        assert_eq!(h[0]["requested_at"], "2026-02-10T07:50:00.000Z");
        assert_eq!(h[1]["decision_reason"], "cooldown_override_required");
        assert_eq!(h[2]["requested_by"], 42);
        assert_eq!(h[3]["policy_state"]["state"], "allowed");
        for e in h.iter().chain([&v["last_restart"]]) {
            for k in ["requested_at", "completed_at"] {
                if let Some(t) = e[k].as_str() {
                    assert!(t.ends_with('Z') && t.len() == 24, "{k} {t}");
                }
            }
        }
        assert_eq!(v["last_restart"]["requested_ip"], "10.0.0.5");
        assert_eq!(v["last_restart"]["success"], true);
        assert_eq!(v["kill_switch"]["engaged"], false);
        assert_eq!(v["agent"]["started_at"], "2026-02-10T07:00:00.000Z");
        // The original's first two keys: the (newest) worker and when it started.
        assert_eq!(v["worker_pid"], 104);
        assert_eq!(v["worker_start_time"], "2026-02-10T07:30:00.000Z");
        assert!(
            serde_json::to_string(&doc)
                .unwrap()
                .starts_with("{\"worker_pid\":104,\"worker_start_time\":"),
            "in the original's order"
        );
        // Two restarts were executed; the blocked request does not count (the original counted it).
        let e = policy::evaluate(
            &d.executed(),
            t("2026-02-10T08:05:00Z").timestamp_millis(),
            &s.policy,
        );
        assert_eq!(doc.resilience.policy_state, e);
        assert_eq!(doc.resilience.restart_churn.count, e.attempts_in_window);
    }

    #[test]
    fn the_original_keys_come_with_null_when_nothing_is_known() {
        let s = settings();
        let d = StateDoc::default();
        let mut i = inputs(&s, &d, "2026-02-10T08:05:00Z");
        i.agent = None;
        i.source = DocumentSource::StateFile;
        i.gunicorn = Gunicorn::default();
        i.newest_worker = None;
        let doc = document(&i);
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["last_restart"]["requested_by"], Value::Null);
        assert!(
            v["last_restart"]
                .as_object()
                .unwrap()
                .contains_key("success")
        );
        assert_eq!(v["restart_history"], serde_json::json!([]));
        assert_eq!(
            v["resilience"]["restart_churn"]["last_completed_at"],
            Value::Null
        );
        assert_eq!(v["agent"], Value::Null);
        assert_eq!(v["source"], "state-file");
        assert_eq!(v["resilience"]["policy_state"]["state"], "allowed");
        assert_eq!(
            v["resilience"]["recovery_recommendation"],
            serde_json::json!({"action": "none", "reason": "healthy"})
        );
        let text = summary(&doc);
        assert!(text.contains("last request: none recorded"), "{text}");
        let d = state::parse(
            br#"{"history": 3, "last_restart": {"requested_at": "2026-02-10T08:00:00Z"}}"#,
        )
        .unwrap();
        i.state = &d;
        assert!(
            summary(&document(&i))
                .contains("last request: at 2026-02-10T08:00:00.000Z (no decision recorded)")
        );
        assert!(text.contains("no master found, 0 worker(s)"), "{text}");
        assert!(text.contains("source: state file"), "{text}");
    }

    #[test]
    fn cooldown_is_active_with_the_time_left() {
        let s = settings();
        let d = doc_with(vec![executed("2026-02-10T08:00:00Z")]);
        let doc = document(&inputs(&s, &d, "2026-02-10T08:00:20Z"));
        assert_eq!(
            doc.cooldown,
            Cooldown {
                active: true,
                remaining_seconds: 40
            }
        );
        let p = &doc.resilience.policy_state;
        assert_eq!(
            (p.state, p.allowed, p.cooldown),
            (State::Cooldown, false, true)
        );
        assert_eq!(p.cooldown_remaining_seconds, 40);
        // In cooldown alone the original advises nothing.
        assert_eq!(
            doc.resilience.recovery_recommendation.action,
            RecoveryAction::None
        );
        assert_eq!(
            doc.resilience.restart_churn.last_completed_at.as_deref(),
            Some("2026-02-10T08:00:00.000Z")
        );
        assert!(
            summary(&doc)
                .contains("policy: cooldown, 1/3 restarts in the last 600 s, cooldown 40 s left")
        );
        // A minute later it is over.
        let doc = document(&inputs(&s, &d, "2026-02-10T08:01:00Z"));
        assert_eq!(
            doc.cooldown,
            Cooldown {
                active: false,
                remaining_seconds: 0
            }
        );
        assert_eq!(doc.resilience.policy_state.state, State::Allowed);
    }

    #[test]
    fn only_executed_restarts_start_a_cooldown() {
        let s = settings();
        let mut blocked = executed("2026-02-10T08:00:00Z");
        blocked.decision = Some(Decision::Blocked.into());
        blocked.decision_reason = Some(Reason::CooldownOverrideRequired.into());
        blocked.success = Some(false);
        let d = doc_with(vec![blocked]);
        let doc = document(&inputs(&s, &d, "2026-02-10T08:00:10Z"));
        assert!(!doc.cooldown.active);
        assert_eq!(doc.resilience.restart_churn.count, 0);
        assert_eq!(doc.resilience.restart_churn.last_completed_at, None);
        // The last request is shown all the same.
        assert_eq!(
            doc.last_restart.requested_at.as_deref(),
            Some("2026-02-10T08:00:00.000Z")
        );
        assert!(summary(&doc).contains(
            "last request: blocked (cooldown_override_required) at 2026-02-10T08:00:00.000Z"
        ));
    }

    #[test]
    fn blocked_raises_the_alert_and_a_recommendation() {
        let s = settings();
        let d = doc_with(
            ["07:58:00", "08:00:00", "08:02:00"]
                .iter()
                .map(|h| executed(&format!("2026-02-10T{h}Z")))
                .collect(),
        );
        let doc = document(&inputs(&s, &d, "2026-02-10T08:05:00Z"));
        let r = &doc.resilience;
        assert!(r.policy_state.blocked && !r.policy_state.allowed);
        assert_eq!(r.policy_state.state, State::Blocked);
        assert_eq!(
            r.alerts,
            Alerts {
                restart_churn_exceeded: true,
                restart_blocked: true
            }
        );
        assert_eq!(
            (
                r.restart_churn.count,
                r.restart_churn.threshold,
                r.restart_churn.exceeded
            ),
            (3, 3, true)
        );
        assert_eq!(
            r.recovery_recommendation,
            Recommendation {
                action: RecoveryAction::ThrottleAndInvestigateQueries,
                reason: RecoveryReason::RestartChurnExceeded
            }
        );
        let text = summary(&doc);
        assert!(text.contains("policy: blocked, 3/3"), "{text}");
        assert!(
            text.contains("recommendation: throttle_and_investigate_queries"),
            "{text}"
        );

        // Blocked by the retry budget below the churn threshold.
        let mut s2 = settings();
        s2.policy = PolicyConfig {
            retry_budget: std::num::NonZeroU32::new(2).unwrap(),
            churn_threshold: std::num::NonZeroU32::new(5).unwrap(),
            ..PolicyConfig::defaults()
        };
        let doc = document(&inputs(&s2, &d, "2026-02-10T08:05:00Z"));
        let r = &doc.resilience;
        assert!(r.alerts.restart_blocked && !r.alerts.restart_churn_exceeded);
        assert_eq!(
            r.recovery_recommendation.reason,
            RecoveryReason::RetryBudgetExhausted
        );
        assert_eq!(r.thresholds.restart_churn_threshold, 5);
        // And within the cooldown too.
        let doc = document(&inputs(&s2, &d, "2026-02-10T08:02:30Z"));
        assert_eq!(
            doc.resilience.recovery_recommendation.action,
            RecoveryAction::WaitForRestartCooldown
        );

        // Guarded mode off: never blocked, no advice, though churn is over its threshold.
        s2.policy.guarded_mode = false;
        let doc = document(&inputs(&s2, &d, "2026-02-10T08:05:00Z"));
        assert!(!doc.resilience.alerts.restart_blocked);
        assert_eq!(
            doc.resilience.recovery_recommendation.action,
            RecoveryAction::None
        );
    }

    #[test]
    fn history_shows_the_newest_entries() {
        let s = settings();
        let d = doc_with(
            (0..30)
                .map(|i| Entry {
                    id: Some(i.to_string()),
                    ..Entry::default()
                })
                .collect(),
        );
        let doc = document(&inputs(&s, &d, "2026-02-10T08:05:00Z"));
        assert_eq!(doc.restart_history.len(), HISTORY_SHOWN);
        assert_eq!(doc.restart_history[0].id.as_deref(), Some("10"));
        assert_eq!(doc.restart_history[19].id.as_deref(), Some("29"));
    }

    #[test]
    fn kill_switch_round_trip() {
        let s = settings();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let mut d = state::parse(ORIGINAL.as_bytes()).unwrap();
        d.kill_switch = Some(
            KillSwitch::flip(
                true,
                Some("release 4.2 leaks"),
                Some("ops"),
                t("2026-02-10T08:01:00Z"),
            )
            .unwrap(),
        );
        state::save(&p, &d).unwrap();
        let back = state::load(&p).unwrap().doc();
        let doc = document(&inputs(&s, &back, "2026-02-10T08:05:00Z"));
        assert_eq!(
            doc.kill_switch,
            KillSwitchStatus {
                engaged: true,
                reason: Some("release 4.2 leaks".into()),
                changed_by: Some("ops".into()),
                changed_at: Some("2026-02-10T08:01:00.000Z".into()),
            }
        );
        let text = summary(&doc);
        assert!(
            text.contains(
                "kill switch: ENGAGED by ops at 2026-02-10T08:01:00.000Z: release 4.2 leaks"
            ),
            "{text}"
        );
        // Disengaged, the last flip is still shown.
        let mut d = back;
        d.kill_switch =
            Some(KillSwitch::flip(false, None, Some("ops"), t("2026-02-10T09:00:00Z")).unwrap());
        state::save(&p, &d).unwrap();
        let doc = document(&inputs(
            &s,
            &state::load(&p).unwrap().doc(),
            "2026-02-10T09:05:00Z",
        ));
        assert!(!doc.kill_switch.engaged);
        assert_eq!(
            doc.kill_switch.changed_at.as_deref(),
            Some("2026-02-10T09:00:00.000Z")
        );
        assert!(summary(&doc).contains("kill switch: off"));
    }

    #[test]
    fn the_summary_escapes_what_the_file_says() {
        let s = settings();
        let mut d = doc_with(vec![Entry {
            decision: Some(Recorded::Other("executed\u{1b}[2J".into())),
            ..executed("2026-02-10T08:00:00Z")
        }]);
        // Written by another tool, not through `KillSwitch::flip`.
        d.kill_switch = Some(KillSwitch {
            engaged: true,
            reason: Some("a\nforged line".into()),
            ..KillSwitch::default()
        });
        let mut i = inputs(&s, &d, "2026-02-10T09:00:00Z");
        i.validation = Validation {
            valid: false,
            errors: vec!["WATCHDOG_STATE_FILE is not absolute".into(), "x".into()],
        };
        let text = summary(&document(&i));
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains("a\\nforged line"), "{text}");
        assert!(
            text.contains("INVALID: WATCHDOG_STATE_FILE is not absolute (and 1 more)"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 6, "{text}");
    }

    fn time_text() -> impl Strategy<Value = Option<String>> {
        let base = 1_770_710_400i64; // 2026-02-10T08:00:00Z
        proptest::option::of(prop_oneof![
            (-4000i64..4000).prop_map(move |d| {
                state::format_time(DateTime::from_timestamp(base + d, 0).unwrap())
            }),
            (-4000i64..4000).prop_map(move |d| {
                DateTime::from_timestamp(base + d, 0)
                    .unwrap()
                    .naive_utc()
                    .format("%Y-%m-%dT%H:%M:%S%.6f")
                    .to_string()
            }),
            "\\PC{0,12}",
        ])
    }

    fn entry() -> impl Strategy<Value = Entry> {
        let decisions = prop_oneof![
            Just(None),
            proptest::sample::select(vec![
                "executed",
                "blocked",
                "failed",
                "rejected",
                "intended",
                "unknown",
                "allowed",
                "manual_override",
            ])
            .prop_map(|d| Some(d.parse::<Recorded<Decision>>().unwrap())),
        ];
        (
            decisions,
            proptest::option::of(any::<bool>()),
            time_text(),
            time_text(),
            ".{0,6}",
        )
            .prop_map(
                |(decision, success, requested_at, completed_at, by)| Entry {
                    decision,
                    success,
                    requested_at,
                    completed_at,
                    requested_by: Some(by),
                    ..Entry::default()
                },
            )
    }

    use crate::ledger::policy::strategy::config as policy_config;

    proptest! {
        #[test]
        fn the_document_agrees_with_the_policy(
            history in proptest::collection::vec(entry(), 0..40),
            cfg in policy_config(),
            now_offset in -1000i64..5000,
            reason in proptest::option::of(any::<String>()),
            engaged in any::<bool>(),
        ) {
            let mut s = settings();
            s.policy = cfg;
            let mut d = StateDoc::default();
            for e in history {
                d.push(e, 50, crate::ledger::policy::retain(&PolicyConfig::defaults(), 0));
            }
            d.kill_switch = Some(KillSwitch { engaged, reason, ..KillSwitch::default() });
            let now = DateTime::from_timestamp(1_770_710_400 + now_offset, 0).unwrap();
            let mut i = inputs(&s, &d, "2026-02-10T08:00:00Z");
            i.now = now;
            let doc = document(&i);
            let e = policy::evaluate(&d.executed(), now.timestamp_millis(), &s.policy);
            let r = &doc.resilience;
            prop_assert_eq!(&r.policy_state, &e);
            prop_assert_eq!(doc.cooldown, Cooldown { active: e.cooldown, remaining_seconds: e.cooldown_remaining_seconds });
            prop_assert_eq!(r.alerts.restart_blocked, e.blocked);
            prop_assert_eq!(r.restart_churn.count, e.attempts_in_window);
            prop_assert_eq!(r.alerts.restart_churn_exceeded, e.attempts_in_window >= s.policy.churn_threshold.get());
            prop_assert_eq!(r.recovery_recommendation.action == RecoveryAction::None, !e.blocked);
            prop_assert!(doc.restart_history.len() <= HISTORY_SHOWN);
            let v = serde_json::to_value(&doc).unwrap();
            for p in KEY_PATHS {
                let ptr = format!("/{}", p.replace('.', "/"));
                prop_assert!(v.pointer(&ptr).is_some(), "{} missing", p);
            }
            let text = summary(&doc);
            prop_assert!(!text.chars().any(|c| c.is_control() && c != '\n'));
        }
    }
}
