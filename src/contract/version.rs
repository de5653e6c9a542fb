//! The version rule: `RUNTIME_CONTRACT_VERSION` is the same wherever it is declared (warden's
//! environment and env files, each unit's environment, scripts and documentation).

use std::collections::BTreeMap;

use super::{Context, texts};
use crate::config::Source;
use crate::contract::finding::{Code, Finding};

const VAR: &str = "RUNTIME_CONTRACT_VERSION";

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut decl: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let v = &ctx.settings.contract_version;
    if v.source != Source::Default {
        decl.entry(v.value.clone())
            .or_default()
            .push(format!("warden's configuration ({})", v.source));
    }
    for u in &ctx.units {
        if let Some(val) = ctx.unit_env(u).get(VAR) {
            decl.entry(val.clone()).or_default().push(u.name.clone());
        }
    }
    for t in ctx.inputs.scripts.iter().chain(ctx.inputs.docs) {
        for m in texts::scan(&t.text).into_iter().filter(|m| m.var == VAR) {
            decl.entry(m.value)
                .or_default()
                .push(format!("{}:{}", t.path.display(), m.line));
        }
    }
    if decl.len() > 1 {
        let detail = decl
            .iter()
            .map(|(val, wher)| format!("{val} in {}", wher.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        out.push(Finding::new(
            Code::VersionDrift,
            VAR,
            format!("declared with {} values: {detail}", decl.len()),
            "declare RUNTIME_CONTRACT_VERSION once, in the shared env file, and update scripts and docs to it",
        ));
    }
}
