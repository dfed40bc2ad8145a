//! The layering rules of the source tree, checked by reading it: the api
//! and the CLI enter the engine through its doors (`Engine`, `EngineHandle`,
//! `Database` and the plain types `src/engine/mod.rs` re-exports), so the
//! queue's table and every other engine table keep their one owner inside
//! the engine.

use std::path::Path;

/// Each place in `text` that names one of `modules` of the engine
/// (`crate::engine::<module>`, alone, in a path or in a `{...}` group,
/// on one line or several), as (line, the module's path); comment lines are
/// skipped.
fn engine_modules_named(text: &str, modules: &[String]) -> Vec<(usize, String)> {
    // Comment lines blanked, so offsets still give line numbers.
    let code: String = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("//") {
                " ".repeat(l.len())
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| {
        s.trim()
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    const DOOR: &str = "crate::engine";
    let mut found = Vec::new();
    for (at, _) in code.match_indices(DOOR) {
        let rest = &code[at + DOOR.len()..];
        let Some(rest) = rest.strip_prefix("::") else {
            // `use crate::engine;` would let `engine::db::...` through.
            found.push((line_of(at), DOOR.to_owned()));
            continue;
        };
        let names: Vec<String> = match rest.strip_prefix('{') {
            Some(group) => {
                // The group's top-level items, up to its closing brace.
                let (mut depth, mut item, mut items) = (0usize, String::new(), Vec::new());
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                        _ => {}
                    }
                    item.push(c);
                }
                items.push(item);
                items
                    .iter()
                    .map(|i| ident(i.trim_start_matches(',')))
                    .collect()
            }
            None => vec![ident(rest)],
        };
        for name in names {
            if name == "self" {
                // `use crate::engine::{self, ..}`, as `use crate::engine;`.
                found.push((line_of(at), DOOR.to_owned()));
            } else if modules.contains(&name) {
                found.push((line_of(at), format!("{DOOR}::{name}")));
            }
        }
    }
    found
}

#[test]
fn the_guard_finds_engine_modules_in_paths_and_groups() {
    let modules = vec!["db".to_owned(), "queue".to_owned()];
    let text = "use crate::engine::{EngineHandle, db};\n\
                // crate::engine::queue::enqueue_in in a comment\n\
                let n = crate::engine::queue::counts(&conn);\n\
                use crate::engine::{\n    EngineHandle,\n    queue::{self, NewEvent},\n};\n\
                use crate::engine::{ApiPatterns, EngineHandle};\n\
                use crate::engine::{self, EngineHandle};\n";
    assert_eq!(
        engine_modules_named(text, &modules),
        vec![
            (1, "crate::engine::db".into()),
            (3, "crate::engine::queue".into()),
            (4, "crate::engine::queue".into()),
            (9, "crate::engine".into())
        ]
    );
}

/// The api and the CLI enter the engine through its doors: they name only
/// `crate::engine::X` for what `engine/mod.rs` re-exports (`Engine`,
/// `EngineHandle` beside a running engine, `Database` for a command on a
/// file, and plain data), never an engine module, so every table keeps its
/// one owner inside the engine (the queue's is `engine/queue.rs`).
#[test]
fn the_api_and_the_cli_enter_the_engine_only_through_its_doors() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: Vec<String> = std::fs::read_dir(src.join("engine"))
        .expect("src/engine")
        .map(|e| e.expect("entry").path())
        .filter_map(|p| {
            let stem = p.file_stem()?.to_str()?.to_owned();
            (p.join("mod.rs").is_file() || p.extension().is_some_and(|x| x == "rs")).then_some(stem)
        })
        .filter(|m| m != "mod")
        .collect();
    modules.sort();
    assert!(modules.contains(&"queue".to_owned()), "{modules:?}");
    let mut files = vec![src.join("cli.rs"), src.join("main.rs")];
    let mut dirs = vec![src.join("api"), src.join("cli")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() > 8, "found only {files:?}");
    let mut violations = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let shown = file
            .strip_prefix(src.parent().expect("crate"))
            .unwrap_or(file);
        for (line, module) in engine_modules_named(&text, &modules) {
            violations.push(format!(
                "{}:{line}: names the engine module `{module}`",
                shown.display()
            ));
        }
    }
    assert!(
        violations.is_empty(),
        "the api and the CLI enter the engine only through Engine, EngineHandle, \
         Database and the plain types re-exported by src/engine/mod.rs \
         (`crate::engine::X`); add a method to a door or a re-export there \
         instead of naming an engine module:\n{}",
        violations.join("\n")
    );
}
