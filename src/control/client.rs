//! The control surface's client: asks the running agent over D-Bus and returns typed answers;
//! the commands decide what they mean for the user (an exit code, a message, a hint).

use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;

use super::dbus::{Agent1Proxy, RestartCompletedStream};
use crate::config::Settings;
use crate::config::instance::AppName;
use crate::ledger::model::{Decision, Reason, Recorded, Verdict};

/// Why the agent could not be asked, or refused to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// Not root, not in `WARDEN_ADMIN_GROUP`.
    #[error("access denied: {0}")]
    Denied(String),
    /// The request is malformed (the agent's words).
    #[error("{0}")]
    Invalid(String),
    /// The agent did not answer (it stopped, the bus failed).
    #[error("the agent did not answer: {0}")]
    NoAnswer(String),
}

/// How a restart ended, as the agent reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Recorded<Decision>,
    pub verified: bool,
    pub detail: String,
}

impl Outcome {
    /// Executed and verified.
    pub fn succeeded(&self) -> bool {
        self.decision.known() == Some(Decision::Executed) && self.verified
    }
}

/// The agent's answer to a restart request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestartAnswer {
    /// The policy refused it (or it was malformed: [`Verdict::Refused`]). `cooldown_left`:
    /// seconds, when a cooldown runs.
    Refused {
        verdict: Recorded<Verdict>,
        reason: Recorded<Reason>,
        requires_acknowledgement: bool,
        cooldown_left: Option<u64>,
    },
    /// Accepted; not waited for.
    Accepted {
        verdict: Recorded<Verdict>,
        id: String,
    },
    /// Accepted, and how it ended.
    Completed { id: String, outcome: Outcome },
    /// Accepted, and no outcome came within the wait.
    NoOutcome { id: String, waited: Duration },
}

/// The agent's answer to a kill-switch flip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlipAnswer {
    /// Recorded; it was so already: nothing to reload.
    Unchanged,
    /// Recorded and published; its reload is under way (not waited for).
    Reloading { id: String },
    /// Recorded and published, and how its reload ended.
    Reloaded { id: String, outcome: Outcome },
    /// Recorded and published; no reload outcome came within the wait.
    NoOutcome { id: String, waited: Duration },
}

/// The policy as the agent's properties show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNow {
    pub state: String,
    pub attempts_in_window: u32,
    pub cooldown_remaining: u64,
}

/// The running agent, on the system bus.
pub struct Agent {
    proxy: Agent1Proxy<'static>,
}

/// The D-Bus error name of a failed call, however zbus carries it.
fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => Some(zbus::DBusError::name(f.as_ref()).to_string()),
        _ => None,
    }
}

fn detail(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(m), _) => m.clone(),
        zbus::Error::FDO(f) => zbus::DBusError::description(f.as_ref())
            .map(str::to_string)
            .unwrap_or_else(|| f.to_string()),
        other => other.to_string(),
    }
}

impl From<zbus::Error> for ClientError {
    fn from(e: zbus::Error) -> Self {
        match error_name(&e).as_deref() {
            Some("org.freedesktop.DBus.Error.AccessDenied") => ClientError::Denied(detail(&e)),
            Some("org.freedesktop.DBus.Error.InvalidArgs") => ClientError::Invalid(detail(&e)),
            _ => ClientError::NoAnswer(e.to_string()),
        }
    }
}

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Waits for `RestartCompleted` with `id`.
async fn outcome(
    stream: &mut RestartCompletedStream,
    id: &str,
    timeout: Duration,
) -> Option<Outcome> {
    tokio::time::timeout(timeout, async {
        while let Some(sig) = next(stream).await {
            if let Ok(a) = sig.args()
                && a.id == id
            {
                return Some(Outcome {
                    decision: a.outcome.parse().unwrap_or_else(|e| match e {}),
                    verified: a.verified,
                    detail: a.detail.to_string(),
                });
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// What a restart request asks.
enum Asked {
    Restart {
        manual_override: bool,
        acknowledged: bool,
    },
    Reload,
}

impl Agent {
    /// The agent of the contract `s` (its app's), if one owns its name on the system bus
    /// (`DBUS_SYSTEM_BUS_ADDRESS` honoured).
    pub async fn find(s: &Settings) -> Option<Agent> {
        Self::find_named(&super::dbus::agent_name(s)).await
    }

    /// The agent that owns `name`, if one does.
    pub async fn find_named(name: &str) -> Option<Agent> {
        let conn = zbus::Connection::system().await.ok()?;
        let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
        let bus_name = zbus::names::OwnedBusName::try_from(name.to_string()).ok()?;
        if !dbus.name_has_owner(bus_name.as_ref()).await.ok()? {
            return None;
        }
        Some(Agent {
            proxy: Agent1Proxy::builder(&conn)
                .destination(bus_name)
                .build()
                .await
                .ok()?,
        })
    }

    /// The apps whose agents are on the system bus, sorted (an agent that names no app is
    /// not one of them).
    pub async fn apps_on_bus() -> Vec<AppName> {
        let names = async {
            let conn = zbus::Connection::system().await.ok()?;
            let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
            dbus.list_names().await.ok()
        };
        let mut apps: Vec<AppName> = names
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|n| super::dbus::app_of_bus_name(n.as_str()))
            .collect();
        apps.sort();
        apps
    }

    /// The status document, as the agent's JSON.
    pub async fn status(&self) -> Result<String, ClientError> {
        Ok(self.proxy.status().await?)
    }

    /// Asks for a restart and, with `wait`, waits up to that long for its outcome.
    pub async fn restart(
        &self,
        reason: &str,
        manual_override: bool,
        acknowledged: bool,
        wait: Option<Duration>,
    ) -> Result<RestartAnswer, ClientError> {
        self.ask(
            Asked::Restart {
                manual_override,
                acknowledged,
            },
            reason,
            wait,
        )
        .await
    }

    /// Asks for the app's reload (`warden reload`, source `reload`) and, with `wait`, waits up
    /// to that long for its verified outcome.
    pub async fn reload(
        &self,
        reason: &str,
        wait: Option<Duration>,
    ) -> Result<RestartAnswer, ClientError> {
        self.ask(Asked::Reload, reason, wait).await
    }

    async fn ask(
        &self,
        asked: Asked,
        reason: &str,
        wait: Option<Duration>,
    ) -> Result<RestartAnswer, ClientError> {
        // Subscribed before asking, so the outcome cannot pass unseen.
        let mut done = self.proxy.receive_restart_completed().await?;
        let (verdict, reason, requires_acknowledgement, id) = match asked {
            Asked::Restart {
                manual_override,
                acknowledged,
            } => {
                self.proxy
                    .request_restart(reason, manual_override, acknowledged)
                    .await?
            }
            Asked::Reload => self.proxy.request_reload(reason).await?,
        };
        let verdict: Recorded<Verdict> = verdict.parse().unwrap_or_else(|e| match e {});
        let reason: Recorded<Reason> = reason.parse().unwrap_or_else(|e| match e {});
        if !verdict.known().is_some_and(Verdict::allows) {
            let cooldown = reason.known().is_some_and(Reason::is_cooldown);
            let cooldown_left = match cooldown {
                true => Some(self.proxy.cooldown_remaining().await.unwrap_or(0)),
                false => None,
            };
            return Ok(RestartAnswer::Refused {
                verdict,
                reason,
                requires_acknowledgement,
                cooldown_left,
            });
        }
        let Some(wait) = wait else {
            return Ok(RestartAnswer::Accepted { verdict, id });
        };
        Ok(match outcome(&mut done, &id, wait).await {
            Some(outcome) => RestartAnswer::Completed { id, outcome },
            None => RestartAnswer::NoOutcome { id, waited: wait },
        })
    }

    /// Engages or releases the kill-switch and, with `wait`, waits up to that long for its
    /// reload's outcome.
    pub async fn flip(
        &self,
        engaged: bool,
        reason: &str,
        wait: Option<Duration>,
    ) -> Result<FlipAnswer, ClientError> {
        let mut done = self.proxy.receive_restart_completed().await?;
        let id = self.proxy.set_kill_switch(engaged, reason).await?;
        if id.is_empty() {
            return Ok(FlipAnswer::Unchanged);
        }
        let Some(wait) = wait else {
            return Ok(FlipAnswer::Reloading { id });
        };
        Ok(match outcome(&mut done, &id, wait).await {
            Some(outcome) => FlipAnswer::Reloaded { id, outcome },
            None => FlipAnswer::NoOutcome { id, waited: wait },
        })
    }

    /// Closes the recovery breaker (acknowledged, with `reason`); returns the state it was in.
    pub async fn reset_recovery(&self, reason: &str) -> Result<String, ClientError> {
        Ok(self.proxy.reset_recovery(reason, true).await?)
    }

    /// Whether the kill-switch is engaged, and why.
    pub async fn kill_switch(&self) -> Result<(bool, String), ClientError> {
        Ok((
            self.proxy.kill_switch_engaged().await?,
            self.proxy.kill_switch_reason().await?,
        ))
    }

    /// The policy now.
    pub async fn policy(&self) -> Result<PolicyNow, ClientError> {
        Ok(PolicyNow {
            state: self.proxy.policy_state().await?,
            attempts_in_window: self.proxy.attempts_in_window().await?,
            cooldown_remaining: self.proxy.cooldown_remaining().await.unwrap_or(0),
        })
    }
}

/// A current-thread runtime for a command's calls.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
