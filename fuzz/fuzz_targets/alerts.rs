//! What the alert gate reads from others: Alertmanager's answer to `/api/v2/alerts`, and the
//! matchers an operator writes (`WARDEN_ALERT_MATCHERS`), which must read back as written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::platform::alertmanager::{Matchers, parse_alerts};

fuzz_target!(|data: &[u8]| {
    if let Ok(alerts) = parse_alerts(data) {
        for a in &alerts {
            let _ = (&a.name, &a.fingerprint, a.labels.len());
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = text.parse::<Matchers>() {
        let written = m.to_string();
        let again: Matchers = written
            .parse()
            .unwrap_or_else(|e| panic!("{written:?} does not read back: {e}"));
        assert_eq!(again, m, "{written:?}");
    }
});
