//! NDJSON sink: each record verbatim (key order and unknown fields kept) plus `_record_id` and
//! `_ingested_at`, one per line; optionally gzip or zstd compressed.
//!
//! Every line has unique exporter keys: a key the API sends named like a column the exporter
//! adds ([`EXPORTER_COLUMNS`]) moves, with its value as sent, into an `_extra` object, as in
//! Parquet (where every unknown key lives in `_extra`).

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

/// Keys the exporter adds to a line (`_extra` only when the API sent one of these).
pub const EXPORTER_COLUMNS: [&str; 3] = ["_record_id", "_ingested_at", "_extra"];

/// The members of a JSON object as sent: keys decoded, values raw, order and repeats kept.
struct Members<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    out.push((k, m.next_value()?));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Rewrites an object's text with the members named like exporter columns moved into an
/// `_extra` object at its end (left open: no closing brace, a trailing comma).
fn move_reserved(raw: &str, out: &mut Vec<u8>) -> bool {
    let Ok(Members(members)) = serde_json::from_str::<Members<'_>>(raw) else {
        return false;
    };
    let key = |out: &mut Vec<u8>, k: &str| {
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
    };
    out.push(b'{');
    for (k, v) in members.iter().filter(|(k, _)| !EXPORTER_COLUMNS.contains(&k.as_ref())) {
        key(out, k);
        out.extend_from_slice(v.get().as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"_extra\":{");
    for (i, (k, v)) in members.iter().filter(|(k, _)| EXPORTER_COLUMNS.contains(&k.as_ref())).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        key(out, k);
        out.extend_from_slice(v.get().as_bytes());
    }
    out.extend_from_slice(b"},");
    true
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
        let reserved = r.is_object && r.extra.iter().any(|(k, _)| EXPORTER_COLUMNS.contains(&k.as_ref()));
        if reserved && move_reserved(r.raw, &mut self.line) {
            write!(self.line, "\"_record_id\":\"{}\",", id_hex(rec.id)).map_err(io(path))?;
            self.line.extend_from_slice(self.suffix_tail.as_bytes());
            return self.flush_line(path);
        }
        self.line.clear();
        self.line.extend_from_slice(r.raw.as_bytes());
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
        self.flush_line(path)
    }

    fn flush_line(&mut self, path: &Path) -> Result<(), SinkError> {
        // A line break between tokens (a pretty-printed body) becomes a space.
        if memchr::memchr2(b'\n', b'\r', &self.line[..self.line.len() - 1]).is_some() {
            let n = self.line.len() - 1;
            for c in self.line[..n].iter_mut() {
                if *c == b'\n' || *c == b'\r' {
                    *c = b' ';
                }
            }
        }
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
