//! `metadata.json`, every version E2B has written (reference: e2b-formats.md §2).
//!
//! The orchestrator reads `version` as any JSON value: if it is not a number, or is ≤ 1, the
//! whole document is discarded and the build has version-1 semantics (legacy rootfs drive path).
//! Otherwise the document is parsed fully, unknown keys ignored. We parse through
//! `serde_json::Value` so that every shape can be reported rather than rejected, and keep the
//! raw document so that `--fork`/`--drop-snapshot` can rewrite it without losing fields.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// Largest metadata.json we will read (real ones are a few KiB; prefetch lists can be larger).
pub const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// The latest metadata version tmpl knows (`CurrentVersion` in E2B).
pub const CURRENT_VERSION: u64 = 2;

/// How the `version` field was written.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum VersionField {
    /// No `version` key at all.
    Missing,
    /// A string such as `"v1"` (2025-08-01 … 2025-08-20).
    Text(String),
    /// A non-negative integer.
    Number(u64),
    /// Some other JSON value (float, negative, bool, object ...), kept as text.
    Other(String),
}

/// Fields of `template` (all optional: older writers omitted some).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TemplateFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firecracker_version: Option<String>,
}

/// A parsed metadata.json.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Metadata {
    pub version: VersionField,
    /// The version the orchestrator acts on: 1 unless `version` is a number ≥ 2.
    pub effective_version: u64,
    /// True when the orchestrator discards the document (effective version 1).
    pub contents_ignored: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateFields>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_template_build_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_command: Option<String>,
    pub filesystem_only: bool,
    pub fs_quiesced: bool,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cmdline_args: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefetch_pages: Option<usize>,
    /// Top-level keys tmpl does not know (tolerated, listed for `inspect`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unknown_keys: Vec<String>,
    /// Fields of the wrong JSON type. E2B's Go decoder rejects such a document when the version
    /// is ≥ 2, so the orchestrator cannot load the template.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub type_errors: Vec<String>,
    /// The document as read.
    #[serde(skip)]
    pub raw: Value,
}

/// Why a metadata.json could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("the document is a JSON {0}, not an object")]
    NotAnObject(&'static str),
}

const KNOWN_KEYS: &[&str] = &[
    "version",
    "template",
    "context",
    "metadata",
    "start",
    "from_image",
    "from_template",
    "prefetch",
    "cmdline_args",
    "filesystem_only",
    "fs_quiesced",
];

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parse a metadata.json document.
pub fn parse(bytes: &[u8]) -> Result<Metadata, ParseError> {
    let raw: Value = serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let Value::Object(obj) = &raw else {
        return Err(ParseError::NotAnObject(json_kind(&raw)));
    };
    let version = match obj.get("version") {
        None => VersionField::Missing,
        Some(Value::String(s)) => VersionField::Text(s.clone()),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => VersionField::Number(v),
            None => VersionField::Other(n.to_string()),
        },
        Some(other) => VersionField::Other(other.to_string()),
    };
    // E2B: a non-number or a number ≤ 1 discards the document. A number > 1 that is not an
    // unsigned integer (2.5, 1e3 as float) makes the full parse fail: reported as a type error.
    let numeric = obj.get("version").and_then(Value::as_f64);
    let effective_version = match (&version, numeric) {
        (VersionField::Number(v), _) if *v >= 2 => *v,
        _ => 1,
    };
    let contents_ignored = effective_version < 2;
    let mut type_errors = Vec::new();
    if let (VersionField::Other(v), Some(n)) = (&version, numeric)
        && n > 1.0
    {
        type_errors.push(format!("version {v} is not an unsigned integer"));
    }

    let str_field = |type_errors: &mut Vec<String>,
                     parent: &serde_json::Map<String, Value>,
                     key: &str,
                     ctx: &str|
     -> Option<String> {
        match parent.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                type_errors.push(format!("{ctx}{key} is a {}, expected a string", json_kind(v)));
                None
            }
        }
    };

    let template = match obj.get("template") {
        Some(Value::Object(t)) => Some(TemplateFields {
            template_id: str_field(&mut type_errors, t, "template_id", "template."),
            build_id: str_field(&mut type_errors, t, "build_id", "template."),
            kernel_version: str_field(&mut type_errors, t, "kernel_version", "template."),
            firecracker_version: str_field(&mut type_errors, t, "firecracker_version", "template."),
        }),
        None | Some(Value::Null) => None,
        Some(v) => {
            type_errors.push(format!("template is a {}, expected an object", json_kind(v)));
            None
        }
    };
    let from_image = str_field(&mut type_errors, obj, "from_image", "");
    let from_template_build_id = match obj.get("from_template") {
        Some(Value::Object(t)) => str_field(&mut type_errors, t, "build_id", "from_template."),
        _ => None,
    };
    let (start_command, ready_command) = match obj.get("start") {
        Some(Value::Object(s)) => (
            str_field(&mut type_errors, s, "start_command", "start."),
            str_field(&mut type_errors, s, "ready_command", "start."),
        ),
        _ => (None, None),
    };
    let bool_field = |type_errors: &mut Vec<String>, key: &str| -> bool {
        match obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                type_errors.push(format!("{key} is a {}, expected true or false", json_kind(v)));
                false
            }
        }
    };
    let filesystem_only = bool_field(&mut type_errors, "filesystem_only");
    let fs_quiesced = bool_field(&mut type_errors, "fs_quiesced");
    let mut cmdline_args = BTreeMap::new();
    match obj.get("cmdline_args") {
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        cmdline_args.insert(k.clone(), s.clone());
                    }
                    other => type_errors.push(format!("cmdline_args.{k} is a {}, expected a string", json_kind(other))),
                }
            }
        }
        None | Some(Value::Null) => {}
        Some(v) => type_errors.push(format!("cmdline_args is a {}, expected an object", json_kind(v))),
    }
    let prefetch_pages = obj
        .get("prefetch")
        .and_then(|p| p.get("memory"))
        .and_then(|m| m.get("indices"))
        .and_then(Value::as_array)
        .map(Vec::len);
    let unknown_keys = obj.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).cloned().collect();

    Ok(Metadata {
        version,
        effective_version,
        contents_ignored,
        template,
        from_image,
        from_template_build_id,
        start_command,
        ready_command,
        filesystem_only: filesystem_only && !contents_ignored,
        fs_quiesced: fs_quiesced && !contents_ignored,
        cmdline_args,
        prefetch_pages,
        unknown_keys,
        type_errors,
        raw,
    })
}

impl std::fmt::Display for VersionField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionField::Missing => write!(f, "missing"),
            VersionField::Text(s) => write!(f, "{s:?}"),
            VersionField::Number(n) => write!(f, "{n}"),
            VersionField::Other(s) => write!(f, "{s}"),
        }
    }
}

impl Metadata {
    /// `template.build_id`, when the orchestrator reads it.
    pub fn build_id(&self) -> Option<&str> {
        self.template.as_ref()?.build_id.as_deref()
    }

    /// `template.firecracker_version`, e.g. `v1.14.1_431f1fc`.
    pub fn firecracker_version(&self) -> Option<&str> {
        self.template.as_ref()?.firecracker_version.as_deref()
    }

    pub fn kernel_version(&self) -> Option<&str> {
        self.template.as_ref()?.kernel_version.as_deref()
    }

    /// A copy of the raw document with `template.build_id` set (for `--fork`).
    pub fn with_build_id(&self, id: &str) -> Value {
        let mut raw = self.raw.clone();
        if let Some(obj) = raw.as_object_mut() {
            let t = obj.entry("template").or_insert_with(|| Value::Object(Default::default()));
            if let Some(t) = t.as_object_mut() {
                t.insert("build_id".into(), Value::String(id.to_string()));
            }
        }
        raw
    }
}

/// A minimal current-version (2) document, as E2B writes it (compact, struct order).
pub fn render_v2(build_id: &str, kernel_version: &str, firecracker_version: &str, filesystem_only: bool) -> String {
    let mut doc = serde_json::json!({
        "version": 2,
        "template": {
            "build_id": build_id,
            "kernel_version": kernel_version,
            "firecracker_version": firecracker_version,
        },
        "context": {},
    });
    if filesystem_only {
        doc["filesystem_only"] = Value::Bool(true);
    }
    doc.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "11111111-2222-3333-4444-555555555555";

    // The TV-M vectors of e2b-formats.md.
    #[test]
    fn string_v1_is_ignored() {
        let m = parse(br#"{"version":"v1","template":{"template_id":"t1","build_id":"11111111-2222-3333-4444-555555555555","kernel_version":"vmlinux-6.1.102","firecracker_version":"v1.10.1_1fcdaec"},"metadata":{"user":"root"},"from_image":"ubuntu:22.04"}"#).unwrap();
        assert_eq!(m.version, VersionField::Text("v1".into()));
        assert_eq!(m.effective_version, 1);
        assert!(m.contents_ignored);
        assert_eq!(m.build_id(), Some(A));
        assert!(m.type_errors.is_empty() && m.unknown_keys.is_empty());
    }

    #[test]
    fn numeric_v1() {
        let m = parse(br#"{"version":1,"template":{"build_id":"11111111-2222-3333-4444-555555555555","kernel_version":"vmlinux-6.1.102","firecracker_version":"v1.10.1_1fcdaec"},"context":{}}"#).unwrap();
        assert_eq!((m.version.clone(), m.effective_version), (VersionField::Number(1), 1));
        assert_eq!(m.firecracker_version(), Some("v1.10.1_1fcdaec"));
    }

    #[test]
    fn v2_full_and_extended() {
        let m = parse(br#"{"version":2,"template":{"build_id":"11111111-2222-3333-4444-555555555555","kernel_version":"vmlinux-6.1.158","firecracker_version":"v1.14.1_431f1fc"},"context":{"user":"user","workdir":"/home/user","env_vars":{"K":"V"}},"start":{"start_command":"npm start","ready_command":"curl -sf localhost:3000","context":{"user":"user"}},"from_template":{"alias":"base","build_id":"aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"},"prefetch":{"memory":{"indices":[0,7,3],"access_types":["r","w","p"],"block_size":4096}},"cmdline_args":{"mitigations":"off"},"filesystem_only":true,"fs_quiesced":true}"#).unwrap();
        assert_eq!(m.effective_version, 2);
        assert!(!m.contents_ignored && m.filesystem_only && m.fs_quiesced);
        assert_eq!(m.start_command.as_deref(), Some("npm start"));
        assert_eq!(m.from_template_build_id.as_deref(), Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"));
        assert_eq!(m.prefetch_pages, Some(3));
        assert_eq!(m.cmdline_args.get("mitigations").map(String::as_str), Some("off"));
        assert!(m.type_errors.is_empty() && m.unknown_keys.is_empty(), "{m:?}");
    }

    #[test]
    fn future_version_tolerates_unknown_keys() {
        let m = parse(br#"{"version":3,"template":{"build_id":"x"},"context":{},"shiny_new":{"a":1}}"#).unwrap();
        assert_eq!(m.effective_version, 3);
        assert_eq!(m.unknown_keys, vec!["shiny_new".to_string()]);
    }

    #[test]
    fn invalid_shapes() {
        assert!(matches!(parse(b"{not json"), Err(ParseError::Json(_))));
        assert!(matches!(parse(b"[1,2]"), Err(ParseError::NotAnObject("array"))));
        assert!(matches!(parse(b""), Err(ParseError::Json(_))));
        let m = parse(br#"{"version":2.5}"#).unwrap();
        assert_eq!(m.effective_version, 1);
        assert_eq!(m.type_errors.len(), 1);
        let m = parse(br#"{"version":2,"template":{"build_id":5},"filesystem_only":"yes"}"#).unwrap();
        assert_eq!(m.type_errors.len(), 2, "{:?}", m.type_errors);
        let m = parse(br#"{"template":{}}"#).unwrap();
        assert_eq!((m.version.clone(), m.effective_version), (VersionField::Missing, 1));
    }

    #[test]
    fn fork_rewrites_only_build_id() {
        let m =
            parse(br#"{"version":2,"template":{"build_id":"old","kernel_version":"k"},"context":{},"x":1}"#).unwrap();
        let v = m.with_build_id(A);
        assert_eq!(v["template"]["build_id"], A);
        assert_eq!(v["template"]["kernel_version"], "k");
        assert_eq!(v["x"], 1);
        let round = parse(render_v2(A, "vmlinux-6.1.158", "v1.14.1_431f1fc", true).as_bytes()).unwrap();
        assert!(round.filesystem_only);
        assert_eq!(round.build_id(), Some(A));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = parse(s.as_bytes());
        }
    }
}
