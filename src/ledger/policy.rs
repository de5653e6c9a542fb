//! The churn-limiting restart policy: a pure function of (history, now, configuration).
//!
//! Compatible with the MES dashboard's `worker_recovery_policy.py` (its variables, defaults,
//! states and decision table), with its defects fixed: only restarts that were executed count
//! toward the window and the cooldown (blocked, failed and rejected requests are recorded
//! elsewhere, never counted), times are UTC milliseconds, and an override needs an
//! acknowledgement and a reason.

use serde::{Deserialize, Serialize};

use super::model::{Reason, RequestSource, Verdict};
use crate::config::PolicyConfig;

/// What the history's length limit (`WATCHDOG_RESTART_HISTORY_MAX`) must never drop: the
/// evidence the policy decides from. Without it a flood of blocked requests would push the
/// executed restarts out of the history and reopen the cooldown and the churn window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retain {
    /// How many of the newest executed restarts to keep: as many as the thresholds count.
    pub executed: usize,
    /// Kept only if executed at or after this (UTC ms), except the newest (the cooldown's).
    pub since_ms: i64,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The [`Retain`] rule for `cfg` at `now_ms`.
pub fn retain(cfg: &PolicyConfig, now_ms: i64) -> Retain {
    Retain {
        executed: cfg.retry_budget.max(cfg.churn_threshold).get() as usize,
        since_ms: now_ms.saturating_sub(millis(cfg.window)),
    }
}

/// A restart request as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub source: RequestSource,
    pub manual_override: bool,
    pub override_acknowledged: bool,
    pub override_reason: Option<String>,
}

/// An executed restart, as it counts toward the window and the cooldown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Executed {
    /// When the restart was executed, in milliseconds since the Unix epoch (UTC).
    pub at_ms: i64,
}

/// The policy's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyState {
    Allowed,
    Cooldown,
    Blocked,
}

impl PolicyState {
    pub const ALL: [PolicyState; 3] = [
        PolicyState::Allowed,
        PolicyState::Cooldown,
        PolicyState::Blocked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyState::Allowed => "allowed",
            PolicyState::Cooldown => "cooldown",
            PolicyState::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<PolicyState> {
        PolicyState::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The policy evaluated, field for field as the MES status document's `policy_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub state: PolicyState,
    pub allowed: bool,
    pub cooldown: bool,
    pub blocked: bool,
    pub cooldown_remaining_seconds: u64,
    pub attempts_in_window: u32,
    pub retry_budget: u32,
    pub churn_threshold: u32,
    pub window_seconds: u64,
}

impl Evaluation {
    /// The evaluation as the original watchdog records it with each request (`policy_state` of
    /// a history entry): the status document's fields, and what led to them.
    pub fn recorded(&self, cfg: &PolicyConfig) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = v.as_object_mut() {
            let extra = [
                ("guarded_mode", serde_json::Value::from(self.blocked)),
                (
                    "retry_budget_exhausted",
                    (self.attempts_in_window >= self.retry_budget).into(),
                ),
                (
                    "churn_exceeded",
                    (self.attempts_in_window >= self.churn_threshold).into(),
                ),
                ("cooldown_seconds", cfg.cooldown.as_secs().into()),
            ];
            map.extend(extra.map(|(k, v)| (k.to_string(), v)));
        }
        v
    }
}

/// Evaluates the policy at `now_ms` over the executed restarts in `history` (any order).
pub fn evaluate(history: &[Executed], now_ms: i64, cfg: &PolicyConfig) -> Evaluation {
    let window_ms = millis(cfg.window);
    // Entries from the future (a clock stepped back) count as now: they never make the window
    // or the cooldown shorter than it should be.
    let age = |e: &Executed| now_ms.saturating_sub(e.at_ms).max(0);
    let attempts = history.iter().filter(|e| age(e) < window_ms).count();
    let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    let last_age = history.iter().map(age).min();
    let cooldown_ms = millis(cfg.cooldown);
    let remaining_ms = last_age.map_or(0, |a| (cooldown_ms - a).max(0));
    let cooldown = remaining_ms > 0;
    let blocked = cfg.guarded_mode
        && (attempts >= cfg.retry_budget.get() || attempts >= cfg.churn_threshold.get());
    let state = if blocked {
        PolicyState::Blocked
    } else if cooldown {
        PolicyState::Cooldown
    } else {
        PolicyState::Allowed
    };
    Evaluation {
        state,
        allowed: state == PolicyState::Allowed,
        cooldown,
        blocked,
        // Rounded up: "wait 0 seconds" while still in cooldown would be wrong.
        cooldown_remaining_seconds: ((remaining_ms + 999) / 1000) as u64,
        attempts_in_window: attempts,
        retry_budget: cfg.retry_budget.get(),
        churn_threshold: cfg.churn_threshold.get(),
        window_seconds: cfg.window.as_secs(),
    }
}

/// What the policy rules on a request, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ruling {
    pub verdict: Verdict,
    /// The original's reason words, kept for the dashboard and alerting.
    pub reason: Reason,
    pub requires_acknowledgement: bool,
}

impl Ruling {
    fn new(verdict: Verdict, reason: Reason, requires_acknowledgement: bool) -> Self {
        Ruling {
            verdict,
            reason,
            requires_acknowledgement,
        }
    }

    pub fn allowed(&self) -> bool {
        self.verdict.allows()
    }
}

/// The decision table (`decide_restart_request`).
pub fn decide(req: &Request, eval: &Evaluation) -> Ruling {
    let reason_given = req
        .override_reason
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty());
    match req.source {
        RequestSource::KillSwitch => {
            Ruling::new(Verdict::Allowed, Reason::KillSwitchRollback, false)
        }
        RequestSource::Auto if eval.blocked => {
            Ruling::new(Verdict::Blocked, Reason::GuardedModeBlocked, false)
        }
        RequestSource::Auto if eval.cooldown => {
            Ruling::new(Verdict::Blocked, Reason::CooldownActive, false)
        }
        RequestSource::Auto => {
            Ruling::new(Verdict::Allowed, Reason::PolicyAllowsAutoRestart, false)
        }
        RequestSource::Manual | RequestSource::Reload if req.manual_override && !reason_given => {
            Ruling::new(Verdict::Refused, Reason::OverrideReasonRequired, true)
        }
        RequestSource::Manual | RequestSource::Reload if eval.blocked || eval.cooldown => {
            if req.manual_override && req.override_acknowledged {
                Ruling::new(
                    Verdict::Override,
                    Reason::OperatorOverrideAcknowledged,
                    false,
                )
            } else if eval.blocked {
                Ruling::new(Verdict::Blocked, Reason::ManualOverrideRequired, true)
            } else {
                Ruling::new(Verdict::Blocked, Reason::CooldownOverrideRequired, true)
            }
        }
        RequestSource::Manual | RequestSource::Reload => {
            Ruling::new(Verdict::Allowed, Reason::PolicyAllowsManualRestart, false)
        }
    }
}

/// Random policy configurations, for the property tests here and in other modules.
#[cfg(test)]
pub(crate) mod strategy {
    use proptest::prelude::*;

    use crate::config::PolicyConfig;

    pub fn config() -> impl Strategy<Value = PolicyConfig> {
        (1u64..120, 1u32..6, 1u32..6, 30u64..900, any::<bool>()).prop_map(|(c, b, t, w, g)| {
            PolicyConfig {
                cooldown: std::time::Duration::from_secs(c),
                retry_budget: std::num::NonZeroU32::new(b).unwrap(),
                churn_threshold: std::num::NonZeroU32::new(t).unwrap(),
                window: std::time::Duration::from_secs(w),
                guarded_mode: g,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg() -> PolicyConfig {
        PolicyConfig::defaults()
    }

    fn req(source: RequestSource, ovr: bool, ack: bool, reason: Option<&str>) -> Request {
        Request {
            source,
            manual_override: ovr,
            override_acknowledged: ack,
            override_reason: reason.map(str::to_string),
        }
    }

    const S: i64 = 1000;

    #[test]
    fn states_follow_the_original() {
        let c = cfg();
        let now = 1_000_000 * S;
        assert_eq!(evaluate(&[], now, &c).state, PolicyState::Allowed);
        let e = evaluate(
            &[Executed {
                at_ms: now - 10 * S,
            }],
            now,
            &c,
        );
        assert_eq!(
            (e.state, e.cooldown_remaining_seconds),
            (PolicyState::Cooldown, 50)
        );
        let three: Vec<_> = [500, 300, 100]
            .iter()
            .map(|a| Executed { at_ms: now - a * S })
            .collect();
        let e = evaluate(&three, now, &c);
        assert_eq!((e.state, e.attempts_in_window), (PolicyState::Blocked, 3));
        // Past the window, nothing counts.
        let e = evaluate(&three, now + 600 * S, &c);
        assert_eq!((e.state, e.attempts_in_window), (PolicyState::Allowed, 0));
        // Guarded mode off: never blocked, cooldown still applies.
        let off = PolicyConfig {
            guarded_mode: false,
            ..c
        };
        assert_eq!(evaluate(&three, now, &off).state, PolicyState::Allowed);
        assert_eq!(
            evaluate(&three, now - 90 * S, &off).state,
            PolicyState::Cooldown
        );
    }

    #[test]
    fn decision_table() {
        use RequestSource::*;
        let now = 1_000_000 * S;
        let c = cfg();
        let allowed = evaluate(&[], now, &c);
        let cooldown = evaluate(&[Executed { at_ms: now - S }], now, &c);
        let three: Vec<_> = (1..=3)
            .map(|i| Executed {
                at_ms: now - i * 100 * S,
            })
            .collect();
        let blocked = evaluate(&three, now, &c);
        let d = |r: &Request, e: &Evaluation| {
            let d = decide(r, e);
            (
                d.allowed(),
                d.verdict,
                d.reason.as_str(),
                d.requires_acknowledgement,
            )
        };
        assert_eq!(
            d(&req(Auto, false, false, None), &blocked),
            (false, Verdict::Blocked, "guarded_mode_blocked", false)
        );
        assert_eq!(
            d(&req(Auto, false, false, None), &cooldown),
            (false, Verdict::Blocked, "cooldown_active", false)
        );
        assert_eq!(
            d(&req(Auto, false, false, None), &allowed),
            (true, Verdict::Allowed, "policy_allows_auto_restart", false)
        );
        assert_eq!(
            d(&req(Manual, false, false, None), &blocked),
            (false, Verdict::Blocked, "manual_override_required", true)
        );
        assert_eq!(
            d(&req(Manual, false, false, None), &cooldown),
            (false, Verdict::Blocked, "cooldown_override_required", true)
        );
        assert_eq!(
            d(&req(Manual, true, false, Some("x")), &blocked),
            (false, Verdict::Blocked, "manual_override_required", true)
        );
        assert_eq!(
            d(&req(Manual, true, true, Some("db failover")), &blocked),
            (
                true,
                Verdict::Override,
                "operator_override_acknowledged",
                false
            )
        );
        assert_eq!(
            d(&req(Manual, true, true, Some("  ")), &blocked),
            (false, Verdict::Refused, "override_reason_required", true)
        );
        assert_eq!(
            d(&req(Manual, false, false, None), &allowed),
            (
                true,
                Verdict::Allowed,
                "policy_allows_manual_restart",
                false
            )
        );
        assert!(d(&req(KillSwitch, false, false, None), &blocked).0);
    }

    #[derive(Debug, Clone)]
    struct Step {
        gap_ms: i64,
        source: RequestSource,
        ovr: bool,
        ack: bool,
        reason: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            0i64..400_000,
            prop_oneof![Just(RequestSource::Manual), Just(RequestSource::Auto)],
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(gap_ms, source, ovr, ack, reason)| Step {
                gap_ms,
                source,
                ovr,
                ack,
                reason,
            })
    }

    use super::strategy::config as policy;

    proptest! {
        /// Replays random request streams through the policy, executing what it allows.
        #[test]
        fn windows_and_cooldowns_hold(steps in proptest::collection::vec(step(), 1..120), c in policy()) {
            let mut now = 1_700_000_000_000i64;
            let mut executed: Vec<(i64, bool)> = Vec::new(); // (time, was an override)
            for s in steps {
                now += s.gap_ms;
                let hist: Vec<Executed> = executed.iter().map(|(t, _)| Executed { at_ms: *t }).collect();
                let e = evaluate(&hist, now, &c);
                let r = req(s.source, s.ovr, s.ack, s.reason.then_some("reason"));
                let d = decide(&r, &e);
                if s.source == RequestSource::Auto {
                    // Auto requests never run in cooldown, nor when guarded mode blocks.
                    prop_assert!(!(d.allowed() && (e.cooldown || e.blocked)));
                }
                if d.verdict == Verdict::Override {
                    prop_assert!(s.ovr && s.ack && s.reason);
                }
                if d.allowed() {
                    executed.push((now, d.verdict == Verdict::Override));
                }
            }
            if c.guarded_mode {
                // No window holds more than the limit of restarts executed without an override.
                let limit = c.retry_budget.min(c.churn_threshold).get() as usize;
                let w = millis(c.window);
                for (i, (t, _)) in executed.iter().enumerate() {
                    let n = executed[..=i]
                        .iter()
                        .filter(|(u, ovr)| !ovr && t - u < w)
                        .count();
                    prop_assert!(n <= limit, "{} non-override restarts within {}s", n, c.window.as_secs());
                }
            }
        }

        #[test]
        fn evaluation_never_panics(times in proptest::collection::vec(any::<i64>(), 0..20), now in any::<i64>(), c in policy()) {
            let h: Vec<Executed> = times.into_iter().map(|at_ms| Executed { at_ms }).collect();
            let e = evaluate(&h, now, &c);
            prop_assert_eq!(e.allowed, e.state == PolicyState::Allowed);
        }
    }
}
