//! One restart request, start to finish: the policy's ruling, the master found, the restart
//! recorded as intended before the signal and as completed after, and the reload verified (old
//! workers gone, the count back with new PIDs, the master the same process, the listening
//! socket still its own, the health URL answering). Blocking: the executor runs it.

use std::time::{Duration, Instant, SystemTime};

use chrono::Utc;

use super::flag::{Asker, Claimed, FlagRequest, Rejection};
use super::fleet::{Gate, GateAnswer, Slots};
use super::master::Master;
use crate::config::Settings;
use crate::fleet::coordinator::{self, Grant};
use crate::ledger::Ledger;
use crate::ledger::entry::Entry;
use crate::ledger::model::{
    Decision, Failure, FailureKind, FleetRecord, Reason, RequestSource, Timings, Verdict,
};
use crate::ledger::policy::{self, Ruling};
use crate::ledger::time::{format_time, parse_time};

/// A new entry for a request: its id, who asked, when, from where, why.
fn new_entry(req: &FlagRequest) -> Entry {
    Entry {
        id: Some(Entry::new_id(Utc::now().timestamp_millis())),
        requested_by: req.user.clone(),
        requested_at: Some(
            req.timestamp
                .as_deref()
                .and_then(parse_time)
                .map(format_time)
                .unwrap_or_else(|| format_time(Utc::now())),
        ),
        requested_ip: req.ip.clone(),
        source: Some(req.source.into()),
        manual_override: Some(req.manual_override),
        override_reason: req.override_reason.clone(),
        reason: req.reason.clone(),
        ..Entry::default()
    }
}

/// Ends an entry: when, whether it succeeded, and as what.
fn conclude(e: &mut Entry, decision: Decision, success: bool) {
    e.completed_at = Some(format_time(Utc::now()));
    e.success = Some(success);
    e.decision = Some(decision.into());
}

/// Records a flag that failed intake, with who it says asked when that could be read.
pub fn reject(ledger: &mut Ledger, why: &Rejection, asker: &Asker) -> Entry {
    let said = FlagRequest {
        user: asker.user.clone(),
        ip: asker.ip.clone(),
        timestamp: asker.timestamp.clone(),
        ..FlagRequest::default()
    };
    let mut e = Entry {
        manual_override: None,
        ..new_entry(&said)
    };
    conclude(&mut e, Decision::Rejected, false);
    e.decision_reason = Some(why.reason().into());
    e.rejection = Some(why.to_string());
    ledger.record(e.clone());
    e
}

/// A request as it reaches the restart flow.
pub struct Incoming<'a> {
    /// What the history records of the request.
    pub req: &'a FlagRequest,
    /// What the policy decides: a flag asks as `manual` or `auto`; the kill-switch's rollback
    /// asks as itself.
    pub ask: &'a policy::Request,
    /// When the request was made (the flag's mtime, the flip), for the flag-to-signal time.
    pub written_at: Option<SystemTime>,
    /// The flag it came in: removed once the intent is recorded and before the signal, so that
    /// an agent stopped after that point leaves an intent (settled as `unknown`), never a flag
    /// to take again.
    pub claimed: Option<&'a Claimed>,
    /// Automatic recovery's dry run: ruled on and recorded, never signalled.
    pub dry_run: bool,
}

/// What a restart asks outside its host, and the executor's turn while it waits.
pub struct Around<'a> {
    pub slots: Option<&'a mut (dyn Slots + 'static)>,
    pub gate: Option<&'a mut (dyn Gate + 'static)>,
    /// Runs at least every half second while the restart waits for a slot.
    pub turn: &'a mut dyn FnMut(),
}

/// Decides and, when allowed, performs a restart; returns the entry recorded (an automatic
/// restart deferred again by the same alerts is returned, not recorded twice). `decided` hears
/// the ruling and the entry's id before anything is signalled.
pub fn handle(
    ledger: &mut Ledger,
    master: &mut dyn Master,
    s: &Settings,
    request: Incoming<'_>,
    decided: &mut dyn FnMut(&Ruling, &str),
    around: Around<'_>,
) -> Entry {
    let Incoming {
        req,
        ask,
        written_at,
        claimed,
        dry_run,
    } = request;
    let now_ms = Utc::now().timestamp_millis();
    let eval = if dry_run {
        ledger.evaluate_rehearsal(now_ms)
    } else {
        ledger.evaluate(now_ms)
    };
    let ruling = policy::decide(ask, &eval);
    let mut e = new_entry(req);
    e.source = Some(ask.source.into());
    e.policy_state = Some(eval.recorded(ledger.policy()));
    e.decision_reason = Some(ruling.reason.into());
    decided(&ruling, e.id.as_deref().unwrap_or_default());
    if !ruling.allowed() {
        let decision = match ruling.verdict {
            Verdict::Refused => Decision::Rejected,
            _ => Decision::Blocked,
        };
        conclude(&mut e, decision, false);
        ledger.record(e.clone());
        return e;
    }
    if ruling.verdict == Verdict::Override {
        e.override_acknowledged = Some(true);
    }
    // Allowed: the decision's reason becomes what becomes of the signal, as the original
    // records it; the policy's stays beside it.
    e.policy_reason = e.decision_reason.take();
    // An automatic restart waits while an alert the gate matches fires (a database outage is
    // not cured by new workers); it is asked again at the next probe that calls for it.
    if ask.source == RequestSource::Auto
        && let Some(gate) = around.gate
        && let GateAnswer::Deferred { alerts, again } = gate.ask()
    {
        conclude(&mut e, Decision::Blocked, false);
        e.decision_reason = Some(Reason::AlertGateFiring.into());
        e.alert_gate = Some(alerts);
        // The same alerts as the last deferral: the history has it already.
        if !again {
            ledger.record(e.clone());
        }
        return e;
    }
    if dry_run {
        // Recorded as not done, which it was not: it counts toward nothing but later dry runs.
        conclude(&mut e, Decision::Blocked, false);
        e.decision_reason = Some(Reason::AutoRecoveryDryRun.into());
        ledger.record(e.clone());
        return e;
    }
    // An operator who acknowledged an override has said to go on, whether or not the policy
    // needed it: without etcd, that rule applies.
    let asker =
        coordinator::Asker::of(ask.source, ask.manual_override && ask.override_acknowledged);
    let slots = around.slots.map(|sl| (sl, asker, around.turn));
    reload(ledger, master, s, e, written_at, claimed, slots)
}

/// A slot for the reload (when the fleet coordinates), or the entry failed for want of one.
fn take_slot(
    slots: &mut dyn Slots,
    asker: coordinator::Asker,
    turn: &mut dyn FnMut(),
) -> Result<FleetRecord, (FleetRecord, Failure)> {
    let group = slots.group().to_string();
    let record = |waited: std::time::Duration| FleetRecord {
        group: group.clone(),
        slot: None,
        waited_ms: millis(waited),
        kept: false,
        without_slot: None,
        released: None,
    };
    match slots.acquire(asker, turn) {
        Grant::Slot { slot, waited, kept } => Ok(FleetRecord {
            slot: Some(slot),
            kept,
            ..record(waited)
        }),
        Grant::WithoutSlot { waited, detail } => Ok(FleetRecord {
            without_slot: Some(detail),
            ..record(waited)
        }),
        Grant::Unavailable { waited, holders } => {
            let f = Failure::new(
                FailureKind::FleetSlotUnavailable,
                format!(
                    "no reload slot of group {} came free in {:.0} s (held by {})",
                    group,
                    waited.as_secs_f64(),
                    if holders.is_empty() {
                        "?".into()
                    } else {
                        holders.join(", ")
                    }
                ),
            );
            Err((record(waited), f))
        }
        Grant::Unreachable { waited, detail } => Err((
            record(waited),
            Failure::new(FailureKind::FleetUnreachable, detail),
        )),
    }
}

fn fail(ledger: &mut Ledger, mut e: Entry, failure: Failure) -> Entry {
    conclude(&mut e, Decision::Failed, false);
    e.decision_reason = Some(failure.kind.reason().into());
    e.failure = Some(failure);
    ledger.record(e.clone());
    e
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn reload(
    ledger: &mut Ledger,
    master: &mut dyn Master,
    s: &Settings,
    mut e: Entry,
    written_at: Option<SystemTime>,
    claimed: Option<&Claimed>,
    mut slots: Option<(
        &mut (dyn Slots + 'static),
        coordinator::Asker,
        &mut dyn FnMut(),
    )>,
) -> Entry {
    let m = match master.find() {
        Ok(m) => m,
        Err(f) => return fail(ledger, e, f),
    };
    // Before anything is recorded as intended or signalled: a reload of code that does not
    // load is refused while the old workers still serve.
    let mut preflight_ms = None;
    if let Some(timeout) = s.preflight {
        match master.preflight(m, timeout) {
            Ok(passed) => {
                preflight_ms = Some(millis(passed.took));
                // The reload goes on, and its entry says what it cannot change.
                e.preload_app = Some(passed.settings.preload_app);
            }
            Err(f) => {
                e.master_pid = Some(m.pid);
                return fail(ledger, e, f);
            }
        }
    }
    // The slot after the preflight: a deploy that does not load holds no host of the group
    // back. Taken, it is kept by any failure from here on.
    if let Some((sl, asker, turn)) = slots.as_mut() {
        match take_slot(&mut **sl, *asker, &mut **turn) {
            Ok(record) => e.fleet = Some(record),
            Err((record, f)) => {
                e.fleet = Some(record);
                e.master_pid = Some(m.pid);
                return fail(ledger, e, f);
            }
        }
    }
    let mut slots = slots.map(|(sl, _, _)| sl);
    let mut slot_kept = |e: &mut Entry, verified: bool| {
        if let Some(sl) = slots.as_mut()
            && let Some(f) = e.fleet.as_mut().filter(|f| f.slot.is_some())
        {
            if verified {
                sl.verified();
            } else {
                sl.failed();
            }
            f.released = Some(verified);
        }
    };
    master.pin_workers(m);

    // Intended before the signal: a crash from here on leaves an entry, never nothing (see
    // `crate::ledger::intent` for when it reaches the disk).
    let mut intended = e.clone();
    intended.decision = Some(Decision::Intended.into());
    if let Err(why) = ledger.intend(intended) {
        slot_kept(&mut e, false);
        return fail(ledger, e, Failure::new(FailureKind::IntentNotRecorded, why));
    }
    if let Some(c) = claimed
        && let Err(err) = c.finish()
    {
        tracing::error!(error = %err, "cannot remove the claimed flag");
    }

    let t0 = Instant::now();
    let sent_at = Utc::now();
    let signalled = master.reload(m);
    // From the request's write to the signal: the latency operators wait on.
    let flag_to_signal_ms = written_at
        .and_then(|w| SystemTime::now().duration_since(w).ok())
        .map(millis);
    ledger.signalled();
    if let Err(err) = signalled {
        slot_kept(&mut e, false);
        ledger.withdraw();
        return fail(
            ledger,
            e,
            Failure::new(FailureKind::SignalFailed, err.to_string()),
        );
    }
    let deadline = t0 + s.reload_timeout;

    let mut problems = master.await_old_workers(deadline);
    // The old workers are gone: only new ones can answer now, and the health check runs while
    // they boot (answered by the first ready), not after the last.
    let health = s.health_url.as_ref().map(|url| {
        let left = deadline.saturating_duration_since(Instant::now());
        let check = master.health_check(url, left.max(Duration::from_millis(100)));
        std::thread::spawn(move || (check(), Instant::now()))
    });
    let mut workers_replaced_ms = None;
    let mut worker_boot_ms = Vec::new();
    match master.await_new_workers(m, deadline) {
        Ok(boots) => {
            workers_replaced_ms = Some(millis(t0.elapsed()));
            worker_boot_ms = boots.iter().filter_map(|b| b.took).map(millis).collect();
        }
        Err(p) => problems.extend(p),
    }
    if !master.alive(m) {
        problems.push("the master is gone".into());
    }
    let port = s.bind.value.port;
    if !master.holds_port(m, port) {
        problems.push(format!("port {port} is no longer held by the master"));
    }
    let mut health_answered_ms = None;
    match health.map(std::thread::JoinHandle::join) {
        None => {}
        Some(Ok((Ok(()), at))) => health_answered_ms = Some(millis(at.duration_since(t0))),
        Some(Ok((Err(why), _))) => problems.push(format!("health check failed: {why}")),
        Some(Err(_)) => problems.push("health check failed: its thread panicked".into()),
    }

    let verified = problems.is_empty();
    conclude(&mut e, Decision::Executed, verified);
    e.decision_reason = Some(Reason::SignalSighup.into());
    e.verified = Some(verified);
    e.master_pid = Some(m.pid);
    e.timings = Some(Timings {
        preflight_ms,
        worker_boot_ms,
        signal_sent_at: Some(format_time(sent_at)),
        flag_to_signal_ms,
        workers_replaced_ms,
        health_answered_ms,
        // A kill-switch's reload is asked at the flip: the runbook's rollback time runs from
        // there to the last worker replaced.
        rollback_ms: match (e.source(), flag_to_signal_ms, workers_replaced_ms) {
            (Some(RequestSource::KillSwitch), Some(f), Some(r)) => Some(f + r),
            _ => None,
        },
    });
    if !verified {
        e.verification_problems = Some(problems);
    }
    slot_kept(&mut e, verified);
    ledger.settle(e.clone());
    e
}
