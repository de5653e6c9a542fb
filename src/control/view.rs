//! What the running agent shows of itself, kept by its event loop: the state as last reported,
//! the status document (built off the loop, at most every [`STATUS_FRESH`] for callers and
//! at once after a change), the D-Bus properties and signal, the metrics, and the files
//! published for applications.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;

use super::dbus::{self, SharedSnapshot, Snapshot};
use super::metrics::Metrics;
use super::observe::{self, Meta};
use super::status::Validation;
use crate::agent::protocol::Update;
use crate::config::Settings;
use crate::ledger::policy::{self, Evaluation};
use crate::ledger::state::StateDoc;
use crate::recovery::breaker::{BreakerState, Transition};
use crate::recovery::observation::Observation;
use crate::recovery::watcher::{Step, Watcher};
use crate::systemd::journal;

/// How long a built status document answers `Status()` calls: callers polling at any rate
/// cost one build per this period, and a change of the state drops it at once.
const STATUS_FRESH: Duration = Duration::from_millis(250);

/// How often node_exporter's textfile is rewritten while nothing changes (it flags a stale
/// file).
const TEXTFILE_EVERY: Duration = Duration::from_secs(15);

pub struct View {
    pub settings: Settings,
    /// The state as last reported by the executor.
    pub known: StateDoc,
    pub validation: Validation,
    pub meta: Meta,
    pub metrics: Arc<Metrics>,
    bus: Option<(zbus::Connection, SharedSnapshot)>,
    /// The last document built for `Status()`, and when.
    cache: Option<(Instant, String)>,
    textfile_due: Instant,
    /// The probes, the counts the alerts read, the breaker.
    pub recovery: Watcher,
}

impl View {
    pub fn new(
        settings: Settings,
        known: StateDoc,
        validation: Validation,
        meta: Meta,
        metrics: Arc<Metrics>,
        bus: Option<(zbus::Connection, SharedSnapshot)>,
    ) -> View {
        metrics.set_contract_valid(validation.valid);
        metrics.set_degraded_alert_seconds(settings.resilience.degraded_alert_seconds);
        let recovery = Watcher::new(&settings, Utc::now().timestamp_millis());
        View {
            recovery,
            settings,
            known,
            validation,
            meta,
            metrics,
            bus,
            cache: None,
            textfile_due: Instant::now(),
        }
    }

    /// The policy now.
    pub fn evaluation(&self) -> Evaluation {
        policy::evaluate(
            &self.known.executed(),
            Utc::now().timestamp_millis(),
            &self.settings.policy,
        )
    }

    /// Publishes the state as it is: properties, gauges, the status document and textfile.
    pub async fn show(&mut self) {
        let eval = self.evaluation();
        self.metrics.follow(&eval, &self.known);
        self.publish_properties(&eval).await;
        self.changed().await;
    }

    /// Takes the executor's report: the metrics, the properties, then the signal (whoever
    /// hears the outcome reads the state it left), then the document and the files.
    pub async fn reported(&mut self, r: Update) {
        self.known = r.doc;
        self.meta.state_write_error = r.unsaved;
        let eval = self.evaluation();
        if let Some(e) = &r.handled {
            self.metrics.count(e);
            if let Some(t) = self.recovery.handled(e, Utc::now().timestamp_millis()) {
                self.transition(&t);
            }
        }
        self.metrics.follow(&eval, &self.known);
        self.publish_properties(&eval).await;
        if let (Some((conn, _)), Some(e)) = (&self.bus, &r.handled) {
            let _ = dbus::completed(conn, e).await;
        }
        self.changed().await;
    }

    /// Follows the clock: the cooldown counts down and restarts leave the window on their own.
    /// Returns when to come back: each second while that happens, rarely otherwise (an idle
    /// agent wakes for its watchdog pings and little else).
    pub async fn tick(&mut self) -> Duration {
        let eval = self.evaluation();
        let moving = eval.cooldown_remaining_seconds > 0 || eval.attempts_in_window > 0;
        self.publish_properties(&eval).await;
        self.metrics.follow(&eval, &self.known);
        let now = Instant::now();
        if self.settings.metrics_textfile.is_some() && now >= self.textfile_due {
            self.textfile_due = now + TEXTFILE_EVERY;
            self.changed().await;
        }
        if moving {
            Duration::from_secs(1)
        } else if self.settings.metrics_textfile.is_some() {
            TEXTFILE_EVERY
        } else {
            Duration::from_secs(60)
        }
    }

    /// A new configuration: the watcher keeps its state and evidence.
    pub fn configure(&mut self, s: Settings) {
        self.recovery.configure(&s);
        self.metrics
            .set_degraded_alert_seconds(s.resilience.degraded_alert_seconds);
        self.settings = s;
        self.cache = None;
    }

    /// Takes a probe: the counts and the breaker, the metrics; returns what the event loop
    /// must ask of the executor. `reloading`: a restart was in hand while it ran.
    pub async fn probed(&mut self, o: Observation, reloading: bool) -> Vec<Step> {
        let now_ms = o.at_ms;
        let steps = self.recovery.observed(o.clone(), reloading);
        self.metrics.probed(&self.recovery, &o, now_ms);
        for s in &steps {
            match s {
                Step::Transition(t) => self.transition(t),
                Step::Ask {
                    reason, dry_run, ..
                } => {
                    self.metrics.auto_requested(*dry_run);
                    tracing::warn!(
                        message_id = journal::AUTO_RECOVERY,
                        dry_run = *dry_run,
                        "{reason}: {}",
                        if *dry_run {
                            "asking the policy (dry run: nothing will be signalled)"
                        } else {
                            "asking for a restart"
                        }
                    );
                }
            }
        }
        // The document's recommendation follows every probe; it is built on demand.
        self.cache = None;
        if !steps.is_empty() {
            let eval = self.evaluation();
            self.publish_properties(&eval).await;
            self.changed().await;
        }
        steps
    }

    /// An operator closes the breaker. Returns whether it was not closed already.
    pub async fn reset_breaker(&mut self, by: &str, reason: &str) -> bool {
        let Some(t) = self.recovery.reset(Utc::now().timestamp_millis()) else {
            return false;
        };
        tracing::warn!(
            message_id = journal::RECOVERY_BREAKER,
            changed_by = %by,
            "recovery breaker {} → {} by {by}: {reason}",
            t.from,
            t.to
        );
        self.metrics.breaker(t.to, true);
        let eval = self.evaluation();
        self.publish_properties(&eval).await;
        self.changed().await;
        true
    }

    /// Audits a change of the breaker's state and counts it.
    fn transition(&self, t: &Transition) {
        let level_open = t.to == BreakerState::Open;
        let text = format!("recovery breaker {} → {}: {}", t.from, t.to, t.why);
        if level_open {
            tracing::error!(message_id = journal::RECOVERY_BREAKER, "{text}");
        } else {
            tracing::info!(message_id = journal::RECOVERY_BREAKER, "{text}");
        }
        self.metrics.breaker(t.to, true);
    }

    async fn publish_properties(&self, eval: &Evaluation) {
        if let Some((conn, shared)) = &self.bus {
            let snap = Snapshot::of(
                &self.known,
                eval,
                self.validation.valid,
                self.recovery.breaker().state(),
            );
            let _ = dbus::publish(conn, shared, snap).await;
        }
    }

    /// The status document as JSON: the cached one while fresh, else built off the event loop.
    pub async fn status(&mut self) -> String {
        if let Some((at, json)) = &self.cache
            && at.elapsed() < STATUS_FRESH
        {
            return json.clone();
        }
        let json = self.build(false).await.unwrap_or_else(|| "{}".into());
        self.cache = Some((Instant::now(), json.clone()));
        json
    }

    /// After a change: drops the cached document and publishes the new one (and the metrics'
    /// textfile) where configured, off the event loop.
    async fn changed(&mut self) {
        self.cache = None;
        self.build(true).await;
    }

    async fn build(&self, publish: bool) -> Option<String> {
        let (s, doc, v, m, metrics) = (
            self.settings.clone(),
            self.known.clone(),
            self.validation.clone(),
            self.meta.clone(),
            self.metrics.clone(),
        );
        let recovery = self.recovery.status(Utc::now().timestamp_millis());
        tokio::task::spawn_blocking(move || {
            let d = observe::document(&s, &doc, &v, Some((&m, &recovery)));
            if publish {
                if let Some(p) = &s.status_file
                    && let Err(e) = observe::publish_status(p, &d)
                {
                    tracing::warn!(error = %e, path = %p.display(), "cannot publish the status file");
                }
                if let Some(p) = &s.metrics_textfile
                    && let Err(e) = super::metrics::write_textfile(p, &metrics)
                {
                    tracing::warn!(error = %e, "cannot write the metrics textfile");
                }
            }
            serde_json::to_string(&d).ok()
        })
        .await
        .ok()
        .flatten()
    }
}
