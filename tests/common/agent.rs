//! `warden run` as a process, outside systemd, talking sd_notify to a socket the test owns.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Fixture, recv, warden};

pub struct Agent {
    pub child: Child,
    notify: UnixDatagram,
}

impl Agent {
    pub fn start(f: &Fixture) -> Agent {
        let sock = f.dir.join("agent-notify.sock");
        let _ = std::fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let child = Command::new(warden())
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("NOTIFY_SOCKET", &sock)
            .args(["run", "--env-file"])
            .arg(&f.env_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut a = Agent { child, notify };
        a.await_msg("READY=1");
        a
    }

    /// The next sd_notify datagram containing `what` (others are skipped).
    pub fn await_msg(&mut self, what: &str) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = recv(&self.notify, &mut buf)
                .unwrap_or_else(|e| panic!("no {what} from the agent: {e}"));
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.contains(what) {
                return m;
            }
        }
    }

    /// Writes the flag as the MES admin API does (temp file, rename) and waits for the agent's
    /// STATUS after handling it.
    pub fn request(&mut self, f: &Fixture, body: &str) -> serde_json::Value {
        let flag = std::path::PathBuf::from(&f.env["WATCHDOG_RESTART_FLAG"]);
        let tmp = flag.with_extension("flag.tmp");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &flag).unwrap();
        self.await_msg("STATUS=");
        last_entry(f)
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

pub fn last_entry(f: &Fixture) -> serde_json::Value {
    let p = &f.env["WATCHDOG_STATE_FILE"];
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    doc["history"].as_array().unwrap().last().cloned().unwrap()
}
