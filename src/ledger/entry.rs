//! One history entry: a restart request and what became of it, in the MES dashboard's schema
//! plus warden's own fields.
//!
//! The state file stays byte for byte what it was: the original's fields come first, in its
//! order; warden's own fields and any other writer's come after them, together in name order
//! (as a JSON object map keeps them). An entry whose original fields are of another type than
//! the schema's is kept verbatim and counts as nothing; one of warden's own fields of another
//! type is kept as it was, among the other writers' fields.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::model::{Decision, Failure, FleetRecord, Reason, Recorded, RequestSource, Timings};
use super::time::parse_time;

/// One restart request and what became of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    // The original's fields.
    pub id: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: Option<String>,
    pub requested_ip: Option<String>,
    pub completed_at: Option<String>,
    pub success: Option<bool>,
    pub source: Option<Recorded<RequestSource>>,
    pub decision: Option<Recorded<Decision>>,
    pub decision_reason: Option<Recorded<Reason>>,
    pub manual_override: Option<bool>,
    pub override_reason: Option<String>,
    /// The policy's evaluation when the request was decided (another writer's shape is kept).
    pub policy_state: Option<Value>,

    // warden's own.
    /// Why nothing was signalled, for a `failed` request.
    pub failure: Option<Failure>,
    /// The master that was signalled.
    pub master_pid: Option<u32>,
    /// The request overrode the policy with an acknowledgement.
    pub override_acknowledged: Option<bool>,
    /// The policy's reason for an allowed request (its `decision_reason` says, as the original
    /// records it, what became of the signal).
    pub policy_reason: Option<Recorded<Reason>>,
    /// The app runs with `preload_app`: its master imported the code once, and a reload
    /// keeps it (the workers are new, the code is not).
    pub preload_app: Option<bool>,
    /// Why it was asked (a D-Bus or CLI request's reason).
    pub reason: Option<String>,
    /// What a rejected flag broke, in words.
    pub rejection: Option<String>,
    pub timings: Option<Timings>,
    /// The fleet slot it held or waited for, when coordination is on.
    pub fleet: Option<FleetRecord>,
    /// The alerts that deferred an automatic restart (the gate's), by name.
    pub alert_gate: Option<Vec<String>>,
    /// What the verification of an executed restart found wrong.
    pub verification_problems: Option<Vec<String>>,
    /// Whether an executed restart was verified.
    pub verified: Option<bool>,

    /// Other writers' fields (and later warden versions'), kept as they are.
    pub extra: Map<String, Value>,
}

/// Makes ids unique within a process even for requests in the same millisecond.
static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Entry {
    /// A new entry id: `<ms>-<agent pid>-<sequence>`, unique across agents and restarts.
    pub fn new_id(now_ms: i64) -> String {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{now_ms}-{}-{seq}", std::process::id())
    }

    /// The PID of the agent that made this entry, from an id of [`Entry::new_id`]'s.
    pub fn agent_pid(&self) -> Option<u32> {
        let mut parts = self.id.as_deref()?.split('-');
        let (_, pid, _) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        pid.parse().ok()
    }

    /// The decision, when it is one of warden's words.
    pub fn decided(&self) -> Option<Decision> {
        self.decision.as_ref().and_then(Recorded::known)
    }

    /// The source, when it is one of warden's words.
    pub fn source(&self) -> Option<RequestSource> {
        self.source.as_ref().and_then(Recorded::known)
    }

    /// Whether this entry is a restart that was carried out. The original's entries count when
    /// they succeeded and were not blocked.
    pub fn executed(&self) -> bool {
        match self.decided() {
            Some(Decision::Executed | Decision::Intended | Decision::Unknown) => true,
            Some(Decision::Blocked | Decision::Failed | Decision::Rejected) => false,
            // The original's decisions ("allowed", "manual_override") with its success flag.
            _ => self.success == Some(true),
        }
    }

    /// Whether this restart counts toward the churn window and the cooldown: an executed one
    /// that was not a kill-switch flip. The policy never blocks a flip, and the churn it limits
    /// is the restart path's; counting an operator's rollback (and its release) would put the
    /// watchdog's own recovery restarts into guarded mode behind it.
    pub fn counts(&self) -> bool {
        self.executed() && self.source() != Some(RequestSource::KillSwitch)
    }

    /// A dry run of automatic recovery: allowed by the policy, not signalled.
    pub fn dry_run(&self) -> bool {
        self.decision_reason.as_ref().and_then(|r| r.known()) == Some(Reason::AutoRecoveryDryRun)
    }

    /// When it was executed, in UTC milliseconds: completion time, else request time.
    pub fn executed_at_ms(&self) -> Option<i64> {
        self.completed_at
            .as_deref()
            .and_then(parse_time)
            .or_else(|| self.requested_at.as_deref().and_then(parse_time))
            .map(|t| t.timestamp_millis())
    }

    /// What became of the request, in a few words: the time the workers took to be replaced,
    /// what the verification found, why nothing was signalled, the policy's reason, or what a
    /// rejected flag broke.
    pub fn outcome_detail(&self) -> String {
        let reason = || {
            self.decision_reason
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        // Said with every executed reload: it succeeds, and does not load new code.
        let preload = if self.preload_app == Some(true) {
            "; preload_app: the master keeps the code it imported at its start, so the new \
             workers run it too (restart the unit to load new code)"
        } else {
            ""
        };
        match self.decided() {
            Some(Decision::Executed) if self.verified == Some(true) => format!(
                "workers replaced in {:.1} ms{preload}",
                self.timings
                    .as_ref()
                    .and_then(|t| t.workers_replaced_ms)
                    .unwrap_or(0.0)
            ),
            Some(Decision::Executed) => self
                .verification_problems
                .as_deref()
                .unwrap_or_default()
                .join("; "),
            Some(Decision::Failed) => self
                .failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            Some(Decision::Rejected) => self.rejection.clone().unwrap_or_else(reason),
            _ => reason(),
        }
    }

    /// An entry from a JSON object. `Err` hands the object back when one of the original's
    /// fields is of another type: the caller keeps it verbatim.
    pub fn from_object(mut obj: Map<String, Value>) -> Result<Entry, Map<String, Value>> {
        let Ok(original) = Original::take(&mut obj) else {
            return Err(obj);
        };
        let mut e = Entry {
            id: original.id,
            requested_by: original.requested_by,
            requested_at: original.requested_at,
            requested_ip: original.requested_ip,
            completed_at: original.completed_at,
            success: original.success,
            source: original.source,
            decision: original.decision,
            decision_reason: original.decision_reason,
            manual_override: original.manual_override,
            override_reason: original.override_reason,
            policy_state: original.policy_state,
            ..Entry::default()
        };
        e.failure = own(&mut obj, "failure");
        e.master_pid = own(&mut obj, "master_pid");
        e.override_acknowledged = own(&mut obj, "override_acknowledged");
        e.policy_reason = own(&mut obj, "policy_reason");
        e.preload_app = own(&mut obj, "preload_app");
        e.reason = own(&mut obj, "reason");
        e.rejection = own(&mut obj, "rejection");
        e.timings = own(&mut obj, "timings");
        e.fleet = own(&mut obj, "fleet");
        e.alert_gate = own(&mut obj, "alert_gate");
        e.verification_problems = own(&mut obj, "verification_problems");
        e.verified = own(&mut obj, "verified");
        e.extra = obj;
        Ok(e)
    }
}

impl Entry {
    /// Whether the original's field `key` has a typed value.
    fn has_original(&self, key: &str) -> bool {
        match key {
            "id" => self.id.is_some(),
            "requested_by" => self.requested_by.is_some(),
            "requested_at" => self.requested_at.is_some(),
            "requested_ip" => self.requested_ip.is_some(),
            "completed_at" => self.completed_at.is_some(),
            "success" => self.success.is_some(),
            "source" => self.source.is_some(),
            "decision" => self.decision.is_some(),
            "decision_reason" => self.decision_reason.is_some(),
            "manual_override" => self.manual_override.is_some(),
            "override_reason" => self.override_reason.is_some(),
            "policy_state" => self.policy_state.is_some(),
            _ => false,
        }
    }
}

/// The original's fields, typed as the schema says (`null` counts as absent).
#[derive(Default)]
struct Original {
    id: Option<String>,
    requested_by: Option<String>,
    requested_at: Option<String>,
    requested_ip: Option<String>,
    completed_at: Option<String>,
    success: Option<bool>,
    source: Option<Recorded<RequestSource>>,
    decision: Option<Recorded<Decision>>,
    decision_reason: Option<Recorded<Reason>>,
    manual_override: Option<bool>,
    override_reason: Option<String>,
    policy_state: Option<Value>,
}

impl Original {
    /// Takes the original's fields out of `obj`; `Err` (with `obj` untouched) when one is of
    /// another type.
    fn take(obj: &mut Map<String, Value>) -> Result<Original, ()> {
        fn typed<T: for<'de> Deserialize<'de>>(
            obj: &Map<String, Value>,
            k: &str,
        ) -> Result<Option<T>, ()> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => T::deserialize(v).map(Some).map_err(|_| ()),
            }
        }
        let o = Original {
            id: typed(obj, "id")?,
            requested_by: typed(obj, "requested_by")?,
            requested_at: typed(obj, "requested_at")?,
            requested_ip: typed(obj, "requested_ip")?,
            completed_at: typed(obj, "completed_at")?,
            success: typed(obj, "success")?,
            source: typed(obj, "source")?,
            decision: typed(obj, "decision")?,
            decision_reason: typed(obj, "decision_reason")?,
            manual_override: typed(obj, "manual_override")?,
            override_reason: typed(obj, "override_reason")?,
            policy_state: obj.get("policy_state").filter(|v| !v.is_null()).cloned(),
        };
        for k in ORIGINAL_FIELDS {
            obj.remove(*k);
        }
        Ok(o)
    }
}

const ORIGINAL_FIELDS: &[&str] = &[
    "id",
    "requested_by",
    "requested_at",
    "requested_ip",
    "completed_at",
    "success",
    "source",
    "decision",
    "decision_reason",
    "manual_override",
    "override_reason",
    "policy_state",
];

/// One of warden's own fields, taken out of `obj` when it has the expected type; left there
/// (among the other writers' fields) when not.
fn own<T: for<'de> Deserialize<'de>>(obj: &mut Map<String, Value>, k: &str) -> Option<T> {
    let v = obj.get(k).filter(|v| !v.is_null())?;
    let t = T::deserialize(v).ok()?;
    obj.remove(k);
    Some(t)
}

/// A field after the original's: warden's own or another writer's.
enum Tail<'a> {
    Failure(&'a Failure),
    Reason(&'a Recorded<Reason>),
    Pid(u32),
    Flag(bool),
    Text(&'a str),
    Timings(&'a Timings),
    Fleet(&'a FleetRecord),
    Texts(&'a [String]),
    Other(&'a Value),
}

impl Serialize for Tail<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Tail::Failure(f) => f.serialize(s),
            Tail::Reason(r) => r.serialize(s),
            Tail::Pid(p) => p.serialize(s),
            Tail::Flag(b) => b.serialize(s),
            Tail::Text(t) => t.serialize(s),
            Tail::Timings(t) => t.serialize(s),
            Tail::Fleet(f) => f.serialize(s),
            Tail::Texts(t) => t.serialize(s),
            Tail::Other(v) => v.serialize(s),
        }
    }
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        macro_rules! original {
            ($($field:ident),*) => {
                $(if let Some(v) = &self.$field {
                    map.serialize_entry(stringify!($field), v)?;
                })*
            };
        }
        original!(
            id,
            requested_by,
            requested_at,
            requested_ip,
            completed_at,
            success,
            source,
            decision,
            decision_reason,
            manual_override,
            override_reason,
            policy_state
        );
        let mut tail: Vec<(&str, Tail<'_>)> = Vec::with_capacity(9 + self.extra.len());
        if let Some(f) = &self.failure {
            tail.push(("failure", Tail::Failure(f)));
        }
        if let Some(p) = self.master_pid {
            tail.push(("master_pid", Tail::Pid(p)));
        }
        if let Some(b) = self.override_acknowledged {
            tail.push(("override_acknowledged", Tail::Flag(b)));
        }
        if let Some(r) = &self.policy_reason {
            tail.push(("policy_reason", Tail::Reason(r)));
        }
        if let Some(b) = self.preload_app {
            tail.push(("preload_app", Tail::Flag(b)));
        }
        if let Some(r) = &self.reason {
            tail.push(("reason", Tail::Text(r)));
        }
        if let Some(r) = &self.rejection {
            tail.push(("rejection", Tail::Text(r)));
        }
        if let Some(t) = &self.timings {
            tail.push(("timings", Tail::Timings(t)));
        }
        if let Some(f) = &self.fleet {
            tail.push(("fleet", Tail::Fleet(f)));
        }
        if let Some(a) = &self.alert_gate {
            tail.push(("alert_gate", Tail::Texts(a)));
        }
        if let Some(p) = &self.verification_problems {
            tail.push(("verification_problems", Tail::Texts(p)));
        }
        if let Some(v) = self.verified {
            tail.push(("verified", Tail::Flag(v)));
        }
        // An entry kept verbatim holds the original's keys in `extra`; a typed value set since
        // is the one written (and likewise for warden's own keys, below).
        tail.extend(
            self.extra
                .iter()
                .filter(|(k, _)| !self.has_original(k))
                .map(|(k, v)| (k.as_str(), Tail::Other(v))),
        );
        tail.sort_by(|a, b| a.0.cmp(b.0));
        tail.dedup_by(|later, earlier| later.0 == earlier.0);
        for (k, v) in &tail {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let obj = Map::<String, Value>::deserialize(d)?;
        Entry::from_object(obj).map_err(|_| {
            serde::de::Error::custom("a field of the original's schema has another type")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_the_agent_that_made_it() {
        let e = Entry {
            id: Some(Entry::new_id(1_800_000_000_000)),
            ..Entry::default()
        };
        assert_eq!(e.agent_pid(), Some(std::process::id()));
        let other = |id: &str| {
            Entry {
                id: Some(id.into()),
                ..Entry::default()
            }
            .agent_pid()
        };
        assert_eq!(other("mes-7f3a"), None);
        assert_eq!(other("1-2-3-4"), None);
    }

    #[test]
    fn warden_fields_sort_among_other_writers_fields() {
        let e = Entry {
            id: Some("1".into()),
            decision: Some(Decision::Failed.into()),
            failure: Some(Failure::bare(
                super::super::model::FailureKind::PidFileMissing,
            )),
            reason: Some("deploy".into()),
            extra: [
                ("note".to_string(), Value::from(1)),
                ("aaa".into(), Value::from(2)),
            ]
            .into_iter()
            .collect(),
            ..Entry::default()
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"id":"1","decision":"failed","aaa":2,"failure":"pid_file_missing","note":1,"reason":"deploy"}"#
        );
        let back: Entry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn own_fields_of_another_shape_are_kept_as_they_were() {
        let text = r#"{"decision":"executed","master_pid":-1,"timings":{"x":1},"verified":"yes"}"#;
        let e: Entry = serde_json::from_str(text).unwrap();
        assert_eq!(e.verified, None);
        assert_eq!(e.extra["verified"], "yes");
        assert_eq!(e.timings, None);
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
    }

    #[test]
    fn original_fields_of_another_type_refuse_the_typed_reading() {
        let mut obj = Map::new();
        obj.insert("requested_by".into(), Value::from(42));
        obj.insert("success".into(), Value::from(true));
        let back = Entry::from_object(obj.clone()).unwrap_err();
        assert_eq!(back, obj);
    }
}
