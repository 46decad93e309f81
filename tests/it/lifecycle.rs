//! Exactly once over the lifecycle: configuration changes between runs, a backfill before the
//! first run, odd-but-valid API answers, late records repaired by `reconcile`, and a crash at
//! every step of the commit protocol.

use std::collections::BTreeMap;

use aos_audit_export::crashpoint::STEPS;
use aos_emulator::Faults;
use chrono::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn raising_the_lookback_between_runs_writes_nothing_twice() {
    let emu = start(emu_config(6, 300)).await;
    let s = setup(&emu, "lookback = \"2h\"");
    let t1 = (day0() + Duration::days(5)).to_rfc3339();
    assert_ok(&cli(&s, &["--now", &t1, "run"], &[]).await);
    // The operator raises the look-back to three days, as docs/operations.md advises for late
    // data: the next run re-reads three days whose keys an old version had pruned.
    let t2 = (day0() + Duration::days(5) + Duration::hours(1)).to_rfc3339();
    let o = cli(&s, &["--now", &t2, "run"], &[("AOS_EXPORT_EXPORT__LOOKBACK", "3d")]).await;
    assert_ok(&o);
    let new_hour = emu
        .ground_truth(day0() + Duration::days(5), day0() + Duration::days(5) + Duration::hours(1))
        .len();
    assert!(
        stdout(&o).contains(&format!("wrote {new_hour} new records")),
        "only the new hour: {}",
        stdout(&o)
    );
    let (from, _) = range(0);
    assert_same_multiset(
        &read_all(&s.out()),
        &emu.ground_truth(from, day0() + Duration::days(5) + Duration::hours(1)),
    );
    // And a smaller window on top changes nothing either.
    let o = cli(
        &s,
        &["--now", &t2, "run"],
        &[("AOS_EXPORT_EXPORT__LOOKBACK", "4d"), ("AOS_EXPORT_EXPORT__WINDOW", "5h")],
    )
    .await;
    assert!(stdout(&o).contains("wrote 0 new records"), "{}", stdout(&o));
    assert_output_consistent(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn switching_format_into_the_same_output_is_refused_before_writing() {
    let emu = start(emu_config(2, 100)).await;
    let s = setup(&emu, "");
    assert_ok(&cli(&s, &["--now", "2024-03-03T00:00:00Z", "run"], &[]).await);
    let files = data_files(&s.out());
    let o = cli(&s, &["--now", "2024-03-03T06:00:00Z", "--format", "ndjson", "run"], &[]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("export.format is ndjson") && err.contains("parquet files"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(data_files(&s.out()), files, "nothing written");
}

/// Records without a usable `actionTime` land in `dt=unknown`, exactly once however often the
/// range holding them is read again, and identical ones of different windows both survive.
#[tokio::test(flavor = "multi_thread")]
async fn records_without_a_usable_action_time_are_kept_exactly_once() {
    let mut cfg = emu_config(3, 50);
    let odd = serde_json::json!({"actionName": "Login", "actionUser": "x@contoso.com"});
    let garbled = serde_json::json!({"actionName": "Login", "actionTime": "yesterday"});
    cfg.extra_records = vec![
        (day0() + Duration::hours(3), odd.clone()),
        (day0() + Duration::days(1) + Duration::hours(3), odd.clone()),
        (day0() + Duration::days(2) + Duration::hours(3), garbled.clone()),
    ];
    let emu = start(cfg).await;
    let s = setup(&emu, "lookback = \"3d\"");
    assert_ok(&cli(&s, &["--now", "2024-03-04T00:00:00Z", "run"], &[]).await);
    // Re-read three days twice more (the look-back), and reconcile everything.
    assert_ok(&cli(&s, &["--now", "2024-03-04T01:00:00Z", "run"], &[]).await);
    assert_ok(&cli(&s, &["--now", "2024-03-04T02:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await);
    // A read whose window spans both days returns both identical copies at once.
    let wide = [("AOS_EXPORT_EXPORT__WINDOW", "3d")];
    assert_ok(&cli(&s, &["--now", "2024-03-04T03:00:00Z", "reconcile", "--from", "2024-03-01"], &wide).await);
    let mut truth = emu.ground_truth(day0(), day0() + Duration::days(3));
    truth.extend([odd.clone(), odd, garbled]);
    assert_same_multiset(&read_all(&s.out()), &truth);
    assert!(data_files(&s.out()).iter().any(|f| f.to_string_lossy().contains("dt=unknown")));
    assert_output_consistent(&s).await;
}

/// Keys the API sends named like the exporter's columns (`_record_id`, `_ingested_at`,
/// `_extra`) never collide with them: in NDJSON they move into `_extra`, in Parquet they are in
/// `_extra` like any unknown key. Every line has unique keys, the ids read back, and look-back
/// re-reads and a reconcile write nothing twice. The previous version wrote a repeated
/// `_record_id` key, and every later overlapping run failed with exit 5.
#[tokio::test(flavor = "multi_thread")]
async fn api_keys_named_like_exporter_columns_never_collide() {
    for format in ["ndjson", "parquet"] {
        let mut cfg = emu_config(2, 50);
        let odd = serde_json::json!({"actionName": "Login", "actionTime": "2024-03-01T05:00:00Z",
            "_record_id": "from-the-api", "_ingested_at": 7, "_extra": {"k": [1, 2]}, "clientIP": "10.0.0.1"});
        cfg.extra_records = vec![(day0() + Duration::hours(5), odd.clone())];
        let emu = start(cfg).await;
        let s = setup(&emu, &format!("format = \"{format}\"\nlookback = \"2d\""));
        assert_ok(&cli(&s, &["--now", "2024-03-03T00:00:00Z", "run"], &[]).await);
        assert_ok(&cli(&s, &["--now", "2024-03-03T01:00:00Z", "run"], &[]).await);
        assert_ok(&cli(&s, &["--now", "2024-03-03T02:00:00Z", "reconcile", "--from", "2024-03-01"], &[]).await);
        let mut truth = emu.ground_truth(day0(), day0() + Duration::days(2));
        truth.push(odd.clone());
        assert_same_multiset(&read_all(&s.out()), &truth);
        if format == "ndjson" {
            for f in data_files(&s.out()) {
                for line in std::fs::read_to_string(&f).unwrap().lines() {
                    let keys = top_level_keys(line);
                    let unique: std::collections::HashSet<_> = keys.iter().collect();
                    assert_eq!(unique.len(), keys.len(), "repeated key in {line}");
                }
            }
        }
        assert_output_consistent(&s).await;
    }
}

/// The top-level keys of a JSON object, repeats kept.
fn top_level_keys(line: &str) -> Vec<String> {
    struct Keys(Vec<String>);
    impl<'de> serde::Deserialize<'de> for Keys {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Keys;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                    let mut out = Vec::new();
                    while let Some(k) = m.next_key::<String>()? {
                        m.next_value::<serde::de::IgnoredAny>()?;
                        out.push(k);
                    }
                    Ok(Keys(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Keys>(line).unwrap().0
}

/// A record the API returns far outside the query (the server ignores the window) fails
/// the run with the window and the time; nothing of that window is committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_outside_the_window_fails_the_run_and_commits_nothing() {
    let mut cfg = emu_config(2, 50);
    cfg.extra_records = vec![(
        day0() + Duration::hours(30),
        serde_json::json!({"actionName": "Login", "actionTime": "2024-03-05T10:00:00Z"}),
    )];
    let emu = start(cfg).await;
    let s = setup(&emu, "concurrency = 1");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("actionTime 2024-03-05 10:00:00 UTC"), "{}", stderr(&o));
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    let coverage = st["streams"][0]["coverage"].as_array().unwrap().clone();
    assert_eq!(coverage.len(), 1, "only the first day is committed: {st}");
    assert_eq!(coverage[0][1], "2024-03-02T00:00:00Z", "{st}");
    assert_output_consistent(&s).await;
}

/// Widening a stream's filters makes it a new stream (own coverage, read again from
/// `export.start`), but what the old stream wrote is found in the lake and not written twice.
#[tokio::test(flavor = "multi_thread")]
async fn widening_a_streams_filters_writes_nothing_twice() {
    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let now = "2024-03-04T00:00:00Z";
    let portal = [("AOS_EXPORT_API__PRODUCT_TYPES", "[\"Portal\"]")];
    assert_ok(&cli(&s, &["--now", now, "run"], &portal).await);
    let both = [("AOS_EXPORT_API__PRODUCT_TYPES", "[\"SMP\", \"Portal\"]")];
    assert_ok(&cli(&s, &["--now", now, "run"], &both).await);
    let name_of = |t: &str| aos_emulator::data::PRODUCTS.iter().find(|p| p.0 == t).unwrap().1;
    let truth: Vec<_> = emu
        .ground_truth(day0(), day0() + Duration::days(3))
        .into_iter()
        .filter(|r| [name_of("Portal"), name_of("SMP")].contains(&r["product"].as_str().unwrap()))
        .collect();
    assert!(truth.iter().any(|r| r["product"] == name_of("Portal")) && truth.iter().any(|r| r["product"] == name_of("SMP")));
    assert_same_multiset(&read_all(&s.out()), &truth);
    assert_output_consistent(&s).await;
}

/// A named stream is its filters too. Widened from `Portal` to `Portal, SMP` under the same
/// name, the next `run` exports SMP's whole history and writes nothing twice; narrowed back,
/// nothing is written; `status` shows the filters in effect. The previous version kept the
/// name's coverage: 0 written, SMP's history never exported.
#[tokio::test(flavor = "multi_thread")]
async fn a_named_streams_filter_change_exports_its_new_history_once() {
    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let base = std::fs::read_to_string(&s.config).unwrap();
    let named = |products: &str| {
        std::fs::write(
            &s.config,
            format!("{base}\n[[api.streams]]\nname = \"main\"\nproduct_types = [{products}]\n"),
        )
        .unwrap();
    };
    let now = "2024-03-04T00:00:00Z";
    named("\"Portal\"");
    assert_ok(&cli(&s, &["--now", now, "backfill", "--from", "2024-03-01"], &[]).await);
    named("\"Portal\", \"SMP\"");
    let o = cli(&s, &["--now", now, "run"], &[]).await;
    assert_ok(&o);
    let name_of = |t: &str| aos_emulator::data::PRODUCTS.iter().find(|p| p.0 == t).unwrap().1;
    let truth: Vec<_> = emu
        .ground_truth(day0(), day0() + Duration::days(3))
        .into_iter()
        .filter(|r| [name_of("Portal"), name_of("SMP")].contains(&r["product"].as_str().unwrap()))
        .collect();
    assert!(truth.iter().any(|r| r["product"] == name_of("SMP")));
    assert_same_multiset(&read_all(&s.out()), &truth);
    let st = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    let streams = st["streams"].as_array().unwrap();
    let active: Vec<_> = streams.iter().filter(|x| x["in_effect"] == true).collect();
    assert_eq!(active.len(), 1, "{st}");
    assert_eq!(active[0]["product_types"], "Portal,SMP", "{st}");
    assert_eq!(active[0]["gaps"], serde_json::json!([]), "{st}");
    let text = stdout(&cli(&s, &["--now", now, "status"], &[]).await);
    assert!(
        text.contains("productTypes=[Portal,SMP]") && text.contains("not in effect"),
        "{text}"
    );
    // Back to Portal alone: its coverage is still true, nothing is read again or written.
    named("\"Portal\"");
    let before = emu.audit_requests();
    assert_ok(&cli(&s, &["--now", now, "run"], &[]).await);
    assert_same_multiset(&read_all(&s.out()), &truth);
    assert!(emu.audit_requests() - before <= 2, "only the look-back is read");
    assert_output_consistent(&s).await;
}

/// Right after a backfill alone (no `run` yet, so no contiguous prefix from `export.start`),
/// `status` shows the coverage, the gaps before and after it, and how far behind it is. The
/// previous version said "nothing exported yet" over 9,016 committed records.
#[tokio::test(flavor = "multi_thread")]
async fn status_after_a_backfill_alone_shows_coverage_gaps_and_lag() {
    let emu = start(emu_config(6, 100)).await;
    let s = setup(&emu, "");
    let now = "2024-03-07T00:00:00Z";
    assert_ok(&cli(&s, &["--now", now, "backfill", "--from", "2024-03-03", "--to", "2024-03-05"], &[]).await);
    let text = stdout(&cli(&s, &["--now", now, "status"], &[]).await);
    assert!(!text.contains("nothing exported yet"), "{text}");
    assert!(
        text.contains("exported ranges end at 2024-03-05T00:00:00+00:00 (2d 00h behind now)"),
        "{text}"
    );
    assert!(
        text.contains("gap: 2024-03-01T00:00:00+00:00 .. 2024-03-03T00:00:00+00:00"),
        "{text}"
    );
    assert!(
        text.contains("gap: 2024-03-05T00:00:00+00:00 .. 2024-03-07T00:00:00+00:00"),
        "{text}"
    );
    let st = status_json(&cli(&s, &["--now", now, "status", "--json"], &[]).await);
    let x = &st["streams"][0];
    assert_eq!(x["lag_seconds"], 2 * 86_400, "{st}");
    assert_eq!(x["gaps"].as_array().unwrap().len(), 2, "{st}");
    assert_eq!(x["coverage"].as_array().unwrap().len(), 1, "{st}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_after_start_then_run_leaves_no_hole() {
    let emu = start(emu_config(6, 200)).await;
    let s = setup(&emu, "");
    assert_ok(
        &cli(
            &s,
            &[
                "--now",
                "2024-03-07T00:00:00Z",
                "backfill",
                "--from",
                "2024-03-04",
                "--to",
                "2024-03-06",
            ],
            &[],
        )
        .await,
    );
    assert_ok(&cli(&s, &["--now", "2024-03-07T00:00:00Z", "run"], &[]).await);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(6)));
    let st = status_json(&cli(&s, &["--now", "2024-03-07T00:00:00Z", "status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["gaps"], serde_json::json!([]), "{st}");
    assert_output_consistent(&s).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200_without_a_data_array_is_retried_never_committed_empty() {
    // Now and then: retried, and the export is exact.
    let mut cfg = emu_config(3, 200);
    cfg.faults = Faults {
        seed: 5,
        rate_malformed: 0.3,
        ..Faults::default()
    };
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    assert_ok(&cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-04"], &[]).await);
    assert!(emu.counters().faults_injected.load(std::sync::atomic::Ordering::Relaxed) > 0);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(day0(), day0() + Duration::days(3)));

    // Always: the run fails with the server's text, and nothing is committed.
    let mut cfg = emu_config(1, 50);
    cfg.faults = Faults {
        seed: 5,
        rate_malformed: 1.0,
        ..Faults::default()
    };
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let o = cli(
        &s,
        &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"],
        &[("AOS_EXPORT_API__MAX_RETRIES", "2")],
    )
    .await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("no \"data\" array"), "{}", stderr(&o));
    let st = status_json(&cli(&s, &["status", "--json"], &[]).await);
    assert_eq!(st["streams"][0]["coverage"], serde_json::json!([]), "nothing committed: {st}");
    assert!(data_files(&s.out()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_repairs_records_later_than_lag_plus_lookback() {
    let mut cfg = emu_config(2, 300);
    cfg.data.max_delay = Duration::hours(4);
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"6h\"\nlookback = \"30m\"");
    // Runs every hour of emulated time, while records keep arriving up to 4 h late.
    let mut now = day0() + Duration::hours(1);
    while now <= day0() + Duration::days(2) {
        emu.set_now(Some(now));
        assert_ok(&cli(&s, &["--now", &now.to_rfc3339(), "run"], &[]).await);
        now += Duration::hours(1);
    }
    let end = day0() + Duration::days(2);
    let truth = emu.ground_truth(day0(), end);
    let before = read_all(&s.out()).len();
    assert!(before < truth.len(), "late records were missed ({before} of {})", truth.len());
    emu.set_now(Some(end + Duration::hours(6)));
    let at = (end + Duration::hours(6)).to_rfc3339();
    let o = cli(&s, &["--now", &at, "reconcile", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await;
    assert_ok(&o);
    assert!(stdout(&o).contains("records were missing and are now written"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("wrote {} new records", truth.len() - before)),
        "{}",
        stdout(&o)
    );
    assert_same_multiset(&read_all(&s.out()), &truth);
    // Idempotent.
    let o = cli(&s, &["--now", &at, "reconcile", "--from", "2024-03-01", "--to", "2024-03-03"], &[]).await;
    assert!(stdout(&o).contains("wrote 0 new records"), "{}", stdout(&o));
    assert_output_consistent(&s).await;
}

/// A crash (abort, as abrupt as SIGKILL) at the n-th time a run reaches each step of the
/// commit protocol, then a normal run: the lake is exact every time. Each kill is attributed
/// to the step whose crash point fired.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_at_every_step_of_the_commit_protocol_is_survived() {
    // Six one-day windows: commit and stage are reached once per window.
    let emu = start(emu_config(6, 100)).await;
    let truth = emu.ground_truth(day0(), day0() + Duration::days(6));
    let mut kills: BTreeMap<&str, u32> = BTreeMap::new();
    for step in STEPS {
        for n in 1..=5 {
            let s = setup(&emu, "concurrency = 2\nfile_max_rows = 60");
            let args = ["backfill", "--from", "2024-03-01", "--to", "2024-03-07"];
            if *step == "recover" {
                // Recovery runs only where an attempt was left uncommitted: make one first.
                let o = cli(&s, &args, &[("AOS_TEST_CRASH_AT", "publish:2")]).await;
                assert_eq!(o.status.code(), None, "killed at publish: {}", stderr(&o));
            }
            // Recovery meets one leftover attempt at a time; the others count their n-th hit.
            let armed = if *step == "recover" {
                "recover:1".to_string()
            } else {
                format!("{step}:{n}")
            };
            let o = cli(&s, &args, &[("AOS_TEST_CRASH_AT", &armed)]).await;
            if o.status.code().is_none() && stderr(&o).contains(&format!("crashpoint: aborting at {step}")) {
                *kills.entry(step).or_default() += 1;
            }
            assert_ok(&cli(&s, &args, &[]).await);
            assert_same_multiset(&read_all(&s.out()), &truth);
            assert_output_consistent(&s).await;
        }
    }
    eprintln!("kills per step: {kills:?}");
    for step in STEPS {
        assert!(
            kills.get(step).copied().unwrap_or(0) >= 5,
            "step {step} was interrupted 5 times: {kills:?}"
        );
    }
}
