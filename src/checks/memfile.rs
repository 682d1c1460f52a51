//! memfile checks: size against the VM's memory and the header, page alignment
//! (reference: firecracker-snapshot.md §4). Only sizes are used: the memfile is never read.

use crate::build::{Build, Loaded};
use crate::header::HUGE_PAGE;
use crate::report::{Check, Finding, Severity, human_bytes};

pub const MISSING: Check = Check {
    id: "memfile.missing",
    severity: Severity::Error,
    title: "a snapfile without guest memory",
    hint: "the VM state cannot be resumed without its memory; restore memfile and memfile.header, or mark the build filesystem_only for a cold boot",
};
pub const SIZE_MISMATCH: Check = Check {
    id: "memfile.size-mismatch",
    severity: Severity::Error,
    title: "guest memory is smaller than the snapshot's mem_size_mib",
    hint: "a short memfile gives \"Could not restore queue\" or SIGBUS in the guest; restore the memfile (and header) that belong to this snapfile",
};
pub const LARGER_THAN_VM: Check = Check {
    id: "memfile.larger-than-vm",
    severity: Severity::Warning,
    title: "guest memory is larger than the snapshot's mem_size_mib",
    hint: "the VM is resumed with mem_size_mib of memory and the bytes past it are never read, so the resume itself works; but Firecracker writes exactly mem_size_mib and E2B records that size, so this memfile was not written with this snapfile: extended by a copy (harmless), or the memory of a bigger VM (the guest then resumes on another VM's memory). Compare it with the source storage",
};
pub const UNALIGNED: Check = Check {
    id: "memfile.unaligned",
    severity: Severity::Error,
    title: "guest memory size is not a whole number of pages",
    hint: "memory is served in pages (4 KiB, or 2 MiB with hugepages); the file or header Size is corrupt",
};

pub const CHECKS: &[&Check] = &[&MISSING, &SIZE_MISMATCH, &LARGER_THAN_VM, &UNALIGNED];

pub fn check(build: &Build) -> Vec<Finding> {
    let mut out = Vec::new();
    let files = &build.memfile;
    let snap = build.snapfile.parsed();
    if files.is_absent() {
        if snap.is_some() && !build.is_filesystem_only() {
            out.push(Finding::new(
                &MISSING,
                Some("memfile".into()),
                "snapfile present but neither memfile nor memfile.header exists",
            ));
        }
        return out;
    }
    // The logical memory size: header Size, else the headerless data file's length.
    let (size, source, page) = match &files.header {
        Loaded::Parsed(h) => {
            let page = if h.block_size >= HUGE_PAGE { HUGE_PAGE } else { 4096 };
            (h.size, "memfile.header Size", page)
        }
        Loaded::Absent => match files.data {
            Some(d) => (d.len, "memfile length", 4096),
            None => return out,
        },
        Loaded::Invalid(_) => return out,
    };
    let page = if snap.and_then(|s| s.huge_pages) == Some(true) { HUGE_PAGE } else { page };
    if size % page != 0 {
        out.push(Finding::new(
            &UNALIGNED,
            Some("memfile".into()),
            format!("{source} is {size} bytes, not a multiple of the {} page size", human_bytes(page)),
        ));
    }
    // What the VM's memory is: mem_size_mib, else (a state that does not record it) the sum of
    // its DRAM regions.
    let expect =
        snap.and_then(|s| s.mem_bytes().map(|b| (b, "mem_size_mib")).or(s.regions_total().map(|b| (b, "regions"))));
    if let Some((expect, from)) = expect {
        let mib = expect >> 20;
        let what = if from == "mem_size_mib" {
            format!("the snapfile's VM has mem_size_mib {mib} ({expect} bytes)")
        } else {
            format!("the snapfile's memory regions add up to {mib} MiB ({expect} bytes)")
        };
        if size < expect {
            out.push(Finding::new(
                &SIZE_MISMATCH,
                Some("memfile".into()),
                format!(
                    "{source} is {} ({size} bytes) but {what}: {} bytes of guest memory have no data",
                    human_bytes(size),
                    expect - size
                ),
            ));
        } else if size > expect {
            out.push(Finding::new(
                &LARGER_THAN_VM,
                Some("memfile".into()),
                format!(
                    "{source} is {} ({size} bytes) but {what}: the last {} bytes are never read",
                    human_bytes(size),
                    size - expect
                ),
            ));
        }
    }
    out
}
