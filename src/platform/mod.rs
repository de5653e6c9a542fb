//! What warden needs of the operating system: processes and pidfds, files, accounts, sockets
//! and the HTTP probe. Nothing here knows about warden's domain.

pub mod accounts;
pub mod fs;
pub mod gunicorn;
pub mod http;
pub mod process;
pub mod sockets;
