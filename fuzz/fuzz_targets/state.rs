//! The state file, as `warden run` and `warden status` load it: any bytes another writer (or a
//! torn disk) left there. A document that parses must survive a save: serialized and parsed
//! again it is the same document. The loaded history then feeds the policy and the history's
//! length limit, which must not fail on it either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::config::PolicyConfig;
use warden::ledger::model::Decision;
use warden::ledger::policy;
use warden::ledger::state::{self, Entry, MAX_STATE_BYTES};

/// A fixed "now", so a run is reproducible.
const NOW: &str = "2027-01-15T08:00:00.000Z";
const NOW_MS: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    if data.len() as u64 > MAX_STATE_BYTES {
        return;
    }
    let Ok(doc) = state::parse(data) else {
        return;
    };

    let bytes = serde_json::to_vec_pretty(&doc).expect("a state document serializes");
    let back = state::parse(&bytes).expect("a serialized state document parses");
    assert_eq!(back, doc, "the document changed across a save");

    let cfg = PolicyConfig::defaults();
    let executed = doc.executed();
    let _ = policy::evaluate(&executed, NOW_MS, &cfg);
    for e in doc.history.iter().chain(doc.last_restart.as_ref()) {
        let _ = e.executed_at_ms();
    }

    // The agent appends to the history it loaded, bounded by the configured limit. The new
    // entry is executed now, so it is the newest the policy counts.
    let limit = doc.history_limit.unwrap_or(50).clamp(1, 1000);
    let retain = policy::retain(&cfg, NOW_MS);
    let mut grown = doc;
    grown.push(
        Entry {
            decision: Some(Decision::Executed.into()),
            completed_at: Some(NOW.into()),
            ..Entry::default()
        },
        limit,
        retain,
    );
    assert!(grown.history.len() <= limit + retain.executed);
    assert_eq!(grown.executed().last().map(|e| e.at_ms), Some(NOW_MS));
});
