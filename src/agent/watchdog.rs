//! The agent and systemd: `READY=1`, `STATUS=`, `RELOADING=1`, `STOPPING=1`, and the watchdog
//! pings, sent from the event loop itself (a hung loop stops pinging) and withheld while a
//! request is stuck far past its own deadline (a hung executor gets the agent restarted).

use std::time::Duration;

use sd_notify::NotifyState;

use crate::ledger::policy::Evaluation;
use crate::ledger::state::StateDoc;

/// Tells systemd; a failure is logged (outside systemd there is no one to tell).
pub fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// How often to ping: half of `WATCHDOG_USEC`, when systemd watches the agent.
pub fn ping_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|d| d / 2)
}

/// How far past its reload timeout a request may run before the executor counts as hung.
const STUCK_GRACE: Duration = Duration::from_secs(30);

/// Whether to tell systemd all is well: not while a request has been in hand longer than its
/// reload timeout and a grace.
pub fn healthy(busy_for: Option<Duration>, reload_timeout: Duration) -> bool {
    busy_for.is_none_or(|b| b < reload_timeout + STUCK_GRACE)
}

/// What the agent says after `STATUS=`. `unsaved`: why the state file is behind the history
/// (the agent is degraded until a write succeeds).
pub fn status_line(doc: &StateDoc, e: &Evaluation, unsaved: Option<&str>) -> String {
    format!(
        "policy {}, {} restart(s) in the last {} s{}{}",
        e.state.as_str(),
        e.attempts_in_window,
        e.window_seconds,
        doc.last_restart
            .as_ref()
            .and_then(|l| l.decision.as_ref())
            .map(|d| format!(", last request {d}"))
            .unwrap_or_default(),
        unsaved
            .map(|why| format!("; restart history not saved: {why}; retrying"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_stuck_past_its_deadline_stops_the_pings() {
        let t = Duration::from_secs(30);
        assert!(healthy(None, t));
        assert!(healthy(Some(Duration::from_secs(59)), t));
        assert!(!healthy(Some(Duration::from_secs(60)), t));
    }
}
