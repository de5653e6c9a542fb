//! One restart request, start to finish: the policy's decision, the Gunicorn master found and
//! checked, the restart recorded as intended before the signal and as completed after, and the
//! reload verified (old workers gone, the count back with new PIDs, the listening socket still
//! the master's, the health URL answering). Blocking: the agent runs it off its event loop.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};

use crate::agent::flag::{FlagRequest, Rejection};
use crate::config::Settings;
use crate::ledger::intent::IntentLog;
use crate::ledger::policy::{self, Verdict};
use crate::ledger::state::{Entry, StateDoc, format_time};
use crate::platform::process::{
    PidFd, Role, children, classify, holds_socket, read_pid_file, stat,
};

/// How long a missing PID file is waited for: gunicorn deletes and re-creates it on HUP.
const PID_FILE_GRACE: Duration = Duration::from_secs(2);

/// The outcome of one request, for logs and the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Rejected(String),
    Blocked {
        reason: &'static str,
        requires_acknowledgement: bool,
    },
    Failed(String),
    Executed {
        verified: bool,
        detail: String,
    },
}

/// Writes the history as the executor goes: the state file, durably, after each change, and
/// the intent record before a signal (`crate::ledger::intent`). A write error is logged, never fatal
/// to the request: the history stays in memory, [`Journal::unsaved`] says why the file is
/// behind it, and the next write (a change, or the executor's retry) writes it whole.
pub struct Journal<'a> {
    path: &'a Path,
    /// `None` when the intent record could not be opened: intents then go to the state file,
    /// slower but as durable.
    intents: Option<&'a mut IntentLog>,
    /// An intent written and not yet flushed.
    unsynced: bool,
    /// Why the state file is behind the history in memory (its last write failed), if it is.
    pub unsaved: Option<String>,
}

impl<'a> Journal<'a> {
    pub fn new(
        path: &'a Path,
        intents: Option<&'a mut IntentLog>,
        unsaved: Option<String>,
    ) -> Journal<'a> {
        Journal {
            path,
            intents,
            unsynced: false,
            unsaved,
        }
    }

    /// Stores the state durably; a failure is logged and kept in [`Journal::unsaved`].
    pub fn save(&mut self, doc: &StateDoc) {
        if let Err(e) = self.try_save(doc) {
            tracing::error!(error = %e, "cannot save the restart history; retrying");
        }
    }

    /// Stores the state durably; once it holds the outcome, the intent is forgotten.
    pub fn try_save(&mut self, doc: &StateDoc) -> Result<(), crate::ledger::state::StateError> {
        match crate::ledger::state::save(self.path, doc) {
            Ok(()) => {
                if let Some(log) = self.intents.as_deref_mut() {
                    log.clear();
                }
                self.unsaved = None;
                Ok(())
            }
            Err(e) => {
                self.unsaved = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// Records `intended` (already the newest entry of `doc`) before the signal. An error:
    /// it is recorded nowhere a crash would leave it, and nothing may be signalled.
    fn intend(&mut self, doc: &StateDoc, intended: &Entry) -> Result<(), String> {
        // While the state file is behind, the intent record may hold an earlier restart's
        // intent, which overwriting would lose: the state file then takes both, or neither.
        if self.unsaved.is_none()
            && let Some(log) = self.intents.as_deref_mut()
        {
            match log.record(intended) {
                Ok(true) => {
                    self.unsynced = true;
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot write the intent record"),
            }
        }
        self.try_save(doc).map_err(|e| e.to_string())
    }

    /// Right after the signal: makes the intent durable.
    fn signalled(&mut self) {
        if std::mem::take(&mut self.unsynced)
            && let Some(log) = self.intents.as_deref_mut()
            && let Err(e) = log.sync()
        {
            tracing::error!(error = %e, "cannot flush the intent record");
        }
    }
}

/// Makes ids unique within a process even for requests in the same millisecond.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn base_entry(req: Option<&FlagRequest>, source: &str) -> Entry {
    Entry {
        id: Some(format!(
            "{}-{}-{}",
            Utc::now().timestamp_millis(),
            std::process::id(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )),
        requested_by: req.and_then(|r| r.user.clone()),
        requested_at: Some(
            req.and_then(|r| r.timestamp.as_deref())
                .and_then(crate::ledger::state::parse_time)
                .map(format_time)
                .unwrap_or_else(|| format_time(Utc::now())),
        ),
        requested_ip: req.and_then(|r| r.ip.clone()),
        source: Some(source.to_string()),
        manual_override: req.map(|r| r.manual_override),
        override_reason: req.and_then(|r| r.override_reason.clone()),
        extra: req
            .and_then(|r| r.reason.clone())
            .map(|r| {
                [("reason".to_string(), Value::String(r))]
                    .into_iter()
                    .collect()
            })
            .unwrap_or_default(),
        ..Entry::default()
    }
}

/// Appends to the history under its length limit, keeping what the policy decides from.
fn record(doc: &mut StateDoc, s: &Settings, e: Entry) {
    let r = policy::retain(&s.policy, Utc::now().timestamp_millis());
    doc.push(e, s.history_max, r);
}

/// Records a flag that failed intake.
pub fn reject(doc: &mut StateDoc, s: &Settings, why: &Rejection, j: &mut Journal<'_>) -> Outcome {
    let mut e = base_entry(None, "manual");
    e.completed_at = Some(format_time(Utc::now()));
    e.success = Some(false);
    e.decision = Some("rejected".into());
    e.decision_reason = Some(why.code().into());
    e.extra
        .insert("rejection".into(), Value::String(why.to_string()));
    record(doc, s, e);
    j.save(doc);
    Outcome::Rejected(why.to_string())
}

/// Decides and, when allowed, performs a restart. `req` is what the history records of the
/// request; `ask` is what the policy decides (a flag can only ask as `manual` or `auto`; the
/// kill-switch's rollback asks as itself). `decided` hears the decision and the entry's id
/// before anything is signalled.
pub fn handle(
    doc: &mut StateDoc,
    s: &Settings,
    req: &FlagRequest,
    ask: &policy::Request,
    written_at: Option<std::time::SystemTime>,
    j: &mut Journal<'_>,
    decided: &mut dyn FnMut(&policy::Decision, &str),
) -> Outcome {
    let now = Utc::now();
    let eval = policy::evaluate(&doc.executed(), now.timestamp_millis(), &s.policy);
    let d = policy::decide(ask, &eval);
    let mut e = base_entry(Some(req), &req.source);
    e.policy_state = serde_json::to_value(&eval).ok();
    e.decision_reason = Some(d.reason.into());
    decided(&d, e.id.as_deref().unwrap_or_default());
    if !d.allowed {
        e.completed_at = Some(format_time(Utc::now()));
        e.success = Some(false);
        e.decision = Some(
            if d.decision == Verdict::Refused {
                "rejected"
            } else {
                "blocked"
            }
            .into(),
        );
        record(doc, s, e);
        j.save(doc);
        return Outcome::Blocked {
            reason: d.reason,
            requires_acknowledgement: d.requires_acknowledgement,
        };
    }
    if d.decision == Verdict::ManualOverride {
        e.extra
            .insert("override_acknowledged".into(), Value::Bool(true));
    }
    reload(doc, s, e, written_at, j)
}

fn find_master(pid_file: &Path, app_unit: Option<&str>) -> Result<(u32, u64), String> {
    let deadline = Instant::now() + PID_FILE_GRACE;
    let pid = loop {
        match read_pid_file(pid_file) {
            Ok(p) => break p,
            Err(crate::platform::fs::ReadError::Missing(_)) if Instant::now() < deadline => {
                // Gone for the instant between gunicorn's unlink and re-create; a short bounded
                // retry on this blocking thread is cheaper than setting up a watch for it.
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(crate::platform::fs::ReadError::Missing(_)) => {
                return Err("pid_file_missing".into());
            }
            Err(e) => return Err(format!("pid_file_unreadable: {e}")),
        }
    };
    match classify(pid) {
        Role::Master => {}
        Role::NotRunning => return Err(format!("pid_not_running: {pid}")),
        Role::NotGunicorn { comm } => {
            return Err(format!("pid_not_gunicorn_master: {pid} is {comm}"));
        }
        Role::Worker { master } => {
            return Err(format!(
                "pid_not_gunicorn_master: {pid} is a worker of {master}"
            ));
        }
    }
    // Under systemd, the master must be the app unit's: a gunicorn of another unit (or one
    // started by hand) is not ours to reload.
    if let Some(app) = app_unit
        && std::env::var_os("INVOCATION_ID").is_some()
    {
        match crate::platform::process::unit_of(pid) {
            Some(u) if u == app => {}
            other => {
                return Err(format!(
                    "pid_outside_app_unit: {pid} belongs to {}, not {app}",
                    other.as_deref().unwrap_or("no unit")
                ));
            }
        }
    }
    let st = stat(pid).ok_or_else(|| format!("pid_not_running: {pid}"))?;
    Ok((pid, st.start_ticks))
}

fn fail(
    doc: &mut StateDoc,
    s: &Settings,
    mut e: Entry,
    why: String,
    j: &mut Journal<'_>,
) -> Outcome {
    e.completed_at = Some(format_time(Utc::now()));
    e.success = Some(false);
    e.decision = Some("failed".into());
    e.extra.insert("failure".into(), Value::String(why.clone()));
    record(doc, s, e);
    j.save(doc);
    Outcome::Failed(why)
}

fn reload(
    doc: &mut StateDoc,
    s: &Settings,
    mut e: Entry,
    written_at: Option<std::time::SystemTime>,
    j: &mut Journal<'_>,
) -> Outcome {
    let (pid, start_ticks) = match find_master(&s.pid_file.value, s.app_unit.as_deref()) {
        Ok(m) => m,
        Err(why) => return fail(doc, s, e, why, j),
    };
    let master = match PidFd::open(pid, start_ticks) {
        Ok(m) => m,
        Err(err) => return fail(doc, s, e, format!("pid_not_running: {pid}: {err}"), j),
    };
    let old: Vec<PidFd> = children(pid)
        .into_iter()
        .filter_map(|w| stat(w).and_then(|st| PidFd::open(w, st.start_ticks).ok()))
        .collect();
    let port = crate::contract::parse_bind(&s.bind.value)
        .ok()
        .map(|b| b.port);

    // Intended before the signal: a crash from here on leaves an entry, never nothing (see
    // `crate::ledger::intent` for when it reaches the disk).
    e.decision = Some("intended".into());
    record(doc, s, e.clone());
    if let Err(why) = j.intend(doc, &e) {
        doc.history.pop();
        return fail(doc, s, e, format!("intent_not_recorded: {why}"), j);
    }

    let t0 = Instant::now();
    let sent_at = Utc::now();
    let signalled = master.send_signal(nix::sys::signal::Signal::SIGHUP);
    // From the request's write (the flag's mtime; the flip, for the kill-switch) to the
    // signal: the latency operators wait on.
    let flag_to_signal_ms = written_at
        .and_then(|w| std::time::SystemTime::now().duration_since(w).ok())
        .map(|d| d.as_secs_f64() * 1e3);
    j.signalled();
    if let Err(err) = signalled {
        doc.history.pop();
        return fail(doc, s, e, format!("signal_failed: {err}"), j);
    }
    let deadline = t0 + Duration::from_secs(s.reload_timeout_seconds);
    let left = || deadline.saturating_duration_since(Instant::now());

    let mut problems = Vec::new();
    for w in &old {
        if !w.wait_exit(left()).unwrap_or(false) {
            problems.push(format!("worker {} still running", w.pid));
        }
    }
    let old_pids: Vec<u32> = old.iter().map(|w| w.pid).collect();
    let mut replaced_ms = None;
    loop {
        let now: Vec<u32> = children(pid);
        if now.len() >= old_pids.len().max(1) && now.iter().all(|p| !old_pids.contains(p)) {
            replaced_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
            break;
        }
        if left().is_zero() {
            problems.push(format!("workers not replaced: {old_pids:?} -> {now:?}"));
            break;
        }
        // A fork gives no event to wait on: poll /proc, bounded by the reload deadline.
        std::thread::sleep(Duration::from_millis(2));
    }
    match stat(pid) {
        Some(st) if st.start_ticks == start_ticks => {}
        _ => problems.push("the master is gone".into()),
    }
    if let Some(port) = port {
        let held = crate::platform::sockets::listeners()
            .map(|ls| {
                ls.iter()
                    .any(|l| l.port == port && holds_socket(pid, l.inode))
            })
            .unwrap_or(false);
        if !held {
            problems.push(format!("port {port} is no longer held by the master"));
        }
    }
    let mut health_ms = None;
    if let Some(url) = &s.health_url {
        let p = crate::platform::http::probe(url, left().max(Duration::from_millis(100)));
        if p.healthy() {
            health_ms = Some(t0.elapsed().as_secs_f64() * 1e3);
        } else {
            problems.push(format!("health check failed: {p:?}"));
        }
    }

    let verified = problems.is_empty();
    let mut done = e;
    done.completed_at = Some(format_time(Utc::now()));
    done.success = Some(verified);
    done.decision = Some("executed".into());
    done.extra.insert("verified".into(), Value::Bool(verified));
    done.extra.insert("master_pid".into(), json!(pid));
    done.extra.insert(
        "timings".into(),
        json!({
            "signal_sent_at": format_time(sent_at),
            "flag_to_signal_ms": flag_to_signal_ms,
            "workers_replaced_ms": replaced_ms,
            "health_answered_ms": health_ms,
        }),
    );
    // A kill-switch's reload is asked at the flip: the runbook's rollback time runs from there
    // to the last worker replaced.
    if done.source.as_deref() == Some("kill_switch")
        && let (Some(f), Some(r)) = (flag_to_signal_ms, replaced_ms)
    {
        done.extra["timings"]["rollback_ms"] = json!(f + r);
    }
    if !verified {
        done.extra
            .insert("verification_problems".into(), json!(problems));
    }
    // Replace the intended entry with the completed one.
    doc.history.pop();
    record(doc, s, done);
    j.save(doc);
    Outcome::Executed {
        verified,
        detail: if verified {
            format!("workers replaced in {:.1} ms", replaced_ms.unwrap_or(0.0))
        } else {
            problems.join("; ")
        },
    }
}
