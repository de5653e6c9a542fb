//! systemd unit files: the parser, drop-in merging, and the command-line and `Environment=`
//! word splitting systemd applies. Used when systemd is not reachable over D-Bus or when the
//! operator points `--unit-path` at files to check before installing them.

use std::path::{Path, PathBuf};

use super::unit::{ExecCommand, UnitDef, UnitOrigin};
use super::words::split_words;

/// One `Key=Value` directive of a unit file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
    pub file: PathBuf,
}

/// Parses one unit file. Lines outside any section and lines without `=` are skipped, as
/// systemd does (it logs and ignores them).
pub fn parse(text: &str, file: &Path) -> Vec<Directive> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<(String, usize)> = None;
    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        let line = raw.trim();
        if let Some((mut acc, start)) = pending.take() {
            // Comment lines inside a continuation are skipped, as systemd does.
            if line.starts_with('#') || line.starts_with(';') {
                pending = Some((acc, start));
                continue;
            }
            if let Some(stripped) = line.strip_suffix('\\') {
                acc.push(' ');
                acc.push_str(stripped);
                pending = Some((acc, start));
                continue;
            }
            acc.push(' ');
            acc.push_str(line);
            push_line(&mut out, &section, &acc, start, file);
            continue;
        }
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') && line.ends_with(']') {
            section = line[1..line.len() - 1].trim().to_string();
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending = Some((stripped.to_string(), lineno));
            continue;
        }
        push_line(&mut out, &section, line, lineno, file);
    }
    if let Some((acc, start)) = pending {
        push_line(&mut out, &section, &acc, start, file);
    }
    out
}

fn push_line(out: &mut Vec<Directive>, section: &str, line: &str, lineno: usize, file: &Path) {
    if section.is_empty() {
        return;
    }
    if let Some((k, v)) = line.split_once('=') {
        out.push(Directive {
            section: section.to_string(),
            key: k.trim().to_string(),
            value: v.trim().to_string(),
            line: lineno,
            file: file.to_path_buf(),
        });
    }
}

/// Where a unit's fragment and drop-ins were found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub fragment: PathBuf,
    pub drop_ins: Vec<PathBuf>,
}

/// The directories systemd searches for system units, highest priority first.
pub const SYSTEM_UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Finds `name`'s fragment (or its template's) and its `.d/*.conf` drop-ins in `dirs`
/// (highest priority first). A drop-in of the same file name in a higher-priority directory
/// masks a lower one; drop-ins apply in file-name order.
pub fn locate(name: &str, dirs: &[PathBuf]) -> Option<Located> {
    let template = template_of(name);
    let fragment = dirs
        .iter()
        .map(|d| d.join(name))
        .chain(
            template
                .iter()
                .flat_map(|t| dirs.iter().map(move |d| d.join(t))),
        )
        .find(|p| p.is_file())?;
    let mut by_name: std::collections::BTreeMap<std::ffi::OsString, PathBuf> = Default::default();
    let mut dropin_dirs = vec![format!("{name}.d")];
    if let Some(t) = &template {
        dropin_dirs.push(format!("{t}.d"));
    }
    for d in dirs.iter().rev() {
        for dd in dropin_dirs.iter().rev() {
            let Ok(rd) = std::fs::read_dir(d.join(dd)) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "conf") {
                    by_name.insert(e.file_name(), p);
                }
            }
        }
    }
    Some(Located {
        fragment,
        drop_ins: by_name.into_values().collect(),
    })
}

fn template_of(name: &str) -> Option<String> {
    let (prefix, rest) = name.split_once('@')?;
    let (_, suffix) = rest.rsplit_once('.')?;
    (!rest.starts_with('.')).then(|| format!("{prefix}@.{suffix}"))
}

/// Reads a unit from files: fragment, then drop-ins, with systemd's rules for list settings
/// (an empty assignment resets the list) and specifier expansion.
pub fn load(name: &str, located: &Located) -> std::io::Result<UnitDef> {
    let mut entries = Vec::new();
    for p in std::iter::once(&located.fragment).chain(located.drop_ins.iter()) {
        let text = std::fs::read_to_string(p)?;
        entries.extend(parse(&text, p));
    }
    Ok(from_entries(name, &entries, located))
}

/// Builds the unit model from parsed entries (pure; used by [`load`] and tests).
pub fn from_entries(name: &str, entries: &[Directive], located: &Located) -> UnitDef {
    let spec = Specifiers::new(name);
    let mut u = UnitDef {
        name: name.to_string(),
        origin: UnitOrigin::Files,
        fragment_path: Some(located.fragment.clone()),
        drop_in_paths: located.drop_ins.clone(),
        runtime_directory_preserve: "no".into(),
        ..UnitDef::default()
    };
    for e in entries.iter().filter(|e| e.section == "Service") {
        let v = spec.expand(&e.value);
        match e.key.as_str() {
            "ExecStart" => push_exec(&mut u.exec_start, &v),
            "ExecStartPre" => push_exec(&mut u.exec_start_pre, &v),
            "Environment" => {
                if v.is_empty() {
                    u.environment.clear();
                } else {
                    for w in split_words(&v) {
                        if let Some((k, val)) = w.split_once('=') {
                            u.environment.push((k.to_string(), val.to_string()));
                        }
                    }
                }
            }
            "EnvironmentFile" => {
                if v.is_empty() {
                    u.environment_files.clear();
                } else {
                    let (optional, p) = match v.strip_prefix('-') {
                        Some(rest) => (true, rest),
                        None => (false, v.as_str()),
                    };
                    u.environment_files.push((PathBuf::from(p), optional));
                }
            }
            "User" => u.user = non_empty(v),
            "WorkingDirectory" => {
                // `-` makes it optional; `~` is the user's home, which is not read here.
                let dir = v.strip_prefix('-').unwrap_or(&v);
                u.working_directory = dir.starts_with('/').then(|| PathBuf::from(dir));
            }
            "PIDFile" => u.pid_file = non_empty(v).map(|p| absolute_in_run(&p)),
            "RuntimeDirectory" => {
                if v.is_empty() {
                    u.runtime_directory.clear();
                } else {
                    u.runtime_directory.extend(split_words(&v));
                }
            }
            "StateDirectory" => {
                if v.is_empty() {
                    u.state_directory.clear();
                } else {
                    u.state_directory.extend(split_words(&v));
                }
            }
            "RuntimeDirectoryPreserve" => {
                u.runtime_directory_preserve = if v.is_empty() { "no".into() } else { v };
            }
            _ => {}
        }
    }
    u
}

fn non_empty(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

/// systemd treats a relative `PIDFile=` as relative to `/run`.
fn absolute_in_run(p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        Path::new("/run").join(p)
    }
}

fn push_exec(list: &mut Vec<ExecCommand>, v: &str) {
    if v.is_empty() {
        list.clear();
        return;
    }
    let trimmed = v.trim_start_matches(['-', '@', ':', '+', '!']);
    let at = v[..v.len() - trimmed.len()].contains('@');
    let mut words = split_words(trimmed);
    if words.is_empty() {
        return;
    }
    let path = words[0].clone();
    // With `@`, the second word is argv[0] and the path is not repeated in argv.
    if at {
        words.remove(0);
    }
    list.push(ExecCommand { path, argv: words });
}

/// The unit-name specifiers warden can resolve without asking systemd.
struct Specifiers {
    name: String,
    prefix: String,
    instance: String,
}

impl Specifiers {
    fn new(name: &str) -> Self {
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        let (prefix, instance) = stem.split_once('@').unwrap_or((stem, ""));
        Specifiers {
            name: name.to_string(),
            prefix: prefix.to_string(),
            instance: instance.to_string(),
        }
    }

    fn expand(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('%') => out.push('%'),
                Some('n') => out.push_str(&self.name),
                Some('N') => out.push_str(self.name.rsplit_once('.').map_or("", |(s, _)| s)),
                Some('p') => out.push_str(&self.prefix),
                Some('i') | Some('I') => out.push_str(&self.instance),
                Some('t') => out.push_str("/run"),
                Some('S') => out.push_str("/var/lib"),
                Some('C') => out.push_str("/var/cache"),
                Some('L') => out.push_str("/var/log"),
                Some('E') => out.push_str("/etc"),
                Some('T') => out.push_str("/tmp"),
                Some('V') => out.push_str("/var/tmp"),
                Some(o) => {
                    out.push('%');
                    out.push(o);
                }
                None => out.push('%'),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn loc() -> Located {
        Located {
            fragment: "/x/app.service".into(),
            drop_ins: vec![],
        }
    }

    #[test]
    fn sections_continuations_and_comments() {
        let t = "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/a \\\n  # skipped\n  --b c\n; c\nUser=www-data\n";
        let e = parse(t, Path::new("/x"));
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].value, "/bin/a  --b c");
        assert_eq!(e[1].line, 4);
        assert_eq!(e[2].key, "User");
    }

    #[test]
    fn list_settings_reset_on_empty_assignment() {
        let t = "[Service]\nExecStart=/bin/old\nExecStart=\nExecStart=-/bin/new --x 'a b'\nEnvironment=A=1 \"B=two words\"\nEnvironmentFile=-/etc/x.env\nPIDFile=app/gunicorn.pid\nRuntimeDirectory=%p\n";
        let u = from_entries("app.service", &parse(t, Path::new("/x")), &loc());
        assert_eq!(u.exec_start.len(), 1);
        assert_eq!(u.exec_start[0].path, "/bin/new");
        assert_eq!(u.exec_start[0].argv, vec!["/bin/new", "--x", "a b"]);
        assert_eq!(
            u.environment,
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        assert_eq!(
            u.environment_files,
            vec![(PathBuf::from("/etc/x.env"), true)]
        );
        assert_eq!(u.pid_file, Some(PathBuf::from("/run/app/gunicorn.pid")));
        assert_eq!(u.runtime_directory, vec!["app"]);
    }

    #[test]
    fn templates_and_dropins_are_located() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::create_dir_all(a.join("w@.service.d")).unwrap();
        std::fs::create_dir_all(b.join("w@1.service.d")).unwrap();
        std::fs::write(b.join("w@.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
        std::fs::write(a.join("w@.service.d/10-x.conf"), "").unwrap();
        std::fs::write(b.join("w@1.service.d/05-y.conf"), "").unwrap();
        let l = locate("w@1.service", &[a.clone(), b.clone()]).unwrap();
        assert_eq!(l.fragment, b.join("w@.service"));
        assert_eq!(
            l.drop_ins,
            vec![
                b.join("w@1.service.d/05-y.conf"),
                a.join("w@.service.d/10-x.conf")
            ]
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC*") {
            let e = parse(&s, Path::new("/x"));
            let _ = from_entries("a@b.service", &e, &loc());
        }

    }
}
