//! Finding and signalling a real Gunicorn master (venv + gunicorn from PyPI): master and worker
//! are told apart, a SIGHUP through a pidfd replaces every worker while the master and its
//! listening socket stay.

mod common;

use std::time::Duration;

use common::*;
use warden::platform::process::{PidFd, Role, classify, holds_socket, read_pid_file, stat};

#[test]
fn sighup_through_a_pidfd_replaces_the_workers_and_keeps_the_master() {
    let f = Fixture::new("gunicorn-control");
    let _g = start_gunicorn(&f);
    let master = read_pid_file(&f.pid_file()).unwrap();
    assert_eq!(classify(master), Role::Master);
    // Booted: a worker signalled while still importing the app makes the reload's outcome
    // depend on that race.
    let before = await_booted(master, 2);
    assert_eq!(before.len(), 2, "two workers: {before:?}");
    for w in &before {
        assert_eq!(classify(*w), Role::Worker { master });
    }
    assert!(matches!(
        classify(std::process::id()),
        Role::NotGunicorn { .. }
    ));
    let listener = warden::platform::sockets::diag_listeners()
        .unwrap()
        .into_iter()
        .find(|l| l.port == f.port)
        .expect("gunicorn listens on the contract's port");
    assert!(holds_socket(master, listener.inode));

    // Handles on the old workers, to await their exit rather than sleep.
    let old: Vec<PidFd> = before
        .iter()
        .map(|w| PidFd::open(*w, stat(*w).unwrap().start_ticks).unwrap())
        .collect();
    let m = PidFd::open(master, stat(master).unwrap().start_ticks).unwrap();
    m.send_signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    for w in &old {
        assert!(
            w.wait_exit(Duration::from_secs(30)).unwrap(),
            "worker {} did not exit",
            w.pid
        );
    }
    let after = await_booted(master, 2);
    assert_eq!(after.len(), 2, "worker count restored: {after:?}");
    assert!(
        after.iter().all(|w| !before.contains(w)),
        "{before:?} -> {after:?}"
    );
    assert_eq!(classify(master), Role::Master);
    assert_eq!(read_pid_file(&f.pid_file()).unwrap(), master, "same master");
    assert!(
        holds_socket(master, listener.inode),
        "same listening socket, no rebind"
    );
}
