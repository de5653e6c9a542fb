//! Conda / venv rules: the prefix is an environment, its interpreter is present, lives inside it
//! and matches the recorded version, gunicorn is installed for that interpreter, and the conda
//! variables agree with each other.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{Context, Resolved};
use crate::config::RuntimeKind;
use crate::contract::conda;
use crate::contract::finding::{Code, Finding};

pub(super) fn check(ctx: &Context<'_>, resolved: &mut Resolved, out: &mut Vec<Finding>) {
    let s = ctx.settings;

    if let Some(bin) = &s.conda_bin {
        let ok = std::fs::metadata(&bin.value)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            out.push(Finding::new(
                Code::CondaBin,
                bin.value.display().to_string(),
                format!("CONDA_BIN (from {}) does not exist or is not executable", bin.source),
                "point CONDA_BIN at the install's <root>/bin/conda, or unset it and set CONDA_PREFIX",
            ));
        }
    }

    let Some(prefix) = &ctx.prefix else { return };

    if let Some(dflt) = &s.conda_default_env {
        let v = &dflt.value;
        let agrees = v == &s.conda_env_name.value
            || super::same_path(Path::new(v), &prefix.path)
            || (v == "base" && prefix.root.as_deref() == Some(prefix.path.as_path()));
        if !agrees && prefix.kind == RuntimeKind::Conda {
            out.push(Finding::new(
                Code::CondaDefaultEnv,
                "CONDA_DEFAULT_ENV",
                format!(
                    "CONDA_DEFAULT_ENV={v} (from {}) but CONDA_ENV_NAME={} (from {})",
                    dflt.source, s.conda_env_name.value, s.conda_env_name.source
                ),
                "the unit runs with another conda env activated: remove CONDA_DEFAULT_ENV from its environment or make CONDA_ENV_NAME name the same env",
            ));
        }
    }

    if let (Some(p), Some(root)) = (&s.conda_prefix, &prefix.root) {
        let named =
            s.conda_bin.is_some() || s.conda_env_name.source != crate::config::Source::Default;
        let derived = conda::env_prefix(root, &s.conda_env_name.value);
        if named && !super::same_path(&p.value, &derived) {
            out.push(Finding::new(
                Code::PrefixDisagree,
                p.value.display().to_string(),
                format!(
                    "CONDA_PREFIX (from {}) is not {}, the env CONDA_ENV_NAME={} names under the root of CONDA_BIN",
                    p.source,
                    derived.display(),
                    s.conda_env_name.value
                ),
                "make CONDA_PREFIX, CONDA_BIN and CONDA_ENV_NAME name one environment, or drop CONDA_PREFIX and let warden derive it",
            ));
        }
    }

    let pfx = &prefix.path;
    let pfx_s = pfx.display().to_string();
    let (is_env, what) = match prefix.kind {
        RuntimeKind::Conda => (conda::is_conda_env(pfx), "conda-meta/history"),
        RuntimeKind::Venv => (conda::is_venv(pfx), "pyvenv.cfg"),
    };
    if !is_env {
        let msg = if pfx.is_dir() {
            format!(
                "{pfx_s} has no {what}, so it is not an environment (resolved from {})",
                prefix.how
            )
        } else {
            format!("{pfx_s} does not exist (resolved from {})", prefix.how)
        };
        out.push(Finding::new(
            Code::NotAnEnvironment,
            pfx_s.clone(),
            msg,
            match prefix.kind {
                RuntimeKind::Conda => "create it (`conda env create -f environment.yml -n NAME`) or point CONDA_ENV_NAME/CONDA_PREFIX at an existing env (`conda env list`)",
                RuntimeKind::Venv => "create it with `python3 -m venv PREFIX` or point WARDEN_PYTHON_PREFIX at an existing venv",
            },
        ));
        return;
    }

    let python = pfx.join("bin/python");
    let meta = std::fs::metadata(&python);
    let executable = meta
        .as_ref()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if !executable {
        out.push(Finding::new(
            Code::PythonMissing,
            python.display().to_string(),
            match &meta {
                Err(e) => format!("the interpreter cannot be used: {e}"),
                Ok(_) => "the interpreter is not an executable file".into(),
            },
            "reinstall python in the env (`conda install -p PREFIX python`) or recreate the environment",
        ));
        return;
    }
    resolved.python = Some(python.clone());
    let real = std::fs::canonicalize(&python).unwrap_or_else(|_| python.clone());
    let real_prefix = std::fs::canonicalize(pfx).unwrap_or_else(|_| pfx.clone());
    let venv_home = (prefix.kind == RuntimeKind::Venv)
        .then(|| venv_home(pfx))
        .flatten();
    let inside = real.starts_with(&real_prefix)
        || venv_home
            .as_deref()
            .is_some_and(|h| real.starts_with(std::fs::canonicalize(h).unwrap_or(h.into())));
    if !inside {
        out.push(Finding::new(
            Code::PythonOutsidePrefix,
            python.display().to_string(),
            format!("resolves to {}, outside the prefix {pfx_s}", real.display()),
            "the env's python is a link to another interpreter: recreate the environment so bin/python is its own",
        ));
    }

    let have = conda::interpreter_version(pfx, &real);
    resolved.python_version = have.clone();
    let recorded = match prefix.kind {
        RuntimeKind::Conda => {
            let recs = conda::recorded_python_versions(pfx);
            if recs.len() > 1 {
                out.push(Finding::new(
                    Code::PythonVersionMismatch,
                    pfx.join("conda-meta").display().to_string(),
                    format!(
                        "several python records: {}",
                        recs.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    "the env's package records are inconsistent: run `conda install -p PREFIX python=X.Y` to repair it",
                ));
                None
            } else {
                recs.into_iter()
                    .next()
                    .map(|(v, p)| (v, p.display().to_string()))
            }
        }
        RuntimeKind::Venv => conda::venv_recorded_version(pfx)
            .map(|v| (v, pfx.join("pyvenv.cfg").display().to_string())),
    };
    match (&recorded, &have) {
        (Some((rec, file)), Some(have)) if &conda::major_minor(rec) != have => {
            out.push(Finding::new(
                Code::PythonVersionMismatch,
                python.display().to_string(),
                format!("{file} records Python {rec} but the interpreter present is Python {have}"),
                "the env was modified outside conda: reinstall python (`conda install -p PREFIX python=VERSION`) or recreate the env",
            ));
        }
        (None, _) if out.iter().all(|f| f.code != Code::PythonVersionMismatch) => {
            out.push(Finding::new(
                Code::PythonRecordMissing,
                pfx_s.clone(),
                "no record of the Python version (conda-meta/python-*.json or pyvenv.cfg `version`)".to_string(),
                "install python through conda in this env so its version is recorded",
            ));
        }
        _ => {}
    }

    let gunicorn = pfx.join("bin/gunicorn");
    if !gunicorn.is_file() {
        out.push(Finding::new(
            Code::GunicornMissing,
            gunicorn.display().to_string(),
            format!("gunicorn is not installed in {pfx_s}"),
            "install it into the env: `conda install -p PREFIX gunicorn` or `PREFIX/bin/python -m pip install gunicorn`",
        ));
        return;
    }
    resolved.gunicorn = Some(gunicorn.clone());
    match conda::shebang_interpreter(&gunicorn) {
        Ok(Some(interp)) => {
            let ip = Path::new(&interp);
            let ok = ip.is_absolute()
                && ip
                    .parent()
                    .is_some_and(|d| super::same_path(d, &pfx.join("bin")))
                && ip.is_file();
            if !ok {
                out.push(Finding::new(
                    Code::GunicornShebang,
                    gunicorn.display().to_string(),
                    format!("its shebang runs {interp}, not the prefix's {}", python.display()),
                    "gunicorn was installed by another interpreter or the env was moved: reinstall it with `PREFIX/bin/python -m pip install --force-reinstall gunicorn`",
                ));
            }
        }
        Ok(None) => {}
        Err(e) => out.push(Finding::new(
            Code::GunicornMissing,
            gunicorn.display().to_string(),
            format!("cannot read it: {e}"),
            "make the prefix readable by the service user",
        )),
    }
}

fn venv_home(prefix: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(prefix.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "home").then(|| {
            let home = std::path::PathBuf::from(v.trim());
            // `home` names the interpreter's bin directory; its parent is the installation.
            home.parent().map(Path::to_path_buf).unwrap_or(home)
        })
    })
}
