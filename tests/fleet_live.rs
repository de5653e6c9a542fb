//! Reload slots across hosts, for real: a three-member etcd cluster on loopback (Debian's
//! etcd, from `tests/harness/deps.sh`) and five agents (`warden run` processes), each with its
//! own Gunicorn, all in one fleet group. What a user sees: restart flags to every host at once
//! give verified reloads that never overlap beyond the group's slots (read from the masters'
//! own timestamps, stamped by `benches/reload_hooks.py`); a failed reload holds the rollout
//! until `warden fleet release`; a dead holder's slot frees itself; etcd away follows each
//! source's rule; a firing alert in a real Alertmanager defers an automatic restart.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::agent::Agent;
use common::alertmanager::{Am, DB_DOWN};
use common::etcd::Cluster;
use common::*;
use serde_json::Value;

/// One host: its contract, its Gunicorn (stamping its events), its agent.
struct Host {
    f: Fixture,
    events: PathBuf,
    agent: Option<Agent>,
    _gunicorn: Gunicorn,
}

impl Host {
    fn start(name: &str, etcd: &str, group: &str, slots: u32, extra: &[(&str, &str)]) -> Host {
        Self::start_serving(name, etcd, group, slots, extra, None)
    }

    /// `scenario`: serve the tests' health app, its `/health` answering as this file says.
    fn start_serving(
        name: &str,
        etcd: &str,
        group: &str,
        slots: u32,
        extra: &[(&str, &str)],
        scenario: Option<&str>,
    ) -> Host {
        let mut f = Fixture::new(name);
        let port = f.port;
        for (k, v) in [
            ("WARDEN_ETCD_ENDPOINTS", etcd.to_string()),
            ("WARDEN_FLEET_GROUP", group.into()),
            ("WARDEN_FLEET_SLOTS", slots.to_string()),
            // The hosts share this machine's id: each says who it is.
            ("WARDEN_FLEET_HOLDER", name.into()),
            ("WARDEN_FLEET_LEASE", "5".into()),
            ("WARDEN_FLEET_WAIT", "120".into()),
            ("WARDEN_HEALTH_URL", format!("http://127.0.0.1:{port}/")),
            ("WORKER_RESTART_COOLDOWN", "1".into()),
            ("WORKER_GUARDED_MODE_ENABLED", "false".into()),
            ("WARDEN_PREFLIGHT", "false".into()),
        ] {
            f.set(k, &v);
        }
        for (k, v) in extra {
            f.set(k, v);
        }
        let events = f.dir.join("gunicorn.events");
        std::fs::write(&events, "").unwrap();
        let hooks = repo().join("benches/reload_hooks.py");
        let mut args = vec![
            "-c".to_string(),
            hooks.display().to_string(),
            "-e".into(),
            format!("WARDEN_BENCH_EVENTS={}", events.display()),
        ];
        let app = match scenario {
            None => repo().join("examples/gunicorn-app"),
            Some(word) => {
                let app = f.dir.join("app");
                std::fs::create_dir_all(&app).unwrap();
                std::fs::copy(repo().join("tests/apps/health_app.py"), app.join("app.py")).unwrap();
                let file = f.dir.join("scenario");
                std::fs::write(&file, word).unwrap();
                args.extend(["-e".into(), format!("HEALTH_SCENARIO={}", file.display())]);
                // Probed (and checked after a reload) at its /health.
                f.set(
                    "WARDEN_HEALTH_URL",
                    &format!("http://127.0.0.1:{}/health", f.port),
                );
                app
            }
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let gunicorn = start_gunicorn_in(&f, &app, &args);
        let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
        await_booted(master, 2);
        let agent = Some(Agent::start(&f));
        Host {
            f,
            events,
            agent,
            _gunicorn: gunicorn,
        }
    }

    /// Writes a restart flag as an admin page does (temp file, rename).
    fn flag(&self, body: &str) {
        let flag = PathBuf::from(&self.f.env["WATCHDOG_RESTART_FLAG"]);
        let tmp = flag.with_extension("flag.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &flag).unwrap();
    }

    /// The next request the agent settles (executed or failed), as recorded.
    fn settled(&mut self, after: usize) -> Value {
        let agent = self.agent.as_mut().expect("the agent runs");
        loop {
            agent.await_msg("STATUS=");
            let history = history(&self.f);
            if history.len() > after {
                return history[after].clone();
            }
        }
    }

    /// The master's reloads as it saw them: from each SIGHUP to the last worker event (new
    /// worker up, old worker gone) before the next.
    fn reloads(&self) -> Vec<(i64, i64)> {
        let text = std::fs::read_to_string(&self.events).unwrap();
        let mut spans: Vec<(i64, i64)> = Vec::new();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(what), Some(ns)) = (w.next(), w.next().and_then(|n| n.parse().ok())) else {
                continue;
            };
            match what {
                "hup" => spans.push((ns, ns)),
                _ => {
                    if let Some(last) = spans.last_mut() {
                        last.1 = last.1.max(ns);
                    }
                }
            }
        }
        spans
    }

    fn warden(&self, args: &[&str]) -> Output {
        Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .arg("--env-file")
            .arg(&self.f.env_file)
            .output()
            .unwrap()
    }
}

fn history(f: &Fixture) -> Vec<Value> {
    let p = &f.env["WATCHDOG_STATE_FILE"];
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice::<Value>(&b).unwrap()["history"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn verified_with_slot(e: &Value) {
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], true, "{e:#}");
    assert!(e["fleet"]["slot"].is_u64(), "{e:#}");
    assert_eq!(e["fleet"]["released"], true, "{e:#}");
}

fn hosts(prefix: &str, c: &Cluster, slots: u32) -> Vec<Host> {
    (0..5)
        .map(|i| Host::start(&format!("{prefix}-{i}"), &c.endpoints(), prefix, slots, &[]))
        .collect()
}

/// Flags every host at once; returns each host's settled request.
fn flag_all(hosts: &mut [Host]) -> Vec<Value> {
    let before: Vec<usize> = hosts.iter().map(|h| history(&h.f).len()).collect();
    for h in hosts.iter() {
        h.flag("");
    }
    hosts
        .iter_mut()
        .zip(before)
        .map(|(h, n)| h.settled(n))
        .collect()
}

#[test]
fn five_hosts_through_one_slot_reload_one_at_a_time() {
    let c = Cluster::start();
    let mut hosts = hosts("fleet-one", &c, 1);
    let settled = flag_all(&mut hosts);
    for e in &settled {
        verified_with_slot(e);
        assert_eq!(e["fleet"]["slot"], 0, "{e:#}");
    }
    // Someone waited: five reloads through one slot cannot all have been first.
    assert!(
        settled
            .iter()
            .filter(|e| e["fleet"]["waited_ms"].as_f64().unwrap() > 0.0)
            .count()
            >= 4
    );
    let spans: Vec<(i64, i64)> = hosts.iter().flat_map(Host::reloads).collect();
    assert_eq!(spans.len(), 5, "one SIGHUP per host: {spans:?}");
    assert_eq!(most_at_once(&spans), 1, "reloads overlapped: {spans:?}");
    // Every slot is back and nobody waits.
    let o = hosts[0].warden(&["fleet", "status"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("slot 0: free") && out.contains("waiting: none"),
        "{out}"
    );
}

#[test]
fn two_slots_let_two_hosts_reload_at_once_never_three_and_a_member_down_changes_nothing() {
    let mut c = Cluster::start();
    let mut hosts = hosts("fleet-two", &c, 2);
    c.stop(0);
    let settled = flag_all(&mut hosts);
    for e in &settled {
        verified_with_slot(e);
    }
    let spans: Vec<(i64, i64)> = hosts.iter().flat_map(Host::reloads).collect();
    assert_eq!(spans.len(), 5, "{spans:?}");
    assert!(
        most_at_once(&spans) <= 2,
        "more than two at once: {spans:?}"
    );
}

/// Polls `warden fleet status` until `what` shows (there is no event outside etcd to await).
fn await_status(h: &Host, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = text(&h.warden(&["fleet", "status"]));
        if out.contains(what) {
            return out;
        }
        assert!(Instant::now() < deadline, "never showed {what:?}: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failed_reload_holds_the_rollout_until_released_and_a_dead_holders_slot_frees_itself() {
    let c = Cluster::start();
    let eps = c.endpoints();
    // Its health URL answers nothing: every reload of it fails verification.
    let dead = free_port();
    let mut bad = Host::start(
        "fleet-bad",
        &eps,
        "fleet-hold",
        1,
        &[("WARDEN_HEALTH_URL", &format!("http://127.0.0.1:{dead}/"))],
    );
    let mut next = Host::start("fleet-next", &eps, "fleet-hold", 1, &[]);
    let mut last = Host::start("fleet-last", &eps, "fleet-hold", 1, &[]);

    bad.flag("");
    let e = bad.settled(0);
    assert_eq!(
        (&e["decision"], &e["verified"]),
        (&"executed".into(), &false.into()),
        "{e:#}"
    );
    assert_eq!(
        e["fleet"]["released"], false,
        "a failed reload keeps its slot: {e:#}"
    );

    // The rollout goes on to the next host, which waits in line.
    next.flag("");
    let status = await_status(&next, "fleet-next (");
    assert!(status.contains("slot 0: fleet-bad"), "{status}");
    assert!(
        next.reloads().is_empty(),
        "nothing signalled while the slot is held"
    );

    // An operator releases it: the next host reloads.
    let o = next.warden(&[
        "fleet",
        "release",
        "--slot",
        "0",
        "--reason",
        "fleet-bad's deploy is broken",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("taken from fleet-bad"), "{}", text(&o));
    let e = next.settled(0);
    verified_with_slot(&e);

    // The bad host fails again (past its cooldown, by an acknowledged override) and holds
    // the slot again; then its agent dies with it.
    bad.flag(OVERRIDE);
    let e = bad.settled(1);
    assert_eq!(e["fleet"]["released"], false, "{e:#}");
    last.flag("");
    await_status(&last, "fleet-last (");
    let killed_at = now_ns();
    drop(bad.agent.take());
    // Its lease runs out (5 s) and the last host goes on, signalled after the death.
    let e = last.settled(0);
    verified_with_slot(&e);
    let hup = last.reloads()[0].0;
    assert!(hup > killed_at, "signalled before the holder died");
}

/// An operator's acknowledged override, as the admin page writes it.
const OVERRIDE: &str = r#"{"manual_override": true, "override_acknowledged": true,
    "override_reason": "this host must reload now"}"#;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

#[test]
fn without_etcd_a_plain_request_waits_and_fails_and_an_acknowledged_override_proceeds() {
    let mut c = Cluster::start();
    let mut h = Host::start(
        "fleet-away",
        &c.endpoints(),
        "fleet-away",
        1,
        &[("WARDEN_FLEET_WAIT", "2")],
    );
    for i in 0..3 {
        c.stop(i);
    }
    h.flag("");
    let e = h.settled(0);
    assert_eq!(e["decision"], "failed", "{e:#}");
    assert_eq!(e["decision_reason"], "fleet_unreachable", "{e:#}");
    assert!(
        e["failure"]
            .as_str()
            .unwrap()
            .contains("no etcd endpoint answered"),
        "{e:#}"
    );
    assert!(h.reloads().is_empty(), "nothing signalled");

    h.flag(OVERRIDE);
    let e = h.settled(1);
    assert_eq!(
        (&e["decision"], &e["verified"]),
        (&"executed".into(), &true.into()),
        "{e:#}"
    );
    assert!(e["fleet"]["slot"].is_null(), "{e:#}");
    assert!(
        e["fleet"]["without_slot"]
            .as_str()
            .unwrap()
            .contains("no etcd endpoint answered"),
        "{e:#}"
    );
    assert_eq!(h.reloads().len(), 1);
}

#[test]
fn a_firing_alert_defers_an_automatic_restart_until_it_resolves() {
    let am = Am::start();
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(5));
    let url = format!("http://127.0.0.1:{}", am.port);
    // A saturated pool calls for a controlled restart; the database alert says not now.
    let mut h = Host::start_serving(
        "fleet-gate",
        "",
        "fleet-gate",
        1,
        &[
            ("WARDEN_AUTO_RECOVERY", "on"),
            ("WARDEN_PROBE_INTERVAL", "0.2"),
            ("WARDEN_PROBE_TIMEOUT", "0.5"),
            ("WARDEN_RECOVERY_PROBES", "2"),
            ("WARDEN_ALERTMANAGER_URL", &url),
            ("WARDEN_ALERT_MATCHERS", r#"{alertname="DatabaseDown"}"#),
        ],
        Some("saturated"),
    );
    let e = h.settled(0);
    assert_eq!(e["source"], "auto", "{e:#}");
    assert_eq!(e["decision"], "blocked", "{e:#}");
    assert_eq!(e["decision_reason"], "alert_gate_firing", "{e:#}");
    assert_eq!(
        e["alert_gate"],
        serde_json::json!(["DatabaseDown"]),
        "{e:#}"
    );
    assert!(
        h.reloads().is_empty(),
        "nothing signalled while the alert fires"
    );

    // Resolved: the next probe that calls for a restart gets it, and the deferrals in between
    // were not recorded again.
    let resolved_at = now_ns();
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(-1));
    let e = h.settled(1);
    assert_eq!(
        (&e["source"], &e["decision"]),
        (&"auto".into(), &"executed".into()),
        "{e:#}"
    );
    assert_eq!(e["verified"], true, "{e:#}");
    let reloads = h.reloads();
    assert_eq!(reloads.len(), 1);
    assert!(
        reloads[0].0 > resolved_at,
        "signalled before the alert resolved"
    );
}
