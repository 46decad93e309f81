//! The SQLite checkpoint: streams and their coverage, committed windows, pending attempts, the
//! file manifest, dedup keys and run history. All SQL of the program lives here and in
//! `migrations/`. This file opens, locks and migrates the database; [`commit`] is the write
//! path (attempts, commits, run history), [`read`] the read model (`status`, `verify`).
//!
//! Invariants: a window's manifest rows, dedup keys, watermark move and the removal of its
//! pending row commit in one transaction ([`Checkpoint::commit_window`]), which the caller runs
//! only after every file of the window is published. `synchronous=FULL` makes a commit durable
//! before it returns. One process at a time holds the state: an exclusive OS lock (`flock`) on
//! the database file itself, so the same state reached through a symlink, another relative
//! path or a hard link is the same lock, and there is no separate lock file to delete.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use rusqlite::Connection;

pub mod adopt;
pub mod commit;
pub mod read;
pub mod repair;
pub mod rewrite;

pub use adopt::{Adoption, CommitMarker};
pub use commit::{Pending, Side, WindowCommit};
pub use read::{FileRow, PartitionStatus, RunStatus, StatusReport, StreamStatus};
pub use rewrite::Rewrite;

/// Migrations in order; the index + 1 is the schema version.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_lake_keys.sql"),
    include_str!("../../migrations/0003_lake_markers.sql"),
];

/// Why the checkpoint database could not be opened, locked, migrated or queried.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The database cannot be opened or switched to WAL, or (for read-only use) does not exist.
    #[error("state.path {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database's parent folder or the database file cannot be created.
    #[error("state.path {path}: cannot create its folder: {source}")]
    Folder {
        /// The database file, or the lock file when that is what failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the lock on the database file.
    #[error("another aos-audit-export is using the state {path} (its lock is held); wait for it to finish")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The database's schema version is newer than the migrations this build knows.
    #[error("state.path {path}: schema version {found} is newer than this program ({known}); upgrade aos-audit-export")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The database's `user_version`.
        found: i64,
        /// The newest schema version this build knows.
        known: i64,
    },
    /// A value the state recorded cannot be read back.
    #[error("checkpoint database: {0}")]
    Corrupt(String),
    /// Any other SQLite error while migrating, reading or writing.
    #[error("checkpoint database: {0}")]
    Sql(#[from] rusqlite::Error),
}

pub(crate) fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_us(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(v).unwrap_or_default()
}

/// An open checkpoint database (SQLite, WAL, `synchronous=FULL`), holding its advisory lock
/// when opened for writing.
pub struct Checkpoint {
    conn: Mutex<Connection>,
    path: PathBuf,
    _lock: Option<File>,
    /// For a reader ([`Checkpoint::open_read`]): when it found no process holding the lock,
    /// before it opened the database (so every run still marked running that began before
    /// then has died).
    pub(crate) unlocked_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Checkpoint {
    /// Opens (creating) the database for writing: takes the lock on the database file,
    /// applies migrations.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Folder { path: path.into(), source })?;
        }
        // The lock is on the file (its inode), not on a name: every path to it meets the same
        // lock. SQLite's own locks are POSIX record locks, which `flock` does not touch.
        let f = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| CheckpointError::Folder { path: path.into(), source })?;
        // `status` probes the lock for a few microseconds (to tell a died run from a running
        // one): a start that meets that probe tries again for up to 250 ms.
        let mut tries = 0;
        while f.try_lock().is_err() {
            tries += 1;
            if tries == 25 {
                return Err(CheckpointError::Locked { path: path.into() });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
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
        // Probed before SQLite opens the file: closing another descriptor of a file drops the
        // process's POSIX locks on it, which SQLite's own locking relies on.
        let unlocked_at = File::open(path).ok().and_then(|f| f.try_lock().ok().map(|()| chrono::Utc::now()));
        let mut cp = Self::connect(path, None)?;
        cp.unlocked_at = unlocked_at;
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
            unlocked_at: None,
        })
    }

    pub(crate) fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
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

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, CheckpointError> {
        Ok(self.conn().query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

impl Checkpoint {
    /// Records the settings the exporter writes with (JSON, for `status`): the last writer's.
    pub fn set_written_with(&self, json: &str) -> Result<(), CheckpointError> {
        self.conn()
            .execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('written-with', ?1)", [json])?;
        Ok(())
    }

    /// The settings the last writer recorded, if any (states of earlier versions have none).
    pub fn written_with(&self) -> Result<Option<String>, CheckpointError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = 'written-with'", [], |r| r.get(0))
            .optional()?)
    }
}
