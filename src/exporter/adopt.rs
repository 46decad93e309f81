//! The lake is the source of truth: before the first window, the exporter learns what the
//! output holds that its state does not — a new state, a lost one, or one restored from an
//! older backup — so that none of these can lead to a second copy of a record.
//!
//! Cheap when nothing is to learn: one listing of the commit markers newer than the newest the
//! state knows (a single request on object storage). The data files are listed only when the
//! state had no window at all or adopted some marker.

use std::collections::HashSet;

use sha2::Digest;

use super::Exporter;
use crate::checkpoint::{CommitMarker, FileRow};
use crate::dedup::{ID_SCHEME, UNKNOWN_SCHEME};
use crate::model::{marker_path, parse_attempt_file};
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
    /// Adopts the lake's committed windows and files the state does not know.
    pub async fn adopt_lake(&self) -> Result<Adopted, ExportError> {
        let cp = &self.checkpoint;
        let had_windows = cp.has_windows()?;
        let newest = cp.newest_marker()?;
        let mut found = Adopted::default();
        for key in self.store.marker_keys_after(newest.as_deref()).await? {
            let path = marker_path(&key);
            let bytes = self.store.read(&path).await?;
            let m: CommitMarker = serde_json::from_slice(&bytes).map_err(|e| ExportError::Rebuild {
                path: path.clone(),
                message: format!("not a commit marker of this program: {e}"),
            })?;
            if cp.adopt_window(&key, &m)? {
                found.windows += 1;
            }
        }
        if !had_windows || found.windows > 0 {
            let known: HashSet<String> = cp.files()?.into_iter().map(|f| f.path).collect();
            for (rel, size) in self.store.data_files().await? {
                if known.contains(&rel) {
                    continue;
                }
                let (partition, name) = rel.split_once('/').unwrap_or(("", rel.as_str()));
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
