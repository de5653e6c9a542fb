//! The watchdog agent (`warden run`): watches the restart flag's directory, runs each request
//! through the policy and the restart executor, and keeps systemd informed (READY, STATUS,
//! watchdog pings from the event loop itself, STOPPING, RELOADING).
//!
//! One restart runs at a time, off the event loop; flags arriving meanwhile coalesce into one
//! more request, taken when the running one is done. The state file is locked: one agent per
//! state file.

pub mod restart;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::config::{EnvFileArg, Layers, Settings};
use crate::flag::Trust;
use crate::intent::IntentLog;
use crate::state::{self, Loaded, StateDoc};
use restart::Outcome;

/// Why an entry's outcome is unknown: the agent stopped between the signal and the record.
const UNKNOWN_OUTCOME: &str = "agent_stopped_before_recording_the_outcome";

/// journald MESSAGE_IDs of the agent's audit events.
pub mod message_id {
    pub const RESTART_EXECUTED: &str = "0d3c33330c0b4f2387ba68b3054d0256";
    pub const RESTART_BLOCKED: &str = "35e42bb3cddf4cf797834e4493ac147e";
    pub const RESTART_FAILED: &str = "9dd5de8e4a5d488d96fbe3f28cd96ab6";
    pub const FLAG_REJECTED: &str = "d142efce7a98493bb359b661407ae898";
    pub const STATE_SET_ASIDE: &str = "124e9b634a2349cd81e7106027bb1915";
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("another warden run holds {0}; one agent runs per state file")]
    Locked(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// The intent record, shared by the restart tasks (one runs at a time). `None` when it could
/// not be opened: intents then go to the state file, slower but as durable.
type Intents = Option<Arc<Mutex<IntentLog>>>;

/// Saves the state durably as the executor goes, logging (not failing on) write errors.
struct FileJournal {
    path: PathBuf,
    intents: Intents,
    /// An intent written and not yet flushed.
    unsynced: bool,
}

impl restart::Journal for FileJournal {
    fn save(&mut self, doc: &StateDoc) {
        match state::save(&self.path, doc) {
            Ok(()) => {
                if let Some(log) = &self.intents {
                    log.lock().unwrap_or_else(|e| e.into_inner()).clear();
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot save the restart history; will retry on the next change")
            }
        }
    }

    fn intend(&mut self, doc: &StateDoc, intended: &state::Entry) {
        if let Some(log) = &self.intents {
            match log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(intended)
            {
                Ok(true) => {
                    self.unsynced = true;
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "cannot write the intent record"),
            }
        }
        self.save(doc);
    }

    fn signalled(&mut self) {
        if std::mem::take(&mut self.unsynced)
            && let Some(log) = &self.intents
            && let Err(e) = log.lock().unwrap_or_else(|e| e.into_inner()).sync()
        {
            tracing::error!(error = %e, "cannot flush the intent record");
        }
    }
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

fn status_line(doc: &StateDoc, s: &Settings) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let e = crate::policy::evaluate(&doc.executed(), now, &s.policy);
    format!(
        "policy {}, {} restart(s) in the last {} s{}",
        e.state.as_str(),
        e.attempts_in_window,
        e.window_seconds,
        doc.last_restart
            .as_ref()
            .and_then(|l| l.decision.as_deref())
            .map(|d| format!(", last request {d}"))
            .unwrap_or_default()
    )
}

/// Holds `<state file>.lock` for the agent's lifetime.
fn lock(state_path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = state_path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    let path = state_path.with_file_name(name);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| AgentError::Lock {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            AgentError::Locked(path)
        } else {
            AgentError::Lock {
                path,
                source: e.into(),
            }
        }
    })
}

/// Opens the intent record; without it intents are saved with the state file.
fn open_intents(state_path: &Path) -> Intents {
    match IntentLog::open(state_path) {
        Ok(l) => Some(Arc::new(Mutex::new(l))),
        Err(e) => {
            tracing::warn!(error = %e, "no intent record; restarts are recorded through the state file");
            None
        }
    }
}

/// Loads the history; an `intended` last entry, or an intent the history does not hold, is a
/// crash between signal and record: its outcome is unknown.
fn load_state(s: &Settings, intents: &Intents) -> Result<StateDoc, AgentError> {
    let path = &s.state_file.value;
    let mut doc = match state::load(path)? {
        Loaded::Fresh(d) | Loaded::Ok(d) => d,
        Loaded::SetAside { doc, kept_as, why } => {
            tracing::error!(
                message_id = message_id::STATE_SET_ASIDE,
                kept_as = %kept_as.display(),
                "the state file did not parse ({why}); it was kept as {} and the history starts empty",
                kept_as.display()
            );
            doc
        }
    };
    if let Some(last) = doc.history.last_mut()
        && last.decision.as_deref() == Some("intended")
    {
        last.decision = Some("unknown".into());
        last.decision_reason = Some(UNKNOWN_OUTCOME.into());
        doc.last_restart = Some(last.clone());
        state::save(path, &doc)?;
    }
    if let Some(log) = intents {
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut e) = log.pending()
            && !doc.history.iter().any(|h| h.id.is_some() && h.id == e.id)
        {
            e.decision = Some("unknown".into());
            e.decision_reason = Some(UNKNOWN_OUTCOME.into());
            let now = chrono::Utc::now().timestamp_millis();
            doc.push(e, s.history_max, crate::policy::retain(&s.policy, now));
            state::save(path, &doc)?;
        }
        log.clear();
    }
    Ok(doc)
}

/// Claims the flag (if any) and handles it. Blocking.
fn take_flag(
    mut doc: StateDoc,
    s: &Settings,
    trust: &Trust,
    intents: Intents,
) -> (StateDoc, Option<Outcome>) {
    let mut j = FileJournal {
        path: s.state_file.value.clone(),
        intents,
        unsynced: false,
    };
    let claimed = match crate::flag::claim(&s.restart_flag.value, trust) {
        Ok(Some(c)) => c,
        Ok(None) => return (doc, None),
        Err(e) => {
            tracing::error!(error = %e, flag = %s.restart_flag.value.display(), "cannot take the restart flag");
            return (doc, None);
        }
    };
    let outcome = match &claimed.result {
        Ok(req) => restart::handle(&mut doc, s, req, claimed.written_at, &mut j),
        Err(why) => restart::reject(&mut doc, s, why, &mut j),
    };
    if let Err(e) = claimed.finish() {
        tracing::error!(error = %e, "cannot remove the claimed flag");
    }
    (doc, Some(outcome))
}

fn audit(o: &Outcome) {
    match o {
        Outcome::Executed {
            verified: true,
            detail,
        } => {
            tracing::info!(
                message_id = message_id::RESTART_EXECUTED,
                "restart executed and verified: {detail}"
            )
        }
        Outcome::Executed {
            verified: false,
            detail,
        } => {
            tracing::error!(
                message_id = message_id::RESTART_FAILED,
                "restart executed but not verified: {detail}"
            )
        }
        Outcome::Failed(why) => {
            tracing::error!(
                message_id = message_id::RESTART_FAILED,
                "restart failed, nothing signalled: {why}"
            )
        }
        Outcome::Blocked { reason, .. } => {
            tracing::warn!(
                message_id = message_id::RESTART_BLOCKED,
                "restart blocked by the policy: {reason}"
            )
        }
        Outcome::Rejected(why) => {
            tracing::warn!(
                message_id = message_id::FLAG_REJECTED,
                "restart flag rejected: {why}"
            )
        }
    }
}

/// Runs the agent until SIGTERM/SIGINT. Returns the exit code.
pub fn run(env_files: Vec<EnvFileArg>, settings: Settings) -> Result<u8, AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    // Startup I/O happens before the event loop starts, not on it.
    let _lock = lock(&settings.state_file.value)?;
    let intents = open_intents(&settings.state_file.value);
    let doc = load_state(&settings, &intents)?;
    let stale = crate::flag::requeue_stale_claims(&settings.restart_flag.value);
    if stale > 0 {
        tracing::warn!(
            "{stale} request(s) claimed by an agent that stopped before deciding them: queued again"
        );
    }
    let trust = Trust::resolve(settings.admin_group.as_deref());
    let code = rt.block_on(event_loop(env_files, settings, doc, trust, intents))?;
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(code)
}

/// The configuration a SIGHUP reads: the paths stay as the agent started (its inotify watch and
/// its state lock are on them), everything else is taken.
fn reloaded(env_files: &[EnvFileArg], current: &Settings) -> Result<Settings, String> {
    let layers = Layers::load(env_files).map_err(|e| e.to_string())?;
    let (mut new, invalid) = Settings::resolve(&layers);
    if !invalid.is_empty() {
        return Err(invalid
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join("; "));
    }
    if new.restart_flag.value != current.restart_flag.value
        || new.state_file.value != current.state_file.value
    {
        tracing::warn!(
            "the flag and state paths change only when the agent restarts; kept as they are"
        );
        new.restart_flag = current.restart_flag.clone();
        new.state_file = current.state_file.clone();
    }
    Ok(new)
}

/// Work for the restart executor.
enum Work {
    /// The flag's directory changed. At most one is queued: later changes coalesce into it.
    Flag,
    /// The configuration a SIGHUP read.
    Settings(Box<(Settings, Trust)>),
}

/// The executor's report of a handled request.
struct Done {
    doc: StateDoc,
    outcome: Outcome,
}

/// The restart executor: one thread takes each flag, decides, signals, verifies, and alone
/// writes the state. It is fed straight from the inotify thread, so a request reaches it in
/// one wake-up, and its blocking work never touches the event loop, which keeps the watchdog
/// fed and only reports.
struct Executor {
    doc: StateDoc,
    s: Settings,
    trust: Trust,
    intents: Intents,
    queued: Arc<AtomicBool>,
    /// Since when (ms on the monotonic clock of `started`) a request has been in hand; 0 idle.
    busy_since: Arc<AtomicU64>,
    started: std::time::Instant,
    done: mpsc::UnboundedSender<Done>,
}

impl Executor {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Work>) {
        while let Ok(w) = rx.recv() {
            match w {
                Work::Settings(b) => (self.s, self.trust) = *b,
                Work::Flag => {
                    self.queued.store(false, Ordering::SeqCst);
                    let t = self.started.elapsed().as_millis() as u64;
                    self.busy_since.store(t.max(1), Ordering::SeqCst);
                    self.take();
                    self.busy_since.store(0, Ordering::SeqCst);
                }
            }
        }
    }

    fn take(&mut self) {
        let doc = std::mem::take(&mut self.doc);
        let (s, trust, intents) = (&self.s, &self.trust, self.intents.clone());
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            take_flag(doc, s, trust, intents)
        })) {
            Ok((doc, outcome)) => {
                self.doc = doc;
                if let Some(outcome) = outcome {
                    let _ = self.done.send(Done {
                        doc: self.doc.clone(),
                        outcome,
                    });
                }
            }
            Err(_) => {
                // It may have saved part of its work: the file is the truth.
                tracing::error!("the restart task failed; reloading the history");
                match load_state(&self.s, &self.intents) {
                    Ok(d) => self.doc = d,
                    Err(e) => tracing::error!(error = %e, "cannot reload the history"),
                }
            }
        }
    }
}

async fn event_loop(
    env_files: Vec<EnvFileArg>,
    mut s: Settings,
    doc: StateDoc,
    trust: Trust,
    intents: Intents,
) -> Result<u8, AgentError> {
    let (work, work_rx) = std::sync::mpsc::channel::<Work>();
    let (done_tx, mut done) = mpsc::unbounded_channel::<Done>();
    let queued = Arc::new(AtomicBool::new(false));
    let busy_since = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let status = status_line(&doc, &s);
    // The history as of the executor's last report, for what the event loop shows.
    let mut known = doc.clone();
    let exec = Executor {
        doc,
        s: s.clone(),
        trust,
        intents,
        queued: queued.clone(),
        busy_since: busy_since.clone(),
        started,
        done: done_tx,
    };
    let executor = std::thread::Builder::new()
        .name("warden-restart".into())
        .spawn(move || exec.run(work_rx))
        .map_err(AgentError::Runtime)?;

    // inotify on the directory: atomic renames and re-created files are seen.
    let flag_name = s.restart_flag.value.file_name().map(|n| n.to_os_string());
    let dir = s
        .restart_flag
        .value
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let (watch_work, watch_queued) = (work.clone(), queued.clone());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && !matches!(
                ev.kind,
                notify::EventKind::Access(_)
                    | notify::EventKind::Remove(_)
                    // The flag renamed away: the agent's own claim, nothing new to take.
                    | notify::EventKind::Modify(notify::event::ModifyKind::Name(
                        notify::event::RenameMode::From
                    ))
            )
            && ev
                .paths
                .iter()
                .any(|p| p.file_name().map(|n| n.to_os_string()) == flag_name)
            // A request already queued absorbs this one.
            && !watch_queued.swap(true, Ordering::SeqCst)
        {
            let _ = watch_work.send(Work::Flag);
        }
    })
    .map_err(|source| AgentError::Watch {
        path: dir.clone(),
        source,
    })?;
    notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::NonRecursive).map_err(
        |source| AgentError::Watch {
            path: dir.clone(),
            source,
        },
    )?;
    // A flag already there at start is processed.
    if !queued.swap(true, Ordering::SeqCst) {
        let _ = work.send(Work::Flag);
    }

    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Runtime)?;
    let ping_every = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!(
        "warden run: watching {} ({status})",
        s.restart_flag.value.display()
    );

    loop {
        tokio::select! {
            Some(d) = done.recv() => {
                audit(&d.outcome);
                known = d.doc;
                // STATUS changes only when a request was handled.
                let status = status_line(&known, &s);
                notify(&[NotifyState::Status(&status)]);
            }
            _ = ping.tick(), if ping_every.is_some() => {
                // A request in hand far beyond its own deadline means a hung executor: stop
                // pinging, and systemd restarts the agent.
                let since = busy_since.load(Ordering::SeqCst);
                let now = started.elapsed().as_millis() as u64;
                let limit = (s.reload_timeout_seconds + 30) * 1000;
                if since == 0 || now.saturating_sub(since) < limit {
                    notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("a restart has been in hand for {} s; no longer telling systemd all is well", (now - since) / 1000);
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let mono = NotifyState::monotonic_usec_now().ok();
                let mut states = vec![NotifyState::Reloading];
                states.extend(mono);
                notify(&states);
                let (files, current) = (env_files.clone(), s.clone());
                let new = tokio::task::spawn_blocking(move || {
                    reloaded(&files, &current).map(|n| {
                        let t = Trust::resolve(n.admin_group.as_deref());
                        (n, t)
                    })
                })
                .await;
                match new {
                    Ok(Ok((n, t))) => {
                        s = n.clone();
                        let _ = work.send(Work::Settings(Box::new((n, t))));
                        tracing::info!("configuration reloaded");
                    }
                    Ok(Err(why)) => tracing::error!("configuration not reloaded: {why}"),
                    Err(e) => tracing::error!("configuration not reloaded: {e}"),
                }
                let status = status_line(&known, &s);
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    tracing::info!("warden run: stopping");
    // No new work; a restart in hand finishes its own record, given at most this long.
    drop(watcher);
    drop(work);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while done.recv().await.is_some() {}
    })
    .await;
    if executor.is_finished() {
        let _ = executor.join();
    }
    Ok(0)
}
