use super::*;

fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn value(text: &str, series: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .to_string()
}

fn number(text: &str, series: &str) -> f64 {
    value(text, series).parse().unwrap()
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new("1.0 \"rc\"\\x\nnext");
    let text = m.render();
    assert!(
        text.contains("warden_build_info{version=\"1.0 \\\"rc\\\"\\\\x\\nnext\"} 1\n"),
        "{text}"
    );
    // One sample line: the newline did not break it.
    assert_eq!(lines_of(&text, "warden_build_info{").len(), 1);
}

#[test]
fn every_family_has_help_and_type_once() {
    let m = Metrics::new("0.1.0");
    m.set_contract_valid(true);
    let text = m.render();
    for name in [
        "warden_build_info",
        "warden_start_time_seconds",
        "warden_restarts_total",
        "warden_policy_state",
        "warden_policy_attempts_in_window",
        "warden_policy_cooldown_remaining_seconds",
        "warden_kill_switch_engaged",
        "warden_contract_valid",
        "warden_reload_duration_seconds",
        "warden_flag_to_signal_seconds",
        "warden_watchdog_pings_total",
    ] {
        assert_eq!(
            lines_of(&text, &format!("# HELP {name} ")).len(),
            1,
            "{name}: {text}"
        );
        assert_eq!(
            lines_of(&text, &format!("# TYPE {name} ")).len(),
            1,
            "{name}: {text}"
        );
    }
    assert!(
        text.contains("# TYPE warden_restarts_total counter\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"), "0.0.4, not OpenMetrics");
    assert!(text.ends_with('\n'));
}

#[test]
fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
    let m = Metrics::new("t");
    for d in [
        Duration::from_micros(50),  // first bucket
        Duration::from_micros(100), // exactly on the first bound: still in it
        Duration::from_millis(3),
        Duration::from_secs(20), // above every bound
    ] {
        m.observe_flag_to_signal(d);
    }
    let text = m.render();
    let name = "warden_flag_to_signal_seconds";
    let buckets = lines_of(&text, &format!("{name}_bucket{{"));
    assert_eq!(buckets.len(), FLAG_TO_SIGNAL_BUCKETS.len() + 1);
    assert_eq!(buckets[0], format!("{name}_bucket{{le=\"0.0001\"}} 2"));
    assert_eq!(
        value(&text, &format!("{name}_bucket{{le=\"0.0025\"}}")),
        "2"
    );
    assert_eq!(value(&text, &format!("{name}_bucket{{le=\"0.005\"}}")), "3");
    assert_eq!(value(&text, &format!("{name}_bucket{{le=\"10\"}}")), "3");
    assert_eq!(
        *buckets.last().unwrap(),
        format!("{name}_bucket{{le=\"+Inf\"}} 4")
    );
    let counts: Vec<u64> = buckets
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert_eq!(value(&text, &format!("{name}_count")), "4");
    assert_eq!(value(&text, &format!("{name}_sum")), "20.00315");
    // The other histogram is untouched, and complete.
    assert_eq!(
        value(&text, "warden_reload_duration_seconds_bucket{le=\"+Inf\"}"),
        "0"
    );
    assert_eq!(number(&text, "warden_reload_duration_seconds_sum"), 0.0);
}

#[test]
fn absurd_durations_are_counted_and_summed_without_wrapping() {
    let m = Metrics::new("t");
    m.observe_reload(Duration::MAX);
    m.observe_reload(Duration::MAX);
    let text = m.render();
    assert_eq!(value(&text, "warden_reload_duration_seconds_count"), "2");
    let sum = number(&text, "warden_reload_duration_seconds_sum");
    assert!(sum.is_finite() && sum > 3e19, "{sum}");
}

#[test]
fn restarts_are_counted_by_decision_and_source_from_zero() {
    let m = Metrics::new("t");
    m.record_restart(Decision::Executed, RequestSource::Auto);
    m.record_restart(Decision::Executed, RequestSource::Auto);
    m.record_restart(Decision::Rejected, RequestSource::Manual);
    m.record_restart(Decision::Executed, RequestSource::KillSwitch);
    // Not an outcome: not counted.
    m.record_restart(Decision::Intended, RequestSource::Manual);
    let text = m.render();
    // Every outcome by every source, from zero.
    assert_eq!(
        lines_of(&text, "warden_restarts_total{").len(),
        Decision::OUTCOMES.len() * RequestSource::ALL.len()
    );
    let v = |d: &str, s: &str| {
        value(
            &text,
            &format!("warden_restarts_total{{decision=\"{d}\",source=\"{s}\"}}"),
        )
    };
    assert_eq!(v("executed", "auto"), "2");
    assert_eq!(v("rejected", "manual"), "1");
    assert_eq!(v("executed", "kill_switch"), "1");
    assert_eq!(v("blocked", "auto"), "0");
    assert_eq!(v("failed", "manual"), "0");
}

fn eval(state: PolicyState, attempts: u32, cooldown_s: u64) -> Evaluation {
    Evaluation {
        state,
        allowed: state == PolicyState::Allowed,
        cooldown: cooldown_s > 0,
        blocked: state == PolicyState::Blocked,
        cooldown_remaining_seconds: cooldown_s,
        attempts_in_window: attempts,
        retry_budget: 3,
        churn_threshold: 3,
        window_seconds: 600,
    }
}

#[test]
fn policy_gauges() {
    let m = Metrics::new("t");
    let state_of = |text: &str| {
        PolicyState::ALL
            .iter()
            .filter(|s| {
                value(
                    text,
                    &format!("warden_policy_state{{state=\"{}\"}}", s.as_str()),
                ) == "1"
            })
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(state_of(&m.render()), ["allowed"]);

    m.set_policy(&eval(PolicyState::Blocked, 3, 40));
    let text = m.render();
    assert_eq!(state_of(&text), ["blocked"]);
    assert_eq!(value(&text, "warden_policy_attempts_in_window"), "3");
    let left: u64 = value(&text, "warden_policy_cooldown_remaining_seconds")
        .parse()
        .unwrap();
    assert!((1..=40).contains(&left), "{left}");

    m.set_policy(&eval(PolicyState::Cooldown, 1, 60));
    assert_eq!(state_of(&m.render()), ["cooldown"]);

    // A cooldown whose end has passed reads as allowed without a new evaluation.
    *m.live.policy.lock().unwrap() = PolicySnapshot {
        state: PolicyState::Cooldown,
        attempts: 1,
        cooldown_until: Some(Instant::now()),
    };
    let text = m.render();
    assert_eq!(state_of(&text), ["allowed"]);
    assert_eq!(
        value(&text, "warden_policy_cooldown_remaining_seconds"),
        "0"
    );
}

#[test]
fn switch_contract_and_pings() {
    let m = Metrics::new("t");
    let text = m.render();
    assert!(
        !text.contains("warden_contract_valid"),
        "unknown until checked"
    );
    assert_eq!(value(&text, "warden_kill_switch_engaged"), "0");
    m.set_kill_switch(true);
    m.set_contract_valid(false);
    m.watchdog_ping();
    m.watchdog_ping();
    let text = m.render();
    assert_eq!(value(&text, "warden_kill_switch_engaged"), "1");
    assert_eq!(value(&text, "warden_contract_valid"), "0");
    assert_eq!(value(&text, "warden_watchdog_pings_total"), "2");
    m.set_contract_valid(true);
    assert_eq!(value(&m.render(), "warden_contract_valid"), "1");
}

#[test]
fn start_time_is_now() {
    let before = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let text = Metrics::new("t").render();
    let t = number(&text, "warden_start_time_seconds");
    assert!(t >= before.floor(), "{t} < {before}");
}

#[test]
fn an_apps_agent_labels_every_series_with_its_app() {
    let m = Metrics::for_app("t", "shop");
    m.set_contract_valid(true);
    let text = m.render();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(samples.len() > 10, "{text}");
    for s in samples {
        assert!(s.contains("app=\"shop\""), "{s}");
    }
}

// Shared between the event loop and the endpoint's task.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Metrics>();
};

#[test]
fn preflights_are_timed_when_they_pass_and_counted_when_they_refuse() {
    use crate::ledger::entry::Entry;
    use crate::ledger::model::{Reason, Timings};
    let m = Metrics::new("t");
    m.count(&Entry {
        decision: Some(Decision::Executed.into()),
        timings: Some(Timings {
            preflight_ms: Some(420.0),
            ..Timings::default()
        }),
        ..Entry::default()
    });
    m.count(&Entry {
        decision: Some(Decision::Failed.into()),
        decision_reason: Some(Reason::PreflightFailed.into()),
        ..Entry::default()
    });
    let text = m.render();
    assert_eq!(value(&text, "warden_preflight_duration_seconds_count"), "1");
    assert_eq!(
        value(
            &text,
            "warden_preflight_duration_seconds_bucket{le=\"0.5\"}"
        ),
        "1"
    );
    assert_eq!(value(&text, "warden_preflight_failures_total"), "1");
}
