-- 0009_search_once.sql: each new version is tokenized once in the
-- transaction that stores it, not twice.
--
-- Until schema 8 a new version went into both full-text indexes at once:
-- file_versions_fts (every version, 0006) and file_current_fts (the newest
-- version of each live path, 0007). FTS5 tokenizing the text is most of
-- what the store's transaction costs, so that doubled the writer's work.
-- From here on the two indexes split the versions between them:
--
--   file_current_fts (the "recent" index) holds the versions search_current
--     names (the newest of each path sync_files does not mark deleted) and
--     the ones search_stale lists (that left that set and are not moved yet);
--   file_versions_fts (the "history" index) holds every other version, but
--     for those in the backfill's range (search_backfill_next ..=
--     search_backfill_end, 0006) that it has not reached yet.
--
-- So every version is in exactly one index, or, in the backfill's range
-- only, in none yet. A new version is its path's newest: it goes into the
-- recent index only (one tokenization). The version it supersedes stays
-- there, listed in search_stale, until idle work moves it to the history
-- index (src/engine/search.rs, move_stale). A newest-only search reads the
-- recent index less search_stale; an every-version search reads both.
--
-- A version that must be in the recent index while the history index holds
-- it (a deleted path comes back with no new version, the newest version is
-- deleted and its predecessor takes its place) is moved there by
-- search_promote's trigger: inserting a path into search_promote runs it
-- (the table is always empty outside that trigger). search_unindex is the
-- same kind of helper: it unindexes a version from whichever index holds
-- it. These triggers run in
-- whichever connection changes file_versions or sync_files, the backend's
-- included: FTS5 and unicode61 are built into its sqlite3 too.

CREATE TABLE IF NOT EXISTS search_promote (
    file_path TEXT PRIMARY KEY
) WITHOUT ROWID;

DROP TRIGGER IF EXISTS file_versions_fts_insert;
DROP TRIGGER IF EXISTS file_versions_fts_delete;
DROP TRIGGER IF EXISTS file_versions_fts_update;
DROP TRIGGER IF EXISTS file_versions_cur_insert;
DROP TRIGGER IF EXISTS file_versions_cur_delete;
DROP TRIGGER IF EXISTS file_versions_cur_update;
DROP TRIGGER IF EXISTS sync_files_cur_back;
DROP TRIGGER IF EXISTS sync_files_cur_back_gone;

-- An existing database (schema 7 or 8) held each version in the history
-- index and the newest-only set in the recent one too. Stale entries leave
-- the recent index (the history index has them, or the backfill will);
-- the newest-only set leaves the history index (but for versions in the
-- backfill's range, which it does not hold). One tokenization of each of
-- those texts, once.
INSERT INTO file_current_fts (file_current_fts, rowid, file_path, content)
    SELECT 'delete', fv.id, fv.file_path, fv.content
    FROM search_stale s JOIN file_versions fv ON fv.id = s.version_id;
DELETE FROM search_stale;
INSERT INTO file_versions_fts (file_versions_fts, rowid, file_path, content)
    SELECT 'delete', fv.id, fv.file_path, fv.content
    FROM search_current c JOIN file_versions fv ON fv.id = c.version_id
    WHERE fv.id NOT BETWEEN
        COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
    AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0);

-- Makes NEW.file_path's newest version its entry in the recent index when
-- the path is live and has no entry: moved out of the history index if
-- that holds it, taken off search_stale if it is listed there.
CREATE TRIGGER IF NOT EXISTS search_promote_path AFTER INSERT ON search_promote
BEGIN
    INSERT INTO file_versions_fts (file_versions_fts, rowid, file_path, content)
        SELECT 'delete', fv.id, fv.file_path, fv.content FROM file_versions fv
        WHERE fv.id = (SELECT MAX(id) FROM file_versions WHERE file_path = NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = fv.id)
          AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0)
          AND fv.id NOT BETWEEN
              COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
          AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0);
    INSERT INTO file_current_fts (rowid, file_path, content)
        SELECT fv.id, fv.file_path, fv.content FROM file_versions fv
        WHERE fv.id = (SELECT MAX(id) FROM file_versions WHERE file_path = NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = fv.id)
          AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0);
    INSERT INTO search_current (file_path, version_id)
        SELECT NEW.file_path, newest
        FROM (SELECT MAX(id) AS newest FROM file_versions WHERE file_path = NEW.file_path)
        WHERE newest IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0);
    DELETE FROM search_stale
        WHERE version_id = (SELECT version_id FROM search_current WHERE file_path = NEW.file_path);
    DELETE FROM search_promote WHERE file_path = NEW.file_path;
END;

-- A new version that is its path's newest and whose path is live (every
-- version the engine writes): the path's entry goes stale and the new
-- version is the entry, in the recent index. Anything else (another
-- program inserting an older id, or a version of a path sync_files marks
-- deleted): into the history index, and an older entry of the path goes
-- stale. The two WHEN clauses are each other's negation; the first is the
-- writer's path, kept to three statements.
CREATE TRIGGER IF NOT EXISTS file_versions_search_insert AFTER INSERT ON file_versions
WHEN NEW.id = (SELECT MAX(id) FROM file_versions WHERE file_path = NEW.file_path)
 AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0)
BEGIN
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current WHERE file_path = NEW.file_path;
    INSERT OR REPLACE INTO search_current (file_path, version_id) VALUES (NEW.file_path, NEW.id);
    INSERT INTO file_current_fts (rowid, file_path, content) VALUES (NEW.id, NEW.file_path, NEW.content);
END;

CREATE TRIGGER IF NOT EXISTS file_versions_search_insert_other AFTER INSERT ON file_versions
WHEN NEW.id < (SELECT MAX(id) FROM file_versions WHERE file_path = NEW.file_path)
  OR EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0)
BEGIN
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current
        WHERE file_path = NEW.file_path AND version_id < NEW.id;
    DELETE FROM search_current WHERE file_path = NEW.file_path AND version_id < NEW.id;
    INSERT INTO file_versions_fts (rowid, file_path, content)
        SELECT NEW.id, NEW.file_path, NEW.content
        WHERE NEW.id NOT BETWEEN
              COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
          AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0);
END;

-- Unindexes a version from whichever index holds it, with the values it
-- was indexed with: inserting (id, file_path, content) into search_unindex
-- runs it (the table is always empty outside this trigger).
CREATE TABLE IF NOT EXISTS search_unindex (
    id        INTEGER PRIMARY KEY,
    file_path TEXT,
    content   TEXT
);

CREATE TRIGGER IF NOT EXISTS search_unindex_version AFTER INSERT ON search_unindex
BEGIN
    INSERT INTO file_versions_fts (file_versions_fts, rowid, file_path, content)
        SELECT 'delete', NEW.id, NEW.file_path, NEW.content
        WHERE NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.file_path AND version_id = NEW.id)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = NEW.id)
          AND NEW.id NOT BETWEEN
              COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
          AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0);
    INSERT INTO file_current_fts (file_current_fts, rowid, file_path, content)
        SELECT 'delete', NEW.id, NEW.file_path, NEW.content
        WHERE EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.file_path AND version_id = NEW.id)
           OR EXISTS (SELECT 1 FROM search_stale WHERE version_id = NEW.id);
    DELETE FROM search_stale WHERE version_id = NEW.id;
    DELETE FROM search_current WHERE file_path = NEW.file_path AND version_id = NEW.id;
    DELETE FROM search_unindex WHERE id = NEW.id;
END;

-- A deleted version: unindexed; if it was its path's entry, the path's
-- newest remaining version takes its place.
CREATE TRIGGER IF NOT EXISTS file_versions_search_delete AFTER DELETE ON file_versions
BEGIN
    INSERT INTO search_unindex (id, file_path, content) VALUES (OLD.id, OLD.file_path, OLD.content);
    INSERT INTO search_promote (file_path) VALUES (OLD.file_path);
END;

-- An updated version (rare: the engine never rewrites history): the old
-- row leaves whichever index holds it; the new one goes into the history
-- index, a path entry it is newer than goes stale, and each of the two
-- paths gets its newest live version as its entry again (search_promote
-- moves the new row to the recent index when it is that version).
CREATE TRIGGER IF NOT EXISTS file_versions_search_update
AFTER UPDATE OF id, file_path, content ON file_versions
BEGIN
    INSERT INTO search_unindex (id, file_path, content) VALUES (OLD.id, OLD.file_path, OLD.content);
    INSERT INTO file_versions_fts (rowid, file_path, content)
        SELECT NEW.id, NEW.file_path, NEW.content
        WHERE NEW.id NOT BETWEEN
              COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_next'), 1)
          AND COALESCE((SELECT CAST(value AS INTEGER) FROM sync_meta WHERE key = 'search_backfill_end'), 0);
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current
        WHERE file_path = NEW.file_path AND version_id < NEW.id;
    DELETE FROM search_current WHERE file_path = NEW.file_path AND version_id < NEW.id;
    INSERT INTO search_promote (file_path) VALUES (OLD.file_path);
    INSERT INTO search_promote (file_path) VALUES (NEW.file_path);
END;

-- A path that comes back (sync_files no longer marks it deleted, or its
-- deleted row goes): its newest version is its entry again. (A path marked
-- deleted: its entry goes stale, by 0007's sync_files_cur_gone triggers.)
CREATE TRIGGER IF NOT EXISTS sync_files_search_back AFTER UPDATE OF deleted ON sync_files
WHEN NEW.deleted = 0 AND OLD.deleted <> 0
BEGIN
    INSERT INTO search_promote (file_path) VALUES (NEW.path);
END;

CREATE TRIGGER IF NOT EXISTS sync_files_search_back_gone AFTER DELETE ON sync_files
WHEN OLD.deleted <> 0
BEGIN
    INSERT INTO search_promote (file_path) VALUES (OLD.path);
END;
