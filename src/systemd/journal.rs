//! The journal: warden's MESSAGE_IDs, and findings sent as structured entries.
//!
//! The MESSAGE_IDs are stable: operators filter on them (`journalctl MESSAGE_ID=…`), so never
//! change one.

/// A finding of `warden check`.
pub const CHECK_FINDING: &str = "ff078edde19449379dbf4622199bb1d4";
/// A restart executed and verified.
pub const RESTART_EXECUTED: &str = "0d3c33330c0b4f2387ba68b3054d0256";
/// A restart blocked by the policy.
pub const RESTART_BLOCKED: &str = "35e42bb3cddf4cf797834e4493ac147e";
/// A restart that failed, or was executed but not verified.
pub const RESTART_FAILED: &str = "9dd5de8e4a5d488d96fbe3f28cd96ab6";
/// A restart flag rejected at intake.
pub const FLAG_REJECTED: &str = "d142efce7a98493bb359b661407ae898";
/// A state file that did not parse, set aside.
pub const STATE_SET_ASIDE: &str = "124e9b634a2349cd81e7106027bb1915";
/// A kill-switch flip.
pub const KILL_SWITCH: &str = "8f3e2d1c0b9a48f7a6e5d4c3b2a19087";
/// The recovery breaker changed state (opened, half-open after an automatic restart, closed).
pub const RECOVERY_BREAKER: &str = "eafd6b105a994b249639a07a1c81455d";
/// Automatic recovery asked for a restart (or, in a dry run, would have).
pub const AUTO_RECOVERY: &str = "9aeac14de1e14decb99082cbddba504f";
/// A D-Bus caller refused.
pub const ACCESS_DENIED: &str = "5b1c6f0e8c3a4f7e9d2a6b4c8e0f1a3d";

/// Whether stdout or stderr is the journal stream systemd announced (`JOURNAL_STREAM`).
pub fn connected() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(js) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = js.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    ["/proc/self/fd/1", "/proc/self/fd/2"]
        .iter()
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}
