//! `warden rehearse`: the runbook's pre-cutover rehearsal (see `crate::control::rehearsal`),
//! printed as text or JSON.

use std::fmt::Write as _;
use std::time::Instant;

use clap::Args;

use super::args::SourceArgs;
use super::errors;
use super::exit::Exit;
use crate::contract::inputs::gather;
use crate::control::rehearsal::{self, Plan, Rehearsal, StepVerdict};
use crate::platform::http::HealthUrl;

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

pub fn main(a: RehearseArgs) -> Exit {
    let t0 = Instant::now();
    let g = match super::sources(&a.source).and_then(|src| {
        gather(&src).map_err(|e| {
            errors::report(&e);
            Exit::Usage
        })
    }) {
        Ok(g) => g,
        Err(exit) => return exit,
    };
    let plan = Plan {
        reason: a.reason,
        manual_override: a.manual_override,
        acknowledge: a.acknowledge,
        health_url: a.health_url,
        rollback_drill: a.rollback_drill,
        target_seconds: a.target_seconds,
    };
    let r = rehearsal::rehearse(&plan, &g, t0);
    if a.json {
        super::print(&serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        super::print(&render(&r));
    }
    if r.passed {
        Exit::Ok
    } else {
        Exit::CheckFailed
    }
}

/// The report as text: one line per step, then the verdict.
fn render(r: &Rehearsal) -> String {
    let mut out = format!("warden rehearse: contract {}\n", r.contract_version);
    for s in &r.steps {
        let tag = match s.verdict {
            StepVerdict::Pass => "PASS",
            StepVerdict::Fail => "FAIL",
            StepVerdict::Skip => "skip",
        };
        let ms = s.ms.map(fmt_ms).unwrap_or_default();
        let _ = writeln!(out, "  {tag}  {:<9} {}{ms}", s.name, s.detail);
        if let Some(h) = &s.hint {
            let _ = writeln!(out, "        help: {h}");
        }
    }
    if let Some(p) = &r.policy_after {
        let _ = writeln!(out, "  policy after: {p}");
    }
    let passed = r
        .steps
        .iter()
        .filter(|s| s.verdict == StepVerdict::Pass)
        .count();
    let _ = write!(
        out,
        "rehearsal {}: {passed}/{} steps passed in {:.2} s",
        if r.passed { "passed" } else { "FAILED" },
        r.steps.len(),
        r.total_ms / 1000.0
    );
    out
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("  ({:.2} s)", ms / 1000.0)
    } else {
        format!("  ({ms:.1} ms)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::rehearsal::Step;

    #[test]
    fn the_report_reads_step_by_step() {
        let step = |name, verdict, hint: Option<&str>| Step {
            name,
            verdict,
            detail: "d".into(),
            hint: hint.map(str::to_string),
            ms: Some(1.5),
        };
        let r = Rehearsal {
            passed: false,
            contract_version: "v".into(),
            steps: vec![
                step("contract", StepVerdict::Pass, None),
                step("app", StepVerdict::Fail, Some("start it")),
                step("reload", StepVerdict::Skip, None),
            ],
            rollback: None,
            policy_after: None,
            total_ms: 2500.0,
        };
        let text = render(&r);
        assert!(text.contains("PASS  contract  d  (1.5 ms)"), "{text}");
        assert!(text.contains("FAIL  app"), "{text}");
        assert!(text.contains("        help: start it"), "{text}");
        assert!(text.contains("skip  reload"), "{text}");
        assert!(
            text.ends_with("FAILED: 1/3 steps passed in 2.50 s"),
            "{text}"
        );
    }

    #[test]
    fn target_seconds_are_positive() {
        assert_eq!(positive_seconds("2.5"), Ok(2.5));
        for bad in ["0", "-1", "nan", "inf", "x"] {
            assert!(positive_seconds(bad).is_err(), "{bad}");
        }
    }
}
