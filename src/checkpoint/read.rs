//! The read model: the file manifest and the `status` report.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Checkpoint, CheckpointError, from_us};

/// A file row as committed.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct FileRow {
    /// Path relative to the output root: `dt=YYYY-MM-DD/{prefix}-pNNN.ext`.
    pub path: String,
    /// The stream whose window wrote the file.
    pub stream_id: String,
    /// The partition folder: `dt=YYYY-MM-DD` or `dt=unknown`.
    pub partition: String,
    /// Number of records in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

impl Checkpoint {
    /// Every committed file in the manifest, ordered by path.
    pub fn files(&self) -> Result<Vec<FileRow>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT path, stream_id, partition, rows, bytes, sha256 FROM files ORDER BY path")?;
        let rows = st.query_map([], |r| {
            Ok(FileRow {
                path: r.get(0)?,
                stream_id: r.get(1)?,
                partition: r.get(2)?,
                rows: r.get::<_, i64>(3)? as u64,
                bytes: r.get::<_, i64>(4)? as u64,
                sha256: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The id scheme of the manifest's file at `path` (`None`: not in the manifest).
    pub fn id_scheme_of(&self, path: &str) -> Result<Option<i64>, CheckpointError> {
        use rusqlite::OptionalExtension;
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT id_scheme FROM files WHERE path = ?1")?;
        Ok(st.query_row([path], |r| r.get(0)).optional()?)
    }

    /// Whether the manifest holds a file at `path`.
    pub fn has_file(&self, path: &str) -> Result<bool, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare_cached("SELECT 1 FROM files WHERE path = ?1")?;
        Ok(st.exists([path])?)
    }

    /// The file formats (`parquet`, `ndjson`) the manifest holds.
    pub fn formats(&self) -> Result<Vec<String>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT DISTINCT CASE WHEN path LIKE '%.parquet' THEN 'parquet' ELSE 'ndjson' END FROM files
             WHERE substr(partition, 1, 12) <> '_quarantine/' ORDER BY 1",
        )?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The `status` report: streams, the last 10 runs, per-partition totals and pending attempts.
    pub fn report(&self) -> Result<StatusReport, CheckpointError> {
        let c = self.conn();
        let mut streams = Vec::new();
        {
            let mut st = c.prepare(
                "SELECT s.id, s.product_types, s.geo_locations, s.watermark_us,
                        (SELECT COUNT(*) FROM windows w WHERE w.stream_id = s.id),
                        (SELECT COALESCE(SUM(records_written), 0) FROM windows w WHERE w.stream_id = s.id),
                        (SELECT COALESCE(SUM(out_of_range), 0) FROM windows w WHERE w.stream_id = s.id),
                        (SELECT COALESCE(SUM(rows), 0) FROM files f WHERE f.stream_id = s.id AND substr(f.partition, 1, 12) = '_quarantine/')
                 FROM streams s ORDER BY s.id",
            )?;
            let rows = st.query_map([], |r| {
                Ok(StreamStatus {
                    id: r.get(0)?,
                    product_types: r.get(1)?,
                    geo_locations: r.get(2)?,
                    watermark: r.get::<_, Option<i64>>(3)?.map(from_us),
                    windows_committed: r.get::<_, i64>(4)? as u64,
                    records_written: r.get::<_, i64>(5)? as u64,
                    out_of_range: r.get::<_, i64>(6)? as u64,
                    quarantined: r.get::<_, i64>(7)? as u64,
                    coverage: Vec::new(),
                })
            })?;
            for r in rows {
                streams.push(r?);
            }
            let mut st = c.prepare("SELECT DISTINCT start_us, end_us FROM windows WHERE stream_id = ?1 ORDER BY start_us, end_us")?;
            for s in &mut streams {
                let ranges = st.query_map([&s.id], |r| Ok((from_us(r.get(0)?), from_us(r.get(1)?))))?;
                for r in ranges {
                    let (a, b) = r?;
                    match s.coverage.last_mut() {
                        Some(last) if a <= last.1 => last.1 = last.1.max(b),
                        _ => s.coverage.push((a, b)),
                    }
                }
            }
        }
        let mut runs = Vec::new();
        {
            let mut st = c.prepare(
                "SELECT id, command, started_at_us, finished_at_us, status,
                    (SELECT COUNT(*) FROM windows w WHERE w.run_id = runs.id),
                    (SELECT COALESCE(SUM(records_written), 0) FROM windows w WHERE w.run_id = runs.id),
                    error FROM runs ORDER BY id DESC LIMIT 10",
            )?;
            let rows = st.query_map([], |r| {
                Ok(RunStatus {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: from_us(r.get(2)?),
                    finished_at: r.get::<_, Option<i64>>(3)?.map(from_us),
                    status: match r.get::<_, String>(4)? {
                        // Nobody held the lock when this reader opened the state: a run still
                        // marked running that began before then died with its process.
                        s if s == "running"
                            && self
                                .unlocked_at
                                .is_some_and(|t| t.timestamp_micros() >= r.get::<_, i64>(2).unwrap_or(i64::MAX)) =>
                        {
                            "died".into()
                        }
                        s => s,
                    },
                    windows: r.get::<_, i64>(5)? as u64,
                    records_written: r.get::<_, i64>(6)? as u64,
                    error: r.get(7)?,
                })
            })?;
            for r in rows {
                runs.push(r?);
            }
        }
        let mut partitions = Vec::new();
        {
            let mut st = c.prepare("SELECT partition, COUNT(*), SUM(rows), SUM(bytes) FROM files GROUP BY partition ORDER BY partition")?;
            let rows = st.query_map([], |r| {
                Ok(PartitionStatus {
                    partition: r.get(0)?,
                    files: r.get::<_, i64>(1)? as u64,
                    rows: r.get::<_, i64>(2)? as u64,
                    bytes: r.get::<_, i64>(3)? as u64,
                })
            })?;
            for r in rows {
                partitions.push(r?);
            }
        }
        let pending: i64 = c.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0))?;
        Ok(StatusReport {
            state_path: self.path.display().to_string(),
            streams,
            runs,
            partitions,
            pending_attempts: pending as u64,
        })
    }
}

/// One stream's coverage and totals, as `status` shows it.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// The stream id.
    pub id: String,
    /// The `productTypes` filter, comma-separated (empty = all products).
    pub product_types: String,
    /// The `geoLocations` filter, comma-separated (empty = all locations).
    pub geo_locations: String,
    /// End of the contiguous committed prefix; `None` before the first commit.
    pub watermark: Option<DateTime<Utc>>,
    /// Number of committed window reads (re-reads of a window count again).
    pub windows_committed: u64,
    /// Records written to files across all committed windows.
    pub records_written: u64,
    /// Records a padded query returned from a neighbouring window (that window exports them).
    pub out_of_range: u64,
    /// Records kept in `_quarantine/` (text a strict JSON reader refuses; see
    /// `export.on_invalid_record`).
    pub quarantined: u64,
    /// Committed time ranges, merged and sorted: the coverage model.
    pub coverage: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

/// One recorded run, as `status` shows it.
#[derive(Debug, Serialize)]
pub struct RunStatus {
    /// The run's id in the `runs` table.
    pub id: i64,
    /// The command that ran: `run`, `backfill` or `reconcile`.
    pub command: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// When the run ended; `None` while running or if the process died.
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `ok`, `interrupted`, `deadline` or `failed`.
    pub status: String,
    /// Windows committed by the run (0 unless it ended `ok`).
    pub windows: u64,
    /// Records written by the run (0 unless it ended `ok`).
    pub records_written: u64,
    /// The error message of a `failed` run.
    pub error: Option<String>,
}

/// Totals of the committed files in one partition.
#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    /// The partition folder: `dt=YYYY-MM-DD` or `dt=unknown`.
    pub partition: String,
    /// Number of committed files.
    pub files: u64,
    /// Records across those files.
    pub rows: u64,
    /// Total size of those files, in bytes.
    pub bytes: u64,
}

/// What `status` reports about the checkpoint.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// The checkpoint database's path, for display.
    pub state_path: String,
    /// Every stream, ordered by id.
    pub streams: Vec<StreamStatus>,
    /// The 10 most recent runs, newest first.
    pub runs: Vec<RunStatus>,
    /// Per-partition totals, ordered by partition.
    pub partitions: Vec<PartitionStatus>,
    /// Attempts begun but not committed (files a crash may have left behind).
    pub pending_attempts: u64,
}
