//! The write path: streams, attempts (pending rows), window commits and run history.
//!
//! Invariant: a window's manifest rows, dedup keys, coverage and the removal of its pending
//! row commit in one transaction ([`Checkpoint::commit_window`]), which the caller runs only
//! after every file of the window is published.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Checkpoint, CheckpointError, FileRow, from_us, us};
use crate::model::{Range, StreamSpec, Window};

/// Everything one window commit records.
pub struct WindowCommit<'a> {
    /// The stream the window belongs to.
    pub stream_id: &'a str,
    /// The window committed.
    pub window: Window,
    /// Which read of the window this is (see [`Checkpoint::next_generation`]).
    pub generation: u32,
    /// The attempt prefix; its pending row is removed by the commit.
    pub prefix: &'a str,
    /// The key of the window's commit marker in the lake.
    pub marker: &'a str,
    /// The window's published files, added to the manifest.
    pub files: Vec<FileRow>,
    /// Id scheme of the files' `_record_id`s.
    pub id_scheme: i64,
    /// Records the padded query returned from a neighbouring window (skipped here).
    pub out_of_range: u64,
    /// Records the API returned for the window, written or not.
    pub records_fetched: u64,
    /// Pages fetched for the window.
    pub pages: u64,
    /// The run that committed the window, if any.
    pub run_id: Option<i64>,
    /// Move the stream's watermark here (never backwards).
    pub advance_watermark_to: Option<DateTime<Utc>>,
}

/// Where a committed file's window lies relative to a window being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// It overlaps the window.
    Overlap,
    /// It ends at or before the window's start (a neighbour before it).
    Before,
    /// It starts at or after the window's end (a neighbour after it).
    After,
}

/// An uncommitted attempt found in the state.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The attempt prefix its files are named with.
    pub prefix: String,
    /// The key of the commit marker it may have written.
    pub marker: Option<String>,
    /// The partitions the attempt may have written files in.
    pub partitions: Vec<String>,
}

impl Checkpoint {
    /// Registers a stream (idempotent).
    pub fn ensure_stream(&self, s: &StreamSpec) -> Result<(), CheckpointError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO streams (id, product_types, geo_locations) VALUES (?1, ?2, ?3)",
            params![s.id, s.product_types.join(","), s.geo_locations.join(",")],
        )?;
        Ok(())
    }

    /// End of the contiguous committed prefix of a stream, if any.
    pub fn watermark(&self, stream_id: &str) -> Result<Option<DateTime<Utc>>, CheckpointError> {
        let v: Option<Option<i64>> = self
            .conn()
            .query_row("SELECT watermark_us FROM streams WHERE id = ?1", [stream_id], |r| r.get(0))
            .optional()?;
        Ok(v.flatten().map(from_us))
    }

    /// How far a stream is exported: its watermark, or before the prefix from `export.start`
    /// is complete (a backfill alone), the end of its newest committed range.
    pub fn exported_to(&self, stream_id: &str) -> Result<Option<DateTime<Utc>>, CheckpointError> {
        if let Some(w) = self.watermark(stream_id)? {
            return Ok(Some(w));
        }
        let v: Option<i64> = self
            .conn()
            .query_row("SELECT MAX(end_us) FROM windows WHERE stream_id = ?1", [stream_id], |r| r.get(0))?;
        Ok(v.map(from_us))
    }

    /// How many times `[start, end)` was committed before: the next read's generation.
    pub fn next_generation(&self, stream_id: &str, w: &Window) -> Result<u32, CheckpointError> {
        let c = self.conn();
        let next: u32 = c.query_row(
            "SELECT COALESCE(MAX(generation) + 1, 0) FROM windows WHERE stream_id = ?1 AND start_us = ?2 AND end_us = ?3",
            params![stream_id, us(w.start), us(w.end)],
            |r| r.get(0),
        )?;
        Ok(next.max(Self::generation_floor(&c, stream_id, w)?))
    }

    /// Committed `[start, end)` ranges of a stream overlapping `[from, to)`.
    pub fn committed_ranges(&self, stream_id: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Range>, CheckpointError> {
        let c = self.conn();
        let mut st =
            c.prepare_cached("SELECT DISTINCT start_us, end_us FROM windows WHERE stream_id = ?1 AND end_us > ?2 AND start_us < ?3")?;
        let rows = st.query_map(params![stream_id, us(from), us(to)], |r| {
            Ok((from_us(r.get(0)?), from_us(r.get(1)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The distinct windows (of any stream) whose committed files hold records without a
    /// usable `actionTime` (`dt=unknown`, data or quarantine) and overlap `[from, to)`.
    pub fn unplaced_windows(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<Range>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT DISTINCT window_start_us, window_end_us FROM files WHERE partition IN (?1, ?2) AND window_end_us > ?3 AND window_start_us < ?4",
        )?;
        let quarantined = format!("{}/{}", crate::model::QUARANTINE_DIR, crate::model::UNKNOWN_PARTITION);
        let rows = st.query_map(params![crate::model::UNKNOWN_PARTITION, quarantined, us(from), us(to)], |r| {
            Ok((from_us(r.get(0)?), from_us(r.get(1)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When the `reconcile` of `stream_id` that a deadline, a signal or a kill stopped began
    /// (at most two days ago); else now, recorded. A reconcile resumes by skipping the windows
    /// that reconciles read again since then ([`Checkpoint::ranges_reconciled_since`]), whatever
    /// its `--from` (a relative one moves with every run).
    pub fn reconcile_begun(&self, stream_id: &str) -> Result<DateTime<Utc>, CheckpointError> {
        let key = format!("reconcile:{stream_id}");
        let now = Utc::now();
        let c = self.conn();
        let at: Option<String> = c
            .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| r.get(0))
            .optional()?;
        match at.and_then(|v| v.parse::<i64>().ok()).map(from_us) {
            Some(t) if t <= now && now - t < chrono::Duration::days(2) => Ok(t),
            _ => {
                c.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    params![key, us(now).to_string()],
                )?;
                Ok(now)
            }
        }
    }

    /// Forgets where the reconciles of `stream_id` stood: the last one finished, or failed
    /// (only a stop by deadline, signal or kill is resumed).
    pub fn reconcile_done(&self, stream_id: &str) -> Result<(), CheckpointError> {
        self.conn()
            .execute("DELETE FROM meta WHERE key = ?1", [format!("reconcile:{stream_id}")])?;
        Ok(())
    }

    /// Ranges of `[from, to)` whose windows a `reconcile` committed at or after `since`.
    pub fn ranges_reconciled_since(
        &self,
        stream_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        since: DateTime<Utc>,
    ) -> Result<Vec<Range>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT DISTINCT w.start_us, w.end_us FROM windows w JOIN runs r ON r.id = w.run_id
             WHERE w.stream_id = ?1 AND w.end_us > ?2 AND w.start_us < ?3 AND w.committed_at_us >= ?4 AND r.command = 'reconcile'",
        )?;
        let rows = st.query_map(params![stream_id, us(from), us(to), us(since)], |r| {
            Ok((from_us(r.get(0)?), from_us(r.get(1)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that an attempt is about to write files named `prefix…` in `partitions`;
    /// returns the key its commit marker will have.
    pub fn begin_attempt(&self, stream_id: &str, prefix: &str, partitions: &[String]) -> Result<String, CheckpointError> {
        // Marker keys only grow (a clock stepped back must not hide a marker from the
        // "markers after the newest known" listing): at least 1 µs past every key this state
        // knows.
        let floor: Option<String> = self.conn().query_row(
            "SELECT MAX(m) FROM (SELECT MAX(marker) AS m FROM windows UNION ALL SELECT MAX(marker) FROM pending)",
            [],
            |r| r.get(0),
        )?;
        let floor_us = floor.and_then(|k| k.get(..20).and_then(|d| d.parse::<i64>().ok())).unwrap_or(0);
        let now = Utc::now().max(from_us(floor_us + 1));
        let marker = crate::model::marker_key(now, prefix);
        self.conn().execute(
            "INSERT OR REPLACE INTO pending (prefix, stream_id, partitions, started_at_us, marker) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![prefix, stream_id, partitions.join(","), us(now), marker],
        )?;
        Ok(marker)
    }

    /// Attempts that began but never committed.
    pub fn pending(&self) -> Result<Vec<Pending>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT prefix, partitions, marker FROM pending ORDER BY started_at_us")?;
        let rows = st.query_map([], |r| {
            let parts: String = r.get(1)?;
            Ok(Pending {
                prefix: r.get(0)?,
                marker: r.get(2)?,
                partitions: parts.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets an abandoned attempt once its files are deleted.
    pub fn clear_pending(&self, prefix: &str) -> Result<(), CheckpointError> {
        self.conn().execute("DELETE FROM pending WHERE prefix = ?1", [prefix])?;
        Ok(())
    }

    /// Committed files that can hold records a read of `w` returns again (path, id scheme,
    /// side, the window they were read in): every file whose window overlaps `w` (side [`Side::Overlap`]), and the
    /// `dt=unknown` files of the neighbouring windows that only meet `w`'s padded query
    /// ([`Window::query`]; [`Side::Before`], [`Side::After`]), since a record without a usable
    /// `actionTime` near a bound comes back from both neighbours. Every stream's files count: a
    /// record's id does not depend on its stream, and a stream whose filters changed must find
    /// what the old one wrote into the same output.
    pub fn files_overlapping(&self, w: &Window) -> Result<Vec<(String, i64, Side, Window)>, CheckpointError> {
        let c = self.conn();
        let q = w.query();
        let mut st = c.prepare_cached(
            "SELECT path, id_scheme, window_start_us, window_end_us FROM files WHERE (window_end_us > ?1 AND window_start_us < ?2)
               OR (partition IN (?5, ?6) AND window_end_us >= ?3 AND window_start_us <= ?4) ORDER BY path",
        )?;
        let (start, end) = (us(w.start), us(w.end));
        let quarantined = format!("{}/{}", crate::model::QUARANTINE_DIR, crate::model::UNKNOWN_PARTITION);
        let rows = st.query_map(
            params![start, end, us(q.start), us(q.end), crate::model::UNKNOWN_PARTITION, quarantined],
            |r| {
                let (a, b): (i64, i64) = (r.get(2)?, r.get(3)?);
                let side = if b <= start {
                    Side::Before
                } else if a >= end {
                    Side::After
                } else {
                    Side::Overlap
                };
                let window = Window {
                    start: from_us(a),
                    end: from_us(b),
                };
                Ok((r.get(0)?, r.get(1)?, side, window))
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Commits one window: manifest, dedup keys, window row, watermark, pending row; atomically.
    pub fn commit_window(&self, c: &WindowCommit<'_>) -> Result<(), CheckpointError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = us(Utc::now());
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (path, stream_id, partition, window_start_us, window_end_us, generation, rows, bytes, sha256, committed_at_us, id_scheme)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for f in &c.files {
                ins.execute(params![
                    f.path,
                    c.stream_id,
                    f.partition,
                    us(c.window.start),
                    us(c.window.end),
                    c.generation,
                    f.rows as i64,
                    f.bytes as i64,
                    f.sha256,
                    now,
                    c.id_scheme
                ])?;
            }
        }
        let written: u64 = c
            .files
            .iter()
            .filter(|f| !crate::model::is_quarantine(&f.partition))
            .map(|f| f.rows)
            .sum();
        tx.execute(
            "INSERT INTO windows (stream_id, start_us, end_us, generation, records_written, records_fetched, pages, run_id, committed_at_us, out_of_range, marker)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![c.stream_id, us(c.window.start), us(c.window.end), c.generation, written as i64, c.records_fetched as i64, c.pages as i64, c.run_id, now, c.out_of_range as i64, c.marker],
        )?;
        if let Some(w) = c.advance_watermark_to {
            tx.execute(
                "UPDATE streams SET watermark_us = ?2, updated_at_us = ?3 WHERE id = ?1 AND (watermark_us IS NULL OR watermark_us < ?2)",
                params![c.stream_id, us(w), now],
            )?;
        }
        tx.execute("DELETE FROM pending WHERE prefix = ?1", [c.prefix])?;
        crate::crashpoint::hit("commit");
        tx.commit()?;
        Ok(())
    }

    /// Records the start of a run; returns its id.
    pub fn start_run(&self, command: &str) -> Result<i64, CheckpointError> {
        let c = self.conn();
        // This process holds the lock: a run still marked running is one whose process died.
        c.execute("UPDATE runs SET status = 'died' WHERE status = 'running'", [])?;
        c.execute(
            "INSERT INTO runs (command, started_at_us, status) VALUES (?1, ?2, 'running')",
            params![command, us(Utc::now())],
        )?;
        Ok(c.last_insert_rowid())
    }

    /// Records how a run ended. Its windows and records are those it committed, counted from
    /// the windows it recorded: a run stopped by its deadline, a signal or an error reports what
    /// it did commit.
    /// Returns the windows the run committed.
    pub fn finish_run(&self, id: i64, status: &str, error: Option<&str>) -> Result<u64, CheckpointError> {
        let c = self.conn();
        c.execute(
            "UPDATE runs SET finished_at_us = ?2, status = ?3, error = ?4,
                windows = (SELECT COUNT(*) FROM windows WHERE run_id = ?1),
                records_written = (SELECT COALESCE(SUM(records_written), 0) FROM windows WHERE run_id = ?1)
             WHERE id = ?1",
            params![id, us(Utc::now()), status, error],
        )?;
        Ok(c.query_row("SELECT windows FROM runs WHERE id = ?1", [id], |r| r.get::<_, i64>(0))? as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StreamSpec {
        StreamSpec {
            id: "all".into(),
            name: None,
            product_types: vec![],
            geo_locations: vec![],
        }
    }

    fn win(a: i64, b: i64) -> Window {
        Window {
            start: from_us(a),
            end: from_us(b),
        }
    }

    /// A state written by the previous version (schema 1, per-record dedup keys) is upgraded in
    /// place: its files keep id scheme 1 (so re-reads compute legacy ids too), its coverage
    /// stays, and the key table is gone.
    #[test]
    fn a_schema_one_state_is_upgraded_without_losing_coverage() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        {
            let c = rusqlite::Connection::open(&p).unwrap();
            c.execute_batch(super::super::MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute_batch(
                "INSERT INTO streams (id, product_types, geo_locations, watermark_us) VALUES ('all', '', '', 86400000000);
                 INSERT INTO windows (stream_id, start_us, end_us, generation, records_written, records_fetched, pages, committed_at_us)
                   VALUES ('all', 0, 86400000000, 0, 2, 2, 1, 1);
                 INSERT INTO files (path, stream_id, partition, window_start_us, window_end_us, generation, rows, bytes, sha256, committed_at_us)
                   VALUES ('dt=1970-01-01/all-19700101T000000Z-19700102T000000Z-g0-p000.parquet', 'all', 'dt=1970-01-01', 0, 86400000000, 0, 2, 10, 'x', 1);
                 INSERT INTO dedup_keys (stream_id, record_id, action_time_us) VALUES ('all', x'00', 5);",
            )
            .unwrap();
        }
        let cp = Checkpoint::open(&p).unwrap();
        assert_eq!(cp.schema_version().unwrap(), super::super::MIGRATIONS.len() as i64);
        let day = win(0, 86_400_000_000);
        assert_eq!(cp.committed_ranges("all", day.start, day.end).unwrap(), vec![(day.start, day.end)]);
        let files = cp.files_overlapping(&day).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].1, 1, "files written before the upgrade carry id scheme 1");
        assert_eq!(cp.watermark("all").unwrap(), Some(day.end));
        let keys: i64 = cp
            .conn()
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'dedup_keys'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(keys, 0, "the per-record key table is dropped");
    }

    #[test]
    fn migrations_are_idempotent_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/state.db");
        {
            let cp = Checkpoint::open(&p).unwrap();
            assert_eq!(cp.schema_version().unwrap(), super::super::MIGRATIONS.len() as i64);
            assert!(matches!(Checkpoint::open(&p), Err(CheckpointError::Locked { .. })));
            // The same file through a symlink and through another path is the same lock.
            let link = dir.path().join("link.db");
            std::os::unix::fs::symlink(&p, &link).unwrap();
            assert!(matches!(Checkpoint::open(&link), Err(CheckpointError::Locked { .. })));
            let alias = dir.path().join("s/../s/./state.db");
            assert!(matches!(Checkpoint::open(&alias), Err(CheckpointError::Locked { .. })));
        }
        let cp = Checkpoint::open(&p).unwrap();
        assert_eq!(cp.schema_version().unwrap(), super::super::MIGRATIONS.len() as i64);
    }

    #[test]
    fn commit_is_atomic_and_moves_watermark_forward_only() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(&dir.path().join("state.db")).unwrap();
        cp.ensure_stream(&spec()).unwrap();
        let w = win(0, 1_000);
        assert_eq!(cp.next_generation("all", &w).unwrap(), 0);
        cp.begin_attempt("all", "all-x-g0", &["dt=1970-01-01".into()]).unwrap();
        assert_eq!(cp.pending().unwrap().len(), 1);
        let commit = |wm: i64, prefix: &'static str| WindowCommit {
            stream_id: "all",
            window: w,
            generation: cp.next_generation("all", &w).unwrap(),
            prefix,
            marker: prefix,
            files: vec![],
            id_scheme: 2,
            out_of_range: 0,
            records_fetched: 2,
            pages: 1,
            run_id: None,
            advance_watermark_to: Some(from_us(wm)),
        };
        cp.commit_window(&commit(1_000, "all-x-g0")).unwrap();
        assert!(cp.pending().unwrap().is_empty());
        assert_eq!(cp.watermark("all").unwrap(), Some(from_us(1_000)));
        assert_eq!(cp.next_generation("all", &w).unwrap(), 1);
        assert_eq!(cp.committed_ranges("all", w.start, w.end).unwrap(), vec![(w.start, w.end)]);
        cp.commit_window(&commit(500, "all-x-g1")).unwrap();
        assert_eq!(cp.watermark("all").unwrap(), Some(from_us(1_000)), "watermark never moves back");
    }
}
