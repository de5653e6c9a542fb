//! What a user is told when a command cannot do its job: what went wrong, naming the path or
//! value, then `help:` and how to fix it. Every error that reaches the user carries its fix
//! hint the one way, [`Explain`]; findings and rehearsal steps carry theirs as data and are
//! printed in the same shape.

use std::io::Write as _;

use crate::agent::AgentError;
use crate::config::{InvalidValue, LoadError};
use crate::contract::inputs::GatherError;
use crate::control::client::ClientError;

/// An error with its fix hint.
pub trait Explain: std::fmt::Display {
    fn help(&self) -> String;
}

/// Prints `e` and its hint on stderr.
pub fn report(e: &dyn Explain) {
    let _ = writeln!(
        std::io::stderr(),
        "warden: error: {e}\n  help: {}",
        e.help()
    );
}

/// Prints a refusal or failure the command explains itself.
pub fn refuse(message: &str, help: Option<&str>) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "warden: {message}");
    if let Some(h) = help {
        let _ = writeln!(stderr, "  help: {h}");
    }
}

impl Explain for LoadError {
    fn help(&self) -> String {
        match self {
            LoadError::EnvFile { path, source }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                format!(
                    "this user (uid {}) may not read it; the agent runs as the app's user: \
                     chown root:APPGROUP {p} && chmod 0640 {p}",
                    nix::unistd::geteuid(),
                    p = path.display()
                )
            }
            LoadError::EnvFile { .. } => {
                "check the path, or prefix it with '-' to make the file optional".into()
            }
        }
    }
}

impl Explain for InvalidValue {
    fn help(&self) -> String {
        self.help.clone()
    }
}

impl Explain for GatherError {
    fn help(&self) -> String {
        match self {
            GatherError::Config(e) => e.help(),
            GatherError::Input { .. } => "check the path and that warden's user may read it".into(),
            GatherError::Runtime(_) => {
                "the system is out of resources (threads, file descriptors)".into()
            }
            GatherError::OtherApp { app, .. } => format!(
                "an instance's contract is its app's: set WARDEN_APP_UNIT={} or remove the line",
                app.unit()
            ),
            GatherError::NoAppUnit { app, .. } => format!(
                "write the contract to {} (/usr/share/doc/warden/MIGRATION.md), or check the app's name: \
                 systemctl status {}",
                app.env_file(&crate::config::instance::config_dir())
                    .display(),
                app.unit()
            ),
        }
    }
}

impl Explain for AgentError {
    fn help(&self) -> String {
        match self {
            AgentError::Locked(_) => "stop the other agent (systemctl stop …), or give this one its own WATCHDOG_STATE_FILE".into(),
            AgentError::Runtime(_) => "the system is out of resources (threads, file descriptors)".into(),
            _ => "check the paths named above and the service user's rights on them".into(),
        }
    }
}

impl Explain for ClientError {
    fn help(&self) -> String {
        match self {
            ClientError::Denied(_) => {
                "run as root or as a member of WARDEN_ADMIN_GROUP".into()
            }
            ClientError::Invalid(_) => {
                "an override needs --acknowledge and a --reason; reasons are one line of at most 4 KiB".into()
            }
            ClientError::NoAnswer(_) => {
                "the agent's journal (journalctl -u 'warden@*') says why; check that it runs".into()
            }
        }
    }
}

/// An I/O failure with what was being done.
pub struct IoProblem {
    pub doing: String,
    pub source: std::io::Error,
    pub help: &'static str,
}

impl std::fmt::Display for IoProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot {}: {}", self.doing, self.source)
    }
}

impl Explain for IoProblem {
    fn help(&self) -> String {
        self.help.into()
    }
}
