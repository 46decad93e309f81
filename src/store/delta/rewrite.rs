//! Rewrites of a table's files (compaction): one commit that removes some files and adds
//! others, with `dataChange = false`.

use arrow::array::{Array, StringArray};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};

use super::log::{add_batch, checkpoint_if_due, percent_decode};
use super::{AddFile, DeltaTable, ENGINE_INFO, StoreError, blocking, kernel};

impl DeltaTable {
    /// Replaces `removes` by `adds` in one commit with `dataChange = false` (a compaction: the
    /// same records in fewer files). Refused (`Ok(Err)`) when a file to remove is no longer
    /// active: another writer compacted or removed it since.
    pub async fn commit_rewrite(&self, removes: Vec<String>, adds: Vec<AddFile>) -> Result<Result<u64, String>, StoreError> {
        self.commit_changes(removes, adds, false).await
    }

    /// Removes `paths` from the table in one commit (`DELETE`, `dataChange = true`): files
    /// whose records are gone (deleted or corrupt behind the table's back), before their
    /// windows are read again. Those no longer in the table are skipped; none left: no commit.
    pub async fn commit_removes(&self, paths: Vec<String>) -> Result<(), StoreError> {
        let view = self.view().await?;
        let present: Vec<String> = paths.into_iter().filter(|p| view.files.contains_key(p)).collect();
        if present.is_empty() {
            return Ok(());
        }
        match self.commit_changes(present, Vec::new(), true).await? {
            Ok(_) => Ok(()),
            // Another writer removed one of them meanwhile: the rest are removed next time.
            Err(why) => Err(kernel("cannot remove files from the table", why)),
        }
    }

    /// One commit removing `removes` and adding `adds`: a compaction (`OPTIMIZE`, no data
    /// change), or a removal (`DELETE`, `data_change`).
    async fn commit_changes(&self, removes: Vec<String>, adds: Vec<AddFile>, data_change: bool) -> Result<Result<u64, String>, StoreError> {
        let op = if data_change {
            UpdateTableOperation::Delete
        } else {
            UpdateTableOperation::Optimize
        };
        loop {
            let (snap, view) = self.latest("cannot compact").await?;
            // A commit that landed although its answer was lost: done, not refused (its
            // inputs are gone from the table, and the merged files are what it names).
            if !adds.is_empty() && adds.iter().all(|f| view.files.contains_key(&f.path)) {
                return Ok(Ok(view.version.unwrap_or(0)));
            }
            if adds.is_empty() && !removes.iter().any(|p| view.files.contains_key(p)) {
                return Ok(Ok(view.version.unwrap_or(0)));
            }
            let (engine, removes2, adds2, op) = (self.engine.clone(), removes.clone(), adds.clone(), op.clone());
            let result = blocking(move || {
                let wanted: std::collections::HashSet<&str> = removes2.iter().map(String::as_str).collect();
                let mut txn = snap
                    .clone()
                    .update_table(op, ENGINE_INFO, data_change)
                    .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))
                    .map_err(|e| kernel("cannot begin a table commit", e))?;
                let scan = snap
                    .clone()
                    .scan_builder()
                    .build()
                    .map_err(|e| kernel("cannot read the table", e))?;
                let mut found = 0usize;
                for meta in scan
                    .scan_metadata(engine.as_ref())
                    .map_err(|e| kernel("cannot read the table", e))?
                {
                    let meta = meta.map_err(|e| kernel("cannot read the table", e))?;
                    let (data, selected) = meta.scan_files.into_parts();
                    let data = ArrowEngineData::try_from_engine_data(data).map_err(|e| kernel("cannot read the table", e))?;
                    let paths = data
                        .record_batch()
                        .column_by_name("path")
                        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                        .ok_or_else(|| kernel("cannot read the table", "scan rows without a path"))?;
                    let sel: Vec<bool> = (0..paths.len())
                        .map(|i| selected.get(i).copied().unwrap_or(true) && wanted.contains(percent_decode(paths.value(i)).as_str()))
                        .collect();
                    found += sel.iter().filter(|b| **b).count();
                    txn.remove_files(
                        delta_kernel::engine_data::FilteredEngineData::try_new(data, sel).map_err(|e| kernel("cannot compact", e))?,
                    );
                }
                if found != wanted.len() {
                    return Ok(Err("a file to compact is no longer in the table".to_string()));
                }
                if !adds2.is_empty() {
                    txn.add_files(add_batch(&adds2)?);
                }
                match txn.commit(engine.as_ref()).map_err(|e| kernel("table commit failed", e))? {
                    CommitResult::Committed(c) => {
                        if let Some(post) = c.post_commit_snapshot() {
                            checkpoint_if_due(post, engine.as_ref());
                        }
                        Ok(Ok(Some(c.commit_version())))
                    }
                    CommitResult::Conflicted(_) => Ok(Ok(None)),
                    CommitResult::Retryable(_) => Err(kernel("table commit failed", "a retryable I/O error; the next run retries")),
                }
            })
            .await?;
            match result {
                Ok(Some(v)) => {
                    self.sync_log(v)?;
                    return Ok(Ok(v));
                }
                Ok(None) => continue,
                Err(why) => return Ok(Err(why)),
            }
        }
    }
}
