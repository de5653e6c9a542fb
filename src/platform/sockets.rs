//! Listening TCP sockets, from the kernel's sock_diag netlink interface (what `ss -ltn` uses),
//! else from `/proc/net/tcp{,6}`, and the process holding one.
//!
//! Asking for the LISTEN state only lets the kernel skip the established-socket hash, which
//! `/proc/net/tcp` walks in full on every read (about a millisecond per read on a large-memory
//! machine, even with no connections). Used by the contract check and the watchdog.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

/// A listening TCP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub ip: IpAddr,
    pub port: u16,
    pub inode: u64,
}

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
const REQ_LEN: usize = 56;
/// `inet_diag_msg`: family, state, timer, retrans, sockid (48 bytes), expires, rqueue, wqueue,
/// uid, inode.
const MSG_LEN: usize = 72;

/// Every listening TCP socket (IPv4 and IPv6) in this network namespace, from sock_diag.
pub fn diag_listeners() -> std::io::Result<Vec<Listener>> {
    // SAFETY: plain socket(2); the fd is owned by `OwnedFd` from here on.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh, valid descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        query(&sock, family, &mut out)?;
    }
    Ok(out)
}

fn query(sock: &OwnedFd, family: u8, out: &mut Vec<Listener>) -> std::io::Result<()> {
    let mut req = [0u8; NLMSG_HDR + REQ_LEN];
    req[0..4].copy_from_slice(&((NLMSG_HDR + REQ_LEN) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[NLMSG_HDR] = family;
    req[NLMSG_HDR + 1] = libc::IPPROTO_TCP as u8;
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
    // SAFETY: an all-zero sockaddr_nl addresses the kernel.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: `req` and `addr` outlive the call; lengths are theirs.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if parse(&buf[..n as usize], out)? {
            return Ok(());
        }
    }
}

/// Parses one datagram of replies; `Ok(true)` once the dump is done.
pub fn parse(mut b: &[u8], out: &mut Vec<Listener>) -> std::io::Result<bool> {
    let u32_at = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0) as usize;
        let ty = u16::from_ne_bytes([b[4], b[5]]);
        if len < NLMSG_HDR || len > b.len() {
            return Err(std::io::Error::other("malformed netlink message"));
        }
        match ty as i32 {
            libc::NLMSG_DONE => return Ok(true),
            libc::NLMSG_ERROR => {
                let errno = b
                    .get(NLMSG_HDR..NLMSG_HDR + 4)
                    .map(|e| i32::from_ne_bytes([e[0], e[1], e[2], e[3]]))
                    .unwrap_or(0);
                return Err(std::io::Error::from_raw_os_error(-errno));
            }
            _ if len >= NLMSG_HDR + MSG_LEN => {
                let m = &b[NLMSG_HDR..len];
                let port = u16::from_be_bytes([m[4], m[5]]);
                let src = &m[8..24];
                let ip = if m[0] == libc::AF_INET as u8 {
                    IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
                } else {
                    let mut a = [0u8; 16];
                    a.copy_from_slice(src);
                    IpAddr::V6(Ipv6Addr::from(a))
                };
                out.push(Listener {
                    ip,
                    port,
                    inode: u32_at(m, 68) as u64,
                });
            }
            _ => {}
        }
        let advance = (len + 3) & !3;
        b = b.get(advance..).unwrap_or(&[]);
    }
    Ok(false)
}

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

/// Every listening TCP socket: from sock_diag, else from `/proc/net/tcp{,6}`.
pub fn listeners() -> Vec<Listener> {
    if let Ok(l) = diag_listeners() {
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
pub fn holder(inode: u64) -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        super::process::holds_socket(pid, inode).then(|| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid} ({})", comm.trim())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn sees_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = diag_listeners().unwrap();
        let mine: Vec<_> = found.iter().filter(|x| x.port == port).collect();
        assert_eq!(mine.len(), 1, "{found:?}");
        assert_eq!(mine[0].ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        use std::os::unix::fs::MetadataExt;
        let fd = format!("/proc/self/fd/{}", l.as_raw_fd());
        let link = std::fs::read_link(&fd).unwrap();
        assert_eq!(
            link.to_string_lossy(),
            format!("socket:[{}]", mine[0].inode)
        );
        let _ = std::fs::metadata(fd).map(|m| m.ino());
    }

    proptest! {
        #[test]
        fn hostile_replies_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&b, &mut Vec::new());
            let _ = parse_proc_net_tcp(&String::from_utf8_lossy(&b));
        }
    }
}
