//! Issue 19: what an operator sees around the export — JSON logs that a shipper can filter,
//! metrics every Prometheus parser types, and a `status` that tells the truth about runs.

use crate::common::*;

/// With `log.format = "json"` every line a failing run writes is one JSON object with
/// `timestamp`, `level` and `message` at the top level, and the fatal error is an ERROR event
/// with its exit code and cause (before: a plain `error: …` line ended the log, and nothing had
/// level ERROR; the message sat under `fields.message`).
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_json_to_the_last_line_with_the_fatal_error() {
    let emu = start(emu_config(1, 50)).await;
    let s = setup(&emu, "");
    let json = "\n[log]\nformat = \"json\"\n";
    std::fs::write(&s.config, std::fs::read_to_string(&s.config).unwrap() + json).unwrap();
    assert_ok(&cli(&s, &["--now", "2024-03-02T00:00:00Z", "run"], &[]).await);
    std::fs::write(s.dir.path().join("secret"), "wrong\n").unwrap();
    let o = cli(&s, &["--now", "2024-03-02T00:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await;
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    let events: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(events.len() >= 2, "{err}");
    for e in &events {
        for key in ["timestamp", "level", "message"] {
            assert!(e[key].is_string(), "{key} at the top level: {e}");
        }
    }
    let fatal = events.last().unwrap();
    assert_eq!(fatal["level"], "ERROR", "{fatal}");
    assert_eq!(fatal["exit_code"], 3, "{fatal}");
    assert_eq!(fatal["cause"], "auth", "{fatal}");
    assert!(fatal["message"].as_str().unwrap().contains("401"), "{fatal}");
    assert!(
        events
            .iter()
            .any(|e| e["span"]["command"] == "reconcile" && e["span"]["run_id"].is_number()),
        "the run's events carry its command and run id: {err}"
    );
    assert!(o.stdout.is_empty(), "nothing on stdout for a failed run");
}

/// Runs Python's Prometheus parsers (PyPI `prometheus-client`) on `text`: the classic one
/// (`text_string_to_metric_families`) or the OpenMetrics one; returns `name type` per family.
fn python_parse(text: &str, openmetrics: bool) -> Vec<String> {
    let parser = if openmetrics {
        "from prometheus_client.openmetrics.parser import text_string_to_metric_families"
    } else {
        "from prometheus_client.parser import text_string_to_metric_families"
    };
    let script = format!("import sys\n{parser}\nfor f in text_string_to_metric_families(sys.stdin.read()):\n    print(f.name, f.type)\n");
    let mut child = std::process::Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

/// The daemon serves the format its Content-Type says, as Prometheus negotiates it, and both of
/// Prometheus' text parsers type every counter (before: OpenMetrics served as `text/plain`,
/// which the classic parser read with every counter `unknown`). Failed passes carry a cause.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_typed_by_both_parsers_and_failures_have_causes() {
    let emu = start(emu_config(1, 50)).await;
    let s = setup(&emu, "");
    let port = free_port();
    let extra = format!("\n[daemon]\nlisten = \"127.0.0.1:{port}\"\n[schedule]\ncron = \"* * * * * *\"\n");
    std::fs::write(&s.config, std::fs::read_to_string(&s.config).unwrap() + &extra).unwrap();
    // The identity service refuses the secret: every pass fails with cause `auth`.
    std::fs::write(s.dir.path().join("secret"), "wrong\n").unwrap();
    let child = spawn(&s, &["daemon"]);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut classic = String::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(&url).send().await {
            classic = r.text().await.unwrap_or_default();
            if classic.contains("aos_export_runs_failed_total{cause=\"auth\"}") {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(classic.contains("aos_export_runs_failed_total{cause=\"auth\"}"), "{classic}");
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let r = http
        .get(&url)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let open = r.text().await.unwrap();
    assert!(open.trim_end().ends_with("# EOF"));
    sigterm(&child);
    for (text, om) in [(&classic, false), (&open, true)] {
        let families = python_parse(text, om);
        for counter in [
            "aos_export_runs_ok",
            "aos_export_runs_failed",
            "aos_export_api_pages",
            "aos_export_records_written",
        ] {
            assert!(
                families.contains(&format!("{counter} counter")),
                "{counter} typed by the {} parser: {families:?}",
                if om { "OpenMetrics" } else { "classic" }
            );
        }
        assert!(!families.iter().any(|f| f.ends_with(" unknown")), "{families:?}");
    }
}

/// `status` tells the truth about runs: a run stopped by its deadline shows the windows and
/// records it committed (before: 0 and 0); a run whose process was killed shows `died` once
/// the lock is free (before: `running` forever); a completed run leaves no gap below a second.
#[tokio::test(flavor = "multi_thread")]
async fn status_tells_the_truth_about_runs() {
    let mut cfg = emu_config(6, 400);
    cfg.latency = std::time::Duration::from_millis(150);
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"1d\"\nconcurrency = 1\nrun_deadline = \"2s\"");
    let now = "2024-03-07T00:00:00Z";
    let o = cli(&s, &["--now", now, "backfill", "--from", "2024-03-01"], &[]).await;
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    let st = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    let run = &st["runs"][0];
    assert_eq!(run["status"], "deadline", "{run}");
    let committed: u64 = st["streams"][0]["windows_committed"].as_u64().unwrap();
    assert!(committed >= 1, "{st}");
    assert_eq!(run["windows"].as_u64(), Some(committed), "{run}");
    assert_eq!(run["records_written"], st["streams"][0]["records_written"], "{run}");
    // Killed mid-run.
    let text = std::fs::read_to_string(&s.config).unwrap().replace("run_deadline = \"2s\"", "");
    std::fs::write(&s.config, text).unwrap();
    let mut child = spawn(&s, &["--now", now, "backfill", "--from", "2024-03-01"]);
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let st = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    assert_eq!(st["runs"][0]["status"], "died", "{st}");
    // Completed, at a `now` with a fraction of a second: coverage complete, no gap.
    let now = "2024-03-07T00:00:00.772851273Z";
    assert_ok(&cli(&s, &["--now", now, "run"], &[]).await);
    let o = cli(&s, &["--now", now, "status"], &[]).await;
    assert!(stdout(&o).contains("coverage: complete"), "{}", stdout(&o));
    let st = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["gaps"], serde_json::json!([]), "{st}");
    assert_eq!(st["runs"][0]["status"], "ok");
    assert_eq!(st["runs"][1]["status"], "died", "the killed run stays died");
}
