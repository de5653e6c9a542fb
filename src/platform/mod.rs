//! What warden needs of the operating system: processes and pidfds, files, accounts, sockets
//! the HTTP probe, etcd through its JSON gateway, and Alertmanager's alerts API. Nothing here knows about warden's domain.

pub mod accounts;
pub mod alertmanager;
pub mod etcd;
pub mod fs;
pub mod gunicorn;
pub mod http;
pub mod process;
pub mod sockets;
