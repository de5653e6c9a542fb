//! The rules `warden run` checks at its start: those that concern the agent's own paths. What
//! the agent refuses to start on, and what the status document reports as the contract's
//! validity.

use super::finding::{Code, Finding, Severity};
use super::{Inputs, Phase};
use crate::config::Loaded;

/// The rules that concern the agent's own paths.
pub const CODES: &[Code] = &[
    Code::InvalidValue,
    Code::FlagOutsideRuntimeDir,
    Code::PidOutsideRuntimeDir,
    Code::NotRegularFile,
    Code::UnsafeDirectory,
    Code::NotWritable,
    Code::MissingDirectory,
    Code::BindInvalid,
];

/// The errors among the startup rules.
pub fn errors(loaded: &Loaded) -> Vec<Finding> {
    let inputs = Inputs {
        layers: &loaded.layers,
        settings: &loaded.settings,
        invalid: &loaded.invalid,
        units: &[],
        scripts: &[],
        docs: &[],
        phase: Phase::Running,
        gunicorn: None,
    };
    super::check(&inputs)
        .findings
        .into_iter()
        .filter(|f| CODES.contains(&f.code) && f.severity == Severity::Error)
        .collect()
}
