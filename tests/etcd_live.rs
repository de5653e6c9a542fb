//! warden's etcd client against a real three-member cluster (Debian's etcd, on loopback, from
//! `tests/harness/deps.sh`): the calls reload slots are made of, a lease's expiry freeing what
//! it held, and a member down changing nothing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::etcd::{Cluster, Single};
use warden::platform::etcd::Etcd;
use warden::platform::etcd::EtcdError;
use warden::platform::http::HealthUrl;

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
                    // As the agent waits: one watch, and a take after each change (and once
                    // after the watch began, for a slot freed before it).
                    let mut watch = None;
                    let slot = loop {
                        match g.take(&etcd, &me, lease.id).unwrap() {
                            Taken::Slot(s) => break s,
                            Taken::AllHeld => match &mut watch {
                                None => {
                                    watch = Some(g.watch(&etcd, Duration::from_secs(2)).unwrap())
                                }
                                Some(w) => {
                                    w.changed(Duration::from_secs(1)).unwrap();
                                }
                            },
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

/// A CA, a certificate for a member on 127.0.0.1 and a client's, as PEM files in `dir`.
fn certificates(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        SanType,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "warden tests CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issue = |name: &str, usage: &[ExtendedKeyUsagePurpose]| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = usage.to_vec();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    };
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    // The member's serves clients and, for its own JSON gateway, is one (etcd's gateway calls
    // the member with the member's certificate when clients must show one).
    issue(
        "member",
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    issue("agent", &[ExtendedKeyUsagePurpose::ClientAuth]);
}

/// The fleet's client as an env file's variables make it.
fn configured(vars: &[(&str, String)]) -> Result<Etcd, String> {
    let layers =
        warden::config::Layers::load_from(vars.iter().map(|(k, v)| (k.into(), v.into())), &[])
            .unwrap();
    let (s, invalid) = warden::config::Settings::resolve(&layers, std::path::Path::new("/"));
    assert!(invalid.is_empty(), "{invalid:?}");
    warden::fleet::connect::connect(&s.fleet.unwrap(), Duration::from_secs(2))
        .map_err(|e| e.to_string())
}

#[test]
fn over_tls_a_member_that_asks_for_a_client_certificate_takes_the_configured_one() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    certificates(d);
    let p = |f: &str| d.join(f).display().to_string();
    let m = Single::start(
        "https",
        &[
            "--cert-file",
            &p("member.pem"),
            "--key-file",
            &p("member-key.pem"),
            "--trusted-ca-file",
            &p("ca.pem"),
            "--client-cert-auth",
        ],
    );
    let url = format!("https://127.0.0.1:{}", m.port);
    let agent = configured(&[
        ("WARDEN_ETCD_ENDPOINTS", url.clone()),
        ("WARDEN_ETCD_CACERT", p("ca.pem")),
        ("WARDEN_ETCD_CERT", p("agent.pem")),
        ("WARDEN_ETCD_KEY", p("agent-key.pem")),
    ])
    .unwrap();
    m.await_ready(|| agent.grant(5).is_ok());
    let lease = agent.grant(5).unwrap();
    assert!(
        agent
            .create(b"warden/tls/slot", b"me", lease.id)
            .unwrap()
            .created
    );
    // The watch a waiter is woken by goes the same way.
    let mut w = agent.watch(b"warden/tls/", Duration::from_secs(5)).unwrap();
    agent.delete(b"warden/tls/slot").unwrap();
    assert!(w.changed(Duration::from_secs(5)).unwrap());

    // Without the client certificate the member refuses the handshake.
    let anonymous = configured(&[
        ("WARDEN_ETCD_ENDPOINTS", url.clone()),
        ("WARDEN_ETCD_CACERT", p("ca.pem")),
    ])
    .unwrap();
    assert!(matches!(anonymous.grant(5), Err(EtcdError::Unreachable(_))));
    // Without the CA (the system's bundle) the member's certificate is not trusted.
    match configured(&[("WARDEN_ETCD_ENDPOINTS", url.clone())]) {
        Ok(c) => match c.grant(5) {
            Err(EtcdError::Unreachable(why)) => {
                assert!(why.to_lowercase().contains("certificate"), "{why}")
            }
            other => panic!("{other:?}"),
        },
        // No system bundle on this machine: said at once.
        Err(why) => assert!(why.contains("ca-certificates"), "{why}"),
    }
    // A key that is not one: said with its file, before any call.
    std::fs::write(d.join("broken-key.pem"), "not a key").unwrap();
    let why = configured(&[
        ("WARDEN_ETCD_ENDPOINTS", url),
        ("WARDEN_ETCD_CACERT", p("ca.pem")),
        ("WARDEN_ETCD_CERT", p("agent.pem")),
        ("WARDEN_ETCD_KEY", p("broken-key.pem")),
    ])
    .err()
    .unwrap();
    assert!(why.contains("broken-key.pem"), "{why}");
}

#[test]
fn with_etcds_authentication_on_the_agent_calls_as_its_user() {
    let m = Single::start("http", &[]);
    let admin = Etcd::new(
        vec![HealthUrl {
            host: "127.0.0.1".into(),
            port: m.port,
            path: "/".into(),
        }],
        Duration::from_secs(2),
    );
    m.await_ready(|| admin.grant(5).is_ok());
    // etcd's own API: a root user, a role for warden's keys, a user with it, then auth on.
    let post = |path: &str, body: serde_json::Value| {
        let url = HealthUrl {
            host: "127.0.0.1".into(),
            port: m.port,
            path: path.into(),
        };
        let a = warden::platform::http::post_json(
            &url,
            body.to_string().as_bytes(),
            Duration::from_secs(5),
            1 << 16,
        )
        .unwrap();
        assert_eq!(
            a.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&a.body)
        );
    };
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    post(
        "/v3/auth/user/add",
        serde_json::json!({"name": "root", "password": "rootpw"}),
    );
    post(
        "/v3/auth/user/grant",
        serde_json::json!({"user": "root", "role": "root"}),
    );
    post("/v3/auth/role/add", serde_json::json!({"name": "fleet"}));
    post(
        "/v3/auth/role/grant",
        serde_json::json!({"name": "fleet", "perm": {"permType": "READWRITE",
            "key": b64(b"warden/"), "range_end": b64(&warden::platform::etcd::prefix_end(b"warden/"))}}),
    );
    post(
        "/v3/auth/user/add",
        serde_json::json!({"name": "warden", "password": "s3cret"}),
    );
    post(
        "/v3/auth/user/grant",
        serde_json::json!({"user": "warden", "role": "fleet"}),
    );
    post("/v3/auth/enable", serde_json::json!({}));

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("password");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let url = format!("http://127.0.0.1:{}", m.port);
    let agent = configured(&[
        ("WARDEN_ETCD_ENDPOINTS", url.clone()),
        ("WARDEN_ETCD_USER", "warden".into()),
        ("WARDEN_ETCD_PASSWORD_FILE", pw.display().to_string()),
    ])
    .unwrap();
    let lease = agent.grant(5).unwrap();
    assert!(
        agent
            .create(b"warden/auth/slot", b"me", lease.id)
            .unwrap()
            .created
    );
    assert_eq!(agent.list(b"warden/auth/").unwrap().len(), 1);
    let mut w = agent
        .watch(b"warden/auth/", Duration::from_secs(5))
        .unwrap();
    agent.delete(b"warden/auth/slot").unwrap();
    assert!(w.changed(Duration::from_secs(5)).unwrap());
    // Outside its role's keys: refused, as etcd says.
    assert!(matches!(
        agent.create(b"elsewhere", b"me", lease.id),
        Err(EtcdError::Refused { .. })
    ));
    // Anonymous: refused.
    assert!(matches!(
        admin.create(b"warden/auth/other", b"someone", 0),
        Err(EtcdError::Refused { .. })
    ));
    // A wrong password: refused, naming the user.
    std::fs::write(&pw, "wrong\n").unwrap();
    let wrong = configured(&[
        ("WARDEN_ETCD_ENDPOINTS", url),
        ("WARDEN_ETCD_USER", "warden".into()),
        ("WARDEN_ETCD_PASSWORD_FILE", pw.display().to_string()),
    ])
    .unwrap();
    match wrong.grant(5) {
        Err(EtcdError::Refused { detail, .. }) => assert!(detail.contains("warden"), "{detail}"),
        other => panic!("{other:?}"),
    }
    // An agent refused by etcd fails the restart at once, saying why, even for a request whose
    // rule goes on without etcd: etcd answered, it is not away.
    let layers = warden::config::Layers::load_from(
        [
            (
                "WARDEN_ETCD_ENDPOINTS",
                format!("http://127.0.0.1:{}", m.port),
            ),
            ("WARDEN_ETCD_USER", "warden".into()),
            ("WARDEN_ETCD_PASSWORD_FILE", pw.display().to_string()),
        ]
        .map(|(k, v)| (k.into(), v.into())),
        &[],
    )
    .unwrap();
    let (s, _) = warden::config::Settings::resolve(&layers, std::path::Path::new("/"));
    let fleet = s.fleet.unwrap();
    use warden::fleet::coordinator::{Asker, Coordinator, Gauges, Grant, Identity};
    let mut agent = Coordinator::new(
        &fleet,
        Identity::of(&fleet, "app"),
        std::sync::Arc::new(Gauges::new()),
    )
    .unwrap();
    match agent.acquire(Asker::Override, &mut || {}) {
        Grant::Unreachable { detail, .. } => assert!(detail.contains("warden"), "{detail}"),
        other => panic!("{other:?}"),
    }
}
