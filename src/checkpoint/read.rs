//! The read model: the file manifest and the `status` report.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Checkpoint, CheckpointError, from_us};

/// A file row as committed.
#[derive(Debug, Clone, Serialize)]
pub struct FileRow {
    pub path: String,
    pub stream_id: String,
    pub partition: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl Checkpoint {
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

    pub fn report(&self) -> Result<StatusReport, CheckpointError> {
        let c = self.conn();
        let mut streams = Vec::new();
        {
            let mut st = c.prepare(
                "SELECT s.id, s.product_types, s.geo_locations, s.watermark_us,
                        (SELECT COUNT(*) FROM windows w WHERE w.stream_id = s.id),
                        (SELECT COALESCE(SUM(records_written), 0) FROM windows w WHERE w.stream_id = s.id),
                        (SELECT COUNT(*) FROM dedup_keys k WHERE k.stream_id = s.id)
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
                    dedup_keys: r.get::<_, i64>(6)? as u64,
                })
            })?;
            for r in rows {
                streams.push(r?);
            }
        }
        let mut runs = Vec::new();
        {
            let mut st = c.prepare("SELECT id, command, started_at_us, finished_at_us, status, windows, records_written, error FROM runs ORDER BY id DESC LIMIT 10")?;
            let rows = st.query_map([], |r| {
                Ok(RunStatus {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    started_at: from_us(r.get(2)?),
                    finished_at: r.get::<_, Option<i64>>(3)?.map(from_us),
                    status: r.get(4)?,
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

#[derive(Debug, Serialize)]
pub struct StreamStatus {
    pub id: String,
    pub product_types: String,
    pub geo_locations: String,
    pub watermark: Option<DateTime<Utc>>,
    pub windows_committed: u64,
    pub records_written: u64,
    pub dedup_keys: u64,
}

#[derive(Debug, Serialize)]
pub struct RunStatus {
    pub id: i64,
    pub command: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub windows: u64,
    pub records_written: u64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PartitionStatus {
    pub partition: String,
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub state_path: String,
    pub streams: Vec<StreamStatus>,
    pub runs: Vec<RunStatus>,
    pub partitions: Vec<PartitionStatus>,
    pub pending_attempts: u64,
}
