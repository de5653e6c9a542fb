//! How the metrics leave the agent: `GET /metrics` over HTTP/1.1 on a Unix socket, each
//! client bounded (a deadline, a head size, a connection cap), and a `*.prom` file for
//! node_exporter's textfile collector.
//!
//! The server is written here: hyper (with hyper-util) would serve the socket but adds about
//! 150 KB (3.8%) to the stripped binary for one request per connection, and tiny_http has no per-connection
//! deadline and spends a thread per client; the limits are what keeps a stalled or hostile
//! client from holding the agent's only metrics endpoint.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

use super::Metrics;

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

#[cfg(test)]
mod tests {
    use super::*;

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
