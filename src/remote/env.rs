//! A snapshot of environment variables, passed explicitly so resolution and credentials are pure
//! functions of their inputs (tests pass maps; `std::env::set_var` is `unsafe` in edition 2024).

use std::collections::BTreeMap;

/// Environment variables as seen by the remote layer. Values that are empty or only whitespace
/// count as unset, as in E2B's orchestrator (caarlos0/env with `TrimSpace` on URLs).
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// No variables at all.
    pub fn empty() -> Env {
        Env::default()
    }

    /// A snapshot of the process environment (variables that are not UTF-8 are left out).
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// From `(name, value)` pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Env {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// This snapshot with `name` set to `value`.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Env {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// This snapshot without `name`.
    pub fn without(mut self, name: &str) -> Env {
        self.vars.remove(name);
        self
    }

    /// The value of `name`, unless it is unset, empty or only whitespace. Not trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }

    /// The first of `names` that is set.
    pub fn first(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.get(n))
    }

    /// A lookup function in the shape `crate::storage::Storage::resolve` takes.
    pub fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |k| self.get(k).map(str::to_string)
    }
}

/// Names only: values may be secrets.
impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.vars.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_values_are_unset_and_debug_hides_values() {
        let env = Env::from_pairs([("A", ""), ("B", "  "), ("C", " x "), ("SECRET", "hunter2")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), None);
        assert_eq!(env.get("C"), Some(" x "));
        assert_eq!(env.first(&["A", "B", "C"]), Some(" x "));
        let shown = format!("{env:?}");
        assert!(shown.contains("SECRET") && !shown.contains("hunter2"), "{shown}");
    }
}
