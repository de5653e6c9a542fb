//! `warden check`: the runtime contract's rules, reported on stdout (and to the journal, one
//! structured entry per finding, under systemd).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::args::SourceArgs;
use super::contract::{ContractView, view};
use super::errors;
use super::exit::Exit;
use crate::contract::finding::{self, Finding, Severity};
use crate::contract::inputs::{gather, read_texts};
use crate::contract::{self, Phase};
use crate::systemd::journal;

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// A script whose shell defaults (${VAR:-value}) of contract variables must match; repeatable
    #[arg(long = "script", value_name = "PATH")]
    pub scripts: Vec<PathBuf>,
    /// Documentation whose VAR=value mentions of contract variables must match; repeatable
    #[arg(long = "docs", value_name = "PATH")]
    pub docs: Vec<PathBuf>,
    /// pre-start: the port must be free; running: it must be held by the app's gunicorn master,
    /// and with --app the contract is the agent's own, /etc/warden/NAME.env, which must exist
    #[arg(long, value_enum, default_value = "pre-start")]
    pub phase: Phase,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Print the table of finding codes and exit
    #[arg(long)]
    pub list_codes: bool,
}

#[derive(Serialize)]
struct CheckJson<'a> {
    contract_version: &'a str,
    valid: bool,
    enforced: bool,
    phase: Phase,
    findings: &'a [Finding],
    contract: ContractView<'a>,
}

pub fn main(a: CheckArgs) -> Exit {
    if a.list_codes {
        super::print(&finding::code_table());
        return Exit::Ok;
    }
    // The running phase is the agent's own check (its unit's ExecStartPre=): the contract is
    // the one `warden run` will take, never one guessed from the app unit.
    let sources = if a.phase == Phase::Running {
        super::target::locate_for_agent(a.source.app.app.as_ref(), &a.source.env_files)
            .map(|l| l.sources(&a.source.unit_paths, a.source.offline))
            .map_err(|e| {
                errors::report(&e);
                Exit::Usage
            })
    } else {
        super::sources(&a.source)
    };
    let sources = match sources {
        Ok(s) => s,
        Err(exit) => return exit,
    };
    let gathered = gather(&sources).and_then(|g| {
        let scripts = read_texts(&a.scripts, "script")?;
        let docs = read_texts(&a.docs, "docs file")?;
        Ok((g, scripts, docs))
    });
    let (g, scripts, docs) = match gathered {
        Ok(x) => x,
        Err(e) => {
            errors::report(&e);
            return Exit::Usage;
        }
    };
    // The app's Gunicorn asked about itself (an import of the app): preload, control socket,
    // whether the code loads.
    let probe = crate::contract::inputs::probe_gunicorn(&g.loaded.settings, &g.units);
    let mut inputs = g.inputs(&scripts, &docs, a.phase);
    inputs.gunicorn = probe.as_ref();
    let mut report = contract::check(&inputs);
    let (errors, warnings) = (report.errors(), report.warnings());
    let valid = errors == 0;
    let s = &g.loaded.settings;
    let enforced = s.enforce.value;
    if !enforced {
        for f in &mut report.findings {
            f.severity = Severity::Warning;
        }
    }
    if a.json {
        let doc = CheckJson {
            contract_version: &s.contract_version.value,
            valid,
            enforced,
            phase: a.phase,
            findings: &report.findings,
            contract: view(&g, &report),
        };
        super::print(&serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        // Structured entries for the journal, and the report on stdout in any case: journald
        // attributes a native entry to a unit through the sender's cgroup, which a check that
        // has already exited no longer has; the stdout stream is attributed when it connects.
        to_journal(&report.findings);
        let mut text = String::new();
        for f in &report.findings {
            f.render(&mut text);
            text.push('\n');
        }
        // Counted before an unenforced contract turns its errors into warnings: the summary
        // still says how many were errors.
        text.push_str(&format!(
            "warden check: contract {} {}: {errors} error(s){}, {warnings} warning(s)",
            s.contract_version.value,
            if valid { "valid" } else { "INVALID" },
            if enforced {
                ""
            } else {
                " not enforced (RUNTIME_CONTRACT_ENFORCE=false)"
            }
        ));
        super::print(&text);
    }
    if valid || !enforced {
        Exit::Ok
    } else {
        Exit::CheckFailed
    }
}

/// Each finding as a structured journal entry, when stdout or stderr is the journal:
/// `WARDEN_CODE`, `WARDEN_SEVERITY`, `WARDEN_SUBJECT`, `WARDEN_HELP` and the check's
/// MESSAGE_ID, through the journald layer of `tracing`.
fn to_journal(findings: &[Finding]) {
    use tracing_subscriber::prelude::*;
    if findings.is_empty() || !journal::connected() {
        return;
    }
    let Ok(layer) = tracing_journald::layer() else {
        return;
    };
    let subscriber = tracing_subscriber::registry().with(
        layer
            .with_field_prefix(None)
            .with_syslog_identifier("warden".into()),
    );
    tracing::subscriber::with_default(subscriber, || {
        for f in findings {
            let message = format!("{}\nhelp: {}", f.headline(), f.help);
            macro_rules! entry {
                ($level:ident) => {
                    tracing::$level!(
                        message_id = journal::CHECK_FINDING,
                        warden_code = f.code.as_str(),
                        warden_severity = f.severity.as_str(),
                        warden_subject = %f.subject,
                        warden_help = %f.help,
                        "{message}"
                    )
                };
            }
            match f.severity {
                Severity::Error => entry!(error),
                Severity::Warning => entry!(warn),
            }
        }
    });
}
