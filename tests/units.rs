//! The units shipped in `systemd/`: `systemd-analyze verify` accepts them (with their paths
//! pointed at this build and the test prefix), and the agent's unit is hardened to an exposure
//! of at most 1.5 by `systemd-analyze security --offline=true`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const SHIPPED: &[&str] = &[
    "warden.service",
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
        "warden.service",
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
fn the_agent_unit_is_hardened_to_an_exposure_of_at_most_1_5() {
    let o = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(repo().join("systemd/warden.service"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    let level: f64 = out
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for warden.service: ")
                .nth(1)
        })
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{out}"));
    assert!(level <= 1.5, "exposure {level}:\n{out}");
}

/// The agent's unit as shipped (its hardening included) runs the agent in a real systemd: it
/// becomes active, and a flag gives a verified reload of the app unit's Gunicorn.
#[test]
fn the_hardened_agent_unit_reloads_the_app() {
    let name = "units-hardened";
    let rt = std::path::PathBuf::from(format!("/run/{name}"));
    let f = Fixture::with_runtime_dir(name, Some(&rt));
    let sb = Sandbox::boot(name, &[&fixture_base()]);
    f.app_owns_runtime_dir(name);
    // The shipped unit, pointed at this build and the fixture's contract: its runtime and
    // state directories are the fixture's.
    let shipped = std::fs::read_to_string(repo().join("systemd/warden.service"))
        .unwrap()
        .replace("/usr/bin/warden", warden().to_str().unwrap())
        .replace("/opt/mes-dashboard/.env", f.env_file.to_str().unwrap())
        // The sandbox's /var/lib is the host's, read-only: the fixture's state directory
        // stands in for StateDirectory=.
        .replace(
            "StateDirectory=mes-dashboard\nStateDirectoryMode=0750\n",
            "",
        )
        .replace(
            "Requires=mes-dashboard.service",
            &format!("Requires={APP_UNIT}"),
        )
        .replace("After=mes-dashboard.service", &format!("After={APP_UNIT}"))
        .replace(
            "ReadWritePaths=/run/mes-dashboard",
            &format!("ReadWritePaths={} {}", rt.display(), f.state_dir.display()),
        );
    // PrivateTmp= gives the unit its own /tmp and /var/tmp; a fixture below either (a clone
    // under /tmp puts them in /var/tmp) would vanish from its view. In production the state is
    // in /var/lib and the runtime directory in /run.
    let base = fixture_base();
    let shipped = if base.starts_with("/tmp") || base.starts_with("/var/tmp") {
        shipped.replace("PrivateTmp=yes\n", "")
    } else {
        shipped
    };
    f.write_unit(WATCHDOG_UNIT, &shipped);
    sb.install_and_start(&f, &[APP_UNIT, WATCHDOG_UNIT]);
    assert_eq!(sb.prop(WATCHDOG_UNIT, "ActiveState"), "active");
    let state = f.state_dir.join("restart_state.json");
    let (_w, rx) = watch_dir(&f.state_dir);
    let flag = sb.run_path(Path::new(&f.env["WATCHDOG_RESTART_FLAG"]));
    std::fs::write(&flag, "").unwrap();
    // The state file is written once per request, with its outcome.
    await_replaced(&rx, &state);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    let e = doc["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        e["decision"],
        "executed",
        "{e:#}\n{}",
        sb.journal(WATCHDOG_UNIT)
    );
    assert_eq!(e["verified"], true, "{e:#}");
}
