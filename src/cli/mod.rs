//! The command line: the arguments of each command, and the commands themselves, one module
//! each. `run`'s module wires the agent to the control surface.

mod args;
mod check;
mod contract;
pub mod errors;
pub mod exit;
mod fleet;
pub mod generate;
mod kill_switch;
mod recovery;
mod rehearse;
mod reload;
mod restart;
mod run;
mod status;
pub mod target;

use clap::{Parser, Subcommand};

pub use args::{AdminEnv, SourceArgs};
use exit::{Cmd, Exit};

#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "systemd-native watchdog and runtime-contract agent for Gunicorn services",
    long_about = "warden checks the runtime contract of a Gunicorn service under systemd (conda \
                  prefix, PID / restart-flag / state paths, env files, unit files) and watches \
                  over it in production.",
    after_help = exit::help_all()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the runtime contract; fails (exit 1) on errors, for `ExecStartPre=`
    #[command(after_help = exit::help(Cmd::Check))]
    Check(check::CheckArgs),
    /// Print the resolved contract: each value and where it came from
    #[command(after_help = exit::help(Cmd::Contract))]
    Contract(contract::ContractArgs),
    /// Run the watchdog agent: restart flag -> churn policy -> verified Gunicorn reload
    #[command(after_help = exit::help(Cmd::Run))]
    Run(run::RunArgs),
    /// Show the policy state, the kill-switch and the last restarts (from the agent over
    /// D-Bus; from the state file when no agent answers)
    #[command(after_help = exit::help(Cmd::Status))]
    Status(status::StatusArgs),
    /// Ask the agent for a graceful reload under the policy, and wait for the verified outcome
    /// (with no agent on the bus, --queue leaves the request as a flag for its start)
    #[command(after_help = exit::help(Cmd::Restart))]
    Restart(restart::RestartArgs),
    /// Reload the app, as its unit's ExecReload=: under the policy, after the preflight, and
    /// with --wait returning once verified (so that `systemctl reload` fails when it failed)
    #[command(after_help = exit::help(Cmd::Reload))]
    Reload(reload::ReloadArgs),
    /// Show the kill-switch, or engage (on) or release (off) it: published for the app, then
    /// one graceful reload that the policy does not block
    #[command(name = "kill-switch", after_help = exit::help(Cmd::KillSwitch))]
    KillSwitch(kill_switch::KillSwitchArgs),
    /// Show the fleet group's reload slots in etcd and who waits, give one back, or print the
    /// agent unit's drop-in for its members
    #[command(after_help = exit::help(Cmd::Fleet))]
    Fleet(fleet::FleetArgs),
    /// Show the probes of the app and the automatic recovery breaker, or close the breaker
    /// (reset, acknowledged with a reason)
    #[command(after_help = exit::help(Cmd::Recovery))]
    Recovery(recovery::RecoveryArgs),
    /// The pre-cutover rehearsal: contract check, one reload through the agent, then the
    /// master unchanged, the workers replaced, the bind unchanged and the health URL answering
    #[command(after_help = exit::help(Cmd::Rehearse))]
    Rehearse(rehearse::RehearseArgs),
    /// Write the man pages or a shell completion script (for packagers)
    #[command(hide = true)]
    Generate(generate::GenerateArgs),
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Check(a) => check::main(a),
        Command::Contract(a) => contract::main(a),
        Command::Run(a) => run::main(a),
        Command::Status(a) => status::main(a),
        Command::Restart(a) => restart::main(a),
        Command::Reload(a) => reload::main(a),
        Command::KillSwitch(a) => kill_switch::main(a),
        Command::Recovery(a) => recovery::main(a),
        Command::Fleet(a) => fleet::main(a),
        Command::Rehearse(a) => rehearse::main(a),
        Command::Generate(a) => generate::main(&a),
    };
    exit.into()
}

/// Writes `text` (and a newline) on stdout. A reader that stops early (`warden status | grep
/// -q …`) is not an error.
fn print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
}

/// What a command that talks to the agent acts on: the agent's name on the bus, and the
/// contract, when it could be read. The name comes from `--app` when given, so that a user who
/// may not read the contract (it holds the app's secrets) still reaches the agent; the
/// contract is needed only without an agent (the state file, the flag) and for timeouts.
struct Admin {
    bus_name: String,
    app: Option<crate::config::instance::AppName>,
    contract: Result<crate::config::Loaded, Unreadable>,
}

/// Why the contract could not be used, said when it is needed.
struct Unreadable {
    message: String,
    help: String,
}

impl Admin {
    fn find(env: &AdminEnv) -> Result<Admin, Exit> {
        let located = env.locate().map_err(|e| {
            errors::report(&e);
            Exit::Usage
        })?;
        let contract = match crate::contract::inputs::load_config(&located.sources(&[], false)) {
            Err(e) => Err(Unreadable {
                message: format!("error: {e}"),
                help: errors::Explain::help(&e),
            }),
            Ok((loaded, _)) => match loaded.invalid.first() {
                Some(i) => Err(Unreadable {
                    message: format!("{i} (from {})", i.origin),
                    help: i.help.clone(),
                }),
                None => Ok(loaded),
            },
        };
        let app = located.app().cloned().or_else(|| {
            let loaded = contract.as_ref().ok()?;
            crate::config::instance::AppName::of_unit(loaded.settings.app_unit.as_deref()?)
        });
        let bus_name = match (&located.app(), &contract) {
            (Some(app), _) => crate::control::dbus::bus_name(Some(app)),
            (None, Ok(l)) => crate::control::dbus::agent_name(&l.settings),
            (None, Err(u)) => {
                errors::refuse(&u.message, Some(&u.help));
                return Err(Exit::Usage);
            }
        };
        Ok(Admin {
            bus_name,
            app,
            contract,
        })
    }

    /// The contract, or exit 2 with why it cannot be used.
    fn contract(&self) -> Result<&crate::config::Loaded, Exit> {
        self.contract.as_ref().map_err(|u| {
            errors::refuse(&u.message, Some(&u.help));
            Exit::Usage
        })
    }

    /// The agent's unit, for hints.
    fn agent_unit(&self) -> String {
        self.app
            .as_ref()
            .map_or_else(|| "the agent's unit".into(), |a| a.agent_unit())
    }
}

/// The async runtime could not start: said, and the exit of a command that reached no agent.
fn runtime_failed(e: std::io::Error) -> Exit {
    errors::report(&errors::IoProblem {
        doing: "start the async runtime".into(),
        source: e,
        help: "the system is out of resources (threads, file descriptors)",
    });
    Exit::NoAgent
}

/// The sources of a check command, or exit 2 with why none were found.
fn sources(a: &SourceArgs) -> Result<crate::contract::inputs::Sources, Exit> {
    a.sources().map_err(|e| {
        errors::report(&e);
        Exit::Usage
    })
}
