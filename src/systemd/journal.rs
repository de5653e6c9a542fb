//! journald MESSAGE_IDs of warden's events. Stable: operators filter on them
//! (`journalctl MESSAGE_ID=…`), so never change one.

/// A finding of `warden check`.
pub const CHECK_FINDING: &str = "ff078edde19449379dbf4622199bb1d4";
