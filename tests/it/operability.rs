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

/// JSON to the very first and last line: a configuration refused before logging is set up,
/// and a panic, are each one JSON object at level ERROR with `exit_code` and `cause`.
#[tokio::test(flavor = "multi_thread")]
async fn early_errors_and_panics_are_json_too() {
    let emu = start(emu_config(1, 50)).await;
    let s = setup(&emu, "");
    let base = std::fs::read_to_string(&s.config).unwrap();
    let parse = |o: &std::process::Output| -> Vec<serde_json::Value> {
        stderr(o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    // A bad value elsewhere in the file: log.format is still read alone.
    std::fs::write(
        &s.config,
        base.replace("lag = \"0s\"", "lag = \"soon\"") + "\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    let o = cli(&s, &["run"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let events = parse(&o);
    assert_eq!(events.len(), 1, "{}", stderr(&o));
    assert_eq!(events[0]["level"], "ERROR");
    assert_eq!(events[0]["exit_code"], 2);
    assert!(events[0]["message"].as_str().unwrap().contains("export.lag"), "{}", events[0]);
    // The same from the command line's --log-format.
    std::fs::write(&s.config, base.replace("lag = \"0s\"", "lag = \"soon\"")).unwrap();
    let o = cli(&s, &["--log-format", "json", "run"], &[]).await;
    assert_eq!(parse(&o).last().unwrap()["exit_code"], 2, "{}", stderr(&o));
    // A panic (a bug) mid-run.
    std::fs::write(&s.config, base.clone() + "\n[log]\nformat = \"json\"\n").unwrap();
    let o = cli(
        &s,
        &["--now", "2024-03-02T00:00:00Z", "run"],
        &[("AOS_TEST_CRASH_AT", "commit:1:panic")],
    )
    .await;
    assert_eq!(o.status.code(), Some(101), "{}", stderr(&o));
    let events = parse(&o);
    let p = events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.starts_with("panic")))
        .expect("the panic as an event");
    assert_eq!(p["level"], "ERROR", "{p}");
    assert_eq!(p["cause"], "internal", "{p}");
    // And it was a crash like any other: the next run recovers and completes.
    std::fs::write(&s.config, base).unwrap();
    assert_ok(&cli(&s, &["--now", "2024-03-02T00:00:00Z", "run"], &[]).await);
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
    // Prometheus' own (Go) parser and linter, from Debian's prometheus package (CI installs it).
    if let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(classic.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        assert!(
            std::env::var_os("AOS_TEST_REQUIRE_PUSHGATEWAY").is_none(),
            "promtool is required in CI"
        );
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

/// A real Prometheus Pushgateway (Debian's `prometheus-pushgateway`) on 127.0.0.1, stopped
/// when dropped; `None` where it is not installed (CI installs it and sets
/// AOS_TEST_REQUIRE_PUSHGATEWAY=1, which makes it mandatory).
struct Pushgateway {
    child: std::process::Child,
    base: String,
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn pushgateway() -> Option<Pushgateway> {
    let bin = ["prometheus-pushgateway", "pushgateway"].into_iter().find(|b| {
        std::process::Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let Some(bin) = bin else {
        assert!(
            std::env::var_os("AOS_TEST_REQUIRE_PUSHGATEWAY").is_none(),
            "AOS_TEST_REQUIRE_PUSHGATEWAY is set but no pushgateway is installed"
        );
        eprintln!("note: no prometheus-pushgateway installed; the push test is skipped");
        return None;
    };
    let port = free_port();
    let child = std::process::Command::new(bin)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pg = Pushgateway {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..250 {
        if reqwest::get(format!("{}/-/ready", pg.base))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Some(pg);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the pushgateway did not start");
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        labels.iter().all(|x| set.contains(x)).then(|| value.parse().ok())?
    })
}

/// A CronJob-style run pushes its metrics to the Pushgateway when it ends, successful or not,
/// grouped by job and command, with the failure's cause (before: only the daemon had metrics).
#[tokio::test(flavor = "multi_thread")]
async fn runs_push_their_metrics_to_a_real_pushgateway() {
    let Some(pg) = pushgateway().await else { return };
    let emu = start(emu_config(2, 150)).await;
    let s = setup(&emu, "");
    let extra = format!("\n[metrics]\npush_url = \"{}\"\n", pg.base);
    std::fs::write(&s.config, std::fs::read_to_string(&s.config).unwrap() + &extra).unwrap();
    assert_ok(&cli(&s, &["--now", "2024-03-03T00:00:00Z", "run"], &[]).await);
    std::fs::write(s.dir.path().join("secret"), "wrong\n").unwrap();
    let o = cli(&s, &["--now", "2024-03-03T00:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await;
    assert_eq!(o.status.code(), Some(3));
    let text = reqwest::get(format!("{}/metrics", pg.base)).await.unwrap().text().await.unwrap();
    let run = ["command=\"run\"", "job=\"aos-audit-export\""];
    assert_eq!(sample(&text, "aos_export_records_written_total", &run), Some(300.0), "{text}");
    assert_eq!(sample(&text, "aos_export_runs_ok_total", &run), Some(1.0), "{text}");
    let failed = ["command=\"reconcile\"", "cause=\"auth\"", "job=\"aos-audit-export\""];
    assert_eq!(sample(&text, "aos_export_runs_failed_total", &failed), Some(1.0), "{text}");
    assert!(text.contains("# TYPE aos_export_runs_failed_total counter"), "typed as a counter");
}

/// Every metric the alert rules and the Grafana dashboard use is one the exporter has and
/// docs/operations.md documents (a renamed metric cannot silently blind an alert).
#[test]
fn alerts_and_dashboard_use_only_real_documented_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let docs = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    // Every labelled family given one child, so that each metric shows in the exposition.
    let m = aos_audit_export::metrics::Metrics::new();
    m.api_response(Some(200));
    m.api_retry("throttled");
    m.pass("run", Some("api"), 1.0);
    m.stream_lag("all", 1);
    let exposed = m.encode_classic();
    let mut used = std::collections::BTreeSet::new();
    for f in ["deploy/monitoring/alerts.yaml", "deploy/monitoring/dashboard.json"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        for (i, _) in text.match_indices("aos_export_") {
            let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            used.insert(name);
        }
    }
    assert!(used.len() >= 8, "{used:?}");
    for name in &used {
        let base = name.trim_end_matches("_bucket");
        assert!(
            exposed.contains(&format!("# TYPE {base} ")),
            "{name} is not a metric the exporter has"
        );
        assert!(docs.contains(&format!("`{base}")), "{name} is not documented in docs/operations.md");
    }
}

/// A reconcile longer than its deadline completes across runs: each run re-reads only what the
/// stopped ones did not (before: every run began again at `--from` and redid the same windows,
/// so a reconcile longer than the deadline never finished).
#[tokio::test(flavor = "multi_thread")]
async fn a_reconcile_longer_than_its_deadline_completes_across_runs() {
    let mut cfg = emu_config(6, 400);
    cfg.latency = std::time::Duration::from_millis(150);
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"1d\"\nconcurrency = 1");
    let now = "2024-03-07T00:00:00Z";
    assert_ok(&cli(&s, &["--now", now, "backfill", "--from", "2024-03-01"], &[]).await);
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("concurrency = 1", "concurrency = 1\nrun_deadline = \"1500ms\"");
    std::fs::write(&s.config, text).unwrap();
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 6, "the reconcile never completes");
        let o = cli(&s, &["--now", now, "reconcile", "--from", "2024-03-01"], &[]).await;
        match o.status.code() {
            Some(0) => break,
            Some(75) => continue,
            other => panic!("exit {other:?}: {}", stderr(&o)),
        }
    }
    assert!(runs >= 2, "the deadline stopped at least one run ({runs})");
    let st = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    let reconciled: u64 = st["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["command"] == "reconcile")
        .map(|r| r["windows"].as_u64().unwrap())
        .sum();
    assert_eq!(reconciled, 6, "each of the 6 windows read again once across the runs: {st}");
    let (from, to) = emu.data_range();
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
    // Finished: the next reconcile of the range starts over.
    let text = std::fs::read_to_string(&s.config).unwrap().replace("run_deadline = \"1500ms\"", "");
    std::fs::write(&s.config, text).unwrap();
    let o = cli(&s, &["--now", now, "reconcile", "--from", "2024-03-01"], &[]).await;
    assert!(stdout(&o).contains("from 6 windows"), "{}", stdout(&o));
}

/// `status` reports from the settings the data was written with: given another configuration
/// (the default `export.start` of `30d`, say, rather than the one the export used), it says so
/// and computes the gaps as the writer would; a state that recorded none says it does not know.
#[tokio::test(flavor = "multi_thread")]
async fn status_reports_from_the_settings_the_data_was_written_with() {
    let emu = start(emu_config(3, 100)).await;
    let s = setup(&emu, "window = \"1d\"");
    let now = "2024-03-04T00:00:00Z";
    assert_ok(&cli(&s, &["--now", now, "run"], &[]).await);
    let right = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    assert_eq!(right["settings"]["source"], "recorded", "{right}");
    assert_eq!(right["settings"]["configuration_differs"], false, "{right}");
    assert_eq!(right["streams"][0]["gaps"], serde_json::json!([]), "{right}");
    // Another export.start (a window before the data, never exported).
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let start_line = cfg.lines().find(|l| l.starts_with("start = ")).unwrap().to_string();
    std::fs::write(&s.config, cfg.replace(&start_line, "start = \"2024-02-20\"")).unwrap();
    let other = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    assert_eq!(other["settings"]["configuration_differs"], true, "{other}");
    assert_eq!(
        other["streams"][0]["gaps"], right["streams"][0]["gaps"],
        "gaps as the writer sees them"
    );
    let text = stdout(&cli(&s, &["--now", now, "status"], &[]).await);
    assert!(text.contains("this configuration differs (start \"2024-02-20\""), "{text}");
    // A state without the record (an earlier version's): the configuration's, said so.
    rusqlite::Connection::open(s.state())
        .unwrap()
        .execute("DELETE FROM meta WHERE key = 'written-with'", [])
        .unwrap();
    let unknown = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    assert_eq!(unknown["settings"]["source"], "configuration", "{unknown}");
    assert_ne!(unknown["streams"][0]["gaps"], serde_json::json!([]), "{unknown}");
    assert!(stdout(&cli(&s, &["--now", now, "status"], &[]).await).contains("settings: not recorded"));
    // A relative start is recorded as written, and resolved against status's own now.
    let t = setup(&emu, "window = \"1d\"");
    let cfg = std::fs::read_to_string(&t.config).unwrap();
    let start_line = cfg.lines().find(|l| l.starts_with("start = ")).unwrap().to_string();
    std::fs::write(&t.config, cfg.replace(&start_line, "start = \"3d\"")).unwrap();
    assert_ok(&cli(&t, &["--now", now, "run"], &[]).await);
    let text = stdout(&cli(&t, &["--now", now, "status"], &[]).await);
    assert!(text.contains("export.start 3d"), "{text}");
    assert!(text.contains("coverage: complete from 2024-03-01T00:00:00+00:00"), "{text}");
    assert!(!text.contains("differs"), "{text}");
}

/// Each workload of `deploy/` has its own deadline, and each stops cleanly before Kubernetes
/// would kill it: the 15-minute run at the ConfigMap's `run_deadline`, under its Job's
/// `activeDeadlineSeconds`; the reconcile at its own, under its own; the backfill has none (it
/// runs to its end). A deadline stop (exit 75) ends a scheduled Job rather than retrying it.
#[test]
fn every_workload_has_its_own_deadline_within_kubernetes_limits() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = r#"
import json, sys, yaml
out = {}
for f in sys.argv[1:]:
    for d in yaml.safe_load_all(open(f)):
        if not d or d.get("kind") not in ("CronJob", "Job", "ConfigMap"):
            continue
        key = d["kind"] + "/" + d["metadata"]["name"]
        if d["kind"] == "ConfigMap":
            out[key] = d.get("data", {}).get("config.toml", "")
            continue
        job = d["spec"]["jobTemplate"]["spec"] if d["kind"] == "CronJob" else d["spec"]
        c = job["template"]["spec"]["containers"][0]
        args = c.get("args", [])
        flag = args[args.index("--run-deadline") + 1] if "--run-deadline" in args else None
        out[key] = {"active": job.get("activeDeadlineSeconds"), "run_deadline": flag,
                    "fail_on": [v for r in job.get("podFailurePolicy", {}).get("rules", []) for v in r["onExitCodes"]["values"]]}
print(json.dumps(out))
"#;
    let files = ["cronjob.yaml", "reconcile-cronjob.yaml", "backfill-job.yaml", "base/configmap.yaml"];
    let o = std::process::Command::new("python3")
        .args(["-c", script])
        .args(files.iter().map(|f| root.join("deploy").join(f)))
        .output()
        .expect("python3 runs");
    if String::from_utf8_lossy(&o.stderr).contains("No module named 'yaml'") {
        eprintln!("SKIPPED: PyYAML missing");
        return;
    }
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let w: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let secs = |s: &str| aos_audit_export::config::parse_duration("d", s).unwrap().as_secs();
    let toml = w["ConfigMap/aos-audit-export"].as_str().expect("the ConfigMap's config.toml");
    let line = toml.lines().find(|l| l.trim_start().starts_with("run_deadline")).unwrap();
    let run = secs(line.split('"').nth(1).unwrap());
    let cj = &w["CronJob/aos-audit-export"];
    assert!(cj["run_deadline"].is_null(), "the run takes the ConfigMap's: {cj}");
    assert!(
        run < cj["active"].as_u64().unwrap(),
        "run_deadline {run}s stops the run before Kubernetes: {cj}"
    );
    assert!(cj["fail_on"].as_array().unwrap().contains(&75.into()), "{cj}");
    let rec = &w["CronJob/aos-audit-export-reconcile"];
    let rec_deadline = secs(rec["run_deadline"].as_str().expect("the reconcile has its own"));
    assert!(rec_deadline > run, "a reconcile gets longer than a run: {rec}");
    assert!(rec_deadline < rec["active"].as_u64().unwrap(), "{rec}");
    assert!(rec["fail_on"].as_array().unwrap().contains(&75.into()), "{rec}");
    let back = &w["Job/aos-audit-export-backfill"];
    assert_eq!(back["run_deadline"], "none", "the backfill has none: {back}");
    assert!(back["active"].is_null(), "nor does Kubernetes cut it short: {back}");
}
