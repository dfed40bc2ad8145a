-- shared_tables.sql: the shape of the five tables obby-sync shares with Obby's
-- Python backend (CONTRACT.md sections 1 and 5).
--
-- Not a numbered migration: a declaration. The backend creates these tables
-- itself when it makes the file first, and obby-sync may find them in the
-- shape of an older obby-sync build, so every open compares each table with
-- this file and conforms it (src/engine/schema.rs): a missing table is
-- created, a missing column added, and a table whose constraints differ
-- rebuilt with every row and id kept (SQLite's table-rebuild procedure, with
-- foreign keys off so nothing that references a version cascades).
--
-- The backend's own schema.sql, with four differences, all additions but one:
--   * file_versions.size: bytes on disk (contract section 1);
--   * file_changes.old_path, version_id, diff_id and events.old_path: where a
--     move came from and which rows a change wrote;
--   * file_states.is_deleted: 1 once a file is gone (contract section 1);
--   * file_versions has no UNIQUE(file_path, content_hash): with it, a file
--     that returns to an earlier content could not get a version of its own,
--     and a revert would vanish from the history. The one constraint removed.

CREATE TABLE IF NOT EXISTS file_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    content TEXT,
    line_count INTEGER DEFAULT 0,
    timestamp DATETIME NOT NULL,
    change_description TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    size INTEGER
);

CREATE TABLE IF NOT EXISTS content_diffs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path TEXT NOT NULL,
    old_version_id INTEGER REFERENCES file_versions(id) ON DELETE CASCADE,
    new_version_id INTEGER REFERENCES file_versions(id) ON DELETE CASCADE,
    change_type TEXT NOT NULL CHECK (change_type IN ('created', 'modified', 'deleted', 'moved')),
    diff_content TEXT,
    lines_added INTEGER DEFAULT 0,
    lines_removed INTEGER DEFAULT 0,
    timestamp DATETIME NOT NULL,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS file_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path TEXT NOT NULL,
    change_type TEXT NOT NULL CHECK (change_type IN ('created', 'modified', 'deleted', 'moved')),
    old_content_hash TEXT,
    new_content_hash TEXT,
    timestamp DATETIME NOT NULL,
    content_hash TEXT UNIQUE,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    old_path TEXT,
    version_id INTEGER,
    diff_id INTEGER
);

CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL CHECK (type IN ('created', 'modified', 'deleted', 'moved')),
    path TEXT NOT NULL,
    timestamp DATETIME NOT NULL,
    size INTEGER DEFAULT 0,
    processed BOOLEAN DEFAULT FALSE,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    old_path TEXT
);

CREATE TABLE IF NOT EXISTS file_states (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    file_path TEXT UNIQUE NOT NULL,
    content_hash TEXT,
    last_modified DATETIME NOT NULL,
    line_count INTEGER NOT NULL DEFAULT 0,
    file_size INTEGER DEFAULT 0,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    is_deleted INTEGER DEFAULT 0
);
