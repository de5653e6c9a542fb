//! The restart executor: one thread takes every request (flag or command), decides, signals,
//! verifies, and alone changes the state, through the [`Ledger`]. Flags reach it straight from
//! the inotify thread; after each change it sends a [`Update`]. Its blocking work never touches
//! the event loop, which keeps the watchdog fed and reports.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use super::flag::{self, Asker, FlagDir, FlagRequest, Rejection, Trust};
use super::fleet::{Gate, Slots};
use super::master::Master;
use super::protocol::{Caller, Change, Decided, Update};
use super::{audit, restart};
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::ledger::entry::Entry;
use crate::ledger::model::RequestSource;
use crate::ledger::policy;
use crate::ledger::state::{KillSwitch, StateDoc};

/// How often a state file that could not be written is tried again.
const SAVE_RETRY: Duration = Duration::from_secs(1);

/// Work for the executor.
enum Work {
    /// The flag's directory changed. At most one is queued: later changes coalesce into it.
    Flag,
    /// The configuration a SIGHUP read.
    Configure(Box<(Settings, Trust)>),
    Change(Change),
}

/// The handle on a running executor: feeds it, and tells whether it is stuck.
pub struct Executor {
    work: Sender<Work>,
    queued: Arc<AtomicBool>,
    /// Since when (ms on the monotonic clock of `started`) a request has been in hand; 0 idle.
    busy_since: Arc<AtomicU64>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cheap handle that only signals flag events (for the inotify thread).
#[derive(Clone)]
pub struct FlagEvents {
    work: Sender<Work>,
    queued: Arc<AtomicBool>,
}

impl FlagEvents {
    /// The flag's directory changed: a request is queued unless one already is, which
    /// absorbs this one (flags arriving during a reload coalesce into one more request).
    pub fn changed(&self) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            let _ = self.work.send(Work::Flag);
        }
    }
}

/// What the executor works with.
pub struct Parts<M> {
    pub ledger: Ledger,
    pub settings: Settings,
    pub trust: Trust,
    pub flag_dir: FlagDir,
    pub master: M,
    /// The fleet's slots and the alert gate, when configured.
    pub slots: Option<Box<dyn Slots>>,
    pub gate: Option<Box<dyn Gate>>,
}

impl Executor {
    /// Starts the executor thread; reports come on `reports`.
    pub fn spawn<M: Master + 'static>(
        parts: Parts<M>,
        reports: UnboundedSender<Update>,
    ) -> std::io::Result<Executor> {
        let (work, rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicBool::new(false));
        let busy_since = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let worker = Worker {
            last_reported: parts.ledger.doc().clone(),
            ledger: parts.ledger,
            settings: parts.settings,
            trust: parts.trust,
            flag_dir: parts.flag_dir,
            master: parts.master,
            slots: parts.slots,
            gate: parts.gate,
            backlog: VecDeque::new(),
            rx,
            queued: queued.clone(),
            busy_since: busy_since.clone(),
            started,
            reports,
        };
        let thread = std::thread::Builder::new()
            .name("warden-restart".into())
            .spawn(move || worker.run())?;
        Ok(Executor {
            work,
            queued,
            busy_since,
            started,
            thread: Some(thread),
        })
    }

    pub fn flag_events(&self) -> FlagEvents {
        FlagEvents {
            work: self.work.clone(),
            queued: self.queued.clone(),
        }
    }

    pub fn change(&self, c: Change) {
        let _ = self.work.send(Work::Change(c));
    }

    /// Takes the configuration a SIGHUP read (the paths stay as they were).
    pub fn configure(&self, settings: Settings, trust: Trust) {
        let _ = self.work.send(Work::Configure(Box::new((settings, trust))));
    }

    /// How long the request in hand has been, if one is.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::SeqCst) {
            0 => None,
            since => {
                let now = self.started.elapsed().as_millis() as u64;
                Some(Duration::from_millis(now.saturating_sub(since)))
            }
        }
    }

    /// Stops taking work; a request in hand finishes on its own thread, which the returned
    /// handle joins.
    pub fn stop(mut self) -> Option<std::thread::JoinHandle<()>> {
        self.thread.take()
    }
}

/// The executor thread's state.
struct Worker<M> {
    ledger: Ledger,
    /// The state as last reported: what a report is compared with, and what an observer holds.
    last_reported: StateDoc,
    settings: Settings,
    trust: Trust,
    flag_dir: FlagDir,
    master: M,
    slots: Option<Box<dyn Slots>>,
    gate: Option<Box<dyn Gate>>,
    /// Work that came while a restart waited for a slot, taken before the channel's.
    backlog: VecDeque<Work>,
    rx: Receiver<Work>,
    queued: Arc<AtomicBool>,
    busy_since: Arc<AtomicU64>,
    started: Instant,
    reports: UnboundedSender<Update>,
}

/// The boxed part, borrowed for one request.
fn lend<'a, T: ?Sized + 'a>(part: &'a mut Option<Box<T>>) -> Option<&'a mut T> {
    match part {
        Some(b) => Some(&mut **b),
        None => None,
    }
}

/// While a restart waits for a fleet slot: a restart asked meanwhile joins it (answered with
/// its ruling and id at once), anything else waits its turn in `backlog`.
fn take_turn(
    rx: &Receiver<Work>,
    backlog: &mut VecDeque<Work>,
    in_hand: &RefCell<Option<Decided>>,
) {
    while let Ok(w) = rx.try_recv() {
        match w {
            Work::Change(Change::Restart { reply, caller, .. }) if in_hand.borrow().is_some() => {
                if let Some(d) = &*in_hand.borrow() {
                    tracing::info!(
                        user = %caller.name,
                        id = %d.id,
                        "a restart asked while one waits for a fleet slot joins it"
                    );
                    let _ = reply.send(d.clone());
                }
            }
            other => backlog.push_back(other),
        }
    }
}

impl<M: Master> Worker<M> {
    fn run(mut self) {
        loop {
            let w = if let Some(w) = self.backlog.pop_front() {
                w
            } else if self.ledger.unsaved().is_some() {
                match self.rx.recv_timeout(SAVE_RETRY) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.ledger.retry_save() {
                            tracing::info!("the restart history is saved again");
                            self.report(None);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                }
            };
            match w {
                Work::Configure(b) => {
                    let (s, t) = *b;
                    self.ledger.configure(s.history_max, s.policy);
                    (self.settings, self.trust) = (s, t);
                }
                Work::Flag => {
                    self.queued.store(false, Ordering::SeqCst);
                    self.guarded(|w| w.take_flag());
                }
                Work::Change(c) => self.guarded(|w| w.change(c)),
            }
        }
    }

    /// Runs one piece of work; a panic in it costs that request, never the agent.
    fn guarded(&mut self, work: impl FnOnce(&mut Self) -> Option<Entry>) {
        let t = self.started.elapsed().as_millis() as u64;
        self.busy_since.store(t.max(1), Ordering::SeqCst);
        let was_unsaved = self.ledger.unsaved().is_some();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(self)));
        self.busy_since.store(0, Ordering::SeqCst);
        let handled = match r {
            Ok(h) => h,
            Err(_) => {
                // It may have saved part of its work: the file is the truth.
                tracing::error!("the restart task failed; reloading the history");
                self.ledger.reload(self.last_reported.clone());
                return;
            }
        };
        if let Some(e) = &handled {
            audit::handled(e);
        }
        // Nothing to report when nothing changed (an inotify event with no flag to take).
        let unchanged = handled.is_none()
            && *self.ledger.doc() == self.last_reported
            && self.ledger.unsaved().is_some() == was_unsaved;
        if !unchanged {
            self.report(handled);
        }
    }

    fn report(&mut self, handled: Option<Entry>) {
        self.last_reported = self.ledger.doc().clone();
        let _ = self.reports.send(Update {
            doc: self.last_reported.clone(),
            handled,
            unsaved: self.ledger.unsaved().map(str::to_string),
        });
    }

    /// Claims the flag (if any) and handles it.
    fn take_flag(&mut self) -> Option<Entry> {
        let flag = self.settings.restart_flag.value.clone();
        match self.flag_dir.check(&flag) {
            Ok(()) => {}
            // The path leads elsewhere than the directory watched: nothing there is read,
            // moved or removed, and every request the agent hears of is refused.
            Err(why @ Rejection::DirReplaced(_)) => {
                return Some(restart::reject(&mut self.ledger, &why, &Asker::default()));
            }
            // Others may write in it: a flag is consumed unread.
            Err(why) => {
                return match std::fs::remove_file(&flag) {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        tracing::warn!("{why}; restart flags there are refused");
                        None
                    }
                    r => {
                        if let Err(e) = r {
                            tracing::error!(error = %e, flag = %flag.display(), "cannot remove the refused flag");
                        }
                        Some(restart::reject(&mut self.ledger, &why, &Asker::default()))
                    }
                };
            }
        }
        let claimed = match flag::claim(&flag, &self.trust) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                tracing::error!(error = %e, flag = %flag.display(), "cannot take the restart flag");
                return None;
            }
        };
        let entry = match &claimed.result {
            Ok(req) => {
                let in_hand = RefCell::new(None);
                restart::handle(
                    &mut self.ledger,
                    &mut self.master,
                    &self.settings,
                    restart::Incoming {
                        req,
                        ask: &req.policy_request(),
                        written_at: claimed.written_at,
                        claimed: Some(&claimed),
                        dry_run: false,
                    },
                    &mut |ruling, id| {
                        *in_hand.borrow_mut() = Some(Decided {
                            ruling: *ruling,
                            id: id.to_string(),
                        })
                    },
                    restart::Around {
                        slots: lend(&mut self.slots),
                        gate: lend(&mut self.gate),
                        turn: &mut || take_turn(&self.rx, &mut self.backlog, &in_hand),
                    },
                )
            }
            Err(why) => restart::reject(&mut self.ledger, why, &claimed.asker),
        };
        if let Err(e) = claimed.finish() {
            tracing::error!(error = %e, "cannot remove the claimed flag");
        }
        Some(entry)
    }

    fn change(&mut self, c: Change) -> Option<Entry> {
        match c {
            Change::Restart {
                caller,
                source,
                reason,
                manual_override,
                acknowledged,
                dry_run,
                reply,
            } => {
                let req = FlagRequest {
                    user: Some(caller.name),
                    source,
                    manual_override,
                    override_acknowledged: acknowledged,
                    override_reason: manual_override.then(|| reason.clone()),
                    reason: (!reason.is_empty()).then_some(reason),
                    ..FlagRequest::default()
                };
                let mut reply = Some(reply);
                let in_hand = RefCell::new(None);
                let mut decided = |ruling: &policy::Ruling, id: &str| {
                    let d = Decided {
                        ruling: *ruling,
                        id: id.to_string(),
                    };
                    if let Some(r) = reply.take() {
                        let _ = r.send(d.clone());
                    }
                    *in_hand.borrow_mut() = Some(d);
                };
                Some(restart::handle(
                    &mut self.ledger,
                    &mut self.master,
                    &self.settings,
                    restart::Incoming {
                        req: &req,
                        ask: &req.policy_request(),
                        written_at: None,
                        claimed: None,
                        dry_run,
                    },
                    &mut decided,
                    restart::Around {
                        slots: lend(&mut self.slots),
                        gate: lend(&mut self.gate),
                        turn: &mut || take_turn(&self.rx, &mut self.backlog, &in_hand),
                    },
                ))
            }
            Change::KillSwitch {
                caller,
                engaged,
                reason,
                reply,
            } => self.kill_switch(caller, engaged, reason, reply),
        }
    }

    /// Flips the kill-switch: recorded, published for the app, then (when it changed) one
    /// graceful reload that no policy blocks, so every worker reads the new value.
    fn kill_switch(
        &mut self,
        caller: Caller,
        engaged: bool,
        reason: String,
        reply: tokio::sync::oneshot::Sender<Result<Option<String>, String>>,
    ) -> Option<Entry> {
        let flipped_at = chrono::Utc::now();
        let reason = (!reason.is_empty()).then_some(reason);
        let ks = match KillSwitch::flip(engaged, reason.as_deref(), Some(&caller.name), flipped_at)
        {
            Ok(k) => k,
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                return None;
            }
        };
        let was = self
            .ledger
            .doc()
            .kill_switch
            .as_ref()
            .is_some_and(|k| k.engaged);
        if let Err(e) = self.ledger.set_kill_switch(ks.clone()) {
            let _ = reply.send(Err(format!("the kill-switch was not recorded: {e}")));
            return None;
        }
        if let Some(p) = &self.settings.kill_switch_file
            && let Err(e) = ks.publish(p)
        {
            let _ = reply.send(Err(format!(
                "recorded, but not published to {}: {e}",
                p.display()
            )));
            return None;
        }
        audit::kill_switch(&ks, &caller.name);
        if was == engaged {
            let _ = reply.send(Ok(None));
            return None;
        }
        let req = FlagRequest {
            user: Some(caller.name),
            source: RequestSource::KillSwitch,
            reason: ks.reason.clone(),
            ..FlagRequest::default()
        };
        let ask = policy::Request {
            source: RequestSource::KillSwitch,
            manual_override: false,
            override_acknowledged: false,
            override_reason: None,
        };
        let mut reply = Some(reply);
        let in_hand = RefCell::new(None);
        let mut decided = |ruling: &policy::Ruling, id: &str| {
            if let Some(r) = reply.take() {
                let _ = r.send(Ok(Some(id.to_string())));
            }
            *in_hand.borrow_mut() = Some(Decided {
                ruling: *ruling,
                id: id.to_string(),
            });
        };
        // Asked at the flip: the entry's rollback time runs from there.
        Some(restart::handle(
            &mut self.ledger,
            &mut self.master,
            &self.settings,
            restart::Incoming {
                req: &req,
                ask: &ask,
                written_at: Some(flipped_at.into()),
                claimed: None,
                dry_run: false,
            },
            &mut decided,
            restart::Around {
                slots: lend(&mut self.slots),
                gate: lend(&mut self.gate),
                turn: &mut || take_turn(&self.rx, &mut self.backlog, &in_hand),
            },
        ))
    }
}

#[cfg(test)]
mod tests;
