//! Variable names in the contract's env files that look like a contract variable misspelled
//! (`WATCHDOG_PIDFILE`, `WORKER_RESTART_COOLDOWN_SECONDS`): such a line sets nothing warden or
//! the original reads, and the default silently stands in. A name that is not close to one of
//! the table's is another program's (`GUNICORN_WORKERS` is the app's), and is left alone.

use super::Context;
use crate::config::vars;
use crate::contract::finding::{Code, Finding};

/// The prefixes of the contract's variables.
const PREFIXES: &[&str] = &[
    "WATCHDOG_",
    "WORKER_RESTART_",
    "WORKER_GUARDED_",
    "WARDEN_",
    "RUNTIME_CONTRACT_",
    "CONDA_",
    "GUNICORN_",
    "RESILIENCE_RESTART_",
    "MES_DASHBOARD_",
];

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    for (path, file) in &ctx.inputs.layers.files {
        for a in &file.assignments {
            if vars::is_read(&a.key) || !PREFIXES.iter().any(|p| a.key.starts_with(p)) {
                continue;
            }
            if let Some(known) = closest(&a.key) {
                let instead = match ctx.inputs.layers.get(known) {
                    Some((_, source)) => format!("{known} is set at {source}"),
                    None => format!("the default of {known} stands in"),
                };
                out.push(Finding::new(
                    Code::UnknownVariable,
                    format!("{}:{}", path.display(), a.line),
                    format!(
                        "{} is not a variable warden or the original reads; {instead}",
                        a.key
                    ),
                    format!("did you mean {known}? rename it, or remove the line"),
                ));
            }
        }
    }
}

/// The table's name `name` is most likely a misspelling of, if one is close: a letter or two
/// apart, or the same name with a word added or dropped at its end.
pub fn closest(name: &str) -> Option<&'static str> {
    vars::ALL
        .iter()
        .flat_map(|v| v.names())
        .filter_map(|known| {
            let d = strsim::levenshtein(name, known);
            let extended = name.strip_prefix(known).is_some_and(|r| r.starts_with('_'))
                || known.strip_prefix(name).is_some_and(|r| r.starts_with('_'));
            (d <= 2 || extended).then_some((d, known))
        })
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspellings_find_their_variable_and_other_programs_names_do_not() {
        assert_eq!(closest("WATCHDOG_PIDFILE"), Some("WATCHDOG_PID_FILE"));
        assert_eq!(
            closest("WORKER_RESTART_COOLDOWN_SECONDS"),
            Some("WORKER_RESTART_COOLDOWN")
        );
        assert_eq!(
            closest("WARDEN_RELOAD_TIMEOUT_SECONDS"),
            Some("WARDEN_RELOAD_TIMEOUT")
        );
        assert_eq!(closest("GUNICORN_WORKERS"), None);
        assert_eq!(closest("WARDEN_LOG"), None);
    }
}
