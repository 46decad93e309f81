//! Daemon mode, hermetic: the exported range is pinned relative to now (emulator data from a
//! few days ago, `export.start = "3d"`), the child's stderr goes to a file, and the test drives
//! the emulator through an outage to watch `/readyz` turn unready after
//! `daemon.unready_after_failures` failed passes and ready again after a good one, then stops
//! the daemon with SIGTERM in the middle of a pass and checks the state it leaves.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::common::*;

/// The sum of a metric's samples over all its labels (`name value`, `name{…} value`), 0 when
/// absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labels) => labels.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.parse::<f64>().ok()
        })
        .sum()
}

struct Daemon {
    http: reqwest::Client,
    base: String,
}

impl Daemon {
    async fn metrics(&self) -> String {
        match self.http.get(format!("{}/metrics", self.base)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
    async fn ready(&self) -> u16 {
        self.http
            .get(format!("{}/readyz", self.base))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
    /// Polls `/metrics` until `pred` holds (30 s at most), returning the text.
    async fn wait_for(&self, what: &str, log: &std::path::Path, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..1500 {
            let m = self.metrics().await;
            if pred(&m) {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "timed out waiting for {what}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    /// `/readyz` read between two `/metrics` snapshots that agree on the pass counters, so the
    /// status belongs to exactly that many passes.
    async fn ready_between_passes(&self) -> (u16, f64, f64) {
        loop {
            let before = self.metrics().await;
            let status = self.ready().await;
            let after = self.metrics().await;
            let counts = |m: &str| (metric(m, "aos_export_runs_ok_total"), metric(m, "aos_export_runs_failed_total"));
            if counts(&before) == counts(&after) {
                let (ok, failed) = counts(&after);
                return (status, ok, failed);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_metrics_readiness_after_failures_and_sigterm_mid_pass() {
    let today = aos_emulator::data::midnight(Utc::now());
    let mut cfg = emu_config(5, 300);
    cfg.data.start = today - chrono::Duration::days(3);
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let port = free_port();
    let text = std::fs::read_to_string(&s.config).unwrap();
    // Relative start: three days before now, whatever day the test runs on.
    let text = text.replace(&format!("start = \"{}\"", day0().to_rfc3339()), "start = \"3d\"");
    assert!(text.contains("start = \"3d\""));
    std::fs::write(
        &s.config,
        format!("{text}\n[schedule]\ncron = \"* * * * * *\"\n[daemon]\nlisten = \"127.0.0.1:{port}\"\nunready_after_failures = 2\n"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, text.replace("[api]\n", "[api]\nmax_retries = 1\n")).unwrap();
    let log = s.dir.path().join("daemon.log");
    let mut child = spawn_logged(&s, &["daemon"], &log);
    let d = Daemon {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{port}"),
    };

    // 1. A good pass: real numbers in /metrics, ready.
    let m = d
        .wait_for("a successful pass", &log, |m| metric(m, "aos_export_runs_ok_total") >= 1.0)
        .await;
    assert!(metric(&m, "aos_export_records_written_total") > 0.0, "{m}");
    assert!(metric(&m, "aos_export_api_pages_total") > 0.0, "{m}");
    assert!(
        metric(&m, "aos_export_windows_committed_total") >= 3.0,
        "3 days in 1-day windows: {m}"
    );
    assert!(metric(&m, "aos_export_bytes_written_total") > 0.0, "{m}");
    assert!(
        metric(&m, "aos_export_last_success_timestamp_seconds") > (Utc::now().timestamp() - 60) as f64,
        "{m}"
    );
    assert!(m.contains("aos_export_pass_duration_seconds_count{command=\"run\"}"), "{m}");
    assert!(m.contains("aos_export_watermark_lag_seconds{stream=\"all\"}"), "{m}");
    assert_eq!(d.http.get(format!("{}/healthz", d.base)).send().await.unwrap().status(), 200);
    assert_eq!(d.ready().await, 200);
    let summary = std::fs::read_to_string(&log).unwrap();
    let line = summary
        .lines()
        .find(|l| l.contains("daemon pass finished") && !l.contains("written=0"))
        .unwrap_or_else(|| panic!("one summary line per pass:\n{summary}"));
    for field in ["written=", "fetched=", "duplicates=", "windows=", "seconds="] {
        assert!(line.contains(field), "{field} in {line}");
    }

    // 2. The API goes down: one failed pass is tolerated (unready_after_failures = 2), two are not.
    emu.set_audit_outage(true);
    let failed0 = metric(&d.metrics().await, "aos_export_runs_failed_total");
    let mut saw_one_failure_ready = false;
    loop {
        let (status, _, failed) = d.ready_between_passes().await;
        if failed == failed0 + 1.0 {
            assert_eq!(status, 200, "one failed pass is tolerated");
            saw_one_failure_ready = true;
        }
        if failed >= failed0 + 2.0 {
            assert_eq!(status, 503, "two failed passes in a row make the daemon unready");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_one_failure_ready, "observed the state after exactly one failure");
    assert!(std::fs::read_to_string(&log).unwrap().contains("daemon pass failed"));

    // 3. The API is back: the next good pass makes it ready again.
    emu.set_audit_outage(false);
    let ok0 = metric(&d.metrics().await, "aos_export_runs_ok_total");
    loop {
        let (status, ok, _) = d.ready_between_passes().await;
        if ok > ok0 {
            assert_eq!(status, 200, "ready again after a good pass");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // 4. SIGTERM while a pass waits on a slow page.
    emu.set_latency(Duration::from_millis(1500));
    let seen = emu.audit_requests();
    while emu.audit_requests() == seen {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the daemon stops")
        .unwrap();
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(matches!(status.code(), Some(0) | Some(130)), "{status:?}\n{log_text}");
    assert!(log_text.contains("daemon stopped"), "{log_text}");

    // The state is consistent: nothing pending, verify vouches for every file, and the output
    // is exactly the emulator's records over the committed coverage.
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["pending_attempts"], 0, "{st}");
    assert_output_consistent(&s).await;
    let coverage = st["streams"][0]["coverage"].as_array().expect("coverage").clone();
    assert_eq!(coverage.len(), 1, "one contiguous range: {st}");
    let at = |i: usize| -> DateTime<Utc> { coverage[0][i].as_str().unwrap().parse().unwrap() };
    let (from, to) = (at(0), at(1));
    assert!(from >= today - chrono::Duration::days(3) && to <= Utc::now(), "{from}..{to}");
    assert!(to - from > chrono::Duration::days(2), "{from}..{to}");
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

/// A panic (a bug) in a scheduled pass ends the daemon like a kill, with exit 101: the runtime
/// would otherwise swallow it, leaving a daemon that reports ready and never passes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_panic_in_a_pass_ends_the_daemon() {
    let today = aos_emulator::data::midnight(Utc::now());
    let mut cfg = emu_config(2, 100);
    cfg.data.start = today - chrono::Duration::days(1);
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let port = free_port();
    let text = std::fs::read_to_string(&s.config).unwrap();
    let text = text.replace(&format!("start = \"{}\"", day0().to_rfc3339()), "start = \"1d\"");
    std::fs::write(
        &s.config,
        format!("{text}\n[schedule]\ncron = \"* * * * * *\"\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .unwrap();
    let o = tokio::time::timeout(
        Duration::from_secs(60),
        cli(&s, &["daemon"], &[("AOS_TEST_CRASH_AT", "commit:1:panic")]),
    )
    .await
    .expect("the daemon exits after the panic");
    assert_eq!(o.status.code(), Some(101), "{}", stderr(&o));
    assert!(stderr(&o).contains("crashpoint: panicking at commit"), "{}", stderr(&o));
    // Like a kill: the next run recovers and completes.
    assert_ok(&cli(&s, &["run"], &[]).await);
}
