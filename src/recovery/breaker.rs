//! The recovery breaker: when the probes' evidence calls for an automatic restart, and when it
//! must stop asking. Pure: the agent feeds it each probe's [`Evidence`] and each request's
//! [`Outcome`], with the time.
//!
//! - **Evidence is a window, not a streak.** The breaker trips when at least `probes` of the
//!   last `2 × probes − 1` counted probes call for a restart: `probes` failures in a row trip
//!   it, and so does an app that fails every other probe; one passing probe does not wipe the
//!   evidence, and one failing probe among passing ones is not enough.
//! - **Closed → half-open → closed.** Tripped while closed, it asks for one restart (through
//!   the policy, the preflight and the verification like any other). Restarted, it is half-open
//!   and the evidence starts again: the app must then pass every probe for the settle time
//!   before the breaker closes. Tripped again while half-open, it asks again, and the policy
//!   rules (usually: the cooldown or guarded mode refuses).
//! - **Open.** A restart the policy refused, or one that failed, opens the breaker: no more
//!   automatic requests. Only an operator's acknowledged reset, or the app passing every probe
//!   for the settle time on its own, closes it.

use std::collections::VecDeque;

use crate::ledger::model::words;

words! {
    /// The breaker's state.
    pub enum BreakerState {
        /// Watching; the evidence may ask for a restart.
        Closed => "closed",
        /// Automatic restarts stopped until an operator or a sustained recovery closes it.
        Open => "open",
        /// An automatic restart happened; the app is on trial for the settle time.
        HalfOpen => "half_open",
    }
}

words! {
    /// Why the breaker changed state.
    pub enum Why {
        /// An automatic restart was executed and verified (or, in a dry run, would have been).
        Restarted => "auto_restart_executed",
        /// The policy refused the automatic restart.
        PolicyBlocked => "auto_restart_blocked",
        /// The automatic restart failed (nothing signalled, or not verified).
        RestartFailed => "auto_restart_failed",
        /// The app passed every probe for the settle time after a restart.
        Settled => "settled",
        /// The app passed every probe for the settle time while the breaker was open.
        Recovered => "sustained_recovery",
        /// An operator closed it, with an acknowledgement and a reason.
        OperatorReset => "operator_reset",
    }
}

words! {
    /// What a probe calls for.
    pub enum Cause {
        /// The health URL failed: an error status, a timeout, no answer.
        HealthFailing => "health_failing",
        /// The app's recommendation is `consider_controlled_worker_restart`.
        PoolSaturated => "pool_saturated",
    }
}

/// A probe, as the breaker weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evidence {
    /// 2xx and not degraded.
    Healthy,
    /// A restart may help.
    Restartable(Cause),
    /// Degraded, or failing for a cause a restart cannot fix (the database, Redis, an open
    /// circuit): no case for a restart, and no sign of health either.
    NotRestartable,
}

/// What became of a restart the breaker asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Executed and verified; in a dry run, what the policy would have allowed.
    Restarted,
    Blocked,
    Failed,
    /// Not carried out for a reason outside the app (an alert gate, no fleet slot): the
    /// evidence stands and the next probe that calls for a restart asks again.
    Deferred,
}

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How many restartable probes (of the last `2 × probes − 1`) trip it; at least 1.
    pub probes: u32,
    /// How long the app must pass every probe before the breaker closes, in milliseconds.
    pub settle_ms: i64,
}

/// A change of state, for the audit, the metrics and the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
    pub why: Why,
    pub at_ms: i64,
}

/// What the breaker asks of the agent after a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Nothing,
    /// Ask for an automatic restart, for this cause.
    RequestRestart(Cause),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    rules: Rules,
    state: BreakerState,
    since_ms: i64,
    /// The last counted probes, newest last: whether each called for a restart.
    recent: VecDeque<bool>,
    /// The start of the current unbroken run of healthy probes.
    healthy_since_ms: Option<i64>,
    /// A restart asked for and not yet ruled on.
    pending: bool,
    last: Option<Transition>,
}

impl Breaker {
    pub fn new(rules: Rules, now_ms: i64) -> Breaker {
        Breaker {
            rules: Rules {
                probes: rules.probes.max(1),
                settle_ms: rules.settle_ms.max(0),
            },
            state: BreakerState::Closed,
            since_ms: now_ms,
            recent: VecDeque::new(),
            healthy_since_ms: None,
            pending: false,
            last: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// When the current state was entered.
    pub fn since_ms(&self) -> i64 {
        self.since_ms
    }

    pub fn last_transition(&self) -> Option<&Transition> {
        self.last.as_ref()
    }

    /// Whether a restart it asked for awaits its ruling.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// New rules (a configuration reload): the state and the evidence stay.
    pub fn configure(&mut self, rules: Rules) {
        self.rules = Rules {
            probes: rules.probes.max(1),
            settle_ms: rules.settle_ms.max(0),
        };
        self.trim();
    }

    fn window(&self) -> usize {
        (2 * self.rules.probes as usize).saturating_sub(1).max(1)
    }

    fn trim(&mut self) {
        while self.recent.len() > self.window() {
            self.recent.pop_front();
        }
    }

    /// How many of the window's probes call for a restart.
    pub fn evidence(&self) -> u32 {
        self.recent.iter().filter(|&&b| b).count() as u32
    }

    fn enter(&mut self, to: BreakerState, why: Why, now_ms: i64) -> Transition {
        let t = Transition {
            from: self.state,
            to,
            why,
            at_ms: now_ms,
        };
        self.state = to;
        self.since_ms = now_ms;
        self.last = Some(t.clone());
        t
    }

    /// Weighs one probe.
    pub fn observe(&mut self, ev: &Evidence, now_ms: i64) -> (Option<Transition>, Act) {
        match ev {
            Evidence::Healthy => {
                self.healthy_since_ms.get_or_insert(now_ms);
            }
            _ => self.healthy_since_ms = None,
        }
        self.recent
            .push_back(matches!(ev, Evidence::Restartable(_)));
        self.trim();

        let healthy_for = self.healthy_since_ms.map(|s| now_ms.saturating_sub(s));
        let settled = healthy_for.is_some_and(|d| d >= self.rules.settle_ms)
            // One healthy probe is no trial, even with no settle time.
            && self.recent.len() >= self.window().min(self.rules.probes as usize);
        match self.state {
            BreakerState::Open => {
                if settled {
                    self.recent.clear();
                    return (
                        Some(self.enter(BreakerState::Closed, Why::Recovered, now_ms)),
                        Act::Nothing,
                    );
                }
                (None, Act::Nothing)
            }
            BreakerState::HalfOpen if settled => {
                self.recent.clear();
                (
                    Some(self.enter(BreakerState::Closed, Why::Settled, now_ms)),
                    Act::Nothing,
                )
            }
            BreakerState::Closed | BreakerState::HalfOpen => {
                if !self.pending && self.evidence() >= self.rules.probes {
                    self.pending = true;
                    let cause = match ev {
                        Evidence::Restartable(c) => *c,
                        // Tripped by the window with a passing probe last: the window's cause.
                        _ => Cause::HealthFailing,
                    };
                    return (None, Act::RequestRestart(cause));
                }
                (None, Act::Nothing)
            }
        }
    }

    /// The ruling on the restart it asked for.
    pub fn ruled(&mut self, outcome: Outcome, now_ms: i64) -> Option<Transition> {
        if !std::mem::take(&mut self.pending) {
            return None;
        }
        if outcome == Outcome::Deferred {
            return None;
        }
        self.healthy_since_ms = None;
        Some(match outcome {
            Outcome::Restarted => {
                // New workers: the evidence starts again.
                self.recent.clear();
                self.enter(BreakerState::HalfOpen, Why::Restarted, now_ms)
            }
            Outcome::Blocked => self.enter(BreakerState::Open, Why::PolicyBlocked, now_ms),
            Outcome::Failed => self.enter(BreakerState::Open, Why::RestartFailed, now_ms),
            Outcome::Deferred => unreachable!("returned above"),
        })
    }

    /// An operator closes the breaker (acknowledged, with a reason the caller records).
    pub fn reset(&mut self, now_ms: i64) -> Option<Transition> {
        if self.state == BreakerState::Closed {
            return None;
        }
        self.recent.clear();
        self.healthy_since_ms = None;
        Some(self.enter(BreakerState::Closed, Why::OperatorReset, now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RULES: Rules = Rules {
        probes: 3,
        settle_ms: 10_000,
    };
    const BAD: Evidence = Evidence::Restartable(Cause::HealthFailing);

    /// Feeds probes a second apart from `t`; returns the acts.
    fn feed(b: &mut Breaker, t: &mut i64, probes: &[Evidence]) -> Vec<Act> {
        probes
            .iter()
            .map(|p| {
                *t += 1000;
                b.observe(p, *t).1
            })
            .collect()
    }

    fn restarts(acts: &[Act]) -> usize {
        acts.iter()
            .filter(|a| matches!(a, Act::RequestRestart(_)))
            .count()
    }

    #[test]
    fn three_failures_in_a_row_ask_for_one_restart() {
        let mut t = 0;
        let mut b = Breaker::new(RULES, t);
        let acts = feed(&mut b, &mut t, &[BAD, BAD, BAD, BAD, BAD]);
        assert_eq!(acts[2], Act::RequestRestart(Cause::HealthFailing));
        // Asked once: the next probes wait for the ruling.
        assert_eq!(restarts(&acts), 1);
        let tr = b.ruled(Outcome::Restarted, t).unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.why),
            (BreakerState::Closed, BreakerState::HalfOpen, Why::Restarted)
        );
    }

    #[test]
    fn one_failure_among_passing_probes_is_not_enough_and_one_pass_does_not_wipe_the_evidence() {
        let mut t = 0;
        let mut b = Breaker::new(RULES, t);
        let h = Evidence::Healthy;
        assert_eq!(
            restarts(&feed(
                &mut b,
                &mut t,
                &[
                    BAD,
                    h.clone(),
                    h.clone(),
                    BAD,
                    h.clone(),
                    h.clone(),
                    h.clone(),
                    h.clone()
                ]
            )),
            0
        );
        // Two failures, a pass, a failure: three of the last five.
        let acts = feed(&mut b, &mut t, &[BAD, BAD, h.clone(), BAD]);
        assert_eq!(
            acts,
            [
                Act::Nothing,
                Act::Nothing,
                Act::Nothing,
                Act::RequestRestart(Cause::HealthFailing)
            ]
        );
    }

    #[test]
    fn flapping_is_not_ignored_and_does_not_loop() {
        let mut t = 0;
        let mut b = Breaker::new(RULES, t);
        let flap: Vec<Evidence> = (0..40)
            .map(|i| if i % 2 == 0 { BAD } else { Evidence::Healthy })
            .collect();
        let acts = feed(&mut b, &mut t, &flap[..5]);
        assert_eq!(
            restarts(&acts),
            1,
            "flapping every other probe trips the breaker"
        );
        b.ruled(Outcome::Restarted, t);
        // Still flapping after the restart: asked again, the policy refuses (cooldown).
        let acts = feed(&mut b, &mut t, &flap[5..11]);
        assert_eq!(restarts(&acts), 1);
        let tr = b.ruled(Outcome::Blocked, t).unwrap();
        assert_eq!(tr.to, BreakerState::Open);
        // Open: no more requests, however long it flaps.
        assert_eq!(restarts(&feed(&mut b, &mut t, &flap[11..])), 0);
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn a_restarted_app_closes_the_breaker_only_after_the_settle_time() {
        let mut t = 0;
        let mut b = Breaker::new(RULES, t);
        feed(&mut b, &mut t, &[BAD, BAD, BAD]);
        b.ruled(Outcome::Restarted, t);
        let healthy = vec![Evidence::Healthy; 10];
        feed(&mut b, &mut t, &healthy);
        assert_eq!(b.state(), BreakerState::HalfOpen, "9 s of health is not 10");
        let (tr, _) = b.observe(&Evidence::Healthy, t + 1000);
        assert_eq!(tr.unwrap().why, Why::Settled);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_closes_on_a_sustained_recovery_or_an_operator() {
        let mut t = 0;
        let mut b = Breaker::new(RULES, t);
        feed(&mut b, &mut t, &[BAD, BAD, BAD]);
        b.ruled(Outcome::Failed, t);
        assert_eq!(b.state(), BreakerState::Open);
        // Healthy, but broken by a degraded probe: the run starts again.
        feed(&mut b, &mut t, &vec![Evidence::Healthy; 8]);
        feed(&mut b, &mut t, &[Evidence::NotRestartable]);
        feed(&mut b, &mut t, &vec![Evidence::Healthy; 8]);
        assert_eq!(b.state(), BreakerState::Open);
        feed(&mut b, &mut t, &vec![Evidence::Healthy; 3]);
        assert_eq!(b.last_transition().unwrap().why, Why::Recovered);

        feed(&mut b, &mut t, &[BAD, BAD, BAD]);
        b.ruled(Outcome::Blocked, t);
        let tr = b.reset(t).unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.why),
            (BreakerState::Open, BreakerState::Closed, Why::OperatorReset)
        );
        assert_eq!(b.reset(t), None, "closed already");
    }

    #[test]
    fn what_a_restart_cannot_fix_never_trips_it() {
        let mut t = 0;
        let mut b = Breaker::new(RULES, t);
        assert_eq!(
            restarts(&feed(&mut b, &mut t, &vec![Evidence::NotRestartable; 50])),
            0
        );
        assert_eq!(b.state(), BreakerState::Closed);
    }

    fn evidence() -> impl Strategy<Value = Evidence> {
        prop_oneof![
            Just(Evidence::Healthy),
            Just(BAD),
            Just(Evidence::Restartable(Cause::PoolSaturated)),
            Just(Evidence::NotRestartable),
        ]
    }

    proptest! {
        /// Whatever the probes and the policy's rulings: never a second request before the
        /// first is ruled on, none while open, and every request backed by enough evidence.
        #[test]
        fn requests_are_bounded_by_the_evidence_and_the_state(
            probes in proptest::collection::vec((evidence(), 0u8..4), 0..200),
            n in 1u32..5,
        ) {
            let rules = Rules { probes: n, settle_ms: 5_000 };
            let mut b = Breaker::new(rules, 0);
            let mut t = 0;
            for (p, ruling) in probes {
                t += 1000;
                let was = b.state();
                let pending = b.pending();
                let (_, act) = b.observe(&p, t);
                if let Act::RequestRestart(_) = act {
                    prop_assert!(!pending);
                    prop_assert_ne!(was, BreakerState::Open);
                    prop_assert!(b.evidence() >= n);
                }
                if b.pending() {
                    let outcome = match ruling {
                        0 => Some(Outcome::Restarted),
                        1 => Some(Outcome::Blocked),
                        2 => Some(Outcome::Failed),
                        _ => None,
                    };
                    if let Some(o) = outcome {
                        let tr = b.ruled(o, t).unwrap();
                        prop_assert_eq!(tr.to == BreakerState::Open, o != Outcome::Restarted);
                    }
                }
            }
        }
    }
}
