//! The configuration variables: one table, from which the settings are resolved, the contract's
//! values are compared in scripts and docs, `warden contract` prints, and the README's
//! configuration table is rendered (a test keeps the README equal to it).
//!
//! The names, defaults and fallbacks of the original's variables are its own; warden's are
//! prefixed `WARDEN_`.

use std::fmt::Write as _;

/// A configuration variable.
#[derive(Debug, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// Read, in order, when the variable itself is not set (as the original does).
    pub fallbacks: &'static [&'static str],
    pub default: Default,
    pub kind: Kind,
    /// Every unit of the contract must see the same value.
    pub contract: bool,
    /// What it is (the README's meaning column, before the kind's constraint).
    pub help: &'static str,
    /// A value to show in a fix hint.
    pub example: &'static str,
}

/// A variable's value when it is not set.
#[derive(Debug, PartialEq, Eq)]
pub enum Default {
    /// This text, read as if it had been set.
    Text(&'static str),
    /// No value: the feature is off, or another variable decides.
    Unset,
    /// The working directory.
    WorkingDir,
    /// A path under the project root (`WARDEN_PROJECT_ROOT`).
    UnderRoot(&'static str),
    /// A file in the directory another variable names.
    UnderVar(&'static Var, &'static str),
    /// Another variable's value.
    SameAs(&'static Var),
}

/// What a variable holds, and so how its text is read and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// `1/true/yes/on` or `0/false/no/off`.
    Bool,
    /// A whole number of at least `min`.
    Count {
        min: u64,
    },
    /// A whole number of seconds, at least `min`.
    Seconds {
        min: u64,
    },
    /// A number of seconds above 0, fractions allowed.
    PositiveSeconds,
    /// A path; a relative one is joined to the project root.
    Path,
    /// A file for node_exporter's textfile collector: its name ends in `.prom`.
    PromFile,
    /// One TCP `host:port`.
    Bind,
    /// An `http://` URL on this machine.
    HttpUrl,
    /// A unit name (a bare name gets `.service`).
    Unit,
    /// Unit names, comma-separated.
    Units,
    /// A group name or gid.
    Group,
    /// A number of seconds above 0, fractions allowed, or `off`.
    SecondsOrOff,
    /// One of these words.
    Words(&'static [&'static str]),
    /// A number ≥ 0, fractions allowed.
    Ratio,
    /// Object keys of a JSON document, joined by dots.
    JsonPath,
    /// `http://` or `https://` URLs, comma-separated.
    HttpUrls,
    /// `who=action` pairs, comma-separated (what a restart does without etcd, per source).
    SourceActions,
    /// Alertmanager label matchers.
    Matchers,
}

impl Var {
    /// Every name the variable is read under: its own, then its fallbacks.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        std::iter::once(self.name).chain(self.fallbacks.iter().copied())
    }

    /// The default as the README writes it.
    pub fn default_text(&self) -> String {
        match &self.default {
            Default::Text(t) => format!("`{t}`"),
            Default::Unset => "(unset)".into(),
            Default::WorkingDir => "see meaning".into(),
            Default::UnderRoot(p) => format!("`<root>/{p}`"),
            Default::UnderVar(v, f) => format!("`<{}>/{f}`", short(v.name)),
            Default::SameAs(v) => format!("`{}`", v.name),
        }
    }

    /// The README's meaning: the help, the kind's constraint, the fallbacks.
    pub fn meaning(&self) -> String {
        let mut m = self.help.to_string();
        match self.kind {
            Kind::Count { min } | Kind::Seconds { min } => {
                let _ = write!(m, ", ≥ {min}");
            }
            Kind::PositiveSeconds => m.push_str(", > 0"),
            Kind::SecondsOrOff => m.push_str(", > 0, or `off`"),
            Kind::Ratio => m.push_str(", ≥ 0"),
            Kind::Words(words) => {
                let w: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
                let _ = write!(m, "; one of {}", w.join(", "));
            }
            _ => {}
        }
        if !self.fallbacks.is_empty() {
            let names: Vec<String> = self.fallbacks.iter().map(|f| format!("`{f}`")).collect();
            let _ = write!(m, " (falls back to {})", names.join(", then "));
        }
        m
    }
}

/// `WATCHDOG_RUNTIME_DIR` → `runtime_dir`, for the README's derived defaults.
fn short(name: &str) -> String {
    name.strip_prefix("WATCHDOG_")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

pub static RUNTIME_CONTRACT_VERSION: Var = Var {
    name: "RUNTIME_CONTRACT_VERSION",
    fallbacks: &[],
    default: Default::Text("2026.02-p2"),
    kind: Kind::Text,
    contract: true,
    help: "the contract's version; must be the same wherever declared",
    example: "2026.02-p2",
};

pub static RUNTIME_CONTRACT_ENFORCE: Var = Var {
    name: "RUNTIME_CONTRACT_ENFORCE",
    fallbacks: &[],
    default: Default::Text("true"),
    kind: Kind::Bool,
    contract: false,
    help: "`false`: report findings as warnings and exit 0",
    example: "true",
};

pub static WATCHDOG_RUNTIME_DIR: Var = Var {
    name: "WATCHDOG_RUNTIME_DIR",
    fallbacks: &[],
    default: Default::UnderRoot("tmp"),
    kind: Kind::Path,
    contract: true,
    help: "runtime directory (production: `/run/mes-dashboard`)",
    example: "/run/mes-dashboard",
};

pub static WATCHDOG_RESTART_FLAG: Var = Var {
    name: "WATCHDOG_RESTART_FLAG",
    fallbacks: &[],
    default: Default::UnderVar(&WATCHDOG_RUNTIME_DIR, "mes_dashboard_restart.flag"),
    kind: Kind::Path,
    contract: true,
    help: "restart flag",
    example: "/run/mes-dashboard/mes_dashboard_restart.flag",
};

pub static WATCHDOG_PID_FILE: Var = Var {
    name: "WATCHDOG_PID_FILE",
    fallbacks: &[],
    default: Default::UnderVar(&WATCHDOG_RUNTIME_DIR, "gunicorn.pid"),
    kind: Kind::Path,
    contract: true,
    help: "gunicorn's PID file",
    example: "/run/mes-dashboard/gunicorn.pid",
};

pub static WATCHDOG_STATE_FILE: Var = Var {
    name: "WATCHDOG_STATE_FILE",
    fallbacks: &[],
    default: Default::UnderVar(&WATCHDOG_RUNTIME_DIR, "mes_dashboard_restart_state.json"),
    kind: Kind::Path,
    contract: true,
    help: "restart history (production: `/var/lib/mes-dashboard/restart_state.json`; a relative path is a warning, `P08`)",
    example: "/var/lib/mes-dashboard/restart_state.json",
};

pub static WATCHDOG_CHECK_INTERVAL: Var = Var {
    name: "WATCHDOG_CHECK_INTERVAL",
    fallbacks: &[],
    default: Default::Text("5"),
    kind: Kind::PositiveSeconds,
    contract: false,
    help: "the original's poll interval in seconds (checked only: warden does not poll)",
    example: "5",
};

pub static WATCHDOG_RESTART_HISTORY_MAX: Var = Var {
    name: "WATCHDOG_RESTART_HISTORY_MAX",
    fallbacks: &[],
    default: Default::Text("50"),
    kind: Kind::Count { min: 1 },
    contract: true,
    help: "history entries kept",
    example: "50",
};

pub static GUNICORN_BIND: Var = Var {
    name: "GUNICORN_BIND",
    fallbacks: &[],
    default: Default::Text("0.0.0.0:8080"),
    kind: Kind::Bind,
    contract: true,
    help: "the one `host:port` gunicorn binds",
    example: "0.0.0.0:8080",
};

pub static CONDA_BIN: Var = Var {
    name: "CONDA_BIN",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: true,
    help: "`<root>/bin/conda` of the install",
    example: "/opt/miniconda3/bin/conda",
};

pub static CONDA_ENV_NAME: Var = Var {
    name: "CONDA_ENV_NAME",
    fallbacks: &[],
    default: Default::Text("mes-dashboard"),
    kind: Kind::Text,
    contract: true,
    help: "the environment's name (`base` is the root)",
    example: "mes-dashboard",
};

pub static CONDA_PREFIX: Var = Var {
    name: "CONDA_PREFIX",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: true,
    help: "the environment's prefix, overriding the two above",
    example: "/opt/miniconda3/envs/mes-dashboard",
};

pub static CONDA_DEFAULT_ENV: Var = Var {
    name: "CONDA_DEFAULT_ENV",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Text,
    contract: false,
    help: "when set, must name the same environment",
    example: "mes-dashboard",
};

pub static WORKER_RESTART_COOLDOWN: Var = Var {
    name: "WORKER_RESTART_COOLDOWN",
    fallbacks: &[],
    default: Default::Text("60"),
    kind: Kind::Seconds { min: 1 },
    contract: true,
    help: "seconds between restarts",
    example: "60",
};

pub static WORKER_RESTART_RETRY_BUDGET: Var = Var {
    name: "WORKER_RESTART_RETRY_BUDGET",
    fallbacks: &[],
    default: Default::Text("3"),
    kind: Kind::Count { min: 1 },
    contract: true,
    help: "restarts per window before guarded mode blocks",
    example: "3",
};

pub static WORKER_RESTART_CHURN_THRESHOLD: Var = Var {
    name: "WORKER_RESTART_CHURN_THRESHOLD",
    fallbacks: &["RESILIENCE_RESTART_CHURN_THRESHOLD"],
    // The original's: unset, the churn threshold is the retry budget.
    default: Default::SameAs(&WORKER_RESTART_RETRY_BUDGET),
    kind: Kind::Count { min: 1 },
    contract: true,
    help: "churn threshold",
    example: "3",
};

pub static WORKER_RESTART_WINDOW_SECONDS: Var = Var {
    name: "WORKER_RESTART_WINDOW_SECONDS",
    fallbacks: &["RESILIENCE_RESTART_CHURN_WINDOW_SECONDS"],
    default: Default::Text("600"),
    kind: Kind::Seconds { min: 30 },
    contract: true,
    help: "churn window",
    example: "600",
};

pub static WORKER_GUARDED_MODE_ENABLED: Var = Var {
    name: "WORKER_GUARDED_MODE_ENABLED",
    fallbacks: &[],
    default: Default::Text("true"),
    kind: Kind::Bool,
    contract: true,
    help: "guarded mode: block restarts past the retry budget or the churn threshold",
    example: "true",
};

pub static WARDEN_APP_UNIT: Var = Var {
    name: "WARDEN_APP_UNIT",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Unit,
    contract: false,
    help: "the Gunicorn unit, e.g. `mes-dashboard.service` (a bare name gets `.service`)",
    example: "mes-dashboard.service",
};

pub static WARDEN_UNITS: Var = Var {
    name: "WARDEN_UNITS",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Units,
    contract: false,
    help: "the other units of the contract, comma-separated",
    example: "mes-dashboard-watchdog.service,mes-dashboard-worker@1.service",
};

pub static WARDEN_PYTHON_PREFIX: Var = Var {
    name: "WARDEN_PYTHON_PREFIX",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: true,
    help: "a plain venv's prefix, when no `CONDA_*` variable is set",
    example: "/opt/app/venv",
};

pub static MES_DASHBOARD_ROOT: Var = Var {
    name: "MES_DASHBOARD_ROOT",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "the original's project root: when set, relative paths are joined to it, as the original joins them",
    example: "/opt/mes-dashboard",
};

pub static WARDEN_PROJECT_ROOT: Var = Var {
    name: "WARDEN_PROJECT_ROOT",
    fallbacks: &[],
    default: Default::WorkingDir,
    kind: Kind::Path,
    contract: false,
    help: "the root relative paths are joined to when `MES_DASHBOARD_ROOT` is not set (default: the app unit's `WorkingDirectory=`, else the working directory)",
    example: "/opt/mes-dashboard",
};

pub static WARDEN_HEALTH_URL: Var = Var {
    name: "WARDEN_HEALTH_URL",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::HttpUrl,
    contract: false,
    help: "`http://` URL of the app probed after a reload and, every `WARDEN_PROBE_INTERVAL`, by the agent; 2xx is healthy",
    example: "http://127.0.0.1:8080/health",
};

pub static WARDEN_ADMIN_GROUP: Var = Var {
    name: "WARDEN_ADMIN_GROUP",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Group,
    contract: false,
    help: "members may write the restart flag and call the mutating D-Bus methods",
    example: "warden-admin",
};

pub static WARDEN_RELOAD_TIMEOUT: Var = Var {
    name: "WARDEN_RELOAD_TIMEOUT",
    fallbacks: &[],
    default: Default::Text("30"),
    kind: Kind::Seconds { min: 1 },
    contract: false,
    help: "seconds a reload may take to be verified",
    example: "30",
};

pub static WARDEN_PREFLIGHT: Var = Var {
    name: "WARDEN_PREFLIGHT",
    fallbacks: &[],
    default: Default::Text("true"),
    kind: Kind::Bool,
    contract: false,
    help: "before every SIGHUP, the app's own Gunicorn loads its configuration and application (`--check-config`, as the master runs: its argv, environment, directory and user); a failure signals nothing. `false` for an app whose import is too costly to repeat",
    example: "true",
};

pub static WARDEN_PREFLIGHT_TIMEOUT: Var = Var {
    name: "WARDEN_PREFLIGHT_TIMEOUT",
    fallbacks: &[],
    default: Default::Text("60"),
    kind: Kind::Seconds { min: 1 },
    contract: false,
    help: "seconds the preflight may take; a slower one fails the reload",
    example: "60",
};

pub static WARDEN_PROBE_INTERVAL: Var = Var {
    name: "WARDEN_PROBE_INTERVAL",
    fallbacks: &[],
    default: Default::Text("10"),
    kind: Kind::SecondsOrOff,
    contract: false,
    help: "seconds between the agent's probes of `WARDEN_HEALTH_URL` (its status, latency and health document) and of the master's workers; probes run only when the URL is set",
    example: "10",
};

pub static WARDEN_PROBE_TIMEOUT: Var = Var {
    name: "WARDEN_PROBE_TIMEOUT",
    fallbacks: &[],
    default: Default::Text("2"),
    kind: Kind::PositiveSeconds,
    contract: false,
    help: "seconds a probe may take; a slower answer is a failing probe",
    example: "2",
};

pub static WARDEN_PROBE_DEGRADED_FIELD: Var = Var {
    name: "WARDEN_PROBE_DEGRADED_FIELD",
    fallbacks: &[],
    default: Default::Text("degraded_reason"),
    kind: Kind::JsonPath,
    contract: false,
    help: "where the health document names why the app is degraded (`null` or absent: it is not)",
    example: "degraded_reason",
};

pub static WARDEN_PROBE_SATURATION_FIELD: Var = Var {
    name: "WARDEN_PROBE_SATURATION_FIELD",
    fallbacks: &[],
    default: Default::Text("database_pool.state.saturation"),
    kind: Kind::JsonPath,
    contract: false,
    help: "where the health document gives its database pool's saturation (1.0 is full)",
    example: "database_pool.state.saturation",
};

pub static WARDEN_PROBE_CIRCUIT_FIELD: Var = Var {
    name: "WARDEN_PROBE_CIRCUIT_FIELD",
    fallbacks: &[],
    default: Default::Text("circuit_breaker.state"),
    kind: Kind::JsonPath,
    contract: false,
    help: "where the health document gives its circuit breaker's state (`OPEN` is open)",
    example: "circuit_breaker.state",
};

pub static WARDEN_AUTO_RECOVERY: Var = Var {
    name: "WARDEN_AUTO_RECOVERY",
    fallbacks: &[],
    default: Default::Text("off"),
    kind: Kind::Words(&["off", "dry-run", "on"]),
    contract: false,
    help: "whether failing probes ask for an automatic restart (source `auto`, under the policy); `dry-run` records what would have been done and signals nothing, and is what a plain `yes` means",
    example: "dry-run",
};

pub static WARDEN_RECOVERY_PROBES: Var = Var {
    name: "WARDEN_RECOVERY_PROBES",
    fallbacks: &[],
    default: Default::Text("3"),
    kind: Kind::Count { min: 1 },
    contract: false,
    help: "how many of the last 2×N−1 probes must call for a restart (failing, or a pool saturated to the recommendation `consider_controlled_worker_restart`) before one is asked",
    example: "3",
};

pub static WARDEN_RECOVERY_SETTLE: Var = Var {
    name: "WARDEN_RECOVERY_SETTLE",
    fallbacks: &[],
    default: Default::Text("120"),
    kind: Kind::Seconds { min: 0 },
    contract: false,
    help: "seconds the app must pass every probe, after an automatic restart or while the breaker is open, before the breaker closes",
    example: "120",
};

pub static RESILIENCE_DEGRADED_ALERT_SECONDS: Var = Var {
    name: "RESILIENCE_DEGRADED_ALERT_SECONDS",
    fallbacks: &[],
    default: Default::Text("300"),
    kind: Kind::Seconds { min: 1 },
    contract: false,
    help: "how long the app may be degraded before the alert (the status document's `degraded_alert_seconds`)",
    example: "300",
};

pub static RESILIENCE_POOL_SATURATION_WARNING: Var = Var {
    name: "RESILIENCE_POOL_SATURATION_WARNING",
    fallbacks: &[],
    default: Default::Text("0.9"),
    kind: Kind::Ratio,
    contract: false,
    help: "the pool saturation that warns (the status document's `pool_saturation_warning`)",
    example: "0.9",
};

pub static RESILIENCE_POOL_SATURATION_CRITICAL: Var = Var {
    name: "RESILIENCE_POOL_SATURATION_CRITICAL",
    fallbacks: &[],
    default: Default::Text("1.0"),
    kind: Kind::Ratio,
    contract: false,
    help: "the pool saturation that is critical (the status document's `pool_saturation_critical`)",
    example: "1.0",
};

pub static WARDEN_ETCD_ENDPOINTS: Var = Var {
    name: "WARDEN_ETCD_ENDPOINTS",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::HttpUrls,
    contract: false,
    help: "the etcd members' client URLs (`http://` or `https://`), comma-separated: restarts then take one of the fleet group's reload slots first; unset, no coordination",
    example: "http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379",
};

pub static WARDEN_ETCD_CACERT: Var = Var {
    name: "WARDEN_ETCD_CACERT",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "the CA (PEM) that signs the etcd members' certificates, as etcdctl's `--cacert` (default: the system's CA bundle)",
    example: "/etc/warden/etcd-ca.pem",
};

pub static WARDEN_ETCD_CERT: Var = Var {
    name: "WARDEN_ETCD_CERT",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "this agent's client certificate (PEM) for members that ask for one, as etcdctl's `--cert`; with `WARDEN_ETCD_KEY`",
    example: "/etc/warden/etcd-client.pem",
};

pub static WARDEN_ETCD_KEY: Var = Var {
    name: "WARDEN_ETCD_KEY",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "the client certificate's private key (PEM), as etcdctl's `--key`; readable by the agent's user only",
    example: "/etc/warden/etcd-client-key.pem",
};

pub static WARDEN_ETCD_USER: Var = Var {
    name: "WARDEN_ETCD_USER",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Text,
    contract: false,
    help: "the etcd user the agent authenticates as, when etcd's authentication is on (its password in `WARDEN_ETCD_PASSWORD_FILE`)",
    example: "warden",
};

pub static WARDEN_ETCD_PASSWORD_FILE: Var = Var {
    name: "WARDEN_ETCD_PASSWORD_FILE",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "a file holding the etcd user's password (its first line), e.g. a systemd credential: never the password itself in the environment",
    example: "/etc/warden/etcd-password",
};

pub static WARDEN_FLEET_GROUP: Var = Var {
    name: "WARDEN_FLEET_GROUP",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Text,
    contract: false,
    help: "the group whose hosts share the reload slots (default: the app's name)",
    example: "mes-dashboard",
};

pub static WARDEN_FLEET_HOLDER: Var = Var {
    name: "WARDEN_FLEET_HOLDER",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Text,
    contract: false,
    help: "who this agent is to its group (default: `<machine id>/<app>`); set it where hosts share a machine id, as clones of one image may",
    example: "web-07/mes-dashboard",
};

pub static WARDEN_FLEET_SLOTS: Var = Var {
    name: "WARDEN_FLEET_SLOTS",
    fallbacks: &[],
    default: Default::Text("1"),
    kind: Kind::Count { min: 1 },
    contract: false,
    help: "how many hosts of the group may reload at once",
    example: "1",
};

pub static WARDEN_FLEET_LEASE: Var = Var {
    name: "WARDEN_FLEET_LEASE",
    fallbacks: &[],
    default: Default::Text("60"),
    kind: Kind::Seconds { min: 5 },
    contract: false,
    help: "seconds a slot outlives its agent: the lease it is held under, renewed while the agent runs",
    example: "60",
};

pub static WARDEN_FLEET_WAIT: Var = Var {
    name: "WARDEN_FLEET_WAIT",
    fallbacks: &[],
    default: Default::Text("300"),
    kind: Kind::Seconds { min: 1 },
    contract: false,
    help: "seconds a restart waits for a reload slot before it fails as `fleet_slot_unavailable` (or, while no etcd member answers, `fleet_unreachable`)",
    example: "300",
};

pub static WARDEN_FLEET_UNREACHABLE: Var = Var {
    name: "WARDEN_FLEET_UNREACHABLE",
    fallbacks: &[],
    default: Default::Text(crate::config::values::UnreachableRules::DEFAULT),
    kind: Kind::SourceActions,
    contract: false,
    help: "what a restart does while no etcd member answers, per who asked (`auto`, `manual`, `reload`, `override`: an acknowledged override, `kill_switch`): `wait` for etcd within `WARDEN_FLEET_WAIT`, `proceed` without a slot (the history says so) or `refuse`; pairs not given keep their default",
    example: "auto=wait,override=proceed",
};

pub static WARDEN_ALERTMANAGER_URL: Var = Var {
    name: "WARDEN_ALERTMANAGER_URL",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::HttpUrl,
    contract: false,
    help: "Alertmanager's URL (with its route prefix, if any): an automatic restart is deferred while an alert matching `WARDEN_ALERT_MATCHERS` fires; unset, no gate",
    example: "http://127.0.0.1:9093",
};

pub static WARDEN_ALERT_MATCHERS: Var = Var {
    name: "WARDEN_ALERT_MATCHERS",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Matchers,
    contract: false,
    help: "the alerts that defer automatic restarts, in Alertmanager's matcher syntax (`=`, `!=`, `=~`, `!~`); required with `WARDEN_ALERTMANAGER_URL`",
    example: "{alertname=~\"DatabaseDown|RedisDown\",severity=\"critical\"}",
};

pub static WARDEN_STATUS_FILE: Var = Var {
    name: "WARDEN_STATUS_FILE",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "the agent publishes the status document here on every change (0644)",
    example: "/run/mes-dashboard/warden-status.json",
};

pub static WARDEN_KILL_SWITCH_FILE: Var = Var {
    name: "WARDEN_KILL_SWITCH_FILE",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "the agent publishes the kill-switch here for the app (0644)",
    example: "/run/mes-dashboard/kill_switch.json",
};

pub static WARDEN_METRICS_SOCKET: Var = Var {
    name: "WARDEN_METRICS_SOCKET",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::Path,
    contract: false,
    help: "Unix socket serving the Prometheus metrics",
    example: "/run/warden/metrics.sock",
};

pub static WARDEN_METRICS_TEXTFILE: Var = Var {
    name: "WARDEN_METRICS_TEXTFILE",
    fallbacks: &[],
    default: Default::Unset,
    kind: Kind::PromFile,
    contract: false,
    help: "a `*.prom` file rewritten for node_exporter's textfile collector",
    example: "/var/lib/prometheus/node-exporter/warden.prom",
};

/// Every variable, in the README's order.
pub static ALL: &[&Var] = &[
    &RUNTIME_CONTRACT_VERSION,
    &RUNTIME_CONTRACT_ENFORCE,
    &WATCHDOG_RUNTIME_DIR,
    &WATCHDOG_RESTART_FLAG,
    &WATCHDOG_PID_FILE,
    &WATCHDOG_STATE_FILE,
    &WATCHDOG_CHECK_INTERVAL,
    &WATCHDOG_RESTART_HISTORY_MAX,
    &GUNICORN_BIND,
    &CONDA_BIN,
    &CONDA_ENV_NAME,
    &CONDA_PREFIX,
    &CONDA_DEFAULT_ENV,
    &WORKER_RESTART_COOLDOWN,
    &WORKER_RESTART_RETRY_BUDGET,
    &WORKER_RESTART_CHURN_THRESHOLD,
    &WORKER_RESTART_WINDOW_SECONDS,
    &WORKER_GUARDED_MODE_ENABLED,
    &WARDEN_APP_UNIT,
    &WARDEN_UNITS,
    &WARDEN_PYTHON_PREFIX,
    &MES_DASHBOARD_ROOT,
    &WARDEN_PROJECT_ROOT,
    &WARDEN_HEALTH_URL,
    &WARDEN_ADMIN_GROUP,
    &WARDEN_RELOAD_TIMEOUT,
    &WARDEN_PREFLIGHT,
    &WARDEN_PREFLIGHT_TIMEOUT,
    &WARDEN_PROBE_INTERVAL,
    &WARDEN_PROBE_TIMEOUT,
    &WARDEN_PROBE_DEGRADED_FIELD,
    &WARDEN_PROBE_SATURATION_FIELD,
    &WARDEN_PROBE_CIRCUIT_FIELD,
    &WARDEN_AUTO_RECOVERY,
    &WARDEN_RECOVERY_PROBES,
    &WARDEN_RECOVERY_SETTLE,
    &RESILIENCE_DEGRADED_ALERT_SECONDS,
    &RESILIENCE_POOL_SATURATION_WARNING,
    &RESILIENCE_POOL_SATURATION_CRITICAL,
    &WARDEN_ETCD_ENDPOINTS,
    &WARDEN_ETCD_CACERT,
    &WARDEN_ETCD_CERT,
    &WARDEN_ETCD_KEY,
    &WARDEN_ETCD_USER,
    &WARDEN_ETCD_PASSWORD_FILE,
    &WARDEN_FLEET_GROUP,
    &WARDEN_FLEET_SLOTS,
    &WARDEN_FLEET_HOLDER,
    &WARDEN_FLEET_LEASE,
    &WARDEN_FLEET_WAIT,
    &WARDEN_FLEET_UNREACHABLE,
    &WARDEN_ALERTMANAGER_URL,
    &WARDEN_ALERT_MATCHERS,
    &WARDEN_STATUS_FILE,
    &WARDEN_KILL_SWITCH_FILE,
    &WARDEN_METRICS_SOCKET,
    &WARDEN_METRICS_TEXTFILE,
];

/// The variables every unit of the contract must see with the same value.
pub fn contract() -> impl Iterator<Item = &'static Var> {
    ALL.iter().copied().filter(|v| v.contract)
}

/// The variable named `name` (not a fallback name).
pub fn by_name(name: &str) -> Option<&'static Var> {
    ALL.iter().copied().find(|v| v.name == name)
}

/// Whether warden reads `name`, as a variable or a fallback.
pub fn is_read(name: &str) -> bool {
    ALL.iter().any(|v| v.names().any(|n| n == name))
}

/// The README's configuration table.
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for v in ALL {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            v.name,
            v.default_text(),
            v.meaning()
        );
    }
    out
}
