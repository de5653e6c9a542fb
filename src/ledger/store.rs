//! The ledger: the one owner of the restart history, its state file and the intent record.
//! Every change goes through it, and it writes as it goes: the state file durably after each
//! change, the intent record before a signal (see [`super::intent`]).
//!
//! A write that fails (a full disk) is never fatal: the history stays in memory, [`Ledger::
//! unsaved`] says why the file is behind it, and the next write (a change, or
//! [`Ledger::retry_save`]) writes it whole. While the file is behind, an intent goes to the
//! state file too, so that a restart whose intent cannot be recorded anywhere is not signalled.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::entry::Entry;
use super::intent::IntentLog;
use super::model::{Decision, Reason};
use super::policy::{self, Evaluation};
use super::state::{self, KillSwitch, LoadedState, StateDoc, StateError};
use crate::config::PolicyConfig;

pub struct Ledger {
    path: PathBuf,
    doc: StateDoc,
    /// `None` when the intent record could not be opened: intents then go to the state file,
    /// slower but as durable.
    intents: Option<IntentLog>,
    /// An intent written and not yet flushed.
    unsynced: bool,
    /// Why the state file is behind `doc` (its last write failed), if it is.
    unsaved: Option<String>,
    limit: NonZeroUsize,
    policy: PolicyConfig,
}

/// What opening the ledger found, for the caller to report.
#[derive(Debug, Default)]
pub struct Opened {
    /// The state file did not parse: where it was set aside, and why.
    pub set_aside: Option<(PathBuf, String)>,
    /// Restarts signalled by an agent that stopped before recording their outcome, now
    /// recorded as `unknown`.
    pub settled: usize,
    /// The agents (PIDs) those restarts were theirs: their claimed flags are spent.
    pub settled_agents: Vec<u32>,
    /// Why there is no intent record (intents then go to the state file).
    pub no_intent_record: Option<String>,
}

impl Ledger {
    /// Opens the ledger of the state file at `path`: loads the history (a file that does not
    /// parse is set aside and the history starts empty), opens the intent record, and settles
    /// what an agent killed between a signal and its record left: an `intended` last entry, or
    /// an intent the history does not hold, becomes an `unknown` outcome.
    pub fn open(
        path: &Path,
        limit: NonZeroUsize,
        policy: PolicyConfig,
    ) -> Result<(Ledger, Opened), StateError> {
        let mut opened = Opened::default();
        let doc = match state::load(path)? {
            LoadedState::Fresh(d) | LoadedState::Ok(d) => d,
            LoadedState::SetAside { doc, kept_as, why } => {
                opened.set_aside = Some((kept_as, why));
                doc
            }
        };
        let intents = match IntentLog::open(path) {
            Ok(l) => Some(l),
            Err(e) => {
                opened.no_intent_record = Some(e.to_string());
                None
            }
        };
        let mut ledger = Ledger {
            path: path.to_path_buf(),
            doc,
            intents,
            unsynced: false,
            unsaved: None,
            limit,
            policy,
        };
        opened.settled_agents = ledger.settle_unknown();
        opened.settled = opened.settled_agents.len();
        Ok((ledger, opened))
    }

    /// Records as `unknown` the outcomes a killed agent left unrecorded; the PIDs of the
    /// agents whose they were (0 when the id does not say).
    fn settle_unknown(&mut self) -> Vec<u32> {
        let mut settled = Vec::new();
        if let Some(last) = self.doc.history.last_mut()
            && last.decided() == Some(Decision::Intended)
        {
            unknown(last);
            self.doc.last_restart = Some(last.clone());
            settled.push(last.agent_pid().unwrap_or(0));
        }
        let pending = self.intents.as_ref().and_then(IntentLog::pending);
        if let Some(mut e) = pending
            && !self
                .doc
                .history
                .iter()
                .any(|h| h.id.is_some() && h.id == e.id)
        {
            unknown(&mut e);
            settled.push(e.agent_pid().unwrap_or(0));
            self.push(e);
        }
        if !settled.is_empty() {
            self.save();
        } else if let Some(log) = self.intents.as_mut() {
            // Nothing pending that the history lacks: the record is spent.
            log.clear();
        }
        settled
    }

    pub fn doc(&self) -> &StateDoc {
        &self.doc
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why the state file is behind the history, if it is.
    pub fn unsaved(&self) -> Option<&str> {
        self.unsaved.as_deref()
    }

    /// Takes a new history limit and policy (a configuration reload).
    pub fn configure(&mut self, limit: NonZeroUsize, policy: PolicyConfig) {
        self.limit = limit;
        self.policy = policy;
    }

    /// The policy at `now_ms` over the executed restarts.
    pub fn evaluate(&self, now_ms: i64) -> Evaluation {
        policy::evaluate(&self.doc.executed(), now_ms, &self.policy)
    }

    /// The policy as a dry run of automatic recovery sees it: its earlier dry runs count as
    /// executed, so that it rules as the real one would.
    pub fn evaluate_rehearsal(&self, now_ms: i64) -> Evaluation {
        policy::evaluate(&self.doc.executed_or_rehearsed(), now_ms, &self.policy)
    }

    pub fn policy(&self) -> &PolicyConfig {
        &self.policy
    }

    /// Appends under the length limit, keeping what the policy decides from.
    fn push(&mut self, e: Entry) {
        let keep = policy::retain(&self.policy, Utc::now().timestamp_millis());
        self.doc.push(e, self.limit.get(), keep);
    }

    /// Records a settled entry (a decision, an outcome) and saves.
    pub fn record(&mut self, e: Entry) {
        self.push(e);
        self.save();
    }

    /// Records `e` as intended, before the signal. An error: it is recorded nowhere a crash
    /// would leave it, the history is as before, and nothing may be signalled.
    pub fn intend(&mut self, e: Entry) -> Result<(), String> {
        self.push(e.clone());
        // While the state file is behind, the intent record may hold an earlier restart's
        // intent, which overwriting would lose: the state file then takes both, or neither.
        if self.unsaved.is_none()
            && let Some(log) = self.intents.as_mut()
        {
            match log.record(&e) {
                Ok(true) => {
                    self.unsynced = true;
                    return Ok(());
                }
                Ok(false) => {}
                Err(err) => tracing::error!(error = %err, "cannot write the intent record"),
            }
        }
        self.try_save().map_err(|err| {
            self.doc.history.pop();
            err.to_string()
        })
    }

    /// Right after the signal: makes the intent durable.
    pub fn signalled(&mut self) {
        if std::mem::take(&mut self.unsynced)
            && let Some(log) = self.intents.as_mut()
            && let Err(e) = log.sync()
        {
            tracing::error!(error = %e, "cannot flush the intent record");
        }
    }

    /// Takes back the intended entry when nothing was signalled after all.
    pub fn withdraw(&mut self) {
        if self.doc.history.last().and_then(Entry::decided) == Some(Decision::Intended) {
            self.doc.history.pop();
        }
    }

    /// Replaces the intended entry with its outcome, and saves.
    pub fn settle(&mut self, outcome: Entry) {
        self.withdraw();
        self.record(outcome);
    }

    /// Stores the kill-switch. It is not changed unless the state file holds it.
    pub fn set_kill_switch(&mut self, ks: KillSwitch) -> Result<(), StateError> {
        let previous = self.doc.kill_switch.replace(ks);
        self.try_save().inspect_err(|_| {
            self.doc.kill_switch = previous;
        })
    }

    /// Writes the history the last write could not; `true` when this write caught up.
    pub fn retry_save(&mut self) -> bool {
        self.unsaved.is_some() && self.try_save().is_ok()
    }

    /// Reads the history back from the file (after a piece of work failed midway: the file is
    /// the truth); takes `last_good` when the file cannot be read.
    pub fn reload(&mut self, last_good: StateDoc) {
        match state::load(&self.path) {
            Ok(LoadedState::Ok(doc) | LoadedState::Fresh(doc)) => {
                self.doc = doc;
                self.unsaved = None;
                let _ = self.settle_unknown();
            }
            _ => self.doc = last_good,
        }
    }

    /// Saves durably; a failure is logged and kept in [`Ledger::unsaved`].
    fn save(&mut self) {
        if let Err(e) = self.try_save() {
            tracing::error!(error = %e, "cannot save the restart history; retrying");
        }
    }

    /// Saves durably; once the file holds the outcome, the intent is forgotten.
    fn try_save(&mut self) -> Result<(), StateError> {
        match state::save(&self.path, &self.doc) {
            Ok(()) => {
                if let Some(log) = self.intents.as_mut() {
                    log.clear();
                }
                self.unsaved = None;
                Ok(())
            }
            Err(e) => {
                self.unsaved = Some(e.to_string());
                Err(e)
            }
        }
    }
}

fn unknown(e: &mut Entry) {
    e.decision = Some(Decision::Unknown.into());
    e.decision_reason = Some(Reason::OutcomeUnknown.into());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> NonZeroUsize {
        NonZeroUsize::new(50).unwrap()
    }

    fn intended(id: &str) -> Entry {
        Entry {
            id: Some(id.into()),
            decision: Some(Decision::Intended.into()),
            requested_at: Some("2026-02-10T08:00:00.000Z".into()),
            ..Entry::default()
        }
    }

    #[test]
    fn an_intent_left_by_a_killed_agent_is_an_unknown_outcome() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        let (mut l, opened) = Ledger::open(&path, limit(), PolicyConfig::defaults()).unwrap();
        assert_eq!(opened.settled, 0);
        l.intend(intended("1")).unwrap();
        l.signalled();
        drop(l);
        // The state file never heard of it; the intent record did.
        let (l, opened) = Ledger::open(&path, limit(), PolicyConfig::defaults()).unwrap();
        assert_eq!(opened.settled, 1);
        let e = l.doc().history.last().unwrap();
        assert_eq!(
            (e.id.as_deref(), e.decided()),
            (Some("1"), Some(Decision::Unknown))
        );
        // It counts toward the policy: it may have been signalled.
        assert_eq!(l.doc().executed().len(), 1);
        // Settled once, and saved: a third start finds nothing to settle.
        drop(l);
        let (_, opened) = Ledger::open(&path, limit(), PolicyConfig::defaults()).unwrap();
        assert_eq!(opened.settled, 0);
    }

    #[test]
    fn a_failed_write_keeps_the_history_and_refuses_intents_until_a_save_succeeds() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("state.json");
        let (mut l, _) = Ledger::open(&path, limit(), PolicyConfig::defaults()).unwrap();
        // The directory goes away under the agent (for any user, root included).
        std::fs::remove_dir_all(&dir).unwrap();
        l.record(Entry {
            id: Some("blocked".into()),
            decision: Some(Decision::Blocked.into()),
            ..Entry::default()
        });
        assert!(l.unsaved().is_some());
        assert_eq!(l.doc().history.len(), 1, "kept in memory");
        // An intent now cannot be recorded anywhere: refused, and the history is as before.
        assert!(l.intend(intended("2")).is_err());
        assert_eq!(l.doc().history.len(), 1);
        assert!(!l.retry_save());
        std::fs::create_dir(&dir).unwrap();
        assert!(l.retry_save());
        assert!(l.unsaved().is_none());
        let back = state::load(&path).unwrap().doc();
        assert_eq!(back.history, l.doc().history);
    }

    #[test]
    fn a_kill_switch_not_saved_is_not_changed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        let (mut l, _) =
            Ledger::open(&dir.join("state.json"), limit(), PolicyConfig::defaults()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let ks = KillSwitch {
            engaged: true,
            reason: Some("x".into()),
            ..KillSwitch::default()
        };
        assert!(l.set_kill_switch(ks).is_err());
        assert_eq!(l.doc().kill_switch, None);
    }
}
