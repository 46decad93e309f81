//! The harness's measured cases: the ones with their own process (pipeline, exports whose
//! peak memory is reported) and the in-process exports.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use aos_audit_export::api::{Page, page};
use aos_audit_export::config::RawConfig;
use aos_audit_export::dedup::{Deduper, Placement, place};
use aos_audit_export::exporter::Exporter;
use aos_audit_export::model::Window;
use aos_audit_export::sink::{BufferBudget, Compression, Format, OutRecord, SinkOptions, WindowWriter};
use aos_emulator::EmulatorHandle;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// What a child reports.
pub struct Measured {
    pub records: u64,
    pub secs: f64,
    pub rss_mib: f64,
    pub state_bytes: u64,
    pub output_bytes: u64,
}

pub fn threads() -> usize {
    std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

fn peak_rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn report(records: u64, secs: f64, state_bytes: u64, output_bytes: u64) {
    println!("RESULT {records} {secs} {} {state_bytes} {output_bytes}", peak_rss_kib());
}

/// Runs this binary with `--case args…` and reads its RESULT line.
pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Measured {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--case")
        .args(args)
        .envs(envs.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "case {args:?} failed: {text}");
    let line = text.lines().find(|l| l.starts_with("RESULT ")).unwrap();
    let v: Vec<&str> = line.split_whitespace().skip(1).collect();
    Measured {
        records: v[0].parse().unwrap(),
        secs: v[1].parse().unwrap(),
        rss_mib: v[2].parse::<f64>().unwrap() / 1024.0,
        state_bytes: v[3].parse().unwrap(),
        output_bytes: v[4].parse().unwrap(),
    }
}

/// A backfill of the emulator's whole range in a child process.
pub fn export(emu: &EmulatorHandle, work: &Path, name: &str, window: &str, envs: &[(&str, &str)]) -> Measured {
    let (from, to) = emu.data_range();
    let dir = work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    spawn(
        &[
            "export",
            &emu.token_url(),
            &emu.base_url(),
            &from.to_rfc3339(),
            &to.to_rfc3339(),
            window,
            &dir.display().to_string(),
        ],
        envs,
    )
}

fn config(token_url: &str, base_url: &str, start: DateTime<Utc>, dir: &Path) -> RawConfig {
    let mut raw = RawConfig::default();
    raw.auth.client_id = Some(aos_emulator::DEMO_CLIENT_ID.into());
    raw.auth.client_secret = Some(aos_emulator::DEMO_CLIENT_SECRET.into());
    raw.auth.token_url = Some(token_url.into());
    raw.api.base_url = Some(base_url.into());
    raw.export.output = dir.join("out").display().to_string();
    raw.export.lag = "0s".into();
    raw.export.start = start.to_rfc3339();
    raw.state.path = dir.join("state.db");
    raw
}

fn dir_bytes(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else { return 0 };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// The child side of every `--case`.
pub async fn child(args: &[String]) {
    // As the binary does (the runtime's threads exist already; the allocator takes it).
    aos_audit_export::tune_allocator();
    match args[0].as_str() {
        "pipeline" => pipeline(Path::new(&args[1])),
        "export" => {
            let from: DateTime<Utc> = args[3].parse().unwrap();
            let to: DateTime<Utc> = args[4].parse().unwrap();
            let dir = Path::new(&args[6]);
            let mut raw = config(&args[1], &args[2], from, dir);
            raw.export.window = args[5].clone();
            // Memory settings to compare (e.g. BENCH_BUFFER_MEMORY=32MiB); defaults otherwise.
            if let Ok(v) = std::env::var("BENCH_BUFFER_MEMORY") {
                raw.export.buffer_memory = v;
            }
            if let Ok(v) = std::env::var("BENCH_DEDUP_MEMORY") {
                raw.export.dedup_memory = v;
            }
            if let Ok(v) = std::env::var("BENCH_FORMAT") {
                raw.export.format = v;
            }
            let ex = Exporter::new(raw.validate(Utc::now()).unwrap()).await.unwrap();
            let t = Instant::now();
            let s = ex.backfill(from, to, Utc::now(), &CancellationToken::new()).await.unwrap();
            let secs = t.elapsed().as_secs_f64();
            drop(ex);
            let state = ["state.db", "state.db-wal"]
                .iter()
                .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
                .sum();
            report(s.written, secs, state, dir_bytes(&dir.join("out")));
        }
        other => panic!("unknown case {other}"),
    }
}

/// The exporter in this process: backfills everything with `export.window = window`,
/// `export.concurrency = windows` and `api.max_concurrency = max` (0 = adaptive); returns
/// (records, seconds).
pub async fn export_here(emu: &EmulatorHandle, dir: &Path, window: &str, windows: usize, max: usize) -> (u64, f64) {
    let (from, to) = emu.data_range();
    let _ = std::fs::remove_dir_all(dir);
    let mut raw = config(&emu.token_url(), &emu.base_url(), from, dir);
    raw.export.window = window.into();
    raw.export.concurrency = windows;
    raw.api.max_concurrency = max;
    let ex = Exporter::new(raw.validate(Utc::now()).unwrap()).await.unwrap();
    let t = Instant::now();
    let s = ex.backfill(from, to, Utc::now(), &CancellationToken::new()).await.unwrap();
    (s.written, t.elapsed().as_secs_f64())
}

/// A `run` on the finished state of `dir` (after one run that catches up to now, which the
/// data range ends long before): (API requests, seconds) of the timed, idle one.
pub async fn idle_run(emu: &EmulatorHandle, dir: &Path) -> (u64, f64) {
    let (from, _) = emu.data_range();
    let cfg = || {
        let mut raw = config(&emu.token_url(), &emu.base_url(), from, dir);
        raw.export.window = "1d".into();
        raw.validate(Utc::now()).unwrap()
    };
    let cancel = CancellationToken::new();
    Exporter::new(cfg()).await.unwrap().run_once(Utc::now(), &cancel).await.unwrap();
    let before = emu.audit_requests();
    let t = Instant::now();
    let idle = Exporter::new(cfg()).await.unwrap().run_once(Utc::now(), &cancel).await.unwrap();
    assert_eq!(idle.written, 0);
    (emu.audit_requests() - before, t.elapsed().as_secs_f64())
}

/// Page parse → records → place → dedup → Parquet, one window per day of the spooled pages,
/// on every core. The pages are read from the spool file as they are processed.
fn pipeline(spool: &Path) {
    // Index: (day start, offset, length) of each page body.
    let mut index: Vec<(i64, u64, usize)> = Vec::new();
    let mut f = std::fs::File::open(spool).unwrap();
    let mut header = [0u8; 12];
    let mut offset = 0u64;
    while f.read_exact(&mut header).is_ok() {
        let day = i64::from_le_bytes(header[..8].try_into().unwrap());
        let len = u32::from_le_bytes(header[8..].try_into().unwrap()) as usize;
        index.push((day, offset + 12, len));
        offset += 12 + len as u64;
        std::io::copy(&mut (&mut f).take(len as u64), &mut std::io::sink()).unwrap();
    }
    let mut days: Vec<i64> = index.iter().map(|p| p.0).collect();
    days.dedup();
    let out = tempfile::tempdir_in(spool.parent().unwrap()).unwrap();
    let sink = SinkOptions {
        format: if std::env::var("BENCH_NDJSON").is_ok() {
            Format::Ndjson
        } else {
            Format::Parquet
        },
        // The default `export.zstd_level`.
        compression: Compression::Zstd(std::env::var("BENCH_ZSTD_LEVEL").ok().and_then(|v| v.parse().ok()).unwrap_or(1)),
        row_group_rows: 50_000,
        file_max_rows: 1_000_000,
        file_max_bytes: 512 << 20,
        buffer: BufferBudget::new(64 << 20),
    };
    let next = AtomicUsize::new(0);
    let written = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads() {
            s.spawn(|| {
                let file = std::fs::File::open(spool).unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(day) = days.get(i) else { break };
                    let start = DateTime::from_timestamp(*day, 0).unwrap();
                    let w = Window {
                        start,
                        end: start + chrono::Duration::days(1),
                    };
                    let root = out.path().to_path_buf();
                    let mut writer =
                        WindowWriter::new(sink.clone(), format!("w{i}"), Utc::now(), Box::new(move |rel: &str| root.join(rel)));
                    let mut dedup = Deduper::new([], &[]);
                    for (_, off, len) in index.iter().filter(|p| p.0 == *day) {
                        let mut body = vec![0u8; *len];
                        file.read_exact_at(&mut body, *off).unwrap();
                        let page = Page::new(page::parse(body.into()).unwrap(), None);
                        for rec in page.records() {
                            let time = match place(&rec, &w) {
                                Placement::In(t) => Some(t),
                                Placement::Out(_) => continue,
                                Placement::Unplaced => None,
                            };
                            let (id, new) = dedup.admit(&rec, time.is_some());
                            if new {
                                writer.write(OutRecord { rec: &rec, id: &id, time }).unwrap();
                                written.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    writer.finish().unwrap();
                }
            });
        }
    });
    let secs = t.elapsed().as_secs_f64();
    report(written.load(Ordering::Relaxed) as u64, secs, 0, dir_bytes(out.path()));
}

/// Delta mode, a CronJob's day: the second day of `emu`'s data read by 96 runs 15 minutes
/// apart (pinned clock, in this process), then compacted once it is closed. Returns the files
/// the day held before and after, and the compaction's seconds.
pub async fn day_of_runs(emu: &EmulatorHandle, dir: &Path) -> (u64, u64, f64) {
    let (from, _) = emu.data_range();
    let _ = std::fs::remove_dir_all(dir);
    let mut raw = config(&emu.token_url(), &emu.base_url(), from, dir);
    raw.export.format = "delta".into();
    raw.export.window = "1d".into();
    raw.export.lookback = "1h".into();
    let day = from + chrono::Duration::days(1);
    let cancel = CancellationToken::new();
    let ex = Exporter::new(raw.validate(day).unwrap()).await.unwrap();
    for i in 0..=96 {
        ex.run_once(day + chrono::Duration::minutes(15 * i), &cancel).await.unwrap();
    }
    let closed = day + chrono::Duration::days(1) + chrono::Duration::minutes(150);
    let t = Instant::now();
    let c = ex.compact(from, closed, closed).await.unwrap();
    (c.files_before, c.files_after, t.elapsed().as_secs_f64())
}
