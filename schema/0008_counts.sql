-- Row counts that `status` and GetStatus read without walking a million
-- index entries (COUNT(*)s of file_versions, content_diffs, file_changes and
-- event_queue's done rows, kept a day, took 86 to 147 ms at 1,000,000
-- versions).
--
-- History tables (append-only, ids ascending whoever inserts):
--   n = rows with id <= through_id. The count is n plus a COUNT(*) of the ids
--   above through_id (a range of the primary key: the rows since the engine
--   last caught up). No insert trigger: an insert trigger would make SQLite
--   copy every row of the store's multi-row inserts into a temporary table
--   first. The store moves through_id up in every batch's transaction; a delete
--   (by anyone: the backend, sqlite3, a cascade) at or below it is counted
--   off by the triggers below, so the count is exact at every moment.
-- 'queue_done': n = event_queue rows whose status is 'done', kept by
--   src/engine/queue.rs, the table's only writer, in the statement's own
--   transaction wherever a row enters or leaves that status (a trigger
--   there cost the writer 1% on a scan: every claim and acknowledgement
--   of a row ran it).
CREATE TABLE IF NOT EXISTS sync_counts (
    name       TEXT PRIMARY KEY,
    n          INTEGER NOT NULL,
    through_id INTEGER NOT NULL
) WITHOUT ROWID;

INSERT OR REPLACE INTO sync_counts (name, n, through_id)
    SELECT 'file_versions', COUNT(*), COALESCE(MAX(id), 0) FROM file_versions;
INSERT OR REPLACE INTO sync_counts (name, n, through_id)
    SELECT 'content_diffs', COUNT(*), COALESCE(MAX(id), 0) FROM content_diffs;
INSERT OR REPLACE INTO sync_counts (name, n, through_id)
    SELECT 'file_changes', COUNT(*), COALESCE(MAX(id), 0) FROM file_changes;
INSERT OR REPLACE INTO sync_counts (name, n, through_id)
    SELECT 'queue_done', COUNT(*), 0 FROM event_queue WHERE status = 'done';

CREATE TRIGGER IF NOT EXISTS sync_counts_file_versions_delete
AFTER DELETE ON file_versions BEGIN
    UPDATE sync_counts SET n = n - 1
     WHERE name = 'file_versions' AND OLD.id <= through_id;
END;
CREATE TRIGGER IF NOT EXISTS sync_counts_content_diffs_delete
AFTER DELETE ON content_diffs BEGIN
    UPDATE sync_counts SET n = n - 1
     WHERE name = 'content_diffs' AND OLD.id <= through_id;
END;
CREATE TRIGGER IF NOT EXISTS sync_counts_file_changes_delete
AFTER DELETE ON file_changes BEGIN
    UPDATE sync_counts SET n = n - 1
     WHERE name = 'file_changes' AND OLD.id <= through_id;
END;
