//! Identical records without a usable `actionTime` at different instants, some arriving late,
//! re-read by windows that straddle those which wrote them (a `reconcile` from another start):
//! the lake's copies may lie inside the re-read window or outside it, and only a count over the
//! windows they chain to tells how many are new. Before, the straddling window's copies counted
//! whole, and a late copy was taken for one of them: lost, while `reconcile` wrote 0.

use aos_audit_export::exporter::Exporter;
use aos_emulator::Bounds;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::*;

async fn exporter(s: &Setup, window: &str, now: DateTime<Utc>) -> Exporter {
    let mut raw = aos_audit_export::config::load(Some(&s.config), &[]).unwrap();
    raw.export.window = window.into();
    Exporter::new(raw.validate(now).unwrap()).await.unwrap()
}

/// Serves `rec` at each instant: from its arrival (emulator time) when it has one.
fn serve(cfg: &mut aos_emulator::EmulatorConfig, rec: &Value, copies: impl IntoIterator<Item = (DateTime<Utc>, Option<DateTime<Utc>>)>) {
    for (at, arrival) in copies {
        if let Some(a) = arrival {
            cfg.extra_arrivals.insert(cfg.extra_records.len(), a);
        }
        cfg.extra_records.push((at, rec.clone()));
    }
}

/// The emulator of `cfg`, its clock at `backfilled`, and a lake backfilled in 1-day windows up
/// to it, one window at a time.
async fn backfilled_lake(cfg: aos_emulator::EmulatorConfig, backfilled: DateTime<Utc>) -> (aos_emulator::EmulatorHandle, Setup) {
    let emu = start(cfg).await;
    emu.set_now(Some(backfilled));
    let s = setup(&emu, "concurrency = 1");
    let ex = exporter(&s, "1d", backfilled).await;
    ex.backfill(day0(), backfilled, backfilled, &CancellationToken::new())
        .await
        .unwrap();
    (emu, s)
}

/// Per content: its copies, in hours after `day0`, and whether each arrives late (after the
/// backfill). The backfill reads days `[0, 24h)`, `[24h, 48h)`, `[48h, 72h)`; the reconcile
/// from 12h reads `[12h, 24h)` (straddled by the first day: its copies may lie before 12h),
/// then whole days (windows are cut at midnight); the 5-hour reconcile's windows then straddle
/// both the days and `[12h, 24h)`.
fn copies() -> Vec<(&'static str, Vec<(i64, bool)>)> {
    vec![
        // The late copy inside the re-read window, the known one outside it: the case lost before.
        ("late-inside", vec![(3, false), (18, true)]),
        // Both known, one inside: nothing to write.
        ("both-known", vec![(3, false), (18, false)]),
        // The late copy outside the re-read window, the known one inside.
        ("late-outside", vec![(18, false), (2, true)]),
        // The next day, read whole by the reconcile (no straddling: counted as before).
        ("far-side", vec![(44, false), (30, true)]),
        // Across both re-read windows and three days, two of them late.
        ("spread", vec![(5, false), (20, false), (26, true), (40, true), (50, false)]),
        // Late twins at one instant beside a known copy.
        ("twins", vec![(6, false), (15, true), (15, true)]),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn late_identical_records_without_action_time_are_written_once_by_straddling_rereads() {
    let backfilled = day0() + Duration::days(3);
    let arrival = backfilled + Duration::hours(1);
    for bounds in Bounds::all() {
        let mut cfg = emu_config(3, 20);
        cfg.bounds = bounds;
        let mut truth_extra: Vec<Value> = Vec::new();
        for (name, at) in copies() {
            let rec = json!({"actionName": "NoTime", "objectName": name});
            truth_extra.extend(at.iter().map(|_| rec.clone()));
            let at = at
                .into_iter()
                .map(|(h, late)| (day0() + Duration::hours(h) + Duration::minutes(7), late.then_some(arrival)));
            serve(&mut cfg, &rec, at);
        }
        let emu = start(cfg).await;
        emu.set_now(Some(backfilled));
        let s = setup(&emu, "concurrency = 2");
        let cancel = CancellationToken::new();
        let later = backfilled + Duration::days(1);
        let ex = exporter(&s, "1d", backfilled).await;
        ex.backfill(day0(), backfilled, backfilled, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        drop(ex);
        emu.set_now(Some(later));
        let mut truth = emu.ground_truth(day0(), backfilled);
        truth.extend(truth_extra.iter().cloned());
        let want = multiset(truth.iter());
        let check = |step: &str| {
            let rows = read_all(&s.out());
            for (k, n) in multiset(rows.iter().map(|r| &r.record)) {
                assert_eq!(Some(&n), want.get(&k), "{bounds:?} after {step}: {k}");
            }
            assert_same_multiset(&rows, &truth);
        };
        // From 12h: its first window lies inside the first day, which straddles it.
        let late = copies().iter().flat_map(|(_, at)| at).filter(|(_, late)| *late).count();
        let missing = truth.len() - read_all(&s.out()).len();
        assert!(missing >= late, "{bounds:?}: the late copies arrived after the backfill");
        let ex = exporter(&s, "1d", later).await;
        let sum = ex
            .reconcile(day0() + Duration::hours(12), day0() + Duration::hours(60), later, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        drop(ex);
        assert_eq!(
            sum.written as usize, missing,
            "{bounds:?}: the straddling reconcile writes every late copy"
        );
        check("a straddling reconcile");
        // Again, aligned, and in 5-hour windows at another offset: nothing more.
        for (window, from) in [("1d", 12), ("1d", 0), ("5h", 1)] {
            let ex = exporter(&s, window, later).await;
            let sum = ex
                .reconcile(day0() + Duration::hours(from), backfilled, later, &cancel)
                .await
                .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
            drop(ex);
            assert_eq!(sum.written, 0, "{bounds:?}: a {window} reconcile from {from}h wrote again");
            check(&format!("a {window} reconcile from {from}h"));
        }
    }
}

/// Two reconciles of 6-day windows from different days: the second's window straddles the
/// first's, and the count runs over a hull of 8 days, read in two pieces; a copy exactly where
/// the pieces' padded queries meet is counted once. (Windows are cut at midnights, so only
/// windows of several days from different starts straddle each other by days.)
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_longer_than_one_query_is_counted_in_pieces() {
    let backfilled = day0() + Duration::days(10);
    let d = |h: i64| day0() + Duration::hours(h);
    // The hull `[1d, 9d)` is read as `[1d, 8d - 2s)` and `[8d - 2s, 9d)`.
    let seam = day0() + Duration::days(8) - Duration::seconds(2);
    let rec = json!({"actionName": "NoTime", "objectName": "week"});
    // (served at, arrives after which step: 0 the backfill, 1 the first reconcile, 2 the second)
    let served = [(d(27), 0), (seam, 0), (d(121), 1), (d(97), 2)];
    let arrival = |step: i64| backfilled + Duration::hours(2 * step - 1);
    for bounds in Bounds::all() {
        let mut cfg = emu_config(10, 4);
        cfg.bounds = bounds;
        serve(&mut cfg, &rec, served.map(|(at, step)| (at, (step > 0).then(|| arrival(step)))));
        let emu = start(cfg).await;
        emu.set_now(Some(backfilled));
        let s = setup(&emu, "concurrency = 2");
        let cancel = CancellationToken::new();
        let ex = exporter(&s, "1d", backfilled).await;
        ex.backfill(day0(), backfilled, backfilled, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        drop(ex);
        let mut truth = emu.ground_truth(day0(), backfilled);
        truth.extend(served.iter().map(|_| rec.clone()));
        for (step, window, from) in [(1, "6d", 1), (2, "6d", 3), (2, "6d", 3), (2, "1d", 0)] {
            let now = arrival(step) + Duration::hours(1);
            emu.set_now(Some(now));
            let ex = exporter(&s, window, now).await;
            ex.reconcile(day0() + Duration::days(from), backfilled, now, &cancel)
                .await
                .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
            drop(ex);
            let rows = read_all(&s.out());
            let weeks = rows.iter().filter(|r| r.record == rec).count();
            let arrived = served.iter().filter(|(_, at)| *at <= step).count();
            assert_eq!(weeks, arrived, "{bounds:?}: after a {window} reconcile from day {from}");
        }
        assert_same_multiset(&read_all(&s.out()), &truth);
    }
}

/// A re-read straddled by a longer window counts its content over their chain, but never
/// writes more copies than its own query serves beyond what the windows inside it hold: the
/// longer window's file may be lost and repaired later, and the repair's re-read (which no
/// longer sees that file) must then find no copy standing for one elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_straddling_file_repaired_leaves_no_copy_written_twice() {
    let backfilled = day0() + Duration::days(10);
    let d = |h: i64| day0() + Duration::hours(h);
    let rec = json!({"actionName": "NoTime", "objectName": "bridge"});
    // x known at the backfill; y late before the 6-day reconcile; z late before the 1-day one.
    let served = [(d(84), 0), (d(132), 1), (d(156), 2)];
    let arrival = |step: i64| backfilled + Duration::hours(2 * step - 1);
    let mut cfg = emu_config(10, 4);
    serve(&mut cfg, &rec, served.map(|(at, step)| (at, (step > 0).then(|| arrival(step)))));
    let (emu, s) = backfilled_lake(cfg, backfilled).await;
    let cancel = CancellationToken::new();
    let bridges = |step: &str| {
        let n = read_all(&s.out()).iter().filter(|r| r.record == rec).count();
        assert!(n <= served.len(), "after {step}: {n} copies, the API serves {}", served.len());
        n
    };
    for (step, window, from) in [(1, "6d", 1), (2, "1d", 3)] {
        let now = arrival(step) + Duration::hours(1);
        emu.set_now(Some(now));
        let ex = exporter(&s, window, now).await;
        ex.reconcile(day0() + Duration::days(from), backfilled, now, &cancel).await.unwrap();
        drop(ex);
        bridges(&format!("a {window} reconcile from day {from}"));
    }
    assert_eq!(bridges("both reconciles"), served.len());
    // The 6-day window's file, which holds y, is lost; repaired.
    let now = arrival(2) + Duration::hours(2);
    let ex = exporter(&s, "1d", now).await;
    let lost: Vec<String> = ex
        .checkpoint()
        .files()
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .filter(|p| p.starts_with("dt=unknown/") && p.contains("20240302T000000Z-20240308T000000Z"))
        .collect();
    assert_eq!(lost.len(), 1, "the 6-day window wrote one dt=unknown file");
    std::fs::remove_file(s.out().join(&lost[0])).unwrap();
    let repaired = ex.repair(&lost, now, &cancel).await.unwrap();
    assert_eq!(repaired.files, 1);
    drop(ex);
    assert_eq!(bridges("the repair"), served.len());
    let mut truth = emu.ground_truth(day0(), backfilled);
    truth.extend(served.iter().map(|_| rec.clone()));
    assert_same_multiset(&read_all(&s.out()), &truth);
}

/// A chain longer than 14 days is not counted: its content is not written by that read (a copy
/// a chain wrote elsewhere may stand for one of its copies), so a late copy is missed, as
/// docs/output.md says, and none is ever written twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_too_long_to_count_writes_nothing_twice() {
    let backfilled = day0() + Duration::days(20);
    let d = |days: i64| day0() + Duration::days(days) + Duration::hours(3);
    let rec = json!({"actionName": "NoTime", "objectName": "long"});
    // Late before the first 6-day reconcile (one in each of its windows), then before the second.
    // The last lies beyond the first straddling window's chain (`[1d, 13d)`), in the second's.
    let served = [(d(3), 1), (d(9), 1), (d(15), 1), (d(5), 2), (d(14), 2)];
    let arrival = |step: i64| backfilled + Duration::hours(2 * step - 1);
    let mut cfg = emu_config(20, 2);
    serve(&mut cfg, &rec, served.map(|(at, step)| (at, Some(arrival(step)))));
    let (emu, s) = backfilled_lake(cfg, backfilled).await;
    let cancel = CancellationToken::new();
    let copies = || read_all(&s.out()).iter().filter(|r| r.record == rec).count();
    // Windows [1d, 7d), [7d, 13d), [13d, 19d); then [4d, 10d), [10d, 16d), straddling them: the
    // second's chain reaches from 1d to 19d.
    for (step, from, want) in [(1, 1, 3), (2, 4, 4), (2, 4, 4)] {
        let now = arrival(step) + Duration::hours(1);
        emu.set_now(Some(now));
        let ex = exporter(&s, "6d", now).await;
        ex.reconcile(day0() + Duration::days(from), day0() + Duration::days(19), now, &cancel)
            .await
            .unwrap();
        drop(ex);
        assert_eq!(copies(), want, "after a 6-day reconcile from day {from}");
    }
}

/// A chain's hull with a neighbour holding a copy within a second of one of its bounds (the
/// hull's padded query returns it too): that copy counts as far as the band at that bound
/// serves it. `served`: (instant, late); `backfills`: where the 1-day backfills start, in
/// order (the first read writes the copy at the bound); then `reread` is reconciled.
async fn neighbour_at_the_hull_bound(
    name: &str,
    served: [(DateTime<Utc>, bool); 3],
    backfills: &[DateTime<Utc>],
    reread: (DateTime<Utc>, DateTime<Utc>),
) {
    let backfilled = day0() + Duration::days(3);
    let later = backfilled + Duration::hours(2);
    let rec = json!({"actionName": "NoTime", "objectName": name});
    for bounds in Bounds::all() {
        let mut cfg = emu_config(3, 4);
        cfg.bounds = bounds;
        serve(
            &mut cfg,
            &rec,
            served.map(|(at, late)| (at, late.then(|| backfilled + Duration::hours(1)))),
        );
        let emu = start(cfg).await;
        emu.set_now(Some(backfilled));
        let s = setup(&emu, "concurrency = 1");
        let cancel = CancellationToken::new();
        let ex = exporter(&s, "1d", backfilled).await;
        for from in backfills {
            ex.backfill(*from, backfilled, backfilled, &cancel).await.unwrap();
        }
        drop(ex);
        emu.set_now(Some(later));
        let ex = exporter(&s, "1d", later).await;
        ex.reconcile(reread.0, reread.1, later, &cancel)
            .await
            .unwrap_or_else(|e| panic!("{bounds:?}: {e}"));
        drop(ex);
        let rows = read_all(&s.out());
        let copies = rows.iter().filter(|r| r.record == rec).count();
        assert_eq!(copies, served.len(), "{bounds:?}");
        let mut truth = emu.ground_truth(day0(), backfilled);
        truth.extend(served.iter().map(|_| rec.clone()));
        assert_same_multiset(&rows, &truth);
    }
}

/// The window after the hull holds a copy at the hull's end: known at 3h; at the bound of 24h
/// (held by the day after, read first); late at 18h; the re-read `[12h, 24h)` lies inside the
/// first day, which straddles it.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_a_neighbour_of_the_hull_holds_at_its_bound_is_not_written_again() {
    let d = |h: i64| day0() + Duration::hours(h);
    let served = [(d(3), false), (d(24) + Duration::milliseconds(300), false), (d(18), true)];
    neighbour_at_the_hull_bound("edge", served, &[d(24), day0()], (d(12), d(72))).await;
}

/// The same at the hull's start: held by the first day (read first) just before 24h; known at
/// 40h; late at 30h; the re-read `[24h, 36h)` lies inside the day `[24h, 48h)`.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_the_neighbour_before_the_hull_holds_at_its_bound_is_not_written_again() {
    let d = |h: i64| day0() + Duration::hours(h);
    let served = [(d(24) - Duration::milliseconds(300), false), (d(40), false), (d(30), true)];
    neighbour_at_the_hull_bound("edge-before", served, &[day0()], (d(24), d(36))).await;
}

/// A scheduled run's look-back that would begin inside the previous run's window, which holds
/// records without `actionTime`, begins at that window's start: the run reads it whole rather
/// than straddle it (docs/output.md). A late identical copy in it is found; nothing twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_lookback_reads_a_window_holding_records_without_action_time_whole() {
    let d = |m: i64| day0() + Duration::minutes(m);
    let rec = json!({"actionName": "NoTime", "objectName": "trickle"});
    let mut cfg = emu_config(1, 20);
    // Known at 1h, late at 9h (arrives after the first run).
    cfg.extra_records.push((d(60), rec.clone()));
    cfg.extra_arrivals.insert(1, d(605));
    cfg.extra_records.push((d(540), rec.clone()));
    // Elsewhere in the day, without actionTime: the look-back's own window reads nothing unplaced.
    cfg.extra_records
        .push((d(400), json!({"actionName": "NoTime", "objectName": "other"})));
    let emu = start(cfg).await;
    let s = setup(&emu, "window = \"1d\"\nlookback = \"2h\"");
    let cancel = CancellationToken::new();
    for now in [d(600), d(615)] {
        emu.set_now(Some(now));
        let ex = exporter(&s, "1d", now).await;
        ex.run_once(now, &cancel).await.unwrap();
        drop(ex);
    }
    emu.set_now(Some(d(615)));
    let ex = exporter(&s, "1d", d(615)).await;
    let windows = ex.checkpoint().committed_ranges("all", day0(), d(615)).unwrap();
    drop(ex);
    // Without the widening the second run would read [8h, 10h15m), straddled by [0, 10h).
    assert!(windows.contains(&(day0(), d(615))), "{windows:?}");
    assert!(!windows.contains(&(d(480), d(615))), "{windows:?}");
    let copies = read_all(&s.out()).iter().filter(|r| r.record == rec).count();
    assert_eq!(copies, 2);
}
