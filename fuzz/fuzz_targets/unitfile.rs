//! A unit file's text, as `warden check --offline` reads fragments and drop-ins, then the unit
//! model built from it and the command lines expanded as systemd would at exec time.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use warden::systemd::unitfile::{self, Located};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("/etc/systemd/system/mes-dashboard.service");
    let entries = unitfile::parse(text, file);
    let lines = text.lines().count();
    for e in &entries {
        assert!(!e.section.is_empty());
        assert!(e.line >= 1 && e.line <= lines);
        assert_eq!(e.key.trim(), e.key);
        assert_eq!(e.value.trim(), e.value);
    }
    let located = Located {
        fragment: file.to_path_buf(),
        drop_ins: vec![PathBuf::from(
            "/etc/systemd/system/mes-dashboard.service.d/override.conf",
        )],
    };
    // A plain unit and a template instance: the specifiers (%i, %p, %N…) differ.
    for name in ["mes-dashboard.service", "mes-dashboard-worker@2.service"] {
        let u = unitfile::from_entries(name, &entries, &located);
        let lookup = |k: &str| {
            u.environment
                .iter()
                .rev()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        for c in u.exec_start.iter().chain(&u.exec_start_pre) {
            let _ = warden::systemd::words::expand_argv(&c.argv, &lookup);
        }
        if let Some(p) = &u.pid_file {
            assert!(p.is_absolute());
        }
    }
});
