//! End-to-end export: ground truth as a multiset, idempotent re-runs, window planning,
//! boundaries, output types.

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn backfill_equals_ground_truth_parquet() {
    let emu = start(emu_config(6, 400)).await;
    let s = setup(&emu, "");
    let (from, to) = range(6);
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-07"], &[]).await;
    assert_ok(&o);
    let truth = emu.ground_truth(from, to);
    // The data set must exercise twins and midnight records, or this test proves little.
    assert!(twin_records(&truth) > 0, "no twins generated");
    assert!(
        truth.iter().any(|r| r["actionTime"].as_str().unwrap().ends_with("T00:00:00Z")),
        "no midnight records"
    );
    let rows = read_all(&s.out());
    assert_same_multiset(&rows, &truth);
    // Partitioned by the UTC day of actionTime.
    for r in &rows {
        let t = r.record["actionTime"].as_str().unwrap();
        assert_eq!(&r.partition[3..], &t[..10], "record in the wrong partition");
    }
    let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.record_id.clone()).collect();
    assert_eq!(ids.len(), rows.len(), "_record_id is unique");
    assert!(staging_files(&s.out()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_equals_ground_truth_ndjson_zstd() {
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "format = \"ndjson\"\ncompression = \"zstd\"");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-05"], &[]).await;
    assert_ok(&o);
    let files = data_files(&s.out());
    assert!(files.iter().all(|f| f.to_string_lossy().ends_with(".ndjson.zst")), "{files:?}");
    let (from, to) = range(4);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn second_run_writes_nothing_new() {
    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "lookback = \"2d\"");
    let now = "2024-03-04T00:00:00Z";
    let first = cli(&s, &["--now", now, "run"], &[]).await;
    assert_ok(&first);
    let files_before = data_files(&s.out());
    let requests_before = emu.audit_requests();
    let second = cli(&s, &["--now", "2024-03-04T01:00:00Z", "run"], &[]).await;
    assert_ok(&second);
    assert!(stdout(&second).contains("wrote 0 new records"), "{}", stdout(&second));
    assert!(emu.audit_requests() > requests_before, "the second run re-read the look-back");
    assert_eq!(data_files(&s.out()), files_before, "no new file");
    let (from, to) = range(3);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_days_with_three_day_windows_is_four_windows() {
    let mut cfg = emu_config(10, 50);
    cfg.page_size = 10_000;
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"3d\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"], &[]).await);
    assert_eq!(emu.audit_requests(), 4, "one single-page request per window");
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["windows_committed"], 4);
    // Re-running the finished backfill asks the API nothing.
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"], &[]).await);
    assert_eq!(emu.audit_requests(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_types_and_unknown_fields_round_trip() {
    use parquet::basic::{LogicalType, TimeUnit};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let emu = start(emu_config(10, 400)).await;
    let s = setup(&emu, "");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-11"], &[]).await);
    let file = &data_files(&s.out())[0];
    let reader = SerializedFileReader::new(std::fs::File::open(file).unwrap()).unwrap();
    let schema = reader.metadata().file_metadata().schema_descr();
    let col = |name: &str| {
        (0..schema.num_columns())
            .map(|i| schema.column(i))
            .find(|c| c.name() == name)
            .unwrap()
    };
    match col("actionTime").logical_type_ref() {
        Some(LogicalType::Timestamp(t)) => {
            assert!(t.is_adjusted_to_u_t_c);
            assert!(matches!(t.unit, TimeUnit::MICROS));
        }
        other => panic!("actionTime logical type {other:?}"),
    }
    for name in ["actionName", "additionalDetails", "_record_id", "_extra"] {
        assert!(matches!(col(name).logical_type_ref(), Some(LogicalType::String)), "{name} is UTF8");
    }
    // Statistics where they can prune a scan; none for ids, free text and JSON.
    let rg = reader.metadata().row_group(0);
    let stats = |name: &str| {
        rg.columns()
            .iter()
            .find(|c| c.column_descr().name() == name)
            .unwrap()
            .statistics()
            .is_some_and(|s| s.min_bytes_opt().is_some())
    };
    for name in ["actionTime", "actionName", "actionUser", "status"] {
        assert!(stats(name), "{name} has min/max statistics");
    }
    for name in aos_audit_export::sink::parquet::NO_STATISTICS {
        assert!(!stats(name), "{name} has no statistics");
    }
    // Enumerations are left uncompressed (dictionary indices); text is zstd.
    let codec = |name: &str| rg.columns().iter().find(|c| c.column_descr().name() == name).unwrap().compression();
    for name in aos_audit_export::sink::parquet::UNCOMPRESSED {
        assert_eq!(codec(name), parquet::basic::Compression::UNCOMPRESSED, "{name}");
    }
    for name in ["actionUser", "actionParameters", "_record_id", "actionTime"] {
        assert!(matches!(codec(name), parquet::basic::Compression::ZSTD(_)), "{name}");
    }
    // Records with fields the schema does not know keep them (through `_extra`).
    let (from, to) = range(10);
    let truth = emu.ground_truth(from, to);
    let unknown = truth.iter().filter(|r| r.get("riskScore").is_some()).count();
    assert!(unknown > 0, "the data set has records with unknown fields");
    let rows = read_all(&s.out());
    assert_eq!(rows.iter().filter(|r| r.record.get("riskScore").is_some()).count(), unknown);
    assert_same_multiset(&rows, &truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn files_roll_over_by_rows_and_by_bytes() {
    let emu = start(emu_config(2, 400)).await;
    let (from, to) = range(2);
    let truth = emu.ground_truth(from, to);
    let s = setup(&emu, "file_max_rows = 150");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    let files = data_files(&s.out());
    assert!(files.len() >= 6, "400 rows a day in files of at most 150: {files:?}");
    assert!(files.iter().any(|f| f.to_string_lossy().ends_with("-p002.parquet")));
    assert_same_multiset(&read_all(&s.out()), &truth);

    let s = setup(&emu, "format = \"ndjson\"\nfile_max_bytes = \"40KiB\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    let files = data_files(&s.out());
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() < 40 * 1024 + 4096,
            "{f:?} rolled over near 40 KiB"
        );
    }
    assert_same_multiset(&read_all(&s.out()), &truth);

    // Parquet measures its size once a batch of rows is encoded: small batches (row groups of
    // 100) keep the roll-over near the limit.
    let s = setup(&emu, "file_max_bytes = \"48KiB\"\nrow_group_rows = 100");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    let files = data_files(&s.out());
    assert!(files.len() >= 4, "{files:?}");
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() < 48 * 1024 + 32 * 1024,
            "{f:?} rolled over near 48 KiB"
        );
    }
    assert_same_multiset(&read_all(&s.out()), &truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn state_holds_no_per_record_keys_and_rereads_find_every_record() {
    let per_day = 300;
    let emu = start(emu_config(12, per_day)).await;
    let s = setup(&emu, "lookback = \"2h\"");
    assert_ok(&cli(&s, &["--now", "2024-03-13T00:00:00Z", "run"], &[]).await);
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    let written = st["streams"][0]["records_written"].as_u64().unwrap();
    assert_eq!(written, 12 * per_day as u64);
    // Dedup keys are read back from the lake, so the state does not grow with records: a
    // dozen windows, the manifest and the run history fit in a few pages.
    let size = std::fs::metadata(s.state()).unwrap().len();
    assert!(size < 200 * 1024, "state is {size} bytes for {written} records");
    // And the look-back re-read still finds every re-read record known.
    let o = cli(&s, &["--now", "2024-03-13T01:00:00Z", "run"], &[]).await;
    assert!(stdout(&o).contains("wrote 0 new records"), "{}", stdout(&o));
}

/// Values the emulator never sends still survive both sinks: the record read back (Parquet
/// columns + `_extra`, or the NDJSON line) equals what the API sent.
#[test]
fn odd_values_round_trip_through_both_sinks() {
    use aos_audit_export::dedup::Deduper;
    use aos_audit_export::sink::{BufferBudget, SinkOptions, WindowWriter};
    use aos_audit_export::sink::{Compression, Format};
    use serde_json::json;
    let records = [
        json!({"actionName": 42, "actionTime": "2024-03-01T10:00:00Z", "status": true}),
        json!({"actionTime": "2024-03-01T10:00:00.1234567Z", "additionalDetails": "plain text, not JSON"}),
        json!({"actionTime": "2024-03-01T11:00:00Z", "additionalDetails": {"nested": {"a": [1, 2, null]}}, "comment": "quote \" newline \n tab \t ü"}),
        json!({"actionTime": "next tuesday", "actionName": "Login"}),
        json!({"actionTime": 1700000000, "actionUser": "x"}),
        json!({"actionName": "no time at all", "brandNewField": {"k": "v"}}),
        json!({}),
    ];
    // As a page body can spell them: pretty-printed, escaped, with a repeated key.
    let texts: Vec<String> = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .chain([
            "{\n  \"actionName\" : \"caf\\u00e9 \\/ x\",\r\n \"actionTime\": \"2024-03-01T12:00:00Z\" , \"extra\" : [ 1 , 2 ] }"
                .to_string(),
            r#"{"actionName":"first","actionName":"second","actionTime":"2024-03-01T13:00:00.5Z"}"#.to_string(),
            r#"{"":"empty key","actionTime":"2024-03-01T14:00:00Z"}"#.to_string(),
            "{\r\n\"actionTime\":\"2024-03-01T15:00:00Z\",\r\n\"riskScore\":1e2,\"k\":\"\\u00e9\"\r\n}".to_string(),
        ])
        .collect();
    let records: Vec<serde_json::Value> = texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
    for (format, compression) in [(Format::Parquet, Compression::Zstd(3)), (Format::Ndjson, Compression::Gzip)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let opts = SinkOptions {
            format,
            compression,
            row_group_rows: 2,
            file_max_rows: 100,
            file_max_bytes: 1 << 30,
            buffer: BufferBudget::new(64 << 20),
        };
        let mut w = WindowWriter::new(opts, "t".into(), chrono::Utc::now(), Box::new(move |rel: &str| root.join(rel)));
        let mut dedup = Deduper::new([], &[]);
        for text in &texts {
            assert!(admit_and_write(&mut w, &mut dedup, text, true));
        }
        let files = w.finish().unwrap();
        assert!(
            files.iter().any(|f| f.partition == "dt=unknown"),
            "records without a usable time are kept"
        );
        let rows = read_all(dir.path());
        assert_same_multiset(&rows, &records);
    }
}

/// Reads `text` as a page would deliver it, admits it and writes it if new; whether it was new.
fn admit_and_write(
    w: &mut aos_audit_export::sink::WindowWriter,
    dedup: &mut aos_audit_export::dedup::Deduper,
    text: &str,
    placed: bool,
) -> bool {
    use aos_audit_export::sink::OutRecord;
    aos_audit_export::model::page_index::with_record(text, |rec| {
        let (id, new) = dedup.admit(rec, placed && rec.time.is_some());
        if new {
            w.write(OutRecord {
                rec,
                id: &id,
                time: rec.time,
            })
            .unwrap();
        }
        new
    })
    .unwrap()
}

/// `export.buffer_memory` bounds the row groups in progress across every open file: with a
/// small budget, seven partitions written at once stay near it (row groups end early), and
/// every record is still there; with a large one the same writes buffer far more.
#[test]
fn row_group_memory_is_shared_and_bounded() {
    use aos_audit_export::dedup::Deduper;
    use aos_audit_export::sink::{BufferBudget, Compression, Format, SinkOptions, WindowWriter};
    let mut spec = aos_emulator::DataSpec {
        seed: 5,
        start: day0(),
        days: 7,
        records_per_day: 1500,
        max_delay: chrono::Duration::zero(),
    };
    spec.days = 7;
    let mut texts = Vec::new();
    for d in 0..7 {
        texts.extend(aos_emulator::data::generate_day(&spec, d).into_iter().map(|r| r.json.to_string()));
    }
    // Interleave the days, as a window's pages may.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|i| (i % 1500, i / 1500));
    let run = |limit: usize| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let budget = BufferBudget::new(limit);
        let opts = SinkOptions {
            format: Format::Parquet,
            compression: Compression::Zstd(3),
            row_group_rows: 1_000_000,
            file_max_rows: 1_000_000,
            file_max_bytes: 1 << 40,
            buffer: budget.clone(),
        };
        let mut w = WindowWriter::new(opts, "t".into(), chrono::Utc::now(), Box::new(move |rel: &str| root.join(rel)));
        let mut dedup = Deduper::new([], &[]);
        for i in &order {
            assert!(
                admit_and_write(&mut w, &mut dedup, &texts[*i], true),
                "every record is new, twins too"
            );
        }
        let files = w.finish().unwrap();
        let peak = budget.high_water();
        assert_eq!(budget.used(), 0, "closed files give their memory back");
        let rows = read_all(dir.path());
        let truth: Vec<serde_json::Value> = texts.iter().map(|t| serde_json::from_str(t).unwrap()).collect();
        assert_same_multiset(&rows, &truth);
        let groups: usize = files
            .iter()
            .map(|f| {
                let file = std::fs::File::open(&f.temp_path).unwrap();
                parquet::file::reader::SerializedFileReader::new(file)
                    .map(|r| parquet::file::reader::FileReader::metadata(&r).num_row_groups())
                    .unwrap()
            })
            .sum();
        (peak, groups, files.len())
    };
    let (big_peak, big_groups, n) = run(1 << 30);
    assert_eq!((big_groups, n), (7, 7), "unbounded: one row group per day file");
    let limit = 1 << 20;
    let (peak, groups, _) = run(limit);
    assert!(groups > 7, "row groups ended early under the budget ({groups})");
    // Over the limit by at most one encoded batch per open file (each holds one before it
    // can flush).
    assert!(peak < 2 * limit, "peak {peak} with a {limit} budget");
    assert!(big_peak > 2 * peak, "the budget made a difference: {big_peak} vs {peak}");
}

/// With `export.dedup_memory` far below one window's ids, windows in flight wait for the
/// oldest before each page: the backfill still completes (the oldest always reads on), in
/// order, exactly once; a tiny `export.buffer_memory` ends row groups early without loss.
#[tokio::test(flavor = "multi_thread")]
async fn memory_limits_throttle_without_losing_or_stalling() {
    let mut cfg = emu_config(4, 1500);
    cfg.page_size = 100;
    // Slow enough pages that the younger windows wait longer than the gate's patience.
    cfg.latency = std::time::Duration::from_millis(60);
    let emu = start(cfg).await;
    let s = setup(
        &emu,
        "window = \"12h\"\nconcurrency = 6\ndedup_memory = \"1KiB\"\nbuffer_memory = \"64KiB\"",
    );
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-05"], &[]),
    )
    .await
    .expect("the backfill did not stall");
    assert_ok(&o);
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(log.contains("export.dedup_memory reached"), "the gate made windows wait: {log}");
    // A window that waits finishes its open file first; its later records start a next part.
    let parts = data_files(&s.out())
        .iter()
        .filter(|f| !f.file_name().unwrap().to_string_lossy().contains("-p000."))
        .count();
    assert!(parts > 0, "no window finished its files before waiting");
    let (from, to) = range(4);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

/// A partition's file that gets no record for 50,000 of the window's records is finished
/// early (freeing its encoder), and a later record of that day starts the next part: pages
/// in time order keep few files open; every record is still written once.
#[test]
fn idle_partition_files_are_finished_early() {
    use aos_audit_export::dedup::Deduper;
    use aos_audit_export::sink::{BufferBudget, Compression, Format, SinkOptions, WindowWriter};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let opts = SinkOptions {
        format: Format::Ndjson,
        compression: Compression::None,
        row_group_rows: 1000,
        file_max_rows: 1_000_000,
        file_max_bytes: 1 << 40,
        buffer: BufferBudget::new(1 << 20),
    };
    let mut w = WindowWriter::new(opts, "t".into(), chrono::Utc::now(), Box::new(move |rel: &str| root.join(rel)));
    let mut dedup = Deduper::new([], &[]);
    let mut truth = Vec::new();
    // Day 1, then 60,000 records of day 2, then day 1 again.
    let days = std::iter::repeat_n(1, 10)
        .chain(std::iter::repeat_n(2, 60_000))
        .chain(std::iter::repeat_n(1, 10));
    for (i, d) in days.enumerate() {
        let text = format!(r#"{{"actionName":"n{i}","actionTime":"2024-03-0{d}T00:00:{:02}Z"}}"#, i % 60);
        assert!(admit_and_write(&mut w, &mut dedup, &text, true));
        truth.push(serde_json::from_str::<serde_json::Value>(&text).unwrap());
    }
    let files = w.finish().unwrap();
    let day1: Vec<_> = files.iter().filter(|f| f.partition == "dt=2024-03-01").collect();
    let day2: Vec<_> = files.iter().filter(|f| f.partition == "dt=2024-03-02").collect();
    assert_eq!(day1.len(), 2, "day 1's first file was finished while idle: {day1:?}");
    assert_eq!(day2.len(), 1);
    assert!(day1.iter().all(|f| f.rows == 10));
    for f in &files {
        let dest = dir.path().join(&f.rel_path);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::rename(&f.temp_path, dest).unwrap();
    }
    assert_same_multiset(&read_all(dir.path()), &truth);
}

/// The README's first command as a new user runs it: `demo` exports the emulator's data (and
/// fails if the count differs from the ground truth), a second `demo` writes nothing, and the
/// `verify` command it prints checks every file.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_exports_everything_once_and_its_verify_hint_works() {
    let dir = tempfile::tempdir().unwrap();
    let demo = || async {
        let o = tokio::process::Command::new(BIN)
            .args(["demo"])
            .current_dir(dir.path())
            .env_remove("RUST_LOG")
            .output()
            .await
            .unwrap();
        assert_ok(&o);
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let first = demo().await;
    let summary = first.lines().find(|l| l.starts_with("demo: ")).expect("a summary line");
    let n = |after: &str| -> u64 {
        let rest = &summary[summary.find(after).unwrap_or_else(|| panic!("{after} in {summary}")) + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    assert!(n("this run wrote ") > 50_000, "{summary}");
    assert_eq!(n("this run wrote "), n("ground truth "), "{summary}");
    let second = demo().await;
    assert!(second.contains("this run wrote 0 new"), "{second}");
    let hint = first
        .lines()
        .find_map(|l| l.trim().strip_prefix("verify: "))
        .expect("a verify hint");
    let words: Vec<&str> = hint.split_whitespace().collect();
    assert_eq!(words[0], "aos-audit-export");
    let o = tokio::process::Command::new(BIN)
        .args(&words[1..])
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    assert_ok(&o);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("0 problems") && out.contains(&format!("{} rows", n("this run wrote "))),
        "{out}"
    );
}
