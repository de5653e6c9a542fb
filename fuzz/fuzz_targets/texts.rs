//! Scripts and docs, as `warden check --script/--docs` scans them for the values they state
//! for contract variables (`${VAR:-default}`, `VAR=value`), and the shell expansion applied to
//! those values. The files are read lossily as UTF-8, as the CLI does.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden::config::vars;
use warden::contract::texts::{self, MentionKind};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines = text.lines().count();
    let mentions = texts::scan(&text);
    let mut prev = 1;
    for m in &mentions {
        assert!(vars::contract().any(|v| v.name == m.var));
        assert!(m.line >= prev && m.line <= lines);
        prev = m.line;
        // Bounded values keep the scan linear in the text.
        assert!(m.value.len() <= 4096);
        if m.kind == MentionKind::Assignment {
            assert!(!m.value.is_empty());
        }
        // As the check does: a stated value is expanded against the contract's values.
        let lookup =
            |k: &str| (k == "WATCHDOG_RUNTIME_DIR").then(|| "/run/mes-dashboard".to_string());
        let _ = texts::expand_shell(&m.value, &lookup, 0);
    }
    // Arbitrary text through the expander too, as long as a stated value can be: every `$`
    // form, defaults nested to any depth.
    if text.len() <= 4096 {
        let _ = texts::expand_shell(
            &text,
            &|k: &str| (k.len() % 2 == 0).then(|| k.to_lowercase()),
            0,
        );
    }
});
