//! Path rules: where the flag, PID and state files live, what they are, who may write there.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{Context, is_under};
use crate::contract::finding::{Code, Finding};
use crate::systemd::unit::{ProgramKind, UnitDef};

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let s = ctx.settings;
    let rt = &s.runtime_dir.value;
    let rt_s = rt.display().to_string();

    if !is_under(&s.restart_flag.value, rt) {
        out.push(Finding::new(
            Code::FlagOutsideRuntimeDir,
            s.restart_flag.value.display().to_string(),
            format!(
                "WATCHDOG_RESTART_FLAG (from {}) is not under WATCHDOG_RUNTIME_DIR={rt_s}",
                s.restart_flag.source
            ),
            format!("move the flag into the runtime directory, e.g. WATCHDOG_RESTART_FLAG={rt_s}/mes_dashboard_restart.flag"),
        ));
    }
    if !is_under(&s.pid_file.value, rt) {
        out.push(Finding::new(
            Code::PidOutsideRuntimeDir,
            s.pid_file.value.display().to_string(),
            format!(
                "WATCHDOG_PID_FILE (from {}) is not under WATCHDOG_RUNTIME_DIR={rt_s}",
                s.pid_file.source
            ),
            format!("move the PID file into the runtime directory, e.g. WATCHDOG_PID_FILE={rt_s}/gunicorn.pid"),
        ));
    }

    let state = &s.state_file.value;
    if let Some((raw, source)) = ctx
        .inputs
        .layers
        .get(crate::config::vars::WATCHDOG_STATE_FILE.name)
        .filter(|(raw, _)| !raw.is_empty() && !Path::new(raw).is_absolute())
    {
        out.push(Finding::new(
            Code::StateRelative,
            state.display().to_string(),
            format!(
                "WATCHDOG_STATE_FILE={raw} (from {source}) is relative: it is joined to the project root, so another root (another unit's WorkingDirectory=, MES_DASHBOARD_ROOT) means another history"
            ),
            "set an absolute path on persistent storage, e.g. /var/lib/mes-dashboard/restart_state.json",
        ));
    }
    if let Some(kind) = volatile(state) {
        out.push(Finding::new(
            Code::StateVolatile,
            state.display().to_string(),
            format!("the restart history lives on {kind}, which is cleared at boot: churn counts reset on every reboot"),
            "put WATCHDOG_STATE_FILE on persistent storage, e.g. /var/lib/mes-dashboard/restart_state.json (StateDirectory=mes-dashboard)",
        ));
    }

    for (var, p) in [
        ("WATCHDOG_RESTART_FLAG", &s.restart_flag.value),
        ("WATCHDOG_PID_FILE", &s.pid_file.value),
        ("WATCHDOG_STATE_FILE", state),
    ] {
        if let Ok(m) = std::fs::symlink_metadata(p) {
            let ft = m.file_type();
            let what = if ft.is_symlink() {
                Some("a symbolic link")
            } else if ft.is_fifo() {
                Some("a FIFO")
            } else if ft.is_dir() {
                Some("a directory")
            } else if !ft.is_file() {
                Some("not a regular file")
            } else {
                None
            };
            if let Some(what) = what {
                out.push(Finding::new(
                    Code::NotRegularFile,
                    p.display().to_string(),
                    format!("{var} is {what}; warden never follows or opens such a path"),
                    format!(
                        "remove it (`rm {}`); warden and gunicorn create the file themselves",
                        p.display()
                    ),
                ));
            }
        }
    }

    let state_dir = state
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "/".into());
    let rt_created_by = creating_unit(ctx, rt, |u| &u.runtime_directory, "/run");
    let state_created_by = creating_unit(ctx, &state_dir, |u| &u.state_directory, "/var/lib");

    for (dir, var, created_by) in [
        (rt.as_path(), "WATCHDOG_RUNTIME_DIR", &rt_created_by),
        (
            state_dir.as_path(),
            "WATCHDOG_STATE_FILE's directory",
            &state_created_by,
        ),
    ] {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => out.push(Finding::new(
                Code::NotRegularFile,
                dir.display().to_string(),
                format!("{var} is a symbolic link"),
                "use the real directory's path; a link lets whoever controls it redirect the contract's files",
            )),
            Ok(m) if !m.is_dir() => out.push(Finding::new(
                Code::MissingDirectory,
                dir.display().to_string(),
                format!("{var} is not a directory"),
                "remove the file and let the unit create the directory",
            )),
            Ok(_) => {}
            Err(_) => match created_by {
                Some(_) => {}
                None => out.push(Finding::new(
                    Code::MissingDirectory,
                    dir.display().to_string(),
                    format!("{var} does not exist and no unit of the contract creates it"),
                    if var == "WATCHDOG_RUNTIME_DIR" {
                        "declare RuntimeDirectory= (with RuntimeDirectoryPreserve=yes) in the app unit, or create it with tmpfiles.d"
                    } else {
                        "declare StateDirectory= in the watchdog unit, or create the directory (owned by the service user)"
                    },
                )),
            },
        }
        unsafe_ancestors(dir, out);
    }

    // Who must write where: gunicorn writes the PID file, the watchdog consumes the flag and
    // writes the state file.
    let app_user = ctx.app_unit().map(|u| u.user.clone());
    let wd_user = watchdog_unit(ctx).map(|u| u.user.clone());
    let mut needs: Vec<(&Path, Option<String>, &str)> = Vec::new();
    if let Some(u) = &app_user {
        needs.push((rt, u.clone(), "the app unit (PID file)"));
    }
    if let Some(u) = wd_user.as_ref().or(app_user.as_ref()) {
        needs.push((rt, u.clone(), "the watchdog (restart flag)"));
        needs.push((&state_dir, u.clone(), "the watchdog (state file)"));
    }
    if needs.is_empty() {
        needs.push((rt, None, "warden"));
        needs.push((&state_dir, None, "warden"));
    }
    let mut seen = Vec::new();
    for (dir, user, who) in needs {
        if seen.contains(&(dir.to_path_buf(), user.clone())) {
            continue;
        }
        seen.push((dir.to_path_buf(), user.clone()));
        if !dir.exists() {
            // A directory a unit creates at start is owned by that unit's user.
            continue;
        }
        if let Err(why) = writable_by(dir, user.as_deref()) {
            out.push(Finding::new(
                Code::NotWritable,
                dir.display().to_string(),
                format!(
                    "{who} runs as {} and cannot write here: {why}",
                    user.as_deref().unwrap_or("the current user")
                ),
                format!(
                    "chown the directory to the service user (`chown {} {}`) or grant its group write access",
                    user.as_deref().unwrap_or("USER"),
                    dir.display()
                ),
            ));
        }
    }
}

/// Which unit creates `dir` at start through `RuntimeDirectory=`/`StateDirectory=`.
fn creating_unit(
    ctx: &Context<'_>,
    dir: &Path,
    list: impl Fn(&UnitDef) -> &Vec<String>,
    base: &str,
) -> Option<String> {
    ctx.units
        .iter()
        .find(|u| {
            list(u)
                .iter()
                .any(|d| super::same_path(&Path::new(base).join(d), dir))
        })
        .map(|u| u.name.clone())
}

/// The unit that runs `warden run`, if the contract has one.
pub(super) fn watchdog_unit<'a>(ctx: &Context<'a>) -> Option<&'a UnitDef> {
    ctx.units.iter().copied().find(|u| {
        u.exec_start.iter().any(|c| {
            crate::systemd::unit::analyze(&c.path, &c.argv)
                .iter()
                .any(|i| {
                    i.kind == ProgramKind::Other
                        && i.program.rsplit('/').next() == Some("warden")
                        && i.args.first().map(String::as_str) == Some("run")
                })
        })
    })
}

fn volatile(p: &Path) -> Option<String> {
    // Cleared at boot by convention (tmpfs, or tmpfiles.d cleaning /tmp) whatever backs them.
    for pre in ["/run", "/var/run", "/tmp", "/dev/shm"] {
        if p.starts_with(pre) {
            return Some(pre.to_string());
        }
    }
    // The nearest existing ancestor's file system.
    let mut cur = p.parent();
    while let Some(d) = cur {
        if let Ok(st) = nix::sys::statfs::statfs(d) {
            let t = st.filesystem_type();
            if t == nix::sys::statfs::TMPFS_MAGIC {
                return Some(format!("a tmpfs mounted at or above {}", d.display()));
            }
            return None;
        }
        cur = d.parent();
    }
    None
}

/// Reports ancestors of `dir` (and `dir` itself) that others can write without the sticky bit:
/// whoever can write there can swap the directory out from under the contract.
fn unsafe_ancestors(dir: &Path, out: &mut Vec<Finding>) {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if let Ok(m) = std::fs::symlink_metadata(d)
            && m.is_dir()
        {
            let mode = m.mode();
            if mode & 0o022 != 0 && mode & 0o1000 == 0 {
                let who = if mode & 0o002 != 0 { "world" } else { "group" };
                out.push(Finding::new(
                    Code::UnsafeDirectory,
                    d.display().to_string(),
                    format!(
                        "is {who}-writable without the sticky bit (mode {:04o}), on the path of {}",
                        mode & 0o7777,
                        dir.display()
                    ),
                    format!(
                        "`chmod {} {}` (or add the sticky bit)",
                        if who == "world" { "o-w" } else { "g-w" },
                        d.display()
                    ),
                ));
            }
        }
        cur = d.parent();
    }
}

/// Whether `user` (or the current user) can create files in `dir`.
pub(crate) fn writable_by(dir: &Path, user: Option<&str>) -> Result<(), String> {
    use nix::unistd::{Gid, Uid};
    if let Ok(st) = nix::sys::statvfs::statvfs(dir)
        && st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    {
        return Err("the file system is mounted read-only".into());
    }
    let (uid, gids): (Uid, Vec<Gid>) = match user {
        None => (
            nix::unistd::geteuid(),
            std::iter::once(nix::unistd::getegid())
                .chain(nix::unistd::getgroups().unwrap_or_default())
                .collect(),
        ),
        Some(name) => match crate::platform::accounts::lookup(name) {
            Some(a) => (a.uid, a.groups),
            None => return Err(format!("user {name} does not exist")),
        },
    };
    if uid.is_root() {
        return Ok(());
    }
    let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    let mode = m.mode();
    let bits = if m.uid() == uid.as_raw() {
        (mode >> 6) & 0o3
    } else if gids.iter().any(|g| g.as_raw() == m.gid()) {
        (mode >> 3) & 0o3
    } else {
        mode & 0o3
    };
    if bits == 0o3 {
        Ok(())
    } else {
        Err(format!(
            "owned by uid {} gid {} with mode {:04o}",
            m.uid(),
            m.gid(),
            mode & 0o7777
        ))
    }
}
