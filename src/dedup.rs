//! Pure record identity and deduplication: placing records in their window, fingerprints and
//! multiset deduplication.
//!
//! A record's `_record_id` is SHA-256 over its canonical JSON (object keys sorted, no
//! whitespace) and its occurrence number among identical records of the same read, truncated to
//! 128 bits. Identical twins always share `actionTime`, so every window that holds one holds
//! all of them: occurrence numbers are the same whichever window boundaries a re-read uses.
//! Re-reads therefore collapse while legitimate twins survive.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{RecordId, Window, parse_action_time};

/// Where a record belongs relative to the window that returned it.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Inside `[start, end)`.
    In(DateTime<Utc>),
    /// Outside: a server with inclusive bounds returned a neighbour's record; the neighbour owns it.
    Out,
    /// No parseable `actionTime`: kept (never dropped) and deduplicated across all windows.
    Unplaced,
}

pub fn place(record: &Value, window: &Window) -> Placement {
    match record.get("actionTime").and_then(Value::as_str).and_then(parse_action_time) {
        Some(t) if window.contains(t) => Placement::In(t),
        Some(_) => Placement::Out,
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
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
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
        other => serde_json::to_writer(&mut *out, other).expect("writing to a Vec cannot fail"),
    }
}

/// Multiset deduplication for one read of one window.
///
/// Memory per record read: one 16-byte content key and a counter (identical records share
/// one entry); the committed ids are only looked up, never added to.
pub struct Deduper {
    known: HashSet<RecordId>,
    occurrences: HashMap<u128, u32>,
    buf: Vec<u8>,
}

impl Deduper {
    /// `known`: ids already committed for the window's time range (and unplaced records).
    pub fn new(known: HashSet<RecordId>) -> Self {
        Deduper {
            known,
            occurrences: HashMap::new(),
            buf: Vec::with_capacity(2048),
        }
    }

    /// The record's id, and whether it is new (not already committed).
    pub fn admit(&mut self, record: &Value) -> (RecordId, bool) {
        self.buf.clear();
        canonical_json(record, &mut self.buf);
        let content: [u8; 32] = Sha256::digest(&self.buf).into();
        let key = u128::from_le_bytes(content[..16].try_into().expect("16 bytes"));
        let n = self.occurrences.entry(key).or_insert(0);
        let occurrence = *n;
        *n += 1;
        let mut h = Sha256::new();
        h.update(content);
        h.update(occurrence.to_be_bytes());
        let full: [u8; 32] = h.finalize().into();
        let mut id = [0u8; 16];
        id.copy_from_slice(&full[..16]);
        // Twins get distinct occurrence numbers, so an id can repeat within one read only if
        // it was committed before: a lookup is enough.
        let new = !self.known.contains(&id);
        (id, new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let mut d1 = Deduper::new(HashSet::new());
        let mut d2 = Deduper::new(HashSet::new());
        assert_eq!(d1.admit(&json!({"a": 1, "b": 2})).0, d2.admit(&json!({"b": 2, "a": 1})).0);
    }

    #[test]
    fn twins_survive_and_rereads_collapse() {
        let r = json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00Z"});
        let mut first = Deduper::new(HashSet::new());
        let (a, new_a) = first.admit(&r);
        let (b, new_b) = first.admit(&r);
        assert!(new_a && new_b);
        assert_ne!(a, b, "identical twins get distinct ids");
        // A re-read that sees the same twins plus a late third one admits only the third.
        let mut reread = Deduper::new([a, b].into_iter().collect());
        assert!(!reread.admit(&r).1);
        assert!(!reread.admit(&r).1);
        assert!(reread.admit(&r).1);
    }

    #[test]
    fn placement_is_half_open() {
        let w = Window {
            start: parse_action_time("2024-01-01T00:00:00Z").unwrap(),
            end: parse_action_time("2024-01-02T00:00:00Z").unwrap(),
        };
        assert!(matches!(
            place(&json!({"actionTime": "2024-01-01T00:00:00Z"}), &w),
            Placement::In(_)
        ));
        assert_eq!(place(&json!({"actionTime": "2024-01-02T00:00:00Z"}), &w), Placement::Out);
        assert!(matches!(
            place(&json!({"actionTime": "2024-01-01T23:59:59.9999999Z"}), &w),
            Placement::In(_)
        ));
        assert_eq!(place(&json!({"actionTime": "yesterday"}), &w), Placement::Unplaced);
        assert_eq!(place(&json!({}), &w), Placement::Unplaced);
    }
}
