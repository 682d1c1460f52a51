//! systemd unit files, read for what matters to envd: the `[Service]` `ExecStart=` lines (with
//! systemd's prefixes `-@:+!` removed and shells' `-c` strings opened up), and where the unit
//! lives. Syntax per systemd.syntax(7): `[Section]`, `Key=Value`, `#`/`;` comments, a trailing
//! backslash continues a line. Pure text functions.

use serde::Serialize;

use super::script::{self, Command};

/// Directories systemd loads system units from, most specific first (systemd.unit(5)).
pub const UNIT_DIRS: &[&str] =
    &["/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system"];

/// One `Key=Value` of a section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub section: String,
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// Parse a unit file into its entries, in order.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let (mut acc, start) = match pending.take() {
            Some((a, s)) => (a, s),
            None => {
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                if line.starts_with('[') && line.ends_with(']') {
                    section = line[1..line.len() - 1].to_string();
                    continue;
                }
                (String::new(), i + 1)
            }
        };
        if let Some(cont) = line.strip_suffix('\\') {
            acc.push_str(cont);
            acc.push(' ');
            pending = Some((acc, start));
            continue;
        }
        acc.push_str(line);
        if let Some((k, v)) = acc.split_once('=') {
            out.push(Entry {
                section: section.clone(),
                key: k.trim().to_string(),
                value: v.trim().to_string(),
                line: start,
            });
        }
    }
    out
}

/// The commands one `ExecStart=` value runs: the command itself, and when it is a shell with
/// `-c STRING`, the commands of STRING as well (E2B's 2025 unit ran
/// `/bin/bash -l -c "/usr/bin/envd"`).
pub fn exec_commands(value: &str) -> Vec<Command> {
    let v = value.trim_start_matches(['@', '-', ':', '+', '!']);
    let parsed = script::parse(v);
    let mut out = Vec::new();
    for c in parsed.commands {
        let base = c.program().rsplit('/').next().unwrap_or("").to_string();
        let inner = if matches!(base.as_str(), "sh" | "bash" | "dash" | "ash" | "zsh") {
            c.args()
                .iter()
                .position(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('c'))
                .and_then(|i| c.args().get(i + 1))
                .map(|s| script::parse(s).commands)
        } else {
            None
        };
        out.push(c);
        out.extend(inner.unwrap_or_default());
    }
    out
}

/// `ExecStart=` values of the `[Service]` section, in order (an empty value resets the list, as
/// in drop-ins).
pub fn exec_starts(entries: &[Entry]) -> Vec<&Entry> {
    let mut out: Vec<&Entry> = Vec::new();
    for e in entries.iter().filter(|e| e.section == "Service" && e.key == "ExecStart") {
        if e.value.is_empty() {
            out.clear();
        } else {
            out.push(e);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const E2B_2025: &str = "[Unit]\nDescription=Env Daemon Service\nAfter=multi-user.target\n\n[Service]\n\
Type=simple\nRestart=always\nUser=root\nGroup=root\nEnvironment=GOTRACEBACK=all\n\
ExecStart=/bin/bash -l -c \"/usr/bin/envd\"\nOOMPolicy=continue\n\n[Install]\nWantedBy=multi-user.target\n";

    #[test]
    fn sections_keys_and_continuations() {
        let e = parse(
            "# c\n[Service]\nExecStart=/usr/bin/envd \\\n  -port 1\n; x\n[Install]\nWantedBy=multi-user.target\n",
        );
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].section.as_str(), e[0].key.as_str(), e[0].line), ("Service", "ExecStart", 3));
        assert_eq!(e[0].value, "/usr/bin/envd  -port 1");
        assert_eq!(e[1].value, "multi-user.target");
    }

    #[test]
    fn exec_start_through_a_shell() {
        let entries = parse(E2B_2025);
        let starts = exec_starts(&entries);
        assert_eq!(starts.len(), 1);
        let cmds = exec_commands(&starts[0].value);
        let progs: Vec<&str> = cmds.iter().map(|c| c.program()).collect();
        assert_eq!(progs, ["/bin/bash", "/usr/bin/envd"]);
        let old = exec_commands("-/bin/bash -l -c \"/usr/bin/envd -cmd '/start.sh'\"");
        assert_eq!(old[1].args(), ["-cmd", "/start.sh"]);
    }

    #[test]
    fn empty_exec_start_resets() {
        let e = parse("[Service]\nExecStart=/a\nExecStart=\nExecStart=/b\n");
        let s: Vec<&str> = exec_starts(&e).iter().map(|e| e.value.as_str()).collect();
        assert_eq!(s, ["/b"]);
    }
}
