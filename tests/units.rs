//! The units shipped in `systemd/`: `systemd-analyze verify` accepts them (with their paths
//! pointed at this build and the test prefix), the agent's template is hardened to an exposure
//! of at most 1.5 by `systemd-analyze security --offline=true`, and in a real systemd two apps
//! each get their agent from it, each acting only on its own app.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const SHIPPED: &[&str] = &[
    "warden@.service",
    "mes-dashboard.service",
    "mes-dashboard-worker@.service",
];

/// The shipped units in `dir`, their install paths replaced by this build's and the prefix's.
fn staged(dir: &Path) {
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    for u in SHIPPED {
        let text = std::fs::read_to_string(repo().join("systemd").join(u))
            .unwrap()
            .replace("/usr/bin/warden", warden().to_str().unwrap())
            .replace(
                "/opt/miniconda3/envs/mes-dashboard",
                conda().prefix.to_str().unwrap(),
            )
            .replace("/opt/mes-dashboard", app.to_str().unwrap());
        std::fs::write(dir.join(u), text).unwrap();
    }
    std::os::unix::fs::symlink(
        "mes-dashboard-worker@.service",
        dir.join("mes-dashboard-worker@1.service"),
    )
    .unwrap();
    std::os::unix::fs::symlink("warden@.service", dir.join("warden@mes-dashboard.service"))
        .unwrap();
}

fn verify(dir: &Path, units: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .args(["verify", "--man=no"])
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap()
}

#[test]
fn systemd_analyze_verify_accepts_the_shipped_units() {
    let d = tempfile::tempdir().unwrap();
    staged(d.path());
    let all = [
        "warden@mes-dashboard.service",
        "mes-dashboard.service",
        "mes-dashboard-worker@1.service",
    ];
    let o = verify(d.path(), &all);
    assert!(o.status.success(), "{}", text(&o));
    // And it would say so: a unit whose program is missing fails.
    let broken = d.path().join("mes-dashboard.service");
    let t = std::fs::read_to_string(&broken).unwrap();
    std::fs::write(&broken, t.replace("bin/gunicorn", "bin/no-such-gunicorn")).unwrap();
    assert!(
        !verify(d.path(), &["mes-dashboard.service"])
            .status
            .success()
    );
}

#[test]
fn the_agent_template_is_hardened_to_an_exposure_of_at_most_1_5() {
    // An instance of it, with the app's user an operator gives it in a drop-in.
    let d = tempfile::tempdir().unwrap();
    let unit = d.path().join("warden@mes-dashboard.service");
    let shipped = std::fs::read_to_string(repo().join("systemd/warden@.service")).unwrap();
    std::fs::write(
        &unit,
        shipped.replace("[Service]\n", "[Service]\nUser=www-data\nGroup=www-data\n"),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let level: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for warden@mes-dashboard.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(level <= 1.5, "exposure {level}:\n{out}");
}

/// The shipped template, pointed at this build.
fn template() -> String {
    std::fs::read_to_string(repo().join("systemd/warden@.service"))
        .unwrap()
        .replace("/usr/bin/warden", warden().to_str().unwrap())
}

/// The drop-in an operator writes for an instance (`systemctl edit warden@APP.service`): the
/// app's user, and the paths its contract names.
fn instance_dropin(f: &Fixture, runtime_dir: &Path) -> String {
    let mut t = format!(
        "[Service]\nUser={SERVICE_USER}\nGroup={SERVICE_USER}\nReadWritePaths={} {}\n",
        runtime_dir.display(),
        f.state_dir.display()
    );
    // The sandbox's /var/lib is the host's, read-only: the fixture's state directory stands in
    // for StateDirectory=.
    t += "StateDirectory=\n";
    // PrivateTmp= gives the unit its own /tmp and /var/tmp; a fixture below either (a clone
    // under /tmp puts them in /var/tmp) would vanish from its view. In production the state is
    // in /var/lib and the runtime directory in /run.
    let base = fixture_base();
    if base.starts_with("/tmp") || base.starts_with("/var/tmp") {
        t += "PrivateTmp=no\n";
    }
    t
}

/// An app of the host: a fixture whose app unit is `unit`, creating `/run/NAME`.
fn app(name: &str, unit: &str) -> (Fixture, std::path::PathBuf) {
    let rt = std::path::PathBuf::from(format!("/run/{name}"));
    let mut f = Fixture::with_runtime_dir(name, Some(&rt));
    f.set("WARDEN_APP_UNIT", unit);
    // Each app's contract is its unit alone here.
    f.unset("WARDEN_UNITS");
    f.app_owns_runtime_dir(name);
    (f, rt)
}

fn inside(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let w = warden();
    let mut all = vec!["env", "-i", "PATH=/usr/bin:/bin", w.to_str().unwrap()];
    all.extend_from_slice(args);
    sb.run(&all)
}

fn workers(sb: &Sandbox, app: &str) -> Vec<serde_json::Value> {
    let o = inside(sb, &["status", "--json", "--app", app]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["source"], "agent", "{doc:#}");
    doc["gunicorn"]["workers"].as_array().unwrap().clone()
}

/// Two apps on one host, each with its agent from the shipped template (`warden@APP.service`,
/// the contract in /etc/warden/APP.env, the app's user in a drop-in): both agents run side by
/// side, `warden status --all` lists both, a command without `--app` asks which, and a restart
/// of one app reloads that app's Gunicorn alone. An instance without a contract file fails to
/// start, saying which file is missing, and is not restarted.
#[test]
fn two_apps_each_with_its_agent_from_the_shipped_template() {
    let (mes, mes_rt) = app("units-mes", APP_UNIT);
    let (shop, shop_rt) = app("units-shop", "shop.service");
    let etc = tempfile::tempdir().unwrap();
    std::fs::create_dir(etc.path().join("warden")).unwrap();
    // As the migration guide has it: root's, readable by the app's group.
    for (f, name) in [(&mes, "mes-dashboard"), (&shop, "shop")] {
        let to = etc.path().join(format!("warden/{name}.env"));
        std::fs::copy(&f.env_file, &to).unwrap();
        let st = Command::new("chown")
            .arg(format!("root:{SERVICE_USER}"))
            .arg(&to)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let sb = Sandbox::boot_with_etc("units-apps", &[&fixture_base()], Some(etc.path()));
    let unit_text = |f: &Fixture| std::fs::read_to_string(f.units_dir.join(APP_UNIT)).unwrap();
    sb.install_unit(APP_UNIT, &unit_text(&mes));
    sb.install_unit("shop.service", &unit_text(&shop));
    sb.install_unit("warden@.service", &template());
    for (name, f, rt) in [
        ("mes-dashboard", &mes, &mes_rt),
        ("shop", &shop, &shop_rt),
        ("plain", &shop, &shop_rt),
    ] {
        let d = sb.unit_dir().join(format!("warden@{name}.service.d"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("local.conf"), instance_dropin(f, rt)).unwrap();
    }
    // An app with no contract file for its agent.
    sb.install_unit(
        "plain.service",
        "[Service]\nExecStart=/bin/sleep infinity\n",
    );
    sb.daemon_reload();
    for u in [
        APP_UNIT,
        "shop.service",
        "warden@mes-dashboard.service",
        "warden@shop.service",
    ] {
        let o = sb.systemctl(&["start", u]);
        assert!(o.status.success(), "{u}: {}\n{}", text(&o), sb.journal(u));
    }

    // Both listed, each from its agent.
    let o = inside(&sb, &["status", "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let all = text(&o);
    assert!(
        all.contains("== mes-dashboard (warden@mes-dashboard.service)"),
        "{all}"
    );
    assert!(all.contains("== shop (warden@shop.service)"), "{all}");
    assert_eq!(all.matches("source: agent").count(), 2, "{all}");
    // Without --app, a command asks which app.
    let o = inside(&sb, &["restart", "--reason", "which?"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("(mes-dashboard, shop)"), "{}", text(&o));

    // A restart of one app reloads that app alone.
    let (mes_before, shop_before) = (workers(&sb, "mes-dashboard"), workers(&sb, "shop"));
    let o = inside(
        &sb,
        &["restart", "--app", "shop", "--reason", "deploy shop 2.1"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("verified"), "{}", text(&o));
    let shop_after = workers(&sb, "shop");
    assert_eq!(shop_after.len(), 2);
    assert!(
        shop_after.iter().all(|w| !shop_before.contains(w)),
        "{shop_before:?} -> {shop_after:?}"
    );
    assert_eq!(
        workers(&sb, "mes-dashboard"),
        mes_before,
        "the other app was reloaded"
    );
    let history = |f: &Fixture| -> Vec<serde_json::Value> {
        std::fs::read(f.state_dir.join("restart_state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|d| d["history"].as_array().cloned())
            .unwrap_or_default()
    };
    assert_eq!(history(&shop).len(), 1);
    assert!(history(&mes).is_empty(), "{:#?}", history(&mes));

    // A flag in one app's runtime directory is that app's agent's alone.
    let (_w, rx) = watch_dir(&mes.state_dir);
    let flag = sb.run_path(Path::new(&mes.env["WATCHDOG_RESTART_FLAG"]));
    std::fs::write(&flag, "").unwrap();
    await_replaced(&rx, &mes.state_dir.join("restart_state.json"));
    let e = history(&mes).last().cloned().unwrap();
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], true, "{e:#}");
    assert_eq!(history(&shop).len(), 1);

    // One app configured: every command's default, typed with nothing exported.
    let o = sb.run(&["rm", "/etc/warden/shop.env"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = inside(&sb, &["status"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("source: agent"), "{}", text(&o));
    let o = inside(&sb, &["check", "--phase", "running"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = inside(&sb, &["contract"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("/etc/warden/mes-dashboard.env"),
        "{}",
        text(&o)
    );
    let o = inside(&sb, &["kill-switch"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "kill-switch: off"
    );
    // The flag's reload above started mes-dashboard's cooldown.
    let o = inside(&sb, &["restart", "--reason", "post-deploy check"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(
        history(&mes).len(),
        2,
        "the refusal is recorded in mes-dashboard's history"
    );

    // No contract file: the start fails at once, naming the file, and is not retried.
    let o = sb.systemctl(&["start", "warden@plain.service"]);
    assert!(!o.status.success());
    assert_eq!(sb.prop("warden@plain.service", "AssertResult"), "no");
    let journal = sb.journal("warden@plain.service");
    assert!(
        journal.contains("Assertion failed for warden@plain.service - warden watchdog for plain (contract /etc/warden/plain.env)"),
        "{journal}"
    );
    assert_eq!(sb.prop("warden@plain.service", "NRestarts"), "0");
    // Without the unit's assertion, the agent itself refuses, naming the file.
    let o = inside(&sb, &["run", "--app", "plain"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("/etc/warden/plain.env does not exist"),
        "{}",
        text(&o)
    );
}
