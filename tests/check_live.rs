//! `warden check` as `ExecStartPre=` of real units in a real systemd (the project's sandbox):
//! a broken contract stops the start with the finding in the unit's journal, a good one starts,
//! and a unit file edited without a reload is reported as drift. Needs root.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::*;

/// One sandbox at a time: each boots its own systemd, and the machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

struct Live {
    sb: Sandbox,
    f: Fixture,
}

/// A fixture whose runtime directory is the app unit's `RuntimeDirectory=` inside the sandbox,
/// with the contract's units installed there.
fn live(name: &str) -> Live {
    let rt = PathBuf::from(format!("/run/{name}"));
    let f = Fixture::with_runtime_dir(name, Some(&rt));
    let sb = Sandbox::boot(name, &[&fixture_base()]);
    f.app_owns_runtime_dir(name);
    for u in [APP_UNIT, WATCHDOG_UNIT, WORKER_UNIT] {
        let text = std::fs::read_to_string(f.units_dir.join(u)).unwrap();
        sb.install_unit(u, &text);
    }
    sb.daemon_reload();
    Live { sb, f }
}

impl Live {
    /// `warden check` run inside the sandbox (its /run, its PID namespace, its bus).
    fn check_inside(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let w = warden();
        let env = self.f.env_file.display().to_string();
        let mut a = vec![
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            w.to_str().unwrap(),
            "check",
            "--json",
            "--env-file",
            &env,
        ];
        a.extend_from_slice(args);
        let out = self.sb.run(&a);
        let doc = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)));
        (out.status.code().unwrap_or(-1), doc)
    }
}

fn codes(doc: &serde_json::Value) -> Vec<String> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn exec_start_pre_refuses_a_broken_contract_with_the_finding_in_the_journal() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-broken");
    // The worker unit drifts to the system Python.
    let worker = std::fs::read_to_string(l.f.units_dir.join(WORKER_UNIT)).unwrap();
    l.sb.install_unit(
        WORKER_UNIT,
        &worker.replace(
            &format!("{}/bin/python", l.f.prefix.display()),
            "/usr/bin/python3",
        ),
    );
    l.sb.daemon_reload();

    let out = l.sb.systemctl(&["start", APP_UNIT]);
    assert!(!out.status.success(), "start should fail: {}", text(&out));
    assert_eq!(l.sb.prop(APP_UNIT, "ActiveState"), "failed");
    assert_eq!(l.sb.prop(APP_UNIT, "Result"), "exit-code");
    // The report, under the unit (the stdout stream is always attributed to it).
    let journal = l.sb.journal(APP_UNIT);
    assert!(
        journal.contains(&format!("error[U02] {WORKER_UNIT}")),
        "{journal}"
    );
    assert!(journal.contains("  help: use "), "{journal}");
    // The structured entry, by its fields.
    let entry = l.sb.journal_query(&["WARDEN_CODE=U02"]);
    assert!(
        entry.contains(&format!("WARDEN_SUBJECT={WORKER_UNIT}")),
        "{entry}"
    );
    assert!(entry.contains("WARDEN_HELP="), "{entry}");
    assert!(entry.contains("MESSAGE_ID="), "{entry}");
    // Nothing listens: gunicorn never ran.
    assert!(std::net::TcpStream::connect(("127.0.0.1", l.f.port)).is_err());
}

#[test]
fn exec_start_pre_passes_a_good_contract_and_the_app_serves() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-good");
    let out = l.sb.systemctl(&["start", APP_UNIT, WORKER_UNIT]);
    assert!(
        out.status.success(),
        "start failed: {}\n{}",
        text(&out),
        l.sb.journal(APP_UNIT)
    );
    assert_eq!(l.sb.prop(APP_UNIT, "ActiveState"), "active");
    let journal = l.sb.journal(APP_UNIT);
    assert!(
        journal.contains("contract 2026.02-p2 valid: 0 error(s), 0 warning(s)"),
        "{journal}"
    );

    // The app answers on the contract's port.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", l.f.port)).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
        "{resp}"
    );

    // While it runs, the running-phase check (as the watchdog's ExecStartPre= does) finds the
    // port held by the master named in the PID file, reading the units over D-Bus.
    let (status, doc) = l.check_inside(&["--phase", "running"]);
    assert_eq!((status, codes(&doc)), (0, vec![]), "{doc:#}");
    assert_eq!(doc["contract"]["units_read_from"], "systemd (D-Bus)");
    let app = &doc["contract"]["units"][0];
    assert_eq!(app["name"], APP_UNIT);
    assert!(
        app["definition"]
            .as_str()
            .unwrap()
            .contains("loaded by systemd")
    );

    // Pre-start, the same contract finds the port taken.
    let (status, doc) = l.check_inside(&[]);
    assert_eq!(
        (status, codes(&doc)),
        (1, vec!["B02".to_string()]),
        "{doc:#}"
    );
}

#[test]
fn a_unit_file_edited_without_reload_is_drift() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-drift");
    let out = l.sb.systemctl(&["start", APP_UNIT]);
    assert!(out.status.success(), "{}", text(&out));
    let app = l.sb.unit_dir().join(APP_UNIT);
    let t = std::fs::read_to_string(&app).unwrap();
    std::fs::write(&app, t.replace("--workers 2", "--workers 3")).unwrap();
    assert_eq!(l.sb.prop(APP_UNIT, "NeedDaemonReload"), "yes");

    let (status, doc) = l.check_inside(&["--phase", "running"]);
    assert_eq!(status, 1);
    assert_eq!(codes(&doc), vec!["U07".to_string()], "{doc:#}");
    let f = &doc["findings"][0];
    assert_eq!(f["subject"], APP_UNIT);
    assert!(f["help"].as_str().unwrap().contains("daemon-reload"));

    // A restart runs ExecStartPre= again, which refuses until the reload.
    let out = l.sb.systemctl(&["restart", APP_UNIT]);
    assert!(!out.status.success(), "restart should be refused");
    assert_eq!(l.sb.prop(APP_UNIT, "Result"), "exit-code");
    l.sb.daemon_reload();
    let out = l.sb.systemctl(&["restart", APP_UNIT]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        l.sb.journal(APP_UNIT)
    );
}

#[test]
fn units_read_over_dbus_from_the_host() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-host");
    // From the host, over the sandbox's bus: the units are systemd's loaded definitions.
    let out = l.sb.warden(&[
        "contract",
        "--json",
        "--env-file",
        l.f.env_file.to_str().unwrap(),
    ]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["units_read_from"], "systemd (D-Bus)");
    let units = doc["units"].as_array().unwrap();
    assert_eq!(units.len(), 3);
    for u in units {
        assert_eq!(u["found"], true, "{u}");
        assert_eq!(u["user"], SERVICE_USER);
        assert_eq!(
            u["environment_files"][0],
            l.f.env_file.display().to_string()
        );
    }
    // A unit systemd does not know is reported as such.
    let mut env = std::fs::read_to_string(&l.f.env_file).unwrap();
    env = env.replace(WORKER_UNIT, "mes-dashboard-missing.service");
    let other = l.f.dir.join("etc/other.env");
    std::fs::write(&other, env).unwrap();
    let out =
        l.sb.warden(&["check", "--json", "--env-file", other.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let u01 = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "U01")
        .unwrap();
    assert_eq!(u01["subject"], "mes-dashboard-missing.service");
}

#[test]
fn the_agent_as_a_notify_unit_reloads_the_app_on_a_flag() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-agent");
    let wd =
        l.f.watchdog_unit_text()
            .replace("[Service]\n", "[Service]\nWatchdogSec=5\n");
    l.sb.install_unit(WATCHDOG_UNIT, &wd);
    l.sb.daemon_reload();
    let out = l.sb.systemctl(&["start", APP_UNIT]);
    assert!(out.status.success(), "{}", text(&out));
    let out = l.sb.systemctl(&["start", WATCHDOG_UNIT]);
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out),
        l.sb.journal(WATCHDOG_UNIT)
    );
    assert_eq!(l.sb.prop(WATCHDOG_UNIT, "ActiveState"), "active");
    assert!(
        l.sb.prop(WATCHDOG_UNIT, "StatusText")
            .starts_with("policy allowed")
    );
    let master = l.sb.prop(APP_UNIT, "MainPID");

    // The flag, written from the host into the sandbox's runtime directory.
    let state = l.f.state_dir.join("restart_state.json");
    let (_w, rx) = watch_dir(&l.f.state_dir);
    let flag =
        l.sb.run_path(std::path::Path::new(&l.f.env["WATCHDOG_RESTART_FLAG"]));
    std::fs::write(&flag, "").unwrap();
    // The intent goes to its own record; the state file is written once, with the outcome.
    await_replaced(&rx, &state);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let e = doc["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        e["decision"],
        "executed",
        "{e:#}\n{}",
        l.sb.journal(WATCHDOG_UNIT)
    );
    assert_eq!(e["verified"], true, "{e:#}");
    assert_eq!(
        e["master_pid"].to_string(),
        master,
        "the app unit's master, in the unit's PID namespace"
    );
    assert_eq!(
        l.sb.prop(APP_UNIT, "MainPID"),
        master,
        "same master after the reload"
    );
    assert_eq!(l.sb.prop(WATCHDOG_UNIT, "NRestarts"), "0");
    // The audit line is logged after the last state write, just before STATUS changes: wait
    // for the unit's STATUS (a property; polled under a deadline), then read the journal.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !l
        .sb
        .prop(WATCHDOG_UNIT, "StatusText")
        .contains("last request executed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "STATUS never showed the restart"
        );
        std::thread::yield_now();
    }
    let journal = l.sb.journal(WATCHDOG_UNIT);
    assert!(
        journal.contains("restart executed and verified"),
        "{journal}"
    );
    assert!(journal.contains("MESSAGE_ID="), "{journal}");
}

/// Starts the agent unit (WatchdogSec=2, Restart=on-failure) after the app unit.
fn start_agent(l: &Live) {
    let wd = l.f.watchdog_unit_text().replace(
        "[Service]\n",
        "[Service]\nWatchdogSec=2\nRestart=on-failure\nRestartSec=100ms\nTimeoutStopSec=2\n",
    );
    l.sb.install_unit(WATCHDOG_UNIT, &wd);
    l.sb.daemon_reload();
    for u in [APP_UNIT, WATCHDOG_UNIT] {
        let out = l.sb.systemctl(&["start", u]);
        assert!(
            out.status.success(),
            "{u}: {}\n{}",
            text(&out),
            l.sb.journal(u)
        );
    }
}

fn last_entry(l: &Live) -> serde_json::Value {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.f.state_dir.join("restart_state.json")).unwrap())
            .unwrap();
    doc["history"].as_array().unwrap().last().unwrap().clone()
}

#[test]
fn a_gunicorn_of_another_unit_is_not_signalled() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-other");
    start_agent(&l);
    // Another unit's gunicorn, from the same prefix, on its own port and PID file.
    let other_port = free_port();
    let other =
        l.f.app_unit_text()
            .replace("[Service]\n", "[Service]\nRuntimeDirectory=other-app\n")
            .replace("${WATCHDOG_PID_FILE}", "/run/other-app/gunicorn.pid")
            .replace("${GUNICORN_BIND}", &format!("127.0.0.1:{other_port}"))
            .replace(
                &format!("PIDFile={}", l.f.pid_file().display()),
                "PIDFile=/run/other-app/gunicorn.pid",
            )
            .replace(&format!("ExecStartPre={} check\n", warden().display()), "");
    l.sb.install_unit("other-app.service", &other);
    l.sb.daemon_reload();
    let out = l.sb.systemctl(&["start", "other-app.service"]);
    assert!(out.status.success(), "{}", text(&out));
    let other_master = l.sb.prop("other-app.service", "MainPID");
    // Gunicorn reports READY before it forks its workers: wait for both (no event to await).
    let ps = |l: &Live| {
        String::from_utf8_lossy(
            &l.sb
                .run(&["ps", "-o", "pid=", "--ppid", &other_master])
                .stdout,
        )
        .to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let workers_before = loop {
        let w = ps(&l);
        if w.lines().count() == 2 {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other gunicorn forked no workers"
        );
        std::thread::yield_now();
    };

    // The contract's PID file now names the other unit's master.
    let pid_file = l.sb.run_path(&l.f.pid_file());
    std::fs::write(&pid_file, format!("{other_master}\n")).unwrap();
    let (_w, rx) = watch_dir(&l.f.state_dir);
    let flag =
        l.sb.run_path(std::path::Path::new(&l.f.env["WATCHDOG_RESTART_FLAG"]));
    std::fs::write(&flag, "").unwrap();
    await_replaced(&rx, &l.f.state_dir.join("restart_state.json"));
    let e = last_entry(&l);
    assert_eq!(e["decision"], "failed", "{e:#}");
    let why = e["failure"].as_str().unwrap();
    assert!(
        why.starts_with("pid_outside_app_unit") && why.contains("other-app.service"),
        "{why}"
    );
    let workers_after = ps(&l);
    assert_eq!(
        workers_before, workers_after,
        "the other gunicorn was not reloaded"
    );
}

#[test]
fn a_frozen_agent_is_killed_and_restarted_by_systemd_with_its_history() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let l = live("live-frozen");
    start_agent(&l);
    let (_w, rx) = watch_dir(&l.f.state_dir);
    let flag =
        l.sb.run_path(std::path::Path::new(&l.f.env["WATCHDOG_RESTART_FLAG"]));
    std::fs::write(&flag, "").unwrap();
    let state = l.f.state_dir.join("restart_state.json");
    await_replaced(&rx, &state);
    let before = std::fs::read(&state).unwrap();
    let first = l.sb.prop(WATCHDOG_UNIT, "MainPID");

    let out = l.sb.systemctl(&["kill", "--signal=SIGSTOP", WATCHDOG_UNIT]);
    assert!(out.status.success());
    // Missed pings: systemd aborts the unit (result watchdog) and restarts it. Nothing to
    // subscribe to from here, so the restart counter is polled under a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while l.sb.prop(WATCHDOG_UNIT, "NRestarts") == "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "not restarted\n{}",
            l.sb.journal(WATCHDOG_UNIT)
        );
        std::thread::yield_now();
    }
    let out = l.sb.systemctl(&["start", WATCHDOG_UNIT]); // returns once it is active again
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(l.sb.prop(WATCHDOG_UNIT, "MainPID"), first);
    let journal = l.sb.journal(WATCHDOG_UNIT);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    // The history survived, and still reads.
    let after = std::fs::read(&state).unwrap();
    assert_eq!(before, after);
    assert_eq!(last_entry(&l)["decision"], "executed");
}
