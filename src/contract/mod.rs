//! The runtime-contract check: runs every rule over the resolved configuration, the units of the
//! contract and the files they name, and collects findings. Each concern lives in its own module.

mod bind;
pub mod conda;
pub mod finding;
mod gunicorn;
pub mod inputs;
mod names;
mod paths;
mod python;
pub mod startup;
pub mod texts;
mod units;
mod version;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::{InvalidValue, Layers, Settings};
use crate::contract::finding::{Code, Finding};
use crate::systemd::envfile::EnvFile;
use crate::systemd::unit::UnitDef;
use conda::ResolvedPrefix;

/// When the check runs relative to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the app starts (`ExecStartPre=`): the port must be free.
    PreStart,
    /// While the app runs: the port must be held by its gunicorn master.
    Running,
}

/// A unit of the contract, or why it could not be read.
#[derive(Debug, Clone)]
pub struct UnitLookup {
    pub name: String,
    pub result: Result<UnitDef, String>,
}

/// A text file given with `--script` or `--docs`.
#[derive(Debug, Clone)]
pub struct TextInput {
    pub path: PathBuf,
    pub text: String,
}

pub struct Inputs<'a> {
    pub layers: &'a Layers,
    pub settings: &'a Settings,
    pub invalid: &'a [InvalidValue],
    pub units: &'a [UnitLookup],
    pub scripts: &'a [TextInput],
    pub docs: &'a [TextInput],
    pub phase: Phase,
    /// The app's Gunicorn's own settings, when asked (`warden check`).
    pub gunicorn: Option<&'a inputs::GunicornProbe>,
}

/// An env file a unit names, as read from disk.
#[derive(Debug, Clone)]
pub enum EnvFileRead {
    Ok { file: EnvFile, mode: u32 },
    Missing,
    Unreadable(String),
}

/// Shared, read-once view of the inputs for the rule modules.
pub(crate) struct Context<'a> {
    pub inputs: &'a Inputs<'a>,
    pub settings: &'a Settings,
    pub prefix: Option<ResolvedPrefix>,
    pub units: Vec<&'a UnitDef>,
    pub env_files: BTreeMap<PathBuf, EnvFileRead>,
}

impl Context<'_> {
    /// The environment a unit's processes see.
    pub fn unit_env(&self, u: &UnitDef) -> BTreeMap<String, String> {
        crate::systemd::unit::unit_environment(u, &|p: &Path| match self.env_files.get(p) {
            Some(EnvFileRead::Ok { file, .. }) => Some(file.clone()),
            _ => None,
        })
    }

    pub fn app_unit(&self) -> Option<&UnitDef> {
        let name = self.settings.app_unit.as_ref()?;
        self.units.iter().copied().find(|u| &u.name == name)
    }
}

/// What the check found and what it resolved, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub resolved: Resolved,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Resolved {
    pub prefix: Option<PathBuf>,
    pub prefix_resolved_from: Option<String>,
    pub python: Option<PathBuf>,
    pub python_version: Option<String>,
    pub gunicorn: Option<PathBuf>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == crate::contract::finding::Severity::Error)
            .count()
    }
    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
}

/// Runs every rule.
pub fn check(inputs: &Inputs<'_>) -> Report {
    let mut findings: Vec<Finding> = inputs.invalid.iter().map(invalid_value).collect();

    let mut env_files = BTreeMap::new();
    let units: Vec<&UnitDef> = inputs
        .units
        .iter()
        .filter_map(|l| l.result.as_ref().ok())
        .collect();
    for u in &units {
        for (p, _) in &u.environment_files {
            env_files
                .entry(p.clone())
                .or_insert_with(|| read_env_file(p));
        }
    }
    let prefix = conda::resolve(inputs.settings);
    let mut ctx = Context {
        inputs,
        settings: inputs.settings,
        prefix: prefix.as_ref().ok().cloned(),
        units,
        env_files,
    };
    let mut resolved = Resolved::default();
    match &prefix {
        Ok(p) => {
            resolved.prefix = Some(p.path.clone());
            resolved.prefix_resolved_from = Some(p.how.clone());
        }
        Err(why) => findings.push(Finding::new(
            Code::PrefixUnresolved,
            "CONDA_PREFIX",
            why.clone(),
            "set CONDA_BIN (e.g. /opt/miniconda3/bin/conda) and CONDA_ENV_NAME, or CONDA_PREFIX; for a plain venv set WARDEN_PYTHON_PREFIX",
        )),
    }

    python::check(&ctx, &mut resolved, &mut findings);
    paths::check(&ctx, &mut findings);
    units::check(&mut ctx, &mut findings);
    texts::check(&ctx, &mut findings);
    names::check(&ctx, &mut findings);
    bind::check(&ctx, &mut findings);
    gunicorn::check(&ctx, &mut findings);
    version::check(&ctx, &mut findings);

    findings
        .sort_by(|a, b| (a.severity, a.code, &a.subject).cmp(&(b.severity, b.code, &b.subject)));
    findings.dedup();
    Report { findings, resolved }
}

/// An invalid value: `E01`, or for the bind its own rule's `B01`.
fn invalid_value(e: &InvalidValue) -> Finding {
    if e.var == crate::config::vars::GUNICORN_BIND.name {
        return Finding::new(
            Code::BindInvalid,
            e.var,
            format!("{:?} (from {}): {}", e.value, e.origin, e.reason),
            e.help.clone(),
        );
    }
    Finding::new(
        Code::InvalidValue,
        e.var,
        format!("{:?} {} (from {})", e.value, e.reason, e.origin),
        e.help.clone(),
    )
}

fn read_env_file(p: &Path) -> EnvFileRead {
    use std::os::unix::fs::MetadataExt;
    match std::fs::read_to_string(p) {
        Ok(text) => EnvFileRead::Ok {
            file: crate::systemd::envfile::parse(&text),
            mode: std::fs::metadata(p).map(|m| m.mode()).unwrap_or(0),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => EnvFileRead::Missing,
        Err(e) => EnvFileRead::Unreadable(e.to_string()),
    }
}

/// Whether `p` lies under `dir` once their links are resolved, as the original resolves them
/// (no `..` escape, no link leading out).
pub(crate) fn is_under(p: &Path, dir: &Path) -> bool {
    let p = crate::platform::fs::resolve_links(p);
    let d = crate::platform::fs::resolve_links(dir);
    p != d && p.starts_with(&d)
}

/// Paths compare equal when they normalize to the same path.
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    conda::normalize(a) == conda::normalize(b)
}
