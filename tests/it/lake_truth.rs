//! The lake is the source of truth: a state that is new, lost, or older than the lake (restored
//! from a backup) never leads to a second copy. Each test walks a promise of
//! `docs/operations.md` ("Losing or restoring the state") with the real binary.

use chrono::Duration;

use crate::common::*;

/// Moves the state folder away (a deleted PersistentVolumeClaim, `kubectl delete -k`).
fn lose_state(s: &Setup) {
    let dir = s.state().parent().unwrap().to_path_buf();
    std::fs::rename(&dir, s.dir.path().join(format!("lost-{}", rand_suffix()))).unwrap();
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// With a relative `export.start` (the shipped ConfigMap's `30d`), a run, the state lost, and
/// a run later: the lake holds every record once, `status` shows the adopted coverage, and the
/// second run reads only what is new plus the look-back. The previous version wrote the whole
/// lake a second time (100,000 rows for 50,000 ids).
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_state_never_duplicates_the_lake() {
    for format in ["parquet", "ndjson"] {
        let emu = start(emu_config(6, 200)).await;
        let s = setup(&emu, &format!("format = \"{format}\""));
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace(&format!("start = \"{}\"", day0().to_rfc3339()), "start = \"5d\"");
        std::fs::write(&s.config, text).unwrap();
        assert_ok(&cli(&s, &["--now", "2024-03-06T00:00:00Z", "run"], &[]).await);
        let first = read_all(&s.out()).len();
        assert!(first > 800, "{first}");
        lose_state(&s);
        let before = emu.audit_requests();
        let o = cli(&s, &["--now", "2024-03-06T13:17:00Z", "run"], &[]).await;
        assert_ok(&o);
        assert!(stderr(&o).contains("adopted what the output holds"), "{}", stderr(&o));
        let truth = emu.ground_truth(day0(), day0() + Duration::hours(5 * 24 + 13) + Duration::minutes(17));
        let rows = read_all(&s.out());
        let ids: std::collections::HashSet<_> = rows.iter().map(|r| r.record_id.clone()).collect();
        assert_eq!(ids.len(), rows.len(), "{format}: every _record_id once");
        assert_same_multiset(&rows, &truth);
        assert!(
            emu.audit_requests() - before <= 3,
            "{format}: only the new hours and the look-back are read"
        );
        let st = status_json(&cli(&s, &["--now", "2024-03-06T13:17:00Z", "status", "--json"], &[]).await);
        assert_eq!(st["streams"][0]["gaps"], serde_json::json!([]), "{st}");
        assert_output_consistent(&s).await;
    }
}

/// A state restored from an older backup: the windows committed since are learned from the
/// lake's markers, and nothing is written twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_older_than_the_lake_never_duplicates() {
    let emu = start(emu_config(6, 200)).await;
    let s = setup(&emu, "lookback = \"1d\"");
    assert_ok(&cli(&s, &["--now", "2024-03-03T00:00:00Z", "run"], &[]).await);
    let backup = s.dir.path().join("backup");
    let state_dir = s.state().parent().unwrap().to_path_buf();
    copy_dir(&state_dir, &backup);
    assert_ok(&cli(&s, &["--now", "2024-03-05T00:00:00Z", "run"], &[]).await);
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::rename(&backup, &state_dir).unwrap();
    let o = cli(&s, &["--now", "2024-03-06T00:00:00Z", "run"], &[]).await;
    assert_ok(&o);
    assert!(stderr(&o).contains("adopted what the output holds"), "{}", stderr(&o));
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(5)));
    let r = cli(
        &s,
        &[
            "--now",
            "2024-03-06T00:00:00Z",
            "reconcile",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-06",
        ],
        &[],
    )
    .await;
    assert_ok(&r);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(5)));
    assert_output_consistent(&s).await;
}

/// A lake without commit markers (written by the previous version), or files of an attempt
/// that published and crashed before committing, with the state lost: the files are adopted
/// for deduplication, their windows read again, and nothing is written twice or lost.
#[tokio::test(flavor = "multi_thread")]
async fn files_no_marker_names_are_deduplicated_against() {
    let emu = start(emu_config(4, 200)).await;
    let s = setup(&emu, "concurrency = 1");
    let args = ["--now", "2024-03-05T00:00:00Z", "backfill", "--from", "2024-03-01"];
    // Published the third window's files, then died before its marker and commit.
    crash_at(&s, &args, "publish:3").await;
    assert!(data_files(&s.out()).len() >= 3);
    // The previous version wrote no markers: drop them, and the state.
    std::fs::remove_dir_all(s.out().join("_aos-audit-export")).unwrap();
    lose_state(&s);
    let o = cli(&s, &args, &[]).await;
    assert_ok(&o);
    assert!(stderr(&o).contains("adopted what the output holds"), "{}", stderr(&o));
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(4)));
    let again = cli(&s, &["--now", "2024-03-05T00:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await;
    assert_ok(&again);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(4)));
}

/// A state copied while an attempt was pending (a volume snapshot mid-run), restored after
/// that attempt committed in the lake and later reads deduplicated against it: start-up
/// recovery finds the attempt's marker and every file it names, and commits it rather than
/// deleting records nothing else holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_snapshot_with_a_pending_attempt_loses_nothing() {
    let emu = start(emu_config(4, 200)).await;
    let s = setup(&emu, "concurrency = 1\nlookback = \"3d\"");
    let args = ["--now", "2024-03-05T00:00:00Z", "backfill", "--from", "2024-03-01"];
    // Died after the second window's marker, before its commit.
    crash_at(&s, &args, "marker:2").await;
    let state_dir = s.state().parent().unwrap().to_path_buf();
    let snapshot = s.dir.path().join("snapshot");
    copy_dir(&state_dir, &snapshot);
    // Later runs: the pending attempt is committed, and look-backs dedup against it.
    let o = cli(&s, &args, &[]).await;
    assert_ok(&o);
    assert!(stderr(&o).contains("is committed now"), "{}", stderr(&o));
    assert_ok(&cli(&s, &["--now", "2024-03-05T00:00:00Z", "run"], &[]).await);
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::rename(&snapshot, &state_dir).unwrap();
    assert_ok(&cli(&s, &["--now", "2024-03-05T06:00:00Z", "run"], &[]).await);
    let truth = emu.ground_truth(day0(), day0() + Duration::days(4));
    assert_same_multiset(&read_all(&s.out()), &truth);
    assert_ok(&cli(&s, &["--now", "2024-03-05T06:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await);
    assert_same_multiset(&read_all(&s.out()), &truth);
    assert_output_consistent(&s).await;
}

/// An attempt that published files and died before its marker, then the state replaced by a
/// copy taken before that attempt began (its pending row is not in the copy): the attempt's
/// begin marker in the lake tells, and its files are deleted before anything is read again.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_state_never_leaves_an_uncommitted_attempts_files_behind() {
    let emu = start(emu_config(4, 200)).await;
    let s = setup(&emu, "concurrency = 1");
    assert_ok(
        &cli(
            &s,
            &[
                "--now",
                "2024-03-05T00:00:00Z",
                "backfill",
                "--from",
                "2024-03-01",
                "--to",
                "2024-03-02",
            ],
            &[],
        )
        .await,
    );
    let state_dir = s.state().parent().unwrap().to_path_buf();
    let copy = s.dir.path().join("copy");
    copy_dir(&state_dir, &copy);
    let args = ["--now", "2024-03-05T00:00:00Z", "backfill", "--from", "2024-03-01"];
    crash_at(&s, &args, "publish:2").await;
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::rename(&copy, &state_dir).unwrap();
    let o = cli(&s, &args, &[]).await;
    assert_ok(&o);
    assert!(stderr(&o).contains("attempts that never committed"), "{}", stderr(&o));
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(4)));
    assert_output_consistent(&s).await;
}
