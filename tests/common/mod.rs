//! Test support: a conda-like prefix with real gunicorn, per-test contract fixtures (env file,
//! app / watchdog / worker units, runtime and state directories), and the real-systemd sandbox.
#![allow(dead_code)]

pub mod agent;
pub mod alertmanager;
pub mod etcd;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const APP_UNIT: &str = "mes-dashboard.service";
pub const WATCHDOG_UNIT: &str = "mes-dashboard-watchdog.service";
pub const WORKER_UNIT: &str = "mes-dashboard-worker.service";
pub const SERVICE_USER: &str = "www-data";

/// The bus name of the fixture's agent: its app's.
pub fn agent_bus_name() -> String {
    let app = warden::config::instance::AppName::of_unit(APP_UNIT).unwrap();
    warden::control::dbus::bus_name(Some(&app))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The warden binary under test: `WARDEN_BIN` when set (the release build as shipped, for a
/// benchmark: cargo builds the one it hands to tests and benches with the dev-dependencies'
/// features, a larger binary), else the one cargo built for the tests.
pub fn warden() -> PathBuf {
    std::env::var_os("WARDEN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_warden")))
}

/// Where fixtures live: not under /tmp or /run, whose contents the contract rightly calls
/// volatile.
pub fn fixture_base() -> PathBuf {
    let t = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    if t.starts_with("/tmp") || t.starts_with("/run") {
        PathBuf::from("/var/tmp/warden-tests")
    } else {
        t
    }
}

/// The shared conda-like install (built once by `tests/harness/make-prefix.sh`).
pub struct CondaInstall {
    pub root: PathBuf,
    pub prefix: PathBuf,
}

pub fn conda() -> &'static CondaInstall {
    static C: OnceLock<CondaInstall> = OnceLock::new();
    C.get_or_init(|| {
        let root = fixture_base().join("conda");
        let st = Command::new("bash")
            .arg(repo().join("tests/harness/make-prefix.sh"))
            .arg(&root)
            .arg("app")
            .status()
            .expect("run make-prefix.sh");
        assert!(st.success(), "building the conda-like prefix failed");
        CondaInstall {
            prefix: root.join("envs/app"),
            root,
        }
    })
}

pub fn chown(p: &Path, user: &str) {
    let st = Command::new("chown")
        .arg(format!("{user}:{user}"))
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One test's contract: an env file shared by three units, their unit files, and the
/// directories the contract names.
pub struct Fixture {
    pub dir: PathBuf,
    pub conda_root: PathBuf,
    pub prefix: PathBuf,
    pub env_file: PathBuf,
    pub units_dir: PathBuf,
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    pub port: u16,
    pub env: BTreeMap<String, String>,
}

impl Fixture {
    /// A complete, valid contract in its own directory.
    pub fn new(name: &str) -> Fixture {
        Self::with_runtime_dir(name, None)
    }

    /// `runtime_dir`: use this (e.g. `/run/NAME` inside a sandbox) instead of `DIR/run`.
    pub fn with_runtime_dir(name: &str, runtime_dir: Option<&Path>) -> Fixture {
        let c = conda();
        let dir = fixture_base().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chmod(&dir, 0o755);
        let runtime_dir = runtime_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.join("run"));
        let state_dir = dir.join("state");
        for d in [&state_dir, &dir.join("etc"), &dir.join("units")] {
            std::fs::create_dir_all(d).unwrap();
        }
        if runtime_dir.starts_with(&dir) {
            std::fs::create_dir_all(&runtime_dir).unwrap();
            chown(&runtime_dir, SERVICE_USER);
        }
        chown(&state_dir, SERVICE_USER);
        let port = free_port();
        let mut env = BTreeMap::new();
        let rt = runtime_dir.display().to_string();
        for (k, v) in [
            ("RUNTIME_CONTRACT_VERSION", "2026.02-p2".to_string()),
            ("WATCHDOG_RUNTIME_DIR", rt.clone()),
            (
                "WATCHDOG_RESTART_FLAG",
                format!("{rt}/mes_dashboard_restart.flag"),
            ),
            ("WATCHDOG_PID_FILE", format!("{rt}/gunicorn.pid")),
            (
                "WATCHDOG_STATE_FILE",
                state_dir.join("restart_state.json").display().to_string(),
            ),
            ("GUNICORN_BIND", format!("127.0.0.1:{port}")),
            ("CONDA_BIN", c.root.join("bin/conda").display().to_string()),
            ("CONDA_ENV_NAME", "app".to_string()),
            ("WARDEN_APP_UNIT", APP_UNIT.to_string()),
            ("WARDEN_UNITS", format!("{WATCHDOG_UNIT},{WORKER_UNIT}")),
        ] {
            env.insert(k.to_string(), v);
        }
        let f = Fixture {
            env_file: dir.join("etc/app.env"),
            units_dir: dir.join("units"),
            conda_root: c.root.clone(),
            prefix: c.prefix.clone(),
            dir,
            runtime_dir,
            state_dir,
            port,
            env,
        };
        f.write_env();
        f.write_units();
        f
    }

    pub fn write_env(&self) {
        let mut text = String::from("# the contract shared by every unit\n");
        for (k, v) in &self.env {
            text.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(&self.env_file, text).unwrap();
        chmod(&self.env_file, 0o640);
        let st = Command::new("chown")
            .arg(format!("root:{SERVICE_USER}"))
            .arg(&self.env_file)
            .status()
            .unwrap();
        assert!(st.success());
    }

    pub fn set(&mut self, k: &str, v: &str) {
        self.env.insert(k.into(), v.into());
        self.write_env();
    }

    pub fn unset(&mut self, k: &str) {
        self.env.remove(k);
        self.write_env();
    }

    pub fn pid_file(&self) -> PathBuf {
        PathBuf::from(&self.env["WATCHDOG_PID_FILE"])
    }

    pub fn app_unit_text(&self) -> String {
        format!(
            "[Unit]\nDescription=MES dashboard (gunicorn)\n\n[Service]\nType=notify\nUser={u}\nGroup={u}\n\
             EnvironmentFile={env}\nExecStartPre={w} check\n\
             ExecStart={p}/bin/gunicorn --pid ${{WATCHDOG_PID_FILE}} --bind ${{GUNICORN_BIND}} \\\n  \
             --workers 2 --no-control-socket --chdir {app} app:app\nPIDFile={pid}\n",
            u = SERVICE_USER,
            env = self.env_file.display(),
            w = warden().display(),
            p = self.prefix.display(),
            app = repo().join("examples/gunicorn-app").display(),
            pid = self.pid_file().display(),
        )
    }

    pub fn watchdog_unit_text(&self) -> String {
        format!(
            "[Unit]\nDescription=MES dashboard watchdog\nRequires={APP_UNIT}\nAfter={APP_UNIT}\n\n\
             [Service]\nType=notify\nUser={SERVICE_USER}\nSupplementaryGroups=warden\n\
             EnvironmentFile={env}\n\
             ExecStartPre={w} check --phase running\nExecStart={w} run\n",
            env = self.env_file.display(),
            w = warden().display(),
        )
    }

    pub fn worker_unit_text(&self) -> String {
        format!(
            "[Unit]\nDescription=MES dashboard worker\n\n[Service]\nUser={SERVICE_USER}\nEnvironmentFile={env}\n\
             ExecStart={p}/bin/python -c \"import signal; signal.pause()\"\n",
            env = self.env_file.display(),
            p = self.prefix.display(),
        )
    }

    pub fn write_units(&self) {
        self.write_unit(APP_UNIT, &self.app_unit_text());
        self.write_unit(WATCHDOG_UNIT, &self.watchdog_unit_text());
        self.write_unit(WORKER_UNIT, &self.worker_unit_text());
    }

    pub fn write_unit(&self, name: &str, text: &str) {
        std::fs::write(self.units_dir.join(name), text).unwrap();
    }

    /// The app unit creates the runtime directory `/run/NAME` and keeps it when it stops.
    pub fn app_owns_runtime_dir(&self, name: &str) {
        self.edit_unit(APP_UNIT, |t| {
            t.replace(
                "[Service]\n",
                &format!("[Service]\nRuntimeDirectory={name}\nRuntimeDirectoryPreserve=yes\n"),
            )
        });
    }

    /// The app unit serves the app in `dir` instead of the bundled example, with `lines` added
    /// to its `[Service]` section.
    pub fn serve_app_from(&self, dir: &Path, lines: &str) {
        self.edit_unit(APP_UNIT, |t| {
            t.replace(
                &repo().join("examples/gunicorn-app").display().to_string(),
                &dir.display().to_string(),
            )
            .replace("[Service]\n", &format!("[Service]\n{lines}"))
        });
    }

    /// The app unit serves the tests' health app (`tests/apps/health_app.py`) instead of the
    /// example; returns the file whose word (`healthy`, `saturated`, `db_down`, `hang`,
    /// `flap`, `fail`) its `/health` answers as, `healthy` to begin with.
    pub fn serve_health_app(&self) -> PathBuf {
        let app = self.dir.join("app");
        std::fs::create_dir_all(&app).unwrap();
        std::fs::copy(repo().join("tests/apps/health_app.py"), app.join("app.py")).unwrap();
        chmod(&app, 0o755);
        let scenario = self.dir.join("scenario");
        // The app's user writes the flapping count beside it.
        for (file, text) in [
            (scenario.clone(), "healthy"),
            (self.dir.join("scenario.count"), "0"),
        ] {
            std::fs::write(&file, text).unwrap();
            chmod(&file, 0o666);
        }
        self.serve_app_from(
            &app,
            &format!("Environment=HEALTH_SCENARIO={}\n", scenario.display()),
        );
        scenario
    }

    pub fn edit_unit(&self, name: &str, f: impl FnOnce(String) -> String) {
        let p = self.units_dir.join(name);
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, f(t)).unwrap();
    }

    /// Gives this fixture its own copy of the conda install, to break without affecting others.
    /// The copy's scripts are re-pointed at the copy, as a real move plus reinstall would.
    pub fn own_prefix(&mut self) {
        let root = self.dir.join("conda");
        let st = Command::new("cp")
            .arg("-a")
            .arg(&self.conda_root)
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success());
        let prefix = root.join("envs/app");
        for script in ["gunicorn", "pip", "pip3"] {
            let p = prefix.join("bin").join(script);
            if let Ok(t) = std::fs::read_to_string(&p) {
                let fixed = t.replacen(
                    &self.prefix.display().to_string(),
                    &prefix.display().to_string(),
                    1,
                );
                std::fs::write(&p, fixed).unwrap();
            }
        }
        self.conda_root = root.clone();
        self.prefix = prefix;
        self.set("CONDA_BIN", &root.join("bin/conda").display().to_string());
        self.write_units();
    }

    /// `warden check` offline against this fixture, with a clean environment.
    pub fn check(&self, extra: &[&str]) -> Output {
        self.warden(&["check"], extra)
    }

    pub fn warden(&self, cmd: &[&str], extra: &[&str]) -> Output {
        let mut c = Command::new(warden());
        c.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .args(cmd)
            .arg("--env-file")
            .arg(&self.env_file)
            .arg("--unit-path")
            .arg(&self.units_dir)
            .args(extra);
        c.output().unwrap()
    }

    /// The codes of the findings of a JSON check.
    pub fn codes(&self, extra: &[&str]) -> (i32, Vec<String>, serde_json::Value) {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.check(&args);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let codes = doc["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["code"].as_str().unwrap().to_string())
            .collect();
        (out.status.code().unwrap_or(-1), codes, doc)
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A real systemd as PID 1 of private namespaces (tests/harness/sysbox.sh), torn down on drop.
pub struct Sandbox {
    pub dir: PathBuf,
    pub bus: String,
    binds: String,
}

impl Sandbox {
    /// `binds`: host directories that stay writable inside. Pass [`fixture_base`] so that the
    /// fixtures and the shared conda install are visible even when they live below /var/tmp,
    /// which the sandbox covers with a tmpfs.
    pub fn boot(name: &str, binds: &[&Path]) -> Sandbox {
        Self::boot_with_etc(name, binds, None)
    }

    /// As [`Sandbox::boot`], with `etc`'s files laid over the sandbox's /etc (an instance's
    /// `warden/APP.env`, say); the host's /etc is not touched.
    pub fn boot_with_etc(name: &str, binds: &[&Path], etc: Option<&Path>) -> Sandbox {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the live tests boot systemd in namespaces and need root"
        );
        let dir = PathBuf::from(format!("/tmp/warden-sysbox-{name}"));
        let binds = binds
            .iter()
            .map(|b| b.display().to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let out = Command::new("bash")
            .arg(Self::script())
            .arg("up")
            .env("SYSBOX_DIR", &dir)
            .env("SYSBOX_BINDS", &binds)
            .env(
                "SYSBOX_DBUS_POLICY",
                repo().join("systemd/io.warden.Agent.conf"),
            )
            // The package's groups (sysusers): the agents own their names as `warden`.
            .env("SYSBOX_GROUPS", "warden warden-admin")
            .env("SYSBOX_ETC", etc.map(Path::as_os_str).unwrap_or_default())
            .output()
            .unwrap();
        assert!(out.status.success(), "sandbox boot failed: {}", text(&out));
        Sandbox {
            bus: format!("unix:path={}/run/dbus/system_bus_socket", dir.display()),
            dir,
            binds,
        }
    }

    fn script() -> PathBuf {
        repo().join("tests/harness/sysbox.sh")
    }

    pub fn unit_dir(&self) -> PathBuf {
        self.dir.join("run/systemd/system")
    }

    /// The host path of a path under the sandbox's /run.
    pub fn run_path(&self, inside: &Path) -> PathBuf {
        self.dir
            .join("run")
            .join(inside.strip_prefix("/run").unwrap())
    }

    pub fn install_unit(&self, name: &str, text: &str) {
        std::fs::create_dir_all(self.unit_dir()).unwrap();
        std::fs::write(self.unit_dir().join(name), text).unwrap();
    }

    /// Runs a command inside the sandbox's namespaces; it returns when the command does.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(Self::script())
            .arg("run")
            .args(args)
            .env("SYSBOX_DIR", &self.dir)
            .output()
            .unwrap()
    }

    pub fn systemctl(&self, args: &[&str]) -> Output {
        let mut a = vec!["systemctl", "--no-pager"];
        a.extend_from_slice(args);
        self.run(&a)
    }

    /// Installs the fixture's three units, reloads, and starts `start` in order (each must
    /// succeed; the journal of a failing one is in the message).
    pub fn install_and_start(&self, f: &Fixture, start: &[&str]) {
        for u in [APP_UNIT, WATCHDOG_UNIT, WORKER_UNIT] {
            self.install_unit(u, &std::fs::read_to_string(f.units_dir.join(u)).unwrap());
        }
        self.daemon_reload();
        for u in start {
            let o = self.systemctl(&["start", u]);
            assert!(o.status.success(), "{u}: {}\n{}", text(&o), self.journal(u));
        }
    }

    pub fn daemon_reload(&self) {
        let o = self.systemctl(&["daemon-reload"]);
        assert!(o.status.success(), "daemon-reload: {}", text(&o));
    }

    pub fn prop(&self, unit: &str, prop: &str) -> String {
        let o = self.systemctl(&["show", "-p", prop, "--value", unit]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// The unit's journal, verbose (all fields). journald is asked to write out everything
    /// logged so far first, so nothing logged before the call is missing.
    pub fn journal(&self, unit: &str) -> String {
        self.journal_query(&["-u", unit])
    }

    /// Journal entries matching `args` (`-u UNIT`, `FIELD=value`), verbose, after a sync.
    pub fn journal_query(&self, args: &[&str]) -> String {
        let sync = self.run(&["journalctl", "--sync"]);
        assert!(sync.status.success(), "journalctl --sync: {}", text(&sync));
        let o = Command::new("bash")
            .arg(Self::script())
            .arg("journal")
            .args(args)
            .args(["-o", "verbose"])
            .env("SYSBOX_DIR", &self.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs warden on the host against the sandbox's bus.
    pub fn warden(&self, args: &[&str]) -> Output {
        Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Self::script())
            .arg("down")
            .env("SYSBOX_DIR", &self.dir)
            .env("SYSBOX_BINDS", &self.binds)
            .status();
    }
}

/// Events in `dir` (keep the watcher alive as long as the receiver is used).
pub fn watch_dir(
    dir: &Path,
) -> (
    notify::RecommendedWatcher,
    std::sync::mpsc::Receiver<notify::Result<notify::Event>>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(tx).unwrap();
    notify::Watcher::watch(&mut w, dir, notify::RecursiveMode::NonRecursive).unwrap();
    (w, rx)
}

/// Waits for `file` to be replaced (the agent's atomic state writes rename into place).
pub fn await_replaced(rx: &std::sync::mpsc::Receiver<notify::Result<notify::Event>>, file: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ev = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{} was not written", file.display()));
        if let Ok(ev) = ev
            && ev.paths.iter().any(|p| p == file)
            // One rename is reported twice (its `To` half and `Both`): count the `To` half.
            && ev.kind
                == notify::EventKind::Modify(notify::event::ModifyKind::Name(
                    notify::event::RenameMode::To,
                ))
        {
            return;
        }
    }
}

/// A gunicorn master that is stopped when the test ends, passed or not.
pub struct Gunicorn(pub std::process::Child);

impl Drop for Gunicorn {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// Starts the fixture's gunicorn (real master and workers) and waits for its READY=1.
pub fn start_gunicorn(f: &Fixture) -> Gunicorn {
    start_gunicorn_with(f, &[])
}

/// [`start_gunicorn`] with more gunicorn options (`extra`).
pub fn start_gunicorn_with(f: &Fixture, extra: &[&str]) -> Gunicorn {
    start_gunicorn_in(f, &repo().join("examples/gunicorn-app"), extra)
}

/// [`start_gunicorn_with`], serving the app module in `app_dir` (a copy a test may break).
pub fn start_gunicorn_in(f: &Fixture, app_dir: &Path, extra: &[&str]) -> Gunicorn {
    let sock_path = f.dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let child = Command::new(f.prefix.join("bin/gunicorn"))
        .args([
            "--pid",
            f.pid_file().to_str().unwrap(),
            "--bind",
            &f.env["GUNICORN_BIND"],
        ])
        .args(["--workers", "2", "--no-control-socket"])
        .args(extra)
        .arg("--chdir")
        .arg(app_dir)
        .arg("app:app")
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Gunicorn(child);
    let mut buf = [0u8; 256];
    loop {
        let n = recv(&sock, &mut buf)
            .unwrap_or_else(|e| panic!("gunicorn did not report READY=1: {e}"));
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break;
        }
    }
    child
}

/// `recv` on a notify socket, retried when a signal interrupts it.
pub fn recv(sock: &std::os::unix::net::UnixDatagram, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match sock.recv(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Waits for `master` to have `n` workers. Worker forks have no event to await (gunicorn's
/// READY=1 comes before it forks them), so this polls, bounded by a deadline.
pub fn await_workers(master: u32, n: usize) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = warden::platform::process::children(master);
        if now.len() == n || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::yield_now();
    }
}

/// `GET /` of the app at `bind` (`host:port`): the status code and the JSON body (`null` when
/// it is not JSON).
pub fn http_get(bind: &str) -> (u16, serde_json::Value) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(bind).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    let code = r
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        code,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// Waits for `master` to have `n` workers that have booted (imported the app and entered their
/// loop): until then a worker still reads the app's code from disk.
pub fn await_booted(master: u32, n: usize) -> Vec<u32> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = warden::platform::process::children(master);
        let booted = now
            .iter()
            .all(|w| warden::platform::process::worker_booted(*w) == Some(true));
        if (now.len() == n && booted) || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::yield_now();
    }
}

/// systemd's view of a unit: whether it still runs as the same, fed, process.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitHealth {
    pub active_state: String,
    pub n_restarts: String,
    /// In the sandbox's pid namespace, as systemd reports it.
    pub main_pid: String,
    /// "Watchdog timeout" lines systemd logged for the unit.
    pub watchdog_timeouts: usize,
}

impl Sandbox {
    /// Host PIDs of a unit's processes (its cgroup, seen from the host), sorted.
    pub fn unit_host_pids(&self, unit: &str) -> Vec<u32> {
        let cg = std::fs::read_to_string(self.dir.join("cgroup")).unwrap();
        let procs = Path::new(cg.trim()).join(format!("system.slice/{unit}/cgroup.procs"));
        let mut pids: Vec<u32> = std::fs::read_to_string(&procs)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The host PID of the unit's main process (systemd reports it in the sandbox's namespace).
    pub fn main_host_pid(&self, unit: &str) -> i32 {
        let ns = self.prop(unit, "MainPID");
        self.unit_host_pids(unit)
            .into_iter()
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status"))
                    .unwrap_or_default()
                    .lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|l| l.split_whitespace().last().map(|s| s == ns))
                    .unwrap_or(false)
            })
            .map(|p| p as i32)
            .unwrap_or_else(|| panic!("no host PID for {unit}'s MainPID {ns}"))
    }

    /// What systemd says of the unit: state, restarts, main PID, and its watchdog timeouts
    /// from the journal.
    pub fn watchdog_health(&self, unit: &str) -> UnitHealth {
        let o = self.systemctl(&["show", "-p", "ActiveState,NRestarts,MainPID", unit]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let get = |k: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        UnitHealth {
            active_state: get("ActiveState"),
            n_restarts: get("NRestarts"),
            main_pid: get("MainPID"),
            watchdog_timeouts: self
                .journal_query(&["-u", unit])
                .matches("Watchdog timeout")
                .count(),
        }
    }
}

/// A seed for a randomized test: `var` from the environment (to replay a run), else the clock.
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// The app and the agent as units of a fresh sandbox, started: the agent with `WatchdogSec=`,
/// `Restart=on-failure`, the kill-switch and status files in the runtime directory, `env` in
/// the contract and `service` as more `[Service]` lines. Returns the runtime directory too.
pub fn boot_live(
    name: &str,
    watchdog_sec: u32,
    env: &[(&str, &str)],
    service: &str,
) -> (Sandbox, Fixture, PathBuf) {
    let rt = PathBuf::from(format!("/run/{name}"));
    let mut f = Fixture::with_runtime_dir(name, Some(&rt));
    let sb = Sandbox::boot(name, &[&fixture_base()]);
    f.set(
        "WARDEN_KILL_SWITCH_FILE",
        &format!("{}/kill_switch.json", rt.display()),
    );
    f.set(
        "WARDEN_STATUS_FILE",
        &format!("{}/status.json", rt.display()),
    );
    for (k, v) in env {
        f.set(k, v);
    }
    f.app_owns_runtime_dir(name);
    let wd = f.watchdog_unit_text().replace(
        "[Service]\n",
        &format!(
            "[Service]\nWatchdogSec={watchdog_sec}\nRestart=on-failure\nTimeoutStopSec=5\n{service}"
        ),
    );
    f.write_unit(WATCHDOG_UNIT, &wd);
    sb.install_and_start(&f, &[APP_UNIT, WATCHDOG_UNIT]);
    // The app is active once its master is ready, before it forks its two workers.
    await_workers(sb.main_host_pid(APP_UNIT) as u32, 2);
    (sb, f, rt)
}

/// PropertiesChanged of the agent's object, as a subscriber on the bus sees them. Returns
/// once the subscription is in place.
pub fn subscribe(bus: &str) -> std::sync::mpsc::Receiver<(String, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let bus = bus.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(bus.as_str())
                .build()
                .await
                .unwrap();
            let props = zbus::fdo::PropertiesProxy::builder(&conn)
                .destination(agent_bus_name())
                .path(warden::control::dbus::OBJECT_PATH)
                .build()
                .await
                .unwrap();
            let mut changes = props.receive_properties_changed().await.unwrap();
            ready_tx.send(()).unwrap();
            loop {
                let next = std::future::poll_fn(|cx| {
                    futures_core::Stream::poll_next(std::pin::Pin::new(&mut changes), cx)
                });
                let Some(sig) = next.await else { return };
                let Ok(a) = sig.args() else { continue };
                for (k, v) in a.changed_properties() {
                    if tx.send((k.to_string(), format!("{v:?}"))).is_err() {
                        return;
                    }
                }
            }
        });
    });
    ready
        .recv_timeout(Duration::from_secs(30))
        .expect("subscribed to PropertiesChanged");
    rx
}

pub fn await_change(rx: &std::sync::mpsc::Receiver<(String, String)>, prop: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (k, v) = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no PropertiesChanged {prop} = {want}"));
        if k == prop && v.contains(want) {
            return;
        }
    }
}

/// The most spans `(start, end)` in progress at once (reloads, from the masters' stamps); spans
/// that only touch do not overlap.
pub fn most_at_once(spans: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = spans.iter().flat_map(|&(a, b)| [(a, 1), (b, -1)]).collect();
    // An end before a start at the same instant.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}
