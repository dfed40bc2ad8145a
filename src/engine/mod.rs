//! The engine: queue in, versions and diffs out, crash-safe.
//!
//! ```text
//!  reconcile / enqueue ──▶ event_queue (pending) ──claim──▶ workers (rayon)
//!                                 ▲                           │ read, hash, diff
//!                                 └──── retry / requeue ◀── store (one writer):
//!                                                           Obby rows + ack, one tx
//! ```
//!
//! [`Engine::open`] takes the engine lock (one engine per database), opens and
//! migrates the database, and returns every row left claimed by a dead process
//! to pending. [`Engine::reconcile`] enqueues what changed on disk.
//! [`Engine::process`] runs the pipeline: it claims a batch, hands it to the
//! worker pool, and while the pool computes it commits the previous batch, so
//! CPU work and the single writer overlap. Synchronous: threads and rayon, no
//! async runtime.
//!
//! [`Engine::handle`] gives the api its one door, an [`EngineHandle`]:
//! enqueue and wait (`track` / `tracked`), status, patterns, control of the
//! watcher, reading a file beneath the root, diffs, `sync_meta`. The api
//! names nothing of the engine but the handle and the plain data types
//! re-exported here.

pub mod canary;
pub mod clock;
pub mod config;
pub mod confined;
pub mod control;
pub mod counts;
mod database;
pub mod db;
pub mod debounce;
pub mod diff;
pub mod enqueue;
mod error;
mod handle;
pub mod hash;
pub mod history;
pub mod litestream;
mod memory;
pub mod paths;
pub mod patterns;
pub mod progress;
pub mod queue;
pub mod rank;
mod read;
pub mod reconcile;
pub mod replica;
pub mod schema;
pub mod search;
pub mod store;
pub mod vcs;
pub mod watcher;
pub mod worker;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rayon::prelude::*;

// What the api and the CLI may name, all from here (`crate::engine::X`):
// the engine, its two doors (`EngineHandle` for the api beside a running
// engine, `Database` for the commands on a file) and plain data. Neither
// names a module of the engine (the integration test
// `layout::the_api_and_the_cli_enter_the_engine_only_through_its_doors`
// keeps it so), so each table has one owner inside the engine.
pub use clock::{TIMESTAMP_FORMAT, format_local};
pub use config::{
    Config, DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE, DEFAULT_DB, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_FILE_SIZE, DEFAULT_RETENTION, DEFAULT_RETRY_BACKOFF, DEFAULT_SETTLE,
};
pub use database::{Database, DatabaseStatus, DiffLookup, LogEntry, build_search_index};
pub use db::CheckpointMode;
pub use diff::UnifiedDiff;
pub use enqueue::WatchConfig;
pub use error::{EngineError, ItemError};
pub use handle::{EngineHandle, EngineStatus, History, TrackOutcome};
pub use hash::Digest;
pub use history::{
    Activity, Counts, DiffRow, FileRow, HistoryError, MAX_LIMIT, Period, Source, TimeAnalysis,
    VersionRow, limit as request_limit, to_unix,
};
pub use paths::{MAX_PATH_BYTES, PathError, inside_root, resolve as resolve_path};
pub use patterns::{ApiPatterns, DEFAULT_IGNORE, DEFAULT_WATCH, IGNORE_FILE, WATCH_FILE};
pub use progress::{CommitHook, Progress, ProgressSnapshot};
pub use queue::{ChangeKind, FailedRow, NewEvent, QueueCounts};
pub use read::ReadError;
pub use replica::{ReplicaGuard, open as open_replica};
pub use search::{
    BackfillGuard, Hit, IndexProgress, QueryError, SearchError, SearchOptions, fts_query,
};

use db::{Checkpointer, EngineLock, ReaderPool, SharedPool};
use enqueue::{Control, Enqueuer, EnqueuerParts};
use patterns::{Patterns, SharedPatterns};
use progress::Doorbell;
use queue::QueueRow;
use reconcile::ReconcileReport;
use store::{Computed, NextClaim, Store};
use watcher::FsEvent;
use worker::WorkerConfig;

/// A batch handed to the workers: its rows' ids (to give them back when the
/// engine stops before the batch is computed) and where its results come.
struct InFlight {
    ids: Vec<queue::QueueId>,
    rx: mpsc::Receiver<Vec<Computed>>,
}

/// A file's device and inode.
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Cases per property test ("fuzz") run: 512 in CI, or `PROPTEST_CASES` for
/// a longer run (`PROPTEST_CASES=200000 cargo test --lib fuzz`).
#[cfg(test)]
pub(crate) fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Connections the api may use at once (its own pool).
const API_POOL_SIZE: u32 = 16;

/// Whether the work that [`Engine::maintenance`] follows is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Burst {
    /// The queue drained (`scan`) or the engine is stopping.
    Ended,
    /// An idle `run`: more work may come at any moment.
    MayGoOn,
}

/// How often an idle engine prunes done rows and checkpoints the WAL.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(60);

/// How long after its last commit an idle engine gives the memory that work
/// used back ([`Engine::give_back_memory`]): long enough that a burst of
/// edits a few hundred milliseconds apart keeps its caches.
const GIVE_BACK_AFTER: Duration = Duration::from_secs(2);

/// Batches in flight at once: one computing while the other is committed.
const PIPELINE_DEPTH: usize = 2;
/// How often the writer, waiting for a batch, looks whether it should stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// When [`Engine::process`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// When no row is pending or claimed any more (`scan`).
    Drained,
    /// Only when the stop flag is set (`run`).
    Stopped,
}

/// A running engine on one database and root.
pub struct Engine {
    config: Config,
    store: Store,
    readers: ReaderPool,
    workers: rayon::ThreadPool,
    worker_cfg: Arc<WorkerConfig>,
    progress: Arc<Progress>,
    doorbell: Arc<Doorbell>,
    checkpointer: Checkpointer,
    /// The watcher's event channel; the receiver is taken by the enqueuer.
    events: (mpsc::SyncSender<FsEvent>, Option<mpsc::Receiver<FsEvent>>),
    /// The enqueuer's control channel; the receiver is taken by the enqueuer.
    control: (mpsc::Sender<Control>, Option<mpsc::Receiver<Control>>),
    started: Instant,
    /// When [`Engine::process`] last found the queue drained (`Until::Drained`),
    /// before its final maintenance and checkpoint.
    drained_at: Option<Instant>,
    /// The database file's device and inode when opened: a path that no
    /// longer leads to it stops the engine ([`Engine::check_database_file`]).
    db_file: (u64, u64),
    _lock: EngineLock,
}

impl Engine {
    /// Locks and opens the database, loads the patterns and returns rows left
    /// claimed by a dead process to pending.
    ///
    /// # Errors
    /// [`EngineError::Locked`] when another engine runs on the database; any
    /// error of [`db::open_writer`] or [`Patterns::load`].
    pub fn open(config: Config) -> Result<Engine, EngineError> {
        let patterns = Patterns::load(&config.root)?.exclude(config.own_files());
        if patterns.watches_nothing() {
            tracing::warn!(root = %config.root.display(), ".obbywatch selects nothing: no file will be tracked");
        }
        let lock = EngineLock::acquire(&config.db)?;
        let conn = db::open_writer_with(&config.db, config.checkpoint)?;
        let db_file = file_id(&config.db).map_err(|source| EngineError::Io {
            path: config.db.clone(),
            source,
        })?;
        tracing::info!(
            db = %config.db.display(),
            root = %config.root.display(),
            checkpoint = %config.checkpoint,
            "using database"
        );
        // The first writes are here: a read-only file (or side file) is
        // said as such.
        let sql = |source| EngineError::from_sqlite(&config.db, source);
        // The root this database's paths are under, for the search's
        // sake and to say so when the vault was moved or another root
        // shares the file: its history names files under the old root.
        let root_text = config.root.to_string_lossy();
        match db::meta_get(&conn, db::ROOT_KEY).map_err(sql)? {
            Some(old) if old != root_text => tracing::warn!(
                recorded = %old,
                root = %root_text,
                "this database was last used with another root: its history names the files \
                 under the recorded one, and the files here are recorded as new"
            ),
            _ => {}
        }
        db::meta_set(&conn, db::ROOT_KEY, &root_text).map_err(sql)?;
        let (released, failed) = queue::requeue_claimed(&conn, &config.policy).map_err(sql)?;
        if released > 0 {
            tracing::info!(
                rows = released,
                "returned rows claimed by a stopped engine to the queue"
            );
        }
        if failed > 0 {
            tracing::warn!(
                rows = failed,
                "gave up on rows the engine stopped while processing, at their last attempt"
            );
        }
        // The patterns again, now with those the api added (kept in sync_meta).
        let api = db::api_patterns(&conn).map_err(sql)?;
        let patterns = Patterns::load_with(&config.root, &api)?.exclude(config.own_files());
        let progress = Arc::new(Progress::default());
        // Rows given up at start-up are this run's failures too.
        let given_up = progress::BatchStats {
            rows: failed as u64,
            failed: failed as u64,
            ..Default::default()
        };
        progress.record(&given_up, None);
        let store = Store::new(conn, config.policy, progress.clone()).map_err(sql)?;
        let workers = rayon::ThreadPoolBuilder::new()
            .num_threads(config.workers.max(1))
            .thread_name(|i| format!("obby-worker-{i}"))
            // A panic outside the per-row guard (see `spawn_compute`) drops
            // the batch's channel, which the writer reports as WorkerLost,
            // instead of aborting the process.
            .panic_handler(|_| tracing::error!("a worker job panicked outside its rows"))
            .build()
            .map_err(|e| EngineError::Io {
                path: config.root.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let readers = db::reader_pool_with(
            &config.db,
            u32::try_from(config.workers + 3).unwrap_or(8),
            config.checkpoint,
        )?;
        let checkpointer = Checkpointer::start(&config.db, &readers, config.checkpoint)?;
        checkpointer.adopt(store.conn()).map_err(sql)?;
        let (event_tx, event_rx) = mpsc::sync_channel(enqueue::EVENT_CHANNEL_CAPACITY);
        let (control_tx, control_rx) = mpsc::channel();
        let worker_cfg = Arc::new(WorkerConfig {
            root: config.root.clone(),
            own_files: config.own_files(),
            max_file_size: config.max_file_size,
            patterns: SharedPatterns::new(patterns),
            settle: config.settle,
            debounce_ms: Arc::new(AtomicU64::new(0)),
            max_wait_ms: Arc::new(AtomicU64::new(0)),
            faults: worker::Faults::from_env(),
        });
        Ok(Engine {
            db_file,
            config,
            store,
            readers,
            workers,
            worker_cfg,
            progress,
            doorbell: Arc::new(Doorbell::default()),
            checkpointer,
            events: (event_tx, Some(event_rx)),
            control: (control_tx, Some(control_rx)),
            started: Instant::now(),
            drained_at: None,
            _lock: lock,
        })
    }

    /// A handle for the api, with a connection pool of its own.
    ///
    /// # Errors
    /// [`EngineError::Pool`] when the pool's first connection cannot be made.
    pub fn handle(&self) -> Result<EngineHandle, EngineError> {
        Ok(EngineHandle {
            root: self.config.root.clone(),
            db: self.config.db.clone(),
            readers: SharedPool::new(db::reader_pool_with(
                &self.config.db,
                API_POOL_SIZE,
                self.config.checkpoint,
            )?),
            read_only: false,
            progress: self.progress.clone(),
            doorbell: self.doorbell.clone(),
            control: self.control.0.clone(),
            nudge: self.events.0.clone(),
            patterns: self.worker_cfg.patterns.clone(),
            max_file_size: self.config.max_file_size,
            own_files: self.config.own_files().into(),
            started: self.started,
        })
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When [`Engine::process`] last found the queue drained, before the
    /// checkpoint that ends the burst (`scan` reports the difference).
    pub fn drained_at(&self) -> Option<Instant> {
        self.drained_at
    }

    /// Counters of committed work, shared with whoever displays them.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Queue row counts per status.
    ///
    /// # Errors
    /// Any database error.
    pub fn queue_counts(&self) -> Result<QueueCounts, EngineError> {
        queue::counts(self.store.conn()).map_err(|e| self.sql(e))
    }

    fn sql(&self, source: rusqlite::Error) -> EngineError {
        EngineError::from_sqlite(&self.config.db, source)
    }

    /// Walks the root and enqueues every difference from `sync_files`.
    ///
    /// # Errors
    /// Database errors.
    pub fn reconcile(&mut self) -> Result<ReconcileReport, EngineError> {
        let root = self.config.root.clone();
        self.reconcile_scope(&root)
    }

    /// Reconciles only `scope`, a folder under the root.
    ///
    /// # Errors
    /// Database errors.
    pub fn reconcile_scope(&mut self, scope: &Path) -> Result<ReconcileReport, EngineError> {
        let started = Instant::now();
        let patterns = self.worker_cfg.patterns.get();
        let report = reconcile::reconcile(self.store.conn(), &patterns, scope)?;
        let stamp = clock::format_local(chrono::Local::now());
        self.store
            .conn()
            .execute(
                "INSERT INTO sync_meta (key, value) VALUES ('last_reconcile', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [stamp],
            )
            .map_err(|e| self.sql(e))?;
        tracing::info!(
            seen = report.seen,
            new = report.new,
            changed = report.changed,
            gone = report.gone,
            moved = report.moved,
            ms = started.elapsed().as_millis() as u64,
            "reconciled"
        );
        Ok(report)
    }

    /// Runs the pipeline until `until` says so or `stop` is set. After each
    /// committed batch, `on_batch` sees the counters.
    ///
    /// # Errors
    /// Database errors other than a busy database (those are retried), and
    /// [`EngineError::WorkerLost`].
    pub fn process(
        &mut self,
        until: Until,
        stop: &AtomicBool,
        on_batch: &mut dyn FnMut(&ProgressSnapshot),
    ) -> Result<(), EngineError> {
        // Batches being computed, oldest first: one computes while the
        // writer commits the other, and each commit claims the next batch
        // in its own transaction. A claim of its own is only made to fill
        // the pipeline (at the start, or when work arrives while idle).
        let mut inflight: VecDeque<InFlight> = VecDeque::new();
        let mut last_maintenance = Instant::now();
        // The last commit, until the memory its work used is given back.
        let mut last_commit: Option<Instant> = None;
        let mut data_version = self.data_version()?;
        let mut claim_next = true;
        let next_claim = NextClaim {
            limit: self.config.batch_size,
            max_bytes: self.config.batch_bytes,
        };
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if !stopping && claim_next && inflight.len() < PIPELINE_DEPTH {
                let (rows, held) = self.with_busy_retry(stop, |conn| {
                    queue::claim(conn, next_claim.limit, next_claim.max_bytes)
                })?;
                self.progress.record_write(held);
                if rows.is_empty() {
                    claim_next = false;
                } else {
                    inflight.push_back(self.spawn_compute(rows));
                    if inflight.len() < PIPELINE_DEPTH {
                        continue;
                    }
                }
            }
            if let Some(batch) = inflight.pop_front() {
                // A stop does not wait for work still being computed (a
                // huge note can take seconds): its rows go back to the
                // queue for the next start; work already done commits.
                let computed = loop {
                    match batch.rx.recv_timeout(STOP_POLL) {
                        Ok(computed) => break Some(computed),
                        Err(mpsc::RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => {
                            break None;
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(EngineError::WorkerLost);
                        }
                    }
                };
                let Some(computed) = computed else {
                    let keep_trying = AtomicBool::new(false);
                    let released = self
                        .with_busy_retry(&keep_trying, |conn| queue::unclaim(conn, &batch.ids))?;
                    tracing::info!(
                        rows = released,
                        "stopping: rows still being processed go back to the queue"
                    );
                    continue;
                };
                self.check_database_file()?;
                let next = (!stop.load(Ordering::Relaxed)).then_some(next_claim);
                let store = &mut self.store;
                let (_, rows) =
                    with_busy_retry(&self.config.db, stop, || store.commit(&computed, next))?;
                if next.is_some() {
                    claim_next = !rows.is_empty();
                }
                if !rows.is_empty() {
                    inflight.push_back(self.spawn_compute(rows));
                }
                last_commit = Some(Instant::now());
                on_batch(&self.progress.snapshot());
                continue;
            }
            if stopping {
                self.maintenance(Burst::Ended);
                return Ok(());
            }
            // Idle: nothing claimed and nothing in flight.
            self.check_database_file()?;
            let conn = self.store.conn();
            if until == Until::Drained && !queue::has_outstanding(conn).map_err(|e| self.sql(e))? {
                self.drained_at = Some(Instant::now());
                self.maintenance(Burst::Ended);
                return Ok(());
            }
            if last_maintenance.elapsed() >= MAINTENANCE_INTERVAL {
                self.maintenance(Burst::MayGoOn);
                last_maintenance = Instant::now();
            }
            if last_commit.is_some_and(|at| at.elapsed() >= GIVE_BACK_AFTER) {
                self.give_back_memory();
                last_commit = None;
            }
            // Wait for a reason to claim: a producer in this process rang,
            // another process committed (data_version moves), or a row in
            // backoff comes due. Claiming is a write; an idle engine does none.
            let due_in = queue::next_due_ms(self.store.conn())
                .map_err(|e| self.sql(e))?
                .map(|due| due.saturating_sub(clock::now_ms()));
            let wait = match due_in {
                Some(ms) if ms <= 0 => Duration::ZERO,
                Some(ms) => self
                    .config
                    .idle_poll
                    .min(Duration::from_millis(ms.unsigned_abs())),
                None => self.config.idle_poll,
            };
            let rung = !wait.is_zero() && self.doorbell.wait(wait);
            let now_version = self.data_version()?;
            let came_due =
                due_in.is_some_and(|ms| ms <= i64::try_from(wait.as_millis()).unwrap_or(i64::MAX));
            claim_next = rung || came_due || now_version != data_version;
            data_version = now_version;
            if wait.is_zero() && !rung {
                // Due rows that a claim just skipped (their paths are held by
                // an unexpired claim): do not spin.
                self.doorbell.wait(self.config.idle_poll);
            }
        }
    }

    /// Fails when the database's path no longer leads to the file the
    /// engine opened (deleted, or replaced by another): its writes would be
    /// lost with the unlinked file, and another engine could start on a
    /// new file at that path, whose lock is not the one held here.
    ///
    /// # Errors
    /// [`EngineError::DatabaseGone`].
    fn check_database_file(&self) -> Result<(), EngineError> {
        match file_id(&self.config.db) {
            Ok(id) if id == self.db_file => Ok(()),
            _ => Err(EngineError::DatabaseGone {
                path: self.config.db.clone(),
            }),
        }
    }

    /// `run`: starts the watcher (events buffer from this moment), reconciles
    /// what changed while the engine was down, then processes the queue until
    /// `stop` is set. The watcher's thread flushes what it holds before the
    /// processing loop ends.
    ///
    /// # Errors
    /// As [`Engine::process`], and watcher set-up or queue-write failures.
    pub fn watch_and_process(
        &mut self,
        watch: WatchConfig,
        stop: Arc<AtomicBool>,
        on_batch: &mut dyn FnMut(&ProgressSnapshot),
    ) -> Result<(), EngineError> {
        // One settle rule whatever found a change: a file is read once it
        // has been quiet for the debounce, so a change found by a rescan or
        // the start-up reconciliation waits as long as one the watcher saw
        // (whose last event is already a debounce old by then).
        // The enqueuer updates the shared debounce when the api changes it.
        let debounce_ms = self.worker_cfg.debounce_ms.clone();
        debounce_ms.store(
            u64::try_from(watch.debounce.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        // And a file that never settles is read every `max_wait`, as the
        // debouncer hands it on (`--max-wait-ms`).
        let max_wait_ms = self.worker_cfg.max_wait_ms.clone();
        max_wait_ms.store(
            u64::try_from(watch.max_wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let conn = db::open_writer_with(&self.config.db, self.config.checkpoint)?;
        self.checkpointer.adopt(&conn).map_err(|e| self.sql(e))?;
        let (Some(event_rx), Some(control_rx)) = (self.events.1.take(), self.control.1.take())
        else {
            return Err(EngineError::Watch {
                root: self.config.root.clone(),
                message: "the watcher was already started".into(),
            });
        };
        let (enqueuer, rx) = Enqueuer::start(
            EnqueuerParts {
                root: self.config.root.clone(),
                conn,
                patterns: self.worker_cfg.patterns.clone(),
                own_files: self.config.own_files(),
                cfg: watch,
                debounce_ms,
                max_wait_ms,
                doorbell: self.doorbell.clone(),
                control: control_rx,
            },
            (self.events.0.clone(), event_rx),
        )?;
        let watcher_stop = Arc::new(AtomicBool::new(false));
        let thread_stop = watcher_stop.clone();
        let engine_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("obby-watch".into())
            .spawn(move || {
                let result = enqueuer.run(rx, &thread_stop);
                if result.is_err() {
                    // A watcher that cannot write the queue stops the engine.
                    engine_stop.store(true, Ordering::Relaxed);
                }
                result
            })
            .map_err(|source| EngineError::Io {
                path: self.config.root.clone(),
                source,
            })?;
        let result = self
            .reconcile()
            .and_then(|_| self.process(Until::Stopped, &stop, on_batch));
        watcher_stop.store(true, Ordering::Relaxed);
        // Wake the enqueuer now rather than at its next tick (a full
        // channel wakes it anyway).
        let _ = self.events.0.try_send(FsEvent::Nudge);
        let watched = handle.join().unwrap_or(Err(EngineError::WorkerLost));
        result.and(watched)
    }

    fn data_version(&self) -> Result<i64, EngineError> {
        self.store
            .conn()
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.sql(e))
    }

    /// Prunes old done rows and checkpoints the WAL as the checkpoint mode
    /// says; failures only log. At the end of a burst the checkpoint waits
    /// for one the checkpointer thread has in progress; in an idle `run`,
    /// where a change may arrive at any moment, it is skipped instead.
    fn maintenance(&self, burst: Burst) {
        let retention = i64::try_from(self.config.retention.as_millis()).unwrap_or(i64::MAX);
        match queue::prune_done(self.store.conn(), clock::now_ms().saturating_sub(retention)) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(rows = n, "pruned done queue rows"),
            Err(e) => tracing::warn!(error = %e, "could not prune the queue"),
        }
        match burst {
            Burst::Ended => self.checkpointer.drained(self.store.conn()),
            Burst::MayGoOn => self.checkpointer.idle(self.store.conn()),
        }
        // For people and tests outside the process: how long this engine has
        // held the write lock at most, since it started.
        let longest = self.progress.snapshot().longest_write_us as f64 / 1000.0;
        if let Err(e) = db::meta_set(
            self.store.conn(),
            "longest_write_ms",
            &format!("{longest:.3}"),
        ) {
            tracing::debug!(error = %e, "could not record the longest write");
        }
    }

    /// Gives back what an idle engine does not need: the page caches of the
    /// writer and of the workers' idle read connections, then the
    /// allocator's free memory ([`memory::give_back`]).
    fn give_back_memory(&self) {
        memory::shrink(self.store.conn());
        // Held at once, so each idle connection is taken exactly once.
        let idle = self.readers.state().idle_connections;
        let held: Vec<_> = (0..idle).filter_map(|_| self.readers.try_get()).collect();
        for conn in &held {
            memory::shrink(conn);
        }
        drop(held);
        memory::give_back();
    }

    fn spawn_compute(&self, batch: Vec<QueueRow>) -> InFlight {
        let ids = batch.iter().map(|row| row.id).collect();
        let (tx, rx) = mpsc::sync_channel(1);
        let readers = self.readers.clone();
        let cfg = self.worker_cfg.clone();
        self.workers.spawn(move || {
            let computed: Vec<Computed> = batch
                .into_par_iter()
                .map_init(
                    || readers.get(),
                    |conn, row| {
                        let result = match conn {
                            // A panic fails this row alone. Nothing the
                            // closure touches outlives it but `conn`, whose
                            // statements are reset when dropped or reused.
                            Ok(conn) => {
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    worker::process(&row, conn, &cfg)
                                }))
                                .unwrap_or_else(|payload| {
                                    Err(ItemError::Panicked {
                                        path: row.path.clone(),
                                        message: panic_message(payload.as_ref()),
                                    })
                                })
                            }
                            Err(e) => Err(ItemError::Pool {
                                path: row.path.clone(),
                                message: e.to_string(),
                            }),
                        };
                        Computed { row, result }
                    },
                )
                .collect();
            // The receiver disappears when the engine is gone, or stopped
            // without waiting for this batch (its rows were given back).
            let _ = tx.send(computed);
        });
        InFlight { ids, rx }
    }

    fn with_busy_retry<T>(
        &self,
        stop: &AtomicBool,
        mut f: impl FnMut(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, EngineError> {
        let conn = self.store.conn();
        with_busy_retry(&self.config.db, stop, || f(conn))
    }
}

/// [`db::retry_busy`], with the error mapped for `db`.
fn with_busy_retry<T>(
    db: &Path,
    stop: &AtomicBool,
    f: impl FnMut() -> rusqlite::Result<T>,
) -> Result<T, EngineError> {
    db::retry_busy(stop, f).map_err(|e| EngineError::from_sqlite(db, e))
}

/// The text of a caught panic (a `&str` or `String` payload, as `panic!` makes).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
