//! Sinks: turn a window's admitted records into files, partitioned `dt=YYYY-MM-DD` by the UTC
//! date of `actionTime` (`dt=unknown` when it cannot be parsed), rolled over at
//! `export.file_max_rows`.
//!
//! Files are written to staging paths the caller chooses (hidden names next to their final
//! place, or a spool folder for object storage), flushed and fsynced on [`WindowWriter::finish`],
//! and deleted again if the writer is dropped unfinished. The sink never publishes: that is the
//! store's job, ordered by `window.rs`.

mod format;
pub mod merge;
pub mod ndjson;
pub mod parquet;
pub mod quarantine;
pub mod readback;

pub use format::{BufferBudget, Compression, Format, SinkOptions};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Datelike, Utc};
use sha2::{Digest, Sha256};

use crate::model::record::Record;
use crate::model::{self, RecordId};

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating, writing, compressing, flushing or fsyncing a file (or its folder) failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The staging file, or the folder that could not be created.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Parquet/Arrow encoder refused the data or its settings.
    #[error("cannot encode Parquet for {path}: {message}")]
    Parquet {
        /// The staging file.
        path: PathBuf,
        /// The encoder's error message.
        message: String,
    },
}

/// A finished file, ready to publish.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Final path relative to the output root: `dt=YYYY-MM-DD/{prefix}-pNNN.ext`.
    pub rel_path: String,
    /// The partition folder: `dt=YYYY-MM-DD` or `dt=unknown`.
    pub partition: String,
    /// Where the file was written (staging path), to publish from.
    pub temp_path: PathBuf,
    /// Number of records in the file.
    pub rows: u64,
    /// File size in bytes.
    pub bytes: u64,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// A record to write: the API's JSON object, its id, and its parsed `actionTime`.
pub struct OutRecord<'a> {
    /// The record exactly as the API sent it, borrowed from its page.
    pub rec: &'a Record<'a>,
    /// The record's fingerprint (written as `_record_id`).
    pub id: &'a RecordId,
    /// The parsed `actionTime`; `None` puts the record in `dt=unknown`.
    pub time: Option<DateTime<Utc>>,
}

/// Counts and hashes every byte that reaches the file.
pub struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`, with nothing counted yet.
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
    /// Returns the inner writer, the byte count and the lower-case hex SHA-256 of those bytes.
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
    // Every open file has one: a window can hold 8, several windows are in flight.
    Ok(HashingWriter::new(std::io::BufWriter::with_capacity(256 << 10, f)))
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
    partition: String,
    rel: String,
    temp: PathBuf,
    rows: u64,
    /// The window's write count at this file's last record.
    last_write: u64,
}

/// A partition's file that has had no record for this many of the window's records is
/// finished early: its encoder state (a compressor per column) is freed, and a later record
/// of that day starts the next part. Pages that come roughly in time order then keep one or
/// two files open per window instead of eight; in any other order nothing changes.
const IDLE_CLOSE_RECORDS: u64 = 50_000;

/// Writes one window attempt's files.
pub struct WindowWriter {
    opts: SinkOptions,
    prefix: String,
    ingested_at: DateTime<Utc>,
    staging: Box<dyn Fn(&str) -> PathBuf + Send + Sync>,
    /// Open files by partition day (days since the common era; `None` = `dt=unknown`): a
    /// number, so a record finds its file without formatting a date.
    open: BTreeMap<Option<i32>, OpenFile>,
    parts: BTreeMap<Option<i32>, u32>,
    done: Vec<WrittenFile>,
    /// Quarantine files by partition day (see [`quarantine`]): one per day, closed at the end.
    quarantined: BTreeMap<Option<i32>, QuarantineFile>,
    finished: bool,
    /// Records written so far.
    writes: u64,
}

/// An open quarantine file.
struct QuarantineFile {
    out: FileOut,
    partition: String,
    rel: String,
    temp: PathBuf,
    rows: u64,
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
            quarantined: BTreeMap::new(),
            finished: false,
            writes: 0,
        }
    }

    /// Sets `rec` aside in the quarantine of its partition (`_quarantine/dt=…/`), exactly as
    /// sent, with why and where (see [`quarantine`]).
    pub fn quarantine(&mut self, rec: OutRecord<'_>, why: &quarantine::Invalid) -> Result<(), SinkError> {
        let day = rec.time.map(|t| t.date_naive().num_days_from_ce());
        let f = match self.quarantined.entry(day) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let partition = format!("{}/{}", model::QUARANTINE_DIR, model::partition_of(rec.time));
                let rel = format!("{partition}/{}", model::attempt_file_name(&self.prefix, 0, "ndjson"));
                let temp = (self.staging)(&rel);
                let out = create(&temp)?;
                e.insert(QuarantineFile {
                    out,
                    partition,
                    rel,
                    temp,
                    rows: 0,
                })
            }
        };
        quarantine::write_line(&mut f.out, &rec, why, self.ingested_at, &f.temp)?;
        f.rows += 1;
        Ok(())
    }

    /// Writes `rec` to its partition's open file (opening one if needed), and closes that file
    /// once it reaches `file_max_rows` or `file_max_bytes`.
    pub fn write(&mut self, rec: OutRecord<'_>) -> Result<(), SinkError> {
        let day = rec.time.map(|t| t.date_naive().num_days_from_ce());
        let f = match self.open.entry(day) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let partition = model::partition_of(rec.time);
                let part = self.parts.entry(day).or_insert(0);
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
                e.insert(OpenFile {
                    last_write: 0,
                    writer,
                    partition,
                    rel,
                    temp,
                    rows: 0,
                })
            }
        };
        match &mut f.writer {
            FileWriter::Parquet(p) => p.write(&rec, &f.temp)?,
            FileWriter::Ndjson(n) => n.write(&rec, &f.temp)?,
        }
        f.rows += 1;
        self.writes += 1;
        f.last_write = self.writes;
        let size = match &f.writer {
            FileWriter::Parquet(p) => p.approx_bytes(),
            FileWriter::Ndjson(n) => n.approx_bytes(),
        };
        let full = f.rows >= self.opts.file_max_rows as u64 || size >= self.opts.file_max_bytes;
        if full && let Some(f) = self.open.remove(&day) {
            self.close(f)?;
        }
        if self.writes.is_multiple_of(4096) && self.open.len() > 1 {
            let now = self.writes;
            let idle: Vec<Option<i32>> = self
                .open
                .iter()
                .filter(|(_, f)| now - f.last_write >= IDLE_CLOSE_RECORDS)
                .map(|(d, _)| *d)
                .collect();
            for d in idle {
                if let Some(f) = self.open.remove(&d) {
                    self.close(f)?;
                }
            }
        }
        Ok(())
    }

    /// Finishes `f`; if that fails, its staging file is deleted (it is in neither list).
    fn close(&mut self, f: OpenFile) -> Result<(), SinkError> {
        let sealed = match f.writer {
            FileWriter::Parquet(p) => p.close(&f.temp),
            FileWriter::Ndjson(n) => n.close(&f.temp),
        }
        .and_then(|out| seal(out, &f.temp));
        self.done_or_delete(sealed, f.partition, f.rel, f.temp, f.rows)
    }

    /// A sealed file joins the finished ones; one that failed to seal is deleted.
    fn done_or_delete(
        &mut self,
        sealed: Result<(u64, String), SinkError>,
        partition: String,
        rel_path: String,
        temp_path: PathBuf,
        rows: u64,
    ) -> Result<(), SinkError> {
        let (bytes, sha256) = match sealed {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&temp_path);
                return Err(e);
            }
        };
        self.done.push(WrittenFile {
            rel_path,
            partition,
            temp_path,
            rows,
            bytes,
            sha256,
        });
        Ok(())
    }

    /// Finishes every open file now (they join the finished ones); a later record of the same
    /// day starts the next part. Returns how many were open.
    pub fn finish_open(&mut self) -> Result<usize, SinkError> {
        let n = self.open.len();
        // One at a time: if a close fails, the files not yet closed are still open (and
        // deleted with the writer).
        while let Some((_, f)) = self.open.pop_first() {
            self.close(f)?;
        }
        Ok(n)
    }

    /// Closes every file (footer, flush, fsync) and hands them over; the caller now owns the
    /// staging files.
    pub fn finish(mut self) -> Result<Vec<WrittenFile>, SinkError> {
        self.finish_open()?;
        while let Some((_, f)) = self.quarantined.pop_first() {
            let sealed = seal(f.out, &f.temp);
            self.done_or_delete(sealed, f.partition, f.rel, f.temp, f.rows)?;
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
            for f in self.quarantined.values() {
                let _ = std::fs::remove_file(&f.temp);
            }
        }
    }
}
