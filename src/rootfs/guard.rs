//! Isolation of the ext4 reader: a panic inside `ext4-view` (a dependency reading an untrusted
//! image) becomes an error on that one read instead of ending tmpl.
//!
//! [`isolate`] runs a closure under `catch_unwind`. While it runs on a thread, the process panic
//! hook records the panic's message and location for that thread instead of printing it, so the
//! message becomes part of a finding; panics anywhere else still go to the previous hook.

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// How many [`isolate`] calls are running on this thread.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    /// The last panic caught on this thread, as text.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if DEPTH.with(Cell::get) == 0 {
                previous(info);
                return;
            }
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            let at =
                info.location().map(|l| format!(" (at {}:{})", short_file(l.file()), l.line())).unwrap_or_default();
            LAST.with(|l| *l.borrow_mut() = Some(format!("{msg}{at}")));
        }));
    });
}

/// `…/registry/src/<index>/ext4-view-1.0.0/src/dir_block.rs` → `ext4-view-1.0.0/src/dir_block.rs`.
fn short_file(file: &str) -> &str {
    match file.rfind("/src/") {
        Some(i) => {
            let crate_start = file[..i].rfind('/').map_or(0, |j| j + 1);
            &file[crate_start..]
        }
        None => file,
    }
}

/// Run `f`; a panic inside it is returned as `Err(message)` instead of unwinding further.
pub fn isolate<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    DEPTH.with(|d| d.set(d.get() + 1));
    let r = panic::catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    r.map_err(|_| LAST.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "a panic".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message_and_place() {
        assert_eq!(isolate(|| 7), Ok(7));
        let v: Vec<u8> = Vec::new();
        let idx = std::hint::black_box(3);
        let e = isolate(|| v[idx]).unwrap_err();
        assert!(e.contains("index out of bounds") && e.contains("guard.rs"), "{e}");
        // Nested: the inner panic is reported by the inner call; the outer one goes on.
        let outer = isolate(|| isolate(|| panic!("inner")).unwrap_err());
        assert!(outer.unwrap().starts_with("inner"));
    }

    #[test]
    fn short_file_keeps_the_crate_and_path() {
        assert_eq!(
            short_file("/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/ext4-view-1.0.0/src/dir_block.rs"),
            "ext4-view-1.0.0/src/dir_block.rs"
        );
        assert_eq!(short_file("lib.rs"), "lib.rs");
    }
}
