//! `warden generate`: man pages and shell completions from the CLI definition, for packagers.
//!
//! Generated rather than written by hand so that the pages and completions cannot drift from
//! `--help`: the package build runs the binary it ships.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, Subcommand};
use clap_mangen::Man;
use clap_mangen::roff::{Roff, bold, roman};

use super::exit::Exit;

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, Subcommand)]
pub enum What {
    /// Write warden.1 and one page per subcommand (warden-check.1, …) into DIR
    Man {
        /// The directory to write the pages into (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Print the completion script for SHELL on stdout
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// The shells whose completions the package installs (a closed set, so that the package and
/// this list agree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn main(a: &GenerateArgs) -> Exit {
    match &a.what {
        What::Man { out } => match write_man_pages(out) {
            Ok(paths) => {
                let mut stdout = std::io::stdout().lock();
                for p in paths {
                    let _ = writeln!(stdout, "{}", p.display());
                }
                Exit::Ok
            }
            Err(e) => {
                eprintln!("warden: error: {e}\n  help: {}", e.help());
                Exit::Usage
            }
        },
        What::Completion { shell } => {
            let mut buf = Vec::new();
            completion(*shell, &mut buf);
            match std::io::stdout().lock().write_all(&buf) {
                Ok(()) => Exit::Ok,
                // A reader that stops early is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Exit::Ok,
                Err(e) => {
                    eprintln!("warden: error: cannot write the completion script: {e}");
                    Exit::Usage
                }
            }
        }
    }
}

/// Why the pages could not be written, with the path involved.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {path}: {source}")]
pub struct GenerateError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl GenerateError {
    fn help(&self) -> &'static str {
        match self.source.kind() {
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                "choose a directory you may write (e.g. --out target/assets/man), or run as its owner"
            }
            std::io::ErrorKind::NotADirectory | std::io::ErrorKind::AlreadyExists => {
                "a file stands where a directory is needed: give --out a directory path"
            }
            _ => "check that the directory exists or can be created, and that the disk has room",
        }
    }
}

/// The CLI as users see it: the implicit `help` subcommand has no page of its own.
fn command() -> clap::Command {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    // Building sets each subcommand's display name (`warden-check`), which names its page.
    cmd.build();
    cmd
}

/// The visible subcommands, in definition order.
fn visible_subcommands(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands().filter(|s| !s.is_hide_set())
}

/// Writes `warden.1` and one page per visible subcommand into `dir`; returns the paths written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    std::fs::create_dir_all(dir).map_err(|source| GenerateError {
        what: "create the directory",
        path: dir.to_owned(),
        source,
    })?;
    let cmd = command();
    let date = source_date();
    let mut pages = vec![(cmd.clone(), None)];
    pages.extend(visible_subcommands(&cmd).map(|s| (s.clone(), Some(cmd.get_name()))));
    let mut written = Vec::new();
    for (page_cmd, parent) in pages {
        let man = Man::new(page_cmd.clone())
            .date(date.clone())
            .source(concat!("warden ", env!("CARGO_PKG_VERSION")))
            .manual("warden manual");
        let path = dir.join(man.get_filename());
        let mut buf = Vec::new();
        render_page(&man, &page_cmd, parent, &mut buf).expect("writing to memory cannot fail");
        std::fs::write(&path, buf).map_err(|source| GenerateError {
            what: "write",
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

/// One man page: clap_mangen's sections, with the exit codes under EXIT STATUS (instead of its
/// generic EXTRA section, which would run the code table together into one paragraph) and a
/// SEE ALSO pointing a subcommand's page at the main one.
fn render_page(
    man: &Man,
    cmd: &clap::Command,
    parent: Option<&str>,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    let mut roff = Roff::default();
    if let Some(after) = cmd.get_after_long_help().or_else(|| cmd.get_after_help()) {
        after_help(&mut roff, &after.to_string());
    }
    if let Some(parent) = parent {
        roff.control("SH", ["SEE ALSO"]);
        roff.text([bold(parent), roman("(1)")]);
    }
    roff.to_writer(w)?;
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}

/// Renders an after-help text: a list of `  CODE  meaning` lines under a heading ending in ':'
/// becomes tagged paragraphs (EXIT STATUS for "Exit codes:"); anything else is kept as written.
fn after_help(roff: &mut Roff, text: &str) {
    let mut lines = text.lines().peekable();
    let title = match lines.peek() {
        Some(l) if l.trim_end().eq_ignore_ascii_case("exit codes:") => {
            lines.next();
            "EXIT STATUS"
        }
        _ => "NOTES",
    };
    roff.control("SH", [title]);
    for line in lines {
        let item = line
            .strip_prefix("  ")
            .and_then(|l| l.split_once("  "))
            .filter(|(tag, _)| !tag.is_empty() && !tag.starts_with(' '));
        match item {
            Some((tag, meaning)) => {
                roff.control("TP", []);
                roff.text([bold(tag)]);
                roff.text([roman(meaning.trim())]);
            }
            None if line.trim().is_empty() => {
                roff.control("PP", []);
            }
            None => {
                roff.text([roman(line.trim())]);
            }
        }
    }
}

/// The page date: from SOURCE_DATE_EPOCH when set (reproducible builds), else today. Never
/// empty: `.TH` arguments are positional, and an empty date would shift the source and manual.
fn source_date() -> String {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .unwrap_or_else(chrono::Utc::now)
        .format("%Y-%m-%d")
        .to_string()
}

/// Writes the completion script for `shell`.
pub fn completion(shell: Shell, w: &mut dyn std::io::Write) {
    // clap_complete offers hidden subcommands too, and clap cannot remove one: rebuild the top
    // level from the visible subcommands (the top level has no arguments of its own beyond
    // --help and --version, which clap adds back).
    let full = super::Cli::command();
    let name = full.get_name().to_owned();
    let mut cmd = clap::Command::new("warden")
        .version(env!("CARGO_PKG_VERSION"))
        .about(full.get_about().cloned().unwrap_or_default())
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
        .subcommand_required(true)
        .disable_help_subcommand(true);
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, name, w);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path()).unwrap();
        (dir, written)
    }

    #[test]
    fn every_visible_subcommand_gets_a_page_with_its_about() {
        let (dir, written) = pages();
        let cmd = command();
        let visible: Vec<_> = visible_subcommands(&cmd).collect();
        assert!(visible.iter().any(|s| s.get_name() == "check"));
        assert_eq!(written.len(), visible.len() + 1, "{written:?}");
        assert!(dir.path().join("warden.1").is_file());
        for sub in visible {
            let path = dir.path().join(format!("warden-{}.1", sub.get_name()));
            let page = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // roff escapes '-' as '\-'; compare on the first words of the about text.
            let about = sub
                .get_about()
                .expect("every subcommand has an about")
                .to_string();
            let words: String = about
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ");
            let page_text = page.replace("\\-", "-");
            assert!(
                page_text.contains(&words),
                "{} lacks {words:?}",
                path.display()
            );
            assert!(page_text.contains(".SH \"SEE ALSO\""), "{}", path.display());
        }
    }

    #[test]
    fn hidden_subcommands_and_help_get_no_page() {
        let (dir, _) = pages();
        assert!(!dir.path().join("warden-generate.1").exists());
        assert!(!dir.path().join("warden-help.1").exists());
    }

    #[test]
    fn exit_codes_become_an_exit_status_section() {
        let (dir, _) = pages();
        let page = std::fs::read_to_string(dir.path().join("warden-check.1")).unwrap();
        assert!(page.contains(".SH \"EXIT STATUS\""), "{page}");
        assert!(page.contains(".TP\n\\fB1\\fR\n"), "{page}");
        assert!(!page.contains("EXTRA"));
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = write_man_pages(&file.join("man")).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        assert!(!err.help().is_empty());
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut buf = Vec::new();
            completion(shell, &mut buf);
            let script = String::from_utf8(buf).unwrap();
            assert!(script.contains("kill-switch"), "{shell:?}");
            assert!(script.contains("env-file"), "{shell:?}");
            assert!(
                !script.contains("generate"),
                "{shell:?}: a hidden subcommand is offered"
            );
        }
    }
}
