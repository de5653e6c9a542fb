//! systemd over D-Bus: reading the definitions systemd has loaded for the contract's units.
//!
//! Properties are fetched with one `GetAll` per interface, every request of every unit sent in
//! one write, and decoded straight into typed structs. (Fetching only the needed properties with
//! one `Get` each is slower: the bus daemon's per-message cost outweighs systemd's
//! serialization of the whole interface.)

use std::path::PathBuf;
use std::time::Duration;

use zbus::{Connection, DeserializeDict, Message, Type};

use super::unit::{ExecCommand, UnitDef, UnitOrigin};

const DEST: &str = "org.freedesktop.systemd1";
/// A bus that does not answer within this is treated as unreachable, so that `ExecStartPre=`
/// never hangs on D-Bus.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the system bus is not reachable: {0}")]
    Unreachable(String),
    #[error("D-Bus call failed: {0}")]
    Call(#[from] zbus::Error),
    #[error("the D-Bus call timed out")]
    Timeout,
}

/// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured).
pub async fn connect() -> Result<Connection, BusError> {
    if std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS").is_none()
        && !std::path::Path::new("/run/dbus/system_bus_socket").exists()
    {
        return Err(BusError::Unreachable(
            "/run/dbus/system_bus_socket does not exist".into(),
        ));
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::system()).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(BusError::Unreachable(e.to_string())),
        Err(_) => Err(BusError::Unreachable("timed out".into())),
    }
}

type ExecTuple = (String, Vec<String>, bool, u64, u64, u64, u64, u32, i32, i32);

#[derive(Debug, Default, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
struct UnitProps {
    #[zbus(rename = "LoadState")]
    load_state: Option<String>,
    #[zbus(rename = "LoadError")]
    load_error: Option<(String, String)>,
    #[zbus(rename = "FragmentPath")]
    fragment_path: Option<String>,
    #[zbus(rename = "DropInPaths")]
    drop_in_paths: Option<Vec<String>>,
    #[zbus(rename = "NeedDaemonReload")]
    need_daemon_reload: Option<bool>,
}

#[derive(Debug, Default, DeserializeDict, Type)]
#[zbus(signature = "a{sv}")]
struct ServiceProps {
    #[zbus(rename = "ExecStart")]
    exec_start: Option<Vec<ExecTuple>>,
    #[zbus(rename = "ExecStartPre")]
    exec_start_pre: Option<Vec<ExecTuple>>,
    #[zbus(rename = "Environment")]
    environment: Option<Vec<String>>,
    #[zbus(rename = "EnvironmentFiles")]
    environment_files: Option<Vec<(String, bool)>>,
    #[zbus(rename = "WorkingDirectory")]
    working_directory: Option<String>,
    #[zbus(rename = "User")]
    user: Option<String>,
    #[zbus(rename = "PIDFile")]
    pid_file: Option<String>,
    #[zbus(rename = "RuntimeDirectory")]
    runtime_directory: Option<Vec<String>>,
    #[zbus(rename = "RuntimeDirectoryPreserve")]
    runtime_directory_preserve: Option<String>,
    #[zbus(rename = "StateDirectory")]
    state_directory: Option<Vec<String>>,
}

const UNIT: &str = "org.freedesktop.systemd1.Unit";
const SERVICE: &str = "org.freedesktop.systemd1.Service";
/// The longest a batch of reads may take before the bus counts as unreachable.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

fn get_all_call(path: &str, iface: &str) -> Result<Message, BusError> {
    Ok(Message::method_call(path, "GetAll")
        .destination(DEST)
        .interface("org.freedesktop.DBus.Properties")
        .build(&(iface,))?)
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn exec(list: Option<Vec<ExecTuple>>) -> Vec<ExecCommand> {
    list.unwrap_or_default()
        .into_iter()
        .map(|(path, argv, ..)| ExecCommand { path, argv })
        .collect()
}

/// The object path of a unit: systemd's bus-label escaping (every byte outside `[A-Za-z0-9]`,
/// and a leading digit, as `_xx` in hex). systemd loads a unit when its path is looked up, so
/// no `LoadUnit` round trip is needed.
pub fn unit_path(name: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    if name.is_empty() {
        p.push('_');
    }
    for (i, b) in name.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

/// Reads units as systemd has loaded them, in the order given; `Err(reason)` for a unit
/// systemd does not know. Every request goes out in one write and the replies are matched by
/// serial: a handful of units costs about one round trip through the bus daemon.
pub async fn read_units(
    conn: &Connection,
    names: &[String],
) -> Result<Vec<(String, Result<UnitDef, String>)>, BusError> {
    match tokio::time::timeout(READ_TIMEOUT, read_units_inner(conn, names)).await {
        Ok(r) => r,
        Err(_) => Err(BusError::Timeout),
    }
}

async fn read_units_inner(
    conn: &Connection,
    names: &[String],
) -> Result<Vec<(String, Result<UnitDef, String>)>, BusError> {
    // Subscribed before sending, so that no reply can slip past.
    let mut stream = zbus::MessageStream::from(conn);
    let mut calls = Vec::with_capacity(names.len() * 2);
    for n in names {
        let path = unit_path(n);
        calls.push(get_all_call(&path, UNIT)?);
        calls.push(get_all_call(&path, SERVICE)?);
    }
    let serials: Vec<_> = calls
        .iter()
        .map(|m| m.primary_header().serial_num())
        .collect();
    conn.send_all(&calls).await?;
    let mut replies: Vec<Option<Message>> = vec![None; calls.len()];
    let mut left = calls.len();
    while left > 0 {
        let next = std::future::poll_fn(|cx| {
            futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
        })
        .await;
        let msg = match next {
            Some(m) => m?,
            None => {
                return Err(BusError::Unreachable(
                    "the bus closed the connection".into(),
                ));
            }
        };
        let Some(reply_to) = msg.header().reply_serial() else {
            continue;
        };
        if let Some(i) = serials.iter().position(|s| *s == reply_to)
            && replies[i].is_none()
        {
            replies[i] = Some(msg);
            left -= 1;
        }
    }
    let mut out = Vec::with_capacity(names.len());
    let mut replies = replies.into_iter().flatten();
    for n in names {
        let (Some(unit), Some(svc)) = (replies.next(), replies.next()) else {
            return Err(BusError::Unreachable("a reply went missing".into()));
        };
        out.push((n.clone(), decode(n, unit, svc)?));
    }
    Ok(out)
}

fn body<T>(msg: Message) -> Result<T, BusError>
where
    T: for<'d> serde::Deserialize<'d> + Type,
{
    if msg.message_type() == zbus::message::Type::Error {
        return Err(BusError::Call(zbus::Error::from(msg)));
    }
    Ok(msg.body().deserialize::<T>()?)
}

fn decode(name: &str, unit: Message, svc: Message) -> Result<Result<UnitDef, String>, BusError> {
    let unit: UnitProps = body(unit)?;
    let load_state = unit.load_state.unwrap_or_default();
    if load_state != "loaded" {
        let why = unit
            .load_error
            .map(|(_, msg)| msg)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("systemd reports LoadState={load_state}"));
        return Ok(Err(format!("systemd cannot load it: {why}")));
    }
    // A unit of another type has no Service interface: its reply is an error, and it simply
    // has no service settings.
    let svc: ServiceProps = if name.ends_with(".service") {
        body(svc)?
    } else {
        ServiceProps::default()
    };
    Ok(Ok(UnitDef {
        name: name.to_string(),
        origin: UnitOrigin::Bus,
        fragment_path: non_empty(unit.fragment_path).map(PathBuf::from),
        drop_in_paths: unit
            .drop_in_paths
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        exec_start: exec(svc.exec_start),
        exec_start_pre: exec(svc.exec_start_pre),
        environment: svc
            .environment
            .unwrap_or_default()
            .into_iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        environment_files: svc
            .environment_files
            .unwrap_or_default()
            .into_iter()
            .map(|(p, optional)| (PathBuf::from(p), optional))
            .collect(),
        user: non_empty(svc.user),
        pid_file: non_empty(svc.pid_file).map(PathBuf::from),
        working_directory: non_empty(svc.working_directory)
            .map(|d| d.trim_start_matches('-').to_string())
            .filter(|d| d.starts_with('/'))
            .map(PathBuf::from),
        runtime_directory: svc.runtime_directory.unwrap_or_default(),
        runtime_directory_preserve: svc
            .runtime_directory_preserve
            .unwrap_or_else(|| "no".into()),
        state_directory: svc.state_directory.unwrap_or_default(),
        need_daemon_reload: unit.need_daemon_reload.unwrap_or(false),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn unit_paths_are_escaped_as_systemd_does() {
        assert_eq!(
            super::unit_path("mes-dashboard.service"),
            "/org/freedesktop/systemd1/unit/mes_2ddashboard_2eservice"
        );
        assert_eq!(
            super::unit_path("w@1.service"),
            "/org/freedesktop/systemd1/unit/w_401_2eservice"
        );
        assert_eq!(
            super::unit_path("1x"),
            "/org/freedesktop/systemd1/unit/_31x"
        );
    }
}
