//! File primitives for files that matter: durable atomic replacement, and reading a file that
//! someone else controls without following links, blocking on a FIFO, or reading without bound.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("{0} is a symbolic link")]
    Symlink(PathBuf),
    #[error("{path} is not a regular file ({kind})")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What [`read_untrusted`] read, with the metadata of the very file it read (not of whatever
/// the path names by now).
#[derive(Debug)]
pub struct Untrusted {
    pub bytes: Vec<u8>,
    pub meta: std::fs::Metadata,
}

fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Reads at most `limit` bytes of a regular file. The last path component is never followed
/// if it is a symlink (O_NOFOLLOW), a FIFO or device is refused without blocking (O_NONBLOCK,
/// then fstat on the open descriptor), and a file larger than `limit` is refused unread.
pub fn read_untrusted(path: &Path, limit: u64) -> Result<Untrusted, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadError::Missing(path.to_path_buf()));
        }
        // ELOOP: the last component is a symlink.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(ReadError::Symlink(path.to_path_buf()));
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            kind: kind(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after fstat: never read past the limit.
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(Untrusted { bytes, meta })
}

/// Replaces `path` with `bytes` durably: a temporary file in the same directory (created
/// exclusively, never through a link), written and fsynced, renamed over `path`, then the
/// directory fsynced so the rename itself survives a crash. Readers see the old or the new
/// content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.{}.tmp", std::process::id(), nonce()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(OFlag::O_NOFOLLOW.bits())
            .open(&tmp)?;
        // The mode asked for, whatever the caller's umask: readers elsewhere depend on it.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes the temporary files [`write_atomic`] left beside `path` when its writer was killed
/// mid-write (`.<name>.<pid>.<n>.tmp`: a partial copy each, never read, only taking space).
/// For the one writer of `path` (the agent holding the state file's lock), at its start.
/// Returns how many it removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    let prefix = format!(".{name}.");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let mut removed = 0;
    for e in rd.flatten() {
        let n = e.file_name();
        let Some(mid) = n
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|n| n.strip_suffix(".tmp"))
        else {
            continue;
        };
        if mid
            .split_once('.')
            .is_some_and(|(p, x)| digits(p) && digits(x))
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// `p` with its symbolic links resolved, as Python's `Path.resolve()` does: the longest part
/// that exists is canonicalized, the rest is appended with `.` and `..` folded.
pub fn resolve_links(p: &Path) -> PathBuf {
    let parts: Vec<std::path::Component<'_>> = p.components().collect();
    // The longest prefix that exists, canonicalized; then the rest, folded.
    for cut in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..cut].iter().collect();
        if let Ok(mut out) = std::fs::canonicalize(&prefix) {
            for part in &parts[cut..] {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::CurDir => {}
                    other => out.push(other),
                }
            }
            return out;
        }
    }
    p.to_path_buf()
}

/// Flushes the directory holding `path`, so that an entry created or renamed there survives a
/// crash.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

fn nonce() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_links_fifos_and_large_files() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("secret");
        std::fs::write(&target, "s3cret").unwrap();
        let link = d.path().join("flag");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            read_untrusted(&link, 100),
            Err(ReadError::Symlink(_))
        ));

        let fifo = d.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Would block forever without O_NONBLOCK: there is no writer.
        assert!(matches!(
            read_untrusted(&fifo, 100),
            Err(ReadError::NotRegular { kind: "a FIFO", .. })
        ));

        let big = d.path().join("big");
        let f = File::create(&big).unwrap();
        f.set_len(1 << 30).unwrap(); // 1 GiB, sparse
        assert!(matches!(
            read_untrusted(&big, 65536),
            Err(ReadError::TooLarge { .. })
        ));

        assert!(matches!(
            read_untrusted(d.path(), 100),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(matches!(
            read_untrusted(&d.path().join("none"), 100),
            Err(ReadError::Missing(_))
        ));
        assert_eq!(read_untrusted(&target, 100).unwrap().bytes, b"s3cret");
    }

    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stale_temp_files_of_a_killed_writer_are_removed_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"{}", 0o640).unwrap();
        for n in [
            ".state.json.123.456.tmp",
            ".state.json.9.1.tmp",
            // Not a temp file of `state.json`'s: kept.
            ".state.json.x.1.tmp",
            ".other.json.1.2.tmp",
            "state.json.lock",
            "state.json.intent",
        ] {
            std::fs::write(d.path().join(n), "partial").unwrap();
        }
        assert_eq!(remove_stale_temps(&p), 2);
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".other.json.1.2.tmp",
                ".state.json.x.1.tmp",
                "state.json",
                "state.json.intent",
                "state.json.lock"
            ]
        );
    }

    #[test]
    fn links_resolve_as_far_as_the_path_exists() {
        let d = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(root.join("run")).unwrap();
        std::fs::create_dir(root.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("run/link")).unwrap();
        assert_eq!(
            resolve_links(&root.join("run/link/flag")),
            root.join("elsewhere/flag")
        );
        assert_eq!(
            resolve_links(&root.join("run/missing/../flag")),
            root.join("run/flag")
        );
        assert_eq!(resolve_links(&root.join("run")), root.join("run"));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one", 0o640).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        // A symlink in place of the target is replaced, not followed.
        let outside = d.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&outside, &p).unwrap();
        write_atomic(&p, b"three", 0o640).unwrap();
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
        assert!(
            !std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}
