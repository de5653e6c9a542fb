//! One request carried out by a command itself, when no agent runs (`warden reload` without
//! an agent): the agent's own steps under the agent's lock, so that the state file, the
//! policy, the intent record and the history are the same as if the agent had done it.

use super::AgentError;
use super::flag::FlagRequest;
use super::master::ProcMaster;
use super::restart::{self, Incoming};
use crate::config::Settings;
use crate::ledger::entry::Entry;
use crate::ledger::policy::Ruling;

/// Takes the state lock (refused while an agent holds it), decides `req` under the policy and,
/// allowed, reloads and verifies as the agent would. Returns the ruling and the entry recorded.
pub fn carry_out(s: &Settings, req: &FlagRequest) -> Result<(Ruling, Entry), AgentError> {
    let prepared = super::startup::prepare(s)?;
    let mut ledger = prepared.ledger;
    let mut master = ProcMaster::new(s.pid_file.value.clone(), s.app_unit.clone());
    let mut ruled = None;
    // No agent runs: this command takes the host's slot itself, as the agent would.
    let mut outside = super::fleet::Outside::of(s, &super::fleet::instance_name(s))?;
    let entry = restart::handle(
        &mut ledger,
        &mut master,
        s,
        Incoming {
            req,
            ask: &req.policy_request(),
            written_at: None,
            claimed: None,
            dry_run: false,
        },
        &mut |r: &Ruling, _: &str| ruled = Some(*r),
        restart::Around {
            slots: outside.slots.as_deref_mut(),
            gate: None,
            turn: &mut || {},
        },
    );
    super::audit::handled(&entry);
    let ruling = ruled.expect("handle rules on every request");
    Ok((ruling, entry))
}
