//! The recovery recommendation: the MES dashboard's `build_recovery_recommendation`, the same
//! answer for the same inputs, fed from warden's latest probe of the app and from the policy.

use serde::{Deserialize, Serialize, Serializer};

use std::fmt;

use crate::ledger::model::words;

words! {
    /// What the operator (or the automatic recovery) should do, in the original's words.
    pub enum RecoveryAction {
        None => "none",
        CheckDatabaseConnectivity => "check_database_connectivity",
        ContinueDegradedMode => "continue_degraded_mode",
        WaitForCircuitHalfOpen => "wait_for_circuit_half_open",
        ThrottleAndInvestigateQueries => "throttle_and_investigate_queries",
        WaitForRestartCooldown => "wait_for_restart_cooldown",
        ConsiderControlledWorkerRestart => "consider_controlled_worker_restart",
        ObserveAndRetry => "observe_and_retry",
    }
}

/// Why the action is advised: one of the original's words, or (for `observe_and_retry`) the
/// app's own degraded reason, passed through as the original does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryReason {
    Healthy,
    DatabaseUnreachable,
    RedisUnavailable,
    CircuitBreakerOpen,
    RestartChurnExceeded,
    RestartCooldownActive,
    DbPoolSaturated,
    /// Blocked by the retry budget alone, with no probe to say more (warden's word).
    RetryBudgetExhausted,
    /// The app's degraded reason as it gave it.
    App(String),
}

impl RecoveryReason {
    pub fn as_str(&self) -> &str {
        match self {
            RecoveryReason::Healthy => "healthy",
            RecoveryReason::DatabaseUnreachable => DATABASE_UNREACHABLE,
            RecoveryReason::RedisUnavailable => REDIS_UNAVAILABLE,
            RecoveryReason::CircuitBreakerOpen => "circuit_breaker_open",
            RecoveryReason::RestartChurnExceeded => "restart_churn_exceeded",
            RecoveryReason::RestartCooldownActive => "restart_cooldown_active",
            RecoveryReason::DbPoolSaturated => DB_POOL_SATURATED,
            RecoveryReason::RetryBudgetExhausted => "retry_budget_exhausted",
            RecoveryReason::App(s) => s,
        }
    }

    fn from_word(s: &str) -> RecoveryReason {
        [
            RecoveryReason::Healthy,
            RecoveryReason::DatabaseUnreachable,
            RecoveryReason::RedisUnavailable,
            RecoveryReason::CircuitBreakerOpen,
            RecoveryReason::RestartChurnExceeded,
            RecoveryReason::RestartCooldownActive,
            RecoveryReason::DbPoolSaturated,
            RecoveryReason::RetryBudgetExhausted,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .unwrap_or_else(|| RecoveryReason::App(s.to_string()))
    }
}

impl fmt::Display for RecoveryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RecoveryReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for RecoveryReason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(RecoveryReason::from_word(&String::deserialize(d)?))
    }
}

/// The original's degraded reasons that decide its answer.
pub const DATABASE_UNREACHABLE: &str = "database_unreachable";
pub const REDIS_UNAVAILABLE: &str = "redis_unavailable";
pub const DB_POOL_SATURATED: &str = "db_pool_saturated";
/// The circuit state that means "open" (the original compares exactly).
pub const CIRCUIT_OPEN: &str = "OPEN";

/// What to do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub action: RecoveryAction,
    pub reason: RecoveryReason,
}

/// The recommendation's inputs, as the original takes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs<'a> {
    /// `None` when the app is healthy; any text (even empty) when degraded.
    pub degraded_reason: Option<&'a str>,
    pub pool_saturation: Option<f64>,
    pub circuit_state: Option<&'a str>,
    pub restart_churn_exceeded: bool,
    pub cooldown_active: bool,
}

/// The original's answer for these inputs. Its order matters: what a restart cannot fix
/// (the database, Redis, an open circuit) is named before the pool; a restart is considered
/// only for a pool saturated at 1.0 or above, outside churn and cooldown.
pub fn recommend(i: &Inputs<'_>) -> Recommendation {
    use RecoveryAction as A;
    use RecoveryReason as R;
    let (action, reason) = match i.degraded_reason {
        None => (A::None, R::Healthy),
        Some(DATABASE_UNREACHABLE) => (A::CheckDatabaseConnectivity, R::DatabaseUnreachable),
        Some(REDIS_UNAVAILABLE) => (A::ContinueDegradedMode, R::RedisUnavailable),
        Some(_) if i.circuit_state == Some(CIRCUIT_OPEN) => {
            (A::WaitForCircuitHalfOpen, R::CircuitBreakerOpen)
        }
        Some(DB_POOL_SATURATED) if i.restart_churn_exceeded => {
            (A::ThrottleAndInvestigateQueries, R::RestartChurnExceeded)
        }
        Some(DB_POOL_SATURATED) if i.cooldown_active => {
            (A::WaitForRestartCooldown, R::RestartCooldownActive)
        }
        Some(DB_POOL_SATURATED) if i.pool_saturation.is_some_and(|s| s >= 1.0) => {
            (A::ConsiderControlledWorkerRestart, R::DbPoolSaturated)
        }
        Some(other) => (A::ObserveAndRetry, R::from_word(other)),
    };
    Recommendation { action, reason }
}

/// The recommendation with no probe of the app, as the original's status route gives it: it
/// knows only the policy, and advises only while the policy blocks (in cooldown alone the
/// app is taken as healthy).
pub fn from_policy(blocked: bool, churn_exceeded: bool, cooldown: bool) -> Recommendation {
    if !blocked {
        return recommend(&Inputs::default());
    }
    let r = recommend(&Inputs {
        degraded_reason: Some(DB_POOL_SATURATED),
        restart_churn_exceeded: churn_exceeded,
        cooldown_active: cooldown,
        ..Inputs::default()
    });
    match r.reason {
        // Blocked by the retry budget alone: the original names this after the condition it
        // feeds in to reach the branch; warden names the actual cause.
        RecoveryReason::DbPoolSaturated => Recommendation {
            action: r.action,
            reason: RecoveryReason::RetryBudgetExhausted,
        },
        _ => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RecoveryAction as A;

    fn rec(
        degraded: Option<&str>,
        saturation: Option<f64>,
        circuit: Option<&str>,
        churn: bool,
        cooldown: bool,
    ) -> (String, String) {
        let r = recommend(&Inputs {
            degraded_reason: degraded,
            pool_saturation: saturation,
            circuit_state: circuit,
            restart_churn_exceeded: churn,
            cooldown_active: cooldown,
        });
        (r.action.as_str().to_string(), r.reason.as_str().to_string())
    }

    fn pair(a: &str, r: &str) -> (String, String) {
        (a.to_string(), r.to_string())
    }

    #[test]
    fn the_original_table_case_by_case() {
        let sat = Some("db_pool_saturated");
        assert_eq!(
            rec(None, Some(1.0), Some("OPEN"), true, true),
            pair("none", "healthy")
        );
        assert_eq!(
            rec(
                Some("database_unreachable"),
                Some(1.0),
                Some("OPEN"),
                true,
                true
            ),
            pair("check_database_connectivity", "database_unreachable")
        );
        assert_eq!(
            rec(Some("redis_unavailable"), None, Some("OPEN"), false, false),
            pair("continue_degraded_mode", "redis_unavailable")
        );
        assert_eq!(
            rec(sat, Some(1.0), Some("OPEN"), false, false),
            pair("wait_for_circuit_half_open", "circuit_breaker_open")
        );
        assert_eq!(
            rec(sat, Some(1.0), Some("CLOSED"), true, true),
            pair("throttle_and_investigate_queries", "restart_churn_exceeded")
        );
        assert_eq!(
            rec(sat, Some(1.0), None, false, true),
            pair("wait_for_restart_cooldown", "restart_cooldown_active")
        );
        assert_eq!(
            rec(sat, Some(1.0), Some("CLOSED"), false, false),
            pair("consider_controlled_worker_restart", "db_pool_saturated")
        );
        // Saturated by its name but below 1.0, or unknown: watch.
        assert_eq!(
            rec(sat, Some(0.95), None, false, false),
            pair("observe_and_retry", "db_pool_saturated")
        );
        assert_eq!(
            rec(sat, None, None, false, false),
            pair("observe_and_retry", "db_pool_saturated")
        );
        // Any other reason, even an empty one, passes through.
        assert_eq!(
            rec(Some("route_cache_degraded"), Some(2.0), None, false, false),
            pair("observe_and_retry", "route_cache_degraded")
        );
        assert_eq!(
            rec(Some(""), None, None, false, false),
            pair("observe_and_retry", "")
        );
        // A circuit is open only as "OPEN", exactly.
        assert_eq!(
            rec(Some("x"), None, Some("open"), false, false),
            pair("observe_and_retry", "x")
        );
    }

    #[test]
    fn a_restart_is_considered_only_for_a_full_pool_outside_churn_and_cooldown() {
        let reasons = [
            None,
            Some("database_unreachable"),
            Some("redis_unavailable"),
            Some("circuit_breaker_open"),
            Some("db_pool_saturated"),
            Some("route_cache_degraded"),
            Some(""),
        ];
        let saturations = [
            None,
            Some(0.0),
            Some(0.9),
            Some(0.999),
            Some(1.0),
            Some(1.5),
        ];
        let circuits = [None, Some("CLOSED"), Some("HALF_OPEN"), Some("OPEN")];
        for d in reasons {
            for s in saturations {
                for c in circuits {
                    for churn in [false, true] {
                        for cool in [false, true] {
                            let r = recommend(&Inputs {
                                degraded_reason: d,
                                pool_saturation: s,
                                circuit_state: c,
                                restart_churn_exceeded: churn,
                                cooldown_active: cool,
                            });
                            let restart = d == Some("db_pool_saturated")
                                && s.is_some_and(|s| s >= 1.0)
                                && c != Some("OPEN")
                                && !churn
                                && !cool;
                            assert_eq!(
                                r.action == A::ConsiderControlledWorkerRestart,
                                restart,
                                "{d:?} {s:?} {c:?} {churn} {cool}"
                            );
                            assert_eq!(r.action == A::None, d.is_none());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn without_a_probe_it_advises_only_while_the_policy_blocks() {
        let r = |b, ch, co| {
            let r = from_policy(b, ch, co);
            (r.action.as_str().to_string(), r.reason.as_str().to_string())
        };
        assert_eq!(r(false, true, true), pair("none", "healthy"));
        assert_eq!(
            r(true, true, true),
            pair("throttle_and_investigate_queries", "restart_churn_exceeded")
        );
        assert_eq!(
            r(true, false, true),
            pair("wait_for_restart_cooldown", "restart_cooldown_active")
        );
        assert_eq!(
            r(true, false, false),
            pair("observe_and_retry", "retry_budget_exhausted")
        );
    }

    #[test]
    fn reasons_read_back_as_written() {
        for w in ["healthy", "db_pool_saturated", "route_cache_degraded", ""] {
            let r: RecoveryReason = serde_json::from_value(w.into()).unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), w);
        }
    }
}
