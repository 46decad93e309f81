//! Delta compaction: once a day is closed (older than `lag + lookback` and an hour's margin, so
//! no run re-reads it), its small files are rewritten into files of about
//! [`TARGET_BYTES`] in one table commit (remove + add, `dataChange = false`).
//!
//! Exactly once: the merged files copy their inputs' rows as they are (ids included); the
//! commit removes exactly the inputs, so every table version holds each record once, and the
//! version before it (time travel) still names the inputs, which stay on disk until `vacuum`.
//! The manifest follows the table through a recorded rewrite ([`crate::checkpoint::Rewrite`]):
//! start-up recovery finishes it if the table holds the merged files, or deletes them.

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::Exporter;
use crate::checkpoint::{FileRow, Rewrite};
use crate::dedup::ID_SCHEME;
use crate::model::{Window, attempt_file_name, attempt_prefix, parse_attempt_file};
use crate::sink::readback::Source;
use crate::store::delta::AddFile;
use crate::window::ExportError;

/// The size merged files are cut at.
pub const TARGET_BYTES: u64 = 128 << 20;
/// Beyond `lag + lookback`, how long a day waits before it counts as closed.
pub const MARGIN: Duration = Duration::hours(1);
/// The stream name compaction's files carry (their window spans the inputs').
pub const COMPACT_STREAM: &str = "compacted";

/// What a compaction did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Compacted {
    /// Days rewritten.
    pub days: u64,
    /// Files before, in the days rewritten.
    pub files_before: u64,
    /// Files after, in the days rewritten.
    pub files_after: u64,
}

impl Exporter {
    /// The last instant a closed day may end at: `now − lag − lookback − MARGIN`.
    pub fn closed_before(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let e = &self.settings.export;
        now - e.lag - e.lookback - MARGIN
    }

    /// Compacts every closed day in `[from, to)` whose files are more than its size needs.
    pub async fn compact(&self, from: DateTime<Utc>, to: DateTime<Utc>, now: DateTime<Utc>) -> Result<Compacted, ExportError> {
        let Some(table) = &self.table else {
            return Err(ExportError::Internal("compact needs export.format = \"delta\"".into()));
        };
        let closed = self.closed_before(now).min(to);
        let view = table.view().await?;
        let mut days: std::collections::BTreeMap<NaiveDate, Vec<(String, u64)>> = Default::default();
        for f in view.files.values() {
            let Some((part, name)) = f.path.split_once('/') else { continue };
            let Some(day) = part.strip_prefix("dt=").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else {
                continue;
            };
            let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            // Only this program's files: their names carry the windows the dedup reads by.
            if start < from || start + Duration::days(1) > closed || parse_attempt_file(name).is_none() {
                continue;
            }
            // Only files whose ids are of the current scheme: a merged file is recorded with it,
            // and a re-read would not match older ids (a lake converted from files an earlier
            // version wrote keeps those files as they are).
            if self.checkpoint.id_scheme_of(&f.path)? != Some(ID_SCHEME) {
                continue;
            }
            days.entry(day).or_default().push((f.path.clone(), f.size));
        }
        let mut done = Compacted::default();
        for (day, mut files) in days {
            // Only the small files are merged: a day already in large files (merged files
            // end up somewhat under the target) is left as it is, not rewritten every run.
            files.retain(|f| f.1 < TARGET_BYTES / 2);
            if files.len() < 2 {
                continue;
            }
            files.sort();
            let after = self.compact_day(day, &files).await?;
            if let Some(n) = after {
                done.days += 1;
                done.files_before += files.len() as u64;
                done.files_after += n;
            }
        }
        Ok(done)
    }

    /// Delta mode: `vacuum` of the table (see [`crate::store::delta::DeltaTable::vacuum`]).
    pub async fn vacuum(&self, retention: Duration, dry_run: bool) -> Result<crate::store::delta::Vacuumed, ExportError> {
        let Some(table) = &self.table else {
            return Err(ExportError::Internal("vacuum needs export.format = \"delta\"".into()));
        };
        Ok(table.vacuum(retention, dry_run, &|name| parse_attempt_file(name).is_some()).await?)
    }

    /// Delta mode, after a `run`: compacts what is closed since `export.start`. A failure is
    /// logged and left to the next run (the export itself succeeded).
    pub async fn compact_after_run(&self, now: DateTime<Utc>) {
        if self.table.is_none() {
            return;
        }
        match self.compact(self.settings.export.start, now, now).await {
            Ok(c) if c.days > 0 => tracing::info!(
                days = c.days,
                files_before = c.files_before,
                files_after = c.files_after,
                "compacted closed days"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "compaction failed; the next run tries again"),
        }
    }

    /// Rewrites one day's `files`; `None` when another writer changed them first.
    async fn compact_day(&self, day: NaiveDate, files: &[(String, u64)]) -> Result<Option<u64>, ExportError> {
        let Some(table) = &self.table else { return Ok(None) };
        let partition = format!("dt={}", day.format("%Y-%m-%d"));
        let windows: Vec<Window> = files
            .iter()
            .filter_map(|(p, _)| p.rsplit_once('/').and_then(|(_, n)| parse_attempt_file(n)).map(|a| a.window))
            .collect();
        let window = Window {
            start: windows.iter().map(|w| w.start).min().unwrap_or_default(),
            end: windows.iter().map(|w| w.end).max().unwrap_or_default(),
        };
        let prefix = attempt_prefix(COMPACT_STREAM, &window, 0, rand::random());
        // Recorded before anything is written: recovery deletes what a crash leaves of it.
        let mut rewrite = Rewrite {
            prefix: prefix.clone(),
            removes: files.iter().map(|f| f.0.clone()).collect(),
            adds: vec![],
            window,
            partition: partition.clone(),
        };
        self.checkpoint.begin_rewrite(&rewrite)?;
        // Object storage: each input is downloaded to the spool first, so the merge holds one
        // row group in memory, never a day of files.
        let mut inputs = Vec::with_capacity(files.len());
        for (path, _) in files {
            let source = match self.store.open_local(path) {
                Some(f) => Source::File(f?),
                None => {
                    let spooled = self
                        .settings
                        .spool_path()
                        .join(format!("compact-input-{prefix}-{}", path.replace('/', "__")));
                    let io = |source| crate::store::StoreError::Io {
                        path: spooled.clone(),
                        source,
                    };
                    std::fs::create_dir_all(self.settings.spool_path()).map_err(io)?;
                    std::fs::write(&spooled, self.store.read(path).await?).map_err(io)?;
                    let f = std::fs::File::open(&spooled).map_err(io)?;
                    // The open handle keeps the data; the name goes at once.
                    let _ = std::fs::remove_file(&spooled);
                    Source::File(f)
                }
            };
            inputs.push((path.clone(), source));
        }
        let stager = self.store.stager();
        let compression = self.settings.export.sink.compression;
        let (part, pfx) = (partition.clone(), prefix.clone());
        let written = tokio::task::spawn_blocking(move || {
            crate::sink::merge::merge(inputs, &part, TARGET_BYTES, compression, &|n| {
                let rel = format!("{part}/{}", attempt_file_name(&pfx, n, "parquet"));
                let staged = stager(&rel);
                (rel, staged)
            })
        })
        .await
        .map_err(|e| ExportError::Internal(format!("compaction stopped: {e}")))??;
        let adds: Vec<FileRow> = written
            .iter()
            .map(|f| FileRow {
                path: f.rel_path.clone(),
                stream_id: COMPACT_STREAM.into(),
                partition: f.partition.clone(),
                rows: f.rows,
                bytes: f.bytes,
                sha256: f.sha256.clone(),
            })
            .collect();
        rewrite.adds = adds.clone();
        self.checkpoint.begin_rewrite(&rewrite)?;
        for f in &written {
            self.store.publish(&f.temp_path, &f.rel_path).await?;
        }
        crate::crashpoint::hit("compact");
        let add_files = adds
            .iter()
            .map(|f| AddFile {
                path: f.path.clone(),
                size: f.bytes,
                rows: f.rows,
            })
            .collect();
        match table.commit_rewrite(rewrite.removes.clone(), add_files).await? {
            Ok(version) => {
                crate::crashpoint::hit("compact");
                self.checkpoint.finish_rewrite(&rewrite, ID_SCHEME)?;
                tracing::info!(partition = %partition, files_before = files.len(), files_after = adds.len(), version, "compacted a closed day");
                Ok(Some(adds.len() as u64))
            }
            Err(why) => {
                tracing::warn!(partition = %partition, reason = %why, "compaction skipped this day");
                // Never delete what the table may name: recovery decides from the table.
                self.recover_rewrites().await?;
                Ok(None)
            }
        }
    }

    /// Start-up recovery of compactions a crash interrupted: finished if the table holds
    /// the merged files, deleted if not.
    pub(super) async fn recover_rewrites(&self) -> Result<(), ExportError> {
        let rewrites = self.checkpoint.rewrites()?;
        if rewrites.is_empty() {
            return Ok(());
        }
        let Some(table) = &self.table else { return Ok(()) };
        let view = table.view().await?;
        for mut r in rewrites {
            // Any file of the rewrite in the table means its commit landed (one commit adds them
            // all): finished, never deleted. Files the record does not name (it was taken
            // before the merge) are learned by the next adoption.
            let in_table = view
                .files
                .keys()
                .any(|p| p.rsplit_once('/').is_some_and(|(_, n)| crate::model::is_attempt_file(n, &r.prefix)));
            if in_table {
                r.adds.retain(|f| view.files.contains_key(&f.path));
                self.checkpoint.finish_rewrite(&r, ID_SCHEME)?;
                self.checkpoint.set_file_adoption_pending(true)?;
                tracing::info!(prefix = %r.prefix, "finished a compaction the table holds");
            } else {
                let mut parts: Vec<String> = r.adds.iter().map(|f| f.partition.clone()).collect();
                parts.push(r.partition.clone());
                parts.dedup();
                self.store.remove_attempt(&parts, &r.prefix).await?;
                self.checkpoint.drop_rewrite(&r.prefix)?;
                tracing::info!(prefix = %r.prefix, "deleted the files of a compaction that never reached the table");
            }
        }
        Ok(())
    }
}
