//! `warden check` wall time on the bundled example contract, as `ExecStartPre=` runs it: a fresh
//! process each time. Offline (unit files) and live (units over D-Bus from a real systemd in the
//! project's sandbox; needs root), side by side with the bare start of a process (warden's and
//! Python's: the floor under any `ExecStartPre=` on this machine) and, when
//! `WARDEN_BENCH_PEER` names the original's `core/` directory, the original's check. With
//! `WARDEN_BENCH_BASELINE` naming another warden binary (an earlier commit's release build),
//! its offline check and bare start are timed in the same round-robin.
//!
//!     cargo bench --bench check            # WARDEN_BENCH_RUNS=N to change the sample size
//!
//! Reports min / median / p90 / p99 / max in milliseconds. Not a test: nothing is asserted
//! about time.

#[path = "../tests/common/mod.rs"]
mod common;
mod util;

use std::process::Command;
use std::time::Instant;

use common::*;
use util::{pct, report};

type Maker<'a> = Box<dyn Fn() -> Command + 'a>;

/// Times every command `runs` times, round-robin, so that drift in the machine's speed (steal
/// time on a VM) weighs on each command alike. Returns sorted samples in milliseconds.
fn sample(runs: usize, cmds: &[(&str, Maker<'_>)]) -> Vec<Vec<f64>> {
    for (name, make) in cmds {
        // One unmeasured run each warms the page cache and checks the command works.
        let out = make().output().unwrap();
        assert!(out.status.success(), "{name} fails: {}", text(&out));
    }
    let mut v = vec![Vec::with_capacity(runs); cmds.len()];
    for _ in 0..runs {
        for (i, (_, make)) in cmds.iter().enumerate() {
            let mut c = make();
            let t = Instant::now();
            let st = c.output().unwrap();
            v[i].push(t.elapsed().as_secs_f64() * 1e3);
            assert!(st.status.success());
        }
    }
    for s in &mut v {
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    v
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("WARDEN_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let peer = std::env::var("WARDEN_BENCH_PEER").ok();
    let f = Fixture::new("bench-check");
    println!(
        "warden check on the bundled example contract (3 units, conda-like prefix), {runs} runs each"
    );
    println!(
        "{:<52} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "command (ms)", "runs", "min", "median", "p90", "p99", "max"
    );

    let baseline = std::env::var_os("WARDEN_BENCH_BASELINE").map(std::path::PathBuf::from);
    // The check's own work, without the Gunicorn probe (an import of the app, timed on its own
    // row): the original's check does not import the app either.
    let no_probe = f.dir.join("no-probe.env");
    std::fs::write(&no_probe, "WARDEN_PREFLIGHT=false\n").unwrap();
    chmod(&no_probe, 0o640);
    let check_args = |probe: bool| -> Vec<std::path::PathBuf> {
        let mut files = vec![f.env_file.clone()];
        if !probe {
            files.push(no_probe.clone());
        }
        files
    };
    let check_files = |bin: std::path::PathBuf, bus: Option<String>, probe: bool| -> Maker<'_> {
        let files = check_args(probe);
        let f = &f;
        Box::new(move || {
            let mut c = Command::new(&bin);
            c.env_clear().env("PATH", "/usr/bin:/bin").arg("check");
            for file in &files {
                c.arg("--env-file").arg(file);
            }
            match &bus {
                Some(b) => {
                    c.env("DBUS_SYSTEM_BUS_ADDRESS", b);
                }
                None => {
                    c.arg("--unit-path").arg(&f.units_dir);
                }
            }
            c
        })
    };
    let check_with = |bin: std::path::PathBuf, bus: Option<String>| check_files(bin, bus, false);
    let check = |bus: Option<String>| check_with(warden(), bus);
    let mut cmds: Vec<(&str, Maker<'_>)> = vec![
        ("warden check (offline, unit files)", check(None)),
        (
            "warden check (offline, with the Gunicorn probe)",
            check_files(warden(), None, true),
        ),
    ];
    let sb = nix::unistd::geteuid().is_root().then(|| {
        let sb = Sandbox::boot("bench-check", &[&fixture_base()]);
        for u in [APP_UNIT, WATCHDOG_UNIT, WORKER_UNIT] {
            sb.install_unit(u, &std::fs::read_to_string(f.units_dir.join(u)).unwrap());
        }
        sb.daemon_reload();
        sb
    });
    match &sb {
        Some(sb) => cmds.push((
            "warden check (live, units over D-Bus)",
            check(Some(sb.bus.clone())),
        )),
        None => println!("(live run skipped: booting the systemd sandbox needs root)"),
    }
    cmds.push((
        "warden --version (process start only)",
        Box::new(|| {
            let mut c = Command::new(warden());
            c.arg("--version");
            c
        }),
    ));
    if let Some(bin) = &baseline {
        cmds.push((
            "baseline: warden check (offline, unit files)",
            check_with(bin.clone(), None),
        ));
        cmds.push((
            "baseline: warden --version",
            Box::new(move || {
                let mut c = Command::new(bin);
                c.arg("--version");
                c
            }),
        ));
    }
    cmds.push((
        "/usr/bin/python3 -c pass (interpreter only)",
        Box::new(|| {
            let mut c = Command::new("/usr/bin/python3");
            c.args(["-c", "pass"]);
            c
        }),
    ));
    if let Some(peer) = &peer {
        let script = repo().join("benches/peer_check.py");
        let f = &f;
        cmds.push((
            "original validate_runtime_contract(strict)",
            Box::new(move || {
                let mut c = Command::new("/usr/bin/python3");
                c.env_clear()
                    .env("PATH", "/usr/bin:/bin")
                    .arg(&script)
                    .arg(peer);
                for (k, v) in &f.env {
                    c.env(k, v);
                }
                c
            }),
        ));
    }
    let mut results = sample(runs, &cmds);
    for ((name, _), v) in cmds.iter().zip(results.iter_mut()) {
        report(name, v);
    }
    let median = |name: &str| {
        cmds.iter()
            .position(|(n, _)| *n == name)
            .map(|i| pct(&results[i], 0.5))
    };
    for (who, check, start) in [
        (
            "this build",
            "warden check (offline, unit files)",
            "warden --version (process start only)",
        ),
        (
            "baseline",
            "baseline: warden check (offline, unit files)",
            "baseline: warden --version",
        ),
    ] {
        if let (Some(c), Some(s)) = (median(check), median(start)) {
            println!("{who}: offline check / bare start, medians: {:.2}x", c / s);
        }
    }
    if peer.is_some() {
        println!(
            "median ratio original / warden offline: {:.1}x",
            pct(&results[results.len() - 1], 0.5) / pct(&results[0], 0.5)
        );
    } else {
        println!(
            "(set WARDEN_BENCH_PEER to the original's core/ directory to time it side by side)"
        );
    }
    drop(sb);
}
