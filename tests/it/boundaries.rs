//! Exactly once under every reading of the API that its documentation leaves open: how it
//! compares `startTime`/`endTime` (inclusive or exclusive, at the tick, the millisecond or the
//! whole second) and how it spells a record (nulls omitted, keys reordered, numbers and
//! instants re-spelled, whitespace).

use aos_audit_export::exporter::Exporter;
use aos_emulator::{Bounds, EmulatorHandle, Serialization};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// Records at every hour boundary of `days` days and just around it: exactly on it, a tick,
/// a millisecond and most of a second either side. Served at their own `actionTime`.
fn boundary_records(days: i64) -> Vec<(DateTime<Utc>, Value)> {
    let offsets_ns = [
        0i64,
        100,
        -100,
        1_000_000,
        -1_000_000,
        300_000_000,
        -300_000_000,
        999_999_900,
        -999_999_900,
    ];
    let mut out = Vec::new();
    for h in 0..days * 24 {
        for (k, ns) in offsets_ns.iter().enumerate() {
            let t = day0() + Duration::hours(h) + Duration::nanoseconds(*ns);
            let text = t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            out.push((
                t,
                json!({"actionName": "Boundary", "actionTime": text, "objectName": format!("b{h}-{k}")}),
            ));
        }
    }
    out
}

async fn exporter(s: &Setup, window: &str, now: DateTime<Utc>) -> Exporter {
    let mut raw = aos_audit_export::config::load(Some(&s.config), &[]).unwrap();
    raw.export.window = window.into();
    Exporter::new(raw.validate(now).unwrap()).await.unwrap()
}

fn truth_with_extras(emu: &EmulatorHandle, extras: &[(DateTime<Utc>, Value)], days: i64) -> Vec<Value> {
    let mut truth = emu.ground_truth(day0(), day0() + Duration::days(days));
    truth.extend(
        extras
            .iter()
            .filter(|(t, _)| *t >= day0() && *t < day0() + Duration::days(days))
            .map(|(_, v)| v.clone()),
    );
    truth
}

/// Under each of the 12 readings, a backfill in 1-hour windows (bounds on the records) and a
/// reconcile in 5-hour windows starting at another offset leave the lake equal to the ground
/// truth: nothing stuck, lost or doubled at a bound. On a server comparing at the second, the
/// previous version failed every window ("outside the window"); with an exclusive start it
/// skipped the records just after each bound.
#[tokio::test(flavor = "multi_thread")]
async fn every_bounds_semantic_is_exact() {
    let extras = boundary_records(1);
    for bounds in Bounds::all() {
        let mut cfg = emu_config(1, 200);
        cfg.bounds = bounds;
        cfg.extra_records = extras.clone();
        let emu = start(cfg).await;
        let s = setup(&emu, "");
        let now = day0() + Duration::days(3);
        let cancel = CancellationToken::new();
        let ex = exporter(&s, "1h", now).await;
        let sum = ex
            .backfill(day0(), day0() + Duration::days(1), now, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        assert_eq!(sum.windows, 24, "{bounds:?}");
        drop(ex);
        let truth = truth_with_extras(&emu, &extras, 1);
        assert_same_multiset(&read_all(&s.out()), &truth);
        let ex = exporter(&s, "5h", now).await;
        let from = day0() + Duration::minutes(30);
        let sum = ex
            .reconcile(from, from + Duration::days(1), now, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        assert_eq!(sum.written, 0, "{bounds:?}: a re-read in other windows found nothing new");
        drop(ex);
        assert_same_multiset(&read_all(&s.out()), &truth);
    }
}

/// A server that ignores the window (returns records far outside it) fails the run with a
/// clear error and commits nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_ignores_the_window_fails_clearly() {
    let mut cfg = emu_config(2, 50);
    // Served inside the first hour, but its actionTime is a day later.
    let far = day0() + Duration::days(1);
    cfg.extra_records = vec![(
        day0() + Duration::minutes(10),
        json!({"actionName": "Odd", "actionTime": far.to_rfc3339()}),
    )];
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"1h\"");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-01T01:00:00Z"], &[]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not honour startTime/endTime"), "{}", stderr(&o));
    assert!(data_files(&s.out()).is_empty());
}

/// The API switches how it spells records mid-life — nulls omitted, keys reversed, numbers and
/// instants re-spelled, whitespace — and then back: no re-read writes a record twice, in
/// Parquet or NDJSON. Under id scheme 2, the look-back after such a switch duplicated every
/// record it re-read.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_of_spelling_never_duplicates() {
    for format in ["parquet", "ndjson"] {
        let emu = start(emu_config(3, 300)).await;
        let s = setup(&emu, &format!("format = \"{format}\"\nlookback = \"1d\"\nwindow = \"6h\""));
        let cancel = CancellationToken::new();
        let mut now = day0() + Duration::days(2);
        emu.set_now(Some(now));
        exporter(&s, "6h", now).await.run_once(now, &cancel).await.unwrap();
        for bits in [0b0001u8, 0b0010, 0b0100, 0b1000, 0b1111, 0] {
            emu.set_serialization(Serialization {
                omit_nulls: bits & 1 != 0,
                reverse_keys: bits & 2 != 0,
                respell: bits & 4 != 0,
                pretty: bits & 8 != 0,
            });
            now += Duration::hours(4);
            emu.set_now(Some(now));
            let ex = exporter(&s, "6h", now).await;
            ex.run_once(now, &cancel).await.unwrap();
            let sum = ex.reconcile(day0(), day0() + Duration::days(3), now, &cancel).await.unwrap();
            assert_eq!(
                sum.written, 0,
                "{format} {bits:04b}: a re-read in another spelling wrote {}",
                sum.written
            );
        }
        let truth = emu.ground_truth(day0(), day0() + Duration::days(3));
        assert_same_multiset(&read_all(&s.out()), &truth);
    }
}

/// Records without a usable `actionTime` at and around every hour bound (a server returns one
/// near a bound to both neighbours), some of them identical twins at one instant, read in
/// 1-hour windows four at a time, then re-read in 5-hour windows at another offset: each is
/// written exactly once under every bounds semantic. The previous version wrote a record at a
/// bound twice (once per neighbour).
#[tokio::test(flavor = "multi_thread")]
async fn records_without_action_time_at_bounds_are_written_once() {
    let mut extras = Vec::new();
    // Hours 1..23: a record within a second of the range's own start or end belongs to it or
    // not depending on the reading (a neighbour outside the range would own it).
    for h in 1..24i64 {
        for (k, ms) in [0i64, 300, -300, 900, -900].into_iter().enumerate() {
            let at = day0() + Duration::hours(h) + Duration::milliseconds(ms);
            extras.push((at, json!({"actionName": "NoTime", "objectName": format!("u{h}-{k}")})));
        }
        // Identical twins, served at one instant in the middle of the hour.
        let twin = json!({"actionName": "NoTime", "objectName": format!("twin{h}")});
        extras.push((day0() + Duration::hours(h) + Duration::minutes(30), twin.clone()));
        extras.push((day0() + Duration::hours(h) + Duration::minutes(30), twin));
    }
    for bounds in Bounds::all() {
        let mut cfg = emu_config(1, 50);
        cfg.bounds = bounds;
        cfg.extra_records = extras.clone();
        let emu = start(cfg).await;
        let s = setup(&emu, "concurrency = 4");
        let now = day0() + Duration::days(3);
        let cancel = CancellationToken::new();
        // Up to the last bound (a record there belongs to neither side of the range's end).
        let end = day0() + Duration::hours(23) + Duration::minutes(59);
        let ex = exporter(&s, "1h", now).await;
        ex.backfill(day0(), end, now, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        drop(ex);
        let ex = exporter(&s, "5h", now).await;
        let from = day0() + Duration::minutes(30);
        let sum = ex
            .reconcile(from, end, now, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        drop(ex);
        let mut truth = emu.ground_truth(day0(), end);
        truth.extend(extras.iter().map(|(_, v)| v.clone()));
        let rows = read_all(&s.out());
        let got = multiset(rows.iter().map(|r| &r.record));
        for (k, n) in &got {
            assert_eq!(
                Some(n),
                multiset(truth.iter()).get(k),
                "{bounds:?}: {k} (reconcile wrote {})",
                sum.written
            );
        }
        assert_same_multiset(&rows, &truth);
    }
}

/// Identical records without `actionTime` in adjacent windows, away from their bound: each
/// window keeps its own. The padded queries overlap by two seconds, so a neighbour's copies
/// count only as far as the overlap returns them (a query of the overlap tells). With a copy
/// exactly at the bound too (returned by both neighbours), and without.
#[tokio::test(flavor = "multi_thread")]
async fn identical_records_without_action_time_in_adjacent_windows_are_both_kept() {
    let odd = json!({"actionName": "Login", "actionUser": "x@contoso.com"});
    for at_bound in [false, true] {
        let mut served = vec![day0() + Duration::hours(3), day0() + Duration::days(1) + Duration::hours(3)];
        if at_bound {
            served.push(day0() + Duration::days(2));
        }
        let mut cfg = emu_config(3, 20);
        cfg.extra_records = served.iter().map(|t| (*t, odd.clone())).collect();
        let emu = start(cfg).await;
        let s = setup(&emu, "concurrency = 1");
        let now = day0() + Duration::days(4);
        let cancel = CancellationToken::new();
        let ex = exporter(&s, "1d", now).await;
        ex.backfill(day0(), day0() + Duration::days(3), now, &cancel).await.unwrap();
        ex.reconcile(day0(), day0() + Duration::days(3), now, &cancel).await.unwrap();
        drop(ex);
        let mut truth = emu.ground_truth(day0(), day0() + Duration::days(3));
        truth.extend(served.iter().map(|_| odd.clone()));
        assert_same_multiset(&read_all(&s.out()), &truth);
    }
}
