//! A window's running state while its pages are encoded: placing, deduplicating and writing
//! each record, and the `export.on_invalid_record` policy for a record holding text a strict
//! JSON reader refuses (it is deduplicated like any other, so a re-read finds it already
//! quarantined and never sets it aside twice).

use super::ExportError;
use crate::api::Page;
use crate::dedup::{Content, Deduper, Placement, Unplaced, place};
use crate::model::record::Record;
use crate::model::{OnInvalidRecord, RecordId, Window};
use crate::sink::quarantine::Invalid;
use crate::sink::{OutRecord, WindowWriter};

/// A record without a usable `actionTime` whose fate waits for the overlaps with the
/// neighbouring windows (see [`Deduper::admit_unplaced`]).
pub(super) struct Deferred {
    pub(super) raw: String,
    pub(super) id: RecordId,
    pub(super) content: Content,
    pub(super) occurrence: u32,
    /// Why it goes to the quarantine, if it does.
    pub(super) invalid: Option<Invalid>,
}

/// A window's running state while its pages are encoded.
pub(super) struct Progress {
    pub(super) dedup: Deduper,
    pub(super) writer: WindowWriter,
    pub(super) on_invalid: OnInvalidRecord,
    pub(super) out_of_range: u64,
    pub(super) duplicates: u64,
    pub(super) unplaced: u64,
    pub(super) quarantined: u64,
    /// Pages processed so far.
    pub(super) pages: u64,
    pub(super) deferred: Vec<Deferred>,
}

impl Progress {
    /// A fresh state for one read.
    pub(super) fn new(dedup: Deduper, writer: WindowWriter, on_invalid: OnInvalidRecord) -> Self {
        Progress {
            dedup,
            writer,
            on_invalid,
            out_of_range: 0,
            duplicates: 0,
            unplaced: 0,
            quarantined: 0,
            pages: 0,
            deferred: Vec::new(),
        }
    }

    /// Places, deduplicates and writes every record of `page`.
    pub(super) fn process(&mut self, page: &Page, w: &Window) -> Result<(), ExportError> {
        self.pages += 1;
        let mut read = 0;
        for rec in page.records() {
            read += 1;
            let time = match place(&rec, w) {
                Placement::In(t) => Some(t),
                // The padded query returns the neighbours' records near the bounds (and a
                // server comparing at the second a little more): the window that holds their
                // instant owns them, and its own padded query returns them too.
                Placement::Out(t) if w.near(t) => {
                    self.out_of_range += 1;
                    continue;
                }
                Placement::Out(time) => {
                    return Err(ExportError::OutOfRange {
                        start: w.query().start,
                        end: w.query().end,
                        time,
                    });
                }
                Placement::Unplaced => {
                    self.unplaced += 1;
                    None
                }
            };
            let invalid = rec.flaw.map(|f| Invalid {
                what: f.what,
                page: self.pages,
                offset: page.offset_of(rec.raw) as u64,
            });
            let (id, new) = match time {
                Some(_) => self.dedup.admit(&rec, true),
                None => match self.dedup.admit_unplaced(&rec) {
                    (id, Unplaced::New) => (id, true),
                    (id, Unplaced::Known) => (id, false),
                    (id, Unplaced::Deferred { content, occurrence }) => {
                        self.deferred.push(Deferred {
                            raw: rec.raw.to_string(),
                            id,
                            content,
                            occurrence,
                            invalid,
                        });
                        continue;
                    }
                },
            };
            if !new {
                self.duplicates += 1;
                continue;
            }
            self.write(&rec, &id, time, invalid, w)?;
        }
        // The validating scan counted the records; reading them again must find as many.
        if read != page.len() {
            return Err(ExportError::Internal(format!(
                "page {} of the window {} .. {}: {read} records read of the {} the page holds",
                self.pages,
                w.start,
                w.end,
                page.len()
            )));
        }
        Ok(())
    }

    /// Writes a new record: as data, or (holding text a strict reader refuses) per
    /// `export.on_invalid_record`.
    pub(super) fn write(
        &mut self,
        rec: &Record<'_>,
        id: &RecordId,
        time: Option<chrono::DateTime<chrono::Utc>>,
        invalid: Option<Invalid>,
        w: &Window,
    ) -> Result<(), ExportError> {
        let out = OutRecord { rec, id, time };
        match (invalid, self.on_invalid) {
            (None, _) => self.writer.write(out)?,
            (Some(why), OnInvalidRecord::Fail) => {
                return Err(ExportError::InvalidRecord {
                    start: w.start,
                    end: w.end,
                    page: why.page,
                    offset: why.offset,
                    what: why.what,
                });
            }
            (Some(why), OnInvalidRecord::Quarantine) => {
                tracing::warn!(
                    window_start = %w.start, window_end = %w.end, page = why.page, offset = why.offset, reason = why.what,
                    "a record holds text a strict JSON reader refuses: kept as sent in _quarantine/"
                );
                self.writer.quarantine(out, &why)?;
                self.quarantined += 1;
            }
        }
        Ok(())
    }
}
