//! `warden fleet status|release`: the group's reload slots in etcd, and an operator giving one
//! back (a failed reload keeps its slot, so that a rollout stops at the first bad host).

use std::time::Duration;

use clap::Args;

use super::args::{AdminEnv, reason_text};
use super::errors;
use super::exit::Exit;
use crate::config::FleetSettings;
use crate::fleet::slots::Group;
use crate::platform::etcd::{Etcd, EtcdError};

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(flatten)]
    pub env: AdminEnv,
    /// status: the group's slots and who holds each. release: give --slot back, whoever holds
    /// it (a failed reload keeps its slot until then)
    #[arg(value_enum, default_value = "status")]
    pub action: FleetAction,
    /// The slot to release (`warden fleet status` lists them)
    #[arg(long, value_name = "N", required_if_eq("action", "release"))]
    pub slot: Option<u32>,
    /// Why it is released (printed with the holder it took the slot from)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetAction {
    Status,
    Release,
}

/// How long one call to etcd may take, per member.
const ETCD_TIMEOUT: Duration = Duration::from_secs(3);

pub fn main(a: FleetArgs) -> Exit {
    let admin = match super::Admin::find(&a.env) {
        Ok(t) => t,
        Err(exit) => return exit,
    };
    let settings = match admin.contract() {
        Ok(l) => &l.settings,
        Err(exit) => return exit,
    };
    let Some(fleet) = &settings.fleet else {
        errors::refuse(
            "no fleet coordination is configured for this app",
            Some("set WARDEN_ETCD_ENDPOINTS (the etcd members' client URLs) in its contract"),
        );
        return Exit::Usage;
    };
    let name = group_name(fleet, admin.app.as_ref().map(|a| a.as_str()));
    let group = Group::new(&name, fleet.slots);
    let etcd = match crate::fleet::connect::connect(fleet, ETCD_TIMEOUT) {
        Ok(e) => e,
        Err(e) => {
            errors::refuse(&e.what, Some(e.fix));
            return Exit::Usage;
        }
    };
    let done = match (a.action, a.slot) {
        (FleetAction::Status, _) => status(&etcd, &group, &name, fleet.slots),
        (FleetAction::Release, Some(slot)) => match reason_text(&a.reason) {
            Ok(reason) => release(&etcd, &group, slot, &reason),
            Err(why) => {
                errors::refuse(&why, Some("add --reason TEXT"));
                return Exit::Usage;
            }
        },
        (FleetAction::Release, None) => {
            errors::refuse(
                "which slot? --slot N",
                Some("warden fleet status lists them"),
            );
            return Exit::Usage;
        }
    };
    done.unwrap_or_else(|e| {
        let exit = match e {
            EtcdError::Unreachable(_) => Exit::NoAgent,
            EtcdError::Refused { .. } => Exit::Usage,
        };
        errors::refuse(
            &e.to_string(),
            Some("check WARDEN_ETCD_ENDPOINTS and that the members run (etcdctl endpoint health)"),
        );
        exit
    })
}

/// The group: as configured, else the app's name.
pub fn group_name(fleet: &FleetSettings, app: Option<&str>) -> String {
    fleet
        .group
        .clone()
        .or_else(|| app.map(str::to_string))
        .unwrap_or_else(|| "default".into())
}

fn status(etcd: &Etcd, group: &Group, name: &str, slots: u32) -> Result<Exit, EtcdError> {
    let held = group.held(etcd)?;
    let mut out = vec![format!(
        "fleet group {name}: {slots} slot(s), {} held",
        held.len()
    )];
    for slot in 0..slots.max(held.iter().map(|h| h.slot + 1).max().unwrap_or(0)) {
        out.push(match held.iter().find(|h| h.slot == slot) {
            None => format!("slot {slot}: free"),
            Some(h) => match &h.holder {
                Some(who) => format!(
                    "slot {slot}: {} ({} on {}) since {}",
                    who.id, who.app, who.host, who.since
                ),
                None => format!("slot {slot}: held (by a holder warden cannot read)"),
            },
        });
    }
    let waiting = group.waiting(etcd)?;
    out.push(match waiting.len() {
        0 => "waiting: none".into(),
        n => format!("waiting: {n}"),
    });
    out.extend(
        waiting
            .iter()
            .map(|w| format!("  {} ({} on {}) since {}", w.id, w.app, w.host, w.since)),
    );
    super::print(&out.join("\n"));
    Ok(Exit::Ok)
}

fn release(etcd: &Etcd, group: &Group, slot: u32, reason: &str) -> Result<Exit, EtcdError> {
    let holder = group
        .held(etcd)?
        .into_iter()
        .find(|h| h.slot == slot)
        .and_then(|h| h.holder);
    if group.release(etcd, slot)? {
        let who = holder.map_or_else(|| "an unknown holder".into(), |h| h.id);
        super::print(&format!("slot {slot} released, taken from {who}: {reason}"));
    } else {
        super::print(&format!("slot {slot} was free"));
    }
    Ok(Exit::Ok)
}
