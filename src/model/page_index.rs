//! Where each record of a page, and each of its values, lies in the page body: built in the
//! one validating parse of the body, so reading a record later is slicing, not parsing.
//!
//! Invariant: every span points at a complete, valid JSON value of the body the index was
//! built from (serde_json checked it while the index was built); `record` must be given that
//! same body.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::DOCUMENTED_FIELDS;
use super::record::{ACTION_TIME, Record, string_of};

/// A byte range of the body (a key's may be empty).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(text: &str, base: usize) -> Span {
        Span {
            start: (text.as_ptr() as usize - base) as u32,
            len: text.len() as u32,
        }
    }
    fn get<'a>(&self, body: &'a str) -> Option<&'a str> {
        let start = self.start as usize;
        body.get(start..start + self.len as usize)
    }
    fn end(&self) -> usize {
        self.start as usize + self.len as usize
    }
}

/// A key: in the body when it holds no escape, decoded otherwise.
#[derive(Debug)]
enum Key {
    At(Span),
    Owned(String),
}

/// A map key, borrowed from the body when it holds no escape (serde's own `Cow` always
/// copies).
struct BorrowedKey<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BorrowedKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(BorrowedKey(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// One record's place in the body.
#[derive(Debug)]
pub struct RecordIndex {
    raw: Span,
    /// The record's text when it cannot be cut from the body as one span (not an object,
    /// an empty object, a first key with escapes): equivalent JSON, rebuilt.
    owned_raw: Option<String>,
    is_object: bool,
    fields: [Option<Span>; 20],
    extra: Vec<(Key, Span)>,
}

impl RecordIndex {
    /// The record, borrowed from `body` (the text this index was built from).
    pub fn record<'a>(&'a self, body: &'a str) -> Record<'a> {
        let mut fields = [None; 20];
        for (f, s) in fields.iter_mut().zip(&self.fields) {
            *f = s.and_then(|s| s.get(body));
        }
        let extra = self
            .extra
            .iter()
            .filter_map(|(k, v)| {
                let key = match k {
                    Key::At(s) => Cow::Borrowed(s.get(body)?),
                    Key::Owned(s) => Cow::Borrowed(s.as_str()),
                };
                Some((key, v.get(body)?))
            })
            .collect();
        let raw = match &self.owned_raw {
            Some(r) => r.as_str(),
            None => self.raw.get(body).unwrap_or("null"),
        };
        let time = fields[ACTION_TIME].and_then(string_of).and_then(|s| super::parse_action_time(&s));
        Record {
            raw,
            is_object: self.is_object,
            fields,
            extra,
            time,
        }
    }
}

/// A page's records and `nextLink` (raw), from one validating parse of `body`.
pub struct PageIndex<'a> {
    /// The records of `data`, in order; `None` when the page has no `data` (or it is null).
    pub records: Option<Vec<RecordIndex>>,
    /// The raw `nextLink` value, when present.
    pub next_link: Option<&'a RawValue>,
}

/// Parses and validates a page body, indexing its records.
pub fn index_page(body: &str) -> Result<PageIndex<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(body);
    let page = de.deserialize_map(PageVisitor {
        base: body.as_ptr() as usize,
        body,
    })?;
    de.end()?;
    Ok(page)
}

struct PageVisitor<'b> {
    base: usize,
    body: &'b str,
}

impl<'de> Visitor<'de> for PageVisitor<'de> {
    type Value = PageIndex<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with a \"data\" array")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut records = None;
        let mut next_link = None;
        let (mut seen_data, mut seen_link) = (false, false);
        while let Some(BorrowedKey(k)) = map.next_key::<BorrowedKey<'de>>()? {
            match k.as_ref() {
                "data" if seen_data => return Err(de::Error::duplicate_field("data")),
                "data" => {
                    seen_data = true;
                    records = map.next_value_seed(Records {
                        base: self.base,
                        body: self.body,
                    })?;
                }
                "nextLink" if seen_link => return Err(de::Error::duplicate_field("nextLink")),
                "nextLink" => {
                    seen_link = true;
                    next_link = map.next_value::<Option<&'de RawValue>>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(PageIndex { records, next_link })
    }
}

/// `data`: null, or an array of records.
struct Records<'b> {
    base: usize,
    body: &'b str,
}

impl<'de> DeserializeSeed<'de> for Records<'de> {
    type Value = Option<Vec<RecordIndex>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Records<'de> {
    type Value = Option<Vec<RecordIndex>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of records")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1000));
        while let Some(r) = seq.next_element_seed(OneRecord {
            base: self.base,
            body: self.body,
        })? {
            out.push(r);
        }
        Ok(Some(out))
    }
}

struct OneRecord<'b> {
    base: usize,
    body: &'b str,
}

impl<'de> DeserializeSeed<'de> for OneRecord<'de> {
    type Value = RecordIndex;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_object(raw: String) -> RecordIndex {
    RecordIndex {
        raw: Span::default(),
        owned_raw: Some(raw),
        is_object: false,
        fields: [None; 20],
        extra: Vec::new(),
    }
}

impl<'de> Visitor<'de> for OneRecord<'de> {
    type Value = RecordIndex;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a record")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<RecordIndex, M::Error> {
        let mut idx = RecordIndex {
            raw: Span::default(),
            owned_raw: None,
            is_object: true,
            fields: [None; 20],
            extra: Vec::new(),
        };
        // Past a few unknown keys, repeated ones are found by hash, not by scanning.
        let mut extra_at: Option<std::collections::HashMap<String, usize>> = None;
        let mut first_key: Option<Span> = None;
        let mut entries = 0usize;
        let mut end = 0usize;
        while let Some(BorrowedKey(k)) = map.next_key::<BorrowedKey<'de>>()? {
            let v: &'de RawValue = map.next_value()?;
            check_value(v.get()).map_err(de::Error::custom)?;
            let vs = Span::of(v.get(), self.base);
            end = end.max(vs.end());
            let key = match &k {
                Cow::Borrowed(s) => Key::At(Span::of(s, self.base)),
                Cow::Owned(s) => Key::Owned(s.clone()),
            };
            if entries == 0 {
                first_key = match key {
                    Key::At(s) => Some(s),
                    Key::Owned(_) => None,
                };
            }
            entries += 1;
            match DOCUMENTED_FIELDS.iter().position(|f| *f == k) {
                Some(i) => idx.fields[i] = Some(vs),
                None => {
                    let same = |kk: &Key| match kk {
                        Key::At(s) => s.get(self.body) == Some(k.as_ref()),
                        Key::Owned(s) => s == k.as_ref(),
                    };
                    let found = match &extra_at {
                        Some(at) => at.get(k.as_ref()).copied(),
                        None => idx.extra.iter().position(|(kk, _)| same(kk)),
                    };
                    match found {
                        Some(i) => idx.extra[i].1 = vs,
                        None => {
                            if let Some(at) = &mut extra_at {
                                at.insert(k.to_string(), idx.extra.len());
                            }
                            idx.extra.push((key, vs));
                            if extra_at.is_none() && idx.extra.len() > 32 {
                                let at = idx
                                    .extra
                                    .iter()
                                    .enumerate()
                                    .map(|(i, (kk, _))| {
                                        let name = match kk {
                                            Key::At(s) => s.get(self.body).unwrap_or_default().to_string(),
                                            Key::Owned(s) => s.clone(),
                                        };
                                        (name, i)
                                    })
                                    .collect();
                                extra_at = Some(at);
                            }
                        }
                    }
                }
            }
        }
        // The record's text runs from the `{` before its first key (only whitespace
        // between) to the `}` after its last value.
        let b = self.body.as_bytes();
        let open = first_key.and_then(|k| {
            let mut i = (k.start as usize).checked_sub(1)?; // the key's opening quote
            loop {
                i = i.checked_sub(1)?;
                match b[i] {
                    b'{' => return Some(i),
                    b' ' | b'\t' | b'\n' | b'\r' => {}
                    _ => return None,
                }
            }
        });
        let close = (entries > 0)
            .then(|| b[end..].iter().position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r')))
            .flatten()
            .map(|p| end + p)
            .filter(|i| b[*i] == b'}');
        match (open, close) {
            (Some(o), Some(c)) => {
                idx.raw = Span {
                    start: o as u32,
                    len: (c + 1 - o) as u32,
                }
            }
            // An empty object, or a first key with escapes: rebuild equivalent text.
            _ => idx.owned_raw = Some(rebuild(&idx, self.body)),
        }
        Ok(idx)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, seq: S) -> Result<RecordIndex, S::Error> {
        let v: serde_json::Value = de::Deserialize::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(not_object(v.to_string()))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RecordIndex, E> {
        Ok(not_object(serde_json::Value::from(v).to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RecordIndex, E> {
        Ok(not_object(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RecordIndex, E> {
        Ok(not_object(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RecordIndex, E> {
        Ok(not_object(serde_json::Value::from(v).to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RecordIndex, E> {
        Ok(not_object(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RecordIndex, E> {
        Ok(not_object("null".into()))
    }
}

/// Refuses what serde_json's `Value` (and so the previous versions, and strict readers of the
/// output) refuses but its raw-value scan lets through: escapes of lone surrogates, numbers out
/// of range. Strings without `\\u` and the literals need no second look.
fn check_value(text: &str) -> Result<(), &'static str> {
    match text.as_bytes().first() {
        Some(b'"') => {
            let b = text.as_bytes();
            let mut i = 0;
            while let Some(p) = memchr::memchr(b'\\', &b[i..]) {
                if b.get(i + p + 1) == Some(&b'u') {
                    return super::record::string_of(text)
                        .map(|_| ())
                        .ok_or("a string with a lone surrogate escape");
                }
                i += p + 2;
            }
            Ok(())
        }
        Some(b't' | b'f' | b'n') => Ok(()),
        _ => serde_json::from_str::<serde_json::Value>(text)
            .map(|_| ())
            .map_err(|_| "a value serde_json refuses (a number out of range or a lone surrogate)"),
    }
}

/// Reads `text` (one record's JSON) the way a page's records are read, and calls `f` with it:
/// for tests and tools that start from one record.
pub fn with_record<R>(text: &str, f: impl FnOnce(&Record<'_>) -> R) -> Result<R, serde_json::Error> {
    let body = format!("{{\"data\":[{text}]}}");
    let page = index_page(&body)?;
    let records = page.records.unwrap_or_default();
    let rec = records
        .first()
        .map(|r| r.record(&body))
        .ok_or_else(|| <serde_json::Error as de::Error>::custom("no record"))?;
    Ok(f(&rec))
}

/// An object's text from its entries (documented fields first, then the others).
fn rebuild(idx: &RecordIndex, body: &str) -> String {
    let mut out = String::from("{");
    let mut push = |k: &str, v: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&serde_json::Value::from(k).to_string());
        out.push(':');
        out.push_str(v);
    };
    for (name, s) in DOCUMENTED_FIELDS.iter().zip(&idx.fields) {
        if let Some(v) = s.and_then(|s| s.get(body)) {
            push(name, v);
        }
    }
    for (k, v) in &idx.extra {
        let key = match k {
            Key::At(s) => s.get(body).unwrap_or_default(),
            Key::Owned(s) => s.as_str(),
        };
        if let Some(v) = v.get(body) {
            push(key, v);
        }
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(body: &str) -> Vec<serde_json::Value> {
        let idx = index_page(body).unwrap();
        idx.records.unwrap().iter().map(|r| r.record(body).to_value().unwrap()).collect()
    }

    #[test]
    fn records_are_cut_exactly_and_read_without_reparsing() {
        let body = "{\"data\": [ {\"actionName\": \"a\", \"x\": 1} ,{}, {\"\\u0061ctionName\":\"b\"},[1,2],\"s\",3,null,\n{ \"k\" : {\"n\": [1]} }\n], \"nextLink\": null, \"more\": {\"ignored\": true}}";
        let idx = index_page(body).unwrap();
        let recs = idx.records.as_ref().unwrap();
        assert_eq!(recs.len(), 8);
        let r0 = recs[0].record(body);
        assert_eq!(r0.raw, "{\"actionName\": \"a\", \"x\": 1}");
        assert_eq!(r0.fields[0], Some("\"a\""));
        assert_eq!(r0.extra.len(), 1);
        assert_eq!(recs[1].record(body).raw, "{}");
        assert!(recs[1].record(body).is_empty_object());
        assert_eq!(recs[2].record(body).fields[0], Some("\"b\""), "escaped key decoded");
        assert_eq!(recs[7].record(body).raw, "{ \"k\" : {\"n\": [1]} }");
        assert!(!recs[3].record(body).is_object);
        // Every record reads back as the value serde_json sees there.
        let want: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(records(body), want["data"].as_array().unwrap().clone());
        assert!(idx.next_link.is_none());
    }

    #[test]
    fn empty_keys_are_keys() {
        for text in [r#"{"":"x"}"#, r#"{"actionName":"a","":2}"#] {
            let want: serde_json::Value = serde_json::from_str(text).unwrap();
            with_record(text, |r| {
                assert!(!r.is_empty_object(), "{text}");
                assert_eq!(r.to_value(), Some(want.clone()));
                assert_eq!(r.extra.len(), 1);
            })
            .unwrap();
        }
    }

    #[test]
    fn many_unknown_keys_stay_linear_and_last_wins() {
        let mut text = String::from("{");
        for i in 0..200 {
            text.push_str(&format!("\"k{i}\":{i},"));
        }
        text.push_str("\"k7\":\"last\"}");
        with_record(&text, |r| {
            assert_eq!(r.extra.len(), 200);
            assert_eq!(r.extra[7].1, "\"last\"");
        })
        .unwrap();
    }

    #[test]
    fn invalid_json_is_refused() {
        for body in [
            r#"{"data": [{"a": tru}]}"#,
            r#"{"data": [{"a": 1,}]}"#,
            r#"{"data": [{"a": "x"}], "data": []}"#,
            r#"{"data": [{"a": "\x"}]}"#,
            r#"{"data": [{"a": 1}]} trailing"#,
            "{\"data\": [{\"a\": \"line\nbreak\"}]}",
            r#"{"data": [{"a": "\ud800"}]}"#,
            r#"{"data": [{"actionName": "\ud83d\u0041"}]}"#,
            r#"{"data": [{"a": 1e400}]}"#,
            r#"{"data": [{"a": {"b": "\udc00"}}]}"#,
        ] {
            assert!(index_page(body).is_err(), "{body}");
        }
    }
}
