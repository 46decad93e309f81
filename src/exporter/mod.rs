//! The exporter: owns the adapters of one configuration and drives windows through
//! [`crate::window`] for `run` (coverage gaps up to now − lag, plus the look-back) and others.
//!
//! Windows are fetched up to `export.concurrency` at once but committed strictly in order, so
//! the watermark only ever covers a contiguous prefix of committed windows. On start, attempts
//! left pending by a crash are cleaned up before anything else is written.

use std::sync::{Arc, atomic::Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::auth::TokenProvider;
use crate::checkpoint::{Checkpoint, WindowCommit};
use crate::config::Settings;
use crate::dedup::ID_SCHEME;
use crate::metrics::Metrics;
use crate::model::{Range, StreamSpec, Window};
use crate::planner;
use crate::store::Store;
use crate::window::{self, Deps, ExportError};

mod adopt;
mod bar;
mod compact;
mod convert;
mod repair;
mod table;
pub use adopt::Adopted;
pub use repair::SET_ASIDE_DIR;

/// Totals of one run (printed, recorded in `runs`, exported as metrics).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Windows committed.
    pub windows: u64,
    /// API pages fetched for the committed windows.
    pub pages: u64,
    /// Records received from the API for the committed windows.
    pub fetched: u64,
    /// Records written to files.
    pub written: u64,
    /// Records skipped as already exported.
    pub duplicates: u64,
    /// New records set aside in `_quarantine/` (`export.on_invalid_record`).
    pub quarantined: u64,
    /// Files published.
    pub files: u64,
    /// Wall-clock duration of the run, in seconds.
    pub seconds: f64,
    /// What each committed window wrote (reconcile reports the non-zero ones).
    #[serde(skip)]
    pub per_window: Vec<WindowFinding>,
}

/// What one committed window wrote.
#[derive(Debug, Clone)]
pub struct WindowFinding {
    /// Stream id.
    pub stream: String,
    /// Window start.
    pub start: DateTime<Utc>,
    /// Window end.
    pub end: DateTime<Utc>,
    /// Records the lake lacked and that were written.
    pub written: u64,
}

/// Everything a run needs, built once from [`Settings`].
pub struct Exporter {
    settings: Settings,
    api: ApiClient,
    store: Store,
    checkpoint: Checkpoint,
    metrics: Arc<Metrics>,
    /// Id of the run in progress (recorded on each window it commits).
    current_run: std::sync::atomic::AtomicI64,
    /// `export.dedup_memory` across the windows in flight.
    gate: window::MemoryGate,
    /// The next window's place in commit order.
    window_seq: std::sync::atomic::AtomicU64,
    /// Delta mode: the table at the output root.
    table: Option<crate::store::delta::DeltaTable>,
    /// Windows read again as another writer changed the table.
    table_retries: std::sync::atomic::AtomicU32,
}

impl Exporter {
    /// Loads the credential, opens the output and the state (taking its lock), and cleans up
    /// after any crashed attempt. Fails before writing anything if a setting is unusable.
    pub async fn new(settings: Settings) -> Result<Self, ExportError> {
        let http = crate::api::http_client(&settings.api).map_err(|e| ExportError::Http(e.to_string()))?;
        let metrics = Arc::new(Metrics::new());
        let tokens = Arc::new(TokenProvider::new(settings.auth.clone(), http.clone())?);
        let api = ApiClient::new(settings.api.clone(), http, tokens, metrics.clone());
        let store = Store::open(&settings.export.output, &settings.spool_path())?;
        let checkpoint = Checkpoint::open(&settings.state_path)?;
        store.check()?;
        let table = table::open(&store, &checkpoint, settings.export.delta).await?;
        let gate = window::MemoryGate::new(settings.export.dedup_memory);
        let ex = Exporter {
            table,
            table_retries: Default::default(),
            gate,
            window_seq: Default::default(),
            settings,
            api,
            store,
            checkpoint,
            metrics,
            current_run: Default::default(),
        };
        ex.check_format()?;
        ex.recover().await?;
        ex.adopt_lake().await?;
        ex.check_format()?;
        for s in &ex.settings.api.streams {
            ex.checkpoint.ensure_stream(s)?;
        }
        Ok(ex)
    }

    fn deps(&self) -> Deps<'_> {
        Deps {
            api: &self.api,
            store: &self.store,
            checkpoint: &self.checkpoint,
            sink: &self.settings.export.sink,
            gate: &self.gate,
            on_invalid: self.settings.export.on_invalid_record,
        }
    }

    /// The validated settings this exporter runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The state (for summaries and reports).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The output.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The output, as the user named it.
    pub fn output(&self) -> String {
        self.store.describe()
    }

    /// The process's operator signals.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Refreshes the per-stream lag gauges from the state.
    pub fn update_lag_metrics(&self, now: DateTime<Utc>) {
        for st in &self.settings.api.streams {
            if let Ok(Some(w)) = self.checkpoint.exported_to(&st.id) {
                self.metrics.stream_lag(&st.id, (now - w).num_seconds());
            }
        }
    }

    /// One export pass for every stream: from its watermark (minus look-back) to now − lag.
    pub async fn run_once(&self, now: DateTime<Utc>, cancel: &CancellationToken) -> Result<RunSummary, ExportError> {
        self.recorded("run", cancel, |cancel| async move {
            let e = &self.settings.export;
            let until = planner::truncate_to_second(now - e.lag);
            let mut total = RunSummary::default();
            for stream in &self.settings.api.streams {
                // A relative `export.start` (e.g. 30d) moves: gaps count from the earliest
                // committed range (a stalled stream resumes), or what a repair uncovered.
                let covered = self.checkpoint.committed_ranges(&stream.id, DateTime::UNIX_EPOCH, until)?;
                let start = covered.iter().map(|r| r.0).min().map_or(e.start, |c| c.min(e.start));
                let start = self.repaired_from(&stream.id)?.map_or(start, |r| r.min(start));
                let newest = covered.iter().map(|r| r.1).filter(|e| *e <= until).max().unwrap_or(until);
                let held = self.checkpoint.unplaced_windows(newest - e.lookback, until)?;
                let ranges = planner::widen_to_windows(planner::run_ranges(&covered, start, until, e.lookback), &held);
                if ranges.is_empty() {
                    tracing::info!(stream = %stream.id, "nothing final to export yet (now − lag is not past the covered range)");
                    continue;
                }
                let windows: Vec<Window> = ranges.iter().flat_map(|(a, b)| planner::split(*a, *b, e.window)).collect();
                tracing::info!(stream = %stream.id, ranges = ranges.len(), windows = windows.len(), "run");
                self.drive(stream, windows, &cancel, &mut total, None).await?;
            }
            Ok(total)
        })
        .await
    }

    /// Re-reads `[from, to)` (to clamped to now − lag), committed or not, and writes only what
    /// the lake lacks; each window's finding is in the summary. Safe to repeat and to interrupt.
    pub async fn reconcile(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<RunSummary, ExportError> {
        // A reconcile stopped before it finished (a deadline, a signal, a kill) resumes: what
        // was read again since it began is not read a third time.
        let result = self
            .over_range("reconcile", from, to, now, cancel, |stream, from, to| {
                let since = self.checkpoint.reconcile_begun(&stream.id)?;
                let done = self.checkpoint.ranges_reconciled_since(&stream.id, from, to, since)?;
                Ok(planner::gaps(from, to, &done))
            })
            .await;
        if !matches!(result, Err(ExportError::Deadline | ExportError::Cancelled)) {
            for s in &self.settings.api.streams {
                self.checkpoint.reconcile_done(&s.id)?;
            }
        }
        result
    }

    /// Exports `[from, to)` (to clamped to now − lag). Windows already committed are skipped,
    /// so an interrupted backfill resumes and a finished one makes no API call.
    pub async fn backfill(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<RunSummary, ExportError> {
        self.over_range("backfill", from, to, now, cancel, |stream, from, to| {
            let covered = self.checkpoint.committed_ranges(&stream.id, from, to)?;
            Ok(planner::gaps(from, to, &covered))
        })
        .await
    }

    /// A pass over `[from, to)` (to clamped to now − lag), every stream: `plan`'s ranges in `export.window`s.
    async fn over_range<P>(
        &self,
        command: &'static str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
        plan: P,
    ) -> Result<RunSummary, ExportError>
    where
        P: Fn(&StreamSpec, DateTime<Utc>, DateTime<Utc>) -> Result<Vec<Range>, ExportError>,
    {
        self.recorded(command, cancel, |cancel| async move {
            let e = &self.settings.export;
            let to = planner::truncate_to_second(planner::clamp_end(to, now, e.lag)).max(from);
            let mut total = RunSummary::default();
            for stream in &self.settings.api.streams {
                let windows: Vec<Window> = plan(stream, from, to)?
                    .into_iter()
                    .flat_map(|(a, b)| planner::split(a, b, e.window))
                    .collect();
                tracing::info!(stream = %stream.id, %from, %to, windows = windows.len(), command, "pass");
                let bar = bar::progress_bar(command, &stream.id, windows.len());
                self.drive(stream, windows, &cancel, &mut total, bar.as_ref()).await?;
            }
            Ok(total)
        })
        .await
    }

    /// Records the run in the state and applies the run deadline.
    async fn recorded<'a, F, Fut>(&'a self, command: &str, cancel: &CancellationToken, body: F) -> Result<RunSummary, ExportError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<RunSummary, ExportError>> + 'a,
    {
        let started = Instant::now();
        let run_id = self.checkpoint.start_run(command)?;
        self.current_run.store(run_id, Ordering::Relaxed);
        let inner = cancel.child_token();
        let deadline_hit = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let timer = self.settings.export.run_deadline.map(|d| {
            let (t, hit) = (inner.clone(), deadline_hit.clone());
            tokio::spawn(async move {
                tokio::time::sleep(d).await;
                hit.store(true, Ordering::SeqCst);
                t.cancel();
            })
        });
        // Every event of the run carries its command and run id (JSON logs: under `span`).
        let span = tracing::info_span!("run", command, run_id);
        let mut result = tracing::Instrument::instrument(body(inner), span).await;
        if let Some(t) = timer {
            t.abort();
        }
        if matches!(result, Err(ExportError::Cancelled)) && deadline_hit.load(Ordering::SeqCst) {
            result = Err(ExportError::Deadline);
        }
        let (status, err) = match &result {
            Ok(_) => ("ok", None),
            Err(ExportError::Cancelled) => ("interrupted", None),
            Err(ExportError::Deadline) => ("deadline", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        self.finish_run(run_id, status, err.as_deref())?;
        let failure = result.as_ref().err().map(|e| crate::error::cause(crate::error::exit_code(e)));
        self.metrics.pass(command, failure, started.elapsed().as_secs_f64());
        self.update_lag_metrics(Utc::now());
        result.map(|mut s| {
            s.seconds = started.elapsed().as_secs_f64();
            s
        })
    }

    /// Fetches windows concurrently, commits them in order.
    async fn drive(
        &self,
        stream: &StreamSpec,
        windows: Vec<Window>,
        cancel: &CancellationToken,
        total: &mut RunSummary,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<(), ExportError> {
        self.table_retries.store(0, Ordering::SeqCst);
        self.drive_with(stream, windows, cancel, total, bar, self.settings.export.concurrency)
            .await
    }

    /// Stops the windows still in flight and waits for them (an upload under way completes
    /// rather than landing after the clean-up; windows not begun yet do not begin), then
    /// deletes every uncommitted attempt.
    async fn stop_in_flight<S: futures::Stream + Unpin>(&self, inner: &CancellationToken, mut results: S) -> Result<(), ExportError> {
        inner.cancel();
        while results.next().await.is_some() {}
        // Attempts of this run only: none committed anywhere, so all are deleted.
        self.clean_pending(false).await
    }

    /// [`Exporter::stop_in_flight`] on the way out of a failure: a failed clean-up is left to
    /// the next start (recovery), and the first error is the one reported.
    async fn stop_after_failure<S: futures::Stream + Unpin>(&self, inner: &CancellationToken, results: S) {
        if let Err(re) = self.stop_in_flight(inner, results).await {
            tracing::warn!(error = %re, "could not clean up uncommitted windows; the next run will");
        }
    }

    /// [`Exporter::drive`] with `concurrency` windows in flight.
    async fn drive_with(
        &self,
        stream: &StreamSpec,
        windows: Vec<Window>,
        cancel: &CancellationToken,
        total: &mut RunSummary,
        bar: Option<&indicatif::ProgressBar>,
        concurrency: usize,
    ) -> Result<(), ExportError> {
        let deps = self.deps();
        let deps = &deps;
        let e = &self.settings.export;
        let (total_windows, started) = (windows.len(), Instant::now());
        let mut done = 0usize;
        // Commit order, across passes and streams: the gate lets the oldest read on.
        let base = self
            .window_seq
            .fetch_add(windows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        // Windows in flight stop (at a page boundary) when this one is cancelled, so a failure
        // can wait for them before it cleans up.
        let inner = &cancel.child_token();
        // How many windows of this pass are committed: a window that began before all its
        // predecessors were committed did not see their files.
        let committed_here = &std::sync::atomic::AtomicUsize::new(0);
        let mut results = Box::pin(
            futures::stream::iter(windows.clone().into_iter().enumerate().map(|(i, w)| async move {
                let saw = committed_here.load(Ordering::SeqCst);
                if inner.is_cancelled() {
                    return (i, saw, Err(ExportError::Cancelled));
                }
                (
                    i,
                    saw,
                    window::export_window(deps, stream, w, base + i as u64, saw == i, inner).await,
                )
            }))
            .buffered(concurrency),
        );
        while let Some((i, saw, res)) = results.next().await {
            // A record without a usable `actionTime` near a bound comes back from both
            // neighbours (the padded queries overlap), and only the lake's files tell whether
            // the neighbour wrote it. A window that read such records while a predecessor was
            // still in flight did not see its files: the windows from it on are read again, one
            // at a time, now that every predecessor is committed. Rare, and exact.
            if let Ok(o) = &res
                && o.unplaced > 0
                && saw < i
            {
                tracing::info!(start = %o.window.start, "records without actionTime: reading this window again after its predecessors' commit");
                self.stop_in_flight(inner, results).await?;
                Box::pin(self.drive_with(stream, windows[i..=i].to_vec(), cancel, total, bar, 1)).await?;
                let rest = windows[i + 1..].to_vec();
                return Box::pin(self.drive_with(stream, rest, cancel, total, bar, concurrency)).await;
            }
            let o = match res {
                Ok(o) => o,
                Err(e) => {
                    // Later windows may be published but, with this one missing, can never
                    // commit in order: stop them and delete their files now rather than leave
                    // them visible until the next run.
                    self.stop_after_failure(inner, results).await;
                    return Err(e);
                }
            };
            // Nothing between publishing (inside export_window) and this commit checks for
            // cancellation: a published window is committed whenever its predecessors are.
            let wm = self.checkpoint.watermark(&stream.id)?;
            let contiguous = match wm {
                Some(wm) if o.window.start > wm => {
                    // A later window continues the prefix only if what lies between is committed.
                    let covered = self.checkpoint.committed_ranges(&stream.id, wm, o.window.start)?;
                    planner::gaps(wm, o.window.start, &covered).is_empty()
                }
                Some(_) => true,
                // The first commit moves the watermark only if nothing before it is missing.
                None => o.window.start <= e.start,
            };
            let advance = contiguous.then_some(o.window.end);
            match self.table_step(&o).await {
                Ok(false) => {}
                Ok(true) => {
                    self.stop_in_flight(inner, results).await?;
                    self.adopt_lake().await?;
                    return Box::pin(self.drive_with(stream, windows[i..].to_vec(), cancel, total, bar, concurrency)).await;
                }
                Err(e) => {
                    self.stop_after_failure(inner, results).await;
                    return Err(e);
                }
            }
            let committed = self.checkpoint.commit_window(&WindowCommit {
                stream_id: &o.stream_id,
                window: o.window,
                generation: o.generation,
                prefix: &o.prefix,
                marker: &o.marker,
                files: o.files.clone(),
                id_scheme: ID_SCHEME,
                out_of_range: o.out_of_range,
                records_fetched: o.fetched,
                pages: o.pages,
                run_id: Some(self.current_run.load(Ordering::Relaxed)),
                advance_watermark_to: advance,
            });
            if let Err(ce) = committed {
                // The state refused the commit (e.g. its volume is full): this window's files
                // and any later window's are published but not committed. Remove them now, so
                // no reader sees records the state does not account for.
                self.stop_after_failure(inner, results).await;
                return Err(ce.into());
            }
            committed_here.fetch_add(1, Ordering::SeqCst);
            let written: u64 = o
                .files
                .iter()
                .filter(|f| !crate::model::is_quarantine(&f.partition))
                .map(|f| f.rows)
                .sum();
            done += 1;
            let eta_s = (started.elapsed().as_secs_f64() / done as f64 * (total_windows - done) as f64).round() as u64;
            if let Some(bar) = bar {
                bar.inc(1);
                bar.set_message(format!("{} records written", total.written + written));
            } else {
                tracing::info!(
                    stream = %o.stream_id, start = %o.window.start, end = %o.window.end, pages = o.pages,
                    fetched = o.fetched, written, duplicates = o.duplicates, files = o.files.len(),
                    progress = %format!("{done}/{total_windows}"), eta_s,
                    "window committed"
                );
            }
            let bytes: u64 = o.files.iter().map(|f| f.bytes).sum();
            self.metrics.window_committed(written, o.duplicates, bytes);
            self.metrics.out_of_range(o.out_of_range);
            self.metrics.quarantined(o.quarantined);
            total.quarantined += o.quarantined;
            total.windows += 1;
            total.pages += o.pages;
            total.fetched += o.fetched;
            total.written += written;
            total.duplicates += o.duplicates;
            total.files += o.files.len() as u64;
            total.per_window.push(WindowFinding {
                stream: o.stream_id.clone(),
                start: o.window.start,
                end: o.window.end,
                written,
            });
        }
        Ok(())
    }
}
