//! The output as a Delta Lake table (`export.format = "delta"`): the table's log, read and
//! written through `delta_kernel`.
//!
//! Invariants:
//! - The table is created with the lowest protocol our columns need (reader 1, writer 2), by a
//!   conditional put of version 0: two writers creating it at once end with one table.
//! - A file is in the table only once a commit adds it; files written and never committed are
//!   invisible to every reader, and `vacuum` deletes them after the retention.
//! - A commit is made against the snapshot it was validated on: if another writer committed
//!   since, the put of the next version fails and the commit is validated again on the newer
//!   snapshot (Delta's optimistic concurrency).
//! - Every data commit carries `txn(appId, version)`: `appId` names the stream, `version` counts
//!   the commits of that stream in the table.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema};
use delta_kernel::committer::FileSystemCommitter;
use delta_kernel::engine::arrow_conversion::TryFromArrow;
use delta_kernel::schema::StructType;
use delta_kernel::transaction::{CommitResult, UpdateTableOperation};
use delta_kernel::{Snapshot, SnapshotRef};
use delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor;
use delta_kernel_default_engine::{DefaultEngine, DefaultEngineBuilder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};
use url::Url;

use super::StoreError;

mod log;
mod rewrite;
mod vacuum;

pub use vacuum::Vacuumed;

pub use log::DEFAULT_CHECKPOINT_INTERVAL;
use log::{add_batch, checkpoint_if_due, view_of};

/// The partition column: the UTC day of `actionTime` (`unknown` when it has none).
pub const PARTITION_COLUMN: &str = "dt";
/// Recorded in every commit's `commitInfo.engineInfo`.
const ENGINE_INFO: &str = concat!("aos-audit-export/", env!("CARGO_PKG_VERSION"));

/// A file in the table's current snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveFile {
    /// Path relative to the table root (`dt=…/name.parquet`).
    pub path: String,
    /// Size in bytes, as the log records it.
    pub size: u64,
    /// Rows, from the file's statistics (absent when a writer recorded none).
    pub rows: Option<u64>,
}

/// What the table holds at one version.
#[derive(Debug, Clone, Default)]
pub struct TableView {
    /// The snapshot's version; `None` when the table does not exist yet.
    pub version: Option<u64>,
    /// The active files, by path.
    pub files: HashMap<String, ActiveFile>,
}

/// A data file to add: written and published under `path`, not yet in the table.
#[derive(Debug, Clone)]
pub struct AddFile {
    /// Path relative to the table root (`dt=YYYY-MM-DD/name.parquet`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Rows.
    pub rows: u64,
}

/// What a data commit did.
#[derive(Debug, Clone, Copy)]
pub struct Committed {
    /// The table version the commit created.
    pub version: u64,
    /// The stream's `txn` version in it.
    pub app_version: i64,
}

/// The check a commit must pass on the snapshot it is made against: `Err(reason)` refuses it.
pub type Validate<'a> = &'a (dyn Fn(&TableView) -> Result<(), String> + Send + Sync);

/// A Delta table at the output root.
pub struct DeltaTable {
    root: Url,
    store: Arc<dyn ObjectStore>,
    /// The table root's path in `store`.
    prefix: ObjPath,
    log_dir: ObjPath,
    /// Set for a local table: the log folder, fsynced after every commit (object_store's local
    /// file system does not sync).
    local_log: Option<std::path::PathBuf>,
    engine: Arc<dyn delta_kernel::Engine>,
}

fn kernel(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Object {
        path: "_delta_log".into(),
        message: format!("{what}: {e}"),
    }
}

/// Runs kernel work (synchronous: it blocks on the engine's executor) where the caller is,
/// telling a multi-threaded runtime that this worker blocks. Never on a task of its own: a
/// caller that is dropped (a cancelled pass) must not leave a table commit running behind its
/// back, to land after the next exporter's recovery decided the attempt never committed.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl DeltaTable {
    /// The table whose root is `prefix` in `store` (bucket-rooted), named by `root` (the URL the
    /// kernel resolves log and data paths against: its path is `prefix`).
    pub fn new(store: Arc<dyn ObjectStore>, root: Url, prefix: &ObjPath, local_log: Option<std::path::PathBuf>) -> Self {
        // Checkpoints write Parquet through the executor and need a multi-threaded one; the
        // process's own runtime is shared when it is one.
        let engine: Arc<dyn delta_kernel::Engine> = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => Arc::new(
                DefaultEngineBuilder::new(store.clone())
                    .with_task_executor(Arc::new(TokioMultiThreadExecutor::new(h)))
                    .build(),
            ),
            _ => Arc::new(DefaultEngine::builder(store.clone()).build()),
        };
        let log_dir = prefix.clone().join("_delta_log");
        DeltaTable {
            root,
            store,
            prefix: prefix.clone(),
            log_dir,
            local_log,
            engine,
        }
    }

    /// The table root URL.
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Creates the table (version 0: protocol reader 1 / writer 2, the schema, partitioned by
    /// `dt`) unless it exists. `columns`: the data files' columns (without `dt`).
    pub async fn create_if_missing(&self, columns: &Schema) -> Result<bool, StoreError> {
        self.create(columns, &[], "CREATE TABLE").await
    }

    /// Creates the table with `files` in it, in one conditional put of version 0 (`convert`: a
    /// folder of files becomes a table whole, or not at all). `Ok(false)`: a table exists.
    pub async fn create_with(&self, columns: &Schema, files: &[AddFile]) -> Result<bool, StoreError> {
        let created = self.create(columns, files, "CONVERT").await?;
        crate::crashpoint::hit("convert");
        if created && !files.is_empty() {
            // A checkpoint of version 0 at once: readers then read its adds from Parquet.
            if let Err(e) = self.checkpoint_latest().await {
                tracing::warn!(error = %e, "could not write a checkpoint of the converted table; readers replay its first commit");
            }
        }
        Ok(created)
    }

    /// Whether the log has a checkpoint (`_last_checkpoint`).
    pub async fn has_checkpoint(&self) -> Result<bool, StoreError> {
        match self.store.head(&self.log_dir.clone().join("_last_checkpoint")).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(kernel("cannot read the table's log", e)),
        }
    }

    /// Writes a checkpoint of the latest version (made durable on a local table), whatever
    /// `delta.checkpointInterval` says; returns its version.
    pub async fn checkpoint_latest(&self) -> Result<u64, StoreError> {
        let Some(snap) = self.snapshot().await? else {
            return Err(kernel("cannot checkpoint", "the table has no log"));
        };
        let engine = self.engine.clone();
        let version = blocking(move || {
            snap.checkpoint(engine.as_ref(), None)
                .map_err(|e| kernel("cannot write a checkpoint", e))?;
            Ok(snap.version())
        })
        .await?;
        self.sync_log(version)?;
        Ok(version)
    }

    async fn create(&self, columns: &Schema, files: &[AddFile], operation: &str) -> Result<bool, StoreError> {
        let v0 = self.log_dir.clone().join(format!("{:020}.json", 0));
        match self.store.head(&v0).await {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(kernel("cannot read the table's log", e)),
        }
        let mut fields: Vec<Field> = columns.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, true));
        let schema = StructType::try_from_arrow(&Schema::new(fields)).map_err(|e| kernel("cannot describe the table's schema", e))?;
        let schema_string = serde_json::to_string(&schema).map_err(|e| kernel("cannot describe the table's schema", e))?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut lines = vec![
            serde_json::json!({"commitInfo": {
                "timestamp": now, "operation": operation, "engineInfo": ENGINE_INFO,
                "operationParameters": {"partitionBy": format!("[\"{PARTITION_COLUMN}\"]")},
            }}),
            serde_json::json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
            serde_json::json!({"metaData": {
                "id": uuid::Uuid::new_v4().to_string(),
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string,
                "partitionColumns": [PARTITION_COLUMN],
                "configuration": {},
                "createdTime": now,
            }}),
        ];
        for f in files {
            let dt = log::partition_value(&f.path, "cannot convert")?;
            lines.push(serde_json::json!({"add": {
                "path": f.path, "partitionValues": {PARTITION_COLUMN: dt}, "size": f.size,
                "modificationTime": now, "dataChange": true,
                "stats": serde_json::json!({"numRecords": f.rows}).to_string(),
            }}));
        }
        let mut body = Vec::new();
        for l in &lines {
            body.extend_from_slice(l.to_string().as_bytes());
            body.push(b'\n');
        }
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self.store.put_opts(&v0, body.into(), opts).await {
            Ok(_) => {}
            // Another writer created it first: one table.
            Err(object_store::Error::AlreadyExists { .. }) => return Ok(false),
            Err(e) => return Err(kernel("cannot create the table", e)),
        }
        self.sync_log(0)?;
        Ok(true)
    }

    /// Makes the log files of `version` durable on a local table (object_store's local file
    /// system does not sync): its commit, and the checksum and checkpoint written after it.
    fn sync_log(&self, version: u64) -> Result<(), StoreError> {
        if let Some(dir) = &self.local_log {
            let io = |source| StoreError::Io { path: dir.clone(), source };
            let names = [
                format!("{version:020}.json"),
                format!("{version:020}.crc"),
                format!("{version:020}.checkpoint.parquet"),
                "_last_checkpoint".to_string(),
            ];
            for name in names {
                match std::fs::File::open(dir.join(&name)) {
                    Ok(f) => f.sync_all().map_err(io)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io(e)),
                }
            }
            std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    /// The latest snapshot, or `None` when the table does not exist.
    async fn snapshot(&self) -> Result<Option<SnapshotRef>, StoreError> {
        let mut listed = self.store.list(Some(&self.log_dir));
        use futures::StreamExt;
        let mut any = false;
        if let Some(first) = listed.next().await {
            first.map_err(|e| kernel("cannot list the table's log", e))?;
            any = true;
        }
        drop(listed);
        if !any {
            return Ok(None);
        }
        let (engine, root) = (self.engine.clone(), self.root.clone());
        blocking(move || {
            Snapshot::builder_for(root.as_str())
                .build(engine.as_ref())
                .map(Some)
                .map_err(|e| kernel("cannot read the table's log", e))
        })
        .await
    }

    /// The latest snapshot and its active files, for a commit to be made against.
    async fn latest(&self, what: &str) -> Result<(SnapshotRef, TableView), StoreError> {
        let Some(snap) = self.snapshot().await? else {
            return Err(kernel(what, "the table has no log (was it deleted?)"));
        };
        let (engine, s2) = (self.engine.clone(), snap.clone());
        let view = blocking(move || view_of(&s2, engine.as_ref())).await?;
        Ok((snap, view))
    }

    /// The table's latest version and active files.
    pub async fn view(&self) -> Result<TableView, StoreError> {
        match self.snapshot().await? {
            None => Ok(TableView::default()),
            Some(s) => {
                let engine = self.engine.clone();
                blocking(move || view_of(&s, engine.as_ref())).await
            }
        }
    }

    /// The stream's `txn` version in the latest snapshot.
    pub async fn app_version(&self, app_id: &str) -> Result<Option<i64>, StoreError> {
        let Some(s) = self.snapshot().await? else {
            return Ok(None);
        };
        let (engine, app) = (self.engine.clone(), app_id.to_string());
        blocking(move || {
            s.get_app_id_version(&app, engine.as_ref())
                .map_err(|e| kernel("cannot read the table's transactions", e))
        })
        .await
    }

    /// Adds `files` in one commit carrying `txn(app_id, previous + 1)`, made against a snapshot
    /// that `validate` accepted. A concurrent commit makes it validate again on the newer
    /// snapshot; a refusal is returned as `Ok(Err(reason))` and commits nothing.
    pub async fn commit_adds(
        &self,
        app_id: &str,
        files: Vec<AddFile>,
        validate: Validate<'_>,
    ) -> Result<Result<Committed, String>, StoreError> {
        loop {
            let (snap, view) = self.latest("cannot commit").await?;
            // A put that landed although its answer was lost (a timeout, a retried request
            // answered "exists") is committed: adding the same files again would show their
            // records twice to a reader of the table's changes.
            if files.iter().all(|f| view.files.contains_key(&f.path)) {
                let engine = self.engine.clone();
                let app = app_id.to_string();
                let app_version = blocking(move || {
                    snap.get_app_id_version(&app, engine.as_ref())
                        .map_err(|e| kernel("cannot read the table's transactions", e))
                })
                .await?
                .unwrap_or(0);
                return Ok(Ok(Committed {
                    version: view.version.unwrap_or(0),
                    app_version,
                }));
            }
            if let Err(why) = validate(&view) {
                return Ok(Err(why));
            }
            let (engine, app, files2) = (self.engine.clone(), app_id.to_string(), files.clone());
            let result = blocking(move || {
                let previous = snap
                    .get_app_id_version(&app, engine.as_ref())
                    .map_err(|e| kernel("cannot read the table's transactions", e))?
                    .unwrap_or(0);
                let mut txn = snap
                    .clone()
                    .update_table(UpdateTableOperation::Write, ENGINE_INFO, true)
                    .with_transaction_id(app.clone(), previous + 1)
                    .build(engine.as_ref(), Box::new(FileSystemCommitter::new()))
                    .map_err(|e| kernel("cannot begin a table commit", e))?;
                txn.add_files(add_batch(&files2)?);
                match txn.commit(engine.as_ref()).map_err(|e| kernel("table commit failed", e))? {
                    CommitResult::Committed(c) => {
                        let version = c.commit_version();
                        if let Some(post) = c.post_commit_snapshot() {
                            checkpoint_if_due(post, engine.as_ref());
                        }
                        Ok(Some(Committed {
                            version,
                            app_version: previous + 1,
                        }))
                    }
                    CommitResult::Conflicted(_) => Ok(None),
                    CommitResult::Retryable(_) => Err(kernel("table commit failed", "a retryable I/O error; the next run retries")),
                }
            })
            .await?;
            if let Some(c) = result {
                self.sync_log(c.version)?;
                return Ok(Ok(c));
            }
            tracing::debug!("another writer committed to the table first; validating again on its version");
        }
    }
}

impl super::Store {
    /// The output as a Delta table (`export.format = "delta"`): the same root, read and written
    /// through the table's log. A local root must exist ([`Store::check`]).
    pub fn delta_table(&self) -> Result<DeltaTable, StoreError> {
        match self {
            super::Store::Local { root } => {
                let io = |source| StoreError::Io {
                    path: root.clone(),
                    source,
                };
                let abs = std::fs::canonicalize(root).map_err(io)?;
                let url = url::Url::from_directory_path(&abs).map_err(|()| StoreError::Open {
                    output: root.display().to_string(),
                    message: "not an absolute path".into(),
                })?;
                let prefix = ObjPath::from_filesystem_path(&abs).map_err(|e| StoreError::Open {
                    output: root.display().to_string(),
                    message: e.to_string(),
                })?;
                let store: Arc<dyn ObjectStore> = Arc::new(object_store::local::LocalFileSystem::new());
                Ok(DeltaTable::new(store, url, &prefix, Some(abs.join("_delta_log"))))
            }
            super::Store::Object {
                store, prefix, display, ..
            } => {
                let mut url = url::Url::parse(display).map_err(|e| StoreError::Open {
                    output: display.clone(),
                    message: e.to_string(),
                })?;
                if !url.path().ends_with('/') {
                    let path = format!("{}/", url.path());
                    url.set_path(&path);
                }
                Ok(DeltaTable::new(store.clone(), url, prefix, None))
            }
        }
    }
}
