//! metadata.json checks (reference: e2b-formats.md §2).

use crate::build::{Build, Loaded};
use crate::metadata::{CURRENT_VERSION, VersionField};
use crate::report::{Check, Finding, Severity};
use crate::snapshot::FirecrackerVersion;
use crate::vocab::files::METADATA;

pub const ABSENT: Check = Check {
    id: "metadata.absent",
    severity: Severity::Info,
    title: "no metadata.json (a build from before 2025-08)",
    hint: "the orchestrator treats the build as metadata version 1 (legacy rootfs drive path); nothing to do",
};
pub const INVALID: Check = Check {
    id: "metadata.invalid",
    severity: Severity::Error,
    title: "metadata.json cannot be parsed",
    hint: "the orchestrator cannot load this template; restore metadata.json from the build's source storage",
};
pub const LEGACY_VERSION: Check = Check {
    id: "metadata.legacy-version",
    severity: Severity::Info,
    title: "metadata version 1 (or \"v1\"): the orchestrator ignores the contents",
    hint: "do not rewrite it to version 2: the version selects the rootfs drive path baked into the snapshot, and a change makes the memory snapshot unresumable",
};
pub const NO_VERSION: Check = Check {
    id: "metadata.no-version",
    severity: Severity::Warning,
    title: "metadata.json has no usable version",
    hint: "without a numeric version ≥ 2 the orchestrator discards the document and uses legacy (version 1) semantics",
};
pub const FUTURE_VERSION: Check = Check {
    id: "metadata.future-version",
    severity: Severity::Info,
    title: "metadata version newer than tmpl knows",
    hint: "parsed with unknown keys ignored, as the orchestrator does",
};
pub const BAD_FIELD: Check = Check {
    id: "metadata.bad-field",
    severity: Severity::Error,
    title: "a metadata field has the wrong JSON type",
    hint: "the orchestrator's JSON decoder rejects the document; fix the field or restore the file",
};
pub const BUILD_ID_MISMATCH: Check = Check {
    id: "metadata.build-id-mismatch",
    severity: Severity::Error,
    title: "template.build_id differs from the build folder",
    hint: "the folder was copied or renamed by hand; a copy must get its own metadata (tmpl inject-envd --fork writes one)",
};
pub const NO_TEMPLATE: Check = Check {
    id: "metadata.no-template",
    severity: Severity::Warning,
    title: "metadata has no template.build_id",
    hint: "E2B always writes template {build_id, kernel_version, firecracker_version} in version 2",
};
pub const UNKNOWN_FIRECRACKER: Check = Check {
    id: "metadata.unknown-firecracker",
    severity: Severity::Info,
    title: "firecracker_version is not one tmpl knows",
    hint: "the snapfile version cannot be cross-checked against it",
};

pub const NO_VERSIONS: Check = Check {
    id: "metadata.missing-versions",
    severity: Severity::Error,
    title: "metadata version 2 without kernel_version or firecracker_version",
    hint: "the orchestrator picks the kernel and Firecracker binary by these names; an empty one cannot boot or resume. Fill them in (E2B's look like vmlinux-6.1.158, v1.14.1_431f1fc)",
};

pub const CHECKS: &[&Check] = &[
    &NO_VERSIONS,
    &ABSENT,
    &INVALID,
    &LEGACY_VERSION,
    &NO_VERSION,
    &FUTURE_VERSION,
    &BAD_FIELD,
    &BUILD_ID_MISMATCH,
    &NO_TEMPLATE,
    &UNKNOWN_FIRECRACKER,
];

fn file() -> Option<String> {
    Some(METADATA.to_string())
}

pub fn check(build: &Build) -> Vec<Finding> {
    let mut out = Vec::new();
    let m = match &build.metadata {
        Loaded::Absent => {
            out.push(Finding::new(&ABSENT, file(), "metadata.json is absent: legacy build, version 1 semantics"));
            return out;
        }
        Loaded::Invalid(e) => {
            out.push(Finding::new(&INVALID, file(), format!("metadata.json {e}")));
            return out;
        }
        Loaded::Parsed(m) => m,
    };
    match &m.version {
        VersionField::Missing => out.push(Finding::new(
            &NO_VERSION,
            file(),
            "no \"version\" key: the document is discarded (version 1 semantics)",
        )),
        VersionField::Other(v) if m.type_errors.is_empty() => out.push(Finding::new(
            &NO_VERSION,
            file(),
            format!("version {v} is not a number: the document is discarded (version 1 semantics)"),
        )),
        VersionField::Other(_) => {}
        VersionField::Text(v) => out.push(Finding::new(
            &LEGACY_VERSION,
            file(),
            format!(
                "version {v:?} (string form, 2025-08): the orchestrator reads this as version 1 and ignores the rest"
            ),
        )),
        VersionField::Number(v) if *v <= 1 => out.push(Finding::new(
            &LEGACY_VERSION,
            file(),
            format!("version {v}: the orchestrator ignores the rest of the document"),
        )),
        VersionField::Number(v) if *v > CURRENT_VERSION => out.push(Finding::new(
            &FUTURE_VERSION,
            file(),
            format!(
                "version {v} is newer than {CURRENT_VERSION}; unknown keys: {}",
                if m.unknown_keys.is_empty() { "none".into() } else { m.unknown_keys.join(", ") }
            ),
        )),
        VersionField::Number(_) => {}
    }
    if !m.contents_ignored || matches!(m.version, VersionField::Other(_)) {
        for e in &m.type_errors {
            out.push(Finding::new(&BAD_FIELD, file(), e.clone()));
        }
    }
    match (m.build_id(), build.folder_id) {
        (Some(id), Some(folder)) if !id.eq_ignore_ascii_case(&folder.to_string()) => {
            let f = Finding::new(
                &BUILD_ID_MISMATCH,
                file(),
                format!("template.build_id is {id:?} but the folder is {folder}"),
            );
            // With version-1 semantics the orchestrator never reads the field.
            out.push(if m.contents_ignored { f.severity(Severity::Warning) } else { f });
        }
        (None, _) if !m.contents_ignored => {
            out.push(Finding::new(&NO_TEMPLATE, file(), "template.build_id is missing"))
        }
        _ => {}
    }
    if !m.contents_ignored {
        let empty: Vec<&str> =
            [("kernel_version", m.kernel_version()), ("firecracker_version", m.firecracker_version())]
                .into_iter()
                .filter(|(_, v)| v.is_none_or(|v| v.trim().is_empty()))
                .map(|(k, _)| k)
                .collect();
        if !empty.is_empty() {
            out.push(Finding::new(
                &NO_VERSIONS,
                file(),
                format!("template.{} missing or empty", empty.join(" and template.")),
            ));
        }
    }
    if !m.contents_ignored
        && let Some(fc) = m.firecracker_version()
        && !FirecrackerVersion::parse(fc).is_some_and(|v| v.known())
    {
        out.push(Finding::new(
            &UNKNOWN_FIRECRACKER,
            file(),
            format!("firecracker_version {fc:?} is not in tmpl's table (v0.23 … v1.16)"),
        ));
    }
    out
}
