//! `warden status`: the status document, from the agent over D-Bus, or with no agent from the
//! state file (read without changing it) and the rules the agent checks at its start.

use clap::Args;

use super::args::AdminEnv;
use super::errors;
use super::exit::Exit;
use crate::config::{Loaded, Settings};
use crate::control::client::{self, Agent};
use crate::control::status::{self, StatusDoc, Validation};
use crate::ledger::state::{self, MAX_STATE_BYTES, StateDoc};
use crate::platform::fs::{ReadError, read_untrusted};

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// Print the status document (the MES dashboard's worker-status `data`, plus warden's own)
    #[arg(long)]
    pub json: bool,
}

pub fn main(a: StatusArgs) -> Exit {
    let loaded = match super::load_strict(&a.env.env_files) {
        Ok(l) => l,
        Err(exit) => return exit,
    };
    let (doc, nothing_yet) = match document(&loaded) {
        Ok(d) => (d, false),
        Err(Fetched::NothingYet(d)) => (d, true),
        Err(Fetched::Failed(exit)) => return exit,
    };
    // Said even with --json, on stderr: a script reads the code, a person the words.
    let ok = if nothing_yet {
        errors::refuse(
            &format!(
                "no agent answers on the bus, and {} holds no history: nothing has run under \
                 this contract yet",
                loaded.settings.state_file.value.display()
            ),
            Some(
                "start the agent (systemctl start warden.service); what follows is the contract's view alone",
            ),
        );
        Exit::NothingYet
    } else {
        Exit::Ok
    };
    if a.json {
        super::print(&serde_json::to_string_pretty(&doc).unwrap_or_default());
        return ok;
    }
    match status::from_json(doc) {
        Ok(d) => {
            super::print(&status::summary(&d));
            ok
        }
        Err(e) => {
            errors::refuse(
                &format!("the agent's status is not a status document: {e}"),
                Some(
                    "the agent and this command are of different warden versions: run the same one",
                ),
            );
            Exit::RestartFailed
        }
    }
}

/// Why [`document`] has no document from an agent or a history.
pub enum Fetched {
    /// No agent, no history: the document built from the contract alone.
    NothingYet(serde_json::Value),
    /// Nothing to show; the message is out, with this code.
    Failed(Exit),
}

impl From<Exit> for Fetched {
    fn from(e: Exit) -> Self {
        Fetched::Failed(e)
    }
}

/// The document as JSON: the agent's, else built from the state file.
pub fn document(loaded: &Loaded) -> Result<serde_json::Value, Fetched> {
    let s = &loaded.settings;
    let from_agent = client::runtime().ok().and_then(|rt| {
        rt.block_on(async {
            match Agent::find().await {
                Some(agent) => agent.status().await.ok(),
                None => None,
            }
        })
    });
    if let Some(text) = from_agent {
        return serde_json::from_str(&text).map_err(|e| {
            errors::refuse(
                &format!("the agent's status is not JSON: {e}"),
                Some("the agent's journal (journalctl -u warden.service) may say why"),
            );
            Exit::RestartFailed.into()
        });
    }
    let state = read_state(s)?;
    let validation = startup_validity(loaded);
    let doc = serde_json::to_value(without_agent(s, &state, &validation)).unwrap_or_default();
    if state.history.is_empty() && state.last_restart.is_none() && state.kill_switch.is_none() {
        return Err(Fetched::NothingYet(doc));
    }
    Ok(doc)
}

fn without_agent(s: &Settings, state: &StateDoc, v: &Validation) -> StatusDoc {
    crate::control::observe::document(s, state, v, None)
}

/// The state file, read without changing it (a missing one is an empty history).
fn read_state(s: &Settings) -> Result<StateDoc, Exit> {
    let path = &s.state_file.value;
    match read_untrusted(path, MAX_STATE_BYTES) {
        Ok(u) => state::parse(&u.bytes).map_err(|why| {
            errors::refuse(
                &format!(
                    "no agent on the bus, and the state file {} does not parse: {why}",
                    path.display()
                ),
                Some("`warden run` sets it aside and starts a new history"),
            );
            Exit::NoAgent
        }),
        Err(ReadError::Missing(_)) => Ok(StateDoc::default()),
        Err(e) => {
            errors::refuse(
                &format!("no agent on the bus, and {e}"),
                Some("run as root or the service user, or start the agent"),
            );
            Err(Exit::NoAgent)
        }
    }
}

/// The contract's validity as the agent would judge it at its start.
fn startup_validity(loaded: &Loaded) -> Validation {
    let errors = crate::contract::startup::errors(loaded);
    Validation {
        valid: errors.is_empty(),
        errors: errors.iter().map(|f| f.headline()).collect(),
    }
}
