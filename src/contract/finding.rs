//! Findings: what a check reports to the operator. Every finding has a stable code, a severity,
//! the subject it is about (a path, unit or variable), a message and a fix hint.

use std::fmt::Write as _;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

macro_rules! codes {
    ($($variant:ident => $code:literal, $sev:ident, $title:literal;)*) => {
        /// The stable finding codes. Never renumber: operators grep for them and alert on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code { $($variant,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];
            pub fn as_str(self) -> &'static str { match self { $(Code::$variant => $code,)* } }
            /// The severity a finding of this code has by default.
            pub fn severity(self) -> Severity { match self { $(Code::$variant => Severity::$sev,)* } }
            /// One line saying what the rule is.
            pub fn title(self) -> &'static str { match self { $(Code::$variant => $title,)* } }
        }
    };
}

codes! {
    InvalidValue => "E01", Error, "a configuration variable has an invalid value";
    UnknownVariable => "E02", Warning, "an env file sets a name close to a contract variable's, which nothing reads";
    PrefixUnresolved => "C01", Error, "the Python prefix cannot be determined";
    NotAnEnvironment => "C02", Error, "the prefix is not a conda environment (or venv)";
    PythonMissing => "C03", Error, "bin/python is missing or not executable";
    PythonOutsidePrefix => "C04", Error, "bin/python resolves outside the prefix";
    PythonVersionMismatch => "C05", Error, "the recorded Python version differs from the interpreter";
    PythonRecordMissing => "C06", Warning, "no Python package record in the prefix";
    GunicornMissing => "C07", Error, "gunicorn is not installed in the prefix";
    GunicornShebang => "C08", Error, "gunicorn's shebang names another interpreter";
    CondaBin => "C09", Error, "CONDA_BIN is missing or not executable";
    CondaDefaultEnv => "C10", Error, "CONDA_DEFAULT_ENV disagrees with CONDA_ENV_NAME";
    PrefixDisagree => "C11", Error, "CONDA_PREFIX disagrees with CONDA_BIN and CONDA_ENV_NAME";
    FlagOutsideRuntimeDir => "P01", Error, "the restart flag is not under the runtime directory";
    PidOutsideRuntimeDir => "P02", Error, "the PID file is not under the runtime directory";
    StateVolatile => "P03", Warning, "the state file is on storage cleared at boot";
    NotRegularFile => "P04", Error, "a contract file is a symlink or not a regular file";
    UnsafeDirectory => "P05", Error, "a directory on a contract path is group/world-writable without the sticky bit";
    NotWritable => "P06", Error, "the service user cannot write where it must";
    MissingDirectory => "P07", Error, "a contract directory does not exist";
    StateRelative => "P08", Warning, "the state file is given as a relative path";
    UnitNotFound => "U01", Error, "a unit of the contract is not found";
    ForeignInterpreter => "U02", Error, "a unit runs an interpreter outside the contract's prefix";
    CondaRun => "U03", Warning, "a unit runs its program through `conda run`";
    PidMismatch => "U04", Error, "gunicorn --pid or PIDFile= differs from WATCHDOG_PID_FILE";
    BindMismatch => "U05", Error, "gunicorn --bind differs from GUNICORN_BIND";
    SharedRuntimeDirectory => "U06", Error, "two units share a RuntimeDirectory= that is not preserved";
    DaemonReloadNeeded => "U07", Error, "a unit file changed on disk but systemd runs the old one";
    VariableDrift => "U08", Error, "a contract variable differs between units";
    NoAppUnit => "U09", Warning, "no app unit is configured; unit checks are skipped";
    NoGunicorn => "U10", Warning, "the app unit runs no gunicorn that warden can see";
    EnvFileMissing => "F01", Error, "an env file is missing";
    EnvFileSyntax => "F02", Error, "an env file has lines systemd ignores";
    EnvFileReadable => "F03", Error, "an env file is readable by every user";
    EnvFileDrift => "F04", Error, "units load different env files";
    ScriptDrift => "S01", Error, "a script's default differs from the contract";
    DocsDrift => "S02", Error, "the documentation states another value than the contract";
    BindInvalid => "B01", Error, "GUNICORN_BIND is not a valid host:port";
    PortInUse => "B02", Error, "the port is already in use before start";
    PortNotHeld => "B03", Error, "the port is not held by the app's gunicorn master";
    VersionDrift => "V01", Error, "RUNTIME_CONTRACT_VERSION differs where it is declared";
    Preload => "G01", Warning, "the app preloads (preload_app): a reload keeps the code the master imported";
    ControlSocketExposed => "G02", Error, "Gunicorn's control socket is reachable by other users";
    AppDoesNotLoad => "G03", Error, "the app's Gunicorn cannot load its configuration or application";
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    pub subject: String,
    pub message: String,
    pub help: String,
}

impl Finding {
    pub fn new(
        code: Code,
        subject: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        Finding {
            code,
            severity: code.severity(),
            subject: subject.into(),
            message: message.into(),
            help: help.into(),
        }
    }

    pub fn with_severity(mut self, s: Severity) -> Self {
        self.severity = s;
        self
    }

    /// `error[C04] /opt/…/bin/python: message`
    pub fn headline(&self) -> String {
        format!(
            "{}[{}] {}: {}",
            self.severity.as_str(),
            self.code.as_str(),
            self.subject,
            self.message
        )
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(out, "{}", self.headline());
        let _ = writeln!(out, "  help: {}", self.help);
    }
}

/// The reference table of codes, as printed by `warden check --list-codes` and the README.
pub fn code_table() -> String {
    let mut out = String::from("| code | severity | rule |\n|---|---|---|\n");
    for c in Code::ALL {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            c.as_str(),
            c.severity().as_str(),
            c.title()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
            assert_eq!(c.as_str().len(), 3);
        }
    }

    #[test]
    fn rendering() {
        let f = Finding::new(
            Code::PythonMissing,
            "/p/bin/python",
            "missing",
            "install python",
        );
        let mut s = String::new();
        f.render(&mut s);
        assert_eq!(
            s,
            "error[C03] /p/bin/python: missing\n  help: install python\n"
        );
    }
}
