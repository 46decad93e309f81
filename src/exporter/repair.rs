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

use super::compact::COMPACT_STREAM;
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
    /// Lost files of streams this configuration does not export: left as they are.
    pub skipped: u64,
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

    /// Start-up recovery: finishes the repairs begun (every step is idempotent).
    pub(super) async fn finish_repairs(&self) -> Result<(), ExportError> {
        for (path, aside) in self.checkpoint.repairs()? {
            self.finish_repair(&path, &aside).await?;
        }
        Ok(())
    }

    /// One file's repair, after its intent was recorded: out of every reader's sight before the
    /// manifest forgets it (folder: set aside first; Delta: the `DELETE` commit first, recorded
    /// in the same transaction that forgets it), its windows uncovered, its bytes set aside.
    async fn finish_repair(&self, path: &str, aside: &str) -> Result<Option<Window>, ExportError> {
        let all = self.checkpoint.file_stream(path)?.as_deref() == Some(COMPACT_STREAM);
        let uncovered = if self.table.is_some() {
            let w = self.checkpoint.uncover_file(path, true, all)?;
            crate::crashpoint::hit("repair");
            self.finish_table_removes().await?;
            self.store.move_aside(path, aside).await?;
            w
        } else {
            self.store.move_aside(path, aside).await?;
            crate::crashpoint::hit("repair");
            self.checkpoint.uncover_file(path, false, all)?
        };
        self.checkpoint.end_repair(path)?;
        Ok(uncovered)
    }

    /// Where `run` must start reading for `stream_id` to read again the windows a repair
    /// uncovered (even before the stream's oldest coverage); forgets those read since.
    pub(super) fn repaired_from(&self, stream_id: &str) -> Result<Option<DateTime<Utc>>, ExportError> {
        let mut from = None::<DateTime<Utc>>;
        for w in self.checkpoint.uncovered(stream_id)? {
            let covered = self.checkpoint.committed_ranges(stream_id, w.start, w.end)?;
            if crate::planner::gaps(w.start, w.end, &covered).is_empty() {
                self.checkpoint.clear_uncovered(stream_id, &w)?;
            } else {
                from = Some(from.map_or(w.start, |f| f.min(w.start)));
            }
        }
        Ok(from)
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
        let streams: Vec<&str> = self.settings.api.streams.iter().map(|s| s.id.as_str()).collect();
        for path in candidates {
            let Some(row) = manifest.get(path) else { continue };
            let data = self.store.read_if_exists(path).await?;
            let intact = data
                .as_ref()
                .is_some_and(|d| d.len() as u64 == row.bytes && hex::encode(sha2::Sha256::digest(d)) == row.sha256);
            if intact {
                continue;
            }
            // Only a configured stream's windows can be read again (a compaction's file holds
            // the records of every stream with windows under it).
            let owners = if row.stream_id == COMPACT_STREAM {
                self.checkpoint.streams_under(path)?
            } else {
                vec![row.stream_id.clone()]
            };
            if let Some(other) = owners.iter().find(|s| !streams.contains(&s.as_str())) {
                tracing::warn!(file = %path, stream = %other, "a lost file holding records of a stream this configuration does not export: not repaired (repair it with a configuration that exports every stream it holds)");
                done.skipped += 1;
                continue;
            }
            let aside = format!("{SET_ASIDE_DIR}/{stamp}/{path}");
            self.checkpoint.begin_repair(path, &aside)?;
            if self.finish_repair(path, &aside).await?.is_some() {
                tracing::warn!(file = %path, rows = row.rows, set_aside = data.is_some(), "a file whose records the lake lost: its windows are read again");
                done.files += 1;
                done.rows += row.rows;
                done.set_aside += u64::from(data.is_some());
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
        // Every window a repair uncovered (this one's, or one that stopped before its read),
        // each stream over its own only.
        let mut span: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
        for s in &streams {
            for w in self.checkpoint.uncovered(s)? {
                span = Some(span.map_or((w.start, w.end), |(a, b)| (a.min(w.start), b.max(w.end))));
            }
        }
        if let Some((from, to)) = span {
            done.summary = self
                .over_range("repair", from, to, now, cancel, |stream, from, to| {
                    let mut plan = Vec::new();
                    for w in self.checkpoint.uncovered(&stream.id)? {
                        let (a, b) = (w.start.max(from), w.end.min(to));
                        if a < b {
                            let covered = self.checkpoint.committed_ranges(&stream.id, a, b)?;
                            plan.extend(crate::planner::gaps(a, b, &covered));
                        }
                    }
                    // Merged: windows read in one pass never overlap (each deduplicates
                    // against the lake as it was when it was read).
                    plan.sort();
                    let mut merged: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
                    for (a, b) in plan {
                        match merged.last_mut() {
                            Some(last) if a <= last.1 => last.1 = last.1.max(b),
                            _ => merged.push((a, b)),
                        }
                    }
                    Ok(merged)
                })
                .await?;
            if done.summary.written < done.rows {
                tracing::warn!(
                    written = done.summary.written,
                    rows = done.rows,
                    "the reads wrote fewer records than the repaired files held: the API may no longer serve some of them (older than its retention?); the set-aside copies keep what they held"
                );
            }
            for s in &streams {
                self.repaired_from(s)?;
            }
            self.checkpoint.recompute_watermarks(self.settings.export.start)?;
        }
        Ok(done)
    }
}
