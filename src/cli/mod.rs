//! Command-line interface: argument definitions, gathering the inputs of a check (environment,
//! env files, units over D-Bus or from files, scripts, docs) and presenting the result.

pub mod generate;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use crate::config::{EnvFileArg, Layers, Settings};
use crate::contract::finding::{self as diag, Severity};
use crate::contract::{self, Inputs, Phase, Report, TextInput, UnitLookup};
use crate::systemd::unit::UnitDef;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    /// The contract is valid (or not enforced).
    pub const OK: u8 = 0;
    /// The contract has errors and `RUNTIME_CONTRACT_ENFORCE` is on.
    pub const INVALID: u8 = 1;
    /// The check could not run: bad usage or unreadable input.
    pub const USAGE: u8 = 2;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the contract is valid, or RUNTIME_CONTRACT_ENFORCE=false (findings are then warnings)
  1  the contract has errors and is enforced
  2  the check could not run: bad usage or an unreadable input (the message says which)";

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "systemd-native watchdog and runtime-contract agent for Gunicorn services",
    long_about = "warden checks the runtime contract of a Gunicorn service under systemd (conda \
                  prefix, PID / restart-flag / state paths, env files, unit files) and watches \
                  over it in production.",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the runtime contract; fails (exit 1) on errors, for `ExecStartPre=`
    #[command(after_help = EXIT_CODES_HELP)]
    Check(CheckArgs),
    /// Print the resolved contract: each value and where it came from
    #[command(after_help = EXIT_CODES_HELP)]
    Contract(ContractArgs),
    /// Run the watchdog agent: restart flag -> churn policy -> verified Gunicorn reload
    #[command(after_help = RUN_EXIT_CODES_HELP)]
    Run(RunArgs),
    /// Show the policy state, the kill-switch and the last restarts (from the agent over
    /// D-Bus; from the state file when no agent answers)
    #[command(after_help = crate::control::client::EXIT_CODES_HELP)]
    Status(StatusArgs),
    /// Ask the agent for a graceful reload under the policy, and wait for the verified outcome
    /// (with no agent on the bus, the request is queued as a flag)
    #[command(after_help = crate::control::client::EXIT_CODES_HELP)]
    Restart(RestartArgs),
    /// Show the kill-switch, or engage (on) or release (off) it: published for the app, then
    /// one graceful reload that the policy does not block
    #[command(name = "kill-switch", after_help = crate::control::client::EXIT_CODES_HELP)]
    KillSwitch(KillSwitchArgs),
    /// The pre-cutover rehearsal: contract check, one reload through the agent, then the
    /// master unchanged, the workers replaced, the bind unchanged and the health URL answering
    #[command(after_help = crate::control::rehearsal::EXIT_CODES_HELP)]
    Rehearse(crate::control::rehearsal::RehearseArgs),
    /// Write the man pages or a shell completion script (for packagers)
    #[command(hide = true)]
    Generate(crate::cli::generate::GenerateArgs),
}

#[derive(Debug, Args)]
pub struct AdminEnv {
    /// Load variables from a file in systemd EnvironmentFile= syntax (for the state and flag
    /// paths when no agent answers); repeatable. A leading '-' makes the file optional.
    #[arg(long = "env-file", value_name = "PATH", allow_hyphen_values = true)]
    pub env_files: Vec<EnvFileArg>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// Print the status document (the MES dashboard's worker-status `data`, plus warden's own)
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// Why (recorded in the history and the journal)
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Override the cooldown or guarded mode (needs --acknowledge; audited with --reason)
    #[arg(long = "override", requires = "acknowledge")]
    pub manual_override: bool,
    /// Acknowledge that the override bypasses the churn policy
    #[arg(long, requires = "manual_override")]
    pub acknowledge: bool,
    /// Return once the agent accepted the request, without waiting for the verified outcome
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct KillSwitchArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// on: engage (needs --reason); off: release. Without it, show the switch.
    #[arg(value_enum)]
    pub state: Option<OnOff>,
    /// Why (required to engage; recorded with who and when)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// Return once the switch is recorded and published, without waiting for the reload
    #[arg(long)]
    pub no_wait: bool,
}

const RUN_EXIT_CODES_HELP: &str = "\
Exit codes:
  0  stopped by SIGTERM or SIGINT
  1  the startup check failed (its findings are printed), or another agent holds the state lock
  2  bad usage or an unreadable env file";

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Load variables from a file in systemd EnvironmentFile= syntax; repeatable, later files
    /// override earlier ones and the environment. A leading '-' makes the file optional.
    /// SIGHUP reloads them.
    #[arg(long = "env-file", value_name = "PATH", allow_hyphen_values = true)]
    pub env_files: Vec<EnvFileArg>,
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Load variables from a file in systemd EnvironmentFile= syntax; repeatable, later files
    /// override earlier ones and the environment. A leading '-' makes the file optional.
    /// Without it (and outside systemd) the app unit's own env files are used.
    #[arg(long = "env-file", value_name = "PATH", allow_hyphen_values = true)]
    pub env_files: Vec<EnvFileArg>,
    /// Read unit files (and NAME.d/*.conf drop-ins) from DIR instead of asking systemd;
    /// repeatable, highest priority first
    #[arg(long = "unit-path", value_name = "DIR")]
    pub unit_paths: Vec<PathBuf>,
    /// Never contact systemd over D-Bus; read unit files from --unit-path or systemd's
    /// default directories
    #[arg(long)]
    pub offline: bool,
}

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
    /// pre-start: the port must be free; running: it must be held by the app's gunicorn master
    #[arg(long, value_enum, default_value = "pre-start")]
    pub phase: Phase,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Print the table of finding codes and exit
    #[arg(long)]
    pub list_codes: bool,
}

#[derive(Debug, Args)]
pub struct ContractArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Print the contract as JSON
    #[arg(long)]
    pub json: bool,
}

/// An error that stops a command before it can report findings (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] crate::config::LoadError),
    #[error("cannot read {what} {path}: {source}")]
    Input {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentError),
}

impl CliError {
    pub(crate) fn help(&self) -> &'static str {
        match self {
            CliError::Config(_) => {
                "check the path, or prefix it with '-' to make the file optional"
            }
            CliError::Input { .. } => "check the path and that warden's user may read it",
            CliError::Runtime(_) => "the system is out of resources (threads, file descriptors)",
            CliError::Agent(crate::agent::AgentError::Locked(_)) => {
                "stop the other agent (systemctl stop …), or give this one its own WATCHDOG_STATE_FILE"
            }
            CliError::Agent(_) => {
                "check the paths named above and the service user's rights on them"
            }
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check(a),
        Command::Contract(a) => contract_cmd(a),
        Command::Run(a) => run_cmd(a),
        Command::Status(a) => Ok(speak(crate::control::client::status(
            &a.env.env_files,
            a.json,
        ))),
        Command::Restart(a) => Ok(speak(crate::control::client::restart(
            &a.env.env_files,
            &a.reason,
            a.manual_override,
            a.acknowledge,
            !a.no_wait,
        ))),
        Command::KillSwitch(a) => Ok(speak(crate::control::client::kill_switch(
            &a.env.env_files,
            a.state.map(|s| s == OnOff::On),
            &a.reason,
            !a.no_wait,
        ))),
        Command::Rehearse(a) => Ok(crate::control::rehearsal::main(&a)),
        Command::Generate(a) => Ok(crate::cli::generate::main(&a)),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("warden: error: {e}\n  help: {}", e.help());
            ExitCode::from(match e {
                CliError::Agent(_) => exit::INVALID,
                _ => exit::USAGE,
            })
        }
    }
}

/// Prints an admin command's answer: on stdout when it succeeded, else on stderr.
fn speak(s: crate::control::client::Said) -> u8 {
    if s.code == crate::control::client::code::OK {
        // A reader that stops early (`warden status | grep -q …`) is not an error.
        let _ = writeln!(std::io::stdout(), "{}", s.out);
    } else {
        eprintln!("warden: {}", s.out);
    }
    s.code
}

/// Everything a check reads, gathered once.
pub(crate) struct Gathered {
    pub(crate) layers: Layers,
    pub(crate) settings: Settings,
    pub(crate) invalid: Vec<crate::config::InvalidValue>,
    pub(crate) units: Vec<UnitLookup>,
    /// How units were read, for the report.
    unit_source: String,
}

fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

pub(crate) fn gather(src: &SourceArgs) -> Result<Gathered, CliError> {
    let mut layers = Layers::load(&src.env_files)?;
    let (mut settings, mut invalid) = Settings::resolve(&layers);
    let (units, unit_source) = read_units(src, &settings)?;

    // Outside systemd with no --env-file, take the contract from the env files the app unit
    // loads: that is what the units will see, whatever the calling shell has exported.
    if src.env_files.is_empty() && !under_systemd() {
        let app_files: Vec<EnvFileArg> = settings
            .app_unit
            .as_ref()
            .and_then(|n| units.iter().find(|l| &l.name == n))
            .and_then(|l| l.result.as_ref().ok())
            .map(|u| {
                u.environment_files
                    .iter()
                    .map(|(p, _)| EnvFileArg {
                        path: p.clone(),
                        optional: true,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if !app_files.is_empty() {
            layers = Layers::load(&app_files)?;
            (settings, invalid) = Settings::resolve(&layers);
        }
    }
    Ok(Gathered {
        layers,
        settings,
        invalid,
        units,
        unit_source,
    })
}

/// Reads the contract's units: from systemd when reachable (and not `--offline`/`--unit-path`),
/// otherwise from unit files.
fn read_units(
    src: &SourceArgs,
    settings: &Settings,
) -> Result<(Vec<UnitLookup>, String), CliError> {
    let names = settings.all_units();
    if names.is_empty() {
        return Ok((Vec::new(), "none configured".into()));
    }
    // Why the bus was not used, when it should have been: shown in the report.
    let mut bus_note = None;
    if !src.offline && src.unit_paths.is_empty() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(CliError::Runtime)?;
        let from_bus = rt.block_on(async {
            let conn = crate::systemd::bus::connect().await?;
            let units = crate::systemd::bus::read_units(&conn, &names).await?;
            Ok::<_, crate::systemd::bus::BusError>(
                units
                    .into_iter()
                    .map(|(name, result)| UnitLookup { name, result })
                    .collect::<Vec<_>>(),
            )
        });
        match from_bus {
            Ok(u) => return Ok((u, "systemd (D-Bus)".into())),
            Err(e) => bus_note = Some(e.to_string()),
        }
    }
    let dirs: Vec<PathBuf> = if src.unit_paths.is_empty() {
        crate::systemd::unitfile::SYSTEM_UNIT_DIRS
            .iter()
            .map(PathBuf::from)
            .collect()
    } else {
        src.unit_paths.clone()
    };
    let dir_list = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut out = Vec::new();
    for n in &names {
        let result = match crate::systemd::unitfile::locate(n, &dirs) {
            None => Err(format!("no unit file {n} in {dir_list}")),
            Some(loc) => crate::systemd::unitfile::load(n, &loc)
                .map_err(|e| format!("cannot read {}: {e}", loc.fragment.display())),
        };
        out.push(UnitLookup {
            name: n.clone(),
            result,
        });
    }
    let label = match bus_note {
        Some(why) => format!("unit files in {dir_list} (systemd not read: {why})"),
        None => format!("unit files in {dir_list}"),
    };
    Ok((out, label))
}

fn read_texts(paths: &[PathBuf], what: &'static str) -> Result<Vec<TextInput>, CliError> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|b| TextInput {
                    path: p.clone(),
                    text: String::from_utf8_lossy(&b).into_owned(),
                })
                .map_err(|source| CliError::Input {
                    what,
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

/// The resolved contract, as `warden contract` and `check --json` print it: every setting with
/// its source, what the check resolved (prefix, interpreter), and the units.
#[derive(Debug, Serialize)]
struct ContractView<'a> {
    #[serde(flatten)]
    settings: &'a Settings,
    #[serde(flatten)]
    resolved: &'a contract::Resolved,
    units_read_from: &'a str,
    env_files: Vec<&'a PathBuf>,
    units: Vec<UnitView<'a>>,
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

fn contract_view<'a>(g: &'a Gathered, r: &'a Report) -> ContractView<'a> {
    ContractView {
        settings: &g.settings,
        resolved: &r.resolved,
        units_read_from: &g.unit_source,
        env_files: g.layers.files.iter().map(|(p, _)| p).collect(),
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

#[derive(Serialize)]
struct CheckJson<'a> {
    contract_version: &'a str,
    valid: bool,
    enforced: bool,
    phase: Phase,
    findings: &'a [diag::Finding],
    contract: ContractView<'a>,
}

fn check(a: CheckArgs) -> Result<u8, CliError> {
    if a.list_codes {
        let _ = std::io::stdout().write_all(diag::code_table().as_bytes());
        return Ok(exit::OK);
    }
    let g = gather(&a.source)?;
    let scripts = read_texts(&a.scripts, "script")?;
    let docs = read_texts(&a.docs, "docs file")?;
    let inputs = Inputs {
        layers: &g.layers,
        settings: &g.settings,
        invalid: &g.invalid,
        units: &g.units,
        scripts: &scripts,
        docs: &docs,
        phase: a.phase,
    };
    let mut report = contract::check(&inputs);
    let valid = report.errors() == 0;
    let enforced = g.settings.enforce.value;
    if !enforced {
        for f in &mut report.findings {
            f.severity = Severity::Warning;
        }
    }
    let summary = format!(
        "warden check: contract {} {}: {} error(s), {} warning(s){}",
        g.settings.contract_version.value,
        if valid { "valid" } else { "INVALID" },
        report.errors(),
        report.warnings(),
        if enforced {
            ""
        } else {
            " (not enforced: RUNTIME_CONTRACT_ENFORCE=false)"
        }
    );

    let mut stdout = std::io::stdout().lock();
    if a.json {
        let doc = CheckJson {
            contract_version: &g.settings.contract_version.value,
            valid,
            enforced,
            phase: a.phase,
            findings: &report.findings,
            contract: contract_view(&g, &report),
        };
        let _ = serde_json::to_writer_pretty(&mut stdout, &doc);
        let _ = writeln!(stdout);
    } else {
        // Structured entries for the journal, and the report on stdout in any case: journald
        // attributes a native entry to a unit through the sender's cgroup, which a check that
        // has already exited no longer has; the stdout stream is attributed when it connects.
        diag::to_journal(&report.findings, crate::systemd::journal::CHECK_FINDING);
        let mut text = String::new();
        for f in &report.findings {
            f.render(&mut text);
            text.push('\n');
        }
        text.push_str(&summary);
        text.push('\n');
        let _ = stdout.write_all(text.as_bytes());
    }
    Ok(if valid || !enforced {
        exit::OK
    } else {
        exit::INVALID
    })
}

fn contract_cmd(a: ContractArgs) -> Result<u8, CliError> {
    let g = gather(&a.source)?;
    let inputs = Inputs {
        layers: &g.layers,
        settings: &g.settings,
        invalid: &g.invalid,
        units: &g.units,
        scripts: &[],
        docs: &[],
        phase: Phase::PreStart,
    };
    let report = contract::check(&inputs);
    let view = contract_view(&g, &report);
    let mut out = std::io::stdout().lock();
    if a.json {
        let _ = serde_json::to_writer_pretty(&mut out, &view);
        let _ = writeln!(out);
        return Ok(exit::OK);
    }
    let mut t = String::new();
    let mut line = |k: &str, v: String, src: String| {
        t.push_str(&format!("{k:<14} {v}  ({src})\n"));
    };
    let s = &g.settings;
    line(
        "version",
        s.contract_version.value.clone(),
        s.contract_version.source.to_string(),
    );
    line(
        "enforced",
        s.enforce.value.to_string(),
        s.enforce.source.to_string(),
    );
    for (k, v) in [
        ("runtime_dir", &s.runtime_dir),
        ("restart_flag", &s.restart_flag),
        ("pid_file", &s.pid_file),
        ("state_file", &s.state_file),
    ] {
        line(k, v.value.display().to_string(), v.source.to_string());
    }
    line("bind", s.bind.value.clone(), s.bind.source.to_string());
    if let Some(p) = &report.resolved.prefix {
        line(
            "prefix",
            p.display().to_string(),
            report
                .resolved
                .prefix_resolved_from
                .clone()
                .unwrap_or_default(),
        );
    }
    if let Some(p) = &report.resolved.python {
        line(
            "python",
            format!(
                "{} ({})",
                p.display(),
                report
                    .resolved
                    .python_version
                    .as_deref()
                    .unwrap_or("version unknown")
            ),
            "in the prefix".into(),
        );
    }
    t.push_str(&format!(
        "{:<14} cooldown {}s, retry budget {}, churn threshold {} per {}s, guarded mode {}\n",
        "policy",
        s.policy.cooldown_seconds,
        s.policy.retry_budget,
        s.policy.churn_threshold,
        s.policy.window_seconds,
        if s.policy.guarded_mode { "on" } else { "off" }
    ));
    t.push_str(&format!("{:<14} read from {}\n", "units", g.unit_source));
    for u in &view.units {
        t.push_str(&format!(
            "  {} {}{}\n",
            u.name,
            u.definition.clone().unwrap_or_else(|| "NOT FOUND".into()),
            u.user.map(|u| format!(", User={u}")).unwrap_or_default()
        ));
    }
    if report.errors() > 0 {
        t.push_str(&format!(
            "\nthe contract has {} error(s): run `warden check` for details\n",
            report.errors()
        ));
    }
    let _ = out.write_all(t.as_bytes());
    Ok(exit::OK)
}

/// Logs to the journal (with structured fields) under systemd, to stderr otherwise.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("WARDEN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if diag::under_journal()
        && let Ok(j) = tracing_journald::layer()
    {
        let j = j
            .with_field_prefix(None)
            .with_syslog_identifier("warden".into());
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(j)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr),
        )
        .try_init();
}

/// The rules that concern the agent's own paths, run before READY=1.
const STARTUP_CODES: &[diag::Code] = &[
    diag::Code::InvalidValue,
    diag::Code::FlagOutsideRuntimeDir,
    diag::Code::PidOutsideRuntimeDir,
    diag::Code::NotRegularFile,
    diag::Code::UnsafeDirectory,
    diag::Code::NotWritable,
    diag::Code::MissingDirectory,
    diag::Code::BindInvalid,
];

/// The errors among the rules `warden run` checks at its start (its own paths): what the
/// agent refuses to start on, and what the status document reports as the contract's
/// validity.
pub(crate) fn startup_errors(
    layers: &Layers,
    settings: &Settings,
    invalid: &[crate::config::InvalidValue],
) -> Vec<diag::Finding> {
    let inputs = Inputs {
        layers,
        settings,
        invalid,
        units: &[],
        scripts: &[],
        docs: &[],
        phase: Phase::Running,
    };
    contract::check(&inputs)
        .findings
        .into_iter()
        .filter(|f| STARTUP_CODES.contains(&f.code) && f.severity == Severity::Error)
        .collect()
}

fn run_cmd(a: RunArgs) -> Result<u8, CliError> {
    init_logging();
    let layers = Layers::load(&a.env_files)?;
    let (settings, invalid) = Settings::resolve(&layers);
    let errors = startup_errors(&layers, &settings, &invalid);
    for f in &errors {
        tracing::error!(code = f.code.as_str(), subject = %f.subject, help = %f.help, "{}", f.headline());
    }
    if !errors.is_empty() {
        if settings.enforce.value {
            eprintln!(
                "warden run: the startup check failed ({} error(s)); not starting",
                errors.len()
            );
            return Ok(exit::INVALID);
        }
        tracing::warn!("startup check failed but RUNTIME_CONTRACT_ENFORCE=false: running anyway");
    }
    let validation = crate::control::status::Validation {
        valid: errors.is_empty(),
        errors: errors.iter().map(|f| f.headline()).collect(),
    };
    Ok(crate::agent::run(a.env_files, settings, validation)?)
}
