//! `verify --repair`: the records of a file the lake lost (deleted, or corrupt) are exported
//! again, exactly; files a reader of the folder sees and the manifest does not know are set
//! aside.
//!
//! Exactly once:
//! - A file is repaired only if it is missing, or its bytes differ from the manifest's (size or
//!   SHA-256), checked again under the lock.
//! - Nothing is deleted: a corrupt file, or a stray, is moved to `_aos-audit-export/set-aside/`
//!   (outside every reader's sight) before the manifest forgets it, so its records can never be
//!   both in the folder and written again; the move keeps what the API may no longer serve.
//! - The file leaves the manifest and its windows lose their coverage in one transaction
//!   ([`crate::checkpoint::Checkpoint::uncover_file`]); the repair then reads those windows, and
//!   any later `run` would if it stops: their other files are read back for deduplication, so
//!   only the records the lost file held are written.
//! - Delta mode: the transaction also records the file's removal from the table, made right
//!   after (a `DELETE` commit) or by the next start-up's recovery, before any window is read.

use chrono::{DateTime, Utc};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::{Exporter, RunSummary};
use crate::model::Window;
use crate::window::ExportError;

/// Where repaired and stray files are moved, relative to the output root.
pub const SET_ASIDE_DIR: &str = "_aos-audit-export/set-aside";

/// What a repair did.
#[derive(Debug, Default, Clone)]
pub struct Repaired {
    /// Files whose records were lost and are read again.
    pub files: u64,
    /// Rows those files held, by the manifest.
    pub rows: u64,
    /// Corrupt files and strays moved to [`SET_ASIDE_DIR`].
    pub set_aside: u64,
    /// Stray files among them.
    pub strays: u64,
    /// The read of the uncovered windows.
    pub summary: RunSummary,
}

impl Exporter {
    /// Makes the start-up recovery's Delta removals that a repair recorded and did not make.
    pub(super) async fn finish_table_removes(&self) -> Result<(), ExportError> {
        let Some(table) = &self.table else { return Ok(()) };
        let paths = self.checkpoint.table_removes()?;
        if paths.is_empty() {
            return Ok(());
        }
        table.commit_removes(paths.clone()).await?;
        self.checkpoint.table_removed(&paths)?;
        tracing::info!(
            files = paths.len(),
            "removed from the table the files a repair took out of the manifest"
        );
        Ok(())
    }

    /// Repairs the manifest files among `candidates` that are missing or corrupt, sets aside
    /// the folder's stray files, and reads the uncovered windows again.
    pub async fn repair(&self, candidates: &[String], now: DateTime<Utc>, cancel: &CancellationToken) -> Result<Repaired, ExportError> {
        let mut done = Repaired::default();
        // This program's files the state does not know are learned first (they hold records):
        // only what is neither the manifest's nor this program's is a stray.
        self.checkpoint.set_file_adoption_pending(true)?;
        self.adopt_lake().await?;
        let stamp = now.format("%Y%m%dT%H%M%SZ");
        let manifest: std::collections::HashMap<String, crate::checkpoint::FileRow> =
            self.checkpoint.files()?.into_iter().map(|f| (f.path.clone(), f)).collect();
        let mut windows: Vec<Window> = Vec::new();
        for path in candidates {
            let Some(row) = manifest.get(path) else { continue };
            let data = self.store.read_if_exists(path).await?;
            let intact = data
                .as_ref()
                .is_some_and(|d| d.len() as u64 == row.bytes && hex::encode(sha2::Sha256::digest(d)) == row.sha256);
            if intact {
                continue;
            }
            let aside = format!("{SET_ASIDE_DIR}/{stamp}/{path}");
            let uncovered = if self.table.is_some() {
                let w = self.checkpoint.uncover_file(path, true)?;
                crate::crashpoint::hit("repair");
                self.finish_table_removes().await?;
                if data.is_some() && self.store.move_aside(path, &aside).await? {
                    done.set_aside += 1;
                }
                w
            } else {
                // Out of the folder first: the manifest forgets a file no reader sees.
                if data.is_some() && self.store.move_aside(path, &aside).await? {
                    done.set_aside += 1;
                }
                self.checkpoint.uncover_file(path, false)?
            };
            if let Some((_, w)) = uncovered {
                tracing::warn!(file = %path, rows = row.rows, set_aside = data.is_some(), "a file whose records the lake lost: its windows are read again");
                done.files += 1;
                done.rows += row.rows;
                windows.push(w);
            }
        }
        if self.table.is_none() {
            let known: std::collections::HashSet<String> = self.checkpoint.files()?.into_iter().map(|f| f.path).collect();
            for (path, _) in self.store.data_files().await? {
                if !known.contains(&path)
                    && self
                        .store
                        .move_aside(&path, &format!("{SET_ASIDE_DIR}/{stamp}/stray/{path}"))
                        .await?
                {
                    tracing::warn!(file = %path, "a file the manifest does not know, set aside");
                    done.set_aside += 1;
                    done.strays += 1;
                }
            }
        }
        if let (Some(from), Some(to)) = (windows.iter().map(|w| w.start).min(), windows.iter().map(|w| w.end).max()) {
            done.summary = self
                .over_range("repair", from, to, now, cancel, |stream, from, to| {
                    let covered = self.checkpoint.committed_ranges(&stream.id, from, to)?;
                    Ok(crate::planner::gaps(from, to, &covered))
                })
                .await?;
            self.checkpoint.recompute_watermarks(self.settings.export.start)?;
        }
        Ok(done)
    }
}
