//! The watchdog agent (`warden run`): its event sources (the restart flag's directory, the
//! commands of the control surface), the restart executor that alone changes the state, the
//! Gunicorn master behind a trait, and what it tells systemd. The event loop that wires these
//! to the control surface is `warden run`'s (`cli::run`).
//!
//! One restart runs at a time, off the event loop; flags arriving meanwhile coalesce into one
//! more request, taken when the running one is done. The state file is locked: one agent per
//! state file.

mod audit;
pub mod executor;
pub mod flag;
pub mod fleet;
pub mod master;
pub mod oneshot;
pub mod preflight;
pub mod probe;
pub mod protocol;
mod restart;
pub mod startup;
pub mod watch;
pub mod watchdog;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("another warden run holds {0}; one agent runs per state file")]
    Locked(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::ledger::state::StateError),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot inspect the restart flag's directory {path}: {source}")]
    FlagDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the event loop: {0}")]
    Runtime(std::io::Error),
    #[error("the fleet's etcd: {0}")]
    Fleet(#[from] crate::fleet::connect::ConnectError),
}
