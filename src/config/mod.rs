//! Configuration: the runtime contract's variables (compatible with the MES dashboard's names and
//! defaults) and warden's own, read from the process environment and `--env-file` files.
//!
//! Three stages, as in ripgrep's argument handling: [`Layers`] is the raw text of each variable
//! with where it was set; [`Settings::resolve`] reads it through the [variable table](vars)
//! into typed settings, purely; [`load`] does both with the I/O (the environment, the files,
//! the working directory). An invalid value is reported against its variable, never replaced
//! silently: the settings carry the default in its place, so that other checks can still run,
//! and the caller decides what an invalid value means for it ([`Loaded::strict`]).

pub mod instance;
mod layers;
mod resolve;
pub mod values;
pub mod vars;

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};

pub use layers::{EnvFileArg, Layers, LoadError, Source, Sourced};
pub use values::{
    AlertMatchers, AutoRecovery, BindAddr, HttpUrls, JsonPath, ProbeInterval, Ratio, Unreachable,
    UnreachableRules,
};

use crate::platform::http::{Endpoint, HealthUrl};

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {reason}")]
pub struct InvalidValue {
    /// The name it was set under (a variable's or a fallback's).
    pub var: &'static str,
    pub value: String,
    pub reason: String,
    pub help: String,
    /// Where the invalid value was set.
    pub origin: Source,
}

/// Churn-limiting policy settings (the original's `worker_recovery_policy.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyConfig {
    pub cooldown: Duration,
    pub retry_budget: NonZeroU32,
    pub churn_threshold: NonZeroU32,
    pub window: Duration,
    pub guarded_mode: bool,
}

impl PolicyConfig {
    /// The policy of the variables' defaults.
    pub fn defaults() -> PolicyConfig {
        Settings::resolve(&Layers::default(), std::path::Path::new("/"))
            .0
            .policy
    }
}

/// In the contract's JSON, in the variables' units.
impl Serialize for PolicyConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("PolicyConfig", 5)?;
        st.serialize_field("cooldown_seconds", &self.cooldown.as_secs())?;
        st.serialize_field("retry_budget", &self.retry_budget)?;
        st.serialize_field("churn_threshold", &self.churn_threshold)?;
        st.serialize_field("window_seconds", &self.window.as_secs())?;
        st.serialize_field("guarded_mode", &self.guarded_mode)?;
        st.end()
    }
}

/// How the Python runtime is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeKind {
    Conda,
    Venv,
}

fn as_seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

fn as_opt_seconds<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_u64(d.as_secs()),
        None => s.serialize_none(),
    }
}

fn as_fractional_seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Where the app's health document keeps the fields the recommendation reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldPaths {
    pub degraded_reason: JsonPath,
    pub pool_saturation: JsonPath,
    pub circuit_state: JsonPath,
}

impl Default for FieldPaths {
    /// The MES dashboard's `/health`.
    fn default() -> Self {
        let p = |s: &str| JsonPath(s.to_string());
        FieldPaths {
            degraded_reason: p("degraded_reason"),
            pool_saturation: p("database_pool.state.saturation"),
            circuit_state: p("circuit_breaker.state"),
        }
    }
}

/// The agent's probes of the app (`WARDEN_PROBE_*`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeSettings {
    pub url: HealthUrl,
    #[serde(rename = "interval_seconds", serialize_with = "as_fractional_seconds")]
    pub interval: Duration,
    #[serde(rename = "timeout_seconds", serialize_with = "as_fractional_seconds")]
    pub timeout: Duration,
    pub fields: FieldPaths,
}

/// What the agent does with its probes (`WARDEN_AUTO_RECOVERY`, `WARDEN_RECOVERY_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RecoverySettings {
    pub mode: AutoRecovery,
    /// Restartable probes among the last `2 × probes − 1` that ask for a restart.
    pub probes: u32,
    #[serde(rename = "settle_seconds", serialize_with = "as_seconds")]
    pub settle: Duration,
}

/// The app's resilience thresholds (the original's `RESILIENCE_*`), as the status document and
/// the alerts use them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResilienceThresholds {
    pub degraded_alert_seconds: u64,
    pub pool_saturation_warning: f64,
    pub pool_saturation_critical: f64,
}

/// Reload slots shared by the hosts of a group (`WARDEN_ETCD_ENDPOINTS`, `WARDEN_FLEET_*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetSettings {
    pub endpoints: Vec<Endpoint>,
    /// The CA that signs the members' certificates (else the system's bundle).
    pub cacert: Option<PathBuf>,
    /// A client certificate and its key.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// etcd's user, and the file holding its password.
    pub user: Option<(String, PathBuf)>,
    /// `None`: the app's name.
    pub group: Option<String>,
    /// `None`: `<machine id>/<app>`.
    pub holder: Option<String>,
    pub slots: u32,
    #[serde(rename = "lease_seconds", serialize_with = "as_seconds")]
    pub lease: Duration,
    /// How long a restart waits for a slot.
    #[serde(rename = "wait_seconds", serialize_with = "as_seconds")]
    pub wait: Duration,
    pub unreachable: UnreachableRules,
}

impl Settings {
    /// The longest a restart request may rightly take: the preflight, the wait for a fleet
    /// slot and the reload. Past it (and a grace) the executor counts as hung.
    pub fn longest_request(&self) -> Duration {
        self.reload_timeout
            + self.preflight.unwrap_or_default()
            + self.fleet.as_ref().map(|f| f.wait).unwrap_or_default()
    }
}

/// The alert gate (`WARDEN_ALERTMANAGER_URL`, `WARDEN_ALERT_MATCHERS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlertGateSettings {
    pub url: HealthUrl,
    pub matchers: AlertMatchers,
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
    pub history_max: NonZeroUsize,
    pub bind: Sourced<BindAddr>,
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
    pub health_url: Option<HealthUrl>,
    /// Members may write the restart flag (and, over D-Bus, change things).
    pub admin_group: Option<String>,
    /// How long a reload may take to be verified.
    #[serde(rename = "reload_timeout_seconds", serialize_with = "as_seconds")]
    pub reload_timeout: Duration,
    /// Before every SIGHUP the app's Gunicorn checks its configuration and application, within
    /// this time; `None` when turned off.
    #[serde(
        rename = "preflight_timeout_seconds",
        serialize_with = "as_opt_seconds"
    )]
    pub preflight: Option<Duration>,
    /// The agent's probes of the app; `None` without a health URL or with the interval `off`.
    pub probe: Option<ProbeSettings>,
    pub recovery: RecoverySettings,
    pub resilience: ResilienceThresholds,
    /// Coordination across hosts; `None` while `WARDEN_ETCD_ENDPOINTS` is empty.
    pub fleet: Option<FleetSettings>,
    /// Automatic restarts wait while these alerts fire; `None` without Alertmanager.
    pub alert_gate: Option<AlertGateSettings>,
    /// Where the agent publishes the status document on every change.
    pub status_file: Option<PathBuf>,
    /// Where the agent publishes the kill-switch for the app.
    pub kill_switch_file: Option<PathBuf>,
    /// Unix socket serving the Prometheus metrics.
    pub metrics_socket: Option<PathBuf>,
    /// node_exporter textfile (its name ends in `.prom`).
    pub metrics_textfile: Option<PathBuf>,
    /// Every variable's value as the contract states it, and where it came from (unset
    /// variables without a default are absent). Scripts and docs are compared with these.
    #[serde(skip)]
    pub stated: BTreeMap<&'static str, Sourced<String>>,
}

impl Settings {
    /// The settings of the variables' defaults.
    pub fn defaults() -> Settings {
        Settings::resolve(&Layers::default(), std::path::Path::new("/")).0
    }

    /// The app unit first, then the other units of the contract.
    pub fn all_units(&self) -> Vec<String> {
        self.app_unit
            .iter()
            .cloned()
            .chain(self.units.iter().cloned())
            .collect()
    }

    /// The value the contract states for `var`, as text.
    pub fn stated(&self, var: &vars::Var) -> Option<&Sourced<String>> {
        self.stated.get(var.name)
    }
}

/// What [`load`] read: the raw layer, the settings, and every invalid value.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub layers: Layers,
    pub settings: Settings,
    pub invalid: Vec<InvalidValue>,
}

impl Loaded {
    /// The settings, for a command that acts on them: an invalid value is an error.
    pub fn strict(self) -> Result<Settings, Box<InvalidValue>> {
        match self.invalid.into_iter().next() {
            Some(i) => Err(Box::new(i)),
            None => Ok(self.settings),
        }
    }
}

/// Reads the process environment and `env_files`, and resolves the settings. The project root
/// defaults to the working directory.
pub fn load(env_files: &[EnvFileArg]) -> Result<Loaded, LoadError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    load_rooted(env_files, &cwd)
}

/// As [`load`], with `default_root` for the project root (the app unit's `WorkingDirectory=`).
pub fn load_rooted(env_files: &[EnvFileArg], default_root: &Path) -> Result<Loaded, LoadError> {
    Ok(resolved(Layers::load(env_files)?, default_root))
}

/// Resolves layers already read.
pub fn resolved(layers: Layers, default_root: &Path) -> Loaded {
    let (settings, invalid) = Settings::resolve(&layers, default_root);
    Loaded {
        layers,
        settings,
        invalid,
    }
}

#[cfg(test)]
mod tests;
