//! The two planners: `inject-envd` (install an envd and make it start at boot) and
//! `rewrite-wrapper` (replace a hand-written init wrapper with the known-good template, keeping
//! the envd binary it runs). Both read the image through the layered device, check everything
//! that can be checked before writing, and return a [`Plan`].

use std::path::PathBuf;

use super::envd_file::{self, HostEnvd};
use super::plan::{
    self, Backend, Changes, Content, EditOptions, Mode, ModeChoice, Plan, Refusal, Target, UNIT_PATH, WANTS_LINK,
};
use crate::build::Build;
use crate::checks::contents;
use crate::envd;
use crate::error::{Error, Result, UsageError};
use crate::rootfs::Rootfs;
use crate::rootfs::boot::{self, Context, Scan};

/// `inject-envd`'s inputs.
#[derive(Clone, Debug)]
pub struct InjectOptions {
    pub envd: PathBuf,
    pub mode: ModeChoice,
    pub envd_args: Vec<String>,
    pub edit: EditOptions,
}

/// The build's rootfs, read through its layers.
pub fn open_rootfs(build: &Build) -> Result<Rootfs> {
    Rootfs::of_build(build).map_err(|e| Error::rootfs(build.path(crate::vocab::files::ROOTFS), e))
}

/// Decide in-place or fork, applying the guards (every reason at once, exit 5). A dry run gets
/// the refusal back instead, so it can show the plan first. Headers of other builds that the
/// orchestrator cannot read either become warnings.
fn target(build: &Build, opts: &EditOptions, warnings: &mut Vec<String>) -> Result<(Target, Option<Refusal>)> {
    if let Some(fork) = opts.fork {
        if opts.drop_snapshot {
            return Err(UsageError::DropSnapshotWithFork.into());
        }
        return Ok((Target::Fork { new_build_id: plan::fork_id(build, fork)? }, None));
    }
    let deps = plan::edit_dependents(&build.storage_root, &build.id)?;
    for u in &deps.unreadable {
        warnings.push(format!(
            "ignored the header {u}: the orchestrator cannot read it either, so no build it serves reads this one through it"
        ));
    }
    let mut reasons = plan::in_place_refusals(build, opts, &deps);
    // A dry run says now whether the image is in use; a real run checks it under the build's
    // lock, right before copying and again right before the commit.
    if opts.dry_run {
        reasons.extend(super::apply::in_use(build)?);
    }
    if reasons.is_empty() {
        return Ok((Target::InPlace, None));
    }
    let refusal = Refusal { message: format!("build {} cannot be edited in place", build.id), reasons };
    if opts.dry_run {
        Ok((Target::InPlace, Some(refusal)))
    } else {
        Err(Error::refused(refusal.message, refusal.reasons))
    }
}

fn journal_check(fs: &Rootfs, opts: &EditOptions, warnings: &mut Vec<String>) -> Result<bool> {
    if !fs.superblock.needs_recovery() {
        return Ok(false);
    }
    match opts.backend {
        Backend::Mount => {
            warnings.push("the journal needs recovery: the kernel mount replays it on the work copy".into());
            Ok(false)
        }
        Backend::Debugfs if opts.replay_journal => {
            warnings
                .push("the journal needs recovery: e2fsck replays it on the work copy before debugfs writes".into());
            Ok(true)
        }
        Backend::Debugfs => Err(Error::refused(
            "the ext4 journal needs recovery, and debugfs ignores it: a later replay would erase what it writes",
            vec![
                "add --replay-journal (e2fsck replays it on the work copy first), or use --backend mount (root)".into(),
            ],
        )),
    }
}

fn check_envd_for_image(host: &HostEnvd, fs: &Rootfs, ctx: &Context) -> Result<()> {
    if let Some(arch) = ctx.arch
        && host.elf.machine != arch.elf_machine()
    {
        return Err(Error::invalid(
            &host.path,
            format!(
                "envd is built for {}, the build's VM is {} (from the {}); install the {} build of envd",
                host.elf.machine_name(),
                arch.name(),
                ctx.arch_source,
                arch.name()
            ),
        ));
    }
    if let Some(loader) = &host.elf.interpreter {
        let r = boot::resolve(fs, loader);
        if !r.found().is_some_and(|e| e.is_executable()) {
            return Err(Error::invalid(
                &host.path,
                format!(
                    "envd is dynamically linked and its loader {loader} is not in the image ({}); use a static envd (CGO_ENABLED=0), as E2B builds it",
                    contents::why(&r)
                ),
            ));
        }
    }
    Ok(())
}

/// A fork is a new build: its `/.e2b` marker (E2B's finalize step writes `BUILD_ID=`) names the
/// new ID, the other lines kept.
fn fork_marker(fs: &Rootfs, ch: &mut Changes, target: Target) -> Result<()> {
    let Target::Fork { new_build_id } = target else { return Ok(()) };
    let Some(e) =
        fs.lstat("/.e2b").ok().flatten().filter(|e| e.kind == crate::rootfs::FileKind::Regular && e.len <= 64 * 1024)
    else {
        return Ok(());
    };
    let Ok(old) = fs.read("/.e2b") else { return Ok(()) };
    let old = String::from_utf8_lossy(&old);
    let mut lines: Vec<String> =
        old.lines().filter(|l| !l.trim_start().starts_with("BUILD_ID=")).map(str::to_string).collect();
    lines.push(format!("BUILD_ID={new_build_id}"));
    ch.write(fs, "/.e2b", Content::Text { text: format!("{}\n", lines.join("\n")) }, e.mode)?;
    Ok(())
}

/// What both planners decide the same way: where the result goes (guards), the journal, the
/// tools the backend needs, the versions for metadata.json, and warnings about ignored options.
struct Common {
    target: Target,
    replay: bool,
    versions: Option<(String, String)>,
    warnings: Vec<String>,
    refused: Option<Refusal>,
}

fn common(build: &Build, fs: &Rootfs, edit: &EditOptions) -> Result<Common> {
    let mut warnings = Vec::new();
    let (target, mut refused) = target(build, edit, &mut warnings)?;
    let replay = journal_check(fs, edit, &mut warnings)?;
    crate::tools::find("e2fsck", "e2fsprogs")?;
    match edit.backend {
        Backend::Debugfs => {
            crate::tools::find("debugfs", "e2fsprogs")?;
        }
        Backend::Mount if !rustix::process::geteuid().is_root() => {
            return Err(Error::environment_msg(
                "--backend mount needs root (CAP_SYS_ADMIN) to attach a loop device; use --backend debugfs",
            ));
        }
        Backend::Mount => {}
    }
    let in_place = target == Target::InPlace;
    let drop_snapshot = in_place && edit.drop_snapshot && build.has_memory_snapshot();
    let versions = if !in_place || drop_snapshot {
        match plan::metadata_versions(build, edit) {
            Ok(v) => Some(v),
            // A dry run shows the plan with the refusal.
            Err(e) if edit.dry_run => {
                let r = Refusal::from_error(e)?;
                refused = Some(match refused {
                    Some(prev) => prev.merge(r),
                    None => r,
                });
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    if !rustix::process::geteuid().is_root() && in_place {
        warnings.push(
            "not running as root: processes of other users (a Firecracker run by root) cannot be seen by the in-use \
             check; make sure no sandbox runs this build"
                .into(),
        );
    }
    if !in_place && (!edit.backup || !edit.purge) {
        warnings.push("--no-backup and --no-purge do nothing with --fork (the source build is not changed)".into());
    }
    if in_place && edit.drop_snapshot && !build.has_memory_snapshot() {
        warnings.push("--drop-snapshot: the build has no memory snapshot to drop".into());
    }
    Ok(Common { target, replay, versions, warnings, refused })
}

#[expect(clippy::too_many_arguments, reason = "one call site; the plan's parts are separate values there")]
fn assemble(
    command: &'static str,
    build: &Build,
    edit: &EditOptions,
    c: Common,
    mode: Mode,
    mode_reason: String,
    envd: Option<HostEnvd>,
    envd_path: String,
    envd_args: Vec<String>,
    dropped_args: Vec<String>,
    changes: Vec<plan::Change>,
) -> Plan {
    let in_place = c.target == Target::InPlace;
    Plan {
        command,
        build_id: build.id,
        target: c.target,
        mode: Some(mode),
        mode_reason,
        backend: edit.backend,
        envd,
        envd_path,
        envd_args,
        dropped_args,
        changes,
        drop_snapshot: in_place && edit.drop_snapshot && build.has_memory_snapshot(),
        backup: edit.backup,
        replay_journal: c.replay,
        rewrite_header: in_place && plan::header_needs_rewrite(build),
        versions: c.versions,
        warnings: c.warnings,
        refused: c.refused,
    }
}

/// Plan `inject-envd`.
pub fn plan_inject(build: &Build, opts: &InjectOptions) -> Result<(Plan, Context)> {
    let host = envd_file::inspect(&opts.envd)?;
    let fs = open_rootfs(build)?;
    let ctx = contents::context(build, Scan::WhenFlagsNeedIt);
    check_envd_for_image(&host, &fs, &ctx)?;
    let era = host.binary.era().unwrap_or_else(envd::current);
    plan::check_envd_args(&opts.envd_args, era)?;
    let mut c = common(build, &fs, &opts.edit)?;
    if host.binary.era().is_none() {
        c.warnings.push(format!(
            "{} does not look like envd (no envd flag names in it); continuing, flags were checked against the current envd",
            host.path.display()
        ));
    }
    let (mode, reason) = plan::choose_mode(&fs, &ctx, opts.mode)?;
    if mode == Mode::Init && !opts.envd_args.is_empty() {
        let why = if opts.mode == ModeChoice::Init {
            "--as init"
        } else {
            "auto chose --as init (no systemd, no working /bin/sh)"
        };
        return Err(UsageError::ArgsForInit { why }.into());
    }
    let mut ch = Changes::default();
    let envd_path = ch.write(&fs, boot::ENVD_PATH, Content::Host { path: host.path.clone() }, 0o755)?;
    match mode {
        Mode::Init => {
            ch.link(&fs, &ctx.init, boot::ENVD_PATH)?;
        }
        Mode::Wrapper => {
            let text = plan::render_for(mode, boot::ENVD_PATH, &opts.envd_args).unwrap_or_default();
            c.warnings.extend(plan::wrapper_tool_warnings(&fs, &ctx, &text));
            ch.mountpoints(&fs);
            ch.write(&fs, &ctx.init, Content::Text { text }, 0o755)?;
        }
        Mode::Service => {
            let text = plan::render_for(mode, boot::ENVD_PATH, &opts.envd_args).unwrap_or_default();
            let unit = ch.write(&fs, UNIT_PATH, Content::Text { text }, 0o644)?;
            ch.link(&fs, WANTS_LINK, &unit)?;
        }
    }
    fork_marker(&fs, &mut ch, c.target)?;
    let args = opts.envd_args.clone();
    let plan =
        assemble("inject-envd", build, &opts.edit, c, mode, reason, Some(host), envd_path, args, Vec::new(), ch.list);
    Ok((plan, ctx))
}

/// Plan `rewrite-wrapper`: the init script becomes the template, around the same envd binary,
/// keeping the flags that envd accepts and dropping the others.
pub fn plan_rewrite(build: &Build, extra_args: &[String], edit: &EditOptions) -> Result<(Plan, Context)> {
    let fs = open_rootfs(build)?;
    let ctx = contents::context(build, Scan::WhenFlagsNeedIt);
    let w = plan::find_wrapper(&fs, &ctx)?;
    // The era of the envd that stays.
    let facts = boot::gather(&fs, &Context { scan: Scan::Always, ..ctx.clone() });
    let era = facts.envd.iter().find(|e| e.path == w.envd).and_then(|e| e.binary.as_ref()).and_then(|b| b.era());
    let era = era.unwrap_or_else(envd::current);
    let (parsed, _) = envd::parse_args_counted(&w.args);
    let mut keep = Vec::new();
    let mut dropped = Vec::new();
    for a in &parsed {
        if envd::check(std::slice::from_ref(a), era).is_empty() {
            keep.push(format!("-{}", a.name));
            if let Some(v) = &a.value {
                keep.push(v.clone());
            }
        } else {
            dropped.push(a.raw.clone());
        }
    }
    plan::check_envd_args(extra_args, era)?;
    keep.extend(extra_args.iter().cloned());
    let mut c = common(build, &fs, edit)?;
    let text = plan::render_for(Mode::Wrapper, &w.envd, &keep).unwrap_or_default();
    if let Err(why) = plan::shell_in_image(&fs, &ctx) {
        return Err(Error::refused("the wrapper template needs a working /bin/sh in the image", vec![why]));
    }
    c.warnings.extend(plan::wrapper_tool_warnings(&fs, &ctx, &text));
    for other in &w.others {
        c.warnings.push(format!(
            "the old wrapper also ran `{other}`; the template does not (add it back by hand if the image needs it)"
        ));
    }
    let mut ch = Changes::default();
    ch.mountpoints(&fs);
    ch.write(&fs, &w.script, Content::Text { text }, 0o755)?;
    fork_marker(&fs, &mut ch, c.target)?;
    let reason = format!(
        "{} started {} {}; it becomes tmpl's wrapper around the same binary",
        w.script,
        w.envd,
        w.args.join(" ")
    );
    let plan = assemble("rewrite-wrapper", build, edit, c, Mode::Wrapper, reason, None, w.envd, keep, dropped, ch.list);
    Ok((plan, ctx))
}
