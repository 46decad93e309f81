//! What a page of `/aos/audit` is: a 2xx body that is a JSON object with a `data` array and a
//! `nextLink` that is absent, null or a string. Anything else (a gateway's HTML, `{}`, a
//! `data` that is not an array) is malformed: taking it as an empty last page would commit a
//! window without its records.
//!
//! A page keeps its body as received and where its `data` array lies: the records are read
//! later, one at a time, borrowed from the body (see [`crate::model::page_index`]), with no
//! tree of values and no index per record.

use bytes::Bytes;
use url::Url;

use crate::model::page_index::{Data, index_page, records};
use crate::model::record::Record;

/// One page of `/aos/audit`.
#[derive(Debug)]
pub struct Page {
    /// The body as received (valid UTF-8 JSON).
    body: Bytes,
    /// Where `data` lies in `body`.
    data: Data,
    /// The next page, already checked to be on the configured host.
    pub next_link: Option<Url>,
}

impl Page {
    /// A checked page with its next link resolved.
    pub fn new(wire: WirePage, next_link: Option<Url>) -> Self {
        Page {
            body: wire.body,
            data: wire.data,
            next_link,
        }
    }

    /// Number of records on the page.
    pub fn len(&self) -> usize {
        self.data.len
    }

    /// Whether the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.data.len == 0
    }

    /// The records, in the order sent, borrowed from the body.
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        // `parse` checked the body is UTF-8 and validated it.
        let text = simdutf8::basic::from_utf8(&self.body).unwrap_or("");
        records(text, &self.data)
    }

    /// The byte offset in the body of `raw` (a record's text, borrowed from this page).
    pub fn offset_of(&self, raw: &str) -> usize {
        (raw.as_ptr() as usize).saturating_sub(self.body.as_ptr() as usize)
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
    data: Data,
    /// `nextLink`, when non-empty.
    pub next_link: Option<String>,
}

impl WirePage {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.data.len
    }

    /// Whether the page holds no record.
    pub fn is_empty(&self) -> bool {
        self.data.len == 0
    }
}

/// Parses and validates a 2xx body in one pass, indexing its records.
pub fn parse(body: Bytes) -> Result<WirePage, String> {
    if u32::try_from(body.len()).is_err() {
        // Positions in the body are 32-bit: refuse rather than misread.
        return Err(format!("a page of {} bytes is larger than 4 GiB", body.len()));
    }
    let text = simdutf8::compat::from_utf8(&body).map_err(|e| format!("not UTF-8: {e}"))?;
    let page = index_page(text).map_err(|e| format!("not a page: {e}"))?;
    let data = page.data.ok_or("no \"data\" array (absent or null)")?;
    let next_link = match page.next_link {
        None => None,
        Some(l) if l.starts_with('"') => {
            let s: String = serde_json::from_str(l).map_err(|e| format!("\"nextLink\": {e}"))?;
            (!s.is_empty()).then_some(s)
        }
        Some(other) => return Err(format!("\"nextLink\" is {}, not a string or null", kind(other))),
    };
    Ok(WirePage { body, data, next_link })
}

fn kind(v: &str) -> &'static str {
    match v.as_bytes().first() {
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
        assert_eq!(p.records().map(|r| r.raw).collect::<Vec<_>>(), vec![r#"{"a": 1}"#, r#"{"b": "x"}"#]);
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
