//! Reading a file a client named: how [`super::EngineHandle::read_text`]
//! and [`super::EngineHandle::digest`] open one, the api's only way to.
//!
//! Input: the canonical root and a path inside it, already checked by
//! [`super::paths::inside_root`]. Output: the file's text or digest, or a
//! [`ReadError`]. Never writes, never touches the database.
//!
//! The check and the open are two steps, so the open keeps the check's
//! promise by itself: it is [`confined::open`] (`openat2` beneath the root,
//! no symlink followed on the way, `O_NONBLOCK`), the same open the workers
//! use, so a folder or file swapped for a symlink after the check fails to
//! open instead of leading outside the root, and only a regular file is
//! read, decided by `fstat` on the opened descriptor; no call can hold a
//! blocking-pool thread on a FIFO.

use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::path::{Path, PathBuf};

use super::confined;
use super::hash::{self, Digest};

/// Why a client-named file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The open failed: missing, a symlink on the way, outside the root.
    #[error("{}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error (`ELOOP` for a symlink, `EXDEV` for an escape).
        #[source]
        source: io::Error,
    },
    /// Not a regular file (a folder, a FIFO, a device).
    #[error("{} is not a regular file", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// Over the size limit where text is needed.
    #[error("{} is over the size limit ({max} bytes)", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// Binary or invalid UTF-8 where text is needed.
    #[error("{} is not text (binary or invalid UTF-8)", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// Reading the opened file failed.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Opens `path` (inside `root`, not one of `shielded`: the database and
/// its side files) for reading by the rules above and returns it with its
/// `fstat`.
///
/// # Errors
/// [`ReadError::Open`] when it cannot be opened beneath the root without a
/// symlink; [`ReadError::NotRegular`] when it is not a regular file.
pub fn open(root: &Path, path: &Path, shielded: &[PathBuf]) -> Result<(File, Metadata), ReadError> {
    let (file, meta) = confined::open(root, path, shielded).map_err(|source| ReadError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok((file, meta))
}

/// The normalized text of `path` (CRLF and lone CR become LF, as stored).
///
/// # Errors
/// Those of [`open`]; [`ReadError::TooLarge`] over `max` bytes;
/// [`ReadError::NotText`] for binary content.
pub fn text(root: &Path, path: &Path, shielded: &[PathBuf], max: u64) -> Result<String, ReadError> {
    let (file, meta) = open(root, path, shielded)?;
    let too_large = || ReadError::TooLarge {
        path: path.to_path_buf(),
        max,
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0) + 1);
    // One byte past the limit tells a file that grew since the fstat.
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    hash::digest_bytes(bytes)
        .text
        .ok_or_else(|| ReadError::NotText {
            path: path.to_path_buf(),
        })
}

/// The digest of `path` as the workers compute it: over `max` bytes it is
/// hashed in a stream and carries no text.
///
/// # Errors
/// Those of [`open`]; [`ReadError::Read`] when reading fails.
pub fn digest(
    root: &Path,
    path: &Path,
    shielded: &[PathBuf],
    max: u64,
) -> Result<Digest, ReadError> {
    let (mut file, meta) = open(root, path, shielded)?;
    super::worker::digest_open(&mut file, meta.len(), max)
        .map(|(digest, _)| digest)
        .map_err(|source| ReadError::Read {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(dir.path())
            .expect("canon")
            .join("root");
        std::fs::create_dir_all(root.join("notes")).expect("mkdir");
        (dir, root)
    }

    #[test]
    fn symlinks_fifos_and_folders_are_refused_and_text_is_read() {
        let (dir, root) = root();
        std::fs::write(root.join("notes/a.md"), "one\r\ntwo\n").expect("write");
        assert_eq!(
            text(&root, &root.join("notes/a.md"), &[], 1024).expect("text"),
            "one\ntwo\n"
        );
        let outside = dir.path().join("secret.md");
        std::fs::write(&outside, "secret\n").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("notes/link.md")).expect("symlink");
        assert!(matches!(
            text(&root, &root.join("notes/link.md"), &[], 1024),
            Err(ReadError::Open { .. })
        ));
        std::os::unix::fs::symlink(dir.path(), root.join("dirlink")).expect("symlink");
        assert!(matches!(
            text(&root, &root.join("dirlink/secret.md"), &[], 1024),
            Err(ReadError::Open { .. })
        ));
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("notes/pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        assert!(matches!(
            text(&root, &root.join("notes/pipe"), &[], 1024),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(matches!(
            text(&root, &root.join("notes"), &[], 1024),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(matches!(
            text(&root, &root.join("notes/a.md"), &[], 3),
            Err(ReadError::TooLarge { .. })
        ));
        let d = digest(&root, &root.join("notes/a.md"), &[], 3).expect("digest");
        assert_eq!(d.text, None, "over the limit: hash only");
        assert_eq!(
            digest(&root, &root.join("notes/a.md"), &[], 1024)
                .expect("digest")
                .hash,
            hash::digest_bytes(b"one\ntwo\n".to_vec()).hash
        );
    }

    #[test]
    fn the_database_and_a_hard_link_to_it_are_never_opened() {
        let (_dir, root) = root();
        let db = root.join(".db/obby.db");
        std::fs::create_dir_all(root.join(".db")).expect("mkdir");
        std::fs::write(&db, "not really sqlite").expect("write");
        std::fs::hard_link(&db, root.join("notes/copy.md")).expect("link");
        std::fs::write(root.join("notes/a.md"), "a\n").expect("write");
        let shielded = [db.clone(), PathBuf::from(format!("{}-wal", db.display()))];
        for path in [db.clone(), root.join("notes/copy.md")] {
            match text(&root, &path, &shielded, 1024) {
                Err(ReadError::Open { source, .. }) => {
                    assert_eq!(
                        source.kind(),
                        std::io::ErrorKind::PermissionDenied,
                        "{path:?}"
                    );
                }
                other => panic!("{path:?}: {other:?}"),
            }
        }
        assert_eq!(
            text(&root, &root.join("notes/a.md"), &shielded, 1024).expect("text"),
            "a\n"
        );
        assert_eq!(
            text(&root, &root.join("notes/copy.md"), &[], 1024).expect("unshielded"),
            "not really sqlite"
        );
    }
}
