-- 0006_search.sql: full-text search over every version of every note.
--
-- An external-content FTS5 index of file_versions (file_path and content; the
-- text itself stays in file_versions), kept in step by triggers, so a version
-- and its index entry commit in the same transaction whoever inserts it (the
-- engine's store or the Python backend: FTS5 is part of its sqlite3 too).
--
-- Versions that existed before this migration are indexed afterwards by a
-- resumable backfill (src/engine/search.rs), in short transactions: the rows
-- with search_backfill_next <= id <= search_backfill_end (sync_meta) are the
-- ones not indexed yet. New versions always get an id above that range. A
-- delete or update of a row in that range must not touch the index (an
-- external-content index is corrupted by deleting an entry it does not hold),
-- hence the WHEN clauses.
CREATE VIRTUAL TABLE IF NOT EXISTS file_versions_fts USING fts5(
    file_path,
    content,
    content = 'file_versions',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

-- Tuned for many small inserts (one commit per batch of versions): leaf
-- pages as large as the file's pages allow, pending terms flushed in one
-- segment per commit (8 MiB), and segments merged only when 64 pile up on a
-- level instead of a little at every write. Measured on the bench's corpus,
-- this takes about 60% off the indexing time of the defaults.
INSERT INTO file_versions_fts (file_versions_fts, rank)
    SELECT 'pgsz', MAX(1000, MIN(16000, page_size - 400)) FROM pragma_page_size();
INSERT INTO file_versions_fts (file_versions_fts, rank) VALUES ('hashsize', 8388608);
INSERT INTO file_versions_fts (file_versions_fts, rank) VALUES ('automerge', 0);
INSERT INTO file_versions_fts (file_versions_fts, rank) VALUES ('crisismerge', 64);

INSERT INTO sync_meta (key, value) VALUES ('search_backfill_next', '1')
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;
INSERT INTO sync_meta (key, value)
    SELECT 'search_backfill_end', CAST(COALESCE(MAX(id), 0) AS TEXT) FROM file_versions WHERE true
    ON CONFLICT (key) DO UPDATE SET value = excluded.value;

CREATE TRIGGER IF NOT EXISTS file_versions_fts_insert AFTER INSERT ON file_versions
BEGIN
    INSERT INTO file_versions_fts (rowid, file_path, content)
    VALUES (NEW.id, NEW.file_path, NEW.content);
END;

CREATE TRIGGER IF NOT EXISTS file_versions_fts_delete AFTER DELETE ON file_versions
WHEN OLD.id NOT BETWEEN
        COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
    AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0)
BEGIN
    INSERT INTO file_versions_fts (file_versions_fts, rowid, file_path, content)
    VALUES ('delete', OLD.id, OLD.file_path, OLD.content);
END;

CREATE TRIGGER IF NOT EXISTS file_versions_fts_update AFTER UPDATE ON file_versions
WHEN OLD.id NOT BETWEEN
        COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
    AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0)
BEGIN
    INSERT INTO file_versions_fts (file_versions_fts, rowid, file_path, content)
    VALUES ('delete', OLD.id, OLD.file_path, OLD.content);
    INSERT INTO file_versions_fts (rowid, file_path, content)
    VALUES (NEW.id, NEW.file_path, NEW.content);
END;
