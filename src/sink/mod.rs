//! Sinks: turn a window's admitted records into files, partitioned `dt=YYYY-MM-DD` by the UTC
//! date of `actionTime` (`dt=unknown` when it cannot be parsed), rolled over at
//! `export.file_max_rows`.
//!
//! Files are written to staging paths the caller chooses (hidden names next to their final
//! place, or a spool folder for object storage), flushed and fsynced on [`WindowWriter::finish`],
//! and deleted again if the writer is dropped unfinished. The sink never publishes: that is the
//! store's job, ordered by `window.rs`.

mod format;
pub mod ndjson;
pub mod parquet;
pub mod readback;

pub use format::{Compression, Format, SinkOptions};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{self, RecordId};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot encode Parquet for {path}: {message}")]
    Parquet { path: PathBuf, message: String },
}

/// A finished file, ready to publish.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Final path relative to the output root: `dt=YYYY-MM-DD/{prefix}-pNNN.ext`.
    pub rel_path: String,
    pub partition: String,
    pub temp_path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A record to write: the API's JSON object, its id, and its parsed `actionTime`.
pub struct OutRecord<'a> {
    pub value: &'a Value,
    pub id: &'a RecordId,
    pub time: Option<DateTime<Utc>>,
}

/// Counts and hashes every byte that reaches the file.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Buffered file with hashing, as the encoders see it.
pub type FileOut = HashingWriter<std::io::BufWriter<std::fs::File>>;

fn create(path: &PathBuf) -> Result<FileOut, SinkError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let f = std::fs::File::create(path).map_err(|source| SinkError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f)))
}

/// Flushes and fsyncs a finished file; returns (bytes, sha256).
fn seal(out: FileOut, path: &std::path::Path) -> Result<(u64, String), SinkError> {
    let (buf, bytes, sha) = out.finish();
    let io = |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = buf.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    Ok((bytes, sha))
}

enum FileWriter {
    Parquet(Box<parquet::ParquetFile>),
    Ndjson(Box<ndjson::NdjsonFile>),
}

struct OpenFile {
    writer: FileWriter,
    rel: String,
    temp: PathBuf,
    rows: u64,
}

/// Writes one window attempt's files.
pub struct WindowWriter {
    opts: SinkOptions,
    prefix: String,
    ingested_at: DateTime<Utc>,
    staging: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
    open: BTreeMap<String, OpenFile>,
    parts: BTreeMap<String, u32>,
    done: Vec<WrittenFile>,
    finished: bool,
}

impl WindowWriter {
    /// `prefix` makes names unique per (stream, window, generation); `staging` maps a final
    /// relative path to the path the file is written at before publishing.
    pub fn new(opts: SinkOptions, prefix: String, ingested_at: DateTime<Utc>, staging: Box<dyn Fn(&str) -> PathBuf + Send + Sync>) -> Self {
        WindowWriter {
            opts,
            prefix,
            ingested_at,
            staging,
            open: BTreeMap::new(),
            parts: BTreeMap::new(),
            done: Vec::new(),
            finished: false,
        }
    }

    pub fn write(&mut self, rec: OutRecord<'_>) -> Result<(), SinkError> {
        let partition = model::partition_of(rec.time);
        if !self.open.contains_key(&partition) {
            let part = self.parts.entry(partition.clone()).or_insert(0);
            let rel = format!(
                "{partition}/{}",
                model::attempt_file_name(&self.prefix, *part, self.opts.extension())
            );
            *part += 1;
            let temp = (self.staging)(&rel);
            let out = create(&temp)?;
            let writer = match self.opts.format {
                Format::Parquet => FileWriter::Parquet(Box::new(parquet::ParquetFile::new(out, &self.opts, self.ingested_at, &temp)?)),
                Format::Ndjson => FileWriter::Ndjson(Box::new(ndjson::NdjsonFile::new(
                    out,
                    self.opts.compression,
                    self.ingested_at,
                    &temp,
                )?)),
            };
            self.open.insert(
                partition.clone(),
                OpenFile {
                    writer,
                    rel,
                    temp,
                    rows: 0,
                },
            );
        }
        let f = self.open.get_mut(&partition).expect("just opened");
        match &mut f.writer {
            FileWriter::Parquet(p) => p.write(&rec, &f.temp)?,
            FileWriter::Ndjson(n) => n.write(&rec, &f.temp)?,
        }
        f.rows += 1;
        let size = match &f.writer {
            FileWriter::Parquet(p) => p.approx_bytes(),
            FileWriter::Ndjson(n) => n.approx_bytes(),
        };
        if f.rows >= self.opts.file_max_rows as u64 || size >= self.opts.file_max_bytes {
            let f = self.open.remove(&partition).expect("present");
            self.close(partition, f)?;
        }
        Ok(())
    }

    fn close(&mut self, partition: String, f: OpenFile) -> Result<(), SinkError> {
        let out = match f.writer {
            FileWriter::Parquet(p) => p.close(&f.temp)?,
            FileWriter::Ndjson(n) => n.close(&f.temp)?,
        };
        let (bytes, sha256) = seal(out, &f.temp)?;
        self.done.push(WrittenFile {
            rel_path: f.rel,
            partition,
            temp_path: f.temp,
            rows: f.rows,
            bytes,
            sha256,
        });
        Ok(())
    }

    /// Closes every file (footer, flush, fsync) and hands them over; the caller now owns the
    /// staging files.
    pub fn finish(mut self) -> Result<Vec<WrittenFile>, SinkError> {
        let open = std::mem::take(&mut self.open);
        for (p, f) in open {
            self.close(p, f)?;
        }
        self.finished = true;
        Ok(std::mem::take(&mut self.done))
    }
}

impl Drop for WindowWriter {
    fn drop(&mut self) {
        if !self.finished {
            // An abandoned attempt (error or cancellation) leaves no staging files behind.
            for f in self.open.values() {
                let _ = std::fs::remove_file(&f.temp);
            }
            for f in &self.done {
                let _ = std::fs::remove_file(&f.temp_path);
            }
        }
    }
}
