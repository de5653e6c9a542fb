//! The restart ledger: the policy, the history and its state file, the intent record.

pub mod intent;
pub mod policy;
pub mod state;
