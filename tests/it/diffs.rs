//! Diffs round-trip through GNU `patch`, and their counts match their text.
//!
//! A seeded generator makes pairs of texts by random line edits, with the
//! awkward cases mixed in: no final newline, CRLF on disk, empty files,
//! unicode, lines that look like diff headers (`---`, `+++`, `@@`).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use obby_sync::engine::diff;

use crate::fixture::{Vault, patch_applies, query};

const LINES: &[&str] = &[
    "# Heading",
    "---",
    "+++ not a header",
    "-- dash dash",
    "++ plus plus",
    "@@ -1 +1 @@ looks like a hunk",
    "- [ ] task",
    "plain text",
    "",
    "unicode: héllo ✓ 𝄞 \u{2028} separator inside",
    "\\ No newline at end of file",
    "    indented code",
    "tab\there",
];

fn random_text(rng: &mut StdRng) -> String {
    let n = match rng.random_range(0..10) {
        0 => 0,
        1 => 1,
        _ => rng.random_range(2..40),
    };
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            let base = LINES[rng.random_range(0..LINES.len())];
            if rng.random_bool(0.5) {
                format!("{base} {i}")
            } else {
                base.to_owned()
            }
        })
        .collect();
    let mut text = lines.join("\n");
    if n > 0 && rng.random_bool(0.7) {
        text.push('\n');
    }
    lines.clear();
    text
}

fn edit(rng: &mut StdRng, old: &str) -> String {
    let mut lines: Vec<String> = old.split_inclusive('\n').map(str::to_owned).collect();
    for _ in 0..rng.random_range(0..6) {
        let at = rng.random_range(0..=lines.len());
        match rng.random_range(0..3) {
            0 if at < lines.len() => {
                lines.remove(at);
            }
            1 if at < lines.len() => {
                lines[at] = format!("{} changed\n", LINES[rng.random_range(0..LINES.len())]);
            }
            _ => lines.insert(at, format!("{}\n", LINES[rng.random_range(0..LINES.len())])),
        }
    }
    let mut text: String = lines.concat();
    // Flip the final newline now and then.
    if rng.random_bool(0.2) {
        if text.ends_with('\n') {
            text.pop();
        } else {
            text.push('\n');
        }
    }
    text
}

/// Counts the `+` and `-` lines of the hunks, skipping the two header lines.
fn count_lines(diff_text: &str) -> (i64, i64) {
    let (mut added, mut removed) = (0, 0);
    let mut in_hunks = false;
    for line in diff_text.lines() {
        if line.starts_with("@@") {
            in_hunks = true;
        } else if in_hunks && line.starts_with('+') {
            added += 1;
        } else if in_hunks && line.starts_with('-') {
            removed += 1;
        }
    }
    (added, removed)
}

#[test]
fn generated_pairs_round_trip_through_gnu_patch() {
    let mut rng = StdRng::seed_from_u64(0x0bb7);
    for case in 0..300 {
        let old = random_text(&mut rng);
        let new = if case % 10 == 0 {
            random_text(&mut rng)
        } else {
            edit(&mut rng, &old)
        };
        let d = diff::unified(&old, &new, "a/note.md", "b/note.md");
        if let Err(e) = patch_applies(&old, &d.text, &new) {
            panic!(
                "case {case}: {e}\nold={old:?}\nnew={new:?}\ndiff:\n{}",
                d.text
            );
        }
        assert_eq!(
            count_lines(&d.text),
            (d.lines_added, d.lines_removed),
            "case {case}:\n{}",
            d.text
        );
    }
}

#[test]
fn stored_diffs_apply_to_stored_versions() {
    let v = Vault::new();
    let mut rng = StdRng::seed_from_u64(7);
    let files = 25;
    let mut current: Vec<String> = (0..files).map(|_| random_text(&mut rng)).collect();
    for round in 0..4 {
        for (i, text) in current.iter_mut().enumerate() {
            if round > 0 {
                *text = edit(&mut rng, text);
            }
            // Every third file is written with CRLF line endings on disk.
            let on_disk = if i % 3 == 0 {
                text.replace('\n', "\r\n")
            } else {
                text.clone()
            };
            v.write(&format!("notes/f{i}.md"), on_disk);
        }
        v.scan(&[]);
    }
    let conn = v.conn();
    let rows = query(
        &conn,
        "SELECT cd.change_type, cd.diff_content, cd.lines_added, cd.lines_removed,
                COALESCE(o.content, ''), n.content
         FROM content_diffs cd
         LEFT JOIN file_versions o ON o.id = cd.old_version_id
         JOIN file_versions n ON n.id = cd.new_version_id",
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, String>(5)?,
            ))
        },
    );
    assert!(
        rows.len() > files,
        "expected creation and modification diffs, got {}",
        rows.len()
    );
    for (kind, text, added, removed, old, new) in &rows {
        patch_applies(old, text, new)
            .unwrap_or_else(|e| panic!("{kind} diff does not apply: {e}\n{text}"));
        assert_eq!(count_lines(text), (*added, *removed), "{text}");
        assert!(!new.contains('\r'), "stored text is normalized");
    }
    // The newest version of each file is what is on disk, normalized.
    for (i, text) in current.iter().enumerate() {
        let stored: String = conn
            .query_row(
                "SELECT content FROM file_versions WHERE file_path = ?1 ORDER BY id DESC LIMIT 1",
                [v.abs(&format!("notes/f{i}.md"))],
                |r| r.get(0),
            )
            .expect("a version");
        assert_eq!(&stored, text);
    }
}
