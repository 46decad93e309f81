//! Rewrites of the manifest that a Delta compaction makes: the files it replaced leave the
//! manifest and the merged files enter it, in one transaction, once the table commit is made.
//!
//! A rewrite is recorded (`meta` key `rewrite:{prefix}`) before its table commit, so that
//! start-up recovery can finish it (the table lists its files) or delete its files (it does
//! not): the manifest never names a file the table does not hold, nor misses one it does.

use chrono::Utc;
use rusqlite::params;

use super::{Checkpoint, CheckpointError, FileRow, us};
use crate::model::Window;

/// A compaction between its table commit and its manifest swap.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Rewrite {
    /// The merged files' attempt prefix.
    pub prefix: String,
    /// The files replaced (paths relative to the root).
    pub removes: Vec<String>,
    /// The merged files.
    pub adds: Vec<FileRow>,
    /// The window the merged files' names carry (the span of the inputs' windows).
    pub window: Window,
    /// The day's partition (`dt=YYYY-MM-DD`), where the merged files are written.
    #[serde(default)]
    pub partition: String,
}

impl Checkpoint {
    /// Records a rewrite about to be committed to the table.
    pub fn begin_rewrite(&self, r: &Rewrite) -> Result<(), CheckpointError> {
        let body = serde_json::to_string(r).map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
        self.conn().execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![format!("rewrite:{}", r.prefix), body],
        )?;
        Ok(())
    }

    /// The rewrites begun and neither finished nor dropped.
    pub fn rewrites(&self) -> Result<Vec<Rewrite>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT value FROM meta WHERE key LIKE 'rewrite:%' ORDER BY key")?;
        let rows: Vec<String> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        rows.iter()
            .map(|v| serde_json::from_str(v).map_err(|e| CheckpointError::Corrupt(format!("a recorded compaction: {e}"))))
            .collect()
    }

    /// The table holds the rewrite: the manifest follows, in one transaction.
    pub fn finish_rewrite(&self, r: &Rewrite, id_scheme: i64) -> Result<(), CheckpointError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        for p in &r.removes {
            tx.execute("DELETE FROM files WHERE path = ?1", [p])?;
        }
        for f in &r.adds {
            super::adopt::insert_file(&tx, f, &r.window, 0, id_scheme, us(Utc::now()))?;
        }
        tx.execute("DELETE FROM meta WHERE key = ?1", [format!("rewrite:{}", r.prefix)])?;
        tx.commit()?;
        Ok(())
    }

    /// Removes manifest rows of files the lake no longer holds.
    pub fn forget_files(&self, paths: &[String]) -> Result<(), CheckpointError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        for p in paths {
            tx.execute("DELETE FROM files WHERE path = ?1", [p])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The rewrite never reached the table: forgotten (its files are deleted by the caller).
    pub fn drop_rewrite(&self, prefix: &str) -> Result<(), CheckpointError> {
        self.conn()
            .execute("DELETE FROM meta WHERE key = ?1", [format!("rewrite:{prefix}")])?;
        Ok(())
    }
}
