#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code: a panic is the failure report
//! Request concurrency, in one invocation on the same records:
//!
//! 1. A latency-bound API (every page takes `BENCH_LATENCY_MS`, default 40 ms; 28 days × 8,000
//!    records, 1,000 a page): the naive sequential script a user would write (token, then each
//!    day's pages one after another, JSON lines to a file) against the exporter with its
//!    default settings (Parquet, adaptive concurrency).
//! 2. The emulator's capacity model (4 requests served at once at 30 ms, 4 more queued, 429
//!    beyond): every fixed `api.max_concurrency` of a sweep against the adaptive default, in
//!    records/s and 429s received.
//! 3. An idle `run` (nothing new): its wall time and API requests.
//!
//! `cargo bench --bench concurrency` prints one table.

use std::io::Write;
use std::time::{Duration, Instant};

use aos_audit_export::config::RawConfig;
use aos_audit_export::exporter::Exporter;
use aos_emulator::{Capacity, EmulatorConfig, EmulatorHandle};
use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(emu: &EmulatorHandle, dir: &std::path::Path) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.auth.client_id = Some(aos_emulator::DEMO_CLIENT_ID.into());
    raw.auth.client_secret = Some(aos_emulator::DEMO_CLIENT_SECRET.into());
    raw.auth.token_url = Some(emu.token_url());
    raw.api.base_url = Some(emu.base_url());
    raw.export.output = dir.join("out").display().to_string();
    raw.export.lag = "0s".into();
    raw.export.start = emu.data_range().0.to_rfc3339();
    raw.state.path = dir.join("state.db");
    raw
}

/// What a user would write first: one request after another, JSON lines to a file.
async fn naive(emu: &EmulatorHandle, from: DateTime<Utc>, to: DateTime<Utc>, out: &std::path::Path) -> u64 {
    let http = reqwest::Client::new();
    let token: serde_json::Value = http
        .post(emu.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", aos_emulator::DEMO_CLIENT_ID),
            ("client_secret", aos_emulator::DEMO_CLIENT_SECRET),
            ("scope", "audit.read.all"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = token["access_token"].as_str().unwrap().to_string();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    let mut n = 0;
    let mut day = from;
    while day < to {
        let next = day + chrono::Duration::days(1);
        let mut url = format!(
            "{}/aos/audit?startTime={}&endTime={}",
            emu.base_url(),
            day.format("%Y-%m-%dT%H:%M:%SZ"),
            next.format("%Y-%m-%dT%H:%M:%SZ")
        );
        loop {
            let page: serde_json::Value = http.get(&url).bearer_auth(&bearer).send().await.unwrap().json().await.unwrap();
            for r in page["data"].as_array().unwrap() {
                serde_json::to_writer(&mut file, r).unwrap();
                file.write_all(b"\n").unwrap();
                n += 1;
            }
            match page["nextLink"].as_str() {
                Some(l) => url = l.to_string(),
                None => break,
            }
        }
        day = next;
    }
    file.flush().unwrap();
    n
}

/// Backfills everything with `max_concurrency` (0 = adaptive); returns (records, seconds).
async fn export(emu: &EmulatorHandle, max_concurrency: usize, windows: usize) -> (u64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = config(emu, dir.path());
    raw.api.max_concurrency = max_concurrency;
    raw.export.concurrency = windows;
    raw.export.window = "12h".into();
    let ex = Exporter::new(raw.validate(Utc::now()).unwrap()).await.unwrap();
    let (from, to) = emu.data_range();
    let started = Instant::now();
    let s = ex.backfill(from, to, Utc::now(), &CancellationToken::new()).await.unwrap();
    (s.written, started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() {
    let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    println!("| benchmark | records | seconds | records/s | note |");
    println!("|---|---|---|---|---|");

    // 1. Latency-bound API.
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = start;
    cfg.data.days = env("BENCH_DAYS", 28) as u32;
    cfg.data.records_per_day = env("BENCH_PER_DAY", 8000) as u32;
    cfg.page_size = 1000;
    cfg.latency = Duration::from_millis(env("BENCH_LATENCY_MS", 40));
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (from, to) = emu.data_range();
    let dir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let n = naive(&emu, from, to, &dir.path().join("naive.ndjson")).await;
    let naive_s = t.elapsed().as_secs_f64();
    println!(
        "| naive sequential script (latency-bound API) | {n} | {naive_s:.2} | {:.0} | 1 request at a time |",
        n as f64 / naive_s
    );
    let ex = Exporter::new(config(&emu, dir.path()).validate(Utc::now()).unwrap()).await.unwrap();
    let t = Instant::now();
    let s = ex.backfill(from, to, Utc::now(), &CancellationToken::new()).await.unwrap();
    let default_s = t.elapsed().as_secs_f64();
    println!(
        "| exporter, default settings (latency-bound API) | {} | {default_s:.2} | {:.0} | {:.2}x the naive script; final limit {} |",
        s.written,
        s.written as f64 / default_s,
        naive_s / default_s,
        ex.metrics()
            .encode()
            .lines()
            .find(|l| l.starts_with("aos_export_api_concurrency_limit "))
            .unwrap_or("?")
    );
    // 3. Idle run on that state: one run catches up to now (empty days after the data), then
    //    the run that is timed has nothing new (the first exporter releases the lock first).
    drop(ex);
    Exporter::new(config(&emu, dir.path()).validate(Utc::now()).unwrap())
        .await
        .unwrap()
        .run_once(Utc::now(), &CancellationToken::new())
        .await
        .unwrap();
    let before = emu.audit_requests();
    let t = Instant::now();
    let ex = Exporter::new(config(&emu, dir.path()).validate(Utc::now()).unwrap()).await.unwrap();
    let idle = ex.run_once(Utc::now(), &CancellationToken::new()).await.unwrap();
    println!(
        "| idle run (exporter start + run, nothing new) | {} | {:.3} | - | {} API requests |",
        idle.written,
        t.elapsed().as_secs_f64(),
        emu.audit_requests() - before
    );
    drop(emu);

    // 2. Capacity model.
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = start;
    cfg.data.days = env("BENCH_CAP_DAYS", 40) as u32;
    cfg.data.records_per_day = 4000;
    cfg.page_size = 500;
    cfg.latency = Duration::from_millis(30);
    cfg.capacity = Some(Capacity {
        concurrent: 4,
        max_queued: 4,
        retry_after_secs: 1,
    });
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let mut best = (0usize, 0.0f64);
    for fixed in [1usize, 2, 4, 6, 8, 12, 16] {
        let before = emu.counters().over_capacity.load(std::sync::atomic::Ordering::Relaxed);
        let (n, secs) = export(&emu, fixed, 16).await;
        let throttled = emu.counters().over_capacity.load(std::sync::atomic::Ordering::Relaxed) - before;
        let rate = n as f64 / secs;
        if rate > best.1 {
            best = (fixed, rate);
        }
        println!("| capacity model, fixed max_concurrency {fixed} | {n} | {secs:.2} | {rate:.0} | {throttled} x 429 |");
    }
    let before = emu.counters().over_capacity.load(std::sync::atomic::Ordering::Relaxed);
    let (n, secs) = export(&emu, 0, 16).await;
    let throttled = emu.counters().over_capacity.load(std::sync::atomic::Ordering::Relaxed) - before;
    let rate = n as f64 / secs;
    println!(
        "| capacity model, adaptive (default) | {n} | {secs:.2} | {rate:.0} | {throttled} x 429; best fixed ({}) / adaptive = {:.2} |",
        best.0,
        best.1 / rate
    );
}
