//! The control surface under load, against the agent and the example app as units of the
//! project's systemd sandbox, over its own system bus. Needs root.
//!
//!     cargo bench --bench control
//!
//! - `Status()` round trips from a client on the bus, one at a time (p50 / p99), beside a
//!   `Get` of one property (the bus's own floor for a call to the agent);
//! - 1,000 `Status()` calls per second sustained for 10 s: the rate achieved and the agent's
//!   CPU (all threads, from /proc);
//! - kill-switch flips: flip → last worker replaced, beside Gunicorn's own reload (signal →
//!   last worker replaced) in the same flip.
//!
//! `WARDEN_BENCH_RUNS` (default 1000) sets the number of sequential calls. Reports min /
//! median / p90 / p99 / max. Nothing is asserted about time.

#[path = "../tests/common/mod.rs"]
mod common;
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use util::*;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("control benchmark skipped: booting the systemd sandbox needs root");
        return;
    }
    let runs: usize = std::env::var("WARDEN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let name = "bench-control";
    let rt = PathBuf::from(format!("/run/{name}"));
    let mut f = Fixture::with_runtime_dir(name, Some(&rt));
    f.set(
        "WARDEN_KILL_SWITCH_FILE",
        &format!("{}/kill_switch.json", rt.display()),
    );
    f.app_owns_runtime_dir(name);
    let sb = Sandbox::boot(name, &[&fixture_base()]);
    let wd = f
        .watchdog_unit_text()
        .replace("[Service]\n", "[Service]\nWatchdogSec=2\n");
    f.write_unit(WATCHDOG_UNIT, &wd);
    sb.install_and_start(&f, &[APP_UNIT, WATCHDOG_UNIT]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt
        .block_on(zbus::connection::Builder::address(sb.bus.as_str()).build())
        .unwrap();
    let agent = rt
        .block_on(warden::control::dbus::Agent1Proxy::new(&conn))
        .unwrap();
    rt.block_on(agent.status()).unwrap(); // warm-up, and proof the path works
    println!("agent and app as units of the systemd sandbox; client on the host, same bus");

    // One at a time.
    let (mut status, mut get) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        let t = Instant::now();
        let doc = rt.block_on(agent.status()).unwrap();
        status.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(doc.starts_with('{'));
        // A Get that goes through zbus's cache would not reach the agent: ask the bus directly.
        let t = Instant::now();
        let reply = rt
            .block_on(conn.call_method(
                Some(warden::control::dbus::BUS_NAME),
                warden::control::dbus::OBJECT_PATH,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(warden::control::dbus::INTERFACE, "PolicyState"),
            ))
            .unwrap();
        let _: zbus::OwnedVariant = reply.body().deserialize().unwrap();
        get.push(t.elapsed().as_secs_f64() * 1e3);
    }
    header("one call at a time");
    report("Status() (the whole document, JSON)", &mut status);
    report("Get(PolicyState) (the bus's floor)", &mut get);

    // Sustained: 1,000 calls/s for 10 s, paced.
    let pid = sb.main_host_pid(WATCHDOG_UNIT);
    let cpu0 = cpu_ns(pid);
    let t0 = Instant::now();
    let mut done = 0u64;
    let period = Duration::from_micros(1000);
    let mut next = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        rt.block_on(agent.status()).unwrap();
        done += 1;
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ns(pid) - cpu0) as f64 / 1e9;
    println!(
        "\nsustained Status(): {done} calls in {secs:.1} s = {:.0}/s; agent CPU {:.1}% of one core; \
         still active: {}, restarts: {}",
        done as f64 / secs,
        cpu / secs * 100.0,
        sb.prop(WATCHDOG_UNIT, "ActiveState"),
        sb.prop(WATCHDOG_UNIT, "NRestarts"),
    );

    // Kill-switch flips: the rollback time against gunicorn's own reload time.
    let mut stream = rt.block_on(agent.receive_restart_completed()).unwrap();
    let (mut rollback, mut reload) = (vec![], vec![]);
    let state = PathBuf::from(&f.env["WATCHDOG_STATE_FILE"]);
    for i in 0..20 {
        let id = rt
            .block_on(agent.set_kill_switch(i % 2 == 0, "benchmark flip"))
            .unwrap();
        assert!(!id.is_empty());
        loop {
            let next = std::future::poll_fn(|cx| {
                futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
            });
            let sig = rt.block_on(next).expect("the agent's signals");
            let a = sig.args().unwrap();
            if a.id == id {
                assert_eq!(a.outcome, "executed", "{}", a.detail);
                break;
            }
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        let t = &doc["last_restart"]["timings"];
        let t = if t.is_null() {
            &doc["history"].as_array().unwrap().last().unwrap()["timings"]
        } else {
            t
        };
        rollback.push(t["rollback_ms"].as_f64().unwrap());
        reload.push(t["workers_replaced_ms"].as_f64().unwrap());
    }
    header("kill-switch flip (20, alternating on/off)");
    report("flip → last worker replaced (rollback)", &mut rollback);
    report(
        "of which gunicorn: SIGHUP → last worker replaced",
        &mut reload,
    );
    println!(
        "warden's share, difference of medians: {:.2} ms",
        pct(&rollback, 0.5) - pct(&reload, 0.5)
    );
}
