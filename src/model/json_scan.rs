//! A validating scan of JSON text: accepts RFC 8259 JSON nested at most 127 levels deep, and
//! reports where each string lies and whether it holds an escape, without building values.
//! [`super::page_index`] drives it over a page to index the records.
//!
//! Two things the grammar allows but `serde_json::Value` refuses — a lone surrogate escape
//! and a number out of `f64` range — are not syntax errors here but *flaws*: the scan goes on
//! and remembers the first one ([`Scan::flaw`]), so the page reader can set aside the one
//! record that holds it instead of refusing the page.

use std::fmt;

use super::record::string_of;

/// Why a body is not valid JSON (or not a page's shape), and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub(super) what: &'static str,
    pub(super) line: usize,
    pub(super) column: usize,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at line {} column {}", self.what, self.line, self.column)
    }
}

impl std::error::Error for SyntaxError {}

/// serde_json's nesting limit: a value may open at most 127 arrays or objects inside each other.
const MAX_DEPTH: u32 = 128;

/// Valid JSON text that a strict reader (`serde_json::Value`) refuses, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flaw {
    /// What it is: a lone surrogate escape, or a number out of range.
    pub what: &'static str,
    /// Its byte offset in the scanned text.
    pub offset: usize,
}

/// The position of a validating scan of a UTF-8 body.
pub(super) struct Scan<'a> {
    pub(super) b: &'a [u8],
    pub(super) i: usize,
    /// Levels of nesting still allowed.
    pub(super) depth: u32,
    /// The first flaw met since the caller last took it.
    pub(super) flaw: Option<Flaw>,
}

/// The key of a member: borrowed when it holds no escape.
pub(super) enum KeyText<'a> {
    /// The key's text and its (start, end) in the body.
    Plain(&'a [u8], usize, usize),
    Decoded(String),
}

impl std::ops::Deref for KeyText<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            KeyText::Plain(b, ..) => b,
            KeyText::Decoded(s) => s.as_bytes(),
        }
    }
}

impl<'a> Scan<'a> {
    /// A scan from the start of `b` (valid UTF-8).
    pub(super) fn new(b: &'a [u8]) -> Self {
        Scan {
            b,
            i: 0,
            depth: MAX_DEPTH,
            flaw: None,
        }
    }

    /// Notes a flaw at `offset` (the first one counts).
    fn flawed(&mut self, what: &'static str, offset: usize) {
        if self.flaw.is_none() {
            self.flaw = Some(Flaw { what, offset });
        }
    }

    pub(super) fn err<T>(&self, what: &'static str) -> Result<T, SyntaxError> {
        let before = &self.b[..self.i.min(self.b.len())];
        let line = 1 + memchr::memchr_iter(b'\n', before).count();
        let column = 1 + before.len() - memchr::memrchr(b'\n', before).map_or(0, |p| p + 1);
        Err(SyntaxError { what, line, column })
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    pub(super) fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    pub(super) fn enter(&mut self) -> Result<(), SyntaxError> {
        self.depth -= 1;
        if self.depth == 0 {
            return self.err("recursion limit exceeded");
        }
        Ok(())
    }

    /// After a member or element: `,` (more follow, whitespace skipped) or `close` (the end,
    /// consumed; returns true).
    #[inline]
    pub(super) fn end_of_member(&mut self, close: u8) -> Result<bool, SyntaxError> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            None => self.err("EOF while parsing a value"),
            Some(_) if close == b'}' => self.err("expected `,` or `}`"),
            Some(_) => self.err("expected `,` or `]`"),
        }
    }

    /// At a key's opening quote: the key, then past the `:` and whitespace.
    pub(super) fn key(&mut self) -> Result<KeyText<'a>, SyntaxError> {
        if self.peek() != Some(b'"') {
            return match self.peek() {
                None => self.err("EOF while parsing an object"),
                Some(b'}') => self.err("trailing comma"),
                Some(_) => self.err("key must be a string"),
            };
        }
        let (start, end, escaped) = self.string()?;
        let key = if escaped {
            let text = std::str::from_utf8(&self.b[start - 1..end + 1]).unwrap_or_default();
            KeyText::Decoded(string_of(text).unwrap_or_default().into_owned())
        } else {
            KeyText::Plain(&self.b[start..end], start, end)
        };
        self.ws();
        if self.peek() != Some(b':') {
            return self.err("expected `:`");
        }
        self.i += 1;
        self.ws();
        Ok(key)
    }

    /// At an opening quote: scans the string; returns its content's (start, end) and whether
    /// it holds an escape. Escapes are checked, surrogate pairs included.
    #[inline]
    pub(super) fn string(&mut self) -> Result<(usize, usize, bool), SyntaxError> {
        let start = self.i + 1;
        let mut i = start;
        let mut escaped = false;
        loop {
            i += plain_run(&self.b[i..]);
            match self.b.get(i) {
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok((start, i, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    self.i = i;
                    i = self.escape()?;
                }
                Some(_) => {
                    self.i = i;
                    return self.err("control character (\\u0000-\\u001F) found while parsing a string");
                }
                None => {
                    self.i = i;
                    return self.err("EOF while parsing a string");
                }
            }
        }
    }

    /// At a backslash: checks the escape and returns the position after it.
    fn escape(&mut self) -> Result<usize, SyntaxError> {
        let i = self.i;
        match self.b.get(i + 1) {
            Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(i + 2),
            Some(b'u') => {
                let first = self.hex4(i + 2)?;
                match first {
                    0xD800..=0xDBFF => {
                        if self.b.get(i + 6..i + 8) == Some(b"\\u") {
                            let second = self.hex4(i + 8)?;
                            if (0xDC00..=0xDFFF).contains(&second) {
                                return Ok(i + 12);
                            }
                        }
                        self.flawed("lone leading surrogate in hex escape", i);
                        Ok(i + 6)
                    }
                    0xDC00..=0xDFFF => {
                        self.flawed("lone trailing surrogate in hex escape", i);
                        Ok(i + 6)
                    }
                    _ => Ok(i + 6),
                }
            }
            None => {
                self.i = i + 1;
                self.err("EOF while parsing a string")
            }
            Some(_) => {
                self.i = i + 1;
                self.err("invalid escape")
            }
        }
    }

    fn hex4(&mut self, at: usize) -> Result<u32, SyntaxError> {
        let mut n = 0u32;
        for k in 0..4 {
            let d = match self.b.get(at + k) {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                None => {
                    self.i = self.b.len();
                    return self.err("EOF while parsing a string");
                }
                Some(_) => {
                    self.i = at + k;
                    return self.err("invalid escape");
                }
            };
            n = n * 16 + u32::from(d);
        }
        Ok(n)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// At `-` or a digit: a number; one out of `f64` range (which serde_json refuses) is a flaw.
    fn number(&mut self) -> Result<(), SyntaxError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.i += 1;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        let text = &self.b[start..self.i];
        // An integer of up to 300 digits is finite as an f64; only longer ones and those with
        // a fraction or exponent can overflow. Those are read by serde_json itself: its
        // (approximate) float parse decides the edge of the range, as it does for `Value`.
        if (!integer || text.len() > 300) && serde_json::from_slice::<f64>(text).is_err() {
            self.flawed("number out of range", start);
        }
        Ok(())
    }

    pub(super) fn literal(&mut self, word: &'static [u8]) -> Result<(), SyntaxError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            self.err("expected value")
        }
    }

    /// At a value's first byte: checks the whole value and moves past it.
    pub(super) fn value(&mut self) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{') => {
                self.enter()?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        if self.peek() != Some(b'"') {
                            return self.key().map(|_| ());
                        }
                        self.string()?;
                        self.ws();
                        if self.peek() != Some(b':') {
                            return self.err("expected `:`");
                        }
                        self.i += 1;
                        self.ws();
                        self.value()?;
                        if self.end_of_member(b'}')? {
                            break;
                        }
                    }
                }
                self.depth += 1;
                Ok(())
            }
            Some(b'[') => {
                self.enter()?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.value()?;
                        if self.end_of_member(b']')? {
                            break;
                        }
                    }
                }
                self.depth += 1;
                Ok(())
            }
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b']' | b'}') => self.err("trailing comma"),
            None => self.err("EOF while parsing a value"),
            Some(_) => self.err("expected value"),
        }
    }
}

/// How many bytes from the start of `b` are plain string content: up to the first `"`, `\`
/// or control character (or the end). Eight bytes at a time.
#[inline]
fn plain_run(b: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
        let quote = v ^ (ONES * u64::from(b'"'));
        let backslash = v ^ (ONES * u64::from(b'\\'));
        // A byte is flagged when it is zero (the quote or backslash) or below 0x20; only the
        // lowest flag is exact, which is the one used.
        let hit = (quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash) | (v.wrapping_sub(ONES * 0x20) & !v);
        let hit = hit & HIGH;
        if hit != 0 {
            return i + (hit.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        i += 1;
    }
    i
}
