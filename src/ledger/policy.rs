//! The churn-limiting restart policy: a pure function of (history, now, configuration).
//!
//! Compatible with the MES dashboard's `worker_recovery_policy.py` (its variables, defaults,
//! states and decision table), with its defects fixed: only restarts that were executed count
//! toward the window and the cooldown (blocked, failed and rejected requests are recorded
//! elsewhere, never counted), times are UTC milliseconds, and an override needs an
//! acknowledgement and a reason.

use serde::{Deserialize, Serialize};

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

/// The [`Retain`] rule for `cfg` at `now_ms`.
pub fn retain(cfg: &PolicyConfig, now_ms: i64) -> Retain {
    Retain {
        executed: cfg.retry_budget.max(cfg.churn_threshold).max(1) as usize,
        since_ms: now_ms.saturating_sub((cfg.window_seconds as i64).saturating_mul(1000)),
    }
}

/// Who asked for a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestSource {
    /// An operator (admin API, CLI, a flag written by hand).
    Manual,
    /// Automation (the app's own recovery logic).
    Auto,
    /// A kill-switch flip: an operator rollback, never blocked by the policy.
    KillSwitch,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Allowed,
    Cooldown,
    Blocked,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Allowed => "allowed",
            State::Cooldown => "cooldown",
            State::Blocked => "blocked",
        }
    }
}

/// The policy state, field for field as the MES status document's `policy_state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub state: State,
    pub allowed: bool,
    pub cooldown: bool,
    pub blocked: bool,
    pub cooldown_remaining_seconds: u64,
    pub attempts_in_window: u32,
    pub retry_budget: u32,
    pub churn_threshold: u32,
    pub window_seconds: u64,
}

/// Evaluates the policy at `now_ms` over the executed restarts in `history` (any order).
pub fn evaluate(history: &[Executed], now_ms: i64, cfg: &PolicyConfig) -> Evaluation {
    let window_ms = (cfg.window_seconds as i64).saturating_mul(1000);
    // Entries from the future (a clock stepped back) count as now: they never make the window
    // or the cooldown shorter than it should be.
    let age = |e: &Executed| now_ms.saturating_sub(e.at_ms).max(0);
    let attempts = history.iter().filter(|e| age(e) < window_ms).count();
    let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
    let last_age = history.iter().map(age).min();
    let cooldown_ms = (cfg.cooldown_seconds as i64).saturating_mul(1000);
    let remaining_ms = last_age.map_or(0, |a| (cooldown_ms - a).max(0));
    let cooldown = remaining_ms > 0;
    let blocked =
        cfg.guarded_mode && (attempts >= cfg.retry_budget || attempts >= cfg.churn_threshold);
    let state = if blocked {
        State::Blocked
    } else if cooldown {
        State::Cooldown
    } else {
        State::Allowed
    };
    Evaluation {
        state,
        allowed: state == State::Allowed,
        cooldown,
        blocked,
        // Rounded up: "wait 0 seconds" while still in cooldown would be wrong.
        cooldown_remaining_seconds: ((remaining_ms + 999) / 1000) as u64,
        attempts_in_window: attempts,
        retry_budget: cfg.retry_budget,
        churn_threshold: cfg.churn_threshold,
        window_seconds: cfg.window_seconds,
    }
}

/// What the policy says to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allowed,
    ManualOverride,
    Blocked,
    /// Malformed: an override without a reason. Not a policy decision; the caller's error.
    Refused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub decision: Verdict,
    /// The original's reason strings, kept for the dashboard and alerting.
    pub reason: &'static str,
    pub requires_acknowledgement: bool,
}

impl Decision {
    fn new(decision: Verdict, reason: &'static str, requires_acknowledgement: bool) -> Self {
        Decision {
            allowed: matches!(decision, Verdict::Allowed | Verdict::ManualOverride),
            decision,
            reason,
            requires_acknowledgement,
        }
    }
}

/// The decision table (`decide_restart_request`).
pub fn decide(req: &Request, eval: &Evaluation) -> Decision {
    let reason_given = req
        .override_reason
        .as_deref()
        .is_some_and(|r| !r.trim().is_empty());
    match req.source {
        RequestSource::KillSwitch => Decision::new(Verdict::Allowed, "kill_switch_rollback", false),
        RequestSource::Auto if eval.blocked => {
            Decision::new(Verdict::Blocked, "guarded_mode_blocked", false)
        }
        RequestSource::Auto if eval.cooldown => {
            Decision::new(Verdict::Blocked, "cooldown_active", false)
        }
        RequestSource::Auto => Decision::new(Verdict::Allowed, "policy_allows_auto_restart", false),
        RequestSource::Manual if req.manual_override && !reason_given => {
            Decision::new(Verdict::Refused, "override_reason_required", true)
        }
        RequestSource::Manual if eval.blocked || eval.cooldown => {
            if req.manual_override && req.override_acknowledged {
                Decision::new(
                    Verdict::ManualOverride,
                    "operator_override_acknowledged",
                    false,
                )
            } else if eval.blocked {
                Decision::new(Verdict::Blocked, "manual_override_required", true)
            } else {
                Decision::new(Verdict::Blocked, "cooldown_override_required", true)
            }
        }
        RequestSource::Manual => {
            Decision::new(Verdict::Allowed, "policy_allows_manual_restart", false)
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
                cooldown_seconds: c,
                retry_budget: b,
                churn_threshold: t,
                window_seconds: w,
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
        PolicyConfig::default()
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
        assert_eq!(evaluate(&[], now, &c).state, State::Allowed);
        let e = evaluate(
            &[Executed {
                at_ms: now - 10 * S,
            }],
            now,
            &c,
        );
        assert_eq!(
            (e.state, e.cooldown_remaining_seconds),
            (State::Cooldown, 50)
        );
        let three: Vec<_> = [500, 300, 100]
            .iter()
            .map(|a| Executed { at_ms: now - a * S })
            .collect();
        let e = evaluate(&three, now, &c);
        assert_eq!((e.state, e.attempts_in_window), (State::Blocked, 3));
        // Past the window, nothing counts.
        let e = evaluate(&three, now + 600 * S, &c);
        assert_eq!((e.state, e.attempts_in_window), (State::Allowed, 0));
        // Guarded mode off: never blocked, cooldown still applies.
        let off = PolicyConfig {
            guarded_mode: false,
            ..c
        };
        assert_eq!(evaluate(&three, now, &off).state, State::Allowed);
        assert_eq!(evaluate(&three, now - 90 * S, &off).state, State::Cooldown);
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
            (d.allowed, d.decision, d.reason, d.requires_acknowledgement)
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
                Verdict::ManualOverride,
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
                    prop_assert!(!(d.allowed && (e.cooldown || e.blocked)));
                }
                if d.decision == Verdict::ManualOverride {
                    prop_assert!(s.ovr && s.ack && s.reason);
                }
                if d.allowed {
                    executed.push((now, d.decision == Verdict::ManualOverride));
                }
            }
            if c.guarded_mode {
                // No window holds more than the limit of restarts executed without an override.
                let limit = c.retry_budget.min(c.churn_threshold) as usize;
                let w = c.window_seconds as i64 * 1000;
                for (i, (t, _)) in executed.iter().enumerate() {
                    let n = executed[..=i]
                        .iter()
                        .filter(|(u, ovr)| !ovr && t - u < w)
                        .count();
                    prop_assert!(n <= limit, "{} non-override restarts within {}s", n, c.window_seconds);
                }
            }
        }

        #[test]
        fn evaluation_never_panics(times in proptest::collection::vec(any::<i64>(), 0..20), now in any::<i64>(), c in policy()) {
            let h: Vec<Executed> = times.into_iter().map(|at_ms| Executed { at_ms }).collect();
            let e = evaluate(&h, now, &c);
            prop_assert_eq!(e.allowed, e.state == State::Allowed);
        }
    }
}
