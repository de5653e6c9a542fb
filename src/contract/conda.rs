//! Conda and venv prefixes: resolving the contract's prefix and reading what is in it, without
//! running any of its programs (an `ExecStartPre=` must stay fast and side-effect free).

use std::path::{Component, Path, PathBuf};

use crate::config::{RuntimeKind, Settings};

/// How the contract's prefix was resolved, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedPrefix {
    pub path: PathBuf,
    pub kind: RuntimeKind,
    pub how: String,
    /// The install root (`envs/` and `conda-meta/`), when known.
    pub root: Option<PathBuf>,
}

/// The install root a `conda` executable belongs to: `<root>/bin/conda` or
/// `<root>/condabin/conda`.
pub fn root_from_conda_bin(bin: &Path) -> Option<PathBuf> {
    let dir = bin.parent()?;
    match dir.file_name()?.to_str()? {
        "bin" | "condabin" => dir.parent().map(Path::to_path_buf),
        _ => None,
    }
}

/// `base` is the root itself; any other name lives under `<root>/envs/`.
pub fn env_prefix(root: &Path, name: &str) -> PathBuf {
    if name == "base" {
        root.to_path_buf()
    } else {
        root.join("envs").join(name)
    }
}

/// Looks `name` up on `path` (a `PATH`-style list).
pub fn which(name: &str, path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path.split(':').filter(|d| !d.is_empty()).find_map(|d| {
        let p = Path::new(d).join(name);
        std::fs::metadata(&p)
            .ok()
            .filter(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .map(|_| p)
    })
}

/// Resolves the prefix the contract names. `Err` carries why it cannot be resolved.
pub fn resolve(s: &Settings) -> Result<ResolvedPrefix, String> {
    if s.runtime == RuntimeKind::Venv {
        let p = s
            .python_prefix
            .as_ref()
            .expect("venv runtime implies a prefix");
        return Ok(ResolvedPrefix {
            path: p.value.clone(),
            kind: RuntimeKind::Venv,
            how: format!("WARDEN_PYTHON_PREFIX ({})", p.source),
            root: None,
        });
    }
    let root = s
        .conda_bin
        .as_ref()
        .and_then(|b| root_from_conda_bin(&b.value))
        .or_else(|| {
            // The original accepts conda on PATH when CONDA_BIN is unset.
            let path = std::env::var("PATH").unwrap_or_default();
            which("conda", &path)
                .and_then(|b| std::fs::canonicalize(b).ok())
                .and_then(|b| root_from_conda_bin(&b))
        });
    if let Some(p) = &s.conda_prefix {
        return Ok(ResolvedPrefix {
            path: p.value.clone(),
            kind: RuntimeKind::Conda,
            how: format!("CONDA_PREFIX ({})", p.source),
            root,
        });
    }
    match root {
        Some(root) => Ok(ResolvedPrefix {
            path: env_prefix(&root, &s.conda_env_name.value),
            kind: RuntimeKind::Conda,
            how: format!(
                "CONDA_BIN's root {} and CONDA_ENV_NAME={}",
                root.display(),
                s.conda_env_name.value
            ),
            root: Some(root),
        }),
        None => Err(match &s.conda_bin {
            Some(b) => format!(
                "CONDA_BIN={} is not <root>/bin/conda or <root>/condabin/conda",
                b.value.display()
            ),
            None => "none of CONDA_PREFIX, CONDA_BIN or WARDEN_PYTHON_PREFIX is set and conda is not on PATH".into(),
        }),
    }
}

/// A prefix is a conda environment iff `conda-meta/history` is a file.
pub fn is_conda_env(prefix: &Path) -> bool {
    prefix.join("conda-meta/history").is_file()
}

pub fn is_venv(prefix: &Path) -> bool {
    prefix.join("pyvenv.cfg").is_file()
}

/// The prefix an executable belongs to: `<p>/bin/<exe>` where `<p>` is a conda env or a venv.
pub fn owning_prefix(exe: &Path) -> Option<PathBuf> {
    let bin = exe.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let p = bin.parent()?;
    (is_conda_env(p) || is_venv(p)).then(|| p.to_path_buf())
}

/// Python versions recorded in `conda-meta/python-<ver>-<build>.json` (file names only; the
/// name is the package record's identity, so the JSON need not be parsed).
pub fn recorded_python_versions(prefix: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(prefix.join("conda-meta")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix("python-")?.strip_suffix(".json")?;
            let (ver, _build) = rest.split_once('-')?;
            ver.chars()
                .next()
                .filter(char::is_ascii_digit)
                .map(|_| (ver.to_string(), e.path()))
        })
        .collect();
    out.sort();
    out
}

/// The version a venv's `pyvenv.cfg` records (`version = 3.11.2`, or `version_info`).
pub fn venv_recorded_version(prefix: &Path) -> Option<String> {
    let text = std::fs::read_to_string(prefix.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        matches!(k.trim(), "version" | "version_info").then(|| v.trim().to_string())
    })
}

/// `major.minor` of the interpreter present, from the resolved executable's name
/// (`python3.11`) or, for copies named plainly `python`, from the prefix's `lib/pythonX.Y`.
pub fn interpreter_version(prefix: &Path, resolved_python: &Path) -> Option<String> {
    let from_name = resolved_python
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("python"))
        .filter(|v| v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
        .map(str::to_string);
    if from_name.is_some() {
        return from_name;
    }
    let mut libs: Vec<String> = std::fs::read_dir(prefix.join("lib"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let v = n.strip_prefix("python")?;
            (v.contains('.') && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
                .then(|| v.to_string())
        })
        .collect();
    libs.sort();
    libs.dedup();
    (libs.len() == 1).then(|| libs.remove(0))
}

/// `3.11.9` → `3.11`
pub fn major_minor(v: &str) -> String {
    v.split('.').take(2).collect::<Vec<_>>().join(".")
}

/// The interpreter a script's `#!` line names (first word; `/usr/bin/env python` gives `python`).
pub fn shebang_interpreter(script: &Path) -> std::io::Result<Option<String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(script)?;
    let mut buf = [0u8; 512];
    let n = f.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    let Some(line) = head.lines().next().and_then(|l| l.strip_prefix("#!")) else {
        return Ok(None);
    };
    let mut words = line.split_whitespace();
    let first = words.next().map(str::to_string);
    Ok(match first.as_deref() {
        Some(p) if p.ends_with("/env") => words.find(|w| !w.starts_with('-')).map(str::to_string),
        _ => first,
    })
}

/// Lexical normalization (`.` and `..` folded) without touching the file system.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Canonical path when it exists, lexical normalization otherwise.
pub fn canonical_or_normal(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| normalize(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_and_env_prefixes() {
        assert_eq!(
            root_from_conda_bin(Path::new("/opt/miniconda3/bin/conda")),
            Some(PathBuf::from("/opt/miniconda3"))
        );
        assert_eq!(
            root_from_conda_bin(Path::new("/opt/miniconda3/condabin/conda")),
            Some(PathBuf::from("/opt/miniconda3"))
        );
        assert_eq!(root_from_conda_bin(Path::new("/usr/local/conda")), None);
        assert_eq!(
            env_prefix(Path::new("/opt/c"), "base"),
            PathBuf::from("/opt/c")
        );
        assert_eq!(
            env_prefix(Path::new("/opt/c"), "app"),
            PathBuf::from("/opt/c/envs/app")
        );
    }

    #[test]
    fn records_and_versions() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("conda-meta")).unwrap();
        std::fs::create_dir_all(p.join("lib/python3.11/site-packages")).unwrap();
        std::fs::write(p.join("conda-meta/python-3.11.9-h955ad1f_0.json"), "{}").unwrap();
        std::fs::write(p.join("conda-meta/python-dateutil-2.9.0-py_0.json"), "{}").unwrap();
        assert_eq!(recorded_python_versions(p).len(), 1);
        assert_eq!(recorded_python_versions(p)[0].0, "3.11.9");
        assert_eq!(
            interpreter_version(p, &p.join("bin/python")),
            Some("3.11".into())
        );
        assert_eq!(
            interpreter_version(p, Path::new("/usr/bin/python3.12")),
            Some("3.12".into())
        );
        assert_eq!(major_minor("3.11.9"), "3.11");
    }

    #[test]
    fn shebangs() {
        let d = tempfile::tempdir().unwrap();
        let s = d.path().join("g");
        std::fs::write(&s, "#!/opt/p/bin/python3.11 -s\nimport x\n").unwrap();
        assert_eq!(
            shebang_interpreter(&s).unwrap().as_deref(),
            Some("/opt/p/bin/python3.11")
        );
        std::fs::write(&s, "#!/usr/bin/env -S python3\n").unwrap();
        assert_eq!(shebang_interpreter(&s).unwrap().as_deref(), Some("python3"));
        std::fs::write(&s, "\x7fELF").unwrap();
        assert_eq!(shebang_interpreter(&s).unwrap(), None);
    }

    #[test]
    fn normalization() {
        assert_eq!(
            normalize(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
    }
}
