//! The agent's recovery state between probes: the latest observation, the counts the alerts
//! read (failing probes, degraded time, saturated probes), and the breaker. Pure: the event
//! loop hands it each probe and each automatic request's outcome, with the time.

use serde::{Deserialize, Serialize};

use super::breaker::{Act, Breaker, BreakerState, Cause, Outcome, Rules, Transition};
use super::observation::Observation;
use super::weigh;
use crate::config::{AutoRecovery, ResilienceThresholds, Settings};
use crate::ledger::entry::Entry;
use crate::ledger::model::{Decision, Reason, RequestSource};
use crate::ledger::time::format_time;

/// What the event loop must do after a probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The breaker changed state: audit, metrics, bus.
    Transition(Transition),
    /// Ask the executor for an automatic restart (a dry run when `dry_run`).
    Ask {
        cause: Cause,
        reason: String,
        dry_run: bool,
    },
}

/// The recovery section of the status document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecoveryStatus {
    pub mode: AutoRecovery,
    /// The latest probe and the counts over the probes; `null` while probes are off.
    pub probe: Option<ProbeStatus>,
    pub breaker: BreakerStatus,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStatus {
    pub url: String,
    pub interval_seconds: f64,
    pub timeout_seconds: f64,
    /// The latest probe's facts (`null` before the first).
    pub last: Option<Observation>,
    pub consecutive_failures: u32,
    /// Since when the app has said it is degraded (`null`: it does not).
    pub degraded_since: Option<String>,
    pub degraded_seconds: u64,
    /// Consecutive probes at or above each pool saturation threshold.
    pub pool_saturation_warning_probes: u32,
    pub pool_saturation_critical_probes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerStatus {
    pub state: BreakerState,
    pub since: String,
    /// Probes of the window calling for a restart, and how many trip it.
    pub evidence: u32,
    pub needed: u32,
    pub settle_seconds: u64,
    pub last_transition: Option<TransitionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionStatus {
    pub from: BreakerState,
    pub to: BreakerState,
    pub why: super::breaker::Why,
    pub at: String,
}

fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(format_time)
        .unwrap_or_default()
}

fn rules(s: &Settings) -> Rules {
    Rules {
        probes: s.recovery.probes,
        settle_ms: i64::try_from(s.recovery.settle.as_millis()).unwrap_or(i64::MAX),
    }
}

/// The recovery state of one agent.
#[derive(Debug, Clone)]
pub struct Watcher {
    mode: AutoRecovery,
    thresholds: ResilienceThresholds,
    probe: Option<crate::config::ProbeSettings>,
    breaker: Breaker,
    last: Option<Observation>,
    consecutive_failures: u32,
    degraded_since_ms: Option<i64>,
    warning_probes: u32,
    critical_probes: u32,
}

impl Watcher {
    pub fn new(s: &Settings, now_ms: i64) -> Watcher {
        Watcher {
            mode: s.recovery.mode,
            thresholds: s.resilience,
            probe: s.probe.clone(),
            breaker: Breaker::new(rules(s), now_ms),
            last: None,
            consecutive_failures: 0,
            degraded_since_ms: None,
            warning_probes: 0,
            critical_probes: 0,
        }
    }

    /// A configuration reload: the state, the evidence and the counts stay.
    pub fn configure(&mut self, s: &Settings) {
        self.mode = s.recovery.mode;
        self.thresholds = s.resilience;
        self.probe = s.probe.clone();
        self.breaker.configure(rules(s));
    }

    pub fn mode(&self) -> AutoRecovery {
        self.mode
    }

    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    pub fn last(&self) -> Option<&Observation> {
        self.last.as_ref()
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// How long the app has said it is degraded, in seconds.
    pub fn degraded_seconds(&self, now_ms: i64) -> u64 {
        self.degraded_since_ms
            .map_or(0, |s| (now_ms.saturating_sub(s).max(0) / 1000) as u64)
    }

    /// Consecutive probes at or above the warning and the critical saturation.
    pub fn saturated_probes(&self) -> (u32, u32) {
        (self.warning_probes, self.critical_probes)
    }

    /// Takes one probe. `reloading`: a restart was in hand while it ran, so its answer says
    /// nothing of the app's health (it still updates what the status shows).
    pub fn observed(&mut self, o: Observation, reloading: bool) -> Vec<Step> {
        let now_ms = o.at_ms;
        if o.answered_ok() {
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        }
        match o.degraded_reason() {
            Some(_) => {
                self.degraded_since_ms.get_or_insert(now_ms);
            }
            None => self.degraded_since_ms = None,
        }
        let sat = o.pool_saturation();
        let streak = |n: u32, level: f64| {
            if sat.is_some_and(|s| s >= level) {
                n.saturating_add(1)
            } else {
                0
            }
        };
        self.warning_probes = streak(self.warning_probes, self.thresholds.pool_saturation_warning);
        self.critical_probes = streak(
            self.critical_probes,
            self.thresholds.pool_saturation_critical,
        );
        let evidence = weigh(&o);
        self.last = Some(o);
        if reloading || self.mode == AutoRecovery::Off {
            return Vec::new();
        }
        let (transition, act) = self.breaker.observe(&evidence, now_ms);
        let mut steps: Vec<Step> = transition.into_iter().map(Step::Transition).collect();
        if let Act::RequestRestart(cause) = act {
            let window = (2 * self.breaker.rules().probes).saturating_sub(1);
            steps.push(Step::Ask {
                cause,
                reason: format!(
                    "automatic recovery: {cause} in {} of the last {window} probes",
                    self.breaker.evidence()
                ),
                dry_run: self.mode == AutoRecovery::DryRun,
            });
        }
        steps
    }

    /// An entry the executor handled: the outcome of the breaker's request, when it is one.
    pub fn handled(&mut self, e: &Entry, now_ms: i64) -> Option<Transition> {
        if e.source() != Some(RequestSource::Auto) || !self.breaker.pending() {
            return None;
        }
        let deferred = [
            Reason::AlertGateFiring,
            Reason::FleetSlotUnavailable,
            Reason::FleetUnreachable,
        ];
        let outcome = if e
            .decision_reason
            .as_ref()
            .and_then(|r| r.known())
            .is_some_and(|r| deferred.contains(&r))
        {
            Outcome::Deferred
        } else if e.dry_run() {
            Outcome::Restarted
        } else {
            match e.decided() {
                Some(Decision::Executed) if e.verified == Some(true) => Outcome::Restarted,
                Some(Decision::Blocked) | Some(Decision::Rejected) => Outcome::Blocked,
                _ => Outcome::Failed,
            }
        };
        self.breaker.ruled(outcome, now_ms)
    }

    /// An operator's acknowledged reset.
    pub fn reset(&mut self, now_ms: i64) -> Option<Transition> {
        self.breaker.reset(now_ms)
    }

    fn breaker_status(&self) -> BreakerStatus {
        let b = &self.breaker;
        BreakerStatus {
            state: b.state(),
            since: at(b.since_ms()),
            evidence: b.evidence(),
            needed: b.rules().probes,
            settle_seconds: (b.rules().settle_ms / 1000) as u64,
            last_transition: b.last_transition().map(|t| TransitionStatus {
                from: t.from,
                to: t.to,
                why: t.why,
                at: at(t.at_ms),
            }),
        }
    }

    /// The status document's section.
    pub fn status(&self, now_ms: i64) -> RecoveryStatus {
        RecoveryStatus {
            mode: self.mode,
            probe: self.probe.as_ref().map(|p| ProbeStatus {
                url: p.url.to_string(),
                interval_seconds: p.interval.as_secs_f64(),
                timeout_seconds: p.timeout.as_secs_f64(),
                last: self.last.clone(),
                consecutive_failures: self.consecutive_failures,
                degraded_since: self.degraded_since_ms.map(at),
                degraded_seconds: self.degraded_seconds(now_ms),
                pool_saturation_warning_probes: self.warning_probes,
                pool_saturation_critical_probes: self.critical_probes,
            }),
            breaker: self.breaker_status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Layers, Settings};
    use crate::ledger::model::Reason;
    use crate::recovery::observation::{AppHealth, Http};

    fn settings(mode: &str) -> Settings {
        let vars = [
            ("WARDEN_HEALTH_URL", "http://127.0.0.1:8080/health"),
            ("WARDEN_AUTO_RECOVERY", mode),
            ("WARDEN_RECOVERY_SETTLE", "5"),
        ];
        let l = Layers::load_from(vars.iter().map(|(k, v)| (k.into(), v.into())), &[]).unwrap();
        let (s, invalid) = Settings::resolve(&l, std::path::Path::new("/"));
        assert!(invalid.is_empty(), "{invalid:?}");
        s
    }

    fn saturated(at_ms: i64) -> Observation {
        Observation {
            at_ms,
            http: Http::Answered {
                status: 200,
                latency_ms: 2.0,
            },
            app: Some(AppHealth {
                degraded_reason: Some("db_pool_saturated".into()),
                pool_saturation: Some(1.0),
                circuit_state: Some("CLOSED".into()),
            }),
            workers: Some(2),
        }
    }

    fn auto(decision: Decision, reason: Reason, verified: Option<bool>) -> Entry {
        Entry {
            source: Some(RequestSource::Auto.into()),
            decision: Some(decision.into()),
            decision_reason: Some(reason.into()),
            verified,
            ..Entry::default()
        }
    }

    #[test]
    fn three_saturated_probes_ask_once_and_the_outcome_moves_the_breaker() {
        let mut w = Watcher::new(&settings("on"), 0);
        assert!(w.observed(saturated(1000), false).is_empty());
        assert!(w.observed(saturated(2000), false).is_empty());
        let steps = w.observed(saturated(3000), false);
        assert!(
            matches!(
                &steps[..],
                [Step::Ask {
                    cause: Cause::PoolSaturated,
                    dry_run: false,
                    ..
                }]
            ),
            "{steps:?}"
        );
        assert_eq!(w.saturated_probes(), (3, 3));
        assert_eq!(w.degraded_seconds(3000), 2);
        // Someone else's request is not the breaker's.
        let manual = Entry {
            source: Some(RequestSource::Manual.into()),
            ..auto(Decision::Executed, Reason::SignalSighup, Some(true))
        };
        assert_eq!(w.handled(&manual, 3500), None);
        let t = w
            .handled(
                &auto(Decision::Executed, Reason::SignalSighup, Some(true)),
                4000,
            )
            .unwrap();
        assert_eq!(t.to, BreakerState::HalfOpen);
        assert_eq!(w.status(4000).breaker.state, BreakerState::HalfOpen);
    }

    #[test]
    fn probes_during_a_reload_and_with_recovery_off_ask_nothing() {
        let mut w = Watcher::new(&settings("on"), 0);
        for i in 1..10 {
            assert!(w.observed(saturated(i * 1000), true).is_empty());
        }
        let mut off = Watcher::new(&settings("off"), 0);
        for i in 1..10 {
            assert!(off.observed(saturated(i * 1000), false).is_empty());
        }
        // Observed all the same: the status and the alerts follow the app.
        assert_eq!(off.saturated_probes(), (9, 9));
        assert_eq!(off.status(9000).probe.unwrap().last, Some(saturated(9000)));
    }

    #[test]
    fn a_dry_run_asks_as_one_and_its_record_moves_the_breaker_as_a_restart() {
        let mut w = Watcher::new(&settings("dry-run"), 0);
        let mut steps = Vec::new();
        for i in 1..=3 {
            steps = w.observed(saturated(i * 1000), false);
        }
        assert!(
            matches!(&steps[..], [Step::Ask { dry_run: true, .. }]),
            "{steps:?}"
        );
        let t = w
            .handled(
                &auto(Decision::Blocked, Reason::AutoRecoveryDryRun, None),
                4000,
            )
            .unwrap();
        assert_eq!(t.to, BreakerState::HalfOpen);
    }
}
