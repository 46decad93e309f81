-- Dedup keys come from the lake itself (each committed file's `_record_id` column), so a
-- re-read of any committed range, whatever lookback or window it was written with, holds the
-- ids of everything in it. The state no longer keeps a key per record.

-- Id scheme of the `_record_id`s in each file: 1 = whole-record canonical JSON (before this
-- migration), 2 = documented fields with actionTime as an instant.
ALTER TABLE files ADD COLUMN id_scheme INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS files_stream_window ON files (stream_id, window_start_us, window_end_us);

DROP TABLE IF EXISTS dedup_keys;

-- Records the API returned outside the window asked for, per committed window (0 before).
ALTER TABLE windows ADD COLUMN out_of_range INTEGER NOT NULL DEFAULT 0;
