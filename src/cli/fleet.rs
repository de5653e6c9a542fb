//! `warden fleet status|release|allow`: the group's reload slots in etcd and who waits for
//! one, an operator giving one back (a failed reload keeps its slot, so that a rollout stops at
//! the first bad host), and the agent unit's drop-in that lets it reach exactly the members.

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
    /// status: the group's slots, who holds each, who waits. release: give --slot back,
    /// whoever holds it (a failed reload keeps its slot until then). allow: print the agent
    /// unit's drop-in allowing exactly the etcd members (and Alertmanager) it must reach
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
    Allow,
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
    if a.action == FleetAction::Allow {
        return allow(settings, fleet);
    }
    let name = fleet
        .group
        .clone()
        .unwrap_or_else(|| crate::agent::fleet::instance_name(settings));
    let group = Group::new(&name, fleet.slots);
    let etcd = match crate::fleet::connect::connect(fleet, ETCD_TIMEOUT) {
        Ok(e) => e,
        Err(e) => {
            errors::refuse(&e.what, Some(e.fix));
            return Exit::Usage;
        }
    };
    let done = match (a.action, a.slot) {
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
        // Status (allow has its answer without etcd, above).
        (FleetAction::Status | FleetAction::Allow, _) => status(&etcd, &group, &name, fleet.slots),
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

/// The drop-in for the agent's unit: `IPAddressAllow=` of every member's (and Alertmanager's)
/// addresses, beside the template's `localhost`, so that it reaches those and nothing else.
fn allow(settings: &crate::config::Settings, fleet: &FleetSettings) -> Exit {
    use std::net::ToSocketAddrs;
    let mut hosts: Vec<(String, u16)> = fleet
        .endpoints
        .iter()
        .map(|e| (e.url.host.clone(), e.url.port))
        .collect();
    if let Some(g) = &settings.alert_gate {
        hosts.push((g.url.host.clone(), g.url.port));
    }
    let mut addresses = Vec::new();
    for (host, port) in &hosts {
        match (host.as_str(), *port).to_socket_addrs() {
            Ok(found) => addresses.extend(found.map(|a| a.ip()).filter(|ip| !ip.is_loopback())),
            Err(e) => {
                errors::refuse(
                    &format!("cannot resolve {host}: {e}"),
                    Some("give the members by address in WARDEN_ETCD_ENDPOINTS, or fix the name"),
                );
                return Exit::Usage;
            }
        }
    }
    addresses.sort();
    addresses.dedup();
    let unit = format!(
        "warden@{}.service",
        crate::agent::fleet::instance_name(settings)
    );
    let mut out = format!(
        "# {unit}: the etcd members (and Alertmanager) its fleet reaches, and nothing else.\n\
         # Save as /etc/systemd/system/{unit}.d/fleet.conf, then: systemctl daemon-reload &&\n\
         # systemctl restart {unit}\n[Service]\n"
    );
    if addresses.is_empty() {
        out.push_str(
            "# every one is on this host: the template's IPAddressAllow=localhost suffices\n",
        );
    } else {
        let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
        out.push_str(&format!("IPAddressAllow={}\n", list.join(" ")));
    }
    print!("{out}");
    Exit::Ok
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
