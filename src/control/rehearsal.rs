//! `warden rehearse`: the runbook's pre-cutover rehearsal as a command. It checks the contract,
//! asks the running agent for one graceful reload, and then verifies from outside what an
//! operator would: the master is the same process, every worker was replaced, the listening
//! socket is the same one and the health URL answers. `--rollback-drill` adds the kill-switch:
//! engaged (the rollback, timed against a target) and released.
//!
//! The judgements are pure functions of before/after snapshots; the I/O is at the edge.

use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use crate::cli::SourceArgs;
use crate::contract::bind::{self, BindAddr};
use crate::contract::{self, Inputs, Phase};
use crate::control::client::{self as admin, Said};
use crate::platform::http::{self as health, HealthUrl};

/// Exit codes of `warden rehearse`.
pub mod code {
    /// Every step passed.
    pub const OK: u8 = 0;
    /// A step failed (the report says which, and why).
    pub const FAILED: u8 = 1;
    /// Bad usage or an unreadable env file.
    pub const USAGE: u8 = 2;
}

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  every step passed
  1  a step failed: the report names it, with what was seen and how to fix it
  2  bad usage or an unreadable env file";

#[derive(Debug, Args)]
pub struct RehearseArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Why (recorded with the reload in the history and the journal)
    #[arg(long, value_name = "TEXT", default_value = "pre-cutover rehearsal")]
    pub reason: String,
    /// Override the cooldown or guarded mode for the rehearsal's reload (needs --acknowledge)
    #[arg(long = "override", requires = "acknowledge")]
    pub manual_override: bool,
    /// Acknowledge that the override bypasses the churn policy
    #[arg(long, requires = "manual_override")]
    pub acknowledge: bool,
    /// The URL that must answer 2xx after the reload [default: WARDEN_HEALTH_URL, else
    /// http://GUNICORN_BIND/health]
    #[arg(long, value_name = "URL")]
    pub health_url: Option<HealthUrl>,
    /// Then engage the kill-switch (the rollback, timed) and release it; refused when an
    /// operator has already engaged it
    #[arg(long)]
    pub rollback_drill: bool,
    /// The rollback must be verified within this many seconds
    #[arg(
        long,
        value_name = "SECONDS",
        default_value = "60",
        value_parser = positive_seconds,
        requires = "rollback_drill"
    )]
    pub target_seconds: f64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not run: an earlier step it depends on failed.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// How long the step took, where that is a figure of interest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub seconds: f64,
    pub target_seconds: f64,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub passed: bool,
    pub contract_version: String,
    pub steps: Vec<Step>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    /// The policy after the rehearsal, as the agent reports it (the rehearsal's reloads count
    /// toward its window like any other).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_after: Option<String>,
    pub total_ms: f64,
}

impl Report {
    fn push(&mut self, name: &'static str, r: Result<String, Failure>, ms: Option<f64>) -> bool {
        let ok = r.is_ok();
        self.steps.push(match r {
            Ok(detail) => Step {
                name,
                verdict: Verdict::Pass,
                detail,
                hint: None,
                ms,
            },
            Err(f) => Step {
                name,
                verdict: Verdict::Fail,
                detail: f.what,
                hint: Some(f.hint.to_string()).filter(|h| !h.is_empty()),
                ms,
            },
        });
        ok
    }

    fn skip(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            self.steps.push(Step {
                name,
                verdict: Verdict::Skip,
                detail: why.to_string(),
                hint: None,
                ms: None,
            });
        }
    }

    /// The report as text: one line per step, then the verdict.
    pub fn render(&self) -> String {
        let mut out = format!("warden rehearse: contract {}\n", self.contract_version);
        for s in &self.steps {
            let tag = match s.verdict {
                Verdict::Pass => "PASS",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            let ms = s.ms.map(fmt_ms).unwrap_or_default();
            out.push_str(&format!("  {tag}  {:<9} {}{ms}\n", s.name, s.detail));
            if let Some(h) = &s.hint {
                out.push_str(&format!("        help: {h}\n"));
            }
        }
        if let Some(p) = &self.policy_after {
            out.push_str(&format!("  policy after: {p}\n"));
        }
        let passed = self
            .steps
            .iter()
            .filter(|s| s.verdict == Verdict::Pass)
            .count();
        out.push_str(&format!(
            "rehearsal {}: {passed}/{} steps passed in {:.2} s",
            if self.passed { "passed" } else { "FAILED" },
            self.steps.len(),
            self.total_ms / 1000.0
        ));
        out
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("  ({:.2} s)", ms / 1000.0)
    } else {
        format!("  ({ms:.1} ms)")
    }
}

/// Why a step failed, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub what: String,
    pub hint: &'static str,
}

fn fail(what: impl Into<String>, hint: &'static str) -> Failure {
    Failure {
        what: what.into(),
        hint,
    }
}

/// A process identity: a PID alone can be recycled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Proc {
    pub pid: u32,
    pub start_ticks: u64,
}

/// What the rehearsal sees of the app at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub master: Proc,
    pub workers: Vec<u32>,
    /// The inode of the listening socket on the bind that the master holds.
    pub socket: Option<u64>,
}

/// The master after the reload is the master before: same PID, same start time.
pub fn judge_master(before: &Proc, after: Result<Proc, String>) -> Result<String, Failure> {
    match after {
        Ok(a) if a == *before => Ok(format!("pid {} unchanged", a.pid)),
        Ok(a) if a.pid == before.pid => Err(fail(
            format!(
                "pid {} is a new process (started at tick {})",
                a.pid, a.start_ticks
            ),
            "the master was restarted, not reloaded: check the unit's ExecReload= and Restart=",
        )),
        Ok(a) => Err(fail(
            format!("the master changed: pid {} -> {}", before.pid, a.pid),
            "the master was restarted, not reloaded: look in the app unit's journal for why",
        )),
        Err(e) => Err(fail(
            format!("no master after the reload: {e}"),
            "the app is down: systemctl status and the app unit's journal say why",
        )),
    }
}

/// Every worker of before is gone, and at least as many new ones serve.
pub fn judge_workers(before: &[u32], after: &[u32]) -> Result<String, Failure> {
    let stale: Vec<u32> = after
        .iter()
        .copied()
        .filter(|p| before.contains(p))
        .collect();
    if !stale.is_empty() {
        return Err(fail(
            format!("old workers still serving: {}", pids(&stale)),
            "a worker did not exit within the graceful timeout: raise WARDEN_RELOAD_TIMEOUT_SECONDS or look for stuck requests",
        ));
    }
    if after.len() < before.len() {
        return Err(fail(
            format!(
                "{} worker(s) before, {} after ({})",
                before.len(),
                after.len(),
                pids(after)
            ),
            "new workers failed to boot: the app unit's journal has their tracebacks",
        ));
    }
    Ok(format!(
        "{} replaced ({} -> {})",
        before.len(),
        pids(before),
        pids(after)
    ))
}

/// The listening socket is the one the master held before (a reload never rebinds).
pub fn judge_bind(bind: &str, before: Option<u64>, after: Option<u64>) -> Result<String, Failure> {
    match (before, after) {
        (Some(b), Some(a)) if a == b => Ok(format!(
            "{bind}: the same socket (inode {a}), held by the master"
        )),
        (Some(b), Some(a)) => Err(fail(
            format!("{bind}: a new socket (inode {b} -> {a})"),
            "the port was rebound: clients saw refused connections; check for a restart instead of a reload",
        )),
        (Some(b), None) => Err(fail(
            format!("{bind}: the master no longer holds the socket (inode {b})"),
            "the app is not listening: the app unit's journal says why",
        )),
        (None, _) => Err(fail(
            format!("{bind}: no listening socket held by the master"),
            "check GUNICORN_BIND against the unit's --bind, and run as root or the service user (to read /proc/PID/fd)",
        )),
    }
}

fn pids(p: &[u32]) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
}

/// The health URL to probe: the flag, else `WARDEN_HEALTH_URL`, else `/health` on the bind.
pub fn health_url(
    flag: Option<&HealthUrl>,
    configured: Option<&HealthUrl>,
    bind: &BindAddr,
) -> HealthUrl {
    if let Some(u) = flag.or(configured) {
        return u.clone();
    }
    let host = match bind.ip {
        Some(ip) if ip.is_unspecified() => {
            if ip.is_ipv4() {
                "127.0.0.1".to_string()
            } else {
                "::1".to_string()
            }
        }
        _ => bind.host.clone(),
    };
    HealthUrl {
        host,
        port: bind.port,
        path: "/health".into(),
    }
}

fn proc_of(pid: u32) -> Result<Proc, String> {
    match crate::platform::process::classify(pid) {
        crate::platform::process::Role::Master => {}
        crate::platform::process::Role::Worker { master } => {
            return Err(format!("pid {pid} is a worker of {master}, not the master"));
        }
        crate::platform::process::Role::NotGunicorn { comm } => {
            return Err(format!("pid {pid} is {comm:?}, not gunicorn"));
        }
        crate::platform::process::Role::NotRunning => {
            return Err(format!("pid {pid} is not running"));
        }
    }
    let st =
        crate::platform::process::stat(pid).ok_or_else(|| format!("pid {pid} is not running"))?;
    Ok(Proc {
        pid,
        start_ticks: st.start_ticks,
    })
}

fn master(s: &crate::config::Settings) -> Result<Proc, String> {
    let pid =
        crate::platform::process::read_pid_file(&s.pid_file.value).map_err(|e| e.to_string())?;
    proc_of(pid)
}

fn snapshot(s: &crate::config::Settings, bind: &BindAddr) -> Result<Snapshot, String> {
    let master = master(s)?;
    let socket = bind::listeners()
        .into_iter()
        .filter(|l| bind::overlaps(bind, l))
        .map(|l| l.inode)
        .find(|i| crate::platform::process::holds_socket(master.pid, *i));
    Ok(Snapshot {
        master,
        workers: crate::platform::process::children(master.pid),
        socket,
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn said(s: Said, hint: &'static str) -> Result<String, Failure> {
    if s.code == admin::code::OK {
        Ok(s.out)
    } else {
        Err(fail(s.out, hint))
    }
}

fn reload_hint(code: u8) -> &'static str {
    match code {
        admin::code::COOLDOWN | admin::code::GUARDED => {
            "the policy refused: wait, or rehearse with --override --acknowledge --reason TEXT"
        }
        admin::code::DENIED => "run as root or as a member of WARDEN_ADMIN_GROUP",
        admin::code::NO_AGENT => "start the agent: systemctl start warden.service",
        _ => "the agent's journal (journalctl -u warden.service) has the reload's details",
    }
}

const AFTER_RELOAD: &[&str] = &["master", "workers", "bind", "health"];

/// `warden rehearse`.
pub fn main(a: &RehearseArgs) -> u8 {
    let t0 = Instant::now();
    let g = match crate::cli::gather(&a.source) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("warden: error: {e}\n  help: {}", e.help());
            return code::USAGE;
        }
    };
    let report = rehearse(a, &g, t0);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!("{}", report.render());
    }
    if report.passed {
        code::OK
    } else {
        code::FAILED
    }
}

/// `t0`: when the contract's inputs began to be read (the contract step's time includes it).
fn rehearse(a: &RehearseArgs, g: &crate::cli::Gathered, t0: Instant) -> Report {
    let s = &g.settings;
    let mut r = Report {
        passed: false,
        contract_version: s.contract_version.value.clone(),
        steps: Vec::new(),
        rollback: None,
        policy_after: None,
        total_ms: 0.0,
    };

    // 1. The contract, as `warden check --phase running` sees it.
    let report = contract::check(&Inputs {
        layers: &g.layers,
        settings: s,
        invalid: &g.invalid,
        units: &g.units,
        scripts: &[],
        docs: &[],
        phase: Phase::Running,
    });
    let verdict = if report.errors() == 0 {
        Ok(format!(
            "valid: {} warning(s) ({} units read)",
            report.warnings(),
            g.units.len()
        ))
    } else {
        let first = report
            .findings
            .iter()
            .find(|f| f.severity == crate::contract::finding::Severity::Error)
            .map(|f| f.headline())
            .unwrap_or_default();
        Err(fail(
            format!("{} error(s), first: {first}", report.errors()),
            "run `warden check --phase running` for every finding and its fix",
        ))
    };
    r.push("contract", verdict, Some(ms(t0)));

    // 2. The app before the reload.
    let bind = match bind::parse_bind(&s.bind.value) {
        Ok(b) => b,
        Err(e) => {
            r.push(
                "app",
                Err(fail(
                    format!("GUNICORN_BIND={}: {e}", s.bind.value),
                    "set GUNICORN_BIND to the host:port the app binds",
                )),
                None,
            );
            r.skip(&["reload"], "no app to reload");
            r.skip(AFTER_RELOAD, "no app to reload");
            return finish(r, t0);
        }
    };
    let before = match snapshot(s, &bind) {
        Ok(b) => {
            r.push(
                "app",
                Ok(format!(
                    "master {}, {} worker(s), listening on {}",
                    b.master.pid,
                    b.workers.len(),
                    s.bind.value
                )),
                None,
            );
            b
        }
        Err(e) => {
            r.push(
                "app",
                Err(fail(
                    format!("{} ({})", e, s.pid_file.value.display()),
                    "start the app unit first; the PID file must name its gunicorn master",
                )),
                None,
            );
            r.skip(&["reload"], "no app to reload");
            r.skip(AFTER_RELOAD, "no app to reload");
            return finish(r, t0);
        }
    };

    let wait = Duration::from_secs(s.reload_timeout_seconds + 30);
    let url = health_url(a.health_url.as_ref(), s.health_url.as_ref(), &bind);
    admin::runtime().block_on(async {
        // 3. One reload through the agent, as an operator asks for it.
        let Some(p) = admin::agent().await else {
            r.push(
                "reload",
                Err(fail(
                    "no agent on the bus",
                    reload_hint(admin::code::NO_AGENT),
                )),
                None,
            );
            r.skip(AFTER_RELOAD, "no reload");
            return;
        };
        let t = Instant::now();
        let reply =
            admin::request_restart(&p, &a.reason, a.manual_override, a.acknowledge, Some(wait))
                .await;
        let hint = reload_hint(reply.code);
        if !r.push("reload", said(reply, hint), Some(ms(t))) {
            r.skip(AFTER_RELOAD, "no reload");
            return;
        }

        // 4. What an operator would check from outside.
        let after = snapshot(s, &bind);
        r.push(
            "master",
            judge_master(
                &before.master,
                after.as_ref().map(|x| x.master).map_err(Clone::clone),
            ),
            None,
        );
        let after = after.ok();
        let workers = after
            .as_ref()
            .map(|x| x.workers.clone())
            .unwrap_or_default();
        r.push("workers", judge_workers(&before.workers, &workers), None);
        r.push(
            "bind",
            judge_bind(
                &s.bind.value,
                before.socket,
                after.as_ref().and_then(|x| x.socket),
            ),
            None,
        );
        r.push_health(&url).await;

        if a.rollback_drill {
            drill(&mut r, &p, a, wait, &url).await;
        }
        r.policy_after = policy(&p).await;
    });
    finish(r, t0)
}

impl Report {
    async fn push_health(&mut self, url: &HealthUrl) {
        let u = url.clone();
        let probe = tokio::task::spawn_blocking(move || health::probe(&u, Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| health::Probe::Failed(e.to_string()));
        let shown = format!("http://{}:{}{}", url.host, url.port, url.path);
        let (verdict, elapsed) = match &probe {
            health::Probe::Answered { status, elapsed } if probe.healthy() => {
                (Ok(format!("{shown} answered {status}")), Some(*elapsed))
            }
            health::Probe::Answered { status, elapsed } => (
                Err(fail(
                    format!("{shown} answered {status}"),
                    "the app is up but unhealthy: its /health body and journal say why",
                )),
                Some(*elapsed),
            ),
            health::Probe::Failed(e) => (
                Err(fail(
                    format!("{shown}: {e}"),
                    "check --health-url or WARDEN_HEALTH_URL, and that the app answers on it",
                )),
                None,
            ),
        };
        self.push("health", verdict, elapsed.map(|d| d.as_secs_f64() * 1000.0));
    }
}

/// The rollback drill: engage the kill-switch (timed to the verified reload), then release it.
async fn drill(
    r: &mut Report,
    p: &crate::control::dbus::Agent1Proxy<'_>,
    a: &RehearseArgs,
    wait: Duration,
    url: &HealthUrl,
) {
    if p.kill_switch_engaged().await.unwrap_or(false) {
        let why = p.kill_switch_reason().await.unwrap_or_default();
        r.push(
            "rollback",
            Err(fail(
                format!("the kill-switch is already engaged ({why}); the drill would release a real rollback"),
                "release it first (warden kill-switch off) if the rollback is over",
            )),
            None,
        );
        r.skip(&["release"], "the drill did not run");
        return;
    }
    let t = Instant::now();
    let on = admin::flip(
        p,
        true,
        &format!("rollback drill: {}", a.reason),
        Some(wait),
    )
    .await;
    let seconds = t.elapsed().as_secs_f64();
    let flipped = on.code == admin::code::OK || on.code == admin::code::FAILED;
    let met = on.code == admin::code::OK && seconds <= a.target_seconds;
    r.rollback = Some(Rollback {
        seconds,
        target_seconds: a.target_seconds,
        met,
    });
    let verdict = match said(on, "the agent's journal has the reload's details") {
        Ok(d) if met => Ok(format!(
            "{d}; {seconds:.2} s (target {} s)",
            a.target_seconds
        )),
        Ok(d) => Err(fail(
            format!(
                "{d}; {seconds:.2} s, over the target of {} s",
                a.target_seconds
            ),
            "the graceful reload is slow: look at worker boot time (preload, imports) and graceful_timeout",
        )),
        Err(f) => Err(f),
    };
    r.push("rollback", verdict, Some(seconds * 1000.0));
    if flipped {
        r.push_health(url).await;
    }
    // Released whenever it was engaged, even if the rollback was slow: a drill never leaves the
    // switch on.
    if !flipped {
        r.skip(&["release"], "the kill-switch was not engaged");
        return;
    }
    let t = Instant::now();
    let off = admin::flip(
        p,
        false,
        &format!("rollback drill over: {}", a.reason),
        Some(wait),
    )
    .await;
    r.push(
        "release",
        said(off, "release it by hand: warden kill-switch off"),
        Some(ms(t)),
    );
}

async fn policy(p: &crate::control::dbus::Agent1Proxy<'_>) -> Option<String> {
    let state = p.policy_state().await.ok()?;
    let attempts = p.attempts_in_window().await.ok()?;
    let left = p.cooldown_remaining().await.unwrap_or(0);
    Some(format!(
        "{state}, {attempts} restart(s) in the window{}",
        if left > 0 {
            format!(", cooldown {left} s")
        } else {
            String::new()
        }
    ))
}

fn finish(mut r: Report, t0: Instant) -> Report {
    r.passed = r.steps.iter().all(|s| s.verdict == Verdict::Pass);
    r.total_ms = ms(t0);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Proc = Proc {
        pid: 100,
        start_ticks: 5000,
    };

    #[test]
    fn the_master_must_be_the_same_process() {
        assert!(judge_master(&M, Ok(M)).is_ok());
        // Same PID, later start: restarted, and the PID recycled.
        let e = judge_master(
            &M,
            Ok(Proc {
                pid: 100,
                start_ticks: 9000,
            }),
        )
        .unwrap_err();
        assert!(e.what.contains("new process"), "{e:?}");
        assert!(judge_master(&M, Ok(Proc { pid: 101, ..M })).is_err());
        assert!(judge_master(&M, Err("gone".into())).is_err());
    }

    #[test]
    fn every_worker_is_replaced() {
        assert!(judge_workers(&[1, 2], &[3, 4]).is_ok());
        assert!(judge_workers(&[1, 2], &[3, 4, 5]).is_ok());
        let e = judge_workers(&[1, 2], &[2, 3]).unwrap_err();
        assert!(e.what.contains("still serving: 2"), "{e:?}");
        assert!(judge_workers(&[1, 2], &[3]).is_err());
        assert!(judge_workers(&[1, 2], &[]).is_err());
    }

    #[test]
    fn the_socket_is_the_same_one() {
        assert!(judge_bind("127.0.0.1:8080", Some(7), Some(7)).is_ok());
        assert!(judge_bind("127.0.0.1:8080", Some(7), Some(8)).is_err());
        assert!(judge_bind("127.0.0.1:8080", Some(7), None).is_err());
        assert!(judge_bind("127.0.0.1:8080", None, Some(7)).is_err());
    }

    #[test]
    fn the_health_url_defaults_to_the_bind() {
        let b = bind::parse_bind("0.0.0.0:8080").unwrap();
        let u = health_url(None, None, &b);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/health")
        );
        let b6 = bind::parse_bind("[::]:8080").unwrap();
        assert_eq!(health_url(None, None, &b6).host, "::1");
        let set: HealthUrl = "http://127.0.0.1:9/ready".parse().unwrap();
        assert_eq!(health_url(None, Some(&set), &b), set);
        let flag: HealthUrl = "http://127.0.0.1:9/flag".parse().unwrap();
        assert_eq!(health_url(Some(&flag), Some(&set), &b), flag);
    }

    #[test]
    fn a_report_passes_only_when_every_step_passed() {
        let mut r = Report {
            passed: false,
            contract_version: "v".into(),
            steps: vec![],
            rollback: None,
            policy_after: None,
            total_ms: 0.0,
        };
        r.push("contract", Ok("valid".into()), Some(1.0));
        let r1 = finish(r.clone(), Instant::now());
        assert!(r1.passed);
        r.skip(&["reload"], "no app");
        let r2 = finish(r, Instant::now());
        assert!(!r2.passed, "a skipped step is not a pass");
        let text = r2.render();
        assert!(text.contains("PASS  contract"), "{text}");
        assert!(text.contains("skip  reload"), "{text}");
        assert!(text.ends_with("s"), "{text}");
        assert!(text.contains("FAILED: 1/2"), "{text}");
    }

    #[test]
    fn target_seconds_are_positive() {
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(positive_seconds(bad).is_err(), "{bad}");
        }
    }
}
