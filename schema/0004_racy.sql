-- When the engine last read each file (ns since the epoch, the clock at the
-- stat before the read). A file with a whole-second mtime (FAT, some network
-- shares) within one 2 s tick of that read may have been written again in
-- the same tick, unseen by size and mtime: reconciliation reads it again (as
-- git does for racy index entries).
-- NULL (rows from before this column): not racy.
ALTER TABLE sync_files ADD COLUMN read_ns INTEGER;
