//! The layering of docs/architecture.md, enforced: every top-level module of `src/` has a layer,
//! and a module may use only modules of lower layers. So no import cycle can come back between
//! top-level modules, and a new module must be placed in the table (here and in the docs) before
//! it can be used.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first (the same table as docs/architecture.md).
const LAYERS: &[&[&str]] = &[
    // Plain values with no knowledge of the rest.
    &["digest", "sanitize", "time", "exit"],
    // Names and documents of the distribution protocol.
    &["reference", "manifest"],
    // Who published an image: signature verification on bytes handed to it (no config, no network).
    &["provenance"],
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

/// The module path of a file of `src/` (`transfer/copy.rs` → `[transfer, copy]`,
/// `registry/mod.rs` → `[registry]`), or `None` for lib.rs and main.rs, the crate root.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut path: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let file = path.pop()?;
    match file.trim_end_matches(".rs") {
        "mod" => {}
        "lib" | "main" if path.is_empty() => return None,
        name => path.push(name.to_string()),
    }
    Some(path)
}

/// `text` with comments, string and character literals blanked out (line breaks kept, so
/// line numbers stay right): doc comments name modules freely, and a `{` in a string must not
/// count as a brace.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i..].starts_with(&['/', '*']) {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i..].starts_with(&['*', '/']) {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == '"' {
            // A raw string when `r` and `#`s come right before it, outside an identifier.
            let hashes = chars[..i].iter().rev().take_while(|&&h| h == '#').count();
            let r = i.checked_sub(hashes + 1).filter(|&r| chars[r] == 'r');
            let raw = r.is_some_and(|r| {
                r == 0 || !ident(chars[r - 1]) || (chars[r - 1] == 'b' && (r < 2 || !ident(chars[r - 2])))
            });
            out.push(' ');
            i += 1;
            while i < chars.len() {
                if !raw && chars[i] == '\\' {
                    out.push(' ');
                    out.extend(chars.get(i + 1).map(|&c| blank(c)));
                    i += 2;
                } else if chars[i] == '"'
                    && (!raw || chars[i + 1..].iter().take_while(|&&h| h == '#').count() >= hashes)
                {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
            // A character literal ('{', '\n', '\u{7b}'), not a lifetime.
            out.push(' ');
            i += 1;
            if chars[i] == '\\' {
                out.push_str("  ");
                i += 2;
            }
            while i < chars.len() && chars[i] != '\'' {
                out.push(' ');
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The tokens of code: identifiers and keywords, `::`, and single other characters; each with
/// its line.
fn tokens(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut chars = line.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c.is_alphanumeric() || c == '_' {
                let mut end = at + c.len_utf8();
                while let Some(&(i, d)) = chars.peek().filter(|(_, d)| d.is_alphanumeric() || *d == '_') {
                    end = i + d.len_utf8();
                    chars.next();
                }
                out.push((n + 1, line[at..end].to_string()));
            } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
                chars.next();
                out.push((n + 1, "::".into()));
            } else if !c.is_whitespace() {
                out.push((n + 1, c.to_string()));
            }
        }
    }
    out
}

/// The first segments of the use tree at `tokens[at]` (`a::b` → `a`; `{a::{b, c}, d}` → `a`,
/// `d`; `*` → `*`), each with its line. `self` in a group names the path before it: skipped.
fn first_segments(tokens: &[(usize, String)], at: usize, out: &mut Vec<(usize, String)>) {
    let Some((line, token)) = tokens.get(at) else { return };
    if token != "{" {
        if token != "self" {
            out.push((*line, token.clone()));
        }
        return;
    }
    // A group: each item starts after its `{` or a `,` at the group's own depth.
    let (mut depth, mut item) = (0, false);
    for i in at..tokens.len() {
        let t = tokens[i].1.as_str();
        if depth == 1 && item && t != "}" && t != "," {
            first_segments(tokens, i, out);
            item = false;
        }
        match t {
            "{" => {
                depth += 1;
                item |= depth == 1;
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            "," if depth == 1 => item = true,
            _ => {}
        }
    }
}

/// The top-level modules that code in the file of module path `file` uses, each with its line:
/// every path that starts at `crate::`, `super::` (resolved against the module it is written
/// in, inline `mod x { … }` blocks included) or `self::`, in `use` items and in expressions
/// alike, grouped imports (`crate::{a::{b, c}, d}`) included. Paths into the file's own
/// top-level module are left out; one that reaches the crate root and names no module there
/// (`use super::*` from a top-level module) comes back as its name, or `*`.
fn uses(file: &[String], text: &str) -> Vec<(usize, String)> {
    let tokens = tokens(&code_only(text));
    let mut out = Vec::new();
    // The module the code is in, and for each open brace whether it opened a `mod x {` block.
    let mut module: Vec<String> = file.to_vec();
    let mut braces: Vec<bool> = Vec::new();
    let at = |k: usize| tokens.get(k).map_or("", |t| t.1.as_str());
    for (i, (line, token)) in tokens.iter().enumerate() {
        match token.as_str() {
            "{" => {
                let is_mod = i >= 2 && at(i - 2) == "mod";
                if is_mod {
                    module.push(at(i - 1).to_string());
                }
                braces.push(is_mod);
            }
            "}" if braces.pop() == Some(true) => {
                module.pop();
            }
            "crate" | "super" | "self" if at(i + 1) == "::" && (i == 0 || at(i - 1) != "::") => {
                let mut base: Vec<String> = match token.as_str() {
                    "crate" => Vec::new(),
                    "self" => module.clone(),
                    _ => module[..module.len().saturating_sub(1)].to_vec(),
                };
                let mut k = i + 2;
                while at(k) == "super" && at(k + 1) == "::" {
                    base.pop();
                    k += 2;
                }
                match base.first() {
                    Some(top) => out.push((*line, top.clone())),
                    None => first_segments(&tokens, k, &mut out),
                }
            }
            _ => {}
        }
    }
    out.retain(|(_, to)| file.first() != Some(to));
    out
}

/// What breaks the layering in the file at `rel` (relative to `src/`) holding `text`, one line
/// per use of a module that is not below the file's own or not in the table; the modules it
/// uses go to `edges`.
fn check_file(rel: &Path, text: &str, edges: &mut BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let Some(path) = module_path(rel) else { return Vec::new() };
    let from = &path[0];
    let Some(from_layer) = layer_of(from) else {
        return vec![format!("src/{from}: not in the layer table (tests/architecture.rs, docs/architecture.md)")];
    };
    let mut violations = Vec::new();
    for (line, to) in uses(&path, text) {
        edges.entry(from.clone()).or_default().insert(to.clone());
        match layer_of(&to) {
            Some(l) if l < from_layer => {}
            Some(_) => violations.push(format!("{}:{line}: {from} uses {to}, which is not below it", rel.display())),
            None if to == "*" => violations.push(format!("{}:{line}: a glob of the crate root", rel.display())),
            None => violations.push(format!("{}:{line}: {to} is not in the layer table", rel.display())),
        }
    }
    violations
}

/// Checks that every top-level module is in the layer table, and that each path in code that
/// reaches another top-level module (from `crate::`, `super::` or `self::`, grouped or not)
/// points to a module of a lower layer. A use that points sideways or up (the cycles the
/// architecture issue found: config ↔ azure, registry ↔ azure, plan ↔ transfer, …) fails and
/// names the file and line.
#[test]
fn modules_use_only_lower_layers() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut edges = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        violations.extend(check_file(file.strip_prefix(&src).unwrap(), &text, &mut edges));
    }
    assert!(violations.is_empty(), "layering broken:\n{}", violations.join("\n"));
    // The check must have looked at something: the application layer uses the layers below it.
    assert!(edges.get("app").is_some_and(|e| e.contains("plan") && e.contains("transfer")), "{edges:?}");
}

/// Checks that the scanner catches what escaped it before (issue #21): grouped imports, nested
/// groups, `super::` chains out of nested files and inline modules, a glob of the crate root,
/// a path in an expression; and that it leaves alone what is fine: paths within the file's own
/// module, lower layers, comments, strings and character literals.
#[test]
fn the_scanner_catches_grouped_and_super_imports() {
    let violations = |rel: &str, text: &str| check_file(Path::new(rel), text, &mut BTreeMap::new());
    let caught = |rel: &str, text: &str, to: &str| {
        let found = violations(rel, text);
        assert!(found.iter().any(|v| v.contains(&format!("uses {to},"))), "{rel}: {text:?} not caught: {found:?}");
        found.len()
    };
    assert_eq!(caught("registry/mod.rs", "use crate::{digest::Digest, plan};", "plan"), 1);
    assert_eq!(caught("plan.rs", "use crate::{digest::{Digest, Algorithm}, transfer::{self, copy}};", "transfer"), 1);
    assert_eq!(
        caught("config.rs", "use crate::{\n    reference,\n    registry::{Registry, auth::{Token}},\n};", "registry"),
        1
    );
    assert_eq!(caught("transfer/copy.rs", "use super::super::report::Report;", "report"), 1);
    assert_eq!(caught("plan.rs", "use super::transfer;", "transfer"), 1);
    assert_eq!(caught("plan.rs", "use super::{report, transfer::run};", "report"), 2);
    assert_eq!(caught("plan.rs", "mod tests {\n    use super::super::transfer::Context;\n}", "transfer"), 1);
    assert_eq!(caught("plan.rs", "fn f() { crate::app::run() }", "app"), 1);
    assert_eq!(caught("reference.rs", "use {crate::digest, crate::cli};", "cli"), 1);
    let glob = violations("plan.rs", "use super::*;");
    assert!(glob.len() == 1 && glob[0].contains("glob of the crate root"), "{glob:?}");
    let unknown = violations("plan.rs", "use super::Nothing;");
    assert!(unknown.len() == 1 && unknown[0].contains("Nothing is not in the layer table"), "{unknown:?}");

    let fine = r##"
        use crate::{digest::Digest, imageset::{self, Wanted}, registry::Registries};
        use super::super::super::config::Config; // crate::cli in a comment
        use super::super::pipeline::Outcome;
        /* crate::app, and /* nested */ super::cli */
        mod tests {
            use super::*;
            use super::inner::Thing;
            fn f() { let _ = ("crate::app::{", r"super::cli", r#"self::{"#, '{', '\'', b'}', "\"crate::cli"); }
        }
        fn g<'a>(x: &'a str) -> &'a str { self::inner::h(crate::ledger::x()) }
    "##;
    let mut edges = BTreeMap::new();
    assert_eq!(check_file(Path::new("transfer/warm/inner.rs"), fine, &mut edges), Vec::<String>::new());
    let used: Vec<&str> = edges["transfer"].iter().map(String::as_str).collect();
    assert_eq!(used, ["config", "digest", "imageset", "ledger", "registry"]);
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
