//! The agent's Prometheus metrics: a registry of atomics that the event loop updates, rendered
//! in the text exposition format 0.0.4, served over a Unix socket ([`serve_unix`]) or written
//! for node_exporter's textfile collector ([`write_textfile`]).
//!
//! The encoder is written here rather than taken from `prometheus-client`: that crate encodes
//! OpenMetrics text only (a counter typed under its name without `_total`, an `info` type,
//! `# EOF`), which the 0.0.4 parsers of node_exporter's textfile collector and of
//! `promtool check metrics` reject or misread. A dozen fixed families need no more than this.
//!
//! Families (all prefixed `warden_`): `restarts_total{decision,source}`, `policy_state{state}`,
//! `policy_attempts_in_window`, `policy_cooldown_remaining_seconds`, `kill_switch_engaged`,
//! `reload_duration_seconds` and `flag_to_signal_seconds` (histograms), `contract_valid`,
//! `watchdog_pings_total`, `start_time_seconds`, `build_info{version}`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use crate::ledger::entry::Entry;
use crate::ledger::model::{Decision, RequestSource};
use crate::ledger::policy::{Evaluation, PolicyState as State};
use crate::ledger::state::StateDoc;

/// The sources counted, in the order of `Metrics::restarts`' columns.
const SOURCES: [RequestSource; 3] = [
    RequestSource::Manual,
    RequestSource::Auto,
    RequestSource::KillSwitch,
];

fn source_index(s: RequestSource) -> usize {
    SOURCES.iter().position(|x| *x == s).unwrap_or(0)
}

fn decision_index(d: Decision) -> Option<usize> {
    Decision::OUTCOMES.iter().position(|x| *x == d)
}

const MS: u64 = 1_000_000;
const S: u64 = 1_000_000_000;

/// Flag to signal: claiming, reading and deciding take well under a millisecond, a missing PID
/// file can add up to 2 s.
const FLAG_TO_SIGNAL_BUCKETS: &[u64] = &[
    MS / 10,
    MS / 4,
    MS / 2,
    MS,
    5 * MS / 2,
    5 * MS,
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    5 * S / 2,
    5 * S,
    10 * S,
];

/// Signal to every worker replaced: from a few milliseconds to `WARDEN_RELOAD_TIMEOUT`.
const RELOAD_BUCKETS: &[u64] = &[
    10 * MS,
    25 * MS,
    50 * MS,
    100 * MS,
    250 * MS,
    500 * MS,
    S,
    5 * S / 2,
    5 * S,
    10 * S,
    30 * S,
    60 * S,
];

/// Durations in nanoseconds: bucketing is exact, and the sum needs no float atomics.
#[derive(Debug)]
struct Histogram {
    /// Upper bounds (inclusive), ascending.
    bounds: &'static [u64],
    /// Observations per bucket, not cumulative; the last slot is above every bound (+Inf).
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.bounds.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(1, Relaxed);
        // Saturating: an absurd duration must not wrap the sum around to a small one.
        let _ = self
            .sum_ns
            .fetch_update(Relaxed, Relaxed, |s| Some(s.saturating_add(ns)));
    }

    fn render(&self, out: &mut String, name: &str, help: &str) -> std::fmt::Result {
        family(out, name, help, "histogram")?;
        // The count is the buckets' total, so `_count` always equals the `+Inf` bucket even
        // when an observation lands mid-render.
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative = cumulative.saturating_add(c.load(Relaxed));
            let le = match self.bounds.get(i) {
                Some(&b) => seconds(u128::from(b)),
                None => "+Inf".to_string(),
            };
            writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}")?;
        }
        let sum = seconds(u128::from(self.sum_ns.load(Relaxed)));
        writeln!(out, "{name}_sum {sum}")?;
        writeln!(out, "{name}_count {cumulative}")
    }
}

/// The policy as last evaluated. Behind a lock: its fields belong together.
#[derive(Debug, Clone, Copy)]
struct PolicySnapshot {
    state: State,
    attempts: u32,
    cooldown_until: Option<Instant>,
}

const CONTRACT_UNKNOWN: u8 = 0;
const CONTRACT_INVALID: u8 = 1;
const CONTRACT_VALID: u8 = 2;

/// The agent's metrics. Every method takes `&self` and is lock-free but for the policy
/// snapshot; share it as `Arc<Metrics>` between the event loop and the server.
#[derive(Debug)]
pub struct Metrics {
    version: String,
    /// Since the Unix epoch.
    started: Duration,
    /// `[decision][source]`, in the order of `Decision::OUTCOMES` and `SOURCES`.
    restarts: [[AtomicU64; 3]; 4],
    policy: Mutex<PolicySnapshot>,
    kill_switch: AtomicBool,
    contract: AtomicU8,
    watchdog_pings: AtomicU64,
    reload: Histogram,
    flag_to_signal: Histogram,
}

impl Metrics {
    /// A registry for this agent; `version` goes to `warden_build_info`
    /// (`env!("CARGO_PKG_VERSION")`). The start time is now. The policy starts as it is with
    /// no history (allowed, no attempts); the contract's validity is unknown (and not
    /// exported) until [`Metrics::set_contract_valid`].
    pub fn new(version: &str) -> Self {
        Metrics {
            version: version.to_string(),
            started: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
            restarts: Default::default(),
            policy: Mutex::new(PolicySnapshot {
                state: State::Allowed,
                attempts: 0,
                cooldown_until: None,
            }),
            kill_switch: AtomicBool::new(false),
            contract: AtomicU8::new(CONTRACT_UNKNOWN),
            watchdog_pings: AtomicU64::new(0),
            reload: Histogram::new(RELOAD_BUCKETS),
            flag_to_signal: Histogram::new(FLAG_TO_SIGNAL_BUCKETS),
        }
    }

    /// Counts one handled request.
    pub fn record_restart(&self, decision: Decision, source: RequestSource) {
        if let Some(d) = decision_index(decision) {
            self.restarts[d][source_index(source)].fetch_add(1, Relaxed);
        }
    }

    /// Counts a handled request as its entry records it, with its timings.
    pub fn count(&self, e: &Entry) {
        let Some(decision) = e.decided() else { return };
        self.record_restart(decision, e.source().unwrap_or_default());
        if decision == Decision::Executed
            && let Some(t) = &e.timings
        {
            let ms = |v: f64| Duration::from_secs_f64(v.max(0.0) / 1e3);
            if let Some(v) = t.flag_to_signal_ms {
                self.observe_flag_to_signal(ms(v));
            }
            if let Some(v) = t.workers_replaced_ms {
                self.observe_reload(ms(v));
            }
        }
    }

    /// Refreshes the gauges that follow the state.
    pub fn follow(&self, eval: &Evaluation, doc: &StateDoc) {
        self.set_policy(eval);
        self.set_kill_switch(doc.kill_switch.as_ref().is_some_and(|k| k.engaged));
    }

    /// The restart flag's write to the SIGHUP (`timings.flag_to_signal_ms`).
    pub fn observe_flag_to_signal(&self, d: Duration) {
        self.flag_to_signal.observe(d);
    }

    /// The SIGHUP to every old worker replaced (`timings.workers_replaced_ms`).
    pub fn observe_reload(&self, d: Duration) {
        self.reload.observe(d);
    }

    /// Takes a policy evaluation. The cooldown counts down by itself between calls (its end is
    /// known, and its end means `allowed`: a cooldown is never blocked, and the window only
    /// empties with time); the rest is as of this evaluation, so call this at each evaluation
    /// and periodically (at each watchdog ping, say) for a blocked state to clear on time.
    pub fn set_policy(&self, e: &Evaluation) {
        let snap = PolicySnapshot {
            state: e.state,
            attempts: e.attempts_in_window,
            cooldown_until: (e.cooldown_remaining_seconds > 0)
                .then(|| {
                    Instant::now().checked_add(Duration::from_secs(e.cooldown_remaining_seconds))
                })
                .flatten(),
        };
        *self.policy.lock().unwrap_or_else(PoisonError::into_inner) = snap;
    }

    pub fn set_kill_switch(&self, engaged: bool) {
        self.kill_switch.store(engaged, Relaxed);
    }

    /// The runtime contract as last checked.
    pub fn set_contract_valid(&self, valid: bool) {
        let v = if valid {
            CONTRACT_VALID
        } else {
            CONTRACT_INVALID
        };
        self.contract.store(v, Relaxed);
    }

    /// Counts one `WATCHDOG=1` sent to systemd.
    pub fn watchdog_ping(&self) {
        self.watchdog_pings.fetch_add(1, Relaxed);
    }

    /// The exposition, `text/plain; version=0.0.4`.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(6 * 1024);
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out);
        out
    }

    fn render_into(&self, out: &mut String) -> std::fmt::Result {
        family(
            out,
            "warden_build_info",
            "The running warden's version; always 1.",
            "gauge",
        )?;
        writeln!(
            out,
            "warden_build_info{{version=\"{}\"}} 1",
            escape_label(&self.version)
        )?;
        family(
            out,
            "warden_start_time_seconds",
            "When the agent started, in seconds since the Unix epoch.",
            "gauge",
        )?;
        writeln!(
            out,
            "warden_start_time_seconds {}",
            seconds(self.started.as_nanos())
        )?;

        family(
            out,
            "warden_restarts_total",
            "Restart requests handled, by decision and by source.",
            "counter",
        )?;
        // Every combination from the start: increase() needs the zero before the first event.
        for (d, row) in Decision::OUTCOMES.iter().zip(&self.restarts) {
            for (s, n) in SOURCES.iter().zip(row) {
                writeln!(
                    out,
                    "warden_restarts_total{{decision=\"{}\",source=\"{}\"}} {}",
                    d.as_str(),
                    s.as_str(),
                    n.load(Relaxed)
                )?;
            }
        }

        let p = *self.policy.lock().unwrap_or_else(PoisonError::into_inner);
        let remaining = p
            .cooldown_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let state = if p.state == State::Cooldown && remaining.is_zero() {
            State::Allowed
        } else {
            p.state
        };
        family(
            out,
            "warden_policy_state",
            "The restart policy's state: 1 for the current one.",
            "gauge",
        )?;
        for s in State::ALL {
            writeln!(
                out,
                "warden_policy_state{{state=\"{}\"}} {}",
                s.as_str(),
                u8::from(s == state)
            )?;
        }
        family(
            out,
            "warden_policy_attempts_in_window",
            "Executed restarts within the policy's window, as last evaluated.",
            "gauge",
        )?;
        writeln!(out, "warden_policy_attempts_in_window {}", p.attempts)?;
        family(
            out,
            "warden_policy_cooldown_remaining_seconds",
            "Seconds until the cooldown ends (rounded up); 0 outside a cooldown.",
            "gauge",
        )?;
        let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        writeln!(out, "warden_policy_cooldown_remaining_seconds {secs}")?;

        family(
            out,
            "warden_kill_switch_engaged",
            "1 while the kill switch is engaged.",
            "gauge",
        )?;
        writeln!(
            out,
            "warden_kill_switch_engaged {}",
            u8::from(self.kill_switch.load(Relaxed))
        )?;
        match self.contract.load(Relaxed) {
            CONTRACT_UNKNOWN => {}
            v => {
                family(
                    out,
                    "warden_contract_valid",
                    "1 if the runtime contract passed its last check, 0 if not.",
                    "gauge",
                )?;
                writeln!(
                    out,
                    "warden_contract_valid {}",
                    u8::from(v == CONTRACT_VALID)
                )?;
            }
        }

        self.reload.render(
            out,
            "warden_reload_duration_seconds",
            "From the SIGHUP to every old worker replaced.",
        )?;
        self.flag_to_signal.render(
            out,
            "warden_flag_to_signal_seconds",
            "From the restart flag's write to the SIGHUP.",
        )?;
        family(
            out,
            "warden_watchdog_pings_total",
            "WATCHDOG=1 notifications sent to systemd.",
            "counter",
        )?;
        writeln!(
            out,
            "warden_watchdog_pings_total {}",
            self.watchdog_pings.load(Relaxed)
        )
    }
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) -> std::fmt::Result {
    writeln!(out, "# HELP {name} {help}")?;
    writeln!(out, "# TYPE {name} {kind}")
}

/// A label value as the text format quotes it.
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Nanoseconds as an exact decimal number of seconds: `100000` is `0.0001`, `2e9` is `2`.
fn seconds(ns: u128) -> String {
    let (whole, frac) = (ns / u128::from(S), ns % u128::from(S));
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

#[derive(Debug, thiserror::Error)]
pub enum TextfileError {
    #[error("{0}: node_exporter's textfile collector reads only files named *.prom")]
    NotProm(PathBuf),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes the exposition to `path` for node_exporter's textfile collector
/// (`--collector.textfile.directory`). The name must end in `.prom`; the file is replaced
/// atomically and durably ([`crate::platform::fs::write_atomic`], whose temporary file's name does
/// not end in `.prom`, so the collector never reads half a file), mode 0644 (the exporter runs
/// as another user; nothing here is secret). Rewrite it on every change and at least once a
/// minute: the alert rules take a file older than five minutes for a dead agent.
pub fn write_textfile(path: &Path, metrics: &Metrics) -> Result<(), TextfileError> {
    let named_prom = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".prom"))
        .is_some_and(|stem| !stem.is_empty());
    if !named_prom {
        return Err(TextfileError::NotProm(path.to_path_buf()));
    }
    crate::platform::fs::write_atomic(path, metrics.render().as_bytes(), 0o644).map_err(|source| {
        TextfileError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// What one client may cost the metrics endpoint.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// For the whole exchange, reading the request to writing the last byte: a client that
    /// stalls or never reads is dropped.
    deadline: Duration,
    /// Request head; a scrape's is a few hundred bytes.
    max_request: usize,
    /// Connections served at once; more wait in the listen backlog.
    max_connections: usize,
}

const LIMITS: Limits = Limits {
    deadline: Duration::from_secs(5),
    max_request: 8 * 1024,
    max_connections: 16,
};

/// Serves `GET /metrics` (and `GET /`, and `HEAD` of both) on `listener`, one request per
/// connection (`Connection: close`), e.g. for
/// `curl --unix-socket /run/warden/metrics.sock http://localhost/metrics`. Any other path is
/// 404, another method 405, a malformed request 400, a head over 8 KiB 431. Each client gets
/// 5 s for the whole exchange and at most 16 are served at once, so slow or hostile clients
/// cannot hang the server or starve it of memory. Runs until the task is dropped or aborted,
/// which also drops the connections in progress. The socket's permissions are the caller's
/// business: bind it where only the scrapers may connect.
pub async fn serve_unix(listener: UnixListener, metrics: Arc<Metrics>) {
    serve(listener, metrics, LIMITS).await
}

async fn serve(listener: UnixListener, metrics: Arc<Metrics>, limits: Limits) {
    let mut conns = JoinSet::new();
    loop {
        if conns.len() >= limits.max_connections {
            // Each connection ends by its deadline, so this wait is bounded.
            conns.join_next().await;
            continue;
        }
        tokio::select! {
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(connection(stream, metrics.clone(), limits));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted
                    || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    // Out of descriptors, most likely: a connection ending frees one. With none
                    // running there is no event to wait for; back off rather than spin.
                    if conns.join_next().await.is_none() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            },
        }
    }
}

async fn connection(stream: UnixStream, metrics: Arc<Metrics>, limits: Limits) {
    // Errors and timeouts end the exchange; a client that went away is owed nothing.
    let _ = tokio::time::timeout(limits.deadline, exchange(&stream, &metrics, limits)).await;
}

async fn exchange(stream: &UnixStream, metrics: &Metrics, limits: Limits) -> io::Result<()> {
    let response = match read_head(stream, limits.max_request).await? {
        Head::Complete(bytes) => answer(&bytes, metrics),
        Head::TooLarge => plain(431, "Request Header Fields Too Large", "", false),
        Head::Nothing => return Ok(()),
    };
    write_all(stream, &response).await
}

enum Head {
    /// The head up to its blank line, or all a client sent before closing its side.
    Complete(Vec<u8>),
    TooLarge,
    /// The client closed without sending anything.
    Nothing,
}

async fn read_head(stream: &UnixStream, max: usize) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if ends_head(&buf) {
            return Ok(Head::Complete(buf));
        }
        if buf.len() >= max {
            return Ok(Head::TooLarge);
        }
        stream.readable().await?;
        let room = chunk.len().min(max - buf.len());
        match stream.try_read(&mut chunk[..room]) {
            Ok(0) if buf.is_empty() => return Ok(Head::Nothing),
            Ok(0) => return Ok(Head::Complete(buf)),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// The blank line that ends a request head (bare LFs are tolerated, as RFC 9112 allows).
fn ends_head(buf: &[u8]) -> bool {
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

async fn write_all(stream: &UnixStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        stream.writable().await?;
        match stream.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The response to a request head; only its request line matters.
fn answer(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(line) = std::str::from_utf8(line) else {
        return plain(400, "Bad Request", "", false);
    };
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return plain(400, "Bad Request", "", false);
    };
    if !is_token(method)
        || !target.starts_with('/')
        || target.bytes().any(|b| b <= b' ' || b == 0x7f)
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return plain(400, "Bad Request", "", false);
    }
    let head_only = method == "HEAD";
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !matches!(path, "/metrics" | "/") {
        return plain(404, "Not Found", "", head_only);
    }
    if !matches!(method, "GET" | "HEAD") {
        return plain(405, "Method Not Allowed", "Allow: GET, HEAD\r\n", false);
    }
    let body = metrics.render();
    response(
        200,
        "OK",
        "text/plain; version=0.0.4; charset=utf-8",
        "",
        body.as_bytes(),
        head_only,
    )
}

/// RFC 9110 `token`.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn plain(status: u16, reason: &str, headers: &str, head_only: bool) -> Vec<u8> {
    let body = format!("{status} {reason}\n");
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        headers,
        body.as_bytes(),
        head_only,
    )
}

fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    headers: &str,
    body: &[u8],
    head_only: bool,
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(body);
    }
    r
}

/// Binds the metrics socket, replacing a stale socket (never another kind of file).
pub fn bind_socket(p: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(m) = p.symlink_metadata() {
        if m.file_type().is_socket() {
            std::fs::remove_file(p)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
    }
    let l = std::os::unix::net::UnixListener::bind(p)?;
    // tokio takes it over only non-blocking.
    l.set_nonblocking(true)?;
    Ok(l)
}

// Shared between the event loop and the server task.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Metrics>();
};

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    fn value(text: &str, series: &str) -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .to_string()
    }

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(100_000), "0.0001");
        assert_eq!(seconds(250_000), "0.00025");
        assert_eq!(seconds(2_500_000_000), "2.5");
        assert_eq!(seconds(60 * u128::from(S)), "60");
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_700_000_000_000_000_001), "1700000000.000000001");
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new("1.0 \"rc\"\\x\nnext");
        let text = m.render();
        assert!(
            text.contains("warden_build_info{version=\"1.0 \\\"rc\\\"\\\\x\\nnext\"} 1\n"),
            "{text}"
        );
        // One sample line: the newline did not break it.
        assert_eq!(lines_of(&text, "warden_build_info{").len(), 1);
    }

    #[test]
    fn every_family_has_help_and_type_once() {
        let m = Metrics::new("0.1.0");
        m.set_contract_valid(true);
        let text = m.render();
        for name in [
            "warden_build_info",
            "warden_start_time_seconds",
            "warden_restarts_total",
            "warden_policy_state",
            "warden_policy_attempts_in_window",
            "warden_policy_cooldown_remaining_seconds",
            "warden_kill_switch_engaged",
            "warden_contract_valid",
            "warden_reload_duration_seconds",
            "warden_flag_to_signal_seconds",
            "warden_watchdog_pings_total",
        ] {
            assert_eq!(
                lines_of(&text, &format!("# HELP {name} ")).len(),
                1,
                "{name}"
            );
            assert_eq!(
                lines_of(&text, &format!("# TYPE {name} ")).len(),
                1,
                "{name}"
            );
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let m = Metrics::new("t");
        for d in [
            Duration::from_micros(50),  // first bucket
            Duration::from_micros(100), // exactly on the first bound: still in it
            Duration::from_millis(3),
            Duration::from_secs(20), // above every bound
        ] {
            m.observe_flag_to_signal(d);
        }
        let text = m.render();
        let name = "warden_flag_to_signal_seconds";
        let buckets = lines_of(&text, &format!("{name}_bucket{{"));
        assert_eq!(buckets.len(), FLAG_TO_SIGNAL_BUCKETS.len() + 1);
        assert_eq!(buckets[0], format!("{name}_bucket{{le=\"0.0001\"}} 2"));
        assert_eq!(
            value(&text, &format!("{name}_bucket{{le=\"0.0025\"}}")),
            "2"
        );
        assert_eq!(value(&text, &format!("{name}_bucket{{le=\"0.005\"}}")), "3");
        assert_eq!(value(&text, &format!("{name}_bucket{{le=\"10\"}}")), "3");
        assert_eq!(
            *buckets.last().unwrap(),
            format!("{name}_bucket{{le=\"+Inf\"}} 4")
        );
        let counts: Vec<u64> = buckets
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert_eq!(value(&text, &format!("{name}_count")), "4");
        assert_eq!(value(&text, &format!("{name}_sum")), "20.00315");
        // The other histogram is untouched, and complete.
        assert_eq!(
            value(&text, "warden_reload_duration_seconds_bucket{le=\"+Inf\"}"),
            "0"
        );
        assert_eq!(value(&text, "warden_reload_duration_seconds_sum"), "0");
    }

    #[test]
    fn absurd_durations_saturate() {
        let m = Metrics::new("t");
        m.observe_reload(Duration::MAX);
        m.observe_reload(Duration::MAX);
        let text = m.render();
        assert_eq!(value(&text, "warden_reload_duration_seconds_count"), "2");
        assert_eq!(
            value(&text, "warden_reload_duration_seconds_sum"),
            seconds(u128::from(u64::MAX))
        );
    }

    #[test]
    fn restarts_are_counted_by_decision_and_source_from_zero() {
        let m = Metrics::new("t");
        m.record_restart(Decision::Executed, RequestSource::Auto);
        m.record_restart(Decision::Executed, RequestSource::Auto);
        m.record_restart(Decision::Rejected, RequestSource::Manual);
        m.record_restart(Decision::Executed, RequestSource::KillSwitch);
        let text = m.render();
        assert_eq!(lines_of(&text, "warden_restarts_total{").len(), 12);
        let v = |d: &str, s: &str| {
            value(
                &text,
                &format!("warden_restarts_total{{decision=\"{d}\",source=\"{s}\"}}"),
            )
        };
        assert_eq!(v("executed", "auto"), "2");
        assert_eq!(v("rejected", "manual"), "1");
        assert_eq!(v("executed", "kill_switch"), "1");
        assert_eq!(v("blocked", "auto"), "0");
        assert_eq!(v("failed", "manual"), "0");
    }

    fn eval(state: State, attempts: u32, cooldown_s: u64) -> Evaluation {
        Evaluation {
            state,
            allowed: state == State::Allowed,
            cooldown: cooldown_s > 0,
            blocked: state == State::Blocked,
            cooldown_remaining_seconds: cooldown_s,
            attempts_in_window: attempts,
            retry_budget: 3,
            churn_threshold: 3,
            window_seconds: 600,
        }
    }

    #[test]
    fn policy_gauges() {
        let m = Metrics::new("t");
        let state_of = |text: &str| {
            State::ALL
                .iter()
                .filter(|s| {
                    value(
                        text,
                        &format!("warden_policy_state{{state=\"{}\"}}", s.as_str()),
                    ) == "1"
                })
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(state_of(&m.render()), ["allowed"]);

        m.set_policy(&eval(State::Blocked, 3, 40));
        let text = m.render();
        assert_eq!(state_of(&text), ["blocked"]);
        assert_eq!(value(&text, "warden_policy_attempts_in_window"), "3");
        let left: u64 = value(&text, "warden_policy_cooldown_remaining_seconds")
            .parse()
            .unwrap();
        assert!((1..=40).contains(&left), "{left}");

        m.set_policy(&eval(State::Cooldown, 1, 60));
        assert_eq!(state_of(&m.render()), ["cooldown"]);

        // A cooldown whose end has passed reads as allowed without a new evaluation.
        *m.policy.lock().unwrap() = PolicySnapshot {
            state: State::Cooldown,
            attempts: 1,
            cooldown_until: Some(Instant::now()),
        };
        let text = m.render();
        assert_eq!(state_of(&text), ["allowed"]);
        assert_eq!(
            value(&text, "warden_policy_cooldown_remaining_seconds"),
            "0"
        );
    }

    #[test]
    fn switch_contract_and_pings() {
        let m = Metrics::new("t");
        let text = m.render();
        assert!(
            !text.contains("warden_contract_valid"),
            "unknown until checked"
        );
        assert_eq!(value(&text, "warden_kill_switch_engaged"), "0");
        m.set_kill_switch(true);
        m.set_contract_valid(false);
        m.watchdog_ping();
        m.watchdog_ping();
        let text = m.render();
        assert_eq!(value(&text, "warden_kill_switch_engaged"), "1");
        assert_eq!(value(&text, "warden_contract_valid"), "0");
        assert_eq!(value(&text, "warden_watchdog_pings_total"), "2");
        m.set_contract_valid(true);
        assert_eq!(value(&m.render(), "warden_contract_valid"), "1");
    }

    #[test]
    fn start_time_is_now() {
        let before = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let text = Metrics::new("t").render();
        let t: f64 = value(&text, "warden_start_time_seconds").parse().unwrap();
        assert!(t >= before.floor(), "{t} < {before}");
    }

    #[test]
    fn textfile_needs_a_prom_name() {
        let d = tempfile::tempdir().unwrap();
        let m = Metrics::new("t");
        for bad in ["warden.txt", ".prom", "warden.prom.tmp", "warden"] {
            assert!(
                matches!(
                    write_textfile(&d.path().join(bad), &m),
                    Err(TextfileError::NotProm(_))
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            write_textfile(&d.path().join("missing/warden.prom"), &m),
            Err(TextfileError::Io { .. })
        ));
        let p = d.path().join("warden.prom");
        write_textfile(&p, &m).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), m.render());
    }

    fn status_of(request: &[u8]) -> String {
        let m = Metrics::new("t");
        let r = answer(request, &m);
        let r = String::from_utf8(r).unwrap();
        r.lines().next().unwrap().to_string()
    }

    #[test]
    fn requests_are_answered_by_method_and_path() {
        for (req, status) in [
            (
                &b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                "HTTP/1.1 200 OK",
            ),
            (b"GET / HTTP/1.0\r\n\r\n", "HTTP/1.1 200 OK"),
            (b"GET /metrics?x=1 HTTP/1.1\n\n", "HTTP/1.1 200 OK"),
            (b"GET /other HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            (
                b"POST /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (
                b"get /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            (b"GET /metrics\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (
                b"GET  /metrics HTTP/1.1\r\n\r\n",
                "HTTP/1.1 400 Bad Request",
            ),
            (b"GET metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /metrics HTTP/2.0\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"G(T /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"GET /m\x01 HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"\xff\xfe\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            (b"", "HTTP/1.1 400 Bad Request"),
        ] {
            assert_eq!(status_of(req), status, "{}", String::from_utf8_lossy(req));
        }
        let m = Metrics::new("t");
        let head = String::from_utf8(answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", &m)).unwrap();
        assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
        assert!(head.contains(&format!("Content-Length: {}\r\n", m.render().len())));
        let not_allowed = String::from_utf8(answer(b"PUT / HTTP/1.1\r\n\r\n", &m)).unwrap();
        assert!(not_allowed.contains("\r\nAllow: GET, HEAD\r\n"));
    }

    async fn exchange_with(path: &Path, request: &[u8]) -> Vec<u8> {
        let s = UnixStream::connect(path).await.unwrap();
        if !request.is_empty() {
            write_all(&s, request).await.unwrap();
        }
        read_to_end(s).await
    }

    async fn read_to_end(s: UnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            s.readable().await.unwrap();
            match s.try_read(&mut chunk) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed with part of a request unread.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn stalled_and_oversized_clients_are_cut_off() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("m.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let limits = Limits {
            deadline: Duration::from_millis(200),
            max_request: 64,
            max_connections: 2,
        };
        let server = tokio::spawn(serve(listener, Arc::new(Metrics::new("t")), limits));
        // A guard, not a measurement: only a broken deadline takes this long.
        let guard = Duration::from_secs(60);

        // Says nothing: the deadline closes it.
        let silent = tokio::time::timeout(guard, exchange_with(&path, b"")).await;
        assert_eq!(silent.unwrap(), b"");
        // Never ends its head: the deadline again.
        let partial =
            tokio::time::timeout(guard, exchange_with(&path, b"GET /metrics HTTP/1.1\r\n"));
        assert_eq!(partial.await.unwrap(), b"");
        // Too long.
        let big = vec![b'a'; 200];
        let r = tokio::time::timeout(guard, exchange_with(&path, &big))
            .await
            .unwrap();
        assert!(
            r.starts_with(b"HTTP/1.1 431 "),
            "{}",
            String::from_utf8_lossy(&r)
        );
        // More stalled clients than connection slots (connected first, so accepted first):
        // the scrape is served once their deadlines pass.
        let mut hogs = Vec::new();
        for _ in 0..3 {
            let s = UnixStream::connect(&path).await.unwrap();
            hogs.push(tokio::spawn(read_to_end(s)));
        }
        let r = tokio::time::timeout(guard, exchange_with(&path, b"GET / HTTP/1.0\r\n\r\n"))
            .await
            .unwrap();
        assert!(r.starts_with(b"HTTP/1.1 200 OK\r\n"));
        for h in hogs {
            assert_eq!(tokio::time::timeout(guard, h).await.unwrap().unwrap(), b"");
        }
        server.abort();
    }
}
