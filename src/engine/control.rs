//! The watcher's control surface: what the rest of the process (the api)
//! asks of it, and the barriers it answers.
//!
//! [`Control`] messages arrive on a channel the enqueuer drains at every loop
//! turn: rescan a folder, pause or resume live recording, a new debounce,
//! reload the patterns (the api's own live in `sync_meta`), and the `Sync`
//! barrier. [`Barriers`] keeps the barriers in flight: each writes a cookie
//! file in the root; when the watcher reports the cookie, every event made
//! before it has been read, so the enqueuer flushes what it holds (not
//! while paused, nor what a VCS lock holds back) and answers. A barrier
//! whose cookie event does not come within [`BARRIER_COOKIE_WAIT`] (events
//! lost) is answered after a rescan instead.
//! Writes and removes only its cookie files; no SQL, no clock of its own.
//!
//! Only the messages and the barriers' bookkeeping live here. The reactions
//! (what a pause, a new debounce, a reload or a barrier does to the held
//! changes) are the enqueuer's, in [`super::enqueue`] (`on_control`,
//! `barrier_seen`, `rescan_for_barrier`), because each changes the
//! enqueuer's own state: its debouncer, rescan requests, VCS hold, patterns
//! and database connection.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::patterns::COOKIE_PREFIX;

/// How long a barrier waits for its cookie's event before it rescans instead.
pub const BARRIER_COOKIE_WAIT: Duration = Duration::from_secs(5);

/// The answer to a barrier (a tokio channel, so an async caller awaits it
/// without holding a thread).
pub type Reply = tokio::sync::oneshot::Sender<()>;

/// Requests to the enqueuer from the rest of the process (the api).
#[derive(Debug)]
pub enum Control {
    /// Rescan a folder or file under the root.
    Rescan(PathBuf),
    /// Pause (true) or resume (false) recording live events; no rescan or
    /// poll runs while paused. Resuming rescans the root, so nothing
    /// changed meanwhile is missed.
    Pause(bool),
    /// A new quiet time per path.
    SetDebounce(Duration),
    /// Reload the patterns (files and api patterns) and rescan.
    ReloadPatterns,
    /// Answer once every change made before this request is in the queue.
    Barrier(Reply),
}

/// A barrier waiting for its cookie's event.
#[derive(Debug)]
struct Waiting {
    cookie: PathBuf,
    deadline: Instant,
    reply: Reply,
}

/// The barriers in flight, each with its cookie file.
#[derive(Debug, Default)]
pub struct Barriers {
    waiting: Vec<Waiting>,
    /// Counter for unique cookie names.
    seq: u64,
}

impl Barriers {
    /// Writes a new cookie file in `root` and holds `reply` until the
    /// cookie's event is [`Barriers::seen`] or `now` + [`BARRIER_COOKIE_WAIT`].
    ///
    /// # Errors
    /// The cookie cannot be written; `reply` is handed back with the error.
    pub fn arm(
        &mut self,
        root: &Path,
        reply: Reply,
        now: Instant,
    ) -> Result<(), (std::io::Error, Reply)> {
        self.seq += 1;
        let cookie = root.join(format!(
            "{COOKIE_PREFIX}barrier-{}-{}",
            std::process::id(),
            self.seq
        ));
        match std::fs::write(&cookie, b"obby-sync barrier\n") {
            Ok(()) => {
                self.waiting.push(Waiting {
                    cookie,
                    deadline: now + BARRIER_COOKIE_WAIT,
                    reply,
                });
                Ok(())
            }
            Err(e) => Err((e, reply)),
        }
    }

    /// When `path` is a waiting barrier's cookie: removes the cookie and
    /// returns the barrier's reply, for the caller to answer once it has
    /// flushed.
    pub fn seen(&mut self, path: &Path) -> Option<Reply> {
        let index = self.waiting.iter().position(|w| w.cookie == path)?;
        let waiting = self.waiting.swap_remove(index);
        let _ = std::fs::remove_file(&waiting.cookie);
        Some(waiting.reply)
    }

    /// Takes the barriers whose cookie event did not come by `now`, their
    /// cookies removed.
    pub fn take_late(&mut self, now: Instant) -> Vec<Reply> {
        let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.deadline <= now);
        self.waiting = waiting;
        late.into_iter()
            .map(|w| {
                let _ = std::fs::remove_file(&w.cookie);
                w.reply
            })
            .collect()
    }

    /// The earliest deadline of a waiting barrier.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.iter().map(|w| w.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(dir: &Path) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        found.sort();
        found
    }

    #[test]
    fn a_barrier_is_answered_when_its_cookie_is_seen_and_the_cookie_removed() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut b = Barriers::default();
        let t0 = Instant::now();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        b.arm(dir.path(), tx, t0).map_err(|(e, _)| e).expect("arm");
        let written = cookies(dir.path());
        assert_eq!(written.len(), 1);
        assert!(b.seen(&dir.path().join("other")).is_none());
        let reply = b.seen(&written[0]).expect("its cookie");
        assert!(cookies(dir.path()).is_empty(), "the cookie is removed");
        assert!(
            rx.try_recv().is_err(),
            "not answered before the caller does"
        );
        reply.send(()).expect("answer");
        assert_eq!(rx.try_recv(), Ok(()));
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn a_barrier_whose_cookie_event_never_comes_is_late_at_its_deadline() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut b = Barriers::default();
        let t0 = Instant::now();
        let (first, _rx1) = tokio::sync::oneshot::channel();
        let (second, _rx2) = tokio::sync::oneshot::channel();
        b.arm(dir.path(), first, t0)
            .map_err(|(e, _)| e)
            .expect("arm");
        let later = t0 + Duration::from_secs(1);
        b.arm(dir.path(), second, later)
            .map_err(|(e, _)| e)
            .expect("arm");
        assert_eq!(cookies(dir.path()).len(), 2, "one cookie each");
        assert_eq!(b.next_deadline(), Some(t0 + BARRIER_COOKIE_WAIT));
        assert!(
            b.take_late(t0 + BARRIER_COOKIE_WAIT - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(b.take_late(t0 + BARRIER_COOKIE_WAIT).len(), 1);
        assert_eq!(cookies(dir.path()).len(), 1);
        assert_eq!(b.next_deadline(), Some(later + BARRIER_COOKIE_WAIT));
    }

    #[test]
    fn a_cookie_that_cannot_be_written_hands_the_reply_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut b = Barriers::default();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let missing = dir.path().join("gone");
        let (_, reply) = b.arm(&missing, tx, Instant::now()).expect_err("no folder");
        reply.send(()).expect("answer");
        assert_eq!(rx.try_recv(), Ok(()));
        assert_eq!(b.next_deadline(), None);
    }
}
