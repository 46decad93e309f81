//! Reading a page: one validating scan of the body finds `data` and `nextLink` and counts the
//! records, storing nothing per record; the records are then read one at a time
//! ([`Records`]), each scanned again as it is read. So a page costs its body and nothing in
//! proportion to its records (a page of 2,000,000 `{}` took 561 MiB of index before).
//!
//! The scan ([`super::json_scan`]) accepts RFC 8259 JSON; a record holding text that
//! `serde_json::Value` refuses (a lone surrogate escape, a number out of `f64` range) carries a
//! [`Flaw`] for the caller's policy; anywhere else on the page such text refuses the page. The
//! tests hold the reader to serde_json's verdict on mutated pages.
//!
//! Invariant: [`records`] must be given the body that [`index_page`] validated.

use super::DOCUMENTED_FIELDS;
pub use super::json_scan::{Flaw, SyntaxError};
use super::json_scan::{KeyText, Scan};
use super::record::{ACTION_TIME, Record, string_of};

/// A byte range of the body (a key's may be empty). 32-bit: a body is at most
/// `api.max_page_bytes`, which is below 4 GiB; small spans keep the per-record index small.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
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
struct RecordIndex {
    /// The record's exact text (no surrounding whitespace).
    raw: Span,
    is_object: bool,
    fields: [Option<Span>; 20],
    /// Bit `i`: `fields[i]` is a string without escapes.
    plain: u32,
    extra: Vec<(Key, Span)>,
    flaw: Option<Flaw>,
}

impl RecordIndex {
    /// The record, borrowed from `body` (the text this index was built from).
    fn into_record(self, body: &str) -> Record<'_> {
        let mut fields = [None; 20];
        for (f, s) in fields.iter_mut().zip(&self.fields) {
            *f = s.and_then(|s| s.get(body));
        }
        let extra = self
            .extra
            .into_iter()
            .filter_map(|(k, v)| {
                let key = match k {
                    Key::At(s) => s.get(body)?.into(),
                    Key::Owned(s) => s.into(),
                };
                Some((key, v.get(body)?))
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
            flaw: self.flaw,
        }
    }
}

/// Where a page's `data` array lies: read its records with [`records`].
#[derive(Debug, Clone, Copy)]
pub struct Data {
    /// Just after the `[`.
    start: usize,
    /// Its number of records.
    pub len: usize,
}

/// A page's `data` and `nextLink` (raw), from one validating scan of `body`.
pub struct PageIndex<'a> {
    /// The `data` array; `None` when the page has no `data` (or it is null).
    pub data: Option<Data>,
    /// The raw JSON text of `nextLink`, when present and not null.
    pub next_link: Option<&'a str>,
}

/// The records of a page's `data`, read one at a time from the body [`index_page`] validated.
pub struct Records<'a> {
    body: &'a str,
    scan: Scan<'a>,
    left: usize,
}

/// The records of `data` in `body` (the body [`index_page`] returned `data` for), in order.
pub fn records<'a>(body: &'a str, data: &Data) -> Records<'a> {
    let mut scan = Scan::new(body.as_bytes());
    scan.i = data.start;
    scan.ws();
    Records {
        body,
        scan,
        left: data.len,
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        // The body was validated: reading it again cannot fail. If it ever did (a body other
        // than the one validated), the records end here rather than be misread.
        let idx = record(&mut self.scan).ok()?;
        if self.left > 0 && self.scan.end_of_member(b']').ok()? {
            self.left = 0;
        }
        Some(idx.into_record(self.body))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}

/// Parses and validates a page body, indexing its records.
pub fn index_page(body: &str) -> Result<PageIndex<'_>, SyntaxError> {
    let mut s = Scan::new(body.as_bytes());
    s.ws();
    if s.peek() != Some(b'{') {
        s.value()?; // a syntax error, if any, is the better message
        return s.err("a page must be a JSON object with a \"data\" array");
    }
    let mut data = None;
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
                    data = data_array(&mut s)?;
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
            // Outside the records, text a strict reader refuses refuses the page.
            if let Some(f) = s.flaw.take() {
                s.i = f.offset;
                return s.err(f.what);
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
    Ok(PageIndex { data, next_link })
}

/// Reads `text` (one record's JSON) the way a page's records are read, and calls `f` with it:
/// for tests and tools that start from one record.
pub fn with_record<R>(text: &str, f: impl FnOnce(&Record<'_>) -> R) -> Result<R, SyntaxError> {
    let body = format!("{{\"data\":[{text}]}}");
    let page = index_page(&body)?;
    let rec = page.data.and_then(|d| records(&body, &d).next()).ok_or(SyntaxError {
        what: "no record",
        line: 1,
        column: 1,
    })?;
    Ok(f(&rec))
}

/// `data`'s value: null, or an array of records (validated and counted, not stored).
fn data_array(s: &mut Scan<'_>) -> Result<Option<Data>, SyntaxError> {
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
    let mut data = Data { start: s.i, len: 0 };
    s.ws();
    if s.peek() == Some(b']') {
        s.i += 1;
    } else {
        loop {
            s.value()?;
            // A flaw inside a record is the record's (see [`Record::flaw`]).
            s.flaw = None;
            data.len += 1;
            if s.end_of_member(b']')? {
                break;
            }
        }
    }
    s.depth += 1;
    Ok(Some(data))
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
        flaw: None,
    };
    s.flaw = None;
    if !idx.is_object {
        s.value()?;
        idx.raw = Span::new(start, s.i);
        idx.flaw = s.flaw.take();
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
    idx.flaw = s.flaw.take();
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
