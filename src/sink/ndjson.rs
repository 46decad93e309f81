//! NDJSON sink: each record verbatim (key order and unknown fields kept) plus `_record_id` and
//! `_ingested_at`, one per line; optionally gzip or zstd compressed.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::Compression;
use super::{FileOut, OutRecord, SinkError};
use crate::model::id_hex;

enum Enc {
    Plain(FileOut),
    Gzip(flate2::write::GzEncoder<FileOut>),
    Zstd(zstd::Encoder<'static, FileOut>),
}

/// One NDJSON file being written, through its compressor if any.
pub struct NdjsonFile {
    enc: Enc,
    suffix_tail: String,
    line: Vec<u8>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SinkError + '_ {
    move |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl NdjsonFile {
    /// Starts a file on `out` (gzip, zstd or plain per `compression`); every line gets
    /// `ingested_at` as `_ingested_at`. `path` only names the file in errors.
    pub fn new(out: FileOut, compression: Compression, ingested_at: DateTime<Utc>, path: &Path) -> Result<Self, SinkError> {
        let enc = match compression {
            Compression::Gzip => Enc::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::default())),
            Compression::Zstd(level) => Enc::Zstd(zstd::Encoder::new(out, level).map_err(io(path))?),
            _ => Enc::Plain(out),
        };
        let suffix_tail = format!(
            "\"_ingested_at\":\"{}\"}}\n",
            ingested_at.to_rfc3339_opts(SecondsFormat::Micros, true)
        );
        Ok(NdjsonFile {
            enc,
            suffix_tail,
            line: Vec::with_capacity(4096),
        })
    }

    /// Appends one record as a line, with `_record_id` and `_ingested_at` added (a non-object
    /// value is wrapped as `_value`).
    pub fn write(&mut self, rec: &OutRecord<'_>, path: &Path) -> Result<(), SinkError> {
        // Copy the record's text as sent, then splice the metadata fields in before its closing
        // brace: the API's own key order and spelling are kept. A JSON string cannot hold a
        // raw line break, so any CR/LF in the text lies between tokens (a pretty-printed
        // body) and becomes a space: the line stays one line and the same JSON.
        self.line.clear();
        let r = rec.rec;
        self.line.extend_from_slice(r.raw.as_bytes());
        if memchr::memchr2(b'\n', b'\r', &self.line).is_some() {
            for c in self.line.iter_mut() {
                if *c == b'\n' || *c == b'\r' {
                    *c = b' ';
                }
            }
        }
        if r.is_object {
            self.line.pop(); // the closing brace
            while self.line.last().is_some_and(u8::is_ascii_whitespace) {
                self.line.pop();
            }
            if !r.is_empty_object() {
                self.line.push(b',');
            }
        } else {
            // Not an object (the API only sends objects): wrap it so nothing is lost.
            let raw = std::mem::take(&mut self.line);
            self.line.extend_from_slice(b"{\"_value\":");
            self.line.extend_from_slice(&raw);
            self.line.push(b',');
        }
        write!(self.line, "\"_record_id\":\"{}\",", id_hex(rec.id)).map_err(io(path))?;
        self.line.extend_from_slice(self.suffix_tail.as_bytes());
        let w: &mut dyn Write = match &mut self.enc {
            Enc::Plain(w) => w,
            Enc::Gzip(w) => w,
            Enc::Zstd(w) => w,
        };
        w.write_all(&self.line).map_err(io(path))
    }

    /// Compressed bytes written so far (the encoders' buffers aside).
    pub fn approx_bytes(&self) -> u64 {
        match &self.enc {
            Enc::Plain(w) => w.bytes(),
            Enc::Gzip(w) => w.get_ref().bytes(),
            Enc::Zstd(w) => w.get_ref().bytes(),
        }
    }

    /// Finishes the compressed stream (if any) and returns the underlying file, not yet flushed.
    pub fn close(self, path: &Path) -> Result<FileOut, SinkError> {
        match self.enc {
            Enc::Plain(w) => Ok(w),
            Enc::Gzip(w) => w.finish().map_err(io(path)),
            Enc::Zstd(w) => w.finish().map_err(io(path)),
        }
    }
}
