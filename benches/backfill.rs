#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
//! Backfill of 365 days against the emulator with 100 ms per page, `export.concurrency` 4:
//! wall time against the ideal `pages × latency / concurrency`; then the cost of resuming an
//! interrupted backfill (pages fetched again, since an interrupted window is re-read whole).
//!
//! `cargo bench --bench backfill` (set BENCH_DAYS / BENCH_LATENCY_MS to change the size).

use std::time::{Duration, Instant};

use aos_audit_export::config::RawConfig;
use aos_audit_export::exporter::Exporter;
use aos_emulator::{EmulatorConfig, EmulatorHandle};
use chrono::{TimeZone, Utc};
use tokio_util::sync::CancellationToken;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn exporter(emu: &EmulatorHandle, dir: &std::path::Path, concurrency: usize) -> Exporter {
    let mut raw = RawConfig::local(
        emu.token_url(),
        emu.base_url(),
        aos_emulator::DEMO_CLIENT_ID,
        aos_emulator::DEMO_CLIENT_SECRET,
    );
    raw.export.output = dir.join("out").display().to_string();
    raw.export.concurrency = concurrency;
    raw.state.path = dir.join("state.db");
    Exporter::new(raw.validate(Utc::now()).unwrap()).await.unwrap()
}

#[tokio::main]
async fn main() {
    let days = env("BENCH_DAYS", 365) as u32;
    let latency = Duration::from_millis(env("BENCH_LATENCY_MS", 100));
    let concurrency = env("BENCH_CONCURRENCY", 4) as usize;
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    cfg.data.days = days;
    cfg.data.records_per_day = 1000;
    cfg.page_size = 500;
    cfg.latency = latency;
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (from, to) = emu.data_range();
    let cancel = CancellationToken::new();

    let dir = tempfile::tempdir().unwrap();
    let ex = exporter(&emu, dir.path(), concurrency).await;
    let started = Instant::now();
    let s = ex.backfill(from, to, Utc::now(), &cancel).await.unwrap();
    let wall = started.elapsed().as_secs_f64();
    let ideal = s.pages as f64 * latency.as_secs_f64() / concurrency as f64;
    println!(
        "backfill {days} days: {} records, {} windows, {} pages, wall {wall:.1}s, ideal {ideal:.1}s (pages x {} ms / {concurrency}), ratio {:.2}, {:.0} records/s",
        s.written,
        s.windows,
        s.pages,
        latency.as_millis(),
        wall / ideal,
        s.written as f64 / wall
    );
    let before = emu.audit_requests();
    ex.backfill(from, to, Utc::now(), &cancel).await.unwrap();
    println!("re-running the finished backfill: {} API requests", emu.audit_requests() - before);
    drop(ex);

    // Interrupt a fresh backfill half-way, resume it, and count the pages fetched twice.
    let dir = tempfile::tempdir().unwrap();
    let ex = exporter(&emu, dir.path(), concurrency).await;
    let stop = CancellationToken::new();
    let s2 = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(wall / 2.0)).await;
        s2.cancel();
    });
    let before = emu.audit_requests();
    let first = ex.backfill(from, to, Utc::now(), &stop).await;
    assert!(first.is_err(), "interrupted");
    let second = ex.backfill(from, to, Utc::now(), &cancel).await.unwrap();
    let total = emu.audit_requests() - before;
    println!(
        "interrupted at {:.1}s and resumed: {} pages in all vs {} uninterrupted: {} pages re-fetched (the windows in flight, at most {concurrency}); {} records written after resume",
        wall / 2.0,
        total,
        s.pages,
        total.saturating_sub(s.pages),
        second.written
    );
}
