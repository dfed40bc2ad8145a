-- Fewer b-trees for the writer to keep up, nothing any query needs lost.
--
-- Two of the engine's own indexes repeat what the backend's schema already
-- gives: file_versions(file_path) answers "the versions of a path, newest
-- first" as well (a path has few versions to sort), and file_states is read
-- whole, ordered by last_modified, which sorts in memory as it does on a
-- file the backend made.
DROP INDEX IF EXISTS idx_file_versions_path_time;
DROP INDEX IF EXISTS idx_file_states_last_modified;

-- sync_files is looked up by path only: keyed by it (WITHOUT ROWID), each
-- row lives once instead of in a table and in its primary-key index.
CREATE TABLE sync_files_keyed (
    path         TEXT PRIMARY KEY,
    -- bytes on disk and mtime (ns) at the last look; NULL = look again
    size         INTEGER,
    mtime_ns     INTEGER,
    -- the content's hash and the version the engine last wrote or saw for it
    content_hash TEXT,
    version_id   INTEGER,
    -- 1 once the file is gone
    deleted      INTEGER NOT NULL DEFAULT 0,
    -- when the engine last read the file (see 0004_racy.sql)
    read_ns      INTEGER
) WITHOUT ROWID;
INSERT INTO sync_files_keyed (path, size, mtime_ns, content_hash, version_id, deleted, read_ns)
    SELECT path, size, mtime_ns, content_hash, version_id, deleted, read_ns FROM sync_files;
DROP TABLE sync_files;
ALTER TABLE sync_files_keyed RENAME TO sync_files;
