//! Daemon mode: `run` on `schedule.cron` (tokio-cron-scheduler, UTC), never two at once, plus
//! `/healthz` (process alive), `/readyz` (last run did not fail) and `/metrics` (Prometheus
//! text). SIGTERM lets a run in progress end at a consistent checkpoint, then exits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chrono::Utc;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::scheduler::Exporter;

struct Shared {
    ex: Exporter,
    running: tokio::sync::Mutex<()>,
    last_failed: AtomicBool,
}

pub async fn serve(settings: Settings, cancel: CancellationToken) -> anyhow::Result<()> {
    let listen = settings.daemon_listen;
    let cron = settings.schedule_cron.clone();
    let shared = Arc::new(Shared {
        ex: Exporter::new(settings).await?,
        running: tokio::sync::Mutex::new(()),
        last_failed: AtomicBool::new(false),
    });

    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("daemon.listen {listen}: {e}"))?;
    tracing::info!(%listen, %cron, "daemon started");
    let c = cancel.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { c.cancelled().await })
            .await;
    });

    let sched = JobScheduler::new().await?;
    let (s, c) = (shared.clone(), cancel.clone());
    let job = Job::new_async(cron.as_str(), move |_id, _l| {
        let (s, c) = (s.clone(), c.clone());
        Box::pin(async move {
            let Ok(_guard) = s.running.try_lock() else {
                tracing::warn!("previous run still in progress; skipping this tick");
                return;
            };
            match s.ex.run_once(Utc::now(), &c).await {
                Ok(sum) => {
                    s.last_failed.store(false, Ordering::Relaxed);
                    tracing::info!(
                        written = sum.written,
                        windows = sum.windows,
                        seconds = sum.seconds,
                        "scheduled run finished"
                    );
                }
                Err(e) => {
                    s.last_failed.store(true, Ordering::Relaxed);
                    tracing::error!(error = %e, "scheduled run failed");
                }
            }
        })
    })
    .map_err(|e| anyhow::anyhow!("schedule.cron {cron:?}: {e}"))?;
    sched.add(job).await?;
    sched.start().await?;
    cancel.cancelled().await;
    let mut sched = sched;
    let _ = sched.shutdown().await;
    // Wait for a run in progress to reach its consistent end.
    let _ = shared.running.lock().await;
    let _ = http.await;
    tracing::info!("daemon stopped");
    Ok(())
}

async fn readyz(State(s): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if s.last_failed.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "last run failed\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> String {
    let m = &s.ex.metrics;
    let mut out = String::new();
    let mut line = |name: &str, help: &str, kind: &str, v: String| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"));
    };
    line(
        "aos_export_runs_ok_total",
        "Runs that finished successfully.",
        "counter",
        m.runs_ok.load(Ordering::Relaxed).to_string(),
    );
    line(
        "aos_export_runs_failed_total",
        "Runs that failed or were interrupted.",
        "counter",
        m.runs_failed.load(Ordering::Relaxed).to_string(),
    );
    line(
        "aos_export_records_written_total",
        "Records written to the output.",
        "counter",
        m.records_written.load(Ordering::Relaxed).to_string(),
    );
    line(
        "aos_export_windows_committed_total",
        "Windows committed.",
        "counter",
        m.windows_committed.load(Ordering::Relaxed).to_string(),
    );
    line(
        "aos_export_last_success_timestamp_seconds",
        "Unix time of the last successful run.",
        "gauge",
        m.last_success_unix.load(Ordering::Relaxed).to_string(),
    );
    line(
        "aos_export_api_requests_total",
        "HTTP requests sent to the audit API.",
        "counter",
        s.ex.api.stats.requests.load(Ordering::Relaxed).to_string(),
    );
    line(
        "aos_export_api_retries_total",
        "API requests retried.",
        "counter",
        s.ex.api.stats.retries.load(Ordering::Relaxed).to_string(),
    );
    out.push_str("# HELP aos_export_watermark_lag_seconds How far the stream's watermark is behind now.\n# TYPE aos_export_watermark_lag_seconds gauge\n");
    for st in &s.ex.settings.api.streams {
        if let Ok(Some(w)) = s.ex.checkpoint.watermark(&st.id) {
            out.push_str(&format!(
                "aos_export_watermark_lag_seconds{{stream=\"{}\"}} {}\n",
                st.id,
                (Utc::now() - w).num_seconds()
            ));
        }
    }
    out
}
