//! warden's D-Bus API on the system bus: the agent's interface (served by `warden run`) and the
//! client side used by `warden status|restart|kill-switch`.
//!
//! Name `io.warden.Agent`, object `/io/warden/Agent`, interface `io.warden.Agent1` (the version
//! is in the name: an incompatible change gets `Agent2`). Reads are open to every local user;
//! `RequestRestart` and `SetKillSwitch` are allowed to root and to members of
//! `WARDEN_ADMIN_GROUP`, decided from the credentials the bus daemon reports for the caller
//! (never from anything the caller says); others get `org.freedesktop.DBus.Error.AccessDenied`
//! and an audit event.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use zbus::fdo;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;

pub const BUS_NAME: &str = "io.warden.Agent";
pub const OBJECT_PATH: &str = "/io/warden/Agent";
pub const INTERFACE: &str = "io.warden.Agent1";

/// journald MESSAGE_ID of a refused caller.
pub const ACCESS_DENIED_ID: &str = "5b1c6f0e8c3a4f7e9d2a6b4c8e0f1a3d";

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
}

/// Who called, as the bus daemon reports it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    /// The user's name when `/etc/passwd` (or NSS) knows it, else `uid:N`.
    pub name: String,
}

/// What the D-Bus methods ask of the agent.
pub enum Ask {
    /// Answered by the event loop.
    Status(oneshot::Sender<String>),
    /// Carried out by the restart executor, which alone changes the state.
    Change(Change),
}

/// A mutating request, from a caller already authorized.
pub enum Change {
    Restart {
        caller: Caller,
        reason: String,
        manual_override: bool,
        acknowledged: bool,
        reply: oneshot::Sender<RestartReply>,
    },
    KillSwitch {
        caller: Caller,
        engaged: bool,
        reason: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

/// The decision on a restart request, given before anything is signalled.
#[derive(Debug, Clone)]
pub struct RestartReply {
    pub decision: String,
    pub reason: String,
    pub requires_acknowledgement: bool,
    /// The history entry's id; `RestartCompleted` carries it.
    pub id: String,
}

/// Who may change things.
#[derive(Debug, Clone, Default)]
pub struct Authz {
    /// `WARDEN_ADMIN_GROUP` resolved: its gid and its members' uids (from /etc/group).
    pub admin_gid: Option<u32>,
    pub admin_uids: Vec<u32>,
}

impl Authz {
    pub fn resolve(group: Option<&str>) -> Authz {
        let Some(gid) = group.and_then(crate::account::group_gid) else {
            return Authz::default();
        };
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        Authz {
            admin_gid: Some(gid.as_raw()),
            admin_uids: crate::account::group_member_uids(
                &read("/etc/passwd"),
                &read("/etc/group"),
                gid.as_raw(),
            ),
        }
    }

    fn allows(&self, uid: u32, gids: Option<&[u32]>) -> bool {
        uid == 0
            || self.admin_uids.contains(&uid)
            || self
                .admin_gid
                .is_some_and(|g| gids.is_some_and(|gs| gs.contains(&g)))
    }
}

pub struct AgentIface {
    pub snap: Snapshot,
    asks: mpsc::Sender<Ask>,
    authz: Arc<std::sync::RwLock<Authz>>,
}

impl AgentIface {
    pub fn new(asks: mpsc::Sender<Ask>, authz: Arc<std::sync::RwLock<Authz>>) -> AgentIface {
        AgentIface {
            snap: Snapshot::default(),
            asks,
            authz,
        }
    }

    /// The caller's credentials from the bus daemon; refused unless they may change things.
    async fn authorize(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        method: &str,
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
        let name = crate::account::user_name(uid).unwrap_or_else(|| format!("uid:{uid}"));
        let allowed = self
            .authz
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .allows(uid, gids);
        if !allowed {
            tracing::warn!(
                message_id = ACCESS_DENIED_ID,
                uid,
                user = %name,
                method,
                "D-Bus {method} refused: {name} is neither root nor in the admin group"
            );
            return Err(fdo::Error::AccessDenied(format!(
                "{method} is for root and members of WARDEN_ADMIN_GROUP; {name} (uid {uid}) is neither"
            )));
        }
        Ok(Caller { uid, name })
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
    if reason.chars().any(char::is_control) {
        return Err(fdo::Error::InvalidArgs(
            "the reason must be one line without control characters".into(),
        ));
    }
    Ok(())
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
        let caller = self.authorize(conn, &hdr, "RequestRestart").await?;
        check_reason(&reason)?;
        let (tx, rx) = oneshot::channel();
        let r = self
            .ask(
                Ask::Change(Change::Restart {
                    caller,
                    reason,
                    manual_override,
                    acknowledged,
                    reply: tx,
                }),
                rx,
            )
            .await?;
        Ok((r.decision, r.reason, r.requires_acknowledgement, r.id))
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
        let caller = self.authorize(conn, &hdr, "SetKillSwitch").await?;
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
        .map_err(fdo::Error::InvalidArgs)
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
        self.snap.policy_state.clone()
    }

    #[zbus(property)]
    fn cooldown_remaining(&self) -> u64 {
        self.snap.cooldown_remaining
    }

    #[zbus(property)]
    fn attempts_in_window(&self) -> u32 {
        self.snap.attempts_in_window
    }

    #[zbus(property)]
    fn kill_switch_engaged(&self) -> bool {
        self.snap.kill_switch_engaged
    }

    #[zbus(property)]
    fn kill_switch_reason(&self) -> String {
        self.snap.kill_switch_reason.clone()
    }

    #[zbus(property)]
    fn last_restart_at(&self) -> String {
        self.snap.last_restart_at.clone()
    }

    #[zbus(property)]
    fn last_restart_decision(&self) -> String {
        self.snap.last_restart_decision.clone()
    }

    #[zbus(property)]
    fn contract_valid(&self) -> bool {
        self.snap.contract_valid
    }
}

/// Publishes `new`, emitting `PropertiesChanged` for what differs from the last snapshot.
pub async fn publish(
    iface: &zbus::object_server::InterfaceRef<AgentIface>,
    new: Snapshot,
) -> zbus::Result<()> {
    let mut i = iface.get_mut().await;
    let old = std::mem::replace(&mut i.snap, new);
    let e = iface.signal_emitter();
    macro_rules! changed {
        ($($field:ident => $signal:ident),* $(,)?) => {
            $(if old.$field != i.snap.$field {
                i.$signal(e).await?;
            })*
        };
    }
    changed!(
        policy_state => policy_state_changed,
        cooldown_remaining => cooldown_remaining_changed,
        attempts_in_window => attempts_in_window_changed,
        kill_switch_engaged => kill_switch_engaged_changed,
        kill_switch_reason => kill_switch_reason_changed,
        last_restart_at => last_restart_at_changed,
        last_restart_decision => last_restart_decision_changed,
        contract_valid => contract_valid_changed,
    );
    Ok(())
}

/// Serves the interface on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` honoured) under the
/// well-known name.
pub async fn serve(iface: AgentIface) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::system()
        .name(BUS_NAME)
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
    fn set_kill_switch(&self, engaged: bool, reason: &str) -> zbus::Result<String>;
    #[zbus(signal)]
    fn restart_completed(
        &self,
        id: &str,
        outcome: &str,
        verified: bool,
        detail: &str,
    ) -> zbus::Result<()>;
    #[zbus(property)]
    fn cooldown_remaining(&self) -> zbus::Result<u64>;
    #[zbus(property)]
    fn kill_switch_engaged(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn kill_switch_reason(&self) -> zbus::Result<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_and_the_admin_group_may_change_things() {
        let a = Authz {
            admin_gid: Some(1500),
            admin_uids: vec![1001],
        };
        assert!(a.allows(0, None));
        assert!(a.allows(1001, None), "listed member");
        assert!(a.allows(1002, Some(&[100, 1500])), "group from the bus");
        assert!(!a.allows(1002, Some(&[100])));
        assert!(!a.allows(1002, None));
        assert!(!Authz::default().allows(33, Some(&[33])));
    }

    #[test]
    fn reasons_are_bounded_single_lines() {
        assert!(check_reason("db failover").is_ok());
        assert!(check_reason("a\nb").is_err());
        assert!(check_reason(&"x".repeat(MAX_REASON_BYTES + 1)).is_err());
    }
}
