//! Fixtures shared by the integration tests: an emulator per test on 127.0.0.1:0, a config
//! pointing at it in a fresh temp dir, running the real binary, and reading the output back
//! (Parquet through the `parquet` crate's row API, independent of the arrow writer).
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use aos_emulator::{EmulatorConfig, EmulatorHandle};
use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Map, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_aos-audit-export");

/// A fixed data start so tests are deterministic.
pub fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
}

pub fn emu_config(days: u32, per_day: u32) -> EmulatorConfig {
    let mut c = EmulatorConfig::default();
    c.data.start = day0();
    c.data.days = days;
    c.data.records_per_day = per_day;
    c.page_size = 100;
    c
}

pub async fn start(cfg: EmulatorConfig) -> EmulatorHandle {
    EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("emulator starts")
}

/// A temp dir with `config.toml` pointing at `emu`; `extra` is appended (TOML sections).
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Setup {
    pub fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state/state.db")
    }
}

pub fn setup(emu: &EmulatorHandle, export_extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), format!("{}\n", aos_emulator::DEMO_CLIENT_SECRET)).unwrap();
    let config = dir.path().join("config.toml");
    let toml = format!(
        r#"[auth]
token_url = "{token}"
client_id = "{client}"
client_secret_file = "{secret}"

[api]
base_url = "{base}"
requests_per_second = 0
retry_initial_backoff = "10ms"
retry_max_backoff = "200ms"

[export]
start = "{start}"
lag = "0s"
output = "{out}"
{export_extra}

[state]
path = "{state}"
"#,
        token = emu.token_url(),
        client = aos_emulator::DEMO_CLIENT_ID,
        secret = dir.path().join("secret").display(),
        base = emu.base_url(),
        start = day0().to_rfc3339(),
        out = dir.path().join("out").display(),
        state = dir.path().join("state/state.db").display(),
    );
    std::fs::write(&config, toml).unwrap();
    Setup { dir, config }
}

/// Runs the binary with `--config` and `args`; environment additions in `env`.
pub async fn cli(s: &Setup, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.arg("--config").arg(&s.config).args(args).env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("binary runs")
}

/// Starts the binary in the background with `--config` and `args`, stdout discarded and stderr
/// going to `stderr`; killed if the test drops it.
fn spawn_with(s: &Setup, args: &[&str], stderr: std::process::Stdio) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts")
}

/// [`spawn_with`] stderr captured in a pipe (read it with `wait_with_output`).
pub fn spawn(s: &Setup, args: &[&str]) -> tokio::process::Child {
    spawn_with(s, args, std::process::Stdio::piped())
}

/// [`spawn_with`] stderr appended to the file `log` (never an undrained pipe: a long-running
/// child that logs a lot would block on a full one). Read it with `std::fs::read_to_string`.
pub fn spawn_logged(s: &Setup, args: &[&str], log: &Path) -> tokio::process::Child {
    spawn_with(s, args, std::fs::File::create(log).expect("log file").into())
}

/// Sends SIGTERM to a child.
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
}

/// Backfills 2024-03-01..04 into `output` (object storage) with `env`, checks nothing was
/// written locally, runs `verify` against the store and returns its stdout.
pub async fn backfill_remote_and_verify(s: &Setup, output: &str, env: &[(&str, &str)]) -> String {
    let o = cli(
        s,
        &["--output", output, "backfill", "--from", "2024-03-01", "--to", "2024-03-04"],
        env,
    )
    .await;
    assert_ok(&o);
    assert!(!s.out().exists(), "nothing written locally");
    let v = cli(s, &["--output", output, "verify"], env).await;
    assert_ok(&v);
    stdout(&v)
}

/// The output is consistent: no staging file left, and `verify` vouches for every data file on
/// disk (each one is in the manifest, with matching bytes, SHA-256 and row count).
pub async fn assert_output_consistent(s: &Setup) {
    assert!(staging_files(&s.out()).is_empty(), "no staging or partial file left");
    let v = cli(s, &["verify"], &[]).await;
    assert_ok(&v);
    let expected = format!("verified {} files", data_files(&s.out()).len());
    assert!(stdout(&v).contains(&expected), "{}", stdout(&v));
}

/// A port that was free a moment ago on 127.0.0.1 (for servers that need one up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Every data file under `out` (skipping hidden and `_` names, as Hive readers do).
pub fn data_files(out: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let Ok(parts) = std::fs::read_dir(out) else { return v };
    for p in parts.flatten() {
        let name = p.file_name().to_string_lossy().into_owned();
        if !name.starts_with("dt=") || !p.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(p.path()).unwrap().flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if !n.starts_with('.') && !n.starts_with('_') {
                v.push(f.path());
            }
        }
    }
    v.sort();
    v
}

/// Files with a staging (`.tmp-`) name anywhere under `out`, at any depth.
pub fn staging_files(out: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut dirs = vec![out.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for f in entries.flatten() {
            if f.path().is_dir() {
                dirs.push(f.path());
            } else if f.file_name().to_string_lossy().starts_with(".tmp-") {
                v.push(f.path());
            }
        }
    }
    v
}

/// One output row: the record as the API sent it (rebuilt), and its metadata.
pub struct Row {
    pub record: Value,
    pub record_id: String,
    pub partition: String,
}

fn read_ndjson(path: &Path) -> Vec<Row> {
    use std::io::Read;
    let raw = std::fs::read(path).unwrap();
    let name = path.to_string_lossy();
    let mut text = Vec::new();
    if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut text).unwrap();
    } else if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(raw.as_slice())
            .unwrap()
            .read_to_end(&mut text)
            .unwrap();
    } else {
        text = raw;
    }
    let partition = path.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Map<String, Value> = serde_json::from_str(l).expect("each line is JSON");
            let id = v
                .remove("_record_id")
                .and_then(|x| x.as_str().map(str::to_string))
                .expect("_record_id");
            assert!(v.remove("_ingested_at").is_some(), "_ingested_at present");
            // Keys the API sent named like exporter columns ride in `_extra`, as in Parquet.
            if let Some(Value::Object(extra)) = v.remove("_extra") {
                v.extend(extra);
            }
            Row {
                record: Value::Object(v),
                record_id: id,
                partition: partition.clone(),
            }
        })
        .collect()
}

fn read_parquet(path: &Path) -> Vec<Row> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let f = std::fs::File::open(path).unwrap();
    let reader = SerializedFileReader::new(f).expect("valid parquet");
    let partition = path.parent().unwrap().file_name().unwrap().to_string_lossy().into_owned();
    let mut rows = Vec::new();
    for row in reader.get_row_iter(None).unwrap() {
        let row = row.unwrap();
        let mut rec = Map::new();
        let mut id = String::new();
        let mut extra: Option<Map<String, Value>> = None;
        let mut action_time: Option<i64> = None;
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("_record_id", Field::Str(s)) => id = s.clone(),
                ("_ingested_at", Field::TimestampMicros(_)) => {}
                ("_extra", Field::Str(s)) => extra = Some(serde_json::from_str(s).expect("_extra is a JSON object")),
                ("_extra", Field::Null) => {}
                ("actionTime", Field::TimestampMicros(us)) => action_time = Some(*us),
                ("actionTime", Field::Null) => {}
                ("additionalDetails", Field::Str(s)) => {
                    rec.insert(name.clone(), serde_json::from_str(s).expect("additionalDetails is JSON"));
                }
                (_, Field::Str(s)) => {
                    rec.insert(name.clone(), Value::String(s.clone()));
                }
                (_, Field::Null) => {}
                (n, other) => panic!("unexpected type for {n}: {other:?}"),
            }
        }
        if let Some(us) = action_time {
            let t = DateTime::from_timestamp_micros(us).unwrap();
            rec.insert(
                "actionTime".into(),
                Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
            );
        }
        if let Some(e) = extra {
            for (k, v) in e {
                rec.insert(k, v);
            }
        }
        rows.push(Row {
            record: Value::Object(rec),
            record_id: id,
            partition: partition.clone(),
        });
    }
    rows
}

pub fn read_all(out: &Path) -> Vec<Row> {
    read_files(&data_files(out))
}

/// The rows of these data files (Parquet or NDJSON by name).
pub fn read_files(files: &[PathBuf]) -> Vec<Row> {
    files
        .iter()
        .flat_map(|p| {
            if p.to_string_lossy().ends_with(".parquet") {
                read_parquet(p)
            } else {
                read_ndjson(p)
            }
        })
        .collect()
}

/// Numbers by value (`5` and `5.0` alike) and keys sorted, at any depth.
fn numbers_by_value(v: Value) -> Value {
    match v {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Number(n), Value::Number),
        Value::Array(xs) => Value::Array(xs.into_iter().map(numbers_by_value).collect()),
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = m.into_iter().map(|(k, v)| (k, numbers_by_value(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        other => other,
    }
}

/// A comparable form of a record: nulls dropped (Parquet cannot tell absent from null; the
/// API may omit them), numbers by value and `actionTime` as an exact instant.
pub fn normalize(v: &Value) -> String {
    let mut m: Map<String, Value> = match numbers_by_value(v.clone()) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    m.retain(|_, v| !v.is_null());
    if let Some(Value::String(t)) = m.get("actionTime")
        && let Ok(p) = DateTime::parse_from_rfc3339(t)
    {
        let t = p.with_timezone(&Utc);
        m.insert(
            "actionTime".into(),
            Value::String(format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())),
        );
    }
    let mut keys: Vec<_> = m.keys().cloned().collect();
    keys.sort();
    let sorted: Map<String, Value> = keys.into_iter().map(|k| (k.clone(), m[&k].clone())).collect();
    Value::Object(sorted).to_string()
}

pub fn multiset<'a>(records: impl IntoIterator<Item = &'a Value>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in records {
        *m.entry(normalize(r)).or_insert(0) += 1;
    }
    m
}

/// Asserts the output equals the ground truth as a multiset, with a readable diff summary.
pub fn assert_same_multiset(out: &[Row], truth: &[Value]) {
    let got = multiset(out.iter().map(|r| &r.record));
    let want = multiset(truth.iter());
    let lost: usize = want.iter().map(|(k, n)| n.saturating_sub(*got.get(k).unwrap_or(&0))).sum();
    let dup: usize = got.iter().map(|(k, n)| n.saturating_sub(*want.get(k).unwrap_or(&0))).sum();
    let example = |a: &HashMap<String, usize>, b: &HashMap<String, usize>| {
        a.iter()
            .find(|(k, n)| **n > *b.get(*k).unwrap_or(&0))
            .map(|(k, _)| k.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        (lost, dup),
        (0, 0),
        "lost {lost}, duplicated/unknown {dup}; output {} rows, truth {}\n  e.g. lost: {}\n  e.g. extra: {}",
        out.len(),
        truth.len(),
        example(&want, &got),
        example(&got, &want)
    );
    assert_eq!(out.len(), truth.len());
}

/// Count of records that have at least one identical twin in `truth`.
pub fn twin_records(truth: &[Value]) -> usize {
    multiset(truth.iter()).values().filter(|n| **n > 1).sum()
}

pub fn range(days: i64) -> (DateTime<Utc>, DateTime<Utc>) {
    (day0(), day0() + Duration::days(days))
}

pub fn status_json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).expect("status --json prints JSON")
}

/// Copies the files of a folder (not recursive), e.g. a state folder as a backup would.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

/// Runs the binary with a crash point armed (`step:n`) and checks that it died there.
pub async fn crash_at(s: &Setup, args: &[&str], point: &str) {
    let o = cli(s, args, &[("AOS_TEST_CRASH_AT", point)]).await;
    assert!(!o.status.success(), "expected a crash at {point}: {}", stderr(&o));
}
