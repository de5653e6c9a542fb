//! Gathering a check's inputs: the configuration (from the files the command was given or
//! found, or from the app unit's own environment), the contract's units (from systemd over
//! D-Bus when it answers, else from unit files), and the scripts and docs to compare.

use std::path::PathBuf;

use super::{Inputs, Phase, TextInput, UnitLookup};
use crate::config::instance::AppName;
use crate::config::{self, EnvFileArg, Layers, Loaded, Source};
use crate::systemd::unit::UnitDef;
use crate::systemd::unitfile;

/// Where to read the contract from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub env_files: Vec<EnvFileArg>,
    /// The app the contract is for (`--app`): its unit is the contract's app unit.
    pub app: Option<AppName>,
    /// Take the contract from the app unit's own `EnvironmentFile=` and `Environment=`.
    pub from_app_unit: bool,
    /// Unit files here (highest priority first) instead of asking systemd.
    pub unit_paths: Vec<PathBuf>,
    /// Never contact systemd.
    pub offline: bool,
}

/// Why the inputs could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    #[error(transparent)]
    Config(#[from] config::LoadError),
    #[error("cannot read {what} {path}: {source}")]
    Input {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(
        "the contract for --app {app} names another app unit: WARDEN_APP_UNIT={stated} ({origin})"
    )]
    OtherApp {
        app: AppName,
        stated: String,
        origin: Source,
    },
    #[error("no contract for {app}: {why}")]
    NoAppUnit { app: AppName, why: String },
}

/// Everything a check reads, gathered once.
pub struct Gathered {
    pub loaded: Loaded,
    pub units: Vec<UnitLookup>,
    /// How units were read, for the report.
    pub unit_source: String,
}

impl Gathered {
    /// The rules' inputs, with these scripts and docs, at `phase`.
    pub fn inputs<'a>(
        &'a self,
        scripts: &'a [TextInput],
        docs: &'a [TextInput],
        phase: Phase,
    ) -> Inputs<'a> {
        Inputs {
            layers: &self.loaded.layers,
            settings: &self.loaded.settings,
            invalid: &self.loaded.invalid,
            units: &self.units,
            scripts,
            docs,
            phase,
            gunicorn: None,
        }
    }
}

/// Reads the configuration and the contract's units.
pub fn gather(src: &Sources) -> Result<Gathered, GatherError> {
    let (mut loaded, app_unit) = load_config(src)?;
    let (units, unit_source) = read_units(src, &loaded.settings.all_units())?;
    // Relative paths are joined to the app's working directory, as the app sees them, unless
    // the contract names its root.
    let app = app_unit.or_else(|| {
        let name = loaded.settings.app_unit.as_ref()?;
        units
            .iter()
            .find(|l| &l.name == name)
            .and_then(|l| l.result.as_ref().ok().cloned())
    });
    if let Some(root) = app.as_ref().and_then(|u| u.working_directory.clone()) {
        loaded = config::resolved(loaded.layers, &root);
    }
    Ok(Gathered {
        loaded,
        units,
        unit_source,
    })
}

/// Reads the configuration from `src`: the env files (over the environment), or the app
/// unit's own environment, with the app named. Returns the app unit when it was read.
pub fn load_config(src: &Sources) -> Result<(Loaded, Option<UnitDef>), GatherError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let (mut layers, unit) = match (&src.app, src.from_app_unit) {
        (Some(app), true) => {
            let unit = read_app_unit(src, app)?;
            let files: Vec<EnvFileArg> = unit
                .environment_files
                .iter()
                .map(|(path, optional)| EnvFileArg {
                    path: path.clone(),
                    optional: *optional,
                })
                .collect();
            let layers = Layers::load_with_unit(&unit.name, &unit.environment, &files)?;
            (layers, Some(unit))
        }
        _ => (Layers::load(&src.env_files)?, None),
    };
    if let Some(app) = &src.app {
        layers
            .name_app(&app.unit(), &format!("--app {app}"))
            .map_err(|(stated, origin)| GatherError::OtherApp {
                app: app.clone(),
                stated,
                origin,
            })?;
    }
    let root = unit
        .as_ref()
        .and_then(|u| u.working_directory.clone())
        .unwrap_or(cwd);
    Ok((config::resolved(layers, &root), unit))
}

/// The app's unit, from systemd or its unit files.
fn read_app_unit(src: &Sources, app: &AppName) -> Result<UnitDef, GatherError> {
    let (mut found, _) = read_units(src, &[app.unit()])?;
    match found.pop().map(|l| l.result) {
        Some(Ok(u)) => Ok(u),
        Some(Err(why)) => Err(GatherError::NoAppUnit {
            app: app.clone(),
            why,
        }),
        None => Err(GatherError::NoAppUnit {
            app: app.clone(),
            why: "no unit read".into(),
        }),
    }
}

/// Reads the contract's units: from systemd when reachable (and not `offline`/`unit_paths`),
/// otherwise from unit files.
fn read_units(src: &Sources, names: &[String]) -> Result<(Vec<UnitLookup>, String), GatherError> {
    if names.is_empty() {
        return Ok((Vec::new(), "none configured".into()));
    }
    // Why the bus was not used, when it should have been: shown in the report.
    let mut bus_note = None;
    if !src.offline && src.unit_paths.is_empty() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(GatherError::Runtime)?;
        let from_bus = rt.block_on(async {
            let conn = crate::systemd::bus::connect().await?;
            let units = crate::systemd::bus::read_units(&conn, names).await?;
            Ok::<_, crate::systemd::bus::BusError>(
                units
                    .into_iter()
                    .map(|(name, result)| UnitLookup { name, result })
                    .collect::<Vec<_>>(),
            )
        });
        match from_bus {
            Ok(u) => return Ok((u, "systemd (D-Bus)".into())),
            Err(e) => bus_note = Some(e.to_string()),
        }
    }
    let dirs: Vec<PathBuf> = if src.unit_paths.is_empty() {
        unitfile::SYSTEM_UNIT_DIRS
            .iter()
            .map(PathBuf::from)
            .collect()
    } else {
        src.unit_paths.clone()
    };
    let dir_list = dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let units = names
        .iter()
        .map(|n| UnitLookup {
            name: n.clone(),
            result: match unitfile::locate(n, &dirs) {
                None => Err(format!("no unit file {n} in {dir_list}")),
                Some(loc) => unitfile::load(n, &loc)
                    .map_err(|e| format!("cannot read {}: {e}", loc.fragment.display())),
            },
        })
        .collect();
    let label = match bus_note {
        Some(why) => format!("unit files in {dir_list} (systemd not read: {why})"),
        None => format!("unit files in {dir_list}"),
    };
    Ok((units, label))
}

/// Reads the `--script` or `--docs` files.
pub fn read_texts(paths: &[PathBuf], what: &'static str) -> Result<Vec<TextInput>, GatherError> {
    paths
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(|b| TextInput {
                    path: p.clone(),
                    text: String::from_utf8_lossy(&b).into_owned(),
                })
                .map_err(|source| GatherError::Input {
                    what,
                    path: p.clone(),
                    source,
                })
        })
        .collect()
}

/// The app's Gunicorn asked for its effective settings, as the app unit starts it.
#[derive(Debug, Clone)]
pub struct GunicornProbe {
    pub unit: String,
    /// The settings it printed, or why it could not print them (its code does not load).
    pub result: Result<crate::platform::gunicorn::GunicornSettings, String>,
}

/// Runs the app unit's Gunicorn with `--print-config` (which loads the app as a reload
/// would), as the unit runs it: its `ExecStart=` expanded with its environment, its working
/// directory, and as its `User=` when this runs as root. `None` without an app unit whose
/// command line runs Gunicorn directly (a shell or `conda run` in between would take the flag
/// for itself, or start the server), with the preflight turned off, or when this user may not
/// run as the unit's.
pub fn probe_gunicorn(s: &config::Settings, units: &[UnitLookup]) -> Option<GunicornProbe> {
    use crate::systemd::unit::{ProgramKind, analyze, unit_environment};
    let timeout = s.preflight?;
    let app_name = s.app_unit.as_ref()?;
    let app = units
        .iter()
        .find(|l| &l.name == app_name)?
        .result
        .as_ref()
        .ok()?;
    let read_file = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| crate::systemd::envfile::parse(&t))
    };
    let mut env = unit_environment(app, &read_file);
    let lookup = |k: &str| env.get(k).cloned();
    let (path, argv) = app.exec_start.iter().find_map(|c| {
        let argv = crate::systemd::words::expand_argv(&c.argv, &lookup);
        let direct = analyze(&c.path, &argv).first().is_some_and(|i| {
            i.kind == ProgramKind::Gunicorn && i.conda_run.is_none() && i.program == c.path
        });
        direct.then(|| (c.path.clone(), argv))
    })?;
    let me = nix::unistd::geteuid();
    let user = match &app.user {
        Some(name) => nix::unistd::User::from_name(name).ok()??,
        None => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0)).ok()??,
    };
    if !me.is_root() && me != user.uid {
        return None;
    }
    // What systemd gives a service besides its own variables.
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.insert("HOME".into(), user.dir.display().to_string());
    env.insert("USER".into(), user.name.clone());
    env.insert("LOGNAME".into(), user.name.clone());
    let launch = crate::platform::gunicorn::Launch {
        argv: std::iter::once(path.into())
            .chain(argv.into_iter().skip(1).map(Into::into))
            .collect(),
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
        cwd: app
            .working_directory
            .clone()
            .unwrap_or_else(|| PathBuf::from("/")),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    };
    Some(GunicornProbe {
        unit: app.name.clone(),
        result: crate::platform::gunicorn::run(&launch, timeout).map(|p| p.settings),
    })
}
