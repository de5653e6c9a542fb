//! Argument groups several commands share.

use std::path::PathBuf;

use clap::Args;

use super::target::{self, AppArg, LocateError, Located};
use crate::config::EnvFileArg;
use crate::contract::inputs::Sources;

/// Where a check reads the contract from.
#[derive(Debug, Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub app: AppArg,
    /// Load variables from a file in systemd EnvironmentFile= syntax instead of the app's
    /// contract; repeatable, later files override earlier ones and the environment. A leading
    /// '-' makes the file optional
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

impl SourceArgs {
    pub fn sources(&self) -> Result<Sources, LocateError> {
        let found = target::locate(self.app.app.as_ref(), &self.env_files)?;
        Ok(found.sources(&self.unit_paths, self.offline))
    }
}

/// The app of a command that acts on the agent.
#[derive(Debug, Args)]
pub struct AdminEnv {
    #[command(flatten)]
    pub app: AppArg,
    /// Load variables from a file in systemd EnvironmentFile= syntax instead of the app's
    /// contract (for the agent's name and, when no agent answers, the state and flag paths);
    /// repeatable. A leading '-' makes the file optional
    #[arg(long = "env-file", value_name = "PATH", allow_hyphen_values = true)]
    pub env_files: Vec<EnvFileArg>,
}

impl AdminEnv {
    pub fn locate(&self) -> Result<Located, LocateError> {
        target::locate(self.app.app.as_ref(), &self.env_files)
    }
}

/// A `--reason`: recorded in the history and the journal, so it says something.
pub fn reason_text(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the reason is empty: say why, it is recorded with who asked and when".into());
    }
    Ok(s.to_string())
}
