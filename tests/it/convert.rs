//! `convert`: a Parquet-folder lake becomes a Delta table in place, as docs/delta.md promises:
//! no file rewritten or moved, the table read by `deltalake` equal to the folder, later runs
//! (look-back included) and a compaction exact on it; a lake that is not as its manifest
//! records, or not Parquet, is refused with nothing written; a lost state converts the lake.

use std::collections::BTreeMap;

use crate::common::*;
use crate::delta::{assert_table_exact, deltalake_available, read_table};

/// Path → bytes of every data file under `out`.
fn contents(out: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    data_files(out)
        .into_iter()
        .map(|p| (p.strip_prefix(out).unwrap().display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_lake_becomes_a_table_in_place_and_runs_on_exactly() {
    if !deltalake_available() {
        return;
    }
    let emu = start(emu_config(6, 300)).await;
    let s = setup(&emu, "window = \"12h\"\nlookback = \"1d\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    assert_ok(&cli(&s, &["--now", "2024-03-04T00:00:00Z", "run"], &[]).await);
    // A file some other tool dropped into a partition is not this program's: left out, said so.
    let foreign = s.out().join("dt=2024-03-01").join("part-0000-foreign.parquet");
    let before = contents(&s.out());
    let ours = before.len();

    // A manifest file missing from the output: refused, nothing written.
    let (victim, bytes) = before.iter().next().map(|(p, b)| (s.out().join(p), b.clone())).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let o = cli(&s, &["convert"], &[]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let line = stderr(&o).trim_end().lines().last().unwrap().to_string();
    assert!(line.contains(victim.file_name().unwrap().to_str().unwrap()), "{line}");
    assert!(line.contains("nothing was converted"), "{line}");
    assert!(!s.out().join("_delta_log").exists());
    // Of another size than recorded: refused too.
    std::fs::write(&victim, &bytes[..bytes.len() - 1]).unwrap();
    let o = cli(&s, &["convert"], &[]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("bytes"), "{}", stderr(&o));
    assert!(!s.out().join("_delta_log").exists());
    std::fs::write(&victim, &bytes).unwrap();

    std::fs::write(&foreign, b"PAR1 not ours").unwrap();
    // Files an earlier version wrote (ids of an older scheme, as its manifest records): kept
    // as they are, never compacted (a merged file is recorded with the current scheme, which
    // a re-read would not match against their ids).
    rusqlite::Connection::open(s.state())
        .unwrap()
        .execute("UPDATE files SET id_scheme = 2 WHERE partition = 'dt=2024-03-01'", [])
        .unwrap();
    let o = cli(&s, &["convert"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains(&format!("holding {ours} files")), "{}", stdout(&o));
    assert!(stdout(&o).contains("1 files this program did not write"), "{}", stdout(&o));
    std::fs::remove_file(&foreign).unwrap();
    // Not a byte rewritten or moved, and the table holds exactly the folder's files.
    assert_eq!(contents(&s.out()), before);
    let (from, _) = range(0);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3));
    let r = assert_table_exact(&s.out(), &truth);
    assert_eq!(r.files.len(), ours);
    assert_eq!(r.json["version"].as_u64(), Some(0), "one commit: the table whole or not at all");
    assert!(
        s.out().join("_delta_log/00000000000000000000.checkpoint.parquet").exists(),
        "readers open the converted table from a checkpoint"
    );

    // Again: nothing to do. The folder format on it is refused now, delta runs on.
    let o = cli(&s, &["convert"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("already"), "{}", stdout(&o));
    // Killed between the put and its checkpoint: the table is whole, and `convert` again
    // writes the checkpoint.
    let t = setup(&emu, "window = \"12h\"");
    assert_ok(&cli(&t, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await);
    let o = cli(&t, &["convert"], &[("AOS_TEST_CRASH_AT", "convert:2")]).await;
    assert!(stderr(&o).contains("crashpoint: aborting at convert #2"), "{}", stderr(&o));
    assert!(!t.out().join("_delta_log/_last_checkpoint").exists());
    assert_table_exact(&t.out(), &emu.ground_truth(from, day0() + chrono::Duration::days(1)));
    assert_ok(&cli(&t, &["convert"], &[]).await);
    assert!(t.out().join("_delta_log/_last_checkpoint").exists());
    let o = cli(&s, &["--now", "2024-03-05T00:00:00Z", "run"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    for now in ["2024-03-05T00:00:00Z", "2024-03-06T06:00:00Z"] {
        assert_ok(&cli(&s, &["--format", "delta", "--now", now, "run"], &[]).await);
    }
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(5) + chrono::Duration::hours(6));
    // The converted days compact like any other (the run after they closed did it), but for
    // the files of an older id scheme.
    let r = assert_table_exact(&s.out(), &truth);
    let in_day = |day: &str| r.files.iter().filter(|f| f.to_string_lossy().contains(day)).count();
    assert_eq!(in_day("dt=2024-03-02"), 1, "a closed converted day is compacted into one file");
    let old_scheme = before.keys().filter(|p| p.starts_with("dt=2024-03-01/")).count();
    assert!(old_scheme > 1);
    assert_eq!(in_day("dt=2024-03-01"), old_scheme, "files of an older id scheme are not merged");
    assert_ok(&cli(&s, &["--format", "delta", "verify"], &[]).await);
}

/// The lake is the source of truth: with the state lost, `convert` learns the output first and
/// the table holds every file it had.
#[tokio::test(flavor = "multi_thread")]
async fn a_lake_whose_state_is_lost_converts_whole() {
    if !deltalake_available() {
        return;
    }
    let emu = start(emu_config(3, 200)).await;
    let s = setup(&emu, "window = \"6h\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await);
    let files = data_files(&s.out()).len();
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    // A file named as ours whose columns are not the table's (only `_record_id` kept): the
    // lost state adopts it by its ids, and convert refuses it by its footer.
    let victim = data_files(&s.out())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".parquet"))
        .unwrap();
    let original = std::fs::read(&victim).unwrap();
    let py = "import sys, pyarrow.parquet as pq\nt = pq.read_table(sys.argv[1], columns=['_record_id'])\npq.write_table(t, sys.argv[1])";
    let w = std::process::Command::new("python3")
        .args(["-c", py])
        .arg(&victim)
        .output()
        .unwrap();
    assert!(w.status.success(), "{}", String::from_utf8_lossy(&w.stderr));
    let o = cli(&s, &["convert"], &[]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(stderr(&o).contains("columns differ"), "{}", stderr(&o));
    assert!(!s.out().join("_delta_log").exists());
    std::fs::write(&victim, original).unwrap();
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    // Killed before the table's put: no table, the folder as it was.
    let o = cli(&s, &["--format", "delta", "convert"], &[("AOS_TEST_CRASH_AT", "convert:1")]).await;
    assert!(stderr(&o).contains("crashpoint: aborting at convert"), "{}", stderr(&o));
    assert!(!s.out().join("_delta_log").exists());
    assert_eq!(data_files(&s.out()).len(), files);
    let o = cli(&s, &["--format", "delta", "convert"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains(&format!("holding {files} files")), "{}", stdout(&o));
    let (from, _) = range(0);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(2));
    let r = assert_table_exact(&s.out(), &truth);
    assert_eq!(read_table(&s.out(), None).files.len(), r.files.len());
    assert_ok(&cli(&s, &["--format", "delta", "--now", "2024-03-04T00:00:00Z", "run"], &[]).await);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3));
    assert_table_exact(&s.out(), &truth);
}

/// An NDJSON lake cannot be a Delta table: refused before anything is opened or written.
#[tokio::test(flavor = "multi_thread")]
async fn an_ndjson_lake_is_not_converted() {
    let emu = start(emu_config(1, 50)).await;
    let s = setup(&emu, "format = \"ndjson\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await);
    let o = cli(&s, &["convert"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("export.format"), "{}", stderr(&o));
    assert!(!s.out().join("_delta_log").exists());
}

/// On object storage (S3, moto): the footers are read by ranged GETs, the table is the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_parquet_lake_on_s3_converts() {
    if !deltalake_available() || !crate::s3::moto_available() {
        assert!(std::env::var("AOS_TEST_REQUIRE_MOTO").is_err(), "moto_server is required here");
        return;
    }
    let moto = crate::s3::Moto::start("lake").await;
    let env = moto.env();
    let emu = start(emu_config(3, 200)).await;
    let s = setup(&emu, "window = \"12h\"");
    let out = ["--output", "s3://lake/folder"];
    let backfill = [&out[..], &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"]].concat();
    assert_ok(&cli(&s, &backfill, &env).await);
    let o = cli(&s, &[&out[..], &["convert"]].concat(), &env).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("holding 4 files"), "{}", stdout(&o));
    let dir = s.dir.path().join("mirror");
    moto.download("lake", "folder", &dir).await;
    let (from, _) = range(0);
    assert_table_exact(&dir, &emu.ground_truth(from, day0() + chrono::Duration::days(2)));
}
