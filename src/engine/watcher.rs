//! File-system events in, [`FsEvent`] values out, on a bounded channel.
//!
//! Wraps `notify`'s native backend (inotify on Linux). [`choose_backend`] picks
//! it or polling per root, from the file-system type in `/proc/mounts`
//! (network, FUSE, 9p and WSL DrvFS mounts deliver no native events), or
//! polling when forced with `--poll`. Polling is not notify's `PollWatcher`:
//! that one compares mtimes in whole seconds and only when they grow, so a
//! second save within the same second is never reported. The enqueuer polls
//! through reconciliation instead (size and nanosecond mtime, moves paired by
//! hash, only changed files hashed), so a poll start here watches nothing.
//!
//! Native watches are per folder, never recursive: [`WatchGuard::sync`] walks
//! a scope (symlinks not followed) and watches every folder the ignore
//! patterns do not exclude, so an ignored tree costs no watch; the enqueuer
//! calls it for a new folder as soon as its event arrives, and for every
//! rescan (pattern changes, lost events). The notify callback never blocks: it
//! `try_send`s, and when the channel is full it records the event's folder in
//! [`RescanRequests`] instead of dropping the change. Overflow signals
//! (`Flag::Rescan`) and backend errors become rescan requests too; a folder
//! that [`WatchGuard::sync`] cannot watch (the inotify watch limit) is the
//! caller's to log, and its changes are found by rescans. No SQL; the
//! patterns are only asked which folders to watch.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::error::EngineError;
use super::patterns::Patterns;

/// Distinct folders remembered for rescans before the whole root is rescanned.
const MAX_RESCAN_SCOPES: usize = 256;

/// File-system types whose changes native watchers do not see (made on
/// another machine, or by a FUSE daemon / hypervisor that sends no events).
const POLL_FS_TYPES: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb",
    "smb3",
    "smbfs",
    "9p",
    "v9fs",
    "drvfs",
    "sshfs",
    "davfs",
    "afs",
    "ncpfs",
    "glusterfs",
    "lustre",
    "ceph",
    "vboxsf",
    "vmhgfs",
    "prl_fs",
];

/// What changed, as the watcher saw it. Kinds are hints: the worker stats
/// and hashes the file and decides for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsEvent {
    /// A file or folder was created, written, closed after writing, or had
    /// its metadata changed.
    Changed(PathBuf),
    /// A folder appeared: files may have landed in it before its watch did.
    DirCreated(PathBuf),
    /// A file or folder was removed.
    Removed(PathBuf),
    /// A rename the backend paired (inotify cookie).
    Renamed {
        /// Where it was.
        from: PathBuf,
        /// Where it is now.
        to: PathBuf,
    },
    /// The source half of a rename (moved out, or not yet paired).
    RenamedFrom(PathBuf),
    /// The destination half of a rename (moved in from outside the root, or
    /// before its pair): a folder moved in needs watches and a rescan.
    RenamedTo(PathBuf),
    /// No change: wakes the enqueuer to read its control messages.
    Nudge,
}

/// How a root is watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Kernel events (inotify).
    Native,
    /// A reconciliation of the root every `interval`.
    Poll {
        /// Time between two polls.
        interval: Duration,
    },
}

impl Backend {
    /// `native` or `poll`, as `status` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::Poll { .. } => "poll",
        }
    }
}

/// Folders whose events were lost and must be rescanned. Shared between the
/// watcher callback (which marks) and the enqueuer (which takes).
#[derive(Debug, Default)]
pub struct RescanRequests {
    pending: AtomicBool,
    scopes: Mutex<HashSet<PathBuf>>,
    everything: AtomicBool,
    /// Events lost so far (errors, overflows, a full channel): a canary
    /// armed before a loss proves nothing when its own event goes missing.
    losses: std::sync::atomic::AtomicU64,
}

impl RescanRequests {
    /// Asks for a rescan of `scope`, or of everything when `None`.
    pub fn mark(&self, scope: Option<&Path>) {
        match scope {
            Some(scope) => {
                let mut scopes = match self.scopes.lock() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if scopes.len() >= MAX_RESCAN_SCOPES {
                    self.everything.store(true, Ordering::Release);
                } else {
                    scopes.insert(scope.to_path_buf());
                }
            }
            None => self.everything.store(true, Ordering::Release),
        }
        self.pending.store(true, Ordering::Release);
    }

    /// [`RescanRequests::mark`] for events that were lost.
    pub fn mark_lost(&self, scope: Option<&Path>) {
        self.losses.fetch_add(1, Ordering::AcqRel);
        self.mark(scope);
    }

    /// How many times events were lost, since the start.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// Takes the requests: `Some(None)` means everything, `Some(Some(list))`
    /// those folders, `None` nothing.
    pub fn take(&self) -> Option<Option<Vec<PathBuf>>> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        let mut scopes = match self.scopes.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let list: Vec<PathBuf> = scopes.drain().collect();
        if self.everything.swap(false, Ordering::AcqRel) {
            Some(None)
        } else {
            Some(Some(list))
        }
    }
}

/// A running watcher; dropping it stops the events.
///
/// With native events every folder has a watch of its own (not one
/// recursive watch of the root), so folders the ignore patterns exclude
/// (`node_modules/`, `.git/objects/`) spend none of the inotify watch limit.
/// An ignored `.git` or `.hg` folder keeps one watch of its own, not of its
/// subfolders, so a VCS lock appearing in it is still seen.
pub struct WatchGuard {
    watcher: Option<Box<dyn notify::Watcher + Send>>,
    /// The backend in use.
    pub backend: Backend,
    /// Folders with a native watch, by path, with the inode they had: a
    /// folder replaced at the same path is watched again.
    watched: BTreeMap<PathBuf, u64>,
}

/// How a folder is watched under the current patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Watched, and its subfolders looked at.
    Tree,
    /// Watched alone (an ignored VCS folder, for its lock files).
    Alone,
    /// Not watched (ignored).
    None,
}

fn disposition(patterns: &Patterns, dir: &Path) -> Watch {
    if !patterns.is_ignored_dir(dir) {
        Watch::Tree
    } else if dir.file_name().is_some_and(|n| n == ".git" || n == ".hg") {
        Watch::Alone
    } else {
        Watch::None
    }
}

impl WatchGuard {
    /// Folders with a native watch.
    pub fn watched_folders(&self) -> usize {
        self.watched.len()
    }

    /// Forgets the watches of `path` and of everything under it: the
    /// backend drops them itself when a folder is deleted or moved away.
    pub fn forget(&mut self, path: &Path) {
        if self.watcher.is_none() {
            return;
        }
        let under: Vec<PathBuf> = self
            .watched
            .range::<Path, _>((Bound::Included(path), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in under {
            self.watched.remove(&p);
        }
    }

    /// Makes the watches under `scope` match the folders on disk and the
    /// patterns: a folder without a watch gets one, a watch whose folder is
    /// gone or now ignored is dropped. With `fresh` (a folder just created
    /// or moved in) every folder in it is watched anew, whatever was known
    /// of its path. Returns the watches added. A no-op when polling.
    ///
    /// # Errors
    /// The first error other than a folder vanishing meanwhile; the inotify
    /// watch limit ends the walk ([`notify::ErrorKind::MaxFilesWatch`]).
    pub fn sync(
        &mut self,
        scope: &Path,
        patterns: &Patterns,
        fresh: bool,
    ) -> Result<usize, notify::Error> {
        let Some(watcher) = self.watcher.as_mut() else {
            return Ok(0);
        };
        if fresh {
            let under: Vec<PathBuf> = self
                .watched
                .range::<Path, _>((Bound::Included(scope), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(scope))
                .map(|(p, _)| p.clone())
                .collect();
            for p in under {
                self.watched.remove(&p);
            }
        }
        let mut seen: HashSet<PathBuf> = HashSet::new();
        let mut added = 0;
        let mut result = Ok(());
        let mut stack = Vec::new();
        if let Ok(meta) = std::fs::symlink_metadata(scope)
            && meta.is_dir()
        {
            use std::os::unix::fs::MetadataExt as _;
            stack.push((scope.to_path_buf(), meta.ino()));
        }
        while let Some((dir, ino)) = stack.pop() {
            let how = disposition(patterns, &dir);
            if how == Watch::None {
                continue;
            }
            if self.watched.get(&dir) != Some(&ino) {
                match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.watched.insert(dir.clone(), ino);
                        added += 1;
                    }
                    Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => continue,
                    Err(e) if matches!(e.kind, notify::ErrorKind::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound) =>
                    {
                        continue;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            seen.insert(dir.clone());
            if how == Watch::Alone {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                use std::os::unix::fs::DirEntryExt as _;
                // Symlinks are not followed: a linked folder is outside the root.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push((entry.path(), entry.ino()));
                }
            }
        }
        if result.is_ok() {
            // Folders under the scope that are gone or ignored now.
            let stale: Vec<PathBuf> = self
                .watched
                .range::<Path, _>((Bound::Included(scope), Bound::Unbounded))
                .take_while(|(p, _)| p.starts_with(scope))
                .filter(|(p, _)| !seen.contains(*p))
                .map(|(p, _)| p.clone())
                .collect();
            for p in stale {
                self.watched.remove(&p);
                // Gone folders lost their watch already: only an ignored
                // one that still exists has one to drop.
                let _ = watcher.unwatch(&p);
            }
        }
        result.map(|()| added)
    }
}

/// Picks the backend for `root`: polling when forced, or when the file system
/// holding it is of a type that sends no native events.
pub fn choose_backend(root: &Path, force_poll: bool, interval: Duration) -> (Backend, String) {
    if force_poll {
        return (Backend::Poll { interval }, "--poll given".to_owned());
    }
    match fs_type(root) {
        Some(fs) if needs_polling(&fs) => (
            Backend::Poll { interval },
            format!("{fs} file systems send no native events"),
        ),
        Some(fs) => (Backend::Native, format!("{fs} file system")),
        None => (Backend::Native, "file system type unknown".to_owned()),
    }
}

/// True for file-system types that need polling.
pub fn needs_polling(fs_type: &str) -> bool {
    fs_type.starts_with("fuse") || POLL_FS_TYPES.contains(&fs_type)
}

/// The type of the file system holding `path`, from `/proc/mounts` (the
/// mount point that is the longest prefix of the path).
pub fn fs_type(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    fs_type_in(&mounts, path)
}

fn fs_type_in(mounts: &str, path: &Path) -> Option<String> {
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = unescape_mount(fields.next()?);
            let fs = fields.next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), fs.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
}

/// `/proc/mounts` writes space, tab, newline and backslash as octal escapes.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && let Some(code) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Starts watching `root` with `backend`, sending events to `tx`: a watch
/// on every folder the patterns do not exclude (see [`WatchGuard`]).
///
/// # Errors
/// [`EngineError::Watch`] when the watch cannot be set up; for the inotify
/// watch limit the message says which sysctl to raise.
pub fn start(
    root: &Path,
    backend: Backend,
    tx: SyncSender<FsEvent>,
    rescans: Arc<RescanRequests>,
    patterns: &Patterns,
) -> Result<WatchGuard, EngineError> {
    let Backend::Native = backend else {
        // Polling is driven by the enqueuer's timer: nothing to start here.
        return Ok(WatchGuard {
            watcher: None,
            backend,
            watched: BTreeMap::new(),
        });
    };
    let handler = move |result: notify::Result<notify::Event>| handle(result, &tx, &rescans);
    let config = notify::Config::default().with_follow_symlinks(false);
    let watcher =
        notify::RecommendedWatcher::new(handler, config).map_err(|e| watch_error(root, e))?;
    let mut guard = WatchGuard {
        watcher: Some(Box::new(watcher)),
        backend,
        watched: BTreeMap::new(),
    };
    guard
        .sync(root, patterns, true)
        .map_err(|e| watch_error(root, e))?;
    if !guard.watched.contains_key(root) {
        return Err(EngineError::Watch {
            root: root.to_path_buf(),
            message: "the root folder cannot be watched".into(),
        });
    }
    tracing::info!(
        root = %root.display(),
        folders = guard.watched_folders(),
        "native watches set (ignored folders have none)"
    );
    Ok(guard)
}

fn watch_error(root: &Path, e: notify::Error) -> EngineError {
    let advice = match e.kind {
        notify::ErrorKind::MaxFilesWatch => {
            " (the inotify watch limit is reached: raise it with `sysctl fs.inotify.max_user_watches=524288`, or run with --poll)"
        }
        _ => "",
    };
    EngineError::Watch {
        root: root.to_path_buf(),
        message: format!("{e}{advice}"),
    }
}

/// The notify callback: classify, `try_send`, never block.
fn handle(
    result: notify::Result<notify::Event>,
    tx: &SyncSender<FsEvent>,
    rescans: &RescanRequests,
) {
    let event = match result {
        Ok(event) => event,
        Err(e) => {
            if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
                tracing::warn!(
                    "inotify watch limit reached: changes in new folders are found by rescans only; \
                     raise it with `sysctl fs.inotify.max_user_watches=524288`"
                );
            } else {
                tracing::warn!(error = %e, "watcher error; rescanning");
            }
            match e.paths.first() {
                Some(p) => rescans.mark_lost(Some(p)),
                None => rescans.mark_lost(None),
            }
            return;
        }
    };
    // The pathless rescan flag comes first: an overflow carries no path.
    if event.need_rescan() {
        rescans.mark_lost(event.paths.first().map(PathBuf::as_path));
        return;
    }
    for fs_event in classify(&event) {
        let scope = match &fs_event {
            FsEvent::Renamed { to, .. } => to.parent().map(Path::to_path_buf),
            FsEvent::Changed(p)
            | FsEvent::DirCreated(p)
            | FsEvent::Removed(p)
            | FsEvent::RenamedFrom(p)
            | FsEvent::RenamedTo(p) => p.parent().map(Path::to_path_buf),
            FsEvent::Nudge => None,
        };
        match tx.try_send(fs_event) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => rescans.mark_lost(scope.as_deref()),
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Maps one notify event to ours. Reads (`Access(Open)`, `Access(Close(Read))`)
/// map to nothing: the workers' own reads must not feed back.
pub fn classify(event: &notify::Event) -> Vec<FsEvent> {
    let paths = &event.paths;
    let each = |f: fn(PathBuf) -> FsEvent| paths.iter().cloned().map(f).collect();
    match event.kind {
        EventKind::Create(CreateKind::Folder) => each(FsEvent::DirCreated),
        EventKind::Create(_) => each(FsEvent::Changed),
        EventKind::Remove(
            RemoveKind::Folder | RemoveKind::File | RemoveKind::Any | RemoveKind::Other,
        ) => each(FsEvent::Removed),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if paths.len() == 2 => {
            vec![FsEvent::Renamed {
                from: paths[0].clone(),
                to: paths[1].clone(),
            }]
        }
        // inotify sends From, To, then Both for a paired rename; Both carries
        // the pairing, so From and To are only used when unpaired. A From
        // without a cookie is a watched folder's own IN_MOVE_SELF: its
        // parent's watch reports the same rename with one (and the root's
        // own disappearance is noticed by the enqueuer).
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) if event.tracker().is_none() => {
            Vec::new()
        }
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) => each(FsEvent::RenamedFrom),
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => each(FsEvent::RenamedTo),
        EventKind::Modify(ModifyKind::Name(_)) => each(FsEvent::Changed),
        EventKind::Modify(_) => each(FsEvent::Changed),
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => each(FsEvent::Changed),
        EventKind::Access(_) => Vec::new(),
        EventKind::Any | EventKind::Other => each(FsEvent::Changed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table_lookup_takes_the_longest_prefix_and_unescapes() {
        let mounts = "/dev/vda / ext4 rw 0 0\n\
                      server:/export /mnt/notes nfs4 rw 0 0\n\
                      C:\\134 /mnt/c 9p rw 0 0\n\
                      fuse /home/me/My\\040Drive fuse.rclone rw 0 0\n";
        assert_eq!(
            fs_type_in(mounts, Path::new("/home/me/notes")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            fs_type_in(mounts, Path::new("/mnt/notes/a")).as_deref(),
            Some("nfs4")
        );
        assert_eq!(
            fs_type_in(mounts, Path::new("/mnt/c/Users")).as_deref(),
            Some("9p")
        );
        assert_eq!(
            fs_type_in(mounts, Path::new("/home/me/My Drive/x")).as_deref(),
            Some("fuse.rclone")
        );
        // A path under /mnt that is not a mount point is on the root fs: the
        // decision is by type, never by a /mnt/ prefix.
        assert_eq!(
            fs_type_in(mounts, Path::new("/mnt/other")).as_deref(),
            Some("ext4")
        );
    }

    #[test]
    fn network_fuse_and_wsl_file_systems_need_polling() {
        for fs in [
            "nfs",
            "nfs4",
            "cifs",
            "smb3",
            "9p",
            "drvfs",
            "fuse",
            "fuse.sshfs",
        ] {
            assert!(needs_polling(fs), "{fs}");
        }
        for fs in ["ext4", "xfs", "btrfs", "tmpfs", "overlay", "zfs"] {
            assert!(!needs_polling(fs), "{fs}");
        }
    }

    #[test]
    fn reads_are_not_changes() {
        let open = notify::Event::new(EventKind::Access(AccessKind::Open(AccessMode::Any)))
            .add_path(PathBuf::from("/r/a.md"));
        assert!(classify(&open).is_empty());
        let close_read = notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Read)))
            .add_path(PathBuf::from("/r/a.md"));
        assert!(classify(&close_read).is_empty());
        let close_write =
            notify::Event::new(EventKind::Access(AccessKind::Close(AccessMode::Write)))
                .add_path(PathBuf::from("/r/a.md"));
        assert_eq!(
            classify(&close_write),
            vec![FsEvent::Changed(PathBuf::from("/r/a.md"))]
        );
    }

    #[test]
    fn a_folder_moving_itself_is_left_to_its_parent_s_rename_event() {
        let name = |mode| EventKind::Modify(ModifyKind::Name(mode));
        let move_self = notify::Event::new(name(RenameMode::From)).add_path(PathBuf::from("/r/d"));
        assert!(classify(&move_self).is_empty());
        let moved_from = notify::Event::new(name(RenameMode::From))
            .set_tracker(7)
            .add_path(PathBuf::from("/r/d"));
        assert_eq!(
            classify(&moved_from),
            vec![FsEvent::RenamedFrom(PathBuf::from("/r/d"))]
        );
        let moved_to = notify::Event::new(name(RenameMode::To))
            .set_tracker(7)
            .add_path(PathBuf::from("/r/e"));
        assert_eq!(
            classify(&moved_to),
            vec![FsEvent::RenamedTo(PathBuf::from("/r/e"))]
        );
    }

    #[test]
    fn sync_watches_every_folder_but_ignored_ones_and_follows_pattern_changes() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = std::fs::canonicalize(dir.path()).expect("canonical");
        for d in [
            "notes/a/b",
            "node_modules/x/y",
            ".git/objects/ab",
            "drafts/d",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink(root.join("notes"), root.join("link")).expect("symlink");
        let ignore = |extra: &str| {
            Patterns::from_text(&root, "notes/\n", &format!("node_modules/\n.git/\n{extra}"))
                .expect("patterns")
        };
        let (tx, _rx) = std::sync::mpsc::sync_channel(1024);
        let mut guard = start(
            &root,
            Backend::Native,
            tx,
            Arc::default(),
            &ignore("drafts/\n"),
        )
        .expect("start");
        let watched = |g: &WatchGuard| -> Vec<String> {
            g.watched
                .keys()
                .map(|p| {
                    p.strip_prefix(&root)
                        .expect("under the root")
                        .display()
                        .to_string()
                })
                .collect()
        };
        // The root, notes/a/b, and .git alone (for its locks); not the link.
        assert_eq!(
            watched(&guard),
            ["", ".git", "notes", "notes/a", "notes/a/b"]
        );
        // Un-ignoring drafts/ watches it.
        let added = guard.sync(&root, &ignore(""), false).expect("sync");
        assert_eq!(added, 2);
        assert!(watched(&guard).contains(&"drafts/d".to_owned()));
        // Ignoring notes/a drops its watches; a gone folder is forgotten.
        std::fs::remove_dir_all(root.join("drafts")).expect("rm");
        guard
            .sync(&root, &ignore("notes/a/\n"), false)
            .expect("sync");
        assert_eq!(watched(&guard), ["", ".git", "notes"]);
        // A folder replaced at the same path is watched anew.
        std::fs::create_dir_all(root.join("notes/new/deeper")).expect("mkdir");
        assert_eq!(
            guard
                .sync(&root.join("notes/new"), &ignore(""), true)
                .expect("sync"),
            2
        );
        guard.forget(&root.join("notes/new"));
        assert_eq!(watched(&guard), ["", ".git", "notes"]);
        assert_eq!(guard.watched_folders(), 3);
    }

    #[test]
    fn a_full_channel_turns_into_a_rescan_request_not_a_lost_change() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let rescans = RescanRequests::default();
        for name in ["a.md", "b.md", "c.md"] {
            let ev = notify::Event::new(EventKind::Create(CreateKind::File))
                .add_path(PathBuf::from("/r/notes").join(name));
            handle(Ok(ev), &tx, &rescans);
        }
        assert_eq!(
            rx.try_recv(),
            Ok(FsEvent::Changed(PathBuf::from("/r/notes/a.md")))
        );
        assert_eq!(rescans.take(), Some(Some(vec![PathBuf::from("/r/notes")])));
        assert_eq!(rescans.take(), None);
    }

    #[test]
    fn an_overflow_flag_without_a_path_asks_for_a_full_rescan() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(8);
        let rescans = RescanRequests::default();
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        handle(Ok(overflow), &tx, &rescans);
        assert_eq!(rescans.take(), Some(None));
    }
}
