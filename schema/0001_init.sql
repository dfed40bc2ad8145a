-- 0001_init.sql: the Obby tables (see CONTRACT.md) and the engine's own tables.
--
-- Append-only: once a release has applied this file it is never edited; a schema
-- change is a new numbered file. Every statement is IF NOT EXISTS because an
-- existing obby.db written by the Python backend is adopted in place: its tables
-- are kept, and the engine's extra columns are added to them before this runs.
--
-- All DATETIME columns of the Obby tables hold local time as text,
-- 'YYYY-MM-DD HH:MM:SS.ffffff', the form Python's sqlite3 binds a datetime in.

-- ---------------------------------------------------------------- Obby tables

CREATE TABLE IF NOT EXISTS file_versions (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path          TEXT NOT NULL,
    content_hash       TEXT NOT NULL,
    content            TEXT,
    line_count         INTEGER,
    size               INTEGER,
    timestamp          DATETIME,
    change_description TEXT
);
CREATE INDEX IF NOT EXISTS idx_file_versions_path_time ON file_versions(file_path, timestamp);

CREATE TABLE IF NOT EXISTS content_diffs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path      TEXT NOT NULL,
    old_version_id INTEGER REFERENCES file_versions(id),
    new_version_id INTEGER REFERENCES file_versions(id),
    change_type    TEXT,
    diff_content   TEXT,
    lines_added    INTEGER,
    lines_removed  INTEGER,
    timestamp      DATETIME
);
CREATE INDEX IF NOT EXISTS idx_content_diffs_time ON content_diffs(timestamp);
CREATE INDEX IF NOT EXISTS idx_content_diffs_new_version ON content_diffs(new_version_id);

CREATE TABLE IF NOT EXISTS file_changes (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path        TEXT NOT NULL,
    change_type      TEXT,
    old_content_hash TEXT,
    new_content_hash TEXT,
    content_hash     TEXT,
    timestamp        DATETIME,
    -- engine additions: where a move came from, and the rows this change wrote
    old_path         TEXT,
    version_id       INTEGER,
    diff_id          INTEGER
);
CREATE INDEX IF NOT EXISTS idx_file_changes_time ON file_changes(timestamp);
CREATE INDEX IF NOT EXISTS idx_file_changes_path ON file_changes(file_path);

CREATE TABLE IF NOT EXISTS file_states (
    file_path     TEXT PRIMARY KEY,
    content_hash  TEXT,
    last_modified DATETIME,
    line_count    INTEGER,
    file_size     INTEGER,
    updated_at    DATETIME,
    is_deleted    INTEGER DEFAULT 0,
    -- engine additions: exact mtime for reconciliation, and the current version
    mtime_ns      INTEGER,
    version_id    INTEGER
);
CREATE INDEX IF NOT EXISTS idx_file_states_last_modified ON file_states(last_modified);

CREATE TABLE IF NOT EXISTS events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    type       TEXT,
    path       TEXT,
    timestamp  DATETIME,
    size       INTEGER,
    processed  BOOLEAN DEFAULT 0,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    -- engine addition: where a move came from
    old_path   TEXT
);
CREATE INDEX IF NOT EXISTS idx_events_time ON events(timestamp);

-- -------------------------------------------------------------- engine tables

-- The durable work queue. A row goes pending -> claimed -> done, or back to
-- pending (retry with backoff, or a lease that expired) and finally failed.
-- Times are unix milliseconds: they are compared, never shown (see the views).
CREATE TABLE IF NOT EXISTS event_queue (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    path           TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('created', 'modified', 'deleted', 'moved')),
    old_path       TEXT,
    status         TEXT    NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'claimed', 'done', 'failed')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    source         TEXT    NOT NULL DEFAULT 'cli',
    enqueued_ms    INTEGER NOT NULL,
    available_ms   INTEGER NOT NULL,
    claimed_ms     INTEGER,
    lease_until_ms INTEGER,
    done_ms        INTEGER,
    change_id      INTEGER
);
-- Pending events for one path coalesce into one row (enqueue upserts on this).
CREATE UNIQUE INDEX IF NOT EXISTS event_queue_one_pending_per_path
    ON event_queue(path) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS event_queue_by_status ON event_queue(status, id);

-- Small key/value facts: schema owner, last reconciliation, engine start.
CREATE TABLE IF NOT EXISTS sync_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- ------------------------------------------------------- views for sqlite3 users

CREATE VIEW IF NOT EXISTS recent_changes AS
SELECT fc.id, fc.timestamp, fc.change_type, fc.file_path, fc.old_path,
       cd.lines_added, cd.lines_removed, fc.version_id
FROM file_changes fc
LEFT JOIN content_diffs cd ON cd.id = fc.diff_id
ORDER BY fc.id DESC;

CREATE VIEW IF NOT EXISTS file_history AS
SELECT fv.file_path, fv.id AS version_id, fv.timestamp, fv.change_description,
       fv.size, fv.line_count, fv.content_hash,
       cd.change_type, cd.lines_added, cd.lines_removed
FROM file_versions fv
LEFT JOIN content_diffs cd ON cd.new_version_id = fv.id
ORDER BY fv.file_path, fv.id;

CREATE VIEW IF NOT EXISTS queue_summary AS
SELECT status, COUNT(*) AS rows,
       datetime(MIN(enqueued_ms) / 1000, 'unixepoch', 'localtime') AS oldest,
       MAX(attempts) AS max_attempts
FROM event_queue
GROUP BY status;

CREATE VIEW IF NOT EXISTS queue_failures AS
SELECT id, path, kind, attempts, last_error,
       datetime(enqueued_ms / 1000, 'unixepoch', 'localtime') AS enqueued
FROM event_queue
WHERE status = 'failed'
ORDER BY id;
