//! The admin control surface against the agent and the app as units of a real systemd (the
//! project's sandbox), over the sandbox's own system bus: D-Bus reads and their authorization,
//! the status document, the kill-switch as the app sees it, PropertiesChanged, metrics, and
//! every exit code of `warden status|restart|kill-switch` from a real scenario. Needs root.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

struct Live {
    sb: Sandbox,
    f: Fixture,
    rt: PathBuf,
}

impl Live {
    fn new(name: &str) -> Live {
        let metrics = format!("/run/{name}/metrics.sock");
        let (sb, f, rt) = boot_live(name, 5, &[("WARDEN_METRICS_SOCKET", &metrics)], "");
        Live { sb, f, rt }
    }

    /// `warden ARGS` on the host, as `user` (root when `None`), against the sandbox's bus.
    fn warden_as(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut c = match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.args(["-u", u, "--"]).arg(warden());
                c
            }
            None => Command::new(warden()),
        };
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.sb.bus)
            .args(args);
        // The contract's env file is for root and the service user; another user names the
        // app, and asks its agent alone.
        if user.is_none() {
            c.args(["--env-file", self.f.env_file.to_str().unwrap()]);
        } else {
            c.args(["--app", "mes-dashboard"]);
        }
        c.output().unwrap()
    }

    fn warden(&self, args: &[&str]) -> Output {
        self.warden_as(None, args)
    }

    fn host(&self, inside: &str) -> PathBuf {
        self.sb.run_path(&self.rt.join(inside))
    }

    /// What the example app answers (a worker reports the kill-switch it read at start).
    fn app(&self) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.f.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        let body = r.split("\r\n\r\n").nth(1).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {r}"))
    }

    fn metrics(&self) -> String {
        let mut s = std::os::unix::net::UnixStream::connect(self.host("metrics.sock")).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// The value of an unlabelled sample in a Prometheus exposition.
/// The value of the agent's series `name` (labelled with its app).
fn sample(text: &str, name: &str) -> Option<f64> {
    let series = format!("{name}{{app=\"mes-dashboard\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
}

#[test]
fn the_control_surface_end_to_end() {
    let l = Live::new("live-control");
    let changes = subscribe(&l.sb.bus);

    // Status over D-Bus: the MES document's keys and warden's own, from the agent.
    let o = l.warden(&["status", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let doc = json(&o);
    let got = warden::control::status::key_paths(&doc);
    let want: BTreeSet<String> = warden::control::status::KEY_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want, "{doc:#}");
    assert_eq!(doc["source"], "agent");
    assert_eq!(doc["gunicorn"]["workers"].as_array().unwrap().len(), 2);
    let published: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.host("status.json")).unwrap()).unwrap();
    assert_eq!(published["source"], "agent");
    let o = l.warden(&["status"]);
    assert!(text(&o).contains("policy: allowed"), "{}", text(&o));
    assert!(text(&o).contains("source: agent"), "{}", text(&o));
    // The contract of the running app, inside (its paths are the sandbox's): its master
    // holding the port is no fault.
    let (w, env) = (warden(), l.f.env_file.display().to_string());
    let o = l.sb.run(&[
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        w.to_str().unwrap(),
        "contract",
        "--env-file",
        &env,
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // An unprivileged user reads, and is refused (and audited) when changing anything.
    let o = l.warden_as(Some("nobody"), &["status", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = l.warden_as(Some("nobody"), &["restart", "--reason", "curious"]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    let o = l.warden_as(Some("nobody"), &["kill-switch", "on", "--reason", "x"]);
    assert_eq!(code(&o), 6, "{}", text(&o));
    let audit = l.sb.journal_query(&[
        "-u",
        WATCHDOG_UNIT,
        &format!("MESSAGE_ID={}", warden::systemd::journal::ACCESS_DENIED),
    ]);
    assert!(audit.contains("USER=nobody"), "{audit}");

    // Exit 0: executed and verified; the subscriber sees the policy enter its cooldown.
    let o = l.warden(&["restart", "--reason", "deploy 4.2"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(text(&o).contains("verified"), "{}", text(&o));
    await_change(&changes, "PolicyState", "cooldown");
    // Exit 3: cooldown, with the seconds left.
    let o = l.warden(&["restart", "--reason", "again"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(text(&o).contains("Please wait"), "{}", text(&o));
    // Exit 2: usage (no reason; override without acknowledgement).
    assert_eq!(code(&l.warden(&["restart"])), 2);
    assert_eq!(
        code(&l.warden(&["restart", "--reason", "x", "--override"])),
        2
    );
    // Two acknowledged overrides: three restarts in the window, guarded mode blocks.
    for r in ["hotfix a", "hotfix b"] {
        let o = l.warden(&["restart", "--reason", r, "--override", "--acknowledge"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
    }
    await_change(&changes, "PolicyState", "blocked");
    let o = l.warden(&["restart", "--reason", "one more"]);
    assert_eq!(code(&o), 4, "{}", text(&o));
    assert!(
        text(&o).contains("--override --acknowledge"),
        "{}",
        text(&o)
    );
    // Exit 5: the PID file names another program; nothing is signalled, the failure reported.
    let pid_file = l.host("gunicorn.pid");
    let real = std::fs::read(&pid_file).unwrap();
    let other = l.sb.prop("dbus.service", "MainPID");
    std::fs::write(&pid_file, format!("{other}\n")).unwrap();
    let o = l.warden(&["restart", "--reason", "x", "--override", "--acknowledge"]);
    std::fs::write(&pid_file, &real).unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("pid_not_gunicorn_master"), "{}", text(&o));

    // Kill-switch on: published, one reload the policy does not block, workers see it.
    assert_eq!(l.app()["kill_switch_engaged"], false);
    assert_eq!(
        code(&l.warden(&["kill-switch", "on"])),
        2,
        "a reason is required"
    );
    let o = l.warden(&["kill-switch", "on", "--reason", "bad release 4.2"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let ks: serde_json::Value =
        serde_json::from_slice(&std::fs::read(l.host("kill_switch.json")).unwrap()).unwrap();
    assert_eq!(ks["engaged"], true);
    assert_eq!(ks["reason"], "bad release 4.2");
    assert_eq!(ks["changed_by"], "root");
    assert_eq!(l.app()["kill_switch_engaged"], true);
    await_change(&changes, "KillSwitchEngaged", "true");
    let doc = json(&l.warden(&["status", "--json"]));
    assert_eq!(doc["kill_switch"]["engaged"], true);
    let last = doc["restart_history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["source"], "kill_switch");
    assert_eq!(last["decision"], "executed");
    assert!(
        last["timings"]["rollback_ms"].as_f64().unwrap() > 0.0,
        "{last:#}"
    );
    assert_eq!(
        sample(&l.metrics(), "warden_kill_switch_engaged"),
        Some(1.0)
    );
    // Showing the switch reads as a state, not as an action.
    let o = l.warden(&["kill-switch"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).starts_with("kill-switch: on (engaged by root at "),
        "{}",
        text(&o)
    );
    // Off: the same in reverse.
    let o = l.warden(&["kill-switch", "off", "--reason", "fixed in 4.3"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(l.app()["kill_switch_engaged"], false);
    await_change(&changes, "KillSwitchEngaged", "false");
    assert_eq!(
        sample(&l.metrics(), "warden_kill_switch_engaged"),
        Some(0.0)
    );
    let o = l.warden(&["kill-switch"]);
    assert!(
        text(&o).starts_with("kill-switch: off (released by root at "),
        "{}",
        text(&o)
    );
    // Exit 5 for the switch too: recorded and published, but its reload signals nothing.
    std::fs::write(&pid_file, format!("{other}\n")).unwrap();
    let o = l.warden(&["kill-switch", "on", "--reason", "drill, wrong PID file"]);
    std::fs::write(&pid_file, &real).unwrap();
    assert_eq!(code(&o), 5, "{}", text(&o));
    assert!(text(&o).contains("pid_not_gunicorn_master"), "{}", text(&o));
    let o = l.warden(&["kill-switch", "off", "--reason", "drill over"]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    // No agent: status from the state file, the switch refused, a restart refused unless
    // queued, and then queued with its reason for the agent's next start.
    let o = l.sb.systemctl(&["stop", WATCHDOG_UNIT]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.warden(&["status", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(json(&o)["source"], "state-file");
    assert_eq!(json(&o)["kill_switch"]["engaged"], false);
    let o = l.warden(&["kill-switch", "on", "--reason", "x"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    // Exit 5 for status: what answers in the agent's name is not an agent of this version.
    {
        let _impostor = Impostor::serve(&l.sb.bus);
        let o = l.warden(&["status"]);
        assert_eq!(code(&o), 5, "{}", text(&o));
        assert!(text(&o).contains("not JSON"), "{}", text(&o));
    }
    // The flag is in the sandbox's /run: ask from inside.
    let w = warden();
    let env = l.f.env_file.display().to_string();
    let inside = |args: &[&str]| {
        let mut all = vec!["env", "-i", "PATH=/usr/bin:/bin", w.to_str().unwrap()];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--env-file", &env]);
        l.sb.run(&all)
    };
    let flag = l.host("mes_dashboard_restart.flag");
    let o = inside(&["restart", "--reason", "after hours"]);
    assert_eq!(code(&o), 7, "{}", text(&o));
    assert!(text(&o).contains("nothing was done"), "{}", text(&o));
    assert!(!flag.exists(), "a refused restart wrote the flag");
    let o = inside(&["restart", "--queue", "--reason", " "]);
    assert_eq!(code(&o), 2, "an empty reason: {}", text(&o));
    assert!(!flag.exists());
    let o = inside(&["restart", "--queue", "--reason", "after hours"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        text(&o).contains("nothing has happened yet"),
        "{}",
        text(&o)
    );
    let queued: serde_json::Value = serde_json::from_slice(&std::fs::read(&flag).unwrap()).unwrap();
    assert_eq!(queued["user"], "root");
    assert_eq!(queued["reason"], "after hours");
    assert_eq!(queued["source"], "manual");
    // The agent takes it when it starts, under the policy, with its reason.
    let o = l.sb.systemctl(&["start", WATCHDOG_UNIT]);
    assert!(o.status.success(), "{}", text(&o));
    let taken = await_entry_where(&l, |e| e["reason"] == "after hours");
    assert_eq!(taken["requested_by"], "root", "{taken:#}");
    assert!(!flag.exists(), "the agent took the flag");
}

/// Root (whom the policy lets own an agent's name: an agent run without User=) answering in
/// the stopped agent's name, with something that is not a status document, until dropped.
struct Impostor {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct NotAStatus;

#[zbus::interface(name = "io.warden.Agent1")]
impl NotAStatus {
    fn status(&self) -> String {
        "<html>503 Service Unavailable</html>".into()
    }
}

impl Impostor {
    fn serve(bus: &str) -> Impostor {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let bus = bus.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let conn = rt.block_on(async {
                zbus::connection::Builder::address(bus.as_str())
                    .name(agent_bus_name())
                    .serve_at(warden::control::dbus::OBJECT_PATH, NotAStatus)
                    .build()
                    .await
                    .unwrap()
            });
            ready_tx.send(()).unwrap();
            // The connection serves on the runtime's threads while this one waits.
            let _ =
                rt.block_on(async { tokio::task::spawn_blocking(move || stopped.recv()).await });
            drop(conn);
        });
        ready.recv().expect("the impostor owns the name");
        Impostor {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The newest history entry `pred` holds for, once the agent has recorded it (its status
/// changes are awaited, not slept through).
fn await_entry_where(l: &Live, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let changes = subscribe(&l.sb.bus);
    let mut doc = serde_json::Value::Null;
    for _ in 0..60 {
        doc = json(&l.warden(&["status", "--json"]));
        if let Some(e) = doc["restart_history"]
            .as_array()
            .and_then(|h| h.iter().rev().find(|e| pred(e)))
        {
            return e.clone();
        }
        let _ = changes.recv_timeout(std::time::Duration::from_secs(1));
    }
    panic!("no such entry in the agent's history: {doc:#}");
}

/// `warden rehearse` inside the sandbox (the PID file and the processes are in its namespaces).
fn rehearse(l: &Live, extra: &[&str]) -> (i32, serde_json::Value) {
    let w = warden();
    let env = l.f.env_file.display().to_string();
    let url = format!("http://127.0.0.1:{}/health", l.f.port);
    let mut args = vec![
        "env",
        "-i",
        "PATH=/usr/bin:/bin",
        w.to_str().unwrap(),
        "rehearse",
        "--json",
        "--env-file",
        &env,
        "--health-url",
        &url,
    ];
    args.extend_from_slice(extra);
    let o = l.sb.run(&args);
    (code(&o), json(&o))
}

fn steps(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn the_rehearsal_verifies_a_reload_and_times_a_rollback() {
    let l = Live::new("live-rehearse");
    let before = l.app();

    // Every step passes, the rollback within its target; the app is served by new workers of
    // the same master, with the kill-switch released at the end.
    let (c, doc) = rehearse(&l, &["--rollback-drill", "--target-seconds", "60"]);
    assert_eq!(c, 0, "{doc:#}");
    let want: Vec<(String, String)> = [
        "contract", "app", "reload", "master", "workers", "bind", "health", "rollback", "health",
        "release",
    ]
    .iter()
    .map(|n| (n.to_string(), "pass".to_string()))
    .collect();
    assert_eq!(steps(&doc), want, "{doc:#}");
    assert_eq!(doc["passed"], true);
    assert_eq!(doc["rollback"]["met"], true, "{doc:#}");
    assert!(doc["rollback"]["seconds"].as_f64().unwrap() > 0.0);
    let after = l.app();
    assert_eq!(after["master_pid"], before["master_pid"]);
    assert_ne!(after["worker_pid"], before["worker_pid"]);
    assert_eq!(after["kill_switch_engaged"], false);
    // Three reloads, of which the two kill-switch flips do not count toward the policy.
    assert!(
        doc["policy_after"]
            .as_str()
            .unwrap()
            .contains("1 restart(s) in the window"),
        "{doc:#}"
    );

    // In the cooldown, without an override: the reload step fails with the way out, and
    // nothing after it runs.
    let (c, doc) = rehearse(&l, &[]);
    assert_eq!(c, 1, "{doc:#}");
    let s = steps(&doc);
    assert_eq!(s[2], ("reload".into(), "fail".into()), "{doc:#}");
    assert!(s[3..].iter().all(|(_, v)| v == "skip"), "{doc:#}");
    let reload = &doc["steps"][2];
    assert!(
        reload["detail"].as_str().unwrap().contains("cooldown"),
        "{doc:#}"
    );
    assert!(
        reload["hint"].as_str().unwrap().contains("--override"),
        "{doc:#}"
    );

    // An operator's rollback in force: the drill refuses to run and leaves it engaged.
    let o = l.warden(&["kill-switch", "on", "--reason", "real incident"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let (c, doc) = rehearse(
        &l,
        &[
            "--override",
            "--acknowledge",
            "--reason",
            "drill during an incident",
            "--rollback-drill",
        ],
    );
    assert_eq!(c, 1, "{doc:#}");
    let s = steps(&doc);
    assert_eq!(s[2].1, "pass", "the override's reload: {doc:#}");
    let rollback = s.iter().position(|(n, _)| n == "rollback").unwrap();
    assert_eq!(s[rollback].1, "fail", "{doc:#}");
    assert_eq!(s[rollback + 1], ("release".into(), "skip".into()));
    assert_eq!(l.app()["kill_switch_engaged"], true);
    let o = l.warden(&["kill-switch"]);
    assert!(text(&o).contains("real incident"), "{}", text(&o));
}
