//! The restart flag's content, as `warden run` reads it from a claimed flag (up to 64 KiB of
//! whatever an admin-group member wrote).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::agent::flag::{self, MAX_FLAG_BYTES};
use warden::ledger::model::RequestSource;

/// The longest text field the parser keeps (`flag::MAX_FIELD`).
const MAX_FIELD: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // Larger flags are refused before they are parsed.
    if data.len() as u64 > MAX_FLAG_BYTES {
        return;
    }
    match flag::parse(data) {
        Ok(req) => {
            assert!(matches!(
                req.source,
                RequestSource::Manual | RequestSource::Auto
            ));
            for f in [
                &req.user,
                &req.ip,
                &req.timestamp,
                &req.override_reason,
                &req.runtime_contract_version,
            ]
            .into_iter()
            .flatten()
            {
                assert!(f.len() <= MAX_FIELD);
            }
            let _ = req.policy_request();
            // The request goes to the history and the journal as JSON.
            serde_json::to_vec(&req).expect("a flag request serializes");
        }
        Err(r) => {
            // The code and the message are what the history and the journal record.
            assert!(r.to_string().starts_with(r.reason().as_str()));
        }
    }
});
