//! HTTP/1.0, one request a connection: the health probe of a reload's verification
//! (`WARDEN_HEALTH_URL`: a GET to the app on this machine, plain HTTP, answered 2xx within a
//! deadline), and the JSON APIs of the services a fleet asks (etcd's gateway, Alertmanager),
//! over TLS when their endpoint is `https://`.

use std::io::{Read as _, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for HealthUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| "only http:// URLs are probed (the app's own port)".to_string())?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6
                .split_once(']')
                .ok_or("an IPv6 host is written [address]")?;
            (h, p.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("no host".into());
        }
        let port = match port {
            None => 80,
            Some(p) => p
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("bad port {p:?}"))?,
        };
        if path.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the path holds spaces or control characters".into());
        }
        Ok(HealthUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for HealthUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// A service's base URL, `http://` or `https://` (etcd's members, Alertmanager).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    pub url: HealthUrl,
    pub tls: bool,
}

impl std::str::FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("https://") {
            Some(rest) => {
                let mut url: HealthUrl = format!("http://{rest}").parse()?;
                let authority = rest.split('/').next().unwrap_or("");
                let has_port = match authority.split_once(']') {
                    Some((_, after)) => after.starts_with(':'),
                    None => authority.contains(':'),
                };
                // Written without a port: https's.
                if !has_port {
                    url.port = 443;
                }
                Ok(Endpoint { url, tls: true })
            }
            None if s.starts_with("http://") => Ok(Endpoint {
                url: s.parse()?,
                tls: false,
            }),
            None => Err("an http:// or https:// URL".into()),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = self.url.to_string();
        match self.tls {
            true => write!(f, "https{}", &plain[4..]),
            false => f.write_str(&plain),
        }
    }
}

impl From<HealthUrl> for Endpoint {
    fn from(url: HealthUrl) -> Endpoint {
        Endpoint { url, tls: false }
    }
}

/// A TLS client's configuration: the CA that signs the servers' certificates and, for servers
/// that ask for one, this client's certificate and key (PEM files, as etcd's clients take them).
#[derive(Clone)]
pub struct Tls(Arc<rustls::ClientConfig>);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// The system's CA bundle (Debian's ca-certificates), when no CA is given.
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

impl Tls {
    /// `ca`: PEM certificates to trust; `client`: a PEM certificate (chain) and its key.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Tls, String> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let read_certs = |p: &Path| -> Result<Vec<CertificateDer<'static>>, String> {
            let certs = CertificateDer::pem_file_iter(p)
                .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: {e}", p.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: no PEM certificate in it", p.display()));
            }
            Ok(certs)
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(ca)? {
            roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("{}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("{}: {e}", cert.display()))?
            }
        };
        Ok(Tls(Arc::new(config)))
    }
}

/// How a request goes out beyond plain HTTP: TLS for an `https://` endpoint, a token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Via<'a> {
    pub tls: Option<&'a Tls>,
    /// The `Authorization:` header's value.
    pub authorization: Option<&'a str>,
}

/// A plain or TLS connection.
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
        }
    }
}

impl std::io::Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => match t.read(buf) {
                // A server that closes without close_notify, as many HTTP/1.0 servers do: the
                // answer has been read whole by then.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
        }
    }
}

/// What the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The status code (2xx is healthy) and the time to the status line.
    Answered {
        status: u16,
        elapsed: Duration,
    },
    Failed(String),
}

impl Probe {
    pub fn healthy(&self) -> bool {
        matches!(self, Probe::Answered { status, .. } if (200..300).contains(status))
    }
}

/// One GET with `timeout` for the whole exchange, read to the status line. Blocking: run it
/// off the async runtime.
pub fn probe(url: &HealthUrl, timeout: Duration) -> Probe {
    match exchange(url, false, Via::default(), None, timeout, Read::StatusLine) {
        Ok(a) => Probe::Answered {
            status: a.status,
            elapsed: a.elapsed,
        },
        Err(e) => Probe::Failed(e.to_string()),
    }
}

/// How much of the answer to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    StatusLine,
    /// The whole answer, up to this many bytes (the rest is not read).
    Whole(usize),
}

/// An answer to a GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The time to the whole answer read (or to the status line).
    pub elapsed: Duration,
    /// The body, when the whole answer was read.
    pub body: Vec<u8>,
}

/// Why a GET got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("{0}")]
    Failed(String),
}

/// One GET with `timeout` for the whole exchange, its body read up to `max_body` bytes (the
/// app's health document). Blocking: run it off the async runtime.
pub fn fetch(url: &HealthUrl, timeout: Duration, max_body: usize) -> Result<Answer, FetchError> {
    exchange(
        url,
        false,
        Via::default(),
        None,
        timeout,
        Read::Whole(max_body),
    )
}

/// One POST of a JSON `body` to `url` (a local service's JSON API, such as etcd's gateway),
/// its answer read up to `max_body` bytes, within `timeout` for the whole exchange. Blocking.
pub fn post_json(
    url: &HealthUrl,
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, FetchError> {
    exchange(
        url,
        false,
        Via::default(),
        Some(body),
        timeout,
        Read::Whole(max_body),
    )
}

/// [`post_json`] to an endpoint's `path`, over TLS when it is `https://`, with `via`'s token.
pub fn post_json_via(
    ep: &Endpoint,
    path: &str,
    via: Via<'_>,
    body: &[u8],
    timeout: Duration,
    max_body: usize,
) -> Result<Answer, FetchError> {
    let url = HealthUrl {
        path: path.to_string(),
        ..ep.url.clone()
    };
    exchange(
        &url,
        ep.tls,
        via,
        Some(body),
        timeout,
        Read::Whole(max_body),
    )
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Connects (TLS for `tls`) and sends the request, within what is left of `timeout` since
/// `start`.
fn send(
    url: &HealthUrl,
    tls: bool,
    via: Via<'_>,
    post: Option<&[u8]>,
    timeout: Duration,
    start: Instant,
) -> Result<Conn, FetchError> {
    let failed = |what: String| FetchError::Failed(what);
    let addrs = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| failed(format!("cannot resolve {}: {e}", url.host)))?
        .collect::<Vec<_>>();
    let addr = addrs
        .first()
        .ok_or_else(|| failed(format!("{} resolves to nothing", url.host)))?;
    let tcp = TcpStream::connect_timeout(addr, timeout).map_err(|e| {
        if timed_out(&e) {
            FetchError::TimedOut(timeout)
        } else {
            failed(format!("connect {addr}: {e}"))
        }
    })?;
    let mut s = if tls {
        let owned;
        let config = match via.tls {
            Some(t) => t,
            None => {
                owned = Tls::from_files(Path::new(SYSTEM_CA), None).map_err(failed)?;
                &owned
            }
        };
        let name = rustls_pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| failed(format!("{}: {e}", url.host)))?;
        let conn = rustls::ClientConnection::new(config.0.clone(), name)
            .map_err(|e| failed(format!("TLS: {e}")))?;
        Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    } else {
        Conn::Plain(tcp)
    };
    let auth = via
        .authorization
        .filter(|a| !a.contains(['\r', '\n']))
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let mut req = match post {
        None => format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: warden/{}\r\nConnection: close\r\n\r\n",
            url.path,
            url.host,
            env!("CARGO_PKG_VERSION")
        ),
        Some(body) => format!(
            "POST {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: warden/{}\r\nConnection: close\r\n\
             {auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            url.path,
            url.host,
            env!("CARGO_PKG_VERSION"),
            body.len()
        ),
    }
    .into_bytes();
    req.extend_from_slice(post.unwrap_or_default());
    let left = timeout
        .checked_sub(start.elapsed())
        .filter(|d| !d.is_zero());
    s.tcp()
        .set_write_timeout(left)
        .and_then(|()| s.write_all(&req))
        .and_then(|()| s.flush())
        .map_err(|e| {
            if timed_out(&e) {
                FetchError::TimedOut(timeout)
            } else {
                failed(format!("send: {e}"))
            }
        })?;
    Ok(s)
}

/// A streamed answer of one JSON message a line (an etcd watch), read as its lines come.
pub struct LineStream {
    conn: Conn,
    /// Read and not yet returned (the body's, once the head is read).
    pending: Vec<u8>,
    max_line: usize,
}

impl LineStream {
    /// POSTs `body` to `ep`'s `path` and reads the answer's head within `timeout`: a 2xx
    /// status, or an error.
    pub fn open(
        ep: &Endpoint,
        path: &str,
        via: Via<'_>,
        body: &[u8],
        timeout: Duration,
        max_line: usize,
    ) -> Result<LineStream, FetchError> {
        let start = Instant::now();
        let url = HealthUrl {
            path: path.to_string(),
            ..ep.url.clone()
        };
        let conn = send(&url, ep.tls, via, Some(body), timeout, start)?;
        let mut st = LineStream {
            conn,
            pending: Vec::new(),
            max_line,
        };
        let deadline = start + timeout;
        while body_start(&st.pending).is_none() {
            if !st.fill(deadline)? {
                return Err(FetchError::TimedOut(timeout));
            }
        }
        let at = body_start(&st.pending).expect("checked above");
        let text = String::from_utf8_lossy(&st.pending[..at.min(512)]).into_owned();
        let line = text.lines().next().unwrap_or("");
        match parse_status_line(line) {
            Some(status) if (200..300).contains(&status) => {}
            Some(status) => return Err(FetchError::Failed(format!("answered {status}"))),
            None => return Err(FetchError::Failed(format!("not an HTTP answer: {line:?}"))),
        }
        st.pending.drain(..at);
        Ok(st)
    }

    /// Reads more until `deadline`: whether anything came (`Err` when the server closed).
    fn fill(&mut self, deadline: Instant) -> Result<bool, FetchError> {
        if self.pending.len() > self.max_line + 16 * 1024 {
            return Err(FetchError::Failed("a line longer than allowed".into()));
        }
        let Some(left) = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
        else {
            return Ok(false);
        };
        let mut buf = [0u8; 4096];
        match self
            .conn
            .tcp()
            .set_read_timeout(Some(left))
            .and_then(|()| self.conn.read(&mut buf))
        {
            Ok(0) => Err(FetchError::Failed("the stream ended".into())),
            Ok(n) => {
                self.pending.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if timed_out(&e) => Ok(false),
            Err(e) => Err(FetchError::Failed(format!("read: {e}"))),
        }
    }

    /// The next line, waiting up to `wait` for it: `None` when none came in time.
    pub fn next_line(&mut self, wait: Duration) -> Result<Option<Vec<u8>>, FetchError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(Some(line));
            }
            if !self.fill(deadline)? {
                return Ok(None);
            }
        }
    }
}

fn exchange(
    url: &HealthUrl,
    tls: bool,
    via: Via<'_>,
    post: Option<&[u8]>,
    timeout: Duration,
    read: Read,
) -> Result<Answer, FetchError> {
    let start = Instant::now();
    let failed = |what: String| FetchError::Failed(what);
    let mut s = send(url, tls, via, post, timeout, start)?;
    // The deadline is for the whole exchange: each write and read gets what is left of it, so
    // that a server trickling its answer cannot stretch the probe past it.
    let left = || {
        timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
    };
    let limit = match read {
        // The status line is all the verification needs: a small head of the answer.
        Read::StatusLine => 4096,
        Read::Whole(max_body) => max_body.saturating_add(16 * 1024),
    };
    let mut got = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        if read == Read::StatusLine && got.contains(&b'\n') {
            break;
        }
        if got.len() >= limit {
            break;
        }
        let Some(left) = left() else {
            return Err(match read {
                Read::StatusLine => failed(format!("read: no status line within {timeout:?}")),
                Read::Whole(_) => FetchError::TimedOut(timeout),
            });
        };
        match s
            .tcp()
            .set_read_timeout(Some(left))
            .and_then(|()| s.read(&mut buf))
        {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n.min(limit - got.len())]),
            Err(e) if read != Read::StatusLine && timed_out(&e) => {
                return Err(FetchError::TimedOut(timeout));
            }
            Err(e) => return Err(failed(format!("read: {e}"))),
        }
    }
    let elapsed = start.elapsed();
    let text = String::from_utf8_lossy(&got[..got.len().min(512)]);
    let line = text.lines().next().unwrap_or("");
    let status =
        parse_status_line(line).ok_or_else(|| failed(format!("not an HTTP answer: {line:?}")))?;
    let body = match read {
        Read::StatusLine => Vec::new(),
        Read::Whole(max_body) => body_start(&got)
            .map(|at| got[at..].iter().copied().take(max_body).collect())
            .unwrap_or_default(),
    };
    Ok(Answer {
        status,
        elapsed,
        body,
    })
}

/// Where the body starts, once the head has been read.
fn body_start(got: &[u8]) -> Option<usize> {
    got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// `HTTP/1.1 200 OK` → 200
pub fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    parts.next().filter(|v| v.starts_with("HTTP/"))?;
    parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..600).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn urls() {
        let u: HealthUrl = "http://127.0.0.1:8080/health".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("127.0.0.1", 8080, "/health")
        );
        let u: HealthUrl = "http://[::1]/".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 80));
        for bad in [
            "https://x/",
            "x:80",
            "http://:80/",
            "http://h:0/",
            "http://u:p@h/",
            "http://h/a b",
        ] {
            assert!(bad.parse::<HealthUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status_line("HTTP/1.0 503"), Some(503));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 99999 x"), None);
    }

    #[test]
    fn a_closed_port_fails_fast() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/").parse().unwrap();
        let p = probe(&url, Duration::from_secs(2));
        assert!(!p.healthy());
        assert!(
            matches!(p, Probe::Failed(ref m) if m.contains("connect")),
            "{p:?}"
        );
    }

    #[test]
    fn a_silent_server_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/", l.local_addr().unwrap().port())
            .parse()
            .unwrap();
        // Accepted by the kernel's backlog, never answered.
        let p = probe(&url, Duration::from_millis(200));
        assert!(
            matches!(p, Probe::Failed(ref m) if m.contains("read")),
            "{p:?}"
        );
    }

    #[test]
    fn a_server_trickling_its_answer_is_cut_off_at_the_deadline() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/", l.local_addr().unwrap().port())
            .parse()
            .unwrap();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // One byte of a status line every 50 ms, never a newline, until the test is over.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(Duration::from_millis(50))
            {
                if c.write_all(b"H").is_err() {
                    break;
                }
            }
        });
        let p = probe(&url, Duration::from_millis(300));
        drop(stop);
        server.join().unwrap();
        assert!(
            matches!(p, Probe::Failed(ref m) if m.contains("read")),
            "{p:?}"
        );
    }

    /// A server that answers one connection with `answer`, then closes it.
    fn serve_once(answer: &'static [u8]) -> HealthUrl {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}/health", l.local_addr().unwrap().port())
            .parse()
            .unwrap();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = [0u8; 1024];
            let _ = c.read(&mut req);
            let _ = c.write_all(answer);
        });
        url
    }

    #[test]
    fn fetch_reads_the_body_up_to_its_limit() {
        let url = serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\r\n{\"degraded_reason\":\"x\"}");
        let a = fetch(&url, Duration::from_secs(2), 1024).unwrap();
        assert_eq!(a.status, 503);
        assert_eq!(a.body, br#"{"degraded_reason":"x"}"#);
        let url = serve_once(b"HTTP/1.0 200 OK\r\n\r\n0123456789");
        assert_eq!(
            fetch(&url, Duration::from_secs(2), 4).unwrap().body,
            b"0123"
        );
    }

    #[test]
    fn fetch_tells_a_timeout_from_a_failure() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url: HealthUrl = format!("http://127.0.0.1:{}/", l.local_addr().unwrap().port())
            .parse()
            .unwrap();
        assert_eq!(
            fetch(&url, Duration::from_millis(100), 1024),
            Err(FetchError::TimedOut(Duration::from_millis(100)))
        );
        drop(l);
        assert!(matches!(
            fetch(&url, Duration::from_millis(100), 1024),
            Err(FetchError::Failed(_))
        ));
    }

    proptest! {
        #[test]
        fn any_url_text_parses_or_is_refused(s in "\\PC{0,60}") {
            let _ = s.parse::<HealthUrl>();
            let _ = parse_status_line(&s);
        }
    }
}
