//! Daemon mode: `run` on `schedule.cron` (tokio-cron-scheduler, UTC), never two at once, plus
//! `/healthz` (process alive), `/readyz` (fewer than `daemon.unready_after_failures` passes in
//! a row have failed, and no stream lags more than `daemon.unready_after_lag`) and `/metrics` (Prometheus text from [`crate::metrics`]). Each pass logs
//! one summary line. Before every pass, attempts a failed pass left uncommitted are cleaned up.
//! Cancellation (SIGTERM, installed by `main`) lets a run in progress end at a consistent
//! checkpoint, then returns.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::exporter::Exporter;
use crate::window::ExportError;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The exporter could not be set up.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// `daemon.listen` cannot be bound.
    #[error("daemon.listen {listen}: {source}")]
    Listen {
        /// The address.
        listen: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The scheduler failed.
    #[error("schedule.cron {cron:?}: {message}")]
    Schedule {
        /// The expression.
        cron: String,
        /// The scheduler's message.
        message: String,
    },
}

struct Shared {
    ex: Exporter,
    running: tokio::sync::Mutex<()>,
    /// Passes failed in a row (0 after a successful one).
    failures: AtomicU32,
    /// `daemon.unready_after_failures`.
    unready_after: u32,
    /// `daemon.unready_after_lag`.
    unready_after_lag: Option<chrono::Duration>,
}

/// Whether any stream's covered end lags `now` by more than `limit`. A stream that has
/// exported nothing yet (`None`) is not stale: its first pass is still to come, and a failing
/// one shows through `daemon.unready_after_failures`.
fn stale(ends: &[Option<chrono::DateTime<Utc>>], now: chrono::DateTime<Utc>, limit: chrono::Duration) -> bool {
    ends.iter().flatten().any(|e| now - *e > limit)
}

/// Why the daemon is not ready, for `/readyz`'s body: failed passes, or the lag (a stream's
/// covered end further behind now than `daemon.unready_after_lag`).
fn unready_reason(
    failures: u32,
    unready_after: u32,
    lag: Option<(&str, chrono::DateTime<Utc>, chrono::Duration)>,
    now: chrono::DateTime<Utc>,
) -> Option<String> {
    if failures >= unready_after {
        return Some(format!(
            "{failures} passes in a row failed (daemon.unready_after_failures = {unready_after})"
        ));
    }
    lag.map(|(stream, end, limit)| {
        format!(
            "stream {stream} is exported up to {} only, {}s behind now (daemon.unready_after_lag = {}s)",
            end.to_rfc3339(),
            (now - end).num_seconds(),
            limit.num_seconds()
        )
    })
}

impl Shared {
    /// One scheduled pass: clean up, run, record the outcome and log one summary line.
    async fn pass(&self, cancel: &CancellationToken) {
        let started = std::time::Instant::now();
        // A pass that failed in its commit step may have left published files behind.
        let result = match self.ex.recover().await {
            Ok(()) => self.ex.run_once(Utc::now(), cancel).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(sum) => {
                self.failures.store(0, Ordering::Relaxed);
                self.ex.compact_after_run(Utc::now()).await;
                tracing::info!(
                    outcome = "ok",
                    written = sum.written,
                    fetched = sum.fetched,
                    duplicates = sum.duplicates,
                    windows = sum.windows,
                    seconds = sum.seconds,
                    "daemon pass finished"
                );
            }
            // A shutdown (SIGTERM) stops the pass at a consistent point: not a failure.
            Err(crate::window::ExportError::Cancelled) if cancel.is_cancelled() => {
                tracing::info!(
                    outcome = "interrupted",
                    seconds = started.elapsed().as_secs_f64(),
                    "daemon pass stopped for shutdown"
                );
            }
            Err(e) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                tracing::error!(
                    outcome = "failed",
                    consecutive_failures = failures,
                    seconds = started.elapsed().as_secs_f64(),
                    error = %e,
                    "daemon pass failed"
                );
            }
        }
    }

    /// `None` when ready, else why not.
    fn unready(&self) -> Option<String> {
        let now = Utc::now();
        let stale_stream = self.unready_after_lag.and_then(|limit| {
            self.ex.settings().api.streams.iter().find_map(|s| {
                let end = self.ex.checkpoint().watermark(&s.id).ok().flatten()?;
                stale(&[Some(end)], now, limit).then(|| (s.id.clone(), end, limit))
            })
        });
        unready_reason(
            self.failures.load(Ordering::Relaxed),
            self.unready_after,
            stale_stream.as_ref().map(|(s, e, l)| (s.as_str(), *e, *l)),
            now,
        )
    }
}

/// Runs until `cancel` fires, then lets a pass in progress finish consistently.
pub async fn serve(settings: Settings, cancel: CancellationToken) -> Result<(), DaemonError> {
    let listen = settings.daemon.listen;
    let cron = settings.daemon.cron.clone();
    let unready_after = settings.daemon.unready_after_failures.max(1);
    let unready_after_lag = settings.daemon.unready_after_lag;
    let sched_err = |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Schedule {
        cron: cron.clone(),
        message: e.to_string(),
    };
    let shared = Arc::new(Shared {
        ex: Exporter::new(settings).await?,
        running: tokio::sync::Mutex::new(()),
        failures: AtomicU32::new(0),
        unready_after,
        unready_after_lag,
    });

    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| DaemonError::Listen { listen, source })?;
    tracing::info!(%listen, %cron, "daemon started");
    let c = cancel.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { c.cancelled().await })
            .await;
    });

    let sched = JobScheduler::new().await.map_err(sched_err)?;
    let (s, c) = (shared.clone(), cancel.clone());
    let job = Job::new_async(cron.as_str(), move |_id, _l| {
        let (s, c) = (s.clone(), c.clone());
        Box::pin(async move {
            let Ok(_guard) = s.running.try_lock() else {
                tracing::warn!("previous run still in progress; skipping this tick");
                return;
            };
            s.pass(&c).await;
        })
    })
    .map_err(sched_err)?;
    sched.add(job).await.map_err(sched_err)?;
    sched.start().await.map_err(sched_err)?;
    cancel.cancelled().await;
    let mut sched = sched;
    let _ = sched.shutdown().await;
    // Wait for a run in progress to reach its consistent end.
    let _ = shared.running.lock().await;
    let _ = http.await;
    tracing::info!("daemon stopped");
    Ok(())
}

async fn readyz(State(s): State<Arc<Shared>>) -> (StatusCode, String) {
    match s.unready() {
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        None => (StatusCode::OK, "ready\n".into()),
    }
}

/// The metrics in the format the scraper asks for, as Prometheus negotiates it: OpenMetrics
/// when `Accept` prefers it, else the classic text format; each with its own Content-Type.
async fn metrics(State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> impl axum::response::IntoResponse {
    s.ex.update_lag_metrics(Utc::now());
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if prefers_openmetrics(accept) {
        (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            s.ex.metrics().encode(),
        )
    } else {
        (
            [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            s.ex.metrics().encode_classic(),
        )
    }
}

/// Whether `Accept` prefers OpenMetrics to the classic text format, by its q-values (as
/// Prometheus' own servers negotiate): the higher q wins; at equal q a named type beats a
/// wildcard, else the type listed first wins; `q=0` refuses a type; `text/*` or `*/*` stand for
/// the classic format.
fn prefers_openmetrics(accept: &str) -> bool {
    // (q, position, named) of the best entry of each.
    let (mut om, mut text) = (None::<(f32, usize, bool)>, None::<(f32, usize, bool)>);
    for (i, part) in accept.split(',').enumerate() {
        let mut params = part.split(';');
        let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = params
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match media.as_str() {
            "application/openmetrics-text" => &mut om,
            "text/plain" | "text/*" | "*/*" => &mut text,
            _ => continue,
        };
        // The best q a type is given, and where it was first given so (a named type over a
        // wildcard at the same q).
        let named = !media.contains('*');
        if slot.is_none_or(|(best, _, was_named)| q > best || (q == best && named && !was_named)) {
            *slot = Some((q, i, named));
        }
    }
    match (om, text) {
        (Some((q, ..)), _) if q <= 0.0 => false,
        (Some(_), None) => true,
        (Some((qo, io, _)), Some((qt, it, text_named))) => qo > qt || (qo == qt && (!text_named || io < it)),
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_format_follows_the_accept_headers_q_values() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(prefers_openmetrics(prometheus));
        assert!(!prefers_openmetrics(
            "text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"
        ));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0, text/plain"));
        assert!(!prefers_openmetrics("application/openmetrics-text;q=0"));
        assert!(prefers_openmetrics("application/openmetrics-text"));
        assert!(prefers_openmetrics("application/openmetrics-text, text/plain"));
        assert!(!prefers_openmetrics("text/plain, application/openmetrics-text"));
        assert!(!prefers_openmetrics("*/*;q=0.9, application/openmetrics-text;q=0.8"));
        assert!(
            prefers_openmetrics("*/*, application/openmetrics-text"),
            "named over a wildcard at equal q"
        );
        assert!(!prefers_openmetrics("*/*, text/plain, application/openmetrics-text"));
        assert!(!prefers_openmetrics(""));
        assert!(!prefers_openmetrics("text/html"));
    }

    #[test]
    fn readyz_says_whether_failures_or_the_lag_make_it_unready() {
        let now = Utc::now();
        let h = chrono::Duration::hours(1);
        assert_eq!(unready_reason(0, 1, None, now), None);
        let f = unready_reason(2, 2, Some(("all", now - h * 3, h)), now).unwrap();
        assert!(f.starts_with("2 passes in a row failed"), "{f}");
        let l = unready_reason(0, 1, Some(("all", now - h * 3, h)), now).unwrap();
        assert!(l.starts_with("stream all is exported up to") && l.contains("10800s behind"), "{l}");
        assert!(!l.contains("failed"), "{l}");
    }

    #[test]
    fn staleness_looks_at_every_stream() {
        let now = Utc::now();
        let h = chrono::Duration::hours(1);
        assert!(!stale(&[Some(now - h / 2)], now, h));
        assert!(stale(&[Some(now - h / 2), Some(now - h * 3)], now, h));
        assert!(!stale(&[None], now, h), "nothing exported yet: the first pass is still to come");
        assert!(!stale(&[], now, h));
    }
}
