//! The bind rule: `GUNICORN_BIND` is one valid `host:port`; before start the port is free, while
//! running it is held by the app's gunicorn master. Listening sockets are read from the kernel
//! (sock_diag, else `/proc/net/tcp{,6}`), so the check never binds, connects or otherwise
//! disturbs the port.

use std::net::IpAddr;

use super::{Context, Phase};
use crate::contract::finding::{Code, Finding};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAddr {
    pub host: String,
    /// `None` for a host name (it matches any address on the port).
    pub ip: Option<IpAddr>,
    pub port: u16,
}

/// Parses `host:port`, `[v6]:port`.
pub fn parse_bind(s: &str) -> Result<BindAddr, String> {
    let s = s.trim();
    if s.starts_with("unix:") || s.starts_with("fd://") {
        return Err("a unix socket or fd bind has no port; the contract is one TCP port".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest
            .split_once("]:")
            .ok_or("an IPv6 bind is written [address]:port")?;
        (h, p)
    } else {
        s.rsplit_once(':').ok_or("no `:port`")?
    };
    if host.is_empty() {
        return Err("no host before `:`".into());
    }
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("`{port}` is not a port number 1-65535"))?;
    let ip = host.parse::<IpAddr>().ok();
    if ip.is_none()
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!("`{host}` is neither an IP address nor a host name"));
    }
    Ok(BindAddr {
        host: host.to_string(),
        ip,
        port,
    })
}

pub use crate::platform::sockets::Listener;

/// Parses the text of `/proc/net/tcp` or `/proc/net/tcp6`, keeping LISTEN sockets.
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                return None;
            }
            let (addr, port) = f[1].split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let ip = match addr.len() {
                8 => IpAddr::from(
                    u32::from_str_radix(addr, 16)
                        .ok()?
                        .swap_bytes()
                        .to_be_bytes(),
                ),
                32 => {
                    // Four 32-bit words, each in host (little-endian) order.
                    let mut b = [0u8; 16];
                    for i in 0..4 {
                        let w = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                        b[i * 4..i * 4 + 4].copy_from_slice(&w.swap_bytes().to_be_bytes());
                    }
                    IpAddr::from(b)
                }
                _ => return None,
            };
            Some(Listener {
                ip,
                port,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

pub(crate) fn overlaps(bind: &BindAddr, l: &Listener) -> bool {
    if bind.port != l.port {
        return false;
    }
    match bind.ip {
        None => true,
        Some(ip) => {
            ip.is_unspecified() || l.ip.is_unspecified() || ip == l.ip || mapped(ip) == mapped(l.ip)
        }
    }
}

fn mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Reads a /proc file in large chunks: the kernel regenerates `/proc/net/tcp` on every read,
/// and `read_to_string`'s small first reads make that several times slower.
fn read_proc(p: &str) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(p).ok()?;
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
        let spare = buf.capacity() - buf.len();
        let start = buf.len();
        buf.resize(start + spare, 0);
        let n = f.read(&mut buf[start..]).ok()?;
        buf.truncate(start + n);
        // A seq_file read returns less than asked only at the end: no extra read to see EOF.
        if n < spare {
            break;
        }
    }
    String::from_utf8(buf).ok()
}

pub(crate) fn listeners() -> Vec<Listener> {
    if let Ok(l) = crate::platform::sockets::listeners() {
        return l;
    }
    // sock_diag can be filtered out (seccomp, RestrictAddressFamilies=): fall back to /proc.
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| read_proc(p))
        .flat_map(|t| parse_proc_net_tcp(&t))
        .collect()
}

/// The first process found holding `inode`, as `pid (comm)`.
fn holder(inode: u64) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        crate::platform::process::holds_socket(pid, inode).then(|| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} ({})", comm.trim())
        })
    })
}

pub(super) fn check(ctx: &Context<'_>, out: &mut Vec<Finding>) {
    let s = ctx.settings;
    let bind = match parse_bind(&s.bind.value) {
        Ok(b) => b,
        Err(why) => {
            out.push(Finding::new(
                Code::BindInvalid,
                "GUNICORN_BIND",
                format!("{:?} (from {}): {why}", s.bind.value, s.bind.source),
                "set GUNICORN_BIND=host:port, e.g. 0.0.0.0:8080",
            ));
            return;
        }
    };
    let on_port: Vec<Listener> = listeners()
        .into_iter()
        .filter(|l| overlaps(&bind, l))
        .collect();
    match ctx.inputs.phase {
        Phase::PreStart => {
            if let Some(l) = on_port.first() {
                let who = holder(l.inode)
                    .map(|h| format!(" by process {h}"))
                    .unwrap_or_default();
                out.push(Finding::new(
                    Code::PortInUse,
                    s.bind.value.clone(),
                    format!("port {} is already in use{who} ({}:{} listening)", bind.port, l.ip, l.port),
                    "stop whatever holds the port (a stale gunicorn from a manual start?), or run `warden check --phase running` if the app is meant to be up",
                ));
            }
        }
        Phase::Running => {
            use crate::platform::process::{Role, classify, holds_socket};
            let pid_path = &s.pid_file.value;
            let master = crate::platform::process::read_pid_file(pid_path);
            let role = master.as_ref().ok().map(|p| classify(*p));
            let held = match &master {
                Ok(pid) => on_port.iter().any(|l| holds_socket(*pid, l.inode)),
                Err(_) => false,
            };
            let problem = match (&master, &role, on_port.first()) {
                (Err(e), _, _) => Some(format!("the PID file: {e}")),
                (Ok(pid), Some(Role::NotRunning), _) => Some(format!(
                    "the PID file {} names {pid}, which is not running (a stale PID file)",
                    pid_path.display()
                )),
                (Ok(pid), Some(Role::NotGunicorn { comm }), _) => Some(format!(
                    "the PID file {} names {pid} ({comm}), which is not gunicorn",
                    pid_path.display()
                )),
                (Ok(pid), Some(Role::Worker { master }), _) => Some(format!(
                    "the PID file {} names {pid}, a gunicorn worker of master {master}, not the master",
                    pid_path.display()
                )),
                _ if held => None,
                (Ok(pid), _, None) => Some(format!(
                    "nothing listens on port {} (master {pid})",
                    bind.port
                )),
                (Ok(pid), _, Some(l)) => Some(format!(
                    "port {} is held by {}, not by the master {pid} named in {}",
                    bind.port,
                    holder(l.inode).unwrap_or_else(|| "another process".into()),
                    pid_path.display()
                )),
            };
            if let Some(why) = problem {
                out.push(Finding::new(
                    Code::PortNotHeld,
                    s.bind.value.clone(),
                    why,
                    "check the app unit (`systemctl status`) and that gunicorn runs with --pid \"${WATCHDOG_PID_FILE}\" --bind \"${GUNICORN_BIND}\"",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn binds() {
        assert_eq!(parse_bind("0.0.0.0:8080").unwrap().port, 8080);
        assert_eq!(
            parse_bind("[::1]:9").unwrap().ip,
            Some("::1".parse().unwrap())
        );
        assert!(parse_bind("localhost:80").unwrap().ip.is_none());
        for bad in [
            "8080",
            "0.0.0.0:",
            ":80",
            "h:0",
            "h:70000",
            "unix:/run/g.sock",
            "a b:1",
        ] {
            assert!(parse_bind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 100 0 0 10 0\n   1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 999 1\n";
        let l = parse_proc_net_tcp(t);
        assert_eq!(
            l,
            vec![Listener {
                ip: "127.0.0.1".parse().unwrap(),
                port: 8080,
                inode: 12345
            }]
        );
        let t6 = "h\n 0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0:0 0:0 0 0 0 77 1\n";
        assert_eq!(
            parse_proc_net_tcp(t6)[0].ip,
            "::1".parse::<IpAddr>().unwrap()
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,40}") {
            let _ = parse_bind(&s);
            let _ = parse_proc_net_tcp(&s);
        }
    }
}
