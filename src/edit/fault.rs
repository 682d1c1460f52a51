//! Fault injection for the tests of the mutating commands: the environment variable
//! [`FAULT_ENV`] names one step (see [`point`]) and what happens there.
//!
//! - `STEP` — the step fails with an error (the in-process rollback runs);
//! - `kill:STEP` — the process sends itself SIGKILL there (nothing runs after it: what a crash,
//!   an OOM kill or a power cut leaves);
//! - `pause:STEP` — the process writes its PID into the file named by [`PAUSE_FILE_ENV`] and waits
//!   until that file is removed (up to [`PAUSE_MAX`]): the test does something at that exact
//!   moment (opens the image, starts a second run, sends SIGKILL) and then lets it go on.
//!
//! Steps of an in-place edit, in order: `after-verify`, `before-commit` (after the last guard
//! check, before the journal), `commit:journal`, `commit:<file>` after each rename of the commit
//! (`commit:snapfile`, `commit:rootfs.ext4`, ...), `commit:synced` (folder fsynced),
//! `commit:cleaned` (work folder removed); and `mounted` while the mount backend has the work copy
//! mounted. A fork bound for a remote storage has `staged`: written and verified in its staging
//! folder, before it is published.
//!
//! Compiled in only with the `fault-inject` cargo feature, which the test build turns on (a
//! `[dev-dependencies]` self-dependency in Cargo.toml, so plain `cargo test --release` has it)
//! and `cargo build --release` does not: in a release binary [`point`] is an empty inline
//! function and the variable is not read (`.ci/run` checks the string is absent from the binary).

#[cfg(feature = "fault-inject")]
use std::path::PathBuf;
use std::time::Duration;
#[cfg(feature = "fault-inject")]
use std::time::Instant;

use crate::error::Result;
#[cfg(feature = "fault-inject")]
use crate::error::{Error, UsageError};

/// The variable naming the step and the action.
pub const FAULT_ENV: &str = "TMPL_FAULT_INJECT";
/// With `pause:STEP`: the file tmpl creates (holding its PID) and waits on.
pub const PAUSE_FILE_ENV: &str = "TMPL_FAULT_PAUSE_FILE";
/// A paused run goes on by itself after this long.
pub const PAUSE_MAX: Duration = Duration::from_secs(120);

#[cfg(any(test, feature = "fault-inject"))]
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Fail,
    Kill,
    Pause,
}

#[cfg(any(test, feature = "fault-inject"))]
fn parse(value: &str) -> (Action, &str) {
    if let Some(s) = value.strip_prefix("kill:") {
        (Action::Kill, s)
    } else if let Some(s) = value.strip_prefix("pause:") {
        (Action::Pause, s)
    } else {
        (Action::Fail, value)
    }
}

/// The hook at `step`: nothing in a build without the `fault-inject` feature.
#[cfg(not(feature = "fault-inject"))]
#[inline(always)]
pub fn point(_step: &str) -> Result<()> {
    Ok(())
}

/// The hook at `step`: does nothing unless [`FAULT_ENV`] names it.
#[cfg(feature = "fault-inject")]
pub fn point(step: &str) -> Result<()> {
    let Ok(value) = std::env::var(FAULT_ENV) else { return Ok(()) };
    let (action, at) = parse(&value);
    if at != step {
        return Ok(());
    }
    match action {
        Action::Fail => Err(Error::verification(format!("fault injected at {step} ({FAULT_ENV})"))),
        Action::Kill => {
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
            // SIGKILL cannot be caught; this is never reached.
            std::process::abort();
        }
        Action::Pause => {
            let Some(file) = std::env::var_os(PAUSE_FILE_ENV).map(PathBuf::from) else {
                return Err(UsageError::FaultPauseFile {
                    var: FAULT_ENV,
                    step: step.to_string(),
                    needs: PAUSE_FILE_ENV,
                }
                .into());
            };
            std::fs::write(&file, format!("{}\n", std::process::id())).map_err(|e| Error::write(&file, e))?;
            let start = Instant::now();
            while file.exists() && start.elapsed() < PAUSE_MAX {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_name_an_action_and_a_step() {
        assert_eq!(parse("after-verify"), (Action::Fail, "after-verify"));
        assert_eq!(parse("kill:commit:rootfs.ext4"), (Action::Kill, "commit:rootfs.ext4"));
        assert_eq!(parse("pause:before-commit"), (Action::Pause, "before-commit"));
    }
}
