//! `warden restart`: asks the agent for a graceful reload under the policy and waits for the
//! verified outcome. With no agent on the bus nothing happens, unless `--queue` asks to leave
//! the request as a flag, as the MES admin API writes it, for the agent's next start.

use std::time::Duration;

use clap::Args;

use super::args::AdminEnv;
use super::errors::{self, Explain};
use super::exit::Exit;
use crate::agent::flag::{self, Queued};
use crate::config::Settings;
use crate::control::client::{self, Agent, ClientError, RestartAnswer};
use crate::ledger::model::{RequestSource, Verdict};

#[derive(Debug, Args)]
pub struct RestartArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// Why (recorded in the history and the journal; not empty)
    #[arg(long, value_name = "TEXT", value_parser = super::args::reason_text)]
    pub reason: String,
    /// Override the cooldown or guarded mode (needs --acknowledge; audited with --reason)
    #[arg(long = "override", requires = "acknowledge")]
    pub manual_override: bool,
    /// Acknowledge that the override bypasses the churn policy
    #[arg(long, requires = "manual_override")]
    pub acknowledge: bool,
    /// Return once the agent accepted the request, without waiting for the verified outcome
    #[arg(long)]
    pub no_wait: bool,
    /// With no agent on the bus, leave the request as a restart flag for the agent to take
    /// when it starts (without it, no agent is exit 7 and nothing is written)
    #[arg(long)]
    pub queue: bool,
}

/// How long to wait for an outcome: the reload's own timeout, and a margin for the policy,
/// the intent and the signal (the default timeout's when the contract cannot be read).
pub fn outcome_wait(contract: Option<&Settings>) -> Duration {
    let reload = contract.map_or_else(|| Settings::defaults().reload_timeout, |s| s.reload_timeout);
    reload + Duration::from_secs(30)
}

pub fn main(a: RestartArgs) -> Exit {
    let admin = match super::Admin::find(&a.env) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    let settings = admin.contract.as_ref().ok().map(|l| &l.settings);
    let wait = (!a.no_wait).then(|| outcome_wait(settings));
    let asked = client::runtime().map(|rt| {
        rt.block_on(async {
            let agent = Agent::find_named(&admin.bus_name).await?;
            Some(
                agent
                    .restart(&a.reason, a.manual_override, a.acknowledge, wait)
                    .await,
            )
        })
    });
    match asked {
        Ok(Some(answer)) => render(answer),
        Ok(None) if a.queue => match admin.contract() {
            Ok(l) => queue(&l.settings, &a),
            Err(exit) => exit,
        },
        Ok(None) => {
            errors::refuse(
                &format!(
                    "no agent answers on the bus ({}): nothing was done",
                    admin.bus_name
                ),
                Some(&format!(
                    "start the agent (systemctl start {}), or leave the request for its start \
                     with --queue",
                    admin.agent_unit()
                )),
            );
            Exit::NoAgent
        }
        Err(e) => super::runtime_failed(e),
    }
}

/// What an answer means for the operator: a message, maybe a hint, and the exit code.
pub fn render(answer: Result<RestartAnswer, ClientError>) -> Exit {
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            errors::report(&e);
            return client_exit(&e);
        }
    };
    const OVERRIDE: &str = "an operator may override: --override --acknowledge --reason TEXT";
    match answer {
        RestartAnswer::Refused {
            verdict, reason, ..
        } if verdict.known() == Some(Verdict::Refused) => {
            errors::refuse(
                &format!("refused: {reason} (an override needs --acknowledge and a --reason)"),
                None,
            );
            Exit::Usage
        }
        RestartAnswer::Refused {
            reason,
            requires_acknowledgement,
            cooldown_left: Some(left),
            ..
        } => {
            errors::refuse(
                &format!("Restart in cooldown. Please wait {left} seconds ({reason})."),
                requires_acknowledgement.then_some(OVERRIDE),
            );
            Exit::Cooldown
        }
        RestartAnswer::Refused { reason, .. } => {
            errors::refuse(
                &format!("blocked by guarded mode ({reason}): too many restarts in the window"),
                Some("to override, run again with --override --acknowledge --reason TEXT"),
            );
            Exit::Guarded
        }
        RestartAnswer::Accepted { verdict, id } => {
            super::print(&format!("accepted ({verdict}), request {id}"));
            Exit::Ok
        }
        RestartAnswer::Completed { outcome, .. } if outcome.succeeded() => {
            super::print(&format!(
                "restart executed and verified: {}",
                outcome.detail
            ));
            Exit::Ok
        }
        RestartAnswer::Completed { outcome, .. } => {
            errors::refuse(
                &format!("restart {}: {}", outcome.decision, outcome.detail),
                Some("the agent's journal (journalctl -u 'warden@*') has the reload's details"),
            );
            Exit::RestartFailed
        }
        RestartAnswer::NoOutcome { id, waited } => {
            errors::refuse(
                &format!("no outcome for request {id} within {} s", waited.as_secs()),
                Some("the reload may still be running: warden status shows its outcome"),
            );
            Exit::RestartFailed
        }
    }
}

/// The exit code of a call that could not be made.
pub fn client_exit(e: &ClientError) -> Exit {
    match e {
        ClientError::Denied(_) => Exit::Denied,
        ClientError::Invalid(_) => Exit::Usage,
        ClientError::NoAnswer(_) => Exit::NoAgent,
    }
}

/// No agent on the bus: the request goes to the flag, written as the MES admin API writes it.
fn queue(s: &Settings, a: &RestartArgs) -> Exit {
    let user = crate::platform::accounts::user_name(nix::unistd::getuid().as_raw());
    let request = Queued {
        user: user.as_deref(),
        timestamp: crate::ledger::time::format_time(chrono::Utc::now()),
        source: RequestSource::Manual,
        manual_override: a.manual_override,
        override_acknowledged: a.acknowledge,
        override_reason: a.manual_override.then_some(a.reason.as_str()),
        runtime_contract_version: &s.contract_version.value,
        reason: &a.reason,
    };
    let path = &s.restart_flag.value;
    match flag::queue(path, &request) {
        Ok(()) => {
            super::print(&format!(
                "queued in {}: nothing has happened yet; the agent takes the request when it \
                 starts, under the policy (warden status shows the outcome)",
                path.display()
            ));
            Exit::Ok
        }
        Err(e) => {
            let problem = errors::IoProblem {
                doing: format!(
                    "queue the request in {} (no agent on the bus)",
                    path.display()
                ),
                source: e,
                help: "start the agent, or run as a user who may write the runtime directory",
            };
            errors::refuse(&problem.to_string(), Some(&problem.help()));
            Exit::NoAgent
        }
    }
}
