//! Reload slots: `N` keys under a group's prefix in etcd, `<prefix>/slots/<i>`, each created by
//! the agent that takes it, under its lease, and deleted when it gives it back (or gone with the
//! lease when the agent is). A slot is taken by a create-if-absent transaction, so two agents
//! never hold the same one.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::platform::etcd::{Etcd, EtcdError, Watch};

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
    waiters: String,
    slots: u32,
}

/// What a try for a slot got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Slot(u32),
    /// Every slot is held.
    AllHeld,
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
            waiters: format!("warden/fleet/{name}/waiters/"),
            slots: slots.max(1),
        }
    }

    fn key(&self, slot: u32) -> Vec<u8> {
        format!("{}{slot}", self.prefix).into_bytes()
    }

    /// Takes a free slot for `holder` under `lease`, leaving its place in line in the same
    /// transaction.
    pub fn take(&self, etcd: &Etcd, holder: &Holder, lease: i64) -> Result<Taken, EtcdError> {
        let value = serde_json::to_vec(holder).unwrap_or_default();
        let line = self.waiter_key(holder);
        for slot in 0..self.slots {
            if etcd
                .create_deleting(&self.key(slot), &value, lease, Some(&line))?
                .created
            {
                return Ok(Taken::Slot(slot));
            }
        }
        Ok(Taken::AllHeld)
    }

    /// A watch on the group's slots from now on: a change wakes a waiter.
    pub fn watch(&self, etcd: &Etcd, timeout: Duration) -> Result<Watch, EtcdError> {
        etcd.watch(self.prefix.as_bytes(), timeout)
    }

    /// Whether `holder` still holds `slot` under `lease` (an operator may have released it).
    pub fn holds(
        &self,
        etcd: &Etcd,
        slot: u32,
        holder: &Holder,
        lease: i64,
    ) -> Result<bool, EtcdError> {
        Ok(etcd.get(&self.key(slot))?.is_some_and(|kv| {
            kv.lease == lease
                && serde_json::from_slice::<Holder>(&kv.value).is_ok_and(|h| h.id == holder.id)
        }))
    }

    fn waiter_key(&self, holder: &Holder) -> Vec<u8> {
        format!("{}{}", self.waiters, holder.id).into_bytes()
    }

    /// Says that `holder` waits for a slot, under `lease` (gone with it).
    pub fn wait_in_line(&self, etcd: &Etcd, holder: &Holder, lease: i64) -> Result<(), EtcdError> {
        let value = serde_json::to_vec(holder).unwrap_or_default();
        etcd.put(&self.waiter_key(holder), &value, lease)
    }

    /// Who waits for a slot, longest first.
    pub fn waiting(&self, etcd: &Etcd) -> Result<Vec<Holder>, EtcdError> {
        let mut w: Vec<Holder> = etcd
            .list(self.waiters.as_bytes())?
            .into_iter()
            .filter_map(|kv| serde_json::from_slice(&kv.value).ok())
            .collect();
        w.sort_by(|a, b| a.since.cmp(&b.since));
        Ok(w)
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
