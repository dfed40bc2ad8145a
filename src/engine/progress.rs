//! Live counters of what the engine has committed.
//!
//! The store bumps them after each committed batch (never before: a counter
//! never runs ahead of the database); the CLI's progress bar and summary, and
//! later the api's status and subscribe streams, read them. Lock-free atomics,
//! shared through an `Arc`; no database access.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Counts of what one batch wrote: the store fills one per commit and
/// [`Progress::record`] adds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Queue rows finished (done or failed).
    pub rows: u64,
    /// `file_versions` rows written.
    pub versions: u64,
    /// `content_diffs` rows written.
    pub diffs: u64,
    /// `file_changes` rows written.
    pub changes: u64,
    /// Rows that are now `failed`.
    pub failed: u64,
    /// Rows put back for another attempt (error or stale state).
    pub retried: u64,
}

/// A function called after every committed batch (the api's wake-up).
pub type CommitHook = Box<dyn Fn(&ProgressSnapshot) + Send + Sync>;

/// Committed-work counters since the engine started.
#[derive(Default)]
pub struct Progress {
    rows: AtomicU64,
    versions: AtomicU64,
    diffs: AtomicU64,
    changes: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    /// Id of the newest committed `file_changes` row (0 before the first).
    last_change_id: AtomicI64,
    /// The longest this engine held the write lock in one transaction, µs.
    longest_write_us: AtomicU64,
    /// Called after each committed batch, so waiters need not poll.
    hooks: Mutex<Vec<CommitHook>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgressSnapshot {
    /// Queue rows finished (done or failed).
    pub rows: u64,
    /// Versions written.
    pub versions: u64,
    /// Diffs written.
    pub diffs: u64,
    /// Changes recorded.
    pub changes: u64,
    /// Rows that ended `failed`.
    pub failed: u64,
    /// Attempts that will be retried.
    pub retried: u64,
    /// Newest committed `file_changes` id.
    pub last_change_id: i64,
    /// Longest write transaction (write lock held) so far, in microseconds.
    pub longest_write_us: u64,
}

impl Progress {
    /// Adds a committed batch.
    pub fn record(&self, stats: &BatchStats, last_change_id: Option<i64>) {
        self.rows.fetch_add(stats.rows, Ordering::Relaxed);
        self.versions.fetch_add(stats.versions, Ordering::Relaxed);
        self.diffs.fetch_add(stats.diffs, Ordering::Relaxed);
        self.changes.fetch_add(stats.changes, Ordering::Relaxed);
        self.failed.fetch_add(stats.failed, Ordering::Relaxed);
        self.retried.fetch_add(stats.retried, Ordering::Relaxed);
        if let Some(id) = last_change_id {
            self.last_change_id.fetch_max(id, Ordering::Release);
        }
        let snapshot = self.snapshot();
        let hooks = match self.hooks.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for hook in hooks.iter() {
            hook(&snapshot);
        }
    }

    /// Calls every hook without a commit: the rows under the api changed
    /// another way (`serve` reopened a replaced replica file).
    pub fn notify(&self) {
        self.record(&BatchStats::default(), None);
    }

    /// Calls `hook` after every committed batch from now on. Hooks must be
    /// quick and must not block: they run on the writer thread.
    pub fn on_commit(&self, hook: CommitHook) {
        let mut hooks = match self.hooks.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        hooks.push(hook);
    }

    /// Notes how long one write transaction held the lock.
    pub fn record_write(&self, held: std::time::Duration) {
        let us = u64::try_from(held.as_micros()).unwrap_or(u64::MAX);
        self.longest_write_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            rows: self.rows.load(Ordering::Relaxed),
            versions: self.versions.load(Ordering::Relaxed),
            diffs: self.diffs.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            last_change_id: self.last_change_id.load(Ordering::Acquire),
            longest_write_us: self.longest_write_us.load(Ordering::Relaxed),
        }
    }
}

/// Wakes an idle processing loop as soon as a producer in this process has
/// committed new queue rows, instead of waiting for the next poll.
#[derive(Debug, Default)]
pub struct Doorbell {
    rung: Mutex<bool>,
    bell: Condvar,
}

impl Doorbell {
    /// Signals that new work is in the queue.
    pub fn ring(&self) {
        let mut rung = match self.rung.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *rung = true;
        self.bell.notify_all();
    }

    /// Waits until rung or `timeout` passed; returns true when rung. Resets it.
    pub fn wait(&self, timeout: Duration) -> bool {
        let rung = match self.rung.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (mut rung, _) = match self.bell.wait_timeout_while(rung, timeout, |r| !*r) {
            Ok(result) => result,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *rung, false)
    }
}
