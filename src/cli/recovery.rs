//! `warden recovery [reset]`: shows the agent's probes of the app and its automatic recovery
//! breaker, or closes the breaker (acknowledged, with a reason: audited).

use clap::Args;

use super::args::{AdminEnv, reason_text};
use super::errors;
use super::exit::Exit;
use super::restart::client_exit;
use crate::control::client::{self, Agent};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Close the breaker: automatic restarts may be asked again
    Reset,
}

#[derive(Debug, Args)]
pub struct RecoveryArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// reset: close the breaker (needs --acknowledge and --reason). Without it, show the
    /// probes and the breaker.
    #[arg(value_enum)]
    pub action: Option<Action>,
    /// Acknowledge that automatic restarts resume although the policy refused one or one
    /// failed
    #[arg(long)]
    pub acknowledge: bool,
    /// Why (recorded in the journal with who and when)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

pub fn main(a: RecoveryArgs) -> Exit {
    let admin = match super::Admin::find(&a.env) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    let Some(Action::Reset) = a.action else {
        return show(&admin);
    };
    if !a.acknowledge {
        errors::refuse(
            "closing the breaker needs --acknowledge",
            Some(
                "it opened because the policy refused an automatic restart or one failed: acknowledge that they may start again",
            ),
        );
        return Exit::Usage;
    }
    let reason = match reason_text(&a.reason) {
        Ok(r) => r,
        Err(why) => {
            errors::refuse(&why, Some("add --reason TEXT"));
            return Exit::Usage;
        }
    };
    let answer = client::runtime().ok().map(|rt| {
        rt.block_on(async {
            let agent = Agent::find_named(&admin.bus_name).await?;
            Some(agent.reset_recovery(&reason).await)
        })
    });
    match answer.flatten() {
        None => {
            errors::refuse(
                "no agent on the bus: the breaker is the running agent's",
                Some(&format!(
                    "start the agent: systemctl start {}",
                    admin.agent_unit()
                )),
            );
            Exit::NoAgent
        }
        Some(Err(e)) => {
            errors::report(&e);
            client_exit(&e)
        }
        Some(Ok(was)) if was == "closed" => {
            super::print("recovery breaker: closed (it was already)");
            Exit::Ok
        }
        Some(Ok(was)) => {
            super::print(&format!("recovery breaker: {was} → closed"));
            Exit::Ok
        }
    }
}

/// The probes and the breaker as the status document shows them.
fn show(admin: &super::Admin) -> Exit {
    use super::status::Fetched;
    let doc = match super::status::document(admin) {
        Ok(d) | Err(Fetched::NothingYet(d)) => d,
        Err(Fetched::Failed(exit)) => return exit,
    };
    match crate::control::status::from_json(doc) {
        Ok(d) => {
            super::print(&crate::control::status::recovery_summary(&d).join("\n"));
            Exit::Ok
        }
        Err(e) => {
            errors::refuse(
                &format!("the agent's answer is not a status document: {e}"),
                None,
            );
            Exit::RestartFailed
        }
    }
}
