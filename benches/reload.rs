//! The restart path, side by side with its peers, against one real Gunicorn (master + 2
//! workers) run as a unit of the project's systemd sandbox. Needs root.
//!
//!     cargo bench --bench reload
//!
//! What is timed (every timestamp is CLOCK_REALTIME; the master stamps its own SIGHUP and its
//! workers' boots and exits through `benches/reload_hooks.py`):
//! - flag written → SIGHUP entered the master, for warden (`warden run` as a `Type=notify` unit
//!   with `WatchdogSec=1`), a systemd `.path` unit starting a oneshot `kill -HUP`, monit at a 1 s
//!   cycle (`if exist then exec`), and the original Python watchdog at its default 5 s poll;
//! - the full cycle, flag → every worker replaced, for warden and, interleaved with it, a plain
//!   `kill -HUP` of the same master sent by this program (warden's added time);
//! - `systemctl reload` with `ExecReload=warden reload --wait` against `ExecReload=/bin/kill
//!   -HUP $MAINPID` (`WARDEN_BENCH_RELOAD_RUNS`, default 40, each): when it returns, when the
//!   reload completed (new workers booted), and the return's lateness against that completion;
//! - idle: RSS and CPU time of warden, monit and the original over 60 s, side by side;
//! - automatic recovery: the deciding probe's answer → SIGHUP (`WARDEN_BENCH_PROBE_RUNS`,
//!   default 30), and idle CPU and RSS with probes at the default interval against probes off;
//! - a storm: 10,000 flag writes as fast as possible against warden with its default policy.
//!
//! The runtime directory (flag, PID file) is a tmpfs, as `/run` is on a real system.
//!
//! Environment: `WARDEN_BENCH_RUNS` (default 100) requests per peer; the original's 5 s poll
//! makes its runs slow, so `WARDEN_BENCH_ORIGINAL_RUNS` (default 50) bounds them;
//! `WARDEN_BENCH_PEER` names the original's `src/mes_dashboard/core` directory, with its
//! `scripts/worker_watchdog.py` three levels up (skipped when unset); monit is skipped when not
//! installed (`apt-get install monit`). `WARDEN_BENCH_BASELINE` names another warden binary
//! (an earlier commit's release build, on a path the sandbox sees, e.g. under /tmp): its flag →
//! SIGHUP is timed in blocks alternating with this build's, and its idle figures after them. `WARDEN_BENCH_ONLY=warden,reload,path,monit,original,idle,probe,storm`
//! picks phases. Reports min / median / p90 / p99 / max. Nothing is asserted about time.

#[path = "../tests/common/mod.rs"]
mod common;
mod util;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use util::*;

const WORKERS: usize = 2;
const HOOKS_UNIT: &str = "bench-hup.service";
const PATH_UNIT: &str = "bench-hup.path";
const MONIT_UNIT: &str = "bench-monit.service";
const ORIGINAL_UNIT: &str = "bench-original.service";
const BASELINE_UNIT: &str = "bench-baseline.service";
/// Requests per block when this build and the baseline alternate.
const BLOCK: usize = 20;
/// The policy for the latency phases: every request spaced past a 1 s cooldown is allowed, for
/// warden and the original alike (the original's minimum cooldown is 1 s).
const COOLDOWN: Duration = Duration::from_secs(1);

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A small xorshift for jitter; reproducible from a seed printed in the report.
struct Rng(u64);
impl Rng {
    fn below(&mut self, max: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        max.mul_f64((self.0 % 1_000_000) as f64 / 1e6)
    }
}

/// The master's and workers' events, read incrementally.
struct Events {
    file: std::io::BufReader<std::fs::File>,
    hups: Vec<i64>,
    live: BTreeSet<i32>,
    up: Vec<(i64, i32)>,
    exit: Vec<(i64, i32)>,
    /// The health app's answers to /health: when, and whether it failed.
    answers: Vec<(i64, bool)>,
    partial: String,
}

impl Events {
    fn open(p: &Path) -> Events {
        Events {
            file: std::io::BufReader::new(std::fs::File::open(p).unwrap()),
            hups: vec![],
            live: BTreeSet::new(),
            up: vec![],
            exit: vec![],
            answers: vec![],
            partial: String::new(),
        }
    }

    fn poll(&mut self) {
        loop {
            let mut line = std::mem::take(&mut self.partial);
            let n = self.file.read_line(&mut line).unwrap();
            if n == 0 || !line.ends_with('\n') {
                // At EOF: keep a half-written line; the next poll reads on from here.
                self.partial = line;
                return;
            }
            let mut it = line.split_whitespace();
            let (Some(kind), Some(ns), Some(pid)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            let (ns, pid): (i64, i32) = (ns.parse().unwrap(), pid.parse().unwrap());
            match kind {
                "hup" => self.hups.push(ns),
                "up" => {
                    self.live.insert(pid);
                    self.up.push((ns, pid));
                }
                "exit" => {
                    self.live.remove(&pid);
                    self.exit.push((ns, pid));
                }
                "answer" => self.answers.push((ns, it.next() != Some("200"))),
                _ => {}
            }
        }
    }

    /// Polls until `done` holds; the bench's own waiting does not enter any measured figure
    /// (every figure is a pair of timestamps taken where the events happen).
    fn until(&mut self, what: &str, mut done: impl FnMut(&Events) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.poll();
            if done(self) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_micros(500));
        }
    }

    /// The first SIGHUP the master entered at or after `t0`.
    fn await_hup(&mut self, t0: i64) -> i64 {
        self.until("the master's SIGHUP", |e| e.hups.iter().any(|&h| h >= t0));
        *self.hups.iter().find(|&&h| h >= t0).unwrap()
    }

    /// When the last of the `WORKERS` new workers (none of `old`) booted.
    fn await_booted(&mut self, old: &BTreeSet<i32>) -> i64 {
        self.until("the new workers' boots", |e| {
            e.live.len() == WORKERS && e.live.is_disjoint(old)
        });
        self.up
            .iter()
            .filter(|(_, p)| self.live.contains(p))
            .map(|x| x.0)
            .max()
            .unwrap()
    }

    /// When every worker of `old` had exited and `WORKERS` new ones had booted.
    fn await_replaced(&mut self, old: &BTreeSet<i32>) -> i64 {
        self.until("the workers' replacement", |e| {
            e.live.len() == WORKERS && e.live.is_disjoint(old)
        });
        let last_exit = self
            .exit
            .iter()
            .filter(|(_, p)| old.contains(p))
            .map(|x| x.0);
        let last_up = self
            .up
            .iter()
            .filter(|(_, p)| self.live.contains(p))
            .map(|x| x.0);
        last_exit.chain(last_up).max().unwrap()
    }
}

struct Bench {
    sb: Sandbox,
    f: Fixture,
    ev: Events,
    flag: PathBuf,
    state: PathBuf,
    /// What the health app's /health answers (`healthy`, `fail`).
    scenario: PathBuf,
    rng: Rng,
    seq: u64,
}

impl Bench {
    fn setup() -> Bench {
        let name = "bench-reload";
        let rt = PathBuf::from(format!("/run/{name}"));
        let mut f = Fixture::with_runtime_dir(name, Some(&rt));
        // The peers signal without checking the app first: warden's preflight (the app's own
        // `gunicorn --check-config`, an interpreter start and the app's import) is off here,
        // so that the signal paths compare; its cost is the app's, measured on its own.
        for (k, v) in [
            ("WORKER_RESTART_COOLDOWN", "1"),
            ("WORKER_GUARDED_MODE_ENABLED", "false"),
            ("WARDEN_PREFLIGHT", "false"),
        ] {
            f.set(k, v);
        }
        let events = f.dir.join("events/gunicorn.events");
        std::fs::create_dir_all(events.parent().unwrap()).unwrap();
        std::fs::write(&events, "").unwrap();
        chown(events.parent().unwrap(), SERVICE_USER);
        chown(&events, SERVICE_USER);
        let hooks = repo().join("benches/reload_hooks.py");
        // The tests' health app: `/` as the example's, `/health` failing on demand.
        let scenario = f.serve_health_app();
        f.edit_unit(APP_UNIT, |t| {
            t.replace(
                "[Service]\n",
                &format!(
                    "[Service]\nRuntimeDirectory={name}\nRuntimeDirectoryPreserve=yes\n\
                     Environment=WARDEN_BENCH_EVENTS={}\n",
                    events.display()
                ),
            )
            .replace(
                "--no-control-socket",
                &format!("--no-control-socket -c {}", hooks.display()),
            )
        });
        let sb = Sandbox::boot(name, &[&fixture_base()]);
        let wd = f.watchdog_unit_text().replace(
            "[Service]\n",
            "[Service]\nWatchdogSec=1\nRestart=on-failure\nRestartSec=100ms\n",
        );
        f.write_unit(WATCHDOG_UNIT, &wd);
        for u in [APP_UNIT, WATCHDOG_UNIT, WORKER_UNIT] {
            sb.install_unit(u, &std::fs::read_to_string(f.units_dir.join(u)).unwrap());
        }
        // A systemd .path unit starting a oneshot kill -HUP: the lightest peer systemd offers.
        let env = f.env_file.display().to_string();
        sb.install_unit(
            PATH_UNIT,
            &format!(
                "[Path]\nPathExists={}\nUnit={HOOKS_UNIT}\n",
                f.env["WATCHDOG_RESTART_FLAG"]
            ),
        );
        sb.install_unit(
            HOOKS_UNIT,
            &format!(
                "[Unit]\nStartLimitIntervalSec=0\n[Service]\nType=oneshot\nUser={SERVICE_USER}\n\
                 EnvironmentFile={env}\nExecStart=/bin/sh -c 'rm -f \"$WATCHDOG_RESTART_FLAG\"; \
                 exec kill -HUP \"$(cat \"$WATCHDOG_PID_FILE\")\"'\n"
            ),
        );
        sb.daemon_reload();
        // /run is a tmpfs on a real system; the sandbox's is a host directory. Mount one for
        // the runtime directory inside, and reach it from here through the sandbox's root.
        let o = sb.run(&["mkdir", "-p", rt.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let o = sb.run(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=755,size=64m",
            "bench-run",
            rt.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let u = std::fs::read_to_string(sb.dir.join("unshare.pid")).unwrap();
        let init =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", u.trim())).unwrap();
        let inside = PathBuf::from(format!("/proc/{}/root", init.trim()));
        let o = sb.systemctl(&["start", APP_UNIT]);
        assert!(o.status.success(), "{}\n{}", text(&o), sb.journal(APP_UNIT));
        let mut ev = Events::open(&events);
        ev.until("the first workers", |e| e.live.len() == WORKERS);
        let seed = now_ns() as u64 | 1;
        println!("jitter seed {seed}");
        Bench {
            flag: inside.join(f.env["WATCHDOG_RESTART_FLAG"].trim_start_matches('/')),
            state: PathBuf::from(&f.env["WATCHDOG_STATE_FILE"]),
            sb,
            f,
            ev,
            scenario,
            rng: Rng(seed),
            seq: 0,
        }
    }

    fn start(&self, unit: &str) {
        let o = self.sb.systemctl(&["start", unit]);
        assert!(
            o.status.success(),
            "{unit}: {}\n{}",
            text(&o),
            self.sb.journal(unit)
        );
    }

    fn stop(&self, unit: &str) {
        let o = self.sb.systemctl(&["stop", unit]);
        assert!(o.status.success(), "{unit}: {}", text(&o));
    }

    /// Writes a request as the MES admin API does (JSON to `<flag>.tmp`, then rename); returns
    /// the time just before the rename made it visible, and the request's user name.
    fn write_flag(&mut self) -> (i64, String) {
        self.seq += 1;
        let user = format!("bench-{}", self.seq);
        let body = format!(
            r#"{{"user": "{user}", "ip": "127.0.0.1", "timestamp": "{}", "source": "manual"}}"#,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        let tmp = self.flag.with_extension("flag.tmp");
        std::fs::write(&tmp, body).unwrap();
        let t0 = now_ns();
        std::fs::rename(&tmp, &self.flag).unwrap();
        (t0, user)
    }

    /// warden records the request, then its outcome after verification; the next request
    /// waits for that, so that no request is coalesced with a reload in progress.
    fn await_warden_entry(&self, user: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(b) = std::fs::read(&self.state)
                && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&b)
            {
                let e = &doc["last_restart"];
                if e["requested_by"] == user && e["completed_at"].is_string() {
                    assert_eq!(e["decision"], "executed", "{e:#}");
                    assert_eq!(e["verified"], true, "{e:#}");
                    return;
                }
            }
            assert!(Instant::now() < deadline, "warden never completed {user}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits out the cooldown since the last reload, plus a random share of `jitter` so that
    /// a poller's phase is sampled evenly.
    fn space(&mut self, jitter: Duration) {
        std::thread::sleep(COOLDOWN + Duration::from_millis(100) + self.rng.below(jitter));
    }

    /// One request through a flag: (flag → SIGHUP, flag → all workers replaced) in ms.
    fn flag_cycle(&mut self, warden: bool) -> (f64, f64) {
        self.ev.poll();
        let old = self.ev.live.clone();
        let (t0, user) = self.write_flag();
        let hup = self.ev.await_hup(t0);
        let done = self.ev.await_replaced(&old);
        if warden {
            self.await_warden_entry(&user);
        }
        ((hup - t0) as f64 / 1e6, (done - t0) as f64 / 1e6)
    }

    /// One plain `kill -HUP` of the master from here: (kill → SIGHUP entered the master, the
    /// measurement's own floor; kill → all workers replaced) in ms.
    fn kill_cycle(&mut self, master: i32) -> (f64, f64) {
        self.ev.poll();
        let old = self.ev.live.clone();
        let t0 = now_ns();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(master),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        let hup = self.ev.await_hup(t0);
        let done = self.ev.await_replaced(&old);
        ((hup - t0) as f64 / 1e6, (done - t0) as f64 / 1e6)
    }

    /// The host PID of the unit's main process.
    fn main_host_pid(&self, unit: &str) -> i32 {
        self.sb.main_host_pid(unit)
    }
}

/// Watches the master's workers as they are now: returns when the last of them has exited
/// (its process gone, as a pidfd sees it: the master may reap it much later), on
/// CLOCK_REALTIME.
fn watch_exits(master: u32) -> std::thread::JoinHandle<i64> {
    use warden::platform::process::{self, PidFd};
    let fds: Vec<PidFd> = process::children(master)
        .into_iter()
        .filter_map(|p| PidFd::open(p, process::stat(p)?.start_ticks).ok())
        .collect();
    std::thread::spawn(move || {
        // Waited in turn: the last stamp is the last exit (an earlier one is seen at once).
        fds.iter()
            .map(|fd| {
                let _ = fd.wait_exit(Duration::from_secs(60));
                now_ns()
            })
            .max()
            .unwrap_or(0)
    })
}

fn journal_count(b: &Bench, message_id: &str) -> usize {
    b.sb.journal_query(&["-u", WATCHDOG_UNIT, &format!("MESSAGE_ID={message_id}")])
        .lines()
        .filter(|l| l.trim_start().starts_with("MESSAGE_ID="))
        .count()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("reload benchmark skipped: booting the systemd sandbox needs root");
        return;
    }
    let env_usize = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let runs = env_usize("WARDEN_BENCH_RUNS", 100);
    let original_runs = env_usize("WARDEN_BENCH_ORIGINAL_RUNS", 50);
    let only = std::env::var("WARDEN_BENCH_ONLY").ok();
    let phase = |p: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == p));

    let mut b = Bench::setup();
    println!(
        "one gunicorn {} master, {WORKERS} workers, as a unit of the systemd sandbox; \
         policy: cooldown 1 s, guarded mode off",
        b.f.prefix.display()
    );

    // The original's files go into the fixture: the sandbox covers /var/tmp with a tmpfs.
    let original = std::env::var("WARDEN_BENCH_PEER").ok().map(|core| {
        let core = PathBuf::from(core);
        let script = core.join("../../../scripts/worker_watchdog.py");
        let dst = b.f.dir.join("original");
        std::fs::create_dir_all(dst.join("core")).unwrap();
        for m in [
            "feature_flags",
            "runtime_contract",
            "watchdog_logging",
            "worker_recovery_policy",
        ] {
            std::fs::copy(
                core.join(format!("{m}.py")),
                dst.join(format!("core/{m}.py")),
            )
            .unwrap();
        }
        std::fs::copy(&script, dst.join("worker_watchdog.py")).unwrap();
        b.sb.install_unit(
            ORIGINAL_UNIT,
            &format!(
                "[Service]\nUser={SERVICE_USER}\nEnvironmentFile={}\nEnvironment=PYTHONUNBUFFERED=1 \
                 PYTHONDONTWRITEBYTECODE=1\nExecStart=/usr/bin/python3 {} {} {}\n",
                b.f.env_file.display(),
                repo().join("benches/peer_watchdog.py").display(),
                dst.join("core").display(),
                dst.join("worker_watchdog.py").display(),
            ),
        );
        true
    });
    let monit = Path::new("/usr/bin/monit").exists().then(|| {
        let d = b.f.dir.join("monit");
        std::fs::create_dir_all(&d).unwrap();
        let rc = d.join("monitrc");
        std::fs::write(
            &rc,
            format!(
                "set daemon 1\nset logfile {d}/monit.log\nset idfile {d}/monit.id\n\
                 set statefile {d}/monit.state\nset pidfile {d}/monit.pid\n\
                 check file restart_flag with path {flag}\n  \
                 if exist then exec \"/bin/sh -c 'rm -f {flag}; kill -HUP $(cat {pid})'\"\n",
                d = d.display(),
                flag = b.f.env["WATCHDOG_RESTART_FLAG"],
                pid = b.f.env["WATCHDOG_PID_FILE"],
            ),
        )
        .unwrap();
        chmod(&rc, 0o600);
        chown(&d, SERVICE_USER);
        chown(&rc, SERVICE_USER);
        b.sb.install_unit(
            MONIT_UNIT,
            &format!(
                "[Service]\nUser={SERVICE_USER}\nExecStart=/usr/bin/monit -I -c {}\n",
                rc.display()
            ),
        );
        true
    });
    let baseline = std::env::var("WARDEN_BENCH_BASELINE").ok();
    if let Some(bin) = &baseline {
        let text = std::fs::read_to_string(b.f.units_dir.join(WATCHDOG_UNIT))
            .unwrap()
            .replace(&warden().display().to_string(), bin);
        b.sb.install_unit(BASELINE_UNIT, &text);
    }
    b.sb.daemon_reload();
    let master = b.main_host_pid(APP_UNIT);

    // warden: flag → SIGHUP and the full cycle, interleaved with plain kill -HUP cycles.
    if phase("warden") {
        let (mut lat, mut full, mut plain, mut floor) = (vec![], vec![], vec![], vec![]);
        let mut base_lat = vec![];
        // With a baseline, blocks of each alternate, so that drift in the machine's speed
        // weighs on both alike.
        let block = if baseline.is_some() { BLOCK } else { runs };
        let mut done = 0;
        while done < runs {
            let n = block.min(runs - done);
            b.start(WATCHDOG_UNIT);
            // Past the cooldown of the last block's restarts, then one unmeasured request: it
            // warms caches and proves the path works.
            b.space(Duration::ZERO);
            b.flag_cycle(true);
            for _ in 0..n {
                b.space(Duration::from_millis(50));
                let (l, c) = b.flag_cycle(true);
                lat.push(l);
                full.push(c);
                // Spaced alike, so both reloads start from workers of the same age.
                b.space(Duration::from_millis(50));
                let (k, p) = b.kill_cycle(master);
                floor.push(k);
                plain.push(p);
            }
            b.stop(WATCHDOG_UNIT);
            if baseline.is_some() {
                b.start(BASELINE_UNIT);
                b.space(Duration::ZERO);
                b.flag_cycle(true);
                for _ in 0..n {
                    b.space(Duration::from_millis(50));
                    base_lat.push(b.flag_cycle(true).0);
                }
                b.stop(BASELINE_UNIT);
            }
            done += n;
        }
        header("flag written → SIGHUP entered the master");
        report("warden run (inotify, Type=notify unit)", &mut lat);
        if baseline.is_some() {
            report("baseline warden run (alternating blocks)", &mut base_lat);
        }
        report("floor: kill(2) here → handler entered", &mut floor);
        header("full cycle → every worker replaced (interleaved)");
        report("flag → warden → workers replaced", &mut full);
        report("plain kill -HUP → workers replaced", &mut plain);
        println!(
            "warden's added time, difference of medians: {:.2} ms",
            pct(&full, 0.5) - pct(&plain, 0.5)
        );
    }

    // systemctl reload: ExecReload=warden reload --wait against the usual
    // ExecReload=/bin/kill -HUP $MAINPID, in alternating blocks. When `systemctl reload`
    // returns, and when the reload really completed (every old worker's process gone, as a
    // pidfd of this program's sees it, and as many new ones booted, as they stamp it); their
    // difference is how late (or, negative, how early) the answer is.
    if phase("reload") {
        let reloads = env_usize("WARDEN_BENCH_RELOAD_RUNS", 40);
        let exec_reload = |b: &Bench, cmd: &str| {
            let d = b.sb.unit_dir().join(format!("{APP_UNIT}.d"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("reload.conf"),
                format!("[Service]\nExecReload=\nExecReload={cmd}\n"),
            )
            .unwrap();
            b.sb.daemon_reload();
        };
        let via_warden = format!("{} reload --wait", warden().display());
        let via_kill = "/bin/kill -HUP $MAINPID";
        let mut samples: [(Vec<f64>, Vec<f64>, Vec<f64>); 2] = Default::default();
        b.start(WATCHDOG_UNIT);
        let mut done = 0;
        while done < reloads {
            let n = BLOCK.min(reloads - done);
            for (i, cmd) in [via_warden.as_str(), via_kill].into_iter().enumerate() {
                exec_reload(&b, cmd);
                for _ in 0..n {
                    // Past warden's cooldown, both alike: the workers are as old for each.
                    b.space(Duration::from_millis(50));
                    b.ev.poll();
                    let old = b.ev.live.clone();
                    let exits = watch_exits(b.main_host_pid(APP_UNIT) as u32);
                    let t0 = now_ns();
                    let o = b.sb.systemctl(&["reload", APP_UNIT]);
                    let returned = now_ns();
                    assert!(
                        o.status.success(),
                        "{}\n{}",
                        text(&o),
                        b.sb.journal(APP_UNIT)
                    );
                    // Complete: the old workers' processes gone, the new ones booted.
                    let complete = b.ev.await_booted(&old).max(exits.join().unwrap());
                    let (r, c, late) = &mut samples[i];
                    r.push((returned - t0) as f64 / 1e6);
                    c.push((complete - t0) as f64 / 1e6);
                    late.push((returned - complete) as f64 / 1e6);
                }
            }
            done += n;
        }
        // The floor under the return: an ExecReload= that stamps the time as it ends, and how
        // long after that `systemctl reload` (through the sandbox's nsenter) returns here.
        let stamp = b.flag.with_file_name("reload-ended");
        let inside_stamp = Path::new(&b.f.env["WATCHDOG_RUNTIME_DIR"]).join("reload-ended");
        exec_reload(
            &b,
            &format!("/bin/sh -c 'date +%%s%%N > {}'", inside_stamp.display()),
        );
        let mut floor = vec![];
        for _ in 0..reloads {
            let o = b.sb.systemctl(&["reload", APP_UNIT]);
            let returned = now_ns();
            assert!(o.status.success(), "{}", text(&o));
            let ended: i64 = std::fs::read_to_string(&stamp)
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            floor.push((returned - ended) as f64 / 1e6);
        }
        b.stop(WATCHDOG_UNIT);
        let _ = std::fs::remove_file(b.sb.unit_dir().join(format!("{APP_UNIT}.d/reload.conf")));
        b.sb.daemon_reload();
        let [(mut wr, mut wc, mut wl), (mut kr, mut kc, mut kl)] = samples;
        header("systemctl reload → it returns (alternating blocks; the agent's preflight off)");
        report("ExecReload=warden reload --wait", &mut wr);
        report("ExecReload=/bin/kill -HUP $MAINPID", &mut kr);
        header("systemctl reload → every old worker gone, as many new ones booted");
        report("ExecReload=warden reload --wait", &mut wc);
        report("ExecReload=/bin/kill -HUP $MAINPID", &mut kc);
        header("its return, after (+) or before (-) that completion");
        report("ExecReload=warden reload --wait", &mut wl);
        report("ExecReload=/bin/kill -HUP $MAINPID", &mut kl);
        report(
            "floor: ExecReload= ended → systemctl returned here",
            &mut floor,
        );
    }

    let peer_phase = |b: &mut Bench, name: &str, unit: &str, n: usize, jitter: Duration| {
        b.start(unit);
        b.flag_cycle(false);
        let mut lat = vec![];
        for _ in 0..n {
            b.space(jitter);
            lat.push(b.flag_cycle(false).0);
        }
        b.stop(unit);
        header("flag written → SIGHUP entered the master");
        report(name, &mut lat);
    };
    if phase("path") {
        peer_phase(
            &mut b,
            "systemd .path unit → oneshot kill -HUP",
            PATH_UNIT,
            runs,
            Duration::from_millis(50),
        );
    }
    if phase("monit") {
        match monit {
            Some(_) => peer_phase(
                &mut b,
                "monit 5.33, 1 s cycle, if exist then exec",
                MONIT_UNIT,
                runs,
                Duration::from_secs(1),
            ),
            None => println!("\nmonit skipped: /usr/bin/monit not installed"),
        }
    }
    if phase("original") {
        match original {
            Some(_) => peer_phase(
                &mut b,
                "original worker_watchdog.py, 5 s poll",
                ORIGINAL_UNIT,
                original_runs,
                Duration::from_secs(5),
            ),
            None => println!("\noriginal skipped: set WARDEN_BENCH_PEER"),
        }
    }

    // Idle: every agent up at once, no requests, 60 s, no restart in the policy's window.
    if phase("idle") {
        let _ = std::fs::remove_file(&b.state);
        let mut units = vec![("warden", WATCHDOG_UNIT)];
        if monit.is_some() {
            units.push(("monit", MONIT_UNIT));
        }
        if original.is_some() {
            units.push(("original", ORIGINAL_UNIT));
        }
        for (_, u) in &units {
            b.start(u);
        }
        std::thread::sleep(Duration::from_secs(5));
        let pids: Vec<i32> = units.iter().map(|(_, u)| b.main_host_pid(u)).collect();
        let cpu0: Vec<u64> = pids.iter().map(|&p| cpu_ns(p)).collect();
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(60));
        let secs = t.elapsed().as_secs_f64();
        println!("\nidle for {secs:.0} s");
        println!(
            "{:<12} {:>9} {:>9} {:>9} {:>14} {:>10}",
            "agent", "RSS MiB", "anon", "file", "CPU ms / 60 s", "CPU %"
        );
        for (i, (name, u)) in units.iter().enumerate() {
            let cpu = (cpu_ns(pids[i]) - cpu0[i]) as f64 / 1e6;
            let mib = |f| mem_kib(pids[i], f) as f64 / 1024.0;
            println!(
                "{name:<12} {:>9.2} {:>9.2} {:>9.2} {:>14.2} {:>10.4}",
                mib("VmRSS"),
                mib("RssAnon"),
                mib("RssFile"),
                cpu,
                cpu / 10.0 / secs
            );
            b.stop(u);
        }
        if baseline.is_some() {
            let _ = std::fs::remove_file(&b.state);
            b.start(BASELINE_UNIT);
            std::thread::sleep(Duration::from_secs(5));
            let pid = b.main_host_pid(BASELINE_UNIT);
            let cpu0 = cpu_ns(pid);
            let t = Instant::now();
            std::thread::sleep(Duration::from_secs(60));
            let secs = t.elapsed().as_secs_f64();
            let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e6;
            let mib = |f| mem_kib(pid, f) as f64 / 1024.0;
            println!(
                "{:<12} {:>9.2} {:>9.2} {:>9.2} {:>14.2} {:>10.4}",
                "baseline",
                mib("VmRSS"),
                mib("RssAnon"),
                mib("RssFile"),
                cpu,
                cpu / 10.0 / secs
            );
            b.stop(BASELINE_UNIT);
        }
    }

    // Probes: detection to signal, the deciding probe's answer (stamped by the app as it hands
    // it to Gunicorn) → SIGHUP entered the master; one failing probe decides
    // (WARDEN_RECOVERY_PROBES=1), probed every 100 ms. Then idle CPU and RSS with probes at the
    // default interval (10 s) against probes off, 60 s each.
    if phase("probe") {
        let url = format!("http://127.0.0.1:{}/health", b.f.port);
        for (k, v) in [
            ("WARDEN_HEALTH_URL", url.as_str()),
            ("WARDEN_PROBE_INTERVAL", "0.1"),
            ("WARDEN_AUTO_RECOVERY", "on"),
            ("WARDEN_RECOVERY_PROBES", "1"),
            ("WARDEN_RECOVERY_SETTLE", "0"),
        ] {
            b.f.set(k, v);
        }
        let _ = std::fs::remove_file(&b.state);
        b.start(WATCHDOG_UNIT);
        let n = env_usize("WARDEN_BENCH_PROBE_RUNS", 30);
        let mut detect = vec![];
        for _ in 0..n {
            // Healthy again and past the cooldown: the breaker closes on the next probe.
            std::fs::write(&b.scenario, "healthy").unwrap();
            b.space(Duration::from_millis(200));
            b.ev.poll();
            let old = b.ev.live.clone();
            let t0 = now_ns();
            std::fs::write(&b.scenario, "fail").unwrap();
            let hup = b.ev.await_hup(t0);
            std::fs::write(&b.scenario, "healthy").unwrap();
            let deciding =
                b.ev.answers
                    .iter()
                    .filter(|&&(ns, failed)| failed && ns >= t0 && ns <= hup)
                    .map(|&(ns, _)| ns)
                    .max()
                    .expect("a failing answer before the SIGHUP");
            detect.push((hup - deciding) as f64 / 1e6);
            b.ev.await_replaced(&old);
        }
        b.stop(WATCHDOG_UNIT);
        header("the deciding probe's answer → SIGHUP entered the master (preflight off)");
        report("warden, automatic recovery", &mut detect);

        println!(
            "
idle for 60 s each, app healthy"
        );
        println!(
            "{:<28} {:>9} {:>14} {:>10}",
            "agent", "RSS MiB", "CPU ms / 60 s", "probes"
        );
        for (label, interval) in [
            ("probes every 10 s (default)", None),
            ("probes off", Some("off")),
        ] {
            match interval {
                Some(v) => b.f.set("WARDEN_PROBE_INTERVAL", v),
                None => b.f.unset("WARDEN_PROBE_INTERVAL"),
            }
            let _ = std::fs::remove_file(&b.state);
            b.start(WATCHDOG_UNIT);
            std::thread::sleep(Duration::from_secs(5));
            b.ev.poll();
            let answers0 = b.ev.answers.len();
            let pid = b.main_host_pid(WATCHDOG_UNIT);
            let cpu0 = cpu_ns(pid);
            std::thread::sleep(Duration::from_secs(60));
            let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e6;
            b.ev.poll();
            println!(
                "{label:<28} {:>9.2} {:>14.2} {:>10}",
                mem_kib(pid, "VmRSS") as f64 / 1024.0,
                cpu,
                b.ev.answers.len() - answers0
            );
            b.stop(WATCHDOG_UNIT);
        }
        for k in [
            "WARDEN_HEALTH_URL",
            "WARDEN_PROBE_INTERVAL",
            "WARDEN_AUTO_RECOVERY",
            "WARDEN_RECOVERY_PROBES",
            "WARDEN_RECOVERY_SETTLE",
        ] {
            b.f.unset(k);
        }
    }

    // Storm: warden with the default policy and a fresh state file.
    if phase("storm") {
        for k in ["WORKER_RESTART_COOLDOWN", "WORKER_GUARDED_MODE_ENABLED"] {
            b.f.unset(k);
        }
        let _ = std::fs::remove_file(&b.state);
        b.start(WATCHDOG_UNIT);
        let pid = b.main_host_pid(WATCHDOG_UNIT);
        let ids = [
            ("executed", warden::systemd::journal::RESTART_EXECUTED),
            ("blocked", warden::systemd::journal::RESTART_BLOCKED),
            ("failed", warden::systemd::journal::RESTART_FAILED),
            ("rejected", warden::systemd::journal::FLAG_REJECTED),
        ];
        let before: Vec<usize> = ids.iter().map(|(_, id)| journal_count(&b, id)).collect();
        b.ev.poll();
        let hups0 = b.ev.hups.len();
        // Written beforehand, then renamed onto the flag as fast as this thread can: the
        // rename is the admin API's visible write.
        let files: Vec<PathBuf> = (0..10_000)
            .map(|i| {
                let p = b.flag.with_extension(format!("storm.{i}"));
                std::fs::write(
                    &p,
                    format!(r#"{{"user": "storm-{i}", "source": "manual"}}"#),
                )
                .unwrap();
                p
            })
            .collect();
        let cpu0 = cpu_ns(pid);
        let t = Instant::now();
        for p in &files {
            std::fs::rename(p, &b.flag).unwrap();
        }
        let wrote = t.elapsed();
        // Settled: the last flag consumed and the state file unchanged for a second.
        let mut last = (SystemTime::UNIX_EPOCH, Instant::now());
        loop {
            let m = std::fs::metadata(&b.state)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if m != last.0 {
                last = (m, Instant::now());
            }
            if !b.flag.exists() && last.1.elapsed() > Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let busy = t.elapsed() - Duration::from_secs(1);
        let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e6;
        b.ev.poll();
        println!(
            "\nstorm: 10,000 flags (JSON) renamed into place in {:.0} ms, default policy",
            wrote.as_secs_f64() * 1e3
        );
        println!(
            "agent CPU {cpu:.0} ms over {:.0} ms until settled ({:.0}% of one core); \
             still active: {}, restarts by systemd: {}, same PID: {}",
            busy.as_secs_f64() * 1e3,
            cpu / busy.as_secs_f64() / 10.0,
            b.sb.prop(WATCHDOG_UNIT, "ActiveState"),
            b.sb.prop(WATCHDOG_UNIT, "NRestarts"),
            b.main_host_pid(WATCHDOG_UNIT) == pid,
        );
        let decided: Vec<String> = ids
            .iter()
            .zip(&before)
            .map(|((n, id), b0)| format!("{n} {}", journal_count(&b, id) - b0))
            .collect();
        println!(
            "requests decided (coalesced): {}; SIGHUPs the master received: {}",
            decided.join(", "),
            b.ev.hups.len() - hups0
        );
        b.stop(WATCHDOG_UNIT);
    }
}
