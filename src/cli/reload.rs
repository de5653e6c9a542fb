//! `warden reload`: the app unit's `ExecReload=`. It asks the app's agent for a reload (source
//! `reload`, decided by the policy as an operator's request) and, with `--wait`, returns only
//! once it is verified: the same master, every old worker gone, as many new ones booted, the
//! socket held, the health URL answering. A refusal or a failure is a non-zero exit with its
//! cause on stderr, so `systemctl reload APP` fails and the journal says why (a plain
//! `kill -HUP` returns before the reload has happened, whatever becomes of it). With no agent
//! on the bus, it carries the reload out itself under the agent's lock and rules.

use std::time::Duration;

use clap::Args;

use super::args::AdminEnv;
use super::errors;
use super::exit::Exit;
use crate::agent::flag::FlagRequest;
use crate::config::Settings;
use crate::control::client::{self, Agent, Outcome, RestartAnswer};
use crate::ledger::entry::Entry;
use crate::ledger::model::{Recorded, RequestSource};
use crate::ledger::policy::Ruling;

#[derive(Debug, Args)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// Return only once the reload is verified (what ExecReload= wants: `systemctl reload`
    /// then returns when the reload is done, and fails when it failed)
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds (default: the preflight's and the reload's timeouts,
    /// and 30 more)
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: Option<u64>,
    /// Why (recorded in the history and the journal)
    #[arg(long, value_name = "TEXT", default_value = "reload", value_parser = super::args::reason_text)]
    pub reason: String,
}

/// How long `--wait` waits by default.
fn default_wait(s: Option<&Settings>) -> Duration {
    let preflight = s.and_then(|s| s.preflight).unwrap_or_default();
    super::restart::outcome_wait(s) + preflight
}

pub fn main(a: ReloadArgs) -> Exit {
    let admin = match super::Admin::find(&a.env) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    let settings = admin.contract.as_ref().ok().map(|l| &l.settings);
    let wait = a.wait.then(|| {
        a.timeout
            .map(Duration::from_secs)
            .unwrap_or_else(|| default_wait(settings))
    });
    let asked = client::runtime().map(|rt| {
        rt.block_on(async {
            let agent = Agent::find_named(&admin.bus_name).await?;
            Some(agent.reload(&a.reason, wait).await)
        })
    });
    match asked {
        Ok(Some(answer)) => super::restart::render(answer),
        Ok(None) => match admin.contract() {
            Ok(l) => by_itself(&l.settings, &a.reason, &admin.agent_unit()),
            Err(exit) => exit,
        },
        Err(e) => super::runtime_failed(e),
    }
}

/// No agent on the bus: the reload carried out here, as the agent would, under its lock.
fn by_itself(s: &Settings, reason: &str, agent_unit: &str) -> Exit {
    let user = crate::platform::accounts::user_name(nix::unistd::getuid().as_raw());
    let req = FlagRequest {
        user,
        source: RequestSource::Reload,
        reason: Some(reason.to_string()),
        ..FlagRequest::default()
    };
    match crate::agent::oneshot::carry_out(s, &req) {
        Ok((ruling, entry)) => super::restart::render(Ok(answer(&ruling, &entry))),
        Err(crate::agent::AgentError::Locked(path)) => {
            errors::refuse(
                &format!(
                    "an agent holds {} but does not answer on the bus: nothing was done",
                    path.display()
                ),
                Some(&format!(
                    "the agent's journal says why (journalctl -u {agent_unit}); restart it"
                )),
            );
            Exit::NoAgent
        }
        Err(e) => {
            errors::report(&e);
            Exit::RestartFailed
        }
    }
}

/// A reload carried out here, as the agent's answer would put it.
fn answer(ruling: &Ruling, e: &Entry) -> RestartAnswer {
    let id = e.id.clone().unwrap_or_default();
    if !ruling.allowed() {
        let cooldown_left = ruling.reason.is_cooldown().then(|| {
            e.policy_state
                .as_ref()
                .and_then(|p| p.get("cooldown_remaining_seconds")?.as_u64())
                .unwrap_or(0)
        });
        return RestartAnswer::Refused {
            verdict: ruling.verdict.into(),
            reason: ruling.reason.into(),
            requires_acknowledgement: ruling.requires_acknowledgement,
            cooldown_left,
        };
    }
    RestartAnswer::Completed {
        id,
        outcome: Outcome {
            decision: e.decision.clone().unwrap_or(Recorded::Other(String::new())),
            verified: e.verified == Some(true),
            detail: e.outcome_detail(),
        },
    }
}
