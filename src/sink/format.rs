//! The sink's vocabulary: output format, compression, and how files are written.

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
