//! `warden check` wall time on the bundled example contract, as `ExecStartPre=` runs it: a fresh
//! process each time. Offline (unit files) and live (units over D-Bus from a real systemd in the
//! project's sandbox; needs root), side by side with Python's own start-up and, when
//! `WARDEN_BENCH_PEER` names the original's `core/` directory, the original's check.
//!
//!     cargo bench --bench check            # WARDEN_BENCH_RUNS=N to change the sample size
//!
//! Reports min / median / p90 / p99 / max in milliseconds. Not a test: nothing is asserted
//! about time.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::Instant;

use common::*;

fn sample(runs: usize, mut cmd: impl FnMut() -> Command) -> Vec<f64> {
    // One unmeasured run warms the page cache.
    let out = cmd().output().unwrap();
    assert!(
        out.status.success(),
        "benchmarked command fails: {}",
        text(&out)
    );
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let mut c = cmd();
            let t = Instant::now();
            let st = c.output().unwrap();
            let dt = t.elapsed().as_secs_f64() * 1e3;
            assert!(st.status.success());
            dt
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn report(name: &str, v: &[f64]) {
    println!(
        "{name:<44} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        v.len(),
        v[0],
        pct(v, 0.5),
        pct(v, 0.9),
        pct(v, 0.99),
        v[v.len() - 1]
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("WARDEN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let f = Fixture::new("bench-check");
    println!(
        "warden check on the bundled example contract (3 units, conda-like prefix), {runs} runs each"
    );
    println!(
        "{:<44} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "command (ms)", "runs", "min", "median", "p90", "p99", "max"
    );

    let offline = sample(runs, || {
        let mut c = Command::new(warden());
        c.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(["check", "--env-file"])
            .arg(&f.env_file)
            .arg("--unit-path")
            .arg(&f.units_dir);
        c
    });
    report("warden check (offline, unit files)", &offline);

    if nix::unistd::geteuid().is_root() {
        let sb = Sandbox::boot("bench-check", &[&fixture_base()]);
        for u in [APP_UNIT, WATCHDOG_UNIT, WORKER_UNIT] {
            sb.install_unit(u, &std::fs::read_to_string(f.units_dir.join(u)).unwrap());
        }
        sb.daemon_reload();
        let live = sample(runs, || {
            let mut c = Command::new(warden());
            c.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("DBUS_SYSTEM_BUS_ADDRESS", &sb.bus)
                .args(["check", "--env-file"])
                .arg(&f.env_file);
            c
        });
        report("warden check (live, units over D-Bus)", &live);
    } else {
        println!("(live run skipped: booting the systemd sandbox needs root)");
    }

    let py = sample(runs, || {
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-c", "pass"]);
        c
    });
    report("/usr/bin/python3 -c pass (interpreter only)", &py);

    if let Ok(peer) = std::env::var("WARDEN_BENCH_PEER") {
        let script = repo().join("benches/peer_check.py");
        let peer_v = sample(runs, || {
            let mut c = Command::new("/usr/bin/python3");
            c.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .arg(&script)
                .arg(&peer);
            for (k, v) in &f.env {
                c.env(k, v);
            }
            c
        });
        report("original validate_runtime_contract(strict)", &peer_v);
        println!(
            "median ratio original / warden offline: {:.1}x",
            pct(&peer_v, 0.5) / pct(&offline, 0.5)
        );
    } else {
        println!(
            "(set WARDEN_BENCH_PEER to the original's core/ directory to time it side by side)"
        );
    }
}
