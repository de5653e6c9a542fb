//! Which app a command acts on, and where its contract is, found the same way by every
//! command: `--env-file` when given; else `--app NAME`'s instance file
//! (`/etc/warden/NAME.env`), or without one the app unit's own environment read from systemd;
//! else the environment, when it states the contract (a command run by systemd with the
//! unit's `EnvironmentFile=`); else the one app configured in `/etc/warden`. Several apps and
//! no `--app`, or nothing configured at all, is an error that says what to do: never a check
//! of built-in defaults.

use std::path::PathBuf;

use clap::Args;

use super::errors::Explain;
use crate::config::instance::{self, AppName};
use crate::config::{EnvFileArg, vars};
use crate::contract::inputs::Sources;

/// `--app NAME`.
#[derive(Debug, Clone, Args)]
pub struct AppArg {
    /// The app to act on: its unit's name (mes-dashboard or mes-dashboard.service). Its
    /// contract is /etc/warden/NAME.env (WARDEN_CONFIG_DIR overrides the directory), else the
    /// app unit's own EnvironmentFile= and Environment=. Without it: the one app configured
    /// in /etc/warden
    #[arg(long, value_name = "NAME")]
    pub app: Option<AppName>,
}

/// Where a command's contract is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// `--env-file` (over the environment), for `app` if one was named.
    Files {
        files: Vec<EnvFileArg>,
        app: Option<AppName>,
    },
    /// The instance's env file.
    Instance { app: AppName, file: PathBuf },
    /// No instance file: the app unit's own environment.
    AppUnit { app: AppName },
    /// The environment states the contract.
    Environment,
}

impl Located {
    pub fn app(&self) -> Option<&AppName> {
        match self {
            Located::Files { app, .. } => app.as_ref(),
            Located::Instance { app, .. } | Located::AppUnit { app } => Some(app),
            Located::Environment => None,
        }
    }

    /// The sources a check reads, with the unit options of `--unit-path`/`--offline`.
    pub fn sources(&self, unit_paths: &[PathBuf], offline: bool) -> Sources {
        let (env_files, from_app_unit) = match self {
            Located::Files { files, .. } => (files.clone(), false),
            Located::Instance { file, .. } => (
                vec![EnvFileArg {
                    path: file.clone(),
                    optional: false,
                }],
                false,
            ),
            Located::AppUnit { .. } => (Vec::new(), true),
            Located::Environment => (Vec::new(), false),
        };
        Sources {
            env_files,
            app: self.app().cloned(),
            from_app_unit,
            unit_paths: unit_paths.to_vec(),
            offline,
        }
    }
}

/// Why no contract was found.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error(
        "nothing is configured: no --app or --env-file, no contract variable in the environment, \
         and no instance file (*.env) in {}",
        dir.display()
    )]
    Nothing { dir: PathBuf },
    #[error(
        "{} apps are configured in {} ({}): say which one",
        apps.len(),
        dir.display(),
        list(apps)
    )]
    Several { dir: PathBuf, apps: Vec<AppName> },
    #[error("cannot list the instances in {}: {source}", dir.display())]
    Unreadable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no contract for the agent of {app}: {} does not exist", file.display())]
    NoInstanceFile { app: AppName, file: PathBuf },
}

fn list(apps: &[AppName]) -> String {
    apps.iter()
        .map(AppName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Explain for LocateError {
    fn help(&self) -> String {
        match self {
            LocateError::Nothing { dir } => format!(
                "configure an app: write its contract to {}/APP.env (from the app's env file; \
                 /usr/share/doc/warden/MIGRATION.md), then `warden check --app APP`; or name a \
                 file with --env-file PATH",
                dir.display()
            ),
            LocateError::Several { apps, .. } => format!(
                "add --app NAME, e.g. --app {}",
                apps.first().map_or("APP", AppName::as_str)
            ),
            LocateError::Unreadable { .. } => {
                "run as root or as a user who may read the directory".into()
            }
            LocateError::NoInstanceFile { app, file } => format!(
                "write the contract to {} (`warden contract --app {app}` shows what the app \
                 unit states), then start the agent again",
                file.display()
            ),
        }
    }
}

/// Whether the process environment states a variable of the contract. `conda activate`
/// exports `CONDA_PREFIX` and `CONDA_DEFAULT_ENV` in every shell it runs in: those two alone
/// are the shell's, not a contract.
fn environment_states_contract() -> bool {
    const SET_BY_CONDA: [&str; 2] = ["CONDA_PREFIX", "CONDA_DEFAULT_ENV"];
    std::env::vars_os().any(|(k, _)| {
        k.to_str()
            .is_some_and(|k| vars::is_read(k) && !SET_BY_CONDA.contains(&k))
    })
}

/// Finds the contract of a command given `app` and `env_files`.
pub fn locate(app: Option<&AppName>, env_files: &[EnvFileArg]) -> Result<Located, LocateError> {
    locate_in(
        app,
        env_files,
        &instance::config_dir(),
        environment_states_contract(),
    )
}

/// As [`locate`], for the agent: an app's agent takes its contract from the instance file
/// only, never from a guess.
pub fn locate_for_agent(
    app: Option<&AppName>,
    env_files: &[EnvFileArg],
) -> Result<Located, LocateError> {
    match locate(app, env_files)? {
        Located::AppUnit { app } => Err(LocateError::NoInstanceFile {
            file: app.env_file(&instance::config_dir()),
            app,
        }),
        found => Ok(found),
    }
}

fn locate_in(
    app: Option<&AppName>,
    env_files: &[EnvFileArg],
    dir: &std::path::Path,
    env_states_contract: bool,
) -> Result<Located, LocateError> {
    if !env_files.is_empty() {
        return Ok(Located::Files {
            files: env_files.to_vec(),
            app: app.cloned(),
        });
    }
    if let Some(app) = app {
        let file = app.env_file(dir);
        return Ok(if file.exists() {
            Located::Instance {
                app: app.clone(),
                file,
            }
        } else {
            Located::AppUnit { app: app.clone() }
        });
    }
    if env_states_contract {
        return Ok(Located::Environment);
    }
    let mut apps = instance::configured(dir).map_err(|source| LocateError::Unreadable {
        dir: dir.to_path_buf(),
        source,
    })?;
    match apps.len() {
        0 => Err(LocateError::Nothing {
            dir: dir.to_path_buf(),
        }),
        1 => {
            let app = apps.remove(0);
            Ok(Located::Instance {
                file: app.env_file(dir),
                app,
            })
        }
        _ => Err(LocateError::Several {
            dir: dir.to_path_buf(),
            apps,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(s: &str) -> AppName {
        AppName::parse(s).unwrap()
    }

    #[test]
    fn the_contract_is_found_in_the_documented_order() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        let file: EnvFileArg = "/srv/x.env".parse().unwrap();
        // --env-file first, whatever else there is.
        assert_eq!(
            locate_in(Some(&app("shop")), std::slice::from_ref(&file), dir, true).unwrap(),
            Located::Files {
                files: vec![file.clone()],
                app: Some(app("shop"))
            }
        );
        // --app: the instance file, else the app unit.
        assert_eq!(
            locate_in(Some(&app("shop")), &[], dir, true).unwrap(),
            Located::AppUnit { app: app("shop") }
        );
        std::fs::write(dir.join("shop.env"), "").unwrap();
        assert_eq!(
            locate_in(Some(&app("shop.service")), &[], dir, false).unwrap(),
            Located::Instance {
                app: app("shop"),
                file: dir.join("shop.env")
            }
        );
        // The environment, when it states the contract (a unit's ExecStartPre=).
        assert_eq!(
            locate_in(None, &[], dir, true).unwrap(),
            Located::Environment
        );
        // One app configured: it.
        assert_eq!(
            locate_in(None, &[], dir, false).unwrap().app(),
            Some(&app("shop"))
        );
        // Several: which?
        std::fs::write(dir.join("mes-dashboard.env"), "").unwrap();
        let e = locate_in(None, &[], dir, false).unwrap_err();
        assert!(matches!(e, LocateError::Several { .. }), "{e}");
        assert!(e.to_string().contains("(mes-dashboard, shop)"), "{e}");
        assert!(e.help().contains("--app mes-dashboard"), "{}", e.help());
        // Nothing: how to configure.
        let empty = tempfile::tempdir().unwrap();
        let e = locate_in(None, &[], &empty.path().join("warden"), false).unwrap_err();
        assert!(matches!(e, LocateError::Nothing { .. }), "{e}");
        assert!(e.help().contains("APP.env"), "{}", e.help());
    }
}
