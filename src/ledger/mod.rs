//! The restart ledger: the restart vocabulary, the policy, the history and its state file, the
//! intent record, and [`Ledger`], their one writer.

pub mod entry;
pub mod intent;
pub mod model;
pub mod policy;
pub mod state;
mod store;
pub mod time;

pub use store::{Ledger, Opened};
