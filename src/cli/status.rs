//! `warden status`: the status document, from the agent over D-Bus, or with no agent from the
//! state file (read without changing it) and the rules the agent checks at its start.

use clap::Args;

use super::Admin;
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
    /// Every app of the host: those configured in /etc/warden and those whose agent is on
    /// the bus, one after the other (with --json, one document per app)
    #[arg(long, conflicts_with_all = ["app", "env_files"])]
    pub all: bool,
}

pub fn main(a: StatusArgs) -> Exit {
    if a.all {
        return every_app(a.json);
    }
    let admin = match super::Admin::find(&a.env) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    match one(&admin) {
        Ok((doc, exit)) => show(doc, a.json).max_by_code(exit),
        Err(exit) => exit,
    }
}

/// Every app's status, each under its name.
fn every_app(json: bool) -> Exit {
    let dir = crate::config::instance::config_dir();
    let mut apps = match crate::config::instance::configured(&dir) {
        Ok(a) => a,
        Err(source) => {
            errors::report(&super::target::LocateError::Unreadable { dir, source });
            return Exit::Usage;
        }
    };
    if let Ok(rt) = client::runtime() {
        apps.extend(rt.block_on(Agent::apps_on_bus()));
    }
    apps.sort();
    apps.dedup();
    if apps.is_empty() {
        errors::report(&super::target::LocateError::Nothing { dir });
        return Exit::Usage;
    }
    let mut exit = Exit::Ok;
    let mut docs = serde_json::Map::new();
    for app in apps {
        let env = AdminEnv {
            app: super::target::AppArg {
                app: Some(app.clone()),
            },
            env_files: Vec::new(),
        };
        let shown = super::Admin::find(&env).and_then(|t| one(&t));
        match shown {
            Ok((doc, e)) if json => {
                docs.insert(app.to_string(), doc);
                exit = exit.max_by_code(e);
            }
            Ok((doc, e)) => {
                super::print(&format!("== {app} ({})", app.agent_unit()));
                exit = exit.max_by_code(show(doc, false)).max_by_code(e);
            }
            Err(e) => exit = exit.max_by_code(e),
        }
    }
    if json {
        super::print(&serde_json::to_string_pretty(&docs).unwrap_or_default());
    }
    exit
}

/// The status document of one contract, and the code it ends with (8 when nothing has run).
fn one(admin: &Admin) -> Result<(serde_json::Value, Exit), Exit> {
    let (doc, nothing_yet) = match document(admin) {
        Ok(d) => (d, false),
        Err(Fetched::NothingYet(d)) => (d, true),
        Err(Fetched::Failed(exit)) => return Err(exit),
    };
    // Said even with --json, on stderr: a script reads the code, a person the words.
    let ok = if nothing_yet {
        errors::refuse(
            &format!(
                "no agent answers on the bus, and {} holds no history: nothing has run under \
                 this contract yet",
                admin
                    .contract
                    .as_ref()
                    .map(|l| l.settings.state_file.value.display().to_string())
                    .unwrap_or_default()
            ),
            Some(&format!(
                "start the agent (systemctl start {}); what follows is the contract's view alone",
                admin.agent_unit()
            )),
        );
        Exit::NothingYet
    } else {
        Exit::Ok
    };
    Ok((doc, ok))
}

/// Prints a status document, as JSON or as the summary.
fn show(doc: serde_json::Value, json: bool) -> Exit {
    if json {
        super::print(&serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Exit::Ok;
    }
    match status::from_json(doc) {
        Ok(d) => {
            super::print(&status::summary(&d));
            Exit::Ok
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
pub fn document(admin: &Admin) -> Result<serde_json::Value, Fetched> {
    let from_agent = client::runtime().ok().and_then(|rt| {
        rt.block_on(async {
            match Agent::find_named(&admin.bus_name).await {
                Some(agent) => agent.status().await.ok(),
                None => None,
            }
        })
    });
    if let Some(text) = from_agent {
        return serde_json::from_str(&text).map_err(|e| {
            errors::refuse(
                &format!("the agent's status is not JSON: {e}"),
                Some("the agent's journal (journalctl -u 'warden@*') may say why"),
            );
            Exit::RestartFailed.into()
        });
    }
    let loaded = admin.contract()?;
    let s = &loaded.settings;
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
