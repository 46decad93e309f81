//! Records written straight to JSON bytes: what `serde_json` writes for the record as a `Value`
//! (same keys in the same order, same escapes), without building one.

use chrono::{DateTime, Datelike, Duration, Utc};
use rand::Rng;

use super::*;

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

/// Appends `s` as a JSON string: `s` needs no escaping (all of the tables' strings; a test checks).
#[inline]
fn put_plain(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

#[inline]
fn put_int(out: &mut Vec<u8>, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
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
pub(super) const PARAMS_PREFIX: &str = r#""{\"id\":"#;
pub(super) const PARAMS_SUFFIX: &str = r#",\"note\":\"line one\\nline \\\"two\\\"\"}""#;
/// `Approved by "Müller", ticket #42⏎second line — ✓ 完了` as a JSON string.
pub(super) const COMMENT_JSON: &str = r#""Approved by \"Müller\", ticket #42\nsecond line — ✓ 完了""#;
/// `EU-West "β"` as a JSON string.
pub(super) const TENANT_REGION_JSON: &str = r#""EU-West \"β\"""#;

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
