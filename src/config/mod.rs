//! Configuration: the runtime contract's variables (compatible with the MES dashboard's names and
//! defaults) and warden's own, read from the process environment and `--env-file` files.
//!
//! Two stages, as in ripgrep's argument handling: the raw layer is a map of strings with where
//! each came from (deserialized with envy), then [`Settings::resolve`] validates it into typed
//! settings. An invalid value is reported against its variable, never replaced by a default.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::systemd::envfile::{self, EnvFile};

pub const DEFAULT_CONTRACT_VERSION: &str = "2026.02-p2";

/// Variables every unit of the contract must see with the same value.
pub const CONTRACT_VARS: &[&str] = &[
    "RUNTIME_CONTRACT_VERSION",
    "WATCHDOG_RUNTIME_DIR",
    "WATCHDOG_RESTART_FLAG",
    "WATCHDOG_PID_FILE",
    "WATCHDOG_STATE_FILE",
    "GUNICORN_BIND",
    "CONDA_BIN",
    "CONDA_ENV_NAME",
    "CONDA_PREFIX",
    "WARDEN_PYTHON_PREFIX",
    "WORKER_RESTART_COOLDOWN",
    "WORKER_RESTART_RETRY_BUDGET",
    "WORKER_RESTART_CHURN_THRESHOLD",
    "WORKER_RESTART_WINDOW_SECONDS",
    "WORKER_GUARDED_MODE_ENABLED",
    "WATCHDOG_RESTART_HISTORY_MAX",
];

/// Every variable warden reads.
pub const ALL_VARS: &[&str] = &[
    "RUNTIME_CONTRACT_VERSION",
    "RUNTIME_CONTRACT_ENFORCE",
    "WATCHDOG_RUNTIME_DIR",
    "WATCHDOG_RESTART_FLAG",
    "WATCHDOG_PID_FILE",
    "WATCHDOG_STATE_FILE",
    "WATCHDOG_CHECK_INTERVAL",
    "WATCHDOG_RESTART_HISTORY_MAX",
    "GUNICORN_BIND",
    "CONDA_BIN",
    "CONDA_ENV_NAME",
    "CONDA_PREFIX",
    "CONDA_DEFAULT_ENV",
    "WORKER_RESTART_COOLDOWN",
    "WORKER_RESTART_RETRY_BUDGET",
    "WORKER_RESTART_CHURN_THRESHOLD",
    "RESILIENCE_RESTART_CHURN_THRESHOLD",
    "WORKER_RESTART_WINDOW_SECONDS",
    "RESILIENCE_RESTART_CHURN_WINDOW_SECONDS",
    "WORKER_GUARDED_MODE_ENABLED",
    "WARDEN_APP_UNIT",
    "WARDEN_UNITS",
    "WARDEN_PYTHON_PREFIX",
    "WARDEN_PROJECT_ROOT",
    "WARDEN_HEALTH_URL",
    "WARDEN_ADMIN_GROUP",
    "WARDEN_RELOAD_TIMEOUT",
    "WARDEN_STATUS_FILE",
    "WARDEN_KILL_SWITCH_FILE",
    "WARDEN_METRICS_SOCKET",
    "WARDEN_METRICS_TEXTFILE",
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    Default,
    Environment,
    EnvFile {
        path: PathBuf,
        line: usize,
    },
    /// Computed from other values (e.g. the flag path from the runtime directory).
    Derived {
        from: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Environment => f.write_str("environment"),
            Source::EnvFile { path, line } => write!(f, "{}:{}", path.display(), line),
            Source::Derived { from } => write!(f, "derived from {from}"),
        }
    }
}

/// A value and its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// An env file given with `--env-file`; a leading `-` makes it optional, as in units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileArg {
    pub path: PathBuf,
    pub optional: bool,
}

impl std::str::FromStr for EnvFileArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (optional, p) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if p.is_empty() {
            return Err("empty path".into());
        }
        Ok(EnvFileArg {
            path: PathBuf::from(p),
            optional,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read env file {path}: {source}")]
    EnvFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The raw layer: each variable's last value and its source, in precedence order
/// (defaults < process environment < env files in the order given).
#[derive(Debug, Clone, Default)]
pub struct Layers {
    pub values: BTreeMap<String, (String, Source)>,
    /// Env files that were read, with what they contain (for the checks).
    pub files: Vec<(PathBuf, EnvFile)>,
    /// Optional env files that were absent.
    pub missing_optional: Vec<PathBuf>,
}

impl Layers {
    /// Reads the process environment and the env files.
    pub fn load(env_files: &[EnvFileArg]) -> Result<Self, LoadError> {
        Self::load_from(std::env::vars_os(), env_files)
    }

    pub fn load_from(
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
        env_files: &[EnvFileArg],
    ) -> Result<Self, LoadError> {
        let mut l = Layers::default();
        for (k, v) in vars {
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
                continue;
            };
            if ALL_VARS.contains(&k) {
                l.values
                    .insert(k.to_string(), (v.to_string(), Source::Environment));
            }
        }
        for arg in env_files {
            let text = match std::fs::read_to_string(&arg.path) {
                Ok(t) => t,
                Err(e) if arg.optional && e.kind() == std::io::ErrorKind::NotFound => {
                    l.missing_optional.push(arg.path.clone());
                    continue;
                }
                Err(e) => {
                    return Err(LoadError::EnvFile {
                        path: arg.path.clone(),
                        source: e,
                    });
                }
            };
            let parsed = envfile::parse(&text);
            for a in &parsed.assignments {
                if ALL_VARS.contains(&a.key.as_str()) {
                    l.values.insert(
                        a.key.clone(),
                        (
                            a.value.clone(),
                            Source::EnvFile {
                                path: arg.path.clone(),
                                line: a.line,
                            },
                        ),
                    );
                }
            }
            l.files.push((arg.path.clone(), parsed));
        }
        Ok(l)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(|(v, _)| v.as_str())
    }

    fn sourced(&self, k: &str) -> Option<Sourced<String>> {
        self.values
            .get(k)
            .map(|(v, s)| Sourced::new(v.clone(), s.clone()))
    }
}

/// The raw variables as envy maps them (every value still a string: validation is ours, so that
/// an error can name its variable and say what would be valid).
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    runtime_contract_enforce: Option<String>,
    watchdog_runtime_dir: Option<String>,
    watchdog_restart_flag: Option<String>,
    watchdog_pid_file: Option<String>,
    watchdog_state_file: Option<String>,
    watchdog_check_interval: Option<String>,
    watchdog_restart_history_max: Option<String>,
    conda_bin: Option<String>,
    conda_env_name: Option<String>,
    conda_prefix: Option<String>,
    worker_restart_cooldown: Option<String>,
    worker_restart_retry_budget: Option<String>,
    worker_restart_churn_threshold: Option<String>,
    resilience_restart_churn_threshold: Option<String>,
    worker_restart_window_seconds: Option<String>,
    resilience_restart_churn_window_seconds: Option<String>,
    worker_guarded_mode_enabled: Option<String>,
    warden_app_unit: Option<String>,
    warden_units: Option<String>,
    warden_python_prefix: Option<String>,
    warden_project_root: Option<String>,
    warden_health_url: Option<String>,
    warden_admin_group: Option<String>,
    warden_reload_timeout: Option<String>,
    warden_status_file: Option<String>,
    warden_kill_switch_file: Option<String>,
    warden_metrics_socket: Option<String>,
    warden_metrics_textfile: Option<String>,
}

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct InvalidValue {
    pub var: String,
    pub value: String,
    pub reason: String,
    pub help: String,
    /// Where the invalid value was set.
    pub origin: Source,
}

/// Churn-limiting policy settings (facts: `worker_recovery_policy.py`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyConfig {
    pub cooldown_seconds: u64,
    pub retry_budget: u32,
    pub churn_threshold: u32,
    pub window_seconds: u64,
    pub guarded_mode: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            cooldown_seconds: 60,
            retry_budget: 3,
            churn_threshold: 3,
            window_seconds: 600,
            guarded_mode: true,
        }
    }
}

/// How the Python runtime is declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    Conda,
    Venv,
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub contract_version: Sourced<String>,
    pub enforce: Sourced<bool>,
    pub runtime_dir: Sourced<PathBuf>,
    pub restart_flag: Sourced<PathBuf>,
    pub pid_file: Sourced<PathBuf>,
    pub state_file: Sourced<PathBuf>,
    pub check_interval_seconds: f64,
    pub history_max: usize,
    pub bind: Sourced<String>,
    pub runtime: RuntimeKind,
    pub conda_bin: Option<Sourced<PathBuf>>,
    pub conda_env_name: Sourced<String>,
    pub conda_prefix: Option<Sourced<PathBuf>>,
    pub conda_default_env: Option<Sourced<String>>,
    pub python_prefix: Option<Sourced<PathBuf>>,
    pub policy: PolicyConfig,
    pub app_unit: Option<String>,
    pub units: Vec<String>,
    /// Probed after a reload; 2xx is healthy.
    pub health_url: Option<crate::platform::http::HealthUrl>,
    /// Members may write the restart flag (and, over D-Bus, change things).
    pub admin_group: Option<String>,
    /// How long a reload may take to be verified.
    pub reload_timeout_seconds: u64,
    /// Where the agent publishes the status document on every change (`WARDEN_STATUS_FILE`).
    pub status_file: Option<PathBuf>,
    /// Where the agent publishes the kill-switch for the app (`WARDEN_KILL_SWITCH_FILE`).
    pub kill_switch_file: Option<PathBuf>,
    /// Unix socket serving the Prometheus metrics (`WARDEN_METRICS_SOCKET`).
    pub metrics_socket: Option<PathBuf>,
    /// node_exporter textfile (`WARDEN_METRICS_TEXTFILE`, ending in `.prom`).
    pub metrics_textfile: Option<PathBuf>,
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Normalizes a unit name as `systemctl` does (a bare name means `.service`) and validates it.
pub fn unit_name(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty()
        || s.len() > 255
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.@\\".contains(c))
    {
        return None;
    }
    Some(if s.contains('.') {
        s.to_string()
    } else {
        format!("{s}.service")
    })
}

impl Settings {
    /// Validates the raw layer. Returns the settings (with defaults standing in for invalid
    /// values, so that other checks can still run) and every invalid value found.
    pub fn resolve(layers: &Layers) -> (Settings, Vec<InvalidValue>) {
        // Shared by the validating closures below; each pushes what it rejects.
        let errors = std::cell::RefCell::new(Vec::new());
        // envy over the merged map: names map to fields, unknown names are ignored.
        let raw: RawEnv = envy::from_iter(
            layers
                .values
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone())),
        )
        .unwrap_or_default();
        let src = |k: &str| {
            layers
                .values
                .get(k)
                .map(|(_, s)| s.clone())
                .unwrap_or(Source::Default)
        };
        let invalid = |var: &str, value: &str, reason: &str, help: &str| {
            errors.borrow_mut().push(InvalidValue {
                var: var.into(),
                value: value.into(),
                reason: reason.into(),
                help: help.into(),
                origin: src(var),
            });
        };

        let project_root = raw
            .warden_project_root
            .as_deref()
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let absolutize = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                project_root.join(p)
            }
        };

        let path_var =
            |var: &str, raw: &Option<String>, default: PathBuf, from: &str| match raw.as_deref() {
                Some("") => {
                    invalid(
                        var,
                        "",
                        "is empty",
                        &format!("remove {var} to use the default, or set an absolute path"),
                    );
                    Sourced::new(default, Source::Default)
                }
                Some(v) if v.contains('\0') => {
                    invalid(var, v, "contains a NUL byte", "set a valid absolute path");
                    Sourced::new(default, Source::Default)
                }
                Some(v) => Sourced::new(absolutize(v), src(var)),
                None => Sourced::new(
                    default,
                    if from.is_empty() {
                        Source::Default
                    } else {
                        Source::Derived { from: from.into() }
                    },
                ),
            };

        let runtime_dir = path_var(
            "WATCHDOG_RUNTIME_DIR",
            &raw.watchdog_runtime_dir,
            project_root.join("tmp"),
            "",
        );
        let restart_flag = path_var(
            "WATCHDOG_RESTART_FLAG",
            &raw.watchdog_restart_flag,
            runtime_dir.value.join("mes_dashboard_restart.flag"),
            "WATCHDOG_RUNTIME_DIR",
        );
        let pid_file = path_var(
            "WATCHDOG_PID_FILE",
            &raw.watchdog_pid_file,
            runtime_dir.value.join("gunicorn.pid"),
            "WATCHDOG_RUNTIME_DIR",
        );
        let state_default = runtime_dir.value.join("mes_dashboard_restart_state.json");
        let state_file = match raw.watchdog_state_file.as_deref() {
            Some(v) if !Path::new(v).is_absolute() => {
                invalid(
                    "WATCHDOG_STATE_FILE",
                    v,
                    "is not an absolute path",
                    "set an absolute path on persistent storage, e.g. /var/lib/mes-dashboard/restart_state.json",
                );
                Sourced::new(state_default, Source::Default)
            }
            _ => path_var(
                "WATCHDOG_STATE_FILE",
                &raw.watchdog_state_file,
                state_default,
                "WATCHDOG_RUNTIME_DIR",
            ),
        };

        let boolean = |var: &str, raw: &Option<String>, default: bool| match raw.as_deref() {
            None => Sourced::new(default, Source::Default),
            Some(v) => match parse_bool(v) {
                Some(b) => Sourced::new(b, src(var)),
                None => {
                    invalid(
                        var,
                        v,
                        "is not a boolean",
                        "use one of 1/true/yes/on or 0/false/no/off",
                    );
                    Sourced::new(default, Source::Default)
                }
            },
        };
        let enforce = boolean(
            "RUNTIME_CONTRACT_ENFORCE",
            &raw.runtime_contract_enforce,
            true,
        );
        let guarded = boolean(
            "WORKER_GUARDED_MODE_ENABLED",
            &raw.worker_guarded_mode_enabled,
            true,
        );

        // Integer variables with a lower bound, falling back to a second name where the original
        // does.
        let integer = |names: &[&str], raws: &[&Option<String>], default: u64, min: u64| {
            for (var, raw) in names.iter().zip(raws) {
                if let Some(v) = raw.as_deref() {
                    return match v.trim().parse::<u64>() {
                        Ok(n) if n >= min => n,
                        Ok(_) => {
                            invalid(
                                var,
                                v,
                                &format!("is below the minimum of {min}"),
                                &format!("set {var} to a whole number ≥ {min} (default {default})"),
                            );
                            default
                        }
                        Err(_) => {
                            invalid(
                                var,
                                v,
                                "is not a whole number",
                                &format!("set {var} to a whole number ≥ {min} (default {default})"),
                            );
                            default
                        }
                    };
                }
            }
            default
        };
        let cooldown = integer(
            &["WORKER_RESTART_COOLDOWN"],
            &[&raw.worker_restart_cooldown],
            60,
            1,
        );
        let budget = integer(
            &["WORKER_RESTART_RETRY_BUDGET"],
            &[&raw.worker_restart_retry_budget],
            3,
            1,
        );
        let churn = integer(
            &[
                "WORKER_RESTART_CHURN_THRESHOLD",
                "RESILIENCE_RESTART_CHURN_THRESHOLD",
            ],
            &[
                &raw.worker_restart_churn_threshold,
                &raw.resilience_restart_churn_threshold,
            ],
            3,
            1,
        );
        let window = integer(
            &[
                "WORKER_RESTART_WINDOW_SECONDS",
                "RESILIENCE_RESTART_CHURN_WINDOW_SECONDS",
            ],
            &[
                &raw.worker_restart_window_seconds,
                &raw.resilience_restart_churn_window_seconds,
            ],
            600,
            30,
        );
        let history_max = integer(
            &["WATCHDOG_RESTART_HISTORY_MAX"],
            &[&raw.watchdog_restart_history_max],
            50,
            1,
        );
        let check_interval = match raw.watchdog_check_interval.as_deref() {
            None => 5.0,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(n) if n.is_finite() && n > 0.0 => n,
                _ => {
                    invalid(
                        "WATCHDOG_CHECK_INTERVAL",
                        v,
                        "is not a positive number of seconds",
                        "set WATCHDOG_CHECK_INTERVAL to a number > 0 (default 5)",
                    );
                    5.0
                }
            },
        };

        let app_unit = match raw.warden_app_unit.as_deref() {
            None | Some("") => None,
            Some(v) => match unit_name(v) {
                Some(n) => Some(n),
                None => {
                    invalid(
                        "WARDEN_APP_UNIT",
                        v,
                        "is not a valid unit name",
                        "set the Gunicorn unit's name, e.g. mes-dashboard.service",
                    );
                    None
                }
            },
        };
        let mut units = Vec::new();
        for part in raw
            .warden_units
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match unit_name(part) {
                Some(n) if Some(&n) != app_unit.as_ref() && !units.contains(&n) => units.push(n),
                Some(_) => {}
                None => invalid(
                    "WARDEN_UNITS",
                    part,
                    "is not a valid unit name",
                    "list unit names separated by commas, e.g. mes-dashboard-watchdog.service,mes-dashboard-worker@1.service",
                ),
            }
        }

        let health_url = match raw.warden_health_url.as_deref() {
            None | Some("") => None,
            Some(v) => match v.parse::<crate::platform::http::HealthUrl>() {
                Ok(u) => Some(u),
                Err(why) => {
                    invalid(
                        "WARDEN_HEALTH_URL",
                        v,
                        &why,
                        "set an http:// URL of the app on this machine, e.g. http://127.0.0.1:8080/health",
                    );
                    None
                }
            },
        };
        let reload_timeout = integer(
            &["WARDEN_RELOAD_TIMEOUT"],
            &[&raw.warden_reload_timeout],
            30,
            1,
        );
        let admin_group = raw.warden_admin_group.clone().filter(|g| !g.is_empty());
        let opt_path = |var: &str, raw: &Option<String>| {
            raw.as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| Sourced::new(absolutize(v), src(var)))
        };
        let plain_path =
            |var: &str, raw: &Option<String>| opt_path(var, raw).map(|p: Sourced<PathBuf>| p.value);
        let status_file = plain_path("WARDEN_STATUS_FILE", &raw.warden_status_file);
        let kill_switch_file = plain_path("WARDEN_KILL_SWITCH_FILE", &raw.warden_kill_switch_file);
        let metrics_socket = plain_path("WARDEN_METRICS_SOCKET", &raw.warden_metrics_socket);
        let metrics_textfile = plain_path("WARDEN_METRICS_TEXTFILE", &raw.warden_metrics_textfile);
        if let Some(p) = &metrics_textfile
            && p.extension().is_none_or(|e| e != "prom")
        {
            invalid(
                "WARDEN_METRICS_TEXTFILE",
                &p.display().to_string(),
                "node_exporter's textfile collector reads only files ending in .prom",
                "name a file ending in .prom in the collector's directory",
            );
        }
        let conda_bin = opt_path("CONDA_BIN", &raw.conda_bin);
        let conda_prefix = opt_path("CONDA_PREFIX", &raw.conda_prefix);
        let python_prefix = opt_path("WARDEN_PYTHON_PREFIX", &raw.warden_python_prefix);
        let runtime = if conda_bin.is_none()
            && conda_prefix.is_none()
            && raw.conda_env_name.is_none()
            && python_prefix.is_some()
        {
            RuntimeKind::Venv
        } else {
            RuntimeKind::Conda
        };

        let settings = Settings {
            contract_version: layers
                .sourced("RUNTIME_CONTRACT_VERSION")
                .filter(|s| !s.value.is_empty())
                .unwrap_or_else(|| Sourced::new(DEFAULT_CONTRACT_VERSION.into(), Source::Default)),
            enforce,
            runtime_dir,
            restart_flag,
            pid_file,
            state_file,
            check_interval_seconds: check_interval,
            history_max: history_max as usize,
            bind: layers
                .sourced("GUNICORN_BIND")
                .unwrap_or_else(|| Sourced::new("0.0.0.0:8080".into(), Source::Default)),
            runtime,
            conda_bin,
            conda_env_name: layers
                .sourced("CONDA_ENV_NAME")
                .filter(|s| !s.value.is_empty())
                .unwrap_or_else(|| Sourced::new("mes-dashboard".into(), Source::Default)),
            conda_prefix,
            conda_default_env: layers
                .sourced("CONDA_DEFAULT_ENV")
                .filter(|s| !s.value.is_empty()),
            python_prefix,
            policy: PolicyConfig {
                cooldown_seconds: cooldown,
                retry_budget: budget.min(u32::MAX as u64) as u32,
                churn_threshold: churn.min(u32::MAX as u64) as u32,
                window_seconds: window,
                guarded_mode: guarded.value,
            },
            app_unit,
            units,
            health_url,
            admin_group,
            reload_timeout_seconds: reload_timeout,
            status_file,
            kill_switch_file,
            metrics_socket,
            metrics_textfile,
        };
        (settings, errors.into_inner())
    }

    /// The app unit first, then the other units of the contract.
    pub fn all_units(&self) -> Vec<String> {
        self.app_unit
            .iter()
            .cloned()
            .chain(self.units.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layers(vars: &[(&str, &str)]) -> Layers {
        Layers::load_from(vars.iter().map(|(k, v)| (k.into(), v.into())), &[]).unwrap()
    }

    #[test]
    fn defaults_follow_the_original() {
        let (s, errs) = Settings::resolve(&layers(&[("WARDEN_PROJECT_ROOT", "/srv/app")]));
        assert!(errs.is_empty());
        assert_eq!(s.runtime_dir.value, PathBuf::from("/srv/app/tmp"));
        assert_eq!(
            s.restart_flag.value,
            PathBuf::from("/srv/app/tmp/mes_dashboard_restart.flag")
        );
        assert_eq!(s.pid_file.value, PathBuf::from("/srv/app/tmp/gunicorn.pid"));
        assert_eq!(s.policy, PolicyConfig::default());
        assert_eq!(s.bind.value, "0.0.0.0:8080");
        assert_eq!(s.contract_version.value, DEFAULT_CONTRACT_VERSION);
        assert!(s.enforce.value);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let (s, errs) = Settings::resolve(&layers(&[
            ("WORKER_RESTART_COOLDOWN", "soon"),
            ("WORKER_RESTART_WINDOW_SECONDS", "10"),
            ("WATCHDOG_STATE_FILE", "state.json"),
            ("WORKER_GUARDED_MODE_ENABLED", "maybe"),
            ("WARDEN_UNITS", "ok.service, bad/unit"),
        ]));
        let vars: Vec<_> = errs.iter().map(|e| e.var.as_str()).collect();
        assert_eq!(
            vars,
            vec![
                "WATCHDOG_STATE_FILE",
                "WORKER_GUARDED_MODE_ENABLED",
                "WORKER_RESTART_COOLDOWN",
                "WORKER_RESTART_WINDOW_SECONDS",
                "WARDEN_UNITS"
            ]
        );
        assert_eq!(s.units, vec!["ok.service"]);
    }

    #[test]
    fn fallback_names_and_booleans() {
        let (s, errs) = Settings::resolve(&layers(&[
            ("RESILIENCE_RESTART_CHURN_THRESHOLD", "5"),
            ("RESILIENCE_RESTART_CHURN_WINDOW_SECONDS", "120"),
            ("WORKER_GUARDED_MODE_ENABLED", "Off"),
            ("RUNTIME_CONTRACT_ENFORCE", "no"),
            ("WARDEN_APP_UNIT", "mes-dashboard"),
        ]));
        assert!(errs.is_empty());
        assert_eq!(s.policy.churn_threshold, 5);
        assert_eq!(s.policy.window_seconds, 120);
        assert!(!s.policy.guarded_mode);
        assert!(!s.enforce.value);
        assert_eq!(s.app_unit.as_deref(), Some("mes-dashboard.service"));
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
        let (s, _) = Settings::resolve(&l);
        assert_eq!(s.bind.value, "127.0.0.1:9000");
        assert_eq!(s.bind.source, Source::EnvFile { path: f, line: 2 });
        assert_eq!(l.missing_optional.len(), 1);
        assert!(
            Layers::load_from(std::iter::empty(), &["/nonexistent/x.env".parse().unwrap()])
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn any_values_resolve_without_panic(
            vals in proptest::collection::vec(("[A-Z_]{1,3}", "\\PC{0,20}"), 0..10),
            pick in proptest::collection::vec(0usize..ALL_VARS.len(), 0..10),
        ) {
            let vars: Vec<(&str, &str)> = pick.iter().zip(vals.iter()).map(|(i, (_, v))| (ALL_VARS[*i], v.as_str())).collect();
            let (s, _) = Settings::resolve(&layers(&vars));
            prop_assert!(s.policy.cooldown_seconds >= 1);
            prop_assert!(s.policy.window_seconds >= 30);
            prop_assert!(s.state_file.value.is_absolute() || !s.runtime_dir.value.is_absolute());
        }
    }
}
