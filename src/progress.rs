//! Progress reporting seen from the domain: a trait the domain calls and the output layer
//! implements (indicatif on a terminal, nothing otherwise). Domain code never draws anything.

/// Receives progress from long operations (hashing, copying, deleting).
pub trait Progress: Sync {
    /// A new phase begins, with a known total (bytes or items).
    fn start(&self, _what: &str, _total: u64) {}
    /// Like `start`, for a total counted in items (files deleted) rather than bytes.
    fn start_items(&self, what: &str, total: u64) {
        self.start(what, total)
    }
    /// `n` more units are done.
    fn inc(&self, _n: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
}

/// Progress that goes nowhere (tests, JSON mode, non-terminals).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
