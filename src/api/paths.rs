//! Client paths to canonical paths inside the root, or a refusal.
//!
//! `..` and symlinks are resolved first (for a path that does not exist yet,
//! its deepest existing folder is resolved and the rest appended), so neither
//! can lead a client outside the root.

use std::path::{Component, Path, PathBuf};

use tonic::Status;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// Resolves `raw` (absolute, or relative to `base`, itself inside the root)
/// and requires the result to lie inside `root`.
///
/// # Errors
/// `INVALID_ARGUMENT` for an empty, overlong or NUL-containing path;
/// `PERMISSION_DENIED` for a path outside the root.
pub fn inside_root(
    root: &Path,
    raw: &str,
    base: Option<&Path>,
    what: &str,
) -> Result<PathBuf, Status> {
    if raw.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{what} is empty")));
    }
    if raw.len() > MAX_PATH_BYTES {
        return Err(Status::invalid_argument(format!(
            "{what} is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    if raw.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{what} contains a NUL byte"
        )));
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
        Err(Status::permission_denied(format!(
            "{what} {raw:?} resolves to {}, outside the root {}",
            resolved.display(),
            root.display()
        )))
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
            assert_eq!(err.code(), tonic::Code::PermissionDenied, "{escape}");
        }
        std::os::unix::fs::symlink("/etc", root.join("notes/link")).expect("symlink");
        assert_eq!(
            ok("notes/link/passwd").expect_err("symlink").code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            ok("").expect_err("empty").code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            ok("a\0b").expect_err("nul").code(),
            tonic::Code::InvalidArgument
        );
    }
}
