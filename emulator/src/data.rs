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

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use rand::{Rng, RngCore, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

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

/// Writes the JSON of one day's records; holds what they share (built once per day or page).
#[derive(Clone, Debug)]
pub struct DayWriter {
    seed: u64,
    key: u64,
    max_ms: u32,
    start: DateTime<Utc>,
    /// `"YYYY-MM-DDT` (opening quote included); none outside years 0..=9999.
    date: Option<[u8; 12]>,
}

impl DayWriter {
    pub fn new(spec: &DataSpec, day: u32) -> Self {
        let (start, key) = day_key(spec, day);
        let d = start.date_naive();
        let date = (0..=9999).contains(&d.year()).then(|| {
            let mut b = Vec::with_capacity(12);
            b.push(b'"');
            put_digits(&mut b, d.year() as u32, 4);
            b.push(b'-');
            put_digits(&mut b, d.month(), 2);
            b.push(b'-');
            put_digits(&mut b, d.day(), 2);
            b.push(b'T');
            <[u8; 12]>::try_from(b).expect("12 bytes")
        });
        DayWriter {
            seed: spec.seed,
            key,
            max_ms: max_delay_ms(spec),
            start,
            date,
        }
    }

    /// Appends the JSON of record `i` (generation index) to `out`. A twin is written as the first
    /// non-twin before it.
    pub fn write(&self, i: u32, out: &mut Vec<u8>) {
        let mut base = i;
        while is_twin(self.seed, self.key, base) {
            base -= 1;
        }
        self.write_base(base, out);
    }

    /// Appends the JSON of the non-twin record `base` ([`Meta::base`]) to `out`.
    #[inline]
    pub fn write_base(&self, base: u32, out: &mut Vec<u8>) {
        write_json(&mut RecordRng::new(self.seed, self.key, base), self, base, out);
    }
}

/// Appends the JSON of record `i` (generation index) of day `day` to `out`. A twin is written as
/// the first non-twin before it.
pub fn write_record(spec: &DataSpec, day: u32, i: u32, out: &mut Vec<u8>) {
    DayWriter::new(spec, day).write(i, out);
}

/// Appends the JSON of the non-twin record `base` ([`Meta::base`]) of day `day` to `out`.
pub fn write_base_record(spec: &DataSpec, day: u32, base: u32, out: &mut Vec<u8>) {
    DayWriter::new(spec, day).write_base(base, out);
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

/// Appends `s` as a JSON string: `s` needs no escaping (all of the tables' strings; a test checks).
#[inline]
fn put_plain(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[inline]
fn put_int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

#[inline]
fn put_digits(out: &mut Vec<u8>, n: u32, width: u32) {
    let mut div = 10u32.pow(width - 1);
    while div > 0 {
        out.push(b'0' + (n / div % 10) as u8);
        div /= 10;
    }
}

/// `actionParameters` of record `n` is `{"id":n,"note":"line one\nline \"two\""}` (a JSON text
/// in a string); these are the JSON string's pieces around `n`.
const PARAMS_PREFIX: &str = r#""{\"id\":"#;
const PARAMS_SUFFIX: &str = r#",\"note\":\"line one\\nline \\\"two\\\"\"}""#;
/// `Approved by "Müller", ticket #42⏎second line — ✓ 完了` as a JSON string.
const COMMENT_JSON: &str = r#""Approved by \"Müller\", ticket #42\nsecond line — ✓ 完了""#;
/// `EU-West "β"` as a JSON string.
const TENANT_REGION_JSON: &str = r#""EU-West \"β\"""#;

/// Writes `"YYYY-MM-DDTHH:MM:SS[.fffffff]Z"` (the service sends .NET's 7-digit fractions).
fn put_action_time(out: &mut Vec<u8>, w: &DayWriter, secs: u32, nanos: u32) {
    let Some(date) = &w.date else {
        let t = w.start + Duration::seconds(i64::from(secs));
        let s = if nanos == 0 {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            format!("{}.{:07}Z", t.format("%Y-%m-%dT%H:%M:%S"), nanos / 100)
        };
        return put_plain(out, &s);
    };
    out.extend_from_slice(date);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    out.extend_from_slice(&[
        b'0' + (h / 10) as u8,
        b'0' + (h % 10) as u8,
        b':',
        b'0' + (m / 10) as u8,
        b'0' + (m % 10) as u8,
        b':',
        b'0' + (s / 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
    if nanos != 0 {
        out.push(b'.');
        put_digits(out, nanos / 100, 7);
    }
    out.extend_from_slice(b"Z\"");
}

/// Writes one record from its generator (positioned at its start).
fn write_json(rng: &mut RecordRng, w: &DayWriter, n: u32, out: &mut Vec<u8>) {
    out.reserve(1024);
    let h = draw_head(rng, w.max_ms);
    let (ptype, pname) = PRODUCTS[h.product];
    let action = pick(rng, ACTIONS);
    let user = pick(rng, USERS);
    out.extend_from_slice(b"{\"actionName\":");
    put_plain(out, action);
    out.extend_from_slice(b",\"actionUser\":");
    put_plain(out, user);
    out.extend_from_slice(b",\"actionParameters\":");
    out.extend_from_slice(PARAMS_PREFIX.as_bytes());
    put_int(out, n);
    out.extend_from_slice(PARAMS_SUFFIX.as_bytes());
    out.extend_from_slice(b",\"actionTime\":");
    put_action_time(out, w, h.secs, h.nanos);
    out.extend_from_slice(b",\"controllerName\":");
    put_plain(out, pick(rng, CONTROLLERS));
    out.extend_from_slice(b",\"product\":");
    put_plain(out, pname);
    out.extend_from_slice(b",\"geoLocation\":");
    put_plain(out, GEOS[h.geo]);
    if rng.random_bool(0.5) {
        out.extend_from_slice(b",\"previousValue\":\"Quota: ");
        put_int(out, rng.random_range(1..100u32));
        out.extend_from_slice(b" GB\",\"currentValue\":\"Quota: ");
        put_int(out, rng.random_range(1..100u32));
        out.extend_from_slice(b" GB\"");
    } else {
        out.extend_from_slice(b",\"previousValue\":null,\"currentValue\":null");
    }
    if rng.random_bool(0.1) {
        out.extend_from_slice(b",\"partnerTenantOwner\":\"partner@msp.example\"");
    }
    if rng.random_bool(0.93) {
        out.extend_from_slice(b",\"status\":\"Successful\"");
    } else {
        out.extend_from_slice(b",\"status\":\"Failed\"");
    }
    if rng.random_bool(0.3) {
        out.extend_from_slice(b",\"comment\":");
        out.extend_from_slice(COMMENT_JSON.as_bytes());
    }
    out.extend_from_slice(b",\"objectType\":");
    put_plain(out, pick(rng, OBJECT_TYPES));
    out.extend_from_slice(b",\"operationType\":");
    put_plain(out, action);
    out.extend_from_slice(b",\"module\":");
    put_plain(out, pick(rng, MODULES));
    out.extend_from_slice(b",\"functionality\":\"");
    out.extend_from_slice(pick(rng, MODULES).as_bytes());
    out.push(b' ');
    out.extend_from_slice(pick(rng, ACTIONS).as_bytes());
    out.extend_from_slice(b"\",\"objectName\":\"https://contoso.sharepoint.com/sites/site-");
    put_int(out, rng.random_range(0..500u32));
    out.push(b'"');
    if ptype == "GovernanceAutomation" {
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(action.as_bytes());
        out.extend_from_slice(b" request\"");
    }
    out.extend_from_slice(b",\"clientIP\":\"");
    put_int(out, rng.random_range(1..255u32));
    out.push(b'.');
    put_int(out, rng.random_range(0..255u32));
    out.push(b'.');
    put_int(out, rng.random_range(0..255u32));
    out.push(b'.');
    put_int(out, rng.random_range(1..255u32));
    out.push(b'"');
    if ptype == "CPManagement" || rng.random_bool(0.05) {
        out.extend_from_slice(b",\"additionalDetails\":{\"workspaceId\":\"ws-");
        put_int(out, rng.random_range(0..1000u32));
        out.extend_from_slice("\",\"labels\":[\"Confidential\",\"Ünïcode\"],\"count\":".as_bytes());
        put_int(out, rng.random_range(0..10u32));
        out.push(b'}');
    }
    // AvePoint may add fields at any time; a few records carry one the schema does not know.
    if rng.random_bool(0.003) {
        out.extend_from_slice(b",\"riskScore\":");
        put_int(out, rng.random_range(0..100u32));
        out.extend_from_slice(b",\"tenantRegion\":");
        out.extend_from_slice(TENANT_REGION_JSON.as_bytes());
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    fn spec(seed: u64, per_day: u32) -> DataSpec {
        DataSpec {
            seed,
            start: Utc.with_ymd_and_hms(2024, 3, 1, 5, 0, 0).unwrap(),
            days: 3,
            records_per_day: per_day,
            max_delay: Duration::zero(),
        }
    }

    #[test]
    fn same_seed_same_day_same_records() {
        let a: Vec<Value> = generate_day(&spec(7, 500), 1).into_iter().map(|r| r.json).collect();
        let b: Vec<Value> = generate_day(&spec(7, 500), 1).into_iter().map(|r| r.json).collect();
        let c: Vec<Value> = generate_day(&spec(8, 500), 1).into_iter().map(|r| r.json).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        // A day's records do not depend on how many days were generated.
        let mut longer = spec(7, 500);
        longer.days = 30;
        assert_eq!(a, generate_day(&longer, 1).into_iter().map(|r| r.json).collect::<Vec<_>>());
        // Nor on where the data set starts: day 1 of one is day 0 of a set starting a day later.
        let mut later = spec(7, 500);
        later.start += Duration::days(1);
        assert_eq!(a, generate_day(&later, 0).into_iter().map(|r| r.json).collect::<Vec<_>>());
    }

    #[test]
    fn realistic_shape() {
        let recs = generate_day(&spec(1, 5000), 0);
        assert_eq!(recs.len(), 5000);
        let day = midnight(spec(1, 1).start);
        assert!(recs.iter().all(|r| r.time >= day && r.time < day + Duration::days(1)));
        let mut counts = std::collections::HashMap::new();
        for r in &recs {
            *counts.entry(r.json.to_string()).or_insert(0) += 1;
        }
        let twins: usize = counts.values().filter(|n| **n > 1).map(|n| n - 1).sum();
        assert!((50..=150).contains(&twins), "~2% twins, got {twins}");
        let has = |f: &dyn Fn(&Value) -> bool| recs.iter().any(|r| f(&r.json));
        assert!(
            has(&|v| v["actionTime"].as_str().unwrap().len() == "2024-03-01T00:00:00.1234567Z".len()),
            "7-digit fractions"
        );
        assert!(
            has(&|v| v["actionTime"].as_str().unwrap() == "2024-03-01T00:00:00Z"),
            "records at midnight"
        );
        assert!(has(&|v| v.get("riskScore").is_some()), "unknown fields");
        assert!(has(&|v| v["additionalDetails"].is_object()), "additionalDetails objects");
        assert!(has(&|v| v["previousValue"].is_null()) && has(&|v| v["previousValue"].is_string()));
        assert!(has(&|v| v
            .get("comment")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains('\n') && c.contains('"') && !c.is_ascii())));
        for field in [
            "actionName",
            "actionUser",
            "actionParameters",
            "controllerName",
            "product",
            "geoLocation",
            "status",
            "objectType",
            "operationType",
            "module",
            "functionality",
            "objectName",
            "clientIP",
            "previousValue",
            "currentValue",
            "partnerTenantOwner",
            "action",
        ] {
            assert!(has(&|v| v.get(field).is_some()), "{field} generated");
        }
        // `action` only on Cloud Governance records.
        assert!(
            recs.iter()
                .all(|r| r.json.get("action").is_some() == (r.product_type == "GovernanceAutomation"))
        );
        // Not sorted.
        assert!(recs.windows(2).any(|w| w[0].time > w[1].time));
    }

    #[test]
    fn late_arrival_is_bounded() {
        let mut s = spec(3, 1000);
        s.max_delay = Duration::hours(2);
        let recs = generate_day(&s, 0);
        assert!(
            recs.iter()
                .all(|r| r.visible_at >= r.time && r.visible_at <= r.time + Duration::hours(2))
        );
        assert!(recs.iter().any(|r| r.visible_at > r.time + Duration::minutes(30)));
        // Twins share the JSON, not the arrival.
        let mut by_json: std::collections::HashMap<String, Vec<DateTime<Utc>>> = Default::default();
        for r in &recs {
            by_json.entry(r.json.to_string()).or_default().push(r.visible_at);
        }
        assert!(by_json.values().any(|v| v.len() > 1 && v.iter().any(|t| *t != v[0])));
    }

    /// The record as the old generator built it (a `Map` in insertion order) from the same draws.
    fn reference(spec: &DataSpec, day: u32, base: u32) -> (DateTime<Utc>, &'static str, Value) {
        let (day_start, key) = day_key(spec, day);
        let rng = &mut RecordRng::new(spec.seed, key, base);
        let h = draw_head(rng, max_delay_ms(spec));
        let (secs, nanos, n) = (h.secs, h.nanos, base);
        let time = day_start + Duration::seconds(i64::from(secs)) + Duration::nanoseconds(i64::from(nanos));
        let action_time = if nanos == 0 {
            time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            format!("{}.{:07}Z", time.format("%Y-%m-%dT%H:%M:%S"), nanos / 100)
        };
        let (ptype, pname) = PRODUCTS[h.product];
        let action = pick(rng, ACTIONS);
        let user = pick(rng, USERS);
        let mut m = Map::new();
        m.insert("actionName".into(), json!(action));
        m.insert("actionUser".into(), json!(user));
        m.insert(
            "actionParameters".into(),
            json!(format!("{{\"id\":{n},\"note\":\"line one\\nline \\\"two\\\"\"}}")),
        );
        m.insert("actionTime".into(), json!(action_time));
        m.insert("controllerName".into(), json!(pick(rng, CONTROLLERS)));
        m.insert("product".into(), json!(pname));
        m.insert("geoLocation".into(), json!(GEOS[h.geo]));
        if rng.random_bool(0.5) {
            m.insert("previousValue".into(), json!(format!("Quota: {} GB", rng.random_range(1..100))));
            m.insert("currentValue".into(), json!(format!("Quota: {} GB", rng.random_range(1..100))));
        } else {
            m.insert("previousValue".into(), Value::Null);
            m.insert("currentValue".into(), Value::Null);
        }
        if rng.random_bool(0.1) {
            m.insert("partnerTenantOwner".into(), json!("partner@msp.example"));
        }
        m.insert("status".into(), json!(if rng.random_bool(0.93) { "Successful" } else { "Failed" }));
        if rng.random_bool(0.3) {
            m.insert("comment".into(), json!("Approved by \"Müller\", ticket #42\nsecond line — ✓ 完了"));
        }
        m.insert("objectType".into(), json!(pick(rng, OBJECT_TYPES)));
        m.insert("operationType".into(), json!(action));
        m.insert("module".into(), json!(pick(rng, MODULES)));
        m.insert(
            "functionality".into(),
            json!(format!("{} {}", pick(rng, MODULES), pick(rng, ACTIONS))),
        );
        m.insert(
            "objectName".into(),
            json!(format!("https://contoso.sharepoint.com/sites/site-{}", rng.random_range(0..500))),
        );
        if ptype == "GovernanceAutomation" {
            m.insert("action".into(), json!(format!("{action} request")));
        }
        m.insert(
            "clientIP".into(),
            json!(format!(
                "{}.{}.{}.{}",
                rng.random_range(1..255),
                rng.random_range(0..255),
                rng.random_range(0..255),
                rng.random_range(1..255)
            )),
        );
        if ptype == "CPManagement" || rng.random_bool(0.05) {
            m.insert(
                "additionalDetails".into(),
                json!({"workspaceId": format!("ws-{}", rng.random_range(0..1000)), "labels": ["Confidential", "Ünïcode"], "count": rng.random_range(0..10)}),
            );
        }
        if rng.random_bool(0.003) {
            m.insert("riskScore".into(), json!(rng.random_range(0..100)));
            m.insert("tenantRegion".into(), json!("EU-West \"β\""));
        }
        (time, ptype, Value::Object(m))
    }

    #[test]
    fn bytes_are_what_serde_json_writes_for_the_old_record() {
        let mut s = spec(11, 20_000);
        s.max_delay = Duration::minutes(10);
        let mut buf = Vec::new();
        let mut unknown = 0;
        for day in [0, 2] {
            for m in day_meta(&s, day) {
                buf.clear();
                write_base_record(&s, day, m.base(), &mut buf);
                let (time, ptype, want) = reference(&s, day, m.base());
                // Byte for byte what serializing the old `Value` gives (same keys, same order, same escapes).
                assert_eq!(std::str::from_utf8(&buf).unwrap(), serde_json::to_string(&want).unwrap());
                assert_eq!(day_start(&s, day) + Duration::nanoseconds(m.time_ns()), time);
                assert_eq!(PRODUCTS[m.product()].0, ptype);
                assert_eq!(want["geoLocation"], GEOS[m.geo()]);
                unknown += usize::from(want.get("riskScore").is_some());
            }
        }
        assert!(unknown > 50, "~0.3% unknown fields, got {unknown}");
    }

    #[test]
    fn twins_follow_the_chain_and_meta_is_a_permutation() {
        let s = spec(5, 3000);
        let (_, key) = day_key(&s, 1);
        let twins: Vec<u32> = (1..3000).filter(|&i| is_twin(s.seed, key, i)).collect();
        assert!((30..=90).contains(&twins.len()), "{}", twins.len());
        let rec = |i| {
            let mut b = Vec::new();
            write_record(&s, 1, i, &mut b);
            b
        };
        for &i in &twins {
            assert_eq!(rec(i), rec(i - 1));
            if !is_twin(s.seed, key, i + 1) {
                assert_ne!(rec(i), rec(i + 1));
            }
        }
        // The served metadata names every non-twin once, plus once more per twin.
        let meta = day_meta(&s, 1);
        assert_eq!(meta.len(), 3000);
        let mut bases: Vec<u32> = meta.iter().map(Meta::base).collect();
        bases.sort_unstable();
        let mut want: Vec<u32> = (0..3000u32)
            .map(|mut i| {
                while is_twin(s.seed, key, i) {
                    i -= 1;
                }
                i
            })
            .collect();
        want.sort_unstable();
        assert_eq!(bases, want);
        assert!(meta.windows(2).any(|w| w[0].time_ns() > w[1].time_ns()), "not in time order");
        assert_eq!(std::mem::size_of::<Meta>(), 16);
    }

    #[test]
    fn constant_strings_are_json() {
        for s in ACTIONS
            .iter()
            .chain(USERS)
            .chain(CONTROLLERS)
            .chain(OBJECT_TYPES)
            .chain(MODULES)
            .chain(GEOS)
        {
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""), "{s} needs no escaping");
        }
        for (t, name) in PRODUCTS {
            assert_eq!(serde_json::to_string(name).unwrap(), format!("\"{name}\""));
            assert!(serde_json::to_string(t).unwrap() == format!("\"{t}\""));
        }
        let comment = "Approved by \"Müller\", ticket #42\nsecond line — ✓ 完了";
        assert_eq!(serde_json::to_string(comment).unwrap(), COMMENT_JSON);
        assert_eq!(serde_json::to_string("EU-West \"β\"").unwrap(), TENANT_REGION_JSON);
        // Years the fast path does not write.
        let mut s = spec(1, 50);
        s.start = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        for r in generate_day(&s, 0) {
            let t = r.json["actionTime"].as_str().unwrap().to_string();
            assert!(t.starts_with("+10000-01-01T"), "{t}");
        }
    }

    #[test]
    fn action_parameters_pieces() {
        let raw = format!("{{\"id\":{},\"note\":\"line one\\nline \\\"two\\\"\"}}", 123);
        assert_eq!(serde_json::to_string(&raw).unwrap(), format!("{PARAMS_PREFIX}123{PARAMS_SUFFIX}"));
    }
}

#[cfg(test)]
mod figures {
    use super::*;
    use std::time::Instant;

    /// `cargo test -p aos-emulator --release -- --ignored --nocapture generation_figures`
    #[test]
    #[ignore]
    fn generation_figures() {
        let spec = DataSpec {
            seed: 42,
            start: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
            days: 600,
            records_per_day: 85_000,
            max_delay: Duration::hours(2),
        };
        let best = |f: &mut dyn FnMut()| {
            (0..std::env::var("FIG_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5))
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::MAX, f64::min)
        };
        let mut meta = Vec::new();
        let s = best(&mut || meta = day_meta(&spec, 7));
        println!("day_meta: {:.2} ms/day, {:.0} ns/record", s * 1e3, s * 1e9 / 85_000.0);
        let mut buf = Vec::with_capacity(1 << 20);
        let s = best(&mut || {
            buf.clear();
            let w = DayWriter::new(&spec, 7);
            for m in &meta[..1000] {
                w.write_base(m.base(), &mut buf);
            }
        });
        println!("write 1000 records: {:.0} µs, {} bytes", s * 1e6, buf.len());
        let s = best(&mut || {
            let mut x = 0u64;
            for i in 0..1000u32 {
                let mut r = RecordRng::new(1, 2, i);
                for _ in 0..30 {
                    x = x.wrapping_add(r.random_range(0..100u32) as u64);
                }
            }
            std::hint::black_box(x);
        });
        println!("30 range draws × 1000: {:.0} µs", s * 1e6);
    }
}
