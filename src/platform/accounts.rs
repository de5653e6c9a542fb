//! Local accounts: a user's uid, primary gid and supplementary groups.
//!
//! `/etc/passwd` and `/etc/group` are read first: a service user is almost always local, and NSS
//! modules such as nss-systemd cost milliseconds per lookup (they load libraries and try varlink
//! sockets), which matters in an `ExecStartPre=`. A name not found there goes through NSS, so
//! users from LDAP or SSSD still resolve.

use nix::unistd::{Gid, Uid};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: Uid,
    pub gid: Gid,
    /// The primary group and every supplementary group.
    pub groups: Vec<Gid>,
}

/// Finds `name` (or a numeric uid) in `passwd` text: `(name, uid, gid)`.
pub fn parse_passwd(text: &str, name: &str) -> Option<(String, u32, u32)> {
    let by_uid = name.parse::<u32>().ok();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let uid = f[2].parse().ok()?;
        let gid = f[3].parse().ok()?;
        (f[0] == name || by_uid == Some(uid)).then(|| (f[0].to_string(), uid, gid))
    })
}

/// The gids of the groups in `group` text that list `user` as a member.
pub fn parse_group_members(text: &str, user: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m.trim() == user))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

/// The gid of group `name` (or a numeric gid) in `group` text.
pub fn parse_group_gid(text: &str, name: &str) -> Option<u32> {
    let by_gid = name.parse::<u32>().ok();
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let gid = f.get(2)?.parse().ok()?;
        (f[0] == name || by_gid == Some(gid)).then_some(gid)
    })
}

/// The uids of every member of group `gid`: users whose primary group it is (`passwd`) and
/// users the group lists (`group`).
pub fn group_member_uids(passwd: &str, group: &str, gid: u32) -> Vec<u32> {
    let listed: Vec<&str> = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(gid)).then(|| f[3])
        })
        .flat_map(|m| m.split(',').map(str::trim))
        .filter(|m| !m.is_empty())
        .collect();
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let uid = f[2].parse::<u32>().ok()?;
            let primary = f[3].parse::<u32>().ok() == Some(gid);
            (primary || listed.contains(&f[0])).then_some(uid)
        })
        .collect()
}

/// Resolves a user by name or uid.
pub fn lookup(name: &str) -> Option<Account> {
    if let Some((uname, uid, gid)) = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| parse_passwd(&t, name))
    {
        let mut groups = vec![Gid::from_raw(gid)];
        if let Ok(t) = std::fs::read_to_string("/etc/group") {
            groups.extend(
                parse_group_members(&t, &uname)
                    .into_iter()
                    .map(Gid::from_raw),
            );
        }
        groups.dedup();
        return Some(Account {
            name: uname,
            uid: Uid::from_raw(uid),
            gid: Gid::from_raw(gid),
            groups,
        });
    }
    let u = match name.parse::<u32>() {
        Ok(n) => nix::unistd::User::from_uid(Uid::from_raw(n)),
        Err(_) => nix::unistd::User::from_name(name),
    }
    .ok()??;
    let cname = std::ffi::CString::new(u.name.clone()).ok()?;
    let groups = nix::unistd::getgrouplist(&cname, u.gid).unwrap_or_else(|_| vec![u.gid]);
    Some(Account {
        name: u.name,
        uid: u.uid,
        gid: u.gid,
        groups,
    })
}

/// The name of `uid`, from /etc/passwd, else NSS.
pub fn user_name(uid: u32) -> Option<String> {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| parse_passwd(&t, &uid.to_string()))
        .map(|(n, _, _)| n)
        .or_else(|| {
            nix::unistd::User::from_uid(Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
        })
}

/// Resolves a group by name or gid.
pub fn group_gid(name: &str) -> Option<Gid> {
    if let Some(g) = std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|t| parse_group_gid(&t, name))
    {
        return Some(Gid::from_raw(g));
    }
    match name.parse::<u32>() {
        Ok(n) => Some(Gid::from_raw(n)),
        Err(_) => nix::unistd::Group::from_name(name).ok()?.map(|g| g.gid),
    }
}

/// The members of the admin group (`WARDEN_ADMIN_GROUP`), resolved once: who may write the
/// restart flag and call the mutating D-Bus methods besides root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admins {
    /// The group's gid, when it exists.
    pub gid: Option<u32>,
    /// Every user whose primary or supplementary group it is.
    pub uids: Vec<u32>,
}

impl Admins {
    /// Resolves `group` (a name or gid) from /etc/group and /etc/passwd, else NSS.
    pub fn resolve(group: Option<&str>) -> Admins {
        let Some(gid) = group.and_then(group_gid) else {
            return Admins::default();
        };
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        Admins {
            gid: Some(gid.as_raw()),
            uids: group_member_uids(&read("/etc/passwd"), &read("/etc/group"), gid.as_raw()),
        }
    }

    /// Whether the user `uid`, member of `gids` when known, is root or an admin.
    pub fn admit(&self, uid: u32, gids: Option<&[u32]>) -> bool {
        uid == 0
            || self.uids.contains(&uid)
            || self
                .gid
                .is_some_and(|g| gids.is_some_and(|gs| gs.contains(&g)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\nbroken\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nwarden-admin:x:990:alice,www-data\nbad:x:\n";

    #[test]
    fn users_and_groups() {
        assert_eq!(
            parse_passwd(PASSWD, "www-data"),
            Some(("www-data".into(), 33, 33))
        );
        assert_eq!(
            parse_passwd(PASSWD, "33"),
            Some(("www-data".into(), 33, 33))
        );
        assert_eq!(parse_passwd(PASSWD, "nobody"), None);
        assert_eq!(parse_group_members(GROUP, "www-data"), vec![990]);
        assert_eq!(parse_group_gid(GROUP, "warden-admin"), Some(990));
        assert_eq!(parse_group_gid(GROUP, "bad"), None);
        let passwd = format!("{PASSWD}alice:x:1000:990::/home/alice:/bin/sh\n");
        let mut m = group_member_uids(&passwd, GROUP, 990);
        m.sort();
        assert_eq!(m, vec![33, 1000]);
    }

    #[test]
    fn only_root_and_the_admin_group_are_admitted() {
        let a = Admins {
            gid: Some(1500),
            uids: vec![1001],
        };
        assert!(a.admit(0, None));
        assert!(a.admit(1001, None), "listed member");
        assert!(a.admit(1002, Some(&[100, 1500])), "group from the bus");
        assert!(!a.admit(1002, Some(&[100])));
        assert!(!a.admit(1002, None));
        assert!(!Admins::default().admit(33, Some(&[33])));
    }

    #[test]
    fn real_lookup_agrees_with_nss() {
        let a = lookup("root").unwrap();
        assert!(a.uid.is_root());
        let nss = nix::unistd::User::from_name("root").unwrap().unwrap();
        assert_eq!(a.gid, nss.gid);
    }
}
