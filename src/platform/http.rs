//! The health probe of a reload's verification (`WARDEN_HEALTH_URL`): one HTTP/1.0 GET to the
//! app on this machine, answered 2xx within a deadline. Plain HTTP only: the probe talks to the
//! app's own port, never across a network, so no TLS stack is carried for it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
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

/// One GET with `timeout` for the whole exchange. Blocking: run it off the async runtime.
pub fn probe(url: &HealthUrl, timeout: Duration) -> Probe {
    let start = Instant::now();
    let addrs = match (url.host.as_str(), url.port).to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => return Probe::Failed(format!("cannot resolve {}: {e}", url.host)),
    };
    let Some(addr) = addrs.first() else {
        return Probe::Failed(format!("{} resolves to nothing", url.host));
    };
    let mut s = match TcpStream::connect_timeout(addr, timeout) {
        Ok(s) => s,
        Err(e) => return Probe::Failed(format!("connect {addr}: {e}")),
    };
    // The deadline is for the whole exchange: each write and read gets what is left of it, so
    // that a server trickling its answer cannot stretch the probe past it.
    let left = || {
        timeout
            .checked_sub(start.elapsed())
            .filter(|d| !d.is_zero())
    };
    let req = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: warden/{}\r\nConnection: close\r\n\r\n",
        url.path,
        url.host,
        env!("CARGO_PKG_VERSION")
    );
    if let Err(e) = s
        .set_write_timeout(left())
        .and_then(|()| s.write_all(req.as_bytes()))
    {
        return Probe::Failed(format!("send: {e}"));
    }
    // The status line is all the probe needs; read at most a small head of the answer.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let Some(left) = left() else {
            return Probe::Failed(format!("read: no status line within {timeout:?}"));
        };
        let read = s
            .set_read_timeout(Some(left))
            .and_then(|()| s.read(&mut buf));
        match read {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Probe::Failed(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    match parse_status_line(line) {
        Some(status) => Probe::Answered {
            status,
            elapsed: start.elapsed(),
        },
        None => Probe::Failed(format!("not an HTTP answer: {line:?}")),
    }
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

    proptest! {
        #[test]
        fn any_url_text_parses_or_is_refused(s in "\\PC{0,60}") {
            let _ = s.parse::<HealthUrl>();
            let _ = parse_status_line(&s);
        }
    }
}
