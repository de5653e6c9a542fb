//! The intent record: a restart is recorded as intended before the master is signalled, so
//! that a crash between the signal and the outcome's record leaves an entry, never nothing.
//!
//! The state file's durable write (temp file, fsync, rename, fsync of the directory) costs about
//! a millisecond on a journaled file system and several at its tail; between the flag and the
//! signal it was most of the latency. The intent goes instead to `<state file>.intent`, one
//! preallocated block overwritten in place: written before the signal (an agent killed at any
//! point after it leaves the record in the page cache, which outlives the process), flushed
//! with `fdatasync` right after the signal (which commits no metadata). Only a power loss in
//! the fraction of a millisecond between the two could lose it, and that takes the Gunicorn
//! master and the reload with it. The state file records the outcome afterwards, durably as
//! before; at start, an intent whose entry the history does not hold is added as an unknown
//! outcome.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::ledger::state::Entry;

/// One record fills the file: a header line, then the entry's JSON, then zeros.
const RECORD: usize = 4096;
const MAGIC: &[u8; 17] = b"warden-intent v1 ";
/// `MAGIC`, the JSON's length (8 digits), a space, its FNV-1a hash (16 hex digits), `\n`.
const HEADER: usize = MAGIC.len() + 8 + 1 + 16 + 1;

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0}: not a regular file with a single link; refusing to write through it")]
    NotPlain(PathBuf),
}

pub struct IntentLog {
    file: File,
    path: PathBuf,
    /// Whether the file holds an intent not yet followed by the state file's record.
    armed: bool,
}

/// `<state file>.intent`.
pub fn path_for(state_path: &Path) -> PathBuf {
    let mut name = state_path.file_name().unwrap_or_default().to_os_string();
    name.push(".intent");
    state_path.with_file_name(name)
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The entry a record holds, if it is whole (a torn or cleared record holds none).
pub fn decode(buf: &[u8]) -> Option<Entry> {
    let head = buf.get(..HEADER)?;
    let rest = head.strip_prefix(MAGIC.as_slice())?;
    let text = std::str::from_utf8(rest).ok()?;
    let (len, hash) = text.strip_suffix('\n')?.split_once(' ')?;
    let len: usize = len.parse().ok()?;
    let hash = u64::from_str_radix(hash, 16).ok()?;
    let json = buf.get(HEADER..HEADER.checked_add(len)?)?;
    (fnv1a(json) == hash)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

/// The record for `e`, or `None` when its JSON does not fit in one block.
pub fn encode(e: &Entry) -> Option<Vec<u8>> {
    let json = serde_json::to_vec(e).ok()?;
    if json.len() > RECORD - HEADER {
        return None;
    }
    let mut buf = Vec::with_capacity(RECORD);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(format!("{:08} {:016x}\n", json.len(), fnv1a(&json)).as_bytes());
    buf.extend_from_slice(&json);
    buf.resize(RECORD, 0);
    Some(buf)
}

impl IntentLog {
    /// Opens (creating and preallocating on first use) the intent file next to the state file.
    pub fn open(state_path: &Path) -> Result<IntentLog, IntentError> {
        let path = path_for(state_path);
        let io_err = |source| IntentError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
            .map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() || std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
            return Err(IntentError::NotPlain(path));
        }
        if meta.len() < RECORD as u64 {
            // Allocated once, so that each intent is an overwrite with no metadata to commit.
            file.write_all_at(&[0; RECORD], 0).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
            crate::platform::fs::sync_dir(&path).map_err(io_err)?;
        }
        Ok(IntentLog {
            file,
            path,
            armed: true,
        })
    }

    /// Writes `e` as the pending intent (see [`IntentLog::sync`]). `Ok(false)`: it does not fit
    /// in a record, and the caller must record it another way.
    pub fn record(&mut self, e: &Entry) -> Result<bool, IntentError> {
        let Some(buf) = encode(e) else {
            return Ok(false);
        };
        let io_err = |source| IntentError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all_at(&buf, 0).map_err(io_err)?;
        self.armed = true;
        Ok(true)
    }

    /// Flushes the intent to the disk.
    pub fn sync(&mut self) -> Result<(), IntentError> {
        self.file.sync_data().map_err(|source| IntentError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// The pending intent, if any.
    pub fn pending(&self) -> Option<Entry> {
        let mut buf = vec![0; RECORD];
        let n = self.file.read_at(&mut buf, 0).ok()?;
        decode(&buf[..n])
    }

    /// Forgets the intent once the state file holds its outcome. Not flushed: an intent that
    /// survives a crash is recognised by its id in the history.
    pub fn clear(&mut self) {
        if std::mem::take(&mut self.armed)
            && let Err(e) = self.file.write_all_at(&[0; HEADER], 0)
        {
            self.armed = true;
            tracing::warn!(error = %e, path = %self.path.display(), "cannot clear the intent record");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(id: &str) -> Entry {
        Entry {
            id: Some(id.into()),
            decision: Some(crate::ledger::model::Decision::Intended.into()),
            requested_by: Some("alice".into()),
            ..Entry::default()
        }
    }

    #[test]
    fn round_trip_clear_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state.json");
        let mut log = IntentLog::open(&state).unwrap();
        assert!(log.pending().is_none());
        assert!(log.record(&entry("1-2")).unwrap());
        log.sync().unwrap();
        assert_eq!(log.pending().unwrap().id.as_deref(), Some("1-2"));
        drop(log);
        let mut log = IntentLog::open(&state).unwrap();
        assert_eq!(log.pending().unwrap().id.as_deref(), Some("1-2"));
        log.clear();
        assert!(log.pending().is_none());
        // Too big for a record: the caller is told.
        let mut big = entry("3");
        big.override_reason = Some("x".repeat(RECORD));
        assert!(!log.record(&big).unwrap());
    }

    #[test]
    fn a_symlink_in_place_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state.json");
        std::os::unix::fs::symlink("/etc/passwd", path_for(&state)).unwrap();
        assert!(IntentLog::open(&state).is_err());
    }

    proptest! {
        /// A torn write (any prefix of a record over an older one) never decodes as a
        /// different entry: it is the old one, the new one, or none.
        #[test]
        fn torn_records_are_whole_or_nothing(cut in 0usize..RECORD, id in "[0-9a-z-]{1,20}") {
            let old = encode(&entry("old")).unwrap();
            let new = encode(&entry(&id)).unwrap();
            let mut buf = old.clone();
            buf[..cut].copy_from_slice(&new[..cut]);
            let got = decode(&buf).and_then(|e| e.id);
            prop_assert!(got.is_none() || got.as_deref() == Some("old") || got == Some(id));
        }

        #[test]
        fn any_bytes_decode_or_not(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&b);
        }
    }
}
