//! Faults and hostile input against the real components: `warden run` as a process speaking
//! sd_notify to a socket of the test's, a real gunicorn master whose own log counts the SIGHUPs
//! it handled, and the file system as a user breaks it (a full disk, swapped directories,
//! links, FIFOs, sparse giants, strangers' files, recycled PIDs).
//!
//! Every test here asserts what an operator could observe: the history in the state file,
//! the agent's sd_notify messages, gunicorn's log, processes alive or not.

mod common;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// `warden run` as a process; its stderr is appended to `<fixture>/agent.log`.
struct Agent {
    child: Child,
    notify: UnixDatagram,
    log: PathBuf,
}

impl Agent {
    fn spawn(f: &Fixture, env: &[(&str, &str)]) -> Agent {
        let sock = f.dir.join("faults-notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let log = f.dir.join("agent.log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NOTIFY_SOCKET", &sock)
            .envs(env.iter().copied())
            .args(["run", "--env-file"])
            .arg(&f.env_file)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Agent { child, notify, log }
    }

    fn start(f: &Fixture, env: &[(&str, &str)]) -> Agent {
        let mut a = Agent::spawn(f, env);
        a.await_msg("READY=1");
        a
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The next sd_notify datagram containing `what` and satisfying `pred` (others skipped).
    fn await_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut buf = [0u8; 4096];
        // Watchdog pings keep the socket busy: a deadline for the message itself.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let n = recv(&self.notify, &mut buf)
                .and_then(|n| {
                    if std::time::Instant::now() > deadline {
                        Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
                    } else {
                        Ok(n)
                    }
                })
                .unwrap_or_else(|e| {
                    panic!(
                        "no {what} from the agent ({e}); its log:\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    )
                });
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(what) && pred(&m) {
                return m;
            }
        }
    }

    fn await_msg(&mut self, what: &str) -> String {
        self.await_where(what, |_| true)
    }

    /// Waits until the history's newest entry is a new one (another id than `before`), and
    /// returns it. Each recorded change is followed by a STATUS= line.
    fn await_entry(&mut self, f: &Fixture, before: &Option<String>) -> Value {
        loop {
            self.await_msg("STATUS=");
            let e = last_entry(f);
            if e.as_ref().and_then(|e| e["id"].as_str().map(String::from)) != *before {
                return e.unwrap();
            }
        }
    }

    /// Writes the flag as the MES admin API does (temp file, rename) and returns the entry the
    /// agent recorded for it.
    fn request(&mut self, f: &Fixture, body: &str) -> Value {
        let before = last_id(f);
        write_flag(f, body);
        self.await_entry(f, &before)
    }

    fn kill(&mut self) {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Gives `p` to `nobody`, the stranger of these tests.
fn give_to_nobody(p: &Path) {
    let u = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    std::os::unix::fs::chown(p, Some(u.uid.as_raw()), Some(u.gid.as_raw())).unwrap();
}

fn flag_path(f: &Fixture) -> PathBuf {
    PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"])
}

fn state_path(f: &Fixture) -> PathBuf {
    PathBuf::from(&f.env["WATCHDOG_STATE_FILE"])
}

fn write_flag(f: &Fixture, body: &str) {
    let flag = flag_path(f);
    let tmp = flag.with_extension("flag.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, &flag).unwrap();
}

fn history(f: &Fixture) -> Vec<Value> {
    let Ok(bytes) = std::fs::read(state_path(f)) else {
        return Vec::new();
    };
    let doc: Value = serde_json::from_slice(&bytes).unwrap();
    doc["history"].as_array().cloned().unwrap_or_default()
}

fn last_entry(f: &Fixture) -> Option<Value> {
    history(f).last().cloned()
}

fn last_id(f: &Fixture) -> Option<String> {
    last_entry(f).and_then(|e| e["id"].as_str().map(String::from))
}

/// A manual request the cooldown does not hold back (an acknowledged override with a reason).
fn override_flag(user: &str) -> String {
    format!(
        r#"{{"user": "{user}", "manual_override": true, "override_acknowledged": true, "override_reason": "faults test"}}"#
    )
}

/// The fixture's gunicorn (real master, two workers) logging to `<fixture>/gunicorn.log` at
/// level info, where the master writes "Handling signal: hup" for every SIGHUP it handles.
fn start_logged_gunicorn(f: &Fixture) -> (Gunicorn, PathBuf) {
    let log = f.dir.join("gunicorn.log");
    let _ = std::fs::remove_file(&log);
    let g = start_gunicorn_with(
        f,
        &[
            "--log-level",
            "info",
            "--error-logfile",
            log.to_str().unwrap(),
        ],
    );
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    assert_eq!(await_workers(master, 2).len(), 2, "gunicorn's workers");
    (g, log)
}

/// The SIGHUPs the master handled, from its own log.
fn hups(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("Handling signal: hup")
        .count()
}

/// Makes the master handle every signal sent to it so far, then returns: SIGUSR1 (it reopens
/// its logs, nothing more) goes through the same queue as the SIGHUPs, which the master takes
/// in order, so once "Handling signal: usr1" is in its log every earlier SIGHUP is too. A
/// verified reload does not prove as much: with SIGHUPs queued (agents killed one after the
/// other), the workers are replaced by the first of them.
fn drain_signals(master: u32, log: &Path) {
    let (_w, rx) = watch_dir(log.parent().unwrap());
    let marks = |t: &str| t.matches("Handling signal: usr1").count();
    let before = marks(&std::fs::read_to_string(log).unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while marks(&std::fs::read_to_string(log).unwrap()) == before {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // An event in the log's directory, or the deadline.
        let _ = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the master did not log SIGUSR1"));
    }
}

fn is_alive_as(pid: u32, start_ticks: u64) -> bool {
    warden::platform::process::stat(pid).is_some_and(|s| s.start_ticks == start_ticks && !s.dead)
}

/// xorshift64, reproducible from a printed seed.
struct Rng(u64);

impl Rng {
    fn from_env(var: &str) -> (Rng, u64) {
        let seed = seed_from_env(var);
        (Rng(seed | 1), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Crash consistency, with the master's own count of SIGHUPs
// ---------------------------------------------------------------------------------------------

/// The history's entries of the requests `user` made.
fn entries_of(f: &Fixture, user: &str) -> Vec<Value> {
    history(f)
        .into_iter()
        .filter(|e| e["requested_by"] == user)
        .collect()
}

/// Whether a flag waits at the flag's path or as an agent's claim (`.<flag>.claimed.<pid>`).
fn flag_pending(f: &Fixture) -> bool {
    let flag = flag_path(f);
    let claimed = format!(".{}.claimed.", flag.file_name().unwrap().to_string_lossy());
    flag.exists()
        || std::fs::read_dir(flag.parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&claimed))
}

/// SIGKILL at random moments across restart cycles (`WARDEN_CRASH_CYCLES`, default 40; the seed
/// is printed, `WARDEN_CRASH_SEED` replays it). Each cycle is one request, settled before the
/// next is written: an agent is killed 0–600 ms after its flag, a fresh agent finishes what it
/// left, and the master's log gives that request's SIGHUPs. Counted per request, because a
/// total cannot tell one request reloaded twice (an `unknown` entry, then the next agent
/// executing it again) from two requests: each request has exactly one entry, `executed` with
/// one SIGHUP, `unknown` with at most one (killed around the signal), any other with none.
/// Across the history: the state file always parses, no id twice, no `intended` left, nothing
/// set aside, no temporary file left.
#[test]
fn sigkill_at_random_moments_loses_no_sighup_from_the_history() {
    let mut f = Fixture::new("faults-crash");
    let cycles: usize = std::env::var("WARDEN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    f.set("WORKER_GUARDED_MODE_ENABLED", "false");
    // 1 s is the least the configuration takes; the requests are acknowledged overrides, which
    // the cooldown does not hold back.
    f.set("WORKER_RESTART_COOLDOWN", "1");
    f.set(
        "WATCHDOG_RESTART_HISTORY_MAX",
        &(cycles * 3 + 50).to_string(),
    );
    let (_g, glog) = start_logged_gunicorn(&f);
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    let (mut rng, seed) = Rng::from_env("WARDEN_CRASH_SEED");
    eprintln!("faults crash test: {cycles} cycles, WARDEN_CRASH_SEED={seed}");
    let state = state_path(&f);
    let started = std::time::Instant::now();
    // Cycles whose request ended executed, unknown (and of those, signalled), other.
    let (mut executed_n, mut unknown_n, mut signalled_n, mut other_n) = (0, 0, 0, 0);
    for cycle in 0..cycles {
        let user = format!("crash-{cycle}");
        let hups_before = hups(&glog);
        let mut a = Agent::start(&f, &[]);
        write_flag(&f, &override_flag(&user));
        // The fault: a kill anywhere from before the claim to after the record (a reload of
        // the example app takes a few hundred ms).
        std::thread::sleep(Duration::from_micros(rng.next() % 600_000));
        a.kill();
        if state.exists() {
            let bytes = std::fs::read(&state).unwrap();
            warden::ledger::state::parse(&bytes)
                .unwrap_or_else(|e| panic!("cycle {cycle}: unreadable state file: {e}"));
        }
        // A fresh agent settles what the kill left: an intent becomes `unknown` at its start, a
        // flag not yet decided is taken. Settled: the request has a final entry and no flag of
        // it waits (each recorded change is followed by a STATUS= line).
        let mut a = Agent::start(&f, &[]);
        while flag_pending(&f)
            || entries_of(&f, &user)
                .iter()
                .all(|e| e["decision"] == "intended")
        {
            a.await_msg("STATUS=");
        }
        nix::sys::signal::kill(a.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
        a.await_msg("STOPPING=1");
        assert!(a.child.wait().unwrap().success());
        drain_signals(master, &glog);
        let sighups = hups(&glog) - hups_before;

        let entries = entries_of(&f, &user);
        let decisions: Vec<_> = entries
            .iter()
            .map(|e| e["decision"].as_str().unwrap_or("?"))
            .collect();
        assert_eq!(
            entries.len(),
            1,
            "cycle {cycle} (seed {seed}): request {user} has {} entries, {decisions:?}, and the \
             master handled {sighups} SIGHUP(s) for it: one request, more than one outcome\n{:#}",
            entries.len(),
            Value::Array(entries.clone())
        );
        let allowed = match decisions[0] {
            "executed" => {
                executed_n += 1;
                1..=1
            }
            "unknown" => {
                unknown_n += 1;
                signalled_n += sighups;
                0..=1
            }
            _ => {
                other_n += 1;
                0..=0
            }
        };
        assert!(
            allowed.contains(&sighups),
            "cycle {cycle} (seed {seed}): request {user} is {} but the master handled {sighups} \
             SIGHUP(s) for it\n{:#}",
            decisions[0],
            entries[0]
        );
    }
    // A clean start settles what the last kill cut short, and a final request runs. A write
    // cut short leaves a temporary file (the kills above left some, perhaps): one more, as
    // SIGKILL leaves them, for certain.
    let cut = f.state_dir.join(".restart_state.json.4194304.1.tmp");
    std::fs::write(&cut, b"{\n  \"schema_version\": 1,\n  \"last_res").unwrap();
    let hups_before = hups(&glog);
    let mut a = Agent::start(&f, &[]);
    let last = a.request(&f, &override_flag("final"));
    assert_eq!(last["requested_by"], "final", "{last:#}");
    assert_eq!(last["decision"], "executed", "{last:#}");
    assert_eq!(last["verified"], true, "{last:#}");
    nix::sys::signal::kill(a.pid(), nix::sys::signal::Signal::SIGTERM).unwrap();
    a.await_msg("STOPPING=1");
    assert!(a.child.wait().unwrap().success());
    drain_signals(master, &glog);
    assert_eq!(hups(&glog) - hups_before, 1, "the final request's SIGHUPs");

    let doc = warden::ledger::state::parse(&std::fs::read(&state).unwrap()).unwrap();
    let mut ids: Vec<_> = doc.history.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), doc.history.len(), "every entry has an id");
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "an entry was recorded twice");
    // A later agent took no request of an earlier cycle again.
    let mut users: Vec<_> = doc
        .history
        .iter()
        .filter_map(|e| e.requested_by.clone())
        .collect();
    users.sort();
    let n = users.len();
    users.dedup();
    assert_eq!(users.len(), n, "a request has more than one entry");
    let count = |d: &str| {
        doc.history
            .iter()
            .filter(|e| e.decision.as_ref().map(ToString::to_string).as_deref() == Some(d))
            .count()
    };
    let (executed, unknown, intended) = (count("executed"), count("unknown"), count("intended"));
    assert_eq!(intended, 0, "an intended entry survived a restart");
    let aside = std::fs::read_dir(&f.state_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".corrupt-"))
        .count();
    assert_eq!(aside, 0, "a state file was set aside as corrupt");
    // Writes cut short leave temporary files; the next agent's start removes them.
    let temps: Vec<_> = std::fs::read_dir(&f.state_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(temps.is_empty(), "left behind: {temps:?}");
    eprintln!(
        "faults crash test: {cycles} cycles, seed {seed}, {} SIGHUPs handled by the master, \
         {} entries: {executed} executed, {unknown} unknown, {} other; per request: \
         {executed_n} executed, {unknown_n} unknown ({signalled_n} of them signalled), \
         {other_n} other; {:.1} s",
        hups(&glog),
        doc.history.len(),
        doc.history.len() - executed - unknown,
        started.elapsed().as_secs_f64()
    );
    // Every unknown entry is a restart an agent was killed in: the history says why.
    for e in doc
        .history
        .iter()
        .filter(|e| e.decision.as_ref().map(ToString::to_string).as_deref() == Some("unknown"))
    {
        assert_eq!(
            e.decision_reason
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("agent_stopped_before_recording_the_outcome")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1b. A broken deploy
// ---------------------------------------------------------------------------------------------

/// What the app answers on `/`.
fn get(f: &Fixture) -> (u16, Value) {
    http_get(&f.env["GUNICORN_BIND"])
}

/// A syntax error deployed into the app's module, then a restart flag: the app's Gunicorn,
/// asked first, cannot load it, so nothing is signalled: the master and its workers are the
/// same and keep answering 200, and the history records the failure with Gunicorn's own
/// error. Fixed, the next flag reloads.
#[test]
fn a_broken_deploy_is_never_signalled_and_the_old_workers_keep_serving() {
    let f = Fixture::new("faults-broken-deploy");
    let app_dir = f.dir.join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    let module = app_dir.join("app.py");
    let good = std::fs::read_to_string(repo().join("examples/gunicorn-app/app.py")).unwrap();
    std::fs::write(&module, &good).unwrap();
    let log = f.dir.join("gunicorn.log");
    let _g = start_gunicorn_in(
        &f,
        &app_dir,
        &[
            "--log-level",
            "info",
            "--error-logfile",
            log.to_str().unwrap(),
        ],
    );
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    // Booted, not just forked: a worker still importing would read the broken code below.
    let workers = await_booted(master, 2);
    assert_eq!(workers.len(), 2);
    let mut a = Agent::start(&f, &[]);

    std::fs::write(&module, format!("{good}\ndef broken(:\n")).unwrap();
    let e = a.request(&f, "");
    assert_eq!(e["decision"], "failed", "{e:#}");
    assert_eq!(e["decision_reason"], "preflight_failed", "{e:#}");
    let failure = e["failure"].as_str().unwrap_or_default();
    assert!(failure.contains("SyntaxError"), "{e:#}");
    assert_eq!(e["master_pid"], master);
    drain_signals(master, &log);
    assert_eq!(hups(&log), 0, "the master was signalled");
    assert_eq!(warden::platform::process::children(master), workers);
    let (code, body) = get(&f);
    assert_eq!(code, 200);
    assert!(workers.contains(&(body["worker_pid"].as_u64().unwrap() as u32)));

    // Fixed: the next request reloads (the failure did not start a cooldown).
    std::fs::write(&module, &good).unwrap();
    let e = a.request(&f, "");
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], true, "{e:#}");
    assert!(e["timings"]["preflight_ms"].as_f64().is_some(), "{e:#}");
    let (code, body) = get(&f);
    assert_eq!(code, 200);
    assert!(!workers.contains(&(body["worker_pid"].as_u64().unwrap() as u32)));
}

/// The example app in the fixture, made to sleep at import for as many seconds as its file
/// `boot-seconds` says (none: no sleep), as an app with a slow import boots.
fn slow_app(f: &Fixture) -> PathBuf {
    let app_dir = f.dir.join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    let good = std::fs::read_to_string(repo().join("examples/gunicorn-app/app.py")).unwrap();
    let slow = format!(
        "import os as _os, time as _time\n\
         _f = _os.path.join(_os.path.dirname(__file__), 'boot-seconds')\n\
         if _os.path.exists(_f):\n    _time.sleep(float(open(_f).read()))\n{good}"
    );
    std::fs::write(app_dir.join("app.py"), slow).unwrap();
    app_dir
}

/// A slow-booting app: the reload is recorded only once every new worker has booted (loaded
/// the app and entered its loop), each boot timed; a worker that never boots fails the
/// verification with that cause.
#[test]
fn a_reload_is_verified_once_the_new_workers_have_booted() {
    let mut f = Fixture::new("faults-slow-boot");
    // The preflight would load the slow import first; the boot is what is looked at here.
    f.set("WARDEN_PREFLIGHT", "false");
    f.set("WARDEN_RELOAD_TIMEOUT", "4");
    let app_dir = slow_app(&f);
    // Workers stuck in their import take SIGTERM's grace; the test's end need not wait it.
    let _g = start_gunicorn_in(&f, &app_dir, &["--graceful-timeout", "1"]);
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    let old = await_workers(master, 2);
    let mut a = Agent::start(&f, &[]);

    std::fs::write(app_dir.join("boot-seconds"), "1.5").unwrap();
    let e = a.request(&f, "");
    // Looked at as soon as the entry is there: the new workers have booted already.
    let now = warden::platform::process::children(master);
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], true, "{e:#}");
    assert_eq!(now.len(), 2);
    for w in &now {
        assert!(!old.contains(w));
        assert_eq!(
            warden::platform::process::worker_booted(*w),
            Some(true),
            "{w}"
        );
    }
    assert_eq!(
        e["timings"]["worker_boot_ms"].as_array().unwrap().len(),
        2,
        "{e:#}"
    );

    // Workers that never boot: executed (signalled), not verified, and the history says why.
    std::fs::write(app_dir.join("boot-seconds"), "3600").unwrap();
    let e = a.request(&f, &override_flag("never boots"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], false, "{e:#}");
    let problems = e["verification_problems"].to_string();
    assert!(problems.contains("did not boot"), "{e:#}");
}

/// `warden reload` with no agent carries the reload out itself, as the agent would: the
/// preflight, the signal, the boots verified, the entry recorded with source `reload`; and a
/// second within the cooldown is refused as the agent would refuse it.
#[test]
fn reload_without_an_agent_reloads_under_the_agents_rules() {
    let f = Fixture::new("faults-reload-alone");
    let _g = start_gunicorn(&f);
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    let old = await_booted(master, 2);
    let reload = || {
        Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus")
            .args(["reload", "--wait", "--env-file"])
            .arg(&f.env_file)
            .output()
            .unwrap()
    };
    let o = reload();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let now = warden::platform::process::children(master);
    assert_eq!(now.len(), 2);
    for w in &now {
        assert!(!old.contains(w));
        assert_eq!(warden::platform::process::worker_booted(*w), Some(true));
    }
    let e = last_entry(&f).unwrap();
    assert_eq!(
        (&e["source"], &e["decision"], &e["verified"]),
        (&"reload".into(), &"executed".into(), &true.into()),
        "{e:#}"
    );
    assert!(e["timings"]["preflight_ms"].as_f64().is_some(), "{e:#}");
    let o = reload();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(last_entry(&f).unwrap()["decision"], "blocked");
    assert_eq!(warden::platform::process::children(master), now);
}

// ---------------------------------------------------------------------------------------------
// 2. A full disk under the state file
// ---------------------------------------------------------------------------------------------

/// A tmpfs mounted for one test, unmounted when it ends, passed or not.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
            .arg("faults-tmpfs")
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount: {}", text(&o));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the file system of `dir` with a file of zeros until ENOSPC; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let p = dir.join("faults-fill");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .unwrap();
    let buf = vec![0u8; 64 * 1024];
    loop {
        match f.write(&buf) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    // Full: not one more byte fits in a new file.
    let probe = dir.join("faults-probe");
    let r = std::fs::write(&probe, b"x");
    let _ = std::fs::remove_file(&probe);
    assert_eq!(
        r.unwrap_err().raw_os_error(),
        Some(nix::libc::ENOSPC),
        "the disk is full"
    );
    p
}

/// Temporary files a state write left behind (`.restart_state.json.<pid>.<n>.tmp`).
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

fn pending_intent(f: &Fixture) -> Option<warden::ledger::state::Entry> {
    let bytes = std::fs::read(warden::ledger::intent::path_for(&state_path(f))).ok()?;
    warden::ledger::intent::decode(&bytes)
}

const DEGRADED: &str = "restart history not saved";

fn status_file(f: &Fixture) -> Value {
    serde_json::from_slice(&std::fs::read(f.runtime_dir.join("status.json")).unwrap()).unwrap()
}

/// The agent publishes the status document after its STATUS= line: waits for a publication
/// whose `agent.state_write_error` satisfies `pred`.
fn await_status_file(
    rx: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
    f: &Fixture,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let p = f.runtime_dir.join("status.json");
    loop {
        let st = status_file(f);
        if pred(&st["agent"]["state_write_error"]) {
            return st;
        }
        await_replaced(rx, &p);
    }
}

/// The state directory on a tiny tmpfs, filled up. The agent keeps running and feeding its
/// watchdog, says it is degraded (STATUS= and the status document's `agent.state_write_error`),
/// never leaves a torn or temporary state file (the last good one stays and parses), and once
/// space is freed its retry saves what it could not. A restart needs its intent recorded
/// before the signal: the preallocated intent record takes it on a full disk; an agent killed
/// then starts again on the full disk and settles the intent as `unknown`; with no intent
/// record and no space, nothing is signalled.
#[test]
fn a_full_disk_degrades_the_agent_and_loses_nothing() {
    let mut f = Fixture::new("faults-disk");
    f.set(
        "WARDEN_STATUS_FILE",
        &f.runtime_dir.join("status.json").display().to_string(),
    );
    let _fs = Tmpfs::mount(&f.state_dir, "512k");
    let (_w, published) = watch_dir(&f.runtime_dir);
    let (_g, glog) = start_logged_gunicorn(&f);
    // WATCHDOG_USEC as systemd would set it for WatchdogSec=1: pings every half second.
    let wd = [("WATCHDOG_USEC", "1000000")];
    let mut a = Agent::start(&f, &wd);
    let e = a.request(&f, &override_flag("before"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    let good = std::fs::read(state_path(&f)).unwrap();
    assert!(pending_intent(&f).is_none());

    // Full. A restart still runs (its intent fits in the preallocated record), and the agent
    // says the history is not saved.
    let filler = fill(&f.state_dir);
    write_flag(&f, &override_flag("disk-full"));
    let status = a.await_where("STATUS=", |m| m.contains(DEGRADED));
    assert!(status.contains("No space left on device"), "{status}");
    assert_eq!(hups(&glog), 2, "the restart was carried out");
    assert!(a.alive(), "the agent keeps running");
    a.await_msg("WATCHDOG=1");
    a.await_msg("WATCHDOG=1");
    assert!(a.alive());
    assert_eq!(
        std::fs::read(state_path(&f)).unwrap(),
        good,
        "the last good state file stays as it was"
    );
    warden::ledger::state::parse(&good).unwrap();
    assert!(
        temp_files(&f.state_dir).is_empty(),
        "{:?}",
        temp_files(&f.state_dir)
    );
    let intent = pending_intent(&f).expect("the intent record holds the restart");
    assert_eq!(intent.requested_by.as_deref(), Some("disk-full"));
    let st = await_status_file(&published, &f, |e| !e.is_null());
    assert!(
        st["agent"]["state_write_error"]
            .as_str()
            .is_some_and(|s| s.contains("No space left")),
        "{:#}",
        st["agent"]
    );
    assert_eq!(
        st["last_restart"]["requested_by"], "disk-full",
        "the document shows the restart"
    );

    // Space again: the agent's retry saves the restart, and says so.
    std::fs::remove_file(&filler).unwrap();
    a.await_where("STATUS=", |m| !m.contains(DEGRADED));
    let e = last_entry(&f).unwrap();
    assert_eq!(
        (e["requested_by"].as_str(), e["decision"].as_str()),
        (Some("disk-full"), Some("executed")),
        "{e:#}"
    );
    assert!(pending_intent(&f).is_none(), "the intent is settled");
    await_status_file(&published, &f, Value::is_null);
    let e = a.request(&f, &override_flag("after"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(hups(&glog), 3);

    // Full again, and the agent killed after a restart it could not save: a new agent starts
    // on the full disk, takes the intent as `unknown` and saves it once it can.
    let filler = fill(&f.state_dir);
    write_flag(&f, &override_flag("killed-while-full"));
    a.await_where("STATUS=", |m| m.contains(DEGRADED));
    assert_eq!(hups(&glog), 4);
    a.kill();
    let mut a = Agent::spawn(&f, &wd);
    let ready = a.await_msg("READY=1");
    assert!(ready.contains(DEGRADED), "{ready}");
    a.await_msg("WATCHDOG=1");
    std::fs::remove_file(&filler).unwrap();
    a.await_where("STATUS=", |m| !m.contains(DEGRADED));
    let e = last_entry(&f).unwrap();
    assert_eq!(
        (e["requested_by"].as_str(), e["decision"].as_str()),
        (Some("killed-while-full"), Some("unknown")),
        "{e:#}"
    );
    assert!(pending_intent(&f).is_none());

    // No intent record at all (it is created, preallocated, at the agent's start) and no
    // space: the restart cannot be recorded before the signal, so nothing is signalled.
    a.kill();
    std::fs::remove_file(warden::ledger::intent::path_for(&state_path(&f))).unwrap();
    let filler = fill(&f.state_dir);
    let mut a = Agent::start(&f, &wd);
    write_flag(&f, &override_flag("unrecordable"));
    a.await_where("STATUS=", |m| m.contains(DEGRADED));
    std::fs::remove_file(&filler).unwrap();
    a.await_where("STATUS=", |m| !m.contains(DEGRADED));
    let e = last_entry(&f).unwrap();
    assert_eq!(
        (e["requested_by"].as_str(), e["decision"].as_str()),
        (Some("unrecordable"), Some("failed")),
        "{e:#}"
    );
    assert!(
        e["failure"]
            .as_str()
            .is_some_and(|s| s.starts_with("intent_not_recorded")),
        "{e:#}"
    );
    // A good request afterwards runs, and proves by its SIGHUP's place in the log that the
    // refused one sent none.
    let e = a.request(&f, &override_flag("last"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(hups(&glog), 5, "the unrecordable restart signalled nothing");
    let doc = warden::ledger::state::parse(&std::fs::read(state_path(&f)).unwrap()).unwrap();
    let who: Vec<_> = doc
        .history
        .iter()
        .map(|e| {
            (
                e.requested_by.clone().unwrap_or_default(),
                e.decision
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("before", "executed"),
        ("disk-full", "executed"),
        ("after", "executed"),
        ("killed-while-full", "unknown"),
        ("unrecordable", "failed"),
        ("last", "executed"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(who, want, "the whole history, in order, once each");
}

// ---------------------------------------------------------------------------------------------
// 3. Wrong targets
// ---------------------------------------------------------------------------------------------

/// The cgroup2 hierarchy's mount point.
fn cgroup2_root() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines()
        .find_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mount = pre.split_whitespace().nth(4)?;
            (post.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(mount))
        })
        .expect("a cgroup2 hierarchy is mounted")
}

/// Cgroups made for a test (`<root>/<name>/<unit>`), emptied into the root and removed when
/// it ends.
struct Cgroups {
    root: PathBuf,
    base: PathBuf,
}

impl Cgroups {
    fn new(name: &str) -> Cgroups {
        let root = cgroup2_root();
        let base = root.join(name);
        let c = Cgroups { root, base };
        c.cleanup();
        std::fs::create_dir_all(&c.base).unwrap();
        c
    }

    /// Moves `pid` into `<base>/<unit>`: its /proc/PID/cgroup then names the unit as systemd
    /// would (`0::/…/<unit>`).
    fn enter(&self, unit: &str, pid: u32) {
        let d = self.base.join(unit);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cgroup.procs"), pid.to_string()).unwrap();
        assert_eq!(
            warden::platform::process::unit_of(pid).as_deref(),
            Some(unit),
            "{pid} is in {unit}"
        );
    }

    fn cleanup(&self) {
        let Ok(rd) = std::fs::read_dir(&self.base) else {
            return;
        };
        for d in rd.flatten().filter(|d| d.path().is_dir()) {
            let procs = std::fs::read_to_string(d.path().join("cgroup.procs")).unwrap_or_default();
            for p in procs.split_whitespace() {
                let _ = std::fs::write(self.root.join("cgroup.procs"), p);
            }
            let _ = std::fs::remove_dir(d.path());
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// PID files naming the wrong process: a program that SIGHUP would kill, a gunicorn worker,
/// a gunicorn master in another unit's cgroup. Nothing is signalled (the sleeper lives, the
/// worker keeps its PID, the master's log shows no SIGHUP), each request is recorded as
/// failed with its reason, and the right master is then reloaded.
#[test]
fn wrong_targets_are_refused_and_nothing_is_signalled() {
    let f = Fixture::new("faults-wrong-target");
    let cg = Cgroups::new("faults-wrong-target");
    let (_g, glog) = start_logged_gunicorn(&f);
    let master = warden::platform::process::read_pid_file(&f.pid_file()).unwrap();
    let master_start = warden::platform::process::stat(master).unwrap().start_ticks;
    let pid_file = f.pid_file();

    // (a) A program SIGHUP would end (sleep has no handler for it).
    let mut sleeper = Sleeper::spawn();
    std::fs::write(&pid_file, format!("{}\n", sleeper.0.id())).unwrap();
    let mut a = Agent::start(&f, &[]);
    let e = a.request(&f, &override_flag("sleeper"));
    assert_eq!(e["decision"], "failed", "{e:#}");
    let why = e["failure"].as_str().unwrap();
    assert!(
        why.starts_with(&format!(
            "pid_not_gunicorn_master: {} is sleep",
            sleeper.0.id()
        )),
        "{why}"
    );

    // (b) One of the real master's workers.
    let workers = warden::platform::process::children(master);
    let worker = workers[0];
    let worker_start = warden::platform::process::stat(worker).unwrap().start_ticks;
    std::fs::write(&pid_file, format!("{worker}\n")).unwrap();
    let e = a.request(&f, &override_flag("worker"));
    assert_eq!(e["decision"], "failed", "{e:#}");
    assert_eq!(
        e["failure"],
        format!("pid_not_gunicorn_master: {worker} is a worker of {master}")
    );
    a.kill();

    // (c) Under systemd (INVOCATION_ID), the real master in another unit's cgroup.
    std::fs::write(&pid_file, format!("{master}\n")).unwrap();
    cg.enter("faults-other-app.service", master);
    let systemd = [("INVOCATION_ID", "0123456789abcdef0123456789abcdef")];
    let mut a = Agent::start(&f, &systemd);
    let e = a.request(&f, &override_flag("other-unit"));
    assert_eq!(e["decision"], "failed", "{e:#}");
    assert_eq!(
        e["failure"],
        format!(
            "pid_outside_app_unit: {master} belongs to faults-other-app.service, not {APP_UNIT}"
        )
    );

    // Nothing was signalled: the sleeper lives, the worker is the same process, the master
    // is untouched.
    assert!(
        sleeper.0.try_wait().unwrap().is_none(),
        "the sleeper got a signal"
    );
    assert!(
        is_alive_as(worker, worker_start),
        "the worker was signalled"
    );
    assert_eq!(warden::platform::process::children(master), workers);
    // The control: the same master in the app unit's cgroup is reloaded, and its log has one
    // SIGHUP, this one (a stray one earlier would be logged before it).
    cg.enter(APP_UNIT, master);
    let e = a.request(&f, &override_flag("right"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(e["verified"], true, "{e:#}");
    assert_eq!(e["master_pid"], master);
    assert!(is_alive_as(master, master_start));
    assert_eq!(hups(&glog), 1, "only the right master got a SIGHUP, once");
    assert!(
        !is_alive_as(worker, worker_start),
        "the reload replaced the worker"
    );
}

/// `sleep 1000`, which SIGHUP ends (it has no handler), killed when the test ends.
struct Sleeper(Child);

impl Sleeper {
    fn spawn() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("1000")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // Once reaped, std signals nothing: a recycled PID is never hit.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child started by clone3, killed and reaped when the test ends unless reaped before.
struct Cloned(Option<nix::unistd::Pid>);

impl Cloned {
    fn pid(&self) -> nix::unistd::Pid {
        self.0.unwrap()
    }

    /// Waits for its end; the guard then owns nothing.
    fn wait(&mut self) -> nix::sys::wait::WaitStatus {
        nix::sys::wait::waitpid(self.0.take().unwrap(), None).unwrap()
    }
}

impl Drop for Cloned {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = nix::sys::signal::kill(p, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(p, None);
        }
    }
}

/// `struct clone_args` of clone3(2), up to `set_tid_size` (CLONE_ARGS_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// Starts `/bin/sleep 1000` with exactly the PID `pid` (clone3 with `set_tid`: root in the
/// PID namespace's owning user namespace may choose the PID). `None` if it is taken.
fn spawn_sleep_with_pid(pid: u32) -> Option<Cloned> {
    use std::ffi::CString;
    let path = CString::new("/bin/sleep").unwrap();
    let args = [
        CString::new("sleep").unwrap(),
        CString::new("1000").unwrap(),
    ];
    let argv: Vec<*const nix::libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: [*const nix::libc::c_char; 1] = [std::ptr::null()];
    // Not the test's output: a child must not hold the runner's pipes open.
    let null = std::fs::File::open("/dev/null").unwrap();
    let null_fd = std::os::fd::AsRawFd::as_raw_fd(&null);
    let tid: [nix::libc::pid_t; 1] = [pid as nix::libc::pid_t];
    let ca = CloneArgs {
        exit_signal: nix::libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM is a fork; the child only calls execve (async-signal
    // safe, on memory prepared before the call) or _exit.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_clone3,
            &ca as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        unsafe {
            nix::libc::dup2(null_fd, 1);
            nix::libc::dup2(null_fd, 2);
            nix::libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            nix::libc::_exit(127);
        }
    }
    if r < 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(e.raw_os_error(), Some(nix::libc::EEXIST), "clone3: {e}");
        return None;
    }
    let child = Cloned(Some(nix::unistd::Pid::from_raw(r as i32)));
    assert_eq!(r as u32, pid);
    Some(child)
}

/// (d) A PID recycled between inspection and signal, for real: the PID of a process warden
/// inspected is given to a new process (clone3 with `set_tid`). The identity check refuses it
/// (`PidFd::open` with the start time warden read), and a pidfd opened on the old process
/// signals nothing once it has gone, whatever holds its PID now. The newcomer, a `sleep` that
/// SIGHUP would end, lives. End to end through the agent this window cannot be hit on
/// purpose (the agent reads the PID file and opens the pidfd within microseconds), so the
/// test drives the seam the agent uses: `warden::platform::process::PidFd`.
#[test]
fn a_recycled_pid_is_never_signalled() {
    use nix::sys::signal::Signal;
    use warden::platform::process::{PidFd, stat};
    let (old_pid, old_start, old_fd, mut newcomer) = loop {
        let mut old = Sleeper::spawn();
        let pid = old.0.id();
        let start = stat(pid).unwrap().start_ticks;
        // What the agent holds after its checks: a pidfd, opened on the right identity.
        let fd = PidFd::open(pid, start).unwrap();
        old.0.kill().unwrap();
        old.0.wait().unwrap();
        let Some(new) = spawn_sleep_with_pid(pid) else {
            continue;
        };
        if stat(pid).unwrap().start_ticks == start {
            // Recycled within one clock tick: the start times cannot tell the two apart. Try
            // again (a real master lives far longer than a tick).
            continue;
        }
        break (pid, start, fd, new);
    };
    let new = newcomer.pid();
    let new_pid = new.as_raw() as u32;
    assert_eq!(old_pid, new_pid, "the PID was recycled");

    // The identity check: the PID with the start time read before is refused.
    let err = PidFd::open(old_pid, old_start).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ESRCH), "{err}");
    // The pidfd of the old process signals nothing, though its PID is alive.
    let err = old_fd.send_signal(Signal::SIGHUP).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ESRCH), "{err}");
    // The newcomer got nothing: a SIGHUP would have ended it.
    assert!(
        nix::sys::wait::waitpid(new, Some(nix::sys::wait::WaitPidFlag::WNOHANG)).unwrap()
            == nix::sys::wait::WaitStatus::StillAlive,
        "the process now holding the PID was signalled"
    );
    // The control: the newcomer's own identity opens, and its pidfd reaches it.
    let new_start = stat(new_pid).unwrap().start_ticks;
    let fd = PidFd::open(new_pid, new_start).unwrap();
    fd.send_signal(Signal::SIGHUP).unwrap();
    let st = newcomer.wait();
    assert_eq!(
        st,
        nix::sys::wait::WaitStatus::Signaled(new, Signal::SIGHUP, false)
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Hostile files
// ---------------------------------------------------------------------------------------------

fn read_bytes(pid: nix::unistd::Pid) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Hostile flags, each refused with its named reason while the agent keeps serving: a
/// symlink to a secret (the secret appears nowhere the agent writes), a FIFO with no writer (no
/// hang: the next good flag runs), a 1 GiB sparse file (refused unread: the agent reads a few
/// KiB, not a GiB), a file of an untrusted owner. Only the good flags signal the master.
#[test]
fn hostile_flags_are_refused_by_name_and_the_agent_serves_on() {
    let mut f = Fixture::new("faults-hostile");
    f.set(
        "WARDEN_STATUS_FILE",
        &f.dir.join("status.json").display().to_string(),
    );
    let (_g, glog) = start_logged_gunicorn(&f);
    let mut a = Agent::start(&f, &[]);
    let flag = flag_path(&f);
    let mut good = 0;
    let mut good_flag = |a: &mut Agent, f: &Fixture, who: &str| {
        let e = a.request(f, &override_flag(who));
        assert_eq!(e["decision"], "executed", "{e:#}");
        good += 1;
        good
    };

    // A symlink to a secret: refused without reading it.
    let secret_text = format!("faults-secret-{}", std::process::id());
    let secret = f.dir.join("secret.json");
    // Valid JSON of a request, so that following the link would give a restart, not a parse
    // error.
    std::fs::write(
        &secret,
        format!(r#"{{"user": "{secret_text}", "override_reason": "{secret_text}"}}"#),
    )
    .unwrap();
    chmod(&secret, 0o600);
    let before = last_id(&f);
    std::os::unix::fs::symlink(&secret, &flag).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(
        (e["decision"].as_str(), e["decision_reason"].as_str()),
        (Some("rejected"), Some("flag_symlink")),
        "{e:#}"
    );
    assert!(
        secret.exists() && !flag.exists(),
        "the link is consumed, the target kept"
    );
    assert_eq!(good_flag(&mut a, &f, "after-symlink"), 1);

    // A FIFO nobody writes: no hang.
    let before = last_id(&f);
    nix::unistd::mkfifo(&flag, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(e["decision_reason"], "flag_not_regular", "{e:#}");
    assert_eq!(good_flag(&mut a, &f, "after-fifo"), 2);

    // 1 GiB, sparse: refused by its size, unread.
    let read_before = read_bytes(a.pid());
    let tmp = flag.with_extension("flag.tmp");
    std::fs::File::create(&tmp)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let before = last_id(&f);
    std::fs::rename(&tmp, &flag).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(e["decision_reason"], "flag_too_large", "{e:#}");
    assert!(
        e["rejection"]
            .as_str()
            .is_some_and(|r| r.contains("1073741824")),
        "{e:#}"
    );
    let read = read_bytes(a.pid()) - read_before;
    assert!(
        read < 16 << 20,
        "the agent read {read} bytes for a refused flag"
    );
    assert_eq!(good_flag(&mut a, &f, "after-sparse"), 3);

    // Owned by nobody (a well-formed request, or it would be refused for its content).
    std::fs::write(&tmp, override_flag("stranger")).unwrap();
    give_to_nobody(&tmp);
    let before = last_id(&f);
    std::fs::rename(&tmp, &flag).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(
        (e["decision"].as_str(), e["decision_reason"].as_str()),
        (Some("rejected"), Some("flag_untrusted_owner")),
        "{e:#}"
    );
    assert!(
        e["requested_by"].is_null(),
        "nothing of the stranger's request is taken"
    );
    assert_eq!(good_flag(&mut a, &f, "after-stranger"), 4);

    assert_eq!(hups(&glog), 4, "only the good flags signalled the master");
    assert!(a.alive());
    // The secret is nowhere the agent writes.
    for p in [state_path(&f), f.dir.join("status.json"), a.log.clone()] {
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(
            !t.contains(&secret_text),
            "the secret leaked into {}",
            p.display()
        );
    }
    assert!(
        std::fs::read_to_string(&secret)
            .unwrap()
            .contains(&secret_text)
    );
}

/// The flag's directory attacked after the agent started: replaced by a symlink to a directory
/// an attacker controls, then made world-writable. The agent never takes a flag through the
/// link (the attacker's directory is untouched, nothing is signalled) and records each
/// refusal by name (`flag_dir_replaced`, `flag_dir_unsafe`); once the directory is restored it
/// serves again. At start, a world-writable runtime directory stops the agent (P05), and one
/// with the sticky bit is accepted: a stranger's flag there is refused by its owner.
#[test]
fn a_swapped_or_world_writable_flag_directory_is_refused() {
    let f = Fixture::new("faults-dir");
    let (_g, glog) = start_logged_gunicorn(&f);
    let rt = f.runtime_dir.clone();
    let flag = flag_path(&f);
    let name = flag.file_name().unwrap().to_owned();

    // World-writable at start: the agent does not start.
    chmod(&rt, 0o777);
    let mut a = Agent::spawn(&f, &[]);
    let st = a.child.wait().unwrap();
    assert_eq!(st.code(), Some(1), "{st:?}");
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("P05") && log.contains("world-writable without the sticky bit"),
        "{log}"
    );

    // Sticky and world-writable (as /tmp): accepted; strangers' flags fail on their owner.
    chmod(&rt, 0o1777);
    let mut a = Agent::start(&f, &[]);
    let tmp = flag.with_extension("flag.tmp");
    std::fs::write(&tmp, override_flag("stranger")).unwrap();
    give_to_nobody(&tmp);
    let before = last_id(&f);
    std::fs::rename(&tmp, &flag).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(e["decision_reason"], "flag_untrusted_owner", "{e:#}");
    let e = a.request(&f, &override_flag("sticky"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    chmod(&rt, 0o755);

    // The directory swapped for a link to the attacker's, which holds a well-formed flag
    // owned by root (what a trusted writer following the path would leave there).
    let attacker = f.dir.join("attacker");
    std::fs::create_dir(&attacker).unwrap();
    give_to_nobody(&attacker);
    std::fs::write(attacker.join(&name), override_flag("attacker")).unwrap();
    let pinned = f.dir.join("run.pinned");
    let before = last_id(&f);
    std::fs::rename(&rt, &pinned).unwrap();
    std::os::unix::fs::symlink(&attacker, &rt).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(
        (e["decision"].as_str(), e["decision_reason"].as_str()),
        (Some("rejected"), Some("flag_dir_replaced")),
        "{e:#}"
    );
    // A request arriving in the directory the agent watches (now at another path) is not
    // taken through the link either.
    let before = last_id(&f);
    std::fs::write(pinned.join("flag.tmp"), override_flag("pinned")).unwrap();
    std::fs::rename(pinned.join("flag.tmp"), pinned.join(&name)).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(e["decision_reason"], "flag_dir_replaced", "{e:#}");
    assert!(
        std::fs::read_to_string(attacker.join(&name))
            .unwrap()
            .contains("attacker"),
        "the attacker's flag was touched"
    );
    assert_eq!(
        std::fs::read_dir(&attacker).unwrap().count(),
        1,
        "nothing was moved into the attacker's directory"
    );
    assert_eq!(hups(&glog), 1, "nothing was signalled");

    // Restored: the flag left in the real directory meanwhile is taken, by the usual rules.
    let before = last_id(&f);
    std::fs::remove_file(&rt).unwrap();
    std::fs::rename(&pinned, &rt).unwrap();
    let e = a.await_entry(&f, &before);
    assert_eq!(
        (e["requested_by"].as_str(), e["decision"].as_str()),
        (Some("pinned"), Some("executed")),
        "{e:#}"
    );
    assert_eq!(hups(&glog), 2);

    // World-writable without the sticky bit after the start: flags are refused, unread.
    chmod(&rt, 0o777);
    let e = a.request(&f, &override_flag("in-unsafe-dir"));
    assert_eq!(
        (e["decision"].as_str(), e["decision_reason"].as_str()),
        (Some("rejected"), Some("flag_dir_unsafe")),
        "{e:#}"
    );
    assert!(e["requested_by"].is_null(), "{e:#}");
    assert!(!flag.exists(), "the refused flag is consumed");
    chmod(&rt, 0o755);
    let e = a.request(&f, &override_flag("restored"));
    assert_eq!(e["decision"], "executed", "{e:#}");
    assert_eq!(
        hups(&glog),
        3,
        "only the flags in a safe directory signalled"
    );
    assert!(a.alive());
}
