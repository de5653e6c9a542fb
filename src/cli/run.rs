//! `warden run`: the agent, wired to the control surface. The startup check and the agent's
//! preparation happen before the event loop; the loop itself only routes: the executor's
//! reports to the view (properties, signal, metrics, files) and to systemd's `STATUS=`, D-Bus
//! calls to the view or the executor, the clock to the view and the watchdog, signals to a
//! configuration reload or a stop.

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use super::errors;
use super::exit::Exit;
use crate::agent::AgentError;
use crate::agent::executor::{Executor, Parts};
use crate::agent::flag::Trust;
use crate::agent::fleet::Outside;
use crate::agent::master::ProcMaster;
use crate::agent::protocol::{Caller, Change};
use crate::agent::startup::{self, Prepared};
use crate::agent::watchdog::{self, notify};
use crate::config::instance::AppName;
use crate::config::{EnvFileArg, Settings};
use crate::contract::inputs::{Sources, gather};
use crate::control::dbus::{self, AgentIface, Ask, SharedSnapshot};
use crate::control::metrics::fleet::FleetSeries;
use crate::control::metrics::{self, Metrics};
use crate::control::observe::Meta;
use crate::control::status::Validation;
use crate::control::view::View;
use crate::ledger::model::RequestSource;
use crate::platform::accounts::Admins;
use crate::recovery::observation::Observation;
use crate::recovery::watcher::Step;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app to watch (its unit's name): the contract is /etc/warden/NAME.env
    /// (WARDEN_CONFIG_DIR overrides the directory), and its absence is an error: the agent
    /// does not guess. `warden@NAME.service` runs `warden run --app NAME`
    #[arg(long, value_name = "NAME")]
    pub app: Option<AppName>,
    /// Load variables from a file in systemd EnvironmentFile= syntax instead; repeatable, later
    /// files override earlier ones and the environment. A leading '-' makes the file optional.
    /// SIGHUP reloads them
    #[arg(long = "env-file", value_name = "PATH", allow_hyphen_values = true)]
    pub env_files: Vec<EnvFileArg>,
}

/// Logs to the journal (with structured fields) under systemd, to stderr otherwise.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    // `WARDEN_LOG`: a level, or `target=level` pairs (`info,warden::fleet=debug`); tracing's
    // plain target filter rather than its env filter, which carries a regex engine for span
    // and field filters warden has no use for.
    let filter = std::env::var("WARDEN_LOG")
        .ok()
        .and_then(|v| v.parse::<tracing_subscriber::filter::Targets>().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    if crate::systemd::journal::connected()
        && let Ok(j) = tracing_journald::layer()
    {
        let j = j
            .with_field_prefix(None)
            .with_syslog_identifier("warden".into());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(j)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .try_init();
}

pub fn main(a: RunArgs) -> Exit {
    init_logging();
    // Units from systemd (else their files): the app unit's WorkingDirectory= roots relative
    // paths, as it does for the check in the agent's ExecStartPre=.
    let src = match super::target::locate_for_agent(a.app.as_ref(), &a.env_files) {
        Ok(found) => found.sources(&[], false),
        Err(e) => {
            tracing::error!("{e}; {}", errors::Explain::help(&e));
            errors::report(&e);
            return Exit::Usage;
        }
    };
    let loaded = match gather(&src) {
        Ok(g) => g.loaded,
        Err(e) => {
            errors::report(&e);
            return Exit::Usage;
        }
    };
    warn_if_root_for_another_user(&loaded.settings);
    let failed = crate::contract::startup::errors(&loaded);
    for f in &failed {
        tracing::error!(code = f.code.as_str(), subject = %f.subject, help = %f.help, "{}", f.headline());
    }
    let settings = loaded.settings;
    if !failed.is_empty() {
        if settings.enforce.value {
            errors::refuse(
                &format!(
                    "warden run: the startup check failed ({} error(s)); not starting",
                    failed.len()
                ),
                None,
            );
            return Exit::CheckFailed;
        }
        tracing::warn!("startup check failed but RUNTIME_CONTRACT_ENFORCE=false: running anyway");
    }
    let validation = Validation {
        valid: failed.is_empty(),
        errors: failed.iter().map(|f| f.headline()).collect(),
    };
    match run(src, settings, validation) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            errors::report(&e);
            Exit::CheckFailed
        }
    }
}

/// The template gives the agent no user: without the drop-in that names the app's, it runs
/// as root, and a hardened root (no capabilities) can neither signal nor write for another
/// user. Said once, plainly, before the failures it explains.
fn warn_if_root_for_another_user(s: &Settings) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(meta) = std::fs::metadata(&s.runtime_dir.value) else {
        return;
    };
    if meta.uid() == 0 {
        return;
    }
    let owner =
        crate::platform::accounts::user_name(meta.uid()).unwrap_or_else(|| meta.uid().to_string());
    let unit = s
        .app_unit
        .as_deref()
        .and_then(AppName::of_unit)
        .map_or_else(|| "the agent's unit".to_string(), |a| a.agent_unit());
    tracing::warn!(
        "the agent runs as root, the app's runtime directory {} belongs to {owner}: give the \
         agent the app's user (systemctl edit {unit}: [Service] User={owner} Group=…)",
        s.runtime_dir.value.display()
    );
}

/// Runs the agent until SIGTERM/SIGINT.
fn run(src: Sources, s: Settings, validation: Validation) -> Result<(), AgentError> {
    // Startup I/O happens before the event loop starts, not on it.
    let prepared = startup::prepare(&s)?;
    let admins = Admins::resolve(s.admin_group.as_deref());
    let metrics_listener = s.metrics_socket.as_deref().and_then(|p| {
        metrics::bind_socket(p)
            .map_err(|e| tracing::error!(error = %e, path = %p.display(), "metrics not served"))
            .ok()
    });
    if let Some(p) = &s.kill_switch_file {
        // The kill-switch as recorded, for the app (a tmpfs under /run starts empty at boot).
        let ks = prepared
            .ledger
            .doc()
            .kill_switch
            .clone()
            .unwrap_or_default();
        if let Err(e) = ks.publish(p) {
            tracing::error!(error = %e, "cannot publish the kill-switch file");
        }
    }
    // The fleet's client reads its TLS and password files: here, before the event loop.
    let outside = Outside::of(&s, &crate::agent::fleet::instance_name(&s))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(event_loop(
        src,
        s,
        prepared,
        admins,
        validation,
        metrics_listener,
        outside,
    ))?;
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(())
}

/// The configuration a SIGHUP reads: the paths stay as the agent started (its inotify watch and
/// its state lock are on them), everything else is taken. An invalid value keeps the running
/// configuration.
fn reloaded(src: &Sources, current: &Settings) -> Result<Settings, String> {
    let mut new = gather(src)
        .map_err(|e| e.to_string())?
        .loaded
        .strict()
        .map_err(|i| i.to_string())?;
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

/// Serves the metrics on their socket, when one was bound.
fn serve_metrics(listener: Option<std::os::unix::net::UnixListener>, metrics: &Arc<Metrics>) {
    let Some(l) = listener else { return };
    match tokio::net::UnixListener::from_std(l) {
        Ok(l) => {
            tokio::spawn(metrics::serve_unix(l, metrics.clone()));
        }
        Err(e) => tracing::error!(error = %e, "metrics not served"),
    }
}

/// Serves the D-Bus interface; `None` (and a warning) without a bus: the agent runs on flags.
async fn serve_dbus(
    asks: mpsc::Sender<Ask>,
    admins: Arc<std::sync::RwLock<Admins>>,
    name: &str,
) -> Option<(zbus::Connection, SharedSnapshot)> {
    let props = SharedSnapshot::default();
    match dbus::serve(AgentIface::new(asks, admins, props.clone()), name).await {
        Ok(c) => Some((c, props)),
        Err(e) => {
            tracing::warn!(error = %e, "no D-Bus API (warden status|restart|kill-switch will fall back to files)");
            None
        }
    }
}

/// Reads the configuration again, off the event loop, with the admin group it names.
async fn reload(src: &Sources, current: &Settings) -> Result<(Settings, Admins), String> {
    let (src, current) = (src.clone(), current.clone());
    tokio::task::spawn_blocking(move || {
        let n = reloaded(&src, &current)?;
        let a = Admins::resolve(n.admin_group.as_deref());
        Ok((n, a))
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn event_loop(
    src: Sources,
    settings: Settings,
    prepared: Prepared,
    admins: Admins,
    validation: Validation,
    metrics_listener: Option<std::os::unix::net::UnixListener>,
    outside: Outside,
) -> Result<(), AgentError> {
    let Prepared {
        lock: _lock,
        ledger,
        flag_dir,
    } = prepared;
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let unsaved = ledger.unsaved().map(str::to_string);
    let known = ledger.doc().clone();
    let app = settings.app_unit.as_deref().and_then(AppName::of_unit);
    let fleet_series = FleetSeries {
        slots: outside
            .identity
            .as_ref()
            .map(|me| (me.group.clone(), me.slots, outside.fleet_gauges.clone())),
        gate: settings
            .alert_gate
            .as_ref()
            .map(|_| outside.gate_gauges.clone()),
    };
    let fleet_view = outside
        .identity
        .clone()
        .map(|me| crate::fleet::coordinator::FleetView {
            gauges: outside.fleet_gauges.clone(),
            me,
        });
    let executor = Executor::spawn(
        Parts {
            ledger,
            settings: settings.clone(),
            trust: Trust::new(&admins),
            flag_dir,
            master: ProcMaster::new(settings.pid_file.value.clone(), settings.app_unit.clone()),
            slots: outside.slots,
            gate: outside.gate,
        },
        reports_tx,
    )
    .map_err(AgentError::Runtime)?;
    let watcher = crate::agent::watch::watch(&settings.restart_flag.value, executor.flag_events())?;
    // A flag already there at start is taken.
    executor.flag_events().changed();

    let metrics = Arc::new(
        match &app {
            Some(app) => Metrics::for_app(env!("CARGO_PKG_VERSION"), app.as_str()),
            None => Metrics::new(env!("CARGO_PKG_VERSION")),
        }
        .with_fleet(fleet_series),
    );
    serve_metrics(metrics_listener, &metrics);
    // D-Bus: the API is a convenience on top of the flag; the agent runs without a bus.
    let (ask_tx, mut asks) = mpsc::channel::<Ask>(64);
    let admins = Arc::new(std::sync::RwLock::new(admins));
    // One agent per app: its name is its app's, so that the agents of a host's apps coexist.
    let bus = serve_dbus(ask_tx, admins.clone(), &dbus::agent_name(&settings)).await;
    let ping_every = watchdog::ping_interval();
    let meta = Meta {
        pid: std::process::id(),
        started_at: chrono::Utc::now(),
        watchdog_usec: ping_every.map(|d| (d * 2).as_micros() as u64),
        state_write_error: unsaved,
        fleet: fleet_view,
    };
    let mut view = View::new(
        settings.clone(),
        known,
        validation,
        meta,
        metrics.clone(),
        bus,
    );
    view.show().await;

    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(AgentError::Runtime)?;
    let mut ping = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(3600)));
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let tick = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(tick);
    // Probes: one at a time, on a thread; the next is due an interval after the last began.
    let (probed_tx, mut probed) = mpsc::channel::<(Observation, bool)>(1);
    let probe_due = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(probe_due);
    let mut probing = false;

    let status = |view: &View| {
        watchdog::status_line(
            &view.known,
            &view.evaluation(),
            view.meta.state_write_error.as_deref(),
        )
    };
    if settings.recovery.mode != crate::config::AutoRecovery::Off && settings.probe.is_none() {
        tracing::warn!(
            "WARDEN_AUTO_RECOVERY={} but nothing is probed: set WARDEN_HEALTH_URL (and \
             WARDEN_PROBE_INTERVAL other than off)",
            settings.recovery.mode
        );
    }
    let first = status(&view);
    notify(&[NotifyState::Ready, NotifyState::Status(&first)]);
    tracing::info!(
        "warden run: watching {} ({first})",
        settings.restart_flag.value.display()
    );

    loop {
        tokio::select! {
            Some(r) = reports.recv() => {
                view.reported(r).await;
                // STATUS changes only when the state did.
                notify(&[NotifyState::Status(&status(&view))]);
                tick.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            Some(a) = asks.recv() => match a {
                Ask::Status(reply) => {
                    let _ = reply.send(view.status().await);
                }
                Ask::ResetRecovery { caller, reason, reply } => {
                    let was = view.recovery.breaker().state();
                    view.reset_breaker(&caller.name, &reason).await;
                    let _ = reply.send(was.as_str().to_string());
                }
                Ask::Change(c) => {
                    if let Change::Restart { caller, reason, .. } = &c {
                        tracing::info!(user = %caller.name, "restart requested over D-Bus: {reason}");
                    }
                    executor.change(c);
                }
            },
            _ = &mut tick => {
                let next = view.tick().await;
                tick.as_mut().reset(tokio::time::Instant::now() + next);
            }
            _ = &mut probe_due, if !probing && view.settings.probe.is_some() => {
                let p = view.settings.probe.clone().expect("checked by the guard");
                probe_due.as_mut().reset(tokio::time::Instant::now() + p.interval);
                probing = true;
                let (tx, pid_file) = (probed_tx.clone(), view.settings.pid_file.value.clone());
                // A probe that starts or ends while a restart is in hand says nothing of
                // the app's health: its workers are being replaced.
                let busy_at_start = executor.busy_for().is_some();
                tokio::task::spawn_blocking(move || {
                    let o = crate::agent::probe::probe(&p, &pid_file);
                    let _ = tx.blocking_send((o, busy_at_start));
                });
            }
            Some((o, busy_at_start)) = probed.recv() => {
                probing = false;
                let reloading = busy_at_start || executor.busy_for().is_some();
                for step in view.probed(o, reloading).await {
                    if let Step::Ask { reason, dry_run, .. } = step {
                        let (reply, _) = tokio::sync::oneshot::channel();
                        executor.change(Change::Restart {
                            caller: Caller {
                                uid: nix::unistd::getuid().as_raw(),
                                name: "warden".into(),
                            },
                            source: RequestSource::Auto,
                            reason,
                            manual_override: false,
                            acknowledged: false,
                            dry_run,
                            reply,
                        });
                    }
                }
            }
            _ = ping.tick(), if ping_every.is_some() => {
                // A request in hand far beyond its own deadline means a hung executor: stop
                // pinging, and systemd restarts the agent.
                let busy = executor.busy_for();
                if watchdog::healthy(busy, view.settings.longest_request()) {
                    notify(&[NotifyState::Watchdog]);
                    metrics.watchdog_ping();
                } else {
                    tracing::error!(
                        "a restart has been in hand for {} s; no longer telling systemd all is well",
                        busy.unwrap_or_default().as_secs()
                    );
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let mut states = vec![NotifyState::Reloading];
                states.extend(NotifyState::monotonic_usec_now().ok());
                notify(&states);
                match reload(&src, &view.settings).await {
                    Ok((n, a)) => {
                        executor.configure(n.clone(), Trust::new(&a));
                        *admins.write().unwrap_or_else(|e| e.into_inner()) = a;
                        view.configure(n);
                        tracing::info!("configuration reloaded");
                    }
                    Err(why) => tracing::error!("configuration not reloaded: {why}"),
                }
                notify(&[NotifyState::Ready, NotifyState::Status(&status(&view))]);
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    tracing::info!("warden run: stopping");
    // No new work; a restart in hand finishes its own record, given at most this long.
    drop(watcher);
    drop(view);
    let thread = executor.stop();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while reports.recv().await.is_some() {}
    })
    .await;
    if let Some(t) = thread
        && t.is_finished()
    {
        let _ = t.join();
    }
    Ok(())
}
