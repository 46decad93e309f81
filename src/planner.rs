//! Pure window planning: which `[start, end)` ranges a run or backfill asks the API for.
//!
//! Invariants: windows are contiguous, non-overlapping, half-open, cut at UTC midnights (and,
//! for a size dividing a day, at its multiples since the epoch), never longer than the configured window (itself at most 7 days), and never reach past
//! `now − lag`.

use chrono::{DateTime, Duration, Utc};

use crate::model::{MAX_QUERY_WINDOW, Range, Window};

/// Splits `[from, to)` into consecutive windows of at most `size` (and never longer than
/// [`MAX_QUERY_WINDOW`], so a padded query stays within the API's 7 days).
pub fn split(from: DateTime<Utc>, to: DateTime<Utc>, size: Duration) -> Vec<Window> {
    assert!(size > Duration::zero(), "window size must be positive");
    let size = size.min(MAX_QUERY_WINDOW);
    // Whole days, so windows of a day or more keep to midnights (7d becomes 6d: a padded
    // 7-day query would exceed the API's maximum).
    let size = if size >= Duration::days(1) {
        Duration::days(size.num_days())
    } else {
        size
    };
    let mut out = Vec::new();
    let mut s = from;
    while s < to {
        let e = (s + size).min(to).min(next_cut(s, size));
        out.push(Window { start: s, end: e });
        s = e;
    }
    out
}

/// The first window bound after `s` on the UTC grid: the next midnight (for windows of a day
/// or more, only until one starts at midnight), or for a size that divides a day the next
/// multiple of it since the epoch. Windows then never straddle a day:
/// each holds one `dt=` partition (one file where a straddling window wrote two), whatever
/// instant `export.start` or the look-back begins at.
fn next_cut(s: DateTime<Utc>, size: Duration) -> DateTime<Utc> {
    const DAY: i64 = 86_400;
    let secs = s.timestamp();
    let step = match size.num_seconds() {
        n if n > 0 && n < DAY && DAY % n == 0 => n,
        _ => DAY,
    };
    // Windows of a day or more start at midnight once the first is cut there.
    if size.num_seconds() >= DAY && secs.rem_euclid(DAY) == 0 {
        return s + size;
    }
    let next = (secs.div_euclid(step) + 1) * step;
    DateTime::from_timestamp(next, 0).unwrap_or(s + size)
}

/// What a `run` reads, given the committed ranges `covered`: every gap of coverage in
/// `[start, until)`, plus the look-back: the last `lookback` before the end of the newest
/// committed range, re-read to catch records published late. Sorted, merged, non-empty ranges.
pub fn run_ranges(covered: &[Range], start: DateTime<Utc>, until: DateTime<Utc>, lookback: Duration) -> Vec<Range> {
    let mut out = gaps(start, until, covered);
    if let Some(end) = covered.iter().map(|r| r.1).filter(|e| *e <= until).max() {
        let from = (end - lookback).max(start.min(end));
        if from < end {
            out.push((from, end));
        }
    }
    merged(out)
}

/// `ranges` sorted, with those that overlap or touch merged.
fn merged(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort();
    let mut out: Vec<Range> = Vec::new();
    for (a, b) in ranges {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `ranges` (sorted, merged), each starting where a committed window holding records without
/// a usable `actionTime` starts if it began strictly inside one (`held`): a look-back then
/// reads such a window whole rather than straddle it, and its copies of those records count
/// without reading further (see `window::unplaced`). Sorted and merged again.
pub fn widen_to_windows(ranges: Vec<Range>, held: &[Range]) -> Vec<Range> {
    let widened = ranges.into_iter().map(|(a, b)| {
        let a = held.iter().filter(|(s, e)| *s < a && a < *e).map(|r| r.0).min().unwrap_or(a);
        (a, b)
    });
    merged(widened.collect())
}

/// The parts of `[from, to)` not covered by `covered` (sorted or not, possibly overlapping).
/// Backfill reads only these: a range already exported is never fetched again, so its pruned
/// dedup keys can never be needed.
pub fn gaps(from: DateTime<Utc>, to: DateTime<Utc>, covered: &[Range]) -> Vec<Range> {
    let mut cov: Vec<_> = covered.iter().copied().filter(|(s, e)| s < e && *e > from && *s < to).collect();
    cov.sort();
    let mut out = Vec::new();
    let mut cursor = from;
    for (s, e) in cov {
        if s > cursor {
            out.push((cursor, s.min(to)));
        }
        cursor = cursor.max(e);
        if cursor >= to {
            break;
        }
    }
    if cursor < to {
        out.push((cursor, to));
    }
    out
}

/// Clamps a backfill's end to `now − lag`: nothing newer is final.
pub fn clamp_end(to: DateTime<Utc>, now: DateTime<Utc>, lag: Duration) -> DateTime<Utc> {
    to.min(now - lag)
}

/// `t` without its fraction of a second: window bounds are whole seconds.
pub fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ten_days_in_three_day_windows_is_four_windows() {
        let w = split(t("2024-01-01T00:00:00Z"), t("2024-01-11T00:00:00Z"), Duration::days(3));
        assert_eq!(w.len(), 4);
        assert_eq!(
            w[3],
            Window {
                start: t("2024-01-10T00:00:00Z"),
                end: t("2024-01-11T00:00:00Z")
            }
        );
        for pair in w.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
    }

    #[test]
    fn seven_day_windows_leave_room_for_the_padded_query() {
        let w = split(t("2024-01-01T00:00:00Z"), t("2024-01-15T00:00:00Z"), Duration::days(7));
        assert_eq!(w.len(), 3);
        for x in &w {
            let q = x.query();
            assert!(q.end - q.start <= Duration::days(7), "{q:?}");
        }
    }

    #[test]
    fn windows_are_cut_on_the_utc_grid_whatever_the_range_start() {
        let w = split(t("2024-01-01T05:30:00Z"), t("2024-01-03T02:00:00Z"), Duration::days(1));
        let bounds: Vec<String> = w.iter().map(|x| x.end.to_rfc3339()).collect();
        assert_eq!(
            bounds,
            [
                "2024-01-02T00:00:00+00:00",
                "2024-01-03T00:00:00+00:00",
                "2024-01-03T02:00:00+00:00"
            ]
        );
        let w = split(t("2024-01-01T05:30:00Z"), t("2024-01-01T20:00:00Z"), Duration::hours(6));
        let bounds: Vec<String> = w.iter().map(|x| x.end.to_rfc3339()).collect();
        assert_eq!(
            bounds,
            [
                "2024-01-01T06:00:00+00:00",
                "2024-01-01T12:00:00+00:00",
                "2024-01-01T18:00:00+00:00",
                "2024-01-01T20:00:00+00:00"
            ]
        );
        // A size that does not divide a day still never straddles midnight.
        let w = split(t("2024-01-01T20:00:00Z"), t("2024-01-02T12:00:00Z"), Duration::hours(7));
        assert!(
            w.iter()
                .all(|x| x.start.date_naive() == (x.end - Duration::seconds(1)).date_naive()),
            "{w:?}"
        );
    }

    #[test]
    fn a_lookback_starting_inside_a_window_holding_unplaced_records_reads_it_whole() {
        let r = |a: &str, b: &str| (t(a), t(b));
        let held = [
            r("2024-01-01T10:00:00Z", "2024-01-01T12:15:00Z"),
            r("2024-01-01T12:15:00Z", "2024-01-01T14:30:00Z"),
        ];
        // The look-back from 12:30 begins inside the second window: read from its start.
        let ranges = vec![r("2024-01-01T12:30:00Z", "2024-01-01T14:45:00Z")];
        assert_eq!(
            widen_to_windows(ranges, &held),
            vec![r("2024-01-01T12:15:00Z", "2024-01-01T14:45:00Z")]
        );
        // At a window's bound, or outside every such window: unchanged.
        for a in ["2024-01-01T12:15:00Z", "2024-01-01T09:00:00Z"] {
            let ranges = vec![r(a, "2024-01-01T14:45:00Z")];
            assert_eq!(widen_to_windows(ranges.clone(), &held), ranges);
        }
        // Widened into the range before it: merged.
        let ranges = vec![
            r("2024-01-01T08:00:00Z", "2024-01-01T10:30:00Z"),
            r("2024-01-01T11:00:00Z", "2024-01-01T13:00:00Z"),
        ];
        assert_eq!(
            widen_to_windows(ranges, &held),
            vec![r("2024-01-01T08:00:00Z", "2024-01-01T13:00:00Z")]
        );
    }

    #[test]
    fn empty_and_exact_ranges() {
        assert!(split(t("2024-01-01T00:00:00Z"), t("2024-01-01T00:00:00Z"), Duration::days(1)).is_empty());
        assert_eq!(
            split(t("2024-01-01T00:00:00Z"), t("2024-01-07T00:00:00Z"), Duration::days(7)).len(),
            1
        );
    }

    #[test]
    fn run_reads_gaps_and_the_lookback() {
        let start = t("2024-01-01T00:00:00Z");
        let until = t("2024-02-01T11:45:00Z");
        let h2 = Duration::hours(2);
        // Nothing committed: everything from start.
        assert_eq!(run_ranges(&[], start, until, h2), vec![(start, until)]);
        // Committed up to 10:00: the look-back plus the new part, as one range.
        let wm = t("2024-02-01T10:00:00Z");
        assert_eq!(
            run_ranges(&[(start, wm)], start, until, h2),
            vec![(t("2024-02-01T08:00:00Z"), until)]
        );
        // A backfill that began after `start`: the hole before it is a gap too.
        let b = t("2024-01-20T00:00:00Z");
        assert_eq!(
            run_ranges(&[(b, wm)], start, until, h2),
            vec![(start, b), (t("2024-02-01T08:00:00Z"), until)]
        );
        // Nothing final yet beyond the covered end: only the look-back.
        assert_eq!(
            run_ranges(&[(start, until)], start, until, h2),
            vec![(t("2024-02-01T09:45:00Z"), until)]
        );
        assert!(run_ranges(&[(start, until)], start, until, Duration::zero()).is_empty());
    }

    #[test]
    fn lookback_never_reaches_before_configured_start() {
        let start = t("2024-02-01T09:00:00Z");
        let r = run_ranges(
            &[(start, t("2024-02-01T10:00:00Z"))],
            start,
            t("2024-02-01T12:00:00Z"),
            Duration::hours(5),
        );
        assert_eq!(r, vec![(start, t("2024-02-01T12:00:00Z"))]);
    }

    #[test]
    fn gaps_skip_covered_ranges() {
        let (a, b, c, d) = (
            t("2024-01-01T00:00:00Z"),
            t("2024-01-02T00:00:00Z"),
            t("2024-01-03T00:00:00Z"),
            t("2024-01-05T00:00:00Z"),
        );
        assert_eq!(gaps(a, d, &[]), vec![(a, d)]);
        assert_eq!(gaps(a, d, &[(b, c)]), vec![(a, b), (c, d)]);
        assert_eq!(gaps(a, d, &[(a, d)]), vec![]);
        // Overlapping and out-of-order coverage.
        assert_eq!(gaps(a, d, &[(c, d), (a, b), (t("2024-01-01T12:00:00Z"), c)]), vec![]);
        assert_eq!(gaps(b, c, &[(a, t("2024-01-02T06:00:00Z"))]), vec![(t("2024-01-02T06:00:00Z"), c)]);
        // A range nested in another (a narrow reconcile inside a backfill) adds no gap.
        assert_eq!(gaps(a, d, &[(a, d), (b, c)]), vec![]);
        assert_eq!(gaps(a, d, &[(a, c), (t("2024-01-01T12:00:00Z"), b)]), vec![(c, d)]);
    }

    #[test]
    fn backfill_end_is_clamped_to_lag() {
        let now = t("2024-02-01T12:00:00Z");
        assert_eq!(
            clamp_end(t("2030-01-01T00:00:00Z"), now, Duration::minutes(15)),
            t("2024-02-01T11:45:00Z")
        );
    }
}
