//! `warden check` against unit files and a real conda-like prefix (venv + gunicorn from PyPI):
//! the full good contract passes, and each rule broken alone is reported with its code.

mod common;

use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Command;

use common::*;

/// Asserts the check reports `code` (and exits as its severity demands).
fn expect(f: &Fixture, extra: &[&str], code: &str, exit: i32) -> serde_json::Value {
    let (status, codes, doc) = f.codes(extra);
    assert!(
        codes.iter().any(|c| c == code),
        "expected {code}, got {codes:?}\n{doc:#}"
    );
    assert_eq!(status, exit, "exit status; findings {codes:?}");
    doc
}

fn finding<'a>(doc: &'a serde_json::Value, code: &str) -> &'a serde_json::Value {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == code)
        .unwrap()
}

#[test]
fn good_contract_passes_with_no_findings() {
    let f = Fixture::new("good");
    let (status, codes, doc) = f.codes(&[]);
    assert_eq!(codes, Vec::<String>::new(), "{doc:#}");
    assert_eq!(status, 0);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["enforced"], true);
    assert_eq!(doc["contract_version"], "2026.02-p2");
    assert_eq!(doc["contract"]["prefix"], f.prefix.display().to_string());
    assert_eq!(doc["contract"]["units"].as_array().unwrap().len(), 3);

    let out = f.check(&[]);
    assert!(
        text(&out).contains("valid: 0 error(s), 0 warning(s)"),
        "{}",
        text(&out)
    );
}

#[test]
fn human_output_has_code_subject_and_help() {
    let mut f = Fixture::new("human");
    f.set("WORKER_RESTART_COOLDOWN", "soon");
    let out = f.check(&[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("error[E01] WORKER_RESTART_COOLDOWN: \"soon\" is not a whole number"),
        "{t}"
    );
    assert!(
        t.contains("  help: set WORKER_RESTART_COOLDOWN to a whole number"),
        "{t}"
    );
    assert!(t.contains("INVALID: 1 error(s)"), "{t}");
}

#[test]
fn not_enforced_reports_warnings_and_exits_zero() {
    let mut f = Fixture::new("not-enforced");
    f.set("WORKER_RESTART_COOLDOWN", "soon");
    f.set("RUNTIME_CONTRACT_ENFORCE", "false");
    let (status, _, doc) = f.codes(&[]);
    assert_eq!(status, 0);
    assert_eq!(doc["valid"], false);
    assert_eq!(finding(&doc, "E01")["severity"], "warning");
    // The summary still counts the errors the contract has.
    let out = f.check(&[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out).contains(
            "INVALID: 1 error(s) not enforced (RUNTIME_CONTRACT_ENFORCE=false), 0 warning(s)"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn unreadable_inputs_exit_2_naming_the_path() {
    let f = Fixture::new("exit2");
    let out = f.check(&["--env-file", "/nonexistent/app.env"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("/nonexistent/app.env"),
        "{}",
        text(&out)
    );
    // A leading '-' makes it optional, as in units.
    let out = f.check(&["--env-file", "-/nonexistent/app.env"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = f.check(&["--script", "/nonexistent/start.sh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("cannot read script /nonexistent/start.sh"));
    let out = f.check(&["--phase", "later"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `warden ARGS` from a plain environment, with the instances' directory `config_dir`.
fn warden_with_config_dir(
    f: &Fixture,
    config_dir: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(warden())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("WARDEN_CONFIG_DIR", config_dir)
        .args(args)
        .arg("--unit-path")
        .arg(&f.units_dir)
        .output()
        .unwrap()
}

#[test]
fn with_app_and_no_instance_file_the_app_units_env_file_is_the_contract() {
    let f = Fixture::new("auto-env");
    let none = f.dir.join("no-instances");
    let out = warden_with_config_dir(&f, &none, &["contract", "--json", "--app", "mes-dashboard"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["pid_file"]["value"], f.pid_file().display().to_string());
    assert_eq!(doc["pid_file"]["source"]["kind"], "env-file");
    assert_eq!(
        doc["pid_file"]["source"]["path"],
        f.env_file.display().to_string()
    );
    // The agent's own check never guesses: its contract is the instance file.
    let out = warden_with_config_dir(
        &f,
        &none,
        &["check", "--phase", "running", "--app", "mes-dashboard"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!(
            "{}/mes-dashboard.env does not exist",
            none.display()
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn the_one_configured_instance_is_every_commands_default() {
    let f = Fixture::new("one-instance");
    let dir = f.dir.join("warden");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&f.env_file, dir.join("mes-dashboard.env")).unwrap();
    let out = warden_with_config_dir(&f, &dir, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["contract"]["pid_file"]["source"]["path"],
        dir.join("mes-dashboard.env").display().to_string()
    );
    // An instance's contract that names another app is refused.
    std::fs::write(
        dir.join("mes-dashboard.env"),
        std::fs::read_to_string(&f.env_file).unwrap().replace(
            "WARDEN_APP_UNIT=mes-dashboard.service",
            "WARDEN_APP_UNIT=shop.service",
        ),
    )
    .unwrap();
    let out = warden_with_config_dir(&f, &dir, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("names another app unit"),
        "{}",
        text(&out)
    );
    // Two: which one?
    std::fs::copy(&f.env_file, dir.join("mes-dashboard.env")).unwrap();
    std::fs::copy(&f.env_file, dir.join("shop.env")).unwrap();
    let out = warden_with_config_dir(&f, &dir, &["contract"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("(mes-dashboard, shop)"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("--app mes-dashboard"), "{}", text(&out));
}

#[test]
fn nothing_configured_is_exit_2_with_how_to_configure_never_a_check_of_defaults() {
    let f = Fixture::new("nothing-configured");
    let none = f.dir.join("no-instances");
    for cmd in [
        &["check"][..],
        &["contract"],
        &["check", "--phase", "running"],
    ] {
        let out = warden_with_config_dir(&f, &none, cmd);
        assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", text(&out));
        let t = text(&out);
        assert!(t.contains("nothing is configured"), "{t}");
        assert!(t.contains("APP.env"), "{t}");
        assert!(!t.contains("C01"), "a check of the defaults: {t}");
    }
}

#[test]
fn contract_names_where_each_value_came_from() {
    let f = Fixture::new("contract");
    let out = f.warden(&["contract"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(t.contains(&format!("{}:", f.env_file.display())), "{t}");
    assert!(t.contains("default"), "{t}");
    assert!(t.contains(&f.prefix.display().to_string()), "{t}");
    assert!(t.contains(APP_UNIT) && t.contains("User=www-data"), "{t}");
}

#[test]
fn list_codes_covers_every_code() {
    let out = Command::new(warden())
        .args(["check", "--list-codes"])
        .output()
        .unwrap();
    let t = text(&out);
    for code in [
        "E01", "C01", "C11", "P07", "U10", "F04", "S02", "B03", "V01",
    ] {
        assert!(t.contains(&format!("| {code} |")), "{code} missing");
    }
}

#[test]
fn readme_lists_every_code_as_the_binary_does() {
    let out = Command::new(warden())
        .args(["check", "--list-codes"])
        .output()
        .unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        assert!(readme.contains(line), "README.md lacks the row: {line}");
    }
}

// ---- configuration ----

#[test]
fn e01_invalid_value_names_the_variable() {
    let mut f = Fixture::new("e01");
    f.set("WORKER_RESTART_COOLDOWN", "soon");
    let doc = expect(&f, &[], "E01", 1);
    assert_eq!(finding(&doc, "E01")["subject"], "WORKER_RESTART_COOLDOWN");
}

// ---- conda ----

#[test]
fn c01_prefix_unresolved() {
    let mut f = Fixture::new("c01");
    f.unset("CONDA_BIN");
    f.unset("CONDA_ENV_NAME");
    expect(&f, &[], "C01", 1);
}

#[test]
fn c02_not_an_environment() {
    let mut f = Fixture::new("c02");
    f.own_prefix();
    std::fs::remove_file(f.prefix.join("conda-meta/history")).unwrap();
    expect(&f, &[], "C02", 1);
}

#[test]
fn c03_python_missing() {
    let mut f = Fixture::new("c03");
    f.own_prefix();
    std::fs::remove_file(f.prefix.join("bin/python")).unwrap();
    expect(&f, &[], "C03", 1);
}

#[test]
fn c04_python_outside_prefix() {
    let mut f = Fixture::new("c04");
    f.own_prefix();
    std::fs::remove_file(f.prefix.join("bin/python")).unwrap();
    symlink("/usr/bin/python3", f.prefix.join("bin/python")).unwrap();
    let doc = expect(&f, &[], "C04", 1);
    assert!(
        finding(&doc, "C04")["message"]
            .as_str()
            .unwrap()
            .contains("/usr/bin/python3")
    );
}

#[test]
fn c05_recorded_version_differs() {
    let mut f = Fixture::new("c05");
    f.own_prefix();
    let meta = f.prefix.join("conda-meta");
    let rec = std::fs::read_dir(&meta)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("python-"))
        .unwrap()
        .path();
    std::fs::rename(rec, meta.join("python-2.7.18-h0fixture_0.json")).unwrap();
    expect(&f, &[], "C05", 1);
}

#[test]
fn c06_no_python_record_is_a_warning() {
    let mut f = Fixture::new("c06");
    f.own_prefix();
    for e in std::fs::read_dir(f.prefix.join("conda-meta"))
        .unwrap()
        .flatten()
    {
        if e.file_name().to_string_lossy().starts_with("python-") {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    expect(&f, &[], "C06", 0);
}

#[test]
fn c07_gunicorn_missing() {
    let mut f = Fixture::new("c07");
    f.own_prefix();
    std::fs::remove_file(f.prefix.join("bin/gunicorn")).unwrap();
    expect(&f, &[], "C07", 1);
}

#[test]
fn c08_gunicorn_shebang_elsewhere() {
    let mut f = Fixture::new("c08");
    f.own_prefix();
    let g = f.prefix.join("bin/gunicorn");
    let t = std::fs::read_to_string(&g).unwrap();
    let body = t.split_once('\n').unwrap().1;
    std::fs::write(&g, format!("#!/usr/bin/python3\n{body}")).unwrap();
    expect(&f, &[], "C08", 1);
}

#[test]
fn c09_conda_bin_missing() {
    let mut f = Fixture::new("c09");
    f.own_prefix();
    std::fs::remove_file(f.conda_root.join("bin/conda")).unwrap();
    expect(&f, &[], "C09", 1);
}

#[test]
fn c10_conda_default_env_disagrees() {
    let mut f = Fixture::new("c10");
    f.set("CONDA_DEFAULT_ENV", "base");
    expect(&f, &[], "C10", 1);
}

#[test]
fn c11_conda_prefix_disagrees() {
    let mut f = Fixture::new("c11");
    let other = f.conda_root.display().to_string();
    f.set("CONDA_PREFIX", &other);
    expect(&f, &[], "C11", 1);
}

#[test]
fn venv_runtime_is_checked_by_the_same_rules() {
    let mut f = Fixture::new("venv");
    f.unset("CONDA_BIN");
    f.unset("CONDA_ENV_NAME");
    let prefix = f.prefix.display().to_string();
    f.set("WARDEN_PYTHON_PREFIX", &prefix);
    let (status, codes, doc) = f.codes(&[]);
    assert_eq!((status, codes.len()), (0, 0), "{doc:#}");
    assert_eq!(doc["contract"]["runtime"], "venv");
    f.own_prefix();
    f.unset("CONDA_BIN");
    let prefix = f.prefix.display().to_string();
    f.set("WARDEN_PYTHON_PREFIX", &prefix);
    std::fs::remove_file(f.prefix.join("pyvenv.cfg")).unwrap();
    expect(&f, &[], "C02", 1);
}

// ---- paths ----

#[test]
fn p01_flag_outside_runtime_dir() {
    let mut f = Fixture::new("p01");
    let p = f.state_dir.join("restart.flag").display().to_string();
    f.set("WATCHDOG_RESTART_FLAG", &p);
    expect(&f, &[], "P01", 1);
}

#[test]
fn p01_flag_through_a_link_that_leads_out_of_the_runtime_dir() {
    // As the original resolves it: the flag's path is under the runtime directory only by name.
    let mut f = Fixture::new("p01-link");
    let outside = f.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let link = f.runtime_dir.join("flags");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    f.set(
        "WATCHDOG_RESTART_FLAG",
        &link.join("restart.flag").display().to_string(),
    );
    let doc = expect(&f, &[], "P01", 1);
    assert!(
        finding(&doc, "P01")["subject"]
            .as_str()
            .unwrap()
            .ends_with("flags/restart.flag"),
        "{doc:#}"
    );
}

#[test]
fn p02_pid_outside_runtime_dir() {
    let mut f = Fixture::new("p02");
    let p = f.state_dir.join("gunicorn.pid").display().to_string();
    f.set("WATCHDOG_PID_FILE", &p);
    f.write_units();
    let (status, codes, _) = f.codes(&[]);
    assert_eq!((status, codes), (1, vec!["P02".to_string()]));
}

#[test]
fn p03_state_on_tmpfs_is_a_warning() {
    let mut f = Fixture::new("p03");
    let d = PathBuf::from("/dev/shm/warden-test-p03");
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    chown(&d, SERVICE_USER);
    f.set(
        "WATCHDOG_STATE_FILE",
        &d.join("state.json").display().to_string(),
    );
    let (status, codes, _) = f.codes(&[]);
    assert_eq!((status, codes), (0, vec!["P03".to_string()]));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn p04_flag_is_a_symlink() {
    let f = Fixture::new("p04");
    symlink(
        "/etc/shadow",
        f.runtime_dir.join("mes_dashboard_restart.flag"),
    )
    .unwrap();
    let doc = expect(&f, &[], "P04", 1);
    assert!(
        finding(&doc, "P04")["message"]
            .as_str()
            .unwrap()
            .contains("symbolic link")
    );
}

#[test]
fn p05_world_writable_directory_without_sticky_bit() {
    let f = Fixture::new("p05");
    chmod(&f.state_dir, 0o777);
    expect(&f, &[], "P05", 1);
}

#[test]
fn p06_service_user_cannot_write_state_dir() {
    let f = Fixture::new("p06");
    chown(&f.state_dir, "root");
    chmod(&f.state_dir, 0o755);
    let doc = expect(&f, &[], "P06", 1);
    assert!(
        finding(&doc, "P06")["message"]
            .as_str()
            .unwrap()
            .contains("www-data")
    );
}

#[test]
fn p07_runtime_dir_missing() {
    let f = Fixture::new("p07");
    std::fs::remove_dir_all(&f.runtime_dir).unwrap();
    expect(&f, &[], "P07", 1);
}

// ---- units ----

#[test]
fn u01_unit_not_found() {
    let mut f = Fixture::new("u01");
    f.set(
        "WARDEN_UNITS",
        &format!("{WATCHDOG_UNIT},{WORKER_UNIT},mes-dashboard-rq.service"),
    );
    let doc = expect(&f, &[], "U01", 1);
    assert_eq!(finding(&doc, "U01")["subject"], "mes-dashboard-rq.service");
}

#[test]
fn u02_unit_on_system_python() {
    let f = Fixture::new("u02");
    f.edit_unit(WORKER_UNIT, |t| {
        t.replace(
            &format!("{}/bin/python", f.prefix.display()),
            "/usr/bin/python3",
        )
    });
    let doc = expect(&f, &[], "U02", 1);
    assert_eq!(finding(&doc, "U02")["subject"], WORKER_UNIT);
}

#[test]
fn u02_unit_on_another_conda_env() {
    let f = Fixture::new("u02-env");
    f.edit_unit(WORKER_UNIT, |_| {
        format!(
            "[Service]\nUser=www-data\nEnvironmentFile={}\nExecStart=/bin/bash -lc 'exec {}/bin/conda run -n legacy python -m rq worker'\n",
            f.env_file.display(),
            f.conda_root.display()
        )
    });
    let doc = expect(&f, &[], "U02", 1);
    assert!(
        finding(&doc, "U02")["message"]
            .as_str()
            .unwrap()
            .contains("envs/legacy")
    );
}

#[test]
fn u03_conda_run_is_a_warning_with_the_fix() {
    let f = Fixture::new("u03");
    f.edit_unit(APP_UNIT, |t| {
        t.replace(
            &format!("ExecStart={}/bin/gunicorn", f.prefix.display()),
            "ExecStart=/bin/bash -lc 'exec conda run --no-capture-output -n app gunicorn",
        )
        .replace("app:app\n", "app:app'\n")
    });
    let doc = expect(&f, &[], "U03", 0);
    assert!(
        finding(&doc, "U03")["help"]
            .as_str()
            .unwrap()
            .contains("directly")
    );
}

#[test]
fn u04_pid_file_differs() {
    let f = Fixture::new("u04");
    f.edit_unit(APP_UNIT, |t| {
        t.replace("--pid ${WATCHDOG_PID_FILE}", "--pid /run/gunicorn.pid")
    });
    let doc = expect(&f, &[], "U04", 1);
    assert!(
        finding(&doc, "U04")["message"]
            .as_str()
            .unwrap()
            .contains("/run/gunicorn.pid")
    );
}

#[test]
fn u05_bind_differs() {
    let f = Fixture::new("u05");
    f.edit_unit(APP_UNIT, |t| {
        t.replace(
            "--bind ${GUNICORN_BIND}",
            "--bind ${GUNICORN_BIND} --bind 0.0.0.0:9",
        )
    });
    expect(&f, &[], "U05", 1);
}

#[test]
fn u06_shared_runtime_directory_without_preserve() {
    let f = Fixture::new("u06");
    for u in [APP_UNIT, WATCHDOG_UNIT] {
        f.edit_unit(u, |t| {
            t.replace("[Service]\n", "[Service]\nRuntimeDirectory=mes-dashboard\n")
        });
    }
    expect(&f, &[], "U06", 1);
    f.edit_unit(APP_UNIT, |t| {
        t.replace("[Service]\n", "[Service]\nRuntimeDirectoryPreserve=yes\n")
    });
    f.edit_unit(WATCHDOG_UNIT, |t| {
        t.replace("[Service]\n", "[Service]\nRuntimeDirectoryPreserve=yes\n")
    });
    let (_, codes, _) = f.codes(&[]);
    assert!(!codes.contains(&"U06".to_string()));
}

#[test]
fn u08_variable_drift_between_units() {
    let f = Fixture::new("u08");
    f.edit_unit(WORKER_UNIT, |t| {
        t.replace(
            "[Service]\n",
            "[Service]\nEnvironment=WORKER_RESTART_COOLDOWN=5\n",
        )
    });
    let doc = expect(&f, &[], "U08", 1);
    assert_eq!(finding(&doc, "U08")["subject"], "WORKER_RESTART_COOLDOWN");
}

#[test]
fn u09_no_app_unit_is_a_warning() {
    let mut f = Fixture::new("u09");
    f.unset("WARDEN_APP_UNIT");
    expect(&f, &[], "U09", 0);
}

#[test]
fn u10_app_unit_runs_no_gunicorn() {
    let f = Fixture::new("u10");
    f.edit_unit(APP_UNIT, |t| {
        let start = t.find("ExecStart=").unwrap();
        let end = t.find("PIDFile=").unwrap();
        format!(
            "{}ExecStart=/bin/sleep infinity\n{}",
            &t[..start],
            &t[end..]
        )
    });
    expect(&f, &[], "U10", 0);
}

#[test]
fn drop_ins_override_the_fragment() {
    let f = Fixture::new("dropin");
    let d = f.units_dir.join(format!("{APP_UNIT}.d"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("10-pid.conf"), "[Service]\nPIDFile=/run/other.pid\n").unwrap();
    let doc = expect(&f, &[], "U04", 1);
    assert!(
        finding(&doc, "U04")["message"]
            .as_str()
            .unwrap()
            .contains("/run/other.pid")
    );
}

// ---- env files ----

#[test]
fn f01_env_file_missing() {
    let f = Fixture::new("f01");
    let missing = f.dir.join("etc/missing.env").display().to_string();
    for u in [APP_UNIT, WATCHDOG_UNIT, WORKER_UNIT] {
        f.edit_unit(u, |t| {
            t.replace(&f.env_file.display().to_string(), &missing)
        });
    }
    let doc = expect(&f, &[], "F01", 1);
    assert_eq!(finding(&doc, "F01")["subject"], missing);
}

#[test]
fn f02_env_file_syntax() {
    let f = Fixture::new("f02");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&f.env_file)
        .unwrap();
    writeln!(file, "GUNICORN_WORKERS 4").unwrap();
    let doc = expect(&f, &[], "F02", 1);
    assert!(
        finding(&doc, "F02")["subject"]
            .as_str()
            .unwrap()
            .ends_with("app.env:12")
    );
}

#[test]
fn f03_env_file_world_readable() {
    let f = Fixture::new("f03");
    chmod(&f.env_file, 0o644);
    expect(&f, &[], "F03", 1);
}

#[test]
fn f04_units_load_different_env_files() {
    let f = Fixture::new("f04");
    let extra = f.dir.join("etc/worker.env");
    std::fs::write(&extra, "RQ_QUEUES=default\n").unwrap();
    chmod(&extra, 0o640);
    f.edit_unit(WORKER_UNIT, |t| {
        t.replace(
            "[Service]\n",
            &format!("[Service]\nEnvironmentFile={}\n", extra.display()),
        )
    });
    expect(&f, &[], "F04", 1);
}

// ---- scripts and docs ----

#[test]
fn s01_script_default_differs() {
    let f = Fixture::new("s01");
    let good = f.dir.join("good.sh");
    let rt = &f.env["WATCHDOG_RUNTIME_DIR"];
    std::fs::write(
        &good,
        format!("PID=\"${{WATCHDOG_PID_FILE:-${{WATCHDOG_RUNTIME_DIR:-{rt}}}/gunicorn.pid}}\"\n"),
    )
    .unwrap();
    let (status, codes, doc) = f.codes(&["--script", good.to_str().unwrap()]);
    assert_eq!((status, codes.len()), (0, 0), "{doc:#}");
    let bad = f.dir.join("start_server.sh");
    std::fs::write(
        &bad,
        "#!/bin/bash\nPID_FILE=\"${WATCHDOG_PID_FILE:-/tmp/gunicorn.pid}\"\n",
    )
    .unwrap();
    let doc = expect(&f, &["--script", bad.to_str().unwrap()], "S01", 1);
    assert!(
        finding(&doc, "S01")["subject"]
            .as_str()
            .unwrap()
            .ends_with("start_server.sh:2")
    );
}

#[test]
fn s02_docs_state_another_value() {
    let f = Fixture::new("s02");
    let doc_path = f.dir.join("README.md");
    std::fs::write(
        &doc_path,
        format!(
            "# Deploy\n\nSet `GUNICORN_BIND={}` and\n\n```\nWATCHDOG_STATE_FILE=/var/lib/elsewhere/state.json\n```\n",
            f.env["GUNICORN_BIND"]
        ),
    )
    .unwrap();
    let doc = expect(&f, &["--docs", doc_path.to_str().unwrap()], "S02", 1);
    let found: Vec<_> = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["code"] == "S02")
        .collect();
    assert_eq!(found.len(), 1, "only the stale line is reported");
    assert!(
        found[0]["subject"]
            .as_str()
            .unwrap()
            .ends_with("README.md:6")
    );
}

// ---- bind ----

#[test]
fn b01_bind_invalid() {
    let mut f = Fixture::new("b01");
    f.set("GUNICORN_BIND", "8080");
    expect(&f, &[], "B01", 1);
}

#[test]
fn b02_port_in_use_before_start() {
    let f = Fixture::new("b02");
    let _holder = std::net::TcpListener::bind(("127.0.0.1", f.port)).unwrap();
    let doc = expect(&f, &[], "B02", 1);
    assert!(
        finding(&doc, "B02")["message"]
            .as_str()
            .unwrap()
            .contains(&std::process::id().to_string())
    );
}

#[test]
fn b03_running_phase_wants_the_port_held_by_the_master() {
    let f = Fixture::new("b03");
    expect(&f, &["--phase", "running"], "B03", 1);

    let g = start_gunicorn(&f);
    let (status, codes, doc) = f.codes(&["--phase", "running"]);
    // Pre-start would now find the port taken, by the very master.
    let (pre_status, pre_codes, _) = f.codes(&[]);
    // A PID file naming another process (here: ourselves) is caught.
    let real_pid = std::fs::read_to_string(f.pid_file()).unwrap();
    std::fs::write(f.pid_file(), format!("{}\n", std::process::id())).unwrap();
    let (wrong_status, wrong_codes, _) = f.codes(&["--phase", "running"]);
    // A PID file naming a worker: a worker holds the listening socket too, but is not the master.
    let master: u32 = real_pid.trim().parse().unwrap();
    let worker = await_workers(master, 2)[0];
    std::fs::write(f.pid_file(), format!("{worker}\n")).unwrap();
    let (_, worker_codes, worker_doc) = f.codes(&["--phase", "running"]);
    std::fs::write(f.pid_file(), real_pid).unwrap();
    drop(g);

    assert_eq!((status, codes.len()), (0, 0), "{doc:#}");
    assert_eq!((pre_status, pre_codes), (1, vec!["B02".to_string()]));
    assert_eq!((wrong_status, wrong_codes), (1, vec!["B03".to_string()]));
    assert_eq!(worker_codes, vec!["B03".to_string()]);
    let m = finding(&worker_doc, "B03")["message"].as_str().unwrap();
    assert!(m.contains("a gunicorn worker"), "{m}");
}

// ---- version ----

#[test]
fn v01_version_declared_differently() {
    let f = Fixture::new("v01");
    let doc_path = f.dir.join("RUNBOOK.md");
    std::fs::write(&doc_path, "Contract: RUNTIME_CONTRACT_VERSION=2025.11-p1\n").unwrap();
    let doc = expect(&f, &["--docs", doc_path.to_str().unwrap()], "V01", 1);
    let m = finding(&doc, "V01")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(m.contains("2025.11-p1") && m.contains("2026.02-p2"), "{m}");
}

#[test]
fn the_originals_relative_contract_passes_with_its_root() {
    // The original's `.env.example` writes its paths relative to the project root
    // (`MES_DASHBOARD_ROOT`), for `start_server.sh` rather than units: the same contract, read
    // as the original reads it.
    let mut f = Fixture::new("relative");
    let root = f.dir.display().to_string();
    f.set("MES_DASHBOARD_ROOT", &root);
    f.unset("WARDEN_APP_UNIT");
    f.unset("WARDEN_UNITS");
    for (k, v) in [
        ("WATCHDOG_RUNTIME_DIR", "./run"),
        ("WATCHDOG_RESTART_FLAG", "./run/mes_dashboard_restart.flag"),
        ("WATCHDOG_PID_FILE", "./run/gunicorn.pid"),
        ("WATCHDOG_STATE_FILE", "./state/restart_state.json"),
    ] {
        f.set(k, v);
    }
    let (status, codes, doc) = f.codes(&[]);
    assert_eq!(
        (status, codes.as_slice()),
        (0, &["P08".to_string(), "U09".to_string()][..]),
        "{doc:#}"
    );
    assert_eq!(
        doc["contract"]["state_file"]["value"],
        f.dir.join("state/restart_state.json").display().to_string()
    );
}

#[test]
fn every_env_file_read_is_checked_once() {
    // No unit at all: the env file given is still read as systemd would read it.
    let mut f = Fixture::new("f02-alone");
    f.unset("WARDEN_APP_UNIT");
    f.unset("WARDEN_UNITS");
    let mut text = std::fs::read_to_string(&f.env_file).unwrap();
    text.push_str("this is not an assignment\n");
    std::fs::write(&f.env_file, text).unwrap();
    let (_, codes, doc) = f.codes(&[]);
    assert_eq!(codes.iter().filter(|c| *c == "F02").count(), 1, "{doc:#}");

    // Given relative, the file the units load is one file: its findings are not doubled.
    let f = Fixture::new("f02-relative");
    let mut text = std::fs::read_to_string(&f.env_file).unwrap();
    text.push_str("garbage\n");
    std::fs::write(&f.env_file, text).unwrap();
    let out = Command::new(warden())
        .current_dir(f.env_file.parent().unwrap())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["check", "--json", "--env-file"])
        .arg(f.env_file.file_name().unwrap())
        .arg("--unit-path")
        .arg(&f.units_dir)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f02 = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["code"] == "F02")
        .count();
    assert_eq!(f02, 1, "{doc:#}");
}

#[test]
fn e02_a_misspelled_variable_is_named_with_the_one_meant() {
    let mut f = Fixture::new("e02");
    f.set("WORKER_RESTART_COOLDOWN_SECONDS", "30");
    f.set("GUNICORN_WORKERS", "4");
    let doc = expect(&f, &[], "E02", 0);
    let e = finding(&doc, "E02");
    assert!(
        e["help"]
            .as_str()
            .unwrap()
            .contains("did you mean WORKER_RESTART_COOLDOWN?"),
        "{e:#}"
    );
    let e02 = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["code"] == "E02")
        .count();
    assert_eq!(
        e02, 1,
        "the app's own GUNICORN_WORKERS is left alone: {doc:#}"
    );
}

#[test]
fn u08_the_agents_contract_file_and_the_app_unit_must_agree() {
    let f = Fixture::new("u08-instance");
    let dir = f.dir.join("warden");
    std::fs::create_dir(&dir).unwrap();
    let base = std::fs::read_to_string(&f.env_file).unwrap();
    let instance = dir.join("mes-dashboard.env");
    std::fs::write(&instance, format!("{base}WORKER_RESTART_COOLDOWN=120\n")).unwrap();
    chmod(&instance, 0o640);
    // The app unit's env file says nothing of the cooldown: the defaults stand on both sides.
    let out = warden_with_config_dir(&f, &dir, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The app's own file says otherwise.
    std::fs::write(&f.env_file, format!("{base}WORKER_RESTART_COOLDOWN=60\n")).unwrap();
    let out = warden_with_config_dir(&f, &dir, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let u08 = finding(&doc, "U08");
    assert_eq!(u08["subject"], "WORKER_RESTART_COOLDOWN");
    assert!(
        u08["message"]
            .as_str()
            .unwrap()
            .contains("mes-dashboard.service sees WORKER_RESTART_COOLDOWN=60"),
        "{u08:#}"
    );
}

// ---- Gunicorn's own settings ----

#[test]
fn g01_preload_app_is_a_warning_that_a_reload_keeps_the_code() {
    let f = Fixture::new("g01");
    f.edit_unit(APP_UNIT, |t| {
        t.replace("--no-control-socket", "--no-control-socket --preload")
    });
    let doc = expect(&f, &[], "G01", 0);
    assert_eq!(finding(&doc, "G01")["subject"], APP_UNIT);
}

#[test]
fn g02_a_control_socket_others_may_reach() {
    let f = Fixture::new("g02");
    let open = f.dir.join("open");
    std::fs::create_dir_all(&open).unwrap();
    chmod(&open, 0o777);
    let sock = open.join("gunicorn.ctl");
    f.edit_unit(APP_UNIT, |t| {
        t.replace(
            "--no-control-socket",
            &format!("--control-socket {}", sock.display()),
        )
    });
    let doc = expect(&f, &[], "G02", 1);
    let g02 = finding(&doc, "G02");
    assert_eq!(g02["subject"], sock.display().to_string());
    assert!(
        g02["message"]
            .as_str()
            .unwrap()
            .contains("others may write"),
        "{g02:#}"
    );
    assert!(
        g02["help"]
            .as_str()
            .unwrap()
            .contains("--no-control-socket"),
        "{g02:#}"
    );
    // Its mode, in a private directory.
    chmod(&open, 0o755);
    f.edit_unit(APP_UNIT, |t| {
        t.replace(
            &format!("--control-socket {}", sock.display()),
            &format!(
                "--control-socket {} --control-socket-mode 0666",
                sock.display()
            ),
        )
    });
    let doc = expect(&f, &[], "G02", 1);
    assert!(
        finding(&doc, "G02")["message"]
            .as_str()
            .unwrap()
            .contains("0666"),
        "{doc:#}"
    );
}

#[test]
fn g03_code_that_does_not_load_is_an_error_naming_gunicorns() {
    let f = Fixture::new("g03");
    let app = f.dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    let good = std::fs::read_to_string(repo().join("examples/gunicorn-app/app.py")).unwrap();
    std::fs::write(app.join("app.py"), format!("{good}\ndef broken(:\n")).unwrap();
    f.edit_unit(APP_UNIT, |t| {
        t.replace(
            &repo().join("examples/gunicorn-app").display().to_string(),
            &app.display().to_string(),
        )
    });
    let doc = expect(&f, &[], "G03", 1);
    assert!(
        finding(&doc, "G03")["message"]
            .as_str()
            .unwrap()
            .ends_with("SyntaxError: invalid syntax"),
        "{doc:#}"
    );
    // Turned off, the app is not imported by the check.
    let mut f = f;
    f.set("WARDEN_PREFLIGHT", "false");
    let (status, codes, _) = f.codes(&[]);
    assert!(!codes.iter().any(|c| c == "G03"), "{codes:?}");
    assert_eq!(status, 0);
}
