//! Documented process exit codes. Every command maps its outcome onto these; the table is
//! repeated in `--help` and in the README, and a test checks that they agree.

/// Success: the command did what it was asked, and `verify` found no errors.
pub const OK: u8 = 0;
/// `verify` (or a verification step) ran and found at least one error finding.
pub const FINDINGS: u8 = 1;
/// Usage error: bad flags or arguments (clap's own code).
pub const USAGE: u8 = 2;
/// Unreadable or invalid input: not a build, not a UUID, truncated or foreign file.
pub const INVALID_INPUT: u8 = 3;
/// Environment: a required tool is missing, permission denied, disk full.
pub const ENVIRONMENT: u8 = 4;
/// Refused by a safety check (snapshot present, image in use, lock held, ...).
pub const REFUSED: u8 = 5;
/// The change was made but is not in effect on this node yet: its caches were left alone while
/// the orchestrator runs, so the node keeps serving the old bytes until it restarts.
pub const NOT_IN_EFFECT: u8 = 6;

/// The table shown in `--help` and the README.
pub const TABLE: &str = "\
Exit codes:
  0  success; verify found no errors
  1  verify (or a verification step) found errors
  2  usage error
  3  unreadable or invalid input (not a build, not a UUID, corrupt file)
  4  environment (missing tool, permission, I/O)
  5  refused by a safety check (nothing was changed)
  6  the change was made but is not in effect on this node yet (caches left alone while the orchestrator runs)";

#[cfg(test)]
mod tests {
    /// The README's exit-code table says what `--help` says.
    #[test]
    fn readme_and_help_agree() {
        let readme = include_str!("../README.md");
        for line in super::TABLE.lines().skip(1) {
            let (code, meaning) = line.trim().split_once("  ").unwrap();
            let row = format!("| {code} | {} |", meaning.trim());
            assert!(readme.contains(&row), "README lacks the row {row:?}");
        }
    }
}
