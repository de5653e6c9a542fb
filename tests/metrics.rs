//! The metrics exposition as its consumers see it: `promtool check metrics` accepts a populated
//! registry, and the Unix-socket endpoint answers raw HTTP, refuses malformed requests, and
//! serves one client while another stalls.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use warden::config::PolicyConfig;
use warden::control::metrics::{Metrics, serve_unix};
use warden::ledger::model::{Decision, RequestSource};
use warden::ledger::policy::{self, Executed};

fn populated() -> Metrics {
    let m = Metrics::new(env!("CARGO_PKG_VERSION"));
    for (d, s) in [
        (Decision::Executed, RequestSource::Auto),
        (Decision::Executed, RequestSource::Manual),
        (Decision::Blocked, RequestSource::Auto),
        (Decision::Failed, RequestSource::Manual),
        (Decision::Rejected, RequestSource::Manual),
        (Decision::Executed, RequestSource::KillSwitch),
    ] {
        m.record_restart(d, s);
    }
    let now = 1_700_000_000_000;
    let history = [Executed { at_ms: now - 5_000 }];
    m.set_policy(&policy::evaluate(&history, now, &PolicyConfig::defaults()));
    m.set_kill_switch(true);
    m.set_contract_valid(true);
    m.watchdog_ping();
    for ms in [0.08, 0.4, 3.0, 1200.0] {
        m.observe_flag_to_signal(Duration::from_secs_f64(ms / 1e3));
    }
    for ms in [45.0, 180.0, 75_000.0] {
        m.observe_reload(Duration::from_secs_f64(ms / 1e3));
    }
    m
}

/// Where tests/harness/deps.sh puts promtool, taken out of Debian's prometheus package.
const PROMTOOL_CACHE: &str = "/var/cache/warden-ci/bin/promtool";

/// `PROMTOOL`, else the one deps.sh fetched, else the first on `PATH`.
fn promtool() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROMTOOL").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let cached = std::env::var_os("WARDEN_CI_CACHE")
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(&d).join("bin/promtool"))
        .unwrap_or_else(|| PathBuf::from(PROMTOOL_CACHE));
    if cached.is_file() {
        return Some(cached);
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("promtool"))
        .find(|p| p.is_file())
}

#[test]
fn promtool_accepts_the_exposition() {
    let Some(promtool) = promtool() else {
        // CI fetches promtool (tests/harness/deps.sh): there, its absence is a failure.
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool not found: run tests/harness/deps.sh (it fetches it into {PROMTOOL_CACHE}), or set PROMTOOL"
        );
        eprintln!(
            "SKIPPED: promtool not found (tests/harness/deps.sh fetches it into {PROMTOOL_CACHE}; or set PROMTOOL)"
        );
        return;
    };
    let text = populated().render();
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// A server on its own thread and runtime: the test's clients are plain blocking sockets.
fn start_server(dir: &Path, metrics: Arc<Metrics>) -> PathBuf {
    let path = dir.join("metrics.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::UnixListener::from_std(listener).unwrap();
            serve_unix(listener, metrics).await
        })
    });
    path
}

fn connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).unwrap();
    // A guard so a broken server fails the test instead of hanging it; not a measurement.
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s
}

/// Reads to the server's close and splits the status line, the headers and the body.
fn response(mut s: UnixStream) -> (String, String, String) {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("the server closes after answering");
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_string(), headers.to_string(), body.to_string())
}

fn request(path: &Path, req: &[u8]) -> (String, String, String) {
    let mut s = connect(path);
    s.write_all(req).unwrap();
    response(s)
}

#[test]
fn serves_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new("9.9.9"));
    metrics.record_restart(Decision::Executed, RequestSource::Auto);
    let sock = start_server(dir.path(), metrics.clone());

    let (status, headers, body) = request(
        &sock,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"));
    assert!(headers.contains(&format!("Content-Length: {}", body.len())));
    assert!(body.contains("warden_build_info{version=\"9.9.9\"} 1\n"));
    assert!(body.contains("warden_restarts_total{decision=\"executed\",source=\"auto\"} 1\n"));

    // Updates show on the next scrape.
    metrics.watchdog_ping();
    let (_, _, body) = request(&sock, b"GET / HTTP/1.0\r\n\r\n");
    assert!(body.contains("warden_watchdog_pings_total 1\n"), "{body}");

    let (status, _, _) = request(&sock, b"GET /nope HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, headers, _) = request(&sock, b"DELETE /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert!(headers.contains("Allow: GET, HEAD"));
}

#[test]
fn malformed_requests_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let sock = start_server(dir.path(), Arc::new(Metrics::new("t")));
    for req in [
        &b"HELLO\r\n\r\n"[..],
        b"GET /metrics HTTP/9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n", // a TLS ClientHello's start
        b"GET /metrics\n", // HTTP/0.9, then the client's side closed
    ] {
        let mut s = connect(&sock);
        s.write_all(req).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let (status, _, body) = response(s);
        assert_eq!(
            status,
            "HTTP/1.1 400 Bad Request",
            "{}",
            String::from_utf8_lossy(req)
        );
        assert_eq!(body, "400 Bad Request\n");
    }
}

#[test]
fn a_slow_client_does_not_block_another() {
    let dir = tempfile::tempdir().unwrap();
    let sock = start_server(dir.path(), Arc::new(Metrics::new("t")));
    // Half a request, then nothing.
    let mut slow = connect(&sock);
    slow.write_all(b"GET /metr").unwrap();

    let (status, _, _) = request(&sock, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");

    // The slow client was still being served all along: a server that had waited on it would
    // have had to drop it to get here.
    slow.write_all(b"ics HTTP/1.1\r\n\r\n").unwrap();
    let (status, _, body) = response(slow);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("# TYPE warden_restarts_total counter\n"));
}
