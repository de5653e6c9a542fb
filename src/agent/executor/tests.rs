//! The agent's flow through its seams: flags and commands in, the policy, the intent, the
//! signal, the verification and the record, with a fake master and a real state directory. No
//! root, no processes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;

use super::*;
use crate::agent::fleet::GateAnswer;
use crate::agent::master::fake::FakeMaster;
use crate::config::{Layers, Settings};
use crate::fleet::coordinator::{Asker, Grant};
use crate::ledger::model::{Decision, Failure, FailureKind, Reason, Verdict};
use crate::platform::accounts::Admins;

struct Rig {
    dir: tempfile::TempDir,
    settings: Settings,
    app: FakeMaster,
    executor: Executor,
    reports: UnboundedReceiver<Update>,
    rt: tokio::runtime::Runtime,
}

fn settings(dir: &Path, extra: &[(&str, &str)]) -> Settings {
    let run = dir.join("run");
    let state = dir.join("state");
    let mut vars = vec![
        ("WATCHDOG_RUNTIME_DIR", run.display().to_string()),
        (
            "WATCHDOG_STATE_FILE",
            state.join("state.json").display().to_string(),
        ),
        (
            "WARDEN_KILL_SWITCH_FILE",
            run.join("kill_switch.json").display().to_string(),
        ),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let layers =
        Layers::load_from(vars.into_iter().map(|(k, v)| (k.into(), v.into())), &[]).unwrap();
    let (s, invalid) = Settings::resolve(&layers, dir);
    assert!(invalid.is_empty(), "{invalid:?}");
    s
}

/// The fleet as a test scripts it: what `acquire` grants, what the restart gave back.
#[derive(Debug, Default)]
struct FakeFleet {
    grant: Option<Grant>,
    /// `acquire` takes turns (as a real wait does) until `go` is set.
    hold: bool,
    go: bool,
    waiting: bool,
    verified: u32,
    failed: u32,
    gate: Option<Vec<String>>,
}

#[derive(Clone, Default)]
struct Fleet(Arc<(std::sync::Mutex<FakeFleet>, std::sync::Condvar)>);

impl Fleet {
    fn state(&self) -> std::sync::MutexGuard<'_, FakeFleet> {
        self.0.0.lock().unwrap()
    }
    fn await_waiting(&self) {
        let (lock, cv) = &*self.0;
        let mut f = lock.lock().unwrap();
        while !f.waiting {
            f = cv.wait(f).unwrap();
        }
    }
    fn go(&self) {
        self.state().go = true;
    }
}

impl Slots for Fleet {
    fn group(&self) -> &str {
        "shop"
    }
    fn acquire(&mut self, _: Asker, turn: &mut dyn FnMut()) -> Grant {
        {
            let mut f = self.state();
            f.waiting = true;
            self.0.1.notify_all();
        }
        while {
            let f = self.state();
            f.hold && !f.go
        } {
            turn();
            std::thread::yield_now();
        }
        self.state().grant.clone().unwrap_or(Grant::Slot {
            slot: 0,
            waited: Duration::ZERO,
            kept: false,
        })
    }
    fn verified(&mut self) {
        self.state().verified += 1;
    }
    fn failed(&mut self) {
        self.state().failed += 1;
    }
}

impl Gate for Fleet {
    fn ask(&mut self) -> GateAnswer {
        match self.state().gate.clone() {
            None => GateAnswer::Open,
            Some(alerts) => GateAnswer::Deferred {
                again: false,
                alerts,
            },
        }
    }
}

impl Rig {
    fn new(extra: &[(&str, &str)]) -> Rig {
        Self::with_fleet(extra, None)
    }

    fn with_fleet(extra: &[(&str, &str)], fleet: Option<&Fleet>) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("run")).unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let settings = settings(dir.path(), extra);
        let (ledger, _) = Ledger::open(
            &settings.state_file.value,
            settings.history_max,
            settings.policy,
        )
        .unwrap();
        let app = FakeMaster::default();
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        let executor = Executor::spawn(
            Parts {
                ledger,
                flag_dir: FlagDir::pin(&settings.restart_flag.value).unwrap(),
                trust: Trust::new(&Admins::default()),
                settings: settings.clone(),
                master: app.clone(),
                slots: fleet.map(|f| Box::new(f.clone()) as Box<dyn Slots>),
                gate: fleet.map(|f| Box::new(f.clone()) as Box<dyn Gate>),
            },
            tx,
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Rig {
            dir,
            settings,
            app,
            executor,
            reports,
            rt,
        }
    }

    fn flag(&self, body: &str) {
        std::fs::write(&self.settings.restart_flag.value, body).unwrap();
        self.executor.flag_events().changed();
    }

    /// The next report. The timeout is a guard against a hung executor, not a measurement.
    fn report(&mut self) -> Update {
        let reports = &mut self.reports;
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), reports.recv()).await })
            .expect("a report within a minute")
            .expect("the executor is running")
    }

    fn handled(&mut self) -> Entry {
        loop {
            if let Some(e) = self.report().handled {
                return e;
            }
        }
    }

    fn restart(&mut self, manual_override: bool, reason: &str) -> (Decided, Entry) {
        self.ask(RequestSource::Manual, manual_override, reason)
    }

    fn ask(
        &mut self,
        source: RequestSource,
        manual_override: bool,
        reason: &str,
    ) -> (Decided, Entry) {
        self.ask_as(source, manual_override, false, reason)
    }

    fn ask_as(
        &mut self,
        source: RequestSource,
        manual_override: bool,
        dry_run: bool,
        reason: &str,
    ) -> (Decided, Entry) {
        let (reply, answer) = oneshot::channel();
        self.executor.change(Change::Restart {
            caller: caller(),
            source,
            reason: reason.into(),
            manual_override,
            acknowledged: manual_override,
            dry_run,
            reply,
        });
        let decided = answer.blocking_recv().unwrap();
        (decided, self.handled())
    }

    fn saved(&self) -> StateDoc {
        crate::ledger::state::load(&self.settings.state_file.value)
            .unwrap()
            .doc()
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

fn caller() -> Caller {
    Caller {
        uid: 0,
        name: "root".into(),
    }
}

#[test]
fn a_flag_is_decided_signalled_verified_and_recorded() {
    let mut r = Rig::new(&[]);
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert_eq!((e.verified, e.success), (Some(true), Some(true)));
    assert_eq!(e.source(), Some(RequestSource::Manual));
    assert_eq!(
        e.policy_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::PolicyAllowsManualRestart)
    );
    let t = e.timings.as_ref().unwrap();
    assert!(t.workers_replaced_ms.is_some() && t.flag_to_signal_ms.is_some());
    assert_eq!(r.app.app().reloads, 1);
    // The file holds what was reported, and the flag is consumed.
    assert_eq!(r.saved().history, vec![e]);
    assert!(!r.settings.restart_flag.value.exists());
}

#[test]
fn the_cooldown_blocks_and_an_acknowledged_override_goes_through() {
    let mut r = Rig::new(&[]);
    r.flag("");
    assert_eq!(r.handled().decided(), Some(Decision::Executed));
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Blocked));
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::CooldownOverrideRequired)
    );
    assert_eq!(r.app.app().reloads, 1, "nothing signalled");
    // An override without a reason is the caller's error.
    let (d, e) = r.restart(true, "");
    assert_eq!(d.ruling.verdict, Verdict::Refused);
    assert_eq!(e.decided(), Some(Decision::Rejected));
    // With one, it runs, and says it overrode.
    let (d, e) = r.restart(true, "db failover");
    assert_eq!(d.ruling.verdict, Verdict::Override);
    assert_eq!(Some(d.id), e.id);
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert_eq!(e.override_acknowledged, Some(true));
    assert_eq!(e.reason.as_deref(), Some("db failover"));
    assert_eq!(r.app.app().reloads, 2);
}

#[test]
fn a_pid_that_is_not_the_master_is_never_signalled() {
    let mut r = Rig::new(&[]);
    r.app.app().found = Err(Failure::new(
        FailureKind::PidNotGunicornMaster,
        "4242 is sleep",
    ));
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Failed));
    assert_eq!(
        e.failure.as_ref().map(ToString::to_string).as_deref(),
        Some("pid_not_gunicorn_master: 4242 is sleep")
    );
    assert_eq!(r.app.app().reloads, 0);
    // A failed restart does not count toward the cooldown.
    r.app.app().found = FakeMaster::default().app().found.clone();
    r.flag("");
    assert_eq!(r.handled().decided(), Some(Decision::Executed));
}

#[test]
fn a_reload_is_an_operators_request_under_the_policy_with_its_own_source() {
    let mut r = Rig::new(&[]);
    let (d, e) = r.ask(
        RequestSource::Reload,
        false,
        "ExecReload of mes-dashboard.service",
    );
    assert_eq!(d.ruling.verdict, Verdict::Allowed);
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert_eq!(e.source(), Some(RequestSource::Reload));
    assert_eq!(
        e.reason.as_deref(),
        Some("ExecReload of mes-dashboard.service")
    );
    // Counted: the next one, within the cooldown, is refused as an operator's would be.
    let (d, e) = r.ask(RequestSource::Reload, false, "again");
    assert_eq!(d.ruling.verdict, Verdict::Blocked);
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::CooldownOverrideRequired)
    );
    assert_eq!(r.app.app().reloads, 1);
}

#[test]
fn a_dry_run_is_ruled_and_recorded_and_never_signalled_and_rules_as_the_real_one_would() {
    let mut r = Rig::new(&[]);
    let (d, e) = r.ask_as(RequestSource::Auto, false, true, "pool saturated");
    assert_eq!(d.ruling.verdict, Verdict::Allowed);
    assert_eq!(e.decided(), Some(Decision::Blocked));
    assert!(e.dry_run());
    assert_eq!(
        e.policy_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::PolicyAllowsAutoRestart)
    );
    assert_eq!(r.app.app().reloads, 0);
    // The next dry run counts the first as executed: the cooldown refuses it, as it would
    // have refused the real one.
    let (d, e) = r.ask_as(RequestSource::Auto, false, true, "pool saturated");
    assert_eq!(d.ruling.verdict, Verdict::Blocked);
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::CooldownActive)
    );
    // A dry run counts toward no real request: a real one goes through.
    let (d, e) = r.ask(RequestSource::Auto, false, "pool saturated");
    assert_eq!(d.ruling.verdict, Verdict::Allowed);
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert_eq!(r.app.app().reloads, 1);
    assert_eq!(r.saved().history.len(), 3);
}

#[test]
fn code_that_does_not_load_is_never_signalled_and_the_failure_says_why() {
    let mut r = Rig::new(&[]);
    r.app.app().preflight = Err("gunicorn --check-config exited with exit status: 1: \
         File \"app.py\", line 3 | SyntaxError: invalid syntax"
        .into());
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Failed));
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::PreflightFailed)
    );
    assert!(
        e.outcome_detail().ends_with("SyntaxError: invalid syntax"),
        "{}",
        e.outcome_detail()
    );
    assert_eq!(e.master_pid, Some(100));
    assert_eq!(r.app.app().reloads, 0, "signalled");
    // Not counted: the next request, the code fixed, goes through at once.
    r.app.app().preflight = Ok(());
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert!(e.timings.as_ref().unwrap().preflight_ms.is_some());
    assert_eq!(r.app.app().preflights, 2);
    assert_eq!(e.preload_app, Some(false));
    // With preload_app the reload goes on, and says it does not load new code.
    r.app.app().settings.preload_app = true;
    r.restart(true, "preloaded");
    let e = r.saved().history.last().cloned().unwrap();
    assert_eq!(e.preload_app, Some(true));
    assert!(
        e.outcome_detail()
            .contains("preload_app: the master keeps the code"),
        "{}",
        e.outcome_detail()
    );
    // Turned off, none runs.
    let mut r = Rig::new(&[("WARDEN_PREFLIGHT", "false")]);
    r.flag("");
    assert_eq!(r.handled().decided(), Some(Decision::Executed));
    assert_eq!(r.app.app().preflights, 0);
}

#[test]
fn a_reload_that_does_not_replace_the_workers_is_executed_but_not_verified() {
    let mut r = Rig::new(&[("WARDEN_HEALTH_URL", "http://127.0.0.1:9/health")]);
    {
        let mut app = r.app.app();
        app.replaces = false;
        app.healthy = false;
        app.holds_port = false;
    }
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert_eq!((e.verified, e.success), (Some(false), Some(false)));
    let problems = e.verification_problems.clone().unwrap();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(problems[0].starts_with("workers not replaced"));
    assert!(problems[1].contains("no longer held"));
    assert!(problems[2].starts_with("health check failed"));
    assert_eq!(e.outcome_detail(), problems.join("; "));
    // It was signalled: it counts.
    assert_eq!(r.saved().executed().len(), 1);
}

#[test]
fn the_kill_switch_is_recorded_published_and_reloaded_once_outside_the_policy() {
    let mut r = Rig::new(&[]);
    // A restart first: the policy is in cooldown, which the flip does not care about.
    r.flag("");
    r.handled();
    let flip = |r: &mut Rig, engaged: bool, reason: &str| {
        let (reply, answer) = oneshot::channel();
        r.executor.change(Change::KillSwitch {
            caller: caller(),
            engaged,
            reason: reason.into(),
            reply,
        });
        answer.blocking_recv().unwrap()
    };
    assert_eq!(
        flip(&mut r, true, ""),
        Err("engaging the kill switch needs a reason; it is kept for the audit trail".into())
    );
    let id = flip(&mut r, true, "release 4.2 leaks").unwrap().unwrap();
    let e = r.handled();
    assert_eq!(e.id.as_deref(), Some(id.as_str()));
    assert_eq!(e.source(), Some(RequestSource::KillSwitch));
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert!(e.timings.as_ref().unwrap().rollback_ms.is_some());
    assert_eq!(r.app.app().reloads, 2);
    let published: KillSwitch = serde_json::from_slice(
        &std::fs::read(r.settings.kill_switch_file.as_ref().unwrap()).unwrap(),
    )
    .unwrap();
    assert!(published.engaged);
    let saved = r.saved();
    assert_eq!(saved.kill_switch, Some(published));
    // The flip's reload does not count toward the policy.
    assert_eq!(saved.executed().len(), 1);
    // Engaged again: recorded, nothing to reload.
    assert_eq!(flip(&mut r, true, "still leaking"), Ok(None));
    assert_eq!(r.app.app().reloads, 2);
}

#[test]
fn flags_arriving_during_a_reload_coalesce_into_one_more_request() {
    let mut r = Rig::new(&[]);
    r.app.app().hold_reloads = true;
    r.flag("");
    r.app.await_reload();
    // The reload is in progress: a flood of flags and events.
    for _ in 0..1000 {
        r.flag("");
    }
    r.app.release();
    assert_eq!(r.handled().decided(), Some(Decision::Executed));
    // One more request for all of them, blocked by the cooldown.
    assert_eq!(r.handled().decided(), Some(Decision::Blocked));
    // Nothing else is queued: an event now finds no flag and reports nothing.
    r.executor.flag_events().changed();
    assert!(!r.settings.restart_flag.value.exists());
    assert_eq!(r.saved().history.len(), 2);
    assert_eq!(r.app.app().reloads, 1);
}

#[test]
fn when_the_state_cannot_be_written_no_restart_is_signalled_until_it_can() {
    let mut r = Rig::new(&[]);
    std::fs::remove_dir_all(r.state_dir()).unwrap();
    // The intent record is open already: this restart runs, and its record cannot be saved.
    r.flag("");
    let executed = loop {
        let rep = r.report();
        if let Some(e) = rep.handled {
            assert!(
                rep.unsaved.is_some(),
                "the executor says the file is behind"
            );
            break e;
        }
    };
    assert_eq!(executed.decided(), Some(Decision::Executed));
    // While the file is behind, an intent goes to the file too: it cannot be recorded, and
    // nothing is signalled, even for an override the policy allows.
    let (d, e) = r.restart(true, "disk full drill");
    assert!(d.ruling.allowed());
    assert_eq!(e.decided(), Some(Decision::Failed));
    assert_eq!(
        e.failure.as_ref().map(|f| f.kind),
        Some(FailureKind::IntentNotRecorded)
    );
    assert_eq!(r.app.app().reloads, 1, "nothing more signalled");
    // Room again: the executor's retry catches up, and says so.
    std::fs::create_dir(r.state_dir()).unwrap();
    let caught_up = loop {
        let rep = r.report();
        if rep.unsaved.is_none() {
            break rep;
        }
    };
    assert_eq!(caught_up.doc.history, vec![executed, e]);
    assert_eq!(r.saved().history, caught_up.doc.history);
}

#[test]
fn a_signalled_request_leaves_no_flag_to_take_again() {
    let mut r = Rig::new(&[]);
    r.app.app().hold_reloads = true;
    r.flag("");
    // The master is being signalled: the intent is recorded, and neither the flag nor a
    // claimed copy of it is left for an agent started after a crash to take again.
    r.app.await_reload();
    let left: Vec<_> = std::fs::read_dir(r.dir.path().join("run"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("restart.flag"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let pending = crate::ledger::intent::decode(
        &std::fs::read(crate::ledger::intent::path_for(
            &r.settings.state_file.value,
        ))
        .unwrap(),
    );
    assert_eq!(pending.and_then(|e| e.decided()), Some(Decision::Intended));
    r.app.release();
    assert_eq!(r.handled().decided(), Some(Decision::Executed));
}

#[test]
fn entries_read_as_the_originals() {
    let mut r = Rig::new(&[]);
    // A source in another case is the original's word all the same.
    r.flag(r#"{"user": "ops", "source": "Auto"}"#);
    let e = r.handled();
    assert_eq!(e.source(), Some(RequestSource::Auto));
    // Executed: the original's reason for it, the policy's beside it, and the policy's state
    // with every field the original records.
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::SignalSighup)
    );
    assert_eq!(
        e.policy_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::PolicyAllowsAutoRestart)
    );
    let p = e.policy_state.clone().unwrap();
    for k in [
        "guarded_mode",
        "retry_budget_exhausted",
        "churn_exceeded",
        "cooldown_seconds",
        "attempts_in_window",
    ] {
        assert!(p.get(k).is_some(), "{k} missing from {p}");
    }
    // A flag that breaks a rule still says who asked, when its owner is trusted.
    r.flag(r#"{"user": "alice", "ip": "10.0.0.5", "manual_override": "yes"}"#);
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Rejected));
    assert_eq!(
        (e.requested_by.as_deref(), e.requested_ip.as_deref()),
        (Some("alice"), Some("10.0.0.5"))
    );
    // Nothing to signal: the original's reason for a restart that could not be carried out.
    r.app.app().found = Err(Failure::bare(FailureKind::PidFileMissing));
    let (_, e) = r.restart(true, "again");
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::GunicornPidUnavailable)
    );
}

#[test]
fn a_reload_takes_a_fleet_slot_and_gives_it_back_once_verified() {
    let fleet = Fleet::default();
    let mut r = Rig::with_fleet(&[], Some(&fleet));
    r.flag("");
    let e = r.handled();
    assert_eq!(
        (e.decided(), e.verified),
        (Some(Decision::Executed), Some(true))
    );
    let f = e.fleet.clone().expect("the fleet's part is recorded");
    assert_eq!(
        (f.group.as_str(), f.slot, f.released),
        ("shop", Some(0), Some(true))
    );
    let f = fleet.state();
    assert_eq!((f.verified, f.failed), (1, 0));
    assert_eq!(r.saved().history, vec![e]);
}

#[test]
fn a_failed_reload_keeps_its_slot() {
    let fleet = Fleet::default();
    let mut r = Rig::with_fleet(&[], Some(&fleet));
    r.app.app().replaces = false;
    r.flag("");
    let e = r.handled();
    assert_eq!(e.verified, Some(false));
    assert_eq!(e.fleet.as_ref().and_then(|f| f.released), Some(false));
    let f = fleet.state();
    assert_eq!((f.verified, f.failed), (0, 1));
}

#[test]
fn no_slot_in_time_fails_with_its_own_reason_and_signals_nothing() {
    let fleet = Fleet::default();
    fleet.state().grant = Some(Grant::Unavailable {
        waited: Duration::from_secs(300),
        holders: vec!["m1/shop".into()],
    });
    let mut r = Rig::with_fleet(&[], Some(&fleet));
    r.flag("");
    let e = r.handled();
    assert_eq!(e.decided(), Some(Decision::Failed));
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::FleetSlotUnavailable)
    );
    let failure = e.failure.as_ref().unwrap();
    assert_eq!(failure.kind, FailureKind::FleetSlotUnavailable);
    assert!(failure.to_string().contains("m1/shop"), "{failure}");
    assert_eq!(r.app.app().reloads, 0);
    // Nothing was signalled: the policy does not count it.
    assert!(r.saved().executed().is_empty());
    // etcd away, a rule that says to go on: the reload happens and the history says how.
    fleet.state().grant = Some(Grant::WithoutSlot {
        waited: Duration::ZERO,
        detail: "no etcd endpoint answered".into(),
    });
    let (_, e) = r.restart(true, "etcd is down and the app must reload");
    assert_eq!(e.decided(), Some(Decision::Executed));
    let f = e.fleet.unwrap();
    assert_eq!(
        (f.slot, f.without_slot.as_deref()),
        (None, Some("no etcd endpoint answered"))
    );
    assert_eq!(r.app.app().reloads, 1);
}

#[test]
fn a_restart_asked_while_one_waits_for_a_slot_joins_it() {
    let fleet = Fleet::default();
    fleet.state().hold = true;
    let mut r = Rig::with_fleet(&[], Some(&fleet));
    let (reply, first) = oneshot::channel();
    r.executor.change(Change::Restart {
        caller: caller(),
        source: RequestSource::Manual,
        reason: "rollout".into(),
        manual_override: false,
        acknowledged: false,
        dry_run: false,
        reply,
    });
    let first = first.blocking_recv().unwrap();
    fleet.await_waiting();
    let (reply, second) = oneshot::channel();
    r.executor.change(Change::Restart {
        caller: caller(),
        source: RequestSource::Manual,
        reason: "again".into(),
        manual_override: false,
        acknowledged: false,
        dry_run: false,
        reply,
    });
    // Answered while the first still waits: the same request.
    assert_eq!(second.blocking_recv().unwrap(), first);
    assert_eq!(r.app.app().reloads, 0);
    fleet.go();
    let e = r.handled();
    assert_eq!(e.id.as_deref(), Some(first.id.as_str()));
    assert_eq!(r.app.app().reloads, 1);
    assert_eq!(r.saved().history.len(), 1, "one request recorded");
}

#[test]
fn an_automatic_restart_waits_while_the_gate_sees_an_alert() {
    let fleet = Fleet::default();
    fleet.state().gate = Some(vec!["DatabaseDown".into()]);
    let mut r = Rig::with_fleet(&[], Some(&fleet));
    let (_, e) = r.ask(RequestSource::Auto, false, "automatic recovery");
    assert_eq!(e.decided(), Some(Decision::Blocked));
    assert_eq!(
        e.decision_reason.as_ref().and_then(|r| r.known()),
        Some(Reason::AlertGateFiring)
    );
    assert_eq!(e.alert_gate, Some(vec!["DatabaseDown".to_string()]));
    assert_eq!(r.app.app().reloads, 0);
    // An operator's request is not gated.
    let (_, e) = r.restart(false, "by hand");
    assert_eq!(e.decided(), Some(Decision::Executed));
    assert_eq!(r.app.app().reloads, 1);
}
