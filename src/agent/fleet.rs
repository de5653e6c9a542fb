//! What a restart asks outside its host: a reload slot of its fleet group before the signal
//! (given back after a verified reload, kept after a failed one), and, for an automatic
//! restart, the alert gate. Behind traits, so that the flow is tested with fakes.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::fleet::connect::ConnectError;
use crate::fleet::coordinator::{Asker, Coordinator, Gauges, Grant, Identity};
use crate::platform::alertmanager::{Alertmanager, GateError, Matchers};

/// The group's reload slots.
pub trait Slots: Send {
    fn group(&self) -> &str;
    /// A slot for a restart asked by `asker`; `turn` runs at least every half second while
    /// it waits.
    fn acquire(&mut self, asker: Asker, turn: &mut dyn FnMut()) -> Grant;
    /// The reload was verified: the slot goes back.
    fn verified(&mut self);
    /// The reload failed: the slot stays held.
    fn failed(&mut self);
}

impl Slots for Coordinator {
    fn group(&self) -> &str {
        &self.identity().group
    }
    fn acquire(&mut self, asker: Asker, turn: &mut dyn FnMut()) -> Grant {
        Coordinator::acquire(self, asker, turn)
    }
    fn verified(&mut self) {
        Coordinator::verified(self)
    }
    fn failed(&mut self) {
        Coordinator::failed(self)
    }
}

/// What the gate says of an automatic restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateAnswer {
    Open,
    /// Deferred while these alerts fire (or while the gate cannot tell). `again`: the same
    /// alerts deferred the last automatic restart, which the history holds already.
    Deferred {
        alerts: Vec<String>,
        again: bool,
    },
}

/// The alert gate.
pub trait Gate: Send {
    fn ask(&mut self) -> GateAnswer;
}

/// How long Alertmanager may take to answer.
const GATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Alertmanager, asked for the configured matchers.
pub struct AlertGate {
    alertmanager: Alertmanager,
    matchers: Matchers,
    last_deferred: Option<Vec<String>>,
    gauges: Arc<GateGauges>,
}

/// What the metrics show of the gate, shared with them.
#[derive(Debug, Default)]
pub struct GateGauges {
    /// Alerts matching now (as of the last ask); -1 when Alertmanager could not be asked.
    pub firing: std::sync::atomic::AtomicI64,
    pub deferrals: std::sync::atomic::AtomicU64,
}

impl AlertGate {
    pub fn new(
        url: crate::platform::http::HealthUrl,
        matchers: Matchers,
        gauges: Arc<GateGauges>,
    ) -> AlertGate {
        AlertGate {
            alertmanager: Alertmanager::new(url, GATE_TIMEOUT),
            matchers,
            last_deferred: None,
            gauges,
        }
    }
}

impl Gate for AlertGate {
    fn ask(&mut self) -> GateAnswer {
        use std::sync::atomic::Ordering::Relaxed;
        let alerts = match self.alertmanager.firing(&self.matchers) {
            Ok(f) => {
                self.gauges.firing.store(f.len() as i64, Relaxed);
                let mut names: Vec<String> = f.into_iter().map(|a| a.name).collect();
                names.sort();
                names.dedup();
                names
            }
            // Cannot tell whether the incident is over: an automatic restart waits, as it
            // waits for etcd; an operator's is not gated.
            Err(e @ (GateError::Unreachable(_) | GateError::Refused { .. })) => {
                self.gauges.firing.store(-1, Relaxed);
                vec![format!("(alertmanager: {e})")]
            }
        };
        if alerts.is_empty() {
            self.last_deferred = None;
            return GateAnswer::Open;
        }
        self.gauges.deferrals.fetch_add(1, Relaxed);
        let again = self.last_deferred.as_ref() == Some(&alerts);
        self.last_deferred = Some(alerts.clone());
        GateAnswer::Deferred { alerts, again }
    }
}

/// The fleet's parts of a running agent, as its settings ask.
pub struct Outside {
    pub slots: Option<Box<dyn Slots>>,
    pub gate: Option<Box<dyn Gate>>,
    pub fleet_gauges: Arc<Gauges>,
    pub gate_gauges: Arc<GateGauges>,
    pub identity: Option<Identity>,
}

/// The instance's name in its fleet: its app unit's app, else `app` (the agent and
/// `warden fleet` agree on it, so that both name the same group).
pub fn instance_name(s: &Settings) -> String {
    s.app_unit
        .as_deref()
        .and_then(crate::config::instance::AppName::of_unit)
        .map_or_else(|| "app".to_string(), |a| a.as_str().to_string())
}

impl Outside {
    /// `app`: the instance's name (the holder id's and, unless configured, the group's).
    pub fn of(s: &Settings, app: &str) -> Result<Outside, ConnectError> {
        let fleet_gauges = Arc::new(Gauges::new());
        let gate_gauges = Arc::new(GateGauges::default());
        let identity = s.fleet.as_ref().map(|f| Identity::of(f, app));
        let slots = match s.fleet.as_ref().zip(identity.clone()) {
            Some((f, me)) => {
                Some(Box::new(Coordinator::new(f, me, fleet_gauges.clone())?) as Box<dyn Slots>)
            }
            None => None,
        };
        Ok(Outside {
            slots,
            gate: s.alert_gate.as_ref().map(|g| {
                Box::new(AlertGate::new(
                    g.url.clone(),
                    g.matchers.0.clone(),
                    gate_gauges.clone(),
                )) as Box<dyn Gate>
            }),
            fleet_gauges,
            gate_gauges,
            identity,
        })
    }

    /// Nothing outside the host.
    pub fn none() -> Outside {
        Outside {
            slots: None,
            gate: None,
            fleet_gauges: Arc::new(Gauges::new()),
            gate_gauges: Arc::new(GateGauges::default()),
            identity: None,
        }
    }
}
