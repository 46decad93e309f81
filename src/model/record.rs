//! A borrowed view of one API record: its exact JSON text and, for each documented field and
//! each other key, the raw JSON text of its value, all pointing into the page body. Nothing is
//! copied or unescaped to read a record; the few values that need it (escaped strings, objects)
//! are decoded on demand. `actionTime` is parsed once, here.
//!
//! Records are built by [`super::page_index`] from the one validating parse of their page.
//!
//! Invariant: for a JSON object, `fields[i]` is the value of `DOCUMENTED_FIELDS[i]` and `extra`
//! holds every other key in the order the API sent them; a repeated key keeps its last value
//! (as `serde_json::Value` does). A value that is not an object has no fields and no extras.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// Index of `actionTime` in [`DOCUMENTED_FIELDS`](super::DOCUMENTED_FIELDS).
pub const ACTION_TIME: usize = 3;

/// One record, borrowed from the page body.
#[derive(Debug)]
pub struct Record<'a> {
    /// The record's JSON text exactly as sent (no surrounding whitespace).
    pub raw: &'a str,
    /// Whether the record is a JSON object (the API only sends objects).
    pub is_object: bool,
    /// The raw JSON text of each documented field's value, by [`DOCUMENTED_FIELDS`](super::DOCUMENTED_FIELDS) index.
    pub fields: [Option<&'a str>; 20],
    /// Bit `i` set: `fields[i]` is a string without escapes, so the text between its quotes
    /// is its value (and already its canonical JSON): nothing to scan or decode.
    pub plain: u32,
    /// Every other key with its value's raw JSON text, in the order sent.
    pub extra: Vec<(Cow<'a, str>, &'a str)>,
    /// `actionTime`, when it is a string that parses as an instant.
    pub time: Option<DateTime<Utc>>,
    /// Text in the record that a strict JSON reader refuses (a lone surrogate escape, a number
    /// out of `f64` range), with its offset in the page body: such a record is set aside by
    /// `export.on_invalid_record` rather than written as data.
    pub flaw: Option<super::page_index::Flaw>,
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

/// The kind of the raw JSON value `v`.
pub fn kind(v: &str) -> Kind {
    match v.as_bytes().first() {
        Some(b'"') => Kind::String,
        Some(b'n') => Kind::Null,
        _ => Kind::Other,
    }
}

/// The text of a raw JSON string value, unescaped only when it holds an escape. `None` for
/// a value that is not a string, or one with a lone surrogate escape (not valid UTF-16).
pub fn string_of(v: &str) -> Option<Cow<'_, str>> {
    let s = v;
    if kind(v) != Kind::String || s.len() < 2 {
        return None;
    }
    let inner = &s[1..s.len() - 1];
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        // Valid JSON strings hold no raw quote, backslash or control character: the text
        // between the quotes is the value.
        return Some(Cow::Borrowed(inner));
    }
    unescape(inner).map(Cow::Owned)
}

/// Whether a raw JSON string (quotes included) is spelled as serde_json writes it: its
/// escapes are only the short ones serde_json uses (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`).
/// Such a string's raw text is its canonical JSON, with nothing to decode.
pub fn is_canonical_string(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &b[i..]) {
        let at = i + p;
        match b.get(at + 1) {
            Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => i = at + 2,
            _ => return false,
        }
    }
    true
}

/// Decodes the escapes of a JSON string's inner text (already known to be valid JSON).
fn unescape(inner: &str) -> Option<String> {
    let mut out = String::with_capacity(inner.len());
    unescape_into(inner, &mut out).then_some(out)
}

/// Appends the text of the raw JSON string `v` (quotes included) to `out`; false (with `out`
/// holding a partial value) for a lone surrogate escape. Reuses `out`'s memory.
pub fn string_into(v: &str, out: &mut String) -> bool {
    match v.get(1..v.len().saturating_sub(1)) {
        Some(inner) if kind(v) == Kind::String && v.len() >= 2 => unescape_into(inner, out),
        _ => false,
    }
}

/// [`unescape`] into `out`.
fn unescape_into(inner: &str, out: &mut String) -> bool {
    let b = inner.as_bytes();
    let mut i = 0;
    while let Some(p) = memchr::memchr(b'\\', &b[i..]) {
        out.push_str(&inner[i..i + p]);
        let at = i + p;
        let Some(&esc) = b.get(at + 1) else { return false };
        i = at + 2;
        match esc {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hex = |at: usize| inner.get(at..at + 4).and_then(|h| u32::from_str_radix(h, 16).ok());
                let Some(first) = hex(i) else { return false };
                i += 4;
                let c = if (0xD800..0xDC00).contains(&first) {
                    // A high surrogate must be followed by an escaped low one.
                    if inner.get(i..i + 2) != Some("\\u") {
                        return false;
                    }
                    let Some(second) = hex(i + 2) else { return false };
                    if !(0xDC00..0xE000).contains(&second) {
                        return false;
                    }
                    i += 6;
                    0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                } else {
                    first
                };
                let Some(c) = char::from_u32(c) else { return false };
                out.push(c);
            }
            _ => return false,
        }
    }
    out.push_str(&inner[i..]);
    true
}

/// The JSON text `raw` (valid JSON) with the whitespace between its tokens removed, and
/// nothing else changed: strings, numbers, key order and repeated keys stay exactly as sent.
/// Borrowed when there is nothing to remove.
pub fn compact(raw: &str) -> Cow<'_, str> {
    let b = raw.as_bytes();
    let is_ws = |c: u8| matches!(c, b' ' | b'\n' | b'\t' | b'\r');
    if !b.iter().copied().any(is_ws) {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            // Copy the whole string: a backslash escapes the next byte, a quote ends it.
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.extend_from_slice(&b[start..i]);
        } else {
            if !is_ws(c) {
                out.push(c);
            }
            i += 1;
        }
    }
    // Only ASCII whitespace outside strings was removed: still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| raw.to_string()))
}

impl<'a> Record<'a> {
    /// The value of documented field `i` as text: `None` when absent or not a string (or
    /// not valid text: a lone surrogate escape).
    pub fn field_str(&self, i: usize) -> Option<Cow<'a, str>> {
        let v = self.fields[i]?;
        if self.plain & (1 << i) != 0 {
            return v.get(1..v.len() - 1).map(Cow::Borrowed);
        }
        string_of(v)
    }

    /// Whether documented field `i` is a string without escapes.
    pub fn is_plain(&self, i: usize) -> bool {
        self.plain & (1 << i) != 0
    }

    /// Whether the object has no key at all.
    pub fn is_empty_object(&self) -> bool {
        self.is_object && self.fields.iter().all(Option::is_none) && self.extra.is_empty()
    }

    /// The record as a `serde_json::Value` (for the rare paths that need a tree); `None` if
    /// serde_json refuses it (the page reader refuses those already).
    pub fn to_value(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.raw).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_action_time;

    #[test]
    fn fields_extras_and_time_are_found() {
        let text = r#"{"actionName":"Login","x":{"a":[1]},"actionTime":"2024-01-01T00:00:00.5Z","comment":"a\"b","x":2}"#;
        super::super::page_index::with_record(text, |rec| {
            assert!(rec.is_object && !rec.is_empty_object());
            assert_eq!(rec.fields[0].unwrap(), r#""Login""#);
            assert!(matches!(string_of(rec.fields[0].unwrap()), Some(Cow::Borrowed("Login"))));
            assert_eq!(string_of(rec.fields[11].unwrap()).unwrap(), "a\"b");
            assert_eq!(rec.extra.len(), 1, "a repeated key keeps one entry");
            assert_eq!(rec.extra[0].1, "2", "and its last value");
            assert_eq!(rec.time, parse_action_time("2024-01-01T00:00:00.5Z"));
        })
        .unwrap();
        super::super::page_index::with_record(r#"{"actionTime": 5, "status": null}"#, |rec| {
            assert_eq!(rec.time, None);
            assert_eq!(kind(rec.fields[ACTION_TIME].unwrap()), Kind::Other);
            assert_eq!(kind(rec.fields[10].unwrap()), Kind::Null);
        })
        .unwrap();
    }

    #[test]
    fn compact_removes_only_whitespace_between_tokens() {
        let sent =
            "{ \"n\" : 12345678901234567890123 ,\"e\":1E+2, \"z\": -0,\"k\":1,\"k\":2,\n\t\"s\":\"a b\\\" c \\\\\" , \"a\" : [ 1 , { } ] }";
        assert_eq!(
            compact(sent),
            "{\"n\":12345678901234567890123,\"e\":1E+2,\"z\":-0,\"k\":1,\"k\":2,\"s\":\"a b\\\" c \\\\\",\"a\":[1,{}]}"
        );
        assert!(matches!(compact("{\"a\":\"x y\"}"), Cow::Owned(_)));
        assert!(matches!(compact("[1,2]"), Cow::Borrowed("[1,2]")));
        // What a strict parser reads is unchanged.
        let v: serde_json::Value = serde_json::from_str(&compact(sent)).unwrap();
        assert_eq!(v, serde_json::from_str::<serde_json::Value>(sent).unwrap());
    }

    #[test]
    fn unescaping_matches_serde_json() {
        for text in [
            r#""plain""#,
            r#""a \"q\" \\ \/ \b\f\n\r\t end""#,
            r#""caf\u00e9 \u00E9 \ud83d\ude00 \u0000 \u001f""#,
            r#""\u20ac€""#,
        ] {
            let want: String = serde_json::from_str(text).unwrap();
            assert_eq!(string_of(text).unwrap(), want, "{text}");
            let canonical = serde_json::to_string(&want).unwrap();
            assert_eq!(is_canonical_string(text), canonical == text, "{text}");
        }
        // Lone surrogates are not text.
        for text in [r#""\ud83d""#, r#""\ud83d\u0041""#, r#""\ude00""#] {
            assert!(string_of(text).is_none(), "{text}");
        }
    }
}
