//! The commands an operator types, with no agent and no bus: what they say and the codes they
//! return when nothing answers, as the exit-code table promises.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

/// `warden ARGS --env-file F`, from a plain environment whose system bus does not exist.
fn warden_without_bus(f: &Fixture, args: &[&str]) -> Output {
    Command::new(warden())
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .args(args)
        .arg("--env-file")
        .arg(&f.env_file)
        .output()
        .unwrap()
}

fn flag(f: &Fixture) -> PathBuf {
    PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"])
}

#[test]
fn status_with_no_agent_and_no_history_says_so_with_its_own_code() {
    let f = Fixture::new("cli-nothing-yet");
    let o = warden_without_bus(&f, &["status"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        text(&o).contains("nothing has run under this contract yet"),
        "{}",
        text(&o)
    );
    let o = warden_without_bus(&f, &["status", "--json"]);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["source"], "state-file");

    // With a history, the state file is the answer.
    let state = PathBuf::from(&f.env["WATCHDOG_STATE_FILE"]);
    std::fs::write(
        &state,
        r#"{"history": [{"id": "a", "decision": "executed", "requested_by": "ops",
            "requested_at": "2026-01-05T10:00:00+00:00"}]}"#,
    )
    .unwrap();
    let o = warden_without_bus(&f, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("source: state file (no agent answered)"),
        "{}",
        text(&o)
    );

    // A state file that does not parse, and no agent to ask: nothing to show (7).
    std::fs::write(&state, b"{\"history\": [").unwrap();
    let o = warden_without_bus(&f, &["status"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("does not parse"), "{}", text(&o));
}

#[test]
fn restart_with_no_agent_does_nothing_unless_queued() {
    let f = Fixture::new("cli-restart-no-agent");
    let o = warden_without_bus(&f, &["restart", "--reason", "deploy 4.2"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert!(text(&o).contains("nothing was done"), "{}", text(&o));
    assert!(text(&o).contains("--queue"), "{}", text(&o));
    assert!(!flag(&f).exists(), "a refused restart wrote the flag");

    for empty in ["", "  "] {
        let o = warden_without_bus(&f, &["restart", "--queue", "--reason", empty]);
        assert_eq!(o.status.code(), Some(2), "{empty:?}: {}", text(&o));
        assert!(text(&o).contains("the reason is empty"), "{}", text(&o));
    }
    assert!(!flag(&f).exists());

    let o = warden_without_bus(&f, &["restart", "--queue", "--reason", "deploy 4.2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("nothing has happened yet"),
        "{}",
        text(&o)
    );
    let queued: serde_json::Value =
        serde_json::from_slice(&std::fs::read(flag(&f)).unwrap()).unwrap();
    assert_eq!(queued["reason"], "deploy 4.2");
    assert_eq!(queued["source"], "manual");
    assert_eq!(queued["manual_override"], false);
    assert_eq!(
        queued["runtime_contract_version"],
        f.env["RUNTIME_CONTRACT_VERSION"]
    );
    // What the agent will read from it: the reason comes with the request.
    let parsed = warden::agent::flag::parse(&std::fs::read(flag(&f)).unwrap()).unwrap();
    assert_eq!(parsed.reason.as_deref(), Some("deploy 4.2"));
}

#[test]
fn the_kill_switch_shown_reads_as_a_state_and_is_not_flipped_without_an_agent() {
    let f = Fixture::new("cli-kill-switch-show");
    let o = warden_without_bus(&f, &["kill-switch"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "kill-switch: off"
    );
    let o = warden_without_bus(&f, &["kill-switch", "on", "--reason", "bad release"]);
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
}

#[test]
fn contract_exits_1_when_what_it_prints_has_errors() {
    let mut f = Fixture::new("cli-contract-errors");
    let o = f.warden(&["contract"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    f.set("WATCHDOG_PID_FILE", "/tmp/gunicorn.pid");
    let o = f.warden(&["contract"], &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the contract has 2 error(s)"),
        "{}",
        text(&o)
    );
}

#[test]
fn the_admin_commands_need_a_contract_and_say_how_to_configure_one() {
    let f = Fixture::new("cli-nothing-configured");
    for args in [
        &["status"][..],
        &["status", "--all"],
        &["restart", "--reason", "x"],
        &["kill-switch"],
        &["rehearse"],
    ] {
        let o = Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
            .env("WARDEN_CONFIG_DIR", f.dir.join("no-instances"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("nothing is configured"), "{}", text(&o));
    }
}

#[test]
fn fleet_allow_prints_the_agents_drop_in_for_exactly_its_members() {
    let mut f = Fixture::new("cli-fleet-allow");
    f.set(
        "WARDEN_ETCD_ENDPOINTS",
        "http://10.1.2.4:2379,https://10.1.2.3:2379,http://127.0.0.1:2379",
    );
    f.set("WARDEN_ALERTMANAGER_URL", "http://10.9.9.9:9093");
    f.set("WARDEN_ALERT_MATCHERS", r#"alertname="DatabaseDown""#);
    let o = warden_without_bus(&f, &["fleet", "allow"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("IPAddressAllow=10.1.2.3 10.1.2.4 10.9.9.9\n"),
        "{out}"
    );
    assert!(
        out.contains("warden@mes-dashboard.service.d/fleet.conf"),
        "{out}"
    );
    // Without a fleet: said, with the variable to set.
    f.unset("WARDEN_ETCD_ENDPOINTS");
    let o = warden_without_bus(&f, &["fleet", "allow"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("WARDEN_ETCD_ENDPOINTS"), "{}", text(&o));
}
