//! A real Alertmanager on loopback (Debian's, from `tests/harness/deps.sh`): started with a
//! null receiver and no clustering, alerts and silences posted to its API.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden::platform::alertmanager::Alertmanager;
use warden::platform::http::{self, HealthUrl};

use super::free_port;

/// Where tests/harness/deps.sh puts Alertmanager, taken out of Debian's prometheus-alertmanager
/// package.
pub const ALERTMANAGER_CACHE: &str = "/var/cache/warden-ci/bin/alertmanager";

/// The one deps.sh fetched (under `WARDEN_CI_CACHE`), else `ALERTMANAGER`, else Debian's.
pub fn alertmanager_bin() -> PathBuf {
    let cached = std::env::var_os("WARDEN_CI_CACHE")
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(&d).join("bin/alertmanager"))
        .unwrap_or_else(|| PathBuf::from(ALERTMANAGER_CACHE));
    Some(cached)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("ALERTMANAGER")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
        })
        .or_else(|| {
            Some(PathBuf::from("/usr/bin/prometheus-alertmanager")).filter(|p| p.is_file())
        })
        .expect(
            "Alertmanager not found: run tests/harness/deps.sh (it fetches it), or set ALERTMANAGER",
        )
}

/// Every alert goes to a receiver that sends nothing.
pub const CONFIG: &str = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n";

/// One Alertmanager on loopback, without clustering, its storage and log in a temporary
/// directory; stopped when dropped.
pub struct Am {
    child: Option<Child>,
    pub port: u16,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Am {
    pub fn start() -> Am {
        Am::start_under("")
    }

    /// Served under `prefix` (`--web.route-prefix`), `""` for none.
    pub fn start_under(prefix: &str) -> Am {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, CONFIG).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let port = free_port();
        let mut cmd = Command::new(alertmanager_bin());
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        if !prefix.is_empty() {
            cmd.arg(format!("--web.route-prefix={prefix}"));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut am = Am {
            child: Some(child),
            port,
            prefix: prefix.to_string(),
            dir,
        };
        am.await_ready();
        am
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> HealthUrl {
        format!("http://127.0.0.1:{}{}{path}", self.port, self.prefix)
            .parse()
            .unwrap()
    }

    pub fn await_ready(&mut self) {
        let ready = self.url("/-/ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(a) = http::fetch(&ready, Duration::from_millis(500), 1024)
                && a.status == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("Alertmanager exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The gate's client, at the base URL an operator would configure.
    pub fn gate(&self) -> Alertmanager {
        Alertmanager::new(self.url(""), Duration::from_secs(5))
    }

    pub fn post(&self, path: &str, body: &Value) -> Value {
        let a = http::post_json(
            &self.url(path),
            body.to_string().as_bytes(),
            Duration::from_secs(5),
            1 << 20,
        )
        .unwrap();
        assert!(
            (200..300).contains(&a.status),
            "POST {path}: {} {}",
            a.status,
            String::from_utf8_lossy(&a.body)
        );
        serde_json::from_slice(&a.body).unwrap_or(Value::Null)
    }

    /// Posts one alert with these labels, firing from now until `ends_in` from now (in the
    /// past when negative: resolved).
    pub fn alert(&self, labels: &[(&str, &str)], ends_in: chrono::TimeDelta) {
        let now = chrono::Utc::now();
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        self.post(
            "/api/v2/alerts",
            &json!([{
                "labels": labels,
                "annotations": {"summary": "from warden's tests"},
                "startsAt": stamp(now - chrono::TimeDelta::minutes(1)),
                "endsAt": stamp(now + ends_in),
            }]),
        );
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Am {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub const DB_DOWN: [(&str, &str); 2] = [("alertname", "DatabaseDown"), ("severity", "critical")];
