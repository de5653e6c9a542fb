//! The restart flag: claiming it, deciding whether to trust it, and parsing what it asks.
//!
//! The MES admin API writes the flag atomically (`<flag>.tmp`, then rename) as JSON; an empty
//! file (`touch`) is a plain manual request. A flag is claimed by renaming it away first, so a
//! flag written while another is processed is never lost, then read without following links,
//! without blocking on a FIFO and up to 64 KiB. One that fails a rule is consumed and
//! reported with a named reason: nothing loops on a bad flag.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::ledger::model::{Reason, RequestSource};
use crate::ledger::policy::Request;

/// The largest flag read.
pub const MAX_FLAG_BYTES: u64 = 64 * 1024;
/// The longest text field kept from a flag.
const MAX_FIELD: usize = 1024;

/// What a flag asks for, as the MES admin API writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FlagRequest {
    pub user: Option<String>,
    pub ip: Option<String>,
    pub timestamp: Option<String>,
    pub worker_pid: Option<i64>,
    pub source: RequestSource,
    pub manual_override: bool,
    pub override_acknowledged: bool,
    pub override_reason: Option<String>,
    pub runtime_contract_version: Option<String>,
    /// Why it was asked: the D-Bus API's reason, or a queued flag's `reason` (a field of
    /// warden's own; the admin API does not write it and the original ignores it).
    pub reason: Option<String>,
}

impl FlagRequest {
    /// The request the policy decides.
    pub fn policy_request(&self) -> Request {
        Request {
            source: self.source,
            manual_override: self.manual_override,
            override_acknowledged: self.override_acknowledged,
            override_reason: self.override_reason.clone(),
        }
    }
}

/// Why a flag was not executed. Shown as its stable reason, then what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Symlink,
    NotRegular(&'static str),
    TooLarge(u64),
    WorldWritable(u32),
    UntrustedOwner(u32),
    NotJson(String),
    InvalidField(String),
    DirReplaced(String),
    DirUnsafe(u32),
    /// The agent's user may not read it (a root-only file): it would be claimed again and
    /// again, so it is consumed and reported like any other broken flag.
    Unreadable(String),
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.reason())?;
        match self {
            Rejection::Symlink => f.write_str("the flag is a symbolic link"),
            Rejection::NotRegular(kind) => write!(f, "the flag is {kind}"),
            Rejection::TooLarge(n) => write!(f, "the flag is {n} bytes, over {MAX_FLAG_BYTES}"),
            Rejection::WorldWritable(mode) => {
                write!(f, "the flag's mode {mode:04o} lets any user write it")
            }
            Rejection::UntrustedOwner(uid) => write!(
                f,
                "the flag is owned by uid {uid}, not root, the service user or a member of the admin group"
            ),
            Rejection::NotJson(why)
            | Rejection::InvalidField(why)
            | Rejection::DirReplaced(why) => f.write_str(why),
            Rejection::Unreadable(why) => write!(
                f,
                "the agent's user cannot read the flag ({why}); write it readable by the service user"
            ),
            Rejection::DirUnsafe(mode) => write!(
                f,
                "the flag's directory has mode {mode:04o}: others may write in it and it has no sticky bit"
            ),
        }
    }
}

impl std::error::Error for Rejection {}

impl Rejection {
    /// The stable reason, for the history's `decision_reason`.
    pub fn reason(&self) -> Reason {
        match self {
            Rejection::Symlink => Reason::FlagSymlink,
            Rejection::NotRegular(_) => Reason::FlagNotRegular,
            Rejection::TooLarge(_) => Reason::FlagTooLarge,
            Rejection::WorldWritable(_) => Reason::FlagWorldWritable,
            Rejection::UntrustedOwner(_) => Reason::FlagUntrustedOwner,
            Rejection::NotJson(_) => Reason::FlagNotJson,
            Rejection::InvalidField(_) => Reason::FlagInvalidField,
            Rejection::DirReplaced(_) => Reason::FlagDirReplaced,
            Rejection::DirUnsafe(_) => Reason::FlagDirUnsafe,
            Rejection::Unreadable(_) => Reason::FlagUnreadable,
        }
    }
}

/// The flag's directory as the agent found it at its start (where its inotify watch is).
/// The directory may change under a running agent: before each request, [`FlagDir::check`]
/// makes sure the flag's path still leads into it, and that others still cannot write in it
/// without the sticky bit (the start's rule P05) unless it was so at the start already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDir {
    dev: u64,
    ino: u64,
    /// The path was a symbolic link at the start (the start's check then reported it).
    link: bool,
    /// Others could write in it without the sticky bit at the start (reported then too).
    open: bool,
}

fn dir_of(flag: &Path) -> &Path {
    flag.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn open_to_others(mode: u32) -> bool {
    mode & 0o022 != 0 && mode & 0o1000 == 0
}

impl FlagDir {
    /// Pins the directory holding `flag`, as it is now.
    pub fn pin(flag: &Path) -> std::io::Result<FlagDir> {
        let dir = dir_of(flag);
        let link = std::fs::symlink_metadata(dir)?.file_type().is_symlink();
        let m = std::fs::metadata(dir)?;
        Ok(FlagDir {
            dev: m.dev(),
            ino: m.ino(),
            link,
            open: open_to_others(m.mode()),
        })
    }

    /// Whether a request may be taken from `flag`'s directory now.
    pub fn check(&self, flag: &Path) -> Result<(), Rejection> {
        let dir = dir_of(flag);
        let replaced =
            |what: String| Err(Rejection::DirReplaced(format!("{} {what}", dir.display())));
        if !self.link && std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return replaced("is now a symbolic link".into());
        }
        let m = match std::fs::metadata(dir) {
            Ok(m) => m,
            Err(e) => return replaced(format!("is gone ({e})")),
        };
        if (m.dev(), m.ino()) != (self.dev, self.ino) {
            return replaced("is another directory than the one watched since the start".into());
        }
        if !self.open && open_to_others(m.mode()) {
            return Err(Rejection::DirUnsafe(m.mode() & 0o7777));
        }
        Ok(())
    }
}

fn text(obj: &serde_json::Map<String, Value>, k: &str) -> Result<Option<String>, Rejection> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_FIELD => Ok(Some(s.clone())),
        Some(Value::String(s)) => Err(Rejection::InvalidField(format!(
            "{k} is {} bytes, over {MAX_FIELD}",
            s.len()
        ))),
        Some(other) => Err(Rejection::InvalidField(format!(
            "{k} is not a string: {other}"
        ))),
    }
}

fn flag_bool(obj: &serde_json::Map<String, Value>, k: &str) -> Result<bool, Rejection> {
    match obj.get(k) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Rejection::InvalidField(format!(
            "{k} is not a boolean: {other}"
        ))),
    }
}

/// Parses a flag's content. Empty (or blank) is a plain manual request.
pub fn parse(bytes: &[u8]) -> Result<FlagRequest, Rejection> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(FlagRequest::default());
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| Rejection::NotJson(e.to_string()))?;
    let Value::Object(obj) = v else {
        return Err(Rejection::NotJson(
            "the flag is JSON but not an object".into(),
        ));
    };
    // A flag asks as an operator or as automation; a rollback is the kill-switch's to ask.
    let source = match text(&obj, "source")? {
        None => RequestSource::Manual,
        // As the original reads it: `"Auto"` and `" manual"` are words it knows.
        Some(s) => match RequestSource::parse(&s.trim().to_ascii_lowercase()) {
            Some(src @ (RequestSource::Manual | RequestSource::Auto)) => src,
            _ => {
                return Err(Rejection::InvalidField(format!(
                    "source is {s:?}; it must be {:?} or {:?}",
                    RequestSource::Manual.as_str(),
                    RequestSource::Auto.as_str()
                )));
            }
        },
    };
    let worker_pid = match obj.get("worker_pid") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_i64(),
        Some(other) => {
            return Err(Rejection::InvalidField(format!(
                "worker_pid is not a number: {other}"
            )));
        }
    };
    Ok(FlagRequest {
        user: text(&obj, "user")?,
        ip: text(&obj, "ip")?,
        timestamp: text(&obj, "timestamp")?,
        worker_pid,
        source,
        manual_override: flag_bool(&obj, "manual_override")?,
        override_acknowledged: flag_bool(&obj, "override_acknowledged")?,
        override_reason: text(&obj, "override_reason")?,
        runtime_contract_version: text(&obj, "runtime_contract_version")?,
        reason: text(&obj, "reason")?,
    })
}

/// Who may write a flag: root, the service user, and members of the admin group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trust {
    pub uids: Vec<u32>,
}

impl Trust {
    /// Root, the user the agent runs as (the service user), and the admins.
    pub fn new(admins: &crate::platform::accounts::Admins) -> Trust {
        let mut uids = vec![0, nix::unistd::geteuid().as_raw()];
        uids.extend(&admins.uids);
        uids.sort_unstable();
        uids.dedup();
        Trust { uids }
    }

    /// Checks the metadata of the file actually read.
    pub fn check(&self, meta: &std::fs::Metadata) -> Result<(), Rejection> {
        if meta.mode() & 0o002 != 0 {
            return Err(Rejection::WorldWritable(meta.mode() & 0o7777));
        }
        if !self.uids.contains(&meta.uid()) {
            return Err(Rejection::UntrustedOwner(meta.uid()));
        }
        Ok(())
    }
}

/// Who a flag says asked, for the record of a flag that broke a rule: read leniently (a field
/// of another type, or too long, is left out), and only from a flag whose owner is trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asker {
    pub user: Option<String>,
    pub ip: Option<String>,
    pub timestamp: Option<String>,
}

impl Asker {
    fn read(bytes: &[u8]) -> Asker {
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(bytes) else {
            return Asker::default();
        };
        let field = |k: &str| text(&obj, k).ok().flatten();
        Asker {
            user: field("user"),
            ip: field("ip"),
            timestamp: field("timestamp"),
        }
    }
}

/// A flag taken from its path, read and judged.
#[derive(Debug)]
pub struct Claimed {
    /// Where it was moved to while it is processed (removed by [`Claimed::finish`]).
    pub claimed_path: PathBuf,
    pub result: Result<FlagRequest, Rejection>,
    /// Who a rejected flag says asked (empty when it could not be read or was not trusted).
    pub asker: Asker,
    /// When the flag was last written (its mtime): the start of the flag-to-signal latency.
    pub written_at: Option<std::time::SystemTime>,
}

impl Claimed {
    /// Removes the claimed file: the flag is consumed whatever the outcome. Once its request
    /// is in the ledger it is not queued again, even by an agent that stops right after.
    pub fn finish(&self) -> std::io::Result<()> {
        match std::fs::symlink_metadata(&self.claimed_path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&self.claimed_path),
            Ok(_) => std::fs::remove_file(&self.claimed_path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A request queued as a flag, as the MES admin API writes it (for when no agent answers).
#[derive(Debug, Serialize)]
pub struct Queued<'a> {
    pub user: Option<&'a str>,
    pub timestamp: String,
    pub source: RequestSource,
    pub manual_override: bool,
    pub override_acknowledged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_reason: Option<&'a str>,
    pub runtime_contract_version: &'a str,
    pub reason: &'a str,
}

/// Writes the flag atomically, for the agent to take when it starts or sees it. Readable by
/// all: root may queue it, and the agent runs as the service user (nothing in it is secret).
pub fn queue(flag: &Path, request: &Queued<'_>) -> std::io::Result<()> {
    let body = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    crate::platform::fs::write_atomic(flag, &body, 0o644)
}

/// Puts back requests that agents claimed and never finished (they were killed in between):
/// one becomes the flag again when there is none, the rest are removed, as flags arriving
/// together coalesce anyway. A claim of an agent in `spent` (its intent was recorded, so its
/// signal may have gone out) is removed, never put back: a request is carried out at most
/// once. Returns how many were put back.
pub fn requeue_stale_claims(flag: &Path, spent: &[u32]) -> usize {
    let (Some(dir), Some(name)) = (flag.parent(), flag.file_name()) else {
        return 0;
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".claimed.");
    let prefix = prefix.to_string_lossy().into_owned();
    let mine = format!("{prefix}{}", std::process::id());
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut found = 0;
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with(&prefix) || n == mine {
            continue;
        }
        let owner = n[prefix.len()..].parse::<u32>().ok();
        if !owner.is_some_and(|pid| spent.contains(&pid)) {
            found += 1;
            // A link fails when a flag is there already (rename would clobber it); either way
            // the claimed name goes.
            let _ = std::fs::hard_link(e.path(), flag);
        }
        let _ = std::fs::remove_file(e.path());
    }
    found
}

/// Takes the flag at `flag` if there is one: renamed to a private name in the same directory
/// (a rename moves a symlink itself, never its target), then read and judged. `Ok(None)` when
/// there is no flag.
pub fn claim(flag: &Path, trust: &Trust) -> std::io::Result<Option<Claimed>> {
    let mut name = std::ffi::OsString::from(".");
    name.push(flag.file_name().unwrap_or_default());
    name.push(format!(".claimed.{}", std::process::id()));
    let claimed_path = flag.with_file_name(name);
    match std::fs::rename(flag, &claimed_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    use crate::platform::fs::{ReadError, read_untrusted};
    let mut written_at = None;
    let mut asker = Asker::default();
    let result = match read_untrusted(&claimed_path, MAX_FLAG_BYTES) {
        Ok(u) => {
            written_at = u.meta.modified().ok();
            trust
                .check(&u.meta)
                .and_then(|()| parse(&u.bytes).inspect_err(|_| asker = Asker::read(&u.bytes)))
        }
        Err(ReadError::Symlink(_)) => Err(Rejection::Symlink),
        Err(ReadError::NotRegular { kind, .. }) => Err(Rejection::NotRegular(kind)),
        Err(ReadError::TooLarge { size, .. }) => Err(Rejection::TooLarge(size)),
        Err(ReadError::Missing(_)) => return Ok(None),
        Err(ReadError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(Rejection::Unreadable(source.to_string()))
        }
        Err(ReadError::Io { source, .. }) => return Err(source),
    };
    Ok(Some(Claimed {
        claimed_path,
        result,
        asker,
        written_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_and_admin_api_flags() {
        assert_eq!(parse(b"").unwrap().source, RequestSource::Manual);
        assert_eq!(
            parse(b" \n").unwrap().policy_request().source,
            RequestSource::Manual
        );
        let f = parse(
            br#"{"user": "admin", "ip": "10.0.0.5", "timestamp": "2026-02-10T08:00:00+00:00",
                 "worker_pid": 4242, "source": "manual", "manual_override": true,
                 "override_acknowledged": true, "override_reason": "db failover",
                 "policy_state": {"state": "blocked"}, "policy_decision": "blocked",
                 "runtime_contract_version": "2026.02-p2"}"#,
        )
        .unwrap();
        assert_eq!(f.user.as_deref(), Some("admin"));
        assert_eq!(f.worker_pid, Some(4242));
        let r = f.policy_request();
        assert!(r.manual_override && r.override_acknowledged);
        assert_eq!(
            parse(br#"{"source": "auto"}"#)
                .unwrap()
                .policy_request()
                .source,
            RequestSource::Auto
        );
    }

    #[test]
    fn bad_flags_are_named() {
        assert_eq!(parse(b"{").unwrap_err().reason().as_str(), "flag_not_json");
        assert_eq!(
            parse(b"[1]").unwrap_err().reason().as_str(),
            "flag_not_json"
        );
        assert_eq!(
            parse(br#"{"source": "cron"}"#)
                .unwrap_err()
                .reason()
                .as_str(),
            "flag_invalid_field"
        );
        assert_eq!(
            parse(br#"{"manual_override": "yes"}"#)
                .unwrap_err()
                .reason()
                .as_str(),
            "flag_invalid_field"
        );
        let long = format!(r#"{{"override_reason": "{}"}}"#, "x".repeat(2000));
        assert_eq!(
            parse(long.as_bytes()).unwrap_err().reason().as_str(),
            "flag_invalid_field"
        );
    }

    #[test]
    fn claiming_refuses_links_fifos_and_strangers_and_consumes_them() {
        let d = tempfile::tempdir().unwrap();
        let flag = d.path().join("restart.flag");
        let me = Trust {
            uids: vec![nix::unistd::geteuid().as_raw()],
        };
        assert!(claim(&flag, &me).unwrap().is_none());

        std::fs::write(&flag, "").unwrap();
        let c = claim(&flag, &me).unwrap().unwrap();
        assert_eq!(c.result.as_ref().unwrap().source, RequestSource::Manual);
        assert!(!flag.exists(), "claimed away at once");
        c.finish().unwrap();

        std::os::unix::fs::symlink("/etc/shadow", &flag).unwrap();
        let c = claim(&flag, &me).unwrap().unwrap();
        assert_eq!(c.result.as_ref().unwrap_err(), &Rejection::Symlink);
        c.finish().unwrap();
        assert!(
            std::fs::metadata("/etc/shadow").is_ok(),
            "the target is untouched"
        );

        nix::unistd::mkfifo(&flag, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let c = claim(&flag, &me).unwrap().unwrap();
        assert_eq!(
            c.result.as_ref().unwrap_err().reason().as_str(),
            "flag_not_regular"
        );
        c.finish().unwrap();

        std::fs::write(&flag, "").unwrap();
        let stranger = Trust { uids: vec![12345] };
        let c = claim(&flag, &stranger).unwrap().unwrap();
        assert_eq!(
            c.result.as_ref().unwrap_err().reason().as_str(),
            "flag_untrusted_owner"
        );
        c.finish().unwrap();

        std::fs::write(&flag, "").unwrap();
        std::fs::set_permissions(&flag, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        let c = claim(&flag, &me).unwrap().unwrap();
        assert_eq!(
            c.result.as_ref().unwrap_err().reason().as_str(),
            "flag_world_writable"
        );
        c.finish().unwrap();
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "nothing is left behind"
        );
    }

    #[test]
    fn the_flag_directory_must_stay_the_one_pinned_and_closed_to_others() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let flag = dir.join("restart.flag");
        let pin = FlagDir::pin(&flag).unwrap();
        assert_eq!(pin.check(&flag), Ok(()));
        // Others may write, without the sticky bit: refused; with it (as /tmp): taken.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            pin.check(&flag).unwrap_err().reason().as_str(),
            "flag_dir_unsafe"
        );
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(pin.check(&flag), Ok(()));
        // Open at the start already (RUNTIME_CONTRACT_ENFORCE=false ran it anyway): kept.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(FlagDir::pin(&flag).unwrap().check(&flag), Ok(()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Moved away and replaced by a link, or by another directory, or gone.
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&dir, d.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
        assert_eq!(
            pin.check(&flag).unwrap_err().reason().as_str(),
            "flag_dir_replaced"
        );
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(
            pin.check(&flag).unwrap_err().reason().as_str(),
            "flag_dir_replaced"
        );
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(
            pin.check(&flag).unwrap_err().reason().as_str(),
            "flag_dir_replaced"
        );
        std::fs::rename(d.path().join("moved"), &dir).unwrap();
        assert_eq!(pin.check(&flag), Ok(()), "back in place");
    }

    #[test]
    fn stale_claims_are_queued_again_without_clobbering_a_new_flag() {
        let d = tempfile::tempdir().unwrap();
        let flag = d.path().join("restart.flag");
        std::fs::write(
            d.path().join(".restart.flag.claimed.1"),
            "{\"user\": \"a\"}",
        )
        .unwrap();
        std::fs::write(
            d.path().join(".restart.flag.claimed.2"),
            "{\"user\": \"b\"}",
        )
        .unwrap();
        assert_eq!(requeue_stale_claims(&flag, &[]), 2);
        assert!(flag.exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        std::fs::write(&flag, "new").unwrap();
        std::fs::write(d.path().join(".restart.flag.claimed.3"), "old").unwrap();
        assert_eq!(requeue_stale_claims(&flag, &[]), 1);
        assert_eq!(std::fs::read_to_string(&flag).unwrap(), "new");
    }

    #[test]
    fn a_claim_whose_intent_was_recorded_is_spent_not_queued_again() {
        let d = tempfile::tempdir().unwrap();
        let flag = d.path().join("restart.flag");
        std::fs::write(d.path().join(".restart.flag.claimed.41"), "{}").unwrap();
        assert_eq!(requeue_stale_claims(&flag, &[41]), 0);
        assert!(
            !flag.exists(),
            "a request that may have been signalled ran again"
        );
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    proptest! {
        #[test]
        fn any_bytes_are_parsed_or_rejected(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&b);
        }
    }
}
