//! Pure record identity and deduplication: placing records in their window, fingerprints and
//! multiset deduplication.
//!
//! A record's `_record_id` (id scheme 2, [`ID_SCHEME`]) is SHA-256 over its identity — the
//! documented fields only ([`crate::model::DOCUMENTED_FIELDS`]), `actionTime` as an instant in
//! nanoseconds rather than its text, other values as canonical JSON — and its occurrence
//! number among records of the same identity in the same read, truncated to 128 bits. So a
//! field AvePoint adds later, or a change in how fractions are written, does not make a known
//! record new; unknown fields still ride along in the output. Identical twins always share
//! `actionTime`, so every window that holds one holds all of them: occurrence numbers are the
//! same whichever window boundaries a re-read uses. Re-reads collapse, legitimate twins survive.
//!
//! Scheme 1 (before this version) hashed the whole record's canonical JSON. Files written under
//! it carry scheme-1 ids; a re-read that meets them computes both ids, so an upgrade never
//! duplicates the look-back.

use std::collections::HashMap;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::record::{ACTION_TIME, Kind, Record, is_canonical_string, kind, string_of};
use crate::model::{DOCUMENTED_FIELDS, RecordId, Window};

/// The id scheme this version writes (recorded per file in the manifest).
pub const ID_SCHEME: i64 = 2;

/// Where a record belongs relative to the window that returned it.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Inside `[start, end)`.
    In(DateTime<Utc>),
    /// Outside, at this instant: at the window's end, a server with inclusive bounds returned
    /// the next window's record; anywhere else, the server misplaced it.
    Out(DateTime<Utc>),
    /// No parseable `actionTime`: kept (never dropped) in `dt=unknown`, deduplicated against
    /// the files of the windows this read overlaps.
    Unplaced,
}

/// Where `record` belongs relative to `window`.
pub fn place(record: &Record<'_>, window: &Window) -> Placement {
    match record.time {
        Some(t) if window.contains(t) => Placement::In(t),
        Some(t) => Placement::Out(t),
        None => Placement::Unplaced,
    }
}

/// Writes `v` as canonical JSON: keys sorted, no insignificant whitespace.
pub fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(k, out);
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(xs) => {
            out.push(b'[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(x, out);
            }
            out.push(b']');
        }
        other => write_json(other, out),
    }
}

/// Appends a scalar as JSON. Serializing a `str` or a JSON value into a `Vec` cannot fail; if
/// it ever did, the bytes written so far still identify the value deterministically.
fn write_json<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Writes a raw value as canonical JSON. A string without escapes is already canonical (its
/// raw text is what serde_json writes), so the common case copies bytes and allocates nothing.
fn canonical_raw(v: &str, out: &mut Vec<u8>) {
    let text = v;
    match kind(v) {
        Kind::String if is_canonical_string(text) => out.extend_from_slice(text.as_bytes()),
        Kind::String => match string_of(v) {
            Some(s) => write_json(s.as_ref(), out),
            None => out.extend_from_slice(text.as_bytes()),
        },
        Kind::Null => out.extend_from_slice(b"null"),
        Kind::Other if text == "true" || text == "false" => out.extend_from_slice(text.as_bytes()),
        Kind::Other => match serde_json::from_str::<Value>(text) {
            Ok(value) => canonical_json(&value, out),
            Err(_) => out.extend_from_slice(text.as_bytes()),
        },
    }
}

/// The identity bytes of a record under scheme 2: each documented field present, in a fixed
/// order, as `name=value;` with `actionTime` as nanoseconds since the epoch when it parses.
fn identity(record: &Record<'_>, out: &mut Vec<u8>) {
    let time_ns = record.time.and_then(|t| t.timestamp_nanos_opt());
    for (i, f) in DOCUMENTED_FIELDS.iter().enumerate() {
        let Some(v) = record.fields[i] else { continue };
        out.extend_from_slice(f.as_bytes());
        out.push(b'=');
        match time_ns {
            // Written straight into the buffer: no string per record.
            Some(ns) if i == ACTION_TIME => {
                let _ = write!(out, "@{ns}");
            }
            // A string without escapes is its own canonical JSON.
            _ if record.is_plain(i) => out.extend_from_slice(v.as_bytes()),
            _ => canonical_raw(v, out),
        }
        out.push(b';');
    }
}

/// A 128-bit key that is already a uniform hash (a prefix of SHA-256): byte-aligned, so a
/// map entry is 20 bytes rather than a `u128`'s padded 32, and hashed by taking its first
/// 8 bytes rather than running SipHash over it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 16]);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// The hasher for [`Key`]s: the key's own first 8 bytes are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; anything else still hashes deterministically.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap = HashMap<Key, u32, std::hash::BuildHasherDefault<KeyHasher>>;

fn key_of(bytes: &[u8]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&bytes[..16]);
    Key(k)
}

/// Counts occurrences of each content key within one read: a set of the keys seen (17 bytes
/// a slot), and counts only for the few keys seen more than once (identical twins).
#[derive(Default)]
struct Occurrences {
    seen: KeySet,
    repeats: KeyMap,
}

type KeySet = std::collections::HashSet<Key, std::hash::BuildHasherDefault<KeyHasher>>;

impl Occurrences {
    /// How many records with this content were numbered so far.
    fn count(&self, content: [u8; 32]) -> u32 {
        let key = key_of(&content);
        match self.repeats.get(&key) {
            Some(n) => *n,
            None => u32::from(self.seen.contains(&key)),
        }
    }

    /// The id of the next record with this content: hash(content, occurrence number).
    fn next_id(&mut self, content: [u8; 32]) -> RecordId {
        let key = key_of(&content);
        let occurrence = if self.seen.insert(key) {
            0
        } else {
            let n = self.repeats.entry(key).or_insert(1);
            *n += 1;
            *n - 1
        };
        id_of(content, occurrence)
    }

    /// Map slots held.
    fn capacity(&self) -> usize {
        self.seen.capacity() + self.repeats.capacity()
    }
}

/// The id of the `occurrence`-th record with this content.
fn id_of(content: [u8; 32], occurrence: u32) -> RecordId {
    let mut h = Sha256::new();
    h.update(content);
    h.update(occurrence.to_be_bytes());
    let full: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&full[..16]);
    id
}

/// Multiset deduplication for one read of one window.
///
/// Memory per record read: one 16-byte content key and a counter (identical records share
/// one entry); the committed ids are only looked up, never added to.
///
/// Records without a usable `actionTime` are numbered per window that wrote them, so the lake
/// can hold the same id more than once (identical such records of different windows); for
/// them, the committed ids are counted as a multiset: the n-th copy a read returns is new only
/// if the lake holds fewer than n copies of that content.
pub struct Deduper {
    known: KeyMap,
    occurrences: Occurrences,
    /// Present when some committed file of the range carries scheme-1 ids.
    legacy: Option<Occurrences>,
    buf: Vec<u8>,
}

impl Deduper {
    /// `known`: ids already committed for the window's time range; `legacy`: whether any of
    /// them were written under id scheme 1.
    pub fn new(known: impl IntoIterator<Item = RecordId>, legacy: bool) -> Self {
        let mut counts = KeyMap::default();
        for id in known {
            *counts.entry(Key(id)).or_insert(0) += 1;
        }
        Deduper {
            known: counts,
            occurrences: Occurrences::default(),
            legacy: legacy.then(Occurrences::default),
            buf: Vec::with_capacity(2048),
        }
    }

    /// About how many bytes this read's ids take (what `export.dedup_memory` counts).
    pub fn memory_bytes(&self) -> usize {
        // A map slot is a 16-byte key, a 4-byte count and a control byte, at 7/8 load.
        let slot = 24;
        (self.known.capacity() + self.occurrences.capacity() + self.legacy.as_ref().map_or(0, Occurrences::capacity)) * slot
    }

    /// The record's id, and whether it is new (not already committed). `placed`: whether the
    /// record has a usable `actionTime` inside the window.
    pub fn admit(&mut self, record: &Record<'_>, placed: bool) -> (RecordId, bool) {
        self.buf.clear();
        identity(record, &mut self.buf);
        let content: [u8; 32] = Sha256::digest(&self.buf).into();
        let id = self.occurrences.next_id(content);
        let mut new = if placed {
            // Twins share their instant, so one window holds them all and numbers them the
            // same way in every read: an id can repeat only if it was committed before.
            !self.known.contains_key(&Key(id))
        } else {
            // The n-th copy (0-based) is new if the lake holds at most n of this content.
            let seen = self.occurrences.count(content).saturating_sub(1);
            let held: u32 = (0..)
                .map(|n| self.known.get(&Key(id_of(content, n))).copied().unwrap_or(0))
                .take_while(|c| *c > 0)
                .sum();
            seen >= held
        };
        if let Some(legacy) = &mut self.legacy
            && let Some(value) = record.to_value()
        {
            self.buf.clear();
            canonical_json(&value, &mut self.buf);
            let old = legacy.next_id(Sha256::digest(&self.buf).into());
            new = new && !self.known.contains_key(&Key(old));
        }
        (id, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::page_index::with_record;
    use crate::model::parse_action_time;
    use serde_json::json;

    /// Admits a JSON value through the borrowed path, as a page would deliver it.
    fn admit(d: &mut Deduper, v: &Value, placed: bool) -> (RecordId, bool) {
        with_record(&v.to_string(), |r| d.admit(r, placed)).unwrap()
    }

    fn place_v(v: &Value, w: &Window) -> Placement {
        with_record(&v.to_string(), |r| place(r, w)).unwrap()
    }

    #[test]
    fn canonical_json_sorts_keys_recursively() {
        let mut s = Vec::new();
        canonical_json(&json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é\n\""}], "c": true}}), &mut s);
        assert_eq!(
            String::from_utf8(s).unwrap(),
            r#"{"a":{"c":true,"d":[1,{"y":"é\n\"","z":null}]},"b":1}"#
        );
    }

    #[test]
    fn key_order_does_not_change_the_id() {
        let mut d1 = Deduper::new([], false);
        let mut d2 = Deduper::new([], false);
        assert_eq!(
            admit(&mut d1, &json!({"a": 1, "b": 2}), true).0,
            admit(&mut d2, &json!({"b": 2, "a": 1}), true).0
        );
    }

    #[test]
    fn twins_survive_and_rereads_collapse() {
        let r = json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00Z"});
        let mut first = Deduper::new([], false);
        let (a, new_a) = admit(&mut first, &r, true);
        let (b, new_b) = admit(&mut first, &r, true);
        assert!(new_a && new_b);
        assert_ne!(a, b, "identical twins get distinct ids");
        // A re-read that sees the same twins plus a late third one admits only the third.
        let mut reread = Deduper::new([a, b], false);
        assert!(!admit(&mut reread, &r, true).1);
        assert!(!admit(&mut reread, &r, true).1);
        assert!(admit(&mut reread, &r, true).1);
    }

    #[test]
    fn placement_is_half_open() {
        let w = Window {
            start: parse_action_time("2024-01-01T00:00:00Z").unwrap(),
            end: parse_action_time("2024-01-02T00:00:00Z").unwrap(),
        };
        assert!(matches!(
            place_v(&json!({"actionTime": "2024-01-01T00:00:00Z"}), &w),
            Placement::In(_)
        ));
        assert_eq!(place_v(&json!({"actionTime": "2024-01-02T00:00:00Z"}), &w), Placement::Out(w.end));
        assert!(matches!(
            place_v(&json!({"actionTime": "2024-01-01T23:59:59.9999999Z"}), &w),
            Placement::In(_)
        ));
        assert_eq!(place_v(&json!({"actionTime": "yesterday"}), &w), Placement::Unplaced);
        assert_eq!(place_v(&json!({}), &w), Placement::Unplaced);
    }

    #[test]
    fn identity_ignores_new_fields_and_fraction_spelling() {
        let mut d1 = Deduper::new([], false);
        let mut d2 = Deduper::new([], false);
        let a = admit(
            &mut d1,
            &json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00.5Z"}),
            true,
        )
        .0;
        let b = admit(
            &mut d2,
            &json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00.5000000Z", "riskScore": "7"}),
            true,
        )
        .0;
        assert_eq!(a, b);
        let mut d3 = Deduper::new([], false);
        assert_ne!(
            a,
            admit(
                &mut d3,
                &json!({"actionName": "Logout", "actionTime": "2024-01-01T00:00:00.5Z"}),
                true
            )
            .0
        );
    }

    #[test]
    fn scheme_one_ids_are_recognised_after_an_upgrade() {
        let r = json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00Z", "x": 1});
        // What the previous version wrote: SHA-256(canonical JSON) + occurrence 0.
        let mut buf = Vec::new();
        canonical_json(&r, &mut buf);
        let old = Occurrences::default().next_id(Sha256::digest(&buf).into());
        assert!(!admit(&mut Deduper::new([old], true), &r, true).1);
        assert!(
            admit(&mut Deduper::new([old], false), &r, true).1,
            "without the legacy flag it looks new"
        );
    }

    #[test]
    fn identical_unplaced_records_of_different_windows_count_as_a_multiset() {
        let r = json!({"actionName": "Login"});
        // Windows A and B each wrote one copy: both carry occurrence 0's id.
        let a = admit(&mut Deduper::new([], false), &r, false).0;
        let b = admit(&mut Deduper::new([], false), &r, false).0;
        assert_eq!(a, b);
        // A read spanning both returns the two copies (known), then a third (new).
        let mut c = Deduper::new([a, b], false);
        assert!(!admit(&mut c, &r, false).1);
        assert!(!admit(&mut c, &r, false).1);
        assert!(admit(&mut c, &r, false).1);
    }

    /// Scheme 2 as the previous version computed it, from a `Value` tree.
    fn identity_of_value(record: &Value, out: &mut Vec<u8>) {
        for f in DOCUMENTED_FIELDS {
            let Some(v) = record.get(f) else { continue };
            out.extend_from_slice(f.as_bytes());
            out.push(b'=');
            match (f, v) {
                ("actionTime", Value::String(s)) => match parse_action_time(s).and_then(|t| t.timestamp_nanos_opt()) {
                    Some(ns) => {
                        let _ = write!(out, "@{ns}");
                    }
                    None => write_json(s.as_str(), out),
                },
                _ => canonical_json(v, out),
            }
            out.push(b';');
        }
    }

    #[test]
    fn borrowed_identity_equals_the_value_identity_of_earlier_versions() {
        // Ids written by the previous version must be recognised: the identity bytes from
        // the raw text must equal those from the parsed tree, whatever the spelling.
        let texts = [
            r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.1234567Z","comment":"a \"q\" \n é"}"#,
            r#"{"actionName":"caf\u00e9 \/ x","actionTime":"2024-01-01T00:00:00Z","status":null}"#,
            "{ \"actionTime\" : \"yesterday\" ,\n \"additionalDetails\": {\"b\": [1, 2.50, 1e2, -0], \"a\": true} }",
            r#"{"actionName":42,"actionUser":true,"actionParameters":false,"actionTime":7,"clientIP":[1,"x"]}"#,
            r#"{"actionName":"first","actionName":"second","unknown":1}"#,
            r#"{"actionTime":"\u0032024-01-01T00:00:00Z","objectName":"\ud83d\ude00"}"#,
            r#"[1, 2]"#,
            r#""just a string""#,
            r#"{}"#,
        ];
        for text in texts {
            let value: Value = serde_json::from_str(text).unwrap();
            let (mut old, mut new) = (Vec::new(), Vec::new());
            identity_of_value(&value, &mut old);
            with_record(text, |r| identity(r, &mut new)).unwrap();
            assert_eq!(String::from_utf8_lossy(&new), String::from_utf8_lossy(&old), "{text}");
        }
    }

    #[cfg(feature = "emulator")]
    #[test]
    fn borrowed_identity_equals_the_value_identity_on_generated_records() {
        let spec = aos_emulator::DataSpec {
            seed: 11,
            start: parse_action_time("2024-01-01T00:00:00Z").unwrap(),
            days: 1,
            records_per_day: 3000,
            max_delay: chrono::Duration::zero(),
        };
        for r in aos_emulator::data::generate_day(&spec, 0) {
            let text = r.json.to_string();
            let (mut old, mut new) = (Vec::new(), Vec::new());
            identity_of_value(&r.json, &mut old);
            with_record(&text, |r| identity(r, &mut new)).unwrap();
            assert_eq!(new, old, "{text}");
        }
    }
}
