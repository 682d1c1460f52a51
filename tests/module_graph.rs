//! No import cycles among tmpl's top-level modules: the `crate::<module>` paths each module's
//! code (comments and `#[cfg(test)] mod tests` blocks left out) names form a graph with no
//! cycle. Nothing is allow-listed. docs/architecture.md draws the same graph by layer.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a source file: comment lines and the unit-test module dropped.
fn code_of(text: &str) -> String {
    let text = without_tests(text);
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// `text` up to its unit-test module (`#[cfg(test)]`, other attributes, then `mod tests`).
fn without_tests(text: &str) -> &str {
    match text.find("\nmod tests {") {
        Some(at) => text[..at].rfind("#[cfg(test)]").map_or(&text[..at], |c| &text[..c]),
        None => text,
    }
}

/// Top-level module → the top-level modules its code names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_str().unwrap().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let list = files.entry(name).or_default();
        if p.is_dir() { rs_files(&p, list) } else { list.push(p) }
    }
    let names: BTreeSet<String> = files.keys().cloned().collect();
    let mut g = BTreeMap::new();
    for (m, paths) in &files {
        let mut deps = BTreeSet::new();
        for p in paths {
            deps.extend(deps_in(&code_of(&std::fs::read_to_string(p).unwrap()), &names, m));
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// The modules of `names` (other than `this`) that `code` names as `crate::a` or in a
/// `crate::{a, b::c}` group (top level of the group only).
fn deps_in(code: &str, names: &BTreeSet<String>, this: &str) -> BTreeSet<String> {
    let mut deps = BTreeSet::new();
    let mut add = |word: &str| {
        let word: String = word.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if names.contains(&word) && word != this {
            deps.insert(word);
        }
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            add(rest);
            continue;
        };
        // Split the group at its top-level commas.
        let (mut depth, mut start) = (0usize, 0usize);
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    add(&group[start..i]);
                    break;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    add(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
    }
    deps
}

/// Every cycle's members (strongly connected components of more than one module).
fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Reachability by DFS is plenty for ~40 modules.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(v) = stack.pop() {
            for w in &g[&v] {
                if seen.insert(w.clone()) {
                    stack.push(w.clone());
                }
            }
        }
        seen
    };
    let r: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|k| (k, reach(k))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for a in g.keys() {
        let comp: Vec<String> =
            g.keys().filter(|b| *b == a || (r[a].contains(*b) && r[*b].contains(a))).cloned().collect();
        if comp.len() > 1 && !out.contains(&comp) {
            out.push(comp);
        }
    }
    out
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let g = graph();
    assert!(g.len() > 20, "the scan found only {} modules", g.len());
    assert!(g["commands"].contains("checks") && g["checks"].contains("report"), "the scan misses imports: {g:#?}");
    let found = cycles(&g);
    let explain: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| g[a].iter().filter(|b| c.contains(b)).map(move |b| format!("{a} -> {b}")))
                .collect();
            format!("{c:?}: {}", edges.join(", "))
        })
        .collect();
    assert!(found.is_empty(), "import cycles among top-level modules:\n{}", explain.join("\n"));
}

/// The checker itself finds a cycle when there is one (so the test above can fail).
#[test]
fn the_cycle_check_sees_a_planted_cycle() {
    let mut g = graph();
    g.get_mut("report").unwrap().insert("commands".into());
    let found = cycles(&g);
    assert!(
        found.iter().any(|c| c.contains(&"report".to_string()) && c.contains(&"commands".to_string())),
        "{found:?}"
    );
}

/// A test module is cut off with the attributes before it.
#[test]
fn test_modules_are_left_out() {
    let text = "use crate::a;\n#[cfg(test)]\n#[expect(dead_code, reason = \"x\")]\nmod tests {\n    use crate::b;\n}\n";
    assert_eq!(without_tests(text), "use crate::a;\n");
}

/// Paths and `crate::{a, b::{c, d}}` groups are read as imports of their top-level modules.
#[test]
fn paths_and_grouped_imports_are_seen() {
    let names: BTreeSet<String> = ["build", "report", "vocab", "device", "sys"].map(String::from).into();
    let code = "use crate::{build::Build, report::{Check, Finding},\n  vocab};\nlet d = crate::device::open(x);";
    let got = deps_in(code, &names, "checks");
    assert_eq!(got, ["build", "device", "report", "vocab"].map(String::from).into());
    assert!(deps_in("use crate::sys::x;", &names, "sys").is_empty(), "a module's own paths are not edges");
}

/// docs/architecture.md's "Module graph" block is the graph of the code as it is: a module added,
/// or an import that changes the layering, fails here until the page says so. The failure
/// prints the block to paste.
#[test]
fn the_architecture_page_draws_the_current_graph() {
    let page = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md")).unwrap();
    let section = page.split("## Module graph").nth(1).expect("the page has a Module graph section");
    let block = section.split("```").nth(1).expect("the section has a code block");
    let mut drawn: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut last = String::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        // "name → deps" or a continuation line (deps only, indented); "(none)" and a trailing
        // "(...)" remark are not modules.
        let deps = match line.split_once('→') {
            Some((name, deps)) => {
                last = name.trim().to_string();
                deps
            }
            None => line,
        };
        let deps = deps.split('(').next().unwrap_or("");
        let entry = drawn.entry(last.clone()).or_default();
        entry.extend(deps.split_whitespace().map(str::to_string));
    }
    let actual = graph();
    if drawn != actual {
        let expected: Vec<String> = actual
            .iter()
            .map(|(m, d)| {
                let deps =
                    if d.is_empty() { "(none)".to_string() } else { d.iter().cloned().collect::<Vec<_>>().join(" ") };
                format!("{m:<10} → {deps}")
            })
            .collect();
        panic!("docs/architecture.md's module graph is not the code's; the code's is:\n{}", expected.join("\n"));
    }
}
