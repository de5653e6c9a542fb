//! What the agent does before its event loop: takes the state file's lock, clears what a
//! killed agent left (temporary files, settled outcomes, claimed flags), opens the ledger and
//! pins the flag's directory. Blocking, and done before the runtime starts.

use std::path::{Path, PathBuf};

use super::AgentError;
use super::flag::{self, FlagDir};
use crate::config::Settings;
use crate::ledger::Ledger;
use crate::systemd::journal;

/// The agent's resources, ready for its event loop.
pub struct Prepared {
    /// Held for the agent's lifetime: one agent per state file.
    pub lock: nix::fcntl::Flock<std::fs::File>,
    pub ledger: Ledger,
    pub flag_dir: FlagDir,
}

/// Prepares the agent for `s`.
pub fn prepare(s: &Settings) -> Result<Prepared, AgentError> {
    let state_path = &s.state_file.value;
    let lock = lock(state_path)?;
    // The lock makes this agent the state file's one writer: a temporary file beside it is a
    // write cut short by a kill.
    let temps = crate::platform::fs::remove_stale_temps(state_path);
    if temps > 0 {
        tracing::warn!("removed {temps} temporary file(s) of state writes cut short");
    }
    let (ledger, opened) = Ledger::open(state_path, s.history_max, s.policy)?;
    if let Some((kept_as, why)) = &opened.set_aside {
        tracing::error!(
            message_id = journal::STATE_SET_ASIDE,
            kept_as = %kept_as.display(),
            "the state file did not parse ({why}); it was kept as {} and the history starts empty",
            kept_as.display()
        );
    }
    if let Some(why) = &opened.no_intent_record {
        tracing::warn!(error = %why, "no intent record; restarts are recorded through the state file");
    }
    if let Some(why) = ledger.unsaved() {
        tracing::error!(
            "cannot save the restart history with the outcomes settled at start: {why}; retrying"
        );
    }
    let flag_path = &s.restart_flag.value;
    let flag_dir = FlagDir::pin(flag_path).map_err(|source| AgentError::FlagDir {
        path: flag_path.clone(),
        source,
    })?;
    let stale = flag::requeue_stale_claims(flag_path, &opened.settled_agents);
    if stale > 0 {
        tracing::warn!(
            "{stale} request(s) claimed by an agent that stopped before deciding them: queued again"
        );
    }
    Ok(Prepared {
        lock,
        ledger,
        flag_dir,
    })
}

/// `<state file>.lock`.
fn lock_path(state_path: &Path) -> PathBuf {
    let mut name = state_path.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    state_path.with_file_name(name)
}

/// Takes `<state file>.lock`, exclusively and without waiting.
fn lock(state_path: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, AgentError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = lock_path(state_path);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| AgentError::Lock {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            AgentError::Locked(path)
        } else {
            AgentError::Lock {
                path,
                source: e.into(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_agent_per_state_file() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state.json");
        let held = lock(&state).unwrap();
        assert!(matches!(lock(&state), Err(AgentError::Locked(_))));
        drop(held);
        assert!(lock(&state).is_ok());
    }
}
