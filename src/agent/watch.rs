//! The flag's event source: inotify on the flag's directory (atomic renames and re-created files
//! are seen; a watch on the file itself would die with its first replacement), feeding the
//! executor straight from the watcher's thread.

use std::path::{Path, PathBuf};

use notify::event::{ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};

use super::AgentError;
use super::executor::FlagEvents;

/// Whether `ev` may mean a new flag at `flag_name`, or a change of the directory itself (which
/// the executor checks before taking anything from it).
pub fn wakes(ev: &Event, dir: &Path, flag_name: Option<&std::ffi::OsStr>) -> bool {
    if matches!(ev.kind, EventKind::Access(_)) {
        return false;
    }
    let flag = !matches!(
        ev.kind,
        EventKind::Remove(_)
            // The flag renamed away: the agent's own claim, nothing new to take. (A rename
            // reported whole names both paths: an arrival is also reported as `To`.)
            | EventKind::Modify(ModifyKind::Name(RenameMode::From | RenameMode::Both))
    ) && ev.paths.iter().any(|p| p.file_name() == flag_name);
    flag || ev.paths.iter().any(|p| p == dir)
}

/// Watches `flag`'s directory for as long as the watcher is kept.
pub fn watch(flag: &Path, events: FlagEvents) -> Result<RecommendedWatcher, AgentError> {
    let flag_name = flag.file_name().map(|n| n.to_os_string());
    let dir = flag
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let watched = dir.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<Event>| {
        if let Ok(ev) = ev
            && wakes(&ev, &watched, flag_name.as_deref())
        {
            events.changed();
        }
    })
    .map_err(|source| AgentError::Watch {
        path: dir.clone(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|source| AgentError::Watch { path: dir, source })?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, CreateKind, RemoveKind};

    fn ev(kind: EventKind, path: &str) -> Event {
        Event::new(kind).add_path(PathBuf::from(path))
    }

    #[test]
    fn arrivals_wake_and_the_agents_own_claims_do_not() {
        let dir = Path::new("/run/app");
        let name = Some(std::ffi::OsStr::new("restart.flag"));
        let wakes = |e: &Event| wakes(e, dir, name);
        assert!(wakes(&ev(
            EventKind::Create(CreateKind::File),
            "/run/app/restart.flag"
        )));
        assert!(wakes(&ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "/run/app/restart.flag"
        )));
        assert!(!wakes(&ev(
            EventKind::Modify(ModifyKind::Name(RenameMode::From)),
            "/run/app/restart.flag"
        )));
        assert!(!wakes(&ev(
            EventKind::Remove(RemoveKind::File),
            "/run/app/restart.flag"
        )));
        assert!(!wakes(&ev(
            EventKind::Access(AccessKind::Any),
            "/run/app/restart.flag"
        )));
        assert!(!wakes(&ev(
            EventKind::Create(CreateKind::File),
            "/run/app/other"
        )));
        // The directory itself: checked by the executor.
        assert!(wakes(&ev(
            EventKind::Remove(RemoveKind::Folder),
            "/run/app"
        )));
    }
}
