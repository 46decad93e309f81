//! One window end to end: fetch every page → place and deduplicate → write → publish.
//! The commit is the scheduler's, so that windows fetched concurrently commit in order.
//!
//! Before writing, the attempt is recorded as pending (with the partitions it may touch) and any
//! file left under its name by an earlier crashed attempt is deleted; so a window re-run after a
//! crash overwrites, never duplicates. Cancellation is checked at page boundaries only.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::checkpoint::{Checkpoint, CheckpointError, FileRow, us};
use crate::config::StreamSpec;
use crate::pipeline::{Deduper, Placement, RecordId, place};
use crate::planner::Window;
use crate::sink::{OutRecord, SinkError, SinkOptions, WindowWriter};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("interrupted; every committed window is consistent and the next run resumes after it")]
    Cancelled,
    #[error("export.run_deadline reached; committed windows are kept and the next run resumes after them")]
    Deadline,
}

/// What the adapters a window needs.
pub struct Deps<'a> {
    pub api: &'a ApiClient,
    pub store: &'a Store,
    pub checkpoint: &'a Checkpoint,
    pub sink: &'a SinkOptions,
}

/// A window whose files are published and which awaits its commit.
#[derive(Debug)]
pub struct WindowOutcome {
    pub stream_id: String,
    pub window: Window,
    pub generation: u32,
    pub prefix: String,
    pub files: Vec<FileRow>,
    pub new_ids: Vec<(RecordId, Option<i64>)>,
    pub fetched: u64,
    pub pages: u64,
    pub duplicates: u64,
    pub outside: u64,
}

impl WindowOutcome {
    pub fn written(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }
}

/// `20240101T000000Z`: compact, sortable, file-name safe.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Partitions a window's records can land in: each UTC day it touches, and `dt=unknown`.
pub fn partitions_of(w: &Window) -> Vec<String> {
    let mut out = Vec::new();
    let mut d = w.start.date_naive();
    let last = (w.end - chrono::Duration::microseconds(1)).date_naive();
    while d <= last {
        out.push(format!("dt={}", d.format("%Y-%m-%d")));
        d = d.succ_opt().expect("date in range");
    }
    out.push("dt=unknown".into());
    out
}

/// Fetches, writes and publishes one window; returns what its commit must record.
pub async fn export_window(deps: &Deps<'_>, stream: &StreamSpec, w: Window, cancel: &CancellationToken) -> Result<WindowOutcome, JobError> {
    let cp = deps.checkpoint;
    let generation = cp.next_generation(&stream.id, &w)?;
    let prefix = format!("{}-{}-{}-g{generation}", stream.id, stamp(w.start), stamp(w.end));
    let partitions = partitions_of(&w);
    cp.begin_attempt(&stream.id, &prefix, &partitions)?;
    let removed = deps.store.remove_prefix(&partitions, &prefix).await?;
    if removed > 0 {
        tracing::info!(prefix, removed, "removed files of an earlier uncommitted attempt");
    }
    let mut dedup = Deduper::new(cp.known_ids(&stream.id, &w)?);
    let staging = deps.store.stager();
    let mut writer = WindowWriter::new(deps.sink.clone(), prefix.clone(), Utc::now(), staging);
    let mut out = WindowOutcome {
        stream_id: stream.id.clone(),
        window: w,
        generation,
        prefix: prefix.clone(),
        files: vec![],
        new_ids: vec![],
        fetched: 0,
        pages: 0,
        duplicates: 0,
        outside: 0,
    };
    let mut url = deps.api.first_url(stream, w.start, w.end);
    loop {
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let page = match deps.api.fetch_page(&url, cancel).await {
            Err(ApiError::Cancelled) => return Err(JobError::Cancelled),
            other => other?,
        };
        out.pages += 1;
        out.fetched += page.data.len() as u64;
        for rec in &page.data {
            let time = match place(rec, &w) {
                Placement::In(t) => Some(t),
                // A server with inclusive bounds also returns the next window's first instant.
                Placement::Out => {
                    out.outside += 1;
                    continue;
                }
                Placement::Unplaced => None,
            };
            let (id, new) = dedup.admit(rec);
            if !new {
                out.duplicates += 1;
                continue;
            }
            writer.write(OutRecord { value: rec, id: &id, time })?;
            out.new_ids.push((id, time.map(us)));
        }
        match page.next_link {
            Some(next) => url = next,
            None => break,
        }
    }
    let files = writer.finish()?;
    let mut published = 0;
    let result = async {
        for f in &files {
            deps.store.publish(&f.temp_path, &f.rel_path).await?;
            published += 1;
        }
        Ok::<(), StoreError>(())
    }
    .await;
    if let Err(e) = result {
        for f in &files[published..] {
            let _ = std::fs::remove_file(&f.temp_path);
        }
        return Err(e.into());
    }
    out.files = files
        .into_iter()
        .map(|f| FileRow {
            path: f.rel_path,
            stream_id: stream.id.clone(),
            partition: f.partition,
            rows: f.rows,
            bytes: f.bytes,
            sha256: f.sha256,
        })
        .collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_instant;

    #[test]
    fn partitions_cover_each_touched_day() {
        let w = Window {
            start: parse_instant("2024-01-01T12:00:00Z").unwrap(),
            end: parse_instant("2024-01-03T00:00:00Z").unwrap(),
        };
        assert_eq!(partitions_of(&w), vec!["dt=2024-01-01", "dt=2024-01-02", "dt=unknown"]);
    }
}
