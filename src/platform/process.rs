//! The Gunicorn master: finding it, making sure a PID is the master (not a worker, not another
//! program, not a recycled PID), signalling it through a pidfd, and watching its workers.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::libc;

/// What a PID turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    Worker { master: u32 },
    NotGunicorn { comm: String },
    NotRunning,
}

/// The parts of `/proc/<pid>/stat` warden needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Exited and not yet reaped by its parent (`Z`), or being torn down (`X`).
    pub dead: bool,
    pub ppid: u32,
    /// Start time in clock ticks since boot: with the PID, the identity of a process.
    pub start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` (the command name may hold spaces and parentheses: fields are
/// counted from the last `)`).
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) … starttime is field 22 of the line, 19 after the name.
    Some(Stat {
        dead: matches!(*f.first()?, "Z" | "X"),
        ppid: f.get(1)?.parse().ok()?,
        start_ticks: f.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// When `pid` started, from its start ticks and the boot time (`/proc/stat`'s `btime`).
pub fn started_at(pid: u32) -> Option<std::time::SystemTime> {
    let ticks = stat(pid)?.start_ticks;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|h| *h > 0)? as u64;
    let since_boot = Duration::from_secs(ticks / hz) + Duration::from_secs(ticks % hz) / hz as u32;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(btime) + since_boot)
}

/// Whether a command line runs gunicorn: `…/gunicorn …`, `python …/bin/gunicorn …`,
/// `python -m gunicorn …`, or a `gunicorn: master […]` process title.
pub fn is_gunicorn_cmdline(argv: &[&str]) -> bool {
    let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_string();
    let Some(first) = argv.first() else {
        return false;
    };
    let python = base(first).starts_with("python");
    first.starts_with("gunicorn:")
        || base(first) == "gunicorn"
        || (python && argv.get(1).is_some_and(|a| base(a) == "gunicorn"))
        || (python
            && argv
                .windows(2)
                .take(3)
                .any(|w| w[0] == "-m" && w[1] == "gunicorn"))
}

fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

fn runs_gunicorn(pid: u32) -> Option<bool> {
    let argv = cmdline(pid)?;
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    Some(is_gunicorn_cmdline(&argv))
}

/// Classifies `pid`: a master is a gunicorn whose parent is not a gunicorn.
pub fn classify(pid: u32) -> Role {
    let Some(st) = stat(pid) else {
        return Role::NotRunning;
    };
    match runs_gunicorn(pid) {
        None => Role::NotRunning,
        Some(false) => Role::NotGunicorn {
            comm: std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        },
        Some(true) if runs_gunicorn(st.ppid) == Some(true) => Role::Worker { master: st.ppid },
        Some(true) => Role::Master,
    }
}

/// The live children of `pid` (its workers, for a master). A worker that has exited stays its
/// master's child until reaped; it is not counted.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out.retain(|&c| stat(c).is_some_and(|s| !s.dead));
    out
}

/// Whether Gunicorn worker `pid` has booted: loaded the app and entered its loop.
///
/// Each worker has a heartbeat file (`wgunicorn-*`, unlinked), made by the master just before
/// the fork, which the worker first touches in its loop, setting its mtime to a monotonic
/// clock's reading (seconds since boot), far below its ctime (the wall clock). Until then
/// mtime and ctime are both about its creation's (the unlink may move ctime by a clock tick).
/// A forked worker also holds the heartbeats the master held at its fork: the old workers'
/// (touched long ago) and those of the new workers forked before it. So a worker counts as
/// booted once every heartbeat it holds has been touched: its own, and its elder siblings'.
/// `None` when the worker shows no such file (a worker class without it, or a `/proc` this
/// user may not read).
pub fn worker_booted(pid: u32) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut seen = false;
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let t = target.as_os_str().to_string_lossy();
        if t.contains("/wgunicorn-") && t.ends_with(" (deleted)") {
            // The link's target is gone; the fd's own path still reaches the inode.
            let m = std::fs::metadata(fd.path()).ok()?;
            seen = true;
            if !heartbeat_touched(m.mtime(), m.ctime()) {
                return Some(false);
            }
        }
    }
    seen.then_some(true)
}

/// A heartbeat touched by its worker: its mtime a monotonic reading, well below the wall-clock
/// ctime of the touch. Untouched, the two are within a clock tick of each other.
fn heartbeat_touched(mtime: i64, ctime: i64) -> bool {
    ctime.saturating_sub(mtime) > 1
}

/// Reads a PID file as gunicorn writes it (`"%d\n"`), without following a link.
pub fn read_pid_file(path: &Path) -> Result<u32, crate::platform::fs::ReadError> {
    let u = crate::platform::fs::read_untrusted(path, 64)?;
    String::from_utf8_lossy(&u.bytes)
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| crate::platform::fs::ReadError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no PID in the file"),
        })
}

/// A process handle that cannot be confused with a later process of the same PID.
#[derive(Debug)]
pub struct PidFd {
    fd: OwnedFd,
    pub pid: u32,
}

impl PidFd {
    /// Opens `pid` and checks it is still the process whose start time is `start_ticks`: a PID
    /// recycled between inspection and opening is refused.
    pub fn open(pid: u32, start_ticks: u64) -> std::io::Result<PidFd> {
        // SAFETY: pidfd_open(2) takes a PID and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        match stat(pid) {
            Some(s) if s.start_ticks == start_ticks => Ok(PidFd { fd, pid }),
            _ => Err(std::io::Error::from_raw_os_error(libc::ESRCH)),
        }
    }

    /// Sends `sig` to exactly this process (ESRCH once it has exited, whatever has the PID now).
    pub fn send_signal(&self, sig: nix::sys::signal::Signal) -> std::io::Result<()> {
        // SAFETY: pidfd_send_signal(2) with no siginfo and no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Waits until the process exits (its pidfd becomes readable); `false` on timeout.
    pub fn wait_exit(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        loop {
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            return Ok(r > 0);
        }
    }
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

/// The systemd unit a process belongs to, from its cgroup (`0::/system.slice/app.service` →
/// `app.service`): what systemd's `GetUnitByPID` answers, read without a bus round trip.
pub fn unit_of(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    unit_of_cgroup(&text)
}

/// The unit named by a `/proc/<pid>/cgroup` text (cgroup v2 line): the innermost path component
/// that is a unit (a service's sub-cgroups such as `…/app.service/worker` still belong to it).
pub fn unit_of_cgroup(text: &str) -> Option<String> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    path.split('/')
        .rev()
        .find(|c| c.ends_with(".service") || c.ends_with(".scope"))
        .map(str::to_string)
}

/// Whether process `pid` has the socket `inode` open.
pub fn holds_socket(pid: u32, inode: u64) -> bool {
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| {
            rd.flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_heartbeat_counts_as_touched_only_with_a_monotonic_mtime() {
        // Created and unlinked: equal, or a tick apart.
        assert!(!heartbeat_touched(1_796_049_290, 1_796_049_290));
        assert!(!heartbeat_touched(1_796_049_290, 1_796_049_291));
        // Touched: mtime is the uptime.
        assert!(heartbeat_touched(86_400, 1_796_049_300));
    }

    use super::*;

    #[test]
    fn stat_lines() {
        let line = "4242 (gunicorn: master (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 10000 100 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                dead: false,
                ppid: 1,
                start_ticks: 98765
            })
        );
        let zombie = line.replace(") S 1", ") Z 1");
        assert!(
            parse_stat(&zombie).unwrap().dead,
            "an exited worker not yet reaped"
        );
        assert_eq!(parse_stat("garbage"), None);
        assert!(stat(std::process::id()).is_some());
        // This process started a moment ago.
        let age = std::time::SystemTime::now()
            .duration_since(started_at(std::process::id()).unwrap())
            .unwrap_or_default();
        assert!(age < Duration::from_secs(24 * 3600), "{age:?}");
    }

    #[test]
    fn cgroups_name_units() {
        assert_eq!(
            unit_of_cgroup("0::/system.slice/mes-dashboard.service\n").as_deref(),
            Some("mes-dashboard.service")
        );
        assert_eq!(
            unit_of_cgroup("0::/system.slice/app.service/sub\n").as_deref(),
            Some("app.service")
        );
        assert_eq!(unit_of_cgroup("0::/\n"), None);
        assert_eq!(unit_of_cgroup("1:name=systemd:/x.service\n"), None);
    }

    #[test]
    fn command_lines() {
        assert!(is_gunicorn_cmdline(&[
            "/p/bin/python",
            "/p/bin/gunicorn",
            "--pid",
            "x",
            "app:app"
        ]));
        assert!(is_gunicorn_cmdline(&["/p/bin/gunicorn", "app:app"]));
        assert!(is_gunicorn_cmdline(&[
            "python3", "-m", "gunicorn", "app:app"
        ]));
        assert!(is_gunicorn_cmdline(&["gunicorn: master [app:app]"]));
        assert!(!is_gunicorn_cmdline(&[
            "/usr/bin/python3",
            "-c",
            "import gunicorn"
        ]));
        assert!(!is_gunicorn_cmdline(&["sleep", "gunicorn"]));
        assert!(!is_gunicorn_cmdline(&[]));
        assert!(!is_gunicorn_cmdline(&["/usr/bin/sleep", "100"]));
    }

    #[test]
    fn pidfd_refuses_a_recycled_identity_and_sees_exit() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let st = stat(pid).unwrap();
        assert!(
            PidFd::open(pid, st.start_ticks + 1).is_err(),
            "another start time is another process"
        );
        let fd = PidFd::open(pid, st.start_ticks).unwrap();
        assert_eq!(
            classify(pid),
            Role::NotGunicorn {
                comm: "sleep".into()
            }
        );
        assert!(!fd.wait_exit(Duration::from_millis(10)).unwrap());
        fd.send_signal(nix::sys::signal::Signal::SIGTERM).unwrap();
        assert!(fd.wait_exit(Duration::from_secs(10)).unwrap());
        child.wait().unwrap();
        // Reaped: the pidfd still names the dead process, never a newcomer with its PID.
        assert_eq!(
            fd.send_signal(nix::sys::signal::Signal::SIGTERM)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ESRCH)
        );
        assert_eq!(classify(pid), Role::NotRunning);
    }
}
