//! The bind rule: `GUNICORN_BIND` is one valid `host:port`; before start the port is free, while
//! running it is held by the app's gunicorn master. Listening sockets are read from the kernel
//! (sock_diag, else `/proc/net/tcp{,6}`), so the check never binds, connects or otherwise
//! disturbs the port.

use super::{Context, Phase};
use crate::config::vars;
use crate::contract::finding::{Code, Finding};
use crate::platform::sockets::{Listener, holder, listeners};

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let s = ctx.settings;
    // An invalid bind is B01 (see `super::check`); the default standing in is not the app's.
    if ctx
        .inputs
        .invalid
        .iter()
        .any(|i| i.var == vars::GUNICORN_BIND.name)
    {
        return;
    }
    let bind = &s.bind.value;
    let on_port: Vec<Listener> = listeners()
        .into_iter()
        .filter(|l| bind.covers(l.ip, l.port))
        .collect();
    match ctx.inputs.phase {
        Phase::PreStart => {
            if let Some(l) = on_port.first() {
                let who = holder(l.inode)
                    .map(|h| format!(" by process {h}"))
                    .unwrap_or_default();
                out.push(Finding::new(
                    Code::PortInUse,
                    s.bind.value.to_string(),
                    format!("port {} is already in use{who} ({}:{} listening)", bind.port, l.ip, l.port),
                    "stop whatever holds the port (a stale gunicorn from a manual start?), or run `warden check --phase running` if the app is meant to be up",
                ));
            }
        }
        Phase::Running => {
            use crate::platform::process::{Role, classify, holds_socket};
            let pid_path = &s.pid_file.value;
            let master = crate::platform::process::read_pid_file(pid_path);
            let role = master.as_ref().ok().map(|p| classify(*p));
            let held = match &master {
                Ok(pid) => on_port.iter().any(|l| holds_socket(*pid, l.inode)),
                Err(_) => false,
            };
            let problem = match (&master, &role, on_port.first()) {
                (Err(e), _, _) => Some(format!("the PID file: {e}")),
                (Ok(pid), Some(Role::NotRunning), _) => Some(format!(
                    "the PID file {} names {pid}, which is not running (a stale PID file)",
                    pid_path.display()
                )),
                (Ok(pid), Some(Role::NotGunicorn { comm }), _) => Some(format!(
                    "the PID file {} names {pid} ({comm}), which is not gunicorn",
                    pid_path.display()
                )),
                (Ok(pid), Some(Role::Worker { master }), _) => Some(format!(
                    "the PID file {} names {pid}, a gunicorn worker of master {master}, not the master",
                    pid_path.display()
                )),
                _ if held => None,
                (Ok(pid), _, None) => Some(format!(
                    "nothing listens on port {} (master {pid})",
                    bind.port
                )),
                (Ok(pid), _, Some(l)) => Some(format!(
                    "port {} is held by {}, not by the master {pid} named in {}",
                    bind.port,
                    holder(l.inode).unwrap_or_else(|| "another process".into()),
                    pid_path.display()
                )),
            };
            if let Some(why) = problem {
                out.push(Finding::new(
                    Code::PortNotHeld,
                    s.bind.value.to_string(),
                    why,
                    "check the app unit (`systemctl status`) and that gunicorn runs with --pid \"${WATCHDOG_PID_FILE}\" --bind \"${GUNICORN_BIND}\"",
                ));
            }
        }
    }
}
