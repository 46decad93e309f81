-- The lake is the source of truth: every committed window also has a commit marker in the
-- output (`_aos-audit-export/commits/{marker}.json`: the window and its files), written after
-- its files are published and before this database's commit. A new, lost or stale state
-- adopts the markers it does not know (and the data files no marker names) before exporting.
ALTER TABLE windows ADD COLUMN marker TEXT;
ALTER TABLE pending ADD COLUMN marker TEXT;
CREATE INDEX IF NOT EXISTS windows_marker ON windows (marker);

-- Small facts about the state itself, e.g. that an adoption of the lake's data files began and
-- did not finish (the next start lists them again).
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
