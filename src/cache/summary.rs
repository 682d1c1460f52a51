//! Merge per-node `purge-cache --json` reports (one per orchestrator node, e.g. the logs of a
//! Nomad sysbatch dispatch) into one cluster summary.
//!
//! Reports are read leniently, field by field, so a summary still works across tmpl versions;
//! anything that is not a purge-cache report, and any node's error document, counts as a failed
//! node. Entries of the shared chunk cache are the same folders seen from every node, so their
//! planned bytes are counted once per path.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::{CacheKind, Verdict};

/// One input document: where it came from and what it parsed to.
#[derive(Debug)]
pub struct Input {
    pub source: String,
    pub doc: std::result::Result<Value, String>,
}

/// How one node did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeVerdict {
    Clean,
    SafetySkipped,
    Failed,
    /// The node's tmpl stopped with an error document.
    Error,
    /// The input is not a purge-cache report.
    Invalid,
}

/// One node's line.
#[derive(Clone, Debug, Serialize)]
pub struct NodeLine {
    pub node: String,
    pub source: String,
    pub verdict: NodeVerdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u64>,
    pub dry_run: bool,
    pub orchestrator_running: bool,
    pub entries: u64,
    pub purged: u64,
    pub planned_bytes: u64,
    pub freed_bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    pub refused_roots: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Totals for one cache kind across nodes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KindTotal {
    pub kind: String,
    /// Nodes where this root was scanned.
    pub nodes: u64,
    pub entries: u64,
    pub purged: u64,
    pub planned_bytes: u64,
    pub freed_bytes: u64,
    pub skipped: u64,
    pub failed: u64,
    pub refused_roots: u64,
    /// Shared by the nodes (chunk cache): entries and planned bytes counted once per path.
    pub shared: bool,
}

/// One skipped entry, with its node.
#[derive(Clone, Debug, Serialize)]
pub struct SkipLine {
    pub node: String,
    pub kind: String,
    pub path: String,
    pub reason: String,
    pub detail: String,
}

/// Cluster totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterTotals {
    pub nodes: usize,
    pub clean: usize,
    pub safety_skipped: usize,
    pub failed: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_nodes: Option<usize>,
    pub missing_nodes: usize,
    pub entries: u64,
    pub purged: u64,
    pub planned_bytes: u64,
    pub freed_bytes: u64,
    pub skipped: u64,
}

/// The merged view.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterSummary {
    pub build_ids: Vec<String>,
    pub all: bool,
    pub dry_run: bool,
    pub nodes: Vec<NodeLine>,
    pub caches: Vec<KindTotal>,
    pub totals: ClusterTotals,
    pub failures: Vec<String>,
    pub skipped: Vec<SkipLine>,
    pub verdict: Verdict,
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn b(v: &Value, k: &str) -> bool {
    v.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// Merge node reports. `expected_nodes`: how many nodes should have reported.
pub fn merge(inputs: &[Input], expected_nodes: Option<usize>) -> ClusterSummary {
    let mut nodes = Vec::new();
    let mut kinds: BTreeMap<String, KindTotal> = BTreeMap::new();
    let mut shared_seen: BTreeSet<String> = BTreeSet::new();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    let mut all = false;
    let mut dry_run = false;

    for (i, input) in inputs.iter().enumerate() {
        let fallback = format!("{}#{}", input.source, i + 1);
        let doc = match &input.doc {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{}: not JSON: {e}", input.source));
                nodes.push(invalid(&fallback, &input.source, e.clone()));
                continue;
            }
        };
        let node = s(doc, "node").map(str::to_string).unwrap_or(fallback.clone());
        if s(doc, "command") != Some("purge-cache") {
            let msg = "not a purge-cache report".to_string();
            failures.push(format!("{node}: {msg}"));
            nodes.push(invalid(&node, &input.source, msg));
            continue;
        }
        if let Some(err) = doc.get("error") {
            let msg = s(err, "message").unwrap_or("error").to_string();
            failures.push(format!("{node}: {msg}"));
            let mut line = invalid(&node, &input.source, msg);
            line.verdict = NodeVerdict::Error;
            line.exit_code = err.get("exit_code").and_then(Value::as_u64);
            nodes.push(line);
            continue;
        }
        if doc.get("totals").is_none() || doc.get("caches").is_none() {
            let msg = "purge-cache output without totals (--show-roots or --summarize output?)".to_string();
            failures.push(format!("{node}: {msg}"));
            nodes.push(invalid(&node, &input.source, msg));
            continue;
        }
        dry_run |= b(doc, "dry_run");
        all |= b(doc, "all");
        if let Some(list) = doc.get("build_ids").and_then(Value::as_array) {
            ids.extend(list.iter().filter_map(Value::as_str).map(str::to_string));
        }
        let t = &doc["totals"];
        let verdict = match s(doc, "verdict") {
            Some("clean") => NodeVerdict::Clean,
            Some("safety-skipped") => NodeVerdict::SafetySkipped,
            _ => NodeVerdict::Failed,
        };
        let line = NodeLine {
            node: node.clone(),
            source: input.source.clone(),
            verdict,
            exit_code: doc.get("exit_code").and_then(Value::as_u64),
            dry_run: b(doc, "dry_run"),
            orchestrator_running: doc.get("orchestrator").is_some_and(|o| b(o, "running")),
            entries: u(t, "entries"),
            purged: u(t, "purged"),
            planned_bytes: u(t, "planned_bytes"),
            freed_bytes: u(t, "freed_bytes"),
            skipped: u(t, "skipped"),
            failed: u(t, "failed"),
            refused_roots: u(t, "refused_roots"),
            error: None,
        };
        for c in doc["caches"].as_array().into_iter().flatten() {
            let kind = s(c, "kind").unwrap_or("?").to_string();
            let shared = kind == CacheKind::Chunk.name();
            let k = kinds.entry(kind.clone()).or_insert_with(|| KindTotal {
                kind: kind.clone(),
                shared,
                ..Default::default()
            });
            let status = s(c, "status").unwrap_or("");
            if status == "ok" {
                k.nodes += 1;
            }
            if status == "refused" || status == "error" {
                k.refused_roots += u64::from(status == "refused");
                failures.push(format!(
                    "{node}: {kind} cache {}: {}",
                    status,
                    s(c, "reason").unwrap_or("(no reason given)")
                ));
            }
            for e in c.get("entries").and_then(Value::as_array).into_iter().flatten() {
                let path = s(e, "path").unwrap_or("");
                let first = !shared || shared_seen.insert(format!("{}|{path}", s(c, "root").unwrap_or("")));
                if first {
                    k.entries += 1;
                    k.planned_bytes += u(e, "allocated_bytes");
                }
                k.freed_bytes += u(e, "freed_bytes");
                match s(e, "status") {
                    Some("purged") => k.purged += 1,
                    Some("failed") => {
                        k.failed += 1;
                        failures.push(format!("{node}: {path}: {}", s(e, "error").unwrap_or("failed")));
                    }
                    _ => {}
                }
            }
            for sk in c.get("skipped").and_then(Value::as_array).into_iter().flatten() {
                k.skipped += 1;
                skipped.push(SkipLine {
                    node: node.clone(),
                    kind: kind.clone(),
                    path: s(sk, "path").unwrap_or("").to_string(),
                    reason: s(sk, "reason").unwrap_or("").to_string(),
                    detail: s(sk, "detail").unwrap_or("").to_string(),
                });
            }
        }
        nodes.push(line);
    }

    let mut totals = ClusterTotals { nodes: nodes.len(), expected_nodes, ..Default::default() };
    for n in &nodes {
        match n.verdict {
            NodeVerdict::Clean => totals.clean += 1,
            NodeVerdict::SafetySkipped => totals.safety_skipped += 1,
            _ => totals.failed += 1,
        }
    }
    for k in kinds.values() {
        totals.entries += k.entries;
        totals.purged += k.purged;
        totals.planned_bytes += k.planned_bytes;
        totals.freed_bytes += k.freed_bytes;
        totals.skipped += k.skipped;
    }
    if let Some(exp) = expected_nodes {
        totals.missing_nodes = exp.saturating_sub(nodes.len());
        if totals.missing_nodes > 0 {
            failures.push(format!("{} of {exp} expected nodes did not report", totals.missing_nodes));
        }
    }
    if nodes.is_empty() {
        failures.push("no node reports".into());
    }
    let verdict = if totals.failed > 0 || totals.missing_nodes > 0 || nodes.is_empty() {
        Verdict::Failed
    } else if totals.safety_skipped > 0 {
        Verdict::SafetySkipped
    } else {
        Verdict::Clean
    };
    ClusterSummary {
        build_ids: ids.into_iter().collect(),
        all,
        dry_run,
        nodes,
        caches: kinds.into_values().collect(),
        totals,
        failures,
        skipped,
        verdict,
    }
}

fn invalid(node: &str, source: &str, error: String) -> NodeLine {
    NodeLine {
        node: node.to_string(),
        source: source.to_string(),
        verdict: NodeVerdict::Invalid,
        exit_code: None,
        dry_run: false,
        orchestrator_running: false,
        entries: 0,
        purged: 0,
        planned_bytes: 0,
        freed_bytes: 0,
        skipped: 0,
        failed: 0,
        refused_roots: 0,
        error: Some(error),
    }
}

/// Split a text holding one or more JSON documents (concatenated `nomad alloc logs`) into
/// values; text that is not JSON ends the stream with an error entry.
pub fn parse_stream(source: &str, text: &str) -> Vec<Input> {
    let mut out = Vec::new();
    let mut it = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        match it.next() {
            None => break,
            Some(Ok(v)) => out.push(Input { source: source.to_string(), doc: Ok(v) }),
            Some(Err(e)) => {
                out.push(Input { source: source.to_string(), doc: Err(e.to_string()) });
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, verdict: &str, chunk_path: &str, freed: u64) -> Value {
        json!({
            "format_version": 1, "command": "purge-cache", "ok": verdict == "clean", "node": name,
            "dry_run": false, "build_ids": ["aaaaaaaa-0000-4000-8000-000000000001"], "all": false,
            "verdict": verdict, "exit_code": if verdict == "clean" { 0 } else { 5 },
            "orchestrator": {"running": verdict != "clean"},
            "caches": [
                {"kind": "chunk", "root": "/nfs", "status": "ok", "entries": [
                    {"path": chunk_path, "allocated_bytes": 1000, "freed_bytes": freed, "status": if freed > 0 {"purged"} else {"gone"}}
                ], "skipped": []},
                {"kind": "template", "root": "/o/template", "status": "ok", "entries": [],
                 "skipped": if verdict == "clean" { json!([]) } else { json!([{"path": "/o/template/x", "reason": "orchestrator-running", "detail": "lock held"}]) }}
            ],
            "totals": {"entries": 1, "purged": u64::from(freed > 0), "planned_bytes": 1000, "freed_bytes": freed, "skipped": 0, "failed": 0, "refused_roots": 0}
        })
    }

    #[test]
    fn shared_chunk_entries_count_once_and_verdicts_combine() {
        let text = format!("{}\n{}", node("n1", "clean", "/nfs/a", 1000), node("n2", "safety-skipped", "/nfs/a", 0));
        let mut inputs = parse_stream("-", &text);
        inputs.push(Input { source: "bad.json".into(), doc: Err("EOF".into()) });
        let sum = merge(&inputs[..2], Some(2));
        let chunk = sum.caches.iter().find(|k| k.kind == "chunk").unwrap();
        assert_eq!((chunk.entries, chunk.planned_bytes, chunk.freed_bytes, chunk.nodes), (1, 1000, 1000, 2));
        assert_eq!(sum.verdict, Verdict::SafetySkipped);
        assert_eq!(sum.skipped.len(), 1);
        assert_eq!(sum.skipped[0].node, "n2");
        let sum = merge(&inputs, Some(4));
        assert_eq!(sum.verdict, Verdict::Failed);
        assert_eq!(sum.totals.missing_nodes, 1);
        assert_eq!(sum.nodes[2].verdict, NodeVerdict::Invalid);
        assert_eq!(merge(&[], None).verdict, Verdict::Failed);
    }

    #[test]
    fn error_documents_and_garbage() {
        let err = json!({"format_version":1,"command":"purge-cache","ok":false,"error":{"kind":"bad-build-id","message":"invalid build ID \"x\"","exit_code":3}});
        let inputs = parse_stream("n3.log", &format!("{err} garbage"));
        assert_eq!(inputs.len(), 2);
        let sum = merge(&inputs, None);
        assert_eq!(sum.nodes[0].verdict, NodeVerdict::Error);
        assert_eq!(sum.nodes[0].exit_code, Some(3));
        assert_eq!(sum.nodes[1].verdict, NodeVerdict::Invalid);
        assert_eq!(sum.failures.len(), 2);
    }
}
