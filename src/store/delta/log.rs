//! Reading and writing the log's actions: the active files of a snapshot, add actions,
//! checkpoints.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, MapBuilder, MapFieldNames, RecordBatch, StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use delta_kernel::SnapshotRef;
use delta_kernel::engine::arrow_data::ArrowEngineData;
use delta_kernel::scan::state::ScanFile;

use super::{ActiveFile, AddFile, PARTITION_COLUMN, StoreError, TableView, kernel};

/// Every `delta.checkpointInterval` commits (10 unless the table says otherwise, as Spark and
/// delta-rs do), a checkpoint of the snapshot: a reader then replays at most that many commit
/// files. A failed checkpoint costs readers time, never data: it is logged, not raised.
pub(super) fn checkpoint_if_due(s: &SnapshotRef, engine: &dyn delta_kernel::Engine) {
    let interval = s
        .table_properties()
        .checkpoint_interval
        .map_or(DEFAULT_CHECKPOINT_INTERVAL, |n| n.get());
    if s.version() == 0 || !s.version().is_multiple_of(interval) {
        return;
    }
    match s.checkpoint(engine, None) {
        Ok(_) => tracing::debug!(version = s.version(), "wrote a table checkpoint"),
        Err(e) => {
            tracing::warn!(version = s.version(), error = %e, "could not write a table checkpoint; readers replay more commit files until the next one")
        }
    }
}

/// `delta.checkpointInterval` when the table sets none.
pub const DEFAULT_CHECKPOINT_INTERVAL: u64 = 10;

/// The active files of a snapshot.
pub(super) fn view_of(s: &SnapshotRef, engine: &dyn delta_kernel::Engine) -> Result<TableView, StoreError> {
    let scan = s.clone().scan_builder().build().map_err(|e| kernel("cannot read the table", e))?;
    let mut files: Vec<ScanFile> = Vec::new();
    for meta in scan.scan_metadata(engine).map_err(|e| kernel("cannot read the table", e))? {
        let meta = meta.map_err(|e| kernel("cannot read the table", e))?;
        files = meta
            .visit_scan_files(files, |acc: &mut Vec<ScanFile>, f: ScanFile| acc.push(f))
            .map_err(|e| kernel("cannot read the table", e))?;
    }
    let files = files
        .into_iter()
        .map(|f| {
            // The log stores paths URL-encoded (`dt=2024-01-01` as written by some engines as
            // `dt%3D2024-01-01`); the table's files are named by their decoded form.
            let path = percent_decode(&f.path);
            (
                path.clone(),
                ActiveFile {
                    path,
                    size: f.size.max(0) as u64,
                    rows: f.stats.map(|s| s.num_records),
                },
            )
        })
        .collect();
    Ok(TableView {
        version: Some(s.version()),
        files,
    })
}

pub(super) fn percent_decode(p: &str) -> String {
    if !p.contains('%') {
        return p.to_string();
    }
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `dt` value of a data file's path (`dt=2024-03-01/…` → `2024-03-01`).
pub(super) fn partition_value<'a>(path: &'a str, what: &str) -> Result<&'a str, StoreError> {
    path.split('/')
        .next()
        .and_then(|p| p.strip_prefix("dt="))
        .ok_or_else(|| kernel(what, format!("{path} is not in a dt= partition")))
}

/// The add-file metadata the kernel takes ([`delta_kernel::transaction::Transaction::add_files`]):
/// path, partition values, size, modification time, statistics (row count).
pub(super) fn add_batch(files: &[AddFile]) -> Result<Box<ArrowEngineData>, StoreError> {
    let names = MapFieldNames {
        entry: "key_value".to_string(),
        key: "key".to_string(),
        value: "value".to_string(),
    };
    let mut parts = MapBuilder::new(Some(names), StringBuilder::new(), StringBuilder::new());
    for f in files {
        let dt = partition_value(&f.path, "cannot commit")?;
        parts.keys().append_value(PARTITION_COLUMN);
        parts.values().append_value(dt);
        parts.append(true).map_err(|e| kernel("cannot commit", e))?;
    }
    let now = chrono::Utc::now().timestamp_millis();
    let num_records: ArrayRef = Arc::new(Int64Array::from(files.iter().map(|f| f.rows as i64).collect::<Vec<_>>()));
    let tight: ArrayRef = Arc::new(BooleanArray::from(vec![true; files.len()]));
    let stats = StructArray::try_new(
        vec![
            Field::new("numRecords", DataType::Int64, true),
            Field::new("tightBounds", DataType::Boolean, true),
        ]
        .into(),
        vec![num_records, tight],
        None,
    )
    .map_err(|e| kernel("cannot commit", e))?;
    let parts = parts.finish();
    let schema = Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("partitionValues", parts.data_type().clone(), false),
        Field::new("size", DataType::Int64, false),
        Field::new("modificationTime", DataType::Int64, false),
        Field::new("stats", stats.data_type().clone(), true),
    ]);
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(StringArray::from(files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>())),
            Arc::new(parts),
            Arc::new(Int64Array::from(files.iter().map(|f| f.size as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(vec![now; files.len()])),
            Arc::new(stats),
        ],
    )
    .map_err(|e| kernel("cannot commit", e))?;
    Ok(Box::new(ArrowEngineData::new(batch)))
}
