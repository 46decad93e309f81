//! `verify --repair`, as docs/operations.md promises: the records of a deleted and of a
//! corrupted file exported again exactly, the corrupt file and a stray set aside (never
//! deleted), a later run and reconcile writing nothing; in Delta mode through the table, and
//! when the repair dies between the state's transaction and the table's commit.

use crate::common::*;
use crate::delta::{assert_table_exact_latest, deltalake_available};

fn set_aside(out: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![out.join("_aos-audit-export/set-aside")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                v.push(e.path());
            }
        }
    }
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_and_a_corrupted_file_are_repaired_exactly() {
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "window = \"12h\"\nlookback = \"1d\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await);
    let (from, _) = range(0);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3));
    let files = data_files(&s.out());
    assert_same_multiset(&read_files(&files), &truth);
    // One file deleted, one corrupted in place (same size), a foreign file dropped in.
    let deleted = files[1].clone();
    let corrupt = files[3].clone();
    std::fs::remove_file(&deleted).unwrap();
    let mut bytes = std::fs::read(&corrupt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&corrupt, &bytes).unwrap();
    let stray = s.out().join("dt=2024-03-02/notes.csv");
    std::fs::write(&stray, "someone's file\n").unwrap();

    let v = cli(&s, &["verify"], &[]).await;
    assert_eq!(v.status.code(), Some(7), "{}", stdout(&v));
    let report = stdout(&v);
    for f in [&deleted, &corrupt, &stray] {
        let name = f.file_name().unwrap().to_str().unwrap();
        assert!(
            report.lines().any(|l| l.starts_with("MISMATCH") && l.contains(name)),
            "{name}: {report}"
        );
    }
    assert!(report.contains("3 problems"), "{report}");

    let o = cli(&s, &["verify", "--repair"], &[]).await;
    assert_ok(&o);
    let out = stdout(&o);
    assert!(out.contains("repair: 2 files whose records the lake lost"), "{out}");
    assert!(out.contains("2 files set aside") && out.contains("(1 strays)"), "{out}");
    assert!(out.contains("0 problems"), "verify again after the repair: {out}");
    // Exact: what the folder holds is the ground truth, each record once.
    assert_same_multiset(&read_files(&data_files(&s.out())), &truth);
    // Nothing deleted: the corrupt file and the stray are kept, byte for byte.
    let aside = set_aside(&s.out());
    assert_eq!(aside.len(), 2, "{aside:?}");
    assert!(aside.iter().any(|p| std::fs::read(p).unwrap() == bytes));
    assert!(aside.iter().any(|p| p.ends_with("stray/dt=2024-03-02/notes.csv")));
    assert!(!stray.exists());
    // Nothing more to write: a run's look-back and a reconcile over the range.
    assert_ok(&cli(&s, &["--now", "2024-03-04T06:00:00Z", "run"], &[]).await);
    let o = cli(&s, &["reconcile", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("wrote 0 new records"), "{}", stdout(&o));
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3) + chrono::Duration::hours(6));
    assert_same_multiset(&read_files(&data_files(&s.out())), &truth);
    assert_ok(&cli(&s, &["verify"], &[]).await);
    // A healthy lake: --repair changes nothing.
    let o = cli(&s, &["verify", "--repair"], &[]).await;
    assert_ok(&o);
    assert!(!stdout(&o).contains("repair:"), "{}", stdout(&o));
    // A lost file of a stream this configuration does not export (its filters changed, so it
    // is another stream): left as it is and counted, the mismatch still reported.
    let lost = data_files(&s.out()).into_iter().next().unwrap();
    std::fs::remove_file(&lost).unwrap();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, cfg.replace("[api]\n", "[api]\nproduct_types = [\"Portal\"]\n")).unwrap();
    let o = cli(&s, &["verify", "--repair"], &[]).await;
    assert_eq!(o.status.code(), Some(7), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("1 files of streams not configured here left as they are"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("repair: 0 files"), "{}", stdout(&o));
}

/// Delta mode: a file deleted behind the table's back is removed from the table (a `DELETE`
/// commit) and its records are added again; a repair killed between the state's transaction and
/// that commit is finished by the next start, before it reads a window.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_file_deleted_behind_its_back_is_repaired_exactly() {
    if !deltalake_available() {
        return;
    }
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "format = \"delta\"\nwindow = \"12h\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await);
    let (from, _) = range(0);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3));
    let files = data_files(&s.out());
    std::fs::remove_file(&files[0]).unwrap();
    let v = cli(&s, &["verify"], &[]).await;
    assert_eq!(v.status.code(), Some(7), "{}", stdout(&v));
    let o = cli(&s, &["verify", "--repair"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("repair: 1 files"), "{}", stdout(&o));
    assert!(stdout(&o).contains("0 problems"), "{}", stdout(&o));
    let log = std::fs::read_dir(s.out().join("_delta_log")).unwrap().flatten().filter_map(|e| {
        let t = std::fs::read_to_string(e.path()).ok()?;
        t.contains("\"operation\":\"DELETE\"").then_some(t)
    });
    assert_eq!(log.count(), 1, "one DELETE commit");
    // The latest version (earlier ones name the deleted file: its bytes are gone).
    assert_table_exact_latest(&s.out(), &truth);

    // Killed after the state forgot the file, before the table's commit.
    let files = data_files(&s.out());
    let victim = files.iter().find(|f| f.to_string_lossy().contains("dt=2024-03-02")).unwrap();
    std::fs::remove_file(victim).unwrap();
    let o = cli(&s, &["verify", "--repair"], &[("AOS_TEST_CRASH_AT", "repair:1")]).await;
    assert!(stderr(&o).contains("crashpoint: aborting at repair"), "{}", stderr(&o));
    assert_ok(&cli(&s, &["--now", "2024-03-04T00:00:00Z", "run"], &[]).await);
    assert_table_exact_latest(&s.out(), &truth);
    assert_ok(&cli(&s, &["verify"], &[]).await);
}

/// A repair killed after the file was set aside and before the state forgot it is finished by
/// the next start, and that run reads the window again even when it was the stream's oldest
/// (a relative `export.start` would otherwise skip it); a state lost afterwards adopts the
/// lake without deleting what the repair wrote (its reads took generations of their own).
#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_repair_is_finished_by_the_next_run() {
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "window = \"12h\"\nlookback = \"1d\"");
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let start_line = cfg.lines().find(|l| l.starts_with("start = ")).unwrap().to_string();
    std::fs::write(&s.config, cfg.replace(&start_line, "start = \"2d\"")).unwrap();
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await);
    let (from, _) = range(0);
    let oldest = data_files(&s.out()).into_iter().next().unwrap();
    assert!(oldest.to_string_lossy().contains("all-20240301T000000Z"), "{oldest:?}");
    std::fs::remove_file(&oldest).unwrap();
    let o = cli(&s, &["verify", "--repair"], &[("AOS_TEST_CRASH_AT", "repair:1")]).await;
    assert!(stderr(&o).contains("crashpoint: aborting at repair"), "{}", stderr(&o));
    let now = ["--now", "2024-03-04T00:00:00Z"];
    assert_ok(&cli(&s, &[&now[..], &["run"]].concat(), &[]).await);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3));
    assert_same_multiset(&read_files(&data_files(&s.out())), &truth);
    assert_ok(&cli(&s, &["verify"], &[]).await);
    // The state lost: the lake's markers adopted, nothing deleted, nothing written twice.
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    assert_ok(&cli(&s, &["--now", "2024-03-04T06:00:00Z", "run"], &[]).await);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3) + chrono::Duration::hours(6));
    assert_same_multiset(&read_files(&data_files(&s.out())), &truth);
}

/// Delta mode: a closed day's compacted file (it holds every stream's records of the day) is
/// lost; the repair reads the day again for every stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_compacted_file_is_repaired_exactly() {
    if !deltalake_available() {
        return;
    }
    let emu = start(emu_config(4, 300)).await;
    let s = setup(&emu, "format = \"delta\"\nwindow = \"12h\"\nlookback = \"1h\"");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await);
    assert_ok(&cli(&s, &["--now", "2024-03-04T06:00:00Z", "run"], &[]).await);
    let compacted = data_files(&s.out())
        .into_iter()
        .find(|f| f.to_string_lossy().contains("dt=2024-03-02/compacted-"))
        .expect("day 2 compacted");
    std::fs::remove_file(&compacted).unwrap();
    let o = cli(&s, &["verify", "--repair"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("repair: 1 files"), "{}", stdout(&o));
    let (from, _) = range(0);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3) + chrono::Duration::hours(6));
    assert_table_exact_latest(&s.out(), &truth);
    assert_ok(&cli(&s, &["--now", "2024-03-04T12:00:00Z", "run"], &[]).await);
    let truth = emu.ground_truth(from, day0() + chrono::Duration::days(3) + chrono::Duration::hours(12));
    assert_table_exact_latest(&s.out(), &truth);
    assert_ok(&cli(&s, &["verify"], &[]).await);
}
