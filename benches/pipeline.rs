#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report
//! Throughput and peak memory of fingerprint + dedup + encode for one 1,000,000-record window.
//!
//! `cargo bench --bench pipeline` runs each case in a child process (so peak RSS, read from
//! /proc/self/status VmHWM, is the case's own) and prints records/s and peak memory. Records
//! come from the emulator's generator in pages of 10,000, the way a window arrives from the API.

use std::time::Instant;

use aos_audit_export::api::{Page, page};
use aos_audit_export::dedup::Deduper;
use aos_audit_export::model::record::Record;
use aos_audit_export::sink::{BufferBudget, OutRecord, SinkOptions, WindowWriter};
use aos_audit_export::sink::{Compression, Format};
use aos_emulator::DataSpec;
use chrono::{Duration, TimeZone, Utc};

/// mimalloc: records are allocated and freed per page; glibc malloc spent a third of the
/// pipeline's time there (see the pipeline benchmark).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: usize = 1_000_000;
const PAGE: u32 = 10_000;

fn kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn run_case(case: &str) {
    let dir = tempfile::tempdir().unwrap();
    let sink = match case {
        "parquet" => Some(SinkOptions {
            format: Format::Parquet,
            compression: if std::env::var("BENCH_SNAPPY").is_ok() {
                Compression::Snappy
            } else {
                Compression::Zstd(3)
            },
            row_group_rows: std::env::var("BENCH_ROW_GROUP").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000),
            file_max_rows: 1_000_000,
            file_max_bytes: 1 << 40,
            buffer: BufferBudget::new(64 << 20),
        }),
        "ndjson" => Some(SinkOptions {
            format: Format::Ndjson,
            compression: Compression::None,
            row_group_rows: 100_000,
            file_max_rows: 1_000_000,
            file_max_bytes: 1 << 40,
            buffer: BufferBudget::new(64 << 20),
        }),
        _ => None,
    };
    let base = kib("VmRSS:");
    let root = dir.path().to_path_buf();
    let mut writer = sink.map(|s| WindowWriter::new(s, "bench".into(), Utc::now(), Box::new(move |rel: &str| root.join(rel))));
    let mut dedup = Deduper::new([], false);
    let mut ids = Vec::with_capacity(RECORDS);
    let mut gen_secs = 0.0;
    let started = Instant::now();
    let mut n = 0;
    let mut page = 0u64;
    // 7 = a 7-day window (worst case: 7 open files); BENCH_PARTITIONS=1 for a 1-day window.
    let partitions: u64 = std::env::var("BENCH_PARTITIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(7);
    while n < RECORDS {
        // A page of records: 7 days' worth of partitions, like a 7-day window.
        let g = Instant::now();
        let spec = DataSpec {
            seed: page,
            start: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
            days: 7,
            records_per_day: PAGE,
            max_delay: Duration::zero(),
        };
        let recs = aos_emulator::data::generate_day(&spec, (page % partitions) as u32);
        let body = serde_json::to_vec(&serde_json::json!({
            "nextLink": null,
            "data": recs.iter().map(|r| &r.json).collect::<Vec<_>>(),
        }))
        .unwrap();
        gen_secs += g.elapsed().as_secs_f64();
        let page_of = Page::new(page::parse(body.into()).unwrap(), None);
        for text in page_of.records() {
            let rec = Record::parse(text).unwrap();
            let t = rec.time;
            let (id, new) = dedup.admit(&rec, t.is_some());
            if new {
                if let Some(w) = writer.as_mut() {
                    w.write(OutRecord {
                        rec: &rec,
                        id: &id,
                        time: t,
                    })
                    .unwrap();
                }
                ids.push((id, t.map(|t| t.timestamp_micros())));
            }
        }
        n += recs.len();
        page += 1;
    }
    let files = writer.map(|w| w.finish().unwrap()).unwrap_or_default();
    let secs = started.elapsed().as_secs_f64() - gen_secs;
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    println!(
        "{case:<8} {n} records, {} new, {:>9.0} records/s (excluding generation), peak RSS {:.0} MiB (+{:.0} MiB over start), {} files, {:.1} MiB",
        ids.len(),
        n as f64 / secs,
        kib("VmHWM:") as f64 / 1024.0,
        (kib("VmHWM:").saturating_sub(base)) as f64 / 1024.0,
        files.len(),
        bytes as f64 / 1048576.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--case") {
        run_case(&args[pos + 1]);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for case in ["dedup", "parquet", "ndjson"] {
        let st = std::process::Command::new(&exe).args(["--case", case]).status().unwrap();
        assert!(st.success());
    }
}
