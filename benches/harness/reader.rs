//! A year of 15-minute runs into a Delta table, and how long a reader takes to open it.
//!
//! The log is written as the exporter writes it, without the data files (opening a table reads
//! its log only): per day 96 commits that each add one file of a 15-minute window with its
//! `txn`, and the day's compaction once it is closed (96 removes, one add, `dataChange =
//! false`), a little over two hours into the next day. Measured: `deltalake` (PyPI, delta-rs)
//! opening the table and listing its active files, and the exporter's own snapshot read
//! (`delta_kernel`, as every run does), first with no checkpoint, then with the checkpoint the
//! exporter's checkpoint interval leaves within 10 commits of the end (written by the exporter's
//! code at the last version).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};

/// Writes version 0 through the exporter, then `days` of commits; returns the last version.
pub async fn write_year(root: &Path, days: i64) -> u64 {
    std::fs::create_dir_all(root).unwrap();
    let table = table(root);
    table.create_if_missing(&aos_audit_export::sink::parquet::schema()).await.unwrap();
    let log = root.join("_delta_log");
    let day0 = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let stamp = |t: DateTime<Utc>| t.format("%Y%m%dT%H%M%SZ").to_string();
    let mut version = 0u64;
    let mut txn = 0u64;
    let mut write = |lines: &[serde_json::Value]| {
        version += 1;
        let mut f = std::io::BufWriter::new(std::fs::File::create(log.join(format!("{version:020}.json"))).unwrap());
        for l in lines {
            serde_json::to_writer(&mut f, l).unwrap();
            f.write_all(b"\n").unwrap();
        }
        f.flush().unwrap();
    };
    let files_of = |d: i64| -> Vec<(String, String)> {
        let day = day0 + Duration::days(d);
        let dt = day.format("%Y-%m-%d").to_string();
        (0..96)
            .map(|r| {
                let (s, e) = (day + Duration::minutes(15 * r), day + Duration::minutes(15 * (r + 1)));
                (
                    dt.clone(),
                    format!("dt={dt}/all-{}-{}-g0-{:08x}-p000.parquet", stamp(s), stamp(e), (d * 96 + r) as u32),
                )
            })
            .collect()
    };
    let mut previous: Vec<(String, String)> = Vec::new();
    for d in 0..days {
        let files = files_of(d);
        for (r, (dt, path)) in files.iter().enumerate() {
            let at = (day0 + Duration::days(d) + Duration::minutes(15 * (r as i64 + 1))).timestamp_millis();
            txn += 1;
            write(&[
                serde_json::json!({"commitInfo": {"timestamp": at, "operation": "WRITE", "operationParameters": {},
                    "kernelVersion": "v0.30.1", "engineInfo": "aos-audit-export/bench"}}),
                serde_json::json!({"add": {"path": path, "partitionValues": {"dt": dt}, "size": 60_000,
                    "modificationTime": at, "dataChange": true,
                    "stats": "{\"numRecords\":200,\"tightBounds\":true}"}}),
                serde_json::json!({"txn": {"appId": "aos-audit-export/all", "version": txn, "lastUpdated": at}}),
            ]);
            // The previous day closes a little over two hours into this one.
            if r == 9 && !previous.is_empty() {
                let mut lines = vec![serde_json::json!({"commitInfo": {"timestamp": at, "operation": "OPTIMIZE",
                    "operationParameters": {}, "kernelVersion": "v0.30.1", "engineInfo": "aos-audit-export/bench"}})];
                for (dt, p) in &previous {
                    lines.push(
                        serde_json::json!({"remove": {"path": p, "deletionTimestamp": at, "dataChange": false,
                        "extendedFileMetadata": true, "partitionValues": {"dt": dt}, "size": 60_000}}),
                    );
                }
                let dt = &previous[0].0;
                lines.push(
                    serde_json::json!({"add": {"path": format!("dt={dt}/compacted-{d:08x}-p000.parquet"),
                    "partitionValues": {"dt": dt}, "size": 96 * 55_000, "modificationTime": at, "dataChange": false,
                    "stats": "{\"numRecords\":19200,\"tightBounds\":true}"}}),
                );
                write(&lines);
                previous.clear();
            }
        }
        previous = files;
    }
    version
}

fn table(root: &Path) -> aos_audit_export::store::delta::DeltaTable {
    aos_audit_export::store::Store::open(root.to_str().unwrap(), &root.join("_spool"))
        .unwrap()
        .delta_table()
        .unwrap()
}

/// The exporter's code writes a checkpoint of the last version.
pub async fn checkpoint(root: &Path) -> u64 {
    table(root).checkpoint_latest().await.unwrap()
}

/// Seconds the exporter takes to read the latest snapshot's active files (best of 3), and
/// how many there are.
pub async fn kernel_open(root: &Path) -> (f64, usize) {
    let mut best = f64::MAX;
    let mut n = 0;
    for _ in 0..3 {
        let t = Instant::now();
        n = table(root).view().await.unwrap().files.len();
        best = best.min(t.elapsed().as_secs_f64());
    }
    (best, n)
}

const OPEN: &str = r#"
import os, sys, time
from deltalake import DeltaTable
best = None
for _ in range(3):
    t0 = time.perf_counter()
    t = DeltaTable(sys.argv[1])
    n = len(t.file_uris())
    dt = time.perf_counter() - t0
    best = dt if best is None else min(best, dt)
print(best, n, t.version())
sys.stdout.flush()
os._exit(0)
"#;

/// Seconds `deltalake` takes to open the table and list its active files (best of 3), and how
/// many there are; `None` when the package is missing.
pub fn deltalake_open(root: &Path) -> Option<(f64, usize)> {
    let o = std::process::Command::new("python3").args(["-c", OPEN]).arg(root).output().ok()?;
    if !o.status.success() {
        eprintln!("deltalake: {}", String::from_utf8_lossy(&o.stderr));
        return None;
    }
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}
