//! Canonical text of a JSON value for id scheme 3: one spelling for every way a serializer may
//! write the same value. Keys sorted (by their decoded text, then value), members whose value is
//! `null` dropped (null and absent read the same), no insignificant whitespace, strings with
//! serde_json's minimal escapes, numbers by value (`1`, `1.0`, `1e0` and `10e-1` all read `1`;
//! exact at any precision, never through `f64`).
//!
//! The input is text the page reader already validated, so this is a small single-pass reader
//! over bytes: memory is proportional to the value's own size (no tree), and a value it cannot
//! read is copied as it is, which still identifies it deterministically.

/// Appends the canonical text of the JSON value `v`.
pub fn canonical(v: &str, out: &mut Vec<u8>) {
    let bytes = v.as_bytes();
    let mut i = 0;
    let start = out.len();
    if value(bytes, &mut i, out).is_none() {
        out.truncate(start);
        out.extend_from_slice(bytes);
    }
}

fn skip_ws(s: &[u8], i: &mut usize) {
    while *i < s.len() && matches!(s[*i], b' ' | b'\t' | b'\n' | b'\r') {
        *i += 1;
    }
}

/// Reads one value at `*i` and appends its canonical text; `None` if the text is not JSON.
fn value(s: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Option<()> {
    skip_ws(s, i);
    match *s.get(*i)? {
        b'{' => object(s, i, out),
        b'[' => {
            *i += 1;
            out.push(b'[');
            skip_ws(s, i);
            if s.get(*i) == Some(&b']') {
                *i += 1;
                out.push(b']');
                return Some(());
            }
            loop {
                value(s, i, out)?;
                skip_ws(s, i);
                match *s.get(*i)? {
                    b',' => {
                        *i += 1;
                        out.push(b',');
                    }
                    b']' => {
                        *i += 1;
                        out.push(b']');
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }
        b'"' => {
            let text = string(s, i)?;
            write_string(&text, out);
            Some(())
        }
        b't' => literal(s, i, b"true", out),
        b'f' => literal(s, i, b"false", out),
        b'n' => literal(s, i, b"null", out),
        _ => number(s, i, out),
    }
}

fn literal(s: &[u8], i: &mut usize, word: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if s.get(*i..*i + word.len())? != word {
        return None;
    }
    *i += word.len();
    out.extend_from_slice(word);
    Some(())
}

fn object(s: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Option<()> {
    *i += 1;
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    skip_ws(s, i);
    if s.get(*i) == Some(&b'}') {
        *i += 1;
    } else {
        loop {
            skip_ws(s, i);
            if s.get(*i) != Some(&b'"') {
                return None;
            }
            let key = string(s, i)?.into_owned();
            skip_ws(s, i);
            if s.get(*i) != Some(&b':') {
                return None;
            }
            *i += 1;
            let mut v = Vec::new();
            value(s, i, &mut v)?;
            if v != b"null" {
                members.push((key, v));
            }
            skip_ws(s, i);
            match *s.get(*i)? {
                b',' => *i += 1,
                b'}' => {
                    *i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    // By key, then by value: a repeated key reads the same whatever order it was sent in.
    members.sort_unstable();
    out.push(b'{');
    for (n, (k, v)) in members.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        write_string(k, out);
        out.push(b':');
        out.extend_from_slice(v);
    }
    out.push(b'}');
    Some(())
}

/// Reads a string token at `*i` (which is `"`) and returns its decoded text.
fn string<'a>(s: &'a [u8], i: &mut usize) -> Option<std::borrow::Cow<'a, str>> {
    let start = *i;
    let mut j = start + 1;
    let mut escaped = false;
    loop {
        match *s.get(j)? {
            b'"' => break,
            b'\\' => {
                escaped = true;
                j += 2;
            }
            _ => j += 1,
        }
    }
    *i = j + 1;
    let token = &s[start..=j];
    if escaped {
        match serde_json::from_slice::<String>(token) {
            Ok(text) => Some(std::borrow::Cow::Owned(text)),
            // A lone surrogate escape (a record the page reader flags): decoded all the same, so
            // the record's identity does not depend on how the API spells it either.
            Err(_) => lenient(&token[1..token.len() - 1]).map(std::borrow::Cow::Owned),
        }
    } else {
        std::str::from_utf8(&token[1..token.len() - 1]).ok().map(std::borrow::Cow::Borrowed)
    }
}

/// Stands for a lone surrogate in [`lenient`]'s text (a noncharacter), followed by its 4
/// lower-case hex digits.
const LONE: char = '\u{10FFFF}';

/// Decodes a JSON string's inner text whose escapes include lone surrogates: each becomes
/// [`LONE`] and its code unit in hex, whatever case or pairing spelled it.
fn lenient(inner: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(inner).ok()?;
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let hex = |at: usize| text.get(at..at + 4).and_then(|h| u32::from_str_radix(h, 16).ok());
    let mut skip_to = 0;
    while let Some((at, c)) = chars.next() {
        if at < skip_to {
            continue;
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next()?;
        match e {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let first = hex(at + 2)?;
                skip_to = at + 6;
                let paired = (0xD800..0xDC00).contains(&first)
                    && text.get(at + 6..at + 8) == Some("\\u")
                    && hex(at + 8).is_some_and(|s| (0xDC00..0xE000).contains(&s));
                if paired {
                    let second = hex(at + 8)?;
                    out.push(char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))?);
                    skip_to = at + 12;
                } else if let Some(c) = char::from_u32(first) {
                    out.push(c);
                } else {
                    out.push(LONE);
                    out.push_str(&format!("{first:04x}"));
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// A number by value: `-`, the significant digits without leading or trailing zeros, and
/// `e<exponent>` when the exponent is not 0; zero (and `-0`) is `0`.
fn number(s: &[u8], i: &mut usize, out: &mut Vec<u8>) -> Option<()> {
    let start = *i;
    let mut j = start;
    while j < s.len() && matches!(s[j], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
        j += 1;
    }
    if j == start {
        return None;
    }
    *i = j;
    let text = &s[start..j];
    let (negative, rest) = match text.split_first() {
        Some((b'-', r)) => (true, r),
        _ => (false, text),
    };
    let (mantissa, exp) = match rest.iter().position(|c| matches!(c, b'e' | b'E')) {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &b""[..]),
    };
    let (int, frac) = match mantissa.iter().position(|c| *c == b'.') {
        Some(p) => (&mantissa[..p], &mantissa[p + 1..]),
        None => (mantissa, &b""[..]),
    };
    if int.is_empty() || !int.iter().chain(frac).all(u8::is_ascii_digit) {
        return None;
    }
    // The exponent saturates far beyond anything a validated page holds (f64 range).
    let mut e: i64 = 0;
    let (eneg, edigits) = match exp.split_first() {
        Some((b'-', r)) => (true, r),
        Some((b'+', r)) => (false, r),
        _ => (false, exp),
    };
    if !exp.is_empty() && (edigits.is_empty() || !edigits.iter().all(u8::is_ascii_digit)) {
        return None;
    }
    for d in edigits {
        e = (e.saturating_mul(10)).saturating_add(i64::from(d - b'0')).min(1 << 40);
    }
    if eneg {
        e = -e;
    }
    e -= frac.len() as i64;
    let digits: Vec<u8> = int.iter().chain(frac).copied().collect();
    let lead = digits.iter().take_while(|d| **d == b'0').count();
    let digits = &digits[lead..];
    let trail = digits.iter().rev().take_while(|d| **d == b'0').count();
    let digits = &digits[..digits.len() - trail];
    if digits.is_empty() {
        out.push(b'0');
        return Some(());
    }
    e += trail as i64;
    if negative {
        out.push(b'-');
    }
    out.extend_from_slice(digits);
    if e != 0 {
        out.push(b'e');
        out.extend_from_slice(e.to_string().as_bytes());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::canonical;

    fn c(v: &str) -> String {
        let mut out = Vec::new();
        canonical(v, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_read_by_value() {
        for same in ["1", "1.0", "1e0", "10e-1", "0.1e1", "1.000E+0", "01"] {
            assert_eq!(c(same), "1", "{same}");
        }
        assert_eq!(c("150"), c("1.5e2"));
        assert_eq!(c("-0"), "0");
        assert_eq!(c("-0.0e5"), "0");
        assert_eq!(c("-2.50"), "-25e-1");
        // Exact beyond f64: two integers that f64 cannot tell apart stay apart.
        assert_ne!(c("12345678901234567890123"), c("12345678901234567890124"));
        assert_eq!(c("12345678901234567890123"), c("1.2345678901234567890123e22"));
    }

    #[test]
    fn objects_sort_keys_drop_nulls_and_ignore_whitespace_and_escapes() {
        let a = c(r#"{"b": [1, {"z": null, "y": "é"}], "a": true, "n": null}"#);
        let b = c("{\"a\":true,\"b\":[1.0,{\"y\":\"\\u00e9\"}]}");
        assert_eq!(a, b);
        assert_eq!(a, r#"{"a":true,"b":[1,{"y":"é"}]}"#);
        assert_eq!(c(r#"{"k":2,"k":1}"#), c(r#"{"k":1,"k":2}"#));
        assert_eq!(c(r#""a\/b""#), r#""a/b""#);
        assert_eq!(c("[ ]"), "[]");
        assert_eq!(c("{ }"), "{}");
    }

    #[test]
    fn text_that_is_not_json_is_kept_as_it_is() {
        assert_eq!(c("{\"a\":"), "{\"a\":");
        assert_eq!(c("nul"), "nul");
    }
}
