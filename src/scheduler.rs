//! Drives windows: `run` (checkpoint → now − lag, with look-back), `backfill` (a historical
//! range, resumable) and the `daemon` loop.
//!
//! Windows are fetched up to `export.concurrency` at once but committed strictly in order, so
//! the watermark only ever covers a contiguous prefix of committed windows. On start, attempts
//! left pending by a crash are cleaned up before anything else is written.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::auth::TokenProvider;
use crate::checkpoint::{Checkpoint, WindowCommit};
use crate::config::{Settings, StreamSpec};
use crate::job::{self, Deps, JobError};
use crate::planner::{self, Window};
use crate::sink::SinkOptions;
use crate::store::Store;

/// Totals of one run (printed, recorded in `runs`, exported as metrics).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunSummary {
    pub windows: u64,
    pub pages: u64,
    pub fetched: u64,
    pub written: u64,
    pub duplicates: u64,
    pub files: u64,
    pub seconds: f64,
}

/// Process-wide counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    pub runs_ok: AtomicU64,
    pub runs_failed: AtomicU64,
    pub records_written: AtomicU64,
    pub windows_committed: AtomicU64,
    pub last_success_unix: AtomicU64,
}

/// Everything a run needs, built once from [`Settings`].
pub struct Exporter {
    pub settings: Settings,
    pub tokens: Arc<TokenProvider>,
    pub api: ApiClient,
    pub store: Store,
    pub checkpoint: Checkpoint,
    pub sink: SinkOptions,
    pub metrics: Metrics,
    /// Id of the run in progress (recorded on each window it commits).
    current_run: std::sync::atomic::AtomicI64,
}

impl Exporter {
    /// Loads the credential, opens the output and the state (taking its lock), and cleans up
    /// after any crashed attempt. Fails before writing anything if a setting is unusable.
    pub async fn new(settings: Settings) -> Result<Self, anyhow::Error> {
        let http = reqwest::Client::builder()
            .timeout(settings.api.request_timeout)
            .connect_timeout(settings.api.connect_timeout)
            .user_agent(concat!("aos-audit-export/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let tokens = Arc::new(TokenProvider::new(settings.auth.clone(), http.clone())?);
        let api = ApiClient::new(settings.api.clone(), http, tokens.clone());
        let spool = settings.state_path.with_extension("spool");
        let store = Store::open(&settings.export.output, &spool)?;
        let checkpoint = Checkpoint::open(&settings.state_path)?;
        store.check()?;
        let sink = SinkOptions {
            format: settings.export.format,
            compression: settings.export.compression,
            row_group_rows: settings.export.row_group_rows,
            file_max_rows: settings.export.file_max_rows,
            file_max_bytes: settings.export.file_max_bytes,
        };
        let ex = Exporter {
            settings,
            tokens,
            api,
            store,
            checkpoint,
            sink,
            metrics: Metrics::default(),
            current_run: Default::default(),
        };
        ex.recover().await?;
        for s in &ex.settings.api.streams {
            ex.checkpoint.ensure_stream(s)?;
        }
        Ok(ex)
    }

    /// Deletes files of attempts that never committed (a crash between publish and commit).
    pub async fn recover(&self) -> Result<(), JobError> {
        for p in self.checkpoint.pending()? {
            let n = self.store.remove_prefix(&p.partitions, &p.prefix).await?;
            tracing::info!(prefix = %p.prefix, removed = n, "cleaned up an uncommitted attempt");
            self.checkpoint.clear_pending(&p.prefix)?;
        }
        Ok(())
    }

    fn deps(&self) -> Deps<'_> {
        Deps {
            api: &self.api,
            store: &self.store,
            checkpoint: &self.checkpoint,
            sink: &self.sink,
        }
    }

    /// One export pass for every stream: from its watermark (minus look-back) to now − lag.
    pub async fn run_once(&self, now: DateTime<Utc>, cancel: &CancellationToken) -> Result<RunSummary, JobError> {
        self.recorded("run", cancel, |cancel| async move {
            let e = &self.settings.export;
            let mut total = RunSummary::default();
            for stream in &self.settings.api.streams {
                let wm = self.checkpoint.watermark(&stream.id)?;
                let Some((from, to)) = planner::run_range(wm, e.start, now, e.lag, e.lookback) else {
                    tracing::info!(stream = %stream.id, "nothing final to export yet (now − lag is not past the watermark)");
                    continue;
                };
                let to = truncate_to_second(to);
                let windows = planner::split(from, to, e.window);
                tracing::info!(stream = %stream.id, %from, %to, windows = windows.len(), "run");
                self.drive(stream, windows, &cancel, &mut total).await?;
            }
            Ok(total)
        })
        .await
    }

    /// Exports `[from, to)` (to clamped to now − lag). Windows already committed are skipped,
    /// so an interrupted backfill resumes and a finished one makes no API call.
    pub async fn backfill(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
        cancel: &CancellationToken,
    ) -> Result<RunSummary, JobError> {
        self.recorded("backfill", cancel, |cancel| async move {
            let e = &self.settings.export;
            let to = truncate_to_second(planner::clamp_end(to, now, e.lag));
            let mut total = RunSummary::default();
            for stream in &self.settings.api.streams {
                let covered = self.checkpoint.committed_ranges(&stream.id, from, to)?;
                let windows: Vec<Window> = planner::gaps(from, to, &covered)
                    .into_iter()
                    .flat_map(|(a, b)| planner::split(a, b, e.window))
                    .collect();
                tracing::info!(stream = %stream.id, %from, %to, windows = windows.len(), already_exported = covered.len(), "backfill");
                self.drive(stream, windows, &cancel, &mut total).await?;
            }
            Ok(total)
        })
        .await
    }

    /// Records the run in the state and applies the run deadline.
    async fn recorded<'a, F, Fut>(&'a self, command: &str, cancel: &CancellationToken, body: F) -> Result<RunSummary, JobError>
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<RunSummary, JobError>> + 'a,
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
        let mut result = body(inner).await;
        if let Some(t) = timer {
            t.abort();
        }
        if matches!(result, Err(JobError::Cancelled)) && deadline_hit.load(Ordering::SeqCst) {
            result = Err(JobError::Deadline);
        }
        let (status, err) = match &result {
            Ok(_) => ("ok", None),
            Err(JobError::Cancelled) => ("interrupted", None),
            Err(JobError::Deadline) => ("deadline", None),
            Err(e) => ("failed", Some(e.to_string())),
        };
        let (w, r) = match &result {
            Ok(s) => (s.windows, s.written),
            Err(_) => (0, 0),
        };
        self.checkpoint.finish_run(run_id, status, w, r, err.as_deref())?;
        if result.is_ok() {
            self.metrics.runs_ok.fetch_add(1, Ordering::Relaxed);
            self.metrics
                .last_success_unix
                .store(Utc::now().timestamp() as u64, Ordering::Relaxed);
        } else {
            self.metrics.runs_failed.fetch_add(1, Ordering::Relaxed);
        }
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
    ) -> Result<(), JobError> {
        let deps = self.deps();
        let e = &self.settings.export;
        let deps = &deps;
        let (total_windows, started) = (windows.len(), Instant::now());
        let mut done = 0usize;
        let mut results = futures::stream::iter(
            windows
                .into_iter()
                .map(|w| async move { job::export_window(deps, stream, w, cancel).await }),
        )
        .buffered(e.concurrency);
        while let Some(res) = results.next().await {
            let o = match res {
                Ok(o) => o,
                Err(e) => {
                    // Later windows may be published but, with this one missing, can never
                    // commit in order: stop them and delete their files now rather than leave
                    // them visible until the next run.
                    drop(results);
                    if let Err(re) = self.recover().await {
                        tracing::warn!(error = %re, "could not clean up uncommitted windows; the next run will");
                    }
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
                _ => true,
            };
            let advance = contiguous.then_some(o.window.end);
            let horizon = advance.or(wm).map(|w| w - e.lookback - e.window);
            self.checkpoint.commit_window(&WindowCommit {
                stream_id: &o.stream_id,
                window: o.window,
                generation: o.generation,
                prefix: &o.prefix,
                files: o.files.clone(),
                new_ids: o.new_ids,
                records_fetched: o.fetched,
                pages: o.pages,
                run_id: Some(self.current_run.load(Ordering::Relaxed)),
                advance_watermark_to: advance,
                prune_keys_before: horizon,
            })?;
            let written: u64 = o.files.iter().map(|f| f.rows).sum();
            done += 1;
            let eta_s = (started.elapsed().as_secs_f64() / done as f64 * (total_windows - done) as f64).round() as u64;
            tracing::info!(
                stream = %o.stream_id, start = %o.window.start, end = %o.window.end, pages = o.pages,
                fetched = o.fetched, written, duplicates = o.duplicates, files = o.files.len(),
                progress = %format!("{done}/{total_windows}"), eta_s,
                "window committed"
            );
            self.metrics.records_written.fetch_add(written, Ordering::Relaxed);
            self.metrics.windows_committed.fetch_add(1, Ordering::Relaxed);
            total.windows += 1;
            total.pages += o.pages;
            total.fetched += o.fetched;
            total.written += written;
            total.duplicates += o.duplicates;
            total.files += o.files.len() as u64;
        }
        Ok(())
    }
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}
