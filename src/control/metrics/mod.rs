//! The agent's Prometheus metrics: a registry the event loop updates, encoded in the text
//! exposition format 0.0.4 by `prometheus-client` (its `prometheus_text` encoder: node_exporter's
//! textfile collector and `promtool check metrics` read 0.0.4, not OpenMetrics), and taken out
//! of the agent by [`endpoint`].
//!
//! Families (all prefixed `warden_`): `restarts_total{decision,source}`, `policy_state{state}`,
//! `policy_attempts_in_window`, `policy_cooldown_remaining_seconds`, `kill_switch_engaged`,
//! `reload_duration_seconds`, `flag_to_signal_seconds` and `preflight_duration_seconds`
//! (histograms), `preflight_failures_total`, `contract_valid`,
//! `watchdog_pings_total`, `start_time_seconds`, `build_info{version}`; with probes,
//! `probes_total{result}`, `probe_duration_seconds`, `probe_consecutive_failures`,
//! `app_workers`, `app_degraded`, `app_degraded_seconds`, `degraded_alert_seconds`,
//! `app_pool_saturation`, `app_pool_saturation_probes{level}`, `recovery_breaker_state{state}`,
//! `recovery_breaker_transitions_total{to}`, `auto_recovery_requests_total{mode}`; an app's
//! agent labels every series `app="APP"`.

pub mod endpoint;

use std::borrow::Cow;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use endpoint::{TextfileError, bind_socket, serve_unix, write_textfile};

use crate::ledger::entry::Entry;
use crate::ledger::model::{Decision, Reason, RequestSource};
use crate::ledger::policy::{Evaluation, PolicyState};
use crate::ledger::state::StateDoc;
use crate::recovery::breaker::BreakerState;
use crate::recovery::observation::{Http, Observation};
use crate::recovery::watcher::Watcher;

/// Flag to signal, in seconds: claiming, reading and deciding take well under a millisecond, a
/// missing PID file can add up to 2 s.
const FLAG_TO_SIGNAL_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Signal to every worker replaced, in seconds: from a few milliseconds to
/// `WARDEN_RELOAD_TIMEOUT`.
const RELOAD_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A probe of the health URL, in seconds: a local answer in milliseconds, up to the timeout.
const PROBE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The app's `gunicorn --check-config`, in seconds: an interpreter's start and the app's import,
/// up to `WARDEN_PREFLIGHT_TIMEOUT`.
const PREFLIGHT_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

type Labels = [(&'static str, &'static str); 2];

/// The policy as last evaluated. Behind a lock: its fields belong together.
#[derive(Debug, Clone, Copy)]
struct PolicySnapshot {
    state: PolicyState,
    attempts: u32,
    cooldown_until: Option<Instant>,
}

const CONTRACT_UNKNOWN: u8 = 0;
const CONTRACT_INVALID: u8 = 1;
const CONTRACT_VALID: u8 = 2;

/// What is read at each scrape rather than stored: the cooldown counts down by itself between
/// evaluations, and the contract's validity is not exported until it is known.
#[derive(Debug)]
struct Live {
    policy: Mutex<PolicySnapshot>,
    contract: AtomicU8,
}

/// The agent's metrics. Every method takes `&self`; share it as `Arc<Metrics>` between the
/// event loop and the endpoint.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    restarts: Family<Labels, Counter>,
    kill_switch: Gauge,
    watchdog_pings: Counter,
    reload: Histogram,
    flag_to_signal: Histogram,
    preflight: Histogram,
    preflight_failures: Counter,
    probes: Family<[(&'static str, &'static str); 1], Counter>,
    probe_duration: Histogram,
    probe_failures: Gauge,
    app_workers: Gauge,
    app_degraded: Gauge,
    app_degraded_seconds: Gauge,
    degraded_alert_seconds: Gauge,
    app_pool_saturation: Gauge<f64, AtomicU64>,
    app_saturated_probes: Family<[(&'static str, &'static str); 1], Gauge>,
    breaker_state: Family<[(&'static str, &'static str); 1], Gauge>,
    breaker_transitions: Family<[(&'static str, &'static str); 1], Counter>,
    auto_requests: Family<[(&'static str, &'static str); 1], Counter>,
    live: Arc<Live>,
}

impl Metrics {
    /// A registry for this agent; `version` goes to `warden_build_info`
    /// (`env!("CARGO_PKG_VERSION")`). The start time is now. The policy starts as it is with
    /// no history (allowed, no attempts); the contract's validity is unknown (and not
    /// exported) until [`Metrics::set_contract_valid`].
    pub fn new(version: &str) -> Self {
        Self::with_registry(version, Registry::default())
    }

    /// As [`Metrics::new`], every series labelled `app="APP"`: the agents of a host's apps
    /// write their textfiles side by side, and node_exporter refuses a series seen twice.
    pub fn for_app(version: &str, app: &str) -> Self {
        let labels = [(Cow::Borrowed("app"), Cow::Owned(app.to_string()))];
        Self::with_registry(version, Registry::with_labels(labels.into_iter()))
    }

    fn with_registry(version: &str, mut registry: Registry) -> Self {
        let build = Family::<[(&'static str, String); 1], Gauge>::default();
        build
            .get_or_create(&[("version", version.to_string())])
            .set(1);
        registry.register(
            "warden_build_info",
            "The running warden's version; always 1",
            build,
        );
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        registry.register(
            "warden_start_time_seconds",
            "When the agent started, in seconds since the Unix epoch",
            ConstGauge::new(started.as_secs_f64()),
        );
        let restarts = Family::<Labels, Counter>::default();
        // Every combination from the start: increase() needs the zero before the first event.
        for d in Decision::OUTCOMES {
            for s in RequestSource::ALL {
                let _ = restarts.get_or_create(&[("decision", d.as_str()), ("source", s.as_str())]);
            }
        }
        registry.register(
            "warden_restarts",
            "Restart requests handled, by decision and by source",
            restarts.clone(),
        );
        let live = Arc::new(Live {
            policy: Mutex::new(PolicySnapshot {
                state: PolicyState::Allowed,
                attempts: 0,
                cooldown_until: None,
            }),
            contract: AtomicU8::new(CONTRACT_UNKNOWN),
        });
        registry.register_collector(Box::new(live.clone()));
        let kill_switch = Gauge::default();
        registry.register(
            "warden_kill_switch_engaged",
            "1 while the kill switch is engaged",
            kill_switch.clone(),
        );
        let reload = Histogram::new(RELOAD_BUCKETS.iter().copied());
        registry.register(
            "warden_reload_duration_seconds",
            "From the SIGHUP to every old worker replaced",
            reload.clone(),
        );
        let flag_to_signal = Histogram::new(FLAG_TO_SIGNAL_BUCKETS.iter().copied());
        registry.register(
            "warden_flag_to_signal_seconds",
            "From the restart flag's write to the SIGHUP",
            flag_to_signal.clone(),
        );
        let preflight = Histogram::new(PREFLIGHT_BUCKETS.iter().copied());
        registry.register(
            "warden_preflight_duration_seconds",
            "The app's gunicorn --check-config before a reload, when it passed",
            preflight.clone(),
        );
        let preflight_failures = Counter::default();
        registry.register(
            "warden_preflight_failures",
            "Reloads refused because the app's Gunicorn could not load its configuration or application",
            preflight_failures.clone(),
        );
        let watchdog_pings = Counter::default();
        registry.register(
            "warden_watchdog_pings",
            "WATCHDOG=1 notifications sent to systemd",
            watchdog_pings.clone(),
        );
        let probes = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for r in ["ok", "failed"] {
            let _ = probes.get_or_create(&[("result", r)]);
        }
        registry.register(
            "warden_probes",
            "Probes of the health URL: ok (2xx) or failed (an error status, a timeout, no answer)",
            probes.clone(),
        );
        let probe_duration = Histogram::new(PROBE_BUCKETS.iter().copied());
        registry.register(
            "warden_probe_duration_seconds",
            "A probe's answer time, when it answered",
            probe_duration.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let probe_failures = gauge(
            &mut registry,
            "warden_probe_consecutive_failures",
            "Probes failed in a row, up to the last one",
        );
        let app_workers = gauge(
            &mut registry,
            "warden_app_workers",
            "The Gunicorn master's live workers at the last probe",
        );
        let app_degraded = gauge(
            &mut registry,
            "warden_app_degraded",
            "1 while the app's health document names a degraded reason",
        );
        let app_degraded_seconds = gauge(
            &mut registry,
            "warden_app_degraded_seconds",
            "How long the app has been degraded without a break, in seconds",
        );
        let degraded_alert_seconds = gauge(
            &mut registry,
            "warden_degraded_alert_seconds",
            "RESILIENCE_DEGRADED_ALERT_SECONDS: how long the app may be degraded before the alert",
        );
        let app_pool_saturation = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "warden_app_pool_saturation",
            "The app's database pool saturation at the last probe that gave one (1.0 is full)",
            app_pool_saturation.clone(),
        );
        let app_saturated_probes = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        for l in ["warning", "critical"] {
            let _ = app_saturated_probes.get_or_create(&[("level", l)]);
        }
        registry.register(
            "warden_app_pool_saturation_probes",
            "Probes in a row with the pool saturation at or above the level's threshold",
            app_saturated_probes.clone(),
        );
        let breaker_state = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        for s in BreakerState::ALL {
            let _ = breaker_state
                .get_or_create(&[("state", s.as_str())])
                .set(i64::from(*s == BreakerState::Closed));
        }
        registry.register(
            "warden_recovery_breaker_state",
            "The automatic recovery breaker's state: 1 for the current one",
            breaker_state.clone(),
        );
        let breaker_transitions = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for s in BreakerState::ALL {
            let _ = breaker_transitions.get_or_create(&[("to", s.as_str())]);
        }
        registry.register(
            "warden_recovery_breaker_transitions",
            "The breaker's changes of state, by the state entered",
            breaker_transitions.clone(),
        );
        let auto_requests = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for m in ["on", "dry-run"] {
            let _ = auto_requests.get_or_create(&[("mode", m)]);
        }
        registry.register(
            "warden_auto_recovery_requests",
            "Automatic restarts asked for by the probes (in a dry run: ruled on, not signalled)",
            auto_requests.clone(),
        );
        Metrics {
            probes,
            probe_duration,
            probe_failures,
            app_workers,
            app_degraded,
            app_degraded_seconds,
            degraded_alert_seconds,
            app_pool_saturation,
            app_saturated_probes,
            breaker_state,
            breaker_transitions,
            auto_requests,
            registry,
            restarts,
            kill_switch,
            watchdog_pings,
            reload,
            flag_to_signal,
            preflight,
            preflight_failures,
            live,
        }
    }

    /// Counts one handled request.
    pub fn record_restart(&self, decision: Decision, source: RequestSource) {
        if Decision::OUTCOMES.contains(&decision) {
            self.restarts
                .get_or_create(&[("decision", decision.as_str()), ("source", source.as_str())])
                .inc();
        }
    }

    /// Counts a handled request as its entry records it, with its timings.
    pub fn count(&self, e: &Entry) {
        let Some(decision) = e.decided() else { return };
        self.record_restart(decision, e.source().unwrap_or_default());
        if decision == Decision::Executed
            && let Some(t) = &e.timings
        {
            let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
            if let Some(v) = t.flag_to_signal_ms {
                self.observe_flag_to_signal(ms(v));
            }
            if let Some(v) = t.workers_replaced_ms {
                self.observe_reload(ms(v));
            }
            if let Some(v) = t.preflight_ms {
                self.preflight.observe(ms(v).as_secs_f64());
            }
        }
        if decision == Decision::Failed
            && e.decision_reason.as_ref().and_then(|r| r.known()) == Some(Reason::PreflightFailed)
        {
            self.preflight_failures.inc();
        }
    }

    /// Refreshes the gauges that follow the state.
    pub fn follow(&self, eval: &Evaluation, doc: &StateDoc) {
        self.set_policy(eval);
        self.set_kill_switch(doc.kill_switch.as_ref().is_some_and(|k| k.engaged));
    }

    /// The restart flag's write to the SIGHUP (`timings.flag_to_signal_ms`).
    pub fn observe_flag_to_signal(&self, d: Duration) {
        self.flag_to_signal.observe(d.as_secs_f64());
    }

    /// The SIGHUP to every old worker replaced (`timings.workers_replaced_ms`).
    pub fn observe_reload(&self, d: Duration) {
        self.reload.observe(d.as_secs_f64());
    }

    /// Takes a policy evaluation. The cooldown counts down by itself between calls (its end is
    /// known, and its end means `allowed`: a cooldown is never blocked, and the window only
    /// empties with time); the rest is as of this evaluation, so call this at each evaluation
    /// and periodically for a blocked state to clear on time.
    pub fn set_policy(&self, e: &Evaluation) {
        let snap = PolicySnapshot {
            state: e.state,
            attempts: e.attempts_in_window,
            cooldown_until: (e.cooldown_remaining_seconds > 0)
                .then(|| {
                    Instant::now().checked_add(Duration::from_secs(e.cooldown_remaining_seconds))
                })
                .flatten(),
        };
        *self
            .live
            .policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = snap;
    }

    pub fn set_kill_switch(&self, engaged: bool) {
        self.kill_switch.set(i64::from(engaged));
    }

    /// The runtime contract as last checked.
    pub fn set_contract_valid(&self, valid: bool) {
        let v = if valid {
            CONTRACT_VALID
        } else {
            CONTRACT_INVALID
        };
        self.live.contract.store(v, Relaxed);
    }

    /// Takes a probe and what the watcher made of it.
    pub fn probed(&self, w: &Watcher, o: &Observation, now_ms: i64) {
        let ok = o.answered_ok();
        self.probes
            .get_or_create(&[("result", if ok { "ok" } else { "failed" })])
            .inc();
        if let Http::Answered { latency_ms, .. } = o.http {
            self.probe_duration.observe(latency_ms.max(0.0) / 1e3);
        }
        self.probe_failures.set(i64::from(w.consecutive_failures()));
        self.app_workers.set(o.workers.map_or(0, i64::from));
        self.app_degraded
            .set(i64::from(o.degraded_reason().is_some()));
        self.app_degraded_seconds
            .set(i64::try_from(w.degraded_seconds(now_ms)).unwrap_or(i64::MAX));
        if let Some(s) = o.pool_saturation() {
            self.app_pool_saturation.set(s);
        }
        let (warning, critical) = w.saturated_probes();
        self.app_saturated_probes
            .get_or_create(&[("level", "warning")])
            .set(i64::from(warning));
        self.app_saturated_probes
            .get_or_create(&[("level", "critical")])
            .set(i64::from(critical));
    }

    /// The configured threshold the degraded alert compares with.
    pub fn set_degraded_alert_seconds(&self, s: u64) {
        self.degraded_alert_seconds
            .set(i64::try_from(s).unwrap_or(i64::MAX));
    }

    /// The breaker's state, and a transition into it when there was one.
    pub fn breaker(&self, state: BreakerState, entered: bool) {
        for s in BreakerState::ALL {
            self.breaker_state
                .get_or_create(&[("state", s.as_str())])
                .set(i64::from(*s == state));
        }
        if entered {
            self.breaker_transitions
                .get_or_create(&[("to", state.as_str())])
                .inc();
        }
    }

    /// Counts an automatic restart asked for.
    pub fn auto_requested(&self, dry_run: bool) {
        self.auto_requests
            .get_or_create(&[("mode", if dry_run { "dry-run" } else { "on" })])
            .inc();
    }

    /// Counts one `WATCHDOG=1` sent to systemd.
    pub fn watchdog_ping(&self) {
        self.watchdog_pings.inc();
    }

    /// Adds the fleet's series (the slot, the wait, the alert gate), read at each scrape.
    pub fn with_fleet(mut self, series: fleet::FleetSeries) -> Self {
        if series.slots.is_some() || series.gate.is_some() {
            self.registry.register_collector(Box::new(series));
        }
        self
    }

    /// The exposition, `text/plain; version=0.0.4`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(6 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = *self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        let remaining = p
            .cooldown_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let state = if p.state == PolicyState::Cooldown && remaining.is_zero() {
            PolicyState::Allowed
        } else {
            p.state
        };
        let mut family = encoder.encode_descriptor(
            "warden_policy_state",
            "The restart policy's state: 1 for the current one",
            None,
            MetricType::Gauge,
        )?;
        for s in PolicyState::ALL {
            family
                .encode_family(&[("state", s.as_str())])?
                .encode_gauge(&i64::from(s == state))?;
        }
        let gauge = |encoder: &mut DescriptorEncoder, name, help, v: i64| {
            ConstGauge::new(v).encode(encoder.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)
        };
        gauge(
            &mut encoder,
            "warden_policy_attempts_in_window",
            "Executed restarts within the policy's window, as last evaluated",
            i64::from(p.attempts),
        )?;
        let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        gauge(
            &mut encoder,
            "warden_policy_cooldown_remaining_seconds",
            "Seconds until the cooldown ends (rounded up); 0 outside a cooldown",
            i64::try_from(secs).unwrap_or(i64::MAX),
        )?;
        match self.contract.load(Relaxed) {
            CONTRACT_UNKNOWN => Ok(()),
            v => gauge(
                &mut encoder,
                "warden_contract_valid",
                "1 if the runtime contract passed its last check, 0 if not",
                i64::from(v == CONTRACT_VALID),
            ),
        }
    }
}

pub mod fleet;

#[cfg(test)]
mod tests;
