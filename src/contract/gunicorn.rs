//! Gunicorn's own settings, as the app's Gunicorn prints them (`--print-config`, run as the
//! app unit runs it): what a reload cannot do (`preload_app`), who may reach its control
//! socket (`gunicornc`: `shutdown` and `kill` among its commands, no authentication), and
//! whether the deployed code loads at all.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::Context;
use crate::contract::finding::{Code, Finding};

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let Some(probe) = ctx.inputs.gunicorn else {
        return;
    };
    let settings = match &probe.result {
        Ok(s) => s,
        Err(why) => {
            out.push(Finding::new(
                Code::AppDoesNotLoad,
                probe.unit.clone(),
                why.clone(),
                "fix the code or the configuration deployed: the unit would not start, and a reload \
                 of it would stop the workers and boot none",
            ));
            return;
        }
    };
    if settings.preload_app {
        out.push(Finding::new(
            Code::Preload,
            probe.unit.clone(),
            "preload_app is on: the master imports the app once, and a reload (SIGHUP, warden \
             reload) replaces the workers with forks of that same code",
            format!(
                "deploy new code with `systemctl restart {}`, or turn preload_app off to reload it",
                probe.unit
            ),
        ));
    }
    if let Some(socket) = &settings.control_socket
        && let Some(why) = exposed(socket, settings.control_socket_mode)
    {
        out.push(Finding::new(
            Code::ControlSocketExposed,
            socket.display().to_string(),
            format!("Gunicorn's control socket {why}: whoever reaches it may shut the app down"),
            format!(
                "add --no-control-socket to {}'s ExecStart=, or give it a private path \
                 (--control-socket /run/APP/gunicorn.ctl) and mode (--control-socket-mode 0600)",
                probe.unit
            ),
        ));
    }
}

/// Why the socket at `path` (made with `mode`) is reachable by others than its owner: its mode,
/// the socket as it exists, or a directory others may write (and so replace it in).
fn exposed(path: &Path, mode: Option<u32>) -> Option<String> {
    if let Some(m) = mode.filter(|m| m & 0o077 != 0) {
        return Some(format!(
            "is made with mode {m:04o}, open to its group or to everyone"
        ));
    }
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.mode() & 0o077 != 0
    {
        return Some(format!("has mode {:04o}", meta.mode() & 0o7777));
    }
    let dir = path.parent()?;
    let d = std::fs::metadata(dir).ok()?;
    let m = d.mode() & 0o7777;
    let others_write = m & 0o002 != 0 || m & 0o020 != 0;
    (others_write && m & 0o1000 == 0).then(|| {
        format!(
            "is in {}, which others may write (mode {m:04o}): they can replace it",
            dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_exposed_by_its_mode_or_its_directory() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("gunicorn.ctl");
        let set = |m: u32| {
            std::fs::set_permissions(d.path(), std::os::unix::fs::PermissionsExt::from_mode(m))
                .unwrap()
        };
        set(0o700);
        assert_eq!(exposed(&sock, Some(0o600)), None);
        assert!(exposed(&sock, Some(0o660)).unwrap().contains("0660"));
        set(0o777);
        assert!(
            exposed(&sock, Some(0o600))
                .unwrap()
                .contains("others may write")
        );
        set(0o1777);
        assert_eq!(
            exposed(&sock, Some(0o600)),
            None,
            "the sticky bit keeps it its owner's"
        );
    }
}
