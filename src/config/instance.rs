//! Instances: one agent per app, named after the app's unit (`warden@mes-dashboard.service`
//! watches `mes-dashboard.service`), its contract in `/etc/warden/<app>.env`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the instances' env files are.
pub const CONFIG_DIR: &str = "/etc/warden";
/// Overrides [`CONFIG_DIR`] (a test's, or a host that keeps configuration elsewhere).
pub const CONFIG_DIR_VAR: &str = "WARDEN_CONFIG_DIR";

/// An app's name: its unit's name without `.service`, as systemd writes unit names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppName(String);

impl AppName {
    /// Accepts `NAME` or `NAME.service`; refuses what is not a service unit's name.
    pub fn parse(s: &str) -> Result<AppName, String> {
        let name = s.strip_suffix(".service").unwrap_or(s);
        if name.is_empty() {
            return Err("the app's name is empty: give its unit's, e.g. mes-dashboard".into());
        }
        if name.len() > 200 {
            return Err(format!(
                "{} characters is too long for a unit's name",
                name.len()
            ));
        }
        // systemd's unit-name characters; an `@` only as a template instance's (`app@1`).
        let ok = |c: char| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c);
        if let Some(c) = name.chars().find(|&c| !ok(c)) {
            return Err(format!(
                "{s:?} is not a unit's name ({c:?} is not allowed): give the app's unit, e.g. mes-dashboard"
            ));
        }
        if name.starts_with('.') || name.starts_with('@') || name.ends_with('@') {
            return Err(format!("{s:?} is not a unit's name"));
        }
        if name.contains('.') {
            // `app.socket` or `app.timer` name other kinds of unit.
            return Err(format!(
                "{s:?} is not a service's name: give the app's service unit, e.g. mes-dashboard"
            ));
        }
        Ok(AppName(name.to_string()))
    }

    /// From a unit's name, `NAME.service`.
    pub fn of_unit(unit: &str) -> Option<AppName> {
        unit.strip_suffix(".service")
            .and_then(|n| AppName::parse(n).ok())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The app's unit: `NAME.service`.
    pub fn unit(&self) -> String {
        format!("{}.service", self.0)
    }

    /// The agent's unit: `warden@NAME.service`.
    pub fn agent_unit(&self) -> String {
        format!("warden@{}.service", self.0)
    }

    /// The instance's env file in `dir`.
    pub fn env_file(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.env", self.0))
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AppName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        AppName::parse(s)
    }
}

/// The instances' directory: `WARDEN_CONFIG_DIR`, else `/etc/warden`.
pub fn config_dir() -> PathBuf {
    std::env::var_os(CONFIG_DIR_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(CONFIG_DIR))
}

/// The apps configured in `dir` (each `NAME.env` that names an app), sorted. A missing
/// directory configures none.
pub fn configured(dir: &Path) -> std::io::Result<Vec<AppName>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // A link is followed: /etc/warden is root's, and a contract kept as a link to the app's
    // own env file is one file for both.
    let mut apps: Vec<AppName> = rd
        .flatten()
        .filter(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()))
        .filter_map(|e| {
            let n = e.file_name();
            AppName::parse(n.to_str()?.strip_suffix(".env")?).ok()
        })
        .collect();
    apps.sort();
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_service_units_with_or_without_the_suffix() {
        let a = AppName::parse("mes-dashboard.service").unwrap();
        assert_eq!(a, AppName::parse("mes-dashboard").unwrap());
        assert_eq!(a.unit(), "mes-dashboard.service");
        assert_eq!(a.agent_unit(), "warden@mes-dashboard.service");
        assert_eq!(
            a.env_file(Path::new("/etc/warden")),
            Path::new("/etc/warden/mes-dashboard.env")
        );
        assert!(AppName::parse("app@blue").is_ok());
        for bad in [
            "",
            ".service",
            "../etc/passwd",
            "a/b",
            "app.socket",
            "a b",
            "@x",
            ".hidden",
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(AppName::of_unit("shop.service").unwrap().as_str(), "shop");
        assert_eq!(AppName::of_unit("shop.socket"), None);
    }

    #[test]
    fn the_configured_apps_are_the_env_files_of_the_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(configured(&d.path().join("absent")).unwrap().is_empty());
        for f in [
            "shop.env",
            "mes-dashboard.env",
            "notes.txt",
            ".hidden.env",
            "bad name.env",
        ] {
            std::fs::write(d.path().join(f), "").unwrap();
        }
        std::fs::create_dir(d.path().join("dir.env")).unwrap();
        let names: Vec<String> = configured(d.path())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(names, ["mes-dashboard", "shop"]);
    }
}
