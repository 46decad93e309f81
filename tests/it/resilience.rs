//! Resilient, complete fetching: injected faults, late records, foreign nextLinks, several
//! streams, the single-instance lock, non-retryable errors and the run deadline.

use std::time::Duration;

use aos_emulator::Faults;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn fifteen_percent_faults_still_exact() {
    let mut cfg = emu_config(60, 150);
    cfg.page_size = 50;
    cfg.faults = Faults::mixed(0.15, 99);
    let emu = start(cfg).await;
    let s = setup(&emu, "concurrency = 4");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-04-30"], &[]).await;
    assert_ok(&o);
    let faults = emu.counters().faults_injected.load(std::sync::atomic::Ordering::Relaxed);
    let total = emu.audit_requests();
    assert!(faults as f64 > total as f64 * 0.10, "faults were injected: {faults} of {total}");
    let (from, to) = range(60);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

/// Runs every 30 minutes of emulated time over the data; returns (exported, truth) counts.
async fn late_arrival(max_delay_h: i64, lag: &str, lookback: &str) -> (usize, usize) {
    let mut cfg = emu_config(2, 300);
    cfg.data.max_delay = chrono::Duration::hours(max_delay_h);
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"6h\"");
    let mut raw = aos_audit_export::config::load(Some(&s.config), &[]).unwrap();
    raw.export.lag = lag.into();
    raw.export.lookback = lookback.into();
    let settings = raw.validate(day0()).unwrap();
    let ex = aos_audit_export::exporter::Exporter::new(settings).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let mut now = day0() + chrono::Duration::minutes(30);
    let end = day0() + chrono::Duration::days(2) + chrono::Duration::hours(max_delay_h + 4);
    while now <= end {
        emu.set_now(Some(now));
        ex.run_once(now, &cancel).await.unwrap();
        now += chrono::Duration::minutes(30);
    }
    let (from, to) = range(2);
    let truth = emu.ground_truth(from, to);
    let rows = read_all(&s.out());
    // Never a duplicate, whatever the delay.
    let got = multiset(rows.iter().map(|r| &r.record));
    let want = multiset(truth.iter());
    for (k, n) in &got {
        assert!(n <= want.get(k).unwrap_or(&0), "duplicate or unknown record {k}");
    }
    (rows.len(), truth.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn late_records_within_lag_plus_lookback_are_caught() {
    let (got, truth) = late_arrival(2, "15m", "3h").await;
    assert_eq!(got, truth, "lag + lookback (3h15m) above the 2h delay misses nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn late_records_beyond_lag_plus_lookback_are_missed() {
    let (got, truth) = late_arrival(4, "15m", "1h").await;
    // Documented limit (docs/operations.md): a record later than lag + lookback is missed.
    assert!(
        got < truth,
        "a 4h delay beyond lag + lookback (1h15m) must lose records ({got} of {truth})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_next_link_is_refused_and_never_sees_the_token() {
    let foreign = start(emu_config(1, 10)).await;
    let mut cfg = emu_config(1, 300);
    cfg.next_link_base = Some(foreign.base_url());
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("refusing nextLink") && err.contains(&foreign.base_url()), "{err}");
    assert_eq!(foreign.audit_requests(), 0, "no request reached the foreign host");
    assert_eq!(emu.audit_requests(), 1, "a refused link is not retried");
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["watermark"], Value::Null, "nothing committed");
    assert!(data_files(&s.out()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn next_link_must_match_scheme_host_and_port() {
    let emu = start(emu_config(1, 10)).await;
    let mut raw = aos_audit_export::config::RawConfig::default();
    raw.auth.client_id = Some("x".into());
    raw.auth.client_secret = Some("y".into());
    raw.api.base_url = Some(emu.base_url());
    let settings = raw.validate(Utc::now()).unwrap();
    let tp = std::sync::Arc::new(aos_audit_export::auth::TokenProvider::new(settings.auth.clone(), reqwest::Client::new()).unwrap());
    let api = aos_audit_export::api::ApiClient::new(settings.api.clone(), reqwest::Client::new(), tp, Default::default());
    let port = emu.addr().port();
    assert!(
        api.check_next_link(&format!("http://127.0.0.1:{port}/aos/audit?skipToken=a"))
            .is_ok()
    );
    for bad in [
        format!("https://127.0.0.1:{port}/aos/audit"),
        format!("http://localhost:{port}/aos/audit"),
        format!("http://127.0.0.1:{}/aos/audit", port + 1),
        "http://127.0.0.1/aos/audit".to_string(),
        "not a url".to_string(),
    ] {
        assert!(api.check_next_link(&bad).is_err(), "{bad} must be refused");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn several_streams_each_with_its_own_watermark() {
    let emu = start(emu_config(3, 400)).await;
    let s = setup(&emu, "");
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "[api]",
        "[[api.streams]]\nname = \"portal\"\nproduct_types = [\"Portal\"]\n\n[[api.streams]]\nproduct_types = [\"Office365Backup\", \"SMP\"]\ngeo_locations = [\"NAM\", \"EUR\"]\n\n[api]",
    );
    // TOML needs [api] keys before the array-of-tables of the same table; rebuild in order.
    let (head, tail) = text.split_once("[[api.streams]]").unwrap();
    let (streams, rest) = tail.split_once("\n[api]").unwrap();
    let (api_keys, after) = rest.split_once("\n\n[export]").unwrap();
    let fixed = format!("{head}[api]{api_keys}\n\n[[api.streams]]{streams}\n\n[export]{after}");
    std::fs::write(&s.config, fixed).unwrap();
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await);
    let (from, to) = range(3);
    let name_of = |t: &str| aos_emulator::data::PRODUCTS.iter().find(|p| p.0 == t).unwrap().1;
    let truth: Vec<Value> = emu
        .ground_truth(from, to)
        .into_iter()
        .filter(|r| {
            let p = r["product"].as_str().unwrap();
            let g = r["geoLocation"].as_str().unwrap();
            p == name_of("Portal") || ((p == name_of("Office365Backup") || p == name_of("SMP")) && (g == "NAM" || g == "EUR"))
        })
        .collect();
    assert!(truth.len() > 100);
    assert_same_multiset(&read_all(&s.out()), &truth);
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    let streams = st["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    for st in streams {
        assert_eq!(st["watermark"], "2024-03-04T00:00:00Z");
    }
    assert!(
        data_files(&s.out())
            .iter()
            .any(|f| f.file_name().unwrap().to_string_lossy().starts_with("portal-"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn second_instance_exits_at_once() {
    let mut cfg = emu_config(10, 100);
    cfg.latency = Duration::from_millis(100);
    let emu = start(cfg).await;
    let s = setup(&emu, "concurrency = 1");
    let mut first = spawn(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"]);
    // Wait until the first one holds the state.
    for _ in 0..100 {
        if emu.audit_requests() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = cli(&s, &["run"], &[]).await;
    assert_eq!(second.status.code(), Some(6), "{}", stderr(&second));
    assert!(stderr(&second).contains("another aos-audit-export is using"), "{}", stderr(&second));
    // The same state through a symlink to its folder, and through a relative path with `..`:
    // the lock is on the file, not on the name (the previous `.lock` beside the name let both
    // run, and they overwrote each other's files).
    let linked = s.dir.path().join("linked-state");
    std::os::unix::fs::symlink(s.state().parent().unwrap(), &linked).unwrap();
    for path in [linked.join("state.db"), s.dir.path().join("state/../state/state.db")] {
        let env = [("AOS_EXPORT_STATE__PATH", path.to_str().unwrap())];
        let other = cli(&s, &["run"], &env).await;
        assert_eq!(other.status.code(), Some(6), "{}: {}", path.display(), stderr(&other));
    }
    assert!(first.wait().await.unwrap().success());
    let (from, to) = range(10);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_request_is_not_retried_and_reports_the_trace_id() {
    let emu = start(emu_config(1, 10)).await;
    // One window at a time, so exactly one request is sent if it is not retried.
    let s = setup(&emu, "concurrency = 1");
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("[api]", "[api]\nproduct_types = [\"NotAProduct\"]");
    std::fs::write(&s.config, text).unwrap();
    let o = cli(&s, &["run"], &[]).await;
    assert_eq!(o.status.code(), Some(4));
    let err = stderr(&o);
    assert!(
        err.contains("HTTP 400") && err.contains("NotAProduct") && err.contains("traceId 00-"),
        "{err}"
    );
    assert_eq!(emu.audit_requests(), 1, "400 is not retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn run_deadline_stops_at_a_consistent_point() {
    let mut cfg = emu_config(10, 100);
    cfg.latency = Duration::from_millis(150);
    let emu = start(cfg).await;
    let s = setup(&emu, "concurrency = 1\nrun_deadline = \"700ms\"");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"], &[]).await;
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(stderr(&o).contains("run_deadline"));
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    let wm: Option<DateTime<Utc>> = st["streams"][0]["watermark"].as_str().map(|w| w.parse().unwrap());
    assert!(wm.is_none_or(|w| w < day0() + chrono::Duration::days(10)), "stopped early");
    assert_eq!(st["runs"][0]["status"], "deadline");
    // The next run finishes the job exactly.
    let text = std::fs::read_to_string(&s.config).unwrap().replace("run_deadline = \"700ms\"", "");
    std::fs::write(&s.config, text).unwrap();
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"], &[]).await);
    let (from, to) = range(10);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}
