//! Automatic recovery's pure logic: what a probe of the app says ([`observation`]), the
//! original's recovery recommendation ([`recommend`]), how a probe weighs as evidence
//! ([`weigh`]), and the breaker that decides when to ask for a restart and when to stop
//! ([`breaker`]). The agent's probe loop (`agent::probe`) does the I/O.

pub mod breaker;
pub mod observation;
pub mod recommend;
pub mod watcher;

use breaker::{Cause, Evidence};
use observation::Observation;
use recommend::{Inputs, RecoveryAction};

/// How a probe weighs: a failing answer counts unless it names a cause a restart cannot fix;
/// a saturated pool counts when the app's state alone (the policy left out: it rules on the
/// request itself) would have the original recommend a controlled restart.
pub fn weigh(o: &Observation) -> Evidence {
    if o.unfixable().is_some() {
        return Evidence::NotRestartable;
    }
    if !o.answered_ok() {
        return Evidence::Restartable(Cause::HealthFailing);
    }
    let r = recommend::recommend(&Inputs {
        degraded_reason: o.degraded_reason(),
        pool_saturation: o.pool_saturation(),
        circuit_state: o.circuit_state(),
        restart_churn_exceeded: false,
        cooldown_active: false,
    });
    match r.action {
        RecoveryAction::None => Evidence::Healthy,
        RecoveryAction::ConsiderControlledWorkerRestart => {
            Evidence::Restartable(Cause::PoolSaturated)
        }
        _ => Evidence::NotRestartable,
    }
}

#[cfg(test)]
mod tests {
    use super::observation::{AppHealth, Http};
    use super::*;

    fn obs(
        status: Option<u16>,
        reason: Option<&str>,
        sat: Option<f64>,
        circuit: Option<&str>,
    ) -> Observation {
        Observation {
            at_ms: 0,
            http: match status {
                Some(status) => Http::Answered {
                    status,
                    latency_ms: 1.0,
                },
                None => Http::TimedOut { after_ms: 2000.0 },
            },
            app: Some(AppHealth {
                degraded_reason: reason.map(str::to_string),
                pool_saturation: sat,
                circuit_state: circuit.map(str::to_string),
            }),
            workers: Some(2),
        }
    }

    #[test]
    fn probes_weigh_as_the_runbook_says() {
        assert_eq!(
            weigh(&obs(Some(200), None, Some(0.2), Some("CLOSED"))),
            Evidence::Healthy
        );
        assert_eq!(
            weigh(&obs(
                Some(200),
                Some("db_pool_saturated"),
                Some(1.0),
                Some("CLOSED")
            )),
            Evidence::Restartable(Cause::PoolSaturated)
        );
        assert_eq!(
            weigh(&obs(Some(200), Some("db_pool_saturated"), Some(0.95), None)),
            Evidence::NotRestartable,
            "warning level: watch, do not restart"
        );
        assert_eq!(
            weigh(&obs(None, None, None, None)),
            Evidence::Restartable(Cause::HealthFailing)
        );
        assert_eq!(
            weigh(&obs(Some(500), None, None, None)),
            Evidence::Restartable(Cause::HealthFailing)
        );
        for unfixable in [
            obs(Some(503), Some("database_unreachable"), None, None),
            obs(Some(503), Some("redis_unavailable"), None, None),
            obs(
                Some(503),
                Some("circuit_breaker_open"),
                Some(1.0),
                Some("OPEN"),
            ),
        ] {
            assert_eq!(weigh(&unfixable), Evidence::NotRestartable, "{unfixable:?}");
        }
    }
}
