-- Initial schema. Times are microseconds since the Unix epoch, UTC.

-- One row per export stream (a filter set); `watermark` is the end of the contiguous prefix of
-- committed windows: everything before it is durably exported.
CREATE TABLE IF NOT EXISTS streams (
    id            TEXT PRIMARY KEY,
    product_types TEXT NOT NULL,
    geo_locations TEXT NOT NULL,
    watermark_us  INTEGER,
    updated_at_us INTEGER
);

-- Every committed window read. `generation` counts reads of the same [start, end) and is part of the
-- file names, so a later re-read never overwrites an earlier read's files.
CREATE TABLE IF NOT EXISTS windows (
    stream_id       TEXT NOT NULL,
    start_us        INTEGER NOT NULL,
    end_us          INTEGER NOT NULL,
    generation             INTEGER NOT NULL,
    records_written INTEGER NOT NULL,
    records_fetched INTEGER NOT NULL,
    pages           INTEGER NOT NULL,
    run_id          INTEGER,
    committed_at_us INTEGER NOT NULL,
    PRIMARY KEY (stream_id, start_us, end_us, generation)
);

-- Attempts whose files may be (partly) published but are not committed yet. A row here after a
-- crash means: delete files named with `prefix` in `partitions`, then forget the row.
CREATE TABLE IF NOT EXISTS pending (
    prefix        TEXT PRIMARY KEY,
    stream_id     TEXT NOT NULL,
    partitions    TEXT NOT NULL,
    started_at_us INTEGER NOT NULL
);

-- Manifest of published, committed files.
CREATE TABLE IF NOT EXISTS files (
    path            TEXT PRIMARY KEY,
    stream_id       TEXT NOT NULL,
    partition       TEXT NOT NULL,
    window_start_us INTEGER NOT NULL,
    window_end_us   INTEGER NOT NULL,
    generation             INTEGER NOT NULL,
    rows            INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    sha256          TEXT NOT NULL,
    committed_at_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_partition ON files (partition);

-- Fingerprints of exported records, kept only as far back as a re-read can reach.
CREATE TABLE IF NOT EXISTS dedup_keys (
    stream_id      TEXT NOT NULL,
    record_id      BLOB NOT NULL,
    action_time_us INTEGER,
    PRIMARY KEY (stream_id, record_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_keys_time ON dedup_keys (stream_id, action_time_us);

-- Run history.
CREATE TABLE IF NOT EXISTS runs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    command         TEXT NOT NULL,
    started_at_us   INTEGER NOT NULL,
    finished_at_us  INTEGER,
    status          TEXT NOT NULL,
    windows         INTEGER NOT NULL DEFAULT 0,
    records_written INTEGER NOT NULL DEFAULT 0,
    error           TEXT
);
