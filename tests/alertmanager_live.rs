//! The Alertmanager gate's client against a real Alertmanager (Debian's, on loopback, from
//! `tests/harness/deps.sh`): an alert posted is seen by its matchers and not by others, a
//! resolved or silenced one is not, a regex Alertmanager cannot compile is its refusal, a route
//! prefix is kept, and an Alertmanager stopped is unreachable.

mod common;

use std::time::{Duration, Instant};

use common::alertmanager::*;

use serde_json::{Value, json};
use warden::platform::alertmanager::{Alertmanager, Firing, GateError, Matchers};
use warden::platform::http;

fn matchers(s: &str) -> Matchers {
    s.parse().unwrap()
}

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
