//! Reload slots: `N` keys under a group's prefix in etcd, `<prefix>/slots/<i>`, each created by
//! the agent that takes it, under its lease, and deleted when it gives it back (or gone with the
//! lease when the agent is). A slot is taken by a create-if-absent transaction, so two agents
//! never hold the same one.

use serde::{Deserialize, Serialize};

use crate::platform::etcd::{Etcd, EtcdError};

/// Who holds a slot: the host's machine id and the instance, and for people the host and app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// `<machine-id>/<app>`: unique per agent across the fleet.
    pub id: String,
    pub host: String,
    pub app: String,
    /// When it was taken (UTC RFC 3339).
    pub since: String,
}

/// A group's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    prefix: String,
    slots: u32,
}

/// A slot held, by whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub slot: u32,
    pub holder: Option<Holder>,
    pub lease: i64,
}

impl Group {
    /// `name`'s slots under `warden/fleet/<name>/`; `slots` at least 1.
    pub fn new(name: &str, slots: u32) -> Group {
        Group {
            prefix: format!("warden/fleet/{name}/slots/"),
            slots: slots.max(1),
        }
    }

    fn key(&self, slot: u32) -> Vec<u8> {
        format!("{}{slot}", self.prefix).into_bytes()
    }

    /// Takes a free slot for `holder` under `lease`: which one, or `None` when all are held.
    pub fn take(&self, etcd: &Etcd, holder: &Holder, lease: i64) -> Result<Option<u32>, EtcdError> {
        let value = serde_json::to_vec(holder).unwrap_or_default();
        for slot in 0..self.slots {
            if etcd.create(&self.key(slot), &value, lease)? {
                return Ok(Some(slot));
            }
        }
        Ok(None)
    }

    /// Gives `slot` back.
    pub fn release(&self, etcd: &Etcd, slot: u32) -> Result<bool, EtcdError> {
        etcd.delete(&self.key(slot))
    }

    /// The slots held now, in order (a slot beyond the group's count, left by a larger
    /// setting, is shown too: it is still held).
    pub fn held(&self, etcd: &Etcd) -> Result<Vec<Held>, EtcdError> {
        Ok(etcd
            .list(self.prefix.as_bytes())?
            .into_iter()
            .filter_map(|kv| {
                let slot = std::str::from_utf8(&kv.key[self.prefix.len()..])
                    .ok()?
                    .parse()
                    .ok()?;
                Some(Held {
                    slot,
                    holder: serde_json::from_slice(&kv.value).ok(),
                    lease: kv.lease,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_live_under_their_groups_prefix() {
        let g = Group::new("mes", 0);
        assert_eq!(g.slots, 1, "at least one");
        assert_eq!(g.key(0), b"warden/fleet/mes/slots/0");
    }
}
