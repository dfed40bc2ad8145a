-- 0007_search_current.sql: a second, small full-text index over only the
-- newest version of each file that is not deleted, for the default
-- (newest-only) search.
--
-- file_versions_fts (0006) holds every version: a common word matches
-- nearly all of them, and bm25 scores every match before the newest-only
-- filter can drop nine in ten. file_current_fts holds the newest version
-- of each live path, so a newest-only search ranks about the set it
-- returns, with no join. It is external content over file_versions too
-- (the text is stored once; snippet() reads it there), with the same
-- tokenizer and settings as 0006, and kept by the triggers below in the
-- transaction that changes file_versions or sync_files, whoever changes
-- them.
--
-- The set: for each file_path, its version with the highest id, unless
-- sync_files marks the path deleted (the set the newest-only query of 0006
-- filtered for). search_current names it. An entry that leaves the set
-- (a newer version came, the path was deleted) is not unindexed at once,
-- which would tokenize its text a second time in the writer's
-- transaction: it is listed in search_stale, which queries leave out, and
-- removed from the index when the engine is idle (src/engine/search.rs).
-- So the index holds exactly search_current's versions plus search_stale's.
-- A row deleted or rewritten in file_versions is unindexed at once (its
-- indexed values are needed to remove it).

CREATE TABLE IF NOT EXISTS search_current (
    file_path  TEXT    PRIMARY KEY,
    version_id INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS search_stale (
    version_id INTEGER PRIMARY KEY
);

CREATE VIRTUAL TABLE IF NOT EXISTS file_current_fts USING fts5(
    file_path,
    content,
    content = 'file_versions',
    content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 2'
);

INSERT INTO file_current_fts (file_current_fts, rank)
    SELECT 'pgsz', MAX(1000, MIN(16000, page_size - 400)) FROM pragma_page_size();
INSERT INTO file_current_fts (file_current_fts, rank) VALUES ('hashsize', 8388608);
INSERT INTO file_current_fts (file_current_fts, rank) VALUES ('automerge', 0);
INSERT INTO file_current_fts (file_current_fts, rank) VALUES ('crisismerge', 64);

-- An existing database: index the newest version of every live path now,
-- in the migration's transaction (one tokenization of the current text).
INSERT INTO search_current (file_path, version_id)
    SELECT fv.file_path, MAX(fv.id) FROM file_versions fv
    WHERE NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = fv.file_path AND s.deleted <> 0)
    GROUP BY fv.file_path;
INSERT INTO file_current_fts (rowid, file_path, content)
    SELECT fv.id, fv.file_path, fv.content
    FROM search_current c JOIN file_versions fv ON fv.id = c.version_id;

-- A new version that is its path's newest: the path's entry goes stale,
-- the new version is indexed (if the path is live; a path sync_files marks
-- deleted gets its entry when it comes back, below).
CREATE TRIGGER IF NOT EXISTS file_versions_cur_insert AFTER INSERT ON file_versions
WHEN NEW.id = (SELECT MAX(id) FROM file_versions WHERE file_path = NEW.file_path)
BEGIN
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current WHERE file_path = NEW.file_path;
    DELETE FROM search_current WHERE file_path = NEW.file_path;
    INSERT INTO file_current_fts (rowid, file_path, content)
        SELECT NEW.id, NEW.file_path, NEW.content
        WHERE NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0);
    INSERT INTO search_current (file_path, version_id)
        SELECT NEW.file_path, NEW.id
        WHERE NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = NEW.file_path AND s.deleted <> 0);
END;

-- A deleted version that the index holds: unindexed now, with its values;
-- if it was its path's entry, the path's newest remaining version takes its
-- place (back from search_stale when the index still holds it).
CREATE TRIGGER IF NOT EXISTS file_versions_cur_delete AFTER DELETE ON file_versions
WHEN EXISTS (SELECT 1 FROM search_current WHERE file_path = OLD.file_path AND version_id = OLD.id)
  OR EXISTS (SELECT 1 FROM search_stale WHERE version_id = OLD.id)
BEGIN
    INSERT INTO file_current_fts (file_current_fts, rowid, file_path, content)
        VALUES ('delete', OLD.id, OLD.file_path, OLD.content);
    DELETE FROM search_stale WHERE version_id = OLD.id;
    DELETE FROM search_current WHERE file_path = OLD.file_path AND version_id = OLD.id;
    INSERT INTO file_current_fts (rowid, file_path, content)
        SELECT fv.id, fv.file_path, fv.content FROM file_versions fv
        WHERE fv.id = (SELECT MAX(id) FROM file_versions WHERE file_path = OLD.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = OLD.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = fv.id)
          AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = OLD.file_path AND s.deleted <> 0);
    INSERT INTO search_current (file_path, version_id)
        SELECT OLD.file_path, newest
        FROM (SELECT MAX(id) AS newest FROM file_versions WHERE file_path = OLD.file_path)
        WHERE newest IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = OLD.file_path)
          AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = OLD.file_path AND s.deleted <> 0);
    DELETE FROM search_stale
        WHERE version_id = (SELECT version_id FROM search_current WHERE file_path = OLD.file_path);
END;

-- An updated version (rare: history is not rewritten by the engine): the
-- updated row is unindexed with its old values, the entries of its old and
-- new path go stale, and each path's newest live version is indexed again.
CREATE TRIGGER IF NOT EXISTS file_versions_cur_update
AFTER UPDATE OF id, file_path, content ON file_versions
BEGIN
    INSERT INTO file_current_fts (file_current_fts, rowid, file_path, content)
        SELECT 'delete', OLD.id, OLD.file_path, OLD.content
        WHERE EXISTS (SELECT 1 FROM search_current
                      WHERE file_path = OLD.file_path AND version_id = OLD.id)
           OR EXISTS (SELECT 1 FROM search_stale WHERE version_id = OLD.id);
    DELETE FROM search_stale WHERE version_id = OLD.id;
    DELETE FROM search_current WHERE file_path = OLD.file_path AND version_id = OLD.id;
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current WHERE file_path IN (OLD.file_path, NEW.file_path);
    DELETE FROM search_current WHERE file_path IN (OLD.file_path, NEW.file_path);
    INSERT INTO search_current (file_path, version_id)
        SELECT fv.file_path, MAX(fv.id) FROM file_versions fv
        WHERE fv.file_path IN (OLD.file_path, NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM sync_files s WHERE s.path = fv.file_path AND s.deleted <> 0)
        GROUP BY fv.file_path;
    INSERT INTO file_current_fts (rowid, file_path, content)
        SELECT fv.id, fv.file_path, fv.content
        FROM search_current c JOIN file_versions fv ON fv.id = c.version_id
        WHERE c.file_path IN (OLD.file_path, NEW.file_path)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = c.version_id);
    DELETE FROM search_stale WHERE version_id IN
        (SELECT version_id FROM search_current WHERE file_path IN (OLD.file_path, NEW.file_path));
END;

-- A path marked deleted: its entry goes stale. A path that comes back (or
-- whose sync_files row goes): its newest version is its entry again,
-- indexed unless the index still holds it.
CREATE TRIGGER IF NOT EXISTS sync_files_cur_gone AFTER UPDATE OF deleted ON sync_files
WHEN NEW.deleted <> 0 AND OLD.deleted = 0
BEGIN
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current WHERE file_path = NEW.path;
    DELETE FROM search_current WHERE file_path = NEW.path;
END;

CREATE TRIGGER IF NOT EXISTS sync_files_cur_gone_new AFTER INSERT ON sync_files
WHEN NEW.deleted <> 0
BEGIN
    INSERT OR IGNORE INTO search_stale (version_id)
        SELECT version_id FROM search_current WHERE file_path = NEW.path;
    DELETE FROM search_current WHERE file_path = NEW.path;
END;

CREATE TRIGGER IF NOT EXISTS sync_files_cur_back AFTER UPDATE OF deleted ON sync_files
WHEN NEW.deleted = 0 AND OLD.deleted <> 0
BEGIN
    INSERT INTO file_current_fts (rowid, file_path, content)
        SELECT fv.id, fv.file_path, fv.content FROM file_versions fv
        WHERE fv.id = (SELECT MAX(id) FROM file_versions WHERE file_path = NEW.path)
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.path)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = fv.id);
    INSERT INTO search_current (file_path, version_id)
        SELECT NEW.path, newest FROM (SELECT MAX(id) AS newest FROM file_versions WHERE file_path = NEW.path)
        WHERE newest IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = NEW.path);
    DELETE FROM search_stale
        WHERE version_id = (SELECT version_id FROM search_current WHERE file_path = NEW.path);
END;

CREATE TRIGGER IF NOT EXISTS sync_files_cur_back_gone AFTER DELETE ON sync_files
WHEN OLD.deleted <> 0
BEGIN
    INSERT INTO file_current_fts (rowid, file_path, content)
        SELECT fv.id, fv.file_path, fv.content FROM file_versions fv
        WHERE fv.id = (SELECT MAX(id) FROM file_versions WHERE file_path = OLD.path)
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = OLD.path)
          AND NOT EXISTS (SELECT 1 FROM search_stale WHERE version_id = fv.id);
    INSERT INTO search_current (file_path, version_id)
        SELECT OLD.path, newest FROM (SELECT MAX(id) AS newest FROM file_versions WHERE file_path = OLD.path)
        WHERE newest IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM search_current WHERE file_path = OLD.path);
    DELETE FROM search_stale
        WHERE version_id = (SELECT version_id FROM search_current WHERE file_path = OLD.path);
END;
