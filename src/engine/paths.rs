//! User and client paths to canonical paths inside the root, or a refusal:
//! the one resolver of the engine, the CLI and the api.
//!
//! Input: a path as a person or a client wrote it (absolute, or relative to
//! a base inside the root). Output: the canonical path the engine stores as
//! `file_path`, or a [`PathError`]. `..` and symlinks are resolved first
//! (for a path that does not exist yet, its deepest existing folder is
//! resolved and the rest appended), so neither can lead outside the root.
//! Reads only file metadata (`lstat`, `realpath`); never opens a file, never
//! touches the database. The api turns a [`PathError`] into its status
//! (`PERMISSION_DENIED` outside the root, else `INVALID_ARGUMENT`).

use std::path::{Component, Path, PathBuf};

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Why a path was refused. Each message names the path's role (`what`).
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// An empty (or all-blank) path.
    #[error("{what} is empty")]
    Empty {
        /// The path's role in the request ("file_path", "watch path").
        what: String,
    },
    /// Longer than [`MAX_PATH_BYTES`].
    #[error("{what} is longer than {MAX_PATH_BYTES} bytes")]
    TooLong {
        /// The path's role in the request.
        what: String,
    },
    /// A NUL byte, which no file name can hold.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// The path's role in the request.
        what: String,
    },
    /// The resolved path lies outside the root.
    #[error("{what} {raw:?} resolves to {}, outside the root {}", resolved.display(), root.display())]
    Outside {
        /// The path's role in the request.
        what: String,
        /// The path as given.
        raw: String,
        /// What it resolves to.
        resolved: PathBuf,
        /// The root it left.
        root: PathBuf,
    },
}

/// Resolves `raw` (absolute, or relative to `base`, itself inside the root)
/// and requires the result to lie inside `root`.
///
/// # Errors
/// [`PathError::Empty`], [`PathError::TooLong`] or [`PathError::Nul`] for a
/// malformed path; [`PathError::Outside`] for a path outside the root.
pub fn inside_root(
    root: &Path,
    raw: &str,
    base: Option<&Path>,
    what: &str,
) -> Result<PathBuf, PathError> {
    if raw.trim().is_empty() {
        return Err(PathError::Empty { what: what.into() });
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong { what: what.into() });
    }
    if raw.contains('\0') {
        return Err(PathError::Nul { what: what.into() });
    }
    let given = Path::new(raw);
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        base.unwrap_or(root).join(given)
    };
    let resolved = resolve(&joined);
    if resolved.starts_with(root) {
        Ok(resolved)
    } else {
        Err(PathError::Outside {
            what: what.into(),
            raw: raw.into(),
            resolved,
            root: root.to_path_buf(),
        })
    }
}

/// Canonicalizes the deepest existing ancestor of `path` (resolving its
/// symlinks) and appends the rest with `.` and `..` applied lexically. Also
/// what the CLI uses to turn a user's path into a stored `file_path`.
pub fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            // `..` or `/` at the end: resolve lexically from here.
            _ => break,
        }
    }
    let start = std::fs::canonicalize(&existing).unwrap_or(existing);
    let mut clean = PathBuf::new();
    for c in start
        .components()
        .chain(rest.iter().rev().map(|n| Component::Normal(n)))
    {
        match c {
            Component::ParentDir => {
                clean.pop();
            }
            Component::CurDir => {}
            other => clean.push(other),
        }
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_pass_and_escapes_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(dir.path())
            .expect("canon")
            .join("root");
        std::fs::create_dir_all(root.join("notes")).expect("mkdir");
        std::fs::write(root.join("notes/a.md"), "a").expect("write");
        let ok = |raw: &str| inside_root(&root, raw, None, "path");
        assert_eq!(ok("notes/a.md").expect("inside"), root.join("notes/a.md"));
        assert_eq!(
            ok("notes/new/b.md").expect("inside, not yet there"),
            root.join("notes/new/b.md")
        );
        assert_eq!(
            ok(&root.join("notes/../notes/a.md").display().to_string()).expect("inside"),
            root.join("notes/a.md")
        );
        for escape in [
            "../outside.md",
            "notes/../../x",
            "/etc/passwd",
            "notes/new/../../../x",
        ] {
            let err = ok(escape).expect_err(escape);
            assert!(matches!(err, PathError::Outside { .. }), "{escape}: {err}");
        }
        std::os::unix::fs::symlink("/etc", root.join("notes/link")).expect("symlink");
        assert!(matches!(
            ok("notes/link/passwd").expect_err("symlink"),
            PathError::Outside { .. }
        ));
        assert_eq!(ok(" ").expect_err("empty").to_string(), "path is empty");
        assert_eq!(
            ok("a\0b").expect_err("nul").to_string(),
            "path contains a NUL byte"
        );
        assert!(matches!(
            ok(&"a".repeat(MAX_PATH_BYTES + 1)).expect_err("long"),
            PathError::TooLong { .. }
        ));
    }
}
