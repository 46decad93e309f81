//! The lake is the source of truth: before the first window, the exporter learns what the
//! output holds that its state does not — a new state, a lost one, or one restored from an
//! older backup — so that none of these can lead to a second copy of a record.
//!
//! Cheap when nothing is to learn: one listing of the commit markers newer than the newest the
//! state knows (a single request on object storage). The data files are listed only when the
//! state had no window at all or the lake holds markers it does not know.

use std::collections::{HashMap, HashSet};

use sha2::Digest;

use super::Exporter;
use crate::checkpoint::{Adoption, CommitMarker, FileRow};
use crate::dedup::{ID_SCHEME, UNKNOWN_SCHEME};
use crate::model::parse_attempt_file;
use crate::sink::readback;
use crate::window::ExportError;

/// What an adoption found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Adopted {
    /// Committed windows learned from their markers (coverage and files).
    pub windows: u64,
    /// Data files no marker names, learned for deduplication only (their windows are read
    /// again).
    pub files: u64,
}

impl Exporter {
    /// Ends the run's record; a run that committed windows also records the settings it wrote
    /// them with (`status` reports from those: the data was written with them).
    pub(super) fn finish_run(&self, run_id: i64, status: &str, error: Option<&str>) -> Result<(), ExportError> {
        if self.checkpoint.finish_run(run_id, status, error)? == 0 {
            return Ok(());
        }
        let e = &self.settings.export;
        let format = e.format_name();
        let json = serde_json::json!({
            "start": e.start_setting, "lag_seconds": e.lag.num_seconds(), "lookback_seconds": e.lookback.num_seconds(),
            "output": crate::config::without_credentials(&e.output), "format": format,
            "streams": self.settings.api.streams.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            "recorded_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        self.checkpoint.set_written_with(&json.to_string())?;
        Ok(())
    }

    /// Start-up recovery of the attempts the state has pending (a crash, or a state restored
    /// from a copy taken mid-run): one whose marker is in the lake with every file it names
    /// published everything and is committed now (a restored state's pending attempt may have
    /// committed in the lake since, and later reads deduplicated against it); the others are
    /// deleted, marker first.
    pub async fn recover(&self) -> Result<(), ExportError> {
        // A marker being written when the process died leaves its staging copy (`.tmp-…`). A
        // second deployment's copy in flight is written again by it if deleted here.
        self.store.remove_stale_marker_copies()?;
        self.recover_rewrites().await?;
        self.finish_table_removes().await?;
        self.finish_repairs().await?;
        self.clean_pending(true).await
    }

    pub(super) async fn clean_pending(&self, adopt_complete: bool) -> Result<(), ExportError> {
        let mut adopted = false;
        let pending = self.checkpoint.pending()?;
        // Delta mode: an attempt is committed exactly when the table lists its data files, so
        // one committed to the table and not to the state is adopted even within a run.
        let table = match &self.table {
            Some(_) if !pending.is_empty() => Some(self.lake_files().await?),
            _ => None,
        };
        for p in pending {
            if let Some(key) = &p.marker
                && let Some(m) = self.complete_marker(key, table.as_ref()).await?
                && (adopt_complete || (table.is_some() && m.files.iter().any(|f| !crate::model::is_quarantine(&f.partition))))
            {
                match self.checkpoint.adopt_window(key, &m)? {
                    Adoption::Adopted => {
                        tracing::info!(prefix = %p.prefix, "an attempt that published every file and its marker before it stopped is committed now");
                        adopted = true;
                        self.checkpoint.clear_pending(&p.prefix)?;
                        continue;
                    }
                    Adoption::Known => {
                        self.checkpoint.clear_pending(&p.prefix)?;
                        continue;
                    }
                    // Another attempt at the same read is committed: delete this one (in
                    // Delta mode, below, only if the table does not list its files).
                    Adoption::Conflict => {}
                }
            }
            // Delta mode: files the table lists are never deleted (readers would meet a
            // missing file); the next adoption learns them for deduplication.
            if let Some(listing) = &table
                && listing.keys().any(|path| {
                    path.rsplit_once('/')
                        .is_some_and(|(_, n)| crate::model::is_attempt_file(n, &p.prefix))
                })
            {
                tracing::warn!(prefix = %p.prefix, "an attempt the table holds but the state cannot commit as a window; its files are kept and learned for deduplication");
                self.checkpoint.set_file_adoption_pending(true)?;
                self.checkpoint.clear_pending(&p.prefix)?;
                continue;
            }
            // The marker first: a lake without it never claims the attempt committed, even if
            // the files' deletion is interrupted and the state is lost afterwards.
            if let Some(m) = &p.marker {
                self.store.delete(&crate::model::marker_path(m)).await?;
            }
            let n = self.store.remove_attempt(&p.partitions, &p.prefix).await?;
            crate::crashpoint::hit("recover");
            if n > 0 {
                tracing::info!(prefix = %p.prefix, removed = n, "cleaned up an uncommitted attempt");
            } else {
                tracing::debug!(prefix = %p.prefix, "cleaned up an uncommitted attempt (no file was published)");
            }
            self.checkpoint.clear_pending(&p.prefix)?;
        }
        if adopted {
            self.checkpoint.recompute_watermarks(self.settings.export.start)?;
        }
        Ok(())
    }

    /// The marker `key`, if it is in the lake and every file it names is published with its
    /// recorded size (`listing`: the data files, when already listed).
    async fn complete_marker(
        &self,
        key: &str,
        listing: Option<&std::collections::HashMap<String, u64>>,
    ) -> Result<Option<CommitMarker>, ExportError> {
        let path = crate::model::marker_path(key);
        let Some(bytes) = self.store.read_if_exists(&path).await? else {
            return Ok(None);
        };
        let Ok(m) = serde_json::from_slice::<CommitMarker>(&bytes) else {
            tracing::warn!(marker = %path, "not a commit marker of this program; ignored");
            return Ok(None);
        };
        if m.begun_only {
            return Ok(None);
        }
        for f in &m.files {
            let size = match listing {
                Some(l) => l.get(&f.path).copied(),
                None => self.store.size(&f.path).await?,
            };
            if size != Some(f.bytes) {
                tracing::warn!(marker = %path, file = %f.path, "a commit marker names a file that is missing or of another size; its window is not taken as committed");
                return Ok(None);
            }
        }
        Ok(Some(m))
    }

    /// Adopts the lake's committed windows and files the state does not know.
    pub async fn adopt_lake(&self) -> Result<Adopted, ExportError> {
        let cp = &self.checkpoint;
        let had_windows = cp.has_windows()?;
        let newest = cp.newest_marker()?;
        let mut found = Adopted::default();
        let mut keys = self.store.marker_keys_after(newest.as_deref()).await?;
        // Begin markers of attempts this state does not know (its pending row was lost with
        // the state, or is missing from an older copy): whatever they published never
        // committed. Deleted, marker last, before the data files are listed.
        let mut orphans = 0;
        let mut committed = Vec::with_capacity(keys.len());
        for key in keys.drain(..) {
            let path = crate::model::marker_path(&key);
            match self
                .store
                .read_if_exists(&path)
                .await?
                .map(|b| serde_json::from_slice::<CommitMarker>(&b))
            {
                // Delta mode: invisible to readers, and possibly another writer's attempt in
                // flight; `vacuum` deletes them after the retention.
                Some(Ok(m)) if m.begun_only && self.table.is_some() => {}
                Some(Ok(m)) if m.begun_only => {
                    self.store.remove_attempt(&m.partitions, &m.prefix).await?;
                    self.store.delete(&path).await?;
                    orphans += 1;
                }
                _ => committed.push(key),
            }
        }
        if orphans > 0 {
            tracing::info!(
                attempts = orphans,
                "deleted the files of attempts that never committed and that this state did not know"
            );
        }
        let keys = committed;
        // Listed once, and only when there is something to check or learn.
        // An adoption interrupted before it had read every file is taken up again.
        // Delta mode: always, as the table may have changed under another writer (files added,
        // or replaced by a compaction).
        let listing: Option<HashMap<String, u64>> =
            if keys.is_empty() && had_windows && !cp.file_adoption_pending()? && self.table.is_none() {
                None
            } else {
                cp.set_file_adoption_pending(true)?;
                Some(self.lake_files().await?)
            };
        let mut skipped = 0;
        for key in keys {
            // A marker whose files are not all there (deleted since, or a marker that landed
            // after its attempt was cleaned up) proves no coverage: its files that exist are
            // adopted below, for deduplication only.
            match self.complete_marker(&key, listing.as_ref()).await? {
                Some(m) => match cp.adopt_window(&key, &m)? {
                    Adoption::Adopted => found.windows += 1,
                    Adoption::Known => {}
                    // Delta mode: another writer's read of a window this state holds (both
                    // committed through the table's validation); its files are learned below.
                    Adoption::Conflict if self.table.is_some() => {}
                    Adoption::Conflict => {
                        // The same read committed twice in the lake: the state's attempt is
                        // the one kept; this one's records are all in it.
                        tracing::warn!(prefix = %m.prefix, "a second committed attempt at a read the state already holds; its files are deleted");
                        self.store.delete(&crate::model::marker_path(&key)).await?;
                        self.store.remove_attempt(&m.partitions, &m.prefix).await?;
                    }
                },
                // Delta mode: an attempt that stopped before its table commit (or another
                // writer's in flight); nothing of it is in the table.
                None if self.table.is_some() => {}
                None => skipped += 1,
            }
        }
        let found_listing = listing.is_some();
        if let (Some(listing), Some(_)) = (&listing, &self.table) {
            // Files the table no longer lists (another writer compacted or removed them) leave
            // the manifest: their records are in the files that replaced them, learned below.
            let gone: Vec<String> = cp
                .files()?
                .into_iter()
                .filter(|f| !crate::model::is_quarantine(&f.partition) && !listing.contains_key(&f.path))
                .map(|f| f.path)
                .collect();
            if !gone.is_empty() {
                tracing::info!(files = gone.len(), "files the Delta table no longer lists leave the manifest");
                cp.forget_files(&gone)?;
            }
        }
        if let Some(listing) = listing {
            let known: HashSet<String> = cp.files()?.into_iter().map(|f| f.path).collect();
            let mut files: Vec<(String, u64)> = listing.into_iter().collect();
            files.sort();
            for (rel, size) in files {
                if known.contains(&rel) {
                    continue;
                }
                let (partition, name) = rel.rsplit_once('/').unwrap_or(("", rel.as_str()));
                let Some(a) = parse_attempt_file(name) else {
                    tracing::warn!(file = %rel, "a file in the output that this program did not write; left alone");
                    continue;
                };
                let bytes = self.store.read(&rel).await?;
                let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
                let ids = readback::record_ids_from(&rel, readback::Source::Bytes(bytes)).map_err(|e| ExportError::Rebuild {
                    path: rel.clone(),
                    message: e.message,
                })?;
                let row = FileRow {
                    path: rel.clone(),
                    stream_id: a.stream_id,
                    partition: partition.to_string(),
                    rows: ids.len() as u64,
                    bytes: size,
                    sha256,
                };
                let scheme = if a.has_nonce { ID_SCHEME } else { UNKNOWN_SCHEME };
                cp.adopt_file(&row, &a.window, a.generation, scheme)?;
                found.files += 1;
            }
        }
        if found_listing {
            cp.set_file_adoption_pending(false)?;
        }
        if skipped > 0 {
            tracing::warn!(
                markers = skipped,
                "commit markers whose files are not all in the output were not adopted (run `verify`)"
            );
        }
        if found != Adopted::default() {
            cp.recompute_watermarks(self.settings.export.start)?;
            tracing::info!(
                windows = found.windows,
                files = found.files,
                "adopted what the output holds and the state did not know (a new, lost or older state): nothing is written twice"
            );
        }
        Ok(found)
    }
}
