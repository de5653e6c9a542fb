//! The admin commands: `warden status`, `warden restart`, `warden kill-switch`. They ask the
//! running agent over D-Bus; with no agent on the bus, `status` reads the state file and
//! `restart` queues the request as a flag, as the MES admin API does.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures_core::Stream;
use serde_json::Value;

use crate::config::{EnvFileArg, Layers, Settings};
use crate::control::dbus::Agent1Proxy;

/// Exit codes of the admin commands.
pub mod code {
    /// Done.
    pub const OK: u8 = 0;
    /// Bad usage, or a request the agent refused as malformed.
    pub const USAGE: u8 = 2;
    /// Refused: the cooldown runs (the message says for how long).
    pub const COOLDOWN: u8 = 3;
    /// Refused: guarded mode blocks (the message says how to override).
    pub const GUARDED: u8 = 4;
    /// The restart failed or was not verified (the message says why).
    pub const FAILED: u8 = 5;
    /// Access denied: not root, not in WARDEN_ADMIN_GROUP.
    pub const DENIED: u8 = 6;
    /// No agent on the bus and no fallback possible.
    pub const NO_AGENT: u8 = 7;
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  done
  2  bad usage, or a request the agent refused as malformed
  3  refused: the cooldown runs (the message gives the seconds left)
  4  refused: guarded mode blocks (the message says how to override)
  5  the restart failed or was not verified (the message gives the reason)
  6  access denied: mutating calls are for root and members of WARDEN_ADMIN_GROUP
  7  no agent on the bus and no fallback possible";

/// How the command went: an exit code and what to print.
pub struct Said {
    pub code: u8,
    pub out: String,
}

pub(crate) fn said(code: u8, out: impl Into<String>) -> Said {
    Said {
        code,
        out: out.into(),
    }
}

fn settings(env_files: &[EnvFileArg]) -> Result<Settings, Said> {
    load(env_files).map(|(_, s)| s)
}

fn load(env_files: &[EnvFileArg]) -> Result<(Layers, Settings), Said> {
    let layers = Layers::load(env_files).map_err(|e| {
        said(
            code::USAGE,
            format!("{e}\n  help: check the path, or prefix it with '-' to make the file optional"),
        )
    })?;
    let (s, invalid) = Settings::resolve(&layers);
    if let Some(i) = invalid.first() {
        return Err(said(
            code::USAGE,
            format!("{i} (from {})\n  help: {}", i.origin, i.help),
        ));
    }
    Ok((layers, s))
}

/// The agent, if one owns the name on the system bus.
pub(crate) async fn agent() -> Option<Agent1Proxy<'static>> {
    let conn = zbus::Connection::system().await.ok()?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
    let name = zbus::names::BusName::try_from(crate::control::dbus::BUS_NAME).ok()?;
    if !dbus.name_has_owner(name).await.ok()? {
        return None;
    }
    Agent1Proxy::new(&conn).await.ok()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime needs no resources beyond the thread")
}

/// The D-Bus error name of a failed call, however zbus carries it.
fn error_name(e: &zbus::Error) -> Option<String> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.to_string()),
        zbus::Error::FDO(f) => Some(zbus::DBusError::name(f.as_ref()).to_string()),
        _ => None,
    }
}

pub(crate) fn method_error(e: &zbus::Error) -> Said {
    match error_name(e).as_deref() {
        Some("org.freedesktop.DBus.Error.AccessDenied") => {
            said(code::DENIED, format!("access denied: {}", detail(e)))
        }
        Some("org.freedesktop.DBus.Error.InvalidArgs") => said(code::USAGE, detail(e)),
        _ => said(code::NO_AGENT, format!("the agent did not answer: {e}")),
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

async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
}

/// Waits for `RestartCompleted` with `id`: (outcome, verified, detail).
pub(crate) async fn outcome(
    stream: &mut crate::control::dbus::RestartCompletedStream,
    id: &str,
    timeout: Duration,
) -> Option<(String, bool, String)> {
    tokio::time::timeout(timeout, async {
        while let Some(sig) = next(stream).await {
            if let Ok(a) = sig.args()
                && a.id == id
            {
                return Some((a.outcome.to_string(), a.verified, a.detail.to_string()));
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// `warden status`.
pub fn status(env_files: &[EnvFileArg], json: bool) -> Said {
    let (layers, s) = match load(env_files) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let doc: Value = match runtime().block_on(async {
        match agent().await {
            Some(p) => p.status().await.ok(),
            None => None,
        }
    }) {
        Some(text) => match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return said(code::FAILED, format!("the agent's status is not JSON: {e}")),
        },
        None => {
            // No agent: the state file, read without changing it, and the rules the agent
            // checks at its start for the contract's validity.
            let state = match crate::platform::fs::read_untrusted(
                &s.state_file.value,
                crate::ledger::state::MAX_STATE_BYTES,
            ) {
                Ok(u) => match crate::ledger::state::parse(&u.bytes) {
                    Ok(d) => d,
                    Err(why) => {
                        return said(
                            code::NO_AGENT,
                            format!(
                                "no agent on the bus, and the state file {} does not parse: {why}; \
                                 `warden run` sets it aside and starts a new history",
                                s.state_file.value.display()
                            ),
                        );
                    }
                },
                Err(crate::platform::fs::ReadError::Missing(_)) => Default::default(),
                Err(e) => return said(code::NO_AGENT, format!("no agent on the bus, and {e}")),
            };
            let errors = crate::cli::startup_errors(&layers, &s, &[]);
            let v = crate::control::status::Validation {
                valid: errors.is_empty(),
                errors: errors.iter().map(|f| f.headline()).collect(),
            };
            serde_json::to_value(crate::control::observe::document(&s, &state, &v, None))
                .unwrap_or_default()
        }
    };
    if json {
        return said(
            code::OK,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        );
    }
    match crate::control::status::from_json(doc) {
        Ok(d) => said(code::OK, crate::control::status::summary(&d)),
        Err(e) => said(
            code::FAILED,
            format!("the agent's status is not a status document: {e}"),
        ),
    }
}

/// `warden restart`.
pub fn restart(
    env_files: &[EnvFileArg],
    reason: &str,
    manual_override: bool,
    acknowledged: bool,
    wait: bool,
) -> Said {
    let s = match settings(env_files) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let wait_for = Duration::from_secs(s.reload_timeout_seconds + 30);
    runtime().block_on(async {
        match agent().await {
            Some(p) => {
                request_restart(
                    &p,
                    reason,
                    manual_override,
                    acknowledged,
                    wait.then_some(wait_for),
                )
                .await
            }
            None => queue_flag(&s, reason, manual_override, acknowledged),
        }
    })
}

/// Asks the agent for a restart and, with `wait`, waits up to that long for its outcome.
pub(crate) async fn request_restart(
    p: &Agent1Proxy<'_>,
    reason: &str,
    manual_override: bool,
    acknowledged: bool,
    wait: Option<Duration>,
) -> Said {
    // Subscribed before asking, so the outcome cannot pass unseen.
    let mut done = match p.receive_restart_completed().await {
        Ok(d) => d,
        Err(e) => return said(code::NO_AGENT, format!("cannot subscribe: {e}")),
    };
    let (decision, why, needs_ack, id) = match p
        .request_restart(reason, manual_override, acknowledged)
        .await
    {
        Ok(r) => r,
        Err(e) => return method_error(&e),
    };
    match decision.as_str() {
        "allowed" | "manual_override" => {}
        "rejected" => {
            return said(
                code::USAGE,
                format!("refused: {why} (an override needs --acknowledge and a --reason)"),
            );
        }
        _ if why.starts_with("cooldown") => {
            let left = p.cooldown_remaining().await.unwrap_or(0);
            let hint = if needs_ack {
                "; an operator may override: --override --acknowledge --reason TEXT"
            } else {
                ""
            };
            return said(
                code::COOLDOWN,
                format!("Restart in cooldown. Please wait {left} seconds ({why}){hint}."),
            );
        }
        _ => {
            return said(
                code::GUARDED,
                format!(
                    "blocked by guarded mode ({why}): too many restarts in the window; \
                     to override, run again with --override --acknowledge --reason TEXT"
                ),
            );
        }
    }
    let Some(wait_for) = wait else {
        return said(code::OK, format!("accepted ({decision}), request {id}"));
    };
    match outcome(&mut done, &id, wait_for).await {
        Some((o, true, d)) if o == "executed" => {
            said(code::OK, format!("restart executed and verified: {d}"))
        }
        Some((o, _, d)) => said(code::FAILED, format!("restart {o}: {d}")),
        None => said(
            code::FAILED,
            format!(
                "no outcome for request {id} within {} s",
                wait_for.as_secs()
            ),
        ),
    }
}

/// No agent on the bus: the request goes to the flag, written as the MES admin API writes it.
fn queue_flag(s: &Settings, reason: &str, manual_override: bool, acknowledged: bool) -> Said {
    let user = crate::platform::accounts::user_name(nix::unistd::getuid().as_raw());
    let mut body = serde_json::json!({
        "user": user,
        "timestamp": crate::ledger::state::format_time(chrono::Utc::now()),
        "source": "manual",
        "manual_override": manual_override,
        "override_acknowledged": acknowledged,
    });
    if manual_override {
        body["override_reason"] = Value::String(reason.to_string());
    }
    let flag: &PathBuf = &s.restart_flag.value;
    match crate::platform::fs::write_atomic(flag, body.to_string().as_bytes(), 0o640) {
        Ok(()) => said(
            code::OK,
            format!(
                "no agent on the bus: the request is queued in {} for the agent to take",
                flag.display()
            ),
        ),
        Err(e) => said(
            code::NO_AGENT,
            format!(
                "no agent on the bus, and the request cannot be queued in {}: {e}",
                flag.display()
            ),
        ),
    }
}

/// `warden kill-switch [on|off]`.
pub fn kill_switch(env_files: &[EnvFileArg], verb: Option<bool>, reason: &str, wait: bool) -> Said {
    let s = match settings(env_files) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let Some(engaged) = verb else {
        let st = status(env_files, true);
        if st.code != code::OK {
            return st;
        }
        let d: Value = serde_json::from_str(&st.out).unwrap_or_default();
        let k = &d["kill_switch"];
        return said(
            code::OK,
            format!(
                "kill-switch {}{}",
                if k["engaged"] == true {
                    "engaged"
                } else {
                    "released"
                },
                match (&k["changed_by"], &k["changed_at"], &k["reason"]) {
                    (Value::String(by), Value::String(at), r) => format!(
                        " (by {by} at {at}{})",
                        r.as_str().map(|r| format!(": {r}")).unwrap_or_default()
                    ),
                    _ => String::new(),
                }
            ),
        );
    };
    if engaged && reason.trim().is_empty() {
        return said(code::USAGE, "engaging the kill-switch needs --reason TEXT");
    }
    let wait_for = Duration::from_secs(s.reload_timeout_seconds + 30);
    runtime().block_on(async {
        let Some(p) = agent().await else {
            return said(
                code::NO_AGENT,
                "no agent on the bus: the kill-switch is the agent's to flip (start warden run)",
            );
        };
        flip(&p, engaged, reason, wait.then_some(wait_for)).await
    })
}

/// Flips the kill-switch and, with `wait`, waits up to that long for its reload's outcome.
pub(crate) async fn flip(
    p: &Agent1Proxy<'_>,
    engaged: bool,
    reason: &str,
    wait: Option<Duration>,
) -> Said {
    let mut done = match p.receive_restart_completed().await {
        Ok(d) => d,
        Err(e) => return said(code::NO_AGENT, format!("cannot subscribe: {e}")),
    };
    let id = match p.set_kill_switch(engaged, reason).await {
        Ok(id) => id,
        Err(e) => return method_error(&e),
    };
    let what = if engaged { "engaged" } else { "released" };
    if id.is_empty() {
        return said(
            code::OK,
            format!("kill-switch {what} (unchanged: no reload)"),
        );
    }
    let Some(wait_for) = wait else {
        return said(
            code::OK,
            format!("kill-switch {what}; reload {id} under way"),
        );
    };
    match outcome(&mut done, &id, wait_for).await {
        Some((o, true, d)) if o == "executed" => said(
            code::OK,
            format!("kill-switch {what}; every worker reloaded: {d}"),
        ),
        Some((o, _, d)) => said(
            code::FAILED,
            format!("kill-switch {what}, but the reload {o}: {d}"),
        ),
        None => said(
            code::FAILED,
            format!(
                "kill-switch {what}; no reload outcome within {} s",
                wait_for.as_secs()
            ),
        ),
    }
}
