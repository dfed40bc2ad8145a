//! From watcher events to pending queue rows: filter, debounce, coalesce,
//! batch-insert.
//!
//! Runs on its own thread with its own write connection (only `event_queue`
//! and `sync_meta` are written here, in short transactions). Each event is
//! matched against the patterns (hot-reloaded when `.obbywatch` or
//! `.obbyignore` changes), then the [`Debouncer`] holds it until the path
//! has been quiet for `debounce` (or `max_wait` passed since its first event,
//! so a file written continuously is not starved). Due paths go into the
//! queue in one transaction and the processing loop is woken. Renames the
//! watcher paired become one `moved` row. While a VCS lock (`.git/index.lock`)
//! exists the root's events and rescans are held and released as one batch;
//! which locks hold, and for how long, is [`super::vcs`]'s. A new folder
//! gets its watches at once ([`WatchGuard::sync`]) and a rescan once quiet.
//! Lost events (a full channel, an overflow) become subtree rescans through
//! [`super::reconcile`], as does a periodic safety rescan; every rescan
//! first brings the scope's watches up to date with the patterns. The polling
//! backend is that same reconciliation on a timer. Which backend watches the
//! root, and the canary that may switch it, are [`super::canary`]'s: this
//! loop passes it the time and the events read (paused or not), and applies
//! its switches (the new watches, the backend recorded, a root rescan).
//! Every timed thing (held paths, unpaired renames, scheduled rescans) is
//! kept in due order, so a loop turn never walks all of them.
//!
//! The api's [`Control`] messages and the barriers in flight are
//! [`super::control`]'s; what each message does (`on_control`: pause,
//! resume, debounce, reload, rescan, barrier) and how a barrier is answered
//! (`barrier_seen` when its cookie's event is read, `rescan_for_barrier`
//! when no event will come) are here, side by side: each changes this
//! loop's own state (the debouncer, the rescan requests, the VCS hold, the
//! patterns, the connection), which a separate module could only reach
//! through a trait with this one implementer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::canary::{self, Canary, CanaryConfig, Switch};
use super::control::Barriers;
use super::db;
use super::debounce::{Deadlines, Debouncer, Release};
use super::error::EngineError;
use super::patterns::{IGNORE_FILE, Patterns, SharedPatterns, WATCH_FILE};
use super::progress::Doorbell;
use super::queue::{ChangeKind, NewEvent};
use super::reconcile;
use super::vcs::{Check, Disk, MAX_VCS_HOLD, VcsHold, is_vcs_lock};
use super::watcher::{self, Backend, FsEvent, RescanRequests, WatchGuard};

/// Events buffered between the notify callback and this thread.
pub const EVENT_CHANNEL_CAPACITY: usize = 65_536;

/// Paths held by the debouncer before it gives up and asks for a full rescan.
pub const MAX_PENDING_PATHS: usize = 200_000;

/// How often a root the canary switched to polling tries native events again.
pub const NATIVE_RECHECK: Duration = Duration::from_secs(60);

/// Most folder renames remembered for the rescans that follow them (more
/// pair their files by content only).
const MAX_MOVED_DIRS: usize = 1024;

/// How long an unpaired rename source waits for its pair.
const RENAME_PAIRING: Duration = Duration::from_millis(50);

/// How often a root folder that is gone is looked for again.
const ROOT_RECHECK: Duration = Duration::from_millis(50);

/// Housekeeping tick when no event is due.
const TICK: Duration = Duration::from_millis(500);

/// Events taken from the channel per loop turn before flushing.
const DRAIN_BATCH: usize = 10_000;

pub use super::control::Control;

/// Watch settings, from `run`'s flags.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Quiet time per path before its change counts (`DEBOUNCE_MS`).
    pub debounce: Duration,
    /// Longest a continuously written path waits (default 10 × debounce).
    pub max_wait: Duration,
    /// Safety rescan period; `None` disables it.
    pub rescan_interval: Option<Duration>,
    /// Poll even where native events work.
    pub force_poll: bool,
    /// Time between two polls.
    pub poll_interval: Duration,
    /// How long the canary's event may take before polling takes over.
    pub canary_timeout: Duration,
    /// Time between two canary checks on a native root.
    pub canary_interval: Duration,
    /// Time between two probes of native events on a root the canary
    /// switched to polling (default [`NATIVE_RECHECK`]).
    pub native_recheck: Duration,
    /// Longest changes are held for a VCS lock (default [`MAX_VCS_HOLD`]).
    pub vcs_hold: Duration,
}

impl Default for WatchConfig {
    fn default() -> Self {
        let debounce = Duration::from_millis(500);
        WatchConfig {
            debounce,
            max_wait: debounce * 10,
            rescan_interval: Some(Duration::from_secs(600)),
            force_poll: false,
            poll_interval: Duration::from_secs(2),
            canary_timeout: Duration::from_secs(3),
            canary_interval: Duration::from_secs(600),
            native_recheck: NATIVE_RECHECK,
            vcs_hold: MAX_VCS_HOLD,
        }
    }
}

/// The enqueuer thread's state.
pub struct Enqueuer {
    root: PathBuf,
    conn: Connection,
    patterns: SharedPatterns,
    own_files: Vec<PathBuf>,
    cfg: WatchConfig,
    /// The workers' settle time: the debounce, in ms.
    debounce_ms: Arc<AtomicU64>,
    /// The workers' longest deferral: `max_wait`, in ms.
    max_wait_ms: Arc<AtomicU64>,
    debouncer: Debouncer,
    doorbell: Arc<Doorbell>,
    rescans: Arc<RescanRequests>,
    tx: SyncSender<FsEvent>,
    watch: WatchGuard,
    /// Rename sources waiting for their pair, due when the pairing window
    /// closes.
    unpaired: Deadlines<PathBuf>,
    /// Folders to rescan once quiet (new folders, dirs moved around), due a
    /// debounce after they were last seen.
    scheduled: Deadlines<PathBuf>,
    /// Folder renames seen (`from`, `to`; oldest first) until a rescan
    /// covers both (`reconcile::differences` pairs their files by path).
    moved_dirs: Vec<(PathBuf, PathBuf)>,
    /// VCS locks seen; changes and rescans are held while one exists.
    vcs: VcsHold,
    reload_at: Option<Instant>,
    /// Proves native events arrive; switches the backend when they do not,
    /// and back when they work again.
    canary: Canary,
    next_rescan: Option<Instant>,
    /// When the polling backend next reconciles the root.
    next_poll: Instant,
    /// Control messages from the api.
    control: Receiver<Control>,
    /// True while StopWatching holds live events off.
    paused: bool,
    /// Barriers waiting for their cookie's event.
    barriers: Barriers,
    /// True while the root folder itself is gone (deleted, unmounted).
    root_gone: bool,
    /// Modification times of `.obbywatch` and `.obbyignore` when last loaded,
    /// compared when polling and at the start of every rescan.
    pattern_stamp: (Option<std::time::SystemTime>, Option<std::time::SystemTime>),
    /// [`RescanRequests::losses`] at the last rescan: after a loss the
    /// rescanned folders are watched anew, since the events that told a
    /// folder's watch was gone may be among those lost.
    losses_seen: u64,
}

/// Everything [`Enqueuer::start`] needs.
pub struct EnqueuerParts {
    /// Canonical root.
    pub root: PathBuf,
    /// A write connection of its own.
    pub conn: Connection,
    /// Patterns shared with the workers.
    pub patterns: SharedPatterns,
    /// The engine's own files, excluded from the patterns on reload.
    pub own_files: Vec<PathBuf>,
    /// Watch settings.
    pub cfg: WatchConfig,
    /// The debounce as the workers' settle time (ms), kept in step
    /// with `cfg.debounce`.
    pub debounce_ms: Arc<AtomicU64>,
    /// `cfg.max_wait` as the workers' longest deferral (ms), kept in step.
    pub max_wait_ms: Arc<AtomicU64>,
    /// Rung after each flush.
    pub doorbell: Arc<Doorbell>,
    /// Control messages from the api.
    pub control: Receiver<Control>,
}

impl Enqueuer {
    /// Starts watching the root and returns the enqueuer and the receiving
    /// end of its event channel. Events start buffering at once, so a
    /// reconciliation run after this misses nothing.
    ///
    /// # Errors
    /// [`EngineError::Watch`] when neither the native backend nor polling can
    /// watch the root.
    pub fn start(
        parts: EnqueuerParts,
        channel: (SyncSender<FsEvent>, Receiver<FsEvent>),
    ) -> Result<(Enqueuer, Receiver<FsEvent>), EngineError> {
        let (tx, rx) = channel;
        let rescans = Arc::new(RescanRequests::default());
        let cfg = parts.cfg;
        let patterns = parts.patterns.get();
        let (watch, reason) = canary::start_watching(
            &parts.root,
            cfg.force_poll,
            cfg.poll_interval,
            &tx,
            &rescans,
            &patterns,
        )?;
        let now = Instant::now();
        let canary = Canary::new(
            parts.root.clone(),
            CanaryConfig {
                timeout: cfg.canary_timeout,
                interval: cfg.canary_interval,
                recheck: cfg.native_recheck,
                poll_interval: cfg.poll_interval,
            },
            tx.clone(),
            rescans.clone(),
            now,
        );
        let mut enqueuer = Enqueuer {
            root: parts.root,
            conn: parts.conn,
            patterns: parts.patterns,
            own_files: parts.own_files,
            debouncer: Debouncer::new(cfg.debounce, cfg.max_wait),
            next_rescan: cfg.rescan_interval.map(|d| now + d),
            vcs: VcsHold::new(cfg.vcs_hold),
            cfg,
            debounce_ms: parts.debounce_ms,
            max_wait_ms: parts.max_wait_ms,
            doorbell: parts.doorbell,
            rescans,
            tx,
            watch,
            unpaired: Deadlines::default(),
            scheduled: Deadlines::default(),
            moved_dirs: Vec::new(),
            reload_at: None,
            canary,
            next_poll: now,
            pattern_stamp: (None, None),
            control: parts.control,
            paused: false,
            barriers: Barriers::default(),
            root_gone: false,
            losses_seen: 0,
        };
        enqueuer.pattern_stamp = enqueuer.pattern_files_stamp();
        enqueuer.record_backend(&reason);
        Ok((enqueuer, rx))
    }

    /// The backend watching the root.
    pub fn backend(&self) -> Backend {
        self.watch.backend
    }

    fn record_backend(&self, reason: &str) {
        let backend = self.watch.backend.name();
        tracing::info!(root = %self.root.display(), backend, reason, "watching");
        let value = format!("{backend} ({reason})");
        if let Err(e) = db::meta_set(&self.conn, "watch_backend", &value) {
            tracing::warn!(error = %e, "could not record the watch backend");
        }
    }

    /// Runs until `stop` is set, then flushes what it holds and returns.
    ///
    /// # Errors
    /// Database errors that retrying cannot fix.
    pub fn run(mut self, rx: Receiver<FsEvent>, stop: &AtomicBool) -> Result<(), EngineError> {
        loop {
            let now = Instant::now();
            let wait = self
                .next_wakeup(now)
                .saturating_duration_since(now)
                .min(TICK);
            match rx.recv_timeout(wait) {
                Ok(event) => {
                    self.on_event(event, Instant::now());
                    for event in rx.try_iter().take(DRAIN_BATCH) {
                        self.on_event(event, Instant::now());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let stopping = stop.load(Ordering::Relaxed);
            self.housekeeping(Instant::now(), stopping)?;
            if stopping {
                break;
            }
        }
        self.canary.stop();
        Ok(())
    }

    /// The next moment something is due: a debounced path, an unpaired
    /// rename, a folder rescan, a reload, a canary or barrier deadline, a poll.
    fn next_wakeup(&self, now: Instant) -> Instant {
        let candidates = [
            self.debouncer.next_due(),
            self.unpaired.next(),
            self.scheduled.next(),
            self.reload_at,
            self.canary.next_wakeup(self.watch.backend),
            self.barriers.next_deadline(),
            matches!(self.watch.backend, Backend::Poll { .. }).then_some(self.next_poll),
            self.vcs.next_check(now),
            self.root_gone.then(|| now + ROOT_RECHECK),
        ];
        candidates
            .into_iter()
            .flatten()
            .fold(now + TICK, Instant::min)
    }

    fn on_event(&mut self, event: FsEvent, now: Instant) {
        let patterns = self.patterns.get();
        if let FsEvent::Changed(path) | FsEvent::Removed(path) = &event {
            if self.barrier_seen(path) {
                return;
            }
            // The canary's cookies count even while paused: a pause must not
            // read as native events that stopped working.
            if let Some(switch) = self.canary.seen(path, now) {
                self.switch_backend(switch);
            }
        }
        if self.paused {
            return;
        }
        match event {
            FsEvent::Nudge => {}
            FsEvent::Changed(path) => {
                self.notice_special(&path, now);
                if patterns.is_tracked(&path) && !path.is_dir() {
                    self.debouncer.observe(path, ChangeKind::Modified, now);
                }
            }
            FsEvent::RenamedTo(path) if path.is_dir() => self.new_folder(path, &patterns, now),
            FsEvent::RenamedTo(path) => {
                self.notice_special(&path, now);
                if patterns.is_tracked(&path) {
                    self.debouncer.observe(path, ChangeKind::Modified, now);
                }
            }
            FsEvent::Removed(path) => {
                self.watch.forget(&path);
                self.notice_special(&path, now);
                if patterns.is_tracked(&path) {
                    self.debouncer.observe(path, ChangeKind::Deleted, now);
                }
            }
            FsEvent::DirCreated(path) => self.new_folder(path, &patterns, now),
            FsEvent::RenamedFrom(path) => {
                self.watch.forget(&path);
                self.unpaired.set(path, now + RENAME_PAIRING);
            }
            FsEvent::Renamed { from, to } => {
                self.unpaired.remove(&from);
                self.watch.forget(&from);
                self.notice_special(&to, now);
                // A folder, or one renamed on again already (`a → b`, then
                // `b → c` before this event was read): files were known
                // under `from`.
                if to.is_dir() || (!to.exists() && self.knows_folder(&from)) {
                    // Remembered for the rescans of both folders: the files
                    // under `to` are those under `from`, edited or not; and
                    // what is held under `from` now waits under `to`.
                    if self.moved_dirs.len() < MAX_MOVED_DIRS {
                        self.moved_dirs.push((from.clone(), to.clone()));
                    }
                    self.debouncer.rename_folder(&from, &to, now);
                    // Its destination half (RenamedTo) came first and set
                    // the watches; this only catches up on a lost one.
                    if to.is_dir()
                        && let Err(e) = self.watch.sync(&to, &patterns, false)
                    {
                        watch_failed(&to, &e);
                    }
                    // Every folder of the renames not rescanned yet waits
                    // for this one's rescan, so a chain of renames is
                    // rescanned at once and pairs end to end.
                    let at = now + self.cfg.debounce;
                    for (f, t) in &self.moved_dirs {
                        self.scheduled.set(f.clone(), at);
                        self.scheduled.set(t.clone(), at);
                    }
                    self.scheduled.set(from, at);
                    self.scheduled.set(to, at);
                    return;
                }
                match (patterns.is_tracked(&from), patterns.is_tracked(&to)) {
                    (true, true) => self.debouncer.observe_move(from, to, now),
                    (false, true) => self.debouncer.observe(to, ChangeKind::Modified, now),
                    (true, false) => self.debouncer.observe(from, ChangeKind::Deleted, now),
                    (false, false) => {}
                }
            }
        }
        if self.debouncer.len() > MAX_PENDING_PATHS {
            tracing::warn!(
                paths = self.debouncer.len(),
                "too many changes held; rescanning instead"
            );
            self.debouncer.clear();
            self.rescans.mark(None);
        }
    }

    /// True when `sync_files` holds a file under the folder `path` (a
    /// renamed path that no longer exists was a folder if so).
    fn knows_folder(&self, path: &Path) -> bool {
        let text = path.to_string_lossy();
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM sync_files WHERE path >= ?1 AND path < ?2)",
            )
            .and_then(|mut st| {
                st.query_row(
                    rusqlite::params![format!("{text}/"), format!("{text}0")],
                    |r| r.get::<_, bool>(0),
                )
            })
            .unwrap_or(false)
    }

    /// A folder created or moved in: watched at once (its subfolders too),
    /// then rescanned once quiet, so files that landed in it before its
    /// watch existed are found too.
    fn new_folder(&mut self, path: PathBuf, patterns: &Patterns, now: Instant) {
        if let Err(e) = self.watch.sync(&path, patterns, true) {
            watch_failed(&path, &e);
        }
        if !patterns.is_ignored_dir(&path) {
            self.scheduled.set(path, now + self.cfg.debounce);
        }
    }

    /// Pattern files and VCS locks.
    fn notice_special(&mut self, path: &Path, now: Instant) {
        if path.parent() == Some(self.root.as_path())
            && path
                .file_name()
                .is_some_and(|n| n == WATCH_FILE || n == IGNORE_FILE)
        {
            self.reload_at = Some(now + self.cfg.debounce.min(Duration::from_millis(100)));
        }
        if is_vcs_lock(path) {
            self.vcs.note(path.to_path_buf(), &Disk);
        }
    }

    /// A new backend from the canary: its watches replace the old, it is
    /// recorded, and the root is rescanned (after a switch to polling, for
    /// what the missing events did not tell; after a switch back, for the
    /// watches of folders made meanwhile, which the poller's guard did not
    /// add).
    fn switch_backend(&mut self, switch: Switch) {
        self.watch = switch.guard;
        self.record_backend(&switch.reason);
        self.rescans.mark(None);
    }

    /// One loop turn: what is due is done; with `stopping`, everything held
    /// is released (a VCS hold included).
    fn housekeeping(&mut self, now: Instant, stopping: bool) -> Result<(), EngineError> {
        self.turn(now, stopping, stopping)
    }

    /// [`Enqueuer::housekeeping`], with `all` taking everything held, due or
    /// not (a pending pattern reload, unpaired renames, scheduled folder
    /// rescans, debounced paths), as a barrier needs; only `stopping` ends a
    /// VCS hold early. While paused no rescan runs (resuming rescans the
    /// root), so nothing found on disk is recorded either.
    fn turn(&mut self, now: Instant, all: bool, stopping: bool) -> Result<(), EngineError> {
        self.check_root();
        while let Ok(control) = self.control.try_recv() {
            self.on_control(control, now)?;
        }
        self.answer_late_barriers(now)?;
        if self.reload_at.is_some_and(|at| at <= now || all) {
            self.reload_at = None;
            self.reload_patterns();
        }
        // Unpaired rename sources: moved out of the tree (or a folder moved).
        for path in self.unpaired.take_due(now, all) {
            let patterns = self.patterns.get();
            if patterns.is_tracked(&path) {
                self.debouncer
                    .observe(path.clone(), ChangeKind::Deleted, now);
            }
            self.scheduled.set(path, now + self.cfg.debounce);
        }
        let patterns = self.patterns.get();
        if let Some(switch) = self.canary.check(now, self.watch.backend, &patterns) {
            self.switch_backend(switch);
        }
        if let Backend::Poll { interval } = self.watch.backend
            && now >= self.next_poll
            && !self.paused
        {
            self.next_poll = now + interval;
            self.rescans.mark(None);
            // No events tell a poller that the pattern files changed either.
            if self.pattern_files_stamp() != self.pattern_stamp {
                self.reload_patterns();
            }
        }
        if let Some(at) = self.next_rescan
            && at <= now
        {
            self.rescans.mark(None);
            self.next_rescan = self.cfg.rescan_interval.map(|d| now + d);
        }
        // Folders to rescan once quiet for a debounce.
        for path in self.scheduled.take_due(now, all) {
            self.rescans.mark(Some(&path));
        }
        // While a VCS operation runs, hold both events and rescans: a
        // checkout becomes one burst, not thousands of half-states.
        if self.held_by_vcs(now) && !stopping {
            return Ok(());
        }
        if !self.paused
            && let Some(request) = self.rescans.take()
        {
            self.rescan(request)?;
        }
        let release_all = all || self.vcs.end();
        let due = self.debouncer.take_due(now, release_all);
        self.flush(due)
    }

    // The reactions to the api's control messages (`Control`; the messages
    // and the barriers' bookkeeping are in `control.rs`). They stay here
    // because each changes this loop's own state: the debouncer, the rescan
    // requests, the VCS hold, the patterns, the connection.

    /// Applies one control message: a rescan asked for, a pause (everything
    /// held is dropped) or a resume (the root is rescanned), a new debounce
    /// (for the debouncer and the workers' settle time alike), a pattern
    /// reload, or a barrier (its cookie written, or a rescan in its place).
    fn on_control(&mut self, control: Control, now: Instant) -> Result<(), EngineError> {
        match control {
            Control::Rescan(path) => self.rescans.mark(Some(&path)),
            Control::Pause(pause) => {
                if self.paused && !pause {
                    self.rescans.mark(None);
                }
                if pause {
                    self.debouncer.clear();
                }
                self.paused = pause;
                tracing::info!(paused = pause, "live watching paused or resumed");
                let detail = format!(
                    "{}{}",
                    self.watch.backend.name(),
                    if pause {
                        " (paused by StopWatching)"
                    } else {
                        " (resumed)"
                    }
                );
                if let Err(e) = db::meta_set(&self.conn, "watch_backend", &detail) {
                    tracing::warn!(error = %e, "could not record the watch state");
                }
            }
            Control::SetDebounce(debounce) => {
                self.cfg.debounce = debounce;
                self.debounce_ms.store(
                    u64::try_from(debounce.as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                self.cfg.max_wait = debounce * 10;
                self.max_wait_ms.store(
                    u64::try_from(self.cfg.max_wait.as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                self.debouncer.set_timing(debounce, debounce * 10);
            }
            Control::ReloadPatterns => self.reload_patterns(),
            Control::Barrier(reply) => {
                // StopWatching means nothing is recorded until resumed, and
                // a VCS hold keeps its changes until the lock goes: a
                // barrier undoes neither. With native events its cookie is
                // still written, so its answer proves every earlier event
                // was read (and, paused, dropped).
                if self.watch.backend != Backend::Native {
                    // Nothing would deliver a cookie event: reconcile now.
                    self.rescan_for_barrier(now)?;
                    let _ = reply.send(());
                    return Ok(());
                }
                if let Err((e, reply)) = self.barriers.arm(&self.root, reply, now) {
                    tracing::warn!(error = %e, "cannot write a barrier cookie; rescanning instead");
                    self.rescan_for_barrier(now)?;
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }

    /// Barriers whose cookie event never came (polling, or events lost):
    /// a rescan of the root stands in for it.
    fn answer_late_barriers(&mut self, now: Instant) -> Result<(), EngineError> {
        let late = self.barriers.take_late(now);
        if !late.is_empty() {
            self.rescan_for_barrier(now)?;
            for reply in late {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    /// When `path` is a barrier's cookie: every event before it has been
    /// read, so flush everything held (but what a VCS hold keeps, and
    /// nothing while paused) and answer the barrier.
    fn barrier_seen(&mut self, path: &Path) -> bool {
        let Some(reply) = self.barriers.seen(path) else {
            return false;
        };
        // Renames still waiting for their pair, folder rescans and a pattern
        // reload first, then everything held (unless a VCS lock holds it).
        let result = self.turn(Instant::now(), true, false);
        if let Err(e) = result {
            tracing::warn!(error = %e, "barrier flush failed");
        }
        let _ = reply.send(());
        true
    }

    /// What stands in for a barrier's cookie event (polling, a cookie that
    /// could not be written or whose event is late): a rescan of the root,
    /// everything held flushed. Not while paused (nothing is recorded until
    /// resumed) nor during a VCS hold (what it holds is recorded when the
    /// lock goes).
    fn rescan_for_barrier(&mut self, now: Instant) -> Result<(), EngineError> {
        if self.paused {
            return Ok(());
        }
        if self.held_by_vcs(now) {
            return Ok(());
        }
        self.rescan(None)?;
        self.flush_all(now)
    }

    /// True while a VCS lock holds changes back: the root's own lock is
    /// looked for, then every lock noted (logging a hold's end).
    fn held_by_vcs(&mut self, now: Instant) -> bool {
        self.vcs.note_root(&self.root, &Disk);
        match self.vcs.check(now, &Disk) {
            Check::Free => false,
            Check::Held => true,
            Check::Released => {
                tracing::info!(
                    paths = self.debouncer.len(),
                    "VCS lock released; flushing held changes"
                );
                false
            }
            Check::Expired(locks) => {
                tracing::warn!(
                    ?locks,
                    "VCS lock held too long; ignoring it until it changes and processing changes"
                );
                false
            }
        }
    }

    fn flush(&mut self, due: Vec<Release>) -> Result<(), EngineError> {
        if due.is_empty() {
            return Ok(());
        }
        let events: Vec<NewEvent> = due
            .into_iter()
            .filter_map(|(path, kind, old)| {
                let Some(path_text) = path.to_str() else {
                    tracing::warn!(path = %path.display(), "skipping a file whose name is not UTF-8");
                    return None;
                };
                Some(NewEvent {
                    path: path_text.to_owned(),
                    kind,
                    old_path: old.and_then(|o| o.to_str().map(str::to_owned)),
                })
            })
            .collect();
        reconcile::enqueue_all(&self.conn, &events, "watch")?;
        tracing::debug!(rows = events.len(), "enqueued");
        self.doorbell.ring();
        Ok(())
    }

    /// Reconciles the requested scopes. Their differences go through the
    /// debouncer, timed by each file's mtime, so a file still being written
    /// waits until it has been quiet for the debounce like any watched event
    /// (this is what makes polling debounce). A rescan too large to hold is
    /// enqueued directly.
    fn rescan(&mut self, request: Option<Vec<PathBuf>>) -> Result<(), EngineError> {
        // The pattern files' own events may have been lost with the others
        // that caused this rescan: look at them first, so it walks with the
        // patterns as they are now.
        if self.pattern_files_stamp() != self.pattern_stamp {
            self.reload_patterns();
        }
        let patterns = self.patterns.get();
        let scopes: Vec<PathBuf> = match request {
            None => vec![self.root.clone()],
            Some(list) => collapse_scopes(list)
                .into_iter()
                .filter(|s| s.starts_with(&self.root))
                .collect(),
        };
        if scopes.is_empty() {
            return Ok(());
        }
        // Watches first, then the walk: a file created after its folder's
        // watch is an event, one created before is found by the walk.
        let losses = self.rescans.losses();
        let lost = losses != self.losses_seen;
        self.losses_seen = losses;
        for scope in &scopes {
            if let Err(e) = self.watch.sync(scope, &patterns, lost) {
                watch_failed(scope, &e);
            }
        }
        let (found, _report) =
            reconcile::differences(&self.conn, &patterns, &scopes, &self.moved_dirs)?;
        // The renames this rescan covered are spent (a full rescan covers
        // all); others wait for their folders' rescans.
        self.moved_dirs.retain(|(from, to)| {
            !(scopes.iter().any(|s| from.starts_with(s))
                && scopes.iter().any(|s| to.starts_with(s)))
        });
        if found.is_empty() {
            return Ok(());
        }
        tracing::debug!(
            changes = found.len(),
            scopes = scopes.len(),
            "rescan found changes"
        );
        if self.debouncer.len() + found.len() > MAX_PENDING_PATHS {
            let events: Vec<NewEvent> = found.into_iter().map(|d| d.event).collect();
            reconcile::enqueue_all(&self.conn, &events, "rescan")?;
            self.doorbell.ring();
            return Ok(());
        }
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        for d in found {
            // When the file last changed, as an Instant (now for a deletion).
            let at = d.mtime_ns.map_or(now, |ns| {
                let mtime =
                    std::time::UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0));
                now.checked_sub(wall.duration_since(mtime).unwrap_or_default())
                    .unwrap_or(now)
            });
            let path = PathBuf::from(d.event.path);
            match d.event.old_path {
                Some(old) => self
                    .debouncer
                    .observe_known_move(PathBuf::from(old), path, at),
                None => self.debouncer.observe(path, d.event.kind, at),
            }
        }
        Ok(())
    }

    /// Notices the root disappearing (its files' deletions arrive as events)
    /// and coming back: the old watch died with the folder, so a new one is
    /// set up and the root rescanned.
    fn check_root(&mut self) {
        let present = self.root.is_dir();
        if !present && !self.root_gone {
            self.root_gone = true;
            tracing::warn!(root = %self.root.display(), "the root folder is gone; waiting for it to come back");
        } else if present && self.root_gone {
            self.root_gone = false;
            let backend = self.watch.backend;
            self.reload_patterns();
            let patterns = self.patterns.get();
            match watcher::start(
                &self.root,
                backend,
                self.tx.clone(),
                self.rescans.clone(),
                &patterns,
            ) {
                Ok(guard) => {
                    self.watch = guard;
                    tracing::info!(root = %self.root.display(), "the root folder is back; watching and rescanning it");
                }
                Err(e) => tracing::error!(error = %e, "cannot watch the recreated root"),
            }
            self.rescans.mark(None);
        }
    }

    /// Enqueues everything held, due or not.
    fn flush_all(&mut self, now: Instant) -> Result<(), EngineError> {
        let all = self.debouncer.take_due(now, true);
        self.flush(all)
    }

    fn pattern_files_stamp(
        &self,
    ) -> (Option<std::time::SystemTime>, Option<std::time::SystemTime>) {
        let mtime = |name: &str| {
            std::fs::metadata(self.root.join(name))
                .and_then(|m| m.modified())
                .ok()
        };
        (mtime(WATCH_FILE), mtime(IGNORE_FILE))
    }

    fn reload_patterns(&mut self) {
        self.pattern_stamp = self.pattern_files_stamp();
        let api = match db::api_patterns(&self.conn) {
            Ok(api) => api,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the api patterns; keeping the previous patterns");
                return;
            }
        };
        match Patterns::load_with(&self.root, &api) {
            Ok(p) => {
                self.patterns.set(p.exclude(self.own_files.clone()));
                tracing::info!("patterns reloaded; rescanning");
                self.rescans.mark(None);
            }
            Err(e) => tracing::warn!(error = %e, "keeping the previous patterns"),
        }
    }
}

/// Logs a folder that could not be watched; its changes are then found by
/// rescans only.
fn watch_failed(scope: &Path, e: &notify::Error) {
    if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) {
        tracing::warn!(
            scope = %scope.display(),
            "inotify watch limit reached: changes in folders without a watch are found by rescans only; \
             raise it with `sysctl fs.inotify.max_user_watches=524288`"
        );
    } else {
        tracing::warn!(scope = %scope.display(), error = %e, "cannot watch a folder; its changes are found by rescans only");
    }
}

/// Drops scopes that lie under another scope of the list.
fn collapse_scopes(mut scopes: Vec<PathBuf>) -> Vec<PathBuf> {
    scopes.sort();
    let mut out: Vec<PathBuf> = Vec::new();
    for s in scopes {
        if !out.last().is_some_and(|last| s.starts_with(last)) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::db;

    /// A root with `.obbywatch` = `notes/`, a fresh database and a started
    /// enqueuer whose events the test consumes (or, to simulate loss, not).
    fn started() -> (tempfile::TempDir, PathBuf, Enqueuer, Receiver<FsEvent>) {
        started_with(WatchConfig {
            rescan_interval: None,
            ..WatchConfig::default()
        })
    }

    fn started_with(cfg: WatchConfig) -> (tempfile::TempDir, PathBuf, Enqueuer, Receiver<FsEvent>) {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("vault");
        std::fs::create_dir_all(root.join("notes")).expect("mkdir");
        std::fs::write(root.join(".obbywatch"), "notes/\n").expect("write");
        let root = std::fs::canonicalize(&root).expect("canonical");
        let conn = db::open_writer(&dir.path().join("obby.db")).expect("db");
        let patterns = SharedPatterns::new(Patterns::load(&root).expect("patterns"));
        let (_control_tx, control) = std::sync::mpsc::channel();
        let (enqueuer, rx) = Enqueuer::start(
            EnqueuerParts {
                root: root.clone(),
                conn,
                patterns,
                own_files: Vec::new(),
                cfg,
                debounce_ms: Arc::default(),
                max_wait_ms: Arc::default(),
                doorbell: Arc::default(),
                control,
            },
            std::sync::mpsc::sync_channel(EVENT_CHANNEL_CAPACITY),
        )
        .expect("start");
        (dir, root, enqueuer, rx)
    }

    fn pending(e: &Enqueuer) -> Vec<String> {
        let mut stmt = e
            .conn
            .prepare("SELECT path FROM event_queue WHERE status = 'pending' ORDER BY path")
            .expect("prepare");
        stmt.query_map([], |r| r.get(0))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    }

    #[test]
    fn pattern_files_an_edit_whose_event_was_lost_is_seen_by_the_next_rescan() {
        let (_dir, root, mut e, _rx) = started();
        // Events never consumed: the edit of .obbywatch is lost with the rest.
        std::fs::create_dir_all(root.join("drafts")).expect("mkdir");
        std::fs::write(root.join("drafts/d.md"), "d\n").expect("write");
        // A different mtime for sure, on any file system's tick.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(root.join(WATCH_FILE), "notes/\ndrafts/\n").expect("write");
        e.rescans.mark(Some(&root.join("drafts")));
        e.housekeeping(Instant::now() + e.cfg.debounce, false)
            .expect("housekeeping");
        e.housekeeping(Instant::now() + e.cfg.debounce * 2, false)
            .expect("housekeeping");
        assert_eq!(
            pending(&e),
            vec![root.join("drafts/d.md").display().to_string()]
        );
    }

    #[test]
    fn a_paused_poller_records_nothing_until_resumed() {
        let (_dir, root, mut e, _rx) = started_with(WatchConfig {
            rescan_interval: None,
            force_poll: true,
            ..WatchConfig::default()
        });
        e.on_control(Control::Pause(true), Instant::now())
            .expect("pause");
        std::fs::write(root.join("notes/while-paused.md"), "p\n").expect("write");
        // Polls fall due (and a safety rescan is asked for): nothing is
        // rescanned while paused.
        e.rescans.mark(None);
        let later = Instant::now() + Duration::from_secs(10);
        e.housekeeping(later, false).expect("housekeeping");
        e.housekeeping(later + e.cfg.poll_interval * 2, false)
            .expect("housekeeping");
        assert!(pending(&e).is_empty(), "{:?}", pending(&e));
        // Resumed: the rescan finds what changed meanwhile.
        e.on_control(Control::Pause(false), later).expect("resume");
        e.housekeeping(later + Duration::from_secs(10), false)
            .expect("housekeeping");
        e.housekeeping(later + Duration::from_secs(20), false)
            .expect("housekeeping");
        assert_eq!(
            pending(&e),
            vec![root.join("notes/while-paused.md").display().to_string()]
        );
    }

    #[test]
    fn a_subtree_rescan_finds_changes_whose_events_were_lost() {
        let (_dir, root, mut e, _rx) = started();
        // Written while the watcher runs, but its events are never consumed:
        // as if the channel had overflowed.
        std::fs::create_dir_all(root.join("notes/sub")).expect("mkdir");
        std::fs::write(root.join("notes/sub/a.md"), "a\n").expect("write");
        std::fs::write(root.join("notes/sub/b.md"), "b\n").expect("write");
        std::fs::write(root.join("notes/outside-scope.md"), "c\n").expect("write");
        // What the watcher's callback does when the channel is full.
        e.rescans.mark(Some(&root.join("notes/sub")));
        // Found files wait out the debounce like watched events.
        e.housekeeping(Instant::now() + e.cfg.debounce, false)
            .expect("housekeeping");
        let sub = root.join("notes/sub");
        assert_eq!(
            pending(&e),
            vec![
                sub.join("a.md").display().to_string(),
                sub.join("b.md").display().to_string()
            ]
        );
    }

    #[test]
    fn canary_after_a_loss_is_re_armed_instead_of_switching_to_polling() {
        let (_dir, _root, mut e, _rx) = started();
        let t0 = Instant::now();
        e.housekeeping(t0, false).expect("housekeeping");
        let first = e.canary.cookie().map(Path::to_path_buf).expect("canary");
        // Events were lost while it was out (the watcher callback saw a
        // full channel): its own missing event proves nothing.
        e.rescans.mark_lost(None);
        let late = t0 + e.cfg.canary_timeout + Duration::from_millis(1);
        e.housekeeping(late, false).expect("housekeeping");
        assert_eq!(e.backend(), Backend::Native);
        e.housekeeping(late, false).expect("housekeeping");
        let second = e.canary.cookie().map(Path::to_path_buf).expect("re-armed");
        assert_eq!(second, first, "the same cookie, written again");
        assert!(second.exists());
        // Without a loss this time, a missing event does switch.
        let later = late + e.cfg.canary_timeout + Duration::from_millis(1);
        e.housekeeping(later, false).expect("housekeeping");
        assert!(matches!(e.backend(), Backend::Poll { .. }));
    }

    #[test]
    fn a_canary_whose_event_never_arrives_switches_the_root_to_polling() {
        let (_dir, root, mut e, _rx) = started();
        assert_eq!(e.backend(), Backend::Native);
        let t0 = Instant::now();
        e.housekeeping(t0, false).expect("housekeeping");
        let canary = e
            .canary
            .cookie()
            .map(Path::to_path_buf)
            .expect("canary written");
        assert!(canary.exists());
        // The event sits unread in the channel: as if it never arrived.
        e.housekeeping(t0 + e.cfg.canary_timeout + Duration::from_millis(1), false)
            .expect("housekeeping");
        assert!(matches!(e.backend(), Backend::Poll { .. }));
        assert!(!canary.exists(), "the cookie is removed");
        let recorded: String = e
            .conn
            .query_row(
                "SELECT value FROM sync_meta WHERE key = 'watch_backend'",
                [],
                |r| r.get(0),
            )
            .expect("recorded");
        assert!(recorded.starts_with("poll (the canary"), "{recorded}");
        // Polling then finds changes by itself.
        std::fs::write(root.join("notes/new.md"), "n\n").expect("write");
        e.housekeeping(Instant::now() + Duration::from_secs(10), false)
            .expect("housekeeping");
        assert_eq!(
            pending(&e),
            vec![root.join("notes/new.md").display().to_string()]
        );
    }

    /// Reads events as [`Enqueuer::run`] does until `done` holds.
    fn read_until(
        e: &mut Enqueuer,
        rx: &Receiver<FsEvent>,
        mut done: impl FnMut(&Enqueuer, &FsEvent) -> bool,
    ) -> bool {
        let give_up = Instant::now() + Duration::from_secs(10);
        while Instant::now() < give_up {
            if let Ok(event) = rx.recv_timeout(Duration::from_millis(100)) {
                e.on_event(event.clone(), Instant::now());
                if done(e, &event) {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn a_root_switched_to_polling_returns_to_native_events_once_they_arrive_again() {
        let (_dir, root, mut e, rx) = started();
        let t0 = Instant::now();
        e.housekeeping(t0, false).expect("housekeeping");
        // The canary's event sits unread: the root switches to polling.
        let late = t0 + e.cfg.canary_timeout + Duration::from_millis(1);
        e.housekeeping(late, false).expect("housekeeping");
        assert!(matches!(e.backend(), Backend::Poll { .. }));
        assert!(
            e.canary.probe().is_none(),
            "no probe before the recheck interval"
        );
        // A probe whose event is not read either: polling goes on, and the
        // next probe comes a recheck interval later.
        let first = late + e.cfg.native_recheck;
        e.housekeeping(first, false).expect("housekeeping");
        let missed = e.canary.probe().map(Path::to_path_buf).expect("probe");
        assert!(missed.exists());
        let timed_out = first + e.cfg.canary_timeout + Duration::from_millis(1);
        e.housekeeping(timed_out, false).expect("housekeeping");
        assert!(matches!(e.backend(), Backend::Poll { .. }));
        assert!(e.canary.probe().is_none() && !missed.exists());
        e.housekeeping(timed_out + e.cfg.native_recheck, false)
            .expect("housekeeping");
        let probe = e
            .canary
            .probe()
            .map(Path::to_path_buf)
            .expect("probe again");
        assert_ne!(probe, missed, "each probe has a cookie of its own");
        // Now its event is read (after the stale ones, the missed probe's
        // among them): native events take over again, and say so.
        assert!(
            read_until(&mut e, &rx, |e, _| e.backend() == Backend::Native),
            "the probe's event did not switch the root back"
        );
        assert!(!probe.exists(), "the probe's cookie is removed");
        let recorded: String = e
            .conn
            .query_row(
                "SELECT value FROM sync_meta WHERE key = 'watch_backend'",
                [],
                |r| r.get(0),
            )
            .expect("recorded");
        assert!(recorded.starts_with("native (the canary"), "{recorded}");
        // And they are native events: a new file's own event arrives.
        let new = root.join("notes/new.md");
        std::fs::write(&new, "n\n").expect("write");
        assert!(read_until(&mut e, &rx, |_, ev| *ev == FsEvent::Changed(new.clone())));
        e.housekeeping(Instant::now() + e.cfg.debounce * 2, false)
            .expect("housekeeping");
        assert_eq!(pending(&e), vec![new.display().to_string()]);
    }

    #[test]
    fn a_canary_due_while_paused_keeps_native_events() {
        let (_dir, _root, mut e, rx) = started();
        let t0 = Instant::now();
        e.on_control(Control::Pause(true), t0).expect("pause");
        e.housekeeping(t0, false).expect("housekeeping");
        let cookie = e.canary.cookie().map(Path::to_path_buf).expect("canary");
        // Its event is read while paused, like every other event dropped.
        assert!(read_until(&mut e, &rx, |e, _| e.canary.cookie().is_none()));
        assert!(!cookie.exists());
        e.housekeeping(t0 + e.cfg.canary_timeout * 2, false)
            .expect("housekeeping");
        assert_eq!(e.backend(), Backend::Native);
    }

    #[test]
    fn a_canary_whose_event_arrives_keeps_native_events() {
        let (_dir, _root, mut e, rx) = started();
        let t0 = Instant::now();
        e.housekeeping(t0, false).expect("housekeeping");
        let event = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the canary's event");
        e.on_event(event, Instant::now());
        e.housekeeping(t0 + e.cfg.canary_timeout * 2, false)
            .expect("housekeeping");
        assert_eq!(e.backend(), Backend::Native);
    }

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn nested_scopes_collapse_into_their_parent() {
        let scopes = collapse_scopes(vec![p("/r/a/b"), p("/r/a"), p("/r/c"), p("/r/ab")]);
        assert_eq!(scopes, vec![p("/r/a"), p("/r/ab"), p("/r/c")]);
    }
}
