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
//!
//! Never opens the database or its side files either (the `shielded`
//! list): closing any descriptor of a file drops every POSIX lock the
//! process holds on it, SQLite's among them, and another connection would
//! then checkpoint and delete the WAL under the engine. So the path is
//! first opened `O_PATH` (such a descriptor holds no file open: closing it
//! drops no lock), its `fstat` compared with the shielded files' (a hard
//! link inside the root names the same inode), and only then opened for
//! reading, through `/proc/self/fd`, which reopens that very inode.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Opens `path` (inside `root`) read-only by the rules above, unless it is
/// one of `shielded` (the database and its side files).
///
/// # Errors
/// The OS error: `NotFound`, `ELOOP` (a symlink on the way), `EXDEV` (an
/// escape), `PermissionDenied` (a path outside `root`, or a shielded
/// file), and so on.
pub fn open(root: &Path, path: &Path, shielded: &[PathBuf]) -> io::Result<(File, Metadata)> {
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
    let handle = match rustix::fs::openat2(
        &dir,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => rustix::fs::open(
            path,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?,
        other => other?,
    };
    let seen = rustix::fs::fstat(&handle)?;
    if is_shielded(path, &seen, shielded) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the engine's own database file",
        ));
    }
    // The inode just checked, opened for reading (the magic link is
    // SQLite-safe: it names the O_PATH descriptor's file, whatever the
    // path now leads to).
    let proc_path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd = rustix::fs::open(proc_path.as_str(), flags, Mode::empty())?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    Ok((file, meta))
}

/// True when `seen`, the file at `path`, is the same inode as one of
/// `shielded` (those that exist). Only a file of the same name or with
/// more than one link can be: the others cost no `stat`.
fn is_shielded(path: &Path, seen: &rustix::fs::Stat, shielded: &[PathBuf]) -> bool {
    let maybe = seen.st_nlink > 1 || shielded.iter().any(|p| p.file_name() == path.file_name());
    maybe
        && shielded.iter().any(|p| {
            rustix::fs::stat(p).is_ok_and(|s| s.st_dev == seen.st_dev && s.st_ino == seen.st_ino)
        })
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
