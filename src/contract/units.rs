//! Unit rules: every unit of the contract runs from the same prefix, loads the same env file,
//! sees the same contract variables, and agrees with the contract on PID file, bind and
//! runtime directory; systemd runs the definition that is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Context, EnvFileRead, same_path};
use crate::config::vars;
use crate::contract::conda;
use crate::contract::finding::{Code, Finding, Severity};
use crate::systemd::unit::{CondaTarget, Invocation, ProgramKind, UnitDef, analyze, gunicorn_args};
use crate::systemd::words::expand_argv;

/// systemd's default `PATH` for system services.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub(super) fn check(ctx: &mut Context<'_>, out: &mut Vec<Finding>) {
    for l in ctx.inputs.units {
        if let Err(why) = &l.result {
            out.push(Finding::new(
                Code::UnitNotFound,
                l.name.clone(),
                why.clone(),
                "install the unit file (and `systemctl daemon-reload`), or fix WARDEN_APP_UNIT / WARDEN_UNITS",
            ));
        }
    }
    if ctx.settings.app_unit.is_none() {
        out.push(Finding::new(
            Code::NoAppUnit,
            "WARDEN_APP_UNIT",
            "no app unit is configured, so the units of the contract are not checked",
            "set WARDEN_APP_UNIT to the Gunicorn unit (and WARDEN_UNITS to the others) in the shared env file",
        ));
    }
    env_files(ctx, out);
    if ctx.units.is_empty() {
        return;
    }
    let envs: Vec<(&UnitDef, BTreeMap<String, String>)> =
        ctx.units.iter().map(|u| (*u, ctx.unit_env(u))).collect();
    for (u, env) in &envs {
        interpreters(ctx, u, env, out);
        if u.need_daemon_reload {
            out.push(Finding::new(
                Code::DaemonReloadNeeded,
                u.name.clone(),
                format!(
                    "{} changed on disk since systemd loaded it; the unit runs the old definition",
                    u.describe_source()
                ),
                "run `systemctl daemon-reload`, then restart the unit",
            ));
        }
    }
    if let Some(app) = ctx.app_unit() {
        let env = envs
            .iter()
            .find(|(u, _)| u.name == app.name)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        gunicorn(ctx, app, &env, out);
    }
    runtime_directories(ctx, out);
    drift(&envs, out);
    contract_drift(ctx, &envs, out);
}

/// The agent's contract file (`/etc/warden/APP.env`) and the app unit must agree on what both
/// state: the app (its admin API) writes the flag where its own environment says, and the
/// agent watches where its contract says.
fn contract_drift(
    ctx: &Context<'_>,
    envs: &[(&UnitDef, BTreeMap<String, String>)],
    out: &mut Vec<Finding>,
) {
    let Some(app) = ctx.app_unit() else { return };
    let Some((_, app_env)) = envs.iter().find(|(u, _)| u.name == app.name) else {
        return;
    };
    for var in vars::contract().map(|v| v.name) {
        let Some((value, crate::config::Source::EnvFile { path, line })) =
            ctx.inputs.layers.get(var)
        else {
            continue;
        };
        // A file the app unit loads itself is the app's own view.
        if app.environment_files.iter().any(|(p, _)| p == path) {
            continue;
        }
        if let Some(seen) = app_env.get(var).filter(|seen| seen.as_str() != value) {
            out.push(Finding::new(
                Code::VariableDrift,
                var.to_string(),
                format!(
                    "the contract sets {var}={value} ({}:{line}), but {} sees {var}={seen}",
                    path.display(),
                    app.name
                ),
                format!(
                    "make them equal: set {var} the same in {} and in the app's env file",
                    path.display()
                ),
            ));
        }
    }
}

fn env_files(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let sets: Vec<(&str, Vec<&Path>)> = ctx
        .units
        .iter()
        .map(|u| {
            let mut v: Vec<&Path> = u
                .environment_files
                .iter()
                .map(|(p, _)| p.as_path())
                .collect();
            v.sort();
            v.dedup();
            (u.name.as_str(), v)
        })
        .collect();
    if sets.len() > 1 && sets.windows(2).any(|w| w[0].1 != w[1].1) {
        let detail = sets
            .iter()
            .map(|(n, v)| {
                let files = if v.is_empty() {
                    "(none)".to_string()
                } else {
                    v.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                format!("{n}: {files}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Finding::new(
            Code::EnvFileDrift,
            "EnvironmentFile=",
            format!("units load different env files: {detail}"),
            "give every unit of the contract the same EnvironmentFile= line (e.g. EnvironmentFile=/opt/mes-dashboard/.env)",
        ));
    }
    for (p, read) in &ctx.env_files {
        let optional = ctx
            .units
            .iter()
            .flat_map(|u| u.environment_files.iter())
            .filter(|(q, _)| q == p)
            .all(|(_, o)| *o);
        let users: Vec<&str> = ctx
            .units
            .iter()
            .filter(|u| u.environment_files.iter().any(|(q, _)| q == p))
            .map(|u| u.name.as_str())
            .collect();
        match read {
            EnvFileRead::Missing => out.push(
                Finding::new(
                    Code::EnvFileMissing,
                    p.display().to_string(),
                    format!(
                        "the env file of {} does not exist{}",
                        users.join(", "),
                        if optional { " (optional: the units start without the contract's values)" } else { "" }
                    ),
                    "create it (mode 0640, owner root, group of the service user) from the deployment's template",
                )
                .with_severity(if optional { Severity::Warning } else { Severity::Error }),
            ),
            EnvFileRead::Unreadable(e) => out.push(Finding::new(
                Code::EnvFileMissing,
                p.display().to_string(),
                format!("cannot read it: {e}"),
                "make it readable by the service user's group: `chown root:GROUP FILE && chmod 640 FILE`",
            )),
            EnvFileRead::Ok { file, mode } => {
                syntax(p, file, out);
                world_readable(p, *mode, out);
            }
        }
    }
    for (p, file) in &ctx.inputs.layers.files {
        if ctx.env_files.contains_key(p) {
            continue;
        }
        syntax(p, file, out);
        if let Ok(m) = std::fs::metadata(p) {
            use std::os::unix::fs::MetadataExt;
            world_readable(p, m.mode(), out);
        }
    }
}

fn syntax(p: &Path, file: &crate::systemd::envfile::EnvFile, out: &mut Vec<Finding>) {
    for prob in &file.problems {
        out.push(Finding::new(
            Code::EnvFileSyntax,
            format!("{}:{}", p.display(), prob.line),
            prob.reason.to_string(),
            "write one KEY=VALUE per line; quote values with spaces; comments start with # or ;",
        ));
    }
}

fn world_readable(p: &Path, mode: u32, out: &mut Vec<Finding>) {
    if mode & 0o004 != 0 {
        out.push(Finding::new(
            Code::EnvFileReadable,
            p.display().to_string(),
            format!(
                "mode {:04o} lets every local user read it, and it holds secrets",
                mode & 0o7777
            ),
            format!(
                "`chmod o-rwx {}` (the runbook's mode is 0640, group of the service user)",
                p.display()
            ),
        ));
    }
}

/// The prefix a program runs from, if it runs from one.
fn program_prefix(
    ctx: &Context<'_>,
    inv: &Invocation,
    env: &BTreeMap<String, String>,
) -> Option<PathBuf> {
    if let Some(target) = &inv.conda_run {
        let root = inv
            .conda_exe
            .as_deref()
            .filter(|e| e.starts_with('/'))
            .and_then(|e| conda::root_from_conda_bin(&conda::canonical_or_normal(Path::new(e))))
            .or_else(|| ctx.prefix.as_ref().and_then(|p| p.root.clone()));
        return match target {
            CondaTarget::Prefix(p) => Some(p.clone()),
            CondaTarget::Name(n) => root.map(|r| conda::env_prefix(&r, n)),
            CondaTarget::Base => root,
        };
    }
    let exe = if inv.program.starts_with('/') {
        PathBuf::from(&inv.program)
    } else {
        let path = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
        conda::which(&inv.program, path)?
    };
    conda::owning_prefix(&exe).or_else(|| {
        // A link such as /usr/local/bin/gunicorn -> /opt/conda/envs/x/bin/gunicorn.
        conda::owning_prefix(&std::fs::canonicalize(&exe).ok()?)
    })
}

fn interpreters(
    ctx: &Context<'_>,
    u: &UnitDef,
    env: &BTreeMap<String, String>,
    out: &mut Vec<Finding>,
) {
    let lookup = |k: &str| env.get(k).cloned();
    for (setting, cmds) in [
        ("ExecStart", &u.exec_start),
        ("ExecStartPre", &u.exec_start_pre),
    ] {
        for c in cmds {
            let argv = expand_argv(&c.argv, &lookup);
            for inv in analyze(&c.path, &argv) {
                let pythonish = matches!(inv.kind, ProgramKind::Gunicorn | ProgramKind::Python)
                    || inv.conda_run.is_some();
                if inv.conda_run.is_some() && setting == "ExecStart" {
                    out.push(Finding::new(
                        Code::CondaRun,
                        u.name.clone(),
                        format!(
                            "{setting}= runs {} through `conda run`: conda does not forward signals and systemd's MainPID is conda's Python, not {}",
                            inv.program,
                            if inv.kind == ProgramKind::Gunicorn { "the gunicorn master" } else { "the program" }
                        ),
                        "run the program from the prefix directly, e.g. ExecStart=/opt/miniconda3/envs/NAME/bin/gunicorn …, with Environment=PATH=/opt/miniconda3/envs/NAME/bin:/usr/bin:/bin",
                    ));
                }
                // A program on PATH that is neither Python nor Gunicorn is none of our business;
                // one given by path still is, if it lives in some prefix.
                if !pythonish && !inv.program.starts_with('/') {
                    continue;
                }
                let Some(contract) = &ctx.prefix else {
                    continue;
                };
                match program_prefix(ctx, &inv, env) {
                    Some(p)
                        if conda::canonical_or_normal(&p)
                            != conda::canonical_or_normal(&contract.path) =>
                    {
                        out.push(Finding::new(
                                Code::ForeignInterpreter,
                                u.name.clone(),
                                format!(
                                    "{setting}= runs {} from {}, but the contract's prefix is {}",
                                    inv.program,
                                    p.display(),
                                    contract.path.display()
                                ),
                                format!("run it from {}/bin (or change the contract's CONDA_ENV_NAME/CONDA_PREFIX if the unit is right)", contract.path.display()),
                            ));
                    }
                    Some(_) => {}
                    None if pythonish => out.push(Finding::new(
                        Code::ForeignInterpreter,
                        u.name.clone(),
                        format!(
                            "{setting}= runs {}, which is not in any conda env or venv (the system Python?); the contract's prefix is {}",
                            inv.program,
                            contract.path.display()
                        ),
                        format!("use {}/bin/{}", contract.path.display(), inv.program.rsplit('/').next().unwrap_or("python")),
                    )),
                    None => {}
                }
            }
        }
    }
}

fn gunicorn(
    ctx: &Context<'_>,
    app: &UnitDef,
    env: &BTreeMap<String, String>,
    out: &mut Vec<Finding>,
) {
    let s = ctx.settings;
    let lookup = |k: &str| env.get(k).cloned();
    let invs: Vec<Invocation> = app
        .exec_start
        .iter()
        .flat_map(|c| analyze(&c.path, &expand_argv(&c.argv, &lookup)))
        .filter(|i| i.kind == ProgramKind::Gunicorn)
        .collect();
    let pid_s = s.pid_file.value.display().to_string();
    if let Some(pf) = &app.pid_file
        && !same_path(pf, &s.pid_file.value)
    {
        out.push(Finding::new(
            Code::PidMismatch,
            app.name.clone(),
            format!(
                "PIDFile={} but WATCHDOG_PID_FILE={pid_s} (from {})",
                pf.display(),
                s.pid_file.source
            ),
            format!("set PIDFile={pid_s} in {}", app.describe_source()),
        ));
    }
    if invs.is_empty() {
        out.push(Finding::new(
            Code::NoGunicorn,
            app.name.clone(),
            "ExecStart= runs no gunicorn warden can recognise, so --pid and --bind are not checked",
            "run gunicorn directly: ExecStart=PREFIX/bin/gunicorn --pid ${WATCHDOG_PID_FILE} --bind ${GUNICORN_BIND} app:app",
        ));
        return;
    }
    for inv in invs {
        let g = gunicorn_args(&inv.args);
        match (&g.pid, &g.config) {
            (Some(p), _) if !same_path(Path::new(p), &s.pid_file.value) => out.push(Finding::new(
                Code::PidMismatch,
                app.name.clone(),
                format!("gunicorn --pid {p} but WATCHDOG_PID_FILE={pid_s} (from {})", s.pid_file.source),
                "pass --pid \"${WATCHDOG_PID_FILE}\" so both read the shared env file",
            )),
            (Some(_), _) => {}
            (None, Some(cfg)) => out.push(
                Finding::new(
                    Code::PidMismatch,
                    app.name.clone(),
                    format!("gunicorn has no --pid on its command line (it may be set in {cfg}, which warden cannot evaluate)"),
                    "pass --pid \"${WATCHDOG_PID_FILE}\" on the command line so the contract can be checked",
                )
                .with_severity(Severity::Warning),
            ),
            (None, None) => out.push(Finding::new(
                Code::PidMismatch,
                app.name.clone(),
                "gunicorn runs without --pid, so it writes no PID file and the watchdog cannot find the master",
                "add --pid \"${WATCHDOG_PID_FILE}\" to ExecStart=",
            )),
        }
        let want = &s.bind.value;
        match (g.binds.as_slice(), &g.config) {
            ([one], _) if one.parse::<crate::config::BindAddr>().as_ref() == Ok(want) => {}
            ([], Some(cfg)) => out.push(
                Finding::new(
                    Code::BindMismatch,
                    app.name.clone(),
                    format!("gunicorn has no --bind on its command line (it may be set in {cfg}, which warden cannot evaluate)"),
                    "pass --bind \"${GUNICORN_BIND}\" on the command line",
                )
                .with_severity(Severity::Warning),
            ),
            ([], None) => out.push(Finding::new(
                Code::BindMismatch,
                app.name.clone(),
                format!("gunicorn runs without --bind, so it listens on its default 127.0.0.1:8000, not GUNICORN_BIND={want}"),
                "add --bind \"${GUNICORN_BIND}\" to ExecStart=",
            )),
            ([one], _) => out.push(Finding::new(
                Code::BindMismatch,
                app.name.clone(),
                format!("gunicorn --bind {one} but GUNICORN_BIND={want} (from {})", s.bind.source),
                "pass --bind \"${GUNICORN_BIND}\" so both read the shared env file",
            )),
            (many, _) => out.push(Finding::new(
                Code::BindMismatch,
                app.name.clone(),
                format!("gunicorn binds {} addresses ({}); the contract is one port, GUNICORN_BIND={want}", many.len(), many.join(", ")),
                "keep a single --bind \"${GUNICORN_BIND}\"",
            )),
        }
    }
}

fn runtime_directories(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut by_dir: BTreeMap<&str, Vec<&UnitDef>> = BTreeMap::new();
    for u in &ctx.units {
        for d in &u.runtime_directory {
            by_dir.entry(d.as_str()).or_default().push(u);
        }
    }
    for (dir, units) in by_dir {
        if units.len() < 2 {
            continue;
        }
        let unpreserved: Vec<&str> = units
            .iter()
            .filter(|u| !u.preserves_runtime_directory())
            .map(|u| u.name.as_str())
            .collect();
        if !unpreserved.is_empty() {
            out.push(Finding::new(
                Code::SharedRuntimeDirectory,
                format!("/run/{dir}"),
                format!(
                    "RuntimeDirectory={dir} is declared by {} and not preserved by {}: stopping either unit deletes the directory, with the PID file and the restart flag",
                    units.iter().map(|u| u.name.as_str()).collect::<Vec<_>>().join(", "),
                    unpreserved.join(", ")
                ),
                "declare RuntimeDirectory= in the app unit only, with RuntimeDirectoryPreserve=yes, or add RuntimeDirectoryPreserve=yes to every unit that declares it",
            ));
        }
    }
}

fn drift(envs: &[(&UnitDef, BTreeMap<String, String>)], out: &mut Vec<Finding>) {
    if envs.len() < 2 {
        return;
    }
    for var in vars::contract().map(|v| v.name) {
        let vals: Vec<Option<&String>> = envs.iter().map(|(_, e)| e.get(var)).collect();
        if vals.windows(2).all(|w| w[0] == w[1]) {
            continue;
        }
        let detail = envs
            .iter()
            .zip(&vals)
            .map(|((u, _), v)| {
                format!("{}: {}", u.name, v.map(String::as_str).unwrap_or("(unset)"))
            })
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Finding::new(
            Code::VariableDrift,
            var.to_string(),
            format!("the units see different values: {detail}"),
            format!("set {var} once, in the env file every unit loads, and remove it from the units' Environment="),
        ));
    }
}
