//! The control surface: the D-Bus API (its server, its proxy and a typed client), the status
//! document, the metrics, what the running agent shows of itself, and the rehearsal.

pub mod client;
pub mod dbus;
pub mod metrics;
pub mod observe;
pub mod rehearsal;
pub mod status;
pub mod view;
