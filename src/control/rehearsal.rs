//! The runbook's pre-cutover rehearsal (`warden rehearse`): checks the contract, asks the
//! running agent for one graceful reload, and then verifies from outside what an operator
//! would: the master is the same process, every worker was replaced, the listening socket is
//! the same one and the health URL answers. The rollback drill adds the kill-switch: engaged
//! (the rollback, timed against a target) and released.
//!
//! The judgements are pure functions of before/after observations and of the agent's typed
//! answers; the I/O is at the edge.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{Agent, ClientError, FlipAnswer, RestartAnswer};
use crate::config::{BindAddr, Settings, vars};
use crate::contract::inputs::Gathered;
use crate::contract::{self, Phase};
use crate::ledger::model::Verdict;
use crate::platform::http::{self, HealthUrl};
use crate::platform::process::{self, Role};

/// What the operator asked of the rehearsal.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Recorded with the reload in the history and the journal.
    pub reason: String,
    pub manual_override: bool,
    pub acknowledge: bool,
    /// The URL that must answer 2xx after the reload (else `WARDEN_HEALTH_URL`, else
    /// `/health` on the bind).
    pub health_url: Option<HealthUrl>,
    pub rollback_drill: bool,
    pub target_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepVerdict {
    Pass,
    Fail,
    /// Not run: an earlier step it depends on failed.
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub verdict: StepVerdict,
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

/// The rehearsal's report.
#[derive(Debug, Clone, Serialize)]
pub struct Rehearsal {
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

impl Rehearsal {
    fn push(
        &mut self,
        name: &'static str,
        r: Result<String, StepFailure>,
        ms: Option<f64>,
    ) -> bool {
        let ok = r.is_ok();
        self.steps.push(match r {
            Ok(detail) => Step {
                name,
                verdict: StepVerdict::Pass,
                detail,
                hint: None,
                ms,
            },
            Err(f) => Step {
                name,
                verdict: StepVerdict::Fail,
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
                verdict: StepVerdict::Skip,
                detail: why.to_string(),
                hint: None,
                ms: None,
            });
        }
    }
}

/// Why a step failed, and what to do about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    pub what: String,
    pub hint: &'static str,
}

fn fail(what: impl Into<String>, hint: &'static str) -> StepFailure {
    StepFailure {
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
pub struct AppState {
    pub master: Proc,
    pub workers: Vec<u32>,
    /// The inode of the listening socket on the bind that the master holds.
    pub socket: Option<u64>,
}

/// The master after the reload is the master before: same PID, same start time.
pub fn judge_master(before: &Proc, after: Result<Proc, String>) -> Result<String, StepFailure> {
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
pub fn judge_workers(before: &[u32], after: &[u32]) -> Result<String, StepFailure> {
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
pub fn judge_bind(
    bind: &str,
    before: Option<u64>,
    after: Option<u64>,
) -> Result<String, StepFailure> {
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

/// The agent's answer to the rehearsal's reload.
pub fn judge_reload(answer: Result<RestartAnswer, ClientError>) -> Result<String, StepFailure> {
    const POLICY: &str =
        "the policy refused: wait, or rehearse with --override --acknowledge --reason TEXT";
    const JOURNAL: &str = "the agent's journal (journalctl -u 'warden@*') has the reload's details";
    match answer {
        Ok(RestartAnswer::Completed { outcome, .. }) if outcome.succeeded() => {
            Ok(format!("restart executed and verified: {}", outcome.detail))
        }
        Ok(RestartAnswer::Completed { outcome, .. }) => Err(fail(
            format!("restart {}: {}", outcome.decision, outcome.detail),
            JOURNAL,
        )),
        Ok(RestartAnswer::Refused {
            verdict, reason, ..
        }) if verdict.known() == Some(Verdict::Refused) => Err(fail(
            format!("refused: {reason}"),
            "an override needs --acknowledge and a --reason",
        )),
        Ok(RestartAnswer::Refused {
            reason,
            cooldown_left,
            ..
        }) => Err(fail(
            match cooldown_left {
                Some(left) => format!("in cooldown for {left} s more ({reason})"),
                None => format!("blocked by guarded mode ({reason})"),
            },
            POLICY,
        )),
        Ok(RestartAnswer::NoOutcome { id, waited }) => Err(fail(
            format!("no outcome for request {id} within {} s", waited.as_secs()),
            JOURNAL,
        )),
        Ok(RestartAnswer::Accepted { id, .. }) => Err(fail(
            format!("request {id} accepted; its outcome was not waited for"),
            JOURNAL,
        )),
        Err(e @ ClientError::Denied(_)) => Err(fail(
            e.to_string(),
            "run as root or as a member of WARDEN_ADMIN_GROUP",
        )),
        Err(e) => Err(fail(e.to_string(), JOURNAL)),
    }
}

/// The health URL to probe: the one given, else `WARDEN_HEALTH_URL`, else `/health` on the
/// bind.
pub fn health_url(
    given: Option<&HealthUrl>,
    configured: Option<&HealthUrl>,
    bind: &BindAddr,
) -> HealthUrl {
    if let Some(u) = given.or(configured) {
        return u.clone();
    }
    HealthUrl {
        host: bind.local_host(),
        port: bind.port,
        path: "/health".into(),
    }
}

fn proc_of(pid: u32) -> Result<Proc, String> {
    match process::classify(pid) {
        Role::Master => {}
        Role::Worker { master } => {
            return Err(format!("pid {pid} is a worker of {master}, not the master"));
        }
        Role::NotGunicorn { comm } => return Err(format!("pid {pid} is {comm:?}, not gunicorn")),
        Role::NotRunning => return Err(format!("pid {pid} is not running")),
    }
    let st = process::stat(pid).ok_or_else(|| format!("pid {pid} is not running"))?;
    Ok(Proc {
        pid,
        start_ticks: st.start_ticks,
    })
}

fn observe(s: &Settings) -> Result<AppState, String> {
    let pid = process::read_pid_file(&s.pid_file.value).map_err(|e| e.to_string())?;
    let master = proc_of(pid)?;
    let bind = &s.bind.value;
    let socket = crate::platform::sockets::listeners()
        .into_iter()
        .filter(|l| bind.covers(l.ip, l.port))
        .map(|l| l.inode)
        .find(|i| process::holds_socket(master.pid, *i));
    Ok(AppState {
        master,
        workers: process::children(master.pid),
        socket,
    })
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

const AFTER_RELOAD: &[&str] = &["master", "workers", "bind", "health"];

/// Runs the rehearsal. `t0`: when the contract's inputs began to be read (the contract step's
/// time includes it).
pub fn rehearse(plan: &Plan, gathered: &Gathered, t0: Instant) -> Rehearsal {
    let settings = &gathered.loaded.settings;
    let mut report = Rehearsal {
        passed: false,
        contract_version: settings.contract_version.value.clone(),
        steps: Vec::new(),
        rollback: None,
        policy_after: None,
        total_ms: 0.0,
    };
    report.push("contract", contract_step(gathered), Some(ms(t0)));
    let before = match app_step(gathered) {
        Ok(before) => {
            report.push(
                "app",
                Ok(format!(
                    "master {}, {} worker(s), listening on {}",
                    before.master.pid,
                    before.workers.len(),
                    settings.bind.value
                )),
                None,
            );
            before
        }
        Err(f) => {
            report.push("app", Err(f), None);
            report.skip(&["reload"], "no app to reload");
            report.skip(AFTER_RELOAD, "no app to reload");
            return finish(report, t0);
        }
    };
    match super::client::runtime() {
        Ok(rt) => rt.block_on(through_the_agent(&mut report, plan, settings, &before)),
        Err(e) => {
            report.push(
                "reload",
                Err(fail(
                    format!("cannot start the async runtime: {e}"),
                    "the system is out of resources (threads, file descriptors)",
                )),
                None,
            );
            report.skip(AFTER_RELOAD, "no reload");
        }
    }
    finish(report, t0)
}

/// The contract, as `warden check --phase running` sees it.
fn contract_step(gathered: &Gathered) -> Result<String, StepFailure> {
    let report = contract::check(&gathered.inputs(&[], &[], Phase::Running));
    if report.errors() == 0 {
        return Ok(format!(
            "valid: {} warning(s) ({} units read)",
            report.warnings(),
            gathered.units.len()
        ));
    }
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
}

/// The app before the reload: its master, workers and socket.
fn app_step(gathered: &Gathered) -> Result<AppState, StepFailure> {
    let settings = &gathered.loaded.settings;
    let bad_bind = gathered
        .loaded
        .invalid
        .iter()
        .find(|i| i.var == vars::GUNICORN_BIND.name);
    if let Some(i) = bad_bind {
        return Err(fail(
            format!("GUNICORN_BIND={}: {}", i.value, i.reason),
            "set GUNICORN_BIND to the host:port the app binds",
        ));
    }
    observe(settings).map_err(|e| {
        fail(
            format!("{} ({})", e, settings.pid_file.value.display()),
            "start the app unit first; the PID file must name its gunicorn master",
        )
    })
}

/// One reload through the agent, as an operator asks for it; then what an operator would check
/// from outside, the rollback drill, and the policy after.
async fn through_the_agent(
    report: &mut Rehearsal,
    plan: &Plan,
    settings: &Settings,
    before: &AppState,
) {
    let Some(agent) = Agent::find(settings).await else {
        report.push(
            "reload",
            Err(fail(
                format!(
                    "no agent on the bus ({})",
                    super::dbus::agent_name(settings)
                ),
                "start the app's agent: systemctl start warden@APP.service",
            )),
            None,
        );
        report.skip(AFTER_RELOAD, "no reload");
        return;
    };
    let wait = settings.reload_timeout + Duration::from_secs(30);
    let started = Instant::now();
    let answer = agent
        .restart(
            &plan.reason,
            plan.manual_override,
            plan.acknowledge,
            Some(wait),
        )
        .await;
    if !report.push("reload", judge_reload(answer), Some(ms(started))) {
        report.skip(AFTER_RELOAD, "no reload");
        return;
    }
    let after = observe(settings);
    report.push(
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
    report.push("workers", judge_workers(&before.workers, &workers), None);
    report.push(
        "bind",
        judge_bind(
            &settings.bind.value.to_string(),
            before.socket,
            after.as_ref().and_then(|x| x.socket),
        ),
        None,
    );
    let url = health_url(
        plan.health_url.as_ref(),
        settings.health_url.as_ref(),
        &settings.bind.value,
    );
    report.push_health(&url).await;
    if plan.rollback_drill {
        drill(report, &agent, plan, wait, &url).await;
    }
    report.policy_after = agent.policy().await.ok().map(|p| {
        format!(
            "{}, {} restart(s) in the window{}",
            p.state,
            p.attempts_in_window,
            if p.cooldown_remaining > 0 {
                format!(", cooldown {} s", p.cooldown_remaining)
            } else {
                String::new()
            }
        )
    });
}

impl Rehearsal {
    async fn push_health(&mut self, url: &HealthUrl) {
        let u = url.clone();
        let probe = tokio::task::spawn_blocking(move || http::probe(&u, Duration::from_secs(5)))
            .await
            .unwrap_or_else(|e| http::Probe::Failed(e.to_string()));
        let (verdict, elapsed) = match &probe {
            http::Probe::Answered { status, elapsed } if probe.healthy() => {
                (Ok(format!("{url} answered {status}")), Some(*elapsed))
            }
            http::Probe::Answered { status, elapsed } => (
                Err(fail(
                    format!("{url} answered {status}"),
                    "the app is up but unhealthy: its /health body and journal say why",
                )),
                Some(*elapsed),
            ),
            http::Probe::Failed(e) => (
                Err(fail(
                    format!("{url}: {e}"),
                    "check --health-url or WARDEN_HEALTH_URL, and that the app answers on it",
                )),
                None,
            ),
        };
        self.push("health", verdict, elapsed.map(|d| d.as_secs_f64() * 1000.0));
    }
}

/// The rollback drill: engage the kill-switch (timed to the verified reload), then release it.
async fn drill(r: &mut Rehearsal, agent: &Agent, plan: &Plan, wait: Duration, url: &HealthUrl) {
    if let Ok((true, why)) = agent.kill_switch().await {
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
    let on = agent
        .flip(
            true,
            &format!("rollback drill: {}", plan.reason),
            Some(wait),
        )
        .await;
    let seconds = t.elapsed().as_secs_f64();
    // Engaged (recorded and published), whatever became of its reload.
    let engaged = matches!(
        on,
        Ok(FlipAnswer::Reloaded { .. } | FlipAnswer::NoOutcome { .. })
    );
    let reloaded = match &on {
        Ok(FlipAnswer::Reloaded { outcome, .. }) if outcome.succeeded() => {
            Some(outcome.detail.clone())
        }
        _ => None,
    };
    let met = reloaded.is_some() && seconds <= plan.target_seconds;
    r.rollback = Some(Rollback {
        seconds,
        target_seconds: plan.target_seconds,
        met,
    });
    let verdict = match (reloaded, on) {
        (Some(d), _) if met => Ok(format!(
            "kill-switch engaged; every worker reloaded: {d}; {seconds:.2} s (target {} s)",
            plan.target_seconds
        )),
        (Some(d), _) => Err(fail(
            format!(
                "kill-switch engaged; every worker reloaded: {d}; {seconds:.2} s, over the target of {} s",
                plan.target_seconds
            ),
            "the graceful reload is slow: look at worker boot time (preload, imports) and graceful_timeout",
        )),
        (None, answer) => Err(fail(
            flip_failure(answer),
            "the agent's journal has the reload's details",
        )),
    };
    r.push("rollback", verdict, Some(seconds * 1000.0));
    if !engaged {
        r.skip(&["release"], "the kill-switch was not engaged");
        return;
    }
    r.push_health(url).await;
    // Released whenever it was engaged, even if the rollback was slow: a drill never leaves
    // the switch on.
    let t = Instant::now();
    let off = agent
        .flip(
            false,
            &format!("rollback drill over: {}", plan.reason),
            Some(wait),
        )
        .await;
    let verdict = match off {
        Ok(FlipAnswer::Reloaded { outcome, .. }) if outcome.succeeded() => Ok(format!(
            "kill-switch released; every worker reloaded: {}",
            outcome.detail
        )),
        other => Err(fail(
            flip_failure(other),
            "release it by hand: warden kill-switch off",
        )),
    };
    r.push("release", verdict, Some(ms(t)));
}

/// What went wrong with a flip, in words.
fn flip_failure(answer: Result<FlipAnswer, ClientError>) -> String {
    match answer {
        Ok(FlipAnswer::Reloaded { outcome, .. }) => {
            format!("the reload {}: {}", outcome.decision, outcome.detail)
        }
        Ok(FlipAnswer::NoOutcome { waited, .. }) => {
            format!("no reload outcome within {} s", waited.as_secs())
        }
        Ok(FlipAnswer::Unchanged) => "the kill-switch was already in that position".into(),
        Ok(FlipAnswer::Reloading { id }) => format!("reload {id} under way, not waited for"),
        Err(e) => e.to_string(),
    }
}

fn finish(mut r: Rehearsal, t0: Instant) -> Rehearsal {
    r.passed = r.steps.iter().all(|s| s.verdict == StepVerdict::Pass);
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
        let b = "0.0.0.0:8080".parse::<BindAddr>().unwrap();
        let u = health_url(None, None, &b);
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/health")
        );
        let b6 = "[::]:8080".parse::<BindAddr>().unwrap();
        assert_eq!(health_url(None, None, &b6).host, "::1");
        let set: HealthUrl = "http://127.0.0.1:9/ready".parse().unwrap();
        assert_eq!(health_url(None, Some(&set), &b), set);
        let flag: HealthUrl = "http://127.0.0.1:9/flag".parse().unwrap();
        assert_eq!(health_url(Some(&flag), Some(&set), &b), flag);
    }

    #[test]
    fn a_rehearsal_passes_only_when_every_step_passed() {
        let mut r = empty();
        r.push("contract", Ok("valid".into()), Some(1.0));
        assert!(finish(r.clone(), Instant::now()).passed);
        r.skip(&["reload"], "no app");
        assert!(
            !finish(r, Instant::now()).passed,
            "a skipped step is not a pass"
        );
    }

    pub(crate) fn empty() -> Rehearsal {
        Rehearsal {
            passed: false,
            contract_version: "v".into(),
            steps: vec![],
            rollback: None,
            policy_after: None,
            total_ms: 0.0,
        }
    }

    #[test]
    fn the_agents_answer_decides_the_reload_step() {
        use crate::control::client::Outcome;
        use crate::ledger::model::{Decision, Reason};
        let done = |d: Decision, verified| {
            Ok(RestartAnswer::Completed {
                id: "1".into(),
                outcome: Outcome {
                    decision: d.into(),
                    verified,
                    detail: "workers replaced in 9.0 ms".into(),
                },
            })
        };
        assert_eq!(
            judge_reload(done(Decision::Executed, true)).unwrap(),
            "restart executed and verified: workers replaced in 9.0 ms"
        );
        assert!(judge_reload(done(Decision::Executed, false)).is_err());
        assert!(judge_reload(done(Decision::Failed, false)).is_err());
        let cooldown = judge_reload(Ok(RestartAnswer::Refused {
            verdict: Verdict::Blocked.into(),
            reason: Reason::CooldownOverrideRequired.into(),
            requires_acknowledgement: true,
            cooldown_left: Some(42),
        }))
        .unwrap_err();
        assert!(cooldown.what.contains("42 s"), "{cooldown:?}");
        assert!(cooldown.hint.contains("--override --acknowledge"));
        let denied = judge_reload(Err(ClientError::Denied("no".into()))).unwrap_err();
        assert!(denied.hint.contains("WARDEN_ADMIN_GROUP"));
    }
}
