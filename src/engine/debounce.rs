//! Per-path debouncing and rename pairing, pure: no I/O, no clock of its own.
//!
//! Every method that needs the time takes it (`now`), so the enqueuer passes
//! [`std::time::Instant::now`] and the tests pass a fake clock (offsets from
//! one instant). A [`Debouncer`] holds one entry per path: the change kind,
//! the origin of a move, and the first and last time the path was seen. A
//! path is due once it has been quiet for `debounce`, or `max_wait` after its
//! first event, whichever comes first (a file written continuously still
//! gets a row). Renames fold into moves that keep their origin
//! ([`Debouncer::observe_move`]). Holding changes back while a VCS lock
//! exists is the caller's decision: it stops taking due paths and later
//! takes them all at once (`take_due(now, true)`).
//!
//! Beside the map of held paths, an ordered map keyed by (due time, sequence
//! number) holds every path once, so an event costs one hash lookup and at
//! most two tree operations, and the next due time is the tree's first key:
//! no loop walks every held path, with 200,000 of them as with ten.
//! [`Deadlines`] is the same index for keys that only have a due time (the
//! enqueuer's unpaired rename halves and scheduled folder rescans).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::ChangeKind;

/// A change released by [`Debouncer::take_due`]: the path, its kind, and the
/// path it moved from (a move).
pub type Release = (PathBuf, ChangeKind, Option<PathBuf>);

/// Keys with a due time each, ordered by it: set, remove and the earliest
/// due key in O(log n).
#[derive(Debug)]
pub struct Deadlines<K> {
    due: HashMap<K, Instant>,
    order: BTreeSet<(Instant, K)>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            due: HashMap::new(),
            order: BTreeSet::new(),
        }
    }
}

impl<K: Hash + Eq + Ord + Clone> Deadlines<K> {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.due.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.due.is_empty()
    }

    /// Makes `key` due at `at`, replacing its previous due time.
    pub fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.due.insert(key.clone(), at) {
            self.order.remove(&(old, key.clone()));
        }
        self.order.insert((at, key));
    }

    /// Forgets `key`; its due time, if it was held.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<Instant>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (key, at) = self.due.remove_entry(key)?;
        self.order.remove(&(at, key));
        Some(at)
    }

    /// True when `key` is held.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.due.contains_key(key)
    }

    /// The earliest due time.
    pub fn next(&self) -> Option<Instant> {
        self.order.first().map(|(at, _)| *at)
    }

    /// Takes every key due at `now` (every key with `all`), earliest first.
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<K> {
        let mut out = Vec::new();
        while let Some((at, _)) = self.order.first() {
            if !all && *at > now {
                break;
            }
            if let Some((_, key)) = self.order.pop_first() {
                self.due.remove(&key);
                out.push(key);
            }
        }
        out
    }

    /// Forgets every key.
    pub fn clear(&mut self) {
        self.due.clear();
        self.order.clear();
    }
}

/// What is held for one path.
#[derive(Debug, Clone)]
struct Held {
    kind: ChangeKind,
    old_path: Option<PathBuf>,
    first: Instant,
    last: Instant,
    /// Its key in `order`: due time, then a sequence number (unique).
    slot: (Instant, u64),
}

/// Per-path debouncing with a starvation bound and rename pairing.
#[derive(Debug)]
pub struct Debouncer {
    debounce: Duration,
    max_wait: Duration,
    held: HashMap<Arc<Path>, Held>,
    /// Every held path by due time (the same `Arc` as the map's key).
    order: BTreeMap<(Instant, u64), Arc<Path>>,
    /// The next sequence number of a slot.
    seq: u64,
}

impl Debouncer {
    /// A debouncer with the given quiet time and starvation bound (at least
    /// the quiet time).
    pub fn new(debounce: Duration, max_wait: Duration) -> Self {
        Debouncer {
            debounce,
            max_wait: max_wait.max(debounce),
            held: HashMap::new(),
            order: BTreeMap::new(),
            seq: 0,
        }
    }

    /// A new quiet time and starvation bound; what is held is due by them.
    pub fn set_timing(&mut self, debounce: Duration, max_wait: Duration) {
        self.debounce = debounce;
        self.max_wait = max_wait.max(debounce);
        let mut order = BTreeMap::new();
        for (path, h) in &mut self.held {
            h.slot.0 = (h.last + self.debounce).min(h.first + self.max_wait);
            order.insert(h.slot, path.clone());
        }
        self.order = order;
    }

    /// Paths held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Forgets everything (the caller rescans instead).
    pub fn clear(&mut self) {
        self.held.clear();
        self.order.clear();
    }

    fn slot(&mut self, first: Instant, last: Instant) -> (Instant, u64) {
        self.seq += 1;
        ((last + self.debounce).min(first + self.max_wait), self.seq)
    }

    /// Holds a path that is not held.
    fn insert(&mut self, path: Arc<Path>, mut held: Held) {
        held.slot = self.slot(held.first, held.last);
        self.order.insert(held.slot, path.clone());
        self.held.insert(path, held);
    }

    /// Stops holding `path`.
    fn release(&mut self, path: &Path) -> Option<Held> {
        let held = self.held.remove(path)?;
        self.order.remove(&held.slot);
        Some(held)
    }

    /// Records an event for `path`. A later event restarts the quiet time but
    /// not the `max_wait` clock; a pending move keeps its source.
    pub fn observe(&mut self, path: PathBuf, kind: ChangeKind, now: Instant) {
        let (debounce, max_wait) = (self.debounce, self.max_wait);
        if let Some(h) = self.held.get_mut(path.as_path()) {
            // Times may come out of order (a rescan passes file mtimes).
            h.last = h.last.max(now);
            h.first = h.first.min(now);
            if h.kind != ChangeKind::Moved {
                h.kind = kind;
            }
            let due = (h.last + debounce).min(h.first + max_wait);
            if due != h.slot.0 {
                let old = h.slot;
                h.slot.0 = due;
                if let Some(key) = self.order.remove(&old) {
                    self.order.insert(h.slot, key);
                }
            }
            return;
        }
        let held = Held {
            kind,
            old_path: None,
            first: now,
            last: now,
            slot: (now, 0),
        };
        self.insert(Arc::from(path), held);
    }

    /// Records a rename. The source's own held event is folded in (the move
    /// carries it), and a chain a → b → c within the window stays a → c.
    /// A rename onto a destination that is itself held as a move from `x`
    /// (an editor renames a note, then saves the new name atomically through
    /// a temp file; or a second note renamed onto the first's new name)
    /// keeps `x` as the origin, so that move is not lost, and holds the
    /// source's own origin as deleted, so its end is not lost either (for a
    /// temp file that was never recorded the worker finds nothing to end).
    pub fn observe_move(&mut self, from: PathBuf, to: PathBuf, now: Instant) {
        let source = self.release(&from);
        let origin = source
            .as_ref()
            .and_then(|h| h.old_path.clone())
            .unwrap_or(from);
        let first = source.map_or(now, |h| h.first);
        let target = self.release(&to);
        let first = target.as_ref().map_or(first, |h| h.first.min(first));
        let displaced = target
            .filter(|h| h.kind == ChangeKind::Moved)
            .and_then(|h| h.old_path)
            .filter(|x| *x != origin && *x != to);
        let origin = match displaced {
            Some(x) => {
                self.observe(origin, ChangeKind::Deleted, now);
                x
            }
            None => origin,
        };
        let held = Held {
            kind: ChangeKind::Moved,
            old_path: Some(origin),
            first,
            last: now,
            slot: (now, 0),
        };
        self.insert(Arc::from(to), held);
    }

    /// A folder renamed from `from` to `to`: what is held for a file under
    /// `from` (an edit made just before the rename, say) now belongs to the
    /// same file under `to`, as a move from its old path (or from that
    /// path's own origin), so the edit is not read as a deletion of the old
    /// path once due. Deletions held there stay: those files are gone.
    pub fn rename_folder(&mut self, from: &Path, to: &Path, now: Instant) {
        let under: Vec<Arc<Path>> = self
            .held
            .iter()
            .filter(|(path, held)| path.starts_with(from) && held.kind != ChangeKind::Deleted)
            .map(|(path, _)| path.clone())
            .collect();
        for path in under {
            let Ok(rest) = path.strip_prefix(from) else {
                continue;
            };
            let moved = to.join(rest);
            self.observe_move(path.to_path_buf(), moved, now);
        }
    }

    /// Records a move a rescan found: `from` is a file the database knows
    /// (live, now gone), so it is the origin whatever is held for it. A
    /// move held onto `from` (an atomic save that renamed a temp file over
    /// it, reported under the folder's old name) is not a chain to fold in,
    /// as [`Debouncer::observe_move`] would: its source is held as deleted
    /// (for a temp file the worker finds nothing to end), and `from` keeps
    /// its own history.
    pub fn observe_known_move(&mut self, from: PathBuf, to: PathBuf, now: Instant) {
        if let Some(held) = self.release(&from)
            && let Some(source) = held.old_path.filter(|x| *x != to)
        {
            self.observe(source, ChangeKind::Deleted, now);
        }
        self.observe_move(from, to, now);
    }

    /// When the next path becomes due, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.order.first_key_value().map(|((at, _), _)| *at)
    }

    /// Takes every path that is due at `now` (all of them with `all`), in
    /// path order.
    pub fn take_due(&mut self, now: Instant, all: bool) -> Vec<Release> {
        let mut out: Vec<Release> = Vec::new();
        while let Some(((at, _), _)) = self.order.first_key_value() {
            if !all && *at > now {
                break;
            }
            let Some((_, path)) = self.order.pop_first() else {
                break;
            };
            if let Some(h) = self.held.remove(&path) {
                out.push((path.to_path_buf(), h.kind, h.old_path));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_of_writes_is_one_change_once_quiet() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        for i in 0..10 {
            d.observe(p("/r/a.md"), ChangeKind::Modified, t0 + ms(i * 10));
        }
        assert!(
            d.take_due(t0 + ms(150), false).is_empty(),
            "still within the quiet time"
        );
        assert_eq!(d.next_due(), Some(t0 + ms(190)));
        let due = d.take_due(t0 + ms(190), false);
        assert_eq!(due, vec![(p("/r/a.md"), ChangeKind::Modified, None)]);
        assert!(d.is_empty());
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn a_file_written_continuously_is_not_starved() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        let mut emitted = Vec::new();
        for i in 0..300 {
            let now = t0 + ms(i * 10);
            d.observe(p("/r/log.md"), ChangeKind::Modified, now);
            if !d.take_due(now, false).is_empty() {
                emitted.push(i * 10);
            }
        }
        assert_eq!(emitted, vec![1000, 2010], "one row per max_wait at least");
    }

    #[test]
    fn the_starvation_bound_is_never_below_the_quiet_time() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(10));
        d.observe(p("/r/a.md"), ChangeKind::Modified, t0);
        assert_eq!(d.next_due(), Some(t0 + ms(100)));
    }

    #[test]
    fn delete_then_recreate_within_the_window_is_one_change() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/a.md"), ChangeKind::Deleted, t0);
        d.observe(p("/r/a.md"), ChangeKind::Modified, t0 + ms(5));
        assert_eq!(
            d.take_due(t0 + ms(200), false),
            vec![(p("/r/a.md"), ChangeKind::Modified, None)]
        );
    }

    #[test]
    fn times_out_of_order_keep_the_earliest_first_and_the_latest_last() {
        // A rescan passes each file's mtime, which may be older than an event
        // already held for it.
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/a.md"), ChangeKind::Modified, t0 + ms(50));
        d.observe(p("/r/a.md"), ChangeKind::Modified, t0);
        assert_eq!(d.next_due(), Some(t0 + ms(150)), "quiet since the latest");
        for i in 1..30 {
            d.observe(p("/r/a.md"), ChangeKind::Modified, t0 + ms(50 + i * 50));
        }
        assert_eq!(d.next_due(), Some(t0 + ms(1000)), "bound from the earliest");
    }

    #[test]
    fn paths_come_out_when_each_is_due_in_path_order() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/c.md"), ChangeKind::Modified, t0);
        d.observe(p("/r/a.md"), ChangeKind::Created, t0 + ms(10));
        d.observe(p("/r/b.md"), ChangeKind::Deleted, t0);
        d.observe(p("/r/d.md"), ChangeKind::Modified, t0 + ms(80));
        assert_eq!(d.next_due(), Some(t0 + ms(100)));
        assert_eq!(
            d.take_due(t0 + ms(110), false),
            vec![
                (p("/r/a.md"), ChangeKind::Created, None),
                (p("/r/b.md"), ChangeKind::Deleted, None),
                (p("/r/c.md"), ChangeKind::Modified, None),
            ]
        );
        assert_eq!(d.len(), 1);
        assert_eq!(d.next_due(), Some(t0 + ms(180)));
    }

    #[test]
    fn a_vcs_hold_releases_everything_at_once_due_or_not() {
        // While a lock exists the caller takes nothing; when it goes, it
        // takes everything, including paths still within their quiet time.
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/early.md"), ChangeKind::Modified, t0);
        d.observe(p("/r/late.md"), ChangeKind::Modified, t0 + ms(5000));
        d.observe_move(p("/r/x.md"), p("/r/y.md"), t0 + ms(5000));
        assert_eq!(
            d.take_due(t0 + ms(5001), true),
            vec![
                (p("/r/early.md"), ChangeKind::Modified, None),
                (p("/r/late.md"), ChangeKind::Modified, None),
                (p("/r/y.md"), ChangeKind::Moved, Some(p("/r/x.md"))),
            ]
        );
        assert!(d.is_empty());
        assert_eq!(d.next_due(), None);
    }

    #[test]
    fn a_new_debounce_applies_to_what_is_held() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(500), ms(5000));
        d.observe(p("/r/a.md"), ChangeKind::Modified, t0);
        d.set_timing(ms(50), ms(500));
        assert_eq!(d.next_due(), Some(t0 + ms(50)));
        assert_eq!(d.take_due(t0 + ms(50), false).len(), 1);
    }

    #[test]
    fn clear_forgets_paths_and_their_due_times() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/a.md"), ChangeKind::Modified, t0);
        d.clear();
        assert!(d.is_empty());
        assert_eq!(d.next_due(), None);
        assert!(d.take_due(t0 + ms(1000), true).is_empty());
    }

    #[test]
    fn write_temp_then_rename_becomes_a_move_that_carries_the_origin() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/a.md.tmp"), ChangeKind::Modified, t0);
        d.observe_move(p("/r/a.md.tmp"), p("/r/a.md"), t0 + ms(1));
        assert_eq!(d.len(), 1, "the source is folded into the move");
        let due = d.take_due(t0 + ms(200), false);
        assert_eq!(
            due,
            vec![(p("/r/a.md"), ChangeKind::Moved, Some(p("/r/a.md.tmp")))]
        );
        // A chain a -> b -> c stays a -> c.
        d.observe_move(p("/r/a"), p("/r/b"), t0);
        d.observe_move(p("/r/b"), p("/r/c"), t0);
        assert_eq!(
            d.take_due(t0 + ms(200), false),
            vec![(p("/r/c"), ChangeKind::Moved, Some(p("/r/a")))]
        );
    }

    #[test]
    fn a_move_keeps_the_first_time_of_its_source() {
        // A file written for a while, then renamed: the starvation bound
        // counts from its first write.
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/a.tmp"), ChangeKind::Modified, t0);
        d.observe_move(p("/r/a.tmp"), p("/r/a.md"), t0 + ms(950));
        assert_eq!(d.next_due(), Some(t0 + ms(1000)));
    }

    #[test]
    fn a_later_edit_of_a_moved_file_keeps_the_move() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe_move(p("/r/a.md"), p("/r/b.md"), t0);
        d.observe(p("/r/b.md"), ChangeKind::Modified, t0 + ms(10));
        assert_eq!(
            d.take_due(t0 + ms(110), false),
            vec![(p("/r/b.md"), ChangeKind::Moved, Some(p("/r/a.md")))]
        );
    }

    #[test]
    fn rename_then_atomic_save_of_the_new_name_keeps_the_origin() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        // rename(a, b), then write(.b.md.tmp1), rename(.b.md.tmp1, b).
        d.observe_move(p("/r/a.md"), p("/r/b.md"), t0);
        d.observe(p("/r/.b.md.tmp1"), ChangeKind::Modified, t0 + ms(1));
        d.observe_move(p("/r/.b.md.tmp1"), p("/r/b.md"), t0 + ms(2));
        // The temp file's end is held too (when the patterns track it): it
        // was never recorded, so the worker finds nothing to end.
        assert_eq!(
            d.take_due(t0 + ms(200), false),
            vec![
                (p("/r/.b.md.tmp1"), ChangeKind::Deleted, None),
                (p("/r/b.md"), ChangeKind::Moved, Some(p("/r/a.md"))),
            ]
        );
    }

    #[test]
    fn a_note_renamed_onto_a_just_moved_one_ends_both_old_paths() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        // rename(a, b), then rename(c, b): c's content at b, a and c gone.
        d.observe_move(p("/r/a.md"), p("/r/b.md"), t0);
        d.observe_move(p("/r/c.md"), p("/r/b.md"), t0 + ms(1));
        assert_eq!(
            d.take_due(t0 + ms(200), false),
            vec![
                (p("/r/b.md"), ChangeKind::Moved, Some(p("/r/a.md"))),
                (p("/r/c.md"), ChangeKind::Deleted, None),
            ]
        );
        // A chain y -> c first: y is the end to hold.
        d.observe_move(p("/r/a.md"), p("/r/b.md"), t0);
        d.observe_move(p("/r/y.md"), p("/r/c.md"), t0);
        d.observe_move(p("/r/c.md"), p("/r/b.md"), t0 + ms(1));
        assert_eq!(
            d.take_due(t0 + ms(200), false),
            vec![
                (p("/r/b.md"), ChangeKind::Moved, Some(p("/r/a.md"))),
                (p("/r/y.md"), ChangeKind::Deleted, None),
            ]
        );
    }

    #[test]
    fn deadlines_replace_remove_and_come_out_earliest_first() {
        let t0 = Instant::now();
        let mut d: Deadlines<PathBuf> = Deadlines::default();
        d.set(p("/r/b"), t0 + ms(20));
        d.set(p("/r/a"), t0 + ms(30));
        d.set(p("/r/c"), t0 + ms(10));
        d.set(p("/r/c"), t0 + ms(40));
        assert_eq!(d.len(), 3);
        assert_eq!(d.next(), Some(t0 + ms(20)));
        assert_eq!(d.remove(Path::new("/r/b")), Some(t0 + ms(20)));
        assert!(!d.contains(Path::new("/r/b")));
        assert_eq!(d.take_due(t0 + ms(35), false), vec![p("/r/a")]);
        assert_eq!(d.take_due(t0, true), vec![p("/r/c")]);
        assert!(d.is_empty());
        assert_eq!(d.next(), None);
    }

    /// A rescan's move from a known file keeps that file as the origin,
    /// even when a move onto its path is held (a temp file renamed over it,
    /// reported under the folder's old name): `observe_move` would fold the
    /// two into a chain from the temp file and lose the file's own end.
    #[test]
    fn a_known_move_keeps_its_origin_and_ends_a_move_held_onto_it() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe_move(p("/r/dir/.a.tmp"), p("/r/dir/a.md"), t0);
        d.observe_known_move(p("/r/dir/a.md"), p("/r/new/a.md"), t0 + ms(10));
        let due = d.take_due(t0 + ms(500), false);
        assert_eq!(
            due,
            vec![
                (p("/r/dir/.a.tmp"), ChangeKind::Deleted, None),
                (p("/r/new/a.md"), ChangeKind::Moved, Some(p("/r/dir/a.md"))),
            ]
        );
    }

    /// An edit held when its folder is renamed waits under the new name as
    /// a move from the old path: due, it is a move with the edit, not the
    /// old path's deletion.
    #[test]
    fn a_folder_rename_carries_what_is_held_under_it() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100), ms(1000));
        d.observe(p("/r/P/c1.md"), ChangeKind::Modified, t0);
        d.observe(p("/r/P/gone.md"), ChangeKind::Deleted, t0);
        d.observe(p("/r/other.md"), ChangeKind::Modified, t0);
        d.rename_folder(Path::new("/r/P"), Path::new("/r/Q"), t0 + ms(10));
        let due = d.take_due(t0 + ms(500), false);
        assert_eq!(
            due,
            vec![
                (p("/r/P/gone.md"), ChangeKind::Deleted, None),
                (p("/r/Q/c1.md"), ChangeKind::Moved, Some(p("/r/P/c1.md"))),
                (p("/r/other.md"), ChangeKind::Modified, None),
            ]
        );
    }
}
