//! `tmpl inspect`'s human output: the text rendering of [`InspectReport`] and [`PathReport`]
//! (their JSON is the structs themselves). Kept beside the command, apart from the code that
//! gathers the facts.

use std::io::{self, Write};

use super::inspect::*;
use crate::checks::contents;
use crate::header::hex;
use crate::report::{Report, Style, human_bytes, sanitize};
use crate::rootfs::FileKind;
use crate::rootfs::boot::{BootFacts, CommandFacts, End, EnvdStart, Lookup, Program, ProgramKind};
use crate::vocab::BuildId;

/// A sum of untrusted lengths: its size, or that it overflowed.
fn sum_bytes(b: Option<u64>) -> String {
    b.map_or_else(|| "more than 2^64 bytes (the lengths overflow)".to_string(), human_bytes)
}

impl Report for PathReport {
    fn command(&self) -> &'static str {
        "inspect"
    }

    fn ok(&self) -> bool {
        true
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        // The resolution starts with the path itself: "/sbin/init -> /usr/bin/envd".
        writeln!(w, "{}", style.bold(&sanitize(&self.resolution.describe())))?;
        if let Some(e) = self.resolution.found() {
            writeln!(
                w,
                "  {}  {}  mode {:04o}  uid {} gid {}  {}",
                sanitize(&e.path),
                kind_name(e.kind),
                e.mode,
                e.uid,
                e.gid,
                human_bytes(e.len)
            )?;
        }
        if let Some(p) = &self.program {
            writeln!(w, "  program  {}", describe_program(p))?;
        }
        if let Some(h) = &self.sha256 {
            writeln!(w, "  sha256   {h}")?;
        }
        if let Some(why) = &self.sha256_skipped {
            writeln!(w, "  sha256   not computed: {why}")?;
        }
        if let Some(entries) = &self.entries {
            for e in entries {
                writeln!(w, "  {:<10} {}", kind_name(e.kind), sanitize(&e.name))?;
            }
        }
        if let Some(r) = &self.remote {
            writeln!(
                w,
                "  remote   {} requests ({} GET, {} HEAD), {} fetched",
                r.requests,
                r.get,
                r.head,
                human_bytes(r.bytes_read)
            )?;
            if let (Some(n), Some(b)) = (self.follow.remote_requests, self.follow.remote_bytes_read) {
                writeln!(w, "           of which following the path: {n} requests, {} fetched", human_bytes(b))?;
            }
        }
        if let Some(t) = &self.content_utf8 {
            write!(w, "{t}")?;
        }
        Ok(())
    }
}

fn render_commands(w: &mut dyn Write, cmds: &[CommandFacts], indent: &str) -> io::Result<()> {
    for c in cmds {
        let mut notes = Vec::new();
        if c.exec {
            notes.push("exec".to_string());
        }
        if c.background {
            notes.push("background".to_string());
        }
        match &c.lookup {
            Lookup::Broken { target } => notes.push(format!("CANNOT RUN: {}", contents::why(&target.resolution))),
            Lookup::NotInPath { .. } => notes.push("NOT FOUND in PATH".to_string()),
            Lookup::Dynamic => notes.push("not checked (variable)".to_string()),
            _ => {}
        }
        if let Some(f) = &c.flags {
            if f.problems.is_empty() {
                notes.push(format!("envd flags ok for {}", f.era));
            } else {
                let p: Vec<String> = f.problems.iter().map(|p| p.describe()).collect();
                notes.push(format!("BAD ENVD FLAGS: {}", p.join("; ")));
            }
        }
        let at = c.at.rsplit(':').next().unwrap_or("");
        let notes = if notes.is_empty() { String::new() } else { format!("   [{}]", notes.join(", ")) };
        writeln!(w, "{indent}{at:>4}  {}{notes}", sanitize(&c.words.join(" ")))?;
        if !c.nested.is_empty() {
            render_commands(w, &c.nested, &format!("{indent}      "))?;
        }
    }
    Ok(())
}

fn render_boot(w: &mut dyn Write, style: &Style, b: &BootFacts) -> io::Result<()> {
    writeln!(w, "\n{}", style.bold("boot"))?;
    let t = &b.init.target;
    let what = match (&t.resolution.end, &t.program) {
        (_, Some(p)) => describe_program(p),
        (End::Found { .. }, None) => contents::why(&t.resolution),
        (_, None) => format!("BROKEN: {}", contents::why(&t.resolution)),
    };
    writeln!(w, "  init       {}", sanitize(&t.resolution.describe()))?;
    writeln!(w, "             {}", what)?;
    if let Some(s) = &b.init.script {
        writeln!(
            w,
            "  script     {}{}",
            sanitize(&s.path),
            if s.keeps_running { "" } else { " — CAN REACH ITS END (PID 1 would exit)" }
        )?;
        render_commands(w, &s.commands, "           ")?;
    }
    if let Some(cmds) = &b.init.inittab {
        writeln!(w, "  inittab")?;
        render_commands(w, cmds, "           ")?;
    }
    if let Some(sd) = &b.systemd {
        match &sd.unit {
            Some(u) => {
                let enabled: Vec<&str> = sd.wanted_by.iter().filter(|(_, ok)| *ok).map(|(l, _)| l.as_str()).collect();
                writeln!(
                    w,
                    "  systemd    {}{}, {}",
                    sanitize(u),
                    if sd.masked { " MASKED" } else { "" },
                    if enabled.is_empty() {
                        "NOT ENABLED".to_string()
                    } else {
                        format!("enabled by {}", enabled.join(", "))
                    }
                )?;
                render_commands(w, &sd.exec_start, "           ")?;
            }
            None => writeln!(w, "  systemd    no envd.service")?,
        }
    }
    if let Some(o) = &b.openrc {
        writeln!(
            w,
            "  openrc     {} in runlevels: {}",
            o.script,
            if o.runlevels.is_empty() { "none".into() } else { o.runlevels.join(", ") }
        )?;
    }
    for e in &b.envd {
        let desc = match &e.target.program {
            Some(p) => format!("{}, {}", describe_program(p), human_bytes(p.len)),
            None => format!("MISSING: {}", contents::why(&e.target.resolution)),
        };
        writeln!(w, "  envd       {}: {desc}", sanitize(&e.path))?;
        if let Some(bf) = &e.binary {
            let mut parts = Vec::new();
            if let Some(v) = &bf.version {
                parts.push(format!("version {}", sanitize(v)));
            }
            if let Some(era) = era_phrase(bf) {
                parts.push(era);
            }
            if let Some(go) = &bf.go {
                let mut g = sanitize(&go.go_version).into_owned();
                if let Some(r) = &go.vcs_revision {
                    g.push_str(&format!(", commit {}", sanitize(r)));
                }
                if let Some(t) = &go.vcs_time {
                    g.push_str(&format!(" ({})", sanitize(t)));
                }
                parts.push(g);
            }
            if !bf.looks_like_envd {
                parts.push("does not look like envd".into());
            }
            if !parts.is_empty() {
                writeln!(w, "             {}", parts.join("; "))?;
            }
        }
    }
    let started: Vec<&str> = b
        .envd_started_by
        .iter()
        .map(|s| match s {
            EnvdStart::AsInit => "init is envd",
            EnvdStart::Wrapper => "the init script",
            EnvdStart::Systemd => "systemd envd.service",
            EnvdStart::Inittab => "busybox inittab",
            EnvdStart::Openrc => "OpenRC",
        })
        .collect();
    writeln!(
        w,
        "  envd start {}",
        if started.is_empty() { "NOTHING STARTS ENVD".to_string() } else { started.join(", ") }
    )?;
    let rc = &b.resolv_conf.resolution;
    let rc_state = match &rc.end {
        End::Found { entry } if entry.kind == FileKind::Regular => {
            format!("{} ({})", sanitize(&rc.describe()), human_bytes(entry.len))
        }
        _ => sanitize(&contents::why(rc)).into_owned(),
    };
    writeln!(w, "  resolv     {rc_state}")?;
    if let Some(m) = &b.e2b_marker {
        let kv: Vec<String> = m.entries.iter().map(|(k, v)| format!("{}={}", sanitize(k), sanitize(v))).collect();
        writeln!(w, "  /.e2b      {}", kv.join(" "))?;
    }
    writeln!(
        w,
        "  read       {} through the layers ({} for the init chain)",
        human_bytes(b.bytes_read),
        human_bytes(b.init.bytes_read)
    )?;
    Ok(())
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::Regular => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::CharDevice => "char-device",
        FileKind::BlockDevice => "block-device",
        FileKind::Fifo => "fifo",
        FileKind::Socket => "socket",
    }
}

/// "static x86_64 ELF (envd)", "#!/bin/sh script (interpreter /bin/sh: ok)", ...
pub fn describe_program(p: &Program) -> String {
    let kind = match p.kind {
        ProgramKind::Systemd => " (systemd)",
        ProgramKind::Busybox => " (busybox)",
        ProgramKind::Envd => " (envd)",
        _ => "",
    };
    let mut s = match (&p.elf, &p.shebang) {
        (Some(e), _) => {
            let link = if e.is_static { "static".to_string() } else { "dynamic".to_string() };
            let mut d = format!("{link} {} ELF{kind}", e.machine_name());
            if p.wrong_arch {
                d.push_str(" — WRONG ARCHITECTURE");
            }
            if let Some(l) = &p.loader {
                d.push_str(&format!(
                    ", loader {} {}",
                    sanitize(&l.resolution.path),
                    if l.usable { "present" } else { "MISSING" }
                ));
            }
            d
        }
        (None, Some(sb)) => {
            let ok = p.interpreter.as_ref().is_some_and(|i| i.usable);
            format!(
                "#!{}{} script, interpreter {}",
                sanitize(&sb.interpreter),
                sb.arg.as_deref().map(|a| format!(" {}", sanitize(a))).unwrap_or_default(),
                if ok { "present" } else { "MISSING or unusable" }
            )
        }
        (None, None) if p.kind == ProgramKind::Empty => "empty file".to_string(),
        (None, None) => format!("not runnable ({})", sanitize(p.not_elf.as_deref().unwrap_or("?"))),
    };
    if !p.executable() {
        s.push_str(&format!(", NOT EXECUTABLE (mode {:04o})", p.mode));
    }
    s
}

/// How an envd's era reads: told from its Go build time or its flag names, or not at all (a
/// binary with neither, which is checked as the oldest era's).
pub fn era_phrase(bf: &crate::envd::BinaryFacts) -> Option<String> {
    let era = bf.era?;
    Some(if bf.go.is_none() && bf.markers.is_empty() {
        format!(
            "era cannot be told (not a Go binary, no newer envd flag names); its flags are checked as for envd {era}"
        )
    } else {
        format!("era {era} (from {})", bf.era_source.unwrap_or("?"))
    })
}

fn opt(s: Option<&str>) -> String {
    s.map(|v| sanitize(v).into_owned()).unwrap_or_else(|| "-".into())
}

impl InspectReport {
    fn render_artifact(&self, w: &mut dyn Write, style: &Style, name: &str, a: &ArtifactFacts) -> io::Result<()> {
        writeln!(w, "\n{}", style.bold(name))?;
        match &a.data {
            Some(d) => writeln!(w, "  data       {} ({} allocated)", human_bytes(d.len), human_bytes(d.allocated))?,
            None => writeln!(w, "  data       -")?,
        }
        if !a.compressed.is_empty() {
            writeln!(w, "  compressed {}", a.compressed.join(", "))?;
        }
        match (&a.header, a.header_status) {
            (Some(h), _) => {
                let kind = if h.synthesized { " (empty body: one self mapping)" } else { "" };
                writeln!(
                    w,
                    "  header     V{} block {} size {} generation {}{kind}",
                    h.format,
                    h.block_size,
                    human_bytes(h.size),
                    h.generation
                )?;
                writeln!(w, "  build      {}   base {}", h.build_id, h.base_build_id)?;
                writeln!(
                    w,
                    "  mappings   {}: own {}, inherited {}, zero {}",
                    h.mappings,
                    sum_bytes(h.own_bytes),
                    sum_bytes(h.inherited_bytes),
                    sum_bytes(h.nil_bytes)
                )?;
                for b in &h.builds {
                    let me = if b.build_id == self.build_id { " (this build)" } else { "" };
                    writeln!(w, "    {} {}{me}", b.build_id, sum_bytes(b.bytes))?;
                }
            }
            (None, "absent") => writeln!(w, "  header     - (headerless: data read as a full image)")?,
            (None, _) => writeln!(w, "  header     invalid: {}", opt(a.header_error.as_deref()))?,
        }
        Ok(())
    }
}

impl Report for InspectReport {
    fn command(&self) -> &'static str {
        "inspect"
    }

    fn ok(&self) -> bool {
        self.access_denied.is_empty()
    }

    /// A permission problem is the environment's: exit 4, with every fact that could be read.
    fn failure_code(&self) -> u8 {
        crate::exit_code::ENVIRONMENT
    }

    fn render(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        // --mappings/--frames asked for a table: only the table, the rest of the report with -v.
        if (self.mappings.is_some() || self.frames.is_some()) && !style.verbose {
            return self.render_low_level(w, style);
        }
        writeln!(w, "{} {}", style.bold("build"), self.build_id)?;
        writeln!(w, "  path       {}", self.path.display())?;
        for a in &self.access_denied {
            writeln!(w, "  {} {}", style.severity(crate::report::Severity::Error), sanitize(&a.denied.to_string()))?;
        }
        writeln!(w, "\n{}", style.bold("files"))?;
        for f in &self.files {
            writeln!(
                w,
                "  {:<24} {:>12} ({} allocated)",
                sanitize(&f.name),
                human_bytes(f.len),
                human_bytes(f.allocated)
            )?;
        }
        if !self.leftovers.is_empty() {
            writeln!(w, "\n{}", style.bold("left by tmpl (tmpl backups BUILD)"))?;
            for l in &self.leftovers {
                writeln!(
                    w,
                    "  {:<40} {:>12} {}{}",
                    sanitize(&l.name),
                    human_bytes(l.bytes),
                    serde_json::to_value(l.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
                    if l.in_use { format!(", in use by {}", l.holders.join(", ")) } else { String::new() }
                )?;
            }
        }
        writeln!(w, "\n{}", style.bold("metadata.json"))?;
        match &self.metadata {
            Some(m) => {
                writeln!(
                    w,
                    "  version    {} → effective {}{}",
                    m.version,
                    m.effective_version,
                    if m.contents_ignored { " (contents ignored by the orchestrator)" } else { "" }
                )?;
                if let Some(t) = &m.template {
                    writeln!(w, "  build_id   {}", opt(t.build_id.as_deref()))?;
                    writeln!(w, "  kernel     {}", opt(t.kernel_version.as_deref()))?;
                    writeln!(w, "  firecracker {}", opt(t.firecracker_version.as_deref()))?;
                }
                if m.filesystem_only {
                    writeln!(w, "  filesystem_only: cold boot on resume")?;
                }
                if let Some(p) = &m.from_template_build_id {
                    writeln!(w, "  from       {p}")?;
                }
                if let Some(s) = &m.start_command {
                    writeln!(w, "  start      {}", sanitize(s))?;
                }
            }
            None => writeln!(
                w,
                "  {}{}",
                self.metadata_status,
                self.metadata_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )?,
        }
        self.render_artifact(w, style, "rootfs", &self.rootfs)?;
        if let Some(fs) = &self.filesystem {
            writeln!(
                w,
                "  ext4       {} in {} blocks of {}, uuid {}, label {:?}{}",
                human_bytes(fs.size),
                fs.blocks,
                fs.block_size,
                fs.uuid,
                sanitize(&fs.label),
                if fs.needs_recovery { ", NEEDS RECOVERY" } else { "" }
            )?;
        } else if let Some(e) = &self.filesystem_error {
            writeln!(w, "  ext4       unreadable: {}", sanitize(e))?;
        }
        for a in &self.rootfs_anomalies {
            writeln!(w, "  NOT READ   {}", sanitize(&a.to_string()))?;
        }
        if let Some(b) = &self.boot {
            render_boot(w, style, b)?;
        }
        self.render_artifact(w, style, "memfile", &self.memfile)?;
        writeln!(w, "\n{}", style.bold("snapfile"))?;
        match &self.snapfile {
            Some(s) => {
                let enc = s.encoding.map(|e| format!("{e:?}").to_lowercase()).unwrap_or_else(|| "unknown".into());
                let ver = s
                    .version
                    .clone()
                    .or(s.data_version.map(|d| format!("data version {d}")))
                    .unwrap_or_else(|| "-".into());
                writeln!(w, "  format     {enc}, {ver}, {}", s.arch.map(|a| a.name()).unwrap_or("unknown arch"))?;
                writeln!(w, "  size       {} bytes", s.len)?;
                if let Some(m) = s.mem_size_mib {
                    writeln!(
                        w,
                        "  memory     mem_size_mib {m} ({m} MiB){}",
                        if s.huge_pages == Some(true) { ", hugepages" } else { "" }
                    )?;
                }
                if let Some(r) = &s.regions {
                    let list: Vec<String> =
                        r.iter().map(|x| format!("{} at 0x{:x}", human_bytes(x.size), x.base_address)).collect();
                    writeln!(w, "  regions    {}", if list.is_empty() { "none".to_string() } else { list.join(", ") })?;
                }
                if let Some(e) = s.state_error.as_ref().or(s.header_error.as_ref()) {
                    writeln!(w, "  decode     {}", sanitize(e))?;
                }
                writeln!(
                    w,
                    "  crc64      {} stored 0x{:016x}, computed 0x{:016x} ({})",
                    if s.crc_ok { "ok" } else { "MISMATCH" },
                    s.stored_crc,
                    s.computed_crc,
                    s.computed_crc
                )?;
            }
            None => writeln!(
                w,
                "  {}{}",
                self.snapfile_status,
                self.snapfile_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            )?,
        }
        writeln!(w, "\n{}", style.bold("lineage"))?;
        let list = |v: &[BuildId]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")
            }
        };
        writeln!(w, "  reads from {}", list(&self.dependencies))?;
        writeln!(w, "  read by    {}", list(&self.dependents))?;
        self.render_low_level(w, style)
    }
}

impl InspectReport {
    fn render_low_level(&self, w: &mut dyn Write, style: &Style) -> io::Result<()> {
        if let Some(m) = &self.mappings {
            for (name, maps) in [("rootfs", &m.rootfs), ("memfile", &m.memfile)] {
                writeln!(w, "\n{}", style.bold(&format!("{name} mappings ({})", maps.len())))?;
                if maps.is_empty() {
                    writeln!(w, "  none (no header)")?;
                    continue;
                }
                writeln!(w, "  {:>14} {:>14}  {:<36} {:>14}", "offset", "length", "build", "storage offset")?;
                for x in maps {
                    let b = if x.is_nil() { "- (zeros)".to_string() } else { x.build.to_string() };
                    writeln!(w, "  {:>14} {:>14}  {:<36} {:>14}", x.offset, x.length, b, x.storage_offset)?;
                }
            }
        }
        if let Some(f) = &self.frames {
            for (name, builds) in [("rootfs", &f.rootfs), ("memfile", &f.memfile)] {
                writeln!(w, "\n{}", style.bold(&format!("{name} builds section")))?;
                if builds.is_empty() {
                    writeln!(w, "  none (V1–V3 header, or no header: data files are uncompressed)")?;
                    continue;
                }
                for b in builds {
                    let sha = b.known_checksum().map_or_else(|| "-".to_string(), |c| hex(&c));
                    let t = &b.frames;
                    let kind = if t.is_compressed() {
                        format!("{}, {} frames", t.compression.name(), t.frames.len())
                    } else {
                        "uncompressed".to_string()
                    };
                    writeln!(w, "  {}  size {}  {kind}", b.build, b.file_size)?;
                    writeln!(w, "    sha256 {sha}")?;
                    if t.is_compressed() {
                        writeln!(
                            w,
                            "    {:>6} {:>14} {:>10} {:>14} {:>10}",
                            "frame", "U offset", "U size", "C offset", "C size"
                        )?;
                        for (i, fr) in t.frames.iter().enumerate() {
                            writeln!(
                                w,
                                "    {:>6} {:>14} {:>10} {:>14} {:>10}",
                                i, fr.start_u, fr.size_u, fr.start_c, fr.size_c
                            )?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod era_tests {
    use super::era_phrase;
    use crate::envd::MarkerScan;

    fn facts(bytes: &[u8]) -> crate::envd::BinaryFacts {
        let mut scan = MarkerScan::default();
        scan.feed(bytes);
        scan.finish()
    }

    /// A binary that says "envd" but has no Go build info and no flag name of a newer envd: its
    /// era cannot be told, and inspect says so (not "before 2025-07 (from no newer flag names)").
    #[test]
    fn an_envd_that_is_not_go_has_no_era_told() {
        let f = facts(b"\x7fELF....\0envd\0port\0version\0");
        let phrase = era_phrase(&f).unwrap();
        assert!(phrase.starts_with("era cannot be told"), "{phrase}");
        assert!(!phrase.contains("from no newer flag names"), "{phrase}");
    }

    #[test]
    fn flag_names_tell_the_era() {
        let f = facts(b"\x7fELF....\0envd\0port\0resume-handover\0");
        let phrase = era_phrase(&f).unwrap();
        assert!(phrase.starts_with("era since") && phrase.ends_with("(from flag names)"), "{phrase}");
    }
}
