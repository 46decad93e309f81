//! The bodies of the fuzz targets (`tests/fuzz/`, run with `cargo fuzz` on nightly) and of the
//! property tests that run the same checks on stable: each takes arbitrary bytes and panics
//! when a property fails. Nothing here is used by the exporter itself.
//!
//! - [`page_reader`]: the page reader against serde_json, verdict and every value.
//! - [`identity`]: a record's id is the same under every spelling of it.
//! - [`readback`]: what the sinks write reads back (ids, rows, NDJSON values).
//! - [`parsers`]: the duration, size and instant parsers never panic and agree with themselves.
//! - [`config`]: the configuration loader never panics, whatever TOML it is given.

use serde_json::Value;

use crate::model::DOCUMENTED_FIELDS;
use crate::model::page_index::{index_page, records, with_record};

/// Whether serde_json takes `body` as a page: valid JSON as a `Value`, an object whose `data`
/// and `nextLink` keys appear at most once, and a `data` absent, null or an array.
pub fn serde_accepts(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return false;
    };
    let Some(obj) = v.as_object() else { return false };
    if !matches!(obj.get("data"), None | Some(Value::Null | Value::Array(_))) {
        return false;
    }
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Vec<String>, M::Error> {
            let mut keys = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    use serde::Deserializer as _;
    let Ok(keys) = serde_json::Deserializer::from_str(body).deserialize_map(Keys) else {
        return false;
    };
    ["data", "nextLink"].iter().all(|k| keys.iter().filter(|x| x == k).count() <= 1)
}

/// The page reader against serde_json on arbitrary bytes (see [`check_page`]).
pub fn page_reader(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_page(text);
    }
}

/// Checks the page reader against serde_json on `body`. Where serde_json takes the page, ours
/// does too, with no flawed record, and every record, field, extra key and plain-string flag
/// reads as serde_json reads them. Where serde_json refuses it, ours refuses it too, or flaws
/// records such that the page with each flawed record replaced by `null` is one serde_json
/// takes (and none of those records alone is one it takes).
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed check is the fuzzer's finding
pub fn check_page(body: &str) {
    let ours = index_page(body);
    let accepts = serde_accepts(body);
    if accepts {
        assert!(ours.is_ok(), "serde_json takes {body:?}, ours refuses: {:?}", ours.err());
    }
    let Ok(page) = ours else { return };
    let got: Option<Vec<_>> = page.data.map(|d| records(body, &d).collect());
    if let Some(rs) = &got {
        assert_eq!(rs.len(), page.data.map_or(0, |d| d.len), "{body:?}");
    }
    let flawed: Vec<_> = got.iter().flatten().filter(|r| r.flaw.is_some()).collect();
    if accepts {
        assert!(flawed.is_empty(), "serde_json takes every record of {body:?}");
    } else {
        assert!(!flawed.is_empty(), "serde_json refuses {body:?}, ours takes it");
        let mut patched = body.to_string();
        for r in flawed.iter().rev() {
            assert!(serde_json::from_str::<Value>(r.raw).is_err(), "{:?}", r.raw);
            let at = r.raw.as_ptr() as usize - body.as_ptr() as usize;
            let f = r.flaw.expect("flawed");
            assert!(f.offset >= at && f.offset < at + r.raw.len(), "flaw inside its record");
            patched.replace_range(at..at + r.raw.len(), "null");
        }
        assert!(serde_accepts(&patched), "{body:?} without its flawed records: {patched:?}");
        return;
    }
    let v: Value = serde_json::from_str(body).expect("serde_json took it");
    let want = v.get("data").and_then(|d| d.as_array()).cloned();
    assert_eq!(got.as_ref().map(Vec::len), want.as_ref().map(Vec::len), "{body:?}");
    for (rec, want) in got.unwrap_or_default().iter().zip(want.unwrap_or_default()) {
        assert_eq!(rec.to_value().as_ref(), Some(&want), "raw text of a record in {body:?}");
        assert_eq!(rec.is_object, want.is_object());
        let Some(obj) = want.as_object() else { continue };
        let mut rebuilt = serde_json::Map::new();
        for (i, name) in DOCUMENTED_FIELDS.iter().enumerate() {
            if let Some(f) = rec.fields[i] {
                let fv: Value = serde_json::from_str(f).unwrap();
                assert_eq!(rec.is_plain(i), fv.is_string() && !f.contains('\\'), "{f}");
                assert_eq!(rec.field_str(i).as_deref(), fv.as_str(), "{f}");
                rebuilt.insert(name.to_string(), fv);
            } else {
                assert!(!rec.is_plain(i));
            }
        }
        for (k, f) in &rec.extra {
            assert!(!DOCUMENTED_FIELDS.contains(&k.as_ref()));
            rebuilt.insert(k.to_string(), serde_json::from_str(f).unwrap());
        }
        assert_eq!(&rebuilt, obj, "fields and extras of a record in {body:?}");
    }
    let link: Option<Value> = page.next_link.map(|l| serde_json::from_str(l).unwrap());
    assert_eq!(link.as_ref(), v.get("nextLink").filter(|l| !l.is_null()));
}

/// One way of spelling a JSON value that id scheme 3 must not tell from the others.
#[derive(Clone, Copy)]
struct Spelling {
    reverse_keys: bool,
    drop_nulls: bool,
    escape_all: bool,
    /// 0: as serde_json writes numbers; 1: `e0` appended; 2: a trailing `0` or `.0`.
    numbers: u8,
    spaces: bool,
}

fn spell(v: &Value, s: Spelling, out: &mut String) {
    let gap = if s.spaces { " \n\t" } else { "" };
    match v {
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> = m.iter().filter(|(_, v)| !(s.drop_nulls && v.is_null())).collect();
            if s.reverse_keys {
                members.reverse();
            }
            out.push('{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(gap);
                spell_string(k, s, out);
                out.push_str(gap);
                out.push(':');
                spell(v, s, out);
            }
            out.push_str(gap);
            out.push('}');
        }
        Value::Array(xs) => {
            out.push('[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(gap);
                spell(x, s, out);
            }
            out.push(']');
        }
        Value::String(t) => spell_string(t, s, out),
        Value::Number(n) => {
            let t = n.to_string();
            out.push_str(&t);
            let plain = !t.contains(['e', 'E']);
            match s.numbers {
                1 if plain => out.push_str("e0"),
                2 if plain && t.contains('.') => out.push('0'),
                2 if plain => out.push_str(".0"),
                _ => {}
            }
        }
        other => out.push_str(&other.to_string()),
    }
}

fn spell_string(t: &str, s: Spelling, out: &mut String) {
    if !s.escape_all {
        out.push_str(&Value::String(t.to_string()).to_string());
        return;
    }
    out.push('"');
    let mut units = [0u16; 2];
    for c in t.chars() {
        for u in c.encode_utf16(&mut units) {
            out.push_str(&format!("\\u{u:04x}"));
        }
    }
    out.push('"');
}

/// A record's id is the same under every spelling of it: keys in any order, nulls sent or
/// omitted, whitespace, numbers spelled `1`, `1e0` or `1.0`, strings escaped or not.
#[allow(clippy::expect_used)] // a failed check is the fuzzer's finding
pub fn identity(data: &[u8]) {
    let Ok(v @ Value::Object(_)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let content = |text: &str| {
        let mut d = crate::dedup::Deduper::new([], &[]);
        with_record(text, |r| d.content_of(r)).expect("a spelling of a valid record is valid")
    };
    let base = Spelling {
        reverse_keys: false,
        drop_nulls: false,
        escape_all: false,
        numbers: 0,
        spaces: false,
    };
    let mut text = String::new();
    spell(&v, base, &mut text);
    let want = content(&text);
    for bits in 1u8..64 {
        let s = Spelling {
            reverse_keys: bits & 1 != 0,
            drop_nulls: bits & 2 != 0,
            escape_all: bits & 4 != 0,
            numbers: (bits >> 3) % 3,
            spaces: bits & 32 != 0,
        };
        let mut other = String::new();
        spell(&v, s, &mut other);
        assert!(content(&other) == want, "{text} and {other} are one record with two ids");
    }
}

/// What the sinks write reads back: one record (the bytes, if they are one) written as Parquet
/// and as NDJSON gives one row with its id, and the NDJSON line holds the record's values.
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failed check is the fuzzer's finding
pub fn readback(data: &[u8]) {
    use crate::sink::{BufferBudget, Compression, Format, OutRecord, SinkOptions, WindowWriter};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(Value::Object(sent)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("aos-fuzz-{}-{n}", std::process::id()));
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _gone = Gone(dir.clone());
    for format in [Format::Parquet, Format::Ndjson] {
        let root = dir.join(format!("{format:?}"));
        let opts = SinkOptions {
            format,
            compression: Compression::None,
            row_group_rows: 100,
            file_max_rows: 100,
            file_max_bytes: 1 << 30,
            buffer: BufferBudget::new(8 << 20),
        };
        let r = root.clone();
        let mut w = WindowWriter::new(opts, "f".into(), chrono::Utc::now(), Box::new(move |rel: &str| r.join(rel)));
        let mut d = crate::dedup::Deduper::new([], &[]);
        let id = with_record(text, |rec| {
            let (id, _) = d.admit(rec, false);
            w.write(OutRecord {
                rec,
                id: &id,
                time: rec.time,
            })
            .expect("written");
            id
        })
        .expect("valid");
        let files = w.finish().expect("finished");
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(&files[0].temp_path).unwrap();
        let ids = crate::sink::readback::record_ids(&files[0].rel_path, bytes.clone()).expect("read back");
        assert_eq!(ids, vec![id], "{text}");
        if format == Format::Ndjson {
            let line: Value = serde_json::from_slice(&bytes).expect("one JSON line");
            let mut line = line.as_object().expect("an object").clone();
            line.remove("_record_id");
            line.remove("_ingested_at");
            // Keys named like the exporter's columns ride in an `_extra` object (all of them).
            if crate::sink::ndjson::EXPORTER_COLUMNS.iter().any(|k| sent.contains_key(*k)) {
                let Some(Value::Object(moved)) = line.remove("_extra") else {
                    panic!("the API's reserved keys are kept in _extra: {text}");
                };
                line.extend(moved);
            }
            assert_eq!(Value::Object(line), Value::Object(sent.clone()), "{text}");
        }
    }
}

/// The duration, size and instant parsers take any text without panicking; what they accept
/// means what it says.
#[allow(clippy::unwrap_used)] // a failed check is the fuzzer's finding
pub fn parsers(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = crate::config::parse_duration("fuzz", s);
    if let Ok(n) = crate::config::parse_size("fuzz", s) {
        assert!(n > 0);
        assert_eq!(crate::config::parse_size("fuzz", &n.to_string()).unwrap(), n);
    }
    if let Some(t) = crate::config::parse_instant(s) {
        assert_eq!(crate::config::parse_instant(&t.to_rfc3339()), Some(t), "{s}");
    }
    let now = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000);
    let _ = crate::config::parse_instant_or_ago(s, now);
    let _ = crate::model::parse_action_time(s);
}

/// The configuration loader takes any TOML text without panicking: it is a configuration or
/// an error naming what is wrong.
pub fn config(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let Ok(raw) = toml::from_str::<crate::config::RawConfig>(s) else {
        return;
    };
    let _ = raw.umask();
    let _ = raw.check_log();
    let _ = raw.validate(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_000));
}
