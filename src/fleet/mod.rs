//! Fleet coordination: reload slots shared by the agents of a group across hosts, held in
//! etcd under leases, so that never more than N hosts reload at once.

pub mod connect;
pub mod coordinator;
pub mod slots;
