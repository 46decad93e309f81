//! One window end to end: fetch every page → place and deduplicate → write → publish.
//! The commit is the exporter's, so that windows fetched concurrently commit in order.
//!
//! Before writing, the attempt is recorded as pending (with the partitions it may touch) and any
//! file left under its name by an earlier crashed attempt is deleted; so a window re-run after a
//! crash overwrites, never duplicates. Cancellation is checked at page boundaries only.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, ApiError};
use crate::checkpoint::{Checkpoint, CheckpointError, FileRow};
use crate::dedup::{Deduper, Placement, place};
use crate::model::{RecordId, StreamSpec, Window, attempt_prefix, partitions_of};
use crate::sink::{OutRecord, SinkError, SinkOptions, WindowWriter};
use crate::store::{Store, StoreError};

/// Why a window (and so the pass that drives it) failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
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
    pub new_ids: Vec<(RecordId, Option<DateTime<Utc>>)>,
    pub fetched: u64,
    pub pages: u64,
    pub duplicates: u64,
}

/// Fetches, writes and publishes one window; returns what its commit must record.
pub async fn export_window(
    deps: &Deps<'_>,
    stream: &StreamSpec,
    w: Window,
    cancel: &CancellationToken,
) -> Result<WindowOutcome, ExportError> {
    let cp = deps.checkpoint;
    let generation = cp.next_generation(&stream.id, &w)?;
    let prefix = attempt_prefix(&stream.id, &w, generation);
    let partitions = partitions_of(&w);
    cp.begin_attempt(&stream.id, &prefix, &partitions)?;
    let removed = deps.store.remove_attempt(&partitions, &prefix).await?;
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
    };
    let mut url = deps.api.first_url(stream, w.start, w.end);
    loop {
        if cancel.is_cancelled() {
            return Err(ExportError::Cancelled);
        }
        let page = match deps.api.fetch_page(&url, cancel).await {
            Err(ApiError::Cancelled) => return Err(ExportError::Cancelled),
            other => other?,
        };
        out.pages += 1;
        out.fetched += page.data.len() as u64;
        for rec in &page.data {
            let time = match place(rec, &w) {
                Placement::In(t) => Some(t),
                // A server with inclusive bounds also returns the next window's first instant.
                Placement::Out => continue,
                Placement::Unplaced => None,
            };
            let (id, new) = dedup.admit(rec);
            if !new {
                out.duplicates += 1;
                continue;
            }
            writer.write(OutRecord { value: rec, id: &id, time })?;
            out.new_ids.push((id, time));
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
