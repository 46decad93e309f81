//! Delta mode (`export.format = "delta"`): each window's data files are added to the table in
//! one commit, in commit order, just before the state's commit; and "the lake holds a file"
//! means the table's snapshot lists it.
//!
//! Exactly once through the table:
//! - The commit is validated on the snapshot it is made against: every active file that can
//!   hold a record of the window must be one this state knows (its ids were read back before the
//!   window was deduplicated). A file another writer added since (a second deployment, another
//!   stream into the same table) refuses the commit; the exporter learns the table's new files
//!   and reads the window again. A concurrent commit between validation and the put of the next
//!   version makes the kernel's put fail, and the validation runs again.
//! - The window's commit marker is written before the table commit and proves nothing by itself:
//!   recovery takes an attempt as committed only if the table lists its data files (a crash
//!   between the table commit and the state's commit is adopted, not deleted; a crash before it
//!   is deleted, invisible to readers all along).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use super::Exporter;
use crate::checkpoint::Checkpoint;
use crate::model::{UNKNOWN_PARTITION, Window, parse_attempt_file, partitions_of};
use crate::store::Store;
use crate::store::delta::DeltaTable;
use crate::store::delta::{AddFile, Committed, TableView};
use crate::window::{ExportError, WindowOutcome};

/// The `txn` application id of a stream.
pub fn app_id(stream_id: &str) -> String {
    format!("aos-audit-export/{stream_id}")
}

/// Whether a file at `path` can hold a record that a read of `w` returns: its window overlaps
/// `w`, or it is a `dt=unknown` file of a neighbour whose padded query meets `w`'s. A file whose
/// name this program did not give (another engine's, a compaction's) counts if its partition is
/// one the read's query spans.
pub fn can_hold(path: &str, w: &Window) -> bool {
    let path = path
        .strip_prefix(crate::model::QUARANTINE_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path);
    let (partition, name) = path.rsplit_once('/').unwrap_or(("", path));
    let q = w.query();
    match parse_attempt_file(name) {
        Some(a) => {
            (a.window.end > w.start && a.window.start < w.end)
                || (partition == UNKNOWN_PARTITION && a.window.end >= q.start && a.window.start <= q.end)
        }
        None => partition == UNKNOWN_PARTITION || partitions_of(&q).iter().any(|p| p == partition),
    }
}

/// How many times one process reads windows again because another writer changed the table.
pub const RETRIES: u32 = 5;

/// Delta mode: the table at the output root, created if the output holds nothing yet. A table
/// where a Parquet folder is configured, or a folder of files where a table is, is refused:
/// either way readers would miss what is written.
pub async fn open(store: &Store, cp: &Checkpoint, delta: bool) -> Result<Option<DeltaTable>, ExportError> {
    let table = store.delta_table()?;
    let exists = table.view().await?.version.is_some();
    if !delta {
        if exists {
            return Err(ExportError::FormatSwitch {
                existing: "delta".into(),
                configured: "parquet or ndjson".into(),
            });
        }
        return Ok(None);
    }
    if !exists {
        let folder = !cp.files()?.is_empty()
            || store
                .data_files()
                .await?
                .iter()
                .any(|(p, _)| !p.starts_with(crate::model::QUARANTINE_DIR));
        if folder {
            return Err(ExportError::NotATable { output: store.describe() });
        }
        if table.create_if_missing(&crate::sink::parquet::schema()).await? {
            tracing::info!(table = %table.root(), "created the Delta table");
        }
    }
    Ok(Some(table))
}

impl Exporter {
    /// Refuses a format other than the one the output's files have.
    pub(super) fn check_format(&self) -> Result<(), ExportError> {
        let configured = match self.settings.export.sink.format {
            crate::sink::Format::Parquet => "parquet",
            crate::sink::Format::Ndjson => "ndjson",
        };
        if let Some(existing) = self.checkpoint.formats()?.into_iter().find(|f| f != configured) {
            return Err(ExportError::FormatSwitch {
                existing,
                configured: configured.into(),
            });
        }
        Ok(())
    }

    /// Adds the window's data files to the table in one commit carrying the stream's `txn`.
    /// `Ok(None)`: the window wrote no data file (nothing to commit). `Err(TableChanged)`:
    /// another writer added a file the window's deduplication did not read.
    pub(super) async fn commit_to_table(&self, o: &WindowOutcome) -> Result<Option<Committed>, ExportError> {
        let Some(table) = &self.table else {
            return Ok(None);
        };
        let files: Vec<AddFile> = o
            .files
            .iter()
            .filter(|f| !crate::model::is_quarantine(&f.partition))
            .map(|f| AddFile {
                path: f.path.clone(),
                size: f.bytes,
                rows: f.rows,
            })
            .collect();
        if files.is_empty() {
            return Ok(None);
        }
        // The files are where the commit will say (a vacuum by another writer, or anything
        // else, may have removed a published file since): never commit a missing file.
        for f in &files {
            let size = self.store.size(&f.path).await?;
            if size != Some(f.size) {
                return Err(ExportError::Store(crate::store::StoreError::Object {
                    path: f.path.clone(),
                    message: format!(
                        "published with {} bytes, now {size:?}: not committed to the table; the next run reads the window again",
                        f.size
                    ),
                }));
            }
        }
        let ours: std::collections::HashSet<String> = files.iter().map(|f| f.path.clone()).collect();
        let w = o.window;
        // A read that met records without a usable `actionTime` may have counted them over
        // windows far from its own (their chain, see `window::unplaced`): any `dt=unknown`
        // file another writer added can then bear on it.
        let unplaced = o.unplaced > 0;
        let cp = &self.checkpoint;
        // The paths the validation found unknown, and a state error if one occurred.
        let unknown = std::sync::Mutex::new(None::<String>);
        let validate = |view: &TableView| -> Result<(), String> {
            for path in view.files.keys() {
                if ours.contains(path) || !(can_hold(path, &w) || (unplaced && crate::window::is_unknown_partition(path))) {
                    continue;
                }
                match cp.has_file(path) {
                    Ok(true) => {}
                    Ok(false) => {
                        if let Ok(mut u) = unknown.lock() {
                            *u = Some(path.clone());
                        }
                        return Err(path.clone());
                    }
                    Err(e) => return Err(format!("the state could not be read: {e}")),
                }
            }
            Ok(())
        };
        let committed = table.commit_adds(&app_id(&o.stream_id), files, &validate).await?;
        crate::crashpoint::hit("table");
        match committed {
            Ok(c) => Ok(Some(c)),
            Err(reason) => match unknown.into_inner().ok().flatten() {
                Some(path) => Err(ExportError::TableChanged { path }),
                None => Err(ExportError::Internal(reason)),
            },
        }
    }

    /// The table commit of a window in `drive`: `Ok(true)` when another writer changed the
    /// table and the window is to be read again (its new files adopted first).
    pub(super) async fn table_step(&self, o: &WindowOutcome) -> Result<bool, ExportError> {
        match self.commit_to_table(o).await {
            Ok(_) => Ok(false),
            Err(ExportError::TableChanged { path }) if self.table_retries.fetch_add(1, Ordering::SeqCst) < RETRIES => {
                tracing::warn!(file = %path, start = %o.window.start, "another writer added to the table while this window was read: learning its files and reading the window again");
                self.checkpoint.set_file_adoption_pending(true)?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// What the lake holds, by path and size. Folder mode: every data and quarantine file
    /// listed. Delta mode: the table's active files (files written and never committed are not
    /// in the lake, whatever a listing shows) and the quarantine's files.
    pub(super) async fn lake_files(&self) -> Result<HashMap<String, u64>, ExportError> {
        let listed = self.store.data_files().await?;
        let Some(table) = &self.table else {
            return Ok(listed.into_iter().collect());
        };
        let mut out: HashMap<String, u64> = listed
            .into_iter()
            .filter(|(p, _)| p.starts_with(crate::model::QUARANTINE_DIR))
            .collect();
        out.extend(table.view().await?.files.into_values().map(|f| (f.path, f.size)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn a_file_can_hold_a_read_when_its_window_or_partition_meets_it() {
        let t = |h: u32| Utc.with_ymd_and_hms(2024, 1, 1, h, 0, 0).single().unwrap_or_default();
        let w = Window { start: t(6), end: t(12) };
        let name = |a: u32, b: u32| {
            format!(
                "s-{}-{}-g0-0000abcd-p000.parquet",
                t(a).format("%Y%m%dT%H%M%SZ"),
                t(b).format("%Y%m%dT%H%M%SZ")
            )
        };
        assert!(can_hold(&format!("dt=2024-01-01/{}", name(0, 7)), &w));
        assert!(
            !can_hold(&format!("dt=2024-01-01/{}", name(0, 6)), &w),
            "a window that ends where this one starts"
        );
        assert!(
            can_hold(&format!("dt=unknown/{}", name(0, 6)), &w),
            "an unplaced neighbour meets the padded query"
        );
        assert!(!can_hold(&format!("dt=unknown/{}", name(0, 5)), &w));
        assert!(
            can_hold("dt=2024-01-01/part-0000.parquet", &w),
            "a foreign file in the window's day"
        );
        assert!(!can_hold("dt=2024-01-03/part-0000.parquet", &w));
    }
}
