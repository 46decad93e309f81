//! What a page of `/aos/audit` is: a 2xx body that is a JSON object with a `data` array and a
//! `nextLink` that is absent, null or a string. Anything else (a gateway's HTML, `{}`, a
//! `data` that is not an array) is malformed: taking it as an empty last page would commit a
//! window without its records.
//!
//! A page keeps its body as received and only the byte span of each record: the records are
//! read later, borrowed from the body (see [`crate::model::record`]), with no tree of values
//! built for them.

use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use url::Url;

/// One page of `/aos/audit`.
#[derive(Debug)]
pub struct Page {
    /// The body as received (valid UTF-8 JSON).
    body: Bytes,
    /// Where each record of `data` lies in `body`.
    spans: Vec<Range<usize>>,
    /// The next page, already checked to be on the configured host.
    pub next_link: Option<Url>,
}

impl Page {
    /// A checked page with its next link resolved.
    pub fn new(wire: WirePage, next_link: Option<Url>) -> Self {
        Page {
            body: wire.body,
            spans: wire.spans,
            next_link,
        }
    }

    /// Number of records on the page.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each record's JSON text, in the order sent.
    pub fn records(&self) -> impl Iterator<Item = &str> {
        // `parse` checked the body is UTF-8 and cut the spans at value boundaries.
        let text = std::str::from_utf8(&self.body).unwrap_or("");
        self.spans.iter().map(move |s| text.get(s.clone()).unwrap_or("null"))
    }

    /// The page's body size in bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }
}

/// A parsed but not yet host-checked page.
#[derive(Debug)]
pub struct WirePage {
    body: Bytes,
    spans: Vec<Range<usize>>,
    /// `nextLink`, when non-empty.
    pub next_link: Option<String>,
}

impl WirePage {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "nextLink", default, borrow)]
    next_link: Option<&'a RawValue>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

/// Parses and validates a 2xx body, without building the records.
pub fn parse(body: Bytes) -> Result<WirePage, String> {
    let text = std::str::from_utf8(&body).map_err(|e| format!("not UTF-8: {e}"))?;
    let w: Wire = serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let data = w.data.ok_or("no \"data\" array (absent or null)")?;
    if !data.get().starts_with('[') {
        return Err(format!("\"data\" is {}, not an array", kind(data)));
    }
    let records: Vec<&RawValue> = serde_json::from_str(data.get()).map_err(|e| format!("\"data\": {e}"))?;
    let base = text.as_ptr() as usize;
    let spans = records
        .iter()
        .map(|r| {
            let start = r.get().as_ptr() as usize - base;
            start..start + r.get().len()
        })
        .collect();
    let next_link = match w.next_link {
        None => None,
        Some(l) if l.get().starts_with('"') => {
            let s: String = serde_json::from_str(l.get()).map_err(|e| format!("\"nextLink\": {e}"))?;
            (!s.is_empty()).then_some(s)
        }
        Some(other) => return Err(format!("\"nextLink\" is {}, not a string or null", kind(other))),
    };
    drop(records);
    Ok(WirePage { body, spans, next_link })
}

fn kind(v: &RawValue) -> &'static str {
    match v.get().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(s: &'static [u8]) -> Result<WirePage, String> {
        parse(Bytes::from_static(s))
    }

    #[test]
    fn valid_pages_parse() {
        let p = page(br#"{"nextLink": null, "data": [{"a": 1},  {"b": "x"} ]}"#).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.next_link.is_none());
        let p = Page::new(p, None);
        assert_eq!(p.records().collect::<Vec<_>>(), vec![r#"{"a": 1}"#, r#"{"b": "x"}"#]);
        let p = page(br#"{"data": [], "nextLink": "https://h/aos/audit?skipToken=2"}"#).unwrap();
        assert_eq!(p.next_link.as_deref(), Some("https://h/aos/audit?skipToken=2"));
        assert!(page(br#"{"data": []}"#).unwrap().next_link.is_none());
        assert!(page(br#"{"data": [], "nextLink": ""}"#).unwrap().next_link.is_none());
    }

    #[test]
    fn malformed_pages_are_refused() {
        for body in [
            &br#"{}"#[..],
            br#"{"nextLink": null}"#,
            br#"{"data": null}"#,
            br#"{"data": {"a": 1}}"#,
            br#"{"data": [], "nextLink": 7}"#,
            br#"[]"#,
            b"<html>bad gateway</html>",
            br#"{"data": [1, 2"#,
            b"{\"data\": [\"\xff\"]}",
        ] {
            assert!(parse(Bytes::copy_from_slice(body)).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
