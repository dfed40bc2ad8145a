//! `.obbywatch` / `.obbyignore` matching (CONTRACT.md §4).
//!
//! Both files live in the root, one gitignore-style glob a line (`#` comments,
//! blank lines skipped, a trailing `/` selects a directory and everything under
//! it, a pattern without `/` matches a base name at any depth). A file is
//! tracked when a watch pattern matches it or one of its parent folders and no
//! ignore pattern does; `.obbyignore` wins. `.obbywatch` is strict: without a
//! pattern nothing is tracked. The engine's own files (the database, its WAL,
//! SHM and lock files) are never tracked, whatever the patterns say. Pure
//! matching after [`Patterns::load`]: no database, no other I/O.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::error::EngineError;

/// The watch-pattern file in the root.
pub const WATCH_FILE: &str = ".obbywatch";
/// The ignore-pattern file in the root.
pub const IGNORE_FILE: &str = ".obbyignore";

/// Prefix of the engine's cookie files (canary, sync barrier): never tracked.
pub const COOKIE_PREFIX: &str = ".obby-sync-";

/// Ignored whatever `.obbyignore` says (it can re-include with `!`): the
/// engine's cookies and the helper files editors write while saving, so an
/// atomic save is one change of the real file and nothing else.
pub const BUILTIN_IGNORE: &[&str] = &[
    ".obby-sync-*",
    "*.swp",
    "*.swx",
    "*~",
    ".#*",
    "4913",
    ".goutputstream-*",
    "*___jb_tmp___",
    "*___jb_old___",
    "~$*",
    ".~lock.*",
    "*.crswap",
];

/// What `obby-sync init` writes into a new `.obbywatch`.
pub const DEFAULT_WATCH: &str = "# obby-sync: what to track, one glob a line (see README).\n\
# A trailing / selects a folder and everything under it.\nnotes/\n";

/// What `obby-sync init` writes into a new `.obbyignore`.
pub const DEFAULT_IGNORE: &str = "# obby-sync: what never to track; wins over .obbywatch.\n\
# editor and OS droppings\n*.tmp\n*.swp\n*.swx\n*~\n.#*\n.DS_Store\nThumbs.db\n\
.goutputstream-*\n*___jb_tmp___\n*___jb_old___\n~$*\n.~lock.*\n\
# version control and dependencies\n.git/\n.hg/\n.svn/\nnode_modules/\n";

/// Compiled watch and ignore patterns for one root.
#[derive(Debug, Clone)]
pub struct Patterns {
    root: PathBuf,
    watch: Gitignore,
    ignore: Gitignore,
    /// Absolute paths that are never tracked (the engine's own files).
    excluded: Vec<PathBuf>,
}

impl Patterns {
    /// Reads `.obbywatch` and `.obbyignore` from `root` (a canonical path).
    ///
    /// # Errors
    /// [`EngineError::NoWatchFile`] when `.obbywatch` is missing;
    /// [`EngineError::Pattern`] for a line that is not a valid glob;
    /// [`EngineError::Io`] when a file exists but cannot be read.
    pub fn load(root: &Path) -> Result<Patterns, EngineError> {
        Self::load_with(root, &ApiPatterns::default())
    }

    /// [`Patterns::load`], plus the patterns added through the api.
    ///
    /// # Errors
    /// As [`Patterns::load`].
    pub fn load_with(root: &Path, api: &ApiPatterns) -> Result<Patterns, EngineError> {
        let watch_path = root.join(WATCH_FILE);
        let watch_text = match std::fs::read_to_string(&watch_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(EngineError::NoWatchFile {
                    root: root.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(EngineError::Io {
                    path: watch_path,
                    source,
                });
            }
        };
        let ignore_path = root.join(IGNORE_FILE);
        let ignore_text = match std::fs::read_to_string(&ignore_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(EngineError::Io {
                    path: ignore_path,
                    source,
                });
            }
        };
        let watch_text = api.append_to(watch_text, &api.watch);
        let ignore_text = api.append_to(ignore_text, &api.ignore);
        Self::from_text(root, &watch_text, &ignore_text)
    }

    /// Compiles patterns given as text (the contents of the two files).
    ///
    /// # Errors
    /// [`EngineError::Pattern`] naming the file and line of a bad glob.
    pub fn from_text(root: &Path, watch: &str, ignore: &str) -> Result<Patterns, EngineError> {
        Ok(Patterns {
            root: root.to_path_buf(),
            watch: compile(root, WATCH_FILE, watch)?,
            ignore: compile(
                root,
                IGNORE_FILE,
                &format!("{}\n{ignore}", BUILTIN_IGNORE.join("\n")),
            )?,
            excluded: Vec::new(),
        })
    }

    /// Never track `paths` (absolute), e.g. the database and its side files.
    pub fn exclude(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.excluded.extend(paths);
        self
    }

    /// The root these patterns are relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when `.obbywatch` selects nothing at all.
    pub fn watches_nothing(&self) -> bool {
        self.watch.num_ignores() == 0
    }

    /// Whether the file at absolute `path` is tracked.
    pub fn is_tracked(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        if rel.as_os_str().is_empty() || self.excluded.iter().any(|p| p == path) {
            return false;
        }
        if self
            .ignore
            .matched_path_or_any_parents(rel, false)
            .is_ignore()
        {
            return false;
        }
        self.watch
            .matched_path_or_any_parents(rel, false)
            .is_ignore()
    }

    /// Whether the directory at absolute `path` is ignored, so a walk can skip
    /// everything under it.
    pub fn is_ignored_dir(&self, path: &Path) -> bool {
        match path.strip_prefix(&self.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => self
                .ignore
                .matched_path_or_any_parents(rel, true)
                .is_ignore(),
            _ => false,
        }
    }
}

fn compile(root: &Path, file: &str, text: &str) -> Result<Gitignore, EngineError> {
    let mut builder = GitignoreBuilder::new(root);
    let builtin = if file == IGNORE_FILE {
        BUILTIN_IGNORE.len()
    } else {
        0
    };
    for (index, line) in text.lines().enumerate() {
        let index = index.saturating_sub(builtin);
        builder
            .add_line(None, line)
            .map_err(|e| EngineError::Pattern {
                file: root.join(file),
                message: format!("line {}: {e}", index + 1),
            })?;
    }
    builder.build().map_err(|e| EngineError::Pattern {
        file: root.join(file),
        message: e.to_string(),
    })
}

/// Patterns added through the gRPC api (`StartWatching`, `UpdatePatterns`),
/// on top of the two files. Persisted in `sync_meta` so a restart keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiPatterns {
    /// Extra `.obbywatch` lines.
    pub watch: Vec<String>,
    /// Extra `.obbyignore` lines.
    pub ignore: Vec<String>,
}

impl ApiPatterns {
    /// The `sync_meta` key of the extra watch lines.
    pub const WATCH_KEY: &'static str = "api_watch_patterns";
    /// The `sync_meta` key of the extra ignore lines.
    pub const IGNORE_KEY: &'static str = "api_ignore_patterns";

    /// Parses the stored form (one pattern a line).
    pub fn from_stored(watch: Option<&str>, ignore: Option<&str>) -> Self {
        let lines = |s: Option<&str>| {
            s.unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        };
        ApiPatterns {
            watch: lines(watch),
            ignore: lines(ignore),
        }
    }

    fn append_to(&self, mut text: String, lines: &[String]) -> String {
        for line in lines {
            text.push('\n');
            text.push_str(line);
        }
        text
    }

    /// Checks that every pattern is a valid glob that stays inside the root.
    ///
    /// # Errors
    /// [`EngineError::ApiPattern`] naming the bad pattern and its list.
    pub fn validate(&self, root: &Path) -> Result<(), EngineError> {
        for (list, file, lines) in [
            ("watch", WATCH_FILE, &self.watch),
            ("ignore", IGNORE_FILE, &self.ignore),
        ] {
            for line in lines {
                let escapes = Path::new(line.trim_start_matches('!'))
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir));
                if escapes || line.contains('\n') || line.contains('\0') {
                    return Err(EngineError::ApiPattern {
                        list,
                        message: format!("{line:?} may not contain `..`, newlines or NUL"),
                    });
                }
            }
            compile(root, file, &lines.join("\n")).map_err(|e| match e {
                EngineError::Pattern { message, .. } => EngineError::ApiPattern { list, message },
                other => other,
            })?;
        }
        Ok(())
    }
}

/// Patterns that can be swapped while workers and the watcher use them
/// (hot reload of `.obbywatch` / `.obbyignore`). Cheap to clone.
#[derive(Debug, Clone)]
pub struct SharedPatterns(Arc<RwLock<Arc<Patterns>>>);

impl SharedPatterns {
    /// Shares `patterns`.
    pub fn new(patterns: Patterns) -> Self {
        SharedPatterns(Arc::new(RwLock::new(Arc::new(patterns))))
    }

    /// The current patterns.
    pub fn get(&self) -> Arc<Patterns> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the patterns.
    pub fn set(&self, patterns: Patterns) {
        let mut guard = match self.0.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *guard = Arc::new(patterns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(watch: &str, ignore: &str) -> Patterns {
        Patterns::from_text(Path::new("/vault"), watch, ignore).expect("valid patterns")
    }

    fn tracked(p: &Patterns, rel: &str) -> bool {
        p.is_tracked(&Path::new("/vault").join(rel))
    }

    /// Every row of the pattern table in README.md.
    #[test]
    fn readme_pattern_table() {
        let rows: &[(&str, &str, &str, bool)] = &[
            ("notes/", "", "notes/a.md", true),
            ("notes/", "", "notes/deep/b.txt", true),
            ("notes/", "", "archive/notes/c.md", true),
            ("notes/", "", "other/a.md", false),
            ("*.md", "", "x/y/z.md", true),
            ("*.md", "", "x/y/z.txt", false),
            ("research/papers/", "", "research/papers/p1.md", true),
            ("research/papers/", "", "old/research/papers/p1.md", false),
            ("notes/", "*~", "notes/a.md~", false),
            ("notes/", ".git/", "notes/.git/config", false),
            ("*.md", "test_*.md", "notes/test_one.md", false),
            ("*.md", "test_*.md", "notes/one_test.md", true),
        ];
        for (watch, ignore, path, expected) in rows {
            let p = patterns(watch, ignore);
            assert_eq!(
                tracked(&p, path),
                *expected,
                "{watch:?} / {ignore:?} / {path}"
            );
        }
    }

    #[test]
    fn folder_pattern_selects_everything_under_it() {
        let p = patterns("notes/\n", "");
        assert!(tracked(&p, "notes/a.md"));
        assert!(tracked(&p, "notes/deep/er/b.txt"));
        assert!(!tracked(&p, "other/a.md"));
        assert!(!tracked(&p, "notes"));
    }

    #[test]
    fn basename_pattern_matches_at_any_depth() {
        let p = patterns("*.md\n", "");
        assert!(tracked(&p, "a.md"));
        assert!(tracked(&p, "x/y/z.md"));
        assert!(!tracked(&p, "x/y/z.txt"));
    }

    #[test]
    fn ignore_wins_over_watch() {
        let p = patterns("notes/\n*.md\n", "*~\n.git/\ntest_*.md\n");
        assert!(!tracked(&p, "notes/a.md~"));
        assert!(!tracked(&p, "notes/.git/config"));
        assert!(!tracked(&p, "notes/test_one.md"));
        assert!(tracked(&p, "notes/one.md"));
    }

    #[test]
    fn empty_watch_file_tracks_nothing() {
        let p = patterns("# only a comment\n\n", "");
        assert!(p.watches_nothing());
        assert!(!tracked(&p, "a.md"));
    }

    #[test]
    fn editor_helper_files_and_cookies_are_ignored_without_an_obbyignore() {
        let p = patterns("notes/\n", "");
        for helper in [
            "notes/.a.md.swp",
            "notes/a.md~",
            "notes/.#a.md",
            "notes/4913",
            "notes/.goutputstream-XYZ12",
            "notes/a.md___jb_tmp___",
            "notes/~$report.docx",
            "notes/.obby-sync-canary",
        ] {
            assert!(!tracked(&p, helper), "{helper}");
        }
        // An .obbyignore can re-include one.
        let p = patterns("notes/\n", "!*~\n");
        assert!(tracked(&p, "notes/a.md~"));
    }

    #[test]
    fn a_bad_ignore_line_is_reported_with_its_own_line_number() {
        let err =
            Patterns::from_text(Path::new("/vault"), "notes/\n", "*.tmp\n[z-a\n").unwrap_err();
        assert!(err.to_string().contains(".obbyignore: line 2"), "{err}");
    }

    #[test]
    fn excluded_files_are_never_tracked() {
        let p = patterns("*\n", "").exclude([PathBuf::from("/vault/obby.db")]);
        assert!(!tracked(&p, "obby.db"));
        assert!(tracked(&p, "obby.md"));
    }

    #[test]
    fn paths_outside_the_root_are_not_tracked() {
        let p = patterns("*\n", "");
        assert!(!p.is_tracked(Path::new("/elsewhere/a.md")));
    }

    #[test]
    fn a_bad_glob_names_file_and_line() {
        let err = Patterns::from_text(Path::new("/vault"), "ok/\n[z-a\n", "").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(".obbywatch") && msg.contains("line 2"),
            "{msg}"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("notes".to_owned()),
                Just(".git".to_owned()),
                Just("a.md".to_owned()),
                Just("b~".to_owned()),
                "[a-z.~#$ ]{1,8}".prop_map(|s| s),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(crate::engine::fuzz_cases()))]

            /// Any pattern text compiles or is refused with an error (never a
            /// panic), and matching any path never panics.
            #[test]
            fn arbitrary_patterns_and_paths_never_panic(
                watch in "[ -~\n]{0,60}",
                ignore in "[ -~\n]{0,60}",
                parts in proptest::collection::vec(component(), 1..6),
            ) {
                if let Ok(p) = Patterns::from_text(Path::new("/vault"), &watch, &ignore) {
                    let path = Path::new("/vault").join(parts.join("/"));
                    let _ = p.is_tracked(&path);
                    let _ = p.is_ignored_dir(&path);
                }
            }

            /// `*.md` tracks exactly the paths with a component ending in
            /// `.md` (a matching folder selects everything in it, as in
            /// gitignore), except what the built-in ignores remove.
            #[test]
            fn star_dot_md_means_what_it_says(parts in proptest::collection::vec(component(), 1..6)) {
                let p = patterns("*.md\n", "");
                let rel = parts.join("/");
                let builtin = patterns("*\n", "");
                let expected = parts.iter().any(|c| c.ends_with(".md"))
                    && builtin.is_tracked(&Path::new("/vault").join(&rel));
                prop_assert_eq!(p.is_tracked(&Path::new("/vault").join(&rel)), expected, "{}", rel);
            }
        }
    }
}
