//! The restart vocabulary: who asked for a restart, what the policy ruled, how the request ended
//! and why. Each word is an enum with one spelling, the one the state file, the journal, the
//! metrics' labels and the D-Bus API carry; [`Recorded`] keeps another writer's word as it was.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Defines an enum of words, each with its one spelling, and its serde as that spelling.
macro_rules! words {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($(#[$vmeta])* $variant,)* }

        impl $name {
            /// Every word, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word as written everywhere outside the program.
            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            /// The word `text` spells, if it is one.
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::ledger::model::UnknownWord;
            fn from_str(s: &str) -> Result<Self, $crate::ledger::model::UnknownWord> {
                $name::parse(s).ok_or_else(|| $crate::ledger::model::UnknownWord(s.to_string()))
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow::<str> as ::serde::Deserialize>::deserialize(d)?;
                $name::parse(&text).ok_or_else(|| ::serde::de::Error::custom($crate::ledger::model::UnknownWord(text.into_owned())))
            }
        }
    };
}
pub(crate) use words;

/// A word that is not one of the vocabulary's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown word {0:?}")]
pub struct UnknownWord(pub String);

words! {
    /// Who asked for a restart.
    pub enum RequestSource {
        /// An operator: the admin API, the CLI, D-Bus, a flag written by hand.
        Manual => "manual",
        /// Automation: the app's own recovery logic.
        Auto => "auto",
        /// A kill-switch flip: an operator rollback, never blocked by the policy.
        KillSwitch => "kill_switch",
        /// `warden reload`, the app unit's `ExecReload=`: decided as an operator's request.
        Reload => "reload",
    }
}

impl Default for RequestSource {
    /// A request that does not say is an operator's, as the original reads a flag.
    fn default() -> Self {
        RequestSource::Manual
    }
}

words! {
    /// What the policy rules on a request (the D-Bus API's `decision`).
    pub enum Verdict {
        Allowed => "allowed",
        /// Allowed by an acknowledged operator override of the cooldown or guarded mode.
        Override => "manual_override",
        Blocked => "blocked",
        /// Malformed: an override without a reason. Not a policy decision; the caller's error.
        Refused => "rejected",
    }
}

impl Verdict {
    /// Whether the restart goes ahead.
    pub fn allows(self) -> bool {
        matches!(self, Verdict::Allowed | Verdict::Override)
    }
}

words! {
    /// How a request stands in the history (`decision`).
    pub enum Decision {
        /// The master was signalled (whether or not the reload was then verified).
        Executed => "executed",
        /// The policy refused it.
        Blocked => "blocked",
        /// Allowed, but nothing could be signalled (no live master, the signal failed).
        Failed => "failed",
        /// The flag or the request was malformed.
        Rejected => "rejected",
        /// About to be signalled: recorded before the signal, replaced by its outcome after.
        Intended => "intended",
        /// Signalled, but the agent stopped before recording the outcome.
        Unknown => "unknown",
        /// The original watchdog's word for an allowed request (its `success` says the rest).
        Allowed => "allowed",
        /// The original watchdog's word for an overridden request.
        ManualOverride => "manual_override",
    }
}

impl Decision {
    /// The outcomes a handled request ends with, as the metrics count them.
    pub const OUTCOMES: [Decision; 4] = [
        Decision::Executed,
        Decision::Blocked,
        Decision::Failed,
        Decision::Rejected,
    ];
}

words! {
    /// Why a request was decided as it was (`decision_reason`).
    pub enum Reason {
        // The policy's, in the original's words (the dashboard and alerting read them).
        GuardedModeBlocked => "guarded_mode_blocked",
        CooldownActive => "cooldown_active",
        PolicyAllowsAutoRestart => "policy_allows_auto_restart",
        ManualOverrideRequired => "manual_override_required",
        CooldownOverrideRequired => "cooldown_override_required",
        OperatorOverrideAcknowledged => "operator_override_acknowledged",
        PolicyAllowsManualRestart => "policy_allows_manual_restart",
        OverrideReasonRequired => "override_reason_required",
        KillSwitchRollback => "kill_switch_rollback",
        // A restart flag's, when it broke a rule of intake.
        FlagSymlink => "flag_symlink",
        FlagNotRegular => "flag_not_regular",
        FlagTooLarge => "flag_too_large",
        FlagWorldWritable => "flag_world_writable",
        FlagUntrustedOwner => "flag_untrusted_owner",
        FlagNotJson => "flag_not_json",
        FlagInvalidField => "flag_invalid_field",
        FlagDirReplaced => "flag_dir_replaced",
        FlagDirUnsafe => "flag_dir_unsafe",
        FlagUnreadable => "flag_unreadable",
        /// The agent stopped between the signal and the outcome's record.
        OutcomeUnknown => "agent_stopped_before_recording_the_outcome",
        // An allowed request's, as the original records it: what became of the signal.
        SignalSighup => "signal_sighup",
        GunicornPidUnavailable => "gunicorn_pid_unavailable",
        SignalFailed => "signal_failed",
        IntentNotRecorded => "intent_not_recorded",
        PreflightFailed => "preflight_failed",
        /// Automatic recovery in its dry run: the policy allowed it, nothing was signalled.
        AutoRecoveryDryRun => "auto_recovery_dry_run",
        FleetSlotUnavailable => "fleet_slot_unavailable",
        FleetUnreachable => "fleet_unreachable",
        /// An automatic restart deferred while an alert matching the gate's matchers fires.
        AlertGateFiring => "alert_gate_firing",
    }
}

impl FailureKind {
    /// The reason the original records for a restart that could not be carried out.
    pub fn reason(self) -> Reason {
        match self {
            FailureKind::PidFileMissing
            | FailureKind::PidFileUnreadable
            | FailureKind::PidNotRunning
            | FailureKind::PidNotGunicornMaster
            | FailureKind::PidOutsideAppUnit => Reason::GunicornPidUnavailable,
            FailureKind::IntentNotRecorded => Reason::IntentNotRecorded,
            FailureKind::SignalFailed => Reason::SignalFailed,
            // warden's own: the original has no preflight and no fleet.
            FailureKind::PreflightFailed => Reason::PreflightFailed,
            FailureKind::FleetSlotUnavailable => Reason::FleetSlotUnavailable,
            FailureKind::FleetUnreachable => Reason::FleetUnreachable,
        }
    }
}

impl Reason {
    /// Whether the policy refused because a cooldown runs (rather than guarded mode).
    pub fn is_cooldown(self) -> bool {
        matches!(
            self,
            Reason::CooldownActive | Reason::CooldownOverrideRequired
        )
    }
}

words! {
    /// Why an allowed restart could not be carried out: nothing was signalled.
    pub enum FailureKind {
        PidFileMissing => "pid_file_missing",
        PidFileUnreadable => "pid_file_unreadable",
        PidNotRunning => "pid_not_running",
        PidNotGunicornMaster => "pid_not_gunicorn_master",
        PidOutsideAppUnit => "pid_outside_app_unit",
        IntentNotRecorded => "intent_not_recorded",
        SignalFailed => "signal_failed",
        /// The app's Gunicorn could not load its configuration or application: a reload would
        /// have stopped the workers and booted none.
        PreflightFailed => "preflight_failed",
        /// Every reload slot of the fleet group stayed held for the whole wait.
        FleetSlotUnavailable => "fleet_slot_unavailable",
        /// No etcd member answered, and the request's rule did not let it go on without a slot.
        FleetUnreachable => "fleet_unreachable",
    }
}

/// A failure: its stable kind and what was seen. Written as `kind` or `kind: detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: Some(detail.into()),
        }
    }

    pub fn bare(kind: FailureKind) -> Failure {
        Failure { kind, detail: None }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(d) => write!(f, "{}: {d}", self.kind),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl Serialize for Failure {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Failure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (kind, detail) = match text.split_once(": ") {
            Some((k, rest)) => (k, Some(rest.to_string())),
            None => (text.as_str(), None),
        };
        let kind = FailureKind::parse(kind)
            .ok_or_else(|| serde::de::Error::custom(UnknownWord(kind.to_string())))?;
        Ok(Failure { kind, detail })
    }
}

/// A word as another writer recorded it: one of ours, or theirs kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded<T> {
    Known(T),
    Other(String),
}

impl<T: Copy> Recorded<T> {
    pub fn known(&self) -> Option<T> {
        match self {
            Recorded::Known(t) => Some(*t),
            Recorded::Other(_) => None,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Recorded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recorded::Known(t) => t.fmt(f),
            Recorded::Other(s) => f.write_str(s),
        }
    }
}

impl<T: std::str::FromStr> std::str::FromStr for Recorded<T> {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<T>() {
            Ok(t) => Recorded::Known(t),
            Err(_) => Recorded::Other(s.to_string()),
        })
    }
}

impl<T> From<T> for Recorded<T> {
    fn from(t: T) -> Self {
        Recorded::Known(t)
    }
}

impl<T: fmt::Display> Serialize for Recorded<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de, T: std::str::FromStr> Deserialize<'de> for Recorded<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(match text.parse::<T>() {
            Ok(t) => Recorded::Known(t),
            Err(_) => Recorded::Other(text),
        })
    }
}

/// The times of one executed restart, in milliseconds.
/// A restart's part in its fleet group: the slot it held (or why it had none) and its wait.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetRecord {
    pub group: String,
    /// The slot the reload held; none when it went on without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<u32>,
    /// From asking for a slot to having it (or to giving up).
    pub waited_ms: f64,
    /// The slot was held already, kept from this host's failed reload.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// It went on without a slot: no etcd member answered and its rule said to proceed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub without_slot: Option<String>,
    /// After the reload: whether the slot went back to the group (a failed one keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
// Another writer's shape is kept as it was, not read as warden's.
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// From the request's write (the flag's mtime; the flip, for the kill-switch) to the signal.
    pub flag_to_signal_ms: Option<f64>,
    /// From the signal to the health URL's 2xx answer.
    pub health_answered_ms: Option<f64>,
    /// A kill-switch's reload: from the flip to the last worker replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_ms: Option<f64>,
    /// When the master was signalled (UTC RFC 3339).
    pub signal_sent_at: Option<String>,
    /// From the signal to every old worker replaced by a new one that has booted (loaded the
    /// app and entered its loop).
    pub workers_replaced_ms: Option<f64>,
    /// Each new worker's boot: from its fork to its loop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_boot_ms: Vec<f64>,
    /// How long the app's Gunicorn took to check its configuration and application, before
    /// the signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back() {
        for d in Decision::ALL {
            assert_eq!(Decision::parse(d.as_str()), Some(*d));
        }
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>(), Ok(*r));
        }
        for k in FailureKind::ALL {
            let f = Failure::new(*k, "x: y");
            let back: Failure = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
            assert_eq!(back, f);
        }
        assert!(Verdict::parse("maybe").is_none());
    }

    #[test]
    fn another_writers_words_are_kept() {
        let r: Recorded<Decision> = serde_json::from_str("\"postponed\"").unwrap();
        assert_eq!(r, Recorded::Other("postponed".into()));
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"postponed\"");
        let r: Recorded<Decision> = serde_json::from_str("\"executed\"").unwrap();
        assert_eq!(r.known(), Some(Decision::Executed));
        assert!(serde_json::from_str::<Failure>("\"cosmic_rays: x\"").is_err());
    }
}
