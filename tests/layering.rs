//! The layering of `docs/architecture.md` holds: every `crate::…` path in a library file names a
//! module of a strictly lower rank than the file's own module. The ranks are read from the table in
//! that document, so the picture and the check cannot drift apart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top-level module → rank, from the `| rank | modules |` table of the architecture document.
fn ranks(doc: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| 3 | store |" splits into ["", "3", "store", ""].
        if cells.len() < 4 {
            continue;
        }
        let Ok(rank) = cells[1].parse::<u32>() else { continue };
        for module in cells[2].split(',').map(str::trim).filter(|m| !m.is_empty()) {
            assert!(out.insert(module.to_string(), rank).is_none(), "module {module} has two ranks in the table");
        }
    }
    out
}

/// Source text with comments removed (line comments, doc comments and block comments), keeping
/// line breaks so that line numbers stay right. String literals are kept: a `crate::` inside a
/// string is rare enough to be worth a look anyway.
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut depth = 0usize;
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if depth > 0 {
            match (c, chars.peek()) {
                ('*', Some('/')) => {
                    chars.next();
                    depth -= 1;
                }
                ('/', Some('*')) => {
                    chars.next();
                    depth += 1;
                }
                ('\n', _) => out.push('\n'),
                _ => {}
            }
            continue;
        }
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                depth = 1;
            }
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

/// The top-level modules named by `crate::` paths in `src`, with their 1-based line numbers,
/// including every branch of grouped imports (`use crate::{a::x, b}`).
fn crate_references(src: &str) -> Vec<(usize, String)> {
    let text = strip_comments(src);
    let mut refs = Vec::new();
    let mut rest = text.as_str();
    let mut offset = 0;
    while let Some(i) = rest.find("crate::") {
        let start = offset + i;
        let before = text[..start].chars().next_back();
        let after = &text[start + "crate::".len()..];
        offset = start + "crate::".len();
        rest = &text[offset..];
        // `$crate::` in macros and identifiers ending in "crate" are not paths of this crate.
        if before.is_some_and(|b| b.is_alphanumeric() || b == '_' || b == '$') {
            continue;
        }
        let line = text[..start].matches('\n').count() + 1;
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            // Nested groups: the first segment of each comma-separated item at depth 0.
            let mut depth = 0;
            let mut item = String::new();
            let mut items = Vec::new();
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(ch),
                    _ => {}
                }
            }
            items.push(item);
            let _ = end;
            for it in items {
                let name: String = it.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != "self" {
                    refs.push((line, name));
                }
            }
        } else {
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                refs.push((line, name));
            }
        }
    }
    refs
}

/// The top-level module a library file belongs to (`src/nn/aol.rs` → `nn`, `src/store.rs` →
/// `store`); `None` for the crate root and the binary's files.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "cli" | "shim")).then(|| name.to_string())
}

/// Every violation in `files` (path relative to `src/` and its text) under `ranks`.
fn violations(files: &[(PathBuf, String)], ranks: &BTreeMap<String, u32>) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        let Some(module) = module_of(rel) else { continue };
        let Some(&own) = ranks.get(&module) else {
            out.push(format!("src/{}: module `{module}` is not in the table of docs/architecture.md", rel.display()));
            continue;
        };
        for (line, target) in crate_references(text) {
            if target == module {
                continue;
            }
            match ranks.get(&target) {
                None => out.push(format!(
                    "src/{}:{line}: `crate::{target}` is not a module in the table of docs/architecture.md",
                    rel.display()
                )),
                Some(&r) if r >= own => out.push(format!(
                    "src/{}:{line}: `{module}` (rank {own}) uses `{target}` (rank {r}); a module may only use lower ranks",
                    rel.display()
                )),
                Some(_) => {}
            }
        }
    }
    out
}

fn library_files(src: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path.strip_prefix(src).unwrap().to_path_buf(), text));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_module_uses_only_lower_ranks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
    let ranks = ranks(&doc);
    assert!(ranks.len() >= 20, "the rank table of docs/architecture.md was not found: {ranks:?}");
    // Every module declared in lib.rs has a rank, and every ranked module exists.
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    for m in &declared {
        assert!(ranks.contains_key(m), "src/lib.rs declares `{m}`, which docs/architecture.md does not rank");
    }
    for m in ranks.keys() {
        assert!(declared.contains(m), "docs/architecture.md ranks `{m}`, which src/lib.rs does not declare");
    }
    let files = library_files(&root.join("src"));
    let found = violations(&files, &ranks);
    assert!(found.is_empty(), "layering violations:\n{}", found.join("\n"));
}

#[test]
fn the_check_fails_on_an_upward_import_and_reads_grouped_paths() {
    let ranks = ranks("| rank | modules |\n|---|---|\n| 0 | fsx |\n| 1 | nn |\n| 2 | train, search |\n");
    assert_eq!(ranks.get("search"), Some(&2));
    let file = |p: &str, t: &str| (PathBuf::from(p), t.to_string());
    let files = vec![
        // nn reaching up to train, inside a group and after a comment that must not count.
        file("nn/layer.rs", "// crate::train is only mentioned here\nuse crate::{fsx, train::loss};\n"),
        // A sideways use (same rank) and a block comment.
        file("train/mod.rs", "/* crate::nn */ fn f() { crate::search::g(); crate::fsx::h(); }\n"),
        // A downward use is fine; $crate:: in a macro is not a path of this crate.
        file("search.rs", "use crate::nn::Thing; macro_rules! m { () => { $crate::train::x() } }\n"),
        file("ghost.rs", "fn x() {}\n"),
    ];
    let found = violations(&files, &ranks);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("src/nn/layer.rs:2") && found[0].contains("uses `train` (rank 2)"), "{}", found[0]);
    assert!(found[1].contains("src/train/mod.rs:1") && found[1].contains("uses `search` (rank 2)"), "{}", found[1]);
    assert!(found[2].starts_with("src/ghost.rs: module `ghost` is not in the table"), "{}", found[2]);
}
