//! warden's etcd client against a real three-member cluster (Debian's etcd, on loopback, from
//! `tests/harness/deps.sh`): the calls reload slots are made of, a lease's expiry freeing what
//! it held, and a member down changing nothing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::etcd::Cluster;
use warden::platform::etcd::EtcdError;

#[test]
fn slots_are_taken_once_freed_by_their_lease_and_a_member_down_changes_nothing() {
    let mut c = Cluster::start();
    let etcd = c.client();
    let group = b"warden/test/slots/";
    let slot = |i: u32| [&group[..], i.to_string().as_bytes()].concat();

    // Two slots, three hosts: the third finds both taken.
    let a = etcd.grant(30).unwrap();
    let b = etcd.grant(30).unwrap();
    let h = etcd.grant(2).unwrap();
    assert!(etcd.create(&slot(0), b"host-a", a.id).unwrap().created);
    assert!(
        !etcd.create(&slot(0), b"host-b", b.id).unwrap().created,
        "taken once"
    );
    assert!(etcd.create(&slot(1), b"host-b", b.id).unwrap().created);
    assert!(!etcd.create(&slot(0), b"host-c", h.id).unwrap().created);
    assert!(!etcd.create(&slot(1), b"host-c", h.id).unwrap().created);
    let held = etcd.list(group).unwrap();
    assert_eq!(
        held.iter()
            .map(|k| (&k.value[..], k.lease))
            .collect::<Vec<_>>(),
        [(&b"host-a"[..], a.id), (&b"host-b"[..], b.id)]
    );

    // Given back (the lease revoked), a slot is free for the next.
    etcd.revoke(a.id).unwrap();
    assert!(etcd.create(&slot(0), b"host-c", h.id).unwrap().created);

    // A holder that stops renewing: its slot frees itself when the lease runs out.
    let granted_ttl = Duration::from_secs(h.ttl_seconds as u64);
    let deadline = Instant::now() + granted_ttl + Duration::from_secs(10);
    while etcd.list(&slot(0)).unwrap().len() == 1 {
        assert!(Instant::now() < deadline, "the lease never expired");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(etcd.keep_alive(h.id).unwrap() <= 0, "expired");

    // One member down: the same client, the same answers.
    c.stop(0);
    let d = etcd.grant(30).unwrap();
    assert!(etcd.create(&slot(0), b"host-d", d.id).unwrap().created);
    assert!(etcd.keep_alive(d.id).unwrap() > 0);
    assert!(etcd.delete(&slot(1)).unwrap());
    assert_eq!(etcd.list(group).unwrap().len(), 1);

    // Every member down: unreachable, each endpoint named.
    c.stop(1);
    c.stop(2);
    match etcd.grant(5) {
        Err(EtcdError::Unreachable(why)) => {
            for p in &c.clients {
                assert!(why.contains(&p.to_string()), "{why}");
            }
        }
        other => panic!("{other:?}"),
    }
}

/// `hosts` agents each take a slot of `slots`, hold it for a while, give it back, `rounds`
/// times; returns the most that ever held one at once, counted from inside the holds.
fn contend(c: &Cluster, group: &str, hosts: usize, slots: u32, rounds: usize) -> usize {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use warden::fleet::slots::{Group, Holder, Taken};
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..hosts)
        .map(|h| {
            let (etcd, holding, most) = (c.client(), holding.clone(), most.clone());
            let g = Group::new(group, slots);
            std::thread::spawn(move || {
                let lease = etcd.grant(30).unwrap();
                let me = Holder {
                    id: format!("machine-{h}/app"),
                    host: format!("host-{h}"),
                    app: "app".into(),
                    since: String::new(),
                };
                for _ in 0..rounds {
                    let slot = loop {
                        match g.take(&etcd, &me, lease.id).unwrap() {
                            Taken::Slot(s) => break s,
                            Taken::AllHeld { revision } => {
                                g.await_change(&etcd, revision, Duration::from_secs(1));
                            }
                        }
                    };
                    let now = holding.fetch_add(1, SeqCst) + 1;
                    most.fetch_max(now, SeqCst);
                    // A reload's worth of holding.
                    std::thread::sleep(Duration::from_millis(20));
                    holding.fetch_sub(1, SeqCst);
                    assert!(g.release(&etcd, slot).unwrap());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    most.load(SeqCst)
}

#[test]
fn five_hosts_never_hold_more_than_the_groups_slots() {
    let c = Cluster::start();
    assert_eq!(contend(&c, "one", 5, 1, 4), 1);
    let most = contend(&c, "two", 5, 2, 4);
    assert!((1..=2).contains(&most), "{most}");
    // The holders as `warden fleet status` will read them.
    let g = warden::fleet::slots::Group::new("one", 1);
    assert!(
        g.held(&c.client()).unwrap().is_empty(),
        "every slot given back"
    );
}

#[test]
fn warden_fleet_status_and_release_as_an_operator_types_them() {
    let mut c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("app.env");
    let endpoints: Vec<String> = c
        .clients
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    std::fs::write(
        &env,
        format!(
            "WARDEN_APP_UNIT=mes-dashboard.service\nWARDEN_ETCD_ENDPOINTS={}\nWARDEN_FLEET_SLOTS=2\n",
            endpoints.join(",")
        ),
    )
    .unwrap();
    let warden = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_warden"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .args(args)
            .arg("--env-file")
            .arg(&env)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code(), text)
    };
    // Another host's agent holds a slot of the group (the app's name by default).
    let etcd = c.client();
    let lease = etcd.grant(60).unwrap();
    let g = warden::fleet::slots::Group::new("mes-dashboard", 2);
    let other = warden::fleet::slots::Holder {
        id: "machine-b/mes-dashboard".into(),
        host: "host-b".into(),
        app: "mes-dashboard".into(),
        since: "2026-11-30T10:00:00Z".into(),
    };
    assert_eq!(
        g.take(&etcd, &other, lease.id).unwrap(),
        warden::fleet::slots::Taken::Slot(0)
    );

    let (code, out) = warden(&["fleet", "status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("fleet group mes-dashboard: 2 slot(s), 1 held"),
        "{out}"
    );
    assert!(
        out.contains("slot 0: machine-b/mes-dashboard (mes-dashboard on host-b)"),
        "{out}"
    );
    assert!(out.contains("slot 1: free"), "{out}");

    let (code, out) = warden(&["fleet", "release", "--slot", "0"]);
    assert_eq!(code, Some(2), "a reason is required: {out}");
    let (code, out) = warden(&[
        "fleet",
        "release",
        "--slot",
        "0",
        "--reason",
        "bad deploy fixed",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("taken from machine-b/mes-dashboard"), "{out}");
    assert!(warden(&["fleet", "status"]).1.contains("0 held"));

    // etcd gone: nothing done, exit 7, every member named.
    for i in 0..3 {
        c.stop(i);
    }
    let (code, out) = warden(&["fleet", "status"]);
    assert_eq!(code, Some(7), "{out}");
    assert!(out.contains(&endpoints[0][7..]), "{out}");
}
