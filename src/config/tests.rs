use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn layers(vars: &[(&str, &str)]) -> Layers {
    Layers::load_from(vars.iter().map(|(k, v)| (k.into(), v.into())), &[]).unwrap()
}

fn resolve(vars: &[(&str, &str)]) -> (Settings, Vec<InvalidValue>) {
    Settings::resolve(&layers(vars), Path::new("/cwd"))
}

#[test]
fn defaults_follow_the_original() {
    let (s, errs) = resolve(&[("WARDEN_PROJECT_ROOT", "/srv/app")]);
    assert!(errs.is_empty());
    assert_eq!(s.runtime_dir.value, PathBuf::from("/srv/app/tmp"));
    assert_eq!(
        s.restart_flag.value,
        PathBuf::from("/srv/app/tmp/mes_dashboard_restart.flag")
    );
    assert_eq!(s.pid_file.value, PathBuf::from("/srv/app/tmp/gunicorn.pid"));
    assert_eq!(s.policy, PolicyConfig::defaults());
    assert_eq!(s.policy.cooldown, Duration::from_secs(60));
    assert_eq!(s.policy.window, Duration::from_secs(600));
    assert_eq!(
        (s.policy.retry_budget.get(), s.policy.churn_threshold.get()),
        (3, 3)
    );
    assert!(s.policy.guarded_mode);
    assert_eq!(s.bind.value.to_string(), "0.0.0.0:8080");
    assert_eq!(s.contract_version.value, "2026.02-p2");
    assert_eq!(s.history_max.get(), 50);
    assert_eq!(s.reload_timeout, Duration::from_secs(30));
    assert!(s.enforce.value);
    // Without a project root, the working directory.
    let (s, _) = resolve(&[]);
    assert_eq!(s.runtime_dir.value, PathBuf::from("/cwd/tmp"));
}

#[test]
fn invalid_values_name_their_variable_in_the_tables_order() {
    let (s, errs) = resolve(&[
        ("WORKER_RESTART_COOLDOWN", "soon"),
        ("WORKER_RESTART_WINDOW_SECONDS", "10"),
        ("WATCHDOG_STATE_FILE", ""),
        ("WORKER_GUARDED_MODE_ENABLED", "maybe"),
        ("WARDEN_UNITS", "ok.service, bad/unit"),
        ("WATCHDOG_RESTART_HISTORY_MAX", "99999999999999999999999"),
    ]);
    let vars: Vec<_> = errs.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        vec![
            "WATCHDOG_STATE_FILE",
            "WATCHDOG_RESTART_HISTORY_MAX",
            "WORKER_RESTART_COOLDOWN",
            "WORKER_RESTART_WINDOW_SECONDS",
            "WORKER_GUARDED_MODE_ENABLED",
            "WARDEN_UNITS"
        ]
    );
    assert_eq!(errs[1].reason, "is too large");
    assert_eq!(s.units, vec!["ok.service"]);
    // The defaults stand in.
    assert_eq!(s.policy.cooldown, Duration::from_secs(60));
    assert_eq!(s.history_max.get(), 50);
}

#[test]
fn relative_paths_join_the_originals_root_first() {
    let (s, errs) = resolve(&[
        ("WATCHDOG_STATE_FILE", "./tmp/state.json"),
        ("WARDEN_PROJECT_ROOT", "/srv/warden"),
    ]);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        s.state_file.value,
        PathBuf::from("/srv/warden/tmp/state.json")
    );
    let (s, _) = resolve(&[
        ("WATCHDOG_STATE_FILE", "./tmp/state.json"),
        ("WARDEN_PROJECT_ROOT", "/srv/warden"),
        ("MES_DASHBOARD_ROOT", "/opt/mes"),
    ]);
    assert_eq!(s.state_file.value, PathBuf::from("/opt/mes/tmp/state.json"));
    assert_eq!(s.runtime_dir.value, PathBuf::from("/opt/mes/tmp"));
}

#[test]
fn fallback_names_and_booleans() {
    let (s, errs) = resolve(&[
        ("RESILIENCE_RESTART_CHURN_THRESHOLD", "5"),
        ("RESILIENCE_RESTART_CHURN_WINDOW_SECONDS", "120"),
        ("WORKER_GUARDED_MODE_ENABLED", "Off"),
        ("RUNTIME_CONTRACT_ENFORCE", "no"),
        ("WARDEN_APP_UNIT", "mes-dashboard"),
    ]);
    assert!(errs.is_empty());
    assert_eq!(s.policy.churn_threshold.get(), 5);
    assert_eq!(s.policy.window, Duration::from_secs(120));
    assert!(!s.policy.guarded_mode);
    assert!(!s.enforce.value);
    assert_eq!(s.app_unit.as_deref(), Some("mes-dashboard.service"));
    // An invalid fallback is reported under its own name.
    let (_, errs) = resolve(&[("RESILIENCE_RESTART_CHURN_THRESHOLD", "0")]);
    assert_eq!(errs[0].var, "RESILIENCE_RESTART_CHURN_THRESHOLD");
}

#[test]
fn the_contract_states_every_set_or_defaulted_value() {
    let (s, _) = resolve(&[
        ("WATCHDOG_RUNTIME_DIR", "/run/app"),
        ("WORKER_GUARDED_MODE_ENABLED", "yes"),
    ]);
    let stated = |v: &vars::Var| s.stated(v).map(|x| x.value.clone());
    assert_eq!(
        stated(&vars::WATCHDOG_PID_FILE).as_deref(),
        Some("/run/app/gunicorn.pid")
    );
    assert_eq!(
        s.stated(&vars::WATCHDOG_PID_FILE).unwrap().source,
        Source::Derived {
            from: "WATCHDOG_RUNTIME_DIR".into()
        }
    );
    assert_eq!(
        stated(&vars::WORKER_GUARDED_MODE_ENABLED).as_deref(),
        Some("true")
    );
    assert_eq!(
        stated(&vars::WORKER_RESTART_COOLDOWN).as_deref(),
        Some("60")
    );
    assert_eq!(stated(&vars::CONDA_BIN), None);
    for v in vars::ALL {
        if v.default != vars::Default::Unset {
            assert!(
                stated(v).is_some(),
                "{} has a default but states none",
                v.name
            );
        }
    }
}

#[test]
fn env_files_override_the_environment_and_record_lines() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("app.env");
    std::fs::write(&f, "# x\nGUNICORN_BIND=127.0.0.1:9000\n").unwrap();
    let l = Layers::load_from(
        [("GUNICORN_BIND".into(), "0.0.0.0:1".into())],
        &[
            EnvFileArg {
                path: f.clone(),
                optional: false,
            },
            EnvFileArg {
                path: d.path().join("absent"),
                optional: true,
            },
        ],
    )
    .unwrap();
    let (s, _) = Settings::resolve(&l, Path::new("/"));
    assert_eq!(s.bind.value.to_string(), "127.0.0.1:9000");
    assert_eq!(s.bind.source, Source::EnvFile { path: f, line: 2 });
    assert_eq!(l.missing_optional.len(), 1);
    assert!(
        Layers::load_from(std::iter::empty(), &["/nonexistent/x.env".parse().unwrap()]).is_err()
    );
}

#[test]
fn the_readme_lists_every_variable_as_the_table_does() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = vars::markdown_table();
    assert!(
        readme.contains(&table),
        "the README's configuration table differs from the variable table; replace it with:\n{table}"
    );
}

#[test]
fn table_names_are_unique_and_defaults_valid() {
    let mut seen = std::collections::HashSet::new();
    for v in vars::ALL {
        for n in v.names() {
            assert!(seen.insert(n), "{n} twice");
        }
        assert!(crate::systemd::envfile::valid_name(v.name));
    }
    // Resolving nothing uses every default, each through its own parser.
    let (_, errs) = resolve(&[]);
    assert!(errs.is_empty(), "{errs:?}");
}

proptest! {
    #[test]
    fn any_values_resolve_without_panic(
        vals in proptest::collection::vec("\\PC{0,20}", 0..10),
        pick in proptest::collection::vec(0usize..vars::ALL.len(), 0..10),
    ) {
        let vars: Vec<(&str, &str)> = pick
            .iter()
            .zip(vals.iter())
            .map(|(i, v)| (vars::ALL[*i].name, v.as_str()))
            .collect();
        let (s, _) = resolve(&vars);
        prop_assert!(s.policy.cooldown >= Duration::from_secs(1));
        prop_assert!(s.policy.window >= Duration::from_secs(30));
        prop_assert!(s.state_file.value.is_absolute());
    }
}

#[test]
fn the_churn_threshold_follows_the_retry_budget_as_the_originals_does() {
    // Only the budget set: the original's churn threshold is the budget, not 3.
    let (s, errs) = resolve(&[("WORKER_RESTART_RETRY_BUDGET", "5")]);
    assert!(errs.is_empty());
    assert_eq!(s.policy.churn_threshold.get(), 5);
    assert_eq!(
        s.stated(&vars::WORKER_RESTART_CHURN_THRESHOLD)
            .unwrap()
            .source,
        Source::Derived {
            from: "WORKER_RESTART_RETRY_BUDGET".into()
        }
    );
    // Three restarts in the window: the original executes a fourth, and so does warden.
    let now = 1_800_000_000_000;
    let three: Vec<_> = [100, 200, 300]
        .iter()
        .map(|s| crate::ledger::policy::Executed {
            at_ms: now - s * 1000,
        })
        .collect();
    assert!(!crate::ledger::policy::evaluate(&three, now, &s.policy).blocked);
    // Its own fallback still comes first.
    let (s, _) = resolve(&[
        ("WORKER_RESTART_RETRY_BUDGET", "5"),
        ("RESILIENCE_RESTART_CHURN_THRESHOLD", "2"),
    ]);
    assert_eq!(s.policy.churn_threshold.get(), 2);
}

#[test]
fn fleet_settings_are_read_with_their_defaults_and_refused_when_they_would_mislead() {
    let (s, invalid) = resolve(&[]);
    assert!(invalid.is_empty() && s.fleet.is_none() && s.alert_gate.is_none());

    let (s, invalid) = resolve(&[
        (
            "WARDEN_ETCD_ENDPOINTS",
            "http://10.0.0.1:2379, http://10.0.0.2:2379",
        ),
        ("WARDEN_FLEET_UNREACHABLE", "auto=refuse"),
        ("WARDEN_ALERTMANAGER_URL", "http://127.0.0.1:9093"),
        ("WARDEN_ALERT_MATCHERS", r#"alertname="DatabaseDown""#),
    ]);
    assert!(invalid.is_empty(), "{invalid:?}");
    let f = s.fleet.unwrap();
    assert_eq!((f.endpoints.len(), f.slots, f.wait.as_secs()), (2, 1, 300));
    // The pairs not given keep their defaults.
    assert_eq!(
        f.unreachable.to_string(),
        "auto=refuse,manual=wait,reload=wait,override=proceed,kill_switch=proceed"
    );
    assert_eq!(
        s.alert_gate.unwrap().matchers.to_string(),
        r#"{alertname="DatabaseDown"}"#
    );

    let (_, invalid) = resolve(&[
        ("WARDEN_ETCD_ENDPOINTS", "http://10.0.0.1:2379"),
        ("WARDEN_FLEET_GROUP", "a/../b"),
        ("WARDEN_FLEET_UNREACHABLE", "auto=maybe"),
        ("WARDEN_ALERTMANAGER_URL", "http://127.0.0.1:9093"),
    ]);
    let names: Vec<&str> = invalid.iter().map(|i| i.var).collect();
    assert_eq!(
        names,
        [
            "WARDEN_FLEET_GROUP",
            "WARDEN_FLEET_UNREACHABLE",
            "WARDEN_ALERTMANAGER_URL"
        ],
        "{invalid:?}"
    );
    assert!(
        invalid[2].help.contains("WARDEN_ALERT_MATCHERS"),
        "{invalid:?}"
    );
    let (_, invalid) = resolve(&[("WARDEN_ALERT_MATCHERS", "{alertname}")]);
    assert_eq!(invalid.len(), 1, "{invalid:?}");
}
