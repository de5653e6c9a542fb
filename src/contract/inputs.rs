//! Gathering a check's inputs: the configuration (from `--env-file`, else, outside systemd,
//! the env files the app unit loads), the contract's units (from systemd over D-Bus when it
//! answers, else from unit files), and the scripts and docs to compare.

use std::path::PathBuf;

use super::{Inputs, Phase, TextInput, UnitLookup};
use crate::config::{self, EnvFileArg, Loaded};
use crate::systemd::unitfile;

/// Where to read the contract from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub env_files: Vec<EnvFileArg>,
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
        }
    }
}

fn under_systemd() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

/// Reads the configuration and the contract's units.
pub fn gather(src: &Sources) -> Result<Gathered, GatherError> {
    let mut loaded = config::load(&src.env_files)?;
    let (units, unit_source) = read_units(src, &loaded.settings.all_units())?;

    let app = loaded
        .settings
        .app_unit
        .as_ref()
        .and_then(|n| units.iter().find(|l| &l.name == n))
        .and_then(|l| l.result.as_ref().ok());
    // Relative paths are joined to the app's working directory, as the app sees them, unless
    // the contract names its root.
    let root = app
        .and_then(|u| u.working_directory.clone())
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    // Outside systemd with no --env-file, take the contract from the env files the app unit
    // loads: that is what the units will see, whatever the calling shell has exported.
    let app_files: Vec<EnvFileArg> = match app {
        Some(u) if src.env_files.is_empty() && !under_systemd() => u
            .environment_files
            .iter()
            .map(|(p, _)| EnvFileArg {
                path: p.clone(),
                optional: true,
            })
            .collect(),
        _ => Vec::new(),
    };
    let files = if app_files.is_empty() {
        &src.env_files
    } else {
        &app_files
    };
    if !app_files.is_empty() || app.is_some_and(|u| u.working_directory.is_some()) {
        loaded = config::load_rooted(files, &root)?;
    }
    Ok(Gathered {
        loaded,
        units,
        unit_source,
    })
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
