//! Parquet sink: the documented fields under their API names (`actionTime` as
//! TIMESTAMP(µs, UTC), `additionalDetails` as a JSON string, the rest UTF8) plus `_record_id`,
//! `_ingested_at` and `_extra`.
//!
//! Lossless mapping: a field the schema does not know goes to `_extra` (a JSON object, null when
//! empty); so does a known field whose value is not a string (its column is then null), and the
//! raw `actionTime` text when it has precision below a microsecond or cannot be parsed.
//! Rows are buffered in batches of at most 8192 and row groups are cut at
//! `export.row_group_rows`, so memory is bounded whatever the window size.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::Compression;
use super::{BufferBudget, FileOut, OutRecord, SinkError, SinkOptions};
use crate::model::record::{self, Kind};

/// The documented record fields, in output column order.
pub const FIELDS: [&str; 20] = crate::model::DOCUMENTED_FIELDS;
const ACTION_TIME: usize = record::ACTION_TIME;
const ADDITIONAL_DETAILS: usize = 19;
/// Rows held in the Arrow builders before they are encoded: small, because every open file
/// (up to 8 per window in flight) holds one batch of raw strings.
const BATCH_ROWS: usize = 1024;
/// Finishes a column's batch and starts the next one with room for as much again: the
/// builder's buffers are sized once per batch instead of growing value by value.
fn finish_sized(b: &mut StringBuilder, rows: usize) -> ArrayRef {
    let array = b.finish();
    let bytes = array.value_data().len();
    *b = StringBuilder::with_capacity(rows, bytes + bytes / 8);
    Arc::new(array)
}

/// Appends `"key":value` to the `_extra` object being built (`value` is JSON text).
fn add_extra(out: &mut Vec<u8>, key: &str, value: &str) {
    out.push(if out.is_empty() { b'{' } else { b',' });
    let _ = serde_json::to_writer(&mut *out, key);
    out.push(b':');
    out.extend_from_slice(value.as_bytes());
}

/// Columns written uncompressed whatever `export.compression`: enumerations (a handful of
/// distinct values, so dictionary-encoded) and `_ingested_at` (one value per file).
pub const UNCOMPRESSED: [&str; 11] = [
    "actionName",
    "controllerName",
    "product",
    "geoLocation",
    "status",
    "objectType",
    "operationType",
    "module",
    "functionality",
    "action",
    "_ingested_at",
];

/// Columns written without min/max statistics: ids, free text and JSON.
pub const NO_STATISTICS: [&str; 7] = [
    "actionParameters",
    "previousValue",
    "currentValue",
    "comment",
    "additionalDetails",
    "_record_id",
    "_extra",
];

/// Estimated encoded size at which a row group is flushed whatever its row count.
pub const ROW_GROUP_MAX_BYTES: usize = 16 << 20;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Parquet schema every file has.
pub fn schema() -> SchemaRef {
    let mut fields: Vec<Field> = FIELDS
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if i == ACTION_TIME {
                Field::new(*f, ts_type(), true)
            } else {
                Field::new(*f, DataType::Utf8, true)
            }
        })
        .collect();
    fields.push(Field::new("_record_id", DataType::Utf8, false));
    fields.push(Field::new("_ingested_at", ts_type(), false));
    fields.push(Field::new("_extra", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// One Parquet file being written: rows are buffered in Arrow builders and written in batches.
pub struct ParquetFile {
    /// `None` once closed.
    writer: Option<ArrowWriter<FileOut>>,
    /// The shared row-group memory, and this file's share of it as last reported.
    budget: BufferBudget,
    reported: usize,
    schema: SchemaRef,
    strings: Vec<StringBuilder>,
    action_time: TimestampMicrosecondBuilder,
    record_id: StringBuilder,
    extra: StringBuilder,
    /// The `_extra` JSON object of the row being written.
    extra_buf: Vec<u8>,
    /// An escaped string value, decoded.
    text: String,
    ingested_at_us: i64,
    rows: usize,
    /// The encoder's size estimate at the last batch written.
    encoded_bytes: u64,
    /// JSON bytes of the rows buffered since.
    pending_bytes: u64,
    batch_rows: usize,
}

pub(super) fn pq_err(path: &Path) -> impl Fn(parquet::errors::ParquetError) -> SinkError + '_ {
    move |e| SinkError::Parquet {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl ParquetFile {
    /// Starts a file on `out` with `opts`' compression and row-group size; every row gets
    /// `ingested_at` as `_ingested_at`. `path` only names the file in errors.
    pub fn new(out: FileOut, opts: &SinkOptions, ingested_at: DateTime<Utc>, path: &Path) -> Result<Self, SinkError> {
        let compression = match opts.compression {
            Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l).map_err(pq_err(path))?),
            Compression::Snappy => PqCompression::SNAPPY,
            _ => PqCompression::UNCOMPRESSED,
        };
        let mut props = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(opts.row_group_rows))
            // A window spans up to 8 partitions, each with a row group in memory: cap each
            // (and all of them together: `export.buffer_memory`).
            .set_max_row_group_bytes(Some(ROW_GROUP_MAX_BYTES))
            // Record ids are unique by construction, and parameters and the overflow object
            // nearly so: a dictionary would only cost time and memory before it gave up.
            .set_column_dictionary_enabled(ColumnPath::from("_record_id"), false)
            .set_column_dictionary_enabled(ColumnPath::from("actionParameters"), false)
            .set_column_dictionary_enabled(ColumnPath::from("_extra"), false)
            // A column's dictionary lives in memory until its row group ends, per open file:
            // past 64 KiB of distinct values it falls back to plain encoding (which zstd then
            // compresses as well: the files measured 3 % smaller than with 256 KiB).
            .set_dictionary_page_size_limit(64 << 10)
            // Each column of each open file keeps a zstd context sized for its largest page:
            // 128 KiB pages keep those small (a few hundred files can be open at once).
            .set_data_page_size_limit(128 << 10)
            .set_created_by(format!("aos-audit-export {}", env!("CARGO_PKG_VERSION")));
        // Min/max of free text and JSON cannot prune a scan, and computing them compares every
        // value twice: only the other columns get statistics.
        // Enumerations are all dictionary indices, which compression hardly shrinks: leaving
        // them uncompressed saves a compressor and decompressor per column of every open file.
        for column in UNCOMPRESSED {
            props = props.set_column_compression(ColumnPath::from(column), PqCompression::UNCOMPRESSED);
        }
        for column in NO_STATISTICS {
            props = props.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
        }
        let props = props.build();
        let schema = schema();
        let writer = ArrowWriter::try_new(out, schema.clone(), Some(props)).map_err(pq_err(path))?;
        let batch_rows = opts.row_group_rows.clamp(1, BATCH_ROWS);
        Ok(ParquetFile {
            writer: Some(writer),
            budget: opts.buffer.clone(),
            reported: 0,
            schema,
            strings: (0..FIELDS.len()).map(|_| StringBuilder::new()).collect(),
            action_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            record_id: StringBuilder::new(),
            extra: StringBuilder::new(),
            extra_buf: Vec::with_capacity(256),
            text: String::with_capacity(256),
            ingested_at_us: ingested_at.timestamp_micros(),
            rows: 0,
            encoded_bytes: 0,
            pending_bytes: 0,
            batch_rows,
        })
    }

    /// Appends one record (what has no column goes to `_extra`), writing a batch when it is full.
    /// String values are copied from the page body straight into the column builders.
    pub fn write(&mut self, rec: &OutRecord<'_>, path: &Path) -> Result<(), SinkError> {
        let r = rec.rec;
        let extra = &mut self.extra_buf;
        extra.clear();
        if !r.is_object {
            add_extra(extra, "_value", r.raw);
        }
        for (i, name) in FIELDS.iter().enumerate() {
            let v = r.fields[i];
            let kind = v.map(record::kind);
            if i == ACTION_TIME {
                match (v, kind, r.time) {
                    (_, None | Some(Kind::Null), _) => self.action_time.append_null(),
                    (Some(v), Some(Kind::String), Some(t)) => {
                        self.action_time.append_value(t.timestamp_micros());
                        if t.timestamp_subsec_nanos() % 1000 != 0 {
                            add_extra(extra, name, v);
                        }
                    }
                    (Some(v), _, _) => {
                        self.action_time.append_null();
                        add_extra(extra, name, v);
                    }
                    (None, _, _) => self.action_time.append_null(),
                }
                continue;
            }
            let b = &mut self.strings[i];
            match (v, kind) {
                (None, _) | (_, Some(Kind::Null)) => b.append_null(),
                // The value's JSON text as sent: only whitespace between tokens removed (never
                // re-serialized, which would round big numbers and drop repeated keys).
                (Some(v), _) if i == ADDITIONAL_DETAILS => b.append_value(record::compact(v)),
                // No escape: the text between the quotes is the value.
                (Some(v), Some(Kind::String)) if r.is_plain(i) => b.append_value(&v[1..v.len() - 1]),
                (Some(v), Some(Kind::String)) => {
                    self.text.clear();
                    if record::string_into(v, &mut self.text) {
                        b.append_value(&self.text);
                    } else {
                        // Not valid text (a lone surrogate escape): kept as sent, in `_extra`.
                        b.append_null();
                        add_extra(extra, name, v);
                    }
                }
                (Some(v), _) => {
                    b.append_null();
                    add_extra(extra, name, v);
                }
            }
        }
        for (k, v) in &r.extra {
            add_extra(extra, k, v);
        }
        let mut hex = [0u8; 32];
        let _ = hex::encode_to_slice(rec.id, &mut hex);
        self.record_id.append_value(std::str::from_utf8(&hex).unwrap_or_default());
        if extra.is_empty() {
            self.extra.append_null();
        } else {
            extra.push(b'}');
            self.extra.append_value(std::str::from_utf8(extra).unwrap_or("{}"));
        }
        self.rows += 1;
        self.pending_bytes += r.raw.len() as u64;
        if self.rows >= self.batch_rows {
            self.flush_batch(path)?;
        }
        Ok(())
    }

    fn flush_batch(&mut self, path: &Path) -> Result<(), SinkError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(FIELDS.len() + 3);
        let rows = self.batch_rows;
        for (i, b) in self.strings.iter_mut().enumerate() {
            if i == ACTION_TIME {
                cols.push(Arc::new(self.action_time.finish()));
            } else {
                cols.push(finish_sized(b, rows));
            }
        }
        cols.push(finish_sized(&mut self.record_id, rows));
        let mut ing = TimestampMicrosecondBuilder::with_capacity(self.rows).with_timezone("UTC");
        ing.append_value_n(self.ingested_at_us, self.rows);
        cols.push(Arc::new(ing.finish()));
        cols.push(finish_sized(&mut self.extra, rows));
        let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(|e| SinkError::Parquet {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let Some(writer) = self.writer.as_mut() else {
            return Ok(());
        };
        writer.write(&batch).map_err(pq_err(path))?;
        self.rows = 0;
        let now = writer.memory_size();
        let over = self.budget.update(self.reported, now);
        // Recorded before anything can fail, so a drop gives back exactly what is counted.
        self.reported = now;
        if over && writer.in_progress_rows() > 0 {
            // Over the shared budget: end this row group now.
            writer.flush().map_err(pq_err(path))?;
            let after = writer.memory_size();
            self.budget.update(now, after);
            self.reported = after;
        }
        self.encoded_bytes = (writer.bytes_written() + writer.in_progress_size()) as u64;
        self.pending_bytes = 0;
        Ok(())
    }

    /// Bytes written plus the encoded size of the row group being built, plus the JSON size
    /// of the rows not yet encoded (usually more than they encode to). Cheap: asking the
    /// encoder walks every column, so that is done once a batch (a file can pass
    /// `export.file_max_bytes` by at most one batch's encoded size).
    pub fn approx_bytes(&self) -> u64 {
        self.encoded_bytes + self.pending_bytes
    }

    /// Writes the footer (without it the file is not valid Parquet) and returns the file.
    pub fn close(mut self, path: &Path) -> Result<FileOut, SinkError> {
        self.flush_batch(path)?;
        let writer = self.writer.take().ok_or_else(|| SinkError::Parquet {
            path: path.to_path_buf(),
            message: "file already closed".into(),
        })?;
        writer.into_inner().map_err(pq_err(path))
    }
}

impl Drop for ParquetFile {
    fn drop(&mut self) {
        // Closed or abandoned, the file's row group no longer holds memory.
        self.budget.update(self.reported, 0);
    }
}
