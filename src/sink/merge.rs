//! Compaction's writer: the rows of several Parquet files of one partition rewritten, as they
//! are, into as few files as a target size allows. Rows are copied batch by batch (the
//! columns, `_record_id` and `_ingested_at` included, are not re-derived), so the merged files
//! hold exactly the records of their inputs.

use std::path::PathBuf;

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::parquet::pq_err;
use super::readback::Source;
use super::{Compression, SinkError, WrittenFile, create, seal};

/// Rewrites `inputs` (path relative to the root, bytes) into files of about `target_bytes`;
/// `name(n)` gives the n-th output's final relative path and its staging path. Returns the
/// finished (fsynced) outputs; on error, the staged outputs are deleted.
pub fn merge(
    inputs: Vec<(String, Source)>,
    partition: &str,
    target_bytes: u64,
    compression: Compression,
    name: &dyn Fn(u32) -> (String, PathBuf),
) -> Result<Vec<WrittenFile>, SinkError> {
    let mut done: Vec<WrittenFile> = Vec::new();
    let result = merge_into(inputs, partition, target_bytes, compression, name, &mut done);
    if result.is_err() {
        for f in &done {
            let _ = std::fs::remove_file(&f.temp_path);
        }
    }
    result.map(|()| done)
}

struct Out {
    writer: ArrowWriter<super::FileOut>,
    rel: String,
    temp: PathBuf,
    rows: u64,
}

fn merge_into(
    inputs: Vec<(String, Source)>,
    partition: &str,
    target_bytes: u64,
    compression: Compression,
    name: &dyn Fn(u32) -> (String, PathBuf),
    done: &mut Vec<WrittenFile>,
) -> Result<(), SinkError> {
    let codec = match compression {
        Compression::Zstd(l) => PqCompression::ZSTD(ZstdLevel::try_new(l).unwrap_or_default()),
        Compression::Snappy => PqCompression::SNAPPY,
        _ => PqCompression::UNCOMPRESSED,
    };
    let props = WriterProperties::builder()
        .set_compression(codec)
        // Bounds the merge's memory: a row group is held until it is written.
        .set_max_row_group_row_count(Some(50_000))
        .set_created_by(format!("aos-audit-export {} (compaction)", env!("CARGO_PKG_VERSION")))
        .build();
    let mut out: Option<Out> = None;
    let finish = |o: Out, done: &mut Vec<WrittenFile>| -> Result<(), SinkError> {
        let file = o.writer.into_inner().map_err(pq_err(&o.temp))?;
        let (bytes, sha256) = seal(file, &o.temp)?;
        done.push(WrittenFile {
            rel_path: o.rel,
            partition: partition.to_string(),
            temp_path: o.temp,
            rows: o.rows,
            bytes,
            sha256,
        });
        Ok(())
    };
    for (path, source) in inputs {
        let input_err = |e: parquet::errors::ParquetError| SinkError::Parquet {
            path: PathBuf::from(&path),
            message: e.to_string(),
        };
        let reader: Box<dyn Iterator<Item = Result<arrow::array::RecordBatch, arrow::error::ArrowError>>> = match source {
            Source::File(f) => Box::new(
                ParquetRecordBatchReaderBuilder::try_new(f)
                    .map_err(input_err)?
                    .build()
                    .map_err(input_err)?,
            ),
            Source::Bytes(b) => Box::new(
                ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(b))
                    .map_err(input_err)?
                    .build()
                    .map_err(input_err)?,
            ),
        };
        for batch in reader {
            let batch = batch.map_err(|e| SinkError::Parquet {
                path: PathBuf::from(&path),
                message: e.to_string(),
            })?;
            if out.is_none() {
                let (rel, temp) = name(done.len() as u32);
                let file = create(&temp)?;
                let writer = ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).map_err(pq_err(&temp))?;
                out = Some(Out {
                    writer,
                    rel,
                    temp,
                    rows: 0,
                });
            }
            if let Some(o) = out.as_mut() {
                o.writer.write(&batch).map_err(pq_err(&o.temp))?;
                o.rows += batch.num_rows() as u64;
                if o.writer.bytes_written() as u64 + o.writer.in_progress_size() as u64 >= target_bytes
                    && let Some(o) = out.take()
                {
                    finish(o, done)?;
                }
            }
        }
    }
    if let Some(o) = out.take() {
        finish(o, done)?;
    }
    Ok(())
}
