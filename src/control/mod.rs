//! The control surface: the D-Bus API (server and client), the status document, the metrics,
//! and the rehearsal.

pub mod client;
pub mod dbus;
pub mod metrics;
pub mod observe;
pub mod rehearsal;
pub mod status;
