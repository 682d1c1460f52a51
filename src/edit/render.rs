//! The files tmpl writes into images, rendered from `templates/` (compiled in): the init wrapper
//! (POSIX sh) and the systemd unit. Substitution is `{{NAME}}` with values quoted for their
//! target language; nothing else in the templates is interpreted.

/// `templates/init-wrapper.sh`: mounts the kernel filesystems when absent, sends output to the
/// serial console, prints the boot-test marker and supervises envd forever.
pub const WRAPPER_TEMPLATE: &str = include_str!("../../templates/init-wrapper.sh");
/// `templates/envd.service`: E2B's unit, simplified.
pub const UNIT_TEMPLATE: &str = include_str!("../../templates/envd.service");

pub use crate::rootfs::script::quote as sh_quote;

/// Quote a word for a systemd `ExecStart=` line (double quotes; `\` and `"` escaped; `%` doubled
/// because systemd expands specifiers; `$` doubled because it expands variables).
pub fn unit_quote(s: &str) -> String {
    let plain = !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@".contains(&b));
    let escaped = s.replace('%', "%%").replace('$', "$$");
    if plain {
        return escaped;
    }
    format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Replace each `{{NAME}}` in one pass (a value that contains `{{...}}` stays as it is).
fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| vars.iter().find(|(k, _)| *k == &after[..end]).map(|(_, v)| (end, v))) {
            Some((end, v)) => {
                out.push_str(v);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn version() -> String {
    format!("tmpl {}", env!("CARGO_PKG_VERSION"))
}

/// The init wrapper for envd at `envd` with `args`.
pub fn wrapper(envd: &str, args: &[String]) -> String {
    let args: String = args.iter().map(|a| format!(" {}", sh_quote(a))).collect();
    fill(WRAPPER_TEMPLATE, &[("TMPL_VERSION", version()), ("ENVD", sh_quote(envd)), ("ARGS", args)])
}

/// The systemd unit for envd at `envd` with `args`.
pub fn unit(envd: &str, args: &[String]) -> String {
    let args: String = args.iter().map(|a| format!(" {}", unit_quote(a))).collect();
    fill(UNIT_TEMPLATE, &[("TMPL_VERSION", version()), ("ENVD", unit_quote(envd)), ("ARGS", args)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs::{script, unit as unit_file};

    #[test]
    fn templates_have_no_placeholders_left() {
        for t in [wrapper("/usr/bin/envd", &["-port".into(), "49983".into()]), unit("/usr/bin/envd", &[])] {
            assert!(!t.contains("{{"), "{t}");
        }
    }

    #[test]
    fn the_wrapper_reads_back_as_a_supervising_script() {
        let w = wrapper("/usr/local/bin/envd.real", &["-isnotfc".into(), "it's".into()]);
        assert!(w.starts_with("#!/bin/sh\n"));
        let s = script::parse(&w);
        assert!(s.keeps_running, "PID 1 must never return");
        let envd: Vec<&script::Command> = s.commands.iter().filter(|c| script::is_envd_name(c.program())).collect();
        assert_eq!(envd.len(), 1);
        assert_eq!(envd[0].program(), "/usr/local/bin/envd.real");
        assert_eq!(envd[0].args(), ["-isnotfc", "it's"]);
        assert!(!envd[0].background, "envd runs in the foreground of the supervising loop");
        assert!(w.contains("tmpl-init: starting envd"), "boot-test's default marker");
        for m in ["/proc", "/sys", "/dev", "/run", "/tmp"] {
            assert!(
                s.commands.iter().any(|c| c.program() == "mount" && c.args().last().is_some_and(|a| a == m)),
                "{m}"
            );
        }
    }

    #[test]
    fn the_unit_reads_back() {
        let u = unit("/usr/bin/envd", &["-port".into(), "49983".into(), "50%".into()]);
        let entries = unit_file::parse(&u);
        let starts = unit_file::exec_starts(&entries);
        assert_eq!(starts.len(), 1);
        assert_eq!(starts[0].value, "/usr/bin/envd -port 49983 \"50%%\"");
        assert!(
            entries.iter().any(|e| e.section == "Install" && e.key == "WantedBy" && e.value == "multi-user.target")
        );
    }

    #[test]
    fn substitution_is_one_pass() {
        assert_eq!(fill("a {{X}} b {{Y}}", &[("X", "{{Y}}".into()), ("Y", "y".into())]), "a {{Y}} b y");
        assert_eq!(fill("{{UNKNOWN}} {{X}}", &[("X", "x".into())]), "{{UNKNOWN}} x");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/usr/bin/envd"), "/usr/bin/envd");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(unit_quote("$HOME"), "\"$$HOME\"");
    }
}
