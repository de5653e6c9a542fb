//! The app's Gunicorn master as the agent acts on it, behind a trait: found from the PID file,
//! signalled, its workers watched, its port and health checked. [`ProcMaster`] does it through
//! `/proc` and pidfds; tests put a fake in its place.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::ledger::model::{Failure, FailureKind};
use crate::platform::fs::ReadError;
use crate::platform::http::HealthUrl;
use crate::platform::process::{self, PidFd, Role};

/// A process identity: a PID alone can be recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MasterId {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What the agent needs of the app's master.
pub trait Master: Send {
    /// The master the PID file names, checked to be a live Gunicorn master (and, under
    /// systemd, the app unit's), and pinned: later calls act on that very process.
    fn find(&mut self) -> Result<MasterId, Failure>;
    /// Has the app's Gunicorn, as the master runs, load its configuration and application
    /// (`--check-config`) within `timeout`: how long it took, or why it cannot reload.
    fn preflight(
        &mut self,
        master: MasterId,
        timeout: Duration,
    ) -> Result<super::preflight::Passed, Failure>;
    /// Pins the master's workers as they are now (so that their exit is seen whatever later
    /// has their PIDs) and returns their PIDs.
    fn pin_workers(&mut self, master: MasterId) -> Vec<u32>;
    /// Sends SIGHUP to the pinned master: a graceful reload.
    fn reload(&mut self, master: MasterId) -> std::io::Result<()>;
    /// Waits, until `deadline`, for every pinned worker to exit; what was wrong if one did not.
    fn await_old_workers(&mut self, deadline: Instant) -> Vec<String>;
    /// Then waits, until `deadline`, for as many new workers as the pinned ones (at least one)
    /// to run and boot (load the app and serve); each new worker's boot, or what was wrong
    /// when it did not happen.
    fn await_new_workers(
        &mut self,
        master: MasterId,
        deadline: Instant,
    ) -> Result<Vec<Boot>, Vec<String>>;
    /// Whether the master is still the process that was found.
    fn alive(&self, master: MasterId) -> bool;
    /// Whether the master holds a listening socket on `port`.
    fn holds_port(&self, master: MasterId, port: u16) -> bool;
    /// A check that the app answers `url` with a 2xx within `timeout`, to run on a thread of
    /// its own (while the new workers boot).
    fn health_check(&self, url: &HealthUrl, timeout: Duration) -> HealthCheck;
}

/// Whether the app answered its health URL with a 2xx, or why not.
pub type HealthCheck = Box<dyn FnOnce() -> Result<(), String> + Send>;

/// A new worker, and how long it took from its fork to its boot (loaded the app and entered
/// its loop); `None` when its worker class shows no boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Boot {
    pub pid: u32,
    pub took: Option<Duration>,
}

/// Whether the workers were replaced: every old one gone, and at least as many (and at least
/// one) running.
pub fn replaced(old: &[u32], now: &[u32]) -> bool {
    now.len() >= old.len().max(1) && now.iter().all(|p| !old.contains(p))
}

/// How long a missing PID file is waited for: gunicorn deletes and re-creates it on HUP.
const PID_FILE_GRACE: Duration = Duration::from_secs(2);

/// The master through `/proc` and pidfds.
pub struct ProcMaster {
    pid_file: PathBuf,
    /// Under systemd, the unit the master must belong to.
    app_unit: Option<String>,
    master: Option<PidFd>,
    workers: Vec<PidFd>,
}

impl ProcMaster {
    /// `app_unit` is enforced only under systemd (a master started by hand has no unit).
    pub fn new(pid_file: PathBuf, app_unit: Option<String>) -> ProcMaster {
        let under_systemd = std::env::var_os("INVOCATION_ID").is_some();
        ProcMaster {
            pid_file,
            app_unit: app_unit.filter(|_| under_systemd),
            master: None,
            workers: Vec::new(),
        }
    }

    fn read_pid(&self) -> Result<u32, Failure> {
        let deadline = Instant::now() + PID_FILE_GRACE;
        loop {
            match process::read_pid_file(&self.pid_file) {
                Ok(p) => return Ok(p),
                Err(ReadError::Missing(_)) if Instant::now() < deadline => {
                    // Gone for the instant between gunicorn's unlink and re-create; a short
                    // bounded retry on this blocking thread is cheaper than a watch for it.
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(ReadError::Missing(_)) => {
                    return Err(Failure::bare(FailureKind::PidFileMissing));
                }
                Err(e) => return Err(Failure::new(FailureKind::PidFileUnreadable, e.to_string())),
            }
        }
    }
}

impl Master for ProcMaster {
    fn find(&mut self) -> Result<MasterId, Failure> {
        self.master = None;
        self.workers.clear();
        let pid = self.read_pid()?;
        let not_running = |detail: String| Failure::new(FailureKind::PidNotRunning, detail);
        match process::classify(pid) {
            Role::Master => {}
            Role::NotRunning => return Err(not_running(pid.to_string())),
            Role::NotGunicorn { comm } => {
                return Err(Failure::new(
                    FailureKind::PidNotGunicornMaster,
                    format!("{pid} is {comm}"),
                ));
            }
            Role::Worker { master } => {
                return Err(Failure::new(
                    FailureKind::PidNotGunicornMaster,
                    format!("{pid} is a worker of {master}"),
                ));
            }
        }
        // A gunicorn of another unit (or one started by hand) is not ours to reload.
        if let Some(app) = &self.app_unit {
            match process::unit_of(pid) {
                Some(u) if &u == app => {}
                other => {
                    return Err(Failure::new(
                        FailureKind::PidOutsideAppUnit,
                        format!(
                            "{pid} belongs to {}, not {app}",
                            other.as_deref().unwrap_or("no unit")
                        ),
                    ));
                }
            }
        }
        let st = process::stat(pid).ok_or_else(|| not_running(pid.to_string()))?;
        let fd =
            PidFd::open(pid, st.start_ticks).map_err(|e| not_running(format!("{pid}: {e}")))?;
        self.master = Some(fd);
        Ok(MasterId {
            pid,
            start_ticks: st.start_ticks,
        })
    }

    fn preflight(
        &mut self,
        master: MasterId,
        timeout: Duration,
    ) -> Result<super::preflight::Passed, Failure> {
        super::preflight::check(master.pid, timeout)
    }

    fn pin_workers(&mut self, master: MasterId) -> Vec<u32> {
        self.workers = process::children(master.pid)
            .into_iter()
            .filter_map(|w| process::stat(w).and_then(|st| PidFd::open(w, st.start_ticks).ok()))
            .collect();
        self.workers.iter().map(|w| w.pid).collect()
    }

    fn reload(&mut self, _master: MasterId) -> std::io::Result<()> {
        match &self.master {
            Some(fd) => fd.send_signal(nix::sys::signal::Signal::SIGHUP),
            None => Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH)),
        }
    }

    fn await_old_workers(&mut self, deadline: Instant) -> Vec<String> {
        let left = || deadline.saturating_duration_since(Instant::now());
        self.workers
            .iter()
            .filter(|w| !w.wait_exit(left()).unwrap_or(false))
            .map(|w| format!("worker {} still running", w.pid))
            .collect()
    }

    fn await_new_workers(
        &mut self,
        master: MasterId,
        deadline: Instant,
    ) -> Result<Vec<Boot>, Vec<String>> {
        let left = || deadline.saturating_duration_since(Instant::now());
        let mut problems = Vec::new();
        let old: Vec<u32> = self.workers.iter().map(|w| w.pid).collect();
        // A fork or a boot gives no event to wait on: /proc is polled, bounded by the reload
        // deadline. A worker's boot is timed from its fork (its start in /proc).
        let mut booted: Vec<Boot> = Vec::new();
        loop {
            let now = process::children(master.pid);
            let complete = replaced(&old, &now);
            if complete {
                for &pid in &now {
                    if booted.iter().any(|b| b.pid == pid) {
                        continue;
                    }
                    match process::worker_booted(pid) {
                        Some(false) => {}
                        Some(true) => booted.push(Boot {
                            pid,
                            took: process::started_at(pid)
                                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok()),
                        }),
                        None => booted.push(Boot { pid, took: None }),
                    }
                }
                booted.retain(|b| now.contains(&b.pid));
                if booted.len() == now.len() {
                    break;
                }
            }
            if left().is_zero() {
                if complete {
                    let waiting: Vec<u32> = now
                        .iter()
                        .copied()
                        .filter(|p| !booted.iter().any(|b| b.pid == *p))
                        .collect();
                    problems.push(format!("workers {waiting:?} did not boot (load the app)"));
                } else {
                    problems.push(format!("workers not replaced: {old:?} -> {now:?}"));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if problems.is_empty() {
            Ok(booted)
        } else {
            Err(problems)
        }
    }

    fn alive(&self, master: MasterId) -> bool {
        process::stat(master.pid).is_some_and(|st| st.start_ticks == master.start_ticks && !st.dead)
    }

    fn holds_port(&self, master: MasterId, port: u16) -> bool {
        crate::platform::sockets::listeners()
            .iter()
            .any(|l| l.port == port && process::holds_socket(master.pid, l.inode))
    }

    fn health_check(&self, url: &HealthUrl, timeout: Duration) -> HealthCheck {
        let url = url.clone();
        Box::new(move || {
            let p = crate::platform::http::probe(&url, timeout);
            if p.healthy() {
                Ok(())
            } else {
                Err(format!("{p:?}"))
            }
        })
    }
}

/// A master without processes, for the agent's tests: what it finds and does is set by the
/// test through a shared [`FakeApp`].
#[cfg(test)]
pub mod fake {
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// The app as a test arranges it.
    #[derive(Debug)]
    pub struct FakeApp {
        /// What `find` answers.
        pub found: Result<MasterId, Failure>,
        pub workers: Vec<u32>,
        /// SIGHUPs received.
        pub reloads: usize,
        /// Whether a reload replaces the workers.
        pub replaces: bool,
        pub alive: bool,
        pub holds_port: bool,
        pub healthy: bool,
        /// While set, a reload waits for the test to clear it (a reload in progress).
        pub hold_reloads: bool,
        /// What the preflight answers, and how many ran.
        pub preflight: Result<(), String>,
        pub preflights: usize,
        /// The settings a passing preflight prints.
        pub settings: crate::agent::preflight::GunicornSettings,
        next_pid: u32,
    }

    impl Default for FakeApp {
        fn default() -> Self {
            FakeApp {
                found: Ok(MasterId {
                    pid: 100,
                    start_ticks: 1,
                }),
                workers: vec![101, 102],
                reloads: 0,
                replaces: true,
                alive: true,
                holds_port: true,
                healthy: true,
                hold_reloads: false,
                preflight: Ok(()),
                preflights: 0,
                settings: Default::default(),
                next_pid: 200,
            }
        }
    }

    /// A handle on the app; clones share it.
    #[derive(Clone, Default)]
    pub struct FakeMaster(pub Arc<(Mutex<FakeApp>, Condvar)>);

    impl FakeMaster {
        pub fn app(&self) -> std::sync::MutexGuard<'_, FakeApp> {
            self.0.0.lock().unwrap()
        }

        /// Lets held reloads go on.
        pub fn release(&self) {
            self.app().hold_reloads = false;
            self.0.1.notify_all();
        }

        /// Waits until a reload is in progress (held).
        pub fn await_reload(&self) {
            let (lock, cv) = &*self.0;
            let mut app = lock.lock().unwrap();
            while app.reloads == 0 {
                app = cv.wait(app).unwrap();
            }
        }
    }

    impl Master for FakeMaster {
        fn find(&mut self) -> Result<MasterId, Failure> {
            self.app().found.clone()
        }

        fn preflight(
            &mut self,
            _: MasterId,
            _: Duration,
        ) -> Result<crate::agent::preflight::Passed, Failure> {
            let mut app = self.app();
            app.preflights += 1;
            let settings = app.settings.clone();
            app.preflight
                .clone()
                .map(|()| crate::agent::preflight::Passed {
                    took: Duration::from_millis(1),
                    settings,
                })
                .map_err(|why| Failure::new(FailureKind::PreflightFailed, why))
        }

        fn pin_workers(&mut self, _: MasterId) -> Vec<u32> {
            self.app().workers.clone()
        }

        fn reload(&mut self, _: MasterId) -> std::io::Result<()> {
            let (lock, cv) = &*self.0;
            let mut app = lock.lock().unwrap();
            app.reloads += 1;
            cv.notify_all();
            while app.hold_reloads {
                app = cv.wait(app).unwrap();
            }
            if app.replaces {
                let n = app.workers.len();
                let first = app.next_pid;
                app.workers = (first..first + n as u32).collect();
                app.next_pid += n as u32;
            }
            Ok(())
        }

        fn await_old_workers(&mut self, _: Instant) -> Vec<String> {
            Vec::new()
        }

        fn await_new_workers(&mut self, _: MasterId, _: Instant) -> Result<Vec<Boot>, Vec<String>> {
            let app = self.app();
            if app.replaces {
                Ok(app
                    .workers
                    .iter()
                    .map(|&pid| Boot {
                        pid,
                        took: Some(Duration::from_millis(40)),
                    })
                    .collect())
            } else {
                Err(vec![format!("workers not replaced: {:?}", app.workers)])
            }
        }

        fn alive(&self, _: MasterId) -> bool {
            self.app().alive
        }

        fn holds_port(&self, _: MasterId, _: u16) -> bool {
            self.app().holds_port
        }

        fn health_check(&self, _: &HealthUrl, _: Duration) -> HealthCheck {
            let healthy = self.app().healthy;
            Box::new(move || {
                if healthy {
                    Ok(())
                } else {
                    Err("answered 503".into())
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_replaced_when_every_old_one_is_gone_and_the_count_is_back() {
        assert!(replaced(&[1, 2], &[3, 4]));
        assert!(replaced(&[1, 2], &[3, 4, 5]));
        assert!(!replaced(&[1, 2], &[2, 3]));
        assert!(!replaced(&[1, 2], &[3]));
        assert!(
            !replaced(&[], &[]),
            "a master with no worker serves nothing"
        );
        assert!(replaced(&[], &[7]));
    }

    #[test]
    fn a_pid_file_naming_another_program_is_not_a_master() {
        let d = tempfile::tempdir().unwrap();
        let pid_file = d.path().join("g.pid");
        let mut m = ProcMaster::new(pid_file.clone(), None);
        assert_eq!(m.find().unwrap_err().kind, FailureKind::PidFileMissing);
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(
            m.find().unwrap_err().kind,
            FailureKind::PidNotGunicornMaster
        );
        std::fs::write(&pid_file, "garbage").unwrap();
        assert_eq!(m.find().unwrap_err().kind, FailureKind::PidFileUnreadable);
    }
}
