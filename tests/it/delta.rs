//! `export.format = "delta"`: the output is a Delta table, read back by an independent
//! implementation (PyPI `deltalake`, delta-rs) at every version. `.ci/run` installs it and sets
//! AOS_TEST_REQUIRE_DELTALAKE=1; elsewhere these tests skip when it is missing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::common::*;

/// Reads the table at `path` with `deltalake`: the latest version, its protocol, its active
/// files, the stream's txn version, and for every version from 0 the rows and distinct ids.
const READER: &str = r#"
import hashlib, json, os, sys
from deltalake import DeltaTable
path = sys.argv[1]
t = DeltaTable(path)
latest = t.version()
p = t.protocol()
versions = []
for v in range(0, latest + 1):
    ids = DeltaTable(path, version=v).to_pyarrow_table(columns=["_record_id"]).column("_record_id").to_pylist()
    digest = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    versions.append({"version": v, "rows": len(ids), "distinct": len(set(ids)), "digest": digest,
        "files": len(DeltaTable(path, version=v).file_uris())})
files = [u[len("file://"):] if u.startswith("file://") else u for u in t.file_uris()]
rows = t.to_pyarrow_table(columns=["_record_id", "dt"]).num_rows
print(json.dumps({"version": latest, "protocol": [p.min_reader_version, p.min_writer_version],
    "files": files, "rows": rows, "txn": t.transaction_version(sys.argv[2]) if len(sys.argv) > 2 else None,
    "versions": versions}))
sys.stdout.flush()
os._exit(0)
"#;

pub(crate) fn deltalake_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import deltalake, pyarrow"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("AOS_TEST_REQUIRE_DELTALAKE").is_none(),
            "AOS_TEST_REQUIRE_DELTALAKE is set but python3 cannot import deltalake and pyarrow (pip install 'deltalake[pyarrow]==1.6.6')"
        );
        eprintln!("SKIPPED: the deltalake Python package is not installed");
    }
    ok
}

/// What `deltalake` reads from a table.
pub(crate) struct Read {
    pub json: Value,
    pub files: Vec<PathBuf>,
}

pub(crate) fn read_table(path: &Path, app_id: Option<&str>) -> Read {
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", READER]).arg(path);
    if let Some(a) = app_id {
        cmd.arg(a);
    }
    let o = cmd.output().expect("python3 runs");
    assert!(
        o.status.success(),
        "deltalake could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let json: Value = serde_json::from_slice(&o.stdout).expect("the reader prints JSON");
    let files = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let f = f.as_str().unwrap();
            // Absolute, or relative to the table root.
            if f.starts_with('/') { PathBuf::from(f) } else { path.join(f) }
        })
        .collect();
    Read { json, files }
}

/// The table read by `deltalake` holds exactly `truth` as a multiset, and no version from 0 to
/// the latest holds an id twice.
pub(crate) fn assert_table_exact(path: &Path, truth: &[Value]) -> Read {
    assert_table_exact_with(path, truth, true)
}

/// [`assert_table_exact`]; `unique_ids = false` where the API serves identical records without
/// `actionTime` in different windows (they share an id, as docs/output.md documents): then no
/// version may hold more rows than the ground truth has records.
pub(crate) fn assert_table_exact_with(path: &Path, truth: &[Value], unique_ids: bool) -> Read {
    let r = read_table(path, Some("aos-audit-export/all"));
    assert_eq!(
        r.json["protocol"],
        serde_json::json!([1, 2]),
        "the lowest protocol every engine reads"
    );
    for v in r.json["versions"].as_array().unwrap() {
        if unique_ids {
            assert_eq!(v["rows"], v["distinct"], "table version {} holds a record id twice", v["version"]);
        } else {
            assert!(
                v["rows"].as_u64().unwrap() as usize <= truth.len(),
                "table version {} holds more rows than the API has records",
                v["version"]
            );
        }
    }
    let rows = read_files(&r.files);
    assert_eq!(
        r.json["rows"].as_u64().unwrap() as usize,
        rows.len(),
        "deltalake and the files agree on the rows"
    );
    assert_same_multiset(&rows, truth);
    r
}

fn delta_skip() -> bool {
    !deltalake_available()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delta_table_holds_every_record_once_at_every_version() {
    if delta_skip() {
        return;
    }
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "format = \"delta\"\nwindow = \"12h\"\nlookback = \"1d\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    // Runs whose look-back re-reads committed windows: nothing is added twice.
    for now in ["2024-03-03T12:00:00Z", "2024-03-04T06:00:00Z", "2024-03-05T00:00:00Z"] {
        assert_ok(&cli(&s, &["--now", now, "run"], &[]).await);
    }
    let (from, to) = range(4);
    let truth = emu.ground_truth(from, to);
    let r = assert_table_exact(&s.out(), &truth);
    // One commit per window that wrote files, each with the stream's txn; compactions of
    // the closed days (no data change) carry none.
    let mut data_commits = 0;
    for entry in std::fs::read_dir(s.out().join("_delta_log")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") || name.starts_with('_') {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        if text.contains("\"dataChange\":true") {
            data_commits += 1;
            assert!(
                text.contains("\"txn\":{\"appId\":\"aos-audit-export/all\""),
                "{name}: a data commit without the stream's txn"
            );
        } else if text.contains("\"add\"") {
            assert!(text.contains("\"operation\":\"OPTIMIZE\""), "{name}");
        }
    }
    assert!(data_commits >= 8, "a commit per window: {data_commits}");
    assert_eq!(r.json["txn"].as_u64(), Some(data_commits), "txn counts the stream's data commits");
    // Written files that no commit names are not read by anyone: a Parquet file of the same
    // shape dropped beside the table's files does not show.
    let stray = s.out().join("dt=2024-03-01").join("stray.parquet");
    std::fs::copy(&r.files[0], &stray).unwrap();
    let again = assert_table_exact(&s.out(), &truth);
    assert_eq!(again.files.len(), r.files.len());
    // `status` shows the table's version and its files per day; `verify` checks every active
    // file against the log, and finds one deleted behind the table's back.
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["table"]["version"], r.json["version"]);
    assert_eq!(st["table"]["active_files"].as_u64(), Some(r.files.len() as u64));
    assert!(st["table"]["partitions"]["dt=2024-03-02"]["files"].as_u64() >= Some(1), "{st}");
    assert!(stdout(&cli(&s, &["status"], &[]).await).contains(&format!("Delta table: version {}", r.json["version"])));
    assert_ok(&cli(&s, &["verify"], &[]).await);
    std::fs::remove_file(&r.files[0]).unwrap();
    let v = cli(&s, &["verify"], &[]).await;
    assert_eq!(v.status.code(), Some(7), "{}", stdout(&v));
    assert!(stdout(&v).contains("MISMATCH"), "{}", stdout(&v));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loop_into_a_local_delta_table() {
    if delta_skip() {
        return;
    }
    let (s, truth, _emu) = kill_loop_delta(&[], None, 30, 7).await;
    assert_table_exact(&s.out(), &truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loop_into_a_delta_table_on_s3() {
    if delta_skip() || !crate::s3::moto_available() {
        assert!(std::env::var("AOS_TEST_REQUIRE_MOTO").is_err(), "moto_server is required here");
        return;
    }
    let moto = crate::s3::Moto::start("lake").await;
    let env = moto.env();
    let (s, truth, _emu) = kill_loop_delta(&env, Some("s3://lake/table"), 30, 8).await;
    let dir = s.dir.path().join("mirror");
    moto.download("lake", "table", &dir).await;
    assert_table_exact(&dir, &truth);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loop_into_a_delta_table_on_azure() {
    if delta_skip() || !crate::azure::available() {
        assert!(std::env::var("AOS_TEST_REQUIRE_AZURITE").is_err(), "azurite is required here");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (_azurite, port, conn) = crate::azure::azurite(work.path()).await;
    let url = format!("http://127.0.0.1:{port}");
    let env = [("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", url.as_str())];
    let (s, truth, _emu) = kill_loop_delta(&env, Some("az://lake/table"), 30, 9).await;
    let dir = s.dir.path().join("mirror");
    crate::azure::mirror(&conn, "table", &dir);
    assert_table_exact(&dir, &truth);
}

/// Interrupts a Delta backfill at each named step of the commit protocol (the table commit
/// included), each followed by a run that recovers; then kills it `kills` times at random
/// moments (SIGKILL of the real process) and lets it finish. Returns the setup and the ground
/// truth; the caller reads the table (at `output`, an object-store URL, when given).
async fn kill_loop_delta(
    env: &[(&str, &str)],
    output: Option<&str>,
    kills: usize,
    seed: u64,
) -> (Setup, Vec<Value>, aos_emulator::EmulatorHandle) {
    let days = 12;
    let mut cfg = emu_config(days, 300);
    cfg.page_size = 30;
    cfg.latency = Duration::from_millis(20);
    let emu = start(cfg).await;
    let s = setup(&emu, "format = \"delta\"\nconcurrency = 2\nwindow = \"12h\"");
    let to = format!("2024-03-{:02}", 1 + days);
    let mut args: Vec<&str> = vec![];
    if let Some(url) = output {
        args.extend(["--output", url]);
    }
    args.extend(["backfill", "--from", "2024-03-01", "--to", to.as_str()]);
    // Each step, the table commit included, interrupted by a crash point on its first
    // window, then a run that recovers it.
    for step in ["publish", "marker", "table", "commit"] {
        let point = format!("{step}:1");
        let o = cli(&s, &args, &[&[("AOS_TEST_CRASH_AT", point.as_str())], env].concat()).await;
        assert!(
            stderr(&o).contains(&format!("crashpoint: aborting at {step} #1")),
            "{step}: {}",
            stderr(&o)
        );
        let mut first = args.clone();
        let n = first.len();
        first[n - 1] = "2024-03-02";
        assert_ok(&cli(&s, &first, env).await);
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    let mut finished_early = 0;
    while killed < kills {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("--config").arg(&s.config).args(&args).env_remove("RUST_LOG");
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let delay = Duration::from_millis(rng.random_range(30..400));
        tokio::select! {
            status = child.wait() => {
                assert!(status.unwrap().success(), "a run between kills failed");
                finished_early += 1;
                assert!(finished_early < 3, "the backfill finished after only {killed} kills; make the workload larger");
            }
            _ = tokio::time::sleep(delay) => {
                child.kill().await.unwrap();
                killed += 1;
            }
        }
    }
    let o = cli(&s, &args, env).await;
    assert_ok(&o);
    let n = args.len();
    let v = cli(&s, &[&args[..n - 5], &["verify"]].concat(), env).await;
    assert_ok(&v);
    let (from, end) = range(days as i64);
    let truth = emu.ground_truth(from, end);
    assert!(twin_records(&truth) > 0);
    (s, truth, emu)
}

/// A lost state (a new volume) and a state restored from an older copy: the table is the
/// source of truth, nothing is added twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_or_older_state_never_duplicates_the_table() {
    if delta_skip() {
        return;
    }
    let emu = start(emu_config(6, 300)).await;
    let s = setup(&emu, "format = \"delta\"\nwindow = \"1d\"");
    assert_ok(&cli(&s, &["--now", "2024-03-03T00:00:00Z", "run"], &[]).await);
    let backup = s.dir.path().join("backup");
    copy_dir(s.state().parent().unwrap(), &backup);
    assert_ok(&cli(&s, &["--now", "2024-03-05T00:00:00Z", "run"], &[]).await);
    // Restored from the older copy.
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    copy_dir(&backup, s.state().parent().unwrap());
    assert_ok(&cli(&s, &["--now", "2024-03-06T00:00:00Z", "run"], &[]).await);
    // Lost.
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    assert_ok(&cli(&s, &["--now", "2024-03-07T00:00:00Z", "run"], &[]).await);
    let (from, to) = range(6);
    assert_table_exact(&s.out(), &emu.ground_truth(from, to));
}

/// Two exporters with separate states started at once on one table (two deployments by
/// mistake): no window is committed twice, no record is in the table twice.
#[tokio::test(flavor = "multi_thread")]
async fn two_exporters_on_one_table_write_every_record_once() {
    if delta_skip() {
        return;
    }
    let mut cfg = emu_config(8, 300);
    cfg.latency = Duration::from_millis(10);
    let emu = start(cfg).await;
    let a = setup(&emu, "format = \"delta\"\nwindow = \"12h\"\nconcurrency = 2");
    let b = setup(&emu, "format = \"delta\"\nwindow = \"12h\"\nconcurrency = 2");
    let out = a.out();
    let out = out.to_str().unwrap();
    let args = ["--output", out, "backfill", "--from", "2024-03-01", "--to", "2024-03-09"];
    let (ra, rb) = tokio::join!(cli(&a, &args, &[]), cli(&b, &args, &[]));
    // Each either finished, or stopped with a clear error after giving way to the other.
    for r in [&ra, &rb] {
        assert!(r.status.success() || stderr(r).contains("another writer added"), "{}", stderr(r));
    }
    // Both finish on a later run.
    assert_ok(&cli(&a, &args, &[]).await);
    assert_ok(&cli(&b, &args, &[]).await);
    let (from, to) = range(8);
    assert_table_exact(&a.out(), &emu.ground_truth(from, to));
}

/// A simulated day of 96 scheduled runs (every 15 minutes, pinned clock) writes many small
/// files into its day; once the day is closed, the run after it compacts the day into the
/// files its size needs, in one commit: same records, the version before still readable, and
/// exact when a crash interrupts the compaction before and after its table commit.
#[tokio::test(flavor = "multi_thread")]
async fn closed_days_are_compacted_exactly() {
    if delta_skip() {
        return;
    }
    let emu = start(emu_config(4, 2000)).await;
    let s = setup(&emu, "format = \"delta\"\nwindow = \"1d\"\nlookback = \"1h\"");
    let at = |minutes: i64| (day0() + chrono::Duration::days(1) + chrono::Duration::minutes(minutes)).to_rfc3339();
    // Day 1 in one backfill, then day 2 as a CronJob every 15 minutes would see it.
    assert_ok(&cli(&s, &["--now", &at(0), "run"], &[]).await);
    for i in 1..=96 {
        assert_ok(&cli(&s, &["--now", &at(15 * i), "run"], &[]).await);
    }
    let day2 = |r: &Read| r.files.iter().filter(|f| f.to_string_lossy().contains("dt=2024-03-02")).count();
    let before = read_table(&s.out(), None);
    let files_before = day2(&before);
    assert!(files_before > 40, "a day of 15-minute runs writes many files: {files_before}");
    // Closed once past lag + look-back + an hour: the compaction is interrupted before its
    // table commit, then after it, then completes.
    let closed = at(24 * 60 + 2 * 60 + 30);
    for point in ["compact:1", "compact:2"] {
        let o = cli(&s, &["--now", &closed, "run"], &[("AOS_TEST_CRASH_AT", point)]).await;
        assert!(stderr(&o).contains("crashpoint: aborting at compact"), "{point}: {}", stderr(&o));
    }
    assert_ok(&cli(&s, &["--now", &closed, "run"], &[]).await);
    let (from, _) = range(0);
    let truth: Vec<Value> = emu.ground_truth(from, day0() + chrono::Duration::days(2) + chrono::Duration::minutes(150));
    let after = assert_table_exact(&s.out(), &truth);
    let files_after = day2(&after);
    eprintln!("compaction of a day of 96 runs: {files_before} files before, {files_after} after");
    assert_eq!(files_after, 1, "a closed day of a few MiB is one file");
    // Checkpoints every 10 commits: the reader (above) opened the table from one.
    let checkpoints = std::fs::read_dir(s.out().join("_delta_log"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".checkpoint.parquet"))
        .count();
    assert!(checkpoints >= 9, "a checkpoint every 10 of about 100 commits: {checkpoints}");
    assert!(s.out().join("_delta_log/_last_checkpoint").exists());
    // The compaction commit changed no record: the version before it reads the same ids.
    let versions = after.json["versions"].as_array().unwrap();
    let last = versions.last().unwrap();
    let compaction = versions
        .iter()
        .rposition(|v| v["files"].as_u64() < versions[versions.len() - 2]["files"].as_u64() && v["version"] != versions[0]["version"])
        .expect("a version with fewer files");
    assert_eq!(
        versions[compaction]["digest"],
        versions[compaction - 1]["digest"],
        "time travel to the version before the compaction shows the same records"
    );
    assert_eq!(versions[compaction]["digest"], last["digest"]);
    // The next compaction finds nothing to do; verify vouches for the table's files.
    let o = cli(&s, &["--now", &closed, "compact", "--from", "2024-03-01"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("compact: 0 closed days rewritten"), "{}", stdout(&o));
    assert_ok(&cli(&s, &["verify"], &[]).await);
    // Vacuum: within the default retention nothing goes (time travel reads the old files); a
    // short retention needs --force; with it, the replaced files go and the table is intact.
    let o = cli(&s, &["--now", &closed, "vacuum"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("deleted 0 files"), "{}", stdout(&o));
    let o = cli(&s, &["--now", &closed, "vacuum", "--retention", "0s"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--retention"), "{}", stderr(&o));
    // An attempt's file that never reached the table goes; another tool's file stays.
    let stray = s
        .out()
        .join("dt=2024-03-02")
        .join("all-20240302T000000Z-20240302T120000Z-g9-0000abcd-p000.parquet");
    std::fs::write(&stray, b"not in any commit").unwrap();
    let foreign = s.out().join("dt=2024-03-02").join("part-0000-foreign.parquet");
    std::fs::write(&foreign, b"another tool's").unwrap();
    let o = cli(&s, &["--now", &closed, "vacuum", "--retention", "0s", "--force"], &[]).await;
    assert_ok(&o);
    assert!(
        stdout(&o).contains(&format!("deleted {} files", files_before + 1)),
        "{}",
        stdout(&o)
    );
    assert!(!stray.exists());
    assert!(foreign.exists(), "vacuum leaves a file this program did not name");
    std::fs::remove_file(&foreign).unwrap();
    let tables_files: usize = data_files(&s.out()).len();
    let vacuumed = assert_table_exact_latest(&s.out(), &truth);
    assert_eq!(tables_files, vacuumed, "only the table's active files are left");
    assert_ok(&cli(&s, &["verify"], &[]).await);
}

/// The latest version read by `deltalake` equals `truth`; returns its file count.
pub(crate) fn assert_table_exact_latest(path: &Path, truth: &[Value]) -> usize {
    const LATEST: &str = r#"
import os, sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
print("\n".join(u[len("file://"):] if u.startswith("file://") else u for u in t.file_uris()))
sys.stdout.flush()
os._exit(0)
"#;
    let o = std::process::Command::new("python3")
        .args(["-c", LATEST])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files: Vec<PathBuf> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|f| if f.starts_with('/') { PathBuf::from(f) } else { path.join(f) })
        .collect();
    assert_same_multiset(&read_files(&files), truth);
    files.len()
}

/// A folder of Parquet files is not taken for a table, nor a table for a folder: either way
/// readers would miss what is written. Both are refused before anything is written.
#[tokio::test(flavor = "multi_thread")]
async fn a_folder_lake_and_a_table_are_not_mixed() {
    let emu = start(emu_config(2, 100)).await;
    let s = setup(&emu, "");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await);
    let o = cli(
        &s,
        &["--format", "delta", "backfill", "--from", "2024-03-01", "--to", "2024-03-03"],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).trim_end().lines().last().unwrap().contains("_delta_log"),
        "{}",
        stderr(&o)
    );
    assert!(!s.out().join("_delta_log").exists());
    let t = setup(&emu, "format = \"delta\"");
    assert_ok(&cli(&t, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await);
    let files = data_files(&t.out()).len();
    let o = cli(
        &t,
        &["--format", "parquet", "backfill", "--from", "2024-03-01", "--to", "2024-03-03"],
        &[],
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("delta"), "{}", stderr(&o));
    assert_eq!(data_files(&t.out()).len(), files, "nothing written");
}
