//! The Alertmanager gate's client against a real Alertmanager (Debian's, on loopback, from
//! `tests/harness/deps.sh`): an alert posted is seen by its matchers and not by others, a
//! resolved or silenced one is not, a regex Alertmanager cannot compile is its refusal, a route
//! prefix is kept, and an Alertmanager stopped is unreachable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use warden::platform::alertmanager::{Alertmanager, Firing, GateError, Matchers};
use warden::platform::http::{self, HealthUrl};

/// Where tests/harness/deps.sh puts Alertmanager, taken out of Debian's prometheus-alertmanager
/// package.
const ALERTMANAGER_CACHE: &str = "/var/cache/warden-ci/bin/alertmanager";

/// The one deps.sh fetched (under `WARDEN_CI_CACHE`), else `ALERTMANAGER`, else Debian's.
fn alertmanager_bin() -> PathBuf {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every alert goes to a receiver that sends nothing.
const CONFIG: &str = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n";

/// One Alertmanager on loopback, without clustering, its storage and log in a temporary
/// directory; stopped when dropped.
struct Am {
    child: Option<Child>,
    port: u16,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Am {
    fn start() -> Am {
        Am::start_under("")
    }

    /// Served under `prefix` (`--web.route-prefix`), `""` for none.
    fn start_under(prefix: &str) -> Am {
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> HealthUrl {
        format!("http://127.0.0.1:{}{}{path}", self.port, self.prefix)
            .parse()
            .unwrap()
    }

    fn await_ready(&mut self) {
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
    fn gate(&self) -> Alertmanager {
        Alertmanager::new(self.url(""), Duration::from_secs(5))
    }

    fn post(&self, path: &str, body: &Value) -> Value {
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
    fn alert(&self, labels: &[(&str, &str)], ends_in: chrono::TimeDelta) {
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

    fn stop(&mut self) {
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

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn matchers(s: &str) -> Matchers {
    s.parse().unwrap()
}

const DB_DOWN: [(&str, &str); 2] = [("alertname", "DatabaseDown"), ("severity", "critical")];

/// Asks until `done` holds of the answer, within a bound; the last answer.
fn await_firing(
    gate: &Alertmanager,
    m: &Matchers,
    done: impl Fn(&[Firing]) -> bool,
) -> Vec<Firing> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = gate.firing(m).unwrap();
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "still {got:?} for {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_firing_alert_is_seen_by_its_matchers_and_not_by_others() {
    let am = Am::start();
    let gate = am.gate();
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(5));
    am.alert(
        &[("alertname", "DiskFull"), ("severity", "warning")],
        chrono::TimeDelta::minutes(5),
    );

    let by_name = matchers(r#"alertname="DatabaseDown""#);
    let got = await_firing(&gate, &by_name, |f| !f.is_empty());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].name, "DatabaseDown");
    assert_eq!(got[0].labels["severity"], "critical");
    assert!(!got[0].fingerprint.is_empty(), "{got:?}");
    assert!(!got[0].starts_at.is_empty(), "{got:?}");

    assert_eq!(gate.firing(&matchers(r#"alertname="Other""#)).unwrap(), []);
    let by_regex = gate.firing(&matchers(r#"severity=~"crit.*""#)).unwrap();
    assert_eq!(
        by_regex.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["DatabaseDown"]
    );
    // Every matcher must hold, the negative ones too.
    assert_eq!(
        gate.firing(&matchers("{severity=~crit.*, alertname!=DatabaseDown}"))
            .unwrap(),
        []
    );
    let mut both = gate
        .firing(&matchers(
            "alertname=~\"Database.*|Disk.*\", severity!~info",
        ))
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect::<Vec<_>>();
    both.sort();
    assert_eq!(both, ["DatabaseDown", "DiskFull"]);
}

#[test]
fn a_resolved_alert_stops_firing() {
    let am = Am::start();
    let gate = am.gate();
    let m = matchers(r#"{alertname="DatabaseDown",severity="critical"}"#);
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(5));
    await_firing(&gate, &m, |f| f.len() == 1);
    // Sent again, ended a minute ago: resolved.
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(-1));
    await_firing(&gate, &m, |f| f.is_empty());
}

#[test]
fn a_silenced_alert_is_not_firing() {
    let am = Am::start();
    let gate = am.gate();
    let m = matchers(r#"alertname="DatabaseDown""#);
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(5));
    await_firing(&gate, &m, |f| f.len() == 1);

    let now = chrono::Utc::now();
    let silence = am.post(
        "/api/v2/silences",
        &json!({
            "matchers": [{"name": "alertname", "value": "DatabaseDown", "isRegex": false, "isEqual": true}],
            "startsAt": stamp(now),
            "endsAt": stamp(now + chrono::TimeDelta::hours(1)),
            "createdBy": "warden tests",
            "comment": "maintenance",
        }),
    );
    assert!(silence["silenceID"].is_string(), "{silence}");
    await_firing(&gate, &m, |f| f.is_empty());

    // Still there, suppressed: what the gate leaves out, not an alert gone.
    let all = http::fetch(
        &am.url("/api/v2/alerts?filter=alertname%3D%22DatabaseDown%22"),
        Duration::from_secs(5),
        1 << 20,
    )
    .unwrap();
    let all: Value = serde_json::from_slice(&all.body).unwrap();
    assert_eq!(all[0]["status"]["state"], "suppressed", "{all}");
}

#[test]
fn a_route_prefix_is_kept() {
    let am = Am::start_under("/alertmanager");
    am.alert(&DB_DOWN, chrono::TimeDelta::minutes(5));
    let m = matchers("alertname=DatabaseDown");
    for base in ["", "/"] {
        let gate = Alertmanager::new(am.url(base), Duration::from_secs(5));
        assert!(gate.url().path.starts_with("/alertmanager"));
        let got = await_firing(&gate, &m, |f| !f.is_empty());
        assert_eq!(got[0].name, "DatabaseDown");
    }
}

#[test]
fn a_regex_alertmanager_cannot_compile_is_refused() {
    let am = Am::start();
    match am.gate().firing(&matchers(r#"alertname=~"(""#)) {
        Err(GateError::Refused { status, detail }) => {
            assert_eq!(status, 400, "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_stopped_alertmanager_is_unreachable() {
    let mut am = Am::start();
    let gate = am.gate();
    let m = matchers(r#"alertname="DatabaseDown""#);
    assert_eq!(gate.firing(&m).unwrap(), []);
    am.stop();
    match gate.firing(&m) {
        Err(GateError::Unreachable(why)) => {
            assert!(why.contains(&am.port.to_string()), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn escaped_values_reach_alertmanager_as_written() {
    let am = Am::start();
    let gate = am.gate();
    am.alert(
        &[
            ("alertname", "Quoted"),
            ("detail", r#"say "hi" \ {now}, then"#),
            ("code", "503"),
        ],
        chrono::TimeDelta::minutes(5),
    );
    let m = matchers(r#"{detail="say \"hi\" \\ {now}, then", code=~"\d+"}"#);
    let got = await_firing(&gate, &m, |f| !f.is_empty());
    assert_eq!(got[0].name, "Quoted");
    assert_eq!(got[0].labels["detail"], r#"say "hi" \ {now}, then"#);
    assert_eq!(
        gate.firing(&matchers(r#"code=~"\d""#)).unwrap(),
        [],
        "the whole value must match"
    );
}
