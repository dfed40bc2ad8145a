//! Opening a file beneath the root and nowhere else: the one way the engine
//! (its workers) and the api open a file to read it.
//!
//! Input: the canonical root and an absolute path inside it. Output: the
//! open file and its `fstat`, or the OS error. The open is `openat2`
//! relative to a descriptor of the root with `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`: no symlink is followed on
//! the way, in the last component or in a folder above it, so a file reached
//! through a symlinked folder is outside the root (`ELOOP`), exactly as the
//! walker, which does not follow symlinks, sees it. `O_NONBLOCK` makes a FIFO
//! open without waiting for a writer; the caller decides on the `fstat`
//! whether it is a regular file. On a kernel without `openat2` (before Linux
//! 5.6) the open falls back to `O_NOFOLLOW` on the full path, which guards
//! the last component only. Never writes, never touches the database.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Opens `path` (inside `root`) read-only by the rules above.
///
/// # Errors
/// The OS error: `NotFound`, `ELOOP` (a symlink on the way), `EXDEV` (an
/// escape), `PermissionDenied` (a path outside `root`), and so on.
pub fn open(root: &Path, path: &Path) -> io::Result<(File, Metadata)> {
    let rel = match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => Path::new("."),
        Ok(rel) => rel,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "outside the root",
            ));
        }
    };
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let fd = match rustix::fs::openat2(
        &dir,
        rel,
        flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => {
            rustix::fs::open(path, flags | OFlags::NOFOLLOW, Mode::empty())?
        }
        other => other?,
    };
    let file = File::from(fd);
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// True for the errors [`open`] gives for a path that leads outside the root
/// through a symlink (`ELOOP`, `EXDEV`).
pub fn is_outside(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == rustix::io::Errno::LOOP.raw_os_error()
            || code == rustix::io::Errno::XDEV.raw_os_error()
    )
}
