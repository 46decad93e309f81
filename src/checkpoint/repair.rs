//! Repairs of the manifest (`verify --repair`): a file whose records the lake lost (deleted,
//! or corrupt and set aside) leaves the manifest, and the windows it was read in lose their
//! coverage, in one transaction; the next read of those windows (the repair's own, or any later
//! `run`) writes exactly the records no other file holds.
//!
//! Delta mode: the file is also removed from the table after this transaction; until that
//! commit is made it is recorded (`meta` key `table-remove:{path}`), so start-up recovery makes
//! it before any window is read (a table listing a file the manifest does not know would refuse
//! every commit of its windows).

use rusqlite::{OptionalExtension, params};

use super::{Checkpoint, CheckpointError, from_us};
use crate::model::Window;

impl Checkpoint {
    /// Records that the file at `path` is to be repaired, its bytes kept at `aside`: start-up
    /// recovery finishes a repair that stopped part-way ([`Checkpoint::repairs`]).
    pub fn begin_repair(&self, path: &str, aside: &str) -> Result<(), CheckpointError> {
        self.conn().execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![format!("repair:{path}"), aside],
        )?;
        Ok(())
    }

    /// The repairs begun and not ended: `(path, aside)`.
    pub fn repairs(&self) -> Result<Vec<(String, String)>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT substr(key, 8), value FROM meta WHERE key LIKE 'repair:%' ORDER BY key")?;
        Ok(st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?)
    }

    /// The repair of `path` is done (its windows are uncovered; the bytes set aside).
    pub fn end_repair(&self, path: &str) -> Result<(), CheckpointError> {
        self.conn().execute("DELETE FROM meta WHERE key = ?1", [format!("repair:{path}")])?;
        Ok(())
    }

    /// The streams with a committed window overlapping the window the manifest's file at
    /// `path` was written by (a compaction's file holds the records of all of them).
    pub fn streams_under(&self, path: &str) -> Result<Vec<String>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare(
            "SELECT DISTINCT w.stream_id FROM windows w JOIN files f ON f.path = ?1
             WHERE w.start_us < f.window_end_us AND w.end_us > f.window_start_us ORDER BY 1",
        )?;
        Ok(st.query_map([path], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    /// The stream that wrote the manifest's file at `path`.
    pub fn file_stream(&self, path: &str) -> Result<Option<String>, CheckpointError> {
        let c = self.conn();
        Ok(c.query_row("SELECT stream_id FROM files WHERE path = ?1", [path], |r| r.get(0))
            .optional()?)
    }

    /// Forgets the file at `path` and uncovers every committed window of its stream (of every
    /// stream with `all_streams`: a compaction's file holds them all) that overlaps the window
    /// the file was written by, in one transaction. Each such stream's watermark moves back to
    /// the first window uncovered; the ranges are recorded until read again
    /// ([`Checkpoint::uncovered`]), and the windows' generations stay counted (a read of them
    /// again never reuses a generation an earlier read's commit marker in the lake carries).
    /// `table`: the file is to be removed from the Delta table too (recorded until it is).
    /// `None` when the manifest does not list the file.
    pub fn uncover_file(&self, path: &str, table: bool, all_streams: bool) -> Result<Option<Window>, CheckpointError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        let row: Option<(String, i64, i64)> = tx
            .query_row(
                "SELECT stream_id, window_start_us, window_end_us FROM files WHERE path = ?1",
                [path],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((stream, start, end)) = row else {
            return Ok(None);
        };
        tx.execute("DELETE FROM files WHERE path = ?1", [path])?;
        let rows: Vec<(String, i64, i64, i64)> = {
            let mut st = tx.prepare(
                "SELECT stream_id, start_us, end_us, MAX(generation) FROM windows
                 WHERE (stream_id = ?1 OR ?4) AND start_us < ?3 AND end_us > ?2 GROUP BY stream_id, start_us, end_us",
            )?;
            st.query_map(params![stream, start, end, all_streams], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?
        };
        for (s, a, b, generation) in &rows {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = MAX(CAST(value AS INTEGER), excluded.value)",
                params![format!("generation-floor:{s}:{a}:{b}"), generation + 1],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, '')",
                [format!("uncovered:{s}:{a}:{b}")],
            )?;
            tx.execute(
                "DELETE FROM windows WHERE stream_id = ?1 AND start_us = ?2 AND end_us = ?3",
                params![s, a, b],
            )?;
            tx.execute(
                "UPDATE streams SET watermark_us = ?2 WHERE id = ?1 AND watermark_us > ?2",
                params![s, a],
            )?;
        }
        if table {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, '')",
                [format!("table-remove:{path}")],
            )?;
        }
        tx.commit()?;
        Ok(Some(Window {
            start: from_us(start),
            end: from_us(end),
        }))
    }

    /// The lowest generation a new read of `w` may take: above every read a repair uncovered.
    pub(super) fn generation_floor(c: &rusqlite::Connection, stream_id: &str, w: &Window) -> Result<u32, CheckpointError> {
        let key = format!("generation-floor:{stream_id}:{}:{}", super::us(w.start), super::us(w.end));
        Ok(
            c.query_row("SELECT CAST(value AS INTEGER) FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()?
                .unwrap_or(0),
        )
    }

    /// The windows of `stream_id` a repair uncovered and that were not read again since.
    pub fn uncovered(&self, stream_id: &str) -> Result<Vec<Window>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT key FROM meta WHERE key LIKE ?1 ORDER BY key")?;
        let keys: Vec<String> = st
            .query_map([format!("uncovered:{stream_id}:%")], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(keys
            .iter()
            .filter_map(|k| {
                let mut it = k.rsplitn(3, ':');
                let (b, a) = (it.next()?.parse().ok()?, it.next()?.parse().ok()?);
                Some(Window {
                    start: from_us(a),
                    end: from_us(b),
                })
            })
            .collect())
    }

    /// The uncovered window `w` of `stream_id` is covered again.
    pub fn clear_uncovered(&self, stream_id: &str, w: &Window) -> Result<(), CheckpointError> {
        self.conn().execute(
            "DELETE FROM meta WHERE key = ?1",
            [format!("uncovered:{stream_id}:{}:{}", super::us(w.start), super::us(w.end))],
        )?;
        Ok(())
    }

    /// Files uncovered and not yet removed from the Delta table.
    pub fn table_removes(&self) -> Result<Vec<String>, CheckpointError> {
        let c = self.conn();
        let mut st = c.prepare("SELECT substr(key, 14) FROM meta WHERE key LIKE 'table-remove:%' ORDER BY key")?;
        Ok(st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
    }

    /// The table no longer lists these files.
    pub fn table_removed(&self, paths: &[String]) -> Result<(), CheckpointError> {
        let mut c = self.conn();
        let tx = c.transaction()?;
        for p in paths {
            tx.execute("DELETE FROM meta WHERE key = ?1", [format!("table-remove:{p}")])?;
        }
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{FileRow, WindowCommit};
    use crate::model::StreamSpec;

    #[test]
    fn an_uncovered_file_takes_its_windows_coverage_and_is_recorded_for_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::open(&dir.path().join("s.db")).unwrap();
        let spec = StreamSpec {
            id: "all".into(),
            name: None,
            product_types: vec![],
            geo_locations: vec![],
        };
        cp.ensure_stream(&spec).unwrap();
        let win = |a: i64, b: i64| Window {
            start: from_us(a),
            end: from_us(b),
        };
        let file = |path: &str| FileRow {
            path: path.into(),
            stream_id: "all".into(),
            partition: "dt=1970-01-01".into(),
            rows: 1,
            bytes: 10,
            sha256: String::new(),
        };
        for (i, (a, b)) in [(0, 1_000), (1_000, 2_000), (2_000, 3_000)].into_iter().enumerate() {
            let prefix = format!("all-{i}-g0");
            cp.begin_attempt("all", &prefix, &["dt=1970-01-01".into()]).unwrap();
            cp.commit_window(&WindowCommit {
                stream_id: "all",
                window: win(a, b),
                generation: 0,
                prefix: &prefix,
                marker: &prefix,
                files: vec![file(&format!("dt=1970-01-01/{prefix}-p000.parquet"))],
                id_scheme: 2,
                out_of_range: 0,
                records_fetched: 1,
                pages: 1,
                run_id: None,
                advance_watermark_to: Some(from_us(b)),
            })
            .unwrap();
        }
        assert_eq!(cp.uncover_file("dt=1970-01-01/none.parquet", true, false).unwrap(), None);
        assert!(
            cp.table_removes().unwrap().is_empty(),
            "nothing recorded for a file it does not know"
        );
        let got = cp.uncover_file("dt=1970-01-01/all-1-g0-p000.parquet", true, false).unwrap();
        assert_eq!(got, Some(win(1_000, 2_000)));
        assert!(!cp.has_file("dt=1970-01-01/all-1-g0-p000.parquet").unwrap());
        assert!(cp.has_file("dt=1970-01-01/all-0-g0-p000.parquet").unwrap());
        assert_eq!(
            cp.committed_ranges("all", from_us(0), from_us(3_000)).unwrap(),
            vec![(from_us(0), from_us(1_000)), (from_us(2_000), from_us(3_000))],
            "only the file's window loses its coverage"
        );
        assert_eq!(cp.watermark("all").unwrap(), Some(from_us(1_000)), "exported up to the hole");
        assert_eq!(cp.table_removes().unwrap(), vec!["dt=1970-01-01/all-1-g0-p000.parquet".to_string()]);
        cp.table_removed(&cp.table_removes().unwrap()).unwrap();
        assert!(cp.table_removes().unwrap().is_empty());
        // Recorded until read again, and a read of it again takes a generation of its own.
        assert_eq!(cp.uncovered("all").unwrap(), vec![win(1_000, 2_000)]);
        assert_eq!(cp.next_generation("all", &win(1_000, 2_000)).unwrap(), 1);
        cp.clear_uncovered("all", &win(1_000, 2_000)).unwrap();
        assert!(cp.uncovered("all").unwrap().is_empty());
        // Intents, as recovery finds them.
        cp.begin_repair("dt=1970-01-01/x.parquet", "_aos-audit-export/set-aside/t/dt=1970-01-01/x.parquet")
            .unwrap();
        assert_eq!(
            cp.repairs().unwrap(),
            vec![(
                "dt=1970-01-01/x.parquet".to_string(),
                "_aos-audit-export/set-aside/t/dt=1970-01-01/x.parquet".to_string()
            )]
        );
        cp.end_repair("dt=1970-01-01/x.parquet").unwrap();
        assert!(cp.repairs().unwrap().is_empty());
    }
}
