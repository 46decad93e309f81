//! Deterministic audit-record generator.
//!
//! Given a seed, every record depends only on `(seed, day, index)`, so any record can be built
//! alone, and the ground truth of any sub-range is the same whatever range was generated. Records
//! look like the real API's: all 20 documented fields (some absent), `additionalDetails` objects,
//! non-ASCII text, embedded quotes and newlines, ~2% identical twins, a few unknown fields, and
//! 7-digit fractional seconds.
//!
//! Record `i` of a day (its *generation index*) draws from its own generator, seeded from
//! `(seed, day, i)`. Its first draws are the cheap metadata the audit query filters on ([`Meta`]):
//! whether it is a twin of record `i - 1`, its `actionTime`, its visibility delay, its product and
//! its geo location; then come the other fields, written straight to JSON bytes
//! ([`write_record`]). A twin has the JSON of the first non-twin before it and its own
//! `visible_at`. A day is served in a shuffled order of its records ([`day_meta`]).

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, RngCore, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

mod json;
pub use json::{DayWriter, write_base_record, write_record};

/// Product types as the API's `productTypes` filter names them, with the display name records carry.
pub const PRODUCTS: &[(&str, &str)] = &[
    ("Office365Management", "Cloud Management"),
    ("Office365Backup", "Cloud Backup for Microsoft 365"),
    ("GovernanceAutomation", "Cloud Governance"),
    ("Portal", "AvePoint Online Services"),
    ("PolicyEnforcer", "Policies and Insights"),
    ("CPManagement", "Confide"),
    ("SMP", "Cloud Management SMP"),
    ("VDR", "Confide VDR"),
    ("AvePointRecords", "AvePoint Cloud Records"),
    ("GsuiteBackup", "Cloud Backup for Google Workspace"),
    ("CRMBackup", "Cloud Backup for Dynamics 365"),
];

/// Geo locations as the API's `geoLocations` filter names them.
pub const GEOS: &[&str] = &["NAM", "EUR", "GBR", "JPN", "APC", "AUS", "CAN", "IND", "FRA", "CHE", "KOR", "DEU"];

const ACTIONS: &[&str] = &[
    "Login", "Logout", "Create", "Update", "Delete", "Export", "Restore", "Approve", "Assign", "Download",
];
const USERS: &[&str] = &[
    "alice@contoso.com",
    "bob@contoso.com",
    "józef.müller@contoso.com",
    "田中太郎@contoso.co.jp",
    "zoë.o'neil@fabrikam.com",
    "svc-backup@contoso.onmicrosoft.com",
    "Ærøskøbing-admin@contoso.dk",
];
const CONTROLLERS: &[&str] = &["Tenant", "User", "Job", "Policy", "Workspace", "Report"];
const OBJECT_TYPES: &[&str] = &["Site", "Team", "Group", "Mailbox", "OneDrive", "Plan"];
const MODULES: &[&str] = &["Administration", "Backup", "Restore", "Governance", "Insights"];

/// One generated record plus what the emulator needs to serve it.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Parsed `actionTime` (what the query filters on).
    pub time: DateTime<Utc>,
    /// When the record becomes visible to the API (late arrival); equals `time` without delay.
    pub visible_at: DateTime<Utc>,
    /// The `productTypes` name of the record's product.
    pub product_type: &'static str,
    /// The record exactly as the API returns it.
    pub json: Value,
}

/// Parameters of a generated data set.
#[derive(Clone, Debug)]
pub struct DataSpec {
    pub seed: u64,
    /// First day (truncated to UTC midnight).
    pub start: DateTime<Utc>,
    pub days: u32,
    pub records_per_day: u32,
    /// Records become visible up to this long after their `actionTime` (0 = at once). Drawn in
    /// whole milliseconds, at most `u32::MAX` ms (~49 days).
    pub max_delay: Duration,
}

impl DataSpec {
    /// Records in the whole data set.
    pub fn record_count(&self) -> u64 {
        u64::from(self.days) * u64::from(self.records_per_day)
    }
}

/// Compact metadata of one record as served (16 bytes): what the audit query filters on, and
/// which generation index holds its JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Bits 0..48: nanoseconds of `actionTime` since the day's midnight; 48..52: product index;
    /// 52..56: geo index.
    packed: u64,
    /// `visible_at - actionTime`, in milliseconds.
    delay_ms: u32,
    /// Generation index of the record's JSON: its own, or for a twin the first non-twin before it.
    base: u32,
}

const TIME_BITS: u32 = 48;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

impl Meta {
    fn new(time_ns: u64, delay_ms: u32, product: usize, geo: usize, base: u32) -> Self {
        debug_assert!(time_ns <= TIME_MASK && product < 16 && geo < 16);
        Meta {
            packed: time_ns | (product as u64) << TIME_BITS | (geo as u64) << (TIME_BITS + 4),
            delay_ms,
            base,
        }
    }

    /// `actionTime` in nanoseconds since the day's midnight.
    #[inline]
    pub fn time_ns(&self) -> i64 {
        (self.packed & TIME_MASK) as i64
    }

    /// `visible_at` in nanoseconds since the day's midnight.
    #[inline]
    pub fn visible_ns(&self) -> i64 {
        self.time_ns() + i64::from(self.delay_ms) * 1_000_000
    }

    /// Index into [`PRODUCTS`].
    #[inline]
    pub fn product(&self) -> usize {
        ((self.packed >> TIME_BITS) & 0xF) as usize
    }

    /// Index into [`GEOS`].
    #[inline]
    pub fn geo(&self) -> usize {
        ((self.packed >> (TIME_BITS + 4)) & 0xF) as usize
    }

    /// Generation index whose JSON this record carries (see [`write_base_record`]).
    #[inline]
    pub fn base(&self) -> u32 {
        self.base
    }
}

/// UTC midnight of day `day` of the data set.
pub fn day_start(spec: &DataSpec, day: u32) -> DateTime<Utc> {
    midnight(spec.start) + Duration::days(i64::from(day))
}

/// Records of one day.
pub fn day_len(spec: &DataSpec) -> usize {
    spec.records_per_day as usize
}

/// UTC midnight of the day containing `t`.
pub fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    let d = t.date_naive();
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective 64-bit mix.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The generator of one record: SplitMix64 seeded from `(seed, day, index)`. Seeding is free
/// and a draw costs about a nanosecond, so building a day's metadata (5 draws a record) or a
/// page of records from scratch is cheap; the stream is fully determined by the seed on every
/// platform.
#[derive(Clone, Debug)]
pub struct RecordRng(u64);

impl RecordRng {
    fn new(seed: u64, day_key: u64, index: u32) -> Self {
        RecordRng(mix64(
            seed ^ mix64(day_key.wrapping_add(GOLDEN) ^ mix64(u64::from(index).wrapping_mul(GOLDEN))),
        ))
    }
}

impl RngCore for RecordRng {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    #[inline]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        rand::rand_core::impls::fill_bytes_via_next(self, dst)
    }
}

fn day_key(spec: &DataSpec, day: u32) -> (DateTime<Utc>, u64) {
    let start = day_start(spec, day);
    (start, start.timestamp() as u64)
}

fn max_delay_ms(spec: &DataSpec) -> u32 {
    u32::try_from(spec.max_delay.num_milliseconds().max(0)).unwrap_or(u32::MAX)
}

/// The first draws of a record, in this order.
struct Head {
    /// An identical twin of the record before (ignored for record 0).
    twin: bool,
    secs: u32,
    /// Multiple of 100 (7-digit fractions).
    nanos: u32,
    delay_ms: u32,
    product: usize,
    geo: usize,
}

#[inline]
fn draw_head(rng: &mut RecordRng, max_ms: u32) -> Head {
    // ~2% legitimate identical twins: the same action twice in the same instant.
    let twin = rng.random_bool(0.02);
    // A few records sit exactly on midnight, where inclusive window bounds meet.
    let (secs, nanos) = if rng.random_bool(0.005) {
        (0, 0)
    } else if rng.random_bool(0.3) {
        (rng.random_range(0..86_400), rng.random_range(0..10_000_000u32) * 100)
    } else {
        (rng.random_range(0..86_400), 0)
    };
    let delay_ms = if max_ms == 0 { 0 } else { rng.random_range(0..=max_ms) };
    let product = rng.random_range(0..PRODUCTS.len());
    let geo = rng.random_range(0..GEOS.len());
    Head {
        twin,
        secs,
        nanos,
        delay_ms,
        product,
        geo,
    }
}

/// The metadata of every record of day `day`, in the order the day is served (shuffled, not in
/// time order). Cheap: a few draws per record, no JSON.
pub fn day_meta(spec: &DataSpec, day: u32) -> Vec<Meta> {
    let n = day_len(spec);
    let (_, key) = day_key(spec, day);
    let max_ms = max_delay_ms(spec);
    let mut out: Vec<Meta> = Vec::with_capacity(n);
    for i in 0..n as u32 {
        let h = draw_head(&mut RecordRng::new(spec.seed, key, i), max_ms);
        let m = match out.last() {
            Some(prev) if h.twin => Meta {
                delay_ms: h.delay_ms,
                ..*prev
            },
            _ => Meta::new(
                u64::from(h.secs) * 1_000_000_000 + u64::from(h.nanos),
                h.delay_ms,
                h.product,
                h.geo,
                i,
            ),
        };
        out.push(m);
    }
    out.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed ^ key.wrapping_mul(GOLDEN)));
    out
}

/// Whether record `i` of the day keyed `key` is a twin of record `i - 1`.
fn is_twin(seed: u64, key: u64, i: u32) -> bool {
    i > 0 && RecordRng::new(seed, key, i).random_bool(0.02)
}

/// The record `meta` of day `day` (for tests and callers that want values).
pub fn stored_record(spec: &DataSpec, day: u32, meta: &Meta) -> StoredRecord {
    let start = day_start(spec, day);
    let mut buf = Vec::with_capacity(1024);
    write_base_record(spec, day, meta.base, &mut buf);
    StoredRecord {
        time: start + Duration::nanoseconds(meta.time_ns()),
        visible_at: start + Duration::nanoseconds(meta.visible_ns()),
        product_type: PRODUCTS[meta.product()].0,
        json: serde_json::from_slice(&buf).expect("generated records are valid JSON"),
    }
}

/// Generates one day's records in the order the day is served (shuffled, not sorted).
pub fn generate_day(spec: &DataSpec, day: u32) -> Vec<StoredRecord> {
    let (start, w) = (day_start(spec, day), DayWriter::new(spec, day));
    let mut buf = Vec::with_capacity(1024);
    day_meta(spec, day)
        .iter()
        .map(|m| {
            buf.clear();
            w.write_base(m.base, &mut buf);
            StoredRecord {
                time: start + Duration::nanoseconds(m.time_ns()),
                visible_at: start + Duration::nanoseconds(m.visible_ns()),
                product_type: PRODUCTS[m.product()].0,
                json: serde_json::from_slice(&buf).expect("generated records are valid JSON"),
            }
        })
        .collect()
}

fn pick<'a>(rng: &mut RecordRng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

#[cfg(test)]
mod tests;
