//! systemd as warden sees it: the unit model, the unit-file and env-file parsers, units read
//! over D-Bus, and the journal.

pub mod bus;
pub mod envfile;
pub mod journal;
pub mod unit;
pub mod unitfile;
pub mod words;
