//! Just enough POSIX shell to see what an init wrapper runs: its `#!` interpreter, and each
//! simple command with its words (quotes removed, simple `$VAR` substituted), whether it is
//! `exec`'d or backgrounded, and whether the script can fall off its end (PID 1 then exits,
//! "Attempted to kill init! exitcode=0x00000000").
//!
//! This is a reader for linting, not a shell: command substitution, arithmetic and globbing are
//! left as literal text, a word that still holds `$` after substitution is treated as unknown,
//! and heredoc bodies are skipped. Pure functions over text; nothing here reads an image.

use std::collections::BTreeMap;

use serde::Serialize;

/// Longest `#!` line the kernel reads (`BINPRM_BUF_SIZE`, 256 since Linux 5.1).
pub const SHEBANG_MAX: usize = 256;

/// A `#!` line as the kernel splits it: the interpreter, and everything after it (trimmed) as
/// one optional argument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Shebang {
    pub interpreter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
}

/// Parse the `#!` line of a file head; `None` when the file does not start with `#!` or names no
/// interpreter.
pub fn shebang(head: &[u8]) -> Option<Shebang> {
    let rest = head.strip_prefix(b"#!")?;
    let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    let line = &rest[..line_end.min(SHEBANG_MAX - 2)];
    let line = String::from_utf8_lossy(line);
    // The kernel keeps a trailing `\r` (DOS line endings): `#!/bin/sh\r` names "/bin/sh\r".
    let line = line.trim_matches(|c| c == ' ' || c == '\t');
    let (interp, arg) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], Some(line[i..].trim_matches([' ', '\t']).to_string())),
        None => (line, None),
    };
    if interp.is_empty() {
        return None;
    }
    Some(Shebang { interpreter: interp.to_string(), arg: arg.filter(|a| !a.is_empty()) })
}

/// One simple command of a script.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Command {
    /// 1-based line where the command starts.
    pub line: usize,
    /// The program and its arguments, after prefixes (`exec`, `nohup`, `env A=b`, ...) and
    /// variable assignments were removed.
    pub words: Vec<String>,
    /// Run with `exec` (replaces the shell: for PID 1, its exit status is the panic's).
    pub exec: bool,
    /// Ended with `&` (runs in the background; the script continues).
    pub background: bool,
}

impl Command {
    pub fn program(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }

    pub fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or(&[])
    }

    /// The program word still holds an unexpanded `$`, a backquote or a glob.
    pub fn program_is_dynamic(&self) -> bool {
        self.program().contains(['$', '`', '*', '?'])
    }
}

/// What a script does, as far as a reader can tell.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Script {
    pub commands: Vec<Command>,
    /// `PATH=` assigned at the top level (the last one), used to look programs up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_var: Option<String>,
    /// Functions the script defines (calls to them are not programs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<String>,
    /// Variables assigned at the top level (last value wins).
    #[serde(skip)]
    pub vars: BTreeMap<String, String>,
    /// The script cannot end on its own: an unconditional `exec`, an endless loop (`while :`,
    /// `while true`, `until false`), `wait`, `sleep infinity` or envd in the foreground at its
    /// top level (or in a function it calls there). When false, a script run as PID 1 exits and
    /// the kernel panics.
    pub keeps_running: bool,
    /// DOS line endings: `sh` reads the `\r` as part of every command (and the kernel as part of
    /// the `#!` interpreter).
    pub crlf: bool,
}

/// Shell builtins and keywords: never looked up on disk.
pub const BUILTINS: &[&str] = &[
    ":", ".", "[", "[[", "alias", "bg", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export",
    "false", "fg", "getopts", "hash", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set",
    "shift", "source", "test", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait", "let",
    "declare", "typeset", "builtin", "enable", "shopt", "history", "disown",
];

const KEYWORDS: &[&str] =
    &["if", "then", "else", "elif", "fi", "while", "until", "do", "done", "for", "case", "esac", "in", "!", "{", "}"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    /// `;`, `&&`, `||`, `|`, newline: ends a command.
    Sep,
    /// `&`: ends a command and backgrounds it.
    Amp,
    /// `&&`, `||`, `|`: ends a command that is joined to the next one.
    AndOr,
    /// `;;`: ends a case item.
    DoubleSemi,
    /// `(` and `)`: subshells, case patterns.
    Paren(u8),
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
    /// Heredoc delimiters seen on the current line, skipped after its newline.
    pending_heredocs: Vec<(String, bool)>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Self {
        Lexer { s: text.as_bytes(), i: 0, line: 1, pending_heredocs: Vec::new() }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_heredocs(&mut self) {
        for (delim, strip_tabs) in std::mem::take(&mut self.pending_heredocs) {
            loop {
                if self.i >= self.s.len() {
                    return;
                }
                let end = self.s[self.i..].iter().position(|&b| b == b'\n').map_or(self.s.len(), |p| self.i + p);
                let mut l = &self.s[self.i..end];
                if strip_tabs {
                    while let [b'\t', rest @ ..] = l {
                        l = rest;
                    }
                }
                let done = l == delim.as_bytes();
                self.i = (end + 1).min(self.s.len());
                self.line += 1;
                if done {
                    break;
                }
            }
        }
    }

    /// Next token and the line it started on.
    fn next(&mut self) -> Option<(Tok, usize)> {
        loop {
            let c = self.peek()?;
            match c {
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\\' if self.s.get(self.i + 1) == Some(&b'\n') => {
                    self.i += 2;
                    self.line += 1;
                }
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'\n' => {
                    let line = self.line;
                    self.i += 1;
                    self.line += 1;
                    self.skip_heredocs();
                    return Some((Tok::Sep, line));
                }
                b';' => {
                    self.i += 1;
                    if self.peek() == Some(b';') {
                        self.i += 1;
                        return Some((Tok::DoubleSemi, self.line));
                    }
                    return Some((Tok::Sep, self.line));
                }
                b'&' => {
                    self.i += 1;
                    if self.peek() == Some(b'&') {
                        self.i += 1;
                        return Some((Tok::AndOr, self.line));
                    }
                    return Some((Tok::Amp, self.line));
                }
                b'|' => {
                    self.i += 1;
                    if self.peek() == Some(b'|') {
                        self.i += 1;
                    }
                    return Some((Tok::AndOr, self.line));
                }
                b'(' | b')' => {
                    self.i += 1;
                    return Some((Tok::Paren(c), self.line));
                }
                _ => {
                    let line = self.line;
                    return Some((Tok::Word(self.word()), line));
                }
            }
        }
    }

    /// A word: quotes removed, backslash escapes applied, `$...` kept literally. Redirections
    /// (`>f`, `2>&1`, `<<EOF`) are returned as words starting with their operator.
    fn word(&mut self) -> String {
        let mut out = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' => {
                    // `2>&1`, `>&2`: keep `&` as part of a redirection word.
                    if c == b'&' && out.last() == Some(&b'>') {
                        out.push(c);
                        self.i += 1;
                        continue;
                    }
                    // `$(...)`: keep command substitutions as one literal word.
                    if c == b'(' && out.last() == Some(&b'$') {
                        let mut depth = 0usize;
                        while let Some(d) = self.peek() {
                            out.push(d);
                            self.i += 1;
                            match d {
                                b'(' => depth += 1,
                                b')' => {
                                    depth -= 1;
                                    if depth == 0 {
                                        break;
                                    }
                                }
                                b'\n' => self.line += 1,
                                _ => {}
                            }
                        }
                        continue;
                    }
                    break;
                }
                b'\'' => {
                    self.i += 1;
                    while let Some(d) = self.peek() {
                        self.i += 1;
                        if d == b'\'' {
                            break;
                        }
                        if d == b'\n' {
                            self.line += 1;
                        }
                        out.push(d);
                    }
                }
                b'"' => {
                    self.i += 1;
                    while let Some(d) = self.peek() {
                        self.i += 1;
                        match d {
                            b'"' => break,
                            b'\\' if matches!(self.peek(), Some(b'"' | b'\\' | b'$' | b'`')) => {
                                out.push(self.s[self.i]);
                                self.i += 1;
                            }
                            b'\\' if self.peek() == Some(b'\n') => {
                                self.i += 1;
                                self.line += 1;
                            }
                            b'\n' => {
                                self.line += 1;
                                out.push(d);
                            }
                            _ => out.push(d),
                        }
                    }
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'\n') => {
                            self.i += 1;
                            self.line += 1;
                        }
                        Some(d) => {
                            out.push(d);
                            self.i += 1;
                        }
                        None => {}
                    }
                }
                _ => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        let w = String::from_utf8_lossy(&out).into_owned();
        if let Some(rest) = w.strip_prefix("<<") {
            let (strip, d) = match rest.strip_prefix('-') {
                Some(d) => (true, d),
                None => (false, rest),
            };
            let mut d = d.to_string();
            if d.is_empty() {
                // `<< EOF`: the delimiter is the next word.
                while self.peek().is_some_and(|c| c == b' ' || c == b'\t') {
                    self.i += 1;
                }
                d = self.word();
            }
            if !d.is_empty() {
                self.pending_heredocs.push((d, strip));
            }
        }
        w
    }
}

fn is_assignment(w: &str) -> Option<(&str, &str)> {
    let (name, value) = w.split_once('=')?;
    let ok = !name.is_empty()
        && name.bytes().enumerate().all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    ok.then_some((name, value))
}

fn is_redirection(w: &str) -> bool {
    let t = w.trim_start_matches(|c: char| c.is_ascii_digit());
    t.starts_with('>') || t.starts_with('<') || t.starts_with("&>")
}

/// Substitute `$NAME` / `${NAME}` from `vars`; unknown names are left as they are.
fn substitute(w: &str, vars: &BTreeMap<String, String>) -> String {
    if !w.contains('$') {
        return w.to_string();
    }
    let b = w.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                match w[i + 2..].find('}') {
                    Some(end) => (&w[i + 2..i + 2 + end], i + 3 + end),
                    None => ("", i + 1),
                }
            } else {
                let len = w[i + 1..].bytes().take_while(|c| *c == b'_' || c.is_ascii_alphanumeric()).count();
                (&w[i + 1..i + 1 + len], i + 1 + len)
            };
            if let Some(v) = vars.get(name).filter(|_| !name.is_empty()) {
                out.push_str(v);
                i = next;
                continue;
            }
        }
        let ch = w[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// Strip words that do not change which program runs: `exec`, `nohup`, `setsid [-fw]`,
/// `command`, `env [-i] [A=b ...]`, `nice [-n N]`, `time`.
fn strip_prefixes(words: &mut Vec<String>, exec: &mut bool) {
    loop {
        let Some(first) = words.first().map(String::as_str) else { return };
        match first {
            "exec" => {
                *exec = true;
                words.remove(0);
                while words.first().is_some_and(|w| w == "-a" || w == "-c" || w == "-l") {
                    let w = words.remove(0);
                    if w == "-a" && !words.is_empty() {
                        words.remove(0);
                    }
                }
            }
            "nohup" | "command" | "time" | "builtin" => {
                words.remove(0);
            }
            "setsid" => {
                words.remove(0);
                while words.first().is_some_and(|w| w.starts_with('-')) {
                    words.remove(0);
                }
            }
            "env" => {
                words.remove(0);
                while let Some(w) = words.first() {
                    if w == "-u" {
                        words.remove(0);
                        if !words.is_empty() {
                            words.remove(0);
                        }
                    } else if w.starts_with('-') || is_assignment(w).is_some() {
                        words.remove(0);
                    } else {
                        break;
                    }
                }
            }
            "nice" => {
                words.remove(0);
                if words.first().is_some_and(|w| w == "-n") {
                    words.remove(0);
                    if !words.is_empty() {
                        words.remove(0);
                    }
                } else if words.first().is_some_and(|w| w.starts_with('-')) {
                    words.remove(0);
                }
            }
            _ => return,
        }
    }
}

/// Read a script's commands.
/// The reader's state while it walks the tokens.
#[derive(Default)]
struct Reader {
    script: Script,
    vars: BTreeMap<String, String>,
    /// Nesting of if/while/for/case/{ }: assignments and `exec` count as top level only at 0.
    depth: usize,
    /// A `name()` was seen; its `{` opens the body.
    pending_fn: Option<String>,
    /// Function bodies being read: (name, depth of the body).
    fn_stack: Vec<(String, usize)>,
    /// Functions whose body cannot end (an unconditional exec or an endless loop at its top).
    endless_fns: Vec<String>,
}

impl Reader {
    /// Where an unconditional exec or endless loop counts: the script's top level, or the top
    /// level of the function being read.
    fn mark_endless(&mut self) {
        match self.fn_stack.last() {
            None if self.depth == 0 => self.script.keeps_running = true,
            Some((name, d)) if *d == self.depth && !self.endless_fns.contains(name) => {
                self.endless_fns.push(name.clone());
            }
            _ => {}
        }
    }

    /// One command's words. `background`: ended by `&`; `conditional`: joined to another
    /// command by `&&`, `||` or `|` (so an exec in it may not run, or runs in a pipeline's
    /// subshell). Returns whether it opened a `case`.
    fn flush(&mut self, words: &mut Vec<String>, background: bool, conditional: bool, line: usize) -> bool {
        let raw = std::mem::take(words);
        let opens_case = raw.first().is_some_and(|w| w == "case");
        let mut ws: Vec<String> = Vec::new();
        let mut skip_operand = false;
        let mut iter = raw.into_iter().peekable();
        while let Some(w) = iter.next() {
            // Keywords open and close blocks; the words after them form the command.
            if ws.is_empty() && KEYWORDS.contains(&w.as_str()) {
                match w.as_str() {
                    "if" | "while" | "until" | "for" | "case" | "{" => {
                        // Only a loop whose condition is always true cannot end by itself.
                        let next = iter.peek().map(String::as_str).unwrap_or("");
                        let endless = (w == "while" && matches!(next, ":" | "true" | "/bin/true" | "sleep"))
                            || (w == "until" && matches!(next, "false" | "/bin/false"));
                        if w == "{"
                            && let Some(name) = self.pending_fn.take()
                        {
                            self.depth += 1;
                            self.fn_stack.push((name, self.depth));
                            continue;
                        }
                        if endless && !conditional && !background {
                            self.mark_endless();
                        }
                        self.depth += 1;
                        if w == "for" || w == "case" {
                            // `for x in a b c` / `case $x in`: no command here.
                            ws.push(String::new());
                        }
                    }
                    "fi" | "done" | "esac" | "}" => {
                        if w == "}" && self.fn_stack.last().is_some_and(|(_, d)| *d == self.depth) {
                            self.fn_stack.pop();
                        }
                        self.depth = self.depth.saturating_sub(1);
                    }
                    _ => {}
                }
                continue;
            }
            if ws.first().is_some_and(String::is_empty) {
                continue; // the rest of a for/case header
            }
            if skip_operand {
                skip_operand = false;
                continue;
            }
            if is_redirection(&w) {
                let op = w.trim_start_matches(|c: char| c.is_ascii_digit());
                skip_operand = matches!(op, ">" | ">>" | "<" | "&>" | "&>>" | ">|" | "<>");
                continue;
            }
            ws.push(w);
        }
        if ws.first().is_some_and(String::is_empty) {
            return opens_case;
        }
        // Leading assignments: remember top-level ones for substitution.
        let mut only_assignments = true;
        let mut rest = Vec::new();
        for w in ws {
            if only_assignments && let Some((name, value)) = is_assignment(&w) {
                let v = substitute(value, &self.vars);
                if self.depth == 0 && rest.is_empty() {
                    if name == "PATH" {
                        self.script.path_var = Some(v.clone());
                    }
                    self.vars.insert(name.to_string(), v);
                }
                continue;
            }
            only_assignments = false;
            rest.push(substitute(&w, &self.vars));
        }
        if rest.is_empty() {
            return false;
        }
        if rest[0] == "export" || rest[0] == "readonly" || rest[0] == "local" {
            for w in &rest[1..] {
                if let Some((name, value)) = is_assignment(w)
                    && self.depth == 0
                {
                    if name == "PATH" {
                        self.script.path_var = Some(value.to_string());
                    }
                    self.vars.insert(name.to_string(), value.to_string());
                }
            }
            return false;
        }
        // `function name {` (bash) or `name() {` written as one word.
        if rest[0].ends_with("()") || rest[0] == "function" {
            let name = if rest[0] == "function" { rest.get(1).cloned() } else { Some(rest[0].clone()) };
            if let Some(n) = name {
                let n = n.trim_end_matches("()").to_string();
                self.script.functions.push(n.clone());
                if rest.last().is_some_and(|w| w == "{") {
                    self.depth += 1;
                    self.fn_stack.push((n, self.depth));
                } else {
                    self.pending_fn = Some(n);
                }
            }
            return false;
        }
        let mut exec = false;
        strip_prefixes(&mut rest, &mut exec);
        if rest.is_empty() {
            return false;
        }
        let unconditional = !background && !conditional;
        // envd in the foreground keeps the script alive for as long as envd runs.
        let never_returns = unconditional
            && (exec
                || rest[0] == "wait"
                || (rest[0].ends_with("sleep") && rest.get(1).is_some_and(|a| a == "infinity"))
                || is_envd_name(&rest[0])
                || self.endless_fns.contains(&rest[0]));
        if never_returns {
            self.mark_endless();
        }
        self.script.commands.push(Command { line, words: rest, exec, background });
        false
    }
}

/// Read a script's commands.
pub fn parse(text: &str) -> Script {
    let mut lx = Lexer::new(text);
    let mut r = Reader::default();
    let mut words: Vec<String> = Vec::new();
    let mut start_line = 1;
    // After `case WORD in` and after each `;;`, words up to `)` are a pattern, not a command.
    let mut expect_pattern = false;
    // `name` followed by `(`: a function definition if `)` follows.
    let mut maybe_fn: Option<String> = None;
    // The command being read follows `&&`, `||` or `|`.
    let mut after_andor = false;
    while let Some((tok, line)) = lx.next() {
        match tok {
            Tok::Paren(b'(')
                if !expect_pattern && words.len() == 1 && is_assignment(&format!("{}=", words[0])).is_some() =>
            {
                maybe_fn = words.pop();
            }
            Tok::Paren(b')') if maybe_fn.is_some() => {
                let name = maybe_fn.take().unwrap_or_default();
                r.script.functions.push(name.clone());
                r.pending_fn = Some(name);
            }
            Tok::Word(w) => {
                if words.is_empty() {
                    start_line = line;
                }
                words.push(w);
            }
            Tok::Paren(b')') if expect_pattern && words.first().is_none_or(|w| w != "esac") => {
                words.clear();
                expect_pattern = false;
            }
            Tok::Paren(_) if expect_pattern && words.is_empty() => {}
            Tok::AndOr => {
                if !words.is_empty() {
                    r.flush(&mut words, false, true, start_line);
                }
                after_andor = true;
            }
            Tok::Sep | Tok::Paren(_) | Tok::DoubleSemi => {
                if !words.is_empty() {
                    let is_esac = words.first().is_some_and(|w| w == "esac");
                    let opened = r.flush(&mut words, false, after_andor, start_line);
                    if opened {
                        expect_pattern = true;
                    } else if is_esac {
                        expect_pattern = false;
                    }
                }
                after_andor = false;
                if tok == Tok::DoubleSemi {
                    expect_pattern = true;
                }
            }
            Tok::Amp => {
                if !words.is_empty() {
                    r.flush(&mut words, true, after_andor, start_line);
                }
                after_andor = false;
            }
        }
    }
    if !words.is_empty() {
        r.flush(&mut words, false, after_andor, start_line);
    }
    r.script.crlf = text.contains("\r\n");
    r.script.vars = std::mem::take(&mut r.vars);
    r.script
}

/// Quote a word for POSIX sh (single quotes; `'` as `'\''`), leaving plain words as they are.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The PATH a script's commands are looked up in (its own `PATH=`, else a common default).
pub fn search_path(script: &Script) -> Vec<String> {
    let p = script.path_var.as_deref().unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    p.split(':').filter(|d| d.starts_with('/')).map(str::to_string).collect()
}

/// Does this program name look like envd (`envd`, `envd.real`, `envd-v0.0.1`)?
pub fn is_envd_name(program: &str) -> bool {
    let base = program.rsplit('/').next().unwrap_or(program);
    base == "envd" || base.starts_with("envd.") || base.starts_with("envd-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_like_the_kernel() {
        assert_eq!(shebang(b"#!/bin/sh\necho"), Some(Shebang { interpreter: "/bin/sh".into(), arg: None }));
        assert_eq!(
            shebang(b"#! /usr/bin/env  bash -e \n"),
            Some(Shebang { interpreter: "/usr/bin/env".into(), arg: Some("bash -e".into()) })
        );
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
        assert_eq!(shebang(b"#!/bin/busybox sh").unwrap().arg.as_deref(), Some("sh"));
        assert_eq!(shebang(b"#!/bin/sh\r\necho").unwrap().interpreter, "/bin/sh\r", "the kernel keeps the CR");
        assert!(parse("#!/bin/sh\r\nexec /usr/bin/envd\r\n").crlf);
    }

    #[test]
    fn commands_prefixes_and_quotes() {
        let s = parse(
            "#!/bin/sh\n# comment\nset -e\nmount -t proc proc /proc 2>/dev/null || true\n\
             ENVD=/usr/bin/envd\nexport PATH=/usr/sbin:/usr/bin\n\
             nohup \"$ENVD\" -port 49983 --isnotfc > /dev/console 2>&1 &\n\
             exec env FOO=1 ${ENVD} -debug\n",
        );
        let progs: Vec<&str> = s.commands.iter().map(|c| c.program()).collect();
        assert_eq!(progs, ["set", "mount", "true", "/usr/bin/envd", "/usr/bin/envd"]);
        let bg = &s.commands[3];
        assert!(bg.background && !bg.exec);
        assert_eq!(bg.args(), ["-port", "49983", "--isnotfc"]);
        let last = &s.commands[4];
        assert!(last.exec && last.line == 8);
        assert_eq!(last.args(), ["-debug"]);
        assert_eq!(s.path_var.as_deref(), Some("/usr/sbin:/usr/bin"));
        assert!(s.keeps_running, "ends in exec");
    }

    #[test]
    fn falls_off_the_end_unless_it_loops_waits_or_execs() {
        assert!(!parse("#!/bin/sh\n/usr/bin/envd &\n").keeps_running);
        assert!(parse("#!/bin/sh\n/usr/bin/envd &\nwait\n").keeps_running);
        assert!(parse("#!/bin/sh\nwhile true; do /usr/bin/envd; sleep 1; done\n").keeps_running);
        assert!(parse("/usr/bin/envd &\nsleep infinity\n").keeps_running);
        assert!(!parse("if [ -x /x ]; then exec /x; fi\n").keeps_running, "exec only inside an if");
        assert!(!parse("while read -r l; do echo $l; done < /etc/x\n").keeps_running, "a loop that ends");
        assert!(parse("until false; do /usr/bin/envd; done\n").keeps_running);
        assert!(!parse("[ -f /x ] || exec /usr/bin/envd\n").keeps_running, "a conditional exec");
        assert!(!parse("true && exec /usr/bin/envd\n").keeps_running, "after &&");
        assert!(!parse("exec /usr/bin/envd | tee /log\n").keeps_running, "in a pipeline");
        assert!(
            parse("main() {\n  mount -a\n  exec /usr/bin/envd\n}\nmain \"$@\"\n").keeps_running,
            "a function that execs"
        );
        assert!(parse("main(){ exec envd; }; main").keeps_running);
        assert!(!parse("helper() { exec /x; }\necho no call\n").keeps_running, "defined but not called");
        assert!(parse("mount -a\n/usr/bin/envd -port 49983\n").keeps_running, "envd in the foreground");
    }

    #[test]
    fn heredocs_functions_and_case_are_skipped() {
        let s = parse(
            "cat > /etc/x <<EOF\n/not/a/command -debug\nEOF\nstart() {\n  exec /usr/bin/envd\n}\n\
             case \"$1\" in\n  start) start ;;\n  *) /bin/echo no ;;\nesac\n",
        );
        let progs: Vec<&str> = s.commands.iter().map(|c| c.program()).collect();
        assert_eq!(progs, ["cat", "/usr/bin/envd", "start", "/bin/echo"]);
        assert_eq!(s.functions, ["start"]);
        let s = parse("cat <<-'END'\n\t/x\n\tEND\n/y\n");
        assert_eq!(s.commands.iter().map(|c| c.program()).collect::<Vec<_>>(), ["cat", "/y"]);
    }

    #[test]
    fn continuation_lines_and_escapes() {
        let s = parse("exec /usr/local/bin/envd.real \\\n   -port 1 \\\n   -cmd 'a b'\n");
        assert_eq!(s.commands[0].args(), ["-port", "1", "-cmd", "a b"]);
        assert!(is_envd_name(s.commands[0].program()));
        assert!(!is_envd_name("/usr/bin/envdx") && is_envd_name("envd-v0.0.1"));
    }

    #[test]
    fn unknown_variables_stay_dynamic() {
        let s = parse("exec $HOME/bin/x\n");
        assert!(s.commands[0].program_is_dynamic());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in "[ -~\\n\\t]{0,300}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = shebang(&bytes);
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
