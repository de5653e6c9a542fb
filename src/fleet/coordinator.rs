//! An agent's side of the reload slots: before a restart it takes one of its group's slots
//! (waiting within a bound, in line where `warden fleet status` shows it), keeps the slot's
//! lease alive while it holds it, and gives it back once the reload is verified. A failed
//! reload keeps its slot: the group's next host waits until an operator releases it, or until
//! this agent stops and its lease runs out. Blocking: the restart executor's thread runs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::slots::{Group, Holder, Taken};
use crate::config::{FleetSettings, Unreachable};
use crate::ledger::model::RequestSource;
use crate::platform::etcd::{Etcd, EtcdError};

/// How long one call to etcd may take, per member.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest the wait goes without giving the executor a turn (to answer who else asks).
const TURN: Duration = Duration::from_millis(500);
/// The first pause between tries while no member answers; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Who asks for a slot, as `WARDEN_FLEET_UNREACHABLE` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    Auto,
    Manual,
    Reload,
    /// An operator's acknowledged override of the policy.
    Override,
    KillSwitch,
}

impl Asker {
    pub fn of(source: RequestSource, acknowledged_override: bool) -> Asker {
        match source {
            RequestSource::Auto => Asker::Auto,
            RequestSource::KillSwitch => Asker::KillSwitch,
            _ if acknowledged_override => Asker::Override,
            RequestSource::Manual => Asker::Manual,
            RequestSource::Reload => Asker::Reload,
        }
    }
}

/// What a restart got from the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// A slot: taken now, or kept from this agent's failed reload.
    Slot {
        slot: u32,
        waited: Duration,
        kept: bool,
    },
    /// No etcd member answered and the asker's rule said to go on.
    WithoutSlot { waited: Duration, detail: String },
    /// Every slot stayed held for the whole wait (by these holders).
    Unavailable {
        waited: Duration,
        holders: Vec<String>,
    },
    /// No etcd member answered: the rule said to refuse, or to wait and the wait ran out.
    Unreachable { waited: Duration, detail: String },
}

/// What the metrics and the status document show of the agent's slot, shared with them.
#[derive(Debug, Default)]
pub struct Gauges {
    /// The slot held, or -1.
    pub held_slot: AtomicI64,
    /// Since when (Unix ms) the slot is held, or 0.
    pub held_since_ms: AtomicI64,
    /// Since when (Unix ms) a restart waits for a slot, or 0.
    pub waiting_since_ms: AtomicI64,
    /// The last wait for a slot, in µs.
    pub last_wait_us: AtomicU64,
    pub granted: AtomicU64,
    pub unavailable: AtomicU64,
    pub unreachable: AtomicU64,
    pub without_slot: AtomicU64,
    /// The slot is held past a failed reload.
    pub kept_after_failure: AtomicBool,
}

/// The status document's `fleet` section.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FleetStatus {
    pub group: String,
    pub slots: u32,
    pub holder: String,
    pub held_slot: Option<u32>,
    /// Since when (UTC RFC 3339) the slot is held.
    pub held_since: Option<String>,
    pub kept_after_failure: bool,
    /// Since when (UTC RFC 3339) a restart waits for a slot.
    pub waiting_since: Option<String>,
    pub last_wait_ms: Option<f64>,
}

/// The agent's gauges and who it is, for the status document.
#[derive(Debug, Clone)]
pub struct FleetView {
    pub gauges: Arc<Gauges>,
    pub me: Identity,
}

impl FleetView {
    pub fn status(&self) -> FleetStatus {
        self.gauges.status(&self.me)
    }
}

impl Gauges {
    pub fn new() -> Gauges {
        let g = Gauges::default();
        g.held_slot.store(-1, Ordering::Relaxed);
        g
    }

    fn held(&self, slot: Option<u32>) {
        self.held_slot
            .store(slot.map_or(-1, i64::from), Ordering::Relaxed);
        self.held_since_ms.store(
            slot.map_or(0, |_| chrono::Utc::now().timestamp_millis()),
            Ordering::Relaxed,
        );
        if slot.is_none() {
            self.kept_after_failure.store(false, Ordering::Relaxed);
        }
    }

    fn waiting(&self, yes: bool) {
        self.waiting_since_ms.store(
            if yes {
                chrono::Utc::now().timestamp_millis()
            } else {
                0
            },
            Ordering::Relaxed,
        );
    }

    fn ended(&self, g: &Grant) {
        let (waited, count) = match g {
            Grant::Slot { waited, .. } => (waited, &self.granted),
            Grant::WithoutSlot { waited, .. } => (waited, &self.without_slot),
            Grant::Unavailable { waited, .. } => (waited, &self.unavailable),
            Grant::Unreachable { waited, .. } => (waited, &self.unreachable),
        };
        count.fetch_add(1, Ordering::Relaxed);
        self.last_wait_us
            .store(waited.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn status(&self, c: &Identity) -> FleetStatus {
        let at = |v: i64| {
            (v > 0)
                .then(|| chrono::DateTime::from_timestamp_millis(v))
                .flatten()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        };
        let granted_any = self.granted.load(Ordering::Relaxed)
            + self.unavailable.load(Ordering::Relaxed)
            + self.unreachable.load(Ordering::Relaxed)
            + self.without_slot.load(Ordering::Relaxed);
        FleetStatus {
            group: c.group.clone(),
            slots: c.slots,
            holder: c.holder_id.clone(),
            held_slot: u32::try_from(self.held_slot.load(Ordering::Relaxed)).ok(),
            held_since: at(self.held_since_ms.load(Ordering::Relaxed)),
            kept_after_failure: self.kept_after_failure.load(Ordering::Relaxed),
            waiting_since: at(self.waiting_since_ms.load(Ordering::Relaxed)),
            last_wait_ms: (granted_any > 0)
                .then(|| self.last_wait_us.load(Ordering::Relaxed) as f64 / 1e3),
        }
    }
}

/// Who the agent is to its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub group: String,
    pub slots: u32,
    /// `<machine-id>/<app>`.
    pub holder_id: String,
    pub host: String,
    pub app: String,
}

impl Identity {
    /// The group (as configured, else the app's name) and this host's holder id.
    pub fn of(fleet: &FleetSettings, app: &str) -> Identity {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        // The machine id names the host for good; the hostname is only for people.
        let machine = std::fs::read_to_string("/etc/machine-id")
            .ok()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or_else(|| host.clone());
        Identity {
            group: fleet.group.clone().unwrap_or_else(|| app.to_string()),
            slots: fleet.slots.max(1),
            holder_id: fleet
                .holder
                .clone()
                .unwrap_or_else(|| format!("{machine}/{app}")),
            host,
            app: app.to_string(),
        }
    }

    fn holder(&self) -> Holder {
        Holder {
            id: self.holder_id.clone(),
            host: self.host.clone(),
            app: self.app.clone(),
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }
}

/// A lease renewed on a thread of its own until dropped.
struct Keeper {
    lease: i64,
    stop: Option<Sender<()>>,
    lost: Arc<AtomicBool>,
}

impl Keeper {
    fn start(etcd: Etcd, lease: i64, ttl: Duration) -> Keeper {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let lost = Arc::new(AtomicBool::new(false));
        let lost_here = lost.clone();
        // A third of the TTL: two renewals can fail before the lease runs out.
        let every = (ttl / 3).max(Duration::from_secs(1));
        let spawned = std::thread::Builder::new()
            .name("warden-lease".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    match etcd.keep_alive(lease) {
                        Ok(ttl) if ttl > 0 => {}
                        Ok(_) => {
                            tracing::warn!(lease, "the fleet slot's lease ran out");
                            lost_here.store(true, Ordering::Relaxed);
                            return;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, lease, "cannot renew the fleet slot's lease")
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that renews the fleet lease");
        }
        Keeper {
            lease,
            stop: Some(stop),
            lost,
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // The thread ends at its next wake-up (or at once): the sender's drop disconnects it.
        self.stop.take();
    }
}

/// A slot this agent holds.
struct HeldSlot {
    slot: u32,
    keeper: Keeper,
}

/// The agent's slots in its group.
pub struct Coordinator {
    etcd: Etcd,
    group: Group,
    me: Identity,
    ttl: Duration,
    wait: Duration,
    rules: crate::config::UnreachableRules,
    held: Option<HeldSlot>,
    gauges: Arc<Gauges>,
}

impl Coordinator {
    /// The agent's slots in `fleet`'s group, through etcd as configured.
    pub fn new(
        fleet: &FleetSettings,
        me: Identity,
        gauges: Arc<Gauges>,
    ) -> Result<Coordinator, super::connect::ConnectError> {
        Ok(Coordinator {
            etcd: super::connect::connect(fleet, CALL_TIMEOUT)?,
            group: Group::new(&me.group, me.slots),
            ttl: fleet.lease,
            wait: fleet.wait,
            rules: fleet.unreachable,
            held: None,
            gauges,
            me,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.me
    }

    fn rule(&self, a: Asker) -> Unreachable {
        match a {
            Asker::Auto => self.rules.auto,
            Asker::Manual => self.rules.manual,
            Asker::Reload => self.rules.reload,
            Asker::Override => self.rules.acknowledged_override,
            Asker::KillSwitch => self.rules.kill_switch,
        }
    }

    /// A slot for a restart asked by `asker`, within the wait. `turn` is called at least every
    /// half second while it waits: the executor answers who else asks meanwhile.
    pub fn acquire(&mut self, asker: Asker, turn: &mut dyn FnMut()) -> Grant {
        let start = Instant::now();
        let g = self.acquire_within(asker, start, start + self.wait, turn);
        self.gauges.waiting(false);
        self.gauges.ended(&g);
        match &g {
            Grant::Slot { slot, waited, .. } => {
                tracing::info!(
                    slot,
                    group = %self.me.group,
                    "fleet slot taken: slot {slot} of {}, after {:.1} ms",
                    self.me.group,
                    waited.as_secs_f64() * 1e3
                )
            }
            Grant::WithoutSlot { detail, .. } => {
                tracing::warn!(group = %self.me.group, "restarting without a fleet slot: {detail}")
            }
            Grant::Unavailable { holders, .. } => tracing::warn!(
                group = %self.me.group,
                "no fleet slot came free within {:?} (held by {})",
                self.wait,
                holders.join(", ")
            ),
            Grant::Unreachable { detail, .. } => {
                tracing::warn!(group = %self.me.group, "no fleet slot: {detail}")
            }
        }
        g
    }

    fn acquire_within(
        &mut self,
        asker: Asker,
        start: Instant,
        deadline: Instant,
        turn: &mut dyn FnMut(),
    ) -> Grant {
        let me = self.me.holder();
        // A slot kept from a failed reload is this restart's, unless an operator released it.
        if let Some(h) = &self.held {
            match self.group.holds(&self.etcd, h.slot, &me, h.keeper.lease) {
                Ok(true) if !h.keeper.lost.load(Ordering::Relaxed) => {
                    return Grant::Slot {
                        slot: h.slot,
                        waited: start.elapsed(),
                        kept: true,
                    };
                }
                Ok(_) => {
                    tracing::info!(
                        slot = h.slot,
                        "the fleet slot kept after a failed reload was released"
                    );
                    self.give_back();
                }
                Err(e) => {
                    let mut pause = FIRST_PAUSE;
                    if let Some(g) = self.unanswered(asker, start, deadline, &e, &mut pause, turn) {
                        return g;
                    }
                }
            }
        }
        let mut pause = FIRST_PAUSE;
        // A transaction refused once is tried again under a new lease (the old one may have
        // run out between two renewals); twice in a row is etcd's answer.
        let mut refused = false;
        let mut lease: Option<Keeper> = None;
        let mut in_line = false;
        let mut watch = None;
        loop {
            if lease
                .as_ref()
                .is_none_or(|k| k.lost.load(Ordering::Relaxed))
            {
                match self.etcd.grant(self.ttl.as_secs().max(1) as i64) {
                    Ok(l) => {
                        in_line = false;
                        lease = Some(Keeper::start(self.etcd.clone(), l.id, self.ttl));
                    }
                    Err(e) => match self.unanswered(asker, start, deadline, &e, &mut pause, turn) {
                        Some(g) => return g,
                        None => continue,
                    },
                }
            }
            let Some(id) = lease.as_ref().map(|k| k.lease) else {
                continue;
            };
            let lost = lease
                .as_ref()
                .is_some_and(|k| k.lost.load(Ordering::Relaxed));
            match self.group.take(&self.etcd, &me, id) {
                Ok(Taken::Slot(slot)) => {
                    // Its place in line went in the same transaction.
                    let keeper = lease.take().expect("held above");
                    self.held = Some(HeldSlot { slot, keeper });
                    self.gauges.held(Some(slot));
                    return Grant::Slot {
                        slot,
                        waited: start.elapsed(),
                        kept: false,
                    };
                }
                Ok(Taken::AllHeld) => {
                    refused = false;
                    if Instant::now() >= deadline {
                        let holders = self
                            .group
                            .held(&self.etcd)
                            .map(|h| {
                                h.into_iter()
                                    .map(|h| h.holder.map_or_else(|| "?".into(), |w| w.id))
                                    .collect()
                            })
                            .unwrap_or_default();
                        self.revoke(lease.take());
                        return Grant::Unavailable {
                            waited: start.elapsed(),
                            holders,
                        };
                    }
                    if !in_line {
                        self.gauges.waiting(true);
                        match self.group.wait_in_line(&self.etcd, &me, id) {
                            Ok(()) => in_line = true,
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot show this host in the fleet's line")
                            }
                        }
                    }
                    turn();
                    let left = deadline.saturating_duration_since(Instant::now());
                    match &mut watch {
                        // One watch for the whole wait, from now on; the take that follows its
                        // creation catches a slot freed before it. (A watch asked to start at
                        // an earlier revision is served by etcd's slower catch-up.)
                        None => match self.group.watch(&self.etcd, CALL_TIMEOUT) {
                            Ok(w) => watch = Some(w),
                            Err(e) => {
                                tracing::warn!(error = %e, "cannot watch the fleet's slots");
                                std::thread::sleep(pause.min(left));
                                pause = (pause * 2).min(MAX_PAUSE);
                            }
                        },
                        Some(w) => {
                            if let Err(e) = w.changed(left.min(TURN)) {
                                tracing::debug!(error = %e, "the watch on the fleet's slots ended");
                                watch = None;
                            }
                        }
                    }
                }
                // The lease is gone (expired while etcd was away): a new one next round.
                Err(EtcdError::Refused { .. }) if lost => {}
                Err(e @ EtcdError::Refused { .. }) if !refused => {
                    tracing::warn!(error = %e, "etcd refused the slot's transaction; a new lease");
                    refused = true;
                    self.revoke(lease.take());
                }
                Err(e) => {
                    if let Some(g) = self.unanswered(asker, start, deadline, &e, &mut pause, turn) {
                        self.revoke(lease.take());
                        return g;
                    }
                }
            }
        }
    }

    /// etcd did not answer: what the asker's rule says, or `None` to try again (after a turn
    /// and `pause`, which doubles). etcd refusing (a wrong password, no permission) is not its
    /// being away: the request fails at once, whatever the rule, and says why.
    fn unanswered(
        &self,
        asker: Asker,
        start: Instant,
        deadline: Instant,
        e: &EtcdError,
        pause: &mut Duration,
        turn: &mut dyn FnMut(),
    ) -> Option<Grant> {
        let waited = start.elapsed();
        if let EtcdError::Refused { .. } = e {
            return Some(Grant::Unreachable {
                waited,
                detail: e.to_string(),
            });
        }
        match self.rule(asker) {
            Unreachable::Proceed => Some(Grant::WithoutSlot {
                waited,
                detail: e.to_string(),
            }),
            Unreachable::Refuse => Some(Grant::Unreachable {
                waited,
                detail: e.to_string(),
            }),
            Unreachable::Wait if Instant::now() >= deadline => Some(Grant::Unreachable {
                waited,
                detail: e.to_string(),
            }),
            Unreachable::Wait => {
                self.gauges.waiting(true);
                turn();
                std::thread::sleep(
                    (*pause).min(deadline.saturating_duration_since(Instant::now())),
                );
                *pause = (*pause * 2).min(MAX_PAUSE);
                None
            }
        }
    }

    fn revoke(&self, lease: Option<Keeper>) {
        if let Some(k) = lease {
            let id = k.lease;
            drop(k);
            if let Err(e) = self.etcd.revoke(id) {
                tracing::warn!(error = %e, lease = id, "cannot revoke the fleet lease; it runs out on its own");
            }
        }
    }

    /// The reload was verified: the slot goes back to the group.
    pub fn verified(&mut self) {
        let slot = self.holding();
        self.give_back();
        // Logged once given back: the next host may have it from here on.
        if let Some(slot) = slot {
            tracing::info!(
                slot,
                group = %self.me.group,
                "fleet slot given back: slot {slot} of {}",
                self.me.group
            );
        }
    }

    /// The reload failed: the slot stays held, so the group's next host waits.
    pub fn failed(&mut self) {
        if let Some(h) = &self.held {
            tracing::warn!(
                slot = h.slot,
                group = %self.me.group,
                "the reload failed: the fleet slot stays held until `warden fleet release` or this agent stops"
            );
            self.gauges
                .kept_after_failure
                .store(true, Ordering::Relaxed);
        }
    }

    fn give_back(&mut self) {
        if let Some(h) = self.held.take() {
            // Revoking the lease deletes the slot's key with it.
            self.revoke(Some(h.keeper));
        }
        self.gauges.held(None);
    }

    /// The slot held, if one is.
    pub fn holding(&self) -> Option<u32> {
        self.held.as_ref().map(|h| h.slot)
    }
}
