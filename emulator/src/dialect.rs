//! How the server speaks: the semantics of `startTime`/`endTime` ([`Bounds`]) and the spelling
//! of records ([`Serialization`]), for every reading of the API its documentation leaves open.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// The precision at which the server compares a record's `actionTime` with the query bounds:
/// the record's time (and the bound) are truncated to it first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// The full 100 ns tick `actionTime` is stored with.
    #[default]
    Tick,
    /// Whole milliseconds (a JavaScript or SQL `datetime` comparison).
    Millis,
    /// Whole seconds (`startTime`/`endTime` carry no fraction).
    Seconds,
}

/// Every reading of the API's window semantics that its documentation does not rule out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// `actionTime >= startTime` (else `>`).
    pub start_inclusive: bool,
    /// `actionTime <= endTime` (else `<`).
    pub end_inclusive: bool,
    /// Precision of the comparison.
    pub precision: Precision,
}

impl Default for Bounds {
    /// Inclusive at both ends, at the tick: the harder case for a client that reads
    /// half-open windows (a record at a boundary comes back from both neighbours).
    fn default() -> Self {
        Bounds {
            start_inclusive: true,
            end_inclusive: true,
            precision: Precision::Tick,
        }
    }
}

impl Bounds {
    /// Every combination, for tests that must hold under each.
    pub fn all() -> Vec<Bounds> {
        let mut out = Vec::new();
        for precision in [Precision::Tick, Precision::Millis, Precision::Seconds] {
            for start_inclusive in [true, false] {
                for end_inclusive in [true, false] {
                    out.push(Bounds {
                        start_inclusive,
                        end_inclusive,
                        precision,
                    });
                }
            }
        }
        out
    }

    /// `t` as the server compares it (nanoseconds, truncated to the precision).
    pub fn truncate_ns(&self, t: i64) -> i64 {
        let unit = match self.precision {
            Precision::Tick => return t,
            Precision::Millis => 1_000_000,
            Precision::Seconds => 1_000_000_000,
        };
        t.div_euclid(unit).saturating_mul(unit)
    }

    /// Whether a record at `t` is in the query `[lo, hi]` (all in ns on one axis).
    pub fn matches(&self, t: i64, lo: i64, hi: i64) -> bool {
        let (t, lo, hi) = (self.truncate_ns(t), self.truncate_ns(lo), self.truncate_ns(hi));
        let after_start = if self.start_inclusive { t >= lo } else { t > lo };
        let before_end = if self.end_inclusive { t <= hi } else { t < hi };
        after_start && before_end
    }
}

/// Spellings a server may choose for the same record: each is the same record to a JSON
/// reader that treats null and absent alike, and numbers and instants by value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Serialization {
    /// Leave out fields whose value is `null` (a serializer's "ignore nulls").
    pub omit_nulls: bool,
    /// Write every object's keys in reverse order.
    pub reverse_keys: bool,
    /// Write integers as `n.0`, `actionTime` with `+00:00` and trailing zeros of the fraction
    /// dropped, and non-ASCII characters as `\u` escapes.
    pub respell: bool,
    /// Write whitespace between tokens.
    pub pretty: bool,
}

impl Serialization {
    /// Whether records are written as generated.
    pub fn is_plain(&self) -> bool {
        *self == Serialization::default()
    }

    /// Rewrites one record's JSON text in this spelling.
    pub fn rewrite(&self, text: &[u8], out: &mut Vec<u8>) {
        let Ok(v) = serde_json::from_slice::<Value>(text) else {
            out.extend_from_slice(text);
            return;
        };
        let v = self.transform(v, true);
        let s = if self.pretty {
            serde_json::to_string_pretty(&v).unwrap_or_default()
        } else {
            serde_json::to_string(&v).unwrap_or_default()
        };
        if self.respell {
            // serde_json writes non-ASCII as UTF-8; escape it, as some serializers do.
            for c in s.chars() {
                if c.is_ascii() {
                    out.push(c as u8);
                } else {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
                    }
                }
            }
        } else {
            out.extend_from_slice(s.as_bytes());
        }
    }

    fn transform(&self, v: Value, top: bool) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<(String, Value)> = m
                    .into_iter()
                    .filter(|(_, v)| !(self.omit_nulls && v.is_null()))
                    .map(|(k, v)| {
                        let v = if top && k == "actionTime" && self.respell {
                            respell_time(v)
                        } else {
                            self.transform(v, false)
                        };
                        (k, v)
                    })
                    .collect();
                if self.reverse_keys {
                    entries.reverse();
                }
                Value::Object(entries.into_iter().collect())
            }
            Value::Array(xs) => Value::Array(xs.into_iter().map(|x| self.transform(x, false)).collect()),
            Value::Number(n) if self.respell && (n.is_u64() || n.is_i64()) => {
                // `5` as `5.0`: the same number to every JSON reader.
                n.as_f64()
                    .filter(|f| f.abs() < 9.0e15)
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Number(n), Value::Number)
            }
            other => other,
        }
    }
}

/// `2024-01-01T00:00:00.1230000Z` as `2024-01-01T00:00:00.123+00:00`.
fn respell_time(v: Value) -> Value {
    let Value::String(s) = &v else { return v };
    let Ok(t) = DateTime::parse_from_rfc3339(s) else { return v };
    let t = t.with_timezone(&Utc);
    let mut text = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let ns = t.timestamp_subsec_nanos();
    if ns > 0 {
        let frac = format!("{ns:09}");
        text.push('.');
        text.push_str(frac.trim_end_matches('0'));
    }
    text.push_str("+00:00");
    Value::String(text)
}
