//! The layering `docs/ARCHITECTURE.md` states is the layering the code has.
//!
//! The code map carries fenced blocks tagged `layers <scope>`: one line per crate (scope
//! `crates`) or per module of a folder (scope `gateway/src`, `gateway/src/egress`, …), naming
//! what it may use: `name: dep dep`. Each dependency must be on an earlier line, so the order
//! is bottom up and no cycle can be written down. This test reads those blocks and checks:
//! every module of the folder (and every workspace crate) has a line, and every `crate::`,
//! `super::` or `self::` path in a module's files (comments and strings stripped) and every
//! normal dependency between workspace crates is one its line allows. A folder's `mod.rs` is
//! its façade and may use its children freely.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// One `layers` block: its scope and, in order, each name with what it may use.
struct Layers {
    scope: String,
    order: Vec<String>,
    allowed: BTreeMap<String, BTreeSet<String>>,
}

fn parse_layers(doc: &str) -> Vec<Layers> {
    let mut blocks = Vec::new();
    let mut current: Option<Layers> = None;
    for (number, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        if let Some(scope) = trimmed.strip_prefix("```layers ") {
            assert!(
                !blocks.iter().any(|b: &Layers| b.scope == scope.trim()),
                "ARCHITECTURE.md line {}: a second `layers {}` block",
                number + 1,
                scope.trim()
            );
            current = Some(Layers {
                scope: scope.trim().to_string(),
                order: Vec::new(),
                allowed: BTreeMap::new(),
            });
            continue;
        }
        let Some(block) = current.as_mut() else {
            continue;
        };
        if trimmed == "```" {
            blocks.push(current.take().unwrap());
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (name, deps) = trimmed.split_once(':').unwrap_or((trimmed, ""));
        let name = name.trim().to_string();
        let deps: BTreeSet<String> = deps.split_whitespace().map(str::to_string).collect();
        for dep in &deps {
            assert!(
                block.order.contains(dep),
                "ARCHITECTURE.md line {}: in `layers {}`, {name} may use {dep}, which must be on \
                 an earlier line (layers are bottom up)",
                number + 1,
                block.scope
            );
        }
        assert!(
            block.allowed.insert(name.clone(), deps).is_none(),
            "ARCHITECTURE.md line {}: {name} listed twice in `layers {}`",
            number + 1,
            block.scope
        );
        block.order.push(name);
    }
    assert!(
        current.is_none(),
        "ARCHITECTURE.md: unterminated layers block"
    );
    blocks
}

fn architecture() -> Vec<Layers> {
    let path = repo().join("docs/ARCHITECTURE.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_layers(&doc)
}

/// Source text with comments, string and char literals blanked out, so doc links and messages
/// that mention a module are not mistaken for uses of it.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('#') || next == Some('"')) && !ident_before(&chars, i) {
            // Raw string: r"…" or r#…#"…"#…#.
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a): only the former is skipped.
            let close = if next == Some('\\') {
                (i + 2..chars.len().min(i + 12)).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match close {
                Some(end) => {
                    i = end + 1;
                    out.push_str("' '");
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Path, // ::
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::Path);
            i += 2;
            continue;
        }
        match c {
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            c if c.is_whitespace() => {}
            _ => out.push(Token::Other),
        }
        i += 1;
    }
    out
}

/// Every path a file names that starts at `crate`, `super` or `self`, resolved to an absolute
/// module path (`["egress", "policy", "Policy"]`), with `use` groups (`{a, b::{c}}`) expanded.
fn paths(source: &str, module: &[String]) -> Vec<Vec<String>> {
    let tokens = tokens(&strip(source));
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = matches!(&tokens[i], Token::Ident(w) if w == "crate" || w == "super" || w == "self")
            && tokens.get(i + 1) == Some(&Token::Path)
            && !(i > 0 && tokens[i - 1] == Token::Path);
        if !starts {
            i += 1;
            continue;
        }
        let mut base: Vec<String> = module.to_vec();
        // Resolve the leading crate/super/self segments.
        while let Some(Token::Ident(word)) = tokens.get(i) {
            match word.as_str() {
                "crate" => base.clear(),
                "super" => {
                    base.pop();
                }
                "self" => {}
                _ => break,
            }
            if tokens.get(i + 1) != Some(&Token::Path) {
                break;
            }
            i += 2;
        }
        i = expand(&tokens, i, base, &mut out);
    }
    out
}

/// Reads one path (or group) at `i`, appending to `prefix`; returns the index after it.
fn expand(
    tokens: &[Token],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match tokens.get(i) {
            Some(Token::Ident(word)) => {
                if word != "self" {
                    prefix.push(word.clone());
                }
                i += 1;
                if tokens.get(i) == Some(&Token::Path) {
                    i += 1;
                    continue;
                }
                out.push(prefix);
                return i;
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        None => return i,
                        _ => {
                            let before = i;
                            i = expand(tokens, i, prefix.clone(), out);
                            // Skip anything the grammar above does not know (`as x`, `*`).
                            while !matches!(tokens.get(i), Some(Token::Comma | Token::Close) | None)
                            {
                                i += 1;
                            }
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// The `.rs` files of a folder's child module `name` (a file or a folder), with each file's
/// own module path.
fn module_files(dir: &Path, scope: &[String], name: &str) -> Vec<(PathBuf, Vec<String>)> {
    let mut module = scope.to_vec();
    module.push(name.to_string());
    let file = dir.join(format!("{name}.rs"));
    if file.is_file() {
        return vec![(file, module)];
    }
    let folder = dir.join(name);
    assert!(folder.is_dir(), "{}: no module {name}", dir.display());
    let mut files = Vec::new();
    let mut stack = vec![(folder, module)];
    while let Some((dir, module)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                let mut sub = module.clone();
                sub.push(stem);
                stack.push((path, sub));
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut own = module.clone();
                if stem != "mod" {
                    own.push(stem);
                }
                files.push((path, own));
            }
        }
    }
    files
}

/// The child modules a folder declares (`mod x;` / `pub mod x;` in its lib.rs or mod.rs).
fn declared_modules(dir: &Path) -> BTreeSet<String> {
    let root = ["lib.rs", "mod.rs"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{}: no lib.rs or mod.rs", dir.display()));
    let source = strip(&std::fs::read_to_string(&root).unwrap());
    let tokens = tokens(&source);
    let mut out = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        if *token == Token::Ident("mod".into())
            && let Some(Token::Ident(name)) = tokens.get(i + 1)
            && tokens.get(i + 2) == Some(&Token::Other)
        {
            out.insert(name.clone());
        }
    }
    out
}

fn check_folder(layers: &Layers) -> Vec<String> {
    let dir = repo().join(&layers.scope);
    // gateway/src is the crate root; gateway/src/egress is module `egress`.
    let scope: Vec<String> = layers
        .scope
        .split('/')
        .skip(2)
        .map(str::to_string)
        .collect();
    let declared = declared_modules(&dir);
    let listed: BTreeSet<String> = layers.order.iter().cloned().collect();
    let mut problems = Vec::new();
    for missing in declared.difference(&listed) {
        problems.push(format!(
            "{}: module {missing} has no line in `layers {}`",
            layers.scope, layers.scope
        ));
    }
    for gone in listed.difference(&declared) {
        problems.push(format!(
            "`layers {}` lists {gone}, which {} does not declare",
            layers.scope, layers.scope
        ));
    }
    for name in declared.intersection(&listed) {
        let allowed = &layers.allowed[name];
        for (file, module) in module_files(&dir, &scope, name) {
            let source = std::fs::read_to_string(&file).unwrap();
            let mut used = BTreeSet::new();
            for path in paths(&source, &module) {
                if path.len() > scope.len() && path[..scope.len()] == scope[..] {
                    let sibling = &path[scope.len()];
                    if sibling != name && listed.contains(sibling) {
                        used.insert(sibling.clone());
                    }
                }
            }
            for dep in used.difference(allowed) {
                problems.push(format!(
                    "{}: {name} uses {dep}, which `layers {}` does not allow it",
                    file.strip_prefix(repo()).unwrap().display(),
                    layers.scope
                ));
            }
        }
    }
    problems
}

fn check_crates(layers: &Layers) -> Vec<String> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(repo())
        .output()
        .expect("cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let members: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let listed: BTreeSet<String> = layers.order.iter().cloned().collect();
    let mut problems = Vec::new();
    for missing in members.difference(&listed) {
        problems.push(format!("crate {missing} has no line in `layers crates`"));
    }
    for gone in listed.difference(&members) {
        problems.push(format!(
            "`layers crates` lists {gone}, which is not a workspace member"
        ));
    }
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let Some(allowed) = layers.allowed.get(name) else {
            continue;
        };
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            // Normal and build dependencies ship; dev-dependencies (the test kit) do not.
            let ships = dep["kind"].is_null() || dep["kind"] == "build";
            if ships && members.contains(dep_name) && !allowed.contains(dep_name) {
                problems.push(format!(
                    "crate {name} depends on {dep_name}, which `layers crates` does not allow it"
                ));
            }
        }
    }
    problems
}

#[test]
fn the_code_follows_the_layers_the_architecture_page_states() {
    let blocks = architecture();
    assert!(
        blocks.iter().any(|b| b.scope == "crates")
            && blocks.iter().any(|b| b.scope == "gateway/src"),
        "ARCHITECTURE.md must state `layers crates` and `layers gateway/src`"
    );
    let mut problems = Vec::new();
    for block in &blocks {
        if block.scope == "crates" {
            problems.extend(check_crates(block));
        } else {
            problems.extend(check_folder(block));
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn a_use_of_a_higher_module_is_found_through_groups_super_and_self() {
    let source = r#"
        use crate::{audit::AuditQueue, egress::{policy, scrub::Scrub as S}};
        use super::super::mcp::token; // crate::store mentioned in a comment
        use super::rewrite::swap;
        fn f() { let _ = "crate::vault"; let _c = '"'; self::inner::g(); crate::sandbox::x(); }
    "#;
    let module: Vec<String> = vec!["egress".into(), "forward".into()];
    let found: BTreeSet<String> = paths(source, &module)
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    let expected: BTreeSet<String> = [
        "audit::AuditQueue",
        "egress::policy",
        "egress::scrub::Scrub",
        "mcp::token",
        "egress::rewrite::swap",
        "egress::forward::inner::g",
        "sandbox::x",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn a_layer_may_only_name_layers_below_it() {
    let doc = "```layers gateway/src\nstore\nvault: store audit\naudit: store\n```\n";
    let result = std::panic::catch_unwind(|| parse_layers(doc));
    assert!(
        result.is_err(),
        "a dependency on a later line must be refused"
    );
}

/// The files the ```` ```unsafe ```` block of ARCHITECTURE.md allows `unsafe` in.
fn unsafe_allowed(doc: &str) -> BTreeSet<String> {
    let mut lines = doc.lines().skip_while(|l| l.trim() != "```unsafe");
    assert!(
        lines.next().is_some(),
        "ARCHITECTURE.md must state an ```unsafe block"
    );
    lines
        .take_while(|l| l.trim() != "```")
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() && name != "target" && !name.starts_with('.') {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_code_lives_only_in_the_syscall_modules_the_architecture_page_names() {
    let root = repo();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let allowed = unsafe_allowed(&doc);
    let mut files = Vec::new();
    for dir in [
        "gateway",
        "privhelper",
        "privhelper-api",
        "sandbox-init",
        "testkit",
        "tests",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut found = BTreeSet::new();
    for file in files {
        let source = strip(&std::fs::read_to_string(&file).unwrap());
        if tokens(&source).contains(&Token::Ident("unsafe".into())) {
            found.insert(file.strip_prefix(&root).unwrap().display().to_string());
        }
    }
    // This file names the word in its own test data; it has no unsafe code.
    found.remove("gateway/tests/layering.rs");
    let unlisted: Vec<_> = found.difference(&allowed).collect();
    let stale: Vec<_> = allowed.difference(&found).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "unsafe outside the listed modules: {unlisted:?}; listed but without unsafe: {stale:?}"
    );
}
