//! The D-Bus API under faults and hostile input, against the agent as a real `Type=notify` unit
//! with `WatchdogSec=` in the project's systemd sandbox, over the sandbox's own system bus, with
//! the example app's real Gunicorn as the app unit. Needs root.
//!
//! - unauthorized callers (a real process running as `nobody`): refused with `AccessDenied`,
//!   audited, and nothing changes (state file, kill-switch, Gunicorn's processes); the bus
//!   policy lets only the service user own `io.warden.Agent`, and the agent does not give it up
//!   to a later claimant;
//! - malformed calls (wrong signatures, missing and extra arguments, hostile reasons, unknown
//!   members, interfaces and objects, writes to read-only properties): each answered with a
//!   D-Bus error or a refusal, the agent unaffected and nothing signalled;
//! - a flood of reads from several connections, with a burst of refused calls from `nobody`
//!   and an operator's kill-switch flips in the middle, against `WatchdogSec=2`: the agent stays
//!   fed as systemd sees it (no restart, same MainPID, no watchdog timeout), answers every read,
//!   accounts for every refusal in its audit (one by one, then in summaries), keeps every flip
//!   and restart in the journal, and a restart asked afterwards is carried out and verified.
//!
//! `WARDEN_ABUSE_SECONDS` (default 10) lengthens the flood, `WARDEN_ABUSE_RATE` (default
//! 10000) caps its reads per second. Figures (calls/s, p50/p99, CPU) are printed, never
//! asserted.
//!
//! The refused callers run as a child process of this test binary under another uid: the
//! ignored test `helper_client_as_another_user` is that client, and does nothing unless
//! spawned so.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// The spawned client's instructions (JSON), when this binary runs as the helper.
const CLIENT_ENV: &str = "WARDEN_ABUSE_CLIENT";
/// The helper's result line on stdout.
const RESULT_PREFIX: &str = "abuse-client-result: ";
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";
const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
const PROPS: &str = "org.freedesktop.DBus.Properties";

/// The agent and the app as units of a fresh sandbox, as `tests/control_live.rs` sets them up.
struct Agent {
    sb: Sandbox,
    f: Fixture,
    rt: PathBuf,
}

impl Agent {
    /// `service`: more `[Service]` lines for the agent's unit.
    fn boot(name: &str, watchdog_sec: u32, env: &[(&str, &str)], service: &str) -> Agent {
        let (sb, f, rt) = boot_live(name, watchdog_sec, env, service);
        // Gunicorn says READY=1 before it forks its workers, and a fork has no event to
        // await: the app's processes are polled, bounded by a deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sb.unit_host_pids(APP_UNIT).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            sb.unit_host_pids(APP_UNIT).len(),
            3,
            "master and two workers"
        );
        Agent { sb, f, rt }
    }

    /// `warden ARGS` as root on the host, against the sandbox's bus, with the contract.
    fn warden(&self, args: &[&str]) -> Output {
        let mut c = Command::new("timeout");
        c.arg("120")
            .arg(warden())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.sb.bus)
            .args(args)
            .args(["--env-file", self.f.env_file.to_str().unwrap()]);
        c.output().unwrap()
    }

    fn host(&self, inside: &str) -> PathBuf {
        self.sb.run_path(&self.rt.join(inside))
    }

    /// What a change would touch: the state file, the published kill-switch, the app's
    /// processes (a reload replaces the workers).
    fn footprint(&self) -> Footprint {
        Footprint {
            state: std::fs::read(&self.f.env["WATCHDOG_STATE_FILE"]).ok(),
            kill_switch: std::fs::read(self.host("kill_switch.json")).ok(),
            app_pids: self.sb.unit_host_pids(APP_UNIT),
        }
    }

    /// systemd's view of the agent: it must still be the same, fed, process.
    fn assert_unharmed(&self, main_pid: &str, c: &Client) {
        let h = self.sb.watchdog_health(WATCHDOG_UNIT);
        assert_eq!(h.active_state, "active", "{h:?}");
        assert_eq!(h.n_restarts, "0", "{h:?}");
        assert_eq!(h.main_pid, main_pid, "the agent was replaced: {h:?}");
        assert_eq!(h.watchdog_timeouts, 0, "{h:?}");
        let doc = c.status().expect("Status() answers");
        let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
        assert_eq!(doc["source"], "agent");
    }
}

#[derive(Debug, PartialEq)]
struct Footprint {
    state: Option<Vec<u8>>,
    kill_switch: Option<Vec<u8>>,
    app_pids: Vec<u32>,
}

/// A D-Bus error's name, or `local: …` for a failure on this side (timeout, connection).
fn err_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(n, _, _) => n.to_string(),
        zbus::Error::FDO(f) => zbus::DBusError::name(f.as_ref()).to_string(),
        other => format!("local: {other}"),
    }
}

/// A connection to the sandbox's bus with its own runtime, for blocking calls from a test.
struct Client {
    rt: tokio::runtime::Runtime,
    conn: zbus::Connection,
}

impl Client {
    fn new(bus: &str) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let conn = rt
            .block_on(connect(bus))
            .expect("connect to the sandbox's bus");
        Client { rt, conn }
    }

    fn call<B>(
        &self,
        iface: Option<&str>,
        member: &str,
        body: &B,
    ) -> Result<zbus::message::Message, String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.rt
            .block_on(self.conn.call_method(
                Some(agent_bus_name().as_str()),
                warden::control::dbus::OBJECT_PATH,
                iface,
                member,
                body,
            ))
            .map_err(|e| err_name(&e))
    }

    fn agent<B>(&self, member: &str, body: &B) -> Result<zbus::message::Message, String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.call(Some(warden::control::dbus::INTERFACE), member, body)
    }

    fn status(&self) -> Result<String, String> {
        let m = self.agent("Status", &())?;
        m.body().deserialize::<String>().map_err(|e| e.to_string())
    }

    fn prop(&self, name: &str) -> Result<zbus::OwnedVariant, String> {
        let m = self.call(
            Some(PROPS),
            "Get",
            &(warden::control::dbus::INTERFACE, name),
        )?;
        m.body()
            .deserialize::<zbus::OwnedVariant>()
            .map_err(|e| e.to_string())
    }

    fn prop_bool(&self, name: &str) -> bool {
        bool::try_from(self.prop(name).unwrap()).unwrap()
    }

    /// The bus daemon's own methods.
    fn bus<B, R>(&self, member: &str, body: &B) -> Result<R, String>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        let m = self
            .rt
            .block_on(self.conn.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                member,
                body,
            ))
            .map_err(|e| err_name(&e))?;
        m.body().deserialize::<R>().map_err(|e| e.to_string())
    }
}

async fn connect(bus: &str) -> zbus::Result<zbus::Connection> {
    zbus::connection::Builder::address(bus)
        // A call the agent never answers is a failure to count, not a hung test.
        .method_timeout(Duration::from_secs(30))
        .build()
        .await
}

fn uid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}"))
        .uid
        .as_raw()
}

fn gid_of(user: &str) -> u32 {
    nix::unistd::User::from_name(user)
        .unwrap()
        .unwrap_or_else(|| panic!("no user {user}"))
        .gid
        .as_raw()
}

/// Runs this test binary's client helper as `user` (its uid, its primary group, no
/// supplementary groups: as a login of that user without extra groups would be) with `spec`,
/// and returns its result.
fn client_as(user: &str, spec: serde_json::Value) -> serde_json::Value {
    let child = spawn_client_as(user, &spec);
    finish_client(child)
}

fn spawn_client_as(user: &str, spec: &serde_json::Value) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_client_as_another_user",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env(CLIENT_ENV, spec.to_string())
        // std drops the supplementary groups (setgroups) when it sets the uid as root.
        .uid(uid_of(user))
        .gid(gid_of(user))
        .current_dir("/")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the client helper")
}

fn finish_client(child: std::process::Child) -> serde_json::Value {
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        // libtest prints the test's name on the same line.
        .find_map(|l| l.split_once(RESULT_PREFIX).map(|(_, r)| r))
        .unwrap_or_else(|| panic!("the client helper reported nothing: {}", text(&o)));
    serde_json::from_str(line).unwrap()
}

/// The client helper: runs only when spawned by [`client_as`] (as another user), and then
/// performs the calls its JSON instructions name. Instructions: `{"bus": ADDRESS, "calls":
/// [OP…], "burst": {"seconds": S, "inflight": N, "reason_bytes": B}}`; each OP is one of
/// `status`, `get_policy_state`, `restart`, `restart_override`, `restart_huge`, `kill_switch_on`,
/// `kill_switch_off`, `set_kill_switch_property`, `request_name`, `release_name`. Prints one
/// line: `abuse-client-result: {"uid": U, "calls": [RESULT…], "burst": {…}}`, each RESULT
/// `ok` (with the bus's reply code for `request_name`) or the D-Bus error's name.
#[test]
#[ignore = "a helper: the abuse tests spawn it as another user"]
fn helper_client_as_another_user() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let spec: serde_json::Value = serde_json::from_str(&spec).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus = spec["bus"].as_str().unwrap().to_string();
    let result = rt.block_on(async move {
        let conn = connect(&bus).await.unwrap();
        let mut results = vec![];
        for op in spec["calls"].as_array().into_iter().flatten() {
            results.push(op_call(&conn, op.as_str().unwrap(), 0).await);
        }
        let burst = match spec.get("burst") {
            Some(b) if b.is_object() => burst(&bus, b).await,
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "uid": nix::unistd::geteuid().as_raw(),
            "calls": results,
            "burst": burst,
        })
    });
    println!("{RESULT_PREFIX}{result}");
}

/// One named call; `reason_bytes` sizes `restart_huge`'s reason.
async fn op_call(conn: &zbus::Connection, op: &str, reason_bytes: usize) -> String {
    let agent = |member: &'static str| (warden::control::dbus::INTERFACE, member);
    let dbus = "org.freedesktop.DBus";
    let r = match op {
        "status" => call(conn, agent("Status"), &()).await,
        "get_policy_state" => {
            call(
                conn,
                (PROPS, "Get"),
                &(warden::control::dbus::INTERFACE, "PolicyState"),
            )
            .await
        }
        "restart" => call(conn, agent("RequestRestart"), &("curious", false, false)).await,
        "restart_override" => call(conn, agent("RequestRestart"), &("I said so", true, true)).await,
        "restart_huge" => {
            let reason = "x".repeat(reason_bytes.max(1 << 20));
            call(conn, agent("RequestRestart"), &(reason, false, false)).await
        }
        "kill_switch_on" => call(conn, agent("SetKillSwitch"), &(true, "mischief")).await,
        "kill_switch_off" => call(conn, agent("SetKillSwitch"), &(false, "mischief")).await,
        "reset_recovery" => call(conn, agent("ResetRecovery"), &("mischief", true)).await,
        "set_kill_switch_property" => {
            call(
                conn,
                (PROPS, "Set"),
                &(
                    warden::control::dbus::INTERFACE,
                    "KillSwitchEngaged",
                    zbus::Variant::from(true),
                ),
            )
            .await
        }
        "request_name" | "release_name" => {
            let r = if op == "request_name" {
                conn.call_method(
                    Some(dbus),
                    "/org/freedesktop/DBus",
                    Some(dbus),
                    "RequestName",
                    // DO_NOT_QUEUE | REPLACE_EXISTING: take it now, or not at all.
                    &(agent_bus_name(), 6u32),
                )
                .await
            } else {
                conn.call_method(
                    Some(dbus),
                    "/org/freedesktop/DBus",
                    Some(dbus),
                    "ReleaseName",
                    &(agent_bus_name(),),
                )
                .await
            };
            return match r {
                Ok(m) => format!("ok {}", m.body().deserialize::<u32>().unwrap_or(0)),
                Err(e) => err_name(&e),
            };
        }
        other => panic!("unknown op {other}"),
    };
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}

async fn call<B>(
    conn: &zbus::Connection,
    (iface, member): (&str, &str),
    body: &B,
) -> Result<(), String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.call_method(
        Some(agent_bus_name().as_str()),
        warden::control::dbus::OBJECT_PATH,
        Some(iface),
        member,
        body,
    )
    .await
    .map(|_| ())
    .map_err(|e| err_name(&e))
}

/// Refused calls as fast as they are answered, `inflight` at a time on one connection, for
/// `seconds`: RequestRestart and SetKillSwitch alternately, with reasons of `reason_bytes`.
async fn burst(bus: &str, spec: &serde_json::Value) -> serde_json::Value {
    let seconds = spec["seconds"].as_f64().unwrap();
    let inflight = spec["inflight"].as_u64().unwrap() as usize;
    let reason = "r".repeat(spec["reason_bytes"].as_u64().unwrap_or(16) as usize);
    let conn = connect(bus).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..inflight {
        let (conn, reason) = (conn.clone(), reason.clone());
        set.spawn(async move {
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            let mut lat = vec![];
            let mut n = i;
            while tokio::time::Instant::now() < deadline {
                let t = Instant::now();
                let r = if n % 2 == 0 {
                    call(
                        &conn,
                        (warden::control::dbus::INTERFACE, "RequestRestart"),
                        &(reason.as_str(), false, false),
                    )
                    .await
                } else {
                    call(
                        &conn,
                        (warden::control::dbus::INTERFACE, "SetKillSwitch"),
                        &(true, reason.as_str()),
                    )
                    .await
                };
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                *by.entry(r.err().unwrap_or_else(|| "ok".into()))
                    .or_default() += 1;
                n += 1;
            }
            (by, lat)
        });
    }
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    let mut lat = vec![];
    while let Some(r) = set.join_next().await {
        let (b, l) = r.unwrap();
        for (k, v) in b {
            *by.entry(k).or_default() += v;
        }
        lat.extend(l);
    }
    let (p50, p99) = percentiles(&mut lat);
    serde_json::json!({"by_result": by, "calls": lat.len(), "p50_ms": p50, "p99_ms": p99})
}

fn percentiles(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

#[test]
fn unauthorized_callers_change_nothing_and_cannot_take_the_name() {
    let a = Agent::boot("abuse-authz", 5, &[], "");
    let root = Client::new(&a.sb.bus);
    let main_pid = a.sb.prop(WATCHDOG_UNIT, "MainPID");
    let before = a.footprint();
    assert!(before.kill_switch.is_some(), "the kill-switch is published");

    // nobody reads, and every change it asks for is refused, whatever it says.
    let calls = [
        "status",
        "get_policy_state",
        "restart",
        "restart_override",
        "restart_huge",
        "kill_switch_on",
        "kill_switch_off",
        "reset_recovery",
        "set_kill_switch_property",
    ];
    let r = client_as(
        "nobody",
        serde_json::json!({"bus": a.sb.bus, "calls": calls}),
    );
    assert_eq!(r["uid"], uid_of("nobody"), "{r}");
    let got: Vec<&str> = r["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&got[..2], ["ok", "ok"], "reads are open: {r}");
    assert_eq!(
        &got[2..8],
        [ACCESS_DENIED; 6],
        "changes are refused (the 1 MiB reason too, before its length is looked at): {r}"
    );
    // A property without a setter: zbus answers UnknownProperty (the spec's PropertyReadOnly
    // would do as well); either way it is refused.
    assert!(
        [
            "org.freedesktop.DBus.Error.UnknownProperty",
            "org.freedesktop.DBus.Error.PropertyReadOnly"
        ]
        .contains(&got[8]),
        "{r}"
    );

    // Nothing changed: no reload, no record, the switch as it was.
    assert_eq!(a.footprint(), before);
    assert!(!root.prop_bool("KillSwitchEngaged"));
    let doc: serde_json::Value = serde_json::from_str(&root.status().unwrap()).unwrap();
    assert_eq!(doc["restart_history"].as_array().map(Vec::len), Some(0));

    // Audited, with who and what.
    let audit = a.sb.journal_query(&[
        "-u",
        WATCHDOG_UNIT,
        &format!("MESSAGE_ID={}", warden::systemd::journal::ACCESS_DENIED),
    ]);
    for want in [
        "USER=nobody",
        "METHOD=RequestRestart",
        "METHOD=SetKillSwitch",
        "METHOD=ResetRecovery",
    ] {
        assert!(audit.contains(want), "{want} not in the audit: {audit}");
    }

    // The name: nobody, and the service user's processes other than the agent (which gets
    // the group `warden` from its unit), are refused by the bus policy. Root, whom the policy
    // lets own it (an agent run without User=), asks to take it over (REPLACE_EXISTING) and is
    // told it exists: the agent does not let its name go (zbus's default flags would have).
    // The owner is still the agent.
    for user in ["nobody", SERVICE_USER] {
        let r = client_as(
            user,
            serde_json::json!({"bus": a.sb.bus, "calls": ["request_name"]}),
        );
        assert_eq!(r["calls"][0], ACCESS_DENIED, "{user}: {r}");
    }
    let r = root.bus::<_, u32>("RequestName", &(agent_bus_name(), 6u32));
    assert_eq!(r, Ok(3), "EXISTS: allowed, but taken");
    let owner: String = root.bus("GetNameOwner", &(agent_bus_name(),)).unwrap();
    let pid: u32 = root
        .bus("GetConnectionUnixProcessID", &(owner.as_str(),))
        .unwrap();
    assert_eq!(pid.to_string(), main_pid, "the agent still owns the name");
    a.assert_unharmed(&main_pid, &root);

    // With the agent stopped the name is free, and still not nobody's to take.
    let o = a.sb.systemctl(&["stop", WATCHDOG_UNIT]);
    assert!(o.status.success(), "{}", text(&o));
    let r = client_as(
        "nobody",
        serde_json::json!({"bus": a.sb.bus, "calls": ["request_name", "restart"]}),
    );
    assert_eq!(r["calls"][0], ACCESS_DENIED, "{r}");
    assert_eq!(
        r["calls"][1], "org.freedesktop.DBus.Error.ServiceUnknown",
        "no one answers in the agent's name: {r}"
    );
    let r = client_as(
        SERVICE_USER,
        serde_json::json!({"bus": a.sb.bus, "calls": ["request_name"]}),
    );
    assert_eq!(r["calls"][0], ACCESS_DENIED, "not in the group warden: {r}");
}

#[test]
fn malformed_calls_are_answered_with_errors_and_change_nothing() {
    let a = Agent::boot("abuse-malformed", 5, &[], "");
    let c = Client::new(&a.sb.bus);
    let main_pid = a.sb.prop(WATCHDOG_UNIT, "MainPID");
    let before = a.footprint();
    let agent = Some(warden::control::dbus::INTERFACE);
    let e = |r: Result<zbus::message::Message, String>| r.err().unwrap_or_else(|| "ok".into());

    // (what, the error it must get)
    let mut cases: Vec<(&str, String, &str)> = vec![];
    let mut case =
        |what: &'static str, got: String, want: &'static str| cases.push((what, got, want));

    // Wrong signatures: each method's arguments are checked before anything else.
    case(
        "RequestRestart(i)",
        e(c.agent("RequestRestart", &(42i32,))),
        INVALID_ARGS,
    );
    case(
        "RequestRestart()",
        e(c.agent("RequestRestart", &())),
        INVALID_ARGS,
    );
    case(
        "RequestRestart(s)",
        e(c.agent("RequestRestart", &("x",))),
        INVALID_ARGS,
    );
    case(
        "RequestRestart(sbbs): an extra argument",
        e(c.agent("RequestRestart", &("x", false, false, "extra"))),
        INVALID_ARGS,
    );
    case(
        "RequestRestart(bbs): reordered",
        e(c.agent("RequestRestart", &(false, false, "x"))),
        INVALID_ARGS,
    );
    case(
        "RequestRestart(sii): ints for booleans",
        e(c.agent("RequestRestart", &("x", 1i32, 1i32))),
        INVALID_ARGS,
    );
    case(
        "RequestRestart(v)",
        e(c.agent("RequestRestart", &(zbus::Variant::from("x"),))),
        INVALID_ARGS,
    );
    case(
        "SetKillSwitch(sb): swapped",
        e(c.agent("SetKillSwitch", &("x", true))),
        INVALID_ARGS,
    );
    case(
        "SetKillSwitch()",
        e(c.agent("SetKillSwitch", &())),
        INVALID_ARGS,
    );
    // zbus does not look at the body of a method without arguments: answered as if empty.
    case(
        "Status(s): an argument, ignored",
        e(c.agent("Status", &("x",))),
        "ok",
    );
    // A call without an interface field matches none of the policy's openings.
    case(
        "RequestRestart without an interface",
        e(c.call(None, "RequestRestart", &("x", true, true))),
        ACCESS_DENIED,
    );
    case(
        "Status without an interface",
        e(c.call(None, "Status", &())),
        ACCESS_DENIED,
    );
    {
        // D-Bus strings hold no NUL: the bus daemon drops a connection that sends one, before
        // the agent sees anything.
        let c2 = Client::new(&a.sb.bus);
        case(
            "a reason with a NUL: the bus disconnects the sender",
            e(c2.agent("RequestRestart", &("a\0b", true, true))),
            "local: ",
        );
    }

    // Hostile reasons: refused as arguments, nothing asked of the executor.
    for (what, reason) in [
        (
            "a reason with a newline",
            "deploy\nFAKE: restart executed".to_string(),
        ),
        ("a reason with a carriage return", "a\rb".to_string()),
        (
            "a reason with an escape sequence",
            "\x1b[2Jcleared".to_string(),
        ),
        ("a reason with a bell", "\x07".to_string()),
        ("a reason with DEL", "a\x7fb".to_string()),
        ("a reason with NEL (U+0085)", "a\u{85}b".to_string()),
        (
            "a reason with LINE SEPARATOR (U+2028)",
            "deploy\u{2028}FAKE: restart executed".to_string(),
        ),
        (
            "a reason with PARAGRAPH SEPARATOR (U+2029)",
            "a\u{2029}b".to_string(),
        ),
        (
            "a reason with RIGHT-TO-LEFT OVERRIDE (U+202E)",
            "a\u{202e}dekcolb".to_string(),
        ),
        (
            "a reason with a RIGHT-TO-LEFT ISOLATE (U+2067)",
            "a\u{2067}b".to_string(),
        ),
        ("a 1 MiB reason", "x".repeat(1 << 20)),
        ("a reason of 4097 bytes", "x".repeat(4097)),
    ] {
        let what: &'static str = Box::leak(format!("RequestRestart: {what}").into_boxed_str());
        case(
            what,
            e(c.agent("RequestRestart", &(reason.as_str(), true, true))),
            INVALID_ARGS,
        );
    }
    case(
        "SetKillSwitch: a reason with a newline",
        e(c.agent("SetKillSwitch", &(true, "a\nb"))),
        INVALID_ARGS,
    );
    case(
        "SetKillSwitch: a 1 MiB reason",
        e(c.agent("SetKillSwitch", &(true, "x".repeat(1 << 20)))),
        INVALID_ARGS,
    );
    case(
        "SetKillSwitch(true, \"\"): engaging needs a reason",
        e(c.agent("SetKillSwitch", &(true, ""))),
        INVALID_ARGS,
    );

    // Unknown members and interfaces.
    case(
        "an unknown method",
        e(c.agent("Explode", &())),
        "org.freedesktop.DBus.Error.UnknownMethod",
    );
    case(
        "an unknown method with arguments",
        e(c.agent("RequestRestartNow", &("x", true))),
        "org.freedesktop.DBus.Error.UnknownMethod",
    );
    case(
        "an interface the bus policy does not open (io.warden.Agent2)",
        e(c.call(Some("io.warden.Agent2"), "Status", &())),
        ACCESS_DENIED,
    );
    case(
        "an object path the agent does not serve",
        e(c.rt
            .block_on(c.conn.call_method(
                Some(agent_bus_name().as_str()),
                "/io/warden/Agent/nope",
                agent,
                "Status",
                &(),
            ))
            .map_err(|e| err_name(&e))),
        "org.freedesktop.DBus.Error.UnknownObject",
    );

    // Properties: read-only, typed, and only those that exist.
    let read_only = e(c.call(
        Some(PROPS),
        "Set",
        &(
            warden::control::dbus::INTERFACE,
            "KillSwitchEngaged",
            zbus::Variant::from(true),
        ),
    ));
    let read_only_name: &'static str = if read_only.ends_with("PropertyReadOnly") {
        "org.freedesktop.DBus.Error.PropertyReadOnly"
    } else {
        // zbus answers a property without a setter as unknown to Set.
        "org.freedesktop.DBus.Error.UnknownProperty"
    };
    case("Set(KillSwitchEngaged, true)", read_only, read_only_name);
    case(
        "Set(PolicyState, \"allowed\")",
        e(c.call(
            Some(PROPS),
            "Set",
            &(
                warden::control::dbus::INTERFACE,
                "PolicyState",
                zbus::Variant::from("allowed"),
            ),
        )),
        read_only_name,
    );
    case(
        "Set(CooldownRemaining, \"zero\"): wrong type",
        e(c.call(
            Some(PROPS),
            "Set",
            &(
                warden::control::dbus::INTERFACE,
                "CooldownRemaining",
                zbus::Variant::from("zero"),
            ),
        )),
        read_only_name,
    );
    case(
        "Get(NoSuchProperty)",
        e(c.call(
            Some(PROPS),
            "Get",
            &(warden::control::dbus::INTERFACE, "NoSuchProperty"),
        )),
        "org.freedesktop.DBus.Error.UnknownProperty",
    );
    case(
        "Get on an interface the object does not have",
        e(c.call(Some(PROPS), "Get", &("io.warden.Agent2", "PolicyState"))),
        "org.freedesktop.DBus.Error.UnknownInterface",
    );
    case(
        "Get(i): wrong signature",
        e(c.call(Some(PROPS), "Get", &(7i32,))),
        INVALID_ARGS,
    );
    case(
        "GetAll()",
        e(c.call(Some(PROPS), "GetAll", &())),
        INVALID_ARGS,
    );

    let mut wrong = vec![];
    for (what, got, want) in &cases {
        println!("{what:<64} -> {got}");
        if !got.starts_with(want) {
            wrong.push(format!("{what}: got {got}, want {want}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // Not errors, but refusals: an override needs a reason (blank is none), whatever the
    // acknowledgement; it is decided `rejected` and nothing is signalled. The length bound is
    // inclusive: 4096 bytes (blank) pass it, and are refused as no reason.
    for (reason, ack) in [
        (String::new(), false),
        (String::new(), true),
        ("   ".to_string(), true),
        (" ".repeat(4096), true),
    ] {
        let m = c
            .agent("RequestRestart", &(reason.as_str(), true, ack))
            .unwrap_or_else(|e| panic!("override reason={reason:?} ack={ack}: {e}"));
        let (decision, why, _, _): (String, String, bool, String) = m.body().deserialize().unwrap();
        assert_eq!(decision, "rejected", "reason={reason:?} ack={ack}: {why}");
        assert_eq!(why, "override_reason_required");
    }

    // The agent: unaffected, nothing reloaded, nothing executed.
    a.assert_unharmed(&main_pid, &c);
    let after = a.footprint();
    assert_eq!(after.app_pids, before.app_pids, "nothing was signalled");
    assert_eq!(after.kill_switch, before.kill_switch);
    let doc: serde_json::Value = serde_json::from_str(&c.status().unwrap()).unwrap();
    let history = doc["restart_history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "the four refusals: {doc:#}");
    assert!(
        history.iter().all(|h| h["decision"] == "rejected"),
        "{doc:#}"
    );
    assert_eq!(doc["kill_switch"]["engaged"], false);
}

/// Reads as fast as the bus takes them (capped at `WARDEN_ABUSE_RATE`/s) from several
/// connections, each with several calls in flight, until `deadline`.
fn read_flood(bus: &str, deadline: Instant, conns: usize, inflight: usize, rate: f64) -> Flood {
    let period = Duration::from_secs_f64((conns * inflight) as f64 / rate);
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            let bus = bus.to_string();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let conn = connect(&bus).await.unwrap();
                    let deadline = tokio::time::Instant::from_std(deadline);
                    let mut set = tokio::task::JoinSet::new();
                    for i in 0..inflight {
                        let conn = conn.clone();
                        set.spawn(async move {
                            let mut f = Flood::default();
                            let mut next = tokio::time::Instant::now();
                            let mut n = t + i;
                            while tokio::time::Instant::now() < deadline {
                                let t0 = Instant::now();
                                let r = match n % 4 {
                                    0 => {
                                        call(
                                            &conn,
                                            (warden::control::dbus::INTERFACE, "Status"),
                                            &(),
                                        )
                                        .await
                                    }
                                    1 => {
                                        call(
                                            &conn,
                                            (PROPS, "Get"),
                                            &(warden::control::dbus::INTERFACE, "PolicyState"),
                                        )
                                        .await
                                    }
                                    2 => {
                                        call(
                                            &conn,
                                            (PROPS, "Get"),
                                            &(
                                                warden::control::dbus::INTERFACE,
                                                "CooldownRemaining",
                                            ),
                                        )
                                        .await
                                    }
                                    _ => {
                                        call(
                                            &conn,
                                            (PROPS, "GetAll"),
                                            &(warden::control::dbus::INTERFACE,),
                                        )
                                        .await
                                    }
                                };
                                f.lat.push(t0.elapsed().as_secs_f64() * 1e3);
                                match r {
                                    Ok(()) => f.answered += 1,
                                    Err(e) => *f.errors.entry(e).or_default() += 1,
                                }
                                n += 1;
                                next += period;
                                let now = tokio::time::Instant::now();
                                if next > now {
                                    tokio::time::sleep_until(next).await;
                                } else {
                                    next = now;
                                }
                            }
                            f
                        });
                    }
                    let mut all = Flood::default();
                    while let Some(f) = set.join_next().await {
                        all.add(f.unwrap());
                    }
                    all
                })
            })
        })
        .collect();
    let mut all = Flood::default();
    for t in threads {
        all.add(t.join().unwrap());
    }
    all
}

#[derive(Default)]
struct Flood {
    answered: u64,
    errors: BTreeMap<String, u64>,
    lat: Vec<f64>,
}

impl Flood {
    fn add(&mut self, o: Flood) {
        self.answered += o.answered;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.lat.extend(o.lat);
    }
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn a_flood_of_calls_does_not_starve_the_watchdog() {
    let seconds = env_num("WARDEN_ABUSE_SECONDS", 10.0);
    let rate = env_num("WARDEN_ABUSE_RATE", 10_000.0);
    // Restarts are let through (a short cooldown, no guarded mode), so one can be asked after
    // the flood; the one before it keeps the policy's window moving, so the agent republishes
    // its properties every second throughout.
    //
    // journald drops a unit's messages beyond its rate limit (per unit: 10,000 per 30 s by
    // default, raised with the free space, to some 47,500 here): a refused caller that could
    // make the agent log at will could have the agent's other audit events dropped. This flood
    // reaches some hundreds of refused calls a second on a debug build of a busy 2-core VM,
    // where a release build on a server reaches thousands: the agent's budget is scaled down
    // to match (100, which journald raises the same way, to some 475 per 30 s).
    let a = Agent::boot(
        "abuse-flood",
        2,
        &[
            ("WORKER_RESTART_COOLDOWN", "1"),
            ("WORKER_GUARDED_MODE_ENABLED", "false"),
        ],
        "LogRateLimitIntervalSec=30s\nLogRateLimitBurst=100\n",
    );
    let root = Client::new(&a.sb.bus);
    let o = a.warden(&["restart", "--reason", "before the flood"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let main_pid = a.sb.prop(WATCHDOG_UNIT, "MainPID");
    let agent_pid = a.sb.main_host_pid(WATCHDOG_UNIT);
    let rss0 = proc_status_kib(agent_pid, "VmRSS");
    let bus_pid = a.sb.main_host_pid("dbus.service");
    let self_pid = std::process::id() as i32;
    let (cpu0, bus_cpu0, self_cpu0) = (
        proc_cpu_ticks(agent_pid),
        proc_cpu_ticks(bus_pid),
        proc_cpu_ticks(self_pid),
    );

    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(seconds);
    // nobody: refused calls, 8 in flight, for the whole flood.
    let nobody = spawn_client_as(
        "nobody",
        &serde_json::json!({
            "bus": a.sb.bus,
            "burst": {"seconds": seconds, "inflight": 8, "reason_bytes": 256},
        }),
    );
    let bus = a.sb.bus.clone();
    let readers = std::thread::spawn(move || read_flood(&bus, deadline, 4, 8, rate));
    // Meanwhile an operator flips the kill-switch: each flip is a change the agent publishes
    // and a reload it verifies, with the bus flooded.
    let mut flipped = vec![];
    while Instant::now() < deadline {
        let n = flipped.len();
        let verb = if n % 2 == 0 { "on" } else { "off" };
        let o = a.warden(&["kill-switch", verb, "--reason", &format!("flood flip {n}")]);
        flipped.push(o);
        std::thread::sleep(Duration::from_millis(500));
    }
    let flips = flipped.len();
    let mut reads = readers.join().unwrap();
    let refused = finish_client(nobody);
    let elapsed = t0.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(&mut reads.lat);
    let refused_calls = refused["burst"]["calls"].as_u64().unwrap();
    println!(
        "flood: {:.1} s, reads {} answered ({:.0}/s), errors {:?}, p50 {p50:.2} ms, p99 {p99:.2} ms",
        elapsed,
        reads.answered,
        reads.answered as f64 / elapsed,
        reads.errors,
    );
    println!(
        "flood: nobody's refused calls {refused_calls} ({:.0}/s) {}, p50 {:.2} ms, p99 {:.2} ms; \
         operator flips {flips}",
        refused_calls as f64 / elapsed,
        refused["burst"]["by_result"],
        refused["burst"]["p50_ms"].as_f64().unwrap_or(0.0),
        refused["burst"]["p99_ms"].as_f64().unwrap_or(0.0),
    );
    let pct = |now: u64, then: u64| now.saturating_sub(then) as f64 / clk_tck() / elapsed * 100.0;
    println!(
        "flood: CPU (% of one core): agent {:.0}, bus daemon {:.0}, this test's clients {:.0}; \
         agent RSS {} -> {} KiB",
        pct(proc_cpu_ticks(agent_pid), cpu0),
        pct(proc_cpu_ticks(bus_pid), bus_cpu0),
        pct(proc_cpu_ticks(self_pid), self_cpu0),
        rss0,
        proc_status_kib(agent_pid, "VmRSS"),
    );

    // First what systemd saw: the watchdog stayed fed, the agent is the same process.
    a.assert_unharmed(&main_pid, &root);

    // Every read answered; every refused call refused, and only that; every flip done.
    assert!(reads.answered > 0);
    assert!(reads.errors.is_empty(), "reads failed: {:?}", reads.errors);
    let by = refused["burst"]["by_result"].as_object().unwrap();
    assert!(refused_calls > 0);
    assert_eq!(
        by.keys().collect::<Vec<_>>(),
        [ACCESS_DENIED],
        "nobody got something else than AccessDenied: {by:?}"
    );
    for (i, o) in flipped.iter().enumerate() {
        assert_eq!(o.status.code(), Some(0), "flip {i}: {}", text(o));
    }

    // Every refusal is accounted for in the audit trail: logged one by one, or counted in a
    // summary when its window is over.
    let (one_by_one, summed) = await_refusals_audited(&a.sb, "nobody", refused_calls);
    println!("flood: nobody's refusals audited: {one_by_one} one by one, {summed} in summaries");

    // Every flip the operator made is in the audit trail, the flood notwithstanding.
    a.sb.run(&["journalctl", "--sync"]);
    let audit = a.sb.journal_query(&[
        "-u",
        WATCHDOG_UNIT,
        &format!("MESSAGE_ID={}", warden::systemd::journal::KILL_SWITCH),
    ]);
    for i in 0..flips {
        assert!(
            audit.contains(&format!("flood flip {i}\n")),
            "flip {i} is missing from the journal"
        );
    }

    // And the agent still does its job: a restart asked now is executed, verified and audited.
    let o = a.warden(&["restart", "--reason", "after the flood"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("verified"), "{}", text(&o));
    a.assert_unharmed(&main_pid, &root);
    let executed = a.sb.journal_query(&[
        "-u",
        WATCHDOG_UNIT,
        &format!("MESSAGE_ID={}", warden::systemd::journal::RESTART_EXECUTED),
    ]);
    assert_eq!(
        executed
            .matches("MESSAGE=restart executed and verified")
            .count(),
        2 + flips,
        "every executed restart audited (before, {flips} flips, after): {executed}"
    );
}

/// Follows the agent's audit events of refused calls until `user`'s add up to `want`: each
/// event one refusal, or a summary's `SUPPRESSED=` count. Returns (one by one, in summaries).
fn await_refusals_audited(sb: &Sandbox, user: &str, want: u64) -> (u64, u64) {
    use std::io::BufRead;
    let mut child = Command::new("bash")
        .arg(repo().join("tests/harness/sysbox.sh"))
        .args([
            "journal",
            "--follow",
            "--lines=all",
            "--output=json",
            "-u",
            WATCHDOG_UNIT,
        ])
        .arg(format!(
            "MESSAGE_ID={}",
            warden::systemd::journal::ACCESS_DENIED
        ))
        .env("SYSBOX_DIR", &sb.dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (mut one, mut summed) = (0u64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(60);
    while one + summed < want {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let e: serde_json::Value = serde_json::from_str(&line).unwrap();
        if e["SUPPRESSED"].is_string() {
            // "… (at most N every S s): nobody 1523, uid:4242 7"
            let message = e["MESSAGE"].as_str().unwrap_or_default();
            let by = message
                .rsplit_once(": ")
                .map(|(_, b)| b)
                .unwrap_or_default();
            for part in by.split(", ") {
                if let Some(n) = part.strip_prefix(&format!("{user} ")) {
                    summed += n.parse::<u64>().unwrap();
                }
            }
        } else if e["USER"] == user {
            one += 1;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        one + summed,
        want,
        "{user}'s refusals in the audit: {one} one by one, {summed} in summaries"
    );
    (one, summed)
}

/// A `/proc/PID/status` field in KiB.
fn proc_status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// utime + stime of a process, all threads, in clock ticks.
fn proc_cpu_ticks(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64
}
