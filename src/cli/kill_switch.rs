//! `warden kill-switch [on|off]`: shows the switch, or engages or releases it through the agent
//! (recorded, published for the app, then one graceful reload the policy does not block).

use clap::Args;

use super::args::AdminEnv;
use super::errors;
use super::exit::Exit;
use super::restart::{client_exit, outcome_wait};
use crate::control::client::{self, Agent, ClientError, FlipAnswer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct KillSwitchArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// on: engage (needs --reason); off: release. Without it, show the switch.
    #[arg(value_enum)]
    pub state: Option<OnOff>,
    /// Why (required to engage; recorded with who and when)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// Return once the switch is recorded and published, without waiting for the reload
    #[arg(long)]
    pub no_wait: bool,
}

pub fn main(a: KillSwitchArgs) -> Exit {
    let admin = match super::Admin::find(&a.env) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    let Some(state) = a.state else {
        return show(&admin);
    };
    let engaged = state == OnOff::On;
    if engaged && a.reason.trim().is_empty() {
        errors::refuse(
            "engaging the kill-switch needs --reason TEXT",
            Some("say why: it is kept with who engaged it and when, for the audit trail"),
        );
        return Exit::Usage;
    }
    let settings = admin.contract.as_ref().ok().map(|l| &l.settings);
    let wait = (!a.no_wait).then(|| outcome_wait(settings));
    let flipped = client::runtime().ok().map(|rt| {
        rt.block_on(async {
            let agent = Agent::find_named(&admin.bus_name).await?;
            Some(agent.flip(engaged, &a.reason, wait).await)
        })
    });
    match flipped.flatten() {
        None => {
            errors::refuse(
                "no agent on the bus: the kill-switch is the agent's to flip",
                Some(&format!(
                    "start the agent: systemctl start {}",
                    admin.agent_unit()
                )),
            );
            Exit::NoAgent
        }
        Some(answer) => render(engaged, answer),
    }
}

pub fn render(engaged: bool, answer: Result<FlipAnswer, ClientError>) -> Exit {
    let what = if engaged { "engaged" } else { "released" };
    match answer {
        Err(e) => {
            errors::report(&e);
            client_exit(&e)
        }
        Ok(FlipAnswer::Unchanged) => {
            super::print(&format!("kill-switch {what} (unchanged: no reload)"));
            Exit::Ok
        }
        Ok(FlipAnswer::Reloading { id }) => {
            super::print(&format!("kill-switch {what}; reload {id} under way"));
            Exit::Ok
        }
        Ok(FlipAnswer::Reloaded { outcome, .. }) if outcome.succeeded() => {
            super::print(&format!(
                "kill-switch {what}; every worker reloaded: {}",
                outcome.detail
            ));
            Exit::Ok
        }
        Ok(FlipAnswer::Reloaded { outcome, .. }) => {
            errors::refuse(
                &format!(
                    "kill-switch {what}, but the reload {}: {}",
                    outcome.decision, outcome.detail
                ),
                Some("the agent's journal (journalctl -u 'warden@*') has the reload's details"),
            );
            Exit::RestartFailed
        }
        Ok(FlipAnswer::NoOutcome { waited, .. }) => {
            errors::refuse(
                &format!(
                    "kill-switch {what}; no reload outcome within {} s",
                    waited.as_secs()
                ),
                Some("the reload may still be running: warden status shows its outcome"),
            );
            Exit::RestartFailed
        }
    }
}

/// The switch as the status document shows it.
fn show(admin: &super::Admin) -> Exit {
    use super::status::Fetched;
    // No history yet is no different for the switch: it is off until someone engages it.
    let doc = match super::status::document(admin) {
        Ok(d) | Err(Fetched::NothingYet(d)) => d,
        Err(Fetched::Failed(exit)) => return exit,
    };
    let k = &doc["kill_switch"];
    let engaged = k["engaged"] == true;
    let by = match (&k["changed_by"], &k["changed_at"], &k["reason"]) {
        (serde_json::Value::String(by), serde_json::Value::String(at), r) => format!(
            " ({} by {by} at {at}{})",
            if engaged { "engaged" } else { "released" },
            r.as_str().map(|r| format!(": {r}")).unwrap_or_default()
        ),
        _ => String::new(),
    };
    // A state, not an action: `on`/`off` are the words that change it.
    super::print(&format!(
        "kill-switch: {}{by}",
        if engaged { "on" } else { "off" }
    ));
    Exit::Ok
}
