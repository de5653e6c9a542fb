//! The command line: the arguments of each command, and the commands themselves, one module
//! each. `run`'s module wires the agent to the control surface.

mod args;
mod check;
mod contract;
pub mod errors;
pub mod exit;
pub mod generate;
mod kill_switch;
mod rehearse;
mod restart;
mod run;
mod status;

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
    /// Show the kill-switch, or engage (on) or release (off) it: published for the app, then
    /// one graceful reload that the policy does not block
    #[command(name = "kill-switch", after_help = exit::help(Cmd::KillSwitch))]
    KillSwitch(kill_switch::KillSwitchArgs),
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
        Command::KillSwitch(a) => kill_switch::main(a),
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

/// Loads the configuration of a command that acts: an invalid value stops it (exit 2).
fn load_strict(env_files: &[crate::config::EnvFileArg]) -> Result<crate::config::Loaded, Exit> {
    let loaded = crate::config::load(env_files).map_err(|e| {
        errors::report(&e);
        Exit::Usage
    })?;
    if let Some(i) = loaded.invalid.first() {
        errors::refuse(&format!("{i} (from {})", i.origin), Some(&i.help));
        return Err(Exit::Usage);
    }
    Ok(loaded)
}
