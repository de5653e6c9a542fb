//! warden's D-Bus API on the system bus: the agent's interface (served by `warden run`) and its
//! proxy (for `crate::control::client`).
//!
//! Name `io.warden.Agent.<app>` for the agent of an app (`io.warden.Agent.mes-dashboard`; one
//! agent per app, so several on a host), `io.warden.Agent` for one that names no app unit;
//! object `/io/warden/Agent`, interface `io.warden.Agent1` (the version is in the name: an
//! incompatible change gets `Agent2`). Reads are open to every local user;
//! `RequestRestart` and `SetKillSwitch` are allowed to root and to members of
//! `WARDEN_ADMIN_GROUP`, decided from the credentials the bus daemon reports for the caller
//! (never from anything the caller says); others get `org.freedesktop.DBus.Error.AccessDenied`
//! and an audit event.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

use crate::agent::protocol::{Caller, Change, Decided};
use crate::config::Settings;
use crate::config::instance::AppName;
use crate::ledger::entry::Entry;
use crate::ledger::model::RequestSource;
use crate::ledger::policy::Evaluation;
use crate::ledger::state::StateDoc;
use crate::ledger::time::format_time;
use crate::platform::accounts::Admins;
use crate::systemd::journal;

pub const BUS_NAME: &str = "io.warden.Agent";
/// Every instance's name starts so.
pub const INSTANCE_PREFIX: &str = "io.warden.Agent.";
pub const OBJECT_PATH: &str = "/io/warden/Agent";
pub const INTERFACE: &str = "io.warden.Agent1";

/// The bus name of the agent of `app`. A bus name's element holds `[A-Za-z0-9_-]` and does
/// not start with a digit: other characters of a unit's name (and a leading digit, and `_`
/// itself) are written `_xx`, in hex, as systemd escapes names in object paths.
pub fn bus_name(app: Option<&AppName>) -> String {
    let Some(app) = app else {
        return BUS_NAME.to_string();
    };
    let mut out = String::from(INSTANCE_PREFIX);
    for (i, b) in app.as_str().bytes().enumerate() {
        if b.is_ascii_alphabetic() || b == b'-' || (b.is_ascii_digit() && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

/// The bus name of the agent of the contract `s`: its app unit's.
pub fn agent_name(s: &Settings) -> String {
    bus_name(s.app_unit.as_deref().and_then(AppName::of_unit).as_ref())
}

/// The app whose agent owns `name`, for a name of [`bus_name`]'s.
pub fn app_of_bus_name(name: &str) -> Option<AppName> {
    let escaped = name.strip_prefix(INSTANCE_PREFIX)?;
    let mut bytes = Vec::new();
    let mut it = escaped.bytes();
    while let Some(b) = it.next() {
        if b == b'_' {
            let hex = [it.next()?, it.next()?];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let app = AppName::parse(std::str::from_utf8(&bytes).ok()?).ok()?;
    (bus_name(Some(&app)) == name).then_some(app)
}

/// Longest reason accepted over the bus (the state file's own bound is checked again later).
const MAX_REASON_BYTES: usize = 4096;

/// The properties, as last published.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub policy_state: String,
    pub cooldown_remaining: u64,
    pub attempts_in_window: u32,
    pub kill_switch_engaged: bool,
    pub kill_switch_reason: String,
    pub last_restart_at: String,
    pub last_restart_decision: String,
    pub contract_valid: bool,
    /// The automatic recovery breaker: `closed`, `open` or `half_open`.
    pub recovery_breaker: String,
}

impl Snapshot {
    /// The properties for `doc`, with the policy evaluated as `eval`.
    pub fn of(
        doc: &StateDoc,
        eval: &Evaluation,
        contract_valid: bool,
        breaker: crate::recovery::breaker::BreakerState,
    ) -> Snapshot {
        let ks = doc.kill_switch.clone().unwrap_or_default();
        let last_executed = doc
            .history
            .iter()
            .rev()
            .find(|h| h.executed())
            .and_then(Entry::executed_at_ms)
            .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
            .map(format_time);
        Snapshot {
            policy_state: eval.state.as_str().into(),
            cooldown_remaining: eval.cooldown_remaining_seconds,
            attempts_in_window: eval.attempts_in_window,
            kill_switch_engaged: ks.engaged,
            kill_switch_reason: ks.reason.unwrap_or_default(),
            last_restart_at: last_executed.unwrap_or_default(),
            last_restart_decision: doc
                .last_restart
                .as_ref()
                .and_then(|l| l.decision.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default(),
            contract_valid,
            recovery_breaker: breaker.as_str().into(),
        }
    }
}

/// What the D-Bus methods ask of the event loop.
#[derive(Debug)]
pub enum Ask {
    /// The status document, answered by the event loop.
    Status(oneshot::Sender<String>),
    /// A change, for the agent's executor.
    Change(Change),
    /// An operator closes the automatic recovery breaker; answered with the state it was in.
    ResetRecovery {
        caller: Caller,
        reason: String,
        reply: oneshot::Sender<String>,
    },
}

/// The properties as last published, shared by the interface (which answers `Get`) and the
/// event loop (which publishes). A plain mutex, held only to read or swap the snapshot: the
/// event loop never waits for the object server's lock on the interface, which every method
/// call in flight holds while it waits for the event loop (publishing through that lock
/// deadlocked the agent, and systemd's watchdog killed it, whenever a call was in flight).
pub type SharedSnapshot = Arc<std::sync::Mutex<Snapshot>>;

/// Refused calls are audited one by one up to this many per window; the others are counted,
/// by user, and summed up in one event when the window is over. A caller decides how many
/// refusals there are, not how many lines the agent logs: journald's rate limit is per unit
/// and priority, and refusals logged at will had it drop the agent's other warnings (the
/// kill-switch's audit events among them).
const DENIED_LOGGED_PER_WINDOW: u32 = 10;
const DENIED_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// Users counted apart in a summary; the rest together.
const DENIED_USERS_MAX: usize = 64;

/// The refusals of the current window.
#[derive(Debug, Default)]
struct DeniedLog {
    /// When the current window ends.
    until: Option<std::time::Instant>,
    logged: u32,
    /// Refusals not logged one by one, by user, until their summary is.
    unlogged: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, PartialEq)]
enum Audit {
    /// Log this refusal.
    Log,
    /// Counted; `first`: the first one counted since the last summary, which is due `until`.
    Count {
        first: bool,
        until: std::time::Instant,
    },
}

impl DeniedLog {
    fn admit(&mut self, user: &str, now: std::time::Instant) -> Audit {
        let until = match self.until {
            Some(u) if now < u => u,
            _ => {
                self.logged = 0;
                *self.until.insert(now + DENIED_WINDOW)
            }
        };
        if self.logged < DENIED_LOGGED_PER_WINDOW {
            self.logged += 1;
            return Audit::Log;
        }
        let first = self.unlogged.is_empty();
        let key = if self.unlogged.len() < DENIED_USERS_MAX || self.unlogged.contains_key(user) {
            user
        } else {
            "others"
        };
        *self.unlogged.entry(key.to_string()).or_default() += 1;
        Audit::Count { first, until }
    }
}

/// Logs the refusals counted since the last summary.
fn summarize_denied(denied: &std::sync::Mutex<DeniedLog>) {
    let unlogged = std::mem::take(&mut denied.lock().unwrap_or_else(|e| e.into_inner()).unlogged);
    let n: u64 = unlogged.values().sum();
    if n == 0 {
        return;
    }
    let by = unlogged
        .iter()
        .map(|(u, k)| format!("{u} {k}"))
        .collect::<Vec<_>>()
        .join(", ");
    tracing::warn!(
        message_id = journal::ACCESS_DENIED,
        suppressed = n,
        "{n} more D-Bus calls refused, not logged one by one (at most {DENIED_LOGGED_PER_WINDOW} \
         every {} s): {by}",
        DENIED_WINDOW.as_secs()
    );
}

pub struct AgentIface {
    snap: SharedSnapshot,
    asks: mpsc::Sender<Ask>,
    admins: Arc<std::sync::RwLock<Admins>>,
    denied: Arc<std::sync::Mutex<DeniedLog>>,
}

impl AgentIface {
    pub fn new(
        asks: mpsc::Sender<Ask>,
        admins: Arc<std::sync::RwLock<Admins>>,
        snap: SharedSnapshot,
    ) -> AgentIface {
        AgentIface {
            snap,
            asks,
            admins,
            denied: Arc::default(),
        }
    }

    fn snap(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The caller's credentials from the bus daemon; refused unless they may change things.
    /// The caller, when it may call `method`: root and the admin group, and with
    /// `service_user_too` the agent's own user, the app's (who may write the restart flag
    /// anyway, and whose unit's `ExecReload=` runs `warden reload`).
    async fn authorize(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        method: &str,
        service_user_too: bool,
    ) -> fdo::Result<Caller> {
        let sender = hdr
            .sender()
            .ok_or_else(|| fdo::Error::AccessDenied("no sender on the call".into()))?;
        let creds = fdo::DBusProxy::new(conn)
            .await?
            .get_connection_credentials(sender.clone().into())
            .await?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| fdo::Error::AccessDenied("the bus reported no user".into()))?;
        let gids = creds.unix_group_ids().map(Vec::as_slice);
        let name =
            crate::platform::accounts::user_name(uid).unwrap_or_else(|| format!("uid:{uid}"));
        let allowed = self
            .admins
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .admit(uid, gids)
            || (service_user_too && uid == nix::unistd::geteuid().as_raw());
        if !allowed {
            let audit = self
                .denied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(&name, std::time::Instant::now());
            match audit {
                Audit::Log => tracing::warn!(
                    message_id = journal::ACCESS_DENIED,
                    uid,
                    user = %name,
                    method,
                    "D-Bus {method} refused: {name} is neither root nor in the admin group"
                ),
                Audit::Count { first: true, until } => {
                    let denied = self.denied.clone();
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => {
                            rt.spawn(async move {
                                tokio::time::sleep_until(until.into()).await;
                                summarize_denied(&denied);
                            });
                        }
                        Err(_) => summarize_denied(&denied),
                    }
                }
                Audit::Count { first: false, .. } => {}
            }
            return Err(fdo::Error::AccessDenied(format!(
                "{method} is for root and members of WARDEN_ADMIN_GROUP; {name} (uid {uid}) is neither"
            )));
        }
        Ok(Caller { uid, name })
    }

    /// A restart asked over the bus, as `(source, manual_override, acknowledged)`: handed to the
    /// executor, answered with its ruling.
    async fn restart_asked(
        &self,
        caller: Caller,
        (source, manual_override, acknowledged): (RequestSource, bool, bool),
        reason: String,
    ) -> fdo::Result<(String, String, bool, String)> {
        check_reason(&reason)?;
        let (tx, rx) = oneshot::channel();
        let r: Decided = self
            .ask(
                Ask::Change(Change::Restart {
                    caller,
                    source,
                    reason,
                    manual_override,
                    acknowledged,
                    dry_run: false,
                    reply: tx,
                }),
                rx,
            )
            .await?;
        Ok((
            r.ruling.verdict.as_str().to_string(),
            r.ruling.reason.as_str().to_string(),
            r.ruling.requires_acknowledgement,
            r.id,
        ))
    }

    async fn ask<T>(&self, a: Ask, rx: oneshot::Receiver<T>) -> fdo::Result<T> {
        self.asks
            .send(a)
            .await
            .map_err(|_| fdo::Error::Failed("the agent is stopping".into()))?;
        rx.await
            .map_err(|_| fdo::Error::Failed("the agent dropped the request".into()))
    }
}

fn check_reason(reason: &str) -> fdo::Result<()> {
    if reason.len() > MAX_REASON_BYTES {
        return Err(fdo::Error::InvalidArgs(format!(
            "the reason is {} bytes; at most {MAX_REASON_BYTES}",
            reason.len()
        )));
    }
    if reason
        .chars()
        .any(|c| c.is_control() || breaks_or_reorders(c))
    {
        return Err(fdo::Error::InvalidArgs(
            "the reason must be one line without control characters".into(),
        ));
    }
    Ok(())
}

/// Characters that are not `Cc` controls but still break a line (U+2028, U+2029) or reorder
/// the text around them when displayed (the bidirectional controls): a reason holding them
/// reads differently in the journal and in `warden status` than it was written.
fn breaks_or_reorders(c: char) -> bool {
    matches!(
        c,
        '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
    )
}

#[zbus::interface(name = "io.warden.Agent1")]
impl AgentIface {
    /// The status document (JSON), the same as `warden status --json`.
    async fn status(&self) -> fdo::Result<String> {
        let (tx, rx) = oneshot::channel();
        self.ask(Ask::Status(tx), rx).await
    }

    /// Asks for a graceful reload under the policy. Returns once decided, before anything is
    /// signalled; `RestartCompleted` reports the outcome under the returned id.
    #[zbus(out_args("decision", "reason", "requires_acknowledgement", "id"))]
    async fn request_restart(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        reason: String,
        manual_override: bool,
        acknowledged: bool,
    ) -> fdo::Result<(String, String, bool, String)> {
        let caller = self.authorize(conn, &hdr, "RequestRestart", false).await?;
        let ask = (RequestSource::Manual, manual_override, acknowledged);
        self.restart_asked(caller, ask, reason).await
    }

    /// Asks for the app's reload, as its unit's `ExecReload=` (`warden reload`) does: decided
    /// by the policy as an operator's request, with source `reload`, and open to the app's own
    /// user as well. Answered as `RequestRestart` is.
    #[zbus(out_args("decision", "reason", "requires_acknowledgement", "id"))]
    async fn request_reload(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        reason: String,
    ) -> fdo::Result<(String, String, bool, String)> {
        let caller = self.authorize(conn, &hdr, "RequestReload", true).await?;
        self.restart_asked(caller, (RequestSource::Reload, false, false), reason)
            .await
    }

    /// Engages or releases the kill-switch: published for the app, then one graceful reload
    /// that no policy blocks. Returns the reload's id ("" when the switch did not change).
    async fn set_kill_switch(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        engaged: bool,
        reason: String,
    ) -> fdo::Result<String> {
        let caller = self.authorize(conn, &hdr, "SetKillSwitch", false).await?;
        check_reason(&reason)?;
        let (tx, rx) = oneshot::channel();
        self.ask(
            Ask::Change(Change::KillSwitch {
                caller,
                engaged,
                reason,
                reply: tx,
            }),
            rx,
        )
        .await?
        .map(Option::unwrap_or_default)
        .map_err(fdo::Error::InvalidArgs)
    }

    /// Closes the automatic recovery breaker, opened when the policy refused or a restart
    /// failed: automatic restarts may be asked again. Needs `acknowledged` and a reason (both
    /// audited). Returns the state it was in (`closed`: nothing changed).
    async fn reset_recovery(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &zbus::Connection,
        reason: String,
        acknowledged: bool,
    ) -> fdo::Result<String> {
        let caller = self.authorize(conn, &hdr, "ResetRecovery", false).await?;
        check_reason(&reason)?;
        if !acknowledged || reason.trim().is_empty() {
            return Err(fdo::Error::InvalidArgs(
                "closing the breaker needs an acknowledgement and a reason".into(),
            ));
        }
        let (tx, rx) = oneshot::channel();
        self.ask(
            Ask::ResetRecovery {
                caller,
                reason,
                reply: tx,
            },
            rx,
        )
        .await
    }

    /// A restart's outcome: `executed`, `failed`, `blocked` or `rejected`; whether the reload
    /// was verified; a human detail.
    #[zbus(signal)]
    pub async fn restart_completed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        outcome: &str,
        verified: bool,
        detail: &str,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn policy_state(&self) -> String {
        self.snap().policy_state.clone()
    }

    #[zbus(property)]
    fn cooldown_remaining(&self) -> u64 {
        self.snap().cooldown_remaining
    }

    #[zbus(property)]
    fn attempts_in_window(&self) -> u32 {
        self.snap().attempts_in_window
    }

    #[zbus(property)]
    fn kill_switch_engaged(&self) -> bool {
        self.snap().kill_switch_engaged
    }

    #[zbus(property)]
    fn kill_switch_reason(&self) -> String {
        self.snap().kill_switch_reason.clone()
    }

    #[zbus(property)]
    fn last_restart_at(&self) -> String {
        self.snap().last_restart_at.clone()
    }

    #[zbus(property)]
    fn last_restart_decision(&self) -> String {
        self.snap().last_restart_decision.clone()
    }

    #[zbus(property)]
    fn contract_valid(&self) -> bool {
        self.snap().contract_valid
    }

    #[zbus(property)]
    fn recovery_breaker(&self) -> String {
        self.snap().recovery_breaker.clone()
    }
}

/// Publishes `new`, emitting one `PropertiesChanged` with what differs from the last snapshot.
/// Takes no lock of the object server's (see [`SharedSnapshot`]).
pub async fn publish(
    conn: &zbus::Connection,
    shared: &SharedSnapshot,
    new: Snapshot,
) -> zbus::Result<()> {
    let old = std::mem::replace(
        &mut *shared.lock().unwrap_or_else(|e| e.into_inner()),
        new.clone(),
    );
    let mut changed: std::collections::HashMap<&str, zbus::Variant<'_>> =
        std::collections::HashMap::new();
    macro_rules! changed {
        ($($field:ident => $name:literal),* $(,)?) => {
            $(if old.$field != new.$field {
                changed.insert($name, zbus::Variant::from(new.$field.clone()));
            })*
        };
    }
    changed!(
        policy_state => "PolicyState",
        cooldown_remaining => "CooldownRemaining",
        attempts_in_window => "AttemptsInWindow",
        kill_switch_engaged => "KillSwitchEngaged",
        kill_switch_reason => "KillSwitchReason",
        last_restart_at => "LastRestartAt",
        last_restart_decision => "LastRestartDecision",
        contract_valid => "ContractValid",
        recovery_breaker => "RecoveryBreaker",
    );
    if changed.is_empty() {
        return Ok(());
    }
    let e = SignalEmitter::new(conn, OBJECT_PATH)?;
    fdo::Properties::properties_changed(
        &e,
        zbus::names::InterfaceName::from_static_str_unchecked(INTERFACE),
        changed,
        std::borrow::Cow::Borrowed(&[]),
    )
    .await
}

/// Emits `RestartCompleted` for a handled request.
pub async fn completed(conn: &zbus::Connection, e: &Entry) -> zbus::Result<()> {
    let (Some(id), Some(decision)) = (&e.id, &e.decision) else {
        return Ok(());
    };
    let emitter = SignalEmitter::new(conn, OBJECT_PATH)?;
    AgentIface::restart_completed(
        &emitter,
        id,
        &decision.to_string(),
        e.verified == Some(true),
        &e.outcome_detail(),
    )
    .await
}

/// Serves the interface on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured) under the
/// well-known name, held for the agent's lifetime: not taken from another holder, and not
/// given up to a later claimant (zbus's default flags allow both, which let any process of
/// the service user take the name from a running agent, silently, and answer in its place).
pub async fn serve(iface: AgentIface, name: &str) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::system()
        .name(name)
        .allow_name_replacements(false)
        .replace_existing_names(false)
        .serve_at(OBJECT_PATH, iface)
        .build()
        .await
}

/// The client side, for the CLI.
#[zbus::proxy(
    interface = "io.warden.Agent1",
    default_service = "io.warden.Agent",
    default_path = "/io/warden/Agent"
)]
pub trait Agent1 {
    fn status(&self) -> zbus::Result<String>;
    fn request_restart(
        &self,
        reason: &str,
        manual_override: bool,
        acknowledged: bool,
    ) -> zbus::Result<(String, String, bool, String)>;
    fn request_reload(&self, reason: &str) -> zbus::Result<(String, String, bool, String)>;
    fn set_kill_switch(&self, engaged: bool, reason: &str) -> zbus::Result<String>;
    fn reset_recovery(&self, reason: &str, acknowledged: bool) -> zbus::Result<String>;
    #[zbus(signal)]
    fn restart_completed(
        &self,
        id: &str,
        outcome: &str,
        verified: bool,
        detail: &str,
    ) -> zbus::Result<()>;
    #[zbus(property)]
    fn policy_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn cooldown_remaining(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn attempts_in_window(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn kill_switch_engaged(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn kill_switch_reason(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn recovery_breaker(&self) -> zbus::Result<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_app_has_a_valid_bus_name_that_names_it_back() {
        assert_eq!(bus_name(None), "io.warden.Agent");
        for (app, want) in [
            ("mes-dashboard", "io.warden.Agent.mes-dashboard"),
            ("shop_api", "io.warden.Agent.shop_5fapi"),
            ("app@blue", "io.warden.Agent.app_40blue"),
            ("9lives", "io.warden.Agent._39lives"),
            ("a:b\\x2d", "io.warden.Agent.a_3ab_5cx2d"),
        ] {
            let a = AppName::parse(app).unwrap();
            let name = bus_name(Some(&a));
            assert_eq!(name, want);
            assert!(
                zbus::names::WellKnownName::try_from(name.as_str()).is_ok(),
                "{name}"
            );
            assert_eq!(app_of_bus_name(&name), Some(a));
        }
        for foreign in [
            "io.warden.Agent",
            "io.warden.Agent.x_zz",
            "io.warden.Agent._2e",
            "org.x.y",
        ] {
            assert_eq!(app_of_bus_name(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn refusals_are_logged_a_few_per_window_and_the_rest_counted() {
        let mut d = DeniedLog::default();
        let t0 = std::time::Instant::now();
        for _ in 0..DENIED_LOGGED_PER_WINDOW {
            assert_eq!(d.admit("nobody", t0), Audit::Log);
        }
        let until = t0 + DENIED_WINDOW;
        assert_eq!(d.admit("nobody", t0), Audit::Count { first: true, until });
        for _ in 0..1000 {
            assert_eq!(
                d.admit("mallory", t0 + DENIED_WINDOW / 2),
                Audit::Count {
                    first: false,
                    until
                }
            );
        }
        assert_eq!(d.unlogged["nobody"], 1);
        assert_eq!(d.unlogged["mallory"], 1000);
        // The next window logs again; what was counted waits for its summary.
        assert_eq!(d.admit("nobody", until), Audit::Log);
        let d = std::sync::Mutex::new(d);
        summarize_denied(&d);
        assert!(d.lock().unwrap().unlogged.is_empty());
        // Users beyond the bound are counted together.
        let mut d = DeniedLog::default();
        for i in 0..(DENIED_LOGGED_PER_WINDOW as usize + DENIED_USERS_MAX + 10) {
            d.admit(&format!("uid:{i}"), t0);
        }
        assert_eq!(d.unlogged.len(), DENIED_USERS_MAX + 1);
        assert_eq!(d.unlogged["others"], 10);
    }

    #[test]
    fn reasons_are_bounded_single_lines() {
        assert!(check_reason("db failover").is_ok());
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason("a\u{2028}b").is_err(), "a line separator");
        assert!(
            check_reason("a\u{202e}dekcolb").is_err(),
            "a right-to-left override"
        );
        assert!(check_reason("déploiement 4.2 — ok ✓").is_ok());
        assert!(check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
    }
}
