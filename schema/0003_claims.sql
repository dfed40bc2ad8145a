-- Claims carry no lease. The engine holds an exclusive lock on obby.db.lock
-- for its whole life, so no other engine can take a claimed row while it
-- runs, and the claimed rows of a dead engine are returned at the next start
-- (their attempt counted; failed when it was their last). The two columns
-- were written and never read.
ALTER TABLE event_queue DROP COLUMN lease_until_ms;
ALTER TABLE event_queue DROP COLUMN claimed_ms;

-- A row claimed alone, with nothing else in flight: one that was claimed when
-- an engine died (it may be what killed it), or a file over half a batch's
-- bytes (two such files are never held in memory at once).
ALTER TABLE event_queue ADD COLUMN alone INTEGER NOT NULL DEFAULT 0;

-- Times a row was put back because its file was still being written: after
-- enough of them the file is read as it is. Counted, not timed, so a clock
-- stepped backwards cannot defer a file for longer.
ALTER TABLE event_queue ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0;
