//! The state file (`WATCHDOG_STATE_FILE`): restart history and last restart, in the MES
//! dashboard's schema (`last_restart`, `history`, `history_limit`) plus a `schema_version`.
//!
//! Files written by the original load: unknown fields are kept, non-object history items are
//! dropped as the original drops them, and its naive local timestamps are read as local time
//! and written back as UTC RFC 3339 (the original mixed the two, inflating churn counts by the
//! zone offset). A file that does not parse is set aside, never deleted. Saves are durable.
//!
//! Warden adds a `kill_switch` object (absent until first flipped, so the original's files load
//! and round-trip unchanged).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use super::entry::Entry;
pub use super::time::{format_time, parse_time};
use crate::ledger::policy::{Executed, Retain};

/// The schema warden writes. A file without `schema_version` was written by the original.
pub const SCHEMA_VERSION: u32 = 1;
/// The largest state file warden reads (the original keeps 50 entries: a few tens of KiB).
pub const MAX_STATE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default)]
    pub last_restart: Option<Entry>,
    #[serde(default)]
    pub history: Vec<Entry>,
    #[serde(default)]
    pub history_limit: Option<usize>,
    /// The operator's kill switch; `None` until it is first flipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_switch: Option<KillSwitch>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The kill switch as stored: whether it is engaged, and who flipped it last, when and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillSwitch {
    pub engaged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
    /// UTC RFC 3339, as [`format_time`] writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<String>,
}

/// The longest kill-switch reason kept, in characters (an audit note, not a document).
pub const MAX_REASON_CHARS: usize = 1024;
/// The longest `changed_by` kept, in characters (an account name, maybe with a host).
pub const MAX_CHANGED_BY_CHARS: usize = 256;

/// Why a kill-switch flip was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlipError {
    #[error("engaging the kill switch needs a reason; it is kept for the audit trail")]
    ReasonRequired,
    #[error("the {field} is {len} characters long; at most {max} are kept")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the {field} contains a control character; write it on one line of plain text")]
    ControlCharacter { field: &'static str },
}

/// A trimmed, bounded, single-line text; empty is `None`.
fn audit_text(
    field: &'static str,
    s: Option<&str>,
    max: usize,
) -> Result<Option<String>, FlipError> {
    let Some(s) = s.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    // Control characters would forge lines in the journal and escape sequences on terminals.
    if s.chars().any(char::is_control) {
        return Err(FlipError::ControlCharacter { field });
    }
    let len = s.chars().count();
    if len > max {
        return Err(FlipError::TooLong { field, len, max });
    }
    Ok(Some(s.to_string()))
}

impl KillSwitch {
    /// Validates a flip and returns the switch to store. Engaging needs a reason; a reason given
    /// when disengaging is kept too. Texts are trimmed; an empty one counts as none.
    pub fn flip(
        engaged: bool,
        reason: Option<&str>,
        changed_by: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<KillSwitch, FlipError> {
        let reason = audit_text("reason", reason, MAX_REASON_CHARS)?;
        if engaged && reason.is_none() {
            return Err(FlipError::ReasonRequired);
        }
        Ok(KillSwitch {
            engaged,
            reason,
            changed_by: audit_text("changed_by", changed_by, MAX_CHANGED_BY_CHARS)?,
            changed_at: Some(format_time(at)),
        })
    }
}

impl KillSwitch {
    /// Publishes the switch for the app (`WARDEN_KILL_SWITCH_FILE`): `{engaged, reason,
    /// changed_by, changed_at}`, readable by all (0644), replaced atomically.
    pub fn publish(&self, path: &Path) -> std::io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        crate::platform::fs::write_atomic(path, &bytes, 0o644)
    }
}

impl StateDoc {
    /// The executed restarts the policy counts (kill-switch flips excluded: [`Entry::counts`]).
    pub fn executed(&self) -> Vec<Executed> {
        self.history
            .iter()
            .filter(|e| e.counts())
            .filter_map(|e| e.executed_at_ms().map(|at_ms| Executed { at_ms }))
            .collect()
    }

    /// As [`StateDoc::executed`], with automatic recovery's dry runs counted as if they had
    /// been executed: what the policy would rule had they been.
    pub fn executed_or_rehearsed(&self) -> Vec<Executed> {
        self.history
            .iter()
            .filter(|e| e.counts() || e.dry_run())
            .filter_map(|e| e.executed_at_ms().map(|at_ms| Executed { at_ms }))
            .collect()
    }

    /// Appends an entry, keeping at most `limit`: the oldest entries go first, except those
    /// `retain` protects, so the history may exceed `limit` by those alone.
    pub fn push(&mut self, e: Entry, limit: usize, retain: Retain) {
        self.history.push(e.clone());
        let limit = limit.max(1);
        if self.history.len() > limit {
            let keep = self.protected(retain);
            let mut excess = self.history.len() - limit;
            let mut i = 0;
            self.history.retain(|_| {
                let drop = excess > 0 && !keep[i];
                excess -= usize::from(drop);
                i += 1;
                !drop
            });
        }
        self.history_limit = Some(limit);
        self.last_restart = Some(e);
    }

    /// Which history entries `r` protects from the length limit.
    fn protected(&self, r: Retain) -> Vec<bool> {
        let mut keep = vec![false; self.history.len()];
        // The entry just appended stays, whatever it is.
        if let Some(last) = keep.last_mut() {
            *last = true;
        }
        let mut seen = 0;
        for (i, e) in self.history.iter().enumerate().rev() {
            if seen == r.executed {
                break;
            }
            let Some(at) = e.counts().then(|| e.executed_at_ms()).flatten() else {
                continue;
            };
            keep[i] |= seen == 0 || at >= r.since_ms;
            seen += 1;
        }
        keep
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Read(#[from] crate::platform::fs::ReadError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How a load went.
#[derive(Debug)]
pub enum LoadedState {
    /// No file yet: a fresh history.
    Fresh(StateDoc),
    Ok(StateDoc),
    /// The file did not parse; it was renamed to `kept_as` and the history starts empty.
    SetAside {
        doc: StateDoc,
        kept_as: PathBuf,
        why: String,
    },
}

impl LoadedState {
    pub fn doc(self) -> StateDoc {
        match self {
            LoadedState::Fresh(d) | LoadedState::Ok(d) | LoadedState::SetAside { doc: d, .. } => d,
        }
    }
}

/// An entry from JSON; one that does not fit the schema (a field of another type) is kept
/// verbatim rather than dropped, and counts as nothing.
fn lenient_entry(v: Value) -> Option<Entry> {
    let Value::Object(obj) = v else { return None };
    Some(Entry::from_object(obj).unwrap_or_else(|obj| Entry {
        extra: obj,
        ..Entry::default()
    }))
}

/// A kill switch from JSON. A boolean `engaged` is honoured even when the other fields are of
/// the wrong type (those read as absent): the operator's intent outweighs its annotations.
/// Without one the value is handed back, to be kept verbatim; it reads as not engaged.
fn lenient_kill_switch(v: Value) -> Result<KillSwitch, Value> {
    let Some(&Value::Bool(engaged)) = v.get("engaged") else {
        return Err(v);
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(KillSwitch {
        engaged,
        reason: text("reason"),
        changed_by: text("changed_by"),
        changed_at: text("changed_at"),
    })
}

/// Parses the text of a state file (lenient where the original was: non-object history items
/// are dropped, a non-list history is empty).
pub fn parse(bytes: &[u8]) -> Result<StateDoc, String> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Value::Object(mut obj) = v else {
        return Err("the top level is not a JSON object".into());
    };
    let history = match obj.remove("history") {
        Some(Value::Array(items)) => items.into_iter().filter_map(lenient_entry).collect(),
        _ => Vec::new(),
    };
    let last_restart = obj.remove("last_restart").and_then(lenient_entry);
    let schema_version = obj
        .remove("schema_version")
        .and_then(|v| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(0);
    let history_limit = obj
        .remove("history_limit")
        .and_then(|v| v.as_u64())
        .and_then(|v| usize::try_from(v).ok());
    let kill_switch = match obj.remove("kill_switch").map(lenient_kill_switch) {
        Some(Ok(k)) => Some(k),
        Some(Err(v)) => {
            obj.insert("kill_switch".into(), v);
            None
        }
        None => None,
    };
    Ok(StateDoc {
        schema_version,
        last_restart,
        history,
        history_limit,
        kill_switch,
        extra: obj,
    })
}

/// Loads the state file. A missing file is a fresh history; one that cannot be parsed is set
/// aside as `<file>.corrupt-<UTC time>` and replaced by a fresh history.
pub fn load(path: &Path) -> Result<LoadedState, StateError> {
    let bytes = match crate::platform::fs::read_untrusted(path, MAX_STATE_BYTES) {
        Ok(u) => u.bytes,
        Err(crate::platform::fs::ReadError::Missing(_)) => {
            return Ok(LoadedState::Fresh(StateDoc::default()));
        }
        Err(e @ crate::platform::fs::ReadError::TooLarge { .. }) => {
            return set_aside(path, e.to_string());
        }
        Err(e) => return Err(e.into()),
    };
    match parse(&bytes) {
        Ok(doc) => Ok(LoadedState::Ok(doc)),
        Err(why) => set_aside(path, why),
    }
}

fn set_aside(path: &Path, why: String) -> Result<LoadedState, StateError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{stamp}"));
    let kept_as = path.with_file_name(name);
    std::fs::rename(path, &kept_as).map_err(|source| StateError::Write {
        path: kept_as.clone(),
        source,
    })?;
    Ok(LoadedState::SetAside {
        doc: StateDoc::default(),
        kept_as,
        why,
    })
}

/// Saves durably (temp file, fsync, rename, fsync of the directory).
pub fn save(path: &Path, doc: &StateDoc) -> Result<(), StateError> {
    let mut doc = doc.clone();
    doc.schema_version = SCHEMA_VERSION;
    // A typed switch supersedes one of another shape kept from the file: one key, not two.
    if doc.kill_switch.is_some() {
        doc.extra.remove("kill_switch");
    }
    let mut bytes = serde_json::to_vec_pretty(&doc).expect("a state document always serializes");
    bytes.push(b'\n');
    crate::platform::fs::write_atomic(path, &bytes, 0o640).map_err(|source| StateError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PolicyConfig;
    use crate::ledger::model::{Decision, RequestSource};
    use chrono::{Local, NaiveDateTime, TimeZone};
    use proptest::prelude::*;

    /// A file as the original watchdog writes it (naive local times, its decisions, a stray
    /// non-object history item).
    const ORIGINAL: &str = r#"{
  "last_restart": {"requested_by": "admin", "requested_at": "2026-02-10T08:00:00.123456",
    "requested_ip": "10.0.0.5", "completed_at": "2026-02-10T08:00:01.5", "success": true,
    "source": "manual", "decision": "allowed", "decision_reason": "policy_allows_manual_restart",
    "manual_override": false, "policy_state": {"state": "allowed"}},
  "history": [
    {"requested_by": "admin", "requested_at": "2026-02-10T07:50:00", "completed_at": "2026-02-10T07:50:01+00:00",
     "success": true, "source": "auto", "decision": "allowed"},
    {"requested_by": "bob", "requested_at": "2026-02-10T07:55:00Z", "success": false,
     "source": "manual", "decision": "blocked", "decision_reason": "cooldown_override_required"},
    "garbage",
    {"requested_by": "admin", "requested_at": "2026-02-10T08:00:00.123456",
     "completed_at": "2026-02-10T08:00:01.5", "success": true, "decision": "allowed", "custom": 7},
    {"requested_by": 42, "success": "yes"}
  ],
  "history_limit": 50,
  "dashboard_note": "kept"
}"#;

    #[test]
    fn kill_switch_reloads_do_not_count_toward_the_policy() {
        let entry = |source: RequestSource| Entry {
            requested_at: Some("2026-02-10T08:00:00Z".into()),
            source: Some(source.into()),
            decision: Some(Decision::Executed.into()),
            ..Entry::default()
        };
        let d = StateDoc {
            history: vec![
                entry(RequestSource::KillSwitch),
                entry(RequestSource::Manual),
                entry(RequestSource::KillSwitch),
            ],
            ..StateDoc::default()
        };
        assert!(
            d.history.iter().all(Entry::executed),
            "all were carried out"
        );
        assert_eq!(d.executed().len(), 1, "only the manual one counts");
    }

    #[test]
    fn the_originals_file_loads() {
        let d = parse(ORIGINAL.as_bytes()).unwrap();
        assert_eq!(d.schema_version, 0);
        assert_eq!(d.history.len(), 4);
        // The entry of the wrong shape is kept verbatim and counts as nothing.
        assert_eq!(d.history[3].extra["success"], "yes");
        assert_eq!(d.history_limit, Some(50));
        assert_eq!(d.extra["dashboard_note"], "kept");
        assert_eq!(d.history[2].extra["custom"], 7);
        // Two executed restarts; the blocked request does not count.
        assert_eq!(d.executed().len(), 2);
        // Saved and reloaded, nothing is lost.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        save(&p, &d).unwrap();
        let back = load(&p).unwrap().doc();
        assert_eq!(back.schema_version, SCHEMA_VERSION);
        assert_eq!(back.history, d.history);
        assert_eq!(back.extra, d.extra);
    }

    #[test]
    fn timestamps() {
        let utc = parse_time("2026-02-10T07:50:01+00:00").unwrap();
        assert_eq!(format_time(utc), "2026-02-10T07:50:01.000Z");
        assert_eq!(parse_time("2026-02-10T07:50:01Z"), Some(utc));
        assert_eq!(parse_time("2026-02-10 15:50:01+08:00"), Some(utc));
        // Naive times are the original's local time.
        let naive =
            NaiveDateTime::parse_from_str("2026-02-10T07:50:01", "%Y-%m-%dT%H:%M:%S").unwrap();
        let want = Local
            .from_local_datetime(&naive)
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("2026-02-10T07:50:01"), Some(want));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn corrupt_files_are_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        std::fs::write(&p, "{\"history\": [").unwrap();
        match load(&p).unwrap() {
            LoadedState::SetAside { kept_as, doc, .. } => {
                assert!(doc.history.is_empty());
                assert_eq!(
                    std::fs::read_to_string(&kept_as).unwrap(),
                    "{\"history\": ["
                );
                assert!(
                    kept_as
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("state.json.corrupt-")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(load(&p).unwrap(), LoadedState::Fresh(_)));
        // A symlink in place of the state file is refused, not followed.
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        assert!(matches!(
            load(&p),
            Err(StateError::Read(crate::platform::fs::ReadError::Symlink(_)))
        ));
    }

    #[test]
    fn history_is_bounded() {
        let mut d = StateDoc::default();
        for i in 0..60 {
            d.push(
                Entry {
                    id: Some(i.to_string()),
                    ..Entry::default()
                },
                50,
                crate::ledger::policy::retain(&PolicyConfig::defaults(), 0),
            );
        }
        assert_eq!(d.history.len(), 50);
        assert_eq!(d.history[0].id.as_deref(), Some("10"));
        assert_eq!(d.last_restart.unwrap().id.as_deref(), Some("59"));
    }

    fn entry_at(ms: i64, executed: bool) -> Entry {
        Entry {
            completed_at: Some(format_time(Utc.timestamp_millis_opt(ms).unwrap())),
            decision: Some(
                if executed {
                    Decision::Executed
                } else {
                    Decision::Blocked
                }
                .into(),
            ),
            ..Entry::default()
        }
    }

    #[test]
    fn a_flood_of_blocked_requests_does_not_reopen_the_cooldown() {
        let cfg = PolicyConfig::defaults();
        let t0 = 1_800_000_000_000_i64;
        let mut d = StateDoc::default();
        d.push(
            entry_at(t0, true),
            50,
            crate::ledger::policy::retain(&cfg, t0),
        );
        for i in 1..500 {
            let now = t0 + i * 10;
            d.push(
                entry_at(now, false),
                50,
                crate::ledger::policy::retain(&cfg, now),
            );
        }
        assert_eq!(d.history.len(), 50);
        assert_eq!(d.history[0].decided(), Some(Decision::Executed));
        let e = crate::ledger::policy::evaluate(&d.executed(), t0 + 10_000, &cfg);
        assert!(e.cooldown && !e.allowed, "{e:?}");
    }

    fn at() -> DateTime<Utc> {
        parse_time("2026-02-10T08:00:00Z").unwrap()
    }

    #[test]
    fn kill_switch_flips_are_validated() {
        let k = KillSwitch::flip(true, Some("  bad release 4.2  "), Some("alice"), at()).unwrap();
        assert_eq!(
            k,
            KillSwitch {
                engaged: true,
                reason: Some("bad release 4.2".into()),
                changed_by: Some("alice".into()),
                changed_at: Some("2026-02-10T08:00:00.000Z".into()),
            }
        );
        assert_eq!(
            KillSwitch::flip(true, None, Some("alice"), at()),
            Err(FlipError::ReasonRequired)
        );
        assert_eq!(
            KillSwitch::flip(true, Some(" \t "), None, at()),
            Err(FlipError::ReasonRequired)
        );
        assert_eq!(
            KillSwitch::flip(true, Some("line one\nforged line"), None, at()),
            Err(FlipError::ControlCharacter { field: "reason" })
        );
        assert_eq!(
            KillSwitch::flip(true, Some("x\u{1b}[2J"), None, at()),
            Err(FlipError::ControlCharacter { field: "reason" })
        );
        assert_eq!(
            KillSwitch::flip(false, None, Some("b\rob"), at()),
            Err(FlipError::ControlCharacter {
                field: "changed_by"
            })
        );
        let long = "é".repeat(MAX_REASON_CHARS + 1);
        assert_eq!(
            KillSwitch::flip(true, Some(&long), None, at()),
            Err(FlipError::TooLong {
                field: "reason",
                len: MAX_REASON_CHARS + 1,
                max: MAX_REASON_CHARS
            })
        );
        // Characters are counted, not bytes.
        assert!(KillSwitch::flip(true, Some(&long[2..]), None, at()).is_ok());
        // Disengaging needs no reason; an empty one is none.
        let off = KillSwitch::flip(false, Some(""), None, at()).unwrap();
        assert_eq!(
            (off.engaged, off.reason, off.changed_by),
            (false, None, None)
        );
    }

    #[test]
    fn kill_switch_round_trips_beside_the_originals_fields() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let mut d = parse(ORIGINAL.as_bytes()).unwrap();
        assert_eq!(d.kill_switch, None);
        // Never flipped: the file gains no key.
        save(&p, &d).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(!text.contains("kill_switch"));
        d.kill_switch = Some(KillSwitch::flip(true, Some("rollback"), Some("ops"), at()).unwrap());
        save(&p, &d).unwrap();
        let back = load(&p).unwrap().doc();
        assert_eq!(back.kill_switch, d.kill_switch);
        assert!(!back.extra.contains_key("kill_switch"));
        assert_eq!(back.extra["dashboard_note"], "kept");
        assert_eq!(back.history, d.history);
    }

    #[test]
    fn kill_switch_of_another_shape() {
        // A boolean `engaged` is honoured; annotations of the wrong type read as absent.
        let d = parse(br#"{"kill_switch": {"engaged": true, "reason": 5, "changed_by": "ops"}}"#)
            .unwrap();
        let k = d.kill_switch.unwrap();
        assert!(k.engaged);
        assert_eq!((k.reason, k.changed_by.as_deref()), (None, Some("ops")));
        assert!(d.extra.is_empty());
        // Anything else is kept verbatim, reads as not engaged, and a flip replaces it.
        let mut d = parse(br#"{"kill_switch": "on"}"#).unwrap();
        assert_eq!(d.kill_switch, None);
        assert_eq!(d.extra["kill_switch"], "on");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        save(&p, &d).unwrap();
        assert_eq!(load(&p).unwrap().doc().extra["kill_switch"], "on");
        d.kill_switch = Some(KillSwitch::flip(false, None, None, at()).unwrap());
        save(&p, &d).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("kill_switch").count(), 1);
        let back = load(&p).unwrap().doc();
        assert_eq!(back.kill_switch, d.kill_switch);
        assert!(!back.extra.contains_key("kill_switch"));
    }

    #[test]
    fn other_writers_numbers_survive_a_save() {
        // Fields warden does not know are kept as they are: a number read and written back is
        // the same number, not one that drifts by a few units in the last place at each save.
        let text = br#"{"x": [1e300, -0.0, 12345678901234567890, -9223372083654775808,
                               2.2250738585072011e-308, 0.30000000000000004], "history_limit": 1.5}"#;
        let d = parse(text).unwrap();
        assert_eq!(d.extra["x"][3].as_f64(), Some(-9_223_372_083_654_775_808.0));
        // Rust's own parser rounds correctly: the value the text means.
        let exact = "2.2250738585072011e-308".parse::<f64>().ok();
        assert_eq!(d.extra["x"][4].as_f64(), exact);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        save(&p, &d).unwrap();
        let back = load(&p).unwrap().doc();
        assert_eq!(back.extra, d.extra);
        assert_eq!(back.history_limit, None);
    }

    proptest! {
        /// The history's length limit never changes a decision: the truncated history gives
        /// the state, cooldown and block the whole history would, and counts at least as many
        /// restarts in the window as the thresholds look at.
        #[test]
        fn a_bounded_history_decides_as_the_whole_one(
            steps in proptest::collection::vec((0i64..120_000, any::<bool>()), 1..150),
            limit in 1usize..8,
            cooldown in 1u64..300, budget in 1u32..6, threshold in 1u32..6,
            window in 30u64..900, guarded in any::<bool>(),
        ) {
            let cfg = PolicyConfig {
                cooldown: std::time::Duration::from_secs(cooldown),
                retry_budget: std::num::NonZeroU32::new(budget).unwrap(),
                churn_threshold: std::num::NonZeroU32::new(threshold).unwrap(),
                window: std::time::Duration::from_secs(window),
                guarded_mode: guarded,
            };
            let keep = budget.max(threshold) as usize;
            let (mut d, mut all) = (StateDoc::default(), Vec::new());
            let mut now = 1_800_000_000_000_i64;
            for (dt, executed) in steps {
                now += dt;
                if executed {
                    all.push(Executed { at_ms: now });
                }
                d.push(entry_at(now, executed), limit, crate::ledger::policy::retain(&cfg, now));
                prop_assert!(d.history.len() <= limit + keep);
                for later in [now, now + 500, now + 30_000] {
                    let full = crate::ledger::policy::evaluate(&all, later, &cfg);
                    let cut = crate::ledger::policy::evaluate(&d.executed(), later, &cfg);
                    prop_assert_eq!(
                        (cut.state, cut.allowed, cut.cooldown, cut.blocked, cut.cooldown_remaining_seconds),
                        (full.state, full.allowed, full.cooldown, full.blocked, full.cooldown_remaining_seconds)
                    );
                    prop_assert!(cut.attempts_in_window <= full.attempts_in_window);
                    prop_assert!(cut.attempts_in_window as usize >= (full.attempts_in_window as usize).min(keep));
                }
            }
        }

        #[test]
        fn kill_switch_flips_never_panic(engaged in any::<bool>(), reason in proptest::option::of(any::<String>()),
                                         by in proptest::option::of(any::<String>())) {
            if let Ok(k) = KillSwitch::flip(engaged, reason.as_deref(), by.as_deref(), at()) {
                prop_assert!(!engaged || k.reason.is_some());
                for t in [&k.reason, &k.changed_by].into_iter().flatten() {
                    prop_assert!(!t.is_empty() && !t.chars().any(char::is_control));
                    prop_assert!(t.chars().count() <= MAX_REASON_CHARS);
                }
            }
        }

        #[test]
        fn any_bytes_parse_or_fail_cleanly(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&b);
        }

        #[test]
        fn any_json_value_history_is_tolerated(items in proptest::collection::vec(
            prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), "\\PC{0,8}".prop_map(Value::from),
                        Just(serde_json::json!({"success": true, "requested_at": "2026-01-01T00:00:00Z"}))], 0..10)) {
            let doc = serde_json::json!({"history": items, "last_restart": 3});
            let d = parse(doc.to_string().as_bytes()).unwrap();
            prop_assert!(d.last_restart.is_none());
            prop_assert_eq!(d.history.len(), d.executed().len());
        }
    }
}
