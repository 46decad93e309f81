//! The SQLite checkpoint: streams and watermarks, committed windows, pending attempts, the file
//! manifest, dedup keys and run history. All SQL of the program lives here and in
//! `migrations/`.
//!
//! Invariants: a window's manifest rows, dedup keys, watermark move and the removal of its
//! pending row commit in one transaction ([`Checkpoint::commit_window`]), which the caller runs
//! only after every file of the window is published. `synchronous=FULL` makes a commit durable
//! before it returns. One process at a time holds the state (an advisory lock on
//! `<state>.lock`).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use crate::config::StreamSpec;
use crate::pipeline::RecordId;
use crate::planner::Window;

/// Migrations in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[include_str!("../migrations/0001_init.sql")];

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("state.path {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error("state.path {path}: cannot create its folder: {source}")]
    Folder { path: PathBuf, source: std::io::Error },
    #[error("another aos-audit-export is using {path} (lock {lock} is held); wait for it to finish")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error("state.path {path}: schema version {found} is newer than this program ({known}); upgrade aos-audit-export")]
    TooNew { path: PathBuf, found: i64, known: i64 },
    #[error("checkpoint database: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

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

/// Everything one window commit records.
pub struct WindowCommit<'a> {
    pub stream_id: &'a str,
    pub window: Window,
    pub generation: u32,
    pub prefix: &'a str,
    pub files: Vec<FileRow>,
    pub new_ids: Vec<(RecordId, Option<i64>)>,
    pub records_fetched: u64,
    pub pages: u64,
    pub run_id: Option<i64>,
    /// Move the stream's watermark here (never backwards).
    pub advance_watermark_to: Option<DateTime<Utc>>,
    /// Forget dedup keys of records older than this (nothing can re-read them).
    pub prune_keys_before: Option<DateTime<Utc>>,
}

/// An uncommitted attempt found in the state.
#[derive(Debug, Clone)]
pub struct Pending {
    pub prefix: String,
    pub partitions: Vec<String>,
}

pub struct Checkpoint {
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: Option<File>,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

impl Checkpoint {
    /// Opens (creating) the database for writing: takes the advisory lock, applies migrations.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Folder { path: path.into(), source })?;
        }
        let lock = lock_path(path);
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(|source| CheckpointError::Folder {
                path: lock.clone(),
                source,
            })?;
        if f.try_lock().is_err() {
            return Err(CheckpointError::Locked { path: path.into(), lock });
        }
        let cp = Self::connect(path, Some(f))?;
        cp.migrate()?;
        Ok(cp)
    }

    /// Opens an existing database without the lock, for `status` and `verify` (which only read).
    pub fn open_read(path: &Path) -> Result<Self, CheckpointError> {
        if !path.exists() {
            return Err(CheckpointError::Open {
                path: path.into(),
                source: rusqlite::Error::InvalidPath(path.into()),
            });
        }
        let cp = Self::connect(path, None)?;
        cp.migrate()?;
        Ok(cp)
    }

    fn connect(path: &Path, lock: Option<File>) -> Result<Self, CheckpointError> {
        let conn = Connection::open(path).map_err(|source| CheckpointError::Open { path: path.into(), source })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|source| CheckpointError::Open { path: path.into(), source })?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Ok(Checkpoint {
            conn: Mutex::new(conn),
            path: path.into(),
            _lock: lock,
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies migrations newer than the database's `user_version`, each in its own transaction.
    fn migrate(&self) -> Result<(), CheckpointError> {
        let mut c = self.conn();
        let found: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if found > known {
            return Err(CheckpointError::TooNew {
                path: self.path.clone(),
                found,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let tx = c.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<i64, CheckpointError> {
        Ok(self.conn().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    pub fn ensure_stream(&self, s: &StreamSpec) -> Result<(), CheckpointError> {
        self.conn().execute(
            "INSERT OR IGNORE INTO streams (id, product_types, geo_locations) VALUES (?1, ?2, ?3)",
            params![s.id, s.product_types.join(","), s.geo_locations.join(",")],
        )?;
        Ok(())
    }

    pub fn watermark(&self, stream_id: &str) -> Result<Option<DateTime<Utc>>, CheckpointError> {
        let v: Option<Option<i64>> = self
            .conn()
            .query_row("SELECT watermark_us FROM streams WHERE id = ?1", [stream_id], |r| r.get(0))
            .optional()?;
        Ok(v.flatten().map(from_us))
    }

    /// How many times `[start, end)` was committed before: the next read's generation.
    pub fn next_generation(&self, stream_id: &str, w: &Window) -> Result<u32, CheckpointError> {
        Ok(self.conn().query_row(
            "SELECT COALESCE(MAX(generation) + 1, 0) FROM windows WHERE stream_id = ?1 AND start_us = ?2 AND end_us = ?3",
            params![stream_id, us(w.start), us(w.end)],
            |r| r.get(0),
        )?)
    }

    pub fn window_committed(&self, stream_id: &str, w: &Window) -> Result<bool, CheckpointError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT 1 FROM windows WHERE stream_id = ?1 AND start_us = ?2 AND end_us = ?3 LIMIT 1",
                params![stream_id, us(w.start), us(w.end)],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    /// Committed `[start, end)` ranges of a stream overlapping `[from, to)`.
    pub fn committed_ranges(
        &self,
        stream_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<crate::planner::Range>, CheckpointError> {
        let c = self.conn();
        let mut st =
            c.prepare_cached("SELECT DISTINCT start_us, end_us FROM windows WHERE stream_id = ?1 AND end_us > ?2 AND start_us < ?3")?;
        let rows = st.query_map(params![stream_id, us(from), us(to)], |r| {
            Ok((from_us(r.get(0)?), from_us(r.get(1)?)))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records that an attempt is about to write files named `prefix…` in `partitions`.
    pub fn begin_attempt(&self, stream_id: &str, prefix: &str, partitions: &[String]) -> Result<(), CheckpointError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO pending (prefix, stream_id, partitions, started_at_us) VALUES (?1, ?2, ?3, ?4)",
            params![prefix, stream_id, partitions.join(","), us(Utc::now())],
        )?;
        Ok(())
    }

    pub fn pending(&self) -> Result<Vec<Pending>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT prefix, partitions FROM pending ORDER BY started_at_us")?;
        let rows = st.query_map([], |r| {
            let parts: String = r.get(1)?;
            Ok(Pending {
                prefix: r.get(0)?,
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

    /// Ids already exported for records in `w` (plus those without a parseable time).
    pub fn known_ids(&self, stream_id: &str, w: &Window) -> Result<HashSet<RecordId>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare_cached(
            "SELECT record_id FROM dedup_keys WHERE stream_id = ?1 AND ((action_time_us >= ?2 AND action_time_us < ?3) OR action_time_us IS NULL)",
        )?;
        let rows = st.query_map(params![stream_id, us(w.start), us(w.end)], |r| r.get::<_, Vec<u8>>(0))?;
        let mut out = HashSet::new();
        for r in rows {
            let v = r?;
            if let Ok(id) = <RecordId>::try_from(v.as_slice()) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// Commits one window: manifest, dedup keys, window row, watermark, pending row; atomically.
    pub fn commit_window(&self, c: &WindowCommit<'_>) -> Result<(), CheckpointError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let now = us(Utc::now());
        {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO files (path, stream_id, partition, window_start_us, window_end_us, generation, rows, bytes, sha256, committed_at_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                    now
                ])?;
            }
            let mut key =
                tx.prepare_cached("INSERT OR IGNORE INTO dedup_keys (stream_id, record_id, action_time_us) VALUES (?1, ?2, ?3)")?;
            for (id, t) in &c.new_ids {
                key.execute(params![c.stream_id, &id[..], t])?;
            }
        }
        let written: u64 = c.files.iter().map(|f| f.rows).sum();
        tx.execute(
            "INSERT INTO windows (stream_id, start_us, end_us, generation, records_written, records_fetched, pages, run_id, committed_at_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![c.stream_id, us(c.window.start), us(c.window.end), c.generation, written as i64, c.records_fetched as i64, c.pages as i64, c.run_id, now],
        )?;
        if let Some(w) = c.advance_watermark_to {
            tx.execute(
                "UPDATE streams SET watermark_us = ?2, updated_at_us = ?3 WHERE id = ?1 AND (watermark_us IS NULL OR watermark_us < ?2)",
                params![c.stream_id, us(w), now],
            )?;
        }
        if let Some(p) = c.prune_keys_before {
            tx.execute(
                "DELETE FROM dedup_keys WHERE stream_id = ?1 AND action_time_us < ?2",
                params![c.stream_id, us(p)],
            )?;
        }
        tx.execute("DELETE FROM pending WHERE prefix = ?1", [c.prefix])?;
        tx.commit()?;
        Ok(())
    }

    pub fn start_run(&self, command: &str) -> Result<i64, CheckpointError> {
        let c = self.conn();
        c.execute(
            "INSERT INTO runs (command, started_at_us, status) VALUES (?1, ?2, 'running')",
            params![command, us(Utc::now())],
        )?;
        Ok(c.last_insert_rowid())
    }

    pub fn finish_run(&self, id: i64, status: &str, windows: u64, records: u64, error: Option<&str>) -> Result<(), CheckpointError> {
        self.conn().execute(
            "UPDATE runs SET finished_at_us = ?2, status = ?3, windows = ?4, records_written = ?5, error = ?6 WHERE id = ?1",
            params![id, us(Utc::now()), status, windows as i64, records as i64, error],
        )?;
        Ok(())
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StreamSpec {
        StreamSpec {
            id: "all".into(),
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

    #[test]
    fn migrations_are_idempotent_and_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s/state.db");
        {
            let cp = Checkpoint::open(&p).unwrap();
            assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
            assert!(matches!(Checkpoint::open(&p), Err(CheckpointError::Locked { .. })));
        }
        let cp = Checkpoint::open(&p).unwrap();
        assert_eq!(cp.schema_version().unwrap(), MIGRATIONS.len() as i64);
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
            files: vec![],
            new_ids: vec![([1; 16], Some(10)), ([2; 16], None)],
            records_fetched: 2,
            pages: 1,
            run_id: None,
            advance_watermark_to: Some(from_us(wm)),
            prune_keys_before: None,
        };
        cp.commit_window(&commit(1_000, "all-x-g0")).unwrap();
        assert!(cp.pending().unwrap().is_empty());
        assert_eq!(cp.watermark("all").unwrap(), Some(from_us(1_000)));
        assert_eq!(cp.next_generation("all", &w).unwrap(), 1);
        assert!(cp.window_committed("all", &w).unwrap());
        cp.commit_window(&commit(500, "all-x-g1")).unwrap();
        assert_eq!(cp.watermark("all").unwrap(), Some(from_us(1_000)), "watermark never moves back");
        let known = cp.known_ids("all", &win(0, 5)).unwrap();
        assert!(known.contains(&[2; 16]), "unplaced ids are always known");
        assert!(!known.contains(&[1; 16]));
        assert!(cp.known_ids("all", &w).unwrap().contains(&[1; 16]));
    }
}
