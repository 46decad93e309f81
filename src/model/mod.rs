//! Shared domain vocabulary, no I/O: time windows, export streams, record ids and the naming
//! rules of the output (partitions and attempt files).
//!
//! The naming rules live here once because two owners depend on them agreeing: the sink names
//! the files it writes, and crash recovery (window/store) finds an uncommitted attempt's files
//! by the same names. A file belongs to an attempt only if its name matches exactly
//! `{prefix}-pNNN.{ext}` (or that name behind the `.tmp-` staging mark): a bare prefix match
//! would let `…-g1` claim `…-g10-…`.

mod json_scan;
pub mod page_index;
pub mod record;

use chrono::{DateTime, Utc};
use sha2::Digest;

/// Largest window the API accepts.
pub const MAX_WINDOW: chrono::Duration = chrono::Duration::days(7);

/// How far past each end of a window the API is asked for: `[start − 1 s, end + 1 s]`.
///
/// The API does not say whether it compares `startTime`/`endTime` inclusively or exclusively,
/// nor at the 100 ns tick, the millisecond or the whole second. Asked for a padded range,
/// every one of those readings returns every record of `[start, end)`; a record of the
/// padding belongs to a neighbour, which asks for it too, so each record is kept by the one
/// window that holds its instant and handled exactly once, whatever the server does.
pub const BOUND_PAD: chrono::Duration = chrono::Duration::seconds(1);

/// The longest window: a padded query ([`BOUND_PAD`]) stays within the API's 7 days.
pub const MAX_QUERY_WINDOW: chrono::Duration = chrono::Duration::seconds(7 * 86_400 - 2);

/// A `[start, end)` pair of instants.
pub type Range = (DateTime<Utc>, DateTime<Utc>);

/// A half-open time range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Window {
    /// First instant inside the window.
    pub start: DateTime<Utc>,
    /// First instant after the window.
    pub end: DateTime<Utc>,
}

impl Window {
    /// Whether `t` lies in `[start, end)`.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }

    /// The range the API is asked for: the window padded by [`BOUND_PAD`] at both ends.
    pub fn query(&self) -> Window {
        Window {
            start: self.start - BOUND_PAD,
            end: self.end + BOUND_PAD,
        }
    }

    /// Whether a server that honours the query could return a record at `t`: inside the
    /// query, or within one more [`BOUND_PAD`] of it (a comparison at the whole second). A
    /// record further out means the server ignores the window.
    pub fn near(&self, t: DateTime<Utc>) -> bool {
        let q = self.query();
        q.start - BOUND_PAD <= t && t <= q.end + BOUND_PAD
    }
}

/// One filter set exported with its own coverage.
///
/// A stream is its filters: the id (which keys its coverage in the state and names its files)
/// changes whenever the filters do, named or not, so a change of filters never inherits the
/// coverage of other filters (the newly covered records are read from `export.start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Safe for file names: `[A-Za-z0-9_-]`. `all` (no name, no filter), or a name (given, or
    /// made of the filters) plus a hash of the filters.
    pub id: String,
    /// `api.streams.name`, if the stream is named.
    pub name: Option<String>,
    /// `productTypes` filter, sorted and without repeats; empty = all products.
    pub product_types: Vec<String>,
    /// `geoLocations` filter, sorted and without repeats; empty = all locations.
    pub geo_locations: Vec<String>,
}

impl StreamSpec {
    /// A stream from its filters. Filters are a set: their order and repeats do not change
    /// the stream (nor its id, which names its files and its coverage in the state).
    pub fn new(name: Option<&str>, product_types: &[String], geo_locations: &[String]) -> Self {
        let norm = |xs: &[String]| {
            let mut v: Vec<String> = xs.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            v.sort();
            v.dedup();
            v
        };
        let (product_types, geo_locations) = (norm(product_types), norm(geo_locations));
        let id = match name {
            // Always with the hash, "no filter" included: the previous version named a stream's
            // coverage by the bare name whatever its filters were, so that id is never reused.
            Some(n) => format!("{n}-{}", filter_hash(&product_types, &geo_locations)),
            None => derived_stream_id(&product_types, &geo_locations),
        };
        StreamSpec {
            id,
            name: name.map(str::to_string),
            product_types,
            geo_locations,
        }
    }

    /// Whether a record could match both streams (empty filter = everything).
    pub fn overlaps(&self, other: &StreamSpec) -> bool {
        let meet = |a: &[String], b: &[String]| a.is_empty() || b.is_empty() || a.iter().any(|x| b.contains(x));
        meet(&self.product_types, &other.product_types) && meet(&self.geo_locations, &other.geo_locations)
    }
}

/// 8 hex digits of a hash of the (normalized) filters.
fn filter_hash(products: &[String], geos: &[String]) -> String {
    let key = format!("p={};g={}", products.join(","), geos.join(","));
    hex::encode(&sha2::Sha256::digest(key.as_bytes())[..4])
}

/// `all`, or a short readable name plus a hash of the (normalized) filters.
fn derived_stream_id(products: &[String], geos: &[String]) -> String {
    if products.is_empty() && geos.is_empty() {
        return "all".into();
    }
    let h = filter_hash(products, geos);
    let mut readable: String = products
        .iter()
        .chain(geos.iter())
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("-");
    readable.truncate(40);
    format!("{readable}-{h}")
}

/// The record fields AvePoint documents, in output column order. A record's identity rests on
/// these alone, so a field added later does not make a known record new.
pub const DOCUMENTED_FIELDS: [&str; 20] = [
    "actionName",
    "actionUser",
    "actionParameters",
    "actionTime",
    "controllerName",
    "product",
    "geoLocation",
    "previousValue",
    "currentValue",
    "partnerTenantOwner",
    "status",
    "comment",
    "objectType",
    "operationType",
    "module",
    "functionality",
    "objectName",
    "action",
    "clientIP",
    "additionalDetails",
];

/// 128-bit record fingerprint (the `_record_id` column, as hex).
pub type RecordId = [u8; 16];

/// Lower-case hex of a record id (the `_record_id` column).
pub fn id_hex(id: &RecordId) -> String {
    hex::encode(id)
}

/// Parses a `_record_id` value back.
pub fn id_from_hex(s: &str) -> Option<RecordId> {
    let mut id = [0u8; 16];
    hex::decode_to_slice(s, &mut id).ok()?;
    Some(id)
}

/// Parses an ISO 8601 / RFC 3339 instant (any fraction length; no zone means UTC), as the API
/// writes `actionTime`.
pub fn parse_action_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // .NET sometimes omits the zone for UTC values.
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// `20240101T000000Z`: compact, sortable, file-name safe.
pub fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Partition of records without a parseable `actionTime`.
pub const UNKNOWN_PARTITION: &str = "dt=unknown";

/// The partition a record lands in: `dt=YYYY-MM-DD` of its UTC `actionTime`, or `dt=unknown`.
pub fn partition_of(time: Option<DateTime<Utc>>) -> String {
    match time {
        Some(t) => format!("dt={}", t.format("%Y-%m-%d")),
        None => UNKNOWN_PARTITION.to_string(),
    }
}

/// Partitions a window's records can land in: each UTC day it touches, and `dt=unknown`.
pub fn partitions_of(w: &Window) -> Vec<String> {
    let mut out = Vec::new();
    let mut d = w.start.date_naive();
    let last = (w.end - chrono::Duration::microseconds(1)).date_naive();
    while d <= last {
        out.push(format!("dt={}", d.format("%Y-%m-%d")));
        match d.succ_opt() {
            Some(n) => d = n,
            None => break,
        }
    }
    out.push(UNKNOWN_PARTITION.into());
    out
}

/// Names every file of one attempt at one window:
/// `{stream}-{start}-{end}-g{generation}-{nonce}`. The nonce (8 hex digits, fresh per attempt)
/// makes every attempt's names its own: a second writer, or a later attempt at the same read,
/// can never overwrite a file another attempt published.
pub fn attempt_prefix(stream_id: &str, w: &Window, generation: u32, nonce: u32) -> String {
    format!("{stream_id}-{}-{}-g{generation}-{nonce:08x}", stamp(w.start), stamp(w.end))
}

/// The `part`-th file of an attempt in one partition.
pub fn attempt_file_name(prefix: &str, part: u32, extension: &str) -> String {
    format!("{prefix}-p{part:03}.{extension}")
}

/// Whether `name` is a file (published, or staged behind `.tmp-`) of the attempt `prefix`.
pub fn is_attempt_file(name: &str, prefix: &str) -> bool {
    let name = name.strip_prefix(STAGING_MARK).unwrap_or(name);
    let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix("-p")) else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits >= 3 && rest[digits..].starts_with('.')
}

/// What a data file's name says about the attempt that wrote it (see [`parse_attempt_file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptFile {
    /// The stream id.
    pub stream_id: String,
    /// The window read.
    pub window: Window,
    /// The read's generation.
    pub generation: u32,
    /// Whether the name carries an attempt nonce (written by a version with id scheme 3 or later).
    pub has_nonce: bool,
}

/// Reads `{stream}-{start}-{end}-g{generation}[-{nonce}]-p{NNN}.{ext}` back; `None` for a name
/// this program did not write.
pub fn parse_attempt_file(name: &str) -> Option<AttemptFile> {
    let (stem, _ext) = name.split_once('.')?;
    let mut parts = stem.rsplit('-');
    let part = parts.next()?.strip_prefix('p')?;
    if part.len() < 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut next = parts.next()?;
    let has_nonce = next.len() == 8 && next.bytes().all(|b| b.is_ascii_hexdigit());
    if has_nonce {
        next = parts.next()?;
    }
    let generation = next.strip_prefix('g')?.parse().ok()?;
    let stamp_of = |s: &str| chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok().map(|n| n.and_utc());
    let end = stamp_of(parts.next()?)?;
    let start = stamp_of(parts.next()?)?;
    let rest: Vec<&str> = parts.collect();
    if rest.is_empty() || start >= end {
        return None;
    }
    let stream_id = rest.into_iter().rev().collect::<Vec<_>>().join("-");
    if stream_id.is_empty() {
        return None;
    }
    Some(AttemptFile {
        stream_id,
        window: Window { start, end },
        generation,
        has_nonce,
    })
}

/// Folder (relative to the output root) of the commit markers: one small JSON object per
/// committed window, written after its files are published and before its commit, so the
/// lake itself says which windows are committed and with which files. Hive-style readers skip
/// names starting with `_`.
pub const MARKER_DIR: &str = "_aos-audit-export/commits";

/// The marker key of an attempt begun at `at`: sortable by time, then the attempt prefix.
pub fn marker_key(at: DateTime<Utc>, prefix: &str) -> String {
    format!("{:020}-{prefix}", at.timestamp_micros().max(0))
}

/// Path of a marker relative to the output root.
pub fn marker_path(key: &str) -> String {
    format!("{MARKER_DIR}/{key}.json")
}

/// What to do with a record holding text a strict JSON reader refuses (a lone surrogate
/// escape, a number out of `f64` range): `export.on_invalid_record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInvalidRecord {
    /// Fail the window, naming the record's window, page and byte offset.
    Fail,
    /// Keep the record's text exactly once under [`QUARANTINE_DIR`] and go on.
    #[default]
    Quarantine,
}

/// Folder (relative to the output root) of the records set aside by
/// [`OnInvalidRecord::Quarantine`], partitioned like the data (`_quarantine/dt=…/`).
pub const QUARANTINE_DIR: &str = "_quarantine";

/// Whether a partition (or a path relative to the output root) is in the quarantine.
pub fn is_quarantine(partition: &str) -> bool {
    partition.strip_prefix(QUARANTINE_DIR).is_some_and(|r| r.starts_with('/'))
}

/// Leading mark of a staging file: Hive-style readers skip names starting with `.`.
pub const STAGING_MARK: &str = ".tmp-";

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        parse_action_time(s).unwrap()
    }

    #[test]
    fn partitions_cover_each_touched_day() {
        let w = Window {
            start: t("2024-01-01T12:00:00Z"),
            end: t("2024-01-03T00:00:00Z"),
        };
        assert_eq!(partitions_of(&w), vec!["dt=2024-01-01", "dt=2024-01-02", "dt=unknown"]);
        assert_eq!(partition_of(Some(w.start)), "dt=2024-01-01");
        assert_eq!(partition_of(None), "dt=unknown");
    }

    #[test]
    fn attempt_files_match_exactly() {
        let w = Window {
            start: t("2024-01-01T00:00:00Z"),
            end: t("2024-01-02T00:00:00Z"),
        };
        let p = &attempt_prefix("all", &w, 1, 0xabc);
        assert_eq!(p, "all-20240101T000000Z-20240102T000000Z-g1-00000abc");
        assert_ne!(p, &attempt_prefix("all", &w, 1, 0xabd));
        assert!(is_attempt_file(&format!("{p}-p000.parquet"), p));
        assert!(is_attempt_file(&format!(".tmp-{p}-p012.ndjson.gz"), p));
        assert!(!is_attempt_file(
            "all-20240101T000000Z-20240102T000000Z-g10-00000abc-p000.parquet",
            p
        ));
        assert!(!is_attempt_file(
            "all-20240101T000000Z-20240102T000000Z-g1-p000.parquet",
            "all-20240101T000000Z-20240102T000000Z-g1-00000abc"
        ));
        assert!(!is_attempt_file(
            "all-20240101T000000Z-20240102T000000Z-g1-00000abc-p000.parquet",
            "all-20240101T000000Z-20240102T000000Z-g1"
        ));
        assert!(!is_attempt_file(&format!("{p}-pxyz.parquet"), p));
        assert_eq!(attempt_file_name(p, 3, "parquet"), format!("{p}-p003.parquet"));
    }

    #[test]
    fn attempt_file_names_read_back() {
        let w = Window {
            start: t("2024-01-01T06:00:00Z"),
            end: t("2024-01-02T00:00:00Z"),
        };
        let name = attempt_file_name(&attempt_prefix("main-1a2b3c4d", &w, 12, 0xdeadbeef), 7, "ndjson.gz");
        assert_eq!(
            parse_attempt_file(&name),
            Some(AttemptFile {
                stream_id: "main-1a2b3c4d".into(),
                window: w,
                generation: 12,
                has_nonce: true
            })
        );
        let old = parse_attempt_file("all-20240101T060000Z-20240102T000000Z-g0-p000.parquet").unwrap();
        assert_eq!((old.stream_id.as_str(), old.window, old.has_nonce), ("all", w, false));
        for bad in [
            "x.parquet",
            "all-20240101T060000Z-g0-p000.parquet",
            "all-20240102T000000Z-20240101T060000Z-g0-p000.parquet",
            "-20240101T060000Z-20240102T000000Z-g0-p000.parquet",
        ] {
            assert_eq!(parse_attempt_file(bad), None, "{bad}");
        }
        assert!(marker_key(w.start, "a") < marker_key(w.end, "a"));
    }

    #[test]
    fn stream_ids_are_stable_distinct_and_order_free() {
        let a = StreamSpec::new(None, &["Portal".into(), "SMP".into()], &[]);
        assert_eq!(a, StreamSpec::new(None, &["SMP".into(), "Portal".into(), "SMP".into()], &[]));
        assert_ne!(a.id, StreamSpec::new(None, &["SMP".into()], &[]).id);
        assert!(a.id.starts_with("portal-smp-"), "{}", a.id);
        assert_eq!(StreamSpec::new(None, &[], &[]).id, "all");
        // A named stream is its filters too: new filters, new id (and so new coverage).
        let main = StreamSpec::new(Some("main"), &["Portal".into()], &[]);
        let wider = StreamSpec::new(Some("main"), &["Portal".into(), "SMP".into()], &[]);
        assert_ne!(main.id, wider.id);
        assert!(main.id.starts_with("main-") && wider.id.starts_with("main-"), "{}", main.id);
        assert_eq!(main, StreamSpec::new(Some("main"), &["Portal".into(), "Portal".into()], &[]));
        let bare = StreamSpec::new(Some("main"), &[], &[]);
        assert!(bare.id.starts_with("main-") && bare.id != main.id, "{}", bare.id);
    }

    #[test]
    fn overlap_treats_empty_filters_as_everything() {
        let all = StreamSpec::new(None, &[], &[]);
        let portal = StreamSpec::new(None, &["Portal".into()], &[]);
        let smp = StreamSpec::new(None, &["SMP".into()], &[]);
        let portal_eur = StreamSpec::new(None, &["Portal".into()], &["EUR".into()]);
        assert!(all.overlaps(&portal) && portal.overlaps(&portal_eur));
        assert!(!portal.overlaps(&smp));
    }

    #[test]
    fn record_ids_round_trip_as_hex() {
        let id = [7u8; 16];
        assert_eq!(id_from_hex(&id_hex(&id)), Some(id));
        assert_eq!(id_from_hex("zz"), None);
    }

    #[test]
    fn seven_digit_fractions_parse() {
        let x = parse_action_time("2024-10-10T08:00:00.1234567Z").unwrap();
        assert_eq!(x.timestamp_subsec_nanos(), 123_456_700);
        assert!(parse_action_time("2024-10-10T08:00:00.5").is_some());
    }
}
