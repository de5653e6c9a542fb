//! An `EnvironmentFile=` as `warden check` reads it (the files are read as UTF-8 text; others
//! fail before parsing).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::systemd::envfile::{self, ProblemKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = envfile::parse(text);
    let lines = text.matches('\n').count() + 1;
    let mut prev = 0;
    for a in &f.assignments {
        assert!(envfile::valid_name(&a.key), "invalid key {:?}", a.key);
        // Assignments come in file order, each on a line of the file.
        assert!(a.line >= prev.max(1) && a.line <= lines);
        prev = a.line;
        assert!(f.get(&a.key).is_some());
    }
    for p in &f.problems {
        assert!(p.line >= 1 && p.line <= lines);
        if let ProblemKind::InvalidName(k) = &p.reason {
            assert!(!envfile::valid_name(k));
        }
        let _ = p.reason.to_string();
    }
    // The last assignment of a key is the one systemd exports.
    if let Some(last) = f.assignments.last() {
        assert_eq!(f.get(&last.key), Some(last.value.as_str()));
    }
});
