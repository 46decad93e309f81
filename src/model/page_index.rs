//! Where each record of a page, and each of its values, lies in the page body: built in the
//! one validating scan of the body, so reading a record later is slicing, not parsing.
//!
//! The scan ([`super::json_scan`]) accepts exactly the JSON that `serde_json::Value` accepts,
//! so the output never holds text a strict reader refuses; the tests hold it to that against
//! serde_json on mutated pages.
//!
//! Invariant: every span points at a complete, valid JSON value of the body the index was
//! built from; `record` must be given that same body.

use super::DOCUMENTED_FIELDS;
pub use super::json_scan::SyntaxError;
use super::json_scan::{KeyText, Scan};
use super::record::{ACTION_TIME, Record, string_of};

/// A byte range of the body (a key's may be empty).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        // The caller refuses bodies over 4 GiB, so every offset fits.
        Span {
            start: start as u32,
            len: (end - start) as u32,
        }
    }
    fn get<'a>(&self, body: &'a str) -> Option<&'a str> {
        let start = self.start as usize;
        body.get(start..start + self.len as usize)
    }
}

/// A key: in the body when it holds no escape, decoded otherwise.
#[derive(Debug)]
enum Key {
    At(Span),
    Owned(String),
}

/// One record's place in the body.
#[derive(Debug)]
pub struct RecordIndex {
    /// The record's exact text (no surrounding whitespace).
    raw: Span,
    is_object: bool,
    fields: [Option<Span>; 20],
    /// Bit `i`: `fields[i]` is a string without escapes.
    plain: u32,
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
                    Key::At(s) => s.get(body)?,
                    Key::Owned(s) => s.as_str(),
                };
                Some((key.into(), v.get(body)?))
            })
            .collect();
        let time = match fields[ACTION_TIME] {
            Some(v) if self.plain & (1 << ACTION_TIME) != 0 => super::parse_action_time(&v[1..v.len() - 1]),
            Some(v) => string_of(v).and_then(|s| super::parse_action_time(&s)),
            None => None,
        };
        Record {
            raw: self.raw.get(body).unwrap_or("null"),
            is_object: self.is_object,
            fields,
            plain: self.plain,
            extra,
            time,
        }
    }
}

/// A page's records and `nextLink` (raw), from one validating scan of `body`.
pub struct PageIndex<'a> {
    /// The records of `data`, in order; `None` when the page has no `data` (or it is null).
    pub records: Option<Vec<RecordIndex>>,
    /// The raw JSON text of `nextLink`, when present and not null.
    pub next_link: Option<&'a str>,
}

/// Parses and validates a page body, indexing its records.
pub fn index_page(body: &str) -> Result<PageIndex<'_>, SyntaxError> {
    let mut s = Scan::new(body.as_bytes());
    s.ws();
    if s.peek() != Some(b'{') {
        s.value()?; // a syntax error, if any, is the better message
        return s.err("a page must be a JSON object with a \"data\" array");
    }
    let mut records = None;
    let mut next_link = None;
    let (mut seen_data, mut seen_link) = (false, false);
    s.enter()?;
    s.i += 1;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key = s.key()?;
            match &*key {
                b"data" if seen_data => return s.err("duplicate field `data`"),
                b"data" => {
                    seen_data = true;
                    records = data_records(&mut s)?;
                }
                b"nextLink" if seen_link => return s.err("duplicate field `nextLink`"),
                b"nextLink" => {
                    seen_link = true;
                    let start = s.i;
                    s.value()?;
                    next_link = Some(&body[start..s.i]).filter(|l| *l != "null");
                }
                _ => s.value()?,
            }
            if s.end_of_member(b'}')? {
                break;
            }
        }
    }
    s.depth += 1;
    s.ws();
    if s.i != s.b.len() {
        return s.err("trailing characters");
    }
    Ok(PageIndex { records, next_link })
}

/// Reads `text` (one record's JSON) the way a page's records are read, and calls `f` with it:
/// for tests and tools that start from one record.
pub fn with_record<R>(text: &str, f: impl FnOnce(&Record<'_>) -> R) -> Result<R, SyntaxError> {
    let body = format!("{{\"data\":[{text}]}}");
    let page = index_page(&body)?;
    let records = page.records.unwrap_or_default();
    let rec = records.first().map(|r| r.record(&body)).ok_or(SyntaxError {
        what: "no record",
        line: 1,
        column: 1,
    })?;
    Ok(f(&rec))
}

/// `data`'s value: null, or an array of records.
fn data_records(s: &mut Scan<'_>) -> Result<Option<Vec<RecordIndex>>, SyntaxError> {
    match s.peek() {
        Some(b'n') => {
            s.literal(b"null")?;
            return Ok(None);
        }
        Some(b'[') => {}
        _ => {
            s.value()?;
            return s.err("\"data\" must be an array of records");
        }
    }
    s.enter()?;
    s.i += 1;
    s.ws();
    let mut out = Vec::with_capacity(1000);
    if s.peek() == Some(b']') {
        s.i += 1;
    } else {
        loop {
            out.push(record(s)?);
            if s.end_of_member(b']')? {
                break;
            }
        }
    }
    s.depth += 1;
    Ok(Some(out))
}

/// One element of `data`: an object is indexed; any other value is kept whole.
fn record(s: &mut Scan<'_>) -> Result<RecordIndex, SyntaxError> {
    let start = s.i;
    let mut idx = RecordIndex {
        raw: Span::default(),
        is_object: s.peek() == Some(b'{'),
        fields: [None; 20],
        plain: 0,
        extra: Vec::new(),
    };
    if !idx.is_object {
        s.value()?;
        idx.raw = Span::new(start, s.i);
        return Ok(idx);
    }
    s.enter()?;
    s.i += 1;
    s.ws();
    // Past a few unknown keys, repeated ones are found by hash, not by scanning.
    let mut extra_at: Option<std::collections::HashMap<Vec<u8>, usize>> = None;
    let mut guess = 0;
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key = s.key()?;
            let vstart = s.i;
            let plain = if s.peek() == Some(b'"') {
                !s.string()?.2
            } else {
                s.value()?;
                false
            };
            let vs = Span::new(vstart, s.i);
            match field_index(&key, guess) {
                Some(f) => {
                    guess = f + 1;
                    idx.fields[f] = Some(vs);
                    idx.plain = (idx.plain & !(1 << f)) | (u32::from(plain) << f);
                }
                None => add_extra(s, &mut idx, &mut extra_at, key, vs),
            }
            if s.end_of_member(b'}')? {
                break;
            }
        }
    }
    s.depth += 1;
    idx.raw = Span::new(start, s.i);
    Ok(idx)
}

/// Records an unknown key; a repeated one keeps its first place and its last value (as
/// `serde_json::Value` does).
fn add_extra(
    scan: &Scan<'_>,
    idx: &mut RecordIndex,
    extra_at: &mut Option<std::collections::HashMap<Vec<u8>, usize>>,
    key: KeyText<'_>,
    vs: Span,
) {
    let bytes_of = |k: &Key| -> Vec<u8> {
        match k {
            Key::At(s) => scan.b[s.start as usize..(s.start + s.len) as usize].to_vec(),
            Key::Owned(s) => s.as_bytes().to_vec(),
        }
    };
    let found = match extra_at {
        Some(at) => at.get(&*key).copied(),
        None => idx.extra.iter().position(|(k, _)| match k {
            Key::At(s) => scan.b[s.start as usize..(s.start + s.len) as usize] == *key,
            Key::Owned(s) => s.as_bytes() == &*key,
        }),
    };
    if let Some(i) = found {
        idx.extra[i].1 = vs;
        return;
    }
    if let Some(at) = extra_at {
        at.insert(key.to_vec(), idx.extra.len());
    }
    idx.extra.push((
        match key {
            KeyText::Plain(_, start, end) => Key::At(Span::new(start, end)),
            KeyText::Decoded(s) => Key::Owned(s),
        },
        vs,
    ));
    if extra_at.is_none() && idx.extra.len() > 32 {
        *extra_at = Some(idx.extra.iter().enumerate().map(|(i, (k, _))| (bytes_of(k), i)).collect());
    }
}

/// The index in [`DOCUMENTED_FIELDS`] of a key, if it is one. `guess` is tried first: the API
/// sends the fields in one order, so it is nearly always the one after the previous key's.
#[inline]
fn field_index(key: &[u8], guess: usize) -> Option<usize> {
    if DOCUMENTED_FIELDS.get(guess).is_some_and(|f| f.as_bytes() == key) {
        return Some(guess);
    }
    DOCUMENTED_FIELDS.iter().position(|f| f.len() == key.len() && f.as_bytes() == key)
}

#[cfg(test)]
#[path = "page_index_tests.rs"]
mod tests;
