//! One window end to end: fetch every page → place and deduplicate → write → publish.
//! The commit is the exporter's, so that windows fetched concurrently commit in order.
//!
//! Before writing, the attempt is recorded as pending (with the partitions it may touch) under
//! a name no other attempt uses (a fresh nonce), so start-up recovery can find and delete its
//! files if it never commits, and no file another attempt published is ever written again.
//! Cancellation is checked at page boundaries only.

mod gate;

use std::collections::HashSet;

pub use gate::{MemoryGate, Ticket};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::api::{ApiClient, ApiError};
use crate::checkpoint::{Checkpoint, CheckpointError, CommitMarker, FileRow, Side};
use crate::crashpoint;
use crate::dedup::{Deduper, ID_SCHEME};
use crate::model::page_index::with_record;
use crate::model::{OnInvalidRecord, RecordId, StreamSpec, Window, attempt_prefix, marker_path, partitions_of};
use crate::sink::{SinkError, SinkOptions, WindowWriter, readback};
use crate::store::{Store, StoreError};

/// Why a window (and so the pass that drives it) failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Fetching a page failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The credential could not be loaded (e.g. an unusable certificate).
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// A step that cannot fail with valid data did (a bug): nothing of the window is committed.
    #[error("internal error: {0}")]
    Internal(String),
    /// Writing a file failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Opening, publishing to or cleaning up the output failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint database failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Cancelled (SIGINT/SIGTERM) before the work was done.
    #[error("interrupted; every committed window is consistent and the next run resumes after it")]
    Cancelled,
    /// `export.run_deadline` passed before the work was done.
    #[error("export.run_deadline reached; committed windows are kept and the next run resumes after them")]
    Deadline,
    /// The API returned a record whose `actionTime` lies far outside the range asked for:
    /// the server ignores the window.
    #[error(
        "the API returned a record with actionTime {time} for the query {start} .. {end}: the server does not honour startTime/endTime, so no window can be read exactly (nothing of this window was committed)"
    )]
    OutOfRange {
        /// Start of the window requested.
        start: DateTime<Utc>,
        /// End of the window requested.
        end: DateTime<Utc>,
        /// The offending record's `actionTime`.
        time: DateTime<Utc>,
    },
    /// `export.format` differs from the format of the files the output already holds.
    #[error(
        "export.format is {configured}, but the output already holds {existing} files: switching formats into one output would split the table its readers see; keep {existing}, or start a new export.output with a new state.path"
    )]
    FormatSwitch {
        /// The format the manifest holds.
        existing: String,
        /// `export.format`.
        configured: String,
    },
    /// The API sent a `nextLink` already followed while paging this window.
    #[error("the API sent nextLink {0} twice while paging one window; refusing to loop")]
    RepeatedNextLink(String),
    /// A record holds text a strict JSON reader refuses, and `export.on_invalid_record` is `fail`.
    #[error(
        "the API sent a record holding {what} (a strict JSON reader refuses it) on page {page} of the window {start} .. {end}, at byte {offset} of the page: nothing of this window was committed; set export.on_invalid_record = \"quarantine\" to keep such records in _quarantine/ and go on"
    )]
    InvalidRecord {
        /// Start of the window.
        start: DateTime<Utc>,
        /// End of the window.
        end: DateTime<Utc>,
        /// The page of the window's read (1-based).
        page: u64,
        /// The record's byte offset in the page body.
        offset: u64,
        /// What a strict reader refuses.
        what: &'static str,
    },
    /// `export.format = "delta"`, but the output already holds data files and no table.
    #[error(
        "export.format is delta, but export.output {output} already holds data files and no _delta_log/: a table there would not contain them; make them a table in place with `aos-audit-export convert` (docs/delta.md), or write the table to a new export.output with a new state.path"
    )]
    NotATable {
        /// `export.output`.
        output: String,
    },
    /// `convert`: a file the manifest lists is not in the output as recorded.
    #[error("cannot convert export.output to a Delta table: {path}: {message}; nothing was converted (run `verify` for every such file)")]
    NotConvertible {
        /// The file, relative to the output root.
        path: String,
        /// What differs.
        message: String,
    },
    /// Delta mode: another writer added a file that can hold records of the window after its
    /// deduplication read the table, so the window's commit was refused.
    #[error(
        "another writer added {path} to the Delta table while this window was read; nothing of the window was committed (two deployments writing one table?)"
    )]
    TableChanged {
        /// The file, relative to the table root.
        path: String,
    },
    /// A committed file overlapping the window could not be read back or its record ids parsed.
    #[error("cannot rebuild the record ids of committed file {path} from the lake (run `verify`): {message}")]
    Rebuild {
        /// The file's path relative to the output root.
        path: String,
        /// Why it could not be read or parsed.
        message: String,
    },
}

/// What the adapters a window needs.
pub struct Deps<'a> {
    /// Fetches the window's pages.
    pub api: &'a ApiClient,
    /// Where the window's files are published.
    pub store: &'a Store,
    /// Generations, pending attempts and the manifest of committed files.
    pub checkpoint: &'a Checkpoint,
    /// Format, compression and file size limits of the output.
    pub sink: &'a SinkOptions,
    /// Back-pressure on the dedup memory of the windows in flight.
    pub gate: &'a MemoryGate,
    /// `export.on_invalid_record`.
    pub on_invalid: OnInvalidRecord,
}

/// A window whose files are published and which awaits its commit.
#[derive(Debug)]
pub struct WindowOutcome {
    /// The stream the window belongs to.
    pub stream_id: String,
    /// The window read.
    pub window: Window,
    /// Which read of this window it was (0 for the first); part of the file names.
    pub generation: u32,
    /// The attempt prefix naming every file of this read.
    pub prefix: String,
    /// The key of the window's commit marker, written to the lake after its files.
    pub marker: String,
    /// The published files, as the manifest records them.
    pub files: Vec<FileRow>,
    /// Records received from the API, including skipped ones.
    pub fetched: u64,
    /// Records skipped because their `actionTime` lies just outside the window (a
    /// neighbour's, returned by the padded query or a server comparing at the second).
    pub out_of_range: u64,
    /// Pages fetched.
    pub pages: u64,
    /// Records skipped because their id is already in a committed file.
    pub duplicates: u64,
    /// Records without a usable `actionTime` the read returned (written or not).
    pub unplaced: u64,
    /// New records set aside in the quarantine (`export.on_invalid_record = "quarantine"`).
    pub quarantined: u64,
}

/// The ids of everything committed that a read of `w` can return again, read back from the
/// lake: the `_record_id`s of every committed file (of any stream) whose window overlaps `w`.
/// Whatever `window`, `lag` or `lookback` those files were written with, they hold every
/// record of the range, so no re-read (look-back, reconcile, a raised look-back) can write a
/// record twice. Ids of records outside `w` are harmless extras: an id hashes `actionTime`.
async fn known_ids(deps: &Deps<'_>, w: &Window) -> Result<Deduper, ExportError> {
    let mut known = Vec::new();
    let mut unplaced = Vec::new();
    let mut neighbours: [Vec<RecordId>; 2] = Default::default();
    let mut straddling = Vec::new();
    let mut schemes = Vec::new();
    for (path, scheme, side, fw) in deps.checkpoint.files_overlapping(w)? {
        if scheme != ID_SCHEME && !schemes.contains(&scheme) {
            schemes.push(scheme);
        }
        let ids = read_ids(deps, &path).await?;
        match side {
            Side::Overlap if is_unknown_partition(&path) => {
                if fw.start < w.start || fw.end > w.end {
                    straddling.extend(ids.iter().copied());
                }
                unplaced.extend(ids)
            }
            Side::Overlap => known.extend(ids),
            Side::Before => neighbours[0].extend(ids),
            Side::After => neighbours[1].extend(ids),
        }
    }
    let mut dedup = Deduper::new(known, &schemes);
    dedup.add_unplaced(unplaced);
    dedup.add_straddling(straddling);
    for (side, ids) in neighbours.into_iter().enumerate() {
        dedup.add_neighbour(side, ids);
    }
    Ok(dedup)
}

/// The `_record_id`s of a committed file, read back from the lake.
async fn read_ids(deps: &Deps<'_>, path: &str) -> Result<Vec<RecordId>, ExportError> {
    let rebuild = |e: StoreError| ExportError::Rebuild {
        path: path.to_string(),
        message: e.to_string(),
    };
    let source = match deps.store.open_local(path) {
        Some(f) => readback::Source::File(f.map_err(rebuild)?),
        None => readback::Source::Bytes(deps.store.read(path).await.map_err(rebuild)?),
    };
    readback::record_ids_from(path, source).map_err(|e| ExportError::Rebuild {
        path: path.to_string(),
        message: e.message,
    })
}

/// Whether a file is in `dt=unknown` (records without a usable `actionTime`), data or quarantine.
pub fn is_unknown_partition(path: &str) -> bool {
    let path = path
        .strip_prefix(crate::model::QUARANTINE_DIR)
        .and_then(|p| p.strip_prefix('/'))
        .unwrap_or(path);
    path.starts_with(crate::model::UNKNOWN_PARTITION)
}

/// The marker of an attempt: a begin marker (`begun_only`), unless the caller says otherwise.
fn marker_of(stream: &StreamSpec, w: &Window, generation: u32, prefix: &str, files: Vec<FileRow>, partitions: &[String]) -> CommitMarker {
    CommitMarker {
        stream_id: stream.id.clone(),
        product_types: stream.product_types.clone(),
        geo_locations: stream.geo_locations.clone(),
        start: w.start,
        end: w.end,
        generation,
        prefix: prefix.to_string(),
        id_scheme: ID_SCHEME,
        files,
        begun_only: true,
        partitions: partitions.to_vec(),
    }
}

mod progress;
mod unplaced;
use progress::Progress;

/// Runs `f` on a blocking thread: a panic there is resumed here, and a runtime shutting down
/// reads as cancellation.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ExportError> + Send + 'static) -> Result<T, ExportError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(ExportError::Cancelled),
    }
}

/// How long a window waits at `export.dedup_memory` before it finishes its open files.
const GATE_PATIENCE: std::time::Duration = std::time::Duration::from_millis(250);

/// Fetches, writes and publishes one window; returns what its commit must record.
///
/// `ordered`: every window before this one in its pass was committed when it began. If not,
/// and the read met records without a usable `actionTime` (whose dedup needs the neighbours'
/// files), the attempt keeps its begin marker: it must not be taken as committed, since the
/// caller reads it again.
pub async fn export_window(
    deps: &Deps<'_>,
    stream: &StreamSpec,
    w: Window,
    seq: u64,
    ordered: bool,
    cancel: &CancellationToken,
) -> Result<WindowOutcome, ExportError> {
    let ticket = deps.gate.enter(seq);
    let cp = deps.checkpoint;
    let generation = cp.next_generation(&stream.id, &w)?;
    let prefix = attempt_prefix(&stream.id, &w, generation, rand::random());
    // Where the attempt may write: the window's days, and their quarantine folders.
    let mut partitions = partitions_of(&w);
    partitions.extend(partitions_of(&w).iter().map(|p| format!("{}/{p}", crate::model::QUARANTINE_DIR)));
    // The prefix is new (fresh nonce): no file carries it yet, so there is nothing to clear.
    // An earlier crashed attempt's files are deleted by start-up recovery (its pending row).
    let marker = cp.begin_attempt(&stream.id, &prefix, &partitions)?;
    // The lake learns of the attempt before any of its files: a state that loses this pending
    // row (lost, or restored from an older copy) finds the begin marker and deletes whatever
    // the attempt published.
    let begin = marker_of(stream, &w, generation, &prefix, vec![], &partitions);
    let body = serde_json::to_vec(&begin).map_err(|e| ExportError::Internal(format!("cannot serialize a marker: {e}")))?;
    deps.store.put_small(&marker_path(&marker), body).await?;
    let dedup = known_ids(deps, &w).await?;
    // The ids read back from the lake count too: a re-read waits its turn before fetching.
    ticket.hold(dedup.memory_bytes());
    if !ticket.room(cancel).await {
        return Err(ExportError::Cancelled);
    }
    let staging = deps.store.stager();
    let writer = WindowWriter::new(deps.sink.clone(), prefix.clone(), Utc::now(), staging);
    let mut out = WindowOutcome {
        stream_id: stream.id.clone(),
        window: w,
        generation,
        prefix: prefix.clone(),
        marker,
        files: vec![],
        fetched: 0,
        out_of_range: 0,
        pages: 0,
        duplicates: 0,
        unplaced: 0,
        quarantined: 0,
    };
    let mut state = Progress::new(dedup, writer, deps.on_invalid);
    let fetch = |url: Url| async move {
        if cancel.is_cancelled() {
            return Err(ExportError::Cancelled);
        }
        let page = match deps.api.fetch_page(&url, cancel).await {
            Err(ApiError::Cancelled) => return Err(ExportError::Cancelled),
            other => other?,
        };
        crashpoint::hit("fetch");
        Ok(page)
    };
    let q = w.query();
    let mut page = fetch(deps.api.first_url(stream, q.start, q.end)).await?;
    let mut followed = HashSet::new();
    loop {
        out.pages += 1;
        out.fetched += page.len() as u64;
        let next_url = page.next_link.clone();
        if let Some(next) = &next_url
            && !followed.insert(next.to_string())
        {
            return Err(ExportError::RepeatedNextLink(next.to_string()));
        }
        // Over `export.dedup_memory`, younger windows wait here for the oldest. A window
        // whose wait lasts finishes its open files first: their encoders (a compressor per
        // column) are the larger part of what it holds, and it may wait for long. A short
        // wait closes nothing, so a window near the limit does not cut a part per page.
        if next_url.is_some() && ticket.must_wait() {
            match tokio::time::timeout(GATE_PATIENCE, ticket.room(cancel)).await {
                Ok(true) => {}
                Ok(false) => return Err(ExportError::Cancelled),
                Err(_) => {
                    let (n, s) = blocking(move || Ok(state.writer.finish_open().map(|n| (n, state))?)).await?;
                    state = s;
                    tracing::debug!(files = n, "finished the open files before waiting at export.dedup_memory");
                    if !ticket.room(cancel).await {
                        return Err(ExportError::Cancelled);
                    }
                }
            }
        }
        // Encode this page on a blocking thread while the next one is fetched: CPU and
        // network overlap, and concurrent windows encode on every core. The running state
        // moves to the thread and back; if this future is dropped, the thread finishes the
        // page and drops the writer, which deletes its staging files.
        let work = blocking(move || {
            let result = state.process(&page, &w);
            crashpoint::hit("encode");
            result.map(|()| state)
        });
        let next = async {
            match next_url {
                Some(url) => fetch(url).await.map(Some),
                None => Ok(None),
            }
        };
        let (done, next) = futures::future::try_join(work, next).await?;
        state = done;
        ticket.hold(state.dedup.memory_bytes());
        match next {
            Some(p) => page = p,
            None => break,
        }
    }
    if !state.deferred.is_empty() {
        // Records without `actionTime` that a neighbour's or a straddling window's files hold
        // copies of: how many of them are new, only counting what the API serves where those
        // windows meet this one says (see `unplaced`).
        let counter = unplaced::Counter {
            deps,
            stream,
            fetch: &fetch,
        };
        let deferred = std::mem::take(&mut state.deferred);
        let (mut chained, mut banded) = (HashSet::new(), HashSet::new());
        for d in &deferred {
            if state.dedup.straddled(d.content) {
                chained.insert(d.content);
            } else {
                banded.insert(d.content);
            }
        }
        let chained = counter.chained_new(&w, &chained, &mut state.dedup).await?;
        let band = match banded.is_empty() {
            true => Default::default(),
            false => counter.bands(&w, &mut state.dedup, &banded).await?,
        };
        for d in deferred {
            let new = match chained.get(&d.content) {
                // A chain not counted (too long, an older id scheme): a copy written earlier
                // by a chain may stand for one of these, which only the chain would see, so
                // none is written (a late one may be missed; none is written twice).
                None if state.dedup.straddled(d.content) => false,
                // Past the copies the windows inside this one hold (so no window ever holds
                // more copies than its own query serves, whatever becomes of the straddling
                // ones), as many as the chain lacks.
                Some(n) => {
                    let inside = state.dedup.held_inside(d.content);
                    d.occurrence >= inside && d.occurrence - inside < *n
                }
                None => {
                    let counts = [0, 1].map(|side| u32::try_from(band[side].get(&d.content).copied().unwrap_or(0)).unwrap_or(0));
                    state.dedup.resolve(d.content, d.occurrence, counts)
                }
            };
            if !new {
                state.duplicates += 1;
                continue;
            }
            with_record(&d.raw, |rec| state.write(rec, &d.id, None, d.invalid, &w))
                .map_err(|e| ExportError::Internal(format!("a record without actionTime could not be read again: {e:?}")))??;
        }
    }
    let Progress {
        writer,
        out_of_range,
        duplicates,
        unplaced,
        quarantined,
        ..
    } = state;
    out.quarantined = quarantined;
    out.out_of_range = out_of_range;
    out.duplicates = duplicates;
    out.unplaced = unplaced;
    let files = writer.finish()?;
    crashpoint::hit("stage");
    let mut published = 0;
    let result = async {
        for f in &files {
            deps.store.publish(&f.temp_path, &f.rel_path).await?;
            crashpoint::hit("publish");
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
    // The lake's own record that this window is complete: written after every file is
    // published, so a state that is lost or older than the lake learns it from here.
    let m = CommitMarker {
        begun_only: false,
        ..marker_of(stream, &w, generation, &prefix, out.files.clone(), &partitions)
    };
    if ordered || out.unplaced == 0 {
        let body = serde_json::to_vec(&m).map_err(|e| ExportError::Internal(format!("cannot serialize a marker: {e}")))?;
        deps.store.put_small(&marker_path(&out.marker), body).await?;
    }
    crashpoint::hit("marker");
    Ok(out)
}
