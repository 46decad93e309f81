//! The quarantine: records the exporter cannot represent (text a strict JSON reader refuses)
//! kept exactly as sent, one JSON object per line, under `_quarantine/dt=…/`.
//!
//! A line holds the record's text as a JSON string (`raw`: decoding it gives back the bytes
//! the API sent), its `_record_id` (so a re-read finds it like any other record and never
//! quarantines it twice), `_ingested_at`, why it was set aside and where it was on its page.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::{FileOut, OutRecord, SinkError};
use crate::model::id_hex;

/// Why and where a record was set aside.
#[derive(Debug, Clone, Copy)]
pub struct Invalid {
    /// What a strict reader refuses in it.
    pub what: &'static str,
    /// The page of the window's read it came on (1-based).
    pub page: u64,
    /// Its byte offset in that page's body.
    pub offset: u64,
}

/// Writes one quarantine line for `rec`.
pub fn write_line(out: &mut FileOut, rec: &OutRecord<'_>, why: &Invalid, ingested_at: DateTime<Utc>, path: &Path) -> Result<(), SinkError> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        _record_id: String,
        _ingested_at: String,
        reason: &'a str,
        page: u64,
        offset: u64,
        raw: &'a str,
    }
    let line = Line {
        _record_id: id_hex(rec.id),
        _ingested_at: ingested_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        reason: why.what,
        page: why.page,
        offset: why.offset,
        raw: rec.rec.raw,
    };
    let io = |source| SinkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut text = serde_json::to_vec(&line).map_err(|e| io(std::io::Error::other(e)))?;
    text.push(b'\n');
    out.write_all(&text).map_err(io)
}
