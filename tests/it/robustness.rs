//! Issue 17: whatever the API sends is stored as sent, costs memory bounded by configuration,
//! and one record the exporter cannot represent never blocks the export.

use std::path::Path;

use aos_audit_export::dedup::Deduper;
use aos_audit_export::sink::{BufferBudget, Compression, Format, OutRecord, SinkOptions, WindowWriter};

/// Writes each record text (as a page delivers it) through a window writer into `dir`.
fn write_texts(dir: &Path, format: Format, texts: &[&str]) {
    let root = dir.to_path_buf();
    let opts = SinkOptions {
        format,
        compression: Compression::None,
        row_group_rows: 1000,
        file_max_rows: 100_000,
        file_max_bytes: 1 << 30,
        buffer: BufferBudget::new(64 << 20),
    };
    let mut w = WindowWriter::new(opts, "t".into(), chrono::Utc::now(), Box::new(move |rel: &str| root.join(rel)));
    let mut dedup = Deduper::new([], &[]);
    for text in texts {
        aos_audit_export::model::page_index::with_record(text, |rec| {
            let (id, new) = dedup.admit(rec, rec.time.is_some());
            assert!(new);
            w.write(OutRecord {
                rec,
                id: &id,
                time: rec.time,
            })
            .unwrap();
        })
        .unwrap();
    }
    for f in w.finish().unwrap() {
        std::fs::create_dir_all(dir.join(&f.rel_path).parent().unwrap()).unwrap();
        std::fs::rename(&f.temp_path, dir.join(&f.rel_path)).unwrap();
    }
}

/// The text of one string column of every Parquet file under `dir`.
fn parquet_column(dir: &Path, column: &str) -> Vec<Option<String>> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let mut out = Vec::new();
    for path in crate::common::data_files(dir) {
        let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            for (name, field) in row.get_column_iter() {
                if name == column {
                    out.push(match field {
                        Field::Str(s) => Some(s.clone()),
                        _ => None,
                    });
                }
            }
        }
    }
    out
}

/// `additionalDetails` is audit evidence: stored as sent, whitespace between tokens aside.
/// (Before: any whitespace made it go through `serde_json::Value`, which rounded a big integer,
/// re-spelled `1E+2` and `-0`, and dropped the first of two repeated keys.)
#[test]
fn additional_details_are_stored_as_sent() {
    let sent = r#"{ "n": 12345678901234567890123, "e": 1E+2, "z": -0, "k": 1, "k": 2, "s": "a b" }"#;
    let record = format!(r#"{{"actionTime":"2024-03-01T10:00:00Z","additionalDetails":{sent}}}"#);
    let dir = tempfile::tempdir().unwrap();
    write_texts(dir.path(), Format::Parquet, &[&record]);
    assert_eq!(
        parquet_column(dir.path(), "additionalDetails"),
        vec![Some(
            r#"{"n":12345678901234567890123,"e":1E+2,"z":-0,"k":1,"k":2,"s":"a b"}"#.to_string()
        )]
    );
    // NDJSON keeps the whole record's text.
    let dir = tempfile::tempdir().unwrap();
    write_texts(dir.path(), Format::Ndjson, &[&record]);
    let line = std::fs::read_to_string(&crate::common::data_files(dir.path())[0]).unwrap();
    assert!(line.contains(sent), "{line}");
}

/// Records a strict JSON reader refuses (a .NET serializer's lone surrogate for broken user
/// text, a number out of range in a field we keep only as text), with and without `actionTime`.
fn invalid_records() -> Vec<String> {
    vec![
        r#"{"actionName":"Rename","actionTime":"2024-03-01T05:00:00Z","objectName":"report\ud800.docx"}"#.to_string(),
        r#"{"actionName":"Scan","actionTime":"2024-03-01T06:00:00Z","riskScore":1e400}"#.to_string(),
        r#"{"actionName":"NoTime","comment":"\udc00 broken"}"#.to_string(),
    ]
}

/// An emulator serving one day of ordinary records plus [`invalid_records`].
async fn emulator_with_invalid() -> aos_emulator::EmulatorHandle {
    use crate::common::*;
    let mut cfg = emu_config(1, 300);
    cfg.extra_records = invalid_records()
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            (
                day0() + chrono::Duration::hours(5 + i as i64),
                serde_json::json!({ aos_emulator::RAW_EXTRA: raw }),
            )
        })
        .collect();
    start(cfg).await
}

/// Every quarantine line under `out`: (partition folder, the line as JSON).
fn quarantine_lines(out: &Path) -> Vec<(String, serde_json::Value)> {
    let mut lines = Vec::new();
    let Ok(parts) = std::fs::read_dir(out.join("_quarantine")) else {
        return lines;
    };
    for p in parts.flatten() {
        for f in std::fs::read_dir(p.path()).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "no staging file left: {name}");
            for l in std::fs::read_to_string(f.path()).unwrap().lines() {
                lines.push((p.file_name().to_string_lossy().into_owned(), serde_json::from_str(l).unwrap()));
            }
        }
    }
    lines
}

/// One unrepresentable value no longer blocks the export (before: the whole page was refused on
/// every run). By default the record is kept exactly as sent, once, in `_quarantine/dt=…/`,
/// counted in `status`; every other record is exported exactly; re-reads quarantine nothing twice.
#[tokio::test]
async fn unrepresentable_records_are_quarantined_exactly_once() {
    use crate::common::*;
    let emu = emulator_with_invalid().await;
    let s = setup(&emu, "");
    let now = "2024-03-02T01:00:00Z";
    let o = cli(&s, &["--now", now, "backfill", "--from", "2024-03-01"], &[]).await;
    assert_ok(&o);
    assert!(
        stdout(&o).contains("3 records holding text a strict JSON reader refuses"),
        "{}",
        stdout(&o)
    );
    let (from, to) = emu.data_range();
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
    for _ in 0..2 {
        assert_ok(&cli(&s, &["--now", now, "reconcile", "--from", "2024-03-01"], &[]).await);
        assert_ok(&cli(&s, &["--now", now, "run"], &[]).await);
        let lines = quarantine_lines(&s.out());
        let mut raws: Vec<String> = lines.iter().map(|(_, l)| l["raw"].as_str().unwrap().to_string()).collect();
        raws.sort();
        let mut want = invalid_records();
        want.sort();
        assert_eq!(raws, want, "each kept once, byte for byte");
        let mut parts: Vec<&str> = lines.iter().map(|(p, _)| p.as_str()).collect();
        parts.sort();
        assert_eq!(parts, ["dt=2024-03-01", "dt=2024-03-01", "dt=unknown"]);
        for (_, l) in &lines {
            assert!(l["reason"].as_str().unwrap().contains("surrogate") || l["reason"] == "number out of range");
            assert!(l["page"].as_u64().unwrap() >= 1 && l["offset"].as_u64().unwrap() > 0, "{l}");
            assert_eq!(l["_record_id"].as_str().unwrap().len(), 32);
        }
        assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
    }
    let o = cli(&s, &["status", "--json"], &[]).await;
    let st = status_json(&o);
    assert_eq!(st["streams"][0]["quarantined"], 3, "{st}");
    let o = cli(&s, &["verify"], &[]).await;
    assert_ok(&o);
    // The state lost: the lake (markers naming the quarantine files) says what is there.
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    assert_ok(&cli(&s, &["--now", now, "backfill", "--from", "2024-03-01"], &[]).await);
    assert_ok(&cli(&s, &["--now", now, "reconcile", "--from", "2024-03-01"], &[]).await);
    assert_eq!(quarantine_lines(&s.out()).len(), 3, "still once each after a lost state");
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["quarantined"], 3, "{st}");
    assert_eq!(st["streams"][0]["records_written"], 300, "quarantined records are not data: {st}");
}

/// A flawed record without `actionTime` near a window bound comes back from both neighbours'
/// padded queries: it is quarantined once (the neighbour's quarantine counts, as its data does).
#[tokio::test]
async fn a_flawed_unplaced_record_at_a_bound_is_quarantined_once() {
    use crate::common::*;
    let mut cfg = emu_config(1, 50);
    let raw = r#"{"actionName":"NoTime","comment":"\udc00 at a bound"}"#;
    cfg.extra_records = vec![
        (
            day0() + chrono::Duration::milliseconds(3_599_500),
            serde_json::json!({ aos_emulator::RAW_EXTRA: raw }),
        ),
        (
            day0() + chrono::Duration::milliseconds(3_600_400),
            serde_json::json!({"actionName": "NoTimeEither"}),
        ),
    ];
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"1h\"\nconcurrency = 1");
    let now = "2024-03-02T00:00:00Z";
    for args in [
        &["backfill", "--from", "2024-03-01"][..],
        &["reconcile", "--from", "2024-03-01"],
        &["run"],
    ] {
        assert_ok(&cli(&s, &[&["--now", now][..], args].concat(), &[]).await);
        let lines = quarantine_lines(&s.out());
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert_eq!(lines[0].1["raw"], raw);
        assert_eq!(lines[0].0, "dt=unknown");
    }
    let (from, to) = emu.data_range();
    let mut truth = emu.ground_truth(from, to);
    truth.push(serde_json::json!({"actionName": "NoTimeEither"}));
    assert_same_multiset(&read_all(&s.out()), &truth);
}

/// `export.on_invalid_record = "fail"`: the window fails with the record's window, page and
/// byte offset (in the error and in `status`), nothing of it is committed, and the next run
/// fails the same way rather than skip it.
#[tokio::test]
async fn on_invalid_record_fail_names_the_record_and_commits_nothing() {
    use crate::common::*;
    let emu = emulator_with_invalid().await;
    let s = setup(&emu, "on_invalid_record = \"fail\"\nwindow = \"6h\"\nconcurrency = 1");
    for _ in 0..2 {
        let o = cli(&s, &["--now", "2024-03-02T01:00:00Z", "backfill", "--from", "2024-03-01"], &[]).await;
        assert_eq!(o.status.code(), Some(i32::from(aos_audit_export::error::API)), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("on page 1 of the window 2024-03-01 00:00:00 UTC .. 2024-03-01 06:00:00 UTC, at byte")
                && err.contains("lone leading surrogate")
                && err.contains("export.on_invalid_record"),
            "{err}"
        );
        assert!(quarantine_lines(&s.out()).is_empty());
        let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
        let run = &st["runs"][0];
        assert!(run["error"].as_str().unwrap().contains("at byte"), "{run}");
        let rows = read_all(&s.out());
        assert!(
            rows.iter().all(|r| r.record["actionTime"].as_str().unwrap_or("") < "2024-03-01T05"),
            "nothing of the failing window or after it is written"
        );
    }
}

/// A one-route HTTP server on 127.0.0.1 answering every request with `body`, gzip-encoded; it
/// counts the requests and whether each asked for gzip. Stops with the test's runtime.
async fn gzip_server(
    body: Vec<u8>,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::Write as _;
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&body).unwrap();
    let gz = std::sync::Arc::new(gz.finish().unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let asked_gzip = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (r, a) = (requests.clone(), asked_gzip.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (gz, r, a) = (gz.clone(), r.clone(), a.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                r.fetch_add(1, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !text.lines().any(|l| l.starts_with("accept-encoding:") && l.contains("gzip")) {
                    a.store(false, Ordering::SeqCst);
                }
                let header = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    gz.len()
                );
                let _ = conn.write_all(header.as_bytes()).await;
                let _ = conn.write_all(&gz).await;
            });
        }
    });
    (base, requests, asked_gzip)
}

/// Points `s` at `base` for the audit API (the emulator still issues tokens).
fn use_api(s: &crate::common::Setup, emu: &aos_emulator::EmulatorHandle, base: &str, extra_api: &str) {
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("base_url = \"{}\"", emu.base_url()),
        &format!("base_url = \"{base}\"\n{extra_api}"),
    );
    std::fs::write(&s.config, text).unwrap();
}

/// The client asks for compressed pages and reads them (before: a proxy or server that
/// compressed anyway was refused as "not UTF-8").
#[tokio::test]
async fn compressed_pages_are_asked_for_and_read() {
    use crate::common::*;
    let emu = start(emu_config(1, 0)).await;
    let records = [
        serde_json::json!({"actionName": "Login", "actionTime": "2024-03-01T10:00:00Z", "actionUser": "a"}),
        serde_json::json!({"actionName": "Logout", "actionTime": "2024-03-01T11:00:00Z", "actionUser": "a"}),
    ];
    let page = serde_json::json!({"data": records, "nextLink": null}).to_string();
    let (base, requests, asked) = gzip_server(page.into_bytes()).await;
    let s = setup(&emu, "window = \"1d\"");
    use_api(&s, &emu, &base, "");
    assert_ok(&cli(&s, &["--now", "2024-03-02T00:00:00Z", "backfill", "--from", "2024-03-01"], &[]).await);
    assert_same_multiset(&read_all(&s.out()), &records);
    assert!(requests.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        "every request sent Accept-Encoding: gzip"
    );
}

/// `api.max_page_bytes` caps a body after decompression: a gzip bomb (64 MiB of JSON in about
/// 64 KiB) is refused as soon as it passes the cap, not inflated, not retried, with an error
/// naming the setting; so is a plain page over the cap. Nothing is committed.
#[tokio::test]
async fn oversized_and_bomb_pages_are_refused_by_max_page_bytes() {
    use crate::common::*;
    let emu = start(emu_config(1, 300)).await;
    let mut bomb = b"{\"data\":[".to_vec();
    bomb.resize(64 << 20, b' ');
    bomb.extend_from_slice(b"]}");
    let (base, requests, _) = gzip_server(bomb).await;
    let s = setup(&emu, "window = \"1d\"");
    use_api(&s, &emu, &base, "max_page_bytes = \"1MiB\"");
    let o = cli(&s, &["--now", "2024-03-02T00:00:00Z", "backfill", "--from", "2024-03-01"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("exceeds api.max_page_bytes (1048576 bytes"), "{}", stderr(&o));
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1, "not retried");
    assert!(data_files(&s.out()).is_empty());
    // A plain page of 100 records is far over 4 KiB.
    let s = setup(&emu, "");
    use_api(&s, &emu, &emu.base_url(), "max_page_bytes = \"4KiB\"");
    let o = cli(&s, &["--now", "2024-03-02T00:00:00Z", "backfill", "--from", "2024-03-01"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("api.max_page_bytes"), "{}", stderr(&o));
    assert!(data_files(&s.out()).is_empty());
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert!(st["runs"][0]["error"].as_str().unwrap().contains("api.max_page_bytes"), "{st}");
}
