//! The live watcher through the real binary: editor save patterns, renames,
//! bursts, restarts, hot reload, VCS locks, polling, a flood. (The canary
//! fallback and the overflow rescan are unit-tested in `engine::enqueue`.)
//! Each behaviour test runs with native events and again with `--poll`.

use std::time::Duration;

use crate::fixture::{Running, Vault, wait_for};

const DEBOUNCE: &str = "50";
const WAIT: Duration = Duration::from_secs(15);

/// Flags for a quick engine: short debounce, no safety rescan.
fn flags(poll: bool) -> Vec<&'static str> {
    flags_debounce(poll, DEBOUNCE)
}

fn flags_debounce(poll: bool, debounce: &'static str) -> Vec<&'static str> {
    let mut f = vec![
        "--debounce-ms",
        debounce,
        "--rescan-interval",
        "0",
        "--retry-backoff-ms",
        "20",
    ];
    if poll {
        f.extend_from_slice(&["--poll", "--poll-interval-ms", "100"]);
    }
    f
}

/// Waits until `n` changes are recorded, then for the `Sync` barrier (so
/// anything late, a debounce, a poll, a retry, is committed too, whatever
/// the machine's load), and returns the changes.
fn settle(v: &Vault, n: usize) -> Vec<(String, String, Option<String>)> {
    let reached = wait_for(WAIT, || {
        v.count("SELECT COUNT(*) FROM file_changes") as usize >= n
    });
    assert!(reached, "expected {n} changes, have {:?}", v.changes());
    v.barrier();
    v.changes()
}

fn c(kind: &str, path: &str, old: Option<&str>) -> (String, String, Option<String>) {
    (kind.to_owned(), path.to_owned(), old.map(str::to_owned))
}

fn started(poll: bool, files: &[(&str, &str)]) -> (Vault, Running) {
    started_with(poll, files, DEBOUNCE)
}

fn started_with(poll: bool, files: &[(&str, &str)], debounce: &'static str) -> (Vault, Running) {
    let v = Vault::new();
    for (path, text) in files {
        v.write(path, text);
    }
    let running = v.start(&flags_debounce(poll, debounce));
    settle(&v, files.len());
    (v, running)
}

fn editor_save_patterns(poll: bool) {
    let (v, engine) = started(
        poll,
        &[
            ("notes/vim.md", "v1\n"),
            ("notes/jb.md", "j1\n"),
            ("notes/gedit.md", "g1\n"),
            ("notes/tmp.md", "t1\n"),
            ("notes/recreate.md", "r1\n"),
        ],
    );
    let n = v.changes().len();
    // vim (backupcopy=no): swap file, original renamed to a backup, new file
    // written, backup removed.
    v.write("notes/.vim.md.swp", "swap");
    v.rename("notes/vim.md", "notes/vim.md~");
    v.write("notes/vim.md", "v2\n");
    v.remove("notes/vim.md~");
    v.remove("notes/.vim.md.swp");
    // JetBrains: write a temp, move the original aside, move the temp in.
    v.write("notes/jb.md___jb_tmp___", "j2\n");
    v.rename("notes/jb.md", "notes/jb.md___jb_old___");
    v.rename("notes/jb.md___jb_tmp___", "notes/jb.md");
    v.remove("notes/jb.md___jb_old___");
    // gedit: write a hidden output stream, rename it over the file.
    v.write("notes/.goutputstream-X1Y2Z3", "g2\n");
    v.rename("notes/.goutputstream-X1Y2Z3", "notes/gedit.md");
    // A generic atomic save through a temp name the patterns do track.
    v.write("notes/tmp.md.part", "t2\n");
    v.rename("notes/tmp.md.part", "notes/tmp.md");
    // Delete and recreate within the debounce window.
    v.remove("notes/recreate.md");
    v.write("notes/recreate.md", "r2\n");
    let changes = settle(&v, n + 5);
    let mut new: Vec<_> = changes[n..].to_vec();
    new.sort();
    assert_eq!(
        new,
        vec![
            c("modified", "notes/gedit.md", None),
            c("modified", "notes/jb.md", None),
            c("modified", "notes/recreate.md", None),
            c("modified", "notes/tmp.md", None),
            c("modified", "notes/vim.md", None),
        ],
        "poll={poll}"
    );
    let helpers: Vec<String> = crate::fixture::query(
        &v.conn(),
        "SELECT file_path FROM file_states WHERE file_path GLOB '*~' OR file_path GLOB '*___jb_*' OR file_path GLOB '*goutput*' OR file_path GLOB '*.part'",
        |r| r.get(0),
    );
    assert!(helpers.is_empty(), "helper files tracked: {helpers:?}");
    assert!(engine.stop().success());
}

#[test]
fn editor_save_patterns_are_one_modified_change_native() {
    editor_save_patterns(false);
}

#[test]
fn editor_save_patterns_are_one_modified_change_polling() {
    editor_save_patterns(true);
}

fn renames(poll: bool) {
    let (v, engine) = started(
        poll,
        &[
            ("notes/a.md", "alpha\n"),
            ("notes/dir/x.md", "x\n"),
            ("notes/dir/y.md", "y\n"),
            ("notes/out.md", "leaving\n"),
        ],
    );
    let n = v.changes().len();
    v.write("elsewhere/in.md", "arriving\n");
    v.rename("notes/a.md", "notes/b.md");
    v.rename("elsewhere/in.md", "notes/in.md");
    v.rename("notes/out.md", "elsewhere/out.md");
    v.rename("notes/dir", "notes/renamed-dir");
    let changes = settle(&v, n + 5);
    let mut new: Vec<_> = changes[n..].to_vec();
    new.sort();
    assert_eq!(
        new,
        vec![
            c("created", "notes/in.md", None),
            c("deleted", "notes/out.md", None),
            c("moved", "notes/b.md", Some("notes/a.md")),
            c("moved", "notes/renamed-dir/x.md", Some("notes/dir/x.md")),
            c("moved", "notes/renamed-dir/y.md", Some("notes/dir/y.md")),
        ],
        "poll={poll}"
    );
    assert!(engine.stop().success());
}

#[test]
fn renames_within_into_and_out_of_the_watched_set_native() {
    renames(false);
}

#[test]
fn renames_within_into_and_out_of_the_watched_set_polling() {
    renames(true);
}

fn burst(poll: bool) {
    // A debounce the 200 writes never pause for, even on a loaded machine.
    let (v, engine) = started_with(poll, &[("notes/busy.md", "0\n")], "300");
    for i in 1..=200 {
        v.write("notes/busy.md", format!("{i}\n"));
    }
    let changes = settle(&v, 2);
    assert_eq!(changes.len(), 2, "a burst is one change: {changes:?}");
    let last: String = v
        .conn()
        .query_row(
            "SELECT content FROM file_versions ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("version");
    assert_eq!(last, "200\n");
    assert!(engine.stop().success());
}

#[test]
fn a_burst_of_writes_is_one_change_native() {
    burst(false);
}

#[test]
fn a_burst_of_writes_is_one_change_polling() {
    burst(true);
}

fn restart(poll: bool) {
    let (v, engine) = started(
        poll,
        &[
            ("notes/keep.md", "k\n"),
            ("notes/edit.md", "e1\n"),
            ("notes/drop.md", "d\n"),
        ],
    );
    assert!(engine.stop().success());
    v.write("notes/edit.md", "e2\n");
    v.remove("notes/drop.md");
    v.write("notes/new.md", "n\n");
    let engine = v.start(&flags(poll));
    let changes = settle(&v, 6);
    let mut new: Vec<_> = changes[3..].to_vec();
    new.sort();
    assert_eq!(
        new,
        vec![
            c("created", "notes/new.md", None),
            c("deleted", "notes/drop.md", None),
            c("modified", "notes/edit.md", None)
        ]
    );
    assert!(engine.stop().success());
}

#[test]
fn changes_made_while_stopped_are_found_at_the_next_start_native() {
    restart(false);
}

#[test]
fn changes_made_while_stopped_are_found_at_the_next_start_polling() {
    restart(true);
}

fn new_folders(poll: bool) {
    let (v, engine) = started(poll, &[]);
    // Files land before the watcher can add a watch on the new folders.
    for i in 0..30 {
        v.write(&format!("notes/fresh/deep/er/f{i}.md"), format!("{i}\n"));
    }
    let changes = settle(&v, 30);
    assert_eq!(changes.len(), 30, "poll={poll}: {changes:?}");
    assert!(
        changes.iter().all(|(k, _, _)| k == "created"),
        "{changes:?}"
    );
    assert!(engine.stop().success());
}

#[test]
fn new_folders_and_files_written_into_them_at_once_are_found_native() {
    new_folders(false);
}

#[test]
fn new_folders_and_files_written_into_them_at_once_are_found_polling() {
    new_folders(true);
}

fn hot_reload(poll: bool) {
    let (v, engine) = started(poll, &[("notes/a.md", "a\n")]);
    v.write("research/paper.md", "not watched yet\n");
    v.write(".obbywatch", "notes/\nresearch/\n");
    let changes = settle(&v, 2);
    assert_eq!(changes[1], c("created", "research/paper.md", None));
    // Newly ignored: left alone, history kept, further edits not recorded.
    // The barrier applies the reload before it answers.
    v.write(".obbyignore", "notes/\n");
    v.barrier();
    v.write("notes/a.md", "a, edited while ignored\n");
    v.write("research/paper.md", "edited\n");
    let changes = settle(&v, 3);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(changes[2], c("modified", "research/paper.md", None));
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_states WHERE is_deleted = 1"),
        0
    );
    assert!(engine.stop().success());
}

#[test]
fn hot_reload_of_obbywatch_and_obbyignore_native() {
    hot_reload(false);
}

#[test]
fn hot_reload_of_obbywatch_and_obbyignore_polling() {
    hot_reload(true);
}

fn vcs_hold(poll: bool) {
    let (v, engine) = started(poll, &[("notes/a.md", "a1\n"), ("notes/b.md", "b1\n")]);
    v.write(".git/index.lock", "");
    v.write("notes/a.md", "a2\n");
    v.write("notes/b.md", "b2\n");
    // The barrier answers once the edits' events were read (native; a
    // poller would find them by a rescan, which the lock holds back too):
    // the lock keeps them held.
    v.barrier();
    assert_eq!(v.changes().len(), 2, "held while the lock exists");
    v.remove(".git/index.lock");
    let changes = settle(&v, 4);
    assert_eq!(changes.len(), 4);
    assert!(engine.stop().success());
}

#[test]
fn a_git_checkout_is_held_until_the_lock_is_gone_then_recorded_native() {
    vcs_hold(false);
}

#[test]
fn a_git_checkout_is_held_until_the_lock_is_gone_then_recorded_polling() {
    vcs_hold(true);
}

#[test]
fn a_flood_of_20000_new_files_is_tracked_exactly_once_each() {
    let (v, engine) = started(false, &[]);
    let files = 20_000;
    let started = std::time::Instant::now();
    for i in 0..files {
        v.write(
            &format!("notes/flood/d{}/f{i}.md", i % 50),
            format!("flood file {i}\n"),
        );
    }
    let written = started.elapsed();
    let done = wait_for(Duration::from_secs(120), || {
        v.count("SELECT COUNT(*) FROM file_states") as usize >= files
    });
    let total = started.elapsed();
    assert!(
        done,
        "only {} of {files} tracked",
        v.count("SELECT COUNT(*) FROM file_states")
    );
    // Anything still held or queued (a second version of a file) is
    // committed before the counts.
    v.barrier();
    eprintln!(
        "flood: {files} files written in {:.2} s, all committed after {:.2} s; engine peak RSS {} MiB",
        written.as_secs_f64(),
        total.as_secs_f64(),
        engine.peak_rss_kib() / 1024
    );
    let twice: Vec<(String, Option<String>)> = crate::fixture::query(
        &v.conn(),
        "SELECT file_path, content FROM file_versions WHERE file_path IN
           (SELECT file_path FROM file_versions GROUP BY file_path HAVING COUNT(*) > 1)
         ORDER BY id",
        |r| Ok((r.get(0)?, r.get(1)?)),
    );
    // Each file's text, exactly once. A file the engine saw empty (its
    // creation and its one write more than the debounce apart, as on a
    // loaded machine) also has that empty version first, then the text as
    // a modification: a state it really had, not a duplicate.
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE content <> ''"),
        files as i64,
        "files whose text was recorded more than once or not at all: {twice:?}"
    );
    assert_eq!(
        v.count(
            "SELECT COUNT(*) FROM (SELECT 1 FROM file_versions
               GROUP BY file_path, content_hash HAVING COUNT(*) > 1)"
        ),
        0,
        "the same state of a file recorded twice: {twice:?}"
    );
    assert_eq!(
        v.count("SELECT COUNT(DISTINCT file_path) FROM file_versions"),
        files as i64
    );
    let empty_first = v.count(
        "SELECT COUNT(*) FROM file_versions v WHERE content = ''
           AND id = (SELECT MIN(id) FROM file_versions WHERE file_path = v.file_path)",
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE content = ''"),
        empty_first,
        "an empty version after the text: {twice:?}"
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_changes WHERE change_type = 'modified'"),
        empty_first
    );
    assert_eq!(
        v.count(
            "SELECT COUNT(*) FROM file_changes WHERE change_type NOT IN ('created', 'modified')"
        ),
        0
    );
    if empty_first > 0 {
        eprintln!("flood: {empty_first} files were seen empty before their write");
    }
    assert!(engine.stop().success());
    assert_eq!(
        v.count("SELECT COUNT(*) FROM event_queue WHERE status <> 'done'"),
        0
    );
}

/// Issue 10: a rename followed at once by an atomic save of the new name (an
/// editor rewriting links after a rename) keeps the old path's end: one
/// `moved` change from it (native events), or its deletion and the new
/// path's creation (polling finds the states only), never a silent loss.
fn rename_then_atomic_save(poll: bool) {
    let (v, engine) = started(poll, &[("notes/Insider Builds.md", "links: [[x]]\n")]);
    v.rename("notes/Insider Builds.md", "notes/Insider builds.md");
    v.write("notes/.Insider builds.md.tmp4f2a", "links: [[y]]\n");
    v.rename(
        "notes/.Insider builds.md.tmp4f2a",
        "notes/Insider builds.md",
    );
    let old = v.abs("notes/Insider Builds.md");
    let new = v.abs("notes/Insider builds.md");
    let old_gone = || {
        v.count(&format!(
            "SELECT COUNT(*) FROM sync_files WHERE path = '{old}' AND deleted = 1"
        )) == 1
    };
    let new_recorded = || {
        v.count(&format!(
            "SELECT COUNT(*) FROM file_versions WHERE file_path = '{new}' AND content = 'links: [[y]]\n'"
        )) == 1
    };
    assert!(
        wait_for(WAIT, || old_gone() && new_recorded()),
        "the old path's end was lost: {:?}",
        v.changes()
    );
    let changes = v.changes();
    if !poll {
        assert!(
            changes.contains(&c(
                "moved",
                "notes/Insider builds.md",
                Some("notes/Insider Builds.md")
            )),
            "{changes:?}"
        );
    }
    assert!(engine.stop().success());
}

#[test]
fn a_rename_then_an_atomic_save_of_the_new_name_loses_nothing_native() {
    rename_then_atomic_save(false);
}

#[test]
fn a_rename_then_an_atomic_save_of_the_new_name_loses_nothing_polling() {
    rename_then_atomic_save(true);
}

/// Issue 10: a `.git/index.lock` left by a crashed git holds changes once, for
/// `--vcs-hold-secs`; after that it is ignored until it changes, instead of
/// starting a new hold each time it is seen (changes in hold-long bursts
/// forever).
#[test]
fn a_stale_vcs_lock_holds_changes_once_then_is_ignored_until_it_changes() {
    let v = Vault::new();
    v.write("notes/a.md", "a1\n");
    let mut flags = flags(false);
    flags.extend_from_slice(&["--vcs-hold-secs", "10"]);
    let engine = v.start(&flags);
    assert!(wait_for(WAIT, || v
        .count("SELECT COUNT(*) FROM file_changes")
        == 1));
    v.write(".git/index.lock", "");
    v.write("notes/a.md", "a2\n");
    // Held for the hold time, then recorded.
    assert!(wait_for(Duration::from_secs(40), || v
        .count("SELECT COUNT(*) FROM file_changes")
        == 2));
    // The lock is still there, unchanged: the next change is not held for
    // another 10 s (a bound well under a second hold, well over a debounce).
    v.write("notes/a.md", "a3\n");
    assert!(
        wait_for(Duration::from_secs(7), || v
            .count("SELECT COUNT(*) FROM file_changes")
            == 3),
        "the stale lock held the next change again"
    );
    // A new lock (a new git run), then its removal: the change is recorded.
    v.remove(".git/index.lock");
    v.write(".git/index.lock", "new run");
    v.write("notes/a.md", "a4\n");
    v.remove(".git/index.lock");
    assert!(wait_for(WAIT, || v
        .count("SELECT COUNT(*) FROM file_changes")
        == 4));
    assert!(engine.stop().success());
}

/// Folders under `rel` (itself included) that no ignore pattern of the test
/// below excludes.
fn watchable_folders(v: &Vault, rel: &str, ignored: &[&str]) -> usize {
    let mut count = 0;
    let mut stack = vec![v.path(rel)];
    while let Some(dir) = stack.pop() {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| ignored.contains(&n.as_str())) {
            continue;
        }
        count += 1;
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            if entry.file_type().expect("file type").is_dir() {
                stack.push(entry.path());
            }
        }
    }
    count
}

/// Issue 10: folders the ignore patterns exclude (`node_modules/`) spend no
/// inotify watch, at start or when created later; a new nested folder is
/// watched as soon as it appears (a file written into it at once is found,
/// and a later one arrives through its watch); a pattern change that
/// un-ignores a folder adds its watches.
#[test]
fn ignored_folders_get_no_inotify_watch_and_new_folders_are_watched_at_once() {
    let v = Vault::new();
    v.write(".obbyignore", "node_modules/\ndrafts/\n");
    for i in 0..150 {
        std::fs::create_dir_all(v.path(&format!("node_modules/pkg{i}/lib"))).expect("mkdir");
    }
    v.write("notes/a.md", "a\n");
    v.write("notes/drafts/d1/x.md", "x\n");
    std::fs::create_dir_all(v.path("notes/drafts/d2")).expect("mkdir");
    let engine = v.start(&flags(false));
    assert!(wait_for(WAIT, || v.changes().len() == 1));
    let ignored = ["node_modules", "drafts"];
    let expected = watchable_folders(&v, "", &ignored);
    assert_eq!(expected, 2, "the root and notes/");
    assert_eq!(
        engine.inotify_watches(),
        expected,
        "no watch in an ignored tree"
    );

    // More ignored folders while running, in a watched folder, then a new
    // nested tracked folder with a file written right after mkdir.
    for i in 0..150 {
        std::fs::create_dir_all(v.path(&format!("notes/node_modules/late{i}/lib"))).expect("mkdir");
    }
    std::fs::create_dir_all(v.path("notes/new/a/b")).expect("mkdir");
    v.write("notes/new/a/b/f.md", "f\n");
    assert!(
        wait_for(WAIT, || v.changes().len() == 2),
        "{:?}",
        v.changes()
    );
    assert_eq!(v.changes()[1], c("created", "notes/new/a/b/f.md", None));
    // The event of notes/node_modules came before the new folder's, so it
    // has been handled (and its own folders send none).
    assert_eq!(
        engine.inotify_watches(),
        expected + 3,
        "notes/new, a, b only"
    );
    // Only the new folder's watch can see this one (no rescan is due).
    v.write("notes/new/a/b/g.md", "g\n");
    assert!(wait_for(WAIT, || v.changes().len() == 3));
    assert_eq!(v.changes()[2], c("created", "notes/new/a/b/g.md", None));

    // Un-ignoring drafts/ watches it and its folders.
    v.write(".obbyignore", "node_modules/\n");
    assert!(wait_for(WAIT, || v.changes().len() == 4));
    assert_eq!(v.changes()[3], c("created", "notes/drafts/d1/x.md", None));
    assert_eq!(engine.inotify_watches(), expected + 3 + 3, "drafts, d1, d2");
    v.write("notes/drafts/d2/y.md", "y\n");
    assert!(wait_for(WAIT, || v.changes().len() == 5));
    assert_eq!(v.changes()[4], c("created", "notes/drafts/d2/y.md", None));

    // Ignoring it again gives its watches back.
    v.write(".obbyignore", "node_modules/\ndrafts/\n");
    assert!(
        wait_for(WAIT, || engine.inotify_watches() == expected + 3),
        "{} watches",
        engine.inotify_watches()
    );
    assert!(engine.stop().success());
}

/// True when `old`'s end is kept in history: one `moved` change from it to
/// `new`, or its deletion and `new`'s creation; and `sync_files` and
/// `file_states` both say `old` is gone.
fn end_kept(v: &Vault, old: &str, new: &str) -> bool {
    let changes = v.changes();
    let moved = changes.contains(&c("moved", new, Some(old)));
    let split =
        changes.contains(&c("deleted", old, None)) && changes.contains(&c("created", new, None));
    let abs = v.abs(old);
    (moved || split)
        && v.count(&format!(
            "SELECT COUNT(*) FROM sync_files WHERE path = '{abs}' AND deleted = 1"
        )) == 1
        && v.count(&format!(
            "SELECT COUNT(*) FROM file_states WHERE file_path = '{abs}' AND is_deleted = 1"
        )) == 1
}

/// True when `rel` has a version with `text` (and, when its change is a
/// move, a diff against the origin's version).
fn recorded(v: &Vault, rel: &str, text: &str) -> bool {
    let abs = v.abs(rel);
    v.count(&format!(
        "SELECT COUNT(*) FROM file_versions WHERE file_path = '{abs}' AND content = '{text}'"
    )) == 1
}

/// Issue 10: a folder renamed (case only, or to a new name) and at once an
/// atomic save of one of its files under the new name (an editor rewriting
/// links after the rename): every file of the folder keeps its end, as one
/// `moved` change from its original path or as deleted + created, never a
/// silent loss, and the saved file's new content is a version.
fn folder_rename_then_atomic_save(poll: bool, from: &str, to: &str) {
    let names = ["a.md", "b.md", "deep/c.md"];
    let files: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("notes/{from}/{n}"), format!("{n} [[x]]\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let (v, engine) = started(poll, &refs);
    v.rename(&format!("notes/{from}"), &format!("notes/{to}"));
    let tmp = format!("notes/{to}/.a.md.tmp4f2a");
    v.write(&tmp, "a.md [[y]]\n");
    v.rename(&tmp, &format!("notes/{to}/a.md"));
    let all_kept = || {
        names
            .iter()
            .all(|n| end_kept(&v, &format!("notes/{from}/{n}"), &format!("notes/{to}/{n}")))
            && recorded(&v, &format!("notes/{to}/a.md"), "a.md [[y]]\n")
    };
    assert!(
        wait_for(WAIT, all_kept),
        "poll={poll}: an old path's end was lost: {:?}",
        v.changes()
    );
    // The files left as they were are moves (paired by hash when the
    // rescan of both folders finds them); the saved one is deleted +
    // created, or a move (the rescan ran before the save: a loaded machine,
    // a poll in between) and its edit; nothing else is recorded.
    let mut changes = v.changes().split_off(files.len());
    changes.sort();
    let moved = |n: &str| {
        c(
            "moved",
            &format!("notes/{to}/{n}"),
            Some(&format!("notes/{from}/{n}")),
        )
    };
    let mut split = vec![
        c("created", &format!("notes/{to}/a.md"), None),
        c("deleted", &format!("notes/{from}/a.md"), None),
        moved("b.md"),
        moved("deep/c.md"),
    ];
    let mut moved_then_edited = vec![
        c("modified", &format!("notes/{to}/a.md"), None),
        moved("a.md"),
        moved("b.md"),
        moved("deep/c.md"),
    ];
    split.sort();
    moved_then_edited.sort();
    // The move and the edit coalesced in the queue: one move, with the
    // saved content (checked above).
    let one_move = vec![moved("a.md"), moved("b.md"), moved("deep/c.md")];
    assert!(
        changes == split || changes == moved_then_edited || changes == one_move,
        "poll={poll}: {changes:?}"
    );
    assert_eq!(
        v.count("SELECT COUNT(*) FROM file_versions WHERE file_path LIKE '%.tmp4f2a'"),
        0
    );
    assert!(engine.stop().success());
}

#[test]
fn a_case_only_folder_rename_then_an_atomic_save_loses_nothing_native() {
    folder_rename_then_atomic_save(false, "Projects", "projects");
}

#[test]
fn a_case_only_folder_rename_then_an_atomic_save_loses_nothing_polling() {
    folder_rename_then_atomic_save(true, "Projects", "projects");
}

#[test]
fn a_folder_rename_then_an_atomic_save_loses_nothing_native() {
    folder_rename_then_atomic_save(false, "dir", "renamed-dir");
}

#[test]
fn a_folder_rename_then_an_atomic_save_loses_nothing_polling() {
    folder_rename_then_atomic_save(true, "dir", "renamed-dir");
}

/// Issue 10: a move with an edit follows the same rule whatever found it:
/// one `moved` change carrying the new content's version and a diff
/// (native events pair the rename), or deleted + created (the poller's
/// reconciliation sees a vanished file and a new one with another hash),
/// never a silent loss.
fn move_with_an_edit(poll: bool) {
    let (v, engine) = started(poll, &[("notes/old.md", "one\ntwo\n")]);
    v.rename("notes/old.md", "notes/new.md");
    v.write("notes/new.md", "one\ntwo\nthree\n");
    assert!(
        wait_for(WAIT, || end_kept(&v, "notes/old.md", "notes/new.md")
            && recorded(&v, "notes/new.md", "one\ntwo\nthree\n")),
        "poll={poll}: {:?}",
        v.changes()
    );
    let mut changes = v.changes().split_off(1);
    changes.sort();
    let moved = c("moved", "notes/new.md", Some("notes/old.md"));
    if changes == [moved.clone()] {
        let new = v.abs("notes/new.md");
        assert_eq!(
            v.count(&format!(
                "SELECT COUNT(*) FROM content_diffs WHERE file_path = '{new}'
                   AND change_type = 'moved' AND lines_added = 1 AND lines_removed = 0"
            )),
            1,
            "the move carries the edit's diff"
        );
    } else {
        // The edit came after the debounce (a loaded machine), or the
        // poller saw two unrelated files.
        let later_edit = vec![moved, c("modified", "notes/new.md", None)];
        let split = vec![
            c("created", "notes/new.md", None),
            c("deleted", "notes/old.md", None),
        ];
        assert!(
            changes == later_edit || changes == split,
            "poll={poll}: {changes:?}"
        );
    }
    assert!(engine.stop().success());
}

#[test]
fn a_move_with_an_edit_keeps_the_old_path_s_end_native() {
    move_with_an_edit(false);
}

#[test]
fn a_move_with_an_edit_keeps_the_old_path_s_end_polling() {
    move_with_an_edit(true);
}

/// Versions of `rel` with exactly `text`.
fn versions_with(v: &Vault, rel: &str, text: &str) -> i64 {
    let abs = v.abs(rel);
    v.count(&format!(
        "SELECT COUNT(*) FROM file_versions WHERE file_path = '{abs}' AND content = '{text}'"
    ))
}

/// Issue 10, one settle rule whatever found a change: a writer that
/// truncates a file, writes half of it and pauses for longer than
/// `--settle-ms` (but less than the debounce) before writing the rest
/// leaves no half version, even when the half state is found by the
/// start-up reconciliation (no debounce of its own) rather than the watcher.
/// On the old rule (`--settle-ms` for reconciliation-found changes) the
/// worker read the half state as soon as it was 100 ms old.
#[test]
fn a_writer_paused_longer_than_settle_ms_leaves_no_half_version_found_by_reconciliation() {
    let v = Vault::new();
    v.write("notes/f.md", "v1 complete\n");
    let flags = [
        "--debounce-ms",
        "6000",
        "--settle-ms",
        "100",
        "--rescan-interval",
        "0",
    ];
    let engine = v.start(&flags);
    assert!(wait_for(WAIT, || versions_with(
        &v,
        "notes/f.md",
        "v1 complete\n"
    ) == 1));
    assert!(engine.stop().success());
    // The generator: truncate and write half, pause, write the rest. The
    // engine starts during the pause, so its start-up reconciliation finds
    // the half state.
    let half_at = std::time::Instant::now();
    v.write("notes/f.md", "v2 ha");
    let engine = v.start(&flags);
    let started = std::time::Instant::now();
    // Past the settle time by far, under the debounce by far.
    let pause_end =
        (half_at + Duration::from_millis(2000)).max(started + Duration::from_millis(1000));
    std::thread::sleep(pause_end.saturating_duration_since(std::time::Instant::now()));
    v.write("notes/f.md", "v2 half and the rest\n");
    assert!(
        wait_for(Duration::from_secs(30), || versions_with(
            &v,
            "notes/f.md",
            "v2 half and the rest\n"
        ) == 1),
        "{:?}",
        v.changes()
    );
    assert_eq!(
        versions_with(&v, "notes/f.md", "v2 ha"),
        0,
        "the half-written state became a version"
    );
    assert_eq!(v.changes().len(), 2, "{:?}", v.changes());
    assert!(engine.stop().success());
}

/// True when `sync_files` and `file_states` both say `rel` is gone.
fn gone(v: &Vault, rel: &str) -> bool {
    let abs = v.abs(rel);
    v.count(&format!(
        "SELECT COUNT(*) FROM sync_files WHERE path = '{abs}' AND deleted = 1"
    )) == 1
        && v.count(&format!(
            "SELECT COUNT(*) FROM file_states WHERE file_path = '{abs}' AND is_deleted = 1"
        )) == 1
}

/// Issue 10: a tracked note renamed onto a destination that is itself a
/// note just moved there (`rename(a, b)`, then `rename(c, b)`) ends both
/// old paths: neither `a` nor `c` is left live until some later rescan.
fn rename_onto_a_just_moved_note(poll: bool) {
    let (v, engine) = started(
        poll,
        &[("notes/a.md", "alpha\n"), ("notes/c.md", "gamma\n")],
    );
    v.rename("notes/a.md", "notes/b.md");
    v.rename("notes/c.md", "notes/b.md");
    assert!(
        wait_for(WAIT, || gone(&v, "notes/a.md")
            && gone(&v, "notes/c.md")
            && recorded(&v, "notes/b.md", "gamma\n")),
        "poll={poll}: an old path's end was lost: {:?}",
        v.changes()
    );
    let changes = v.changes();
    let ends = |old: &str| {
        changes.contains(&c("deleted", old, None))
            || changes.contains(&c("moved", "notes/b.md", Some(old)))
    };
    assert!(ends("notes/a.md") && ends("notes/c.md"), "{changes:?}");
    assert!(engine.stop().success());
}

#[test]
fn a_rename_onto_a_just_moved_note_ends_both_old_paths_native() {
    rename_onto_a_just_moved_note(false);
}

#[test]
fn a_rename_onto_a_just_moved_note_ends_both_old_paths_polling() {
    rename_onto_a_just_moved_note(true);
}

#[test]
fn an_idle_engine_gives_back_the_memory_its_work_used() {
    // 2,000 notes of 16 KiB: the initial scan's buffers and page caches
    // raise the engine's resident memory well above what it needs idle.
    let v = Vault::new();
    let mut seed = 1_u64;
    let mut word = || {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        format!("w{:x}", seed >> 52)
    };
    let files: i64 = 2_000;
    for i in 0..files {
        let mut text = String::new();
        while text.len() < 16 * 1024 {
            text.push_str(&word());
            text.push(if text.len() % 80 < 8 { '\n' } else { ' ' });
        }
        v.write(&format!("notes/n{i}.md"), text);
    }
    let engine = v.start(&flags(false));
    assert!(
        wait_for(Duration::from_secs(120), || v
            .count("SELECT COUNT(*) FROM file_states")
            == files),
        "the initial scan did not finish"
    );
    let peak = engine.peak_rss_kib();
    assert!(
        peak >= 48 * 1024,
        "the scan peaked at {} MiB: too little to show memory given back",
        peak / 1024
    );
    // Once idle (2 s after the last commit, and after the search index's
    // merges), the engine drops its page caches and trims the allocator.
    let given_back = wait_for(Duration::from_secs(60), || engine.rss_kib() * 2 < peak);
    assert!(
        given_back,
        "resident memory is {} MiB a minute after the scan (its peak: {} MiB)",
        engine.rss_kib() / 1024,
        peak / 1024
    );
    assert!(engine.stop().success());
}

/// A tracked folder renamed within the root and replaced by a symlink to
/// an untracked folder that holds a file of the same name: the live rescan
/// of that folder followed the link (the walker follows its start), found
/// the name again and recorded nothing; the file is deleted, once, as a
/// scan says (a file reached through a symlink is outside the root).
#[test]
fn a_folder_replaced_by_a_symlink_records_its_files_deleted_while_running() {
    // A debounce long enough that the link is there when the folder's
    // rescan runs.
    // The link's target exists before the engine starts (one made while
    // it runs is a new folder, whose rescan happened to hide the bug).
    let v = Vault::new();
    v.write("notes/sub/s1.md", "s1\n");
    v.write("other/s1.md", "o1\n");
    let _engine = v.start(&flags_debounce(false, "300"));
    settle(&v, 1);
    std::fs::rename(v.path("notes/sub"), v.path("sub_real")).expect("rename");
    std::os::unix::fs::symlink("../other", v.path("notes/sub")).expect("link");
    assert_eq!(
        settle(&v, 2),
        [
            c("created", "notes/sub/s1.md", None),
            c("deleted", "notes/sub/s1.md", None)
        ]
    );
}

/// A file written without pause never settles: under `run` it is read once
/// its row was deferred for `--max-wait-ms` (here two deferrals of the
/// 300 ms debounce), not after the 10 s cap of `scan`, so it gets a version
/// about every max-wait. Counted in deferrals, not timed.
#[test]
fn a_file_written_without_pause_is_read_every_max_wait() {
    let v = Vault::new();
    v.write("notes/log.md", "start\n");
    let _engine = v.start(&[
        "--debounce-ms",
        "300",
        "--max-wait-ms",
        "600",
        "--rescan-interval",
        "0",
    ]);
    settle(&v, 1);
    let mut text = String::from("start\n");
    let grew = wait_for(Duration::from_secs(60), || {
        text.push_str("append\n");
        v.write("notes/log.md", &text);
        std::thread::sleep(Duration::from_millis(50));
        v.count("SELECT COUNT(*) FROM file_versions") >= 3
    });
    assert!(
        grew,
        "versions while the file kept changing: {:?}",
        v.changes()
    );
    let most = v.count("SELECT MAX(deferrals) FROM event_queue");
    assert!(most <= 2, "a row was deferred {most} times");
}

/// A renamed folder's files are moves that keep each file's own history:
/// files of the same content pair by name, a file edited just before the
/// rename pairs by its path under the folder, and so do the files of a
/// folder renamed twice within the debounce. Before, the rescans paired by
/// content alone: `dup2/b.md` took `dup/e.md`'s history, and the edited
/// file and the twice-renamed ones were deleted and created anew.
#[test]
fn a_renamed_folders_files_keep_their_own_history() {
    let names = ["a", "b", "c", "d", "e"];
    let files: Vec<(String, String)> = names
        .iter()
        .map(|x| (format!("notes/dup/{x}.md"), format!("history of {x}\n")))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let (v, _engine) = started_with(false, &refs, "300");
    for x in names {
        v.write(&format!("notes/dup/{x}.md"), "same template\n");
    }
    settle(&v, 10);
    v.rename("notes/dup", "notes/dup2");
    let mut got = settle(&v, 15)[10..].to_vec();
    got.sort();
    let want: Vec<_> = names
        .iter()
        .map(|x| {
            c(
                "moved",
                &format!("notes/dup2/{x}.md"),
                Some(&format!("notes/dup/{x}.md")),
            )
        })
        .collect();
    assert_eq!(got, want);

    // Edited, then its folder renamed at once.
    v.write("notes/P/p1.md", "p1\n");
    v.write("notes/P/c1.md", "c1\n");
    settle(&v, 17);
    v.write("notes/P/c1.md", "c1\nedit\n");
    v.rename("notes/P", "notes/Q");
    let mut edited = settle(&v, 19)[17..].to_vec();
    edited.sort();
    assert_eq!(
        edited,
        [
            c("moved", "notes/Q/c1.md", Some("notes/P/c1.md")),
            c("moved", "notes/Q/p1.md", Some("notes/P/p1.md")),
        ]
    );

    // Renamed twice within the debounce.
    for i in 1..=3 {
        v.write(&format!("notes/A/n{i}.md"), format!("n {i}\n"));
    }
    settle(&v, 22);
    v.rename("notes/A", "notes/B2");
    v.rename("notes/B2", "notes/C");
    let mut twice = settle(&v, 25)[22..].to_vec();
    twice.sort();
    assert_eq!(
        twice,
        (1..=3)
            .map(|i| c(
                "moved",
                &format!("notes/C/n{i}.md"),
                Some(&format!("notes/A/n{i}.md"))
            ))
            .collect::<Vec<_>>()
    );
}
