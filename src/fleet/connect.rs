//! The etcd client a fleet's settings describe: its members, TLS (the CA, a client
//! certificate) and etcd's user, each file read now so that a mistake shows at the start.

use std::path::Path;
use std::time::Duration;

use crate::config::FleetSettings;
use crate::platform::etcd::{Credentials, Etcd};
use crate::platform::fs::read_untrusted;
use crate::platform::http::{SYSTEM_CA, Tls};

/// The most of a password file read.
const PASSWORD_MAX: u64 = 4096;

/// Why the settings give no client: the file, what is wrong, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{what}; {fix}")]
pub struct ConnectError {
    pub what: String,
    pub fix: &'static str,
}

/// The client for `fleet`, each call bounded by `timeout` per member.
pub fn connect(fleet: &FleetSettings, timeout: Duration) -> Result<Etcd, ConnectError> {
    let tls = if fleet.endpoints.iter().any(|e| e.tls) {
        let ca = fleet.cacert.as_deref().unwrap_or(Path::new(SYSTEM_CA));
        let client = fleet
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        Some(Tls::from_files(ca, client).map_err(|what| ConnectError {
            what,
            fix: "give WARDEN_ETCD_CACERT, WARDEN_ETCD_CERT and WARDEN_ETCD_KEY as PEM files the agent's user can read",
        })?)
    } else {
        None
    };
    let credentials = match &fleet.user {
        None => None,
        Some((user, file)) => {
            let read = read_untrusted(file, PASSWORD_MAX).map_err(|e| ConnectError {
                what: format!("the etcd password: {e}"),
                fix: "put the password on the first line of WARDEN_ETCD_PASSWORD_FILE, a regular file the agent's user can read",
            })?;
            let text = String::from_utf8_lossy(&read.bytes);
            let password = text.lines().next().unwrap_or("").to_string();
            if password.is_empty() {
                return Err(ConnectError {
                    what: format!("{}: the first line is empty", file.display()),
                    fix: "put the etcd user's password on the first line",
                });
            }
            Some(Credentials::new(user.clone(), password))
        }
    };
    Ok(Etcd::secure(
        fleet.endpoints.clone(),
        timeout,
        tls,
        credentials,
    ))
}
