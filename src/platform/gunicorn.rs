//! Gunicorn asked about itself: started as a master runs, or as a unit would start it, with
//! `--print-config`, it prints its effective settings, loads the application (as
//! `--check-config` does) and exits, serving nothing. The agent's preflight and the check's
//! Gunicorn rules both ask it.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the preflight reads of Gunicorn's error: its end, where Python puts the exception.
const ERROR_LINES: usize = 6;
/// The most of Gunicorn's output kept; the rest is read and dropped.
const OUTPUT_CAP: u64 = 64 * 1024;
/// What the service manager gives the master that the check must not take for its own: it is
/// not the service, and must neither notify systemd nor take its sockets.
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// What the preflight learns of Gunicorn's effective settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GunicornSettings {
    /// The master imported the app once: a reload keeps that code.
    pub preload_app: bool,
    /// The control socket (`gunicornc`), `None` when disabled.
    pub control_socket: Option<PathBuf>,
    pub control_socket_mode: Option<u32>,
}

/// Reads `gunicorn --print-config`'s `name = value` lines.
pub fn parse_print_config(text: &str) -> GunicornSettings {
    let mut s = GunicornSettings::default();
    let mut socket = None;
    let mut disabled = false;
    for line in text.lines() {
        let Some((name, value)) = line.split_once(" = ") else {
            continue;
        };
        let value = value.trim();
        match name.trim() {
            "preload_app" => s.preload_app = value == "True",
            "control_socket" => socket = Some(PathBuf::from(value)),
            "control_socket_disable" => disabled = value == "True",
            "control_socket_mode" => s.control_socket_mode = value.parse().ok(),
            _ => {}
        }
    }
    s.control_socket = socket.filter(|_| !disabled);
    s
}

/// A preflight that passed: how long it took, and the settings it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    pub took: Duration,
    pub settings: GunicornSettings,
}

/// How the master runs, as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<std::ffi::OsString>,
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl Launch {
    /// The master `pid`'s launch; `None` when `/proc` does not show it (gone, or another
    /// user's without the right to read it).
    pub fn of(pid: u32) -> Result<Launch, String> {
        use std::os::unix::fs::MetadataExt;
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let read = |name: &str| {
            std::fs::read(dir.join(name))
                .map_err(|e| format!("cannot read /proc/{pid}/{name}: {e}"))
        };
        let nul_split = |bytes: &[u8]| -> Vec<std::ffi::OsString> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| std::ffi::OsStr::from_bytes(s).to_os_string())
                .collect()
        };
        let argv = nul_split(&read("cmdline")?);
        if argv.is_empty() {
            return Err(format!("/proc/{pid}/cmdline is empty"));
        }
        let env = nul_split(&read("environ")?)
            .into_iter()
            .filter_map(|kv| {
                let b = kv.as_bytes();
                let eq = b.iter().position(|c| *c == b'=')?;
                let key = std::ffi::OsStr::from_bytes(&b[..eq]);
                (!NOT_INHERITED.iter().any(|n| key.as_bytes() == n.as_bytes())).then(|| {
                    (
                        key.to_os_string(),
                        std::ffi::OsStr::from_bytes(&b[eq + 1..]).to_os_string(),
                    )
                })
            })
            .collect();
        let cwd = std::fs::read_link(dir.join("cwd"))
            .map_err(|e| format!("cannot read /proc/{pid}/cwd: {e}"))?;
        let meta = std::fs::metadata(&dir).map_err(|e| format!("cannot stat /proc/{pid}: {e}"))?;
        Ok(Launch {
            argv,
            env,
            cwd,
            uid: meta.uid(),
            gid: meta.gid(),
        })
    }

    /// The check's command: the master's, with `--print-config`.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..])
            .arg("--print-config")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // As the master's user: the agent may run as root (a unit without User=).
        if nix::unistd::geteuid().is_root() && self.uid != 0 {
            c.uid(self.uid).gid(self.gid);
        }
        c
    }
}

/// Runs `launch`'s check within `timeout`.
pub fn run(launch: &Launch, timeout: Duration) -> Result<Passed, String> {
    let t0 = Instant::now();
    let mut child = launch.command().spawn().map_err(|e| {
        format!(
            "cannot run {}: {e}",
            std::path::Path::new(&launch.argv[0]).display()
        )
    })?;
    let child_pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let mut stderr = child.stderr.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    // The settings are read on a thread of their own, so that neither pipe fills while the
    // other is drained.
    let printed = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(OUTPUT_CAP).read_to_end(&mut out);
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        out
    });
    // The child is waited for on its own thread, so that this one can give up on time; its
    // PID stays its own (a zombie) until that wait, so the kill below reaches no other.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stderr).take(OUTPUT_CAP).read_to_end(&mut out);
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        let status = child.wait();
        let _ = tx.send((status, out));
    });
    let answer = match rx.recv_timeout(timeout) {
        Ok(a) => Some(a),
        Err(_) => {
            let _ = nix::sys::signal::kill(child_pid, nix::sys::signal::Signal::SIGKILL);
            None
        }
    };
    let _ = waiter.join();
    let printed = printed.join().unwrap_or_default();
    let elapsed = t0.elapsed();
    let Some((status, out)) = answer else {
        return Err(format!(
            "gunicorn --print-config did not finish within {} s",
            timeout.as_secs()
        ));
    };
    let status = status.map_err(|e| format!("cannot wait for gunicorn --print-config: {e}"))?;
    if status.success() {
        return Ok(Passed {
            took: elapsed,
            settings: parse_print_config(&String::from_utf8_lossy(&printed)),
        });
    }
    let text = String::from_utf8_lossy(&out);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(ERROR_LINES)..].join(" | ");
    Err(format!(
        "gunicorn --print-config exited with {status}: {}",
        if tail.is_empty() { "no output" } else { &tail }
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn launch(script: &str) -> Launch {
        Launch {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                script.into(),
                "gunicorn".into(),
            ],
            env: vec![("ANSWER".into(), "42".into())],
            cwd: std::env::temp_dir(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }

    #[test]
    fn the_check_runs_as_the_master_runs_with_check_config() {
        // "$1" is the flag the check adds; the environment is the master's alone.
        let ok = launch(
            r#"[ "$1" = --print-config ] && [ "$ANSWER" = 42 ] && [ -z "$HOME" ] &&
               echo 'preload_app                        = True'"#,
        );
        let passed = run(&ok, Duration::from_secs(10)).unwrap();
        assert!(passed.settings.preload_app);
    }

    #[test]
    fn a_failure_says_the_end_of_gunicorns_error() {
        let bad = launch(
            "echo 'Error while loading the application:' >&2; \
             echo '  File \"app.py\", line 3' >&2; echo 'SyntaxError: invalid syntax' >&2; exit 1",
        );
        let why = run(&bad, Duration::from_secs(10)).unwrap_err();
        assert!(why.contains("exit status: 1"), "{why}");
        assert!(why.ends_with("SyntaxError: invalid syntax"), "{why}");
    }

    #[test]
    fn a_check_that_hangs_is_killed_at_its_timeout() {
        let hung = launch("exec sleep 60");
        let why = run(&hung, Duration::from_millis(200)).unwrap_err();
        assert!(why.contains("did not finish within"), "{why}");
    }

    #[test]
    fn the_printed_settings_are_read() {
        let printed = "bind                               = ['127.0.0.1:8000']\n\
                       control_socket                     = /run/app/gunicorn.ctl\n\
                       control_socket_disable             = False\n\
                       control_socket_mode                = 432\n\
                       preload_app                        = False\n";
        let s = parse_print_config(printed);
        assert_eq!(
            s.control_socket.as_deref(),
            Some(Path::new("/run/app/gunicorn.ctl"))
        );
        assert_eq!(s.control_socket_mode, Some(0o660));
        assert!(!s.preload_app);
        let off = parse_print_config(
            &printed.replace("disable             = False", "disable             = True"),
        );
        assert_eq!(off.control_socket, None);
    }

    #[test]
    fn the_services_own_variables_stay_with_the_master() {
        let me = Launch::of(std::process::id()).unwrap();
        assert!(!me.argv.is_empty());
        assert!(me.env.iter().all(|(k, _)| k.as_bytes() != b"NOTIFY_SOCKET"),);
    }
}
