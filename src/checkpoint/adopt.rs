//! Adopting what the lake holds: a new, lost or stale state learns the committed windows from
//! the lake's commit markers, and the data files no marker names, before anything is exported.
//!
//! Invariant: the state never claims coverage the lake does not prove. A marker is written only
//! after every file of its window is published, so an adopted marker is a committed window
//! (coverage and files). A data file that no marker names (written before markers existed, or
//! by an attempt that never committed) is adopted into the manifest only: its ids take part in
//! deduplication, but its window is read again.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Checkpoint, CheckpointError, FileRow, from_us, us};
use crate::model::{Range, Window};

/// The content of a commit marker (`_aos-audit-export/commits/{key}.json`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommitMarker {
    /// The stream's id.
    pub stream_id: String,
    /// The stream's `productTypes` filter.
    pub product_types: Vec<String>,
    /// The stream's `geoLocations` filter.
    pub geo_locations: Vec<String>,
    /// Window start.
    pub start: DateTime<Utc>,
    /// Window end.
    pub end: DateTime<Utc>,
    /// The read's generation.
    pub generation: u32,
    /// The attempt prefix naming its files.
    pub prefix: String,
    /// Id scheme of the files' `_record_id`s.
    pub id_scheme: i64,
    /// The window's published files.
    pub files: Vec<FileRow>,
    /// Written when the attempt begins, before any file: the attempt may have published some
    /// files and never committed (a begin marker the state does not know is an orphan to
    /// delete). Replaced by the commit marker, under the same key, once every file is
    /// published.
    #[serde(default)]
    pub begun_only: bool,
    /// The partitions the attempt may write files in (for deleting an orphan's files).
    #[serde(default)]
    pub partitions: Vec<String>,
}

/// What [`Checkpoint::adopt_window`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adoption {
    /// The window is committed now, with its files.
    Adopted,
    /// The state already knew this marker's window.
    Known,
    /// Another attempt at the same read (stream, bounds, generation) is committed: this one
    /// holds the same records again, and must be deleted, not adopted.
    Conflict,
}

impl Checkpoint {
    /// The newest commit marker this state knows, if any.
    pub fn newest_marker(&self) -> Result<Option<String>, CheckpointError> {
        Ok(self.conn().query_row("SELECT MAX(marker) FROM windows", [], |r| r.get(0))?)
    }

    /// Whether an adoption of the lake's data files began and did not finish.
    pub fn file_adoption_pending(&self) -> Result<bool, CheckpointError> {
        Ok(self
            .conn()
            .query_row("SELECT EXISTS (SELECT 1 FROM meta WHERE key = 'adopt_files')", [], |r| r.get(0))?)
    }

    /// Marks an adoption of the lake's data files as begun (`true`) or finished.
    pub fn set_file_adoption_pending(&self, pending: bool) -> Result<(), CheckpointError> {
        let c = self.conn();
        if pending {
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('adopt_files', '1')", [])?;
        } else {
            c.execute("DELETE FROM meta WHERE key = 'adopt_files'", [])?;
        }
        Ok(())
    }

    /// Whether any window is committed.
    pub fn has_windows(&self) -> Result<bool, CheckpointError> {
        Ok(self.conn().query_row("SELECT EXISTS (SELECT 1 FROM windows)", [], |r| r.get(0))?)
    }

    /// Adopts a committed window from its marker: stream, window row, manifest rows. Nothing
    /// is written unless the outcome is [`Adoption::Adopted`].
    pub fn adopt_window(&self, key: &str, m: &CommitMarker) -> Result<Adoption, CheckpointError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let known: Option<i64> = tx
            .query_row("SELECT 1 FROM windows WHERE marker = ?1", [key], |r| r.get(0))
            .optional()?;
        if known.is_some() {
            return Ok(Adoption::Known);
        }
        tx.execute(
            "INSERT OR IGNORE INTO streams (id, product_types, geo_locations) VALUES (?1, ?2, ?3)",
            params![m.stream_id, m.product_types.join(","), m.geo_locations.join(",")],
        )?;
        let now = us(Utc::now());
        let rows: u64 = m
            .files
            .iter()
            .filter(|f| !crate::model::is_quarantine(&f.partition))
            .map(|f| f.rows)
            .sum();
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO windows (stream_id, start_us, end_us, generation, records_written, records_fetched, pages, run_id, committed_at_us, out_of_range, marker)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, NULL, ?6, 0, ?7)",
            params![m.stream_id, us(m.start), us(m.end), m.generation, rows as i64, now, key],
        )?;
        if inserted == 0 {
            // Another attempt at the same read is committed: this one read the same records.
            return Ok(Adoption::Conflict);
        }
        for f in &m.files {
            insert_file(
                &tx,
                f,
                &Window {
                    start: m.start,
                    end: m.end,
                },
                m.generation,
                m.id_scheme,
                now,
            )?;
        }
        tx.commit()?;
        Ok(Adoption::Adopted)
    }

    /// Adopts a data file no marker names into the manifest (ids for deduplication only).
    pub fn adopt_file(&self, f: &FileRow, w: &Window, generation: u32, id_scheme: i64) -> Result<(), CheckpointError> {
        let conn = self.conn();
        insert_file(&conn, f, w, generation, id_scheme, us(Utc::now()))
    }

    /// Moves each stream's watermark to the end of its committed ranges that run contiguously
    /// from `start` (never backwards): after adoption, coverage the lake proves counts.
    pub fn recompute_watermarks(&self, start: DateTime<Utc>) -> Result<(), CheckpointError> {
        let ids: Vec<String> = {
            let c = self.conn();
            let mut st = c.prepare("SELECT id FROM streams")?;
            st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
        };
        for id in ids {
            let mut ranges: Vec<Range> = {
                let c = self.conn();
                let mut st = c.prepare("SELECT DISTINCT start_us, end_us FROM windows WHERE stream_id = ?1")?;
                st.query_map([&id], |r| Ok((from_us(r.get(0)?), from_us(r.get(1)?))))?
                    .collect::<Result<_, _>>()?
            };
            ranges.sort();
            let mut end: Option<DateTime<Utc>> = None;
            for (a, b) in ranges {
                match end {
                    None if a <= start => end = Some(b),
                    Some(e) if a <= e => end = Some(e.max(b)),
                    _ => {}
                }
            }
            if let Some(w) = end {
                self.conn().execute(
                    "UPDATE streams SET watermark_us = ?2 WHERE id = ?1 AND (watermark_us IS NULL OR watermark_us < ?2)",
                    params![id, us(w)],
                )?;
            }
        }
        Ok(())
    }
}

pub(super) fn insert_file(
    c: &rusqlite::Connection,
    f: &FileRow,
    w: &Window,
    generation: u32,
    id_scheme: i64,
    now: i64,
) -> Result<(), CheckpointError> {
    c.execute(
        "INSERT OR IGNORE INTO files (path, stream_id, partition, window_start_us, window_end_us, generation, rows, bytes, sha256, committed_at_us, id_scheme)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![f.path, f.stream_id, f.partition, us(w.start), us(w.end), generation, f.rows as i64, f.bytes as i64, f.sha256, now, id_scheme],
    )?;
    Ok(())
}
