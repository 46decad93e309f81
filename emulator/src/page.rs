//! Finding a query's page in the days' metadata and writing its body, without building a `Value`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::State;

/// What a query asks for. Masks have bit `i` set for `PRODUCTS[i]` / `GEOS[i]`; 0 = no filter.
pub(crate) struct Query {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub snapshot: DateTime<Utc>,
    pub products: u32,
    pub geos: u32,
}

pub(crate) fn mask<'a>(names: &[String], all: impl Iterator<Item = &'a str>) -> u32 {
    all.enumerate()
        .filter(|(_, n)| names.iter().any(|x| x == n))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// A record of a page: a generated one (day, [`crate::data::Meta::base`]) or `extra_records[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    Generated { day: u32, base: u32 },
    Extra(usize),
}

/// `t - day_start` in nanoseconds, saturated.
fn rel_ns(t: DateTime<Utc>, day_start: DateTime<Utc>) -> i64 {
    (t - day_start)
        .num_nanoseconds()
        .unwrap_or(if t < day_start { i64::MIN } else { i64::MAX })
}

/// The page of a query: its matches are the generated records of the days it touches, day by day
/// in serving order, then the matching `extra_records`. Each has a position `at`: record `p` of
/// day `d` is at `d × records_per_day + p`, `extra_records[k]` at `days × records_per_day + k`.
/// The page is the first `page_size` matches from position `resume` (a match), or if `resume` is
/// none or outside the query, after skipping `offset` matches. Returns the page and the position
/// of the next match, if any. Only metadata is read: no JSON is built.
pub(crate) fn find_page(st: &State, q: &Query, resume: Option<u64>, offset: usize, page_size: usize) -> (Vec<Item>, Option<u64>) {
    let spec = &st.cfg.data;
    let per_day = u64::from(spec.records_per_day);
    let generated = spec.record_count();
    let extras = &st.cfg.extra_records;
    let day0 = crate::data::midnight(spec.start);
    let day_of = |t: DateTime<Utc>| (t - day0).num_seconds().div_euclid(86_400);
    let first_day = day_of(q.start).clamp(0, i64::from(spec.days)) as u64;
    let end_day = (day_of(q.end) + 1).clamp(0, i64::from(spec.days)) as u64;
    let (query_start, query_end) = (first_day * per_day, generated + extras.len() as u64);
    let (mut at, mut skip) = match resume {
        Some(at) if (query_start..=query_end).contains(&at) => (at, 0),
        _ => (query_start, offset),
    };
    let mut items = Vec::with_capacity(page_size.min(16_384));
    while per_day > 0 && at < end_day * per_day {
        let day = (at / per_day) as u32;
        let from = (at % per_day) as usize;
        let meta = st.day_meta(day);
        let day_start = crate::data::day_start(spec, day);
        let (lo, hi, snap) = (rel_ns(q.start, day_start), rel_ns(q.end, day_start), rel_ns(q.snapshot, day_start));
        let bounds = st.dialect().0;
        for (p, m) in meta.iter().enumerate().skip(from) {
            let t = m.time_ns();
            // Day-relative ns keep the comparison exact; truncation to ms or s is the same on
            // this axis as on the epoch's, since every day starts at a whole second.
            if !bounds.matches(t, lo, hi) || m.visible_ns() > snap {
                continue;
            }
            if (q.products != 0 && q.products & 1 << m.product() == 0) || (q.geos != 0 && q.geos & 1 << m.geo() == 0) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
            } else if items.len() == page_size {
                return (items, Some(u64::from(day) * per_day + p as u64));
            } else {
                items.push(Item::Generated { day, base: m.base() });
            }
        }
        at = (u64::from(day) + 1) * per_day;
    }
    for (k, (served_at, _)) in extras.iter().enumerate().skip(at.saturating_sub(generated) as usize) {
        let ns = |t: DateTime<Utc>| t.timestamp_nanos_opt().unwrap_or(i64::MAX);
        if !st.dialect().0.matches(ns(*served_at), ns(q.start), ns(q.end)) {
            continue;
        }
        if st.cfg.extra_arrivals.get(&k).is_some_and(|arrival| *arrival > q.snapshot) {
            continue;
        }
        if skip > 0 {
            skip -= 1;
        } else if items.len() == page_size {
            return (items, Some(generated + k as u64));
        } else {
            items.push(Item::Extra(k));
        }
    }
    (items, None)
}

/// `{"nextLink":…,"data":[…]}`, written straight to bytes (what `serde_json` writes for the value).
pub(crate) fn page_body(st: &State, next_link: Option<&str>, items: &[Item]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + items.len() * 1024);
    body.extend_from_slice(b"{\"nextLink\":");
    match next_link {
        Some(link) => serde_json::to_writer(&mut body, link).expect("writing to a Vec does not fail"),
        None => body.extend_from_slice(b"null"),
    }
    body.extend_from_slice(b",\"data\":[");
    let mut writer: Option<(u32, crate::data::DayWriter)> = None;
    let spelling = st.dialect().1;
    let mut plain = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let out = if spelling.is_plain() { &mut body } else { &mut plain };
        match *item {
            Item::Generated { day, base } => {
                let w = match &writer {
                    Some((d, w)) if *d == day => w,
                    _ => &writer.insert((day, crate::data::DayWriter::new(&st.cfg.data, day))).1,
                };
                w.write_base(base, out);
            }
            Item::Extra(k) => match st.cfg.extra_records[k].1.get(crate::RAW_EXTRA).and_then(Value::as_str) {
                Some(text) => out.extend_from_slice(text.as_bytes()),
                None => serde_json::to_writer(&mut *out, &st.cfg.extra_records[k].1).expect("writing to a Vec does not fail"),
            },
        }
        if !spelling.is_plain() {
            spelling.rewrite(&plain, &mut body);
            plain.clear();
        }
    }
    body.extend_from_slice(b"]}");
    body
}
