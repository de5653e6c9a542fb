//! The model of a service unit as warden needs it, whether read from systemd over D-Bus or from
//! unit files, and the analysis of its command lines: which interpreter a command runs, through
//! which wrappers (`bash -c`, `env`, `conda run`), and which Gunicorn options it passes.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnitOrigin {
    /// The definition systemd has loaded, read over D-Bus.
    Bus,
    /// Parsed from unit files on disk.
    #[default]
    Files,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecCommand {
    pub path: String,
    pub argv: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitDef {
    pub name: String,
    pub origin: UnitOrigin,
    pub fragment_path: Option<PathBuf>,
    pub drop_in_paths: Vec<PathBuf>,
    pub exec_start: Vec<ExecCommand>,
    pub exec_start_pre: Vec<ExecCommand>,
    /// `Environment=` assignments in order.
    pub environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths and whether each is optional (`-`).
    pub environment_files: Vec<(PathBuf, bool)>,
    pub user: Option<String>,
    /// `WorkingDirectory=`, when it names a directory (not `~`).
    pub working_directory: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub runtime_directory: Vec<String>,
    pub runtime_directory_preserve: String,
    pub state_directory: Vec<String>,
    pub need_daemon_reload: bool,
}

impl UnitDef {
    /// Where the definition came from, for diagnostics.
    pub fn describe_source(&self) -> String {
        match (&self.origin, &self.fragment_path) {
            (UnitOrigin::Bus, Some(p)) => format!("{} (loaded by systemd)", p.display()),
            (UnitOrigin::Bus, None) => "systemd (no fragment)".into(),
            (UnitOrigin::Files, Some(p)) => p.display().to_string(),
            (UnitOrigin::Files, None) => "unit files".into(),
        }
    }

    /// Whether the runtime directories survive this unit's stop.
    pub fn preserves_runtime_directory(&self) -> bool {
        matches!(
            self.runtime_directory_preserve.as_str(),
            "yes" | "restart" | "true" | "1" | "on"
        )
    }
}

/// What a command line targets once wrappers are peeled off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CondaTarget {
    Name(String),
    Prefix(PathBuf),
    /// `conda run` without `-n`/`-p`: the base environment.
    Base,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgramKind {
    Gunicorn,
    Python,
    Other,
}

/// One program a unit's command line ends up running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program as written: a path, or a bare name looked up on `PATH`.
    pub program: String,
    pub kind: ProgramKind,
    /// Arguments after the program (for `python -m gunicorn`, after `-m gunicorn`).
    pub args: Vec<String>,
    /// Set when the program runs through `conda run`.
    pub conda_run: Option<CondaTarget>,
    /// The path of the `conda` executable used for `conda run`, as written.
    pub conda_exe: Option<String>,
    /// Whether a shell (`sh -c`, `bash -lc`) sits in between.
    pub via_shell: bool,
}

fn basename(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

fn is_shell(p: &str) -> bool {
    matches!(basename(p), "sh" | "bash" | "dash" | "zsh" | "ksh")
}

fn is_python(p: &str) -> bool {
    let b = basename(p);
    b == "python"
        || b.strip_prefix("python")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

fn is_assignment(w: &str) -> bool {
    w.split_once('=')
        .is_some_and(|(k, _)| crate::systemd::envfile::valid_name(k))
}

/// Finds the programs a command line runs. `argv` is already variable-expanded.
pub fn analyze(path: &str, argv: &[String]) -> Vec<Invocation> {
    let mut words: Vec<String> = argv.to_vec();
    if words.is_empty() {
        words.push(path.to_string());
    } else {
        words[0] = path.to_string();
    }
    let mut out = Vec::new();
    analyze_words(&words, false, &mut out, 0);
    out
}

fn analyze_words(words: &[String], via_shell: bool, out: &mut Vec<Invocation>, depth: usize) {
    // Wrappers nest at most a few levels deep in practice; the bound keeps hostile input cheap.
    if depth > 8 {
        return;
    }
    let mut i = 0;
    // Peel `exec`, `env [-i] [-u X] [K=V]…` and leading assignments.
    while i < words.len() {
        let w = words[i].as_str();
        if w == "exec" || is_assignment(w) {
            i += 1;
        } else if basename(w) == "env" {
            i += 1;
            while i < words.len() {
                let a = words[i].as_str();
                if a == "-u" || a == "--unset" || a == "-C" || a == "--chdir" {
                    i += 2;
                } else if a.starts_with('-') || is_assignment(a) {
                    i += 1;
                } else {
                    break;
                }
            }
        } else {
            break;
        }
    }
    let Some(prog) = words.get(i) else { return };
    let rest = &words[i + 1..];

    if is_shell(prog) {
        // `bash -lc 'script'`: the script is the word after the first option cluster with `c`.
        if let Some(pos) = rest
            .iter()
            .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))
            && let Some(script) = rest.get(pos + 1)
        {
            for segment in shell_segments(script) {
                analyze_words(&segment, true, out, depth + 1);
            }
        }
        return;
    }

    if basename(prog) == "conda" || basename(prog) == "mamba" || basename(prog) == "micromamba" {
        if rest.first().map(String::as_str) != Some("run") {
            return;
        }
        let mut j = 1;
        let mut target = CondaTarget::Base;
        while j < rest.len() {
            let a = rest[j].as_str();
            match a {
                "-n" | "--name" => {
                    if let Some(v) = rest.get(j + 1) {
                        target = CondaTarget::Name(v.clone());
                    }
                    j += 2;
                }
                "-p" | "--prefix" => {
                    if let Some(v) = rest.get(j + 1) {
                        target = CondaTarget::Prefix(PathBuf::from(v));
                    }
                    j += 2;
                }
                "--cwd" => j += 2,
                _ if a.starts_with("--name=") => {
                    target = CondaTarget::Name(a["--name=".len()..].to_string());
                    j += 1;
                }
                _ if a.starts_with("--prefix=") => {
                    target = CondaTarget::Prefix(PathBuf::from(&a["--prefix=".len()..]));
                    j += 1;
                }
                _ if a.starts_with('-') => j += 1,
                _ => break,
            }
        }
        let mut inner = Vec::new();
        analyze_words(&rest[j..], via_shell, &mut inner, depth + 1);
        for mut inv in inner {
            inv.conda_run = Some(target.clone());
            inv.conda_exe = Some(prog.clone());
            out.push(inv);
        }
        // `conda run` of something that is neither Python nor Gunicorn still pins a prefix.
        if out.is_empty()
            && let Some(p) = rest.get(j)
        {
            out.push(Invocation {
                program: p.clone(),
                kind: ProgramKind::Other,
                args: rest[j + 1..].to_vec(),
                conda_run: Some(target),
                conda_exe: Some(prog.clone()),
                via_shell,
            });
        }
        return;
    }

    let (kind, args) = if basename(prog) == "gunicorn" {
        (ProgramKind::Gunicorn, rest.to_vec())
    } else if is_python(prog) {
        match rest.iter().position(|a| a == "-m") {
            Some(m) if rest.get(m + 1).map(String::as_str) == Some("gunicorn") => {
                (ProgramKind::Gunicorn, rest[m + 2..].to_vec())
            }
            _ => (ProgramKind::Python, rest.to_vec()),
        }
    } else {
        (ProgramKind::Other, rest.to_vec())
    };
    out.push(Invocation {
        program: prog.clone(),
        kind,
        args,
        conda_run: None,
        conda_exe: None,
        via_shell,
    });
}

/// Splits a shell script into simple commands on `;`, `&&`, `||`, `|` and newlines. Enough for
/// the one-liners units wrap in `bash -c`; anything cleverer is not analysed.
fn shell_segments(script: &str) -> Vec<Vec<String>> {
    let mut segments = vec![Vec::new()];
    for line in script.split('\n') {
        for w in super::words::split_words(line) {
            let (word, ends) = match w.strip_suffix(';') {
                Some(s) => (s.to_string(), true),
                None => (w.clone(), false),
            };
            if matches!(word.as_str(), "&&" | "||" | "|" | ";") {
                segments.push(Vec::new());
                continue;
            }
            if !word.is_empty()
                && let Some(last) = segments.last_mut()
            {
                last.push(word);
            }
            if ends {
                segments.push(Vec::new());
            }
        }
        segments.push(Vec::new());
    }
    segments.retain(|s| !s.is_empty());
    segments
}

/// The options of a Gunicorn command line that the contract cares about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GunicornArgs {
    pub pid: Option<String>,
    pub binds: Vec<String>,
    pub config: Option<String>,
}

pub fn gunicorn_args(args: &[String]) -> GunicornArgs {
    let mut g = GunicornArgs::default();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let next = args.get(i + 1).cloned();
        let mut take = |slot: &mut dyn FnMut(String)| {
            if let Some(v) = next.clone() {
                slot(v);
            }
            i += 1;
        };
        match a {
            "-p" | "--pid" => take(&mut |v| g.pid = Some(v)),
            "-b" | "--bind" => take(&mut |v| g.binds.push(v)),
            "-c" | "--config" => take(&mut |v| g.config = Some(v)),
            _ => {
                if let Some(v) = a.strip_prefix("--pid=") {
                    g.pid = Some(v.to_string());
                } else if let Some(v) = a.strip_prefix("--bind=") {
                    g.binds.push(v.to_string());
                } else if let Some(v) = a.strip_prefix("--config=") {
                    g.config = Some(v.to_string());
                }
            }
        }
        i += 1;
    }
    g
}

/// The environment of a unit as its processes see it: `Environment=` first, then each
/// `EnvironmentFile=` in order, which overrides (systemd's precedence).
pub fn unit_environment(
    unit: &UnitDef,
    files: &dyn Fn(&Path) -> Option<crate::systemd::envfile::EnvFile>,
) -> std::collections::BTreeMap<String, String> {
    let mut env: std::collections::BTreeMap<String, String> =
        unit.environment.iter().cloned().collect();
    for (p, _) in &unit.environment_files {
        if let Some(f) = files(p) {
            for a in f.assignments {
                env.insert(a.key, a.value);
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn direct_gunicorn() {
        let inv = analyze(
            "/opt/c/envs/app/bin/gunicorn",
            &w(&[
                "gunicorn",
                "--pid",
                "/run/a/g.pid",
                "-b",
                "0.0.0.0:8080",
                "app:app",
            ]),
        );
        assert_eq!(inv.len(), 1);
        assert_eq!(inv[0].kind, ProgramKind::Gunicorn);
        let g = gunicorn_args(&inv[0].args);
        assert_eq!(g.pid.as_deref(), Some("/run/a/g.pid"));
        assert_eq!(g.binds, vec!["0.0.0.0:8080"]);
    }

    #[test]
    fn bash_conda_run_gunicorn() {
        let inv = analyze(
            "/bin/bash",
            &w(&[
                "/bin/bash",
                "-lc",
                "cd /opt/app && exec conda run --no-capture-output -n mes-dashboard gunicorn --pid=/run/x.pid --bind 127.0.0.1:9 app:app",
            ]),
        );
        let g: Vec<_> = inv
            .iter()
            .filter(|i| i.kind == ProgramKind::Gunicorn)
            .collect();
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].conda_run,
            Some(CondaTarget::Name("mes-dashboard".into()))
        );
        assert!(g[0].via_shell);
        assert_eq!(gunicorn_args(&g[0].args).pid.as_deref(), Some("/run/x.pid"));
    }

    #[test]
    fn python_module_and_env_wrapper() {
        let inv = analyze(
            "/usr/bin/env",
            &w(&[
                "env",
                "-i",
                "A=1",
                "/p/bin/python3.11",
                "-m",
                "gunicorn",
                "-p",
                "/x",
            ]),
        );
        assert_eq!(inv[0].program, "/p/bin/python3.11");
        assert_eq!(inv[0].kind, ProgramKind::Gunicorn);
        assert_eq!(gunicorn_args(&inv[0].args).pid.as_deref(), Some("/x"));
        let inv = analyze("/p/bin/python", &w(&["python", "-m", "rq", "worker"]));
        assert_eq!(inv[0].kind, ProgramKind::Python);
    }

    #[test]
    fn conda_run_prefix_of_other_program() {
        let inv = analyze(
            "/opt/c/bin/conda",
            &w(&["conda", "run", "-p", "/opt/c/envs/x", "rq", "worker"]),
        );
        assert_eq!(inv[0].program, "rq");
        assert_eq!(
            inv[0].conda_run,
            Some(CondaTarget::Prefix("/opt/c/envs/x".into()))
        );
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        // Each `conda run` recurses once; thousands of them must not recurse thousands deep.
        let mut words = vec!["conda".to_string()];
        for _ in 0..5000 {
            words.extend(["run".to_string(), "conda".to_string()]);
        }
        words.extend(["run".to_string(), "python".to_string()]);
        assert!(analyze("conda", &words).len() <= 1);
        let long = "a; ".repeat(20_000);
        let _ = analyze("/bin/sh", &w(&["sh", "-c", &long]));
    }
}
