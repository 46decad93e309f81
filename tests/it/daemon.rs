//! Daemon mode: scheduled runs, /healthz, /readyz, /metrics, and a clean stop on SIGTERM.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn daemon_runs_on_schedule_serves_metrics_and_stops_on_sigterm() {
    let emu = start(emu_config(2, 200)).await;
    // Scheduled runs use the real clock: from the 2024 data up to today in 7-day windows.
    let s = setup(&emu, "window = \"7d\"\nconcurrency = 8");
    let port = free_port();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{text}\n[schedule]\ncron = \"* * * * * *\"\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let mut child = spawn(&s, &["daemon"]);
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut metrics = String::new();
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(r) = http.get(format!("{base}/metrics")).send().await {
            metrics = r.text().await.unwrap();
            if metrics
                .lines()
                .any(|l| l.starts_with("aos_export_runs_ok_total ") && !l.ends_with(" 0"))
            {
                break;
            }
        }
    }
    assert!(metrics.contains("aos_export_records_written_total"), "{metrics}");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("aos_export_runs_ok_total ") && !l.ends_with(" 0")),
        "a scheduled run finished: {metrics}"
    );
    assert!(metrics.contains("aos_export_watermark_lag_seconds{stream=\"all\"}"), "{metrics}");
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    let (from, to) = range(2);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("daemon stops")
        .unwrap();
    assert!(status.success(), "SIGTERM ends the daemon cleanly: {status:?}");
}
