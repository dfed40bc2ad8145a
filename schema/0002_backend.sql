-- 0002_backend.sql: everything else the backend's schema.sql creates, so the
-- backend can live in a database obby-sync made (CONTRACT.md section 5), and
-- the engine's own table of file states.
--
-- Runs after the five shared tables have been conformed to
-- schema/shared_tables.sql. Every statement is idempotent (IF NOT EXISTS,
-- INSERT OR IGNORE): on a database the backend made, its own tables, indexes,
-- triggers and rows are found in place and kept as they are.

CREATE TABLE IF NOT EXISTS semantic_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    version_id INTEGER REFERENCES file_versions(id) ON DELETE CASCADE,
    timestamp DATETIME NOT NULL,
    date TEXT NOT NULL,
    time TEXT NOT NULL,
    type TEXT NOT NULL,
    summary TEXT NOT NULL,
    impact TEXT NOT NULL CHECK (impact IN ('minor', 'moderate', 'significant')),
    file_path TEXT NOT NULL,
    searchable_text TEXT NOT NULL,
    markdown_file_path TEXT,
    source_type TEXT DEFAULT 'living_note',
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS semantic_topics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id INTEGER NOT NULL REFERENCES semantic_entries(id) ON DELETE CASCADE,
    topic TEXT NOT NULL,
    UNIQUE(entry_id, topic)
);

CREATE TABLE IF NOT EXISTS semantic_keywords (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    entry_id INTEGER NOT NULL REFERENCES semantic_entries(id) ON DELETE CASCADE,
    keyword TEXT NOT NULL,
    UNIQUE(entry_id, keyword)
);

CREATE TABLE IF NOT EXISTS config_values (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('int', 'str', 'bool', 'json')),
    description TEXT,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS living_note_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    date TEXT NOT NULL,
    focus TEXT,
    changes_count INTEGER DEFAULT 0,
    insights TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS living_note_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id INTEGER REFERENCES living_note_sessions(id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    word_count INTEGER NOT NULL,
    timestamp DATETIME NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS watch_patterns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('include', 'exclude')),
    enabled BOOLEAN DEFAULT TRUE,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS migration_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    migration_name TEXT NOT NULL,
    executed_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    error_message TEXT,
    records_migrated INTEGER DEFAULT 0
);

CREATE VIRTUAL TABLE IF NOT EXISTS semantic_search USING fts5(
    summary, searchable_text, content='semantic_entries', content_rowid='id'
);

CREATE TRIGGER IF NOT EXISTS semantic_search_insert AFTER INSERT ON semantic_entries BEGIN
    INSERT INTO semantic_search(rowid, summary, searchable_text)
    VALUES (new.id, new.summary, new.searchable_text);
END;
CREATE TRIGGER IF NOT EXISTS semantic_search_delete AFTER DELETE ON semantic_entries BEGIN
    INSERT INTO semantic_search(semantic_search, rowid, summary, searchable_text)
    VALUES ('delete', old.id, old.summary, old.searchable_text);
END;
CREATE TRIGGER IF NOT EXISTS semantic_search_update AFTER UPDATE ON semantic_entries BEGIN
    INSERT INTO semantic_search(semantic_search, rowid, summary, searchable_text)
    VALUES ('delete', old.id, old.summary, old.searchable_text);
    INSERT INTO semantic_search(rowid, summary, searchable_text)
    VALUES (new.id, new.summary, new.searchable_text);
END;

-- Also finds the newest version of a path (WHERE file_path = ? ORDER BY id DESC).
CREATE INDEX IF NOT EXISTS idx_file_versions_path ON file_versions(file_path);
CREATE INDEX IF NOT EXISTS idx_file_versions_hash ON file_versions(content_hash);
CREATE INDEX IF NOT EXISTS idx_file_versions_timestamp ON file_versions(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_content_diffs_path ON content_diffs(file_path);
CREATE INDEX IF NOT EXISTS idx_content_diffs_timestamp ON content_diffs(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_file_changes_path ON file_changes(file_path);
CREATE INDEX IF NOT EXISTS idx_file_changes_timestamp ON file_changes(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_file_states_path ON file_states(file_path);
CREATE INDEX IF NOT EXISTS idx_file_states_hash ON file_states(content_hash);
CREATE INDEX IF NOT EXISTS idx_events_type ON events(type);
CREATE INDEX IF NOT EXISTS idx_events_path ON events(path);
CREATE INDEX IF NOT EXISTS idx_events_processed ON events(processed);
CREATE INDEX IF NOT EXISTS idx_semantic_entries_file_path ON semantic_entries(file_path);
CREATE INDEX IF NOT EXISTS idx_semantic_entries_timestamp ON semantic_entries(timestamp DESC);
CREATE INDEX IF NOT EXISTS idx_semantic_entries_version ON semantic_entries(version_id);
CREATE INDEX IF NOT EXISTS idx_semantic_topics_topic ON semantic_topics(topic);
CREATE INDEX IF NOT EXISTS idx_semantic_keywords_keyword ON semantic_keywords(keyword);

CREATE VIEW IF NOT EXISTS daily_file_stats AS
SELECT DATE(timestamp) AS date, COUNT(*) AS total_changes,
       COUNT(DISTINCT file_path) AS files_changed,
       SUM(lines_added) AS lines_added, SUM(lines_removed) AS lines_removed
FROM content_diffs GROUP BY DATE(timestamp);

CREATE VIEW IF NOT EXISTS file_change_frequency AS
SELECT file_path, COUNT(*) AS change_count, MAX(timestamp) AS last_changed
FROM file_changes GROUP BY file_path;

CREATE VIEW IF NOT EXISTS recent_file_activity AS
SELECT fc.file_path, fc.change_type, fc.timestamp, fs.file_size, fs.line_count
FROM file_changes fc LEFT JOIN file_states fs ON fs.file_path = fc.file_path
ORDER BY fc.timestamp DESC;

CREATE TRIGGER IF NOT EXISTS validate_file_versions_timestamp
BEFORE INSERT ON file_versions
WHEN NEW.timestamp > datetime('now', '+1 day')
BEGIN
    SELECT RAISE(ABORT, 'file_versions.timestamp cannot be more than a day in the future');
END;

CREATE TRIGGER IF NOT EXISTS validate_events_timestamp
BEFORE INSERT ON events
WHEN NEW.timestamp > datetime('now', '+1 day')
BEGIN
    SELECT RAISE(ABORT, 'events.timestamp cannot be more than a day in the future');
END;

CREATE TRIGGER IF NOT EXISTS validate_content_hash
BEFORE INSERT ON file_versions
WHEN length(NEW.content_hash) != 64 OR NEW.content_hash NOT GLOB '[0-9a-f]*'
BEGIN
    SELECT RAISE(ABORT, 'file_versions.content_hash must be a lowercase SHA-256');
END;

INSERT OR IGNORE INTO config_values (key, value, type, description) VALUES
    ('checkInterval', '20', 'int', 'Seconds between file checks'),
    ('openaiModel', 'gpt-4.1-mini', 'str', 'Model used for summaries'),
    ('maxFileVersions', '100', 'int', 'Versions kept per file'),
    ('enableRealTimeUpdates', 'true', 'bool', 'Push live updates to the UI'),
    ('fileMonitoringEnabled', 'true', 'bool', 'Watch the notes folder'),
    ('dbVersion', '3.0.0-file-based', 'str', 'Database schema version');

-- ------------------------------------------------------- the engine's own truth

-- What reconciliation and the store's compare-and-set rely on, one row per
-- path the engine has seen. Only obby-sync writes this table: file_states is an
-- output for the backend (whose monitor rewrites it with INSERT OR REPLACE),
-- never read back as the truth.
CREATE TABLE IF NOT EXISTS sync_files (
    path         TEXT PRIMARY KEY,
    -- bytes on disk and mtime (ns) at the last look; NULL = look again
    size         INTEGER,
    mtime_ns     INTEGER,
    -- the content's hash and the version the engine last wrote or saw for it
    content_hash TEXT,
    version_id   INTEGER,
    -- 1 once the file is gone
    deleted      INTEGER NOT NULL DEFAULT 0
);

-- First start on an existing file: take over what file_states says, with the
-- newest version of each path. mtime_ns is left NULL so the first
-- reconciliation looks at every file once (a stat and a hash, no new version
-- for unchanged content).
INSERT OR IGNORE INTO sync_files (path, size, mtime_ns, content_hash, version_id, deleted)
SELECT fs.file_path, fs.file_size, NULL, fs.content_hash,
       (SELECT MAX(fv.id) FROM file_versions fv WHERE fv.file_path = fs.file_path),
       CASE WHEN fs.is_deleted = 1 OR fs.content_hash IS NULL THEN 1 ELSE 0 END
FROM file_states fs;

-- Files an older obby-sync marked deleted keep their last hash in file_states;
-- the backend marks a gone file by a NULL hash with no lines and no bytes.
-- sync_files (above) has taken the hash over.
UPDATE file_states SET content_hash = NULL, line_count = 0, file_size = 0
WHERE is_deleted = 1 AND content_hash IS NOT NULL;

-- 0001's timestamp indexes that the backend's own (timestamp DESC) repeat:
-- one index is enough, and every extra one slows every insert.
DROP INDEX IF EXISTS idx_content_diffs_time;
DROP INDEX IF EXISTS idx_file_changes_time;
