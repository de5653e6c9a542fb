//! Reads the raw layer through the variable table into typed settings. Pure: the working
//! directory is an argument.

use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::values::{
    self, AlertMatchers, AutoRecovery, CountError, HttpUrls, JsonPath, ProbeInterval, Ratio,
    UnreachableRules,
};
use super::vars::{self, Default, Kind, Var};
use super::{
    AlertGateSettings, BindAddr, FieldPaths, FleetSettings, InvalidValue, Layers, PolicyConfig,
    ProbeSettings, RecoverySettings, ResilienceThresholds, RuntimeKind, Settings, Source, Sourced,
};
use crate::platform::http::HealthUrl;

/// One resolution: the layer, what has been stated so far, and what was refused.
struct Resolver<'a> {
    layers: &'a Layers,
    root: PathBuf,
    stated: BTreeMap<&'static str, Sourced<String>>,
    invalid: Vec<InvalidValue>,
}

/// A set value: its text, where it was set, and the name it was set under.
struct Raw<'a> {
    text: &'a str,
    source: Source,
    name: &'static str,
}

impl<'a> Resolver<'a> {
    /// The value of `var`, or of its first fallback that is set.
    fn raw(&self, var: &'static Var) -> Option<Raw<'a>> {
        var.names().find_map(|name| {
            self.layers.get(name).map(|(text, source)| Raw {
                text,
                source: source.clone(),
                name,
            })
        })
    }

    /// A group's or holder's name: a part of etcd keys, so letters, digits and `._@:-` only
    /// (and `/` in a holder's, which is `<machine id>/<app>`), 128 at most.
    fn fleet_name(&mut self, var: &'static Var, slash: bool) -> Option<String> {
        let v = self.text(var)?;
        let fits =
            |c: char| c.is_ascii_alphanumeric() || "._@:-".contains(c) || (slash && c == '/');
        if !v.value.is_empty() && v.value.len() <= 128 && v.value.chars().all(fits) {
            return Some(v.value);
        }
        if let Some(raw) = self.raw(var) {
            self.refuse(
                &raw,
                "a fleet name takes letters, digits and . _ @ : - only, 128 at most".into(),
                "name it plainly, e.g. mes-dashboard".into(),
            );
        }
        None
    }

    fn refuse(&mut self, raw: &Raw<'_>, reason: String, help: String) {
        self.invalid.push(InvalidValue {
            var: raw.name,
            value: raw.text.to_string(),
            reason,
            help,
            origin: raw.source.clone(),
        });
    }

    fn state(&mut self, var: &'static Var, text: String, source: Source) {
        self.stated.insert(var.name, Sourced::new(text, source));
    }

    /// The text of a variable's default: its own, or the stated value of the variable it
    /// defaults to (resolved before it).
    fn default_text(&self, var: &Var) -> String {
        match &var.default {
            Default::Text(t) => t.to_string(),
            Default::SameAs(other) => self
                .stated
                .get(other.name)
                .map(|s| s.value.clone())
                .expect("a variable is resolved before those that default to it"),
            _ => unreachable!("{} has no text default", var.name),
        }
    }

    /// Where a default comes from: the table, or the variable it follows.
    fn default_source(var: &Var) -> Source {
        match &var.default {
            Default::SameAs(other) => Source::Derived {
                from: other.name.to_string(),
            },
            _ => Source::Default,
        }
    }

    fn text(&mut self, var: &'static Var) -> Option<Sourced<String>> {
        let value = match self.raw(var) {
            Some(r) if !r.text.is_empty() => Some(Sourced::new(r.text.to_string(), r.source)),
            _ => match var.default {
                Default::Text(t) => Some(Sourced::new(t.to_string(), Source::Default)),
                _ => None,
            },
        };
        if let Some(v) = &value {
            self.state(var, v.value.clone(), v.source.clone());
        }
        value
    }

    fn flag(&mut self, var: &'static Var) -> Sourced<bool> {
        let default = values::parse_bool(&self.default_text(var)).expect("a boolean default");
        let value = match self.raw(var) {
            None => Sourced::new(default, Source::Default),
            Some(r) => match values::parse_bool(r.text) {
                Some(b) => Sourced::new(b, r.source),
                None => {
                    self.refuse(
                        &r,
                        "is not a boolean".into(),
                        "use one of 1/true/yes/on or 0/false/no/off".into(),
                    );
                    Sourced::new(default, Source::Default)
                }
            },
        };
        self.state(var, value.value.to_string(), value.source.clone());
        value
    }

    fn whole(&mut self, var: &'static Var) -> Sourced<u64> {
        let min = match var.kind {
            Kind::Count { min } | Kind::Seconds { min } => min,
            _ => unreachable!("{} is not a whole number", var.name),
        };
        let default_text = self.default_text(var);
        let default = values::parse_count(&default_text, min).expect("a valid default");
        let value = match self.raw(var) {
            None => Sourced::new(default, Self::default_source(var)),
            Some(r) => match values::parse_count(r.text, min) {
                Ok(n) => Sourced::new(n, r.source),
                Err(e) => {
                    let reason = match e {
                        CountError::NotANumber => "is not a whole number".to_string(),
                        CountError::TooLarge => "is too large".to_string(),
                        CountError::BelowMinimum(m) => format!("is below the minimum of {m}"),
                    };
                    let help = format!(
                        "set {} to a whole number ≥ {min} (default {default_text})",
                        r.name
                    );
                    self.refuse(&r, reason, help);
                    Sourced::new(default, Self::default_source(var))
                }
            },
        };
        self.state(var, value.value.to_string(), value.source.clone());
        value
    }

    fn positive_seconds(&mut self, var: &'static Var) -> f64 {
        let default_text = self.default_text(var);
        let default = values::parse_positive_seconds(&default_text).expect("a valid default");
        let value = match self.raw(var) {
            None => Sourced::new(default, Source::Default),
            Some(r) => match values::parse_positive_seconds(r.text) {
                Some(n) => Sourced::new(n, r.source),
                None => {
                    let help = format!("set {} to a number > 0 (default {default_text})", r.name);
                    self.refuse(&r, "is not a positive number of seconds".into(), help);
                    Sourced::new(default, Source::Default)
                }
            },
        };
        self.state(var, value.value.to_string(), value.source.clone());
        value.value
    }

    /// Joins a relative path to the project root (`.` components folded, as the original's
    /// resolution folds them).
    fn absolutize(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.components().collect()
        } else {
            self.root.join(p).components().collect()
        }
    }

    /// A path variable with a default (an empty value is refused), or without one (an empty
    /// value is no value).
    fn path(&mut self, var: &'static Var) -> Option<Sourced<PathBuf>> {
        let raw = self
            .raw(var)
            .filter(|r| !r.text.is_empty() || self.has_default(var));
        let value = match raw {
            Some(r) => match self.check_path(var, &r) {
                Ok(p) => Some(Sourced::new(p, r.source)),
                Err((reason, help)) => {
                    self.refuse(&r, reason, help);
                    self.default_path(var)
                }
            },
            None => self.default_path(var),
        };
        if let Some(v) = &value {
            self.state(var, v.value.display().to_string(), v.source.clone());
        }
        value
    }

    fn has_default(&self, var: &Var) -> bool {
        var.default != Default::Unset
    }

    fn check_path(&self, var: &'static Var, r: &Raw<'_>) -> Result<PathBuf, (String, String)> {
        if r.text.is_empty() {
            return Err((
                "is empty".into(),
                format!(
                    "remove {} to use the default, or set an absolute path",
                    r.name
                ),
            ));
        }
        if r.text.contains('\0') {
            return Err((
                "contains a NUL byte".into(),
                "set a valid absolute path".into(),
            ));
        }
        match var.kind {
            Kind::PromFile if Path::new(r.text).extension().is_none_or(|e| e != "prom") => Err((
                "node_exporter's textfile collector reads only files ending in .prom".into(),
                "name a file ending in .prom in the collector's directory".into(),
            )),
            _ => Ok(self.absolutize(r.text)),
        }
    }

    fn default_path(&self, var: &'static Var) -> Option<Sourced<PathBuf>> {
        match &var.default {
            Default::Unset => None,
            Default::WorkingDir => Some(Sourced::new(self.root.clone(), Source::Default)),
            Default::UnderRoot(p) => Some(Sourced::new(self.root.join(p), Source::Default)),
            Default::UnderVar(var, file) => {
                let dir = self
                    .stated
                    .get(var.name)
                    .expect("a directory is resolved before the files in it");
                Some(Sourced::new(
                    Path::new(&dir.value).join(file),
                    Source::Derived {
                        from: var.name.to_string(),
                    },
                ))
            }
            Default::Text(t) => Some(Sourced::new(self.absolutize(t), Source::Default)),
            Default::SameAs(_) => unreachable!("no path defaults to another variable"),
        }
    }

    fn parsed<T: std::str::FromStr<Err = String> + std::fmt::Display>(
        &mut self,
        var: &'static Var,
        help: &str,
    ) -> Option<Sourced<T>> {
        let parse_default = || match var.default {
            Default::Text(t) => Some(Sourced::new(
                t.parse::<T>().expect("a valid default"),
                Source::Default,
            )),
            _ => None,
        };
        let value = match self.raw(var).filter(|r| !r.text.is_empty()) {
            None => parse_default(),
            Some(r) => match r.text.parse::<T>() {
                Ok(v) => Some(Sourced::new(v, r.source)),
                Err(why) => {
                    self.refuse(&r, why, help.to_string());
                    parse_default()
                }
            },
        };
        if let Some(v) = &value {
            self.state(var, v.value.to_string(), v.source.clone());
        }
        value
    }

    fn unit(&mut self, var: &'static Var) -> Option<String> {
        let r = self.raw(var).filter(|r| !r.text.is_empty())?;
        match values::unit_name(r.text) {
            Some(n) => {
                self.state(var, n.clone(), r.source);
                Some(n)
            }
            None => {
                let help = format!("set the Gunicorn unit's name, e.g. {}", var.example);
                self.refuse(&r, "is not a valid unit name".into(), help);
                None
            }
        }
    }

    fn units(&mut self, var: &'static Var, besides: Option<&str>) -> Vec<String> {
        let Some(r) = self.raw(var) else {
            return Vec::new();
        };
        let mut units: Vec<String> = Vec::new();
        for part in r.text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match values::unit_name(part) {
                Some(n) if Some(n.as_str()) != besides && !units.contains(&n) => units.push(n),
                Some(_) => {}
                None => {
                    let one = Raw {
                        text: part,
                        source: r.source.clone(),
                        name: r.name,
                    };
                    let help = format!("list unit names separated by commas, e.g. {}", var.example);
                    self.refuse(&one, "is not a valid unit name".into(), help);
                }
            }
        }
        if !units.is_empty() {
            self.state(var, units.join(","), r.source);
        }
        units
    }
}

impl Settings {
    /// Validates the raw layer; `default_root` is the project root when neither
    /// `MES_DASHBOARD_ROOT` nor `WARDEN_PROJECT_ROOT` is set (the app unit's
    /// `WorkingDirectory=`, else the working directory). Returns the settings (with defaults standing in for
    /// invalid values, so that other checks can still run) and every invalid value, in the
    /// table's order.
    pub fn resolve(layers: &Layers, default_root: &Path) -> (Settings, Vec<InvalidValue>) {
        let mut r = Resolver {
            layers,
            root: default_root.to_path_buf(),
            stated: BTreeMap::new(),
            invalid: Vec::new(),
        };
        // The original's root first, as it reads it.
        let original = r.path(&vars::MES_DASHBOARD_ROOT);
        let own = r.path(&vars::WARDEN_PROJECT_ROOT);
        if let Some(root) = original.or(own) {
            r.root = root.value;
        }
        let contract_version = r
            .text(&vars::RUNTIME_CONTRACT_VERSION)
            .expect("the version has a default");
        let enforce = r.flag(&vars::RUNTIME_CONTRACT_ENFORCE);
        let runtime_dir = r.path(&vars::WATCHDOG_RUNTIME_DIR).expect("a default");
        let restart_flag = r.path(&vars::WATCHDOG_RESTART_FLAG).expect("a default");
        let pid_file = r.path(&vars::WATCHDOG_PID_FILE).expect("a default");
        let state_file = r.path(&vars::WATCHDOG_STATE_FILE).expect("a default");
        // Read for its check only: warden does not poll.
        r.positive_seconds(&vars::WATCHDOG_CHECK_INTERVAL);
        let history_max = r.whole(&vars::WATCHDOG_RESTART_HISTORY_MAX);
        let bind: Sourced<BindAddr> = r
            .parsed(
                &vars::GUNICORN_BIND,
                "set GUNICORN_BIND=host:port, e.g. 0.0.0.0:8080",
            )
            .expect("the bind has a default");
        let conda_bin = r.path(&vars::CONDA_BIN);
        let conda_env_name = r.text(&vars::CONDA_ENV_NAME).expect("a default");
        let conda_prefix = r.path(&vars::CONDA_PREFIX);
        let conda_default_env = r.text(&vars::CONDA_DEFAULT_ENV);
        let cooldown = r.whole(&vars::WORKER_RESTART_COOLDOWN);
        let budget = r.whole(&vars::WORKER_RESTART_RETRY_BUDGET);
        let churn = r.whole(&vars::WORKER_RESTART_CHURN_THRESHOLD);
        let window = r.whole(&vars::WORKER_RESTART_WINDOW_SECONDS);
        let guarded = r.flag(&vars::WORKER_GUARDED_MODE_ENABLED);
        let app_unit = r.unit(&vars::WARDEN_APP_UNIT);
        let units = r.units(&vars::WARDEN_UNITS, app_unit.as_deref());
        let python_prefix = r.path(&vars::WARDEN_PYTHON_PREFIX);
        let health_url: Option<Sourced<HealthUrl>> = r.parsed(
            &vars::WARDEN_HEALTH_URL,
            "set an http:// URL of the app on this machine, e.g. http://127.0.0.1:8080/health",
        );
        let admin_group = r.text(&vars::WARDEN_ADMIN_GROUP).map(|g| g.value);
        let reload_timeout = r.whole(&vars::WARDEN_RELOAD_TIMEOUT);
        let preflight = r.flag(&vars::WARDEN_PREFLIGHT);
        let preflight_timeout = r.whole(&vars::WARDEN_PREFLIGHT_TIMEOUT);
        let probe_interval: Sourced<ProbeInterval> = r
            .parsed(
                &vars::WARDEN_PROBE_INTERVAL,
                "set WARDEN_PROBE_INTERVAL to seconds (e.g. 10) or off",
            )
            .expect("a default");
        let probe_timeout = r.positive_seconds(&vars::WARDEN_PROBE_TIMEOUT);
        let field = |r: &mut Resolver<'_>, var: &'static Var| -> JsonPath {
            r.parsed(
                var,
                &format!("set {} to a dotted path, e.g. {}", var.name, var.example),
            )
            .expect("a default")
            .value
        };
        let fields = FieldPaths {
            degraded_reason: field(&mut r, &vars::WARDEN_PROBE_DEGRADED_FIELD),
            pool_saturation: field(&mut r, &vars::WARDEN_PROBE_SATURATION_FIELD),
            circuit_state: field(&mut r, &vars::WARDEN_PROBE_CIRCUIT_FIELD),
        };
        let auto_recovery: Sourced<AutoRecovery> = r
            .parsed(
                &vars::WARDEN_AUTO_RECOVERY,
                "set WARDEN_AUTO_RECOVERY to off, dry-run or on",
            )
            .expect("a default");
        let recovery_probes = r.whole(&vars::WARDEN_RECOVERY_PROBES);
        let recovery_settle = r.whole(&vars::WARDEN_RECOVERY_SETTLE);
        let degraded_alert = r.whole(&vars::RESILIENCE_DEGRADED_ALERT_SECONDS);
        let ratio = |r: &mut Resolver<'_>, var: &'static Var| -> f64 {
            r.parsed::<Ratio>(
                var,
                &format!("set {} to a number ≥ 0, e.g. {}", var.name, var.example),
            )
            .expect("a default")
            .value
            .0
        };
        let pool_warning = ratio(&mut r, &vars::RESILIENCE_POOL_SATURATION_WARNING);
        let pool_critical = ratio(&mut r, &vars::RESILIENCE_POOL_SATURATION_CRITICAL);
        let etcd: Option<Sourced<HttpUrls>> = r.parsed(
            &vars::WARDEN_ETCD_ENDPOINTS,
            "list the etcd members' client URLs, e.g. http://10.0.0.1:2379,http://10.0.0.2:2379",
        );
        let etcd_cacert = r.path(&vars::WARDEN_ETCD_CACERT).map(|p| p.value);
        let etcd_cert = r.path(&vars::WARDEN_ETCD_CERT).map(|p| p.value);
        let etcd_key = r.path(&vars::WARDEN_ETCD_KEY).map(|p| p.value);
        let etcd_user = r.text(&vars::WARDEN_ETCD_USER).map(|u| u.value);
        let etcd_password = r.path(&vars::WARDEN_ETCD_PASSWORD_FILE).map(|p| p.value);
        // Half of a pair is said, not ignored: etcd would refuse the agent at its first call.
        for (one, other, both) in [
            (
                &vars::WARDEN_ETCD_CERT,
                &vars::WARDEN_ETCD_KEY,
                etcd_cert.is_some() == etcd_key.is_some(),
            ),
            (
                &vars::WARDEN_ETCD_USER,
                &vars::WARDEN_ETCD_PASSWORD_FILE,
                etcd_user.is_some() == etcd_password.is_some(),
            ),
        ] {
            if !both {
                let (set, unset) = match r.raw(one).filter(|r| !r.text.is_empty()) {
                    Some(raw) => (raw, other),
                    None => match r.raw(other) {
                        Some(raw) => (raw, one),
                        None => continue,
                    },
                };
                r.refuse(
                    &set,
                    format!("{} is set without {}", set.name, unset.name),
                    format!("set {} too, or neither", unset.name),
                );
            }
        }
        let fleet_group = r.fleet_name(&vars::WARDEN_FLEET_GROUP, false);
        let fleet_slots = r.whole(&vars::WARDEN_FLEET_SLOTS);
        let fleet_holder = r.fleet_name(&vars::WARDEN_FLEET_HOLDER, true);
        let fleet_lease = r.whole(&vars::WARDEN_FLEET_LEASE);
        let fleet_wait = r.whole(&vars::WARDEN_FLEET_WAIT);
        let fleet_unreachable: Option<Sourced<UnreachableRules>> = r.parsed(
            &vars::WARDEN_FLEET_UNREACHABLE,
            "give `who=action` pairs, e.g. auto=wait,override=proceed",
        );
        let alertmanager: Option<Sourced<HealthUrl>> = r.parsed(
            &vars::WARDEN_ALERTMANAGER_URL,
            "set Alertmanager's http:// URL, e.g. http://127.0.0.1:9093",
        );
        let alert_matchers: Option<Sourced<AlertMatchers>> = r.parsed(
            &vars::WARDEN_ALERT_MATCHERS,
            "write Alertmanager matchers, e.g. {alertname=\"DatabaseDown\",severity=\"critical\"}",
        );
        // A gate with nothing to match would hold no restart: said, not guessed.
        if alert_matchers.is_none()
            && let Some(raw) = r
                .raw(&vars::WARDEN_ALERTMANAGER_URL)
                .filter(|r| !r.text.is_empty())
        {
            r.refuse(
                &raw,
                "the alert gate has no matchers".into(),
                "set WARDEN_ALERT_MATCHERS too, e.g. {alertname=\"DatabaseDown\"}, or unset WARDEN_ALERTMANAGER_URL".into(),
            );
        }
        let status_file = r.path(&vars::WARDEN_STATUS_FILE).map(|p| p.value);
        let kill_switch_file = r.path(&vars::WARDEN_KILL_SWITCH_FILE).map(|p| p.value);
        let metrics_socket = r.path(&vars::WARDEN_METRICS_SOCKET).map(|p| p.value);
        let metrics_textfile = r.path(&vars::WARDEN_METRICS_TEXTFILE).map(|p| p.value);

        let conda_named = layers.get(vars::CONDA_ENV_NAME.name).is_some();
        let runtime = if conda_bin.is_none()
            && conda_prefix.is_none()
            && !conda_named
            && python_prefix.is_some()
        {
            RuntimeKind::Venv
        } else {
            RuntimeKind::Conda
        };
        let count32 = |n: u64| NonZeroU32::new(n.min(u64::from(u32::MAX)) as u32);
        let settings = Settings {
            contract_version,
            enforce,
            runtime_dir,
            restart_flag,
            pid_file,
            state_file,
            history_max: NonZeroUsize::new(history_max.value as usize).expect("the minimum is 1"),
            bind,
            runtime,
            conda_bin,
            conda_env_name,
            conda_prefix,
            conda_default_env,
            python_prefix,
            policy: PolicyConfig {
                cooldown: Duration::from_secs(cooldown.value),
                retry_budget: count32(budget.value).expect("the minimum is 1"),
                churn_threshold: count32(churn.value).expect("the minimum is 1"),
                window: Duration::from_secs(window.value),
                guarded_mode: guarded.value,
            },
            app_unit,
            units,
            probe: match (&health_url, probe_interval.value) {
                (Some(url), ProbeInterval::Every(every)) => Some(ProbeSettings {
                    url: url.value.clone(),
                    interval: Duration::from_secs_f64(every),
                    timeout: Duration::from_secs_f64(probe_timeout),
                    fields,
                }),
                _ => None,
            },
            recovery: RecoverySettings {
                mode: auto_recovery.value,
                probes: u32::try_from(recovery_probes.value).unwrap_or(u32::MAX),
                settle: Duration::from_secs(recovery_settle.value),
            },
            resilience: ResilienceThresholds {
                degraded_alert_seconds: degraded_alert.value,
                pool_saturation_warning: pool_warning,
                pool_saturation_critical: pool_critical,
            },
            fleet: etcd
                .map(|e| e.value.0)
                .filter(|e| !e.is_empty())
                .map(|endpoints| FleetSettings {
                    endpoints,
                    cacert: etcd_cacert,
                    client_cert: etcd_cert.zip(etcd_key),
                    user: etcd_user.zip(etcd_password),
                    group: fleet_group,
                    holder: fleet_holder,
                    slots: u32::try_from(fleet_slots.value).unwrap_or(u32::MAX),
                    lease: Duration::from_secs(fleet_lease.value),
                    wait: Duration::from_secs(fleet_wait.value),
                    unreachable: fleet_unreachable
                        .map(|u| u.value)
                        .unwrap_or_else(|| UnreachableRules::DEFAULT.parse().expect("valid")),
                }),
            alert_gate: match (alertmanager, alert_matchers) {
                (Some(url), Some(m)) => Some(AlertGateSettings {
                    url: url.value,
                    matchers: m.value,
                }),
                _ => None,
            },
            health_url: health_url.map(|u| u.value),
            admin_group,
            reload_timeout: Duration::from_secs(reload_timeout.value),
            preflight: preflight
                .value
                .then(|| Duration::from_secs(preflight_timeout.value)),
            status_file,
            kill_switch_file,
            metrics_socket,
            metrics_textfile,
            stated: r.stated,
        };
        let mut invalid = r.invalid;
        let order = |i: &InvalidValue| {
            vars::ALL
                .iter()
                .position(|v| v.names().any(|n| n == i.var))
                .unwrap_or(usize::MAX)
        };
        invalid.sort_by_key(order);
        (settings, invalid)
    }
}
