//! One black-box test per core rule of exactly once, each named for the small change of the
//! code ("mutant") it must catch: these rules once had no test of their own, and hand-made
//! mutants of them lived through the whole suite.

use chrono::Duration;
use serde_json::json;

use crate::common::*;

/// Rule: a re-read deduplicates against every committed file of its range, re-reads of the
/// same window bounds (generation ≥ 1) included. Mutant killed: dedup that reads back only
/// generation-0 files (a `reconcile` repeated with fixed dates after late arrivals wrote the
/// late records again).
#[tokio::test(flavor = "multi_thread")]
async fn repeated_reconciles_of_the_same_bounds_dedup_against_every_generation() {
    let mut cfg = emu_config(2, 300);
    cfg.data.max_delay = Duration::hours(30);
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let args = |now: &str| {
        vec![
            "--now".to_string(),
            now.to_string(),
            "reconcile".into(),
            "--from".into(),
            "2024-03-01".into(),
            "--to".into(),
            "2024-03-03".into(),
        ]
    };
    let mut written = Vec::new();
    for now in [
        "2024-03-03T00:00:00Z",
        "2024-03-03T12:00:00Z",
        "2024-03-04T00:00:00Z",
        "2024-03-05T00:00:00Z",
    ] {
        let at = chrono::DateTime::parse_from_rfc3339(now).unwrap().to_utc();
        emu.set_now(Some(at));
        let a = args(now);
        let o = cli(&s, &a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
        assert_ok(&o);
        written.push(read_all(&s.out()).len());
        let rows = read_all(&s.out());
        let truth = emu.visible_truth(day0(), day0() + Duration::days(2), at);
        assert_same_multiset(&rows, &truth);
    }
    assert!(written.windows(2).all(|w| w[0] < w[1]), "late records kept arriving: {written:?}");
    let names: Vec<String> = data_files(&s.out())
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("-g2-")),
        "reads of generation 2 and up happened: {names:?}"
    );
}

/// Rule: coverage is the union of committed ranges, however they nest. Mutant killed: a gap
/// computed with `cursor = e` instead of `cursor.max(e)` (a finished backfill re-read its range
/// after a narrow reconcile inside it).
#[tokio::test(flavor = "multi_thread")]
async fn a_narrow_reconcile_inside_a_backfill_leaves_no_gap() {
    let emu = start(emu_config(4, 100)).await;
    let s = setup(&emu, "");
    let now = ["--now", "2024-03-06T00:00:00Z"];
    assert_ok(
        &cli(
            &s,
            &[&now[..], &["backfill", "--from", "2024-03-01", "--to", "2024-03-05"]].concat(),
            &[],
        )
        .await,
    );
    assert_ok(
        &cli(
            &s,
            &[
                &now[..],
                &["reconcile", "--from", "2024-03-02T06:00:00Z", "--to", "2024-03-02T18:00:00Z"],
            ]
            .concat(),
            &[],
        )
        .await,
    );
    let before = emu.audit_requests();
    let o = cli(
        &s,
        &[&now[..], &["backfill", "--from", "2024-03-01", "--to", "2024-03-05"]].concat(),
        &[],
    )
    .await;
    assert_ok(&o);
    assert_eq!(emu.audit_requests(), before, "a finished backfill makes no API call");
    let st = status_json(&cli(&s, &[&now[..], &["status", "--json"]].concat(), &[]).await);
    assert_eq!(
        st["streams"][0]["coverage"],
        json!([["2024-03-01T00:00:00Z", "2024-03-05T00:00:00Z"]]),
        "{st}"
    );
}

/// Rule: start-up recovery deletes the published files of an attempt that never committed.
/// Mutant killed: recovery that forgets the attempt but deletes nothing (only the GCS test
/// noticed).
#[tokio::test(flavor = "multi_thread")]
async fn start_up_recovery_deletes_an_uncommitted_attempts_files() {
    let emu = start(emu_config(3, 200)).await;
    let s = setup(&emu, "concurrency = 1");
    let args = ["--now", "2024-03-04T00:00:00Z", "backfill", "--from", "2024-03-01"];
    crash_at(&s, &args, "publish:2").await;
    // The second window's file is published, not committed (no marker): on disk, not in the
    // manifest.
    let on_disk = data_files(&s.out()).len();
    let st = status_json(&cli(&s, &["--now", "2024-03-04T00:00:00Z", "status", "--json"], &[]).await);
    assert_eq!(st["pending_attempts"], 1, "{st}");
    let committed: u64 = st["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["files"].as_u64().unwrap())
        .sum();
    assert!(on_disk as u64 > committed, "uncommitted files are visible before recovery");
    // Any command that writes recovers first: here a backfill of the committed first day,
    // which then has nothing to read or write.
    let before = emu.audit_requests();
    let o = cli(
        &s,
        &[
            "--now",
            "2024-03-04T00:00:00Z",
            "backfill",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-02",
        ],
        &[],
    )
    .await;
    assert_ok(&o);
    assert_eq!(emu.audit_requests(), before);
    assert_eq!(
        data_files(&s.out()).len() as u64,
        committed,
        "recovery deleted exactly the uncommitted files"
    );
    assert_ok(&cli(&s, &args, &[]).await);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(3)));
    assert_output_consistent(&s).await;
}

/// Rule: a window commits only after every file of it is published. Mutant killed: a commit
/// before publishing (only the crash-point loop noticed): a crash between the two then left a
/// committed window without its files — its records lost, its ids unreadable.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_while_publishing_leaves_the_window_uncommitted() {
    let emu = start(emu_config(3, 300)).await;
    // Small files: each window publishes several, so the crash lands between two of them.
    let s = setup(&emu, "concurrency = 1\nfile_max_rows = 40");
    let args = ["--now", "2024-03-04T00:00:00Z", "backfill", "--from", "2024-03-01"];
    crash_at(&s, &args, "publish:3").await;
    let st = status_json(&cli(&s, &["--now", "2024-03-04T00:00:00Z", "status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["coverage"], json!([]), "nothing committed mid-publish: {st}");
    assert_ok(&cli(&s, &args, &[]).await);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(3)));
    assert_output_consistent(&s).await;
}

/// Rule: every documented field is part of a record's identity. Mutant killed: a field left
/// out of the identity (only a unit cross-check over the same field list noticed). Two records
/// differing in one documented field only, at the same instant: the second arrives after the
/// first was exported, and the API then returns it first. Were the field not in the identity,
/// the two would be twins numbered by order: the new one taken for the known one, the known
/// one written again.
#[tokio::test(flavor = "multi_thread")]
async fn every_documented_field_is_part_of_the_identity() {
    let fields = aos_audit_export::model::DOCUMENTED_FIELDS;
    let record = |i: usize, variant: &str| {
        let t = day0() + Duration::hours(1) + Duration::seconds(i as i64);
        let mut v = json!({"actionName": "Update", "actionTime": t.to_rfc3339(), "objectName": format!("o{i}")});
        let f = fields[i];
        if f == "actionTime" {
            // The instant itself: a tick later.
            if variant == "b" {
                v[f] = json!((t + Duration::nanoseconds(100)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
            }
        } else if f == "additionalDetails" {
            v[f] = json!({"v": variant});
        } else {
            v[f] = json!(format!("value-{variant}"));
        }
        v
    };
    let served = |i: usize, v: serde_json::Value| (day0() + Duration::hours(1) + Duration::seconds(i as i64), v);
    let mut first = emu_config(1, 0);
    first.extra_records = (0..fields.len()).map(|i| served(i, record(i, "a"))).collect();
    let emu = start(first).await;
    let s = setup(&emu, "");
    assert_ok(&cli(&s, &["--now", "2024-03-02T00:00:00Z", "backfill", "--from", "2024-03-01"], &[]).await);
    // The same tenant, now also holding each record's sibling, served before it.
    let mut second = emu_config(1, 0);
    second.extra_records = (0..fields.len())
        .flat_map(|i| [served(i, record(i, "b")), served(i, record(i, "a"))])
        .collect();
    let emu2 = start(second).await;
    let text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&emu.base_url(), &emu2.base_url())
        .replace(&emu.token_url(), &emu2.token_url());
    std::fs::write(&s.config, text).unwrap();
    let o = cli(&s, &["--now", "2024-03-02T00:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await;
    assert_ok(&o);
    let truth: Vec<_> = (0..fields.len()).flat_map(|i| [record(i, "a"), record(i, "b")]).collect();
    assert_same_multiset(&read_all(&s.out()), &truth);
}
