//! A real three-member etcd cluster on loopback (Debian's etcd, from `tests/harness/deps.sh`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use warden::platform::etcd::Etcd;
use warden::platform::http::HealthUrl;

use super::free_port;

/// Where tests/harness/deps.sh puts etcd, taken out of Debian's etcd-server package.
const ETCD_CACHE: &str = "/var/cache/warden-ci/bin/etcd";

pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(ETCD_CACHE)).filter(|p| p.exists()))
        .or_else(|| Some(PathBuf::from("/usr/bin/etcd")).filter(|p| p.exists()))
        .expect("etcd not found: run tests/harness/deps.sh (it fetches it), or set ETCD")
}

/// Three members on loopback, each with its data directory; stopped when dropped.
pub struct Cluster {
    members: Vec<Option<Child>>,
    pub clients: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let clients: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{p}"))
            .collect();
        let members = (0..3)
            .map(|i| {
                let client = format!("http://127.0.0.1:{}", clients[i]);
                let peer = format!("http://127.0.0.1:{}", peers[i]);
                Some(
                    Command::new(etcd_bin())
                        .args(["--name", &format!("m{i}")])
                        .arg("--data-dir")
                        .arg(dir.path().join(format!("m{i}")))
                        .args(["--listen-client-urls", &client])
                        .args(["--advertise-client-urls", &client])
                        .args(["--listen-peer-urls", &peer])
                        .args(["--initial-advertise-peer-urls", &peer])
                        .args(["--initial-cluster", &initial.join(",")])
                        .args(["--initial-cluster-state", "new"])
                        .args(["--initial-cluster-token", "warden-tests"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                )
            })
            .collect();
        let c = Cluster {
            members,
            clients,
            _dir: dir,
        };
        // Ready when a lease can be granted: the members have elected a leader.
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.client().grant(5).is_err() {
            assert!(Instant::now() < deadline, "the cluster did not form");
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    pub fn client(&self) -> Etcd {
        let eps = self
            .clients
            .iter()
            .map(|p| HealthUrl {
                host: "127.0.0.1".into(),
                port: *p,
                path: "/".into(),
            })
            .collect();
        Etcd::new(eps, Duration::from_secs(2))
    }

    pub fn stop(&mut self, i: usize) {
        if let Some(mut m) = self.members[i].take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.stop(i);
        }
    }
}

impl Cluster {
    /// The members' client URLs, as `WARDEN_ETCD_ENDPOINTS` takes them.
    pub fn endpoints(&self) -> String {
        self.clients
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One member on loopback with `extra` flags (TLS, authentication); `scheme` its clients'.
pub struct Single {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl Single {
    pub fn start(scheme: &str, extra: &[&str]) -> Single {
        let dir = tempfile::tempdir().unwrap();
        let (port, peer) = (free_port(), free_port());
        let client = format!("{scheme}://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let child = Command::new(etcd_bin())
            .args(["--name", "solo"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("solo={peer}")])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Single { child, port, dir }
    }

    /// Waits until `ready` answers: the member serves its clients.
    pub fn await_ready(&self, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready() {
            assert!(Instant::now() < deadline, "the member did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
