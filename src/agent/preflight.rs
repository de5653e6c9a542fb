//! The preflight: before a SIGHUP, the app's own Gunicorn, started as its master runs (the
//! master's argv, environment, working directory and user, read from `/proc`), prints its
//! effective settings and loads its application (`--print-config`), and exits. A reload of
//! code that does not load stops the old workers and boots none (gunicorn#2443); refused here,
//! the old workers go on serving. The settings tell what a reload cannot do (`preload_app`).

use std::time::Duration;

use crate::ledger::model::{Failure, FailureKind};
pub use crate::platform::gunicorn::{GunicornSettings, Launch, Passed};

/// Runs the check for the master `pid` within `timeout`: what it learned, or why it failed.
pub fn check(pid: u32, timeout: Duration) -> Result<Passed, Failure> {
    let failed = |detail: String| Failure::new(FailureKind::PreflightFailed, detail);
    let launch = Launch::of(pid).map_err(failed)?;
    crate::platform::gunicorn::run(&launch, timeout).map_err(failed)
}
