//! The layering of docs/architecture.md, enforced: every top-level module of `src/` has a layer,
//! and a module may use only modules of lower layers. So no import cycle can come back between
//! top-level modules, and a new module must be placed in the table (here and in the docs) before
//! it can be used.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first (the same table as docs/architecture.md).
const LAYERS: &[&[&str]] = &[
    // Plain values with no knowledge of the rest.
    &["digest", "sanitize", "time", "exit"],
    // Names and documents of the distribution protocol.
    &["reference", "manifest"],
    // The configuration file, as plain data.
    &["config", "shard"],
    // The distribution client.
    &["registry"],
    // Azure: Entra sign-in behind the registry's trait, Blob Storage records and lock.
    &["azure"],
    // Which images are needed; which warms are complete (the warm ledger in the target registry).
    &["imageset", "ledger"],
    // What the target lacks; what it holds that the image set no longer needs.
    &["plan", "prune"],
    // Moving it.
    &["transfer"],
    // What happened, for people and CI systems.
    &["report"],
    // The application: a run from a config to its outcome.
    &["app"],
    // The command line.
    &["cli"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None` for lib.rs and main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_string_lossy().to_string();
    let name = first.trim_end_matches(".rs").to_string();
    (name != "lib" && name != "main").then_some(name)
}

/// `crate::X` paths in code, comments left out (doc comments name modules freely).
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.push((n + 1, name));
            }
            rest = &rest[i + "crate::".len()..];
        }
    }
    out
}

/// Checks that every top-level module is in the layer table, and that each `crate::` path in
/// code points to a module of a lower layer. A use that points sideways or up (the cycles the
/// architecture issue found: config ↔ azure, registry ↔ azure, plan ↔ transfer, …) fails and
/// names the file and line.
#[test]
fn modules_use_only_lower_layers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut edges: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else { continue };
        let Some(from_layer) = layer_of(&from) else {
            violations
                .push(format!("src/{from}: not in the layer table (tests/architecture.rs, docs/architecture.md)"));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for (line, to) in uses(&text) {
            if to == from {
                continue;
            }
            edges.entry(from.clone()).or_default().insert(to.clone());
            match layer_of(&to) {
                Some(l) if l < from_layer => {}
                Some(_) => violations.push(format!(
                    "{}:{line}: {from} uses {to}, which is not below it",
                    file.strip_prefix(&src).unwrap().display()
                )),
                None => violations.push(format!("{}:{line}: {to} is not in the layer table", file.display())),
            }
        }
    }
    assert!(violations.is_empty(), "layering broken:\n{}", violations.join("\n"));
    // The check must have looked at something: the application layer uses the layers below it.
    assert!(edges.get("app").is_some_and(|e| e.contains("plan") && e.contains("transfer")), "{edges:?}");
}

/// The docs' table and this test's table name the same modules in the same order, so the
/// written architecture cannot drift from the enforced one.
#[test]
fn the_docs_show_the_same_layers() {
    let doc = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md")).unwrap();
    let mut positions = Vec::new();
    for module in LAYERS.iter().flat_map(|l| l.iter()) {
        let needle = format!("`{module}`");
        let at = doc.find(&needle).unwrap_or_else(|| panic!("docs/architecture.md does not name {needle}"));
        positions.push((at, *module));
    }
    let layer_starts: Vec<usize> = LAYERS.iter().map(|l| positions.iter().find(|p| p.1 == l[0]).unwrap().0).collect();
    assert!(layer_starts.windows(2).all(|w| w[0] < w[1]), "docs/architecture.md lists the layers in another order");
}
