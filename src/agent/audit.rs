//! The agent's audit events in the journal: each handled request and each kill-switch flip,
//! with its MESSAGE_ID.

use crate::ledger::entry::Entry;
use crate::ledger::model::Decision;
use crate::ledger::state::KillSwitch;
use crate::systemd::journal;

/// Logs a handled request as its decision says.
pub fn handled(e: &Entry) {
    let detail = e.outcome_detail();
    match e.decided() {
        Some(Decision::Executed) if e.verified == Some(true) => tracing::info!(
            message_id = journal::RESTART_EXECUTED,
            "restart executed and verified: {detail}"
        ),
        Some(Decision::Executed) => tracing::error!(
            message_id = journal::RESTART_FAILED,
            "restart executed but not verified: {detail}"
        ),
        Some(Decision::Failed) => tracing::error!(
            message_id = journal::RESTART_FAILED,
            "restart failed, nothing signalled: {detail}"
        ),
        Some(Decision::Rejected) if e.rejection.is_some() => tracing::warn!(
            message_id = journal::FLAG_REJECTED,
            "restart flag rejected: {detail}"
        ),
        // Blocked, or refused as malformed (an override without a reason).
        _ => tracing::warn!(
            message_id = journal::RESTART_BLOCKED,
            "restart blocked by the policy: {detail}"
        ),
    }
}

/// Logs a kill-switch flip: who, which way, why.
pub fn kill_switch(ks: &KillSwitch, by: &str) {
    tracing::warn!(
        message_id = journal::KILL_SWITCH,
        engaged = ks.engaged,
        changed_by = %by,
        "kill-switch {} by {by}: {}",
        if ks.engaged { "engaged" } else { "released" },
        ks.reason.as_deref().unwrap_or("(no reason)")
    );
}
