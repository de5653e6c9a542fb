//! `ExecReload=warden reload --wait` in a real systemd, on a real Gunicorn: `systemctl reload`
//! fails when the deployed code does not load (nothing signalled, the old workers serving),
//! returns once every new worker has booted when it does, and applies the policy's rules even
//! with no agent running.

mod common;

use std::path::PathBuf;

use common::*;

/// The app's code, in the fixture: a copy the test breaks and mends.
fn app_copy(f: &Fixture) -> PathBuf {
    let dir = f.dir.join("app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo().join("examples/gunicorn-app/app.py"),
        dir.join("app.py"),
    )
    .unwrap();
    chmod(&dir, 0o755);
    dir
}

fn history(f: &Fixture) -> Vec<serde_json::Value> {
    std::fs::read(&f.env["WATCHDOG_STATE_FILE"])
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|d| d["history"].as_array().cloned())
        .unwrap_or_default()
}

/// The app's answer on `/`: the status code and the worker that served it.
fn get(f: &Fixture) -> (u16, u32) {
    let (code, body) = http_get(&f.env["GUNICORN_BIND"]);
    (code, body["worker_pid"].as_u64().unwrap_or(0) as u32)
}

/// The PID a host PID has in the sandbox's namespace (the last of `NSpid:`).
fn pid_inside(host: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{host}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap()
}

#[test]
fn systemctl_reload_fails_on_code_that_does_not_load_and_returns_once_the_workers_booted() {
    let name = "live-reload";
    let rt = PathBuf::from(format!("/run/{name}"));
    let f = Fixture::with_runtime_dir(name, Some(&rt));
    let app = app_copy(&f);
    f.app_owns_runtime_dir(name);
    f.serve_app_from(
        &app,
        &format!("ExecReload={} reload --wait\n", warden().display()),
    );
    let sb = Sandbox::boot(name, &[&fixture_base()]);
    sb.install_and_start(&f, &[APP_UNIT, WATCHDOG_UNIT]);
    let master = sb.main_host_pid(APP_UNIT) as u32;
    // Booted, not just forked: a worker still importing would read the broken code below.
    let old = await_booted(master, 2);
    assert_eq!(old.len(), 2);
    let module = app.join("app.py");
    let good = std::fs::read_to_string(&module).unwrap();

    // A broken deploy: the reload fails, nothing is signalled, the old workers serve.
    std::fs::write(&module, format!("{good}\ndef broken(:\n")).unwrap();
    let o = sb.systemctl(&["reload", APP_UNIT]);
    assert!(!o.status.success(), "{}", text(&o));
    assert_eq!(sb.main_host_pid(APP_UNIT) as u32, master);
    assert_eq!(warden::platform::process::children(master), old);
    let (code, worker) = get(&f);
    assert_eq!(code, 200);
    // The app names its worker by the sandbox's PID.
    let inside: Vec<u32> = old.iter().map(|&p| pid_inside(p)).collect();
    assert!(inside.contains(&worker), "{worker} not in {inside:?}");
    let last = history(&f).last().cloned().unwrap();
    assert_eq!(last["source"], "reload", "{last:#}");
    assert_eq!(last["decision"], "failed", "{last:#}");
    assert_eq!(last["decision_reason"], "preflight_failed", "{last:#}");
    let journal = sb.journal(APP_UNIT);
    assert!(journal.contains("SyntaxError"), "{journal}");

    // Mended: the reload succeeds, and when it returns every worker is new and has booted.
    std::fs::write(&module, &good).unwrap();
    let o = sb.systemctl(&["reload", APP_UNIT]);
    let now = warden::platform::process::children(master);
    assert!(o.status.success(), "{}\n{}", text(&o), sb.journal(APP_UNIT));
    assert_eq!(now.len(), 2);
    for w in &now {
        assert!(!old.contains(w), "{old:?} -> {now:?}");
        assert_eq!(warden::platform::process::worker_booted(*w), Some(true));
    }
    let last = history(&f).last().cloned().unwrap();
    assert_eq!(
        (&last["source"], &last["decision"], &last["verified"]),
        (&"reload".into(), &"executed".into(), &true.into()),
        "{last:#}"
    );

    // No agent: `warden reload` applies the same rules itself, here the cooldown the last
    // reload started, and records the refusal in the same history.
    let o = sb.systemctl(&["stop", WATCHDOG_UNIT]);
    assert!(o.status.success(), "{}", text(&o));
    let before = history(&f).len();
    let o = sb.systemctl(&["reload", APP_UNIT]);
    assert!(!o.status.success(), "{}", text(&o));
    let journal = sb.journal(APP_UNIT);
    assert!(journal.contains("Restart in cooldown"), "{journal}");
    let h = history(&f);
    assert_eq!(h.len(), before + 1);
    assert_eq!(h.last().unwrap()["decision"], "blocked");
    assert_eq!(h.last().unwrap()["source"], "reload");
    assert_eq!(warden::platform::process::children(master), now);
}
