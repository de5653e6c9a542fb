//! warden: a systemd-native watchdog and runtime-contract agent for Gunicorn services.
//!
//! Layout: pure parsing and policy logic (`envfile`, `unitfile`, `unit`, `config`, `diag`,
//! `policy`, `status`) is kept apart from I/O (`conda` reads prefixes, `systemd` speaks D-Bus,
//! `contract` runs the rules, `cli` is the edge).

pub mod account;
pub mod admin;
pub mod agent;
pub mod cli;
pub mod conda;
pub mod config;
pub mod contract;
pub mod dbus;
pub mod diag;
pub mod envfile;
pub mod flag;
pub mod fsutil;
pub mod generate;
pub mod gunicorn;
pub mod health;
pub mod intent;
pub mod journal;
pub mod metrics;
pub mod netdiag;
pub mod policy;
pub mod rehearse;
pub mod state;
pub mod status;
pub mod systemd;
pub mod unit;
pub mod unitfile;
