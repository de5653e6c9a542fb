//! Twenty agents reloading through one slot: a real three-member etcd cluster on loopback and
//! `WARDEN_BENCH_AGENTS` (default 20) `warden run` processes, each with its own Gunicorn
//! (master + 2 workers), all in one fleet group of one slot. Every round writes a restart flag
//! on every host at once, and the reloads go through the slot one host after another. Needs
//! root, as `tests/fleet_live.rs` does (the fixtures give their directories to www-data); no
//! systemd sandbox.
//!
//!     WARDEN_BIN=target/release/warden cargo bench --bench fleet
//!
//! What is timed (every timestamp is CLOCK_REALTIME: the masters and workers stamp their
//! SIGHUP, boots and exits through `benches/reload_hooks.py`; the agents' stderr log lines
//! carry the wall clock to the microsecond, in UTC):
//! - per round: total = first flag written → the last host's reload completed (its last worker
//!   boot or exit after its SIGHUP), against the sum of the hosts' reload times (each host's
//!   SIGHUP → its completion), and their ratio;
//! - per host, ordered by SIGHUP: "slot granted → SIGHUP" (its `fleet slot taken` log line →
//!   its master's SIGHUP), "release → next grant" (the previous host's `fleet slot given back`
//!   → this host's `fleet slot taken`), and the per-host overhead, the previous host's reload
//!   completed → this host's SIGHUP, which holds the previous agent's verification, the slot's
//!   handover and this agent's way to the signal. It is split exactly into its parts: previous
//!   completed → previous `given back` (verification and revoke), release → next grant, and
//!   granted → SIGHUP;
//! - the old workers' processes gone (a pidfd of this program's per old worker, stamped when
//!   its thread wakes): a worker stamps `exit` in its `worker_exit` hook, then Python tears
//!   itself down for some tens of ms before the process ends, and the agent rightly waits for
//!   that end. So the verification's share is split again: last event → old workers' processes
//!   gone (Gunicorn's), then processes gone → the agent saw the workers replaced → the health
//!   URL answered (both from the entry's `timings`, counted from the master's SIGHUP) → slot
//!   given back (the port check, the revoke); and a second overhead is shown from the
//!   processes gone, the agent's own share;
//! - what the agents record: `fleet.waited_ms` and the entries' `timings`.
//!
//! `fleet slot taken` is logged once the slot's transaction succeeded (the same transaction
//! takes the host out of the waiters' line). To see inside the handover, this program watches
//! the group's slots itself (a watch through member 0's gateway, as the agents' first endpoint,
//! each event stamped as it is read): "release → next grant" is split into `given back` logged
//! → the slot's DELETE seen, → the next holder's PUT seen (the waiters woken, their
//! transactions), → its `taken` logged (the transaction's answer).
//!
//! Environment: `WARDEN_BENCH_AGENTS` (default 20), `WARDEN_BENCH_FLEET_ROUNDS` (default 5),
//! `WARDEN_BIN` (the release binary; else the one cargo builds for benches), `ETCD` (else the
//! one `tests/harness/deps.sh` fetched), `TMPDIR` (where the members keep their data:
//! `TMPDIR=/dev/shm` takes the disk's fsyncs out of etcd's writes). Reports min / median /
//! p90 / p99 / max. Nothing is asserted about time; reloads that overlap (a correctness
//! failure of the slots) are counted and reported loudly.

#[path = "../tests/common/mod.rs"]
mod common;
mod util;

use std::io::{BufRead, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use common::etcd::{Cluster, etcd_bin};
use common::*;
use serde_json::Value;
use util::*;

const GROUP: &str = "bench-fleet";
const WORKERS: usize = 2;
/// `WORKER_RESTART_COOLDOWN`: a host's next request is allowed this long after its last
/// reload completed.
const COOLDOWN: Duration = Duration::from_secs(1);
/// `WARDEN_FLEET_WAIT`, in seconds: the longest a host waits for the slot.
const WAIT_S: u64 = 600;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn ms(ns: i64) -> f64 {
    ns as f64 / 1e6
}

/// `warden run` outside systemd, as `tests/common/agent.rs` starts it (same environment), its
/// stderr kept in a file: the log lines the fleet's figures are read from.
struct Agent {
    child: Child,
    notify: UnixDatagram,
    stderr: PathBuf,
}

impl Agent {
    fn start(f: &Fixture) -> Agent {
        let sock = f.dir.join("agent-notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).unwrap();
        let stderr = f.dir.join("agent.stderr");
        let log = std::fs::File::create(&stderr).unwrap();
        let child = Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NOTIFY_SOCKET", &sock)
            .args(["run", "--env-file"])
            .arg(&f.env_file)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let a = Agent {
            child,
            notify,
            stderr,
        };
        a.await_msg("READY=1", Instant::now() + Duration::from_secs(30));
        a
    }

    /// The next sd_notify datagram containing `what` (others are skipped). The agent sends
    /// one `STATUS=` per settled request, so the socket's queue never fills.
    fn await_msg(&self, what: &str, deadline: Instant) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            self.notify
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let n = recv(&self.notify, &mut buf).unwrap_or_else(|e| {
                panic!(
                    "no {what} from the agent ({e}); its stderr:\n{}",
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                )
            });
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(what) {
                return m;
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// One host: its agent (stopped first), its Gunicorn, its contract.
struct Host {
    name: String,
    agent: Agent,
    _gunicorn: Gunicorn,
    f: Fixture,
    events: PathBuf,
    flag: PathBuf,
}

impl Host {
    fn start(name: &str, etcd: &str) -> Host {
        let mut f = Fixture::new(name);
        let port = f.port;
        for (k, v) in [
            ("WARDEN_ETCD_ENDPOINTS", etcd.to_string()),
            ("WARDEN_FLEET_GROUP", GROUP.into()),
            ("WARDEN_FLEET_SLOTS", "1".into()),
            // The hosts share this machine's id: each says who it is.
            ("WARDEN_FLEET_HOLDER", name.into()),
            ("WARDEN_FLEET_LEASE", "10".into()),
            ("WARDEN_FLEET_WAIT", WAIT_S.to_string()),
            ("WARDEN_HEALTH_URL", format!("http://127.0.0.1:{port}/")),
            ("WORKER_RESTART_COOLDOWN", COOLDOWN.as_secs().to_string()),
            ("WORKER_GUARDED_MODE_ENABLED", "false".into()),
            ("WARDEN_PREFLIGHT", "false".into()),
        ] {
            f.env.insert(k.into(), v);
        }
        f.write_env();
        let events = f.dir.join("gunicorn.events");
        std::fs::write(&events, "").unwrap();
        let hooks = repo().join("benches/reload_hooks.py");
        let env = format!("WARDEN_BENCH_EVENTS={}", events.display());
        let gunicorn = start_gunicorn_in(
            &f,
            &repo().join("examples/gunicorn-app"),
            &["-c", hooks.to_str().unwrap(), "-e", &env],
        );
        let booted = await_booted(master_of(&f), WORKERS);
        assert_eq!(booted.len(), WORKERS, "{name}: gunicorn's workers");
        let agent = Agent::start(&f);
        Host {
            name: name.into(),
            flag: PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"]),
            agent,
            _gunicorn: gunicorn,
            f,
            events,
        }
    }

    /// The recorded history.
    fn history(&self) -> Vec<Value> {
        match std::fs::read(&self.f.env["WATCHDOG_STATE_FILE"]) {
            Ok(b) => serde_json::from_slice::<Value>(&b)
                .map(|d| d["history"].as_array().cloned().unwrap_or_default())
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// The request `user` asked, once settled (anything but intended), as recorded: awaited
    /// on the agent's `STATUS=` datagrams.
    fn settled(&self, user: &str, deadline: Instant) -> Value {
        loop {
            if let Some(e) = self
                .history()
                .into_iter()
                .rev()
                .find(|e| e["requested_by"] == user && e["decision"] != "intended")
            {
                return e;
            }
            self.agent.await_msg("STATUS=", deadline);
        }
    }

    /// The master's first SIGHUP at or after `t0`, and when that reload completed: the last of
    /// its workers' boots and exits after it (`WORKERS` of each). The agent saw both before it
    /// settled, so they are on file; a short bounded re-read covers the unexpected.
    fn reload_after(&self, t0: i64) -> Option<(i64, i64)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&self.events).unwrap_or_default();
            let mut hup = None;
            let (mut done, mut ups, mut exits) = (0, 0, 0);
            for line in text.lines() {
                let mut w = line.split_whitespace();
                let (Some(kind), Some(ns)) = (w.next(), w.next().and_then(|n| n.parse().ok()))
                else {
                    continue;
                };
                match (kind, hup) {
                    ("hup", None) if ns >= t0 => hup = Some(ns),
                    // A second SIGHUP: this reload's events are over.
                    ("hup", Some(_)) => break,
                    ("up", Some(_)) => (done, ups) = (done.max(ns), ups + 1),
                    ("exit", Some(_)) => (done, exits) = (done.max(ns), exits + 1),
                    _ => {}
                }
            }
            if let Some(h) = hup
                && ups >= WORKERS
                && exits >= WORKERS
            {
                return Some((h, done));
            }
            if Instant::now() > deadline {
                return hup.map(|h| (h, done.max(h)));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The first log line at or after `t0` containing `what`: when it was logged (ns).
    fn logged(&self, what: &str, t0: i64) -> Option<i64> {
        let text = std::fs::read_to_string(&self.agent.stderr).unwrap_or_default();
        text.lines().find_map(|l| {
            if !l.contains(what) {
                return None;
            }
            let ts = l.split_whitespace().next()?;
            let ns = chrono::DateTime::parse_from_rfc3339(ts)
                .ok()?
                .timestamp_nanos_opt()?;
            (ns >= t0).then_some(ns)
        })
    }
}

fn master_of(f: &Fixture) -> u32 {
    warden::platform::process::read_pid_file(&f.pid_file()).unwrap()
}

/// Watches `master`'s workers as they are now: when the last of their processes ended, as a
/// pidfd sees it (the master reaps them later), on CLOCK_REALTIME; 0 when none was seen.
fn watch_exits(master: u32, wait: Duration) -> std::thread::JoinHandle<i64> {
    use warden::platform::process::{self, PidFd};
    let fds: Vec<PidFd> = process::children(master)
        .into_iter()
        .filter_map(|p| PidFd::open(p, process::stat(p)?.start_ticks).ok())
        .collect();
    std::thread::spawn(move || {
        // Waited in turn: the last stamp is the last exit (an earlier one is seen at once).
        fds.iter()
            .map(|fd| match fd.wait_exit(wait) {
                Ok(true) => now_ns(),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    })
}

/// A change of a slot as a watch saw it: when it was read (ns), and for a PUT its holder's id.
#[derive(Debug, Clone)]
struct SlotEvent {
    at: i64,
    put: Option<String>,
}

/// Watches the group's slots through the gateway of the member at `port` (HTTP/1.0: the answer
/// streams one JSON message a line until the connection closes); returns once the watch is
/// created. The thread ends when the member does.
fn watch_slots(port: u16) -> Arc<Mutex<Vec<SlotEvent>>> {
    let prefix = format!("warden/fleet/{GROUP}/slots/");
    let body = serde_json::json!({"create_request": {
        "key": B64.encode(&prefix),
        "range_end": B64.encode(warden::platform::etcd::prefix_end(prefix.as_bytes())),
    }})
    .to_string();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    write!(
        s,
        "POST /v3/watch HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    // The headers, then the first message: the watch is created.
    loop {
        line.clear();
        assert!(r.read_line(&mut line).unwrap() > 0, "no watch answer");
        if line.trim().is_empty() {
            break;
        }
    }
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("created"), "the watch: {line}");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let at = now_ns();
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            for e in v["result"]["events"].as_array().into_iter().flatten() {
                // A PUT is the enum's default, left out of the JSON.
                let put = (e["type"] != "DELETE").then(|| {
                    let value = B64
                        .decode(e["kv"]["value"].as_str().unwrap_or_default())
                        .unwrap_or_default();
                    serde_json::from_slice::<Value>(&value).unwrap_or_default()["id"]
                        .as_str()
                        .unwrap_or("?")
                        .to_string()
                });
                out.lock().unwrap().push(SlotEvent { at, put });
            }
        }
    });
    seen
}

/// One host's reload in a round (ns, CLOCK_REALTIME).
struct Seen {
    name: String,
    hup: i64,
    /// The last worker event (`up`, `exit`) after the SIGHUP: the reload completed.
    done: i64,
    /// The later of `done` and the old workers' processes gone.
    gone: i64,
    /// The agent saw its workers replaced, and the health URL answered (its `timings`,
    /// counted from the SIGHUP).
    replaced: Option<i64>,
    health: Option<i64>,
    /// Its `fleet slot taken` and `fleet slot given back` log lines.
    taken: i64,
    given: i64,
    /// The watch saw its PUT of the slot, and the DELETE after it.
    put_seen: Option<i64>,
    del_seen: Option<i64>,
}

/// Named samples, in the order first added.
#[derive(Default)]
struct Rows(Vec<(&'static str, Vec<f64>)>);

impl Rows {
    fn add(&mut self, name: &'static str, v: f64) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => s.push(v),
            None => self.0.push((name, vec![v])),
        }
    }

    /// Declares the rows' order before any sample.
    fn declare(&mut self, names: &[&'static str]) {
        for n in names {
            self.0.push((n, Vec::new()));
        }
    }

    fn print(&mut self) {
        for (name, v) in &mut self.0 {
            if v.is_empty() {
                println!("{name:<52} {:>6}", 0);
            } else {
                report(name, v);
            }
        }
    }
}

const RELOAD: &str = "reload: SIGHUP → its last worker boot/exit";
const RELOAD_GONE: &str = "reload: SIGHUP → also its old workers' exits";
const OVERHEAD: &str = "OVERHEAD: previous completed → SIGHUP";
const DONE_GIVEN: &str = "  previous completed → its slot given back";
const DONE_GONE: &str = "    last event → old workers' processes gone";
const GONE_REPLACED: &str = "    gone → agent saw workers replaced";
const REPLACED_HEALTH: &str = "    → health URL answered (if later)";
const HEALTH_GIVEN: &str = "    → slot given back (port check, revoke)";
const RELEASE_GRANT: &str = "  RELEASE → NEXT GRANT (given back → taken)";
const GIVEN_DEL: &str = "    given back logged → DELETE seen by a watch";
const DEL_PUT: &str = "    DELETE seen → next holder's PUT seen";
const PUT_TAKEN: &str = "    PUT seen → taken logged (the answer)";
const GRANT_HUP: &str = "  SLOT GRANTED → SIGHUP";
const AGENT_OVERHEAD: &str = "agent's overhead: previous gone → SIGHUP";
const FIRST_GRANT: &str = "first of a round: flag → slot taken";
const FIRST_HUP: &str = "first of a round: flag → SIGHUP";
const FIRST_PUT: &str = "first of a round: flag → PUT seen";
const WAITED: &str = "recorded fleet.waited_ms";
const FLAG_SIGNAL: &str = "recorded timings.flag_to_signal_ms";
const REPLACED: &str = "recorded timings.workers_replaced_ms";
const HEALTH: &str = "recorded timings.health_answered_ms";
const TOTAL: &str = "round total: first flag → last completed";
const RATIO: &str = "round total / Σ reload (a ratio, not ms)";

/// What the rounds found besides the figures.
#[derive(Default)]
struct Tally {
    rows: Rows,
    overlapped_rounds: usize,
    /// A host's SIGHUP before the previous host's old workers' processes were seen gone (the
    /// bench's pidfd threads wake late under load: counted, not a failure by itself).
    before_gone: usize,
    not_verified: usize,
    log_inversions: usize,
    missing: usize,
}

struct Bench {
    hosts: Vec<Host>,
    slots: Arc<Mutex<Vec<SlotEvent>>>,
    _cluster: Cluster,
}

impl Bench {
    fn setup(n: usize) -> Bench {
        let cluster = Cluster::start();
        let eps = cluster.endpoints();
        let slots = watch_slots(cluster.clients[0]);
        let hosts = (0..n)
            .map(|i| Host::start(&format!("bench-fleet-{i:02}"), &eps))
            .collect();
        Bench {
            hosts,
            slots,
            _cluster: cluster,
        }
    }

    /// One round: a flag on every host at once, every request settled; the figures added to
    /// `t`. Returns once the last host's cooldown is over.
    fn round(&self, r: usize, t: &mut Tally) {
        let user = format!("bench-fleet-round-{r}");
        let body = format!(
            r#"{{"user": "{user}", "ip": "127.0.0.1", "timestamp": "{}", "source": "manual"}}"#,
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
        // Written beforehand: the renames are the visible writes, as fast as this thread goes.
        for h in &self.hosts {
            std::fs::write(h.flag.with_extension("flag.tmp"), &body).unwrap();
        }
        let wait = Duration::from_secs(WAIT_S + 60);
        let exits: Vec<_> = self
            .hosts
            .iter()
            .map(|h| watch_exits(master_of(&h.f), wait))
            .collect();
        let t0 = now_ns();
        for h in &self.hosts {
            std::fs::rename(h.flag.with_extension("flag.tmp"), &h.flag).unwrap();
        }
        let deadline = Instant::now() + wait;
        let entries: Vec<Value> = self
            .hosts
            .iter()
            .map(|h| h.settled(&user, deadline))
            .collect();

        // The slot's changes this round, in the order etcd made them.
        let changes: Vec<SlotEvent> = self
            .slots
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.at >= t0)
            .cloned()
            .collect();
        let rows = &mut t.rows;
        let mut seen = Vec::new();
        for ((h, e), exited) in self.hosts.iter().zip(&entries).zip(exits) {
            let exited = exited.join().unwrap_or(0);
            let ok = e["decision"] == "executed"
                && e["verified"] == true
                && e["fleet"]["slot"] == 0
                && e["fleet"]["released"] == true;
            if !ok {
                t.not_verified += 1;
                println!("round {r}: {} not verified with the slot: {e}", h.name);
            }
            let timing = |k: &str| e["timings"][k].as_f64();
            if let Some(w) = e["fleet"]["waited_ms"].as_f64() {
                rows.add(WAITED, w);
            }
            for (row, k) in [
                (FLAG_SIGNAL, "flag_to_signal_ms"),
                (REPLACED, "workers_replaced_ms"),
                (HEALTH, "health_answered_ms"),
            ] {
                if let Some(x) = timing(k) {
                    rows.add(row, x);
                }
            }
            match (
                h.reload_after(t0),
                h.logged("fleet slot taken", t0),
                h.logged("fleet slot given back", t0),
            ) {
                (Some((hup, done)), Some(taken), Some(given)) => {
                    let after_hup = |k| timing(k).map(|x| hup + (x * 1e6) as i64);
                    let put = changes
                        .iter()
                        .position(|c| c.put.as_deref() == Some(h.name.as_str()));
                    seen.push(Seen {
                        name: h.name.clone(),
                        hup,
                        done,
                        gone: done.max(exited),
                        replaced: after_hup("workers_replaced_ms"),
                        health: after_hup("health_answered_ms"),
                        taken,
                        given,
                        put_seen: put.map(|i| changes[i].at),
                        del_seen: put
                            .and_then(|i| changes.get(i + 1))
                            .filter(|c| c.put.is_none())
                            .map(|c| c.at),
                    })
                }
                (reload, taken, given) => {
                    t.missing += 1;
                    println!(
                        "round {r}: {}: reload {reload:?}, slot taken {taken:?}, given back \
                         {given:?}: left out",
                        h.name
                    );
                }
            }
        }
        seen.sort_by_key(|s| s.hup);

        let spans: Vec<(i64, i64)> = seen.iter().map(|s| (s.hup, s.done)).collect();
        let at_once = most_at_once(&spans);
        if at_once > 1 {
            t.overlapped_rounds += 1;
            println!(
                "\n!!!!!!!! round {r}: RELOADS OVERLAPPED through one slot: {at_once} at once \
                 !!!!!!!!\n{spans:?}\n"
            );
        }
        let (mut sum, mut sum_gone, mut overhead_sum) = (0i64, 0i64, 0i64);
        let mut handovers = Vec::new();
        // The round's worst handover, for its line.
        let mut worst: Option<(i64, String)> = None;
        for (k, s) in seen.iter().enumerate() {
            sum += s.done - s.hup;
            sum_gone += s.gone - s.hup;
            rows.add(RELOAD, ms(s.done - s.hup));
            rows.add(RELOAD_GONE, ms(s.gone - s.hup));
            rows.add(GRANT_HUP, ms(s.hup - s.taken));
            if k == 0 {
                rows.add(FIRST_GRANT, ms(s.taken - t0));
                rows.add(FIRST_HUP, ms(s.hup - t0));
                if let Some(put) = s.put_seen {
                    rows.add(FIRST_PUT, ms(put - t0));
                }
                continue;
            }
            let p = &seen[k - 1];
            if s.taken < p.given {
                t.log_inversions += 1;
            }
            if s.hup < p.gone {
                t.before_gone += 1;
            }
            let overhead = s.hup - p.done;
            overhead_sum += overhead;
            rows.add(OVERHEAD, ms(overhead));
            rows.add(DONE_GIVEN, ms(p.given - p.done));
            rows.add(DONE_GONE, ms(p.gone - p.done));
            if let Some(replaced) = p.replaced {
                let verified = p.health.map_or(replaced, |h| h.max(replaced));
                rows.add(GONE_REPLACED, ms(replaced - p.gone));
                rows.add(REPLACED_HEALTH, ms(verified - replaced));
                rows.add(HEALTH_GIVEN, ms(p.given - verified));
            }
            rows.add(RELEASE_GRANT, ms(s.taken - p.given));
            handovers.push(format!("{:.1}", ms(s.taken - p.given)));
            if let (Some(del), Some(put)) = (p.del_seen, s.put_seen) {
                rows.add(GIVEN_DEL, ms(del - p.given));
                rows.add(DEL_PUT, ms(put - del));
                rows.add(PUT_TAKEN, ms(s.taken - put));
            }
            rows.add(AGENT_OVERHEAD, ms(s.hup - p.gone));
            if worst.as_ref().is_none_or(|w| overhead > w.0) {
                worst = Some((
                    overhead,
                    format!(
                        "#{k} {} → {}: {:.1} = {:.1} teardown + {:.1} verify, revoke + {:.1} \
                         handover + {:.1} to SIGHUP",
                        p.name.trim_start_matches("bench-fleet-"),
                        s.name.trim_start_matches("bench-fleet-"),
                        ms(overhead),
                        ms(p.gone - p.done),
                        ms(p.given - p.gone),
                        ms(s.taken - p.given),
                        ms(s.hup - s.taken)
                    ),
                ));
            }
        }
        let total = seen.iter().map(|s| s.done).max().unwrap_or(t0) - t0;
        let ratio = total as f64 / sum.max(1) as f64;
        rows.add(TOTAL, ms(total));
        rows.add(RATIO, ratio);
        println!(
            "{r:>5} {:>5} {:>9.1} {:>11.1} {:>6.3} {:>10.1} {:>9.1} {:>10.1} {:>7}  {}",
            seen.len(),
            ms(total),
            ms(sum),
            ratio,
            ms(sum_gone),
            seen.first().map_or(0.0, |s| ms(s.hup - t0)),
            ms(overhead_sum),
            at_once,
            worst.map(|w| w.1).unwrap_or_default(),
        );
        println!(
            "{:>11} release → next grant, in order: {}",
            "",
            handovers.join(" ")
        );

        // Pacing, not measurement: the next round's requests must find every host past its
        // cooldown (counted from the request's completion, as recorded), else they would be
        // refused. A bounded sleep of what is left of it, plus a margin.
        let last_completed = entries
            .iter()
            .filter_map(|e| e["completed_at"].as_str())
            .filter_map(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
            .filter_map(|c| c.timestamp_nanos_opt())
            .max()
            .unwrap_or_else(now_ns);
        let until = last_completed + COOLDOWN.as_nanos() as i64 + 50_000_000;
        let left = (until - now_ns()).clamp(0, 2 * COOLDOWN.as_nanos() as i64);
        std::thread::sleep(Duration::from_nanos(left as u64));
    }
}

fn first_line(cmd: &Path, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "?".into())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("fleet benchmark skipped: its fixtures give directories to www-data (root)");
        return;
    }
    let agents = env_usize("WARDEN_BENCH_AGENTS", 20).max(1);
    let rounds = env_usize("WARDEN_BENCH_FLEET_ROUNDS", 5).max(1);
    let set: Vec<String> = [
        "WARDEN_BIN",
        "WARDEN_BENCH_AGENTS",
        "WARDEN_BENCH_FLEET_ROUNDS",
        "ETCD",
        "TMPDIR",
        "CARGO_TARGET_DIR",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
    .collect();
    println!("command: {} cargo bench --bench fleet", set.join(" "));
    println!(
        "warden: {} ({})",
        warden().display(),
        if std::env::var_os("WARDEN_BIN").is_some() {
            "WARDEN_BIN"
        } else {
            "cargo's bench build: set WARDEN_BIN for the release binary"
        }
    );
    println!(
        "etcd: {} ({}), 3 members on loopback",
        etcd_bin().display(),
        first_line(&etcd_bin(), "--version")
    );
    println!(
        "{agents} agents, each with its Gunicorn (master + {WORKERS} workers), one group of one \
         slot, {rounds} rounds; {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "contract: WARDEN_FLEET_SLOTS=1 WARDEN_FLEET_LEASE=10 WARDEN_FLEET_WAIT={WAIT_S} \
         WARDEN_FLEET_HOLDER=<host> WARDEN_HEALTH_URL=http://127.0.0.1:<port>/ \
         WORKER_RESTART_COOLDOWN=1 WORKER_GUARDED_MODE_ENABLED=false WARDEN_PREFLIGHT=false"
    );

    let started = Instant::now();
    let b = Bench::setup(agents);
    println!(
        "setup: the cluster, {agents} Gunicorns and their agents up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!(
        "\nper round (ms)\n{:>5} {:>5} {:>9} {:>11} {:>6} {:>10} {:>9} {:>10} {:>7}  worst handover",
        "round",
        "hosts",
        "total",
        "Σ reload",
        "ratio",
        "Σ to gone",
        "flag→HUP",
        "Σ overhead",
        "at once"
    );
    let mut t = Tally::default();
    t.rows.declare(&[
        RELOAD,
        RELOAD_GONE,
        OVERHEAD,
        DONE_GIVEN,
        DONE_GONE,
        GONE_REPLACED,
        REPLACED_HEALTH,
        HEALTH_GIVEN,
        RELEASE_GRANT,
        GIVEN_DEL,
        DEL_PUT,
        PUT_TAKEN,
        GRANT_HUP,
        AGENT_OVERHEAD,
        FIRST_GRANT,
        FIRST_PUT,
        FIRST_HUP,
        WAITED,
        FLAG_SIGNAL,
        REPLACED,
        HEALTH,
        TOTAL,
        RATIO,
    ]);
    let measured = Instant::now();
    for r in 1..=rounds {
        b.round(r, &mut t);
    }
    let measured = measured.elapsed();

    header(&format!(
        "per host, {rounds} rounds × {agents} hosts, in SIGHUP order (indented rows add up to \
         the row above)"
    ));
    t.rows.print();
    println!(
        "\nrounds with overlapping reloads: {}{}; requests not verified with the slot: {}; \
         hosts left out (no SIGHUP or log line): {}; `taken` logged before the previous \
         `given back`: {}; SIGHUP before the previous host's old workers were seen gone: {}",
        t.overlapped_rounds,
        if t.overlapped_rounds > 0 {
            "  !!!!!!!! CORRECTNESS FAILURE !!!!!!!!"
        } else {
            ""
        },
        t.not_verified,
        t.missing,
        t.log_inversions,
        t.before_gone
    );
    println!(
        "goal: ≤ 5 ms overhead per host on loopback; {:.1} s of rounds, {:.1} s in all",
        measured.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    drop(b);
}
