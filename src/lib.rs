//! warden: a systemd-native watchdog and runtime-contract agent for Gunicorn services.
//!
//! The map is `docs/ARCHITECTURE.md`.

pub mod agent;
pub mod cli;
pub mod config;
pub mod contract;
pub mod control;
pub mod fleet;
pub mod ledger;
pub mod platform;
pub mod recovery;
pub mod systemd;
