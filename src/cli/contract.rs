//! `warden contract`: the resolved contract, each variable of the table with its value and
//! where it came from, the conda prefix and interpreter, and the units.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::args::SourceArgs;
use super::errors;
use super::exit::Exit;
use crate::config::{Settings, Source, vars};
use crate::contract::inputs::{Gathered, gather};
use crate::contract::{self, Phase, Report};
use crate::systemd::unit::UnitDef;

#[derive(Debug, Args)]
pub struct ContractArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the contract as JSON
    #[arg(long)]
    pub json: bool,
}

/// The resolved contract, as `warden contract --json` and `check --json` print it: every
/// setting, every variable with its value and source, what the check resolved (prefix,
/// interpreter), and the units.
#[derive(Debug, Serialize)]
pub struct ContractView<'a> {
    #[serde(flatten)]
    settings: &'a Settings,
    #[serde(flatten)]
    resolved: &'a contract::Resolved,
    /// Every variable of the table that has a value, as the contract states it.
    variables: Vec<VariableView<'a>>,
    units_read_from: &'a str,
    env_files: Vec<&'a PathBuf>,
    units: Vec<UnitView<'a>>,
}

#[derive(Debug, Serialize)]
struct VariableView<'a> {
    name: &'static str,
    value: &'a str,
    source: &'a Source,
    contract: bool,
}

#[derive(Debug, Serialize)]
struct UnitView<'a> {
    name: &'a str,
    found: bool,
    definition: Option<String>,
    drop_ins: Vec<&'a PathBuf>,
    user: Option<&'a str>,
    environment_files: Vec<&'a PathBuf>,
}

pub fn view<'a>(g: &'a Gathered, r: &'a Report) -> ContractView<'a> {
    let s = &g.loaded.settings;
    ContractView {
        settings: s,
        resolved: &r.resolved,
        variables: vars::ALL
            .iter()
            .filter_map(|v| {
                s.stated(v).map(|x| VariableView {
                    name: v.name,
                    value: &x.value,
                    source: &x.source,
                    contract: v.contract,
                })
            })
            .collect(),
        units_read_from: &g.unit_source,
        env_files: g.loaded.layers.files.iter().map(|(p, _)| p).collect(),
        units: g
            .units
            .iter()
            .map(|l| {
                let u: Option<&UnitDef> = l.result.as_ref().ok();
                UnitView {
                    name: &l.name,
                    found: u.is_some(),
                    definition: u.map(UnitDef::describe_source),
                    drop_ins: u
                        .map(|u| u.drop_in_paths.iter().collect())
                        .unwrap_or_default(),
                    user: u.and_then(|u| u.user.as_deref()),
                    environment_files: u
                        .map(|u| u.environment_files.iter().map(|(p, _)| p).collect())
                        .unwrap_or_default(),
                }
            })
            .collect(),
    }
}

pub fn main(a: ContractArgs) -> Exit {
    let g = match super::sources(&a.source).and_then(|src| {
        gather(&src).map_err(|e| {
            errors::report(&e);
            Exit::Usage
        })
    }) {
        Ok(g) => g,
        Err(exit) => return exit,
    };
    // The contract of the app as it is: running (its master named by the PID file) or not.
    let report = contract::check(&g.inputs(&[], &[], phase_now(&g.loaded.settings)));
    let v = view(&g, &report);
    if a.json {
        super::print(&serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        super::print(&render(&g, &report, &v));
    }
    // What is printed is what the units would see; a script asks the code whether it holds.
    if report.errors() > 0 {
        Exit::CheckFailed
    } else {
        Exit::Ok
    }
}

/// `Running` while the PID file names a live Gunicorn master, else `PreStart`: a contract
/// shown for a running app is not faulted for the port its master holds.
fn phase_now(s: &Settings) -> Phase {
    use crate::platform::process::{Role, classify, read_pid_file};
    match read_pid_file(&s.pid_file.value) {
        Ok(pid) if matches!(classify(pid), Role::Master) => Phase::Running,
        _ => Phase::PreStart,
    }
}

fn render(g: &Gathered, report: &Report, v: &ContractView<'_>) -> String {
    let s = &g.loaded.settings;
    let mut t = String::new();
    let width = vars::ALL.iter().map(|v| v.name.len()).max().unwrap_or(0);
    for var in vars::ALL {
        let (value, source) = match s.stated(var) {
            Some(x) => (x.value.as_str(), x.source.to_string()),
            None => ("(unset)", "default".to_string()),
        };
        let _ = writeln!(t, "{:<width$}  {value}  ({source})", var.name);
    }
    let r = &report.resolved;
    if let Some(p) = &r.prefix {
        let _ = writeln!(
            t,
            "{:<width$}  {}  ({})",
            "prefix",
            p.display(),
            r.prefix_resolved_from.as_deref().unwrap_or_default()
        );
    }
    if let Some(p) = &r.python {
        let _ = writeln!(
            t,
            "{:<width$}  {} ({})  (in the prefix)",
            "python",
            p.display(),
            r.python_version.as_deref().unwrap_or("version unknown")
        );
    }
    let _ = writeln!(t, "{:<width$}  read from {}", "units", g.unit_source);
    for u in &v.units {
        let _ = writeln!(
            t,
            "  {} {}{}",
            u.name,
            u.definition.clone().unwrap_or_else(|| "NOT FOUND".into()),
            u.user.map(|u| format!(", User={u}")).unwrap_or_default()
        );
    }
    if report.errors() > 0 {
        let _ = write!(
            t,
            "\nthe contract has {} error(s): run `warden check` for details",
            report.errors()
        );
    }
    t
}
