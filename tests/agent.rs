//! `warden run` as a process against a real gunicorn, talking sd_notify to a socket the test
//! owns: READY after start, a verified reload for a flag, the policy's cooldown, hostile flags
//! rejected and recorded while the agent keeps serving, a clean stop on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::agent::{Agent, last_entry};
use common::*;

#[test]
fn flags_become_verified_reloads_under_the_policy() {
    let mut f = Fixture::new("agent-run");
    f.set(
        "WARDEN_HEALTH_URL",
        &format!("http://127.0.0.1:{}/health", f.port),
    );
    let _g = start_gunicorn(&f);
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    let mut a = Agent::start(&f);

    // A plain request (`touch`): executed and verified, same master.
    let e = a.request(&f, "");
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], true, "{e:#}");
    assert_eq!(e["master_pid"], master);
    assert!(e["timings"]["workers_replaced_ms"].as_f64().unwrap() > 0.0);
    assert!(e["timings"]["flag_to_signal_ms"].as_f64().unwrap() >= 0.0);
    assert!(e["timings"]["health_answered_ms"].as_f64().is_some());
    assert_eq!(
        warden::platform::process::read_pid_file(&f.pid_file()).unwrap(),
        master
    );

    // Within the cooldown: blocked, and nothing signalled.
    let workers = warden::platform::process::children(master);
    let e = a.request(&f, r#"{"user": "bob", "source": "manual"}"#);
    assert_eq!(
        (e["decision"].as_str(), e["decision_reason"].as_str()),
        (Some("blocked"), Some("cooldown_override_required"))
    );
    assert_eq!(e["requested_by"], "bob");
    assert_eq!(
        warden::platform::process::children(master),
        workers,
        "no reload happened"
    );

    // An override without a reason is refused; with ack and reason it runs and is recorded.
    let e = a.request(
        &f,
        r#"{"manual_override": true, "override_acknowledged": true}"#,
    );
    assert_eq!(e["decision_reason"], "override_reason_required");
    let e = a.request(
        &f,
        r#"{"user": "alice", "manual_override": true, "override_acknowledged": true, "override_reason": "db failover"}"#,
    );
    assert_eq!(e["decision"], "executed", "{e:#}");
    // As the original records an executed restart; the policy's reason beside it.
    assert_eq!(e["decision_reason"], "signal_sighup");
    assert_eq!(e["policy_reason"], "operator_override_acknowledged");
    assert_eq!(e["policy_state"]["guarded_mode"], false, "{e:#}");
    assert_eq!(e["policy_state"]["cooldown_seconds"], 60, "{e:#}");
    assert_eq!(e["override_reason"], "db failover");

    // Hostile flags: rejected with a named reason, recorded, and the agent keeps serving.
    let flag = std::path::PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"]);
    std::os::unix::fs::symlink("/etc/shadow", &flag).unwrap();
    a.await_msg("STATUS=");
    assert_eq!(last_entry(&f)["decision_reason"], "flag_symlink");
    nix::unistd::mkfifo(&flag, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    a.await_msg("STATUS=");
    assert_eq!(last_entry(&f)["decision_reason"], "flag_not_regular");
    let e = a.request(&f, &"x".repeat(70_000));
    assert_eq!(e["decision_reason"], "flag_too_large");
    assert!(std::fs::metadata("/etc/shadow").is_ok());

    // SIGTERM: STOPPING=1 and a clean exit, promptly.
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    a.await_msg("STOPPING=1");
    let st = a.child.wait().unwrap();
    assert!(st.success(), "{st:?}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A flood of requests: coalesced, each decided, and no more restarts than the policy allows,
/// even once the blocked requests outnumber the history's length limit.
#[test]
fn a_flood_of_flags_restarts_no_more_than_the_policy_allows() {
    let mut f = Fixture::new("agent-flood");
    f.set("WATCHDOG_RESTART_HISTORY_MAX", "5");
    let _g = start_gunicorn(&f);
    let mut a = Agent::start(&f);
    let flag = std::path::PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"]);
    let tmp = flag.with_extension("flag.tmp");
    for i in 0..2000 {
        std::fs::write(&tmp, format!(r#"{{"user": "flood-{i}"}}"#)).unwrap();
        std::fs::rename(&tmp, &flag).unwrap();
    }
    // The last request written is the last decided: coalescing keeps the newest flag.
    std::fs::write(&tmp, r#"{"user": "last"}"#).unwrap();
    std::fs::rename(&tmp, &flag).unwrap();
    while last_entry(&f)["requested_by"] != "last" {
        a.await_msg("STATUS=");
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&f.env["WATCHDOG_STATE_FILE"]).unwrap()).unwrap();
    let history = doc["history"].as_array().unwrap();
    let executed: Vec<_> = history
        .iter()
        .filter(|e| e["decision"] == "executed")
        .collect();
    assert_eq!(executed.len(), 1, "{doc:#}");
    assert!(
        executed[0]["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("flood-")
    );
    assert!(history.len() <= 5 + 3, "{}", history.len());
    let last = history.last().unwrap();
    assert_eq!(
        last["decision_reason"], "cooldown_override_required",
        "{last:#}"
    );
}

#[test]
fn a_pid_file_naming_another_program_signals_nothing() {
    let f = Fixture::new("agent-wrong-pid");
    let _g = start_gunicorn(&f);
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(f.pid_file(), format!("{}\n", sleeper.id())).unwrap();
    let mut a = Agent::start(&f);
    let e = a.request(&f, "");
    assert_eq!(e["decision"], "failed", "{e:#}");
    assert!(
        e["failure"]
            .as_str()
            .unwrap()
            .starts_with("pid_not_gunicorn_master"),
        "{e:#}"
    );
    // The sleeper is alive: nothing was sent to it.
    assert!(sleeper.try_wait().unwrap().is_none());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn a_second_agent_on_the_same_state_file_is_refused() {
    let f = Fixture::new("agent-lock");
    let _a = Agent::start(&f);
    let out = Command::new(warden())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["run", "--env-file"])
        .arg(&f.env_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("another warden run holds"),
        "{}",
        text(&out)
    );
}

/// SIGKILL at random moments across restart cycles (`WARDEN_CRASH_CYCLES`, default 30; the seed
/// is printed, `WARDEN_CRASH_SEED` replays it): the state file always loads, nothing is set
/// aside as corrupt, no entry is recorded twice, and a restart cut short is marked `unknown`.
#[test]
fn sigkill_at_random_moments_never_leaves_an_unreadable_state_file() {
    let mut f = Fixture::new("agent-crash");
    f.set("WORKER_GUARDED_MODE_ENABLED", "false");
    f.set("WORKER_RESTART_COOLDOWN", "1");
    let _g = start_gunicorn(&f);
    let cycles: usize = std::env::var("WARDEN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = seed_from_env("WARDEN_CRASH_SEED");
    eprintln!("crash test: {cycles} cycles, WARDEN_CRASH_SEED={seed}");
    let mut x = seed | 1;
    let mut next = move || {
        // xorshift64: reproducible from the printed seed.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let state = std::path::PathBuf::from(&f.env["WATCHDOG_STATE_FILE"]);
    let flag = std::path::PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"]);
    for cycle in 0..cycles {
        let a = Agent::start(&f);
        std::fs::write(&flag, "").unwrap();
        // The fault: a kill at a random point of the request's handling.
        std::thread::sleep(Duration::from_micros(next() % 250_000));
        drop(a); // SIGKILL
        if state.exists() {
            let bytes = std::fs::read(&state).unwrap();
            warden::ledger::state::parse(&bytes)
                .unwrap_or_else(|e| panic!("cycle {cycle}: unreadable state file: {e}"));
        }
    }
    // A clean start settles a restart cut short between signal and record (before READY=1),
    // then a clean stop: no agent outlives the test.
    let _ = std::fs::remove_file(&flag);
    let mut a = Agent::start(&f);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    assert!(a.child.wait().unwrap().success(), "a clean stop on SIGTERM");
    // Reaped: the guard's SIGKILL goes to a stand-in, never to a PID that may be reused.
    a.child = Command::new("true").spawn().unwrap();
    let doc = warden::ledger::state::parse(&std::fs::read(&state).unwrap()).unwrap();
    let mut ids: Vec<_> = doc.history.iter().filter_map(|e| e.id.clone()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "an entry was recorded twice");
    assert!(
        doc.history
            .iter()
            .all(|e| e.decision.as_ref().map(ToString::to_string).as_deref() != Some("intended")),
        "an intended entry survived a restart"
    );
    let aside = std::fs::read_dir(&f.state_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(aside, 0, "a state file was set aside as corrupt");
    eprintln!(
        "crash test: {} entries, {} executed, {} unknown",
        doc.history.len(),
        doc.history
            .iter()
            .filter(|e| e.decision.as_ref().map(ToString::to_string).as_deref() == Some("executed"))
            .count(),
        doc.history
            .iter()
            .filter(|e| e.decision.as_ref().map(ToString::to_string).as_deref() == Some("unknown"))
            .count()
    );
}
