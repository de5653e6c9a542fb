//! The fleet's series, read at each scrape from what the restart executor shares: the slot
//! held and since when, the wait, the slot requests by outcome, the alert gate.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::agent::fleet::GateGauges;
use crate::fleet::coordinator::Gauges;

/// The fleet's part of the registry.
#[derive(Debug)]
pub struct FleetSeries {
    /// The group, its slot count and the agent's gauges, when the fleet coordinates.
    pub slots: Option<(String, u32, Arc<Gauges>)>,
    /// The gate's gauges, when it is configured.
    pub gate: Option<Arc<GateGauges>>,
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> std::fmt::Result {
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for FleetSeries {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        if let Some((group, slots, g)) = &self.slots {
            let mut f = e.encode_descriptor(
                "warden_fleet_slots",
                "The reload slots of the agent's fleet group: how many hosts may reload at once",
                None,
                MetricType::Gauge,
            )?;
            f.encode_family(&[("group", group.as_str())])?
                .encode_gauge(&i64::from(*slots))?;
            let held = g.held_slot.load(Relaxed) >= 0;
            gauge(
                &mut e,
                "warden_fleet_slot_held",
                "1 while this agent holds a reload slot (a failed reload keeps it)",
                f64::from(u8::from(held)),
            )?;
            gauge(
                &mut e,
                "warden_fleet_slot_kept_after_failure",
                "1 while the slot is held past a failed reload: the group's next host waits",
                f64::from(u8::from(g.kept_after_failure.load(Relaxed))),
            )?;
            let ts = |ms: i64| if ms > 0 { ms as f64 / 1e3 } else { 0.0 };
            gauge(
                &mut e,
                "warden_fleet_slot_held_since_timestamp_seconds",
                "Since when the slot is held (Unix time); 0 when none is",
                ts(g.held_since_ms.load(Relaxed)),
            )?;
            gauge(
                &mut e,
                "warden_fleet_waiting_since_timestamp_seconds",
                "Since when a restart waits for a slot (Unix time); 0 when none waits",
                ts(g.waiting_since_ms.load(Relaxed)),
            )?;
            gauge(
                &mut e,
                "warden_fleet_last_wait_seconds",
                "How long the last restart waited for its slot (or until it gave up)",
                g.last_wait_us.load(Relaxed) as f64 / 1e6,
            )?;
            let mut f = e.encode_descriptor(
                "warden_fleet_slot_requests",
                "Restarts that asked for a slot, by what they got",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in [
                ("granted", &g.granted),
                ("unavailable", &g.unavailable),
                ("unreachable", &g.unreachable),
                ("without_slot", &g.without_slot),
            ] {
                ConstCounter::new(n.load(Relaxed))
                    .encode(f.encode_family(&[("outcome", outcome)])?)?;
            }
        }
        if let Some(g) = &self.gate {
            gauge(
                &mut e,
                "warden_alert_gate_firing",
                "Alerts matching the gate's matchers at its last ask; -1 when Alertmanager could not be asked",
                g.firing.load(Relaxed) as f64,
            )?;
            ConstCounter::new(g.deferrals.load(Relaxed)).encode(e.encode_descriptor(
                "warden_alert_gate_deferrals",
                "Automatic restarts deferred by the alert gate",
                None,
                MetricType::Counter,
            )?)?;
        }
        Ok(())
    }
}
