//! The raw layer: each variable warden reads, its last value as text and where it was set
//! (the process environment < the app unit's `Environment=` < env files in the order given, as
//! systemd layers them). Nothing is validated here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use super::vars;
use crate::systemd::envfile::{self, EnvFile};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    Default,
    Environment,
    /// An `Environment=` line of a unit.
    Unit {
        unit: String,
    },
    EnvFile {
        path: PathBuf,
        line: usize,
    },
    /// Computed from other values (e.g. the flag path from the runtime directory).
    Derived {
        from: String,
    },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Environment => f.write_str("environment"),
            Source::Unit { unit } => write!(f, "Environment= of {unit}"),
            Source::EnvFile { path, line } => write!(f, "{}:{}", path.display(), line),
            Source::Derived { from } => write!(f, "derived from {from}"),
        }
    }
}

/// A value and its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

impl<T> Sourced<T> {
    pub fn new(value: T, source: Source) -> Self {
        Sourced { value, source }
    }
}

/// An env file given with `--env-file`; a leading `-` makes it optional, as in units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileArg {
    pub path: PathBuf,
    pub optional: bool,
}

impl std::str::FromStr for EnvFileArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (optional, p) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if p.is_empty() {
            return Err("empty path".into());
        }
        Ok(EnvFileArg {
            path: PathBuf::from(p),
            optional,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read env file {path}: {source}")]
    EnvFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The raw layer.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// Each variable's last value and its source.
    pub values: BTreeMap<String, (String, Source)>,
    /// Env files that were read, with what they contain (for the checks).
    pub files: Vec<(PathBuf, EnvFile)>,
    /// Optional env files that were absent.
    pub missing_optional: Vec<PathBuf>,
}

impl Layers {
    /// Reads the process environment and the env files.
    pub fn load(env_files: &[EnvFileArg]) -> Result<Self, LoadError> {
        Self::load_from(std::env::vars_os(), env_files)
    }

    /// Reads the process environment, a unit's `Environment=` assignments, then the env files.
    pub fn load_with_unit(
        unit: &str,
        environment: &[(String, String)],
        env_files: &[EnvFileArg],
    ) -> Result<Self, LoadError> {
        let mut l = Layers::default();
        l.add_environment(std::env::vars_os());
        for (k, v) in environment {
            if vars::is_read(k) {
                let source = Source::Unit { unit: unit.into() };
                l.values.insert(k.clone(), (v.clone(), source));
            }
        }
        l.add_files(env_files)?;
        Ok(l)
    }

    pub fn load_from(
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
        env_files: &[EnvFileArg],
    ) -> Result<Self, LoadError> {
        let mut l = Layers::default();
        l.add_environment(vars);
        l.add_files(env_files)?;
        Ok(l)
    }

    fn add_environment(
        &mut self,
        vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
    ) {
        for (k, v) in vars {
            let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
                continue;
            };
            if vars::is_read(k) {
                self.values
                    .insert(k.to_string(), (v.to_string(), Source::Environment));
            }
        }
    }

    fn add_files(&mut self, env_files: &[EnvFileArg]) -> Result<(), LoadError> {
        let l = self;
        let cwd = std::env::current_dir().unwrap_or_default();
        for arg in env_files {
            // Absolute, so that a file given relative and the same file a unit names are one.
            let path: std::path::PathBuf = cwd.join(&arg.path).components().collect();
            let arg = EnvFileArg {
                path,
                optional: arg.optional,
            };
            let text = match std::fs::read_to_string(&arg.path) {
                Ok(t) => t,
                Err(e) if arg.optional && e.kind() == std::io::ErrorKind::NotFound => {
                    l.missing_optional.push(arg.path.clone());
                    continue;
                }
                Err(e) => {
                    return Err(LoadError::EnvFile {
                        path: arg.path.clone(),
                        source: e,
                    });
                }
            };
            let parsed = envfile::parse(&text);
            for a in &parsed.assignments {
                if vars::is_read(&a.key) {
                    l.values.insert(
                        a.key.clone(),
                        (
                            a.value.clone(),
                            Source::EnvFile {
                                path: arg.path.clone(),
                                line: a.line,
                            },
                        ),
                    );
                }
            }
            l.files.push((arg.path.clone(), parsed));
        }
        Ok(())
    }

    /// Names the app the contract is for (`--app`): `WARDEN_APP_UNIT` is its unit unless the
    /// contract states one; a contract that states another app's is an error, returned as the
    /// unit it states.
    pub fn name_app(&mut self, app_unit: &str, given_as: &str) -> Result<(), (String, Source)> {
        match self.values.get("WARDEN_APP_UNIT") {
            None => {
                let from = Source::Derived {
                    from: given_as.into(),
                };
                self.values
                    .insert("WARDEN_APP_UNIT".into(), (app_unit.into(), from));
                Ok(())
            }
            Some((v, _)) if v.trim() == app_unit || format!("{}.service", v.trim()) == app_unit => {
                Ok(())
            }
            Some((v, source)) => Err((v.clone(), source.clone())),
        }
    }

    /// The value of `name` and where it was set.
    pub fn get(&self, name: &str) -> Option<(&str, &Source)> {
        self.values.get(name).map(|(v, s)| (v.as_str(), s))
    }
}
