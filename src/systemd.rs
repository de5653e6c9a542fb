//! systemd over D-Bus: reading the definitions systemd has loaded for the contract's units.
//!
//! Properties are fetched with one `GetAll` per interface, all units and interfaces in flight at
//! once, and decoded straight into typed structs. (Fetching only the needed properties with one
//! `Get` each is slower: the bus daemon's per-message cost outweighs systemd's serialization.)

use std::path::PathBuf;
use std::time::Duration;

use zbus::{Connection, DeserializeDict, Type};

use crate::unit::{ExecCommand, UnitDef, UnitOrigin};

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
    #[zbus(rename = "User")]
    user: Option<String>,
    #[zbus(rename = "Group")]
    group: Option<String>,
    #[zbus(rename = "PIDFile")]
    pid_file: Option<String>,
    #[zbus(rename = "Type")]
    service_type: Option<String>,
    #[zbus(rename = "RuntimeDirectory")]
    runtime_directory: Option<Vec<String>>,
    #[zbus(rename = "RuntimeDirectoryPreserve")]
    runtime_directory_preserve: Option<String>,
    #[zbus(rename = "StateDirectory")]
    state_directory: Option<Vec<String>>,
}

async fn get_all<T>(conn: &Connection, path: &str, iface: &str) -> Result<T, BusError>
where
    T: for<'d> serde::Deserialize<'d> + Type,
{
    let msg = conn
        .call_method(
            Some(DEST),
            path,
            Some("org.freedesktop.DBus.Properties"),
            "GetAll",
            &(iface,),
        )
        .await?;
    Ok(msg.body().deserialize::<T>()?)
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn exec(list: Option<Vec<ExecTuple>>) -> Vec<ExecCommand> {
    list.unwrap_or_default()
        .into_iter()
        .map(|(path, argv, ignore_failure, ..)| ExecCommand {
            path,
            argv,
            ignore_failure,
        })
        .collect()
}

/// The object path of a unit: systemd's bus-label escaping (every byte outside `[A-Za-z0-9]`,
/// and a leading digit, as `_xx` in hex).
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

/// Reads several units concurrently, in the order given.
pub async fn read_units(
    conn: &Connection,
    names: &[String],
) -> Result<Vec<(String, Result<UnitDef, String>)>, BusError> {
    let mut set = tokio::task::JoinSet::new();
    for (i, n) in names.iter().enumerate() {
        let (conn, n) = (conn.clone(), n.clone());
        set.spawn(async move {
            let r = read_unit(&conn, &n).await;
            (i, n, r)
        });
    }
    let mut out: Vec<Option<(String, Result<UnitDef, String>)>> = vec![None; names.len()];
    while let Some(done) = set.join_next().await {
        let (i, n, r) = done.map_err(|e| BusError::Unreachable(e.to_string()))?;
        out[i] = Some((n, r?));
    }
    Ok(out.into_iter().flatten().collect())
}

/// Reads one unit as systemd has loaded it. `Ok(Err(reason))` when systemd does not know it.
pub async fn read_unit(conn: &Connection, name: &str) -> Result<Result<UnitDef, String>, BusError> {
    // systemd loads a unit when its object path is looked up, so no LoadUnit round trip.
    let path = unit_path(name);
    // Both interfaces in flight at once: each GetAll is a round trip through the bus daemon.
    let want_service = name.ends_with(".service");
    let (unit, svc) = tokio::join!(
        get_all::<UnitProps>(conn, path.as_str(), "org.freedesktop.systemd1.Unit"),
        async {
            if want_service {
                get_all::<ServiceProps>(conn, path.as_str(), "org.freedesktop.systemd1.Service")
                    .await
            } else {
                Ok(ServiceProps::default())
            }
        }
    );
    let unit = unit?;
    let load_state = unit.load_state.unwrap_or_default();
    if load_state != "loaded" {
        let why = unit
            .load_error
            .map(|(_, msg)| msg)
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| format!("systemd reports LoadState={load_state}"));
        return Ok(Err(format!("systemd cannot load it: {why}")));
    }
    let svc = svc?;
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
        group: non_empty(svc.group),
        pid_file: non_empty(svc.pid_file).map(PathBuf::from),
        service_type: non_empty(svc.service_type),
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
