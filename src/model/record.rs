//! A borrowed view of one API record: its exact JSON text and, for each documented field and
//! each other key, the raw JSON text of its value, all pointing into the page body. Nothing is
//! copied or unescaped to read a record; the few values that need it (escaped strings, objects)
//! are decoded on demand. `actionTime` is parsed once, here.
//!
//! Invariant: for a JSON object, `fields[i]` is the value of `DOCUMENTED_FIELDS[i]` and `extra`
//! holds every other key in the order the API sent them; a repeated key keeps its last value
//! (as `serde_json::Value` does). A value that is not an object has no fields and no extras.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::{DOCUMENTED_FIELDS, parse_action_time};

/// Index of `actionTime` in [`DOCUMENTED_FIELDS`].
pub const ACTION_TIME: usize = 3;

/// One record, borrowed from the page body.
#[derive(Debug)]
pub struct Record<'a> {
    /// The record's JSON text exactly as sent (no surrounding whitespace).
    pub raw: &'a str,
    /// Whether the record is a JSON object (the API only sends objects).
    pub is_object: bool,
    /// The raw value of each documented field, by [`DOCUMENTED_FIELDS`] index.
    pub fields: [Option<&'a RawValue>; 20],
    /// Every other key with its raw value, in the order sent.
    pub extra: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// `actionTime`, when it is a string that parses as an instant.
    pub time: Option<DateTime<Utc>>,
}

/// The kind of a raw JSON value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `"…"`.
    String,
    /// `null`.
    Null,
    /// Anything else: object, array, number, boolean.
    Other,
}

/// The kind of `v`.
pub fn kind(v: &RawValue) -> Kind {
    match v.get().as_bytes().first() {
        Some(b'"') => Kind::String,
        Some(b'n') => Kind::Null,
        _ => Kind::Other,
    }
}

/// The text of a raw JSON string value, unescaped only when it holds an escape.
pub fn string_of(v: &RawValue) -> Option<Cow<'_, str>> {
    let s = v.get();
    if kind(v) != Kind::String {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    if !inner.contains('\\') {
        // Valid JSON strings hold no raw quote, backslash or control character: the text
        // between the quotes is the value.
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(s).ok().map(Cow::Owned)
}

impl<'a> Record<'a> {
    /// Reads one record's JSON text (one element of a page's `data`, already checked to be a
    /// JSON value).
    pub fn parse(text: &'a str) -> Result<Self, serde_json::Error> {
        let text = text.trim();
        let mut rec = Record {
            raw: text,
            is_object: text.starts_with('{'),
            fields: [None; 20],
            extra: Vec::new(),
            time: None,
        };
        if rec.is_object {
            let mut de = serde_json::Deserializer::from_str(text);
            de.deserialize_map(Fill(&mut rec))?;
            rec.time = rec.fields[ACTION_TIME].and_then(string_of).and_then(|s| parse_action_time(&s));
        }
        Ok(rec)
    }

    /// Whether the object has no key at all.
    pub fn is_empty_object(&self) -> bool {
        self.is_object && self.fields.iter().all(Option::is_none) && self.extra.is_empty()
    }

    /// The record as a `serde_json::Value` (for the rare paths that need a tree).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(self.raw).unwrap_or(serde_json::Value::Null)
    }
}

/// A map key, borrowed when it holds no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Fills a record's fields from its object's entries.
struct Fill<'r, 'a>(&'r mut Record<'a>);

impl<'de> Visitor<'de> for Fill<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            let v: &'de RawValue = map.next_value()?;
            match DOCUMENTED_FIELDS.iter().position(|f| *f == k) {
                Some(i) => self.0.fields[i] = Some(v),
                None => match self.0.extra.iter_mut().find(|(name, _)| *name == k) {
                    Some(slot) => slot.1 = v,
                    None => self.0.extra.push((k, v)),
                },
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &str {
        s
    }

    #[test]
    fn fields_extras_and_time_are_found_without_copies() {
        let r = raw(r#"{"actionName":"Login","x":{"a":[1]},"actionTime":"2024-01-01T00:00:00.5Z","comment":"a\"b","x":2}"#);
        let rec = Record::parse(r).unwrap();
        assert!(rec.is_object && !rec.is_empty_object());
        assert_eq!(rec.fields[0].unwrap().get(), r#""Login""#);
        assert!(matches!(string_of(rec.fields[0].unwrap()), Some(Cow::Borrowed("Login"))));
        assert_eq!(string_of(rec.fields[11].unwrap()).unwrap(), "a\"b");
        assert_eq!(rec.extra.len(), 1, "a repeated key keeps one entry");
        assert_eq!(rec.extra[0].1.get(), "2", "and its last value");
        assert_eq!(rec.time, parse_action_time("2024-01-01T00:00:00.5Z"));
    }

    #[test]
    fn odd_records_parse() {
        let r = raw("[1, 2]");
        let rec = Record::parse(r).unwrap();
        assert!(!rec.is_object && rec.time.is_none() && rec.extra.is_empty());
        let r = raw("{ }");
        assert!(Record::parse(r).unwrap().is_empty_object());
        let r = raw(r#"{"actionTime": 5, "status": null}"#);
        let rec = Record::parse(r).unwrap();
        assert_eq!(rec.time, None);
        assert_eq!(kind(rec.fields[ACTION_TIME].unwrap()), Kind::Other);
        assert_eq!(kind(rec.fields[10].unwrap()), Kind::Null);
    }
}
