//! The sink's vocabulary: output format, compression, and how files are written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Output file format (`export.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet, one typed column per documented field.
    Parquet,
    /// Newline-delimited JSON, records verbatim plus metadata fields.
    Ndjson,
}

/// Compression (`export.compression`, `export.zstd_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// None.
    None,
    /// zstd at this level.
    Zstd(i32),
    /// Snappy (Parquet only).
    Snappy,
    /// gzip (NDJSON only).
    Gzip,
}

/// How files are written.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// File format.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// A file is rolled over after this many rows.
    pub file_max_rows: usize,
    /// A file is rolled over once about this many bytes are written (encoded, before the
    /// footer); Parquet counts its buffered row group too.
    pub file_max_bytes: u64,
    /// Memory shared by the row groups every open Parquet file is building.
    pub buffer: BufferBudget,
}

/// Memory for Parquet row groups in progress, shared by every open file of every window
/// (`export.buffer_memory`). A file whose write finds the total over the limit ends its row
/// group early: row groups get smaller under pressure, memory stays bounded whatever the
/// number of windows and partitions open at once.
#[derive(Debug, Clone)]
pub struct BufferBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
    high_water: Arc<AtomicUsize>,
}

impl BufferBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Self {
        BufferBudget {
            limit,
            used: Arc::new(AtomicUsize::new(0)),
            high_water: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Records that a file's buffered bytes went from `old` to `new`; returns whether the
    /// total is now over the limit.
    pub fn update(&self, old: usize, new: usize) -> bool {
        let total = if new >= old {
            self.used.fetch_add(new - old, Ordering::Relaxed) + (new - old)
        } else {
            self.used.fetch_sub(old - new, Ordering::Relaxed) - (old - new)
        };
        self.high_water.fetch_max(total, Ordering::Relaxed);
        total > self.limit
    }

    /// The most bytes ever buffered at once.
    pub fn high_water(&self) -> usize {
        self.high_water.load(Ordering::Relaxed)
    }

    /// Bytes buffered now, across every open file.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl SinkOptions {
    /// File name extension for this format and compression.
    pub fn extension(&self) -> &'static str {
        match (self.format, self.compression) {
            (Format::Parquet, _) => "parquet",
            (Format::Ndjson, Compression::Gzip) => "ndjson.gz",
            (Format::Ndjson, Compression::Zstd(_)) => "ndjson.zst",
            (Format::Ndjson, _) => "ndjson",
        }
    }
}
