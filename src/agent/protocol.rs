//! The agent's protocol: what the control surface asks of it, and what it reports after each
//! change of the state.

use tokio::sync::oneshot;

use crate::ledger::entry::Entry;
use crate::ledger::policy::Ruling;
use crate::ledger::state::StateDoc;

/// Who asked, as the bus daemon reported it (never what the caller says of itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    /// The user's name when `/etc/passwd` (or NSS) knows it, else `uid:N`.
    pub name: String,
}

/// A request that changes the state, from a caller already authorized. The executor carries it
/// out; it alone changes the state.
#[derive(Debug)]
pub enum Change {
    /// A graceful reload under the policy. The ruling is answered before anything is
    /// signalled; the outcome comes with the [`Update`] of the entry.
    Restart {
        caller: Caller,
        /// `Manual` (`warden restart`) or `Reload` (`warden reload`).
        source: crate::ledger::model::RequestSource,
        reason: String,
        manual_override: bool,
        acknowledged: bool,
        /// Automatic recovery's dry run: ruled on and recorded, never signalled.
        dry_run: bool,
        reply: oneshot::Sender<Decided>,
    },
    /// Engage or release the kill-switch. Answered with the id of its reload (`None` when the
    /// switch did not change), or why the flip was refused.
    KillSwitch {
        caller: Caller,
        engaged: bool,
        reason: String,
        reply: oneshot::Sender<Result<Option<String>, String>>,
    },
}

/// The policy's ruling on a restart request, and the id its history entry will have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub ruling: Ruling,
    pub id: String,
}

/// What the executor tells after each change of the state.
#[derive(Debug, Clone)]
pub struct Update {
    /// The state as it now is.
    pub doc: StateDoc,
    /// The request just handled, as recorded; `None` for a change that is not one (a
    /// kill-switch flip with nothing to reload, the history saved again).
    pub handled: Option<Entry>,
    /// Why the state file is behind `doc`, if it is.
    pub unsaved: Option<String>,
}
