//! The watchdog agent (`warden run`): watches the restart flag's directory, runs each request
//! through the policy and the restart executor, and keeps systemd informed (READY, STATUS,
//! watchdog pings from the event loop itself, STOPPING, RELOADING).
//!
//! One restart runs at a time, off the event loop; flags arriving meanwhile coalesce into one
//! more request, taken when the running one is done. The state file is locked: one agent per
//! state file.

pub mod flag;
pub mod restart;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::agent::flag::{FlagDir, Trust};
use crate::config::{EnvFileArg, Layers, Settings};
use crate::control::dbus::{AgentIface, Ask, Authz, Caller, Change, RestartReply};
use crate::control::metrics::Metrics;
use crate::control::observe as report;
use crate::control::status::Validation;
use crate::ledger::intent::IntentLog;
use crate::ledger::state::{self, Loaded, StateDoc};
use restart::{Journal, Outcome};

/// Why an entry's outcome is unknown: the agent stopped between the signal and the record.
const UNKNOWN_OUTCOME: &str = "agent_stopped_before_recording_the_outcome";

/// journald MESSAGE_IDs of the agent's audit events.
pub mod message_id {
    pub const RESTART_EXECUTED: &str = "0d3c33330c0b4f2387ba68b3054d0256";
    pub const RESTART_BLOCKED: &str = "35e42bb3cddf4cf797834e4493ac147e";
    pub const RESTART_FAILED: &str = "9dd5de8e4a5d488d96fbe3f28cd96ab6";
    pub const FLAG_REJECTED: &str = "d142efce7a98493bb359b661407ae898";
    pub const STATE_SET_ASIDE: &str = "124e9b634a2349cd81e7106027bb1915";
    pub const KILL_SWITCH: &str = "8f3e2d1c0b9a48f7a6e5d4c3b2a19087";
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
    #[error("cannot inspect the restart flag's directory {path}: {source}")]
    FlagDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// What the agent says after `STATUS=`. `unsaved`: why the state file is behind the history
/// (the agent is degraded until a write succeeds).
fn status_line(doc: &StateDoc, s: &Settings, unsaved: Option<&str>) -> String {
    let now = chrono::Utc::now().timestamp_millis();
    let e = crate::ledger::policy::evaluate(&doc.executed(), now, &s.policy);
    format!(
        "policy {}, {} restart(s) in the last {} s{}{}",
        e.state.as_str(),
        e.attempts_in_window,
        e.window_seconds,
        doc.last_restart
            .as_ref()
            .and_then(|l| l.decision.as_deref())
            .map(|d| format!(", last request {d}"))
            .unwrap_or_default(),
        unsaved
            .map(|why| format!("; restart history not saved: {why}; retrying"))
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
fn open_intents(state_path: &Path) -> Option<IntentLog> {
    match IntentLog::open(state_path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(error = %e, "no intent record; restarts are recorded through the state file");
            None
        }
    }
}

/// Loads the history; an `intended` last entry, or an intent the history does not hold, is a
/// crash between signal and record: its outcome is unknown. Returns the history and, when it
/// could not be saved with those outcomes (a full disk), why: the agent runs on and retries.
fn load_state(
    s: &Settings,
    intents: Option<&mut IntentLog>,
) -> Result<(StateDoc, Option<String>), AgentError> {
    let path = &s.state_file.value;
    let mut unsaved = None;
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
        unsaved = state::save(path, &doc).err().map(|e| e.to_string());
    }
    if let Some(log) = intents {
        if let Some(mut e) = log.pending()
            && !doc.history.iter().any(|h| h.id.is_some() && h.id == e.id)
        {
            e.decision = Some("unknown".into());
            e.decision_reason = Some(UNKNOWN_OUTCOME.into());
            let now = chrono::Utc::now().timestamp_millis();
            doc.push(
                e,
                s.history_max,
                crate::ledger::policy::retain(&s.policy, now),
            );
            unsaved = state::save(path, &doc).err().map(|e| e.to_string());
        }
        // The intent goes once the state file holds its outcome, not before.
        if unsaved.is_none() {
            log.clear();
        }
    }
    if let Some(why) = &unsaved {
        tracing::error!(
            "cannot save the restart history with the outcomes settled at start: {why}; retrying"
        );
    }
    Ok((doc, unsaved))
}

/// Claims the flag (if any) and handles it. Blocking.
fn take_flag(
    doc: &mut StateDoc,
    s: &Settings,
    trust: &Trust,
    dir: &FlagDir,
    j: &mut Journal<'_>,
) -> Option<Outcome> {
    let flag = &s.restart_flag.value;
    match dir.check(flag) {
        Ok(()) => {}
        // The path leads elsewhere than the directory watched: nothing there is read, moved
        // or removed, and every request the agent hears of is refused.
        Err(why @ crate::agent::flag::Rejection::DirReplaced(_)) => {
            return Some(restart::reject(doc, s, &why, j));
        }
        // Others may write in it: a flag is consumed unread.
        Err(why) => {
            return match std::fs::remove_file(flag) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!("{why}; restart flags there are refused");
                    None
                }
                r => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, flag = %flag.display(), "cannot remove the refused flag");
                    }
                    Some(restart::reject(doc, s, &why, j))
                }
            };
        }
    }
    let claimed = match crate::agent::flag::claim(flag, trust) {
        Ok(Some(c)) => c,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(error = %e, flag = %s.restart_flag.value.display(), "cannot take the restart flag");
            return None;
        }
    };
    let outcome = match &claimed.result {
        Ok(req) => restart::handle(
            doc,
            s,
            req,
            &req.policy_request(),
            claimed.written_at,
            j,
            &mut |_, _| {},
        ),
        Err(why) => restart::reject(doc, s, why, j),
    };
    if let Err(e) = claimed.finish() {
        tracing::error!(error = %e, "cannot remove the claimed flag");
    }
    Some(outcome)
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
pub fn run(
    env_files: Vec<EnvFileArg>,
    settings: Settings,
    validation: Validation,
) -> Result<u8, AgentError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    // Startup I/O happens before the event loop starts, not on it.
    let _lock = lock(&settings.state_file.value)?;
    // The lock makes this agent the state file's one writer: a temporary file beside it is a
    // write cut short by a kill.
    let temps = crate::platform::fs::remove_stale_temps(&settings.state_file.value);
    if temps > 0 {
        tracing::warn!("removed {temps} temporary file(s) of state writes cut short");
    }
    let mut intents = open_intents(&settings.state_file.value);
    let (doc, unsaved) = load_state(&settings, intents.as_mut())?;
    let flag_dir =
        FlagDir::pin(&settings.restart_flag.value).map_err(|source| AgentError::FlagDir {
            path: settings.restart_flag.value.clone(),
            source,
        })?;
    let stale = crate::agent::flag::requeue_stale_claims(&settings.restart_flag.value);
    if stale > 0 {
        tracing::warn!(
            "{stale} request(s) claimed by an agent that stopped before deciding them: queued again"
        );
    }
    let trust = Trust::resolve(settings.admin_group.as_deref());
    let authz = Authz::resolve(settings.admin_group.as_deref());
    let metrics_listener = settings.metrics_socket.as_deref().and_then(|p| {
        bind_metrics(p)
            .map_err(|e| tracing::error!(error = %e, path = %p.display(), "metrics not served"))
            .ok()
    });
    let start = Start {
        doc,
        unsaved,
        flag_dir,
        trust,
        authz,
        intents,
        validation,
        metrics_listener,
    };
    let code = rt.block_on(event_loop(env_files, settings, start))?;
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
    /// `RequestRestart` or `SetKillSwitch` over D-Bus.
    Api(Change),
}

/// The executor's report after each change of the state.
struct Done {
    doc: StateDoc,
    /// `None` for a change that is not a request (a kill-switch flip with nothing to reload).
    outcome: Option<Outcome>,
    /// Why the state file is behind `doc`, if it is.
    unsaved: Option<String>,
}

/// The restart executor: one thread takes each request (flag or D-Bus), decides, signals,
/// verifies, and alone writes the state. Flags reach it straight from the inotify thread, in
/// one wake-up; its blocking work never touches the event loop, which keeps the watchdog fed
/// and only reports.
struct Executor {
    doc: StateDoc,
    /// The state as of the last completed work, for when a piece of work panics and the file
    /// cannot be read back.
    last_good: StateDoc,
    s: Settings,
    trust: Trust,
    flag_dir: FlagDir,
    intents: Option<IntentLog>,
    /// Why the state file is behind `doc` (its last write failed), if it is: retried each
    /// [`SAVE_RETRY`].
    unsaved: Option<String>,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicBool>,
    /// Since when (ms on the monotonic clock of `started`) a request has been in hand; 0 idle.
    busy_since: Arc<AtomicU64>,
    started: std::time::Instant,
    done: mpsc::UnboundedSender<Done>,
}

fn verdict_str(v: crate::ledger::policy::Verdict) -> &'static str {
    use crate::ledger::policy::Verdict;
    match v {
        Verdict::Allowed => "allowed",
        Verdict::ManualOverride => "manual_override",
        Verdict::Blocked => "blocked",
        Verdict::Refused => "rejected",
    }
}

/// How often a state file that could not be written is tried again.
const SAVE_RETRY: Duration = Duration::from_secs(1);

impl Executor {
    fn run(mut self, rx: std::sync::mpsc::Receiver<Work>) {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            let w = if self.unsaved.is_some() {
                match rx.recv_timeout(SAVE_RETRY) {
                    Ok(w) => w,
                    Err(RecvTimeoutError::Timeout) => {
                        self.retry_save();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(w) => w,
                    Err(_) => break,
                }
            };
            if let Work::Settings(b) = w {
                (self.s, self.trust) = *b;
                continue;
            }
            if matches!(w, Work::Flag) {
                self.queued.store(false, Ordering::SeqCst);
            }
            let t = self.started.elapsed().as_millis() as u64;
            self.busy_since.store(t.max(1), Ordering::SeqCst);
            self.guarded(w);
            self.busy_since.store(0, Ordering::SeqCst);
        }
    }

    /// Writes the history the last write could not; says so when it succeeds.
    fn retry_save(&mut self) {
        let mut j = Journal::new(
            &self.s.state_file.value,
            self.intents.as_mut(),
            self.unsaved.clone(),
        );
        let saved = j.try_save(&self.doc).is_ok();
        self.unsaved = j.unsaved;
        if saved {
            tracing::info!("the restart history is saved again");
            let _ = self.done.send(Done {
                doc: self.doc.clone(),
                outcome: None,
                unsaved: None,
            });
        }
    }

    /// Runs one piece of work; a panic in it costs that request, never the agent.
    fn guarded(&mut self, w: Work) {
        // Nothing is cloned before the work: it sits between a flag and its signal.
        let mark = self.mark();
        let was_unsaved = self.unsaved.is_some();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.work(w)));
        let outcome = match r {
            Ok(o) => o,
            Err(_) => {
                // It may have saved part of its work: the file is the truth.
                tracing::error!("the restart task failed; reloading the history");
                match load_state(&self.s, self.intents.as_mut()) {
                    Ok((doc, unsaved)) => (self.doc, self.unsaved) = (doc, unsaved),
                    Err(_) => self.doc = self.last_good.clone(),
                }
                return;
            }
        };
        if let Some(o) = &outcome {
            self.count(o);
        }
        // Nothing to report when nothing changed (an inotify event with no flag to take).
        if outcome.is_none() && self.mark() == mark && self.unsaved.is_some() == was_unsaved {
            return;
        }
        self.last_good = self.doc.clone();
        let _ = self.done.send(Done {
            doc: self.last_good.clone(),
            outcome,
            unsaved: self.unsaved.clone(),
        });
    }

    /// What tells whether the state changed: every change appends an entry or flips the
    /// kill-switch.
    fn mark(&self) -> (usize, Option<String>, Option<state::KillSwitch>) {
        (
            self.doc.history.len(),
            self.doc.last_restart.as_ref().and_then(|e| e.id.clone()),
            self.doc.kill_switch.clone(),
        )
    }

    fn work(&mut self, w: Work) -> Option<Outcome> {
        let mut j = Journal::new(
            &self.s.state_file.value,
            self.intents.as_mut(),
            self.unsaved.clone(),
        );
        let outcome = match w {
            Work::Settings(_) => None,
            Work::Flag => take_flag(&mut self.doc, &self.s, &self.trust, &self.flag_dir, &mut j),
            Work::Api(Change::Restart {
                caller,
                reason,
                manual_override,
                acknowledged,
                reply,
            }) => {
                let req = crate::agent::flag::FlagRequest {
                    user: Some(caller.name),
                    source: "manual".into(),
                    manual_override,
                    override_acknowledged: acknowledged,
                    override_reason: manual_override.then(|| reason.clone()),
                    reason: (!reason.is_empty()).then_some(reason),
                    ..Default::default()
                };
                let mut reply = Some(reply);
                let mut decided = |d: &crate::ledger::policy::Decision, id: &str| {
                    if let Some(r) = reply.take() {
                        let _ = r.send(RestartReply {
                            decision: verdict_str(d.decision).into(),
                            reason: d.reason.into(),
                            requires_acknowledgement: d.requires_acknowledgement,
                            id: id.into(),
                        });
                    }
                };
                Some(restart::handle(
                    &mut self.doc,
                    &self.s,
                    &req,
                    &req.policy_request(),
                    None,
                    &mut j,
                    &mut decided,
                ))
            }
            Work::Api(Change::KillSwitch {
                caller,
                engaged,
                reason,
                reply,
            }) => kill_switch(
                &mut self.doc,
                &self.s,
                &mut j,
                caller,
                engaged,
                reason,
                reply,
            ),
        };
        self.unsaved = j.unsaved;
        outcome
    }
}

/// Flips the kill-switch: recorded, published for the app, then (when it changed) one graceful
/// reload that no policy blocks, so every worker reads the new value.
fn kill_switch(
    doc: &mut StateDoc,
    s: &Settings,
    j: &mut Journal<'_>,
    caller: Caller,
    engaged: bool,
    reason: String,
    reply: oneshot::Sender<Result<String, String>>,
) -> Option<Outcome> {
    let flipped_at = chrono::Utc::now();
    let reason = (!reason.is_empty()).then_some(reason);
    let ks =
        match state::KillSwitch::flip(engaged, reason.as_deref(), Some(&caller.name), flipped_at) {
            Ok(k) => k,
            Err(e) => {
                let _ = reply.send(Err(e.to_string()));
                return None;
            }
        };
    let was = doc.kill_switch.as_ref().is_some_and(|k| k.engaged);
    let previous = doc.kill_switch.replace(ks.clone());
    if let Err(e) = state::save(&s.state_file.value, doc) {
        doc.kill_switch = previous;
        let _ = reply.send(Err(format!("the kill-switch was not recorded: {e}")));
        return None;
    }
    if let Some(p) = &s.kill_switch_file
        && let Err(e) = report::publish_kill_switch(p, &ks)
    {
        let _ = reply.send(Err(format!(
            "recorded, but not published to {}: {e}",
            p.display()
        )));
        return None;
    }
    tracing::warn!(
        message_id = message_id::KILL_SWITCH,
        engaged,
        changed_by = %caller.name,
        "kill-switch {} by {}: {}",
        if engaged { "engaged" } else { "released" },
        caller.name,
        ks.reason.as_deref().unwrap_or("(no reason)")
    );
    if was == engaged {
        let _ = reply.send(Ok(String::new()));
        return None;
    }
    let req = crate::agent::flag::FlagRequest {
        user: Some(caller.name),
        source: "kill_switch".into(),
        reason: ks.reason.clone(),
        ..Default::default()
    };
    let ask = crate::ledger::policy::Request {
        source: crate::ledger::policy::RequestSource::KillSwitch,
        manual_override: false,
        override_acknowledged: false,
        override_reason: None,
    };
    let mut reply = Some(reply);
    let mut decided = |_: &crate::ledger::policy::Decision, id: &str| {
        if let Some(r) = reply.take() {
            let _ = r.send(Ok(id.to_string()));
        }
    };
    // Asked at the flip: the entry's rollback time runs from there.
    Some(restart::handle(
        doc,
        s,
        &req,
        &ask,
        Some(flipped_at.into()),
        j,
        &mut decided,
    ))
}

impl Executor {
    /// The metrics of a handled request.
    fn count(&self, o: &Outcome) {
        use crate::control::metrics::Decision as D;
        let last = self.doc.history.last();
        let source = match last.and_then(|e| e.source.as_deref()) {
            Some("auto") => crate::ledger::policy::RequestSource::Auto,
            Some("kill_switch") => crate::ledger::policy::RequestSource::KillSwitch,
            _ => crate::ledger::policy::RequestSource::Manual,
        };
        let d = match o {
            Outcome::Executed { .. } => D::Executed,
            Outcome::Failed(_) => D::Failed,
            Outcome::Blocked { .. } => D::Blocked,
            Outcome::Rejected(_) => D::Rejected,
        };
        self.metrics.record_restart(d, source);
        if let Outcome::Executed { .. } = o
            && let Some(t) = last.and_then(|e| e.extra.get("timings"))
        {
            let ms = |k: &str| t.get(k).and_then(|v| v.as_f64());
            if let Some(v) = ms("flag_to_signal_ms") {
                self.metrics
                    .observe_flag_to_signal(Duration::from_secs_f64(v.max(0.0) / 1e3));
            }
            if let Some(v) = ms("workers_replaced_ms") {
                self.metrics
                    .observe_reload(Duration::from_secs_f64(v.max(0.0) / 1e3));
            }
        }
    }
}

/// What the event loop keeps to answer for the agent.
struct Shown {
    s: Settings,
    known: StateDoc,
    validation: Validation,
    meta: report::Meta,
    metrics: Arc<Metrics>,
    /// The last document built for `Status()`, and when.
    cache: Option<(std::time::Instant, String)>,
}

/// How long a built status document answers `Status()` calls: callers polling at any rate
/// cost one build per this period, and a change of the state drops it at once.
const STATUS_FRESH: Duration = Duration::from_millis(250);

impl Shown {
    /// The status document as JSON: the cached one while fresh, else built off the event loop.
    async fn status(&mut self) -> String {
        if let Some((at, json)) = &self.cache
            && at.elapsed() < STATUS_FRESH
        {
            return json.clone();
        }
        let json = self.build(false).await.unwrap_or_else(|| "{}".into());
        self.cache = Some((std::time::Instant::now(), json.clone()));
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
            self.s.clone(),
            self.known.clone(),
            self.validation.clone(),
            self.meta.clone(),
            self.metrics.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let d = report::document(&s, &doc, &v, Some(&m));
            if publish {
                if let Some(p) = &s.status_file
                    && let Err(e) = report::publish_status(p, &d)
                {
                    tracing::warn!(error = %e, path = %p.display(), "cannot publish the status file");
                }
                if let Some(p) = &s.metrics_textfile
                    && let Err(e) = crate::control::metrics::write_textfile(p, &metrics)
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

/// What `run` prepared before the event loop: the startup I/O, off the runtime.
struct Start {
    doc: StateDoc,
    /// Why the history could not be saved at start, if it could not.
    unsaved: Option<String>,
    flag_dir: FlagDir,
    trust: Trust,
    authz: Authz,
    intents: Option<IntentLog>,
    validation: Validation,
    metrics_listener: Option<std::os::unix::net::UnixListener>,
}

async fn event_loop(
    env_files: Vec<EnvFileArg>,
    s: Settings,
    start: Start,
) -> Result<u8, AgentError> {
    let Start {
        doc,
        unsaved,
        flag_dir,
        trust,
        authz,
        intents,
        validation,
        metrics_listener,
    } = start;
    let (work, work_rx) = std::sync::mpsc::channel::<Work>();
    let (done_tx, mut done) = mpsc::unbounded_channel::<Done>();
    let queued = Arc::new(AtomicBool::new(false));
    let busy_since = Arc::new(AtomicU64::new(0));
    let started = std::time::Instant::now();
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION")));
    metrics.set_contract_valid(validation.valid);
    let status = status_line(&doc, &s, unsaved.as_deref());
    let ping_every = sd_notify::watchdog_enabled().map(|d| d / 2);
    let mut shown = Shown {
        s: s.clone(),
        known: doc.clone(),
        validation,
        meta: report::Meta {
            pid: std::process::id(),
            started_at: chrono::Utc::now(),
            watchdog_usec: ping_every.map(|d| (d * 2).as_micros() as u64),
            state_write_error: unsaved.clone(),
        },
        metrics: metrics.clone(),
        cache: None,
    };
    let exec = Executor {
        last_good: doc.clone(),
        doc,
        s: s.clone(),
        trust,
        flag_dir,
        intents,
        unsaved,
        metrics: metrics.clone(),
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
    let (watch_work, watch_queued, watched) = (work.clone(), queued.clone(), dir.clone());
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let flag = !matches!(
            ev.kind,
            notify::EventKind::Access(_)
                | notify::EventKind::Remove(_)
                // The flag renamed away: the agent's own claim, nothing new to take. (A
                // rename reported whole names both paths: an arrival is also reported as `To`.)
                | notify::EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::From | notify::event::RenameMode::Both
                ))
        ) && ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == flag_name);
        // The directory itself moved, removed or its mode changed: the executor checks it
        // (`FlagDir`) and says what it finds.
        let itself =
            !matches!(ev.kind, notify::EventKind::Access(_)) && ev.paths.contains(&watched);
        // A request already queued absorbs this one.
        if (flag || itself) && !watch_queued.swap(true, Ordering::SeqCst) {
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

    // The kill-switch as recorded, for the app (a tmpfs under /run starts empty at boot).
    if let Some(p) = s.kill_switch_file.clone() {
        let k = shown.known.kill_switch.clone().unwrap_or_default();
        let r = tokio::task::spawn_blocking(move || report::publish_kill_switch(&p, &k)).await;
        if let Ok(Err(e)) = r {
            tracing::error!(error = %e, "cannot publish the kill-switch file");
        }
    }
    if let Some(l) = metrics_listener {
        match tokio::net::UnixListener::from_std(l) {
            Ok(l) => {
                tokio::spawn(crate::control::metrics::serve_unix(l, metrics.clone()));
            }
            Err(e) => tracing::error!(error = %e, "metrics not served"),
        }
    }

    // D-Bus: the API is a convenience on top of the flag; the agent runs without a bus.
    let (ask_tx, mut asks) = mpsc::channel::<Ask>(64);
    let authz = Arc::new(std::sync::RwLock::new(authz));
    let props = crate::control::dbus::SharedSnapshot::default();
    let iface = AgentIface::new(ask_tx, authz.clone(), props.clone());
    let bus = match crate::control::dbus::serve(iface).await {
        Ok(c) => Some((c, props)),
        Err(e) => {
            tracing::warn!(error = %e, "no D-Bus API (warden status|restart|kill-switch will fall back to files)");
            None
        }
    };
    let refresh = |shown: &Shown| report::snapshot(&shown.s, &shown.known, shown.validation.valid);
    if let Some((c, props)) = &bus {
        let _ = crate::control::dbus::publish(c, props, refresh(&shown)).await;
    }
    shown.changed().await;

    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Runtime)?;
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The cooldown counts down and restarts leave the window on their own: properties and
    // gauges follow each second while that happens, and rarely otherwise (an idle agent wakes
    // for its watchdog pings and little else).
    let tick = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(tick);
    let mut textfile_due = tokio::time::Instant::now();

    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    tracing::info!(
        "warden run: watching {} ({status})",
        s.restart_flag.value.display()
    );

    loop {
        tokio::select! {
            Some(d) = done.recv() => {
                if let Some(o) = &d.outcome {
                    audit(o);
                }
                shown.known = d.doc;
                shown.meta.state_write_error = d.unsaved;
                // Gauges, properties, then the signal: whoever hears the outcome reads the
                // state it left.
                report::gauges(&metrics, &shown.s, &shown.known);
                tick.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                // STATUS changes only when the state did.
                let status = status_line(&shown.known, &shown.s, shown.meta.state_write_error.as_deref());
                notify(&[NotifyState::Status(&status)]);
                if let Some((c, props)) = &bus {
                    let _ = crate::control::dbus::publish(c, props, refresh(&shown)).await;
                    if let (Some(o), Some(id)) = (&d.outcome, shown.known.last_restart.as_ref().and_then(|l| l.id.clone())) {
                        let (name, verified, detail) = outcome_parts(o);
                        let e = zbus::object_server::SignalEmitter::new(c, crate::control::dbus::OBJECT_PATH);
                        if let Ok(e) = e {
                            let _ = AgentIface::restart_completed(&e, &id, name, verified, &detail).await;
                        }
                    }
                }
                shown.changed().await;
            }
            Some(a) = asks.recv() => match a {
                Ask::Status(reply) => {
                    let _ = reply.send(shown.status().await);
                }
                Ask::Change(c) => {
                    if let Change::Restart { caller, reason, .. } = &c {
                        tracing::info!(user = %caller.name, "restart requested over D-Bus: {reason}");
                    }
                    let _ = work.send(Work::Api(c));
                }
            },
            _ = &mut tick => {
                let snap = refresh(&shown);
                let moving = snap.cooldown_remaining > 0 || snap.attempts_in_window > 0;
                if let Some((c, props)) = &bus {
                    let _ = crate::control::dbus::publish(c, props, snap).await;
                }
                report::gauges(&metrics, &shown.s, &shown.known);
                // The textfile also follows the clock (node_exporter flags a stale file).
                let now = tokio::time::Instant::now();
                if shown.s.metrics_textfile.is_some() && now >= textfile_due {
                    textfile_due = now + Duration::from_secs(15);
                    shown.changed().await;
                }
                let every = if moving { 1 } else if shown.s.metrics_textfile.is_some() { 15 } else { 60 };
                tick.as_mut().reset(now + Duration::from_secs(every));
            }
            _ = ping.tick(), if ping_every.is_some() => {
                // A request in hand far beyond its own deadline means a hung executor: stop
                // pinging, and systemd restarts the agent.
                let since = busy_since.load(Ordering::SeqCst);
                let now = started.elapsed().as_millis() as u64;
                let limit = (shown.s.reload_timeout_seconds + 30) * 1000;
                if since == 0 || now.saturating_sub(since) < limit {
                    notify(&[NotifyState::Watchdog]);
                    metrics.watchdog_ping();
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
                let (files, current) = (env_files.clone(), shown.s.clone());
                let new = tokio::task::spawn_blocking(move || {
                    reloaded(&files, &current).map(|n| {
                        let t = Trust::resolve(n.admin_group.as_deref());
                        let a = Authz::resolve(n.admin_group.as_deref());
                        (n, t, a)
                    })
                })
                .await;
                match new {
                    Ok(Ok((n, t, a))) => {
                        shown.s = n.clone();
                        *authz.write().unwrap_or_else(|e| e.into_inner()) = a;
                        let _ = work.send(Work::Settings(Box::new((n, t))));
                        tracing::info!("configuration reloaded");
                    }
                    Ok(Err(why)) => tracing::error!("configuration not reloaded: {why}"),
                    Err(e) => tracing::error!("configuration not reloaded: {e}"),
                }
                let status = status_line(&shown.known, &shown.s, shown.meta.state_write_error.as_deref());
                notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    tracing::info!("warden run: stopping");
    // No new work; a restart in hand finishes its own record, given at most this long.
    drop(watcher);
    drop(work);
    drop(bus);
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while done.recv().await.is_some() {}
    })
    .await;
    if executor.is_finished() {
        let _ = executor.join();
    }
    Ok(0)
}

/// The outcome as `RestartCompleted` reports it: (name, verified, detail).
fn outcome_parts(o: &Outcome) -> (&'static str, bool, String) {
    match o {
        Outcome::Executed { verified, detail } => ("executed", *verified, detail.clone()),
        Outcome::Failed(why) => ("failed", false, why.clone()),
        Outcome::Blocked { reason, .. } => ("blocked", false, (*reason).to_string()),
        Outcome::Rejected(why) => ("rejected", false, why.clone()),
    }
}

/// Binds the metrics socket, replacing a stale socket (never another kind of file).
fn bind_metrics(p: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = p.symlink_metadata() {
        if m.file_type().is_socket() {
            std::fs::remove_file(p)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
    }
    let l = std::os::unix::net::UnixListener::bind(p)?;
    // tokio takes it over only non-blocking.
    l.set_nonblocking(true)?;
    Ok(l)
}
