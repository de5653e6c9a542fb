//! The exit codes of every command: one table, rendered into each command's `--help` (and man
//! page) and into the README (a test keeps the README equal to it).

use std::fmt::Write as _;

/// How a command ended. The numbers are stable: scripts and systemd act on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// A check failed.
    CheckFailed = 1,
    /// Bad usage, or an input that cannot be used.
    Usage = 2,
    /// Refused: the cooldown runs.
    Cooldown = 3,
    /// Refused: guarded mode blocks.
    Guarded = 4,
    /// The restart failed or was not verified.
    RestartFailed = 5,
    /// Access denied.
    Denied = 6,
    /// No agent, and no fallback.
    NoAgent = 7,
    /// No agent, and nothing recorded yet.
    NothingYet = 8,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Of two endings, the one with the higher code (success only when both succeeded).
    pub fn max_by_code(self, other: Exit) -> Exit {
        if other.code() > self.code() {
            other
        } else {
            self
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// A command, as the table names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Check,
    Contract,
    Run,
    Status,
    Restart,
    Reload,
    KillSwitch,
    Recovery,
    Fleet,
    Rehearse,
}

impl Cmd {
    pub const ALL: [Cmd; 10] = [
        Cmd::Check,
        Cmd::Contract,
        Cmd::Run,
        Cmd::Status,
        Cmd::Restart,
        Cmd::Reload,
        Cmd::KillSwitch,
        Cmd::Recovery,
        Cmd::Fleet,
        Cmd::Rehearse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cmd::Check => "check",
            Cmd::Contract => "contract",
            Cmd::Run => "run",
            Cmd::Status => "status",
            Cmd::Restart => "restart",
            Cmd::Reload => "reload",
            Cmd::KillSwitch => "kill-switch",
            Cmd::Recovery => "recovery",
            Cmd::Fleet => "fleet",
            Cmd::Rehearse => "rehearse",
        }
    }
}

use Cmd::*;

/// What each code means for the commands that return it.
pub const TABLE: &[(Exit, &[Cmd], &str)] = &[
    (
        Exit::Ok,
        &[Check],
        "the contract is valid, or RUNTIME_CONTRACT_ENFORCE=false (findings are then warnings)",
    ),
    (
        Exit::Ok,
        &[Contract],
        "the contract was printed; it has no errors",
    ),
    (Exit::Ok, &[Run], "stopped by SIGTERM or SIGINT"),
    (
        Exit::Ok,
        &[Status],
        "the status was printed (from the agent, else from the history)",
    ),
    (Exit::Ok, &[KillSwitch], "done"),
    (
        Exit::Ok,
        &[Recovery],
        "shown, or the breaker is closed (or already was)",
    ),
    (
        Exit::Ok,
        &[Fleet],
        "the slots were shown, the slot was released (or was free), or the drop-in printed",
    ),
    (
        Exit::Usage,
        &[Fleet],
        "bad usage, an invalid contract, no WARDEN_ETCD_ENDPOINTS or a TLS or password file that cannot be read, or etcd refused the request",
    ),
    (
        Exit::NoAgent,
        &[Fleet],
        "no etcd member answered: nothing was done",
    ),
    (
        Exit::Ok,
        &[Reload],
        "the reload was executed and verified (with --wait, or without an agent), or accepted",
    ),
    (
        Exit::Ok,
        &[Restart],
        "the restart was executed and verified (or accepted, with --no-wait, or queued, with --queue)",
    ),
    (Exit::Ok, &[Rehearse], "every step passed"),
    (
        Exit::CheckFailed,
        &[Check],
        "the contract has errors and is enforced",
    ),
    (
        Exit::CheckFailed,
        &[Contract],
        "the contract was printed; it has errors (`warden check` explains them)",
    ),
    (
        Exit::CheckFailed,
        &[Run],
        "the startup check failed (its findings are printed), or another agent holds the state lock",
    ),
    (
        Exit::CheckFailed,
        &[Rehearse],
        "a step failed: the report names it, with what was seen and how to fix it",
    ),
    (
        Exit::Usage,
        &[Check, Contract, Run, Rehearse],
        "bad usage, or an input (env file, script, docs) could not be read; the message says which",
    ),
    (
        Exit::Usage,
        &[Status],
        "bad usage, or an env file that cannot be read or holds an invalid value",
    ),
    (
        Exit::Usage,
        &[Restart, Reload, KillSwitch, Recovery],
        "bad usage or an invalid configuration, or a request the agent refused as malformed (an override without a reason)",
    ),
    (
        Exit::Cooldown,
        &[Restart, Reload],
        "refused: the cooldown runs (the message gives the seconds left)",
    ),
    (
        Exit::Guarded,
        &[Restart, Reload],
        "refused: guarded mode blocks (the message says how to override)",
    ),
    (
        Exit::RestartFailed,
        &[Status, Recovery],
        "the agent's answer is not a status document",
    ),
    (
        Exit::RestartFailed,
        &[Restart, KillSwitch],
        "the restart failed or was not verified (the message gives the reason)",
    ),
    (
        Exit::RestartFailed,
        &[Reload],
        "the reload failed (the preflight refused the app's code, nothing was signalled) or was not verified; the message gives the cause",
    ),
    (
        Exit::Denied,
        &[Restart, KillSwitch, Recovery],
        "access denied: changes are for root and members of WARDEN_ADMIN_GROUP",
    ),
    (
        Exit::Denied,
        &[Reload],
        "access denied: a reload is for root, members of WARDEN_ADMIN_GROUP and the app's user",
    ),
    (
        Exit::NoAgent,
        &[Status],
        "no agent on the bus, and the state file cannot be read",
    ),
    (
        Exit::NoAgent,
        &[Restart],
        "no agent on the bus: nothing was done (--queue leaves the request for its start)",
    ),
    (
        Exit::NoAgent,
        &[Reload],
        "an agent holds the state lock but does not answer on the bus: nothing was done",
    ),
    (
        Exit::NoAgent,
        &[KillSwitch],
        "no agent on the bus: the kill-switch is the agent's to flip",
    ),
    (
        Exit::NoAgent,
        &[Recovery],
        "no agent on the bus: the breaker is the running agent's (shown: no agent, and the state file cannot be read)",
    ),
    (
        Exit::NothingYet,
        &[Status],
        "no agent on the bus and no history yet: nothing has run under this contract",
    ),
];

/// The codes `cmd` may return, for its `--help`.
pub fn help(cmd: Cmd) -> String {
    let mut out = String::from("Exit codes:");
    for (exit, cmds, meaning) in TABLE {
        if cmds.contains(&cmd) {
            let _ = write!(out, "\n  {}  {meaning}", exit.code());
        }
    }
    out
}

/// Every code of every command, for `warden --help`.
pub fn help_all() -> String {
    let mut out = String::from("Exit codes:");
    for (exit, cmds, meaning) in TABLE {
        let names: Vec<&str> = cmds.iter().map(|c| c.name()).collect();
        let _ = write!(out, "\n  {}  {}: {meaning}", exit.code(), names.join(", "));
    }
    out
}

/// The README's table.
pub fn markdown_table() -> String {
    let mut out = String::from("| code | commands | meaning |\n|---|---|---|\n");
    for (exit, cmds, meaning) in TABLE {
        let names: Vec<String> = cmds.iter().map(|c| format!("`{}`", c.name())).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {meaning} |",
            exit.code(),
            names.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_says_what_success_and_bad_usage_mean() {
        for c in Cmd::ALL {
            let h = help(c);
            assert!(h.contains("\n  0  "), "{c:?}: {h}");
            assert!(h.contains("\n  2  "), "{c:?}: {h}");
        }
        assert!(
            !help(Cmd::Status).contains("\n  3  "),
            "status is never refused"
        );
    }

    #[test]
    fn the_readme_shows_the_table() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "the README's exit-code table differs from the one in src/cli/exit.rs; replace it with:\n{table}"
        );
    }
}
