//! Automatic recovery in a real systemd, on a real Gunicorn whose `/health` the test switches
//! (`tests/apps/health_app.py`): a saturated pool gives exactly one automatic restart and then
//! the policy holds further ones and the breaker opens; a database outage gives its
//! recommendation and no restart; a dry run signals nothing and records the decision.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use warden::recovery::recommend::{Inputs, recommend};

struct Live {
    sb: Sandbox,
    f: Fixture,
    scenario: PathBuf,
}

impl Live {
    fn boot(name: &str, mode: &str) -> Live {
        let rt = PathBuf::from(format!("/run/{name}"));
        let mut f = Fixture::with_runtime_dir(name, Some(&rt));
        let port = f.port;
        for (k, v) in [
            (
                "WARDEN_HEALTH_URL",
                format!("http://127.0.0.1:{port}/health"),
            ),
            ("WARDEN_PROBE_INTERVAL", "0.2".into()),
            ("WARDEN_PROBE_TIMEOUT", "0.5".into()),
            ("WARDEN_AUTO_RECOVERY", mode.into()),
            ("WARDEN_RECOVERY_PROBES", "3".into()),
            ("WARDEN_RECOVERY_SETTLE", "2".into()),
            ("WORKER_RESTART_COOLDOWN", "600".into()),
        ] {
            f.set(k, &v);
        }
        f.app_owns_runtime_dir(name);
        let scenario = f.serve_health_app();
        let sb = Sandbox::boot(name, &[&fixture_base()]);
        sb.install_and_start(&f, &[APP_UNIT, WATCHDOG_UNIT]);
        await_booted(sb.main_host_pid(APP_UNIT) as u32, 2);
        Live { sb, f, scenario }
    }

    fn set_scenario(&self, s: &str) {
        std::fs::write(&self.scenario, s).unwrap();
    }

    fn warden(&self, args: &[&str]) -> Output {
        std::process::Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.sb.bus)
            .args(args)
            .args(["--env-file", self.f.env_file.to_str().unwrap()])
            .output()
            .unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let o = self.warden(&["status", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        std::fs::read(&self.f.env["WATCHDOG_STATE_FILE"])
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|d| d["history"].as_array().cloned())
            .unwrap_or_default()
    }

    fn auto_entries(&self) -> Vec<serde_json::Value> {
        self.history()
            .into_iter()
            .filter(|e| e["source"] == "auto")
            .collect()
    }

    /// Waits for the status document to satisfy `cond` (the agent probes every 0.2 s).
    fn until(&self, what: &str, cond: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = self.status();
            if cond(&d) {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {d:#}\n{}",
                self.sb.journal(WATCHDOG_UNIT)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for `n` more probes than the document `d` had seen.
    fn probes_after(&self, d: &serde_json::Value, n: usize) -> serde_json::Value {
        let mut seen = probe_at(d);
        for _ in 0..n {
            let d = self.until("the next probe", |x| probe_at(x) > seen);
            seen = probe_at(&d);
        }
        self.status()
    }
}

fn probe_at(d: &serde_json::Value) -> i64 {
    d["recovery"]["probe"]["last"]["at_ms"]
        .as_i64()
        .unwrap_or(0)
}

fn breaker(d: &serde_json::Value) -> &str {
    d["recovery"]["breaker"]["state"].as_str().unwrap_or("?")
}

/// The original's recommendation for the probe and policy the document shows.
fn original_recommendation(d: &serde_json::Value) -> serde_json::Value {
    let app = &d["recovery"]["probe"]["last"]["app"];
    let r = recommend(&Inputs {
        degraded_reason: app["degraded_reason"].as_str(),
        pool_saturation: app["pool_saturation"].as_f64(),
        circuit_state: app["circuit_state"].as_str(),
        restart_churn_exceeded: d["resilience"]["restart_churn"]["exceeded"] == true,
        cooldown_active: d["cooldown"]["active"] == true,
    });
    serde_json::to_value(r).unwrap()
}

#[test]
fn a_saturated_pool_gives_one_restart_then_the_policy_holds_and_the_breaker_opens() {
    let l = Live::boot("recovery-on", "on");
    let master = l.sb.main_host_pid(APP_UNIT) as u32;
    let old = await_booted(master, 2);
    let d = l.until("a healthy probe", |d| probe_at(d) > 0);
    assert_eq!(d["resilience"]["recovery_recommendation"]["action"], "none");
    assert_eq!(breaker(&d), "closed");

    let changes = subscribe(&l.sb.bus);
    l.set_scenario("saturated");
    // One automatic restart, executed and verified; then, the pool still saturated after it,
    // another request that the cooldown refuses, and the breaker open.
    await_change(&changes, "RecoveryBreaker", "\"half_open\"");
    await_change(&changes, "RecoveryBreaker", "\"open\"");
    let d = l.status();
    assert_eq!(breaker(&d), "open");
    let auto = l.auto_entries();
    let executed: Vec<_> = auto
        .iter()
        .filter(|e| e["decision"] == "executed")
        .collect();
    assert_eq!(executed.len(), 1, "{auto:#?}");
    assert_eq!(executed[0]["verified"], true, "{auto:#?}");
    assert_eq!(executed[0]["requested_by"], "warden");
    let blocked: Vec<_> = auto.iter().filter(|e| e["decision"] == "blocked").collect();
    assert_eq!(blocked.len(), 1, "{auto:#?}");
    assert_eq!(blocked[0]["decision_reason"], "cooldown_active");
    let now = warden::platform::process::children(master);
    assert!(now.iter().all(|p| !old.contains(p)), "{old:?} -> {now:?}");
    assert_eq!(
        d["recovery"]["breaker"]["last_transition"]["why"],
        "auto_restart_blocked"
    );
    // The live recommendation is the original's for the same inputs: in cooldown, wait.
    assert_eq!(
        d["resilience"]["recovery_recommendation"],
        original_recommendation(&d)
    );
    assert_eq!(
        d["resilience"]["recovery_recommendation"]["action"],
        "wait_for_restart_cooldown"
    );
    // Open: however long the pool stays saturated, nothing more is asked.
    let before = l.history().len();
    l.probes_after(&d, 10);
    assert_eq!(l.history().len(), before);
    assert_eq!(warden::platform::process::children(master), now);
    let journal =
        l.sb.journal_query(&["MESSAGE_ID=eafd6b105a994b249639a07a1c81455d"]);
    assert!(journal.contains("closed → half_open"), "{journal}");
    assert!(journal.contains("half_open → open"), "{journal}");

    // A sustained recovery closes it.
    l.set_scenario("healthy");
    await_change(&changes, "RecoveryBreaker", "\"closed\"");
    let d = l.status();
    assert_eq!(
        d["recovery"]["breaker"]["last_transition"]["why"],
        "sustained_recovery"
    );
}

#[test]
fn what_a_restart_cannot_fix_and_a_dry_run_signal_nothing() {
    let l = Live::boot("recovery-dry", "dry-run");
    let master = l.sb.main_host_pid(APP_UNIT) as u32;
    let old = await_booted(master, 2);

    // The database is down: the original's advice, and no request at all.
    l.set_scenario("db_down");
    let d = l.until("the database outage seen", |d| {
        d["recovery"]["probe"]["last"]["app"]["degraded_reason"] == "database_unreachable"
    });
    let d = l.probes_after(&d, 8);
    assert_eq!(
        d["resilience"]["recovery_recommendation"]["action"],
        "check_database_connectivity"
    );
    assert_eq!(
        d["resilience"]["recovery_recommendation"],
        original_recommendation(&d)
    );
    assert!(l.auto_entries().is_empty(), "{:#?}", l.auto_entries());
    assert_eq!(breaker(&d), "closed");

    // A hang past the probe's timeout is a failing probe: the dry run asks the policy, which
    // would allow it, records that, and signals nothing.
    l.set_scenario("hang");
    l.until("a dry-run decision", |_| !l.auto_entries().is_empty());
    let auto = l.auto_entries();
    assert_eq!(auto[0]["decision"], "blocked", "{auto:#?}");
    assert_eq!(auto[0]["decision_reason"], "auto_recovery_dry_run");
    assert_eq!(auto[0]["policy_reason"], "policy_allows_auto_restart");
    assert_eq!(warden::platform::process::children(master), old);
    let d = l.status();
    assert_eq!(d["recovery"]["mode"], "dry-run");
    assert!(
        d["recovery"]["probe"]["consecutive_failures"]
            .as_u64()
            .unwrap()
            >= 3,
        "{d:#}"
    );
}

#[test]
fn a_flapping_app_gets_one_restart_not_a_loop_and_an_operator_closes_the_breaker() {
    let l = Live::boot("recovery-flap", "on");
    let master = l.sb.main_host_pid(APP_UNIT) as u32;
    await_booted(master, 2);
    // Failing every other probe: no streak of three, and still a case for a restart.
    let changes = subscribe(&l.sb.bus);
    l.set_scenario("flap");
    await_change(&changes, "RecoveryBreaker", "\"half_open\"");
    await_change(&changes, "RecoveryBreaker", "\"open\"");
    let d = l.status();
    let auto = l.auto_entries();
    let decisions: Vec<_> = auto
        .iter()
        .map(|e| (e["decision"].as_str(), e["decision_reason"].as_str()))
        .collect();
    assert_eq!(
        decisions,
        [
            (Some("executed"), Some("signal_sighup")),
            (Some("blocked"), Some("cooldown_active"))
        ],
        "{auto:#?}"
    );
    let workers = warden::platform::process::children(master);
    let before = l.history().len();
    l.probes_after(&d, 10);
    assert_eq!(l.history().len(), before, "open: nothing more is asked");
    assert_eq!(warden::platform::process::children(master), workers);

    // An operator closes it: acknowledged, with a reason; both are refused without.
    let o = l.warden(&["recovery", "reset", "--reason", "deploy rolled back"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = l.warden(&["recovery", "reset", "--acknowledge"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = l.warden(&[
        "recovery",
        "reset",
        "--acknowledge",
        "--reason",
        "deploy rolled back",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("open → closed"), "{}", text(&o));
    let journal =
        l.sb.journal_query(&["MESSAGE_ID=eafd6b105a994b249639a07a1c81455d"]);
    assert!(journal.contains("deploy rolled back"), "{journal}");
    assert!(journal.contains("open → closed by root"), "{journal}");
    // Still flapping: the breaker may trip again at once; the summary shows it either way.
    let o = l.warden(&["recovery"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("automatic recovery: on"), "{}", text(&o));
    assert!(text(&o).contains("breaker: "), "{}", text(&o));
}
