//! The VCS lock hold: while git or Mercurial works in the root, changes wait.
//!
//! Input: the lock files the enqueuer sees in events ([`is_vcs_lock`]:
//! `.git/index.lock`, `.git/HEAD.lock`, `.hg/wlock`) or finds in the root's
//! own repository ([`VcsHold::note_root`]), the time, and two look-ups on
//! those files behind [`LockFiles`] ([`Disk`] in the engine, a fake in the
//! tests). Output: a [`Check`] each time the enqueuer looks: `Held` while a
//! noted lock exists (the enqueuer then holds every change and rescan, so a
//! checkout becomes one burst, not thousands of half-states); `Released`
//! when the last one is gone; `Expired` when a hold outlasted its limit (a
//! crashed git leaves its lock). An expired lock is stale: ignored, by its
//! identity (inode and mtime), until it changes or goes and comes back, so
//! it does not start a new hold every time it is seen. [`VcsHold::end`]
//! tells the enqueuer a hold ended, so it releases everything held at once.
//! Pure but for the two look-ups: the time is passed in; no SQL, no writes.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest a VCS lock may hold events back (a crashed git leaves its lock).
pub const MAX_VCS_HOLD: Duration = Duration::from_secs(120);

/// How often noted locks are looked at while one may exist: a lock's removal
/// sends no event to a poller, nor when its folder is ignored and unwatched.
pub const LOCK_RECHECK: Duration = Duration::from_millis(50);

/// True for the lock files of a VCS operation in progress.
pub fn is_vcs_lock(path: &Path) -> bool {
    let parent = path.parent().and_then(Path::file_name);
    let name = path.file_name();
    matches!(
        (
            parent.and_then(|p| p.to_str()),
            name.and_then(|n| n.to_str())
        ),
        (Some(".git"), Some("index.lock" | "HEAD.lock")) | (Some(".hg"), Some("wlock"))
    )
}

/// What tells a stale lock from a new one at the same path: a new VCS run
/// makes a new file (a new inode), and one writing to it changes its mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockIdentity {
    /// Inode number.
    pub ino: u64,
    /// Modification time, whole seconds since the epoch.
    pub mtime_secs: i64,
    /// Modification time, nanoseconds within the second.
    pub mtime_nsecs: i64,
}

/// The look-ups a hold makes on lock files: the seam its tests fake.
pub trait LockFiles {
    /// True when `lock` itself exists, a symlink too whatever it points
    /// at: Mercurial's `.hg/wlock` is a symlink to `host:pid`, which names
    /// no file.
    fn exists(&self, lock: &Path) -> bool;
    /// The identity of `lock` itself (a symlink is not followed), `None`
    /// when it cannot be read.
    fn identity(&self, lock: &Path) -> Option<LockIdentity>;
}

/// The lock files on disk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disk;

impl LockFiles for Disk {
    fn exists(&self, lock: &Path) -> bool {
        std::fs::symlink_metadata(lock).is_ok()
    }

    fn identity(&self, lock: &Path) -> Option<LockIdentity> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(lock).ok()?;
        Some(LockIdentity {
            ino: meta.ino(),
            mtime_secs: meta.mtime(),
            mtime_nsecs: meta.mtime_nsec(),
        })
    }
}

/// What a look at the noted locks found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Nothing holds changes: no lock noted, or the ones noted went before
    /// a hold started.
    Free,
    /// A noted lock exists: hold every change and rescan.
    Held,
    /// The last lock of a hold is gone.
    Released,
    /// The hold lasted longer than its limit: these locks are stale from now
    /// on, and changes are no longer held for them.
    Expired(Vec<PathBuf>),
}

/// The VCS locks seen and the hold they cause.
#[derive(Debug)]
pub struct VcsHold {
    /// Longest a hold lasts (`--vcs-hold-secs`).
    max_hold: Duration,
    /// Locks noted and not yet seen gone; changes are held while one exists.
    locks: HashSet<PathBuf>,
    /// When the current hold started; cleared by [`VcsHold::end`], so a
    /// hold that ended is reported once.
    since: Option<Instant>,
    /// Locks that outlived a hold, by identity: each is ignored until it
    /// changes or goes, so it does not start a new hold every time it is
    /// seen again.
    stale: HashMap<PathBuf, LockIdentity>,
}

impl VcsHold {
    /// No lock seen yet; a hold lasts at most `max_hold`.
    pub fn new(max_hold: Duration) -> Self {
        VcsHold {
            max_hold,
            locks: HashSet::new(),
            since: None,
            stale: HashMap::new(),
        }
    }

    /// Notes a lock file seen (its event, or found), unless it is a stale
    /// lock unchanged. Whether it still exists is looked at by
    /// [`VcsHold::check`].
    pub fn note(&mut self, lock: PathBuf, files: &impl LockFiles) {
        let stale = self
            .stale
            .get(&lock)
            .is_some_and(|id| files.identity(&lock).as_ref() == Some(id));
        if !stale {
            self.locks.insert(lock);
        }
    }

    /// Notes the lock of the root's own repository if it exists: it is
    /// looked at directly, since a poller gets no events, and a lock made
    /// right after its folder may beat the folder's watch.
    pub fn note_root(&mut self, root: &Path, files: &impl LockFiles) {
        let lock = root.join(".git").join("index.lock");
        if files.exists(&lock) {
            self.note(lock, files);
        }
    }

    /// When to look again: soon while a lock is noted, else never.
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        (!self.locks.is_empty()).then_some(now + LOCK_RECHECK)
    }

    /// Looks at the noted locks at `now`: a lock gone is forgotten, a stale
    /// lock that changed or went is a lock like any other again, and the
    /// first check that finds a lock starts the hold.
    pub fn check(&mut self, now: Instant, files: &impl LockFiles) -> Check {
        if self.locks.is_empty() {
            return Check::Free;
        }
        self.stale
            .retain(|lock, id| files.identity(lock).as_ref() == Some(id));
        let stale = &self.stale;
        self.locks
            .retain(|lock| files.exists(lock) && !stale.contains_key(lock));
        if self.locks.is_empty() {
            return if self.since.is_some() {
                Check::Released
            } else {
                Check::Free
            };
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) > self.max_hold {
            let mut expired: Vec<PathBuf> = self.locks.drain().collect();
            expired.sort();
            for lock in &expired {
                if let Some(id) = files.identity(lock) {
                    self.stale.insert(lock.clone(), id);
                }
            }
            return Check::Expired(expired);
        }
        Check::Held
    }

    /// Ends the hold: true when one started since the last call (whether
    /// its locks are gone, expired, or still there because the engine
    /// stops), so the caller releases everything held at once, due or not.
    /// Locks still noted start a new hold at the next check.
    pub fn end(&mut self) -> bool {
        self.since.take().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lock files in memory: each creation a new inode, each touch a new
    /// mtime.
    #[derive(Default)]
    struct FakeLocks {
        files: HashMap<PathBuf, LockIdentity>,
        inodes: u64,
    }

    impl FakeLocks {
        fn create(&mut self, lock: &Path) {
            self.inodes += 1;
            let id = LockIdentity {
                ino: self.inodes,
                mtime_secs: 1_000,
                mtime_nsecs: 0,
            };
            self.files.insert(lock.to_path_buf(), id);
        }

        fn touch(&mut self, lock: &Path) {
            let id = self.files.get_mut(lock).expect("exists");
            id.mtime_nsecs += 1;
        }

        fn remove(&mut self, lock: &Path) {
            self.files.remove(lock);
        }
    }

    impl LockFiles for FakeLocks {
        fn exists(&self, lock: &Path) -> bool {
            self.files.contains_key(lock)
        }

        fn identity(&self, lock: &Path) -> Option<LockIdentity> {
            self.files.get(lock).copied()
        }
    }

    const HOLD: Duration = Duration::from_secs(10);
    const MS: Duration = Duration::from_millis(1);

    fn lock() -> PathBuf {
        PathBuf::from("/r/.git/index.lock")
    }

    /// A lock created and noted, its hold started at `t0`.
    fn held(t0: Instant) -> (VcsHold, FakeLocks) {
        let mut files = FakeLocks::default();
        let mut hold = VcsHold::new(HOLD);
        files.create(&lock());
        hold.note(lock(), &files);
        assert_eq!(hold.check(t0, &files), Check::Held);
        (hold, files)
    }

    /// `hold` past its limit at `at`: the lock is stale from then on.
    fn expire(hold: &mut VcsHold, files: &FakeLocks, at: Instant) {
        assert_eq!(hold.check(at, files), Check::Expired(vec![lock()]));
        assert!(hold.end(), "the expired hold releases what it held");
    }

    #[test]
    fn a_lock_holds_changes_while_it_exists() {
        let t0 = Instant::now();
        let (mut hold, files) = held(t0);
        assert_eq!(hold.check(t0 + HOLD, &files), Check::Held);
        assert_eq!(hold.next_check(t0), Some(t0 + LOCK_RECHECK));
    }

    #[test]
    fn a_lock_gone_releases_the_hold_once() {
        let t0 = Instant::now();
        let (mut hold, mut files) = held(t0);
        files.remove(&lock());
        assert_eq!(hold.check(t0 + MS, &files), Check::Released);
        assert!(hold.end());
        assert_eq!(hold.check(t0 + MS * 2, &files), Check::Free);
        assert!(!hold.end());
        assert_eq!(hold.next_check(t0), None);
    }

    #[test]
    fn a_lock_gone_before_it_was_checked_holds_nothing() {
        let mut files = FakeLocks::default();
        let mut hold = VcsHold::new(HOLD);
        files.create(&lock());
        hold.note(lock(), &files);
        files.remove(&lock());
        assert_eq!(hold.check(Instant::now(), &files), Check::Free);
        assert!(!hold.end());
    }

    #[test]
    fn the_root_lock_is_found_without_an_event() {
        let mut files = FakeLocks::default();
        let mut hold = VcsHold::new(HOLD);
        hold.note_root(Path::new("/r"), &files);
        assert_eq!(hold.check(Instant::now(), &files), Check::Free);
        files.create(&lock());
        hold.note_root(Path::new("/r"), &files);
        assert_eq!(hold.check(Instant::now(), &files), Check::Held);
    }

    #[test]
    fn a_hold_ended_while_its_lock_exists_starts_again_at_the_next_check() {
        // What stopping does: everything is released, the lock stays noted.
        let t0 = Instant::now();
        let (mut hold, files) = held(t0);
        assert!(hold.end());
        let t1 = t0 + HOLD;
        assert_eq!(hold.check(t1, &files), Check::Held);
        assert_eq!(hold.check(t1 + HOLD, &files), Check::Held, "timed from t1");
    }

    #[test]
    fn a_lock_held_over_the_limit_is_ignored_until_it_changes() {
        let t0 = Instant::now();
        let (mut hold, files) = held(t0);
        assert_eq!(hold.check(t0 + HOLD, &files), Check::Held, "not yet over");
        expire(&mut hold, &files, t0 + HOLD + MS);
        assert_eq!(hold.next_check(t0), None);
        // Seen again, unchanged (an event in its folder, the root's look).
        hold.note(lock(), &files);
        hold.note_root(Path::new("/r"), &files);
        assert_eq!(hold.next_check(t0), None);
        assert_eq!(hold.check(t0 + HOLD * 3, &files), Check::Free);
        assert!(!hold.end());
    }

    #[test]
    fn a_stale_lock_that_changes_holds_again() {
        let t0 = Instant::now();
        let (mut hold, mut files) = held(t0);
        expire(&mut hold, &files, t0 + HOLD + MS);
        files.touch(&lock());
        hold.note(lock(), &files);
        let t1 = t0 + HOLD * 5;
        assert_eq!(hold.check(t1, &files), Check::Held);
        assert_eq!(hold.check(t1 + HOLD, &files), Check::Held, "a new hold");
        files.remove(&lock());
        assert_eq!(hold.check(t1 + HOLD + MS, &files), Check::Released);
    }

    #[test]
    fn a_stale_lock_removed_and_made_again_holds_again() {
        let t0 = Instant::now();
        let (mut hold, mut files) = held(t0);
        expire(&mut hold, &files, t0 + HOLD + MS);
        // A new git run: a new file, with the same mtime as the old one.
        files.remove(&lock());
        files.create(&lock());
        hold.note(lock(), &files);
        assert_eq!(hold.check(t0 + HOLD * 5, &files), Check::Held);
        // And when that one outlives the limit too, it is stale in turn.
        expire(&mut hold, &files, t0 + HOLD * 6 + MS);
        hold.note(lock(), &files);
        assert_eq!(hold.check(t0 + HOLD * 7, &files), Check::Free);
    }

    /// Mercurial's lock is a symlink whose target (`host:pid`) names no
    /// file: following it found no lock, so an `hg update` held nothing.
    #[test]
    fn a_dangling_symlink_lock_exists_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let hg = dir.path().join(".hg");
        std::fs::create_dir(&hg).expect(".hg");
        let wlock = hg.join("wlock");
        std::os::unix::fs::symlink("host.example:4242", &wlock).expect("symlink");
        assert!(Disk.exists(&wlock));
        assert!(Disk.identity(&wlock).is_some());
        std::fs::remove_file(&wlock).expect("unlock");
        assert!(!Disk.exists(&wlock));
    }

    #[test]
    fn vcs_locks_are_recognized() {
        assert!(is_vcs_lock(Path::new("/r/.git/index.lock")));
        assert!(is_vcs_lock(Path::new("/r/.git/HEAD.lock")));
        assert!(is_vcs_lock(Path::new("/r/sub/repo/.git/index.lock")));
        assert!(is_vcs_lock(Path::new("/r/.hg/wlock")));
        assert!(!is_vcs_lock(Path::new("/r/notes/index.lock")));
    }
}
