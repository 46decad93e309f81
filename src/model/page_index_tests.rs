//! The page reader against serde_json.

use super::*;

fn values(body: &str) -> Vec<serde_json::Value> {
    let idx = index_page(body).unwrap();
    records(body, &idx.data.unwrap()).map(|r| r.to_value().unwrap()).collect()
}

#[test]
fn records_are_cut_exactly_and_read_without_reparsing() {
    let body = "{\"data\": [ {\"actionName\": \"a\", \"x\": 1} ,{}, {\"\\u0061ctionName\":\"b\"},[1,2],\"s\",3,null,\n{ \"k\" : {\"n\": [1]} }\n], \"nextLink\": null, \"more\": {\"ignored\": true}}";
    let idx = index_page(body).unwrap();
    let data = idx.data.unwrap();
    assert_eq!(data.len, 8);
    let recs: Vec<_> = records(body, &data).collect();
    assert_eq!(recs.len(), 8);
    let r0 = &recs[0];
    assert_eq!(r0.raw, "{\"actionName\": \"a\", \"x\": 1}");
    assert_eq!(r0.fields[0], Some("\"a\""));
    assert_eq!(r0.extra.len(), 1);
    assert_eq!(recs[1].raw, "{}");
    assert!(recs[1].is_empty_object());
    assert_eq!(recs[2].fields[0], Some("\"b\""), "escaped key decoded");
    assert_eq!(recs[7].raw, "{ \"k\" : {\"n\": [1]} }");
    assert!(!recs[3].is_object);
    assert!(recs.iter().all(|r| r.flaw.is_none()));
    // Every record reads back as the value serde_json sees there.
    let want: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(values(body), want["data"].as_array().unwrap().clone());
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
        // Outside the records, text a strict reader refuses refuses the page.
        r#"{"data": [], "nextLink": "\ud800"}"#,
        r#"{"data": [], "x": 1e400}"#,
    ] {
        assert!(index_page(body).is_err(), "{body}");
    }
}

/// Valid JSON that serde_json refuses, inside a record, flaws that record alone: the page and
/// its other records read as before, and the flaw says what and where.
#[test]
fn unrepresentable_values_flaw_their_record_only() {
    for (value, what) in [
        (r#""\ud800""#, "lone leading surrogate in hex escape"),
        (r#""\ud83d\u0041""#, "lone leading surrogate in hex escape"),
        (r#"{"b": "x\udc00"}"#, "lone trailing surrogate in hex escape"),
        ("1e400", "number out of range"),
        ("[-1e999]", "number out of range"),
    ] {
        let body = format!(r#"{{"data": [{{"a": 1}}, {{"actionName": {value}, "actionTime": "2024-01-01T00:00:00Z"}}, {{"c": 2}}]}}"#);
        let page = index_page(&body).unwrap();
        let recs: Vec<_> = records(&body, &page.data.unwrap()).collect();
        assert_eq!(recs.len(), 3, "{body}");
        assert!(recs[0].flaw.is_none() && recs[2].flaw.is_none(), "{body}");
        let flaw = recs[1].flaw.expect("flawed");
        assert_eq!(flaw.what, what);
        assert!(body[flaw.offset..].starts_with(['\\', '1', '-']), "{body} at {}", flaw.offset);
        assert!(serde_json::from_str::<serde_json::Value>(recs[1].raw).is_err());
        assert!(recs[1].time.is_some(), "the rest of the record is read");
    }
}

/// Whether serde_json takes `body` as a page: valid JSON as a `Value`, an object whose
/// `data` and `nextLink` keys appear at most once, and a `data` absent, null or an array.
fn serde_accepts(body: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return false;
    };
    let Some(obj) = v.as_object() else { return false };
    if !matches!(obj.get("data"), None | Some(serde_json::Value::Null | serde_json::Value::Array(_))) {
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
    let keys = serde_json::Deserializer::from_str(body).deserialize_map(Keys).unwrap();
    ["data", "nextLink"].iter().all(|k| keys.iter().filter(|x| x == k).count() <= 1)
}

/// Checks `index_page` against serde_json on `body`. Where serde_json takes the page, ours
/// does too, with no flawed record, and every record, field, extra key and plain-string flag
/// reads as serde_json reads them. Where serde_json refuses it, ours refuses it too, or flaws
/// records such that the page with each flawed record replaced by `null` is one serde_json
/// takes (and none of those records alone is one it takes).
fn check_against_serde(body: &str) {
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
            assert!(serde_json::from_str::<serde_json::Value>(r.raw).is_err(), "{:?}", r.raw);
            let at = r.raw.as_ptr() as usize - body.as_ptr() as usize;
            let f = r.flaw.unwrap();
            assert!(f.offset >= at && f.offset < at + r.raw.len(), "flaw inside its record");
            patched.replace_range(at..at + r.raw.len(), "null");
        }
        assert!(serde_accepts(&patched), "{body:?} without its flawed records: {patched:?}");
        return;
    }
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let want = v.get("data").and_then(|d| d.as_array()).cloned();
    assert_eq!(got.as_ref().map(Vec::len), want.as_ref().map(Vec::len), "{body:?}");
    for (rec, want) in got.unwrap_or_default().iter().zip(want.unwrap_or_default()) {
        assert_eq!(rec.to_value().as_ref(), Some(&want), "raw text of a record in {body:?}");
        assert_eq!(rec.is_object, want.is_object());
        let Some(obj) = want.as_object() else { continue };
        let mut rebuilt = serde_json::Map::new();
        for (i, name) in DOCUMENTED_FIELDS.iter().enumerate() {
            if let Some(f) = rec.fields[i] {
                let fv: serde_json::Value = serde_json::from_str(f).unwrap();
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
    let link: Option<serde_json::Value> = page.next_link.map(|l| serde_json::from_str(l).unwrap());
    assert_eq!(link.as_ref(), v.get("nextLink").filter(|l| !l.is_null()));
}

const SEEDS: [&str; 4] = [
    r#"{"data":[{"actionName":"a\"b","actionTime":"2024-01-01T00:00:00Z","x":[1,-2.5e3,{"y":null}],"comment":"caf\u00e9 \ud83d\ude00 \/"},{},[1,2],"s",3,true,null],"nextLink":null,"other":{"k":[true,false]}}"#,
    "{ \"nextLink\" : \"https://h/aos/audit?skipToken=2\",\n \"data\" : [\n  { \"status\" : \"ok\" , \"riskScore\" : 0.5E+2 , \"status\" : \"\\t\" , \"k\\u0031\" : -0 },\n  { \"\" : \"é😀\" }\n ]\n}",
    r#"{"data":[{"actionUser":"x","a":1,"b":2,"a":3,"actionUser":"y\n","module":12345678901234567890123}]}"#,
    r#"{"x":[[[[]]]],"data":null}"#,
];

const ALPHABET: [char; 41] = [
    '{', '}', '[', ']', '"', ':', ',', '\\', '/', 'u', '0', '1', '9', 'a', 'd', 'D', 'c', 'F', '.', 'e', 'E', '+', '-', ' ', '\n', '\t',
    't', 'r', 'f', 'n', 'l', 's', 'x', '\u{1}', '\u{7f}', 'é', '😀', '8', '3', 'b', 'A',
];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
    /// Mutated pages (bytes deleted, inserted, replaced, spans repeated): the scan agrees
    /// with serde_json on every one.
    #[test]
    fn the_scan_agrees_with_serde_json_on_mutated_pages(
        seed in 0..SEEDS.len(),
        edits in proptest::collection::vec(
            (proptest::prelude::any::<proptest::sample::Index>(), 0..4u8, proptest::sample::select(&ALPHABET[..]), 1..12usize),
            1..4,
        ),
    ) {
        let mut text: Vec<char> = SEEDS[seed].chars().collect();
        for (at, op, c, n) in edits {
            let i = at.index(text.len() + 1);
            match op {
                0 if i < text.len() => {
                    text.remove(i);
                }
                1 => text.insert(i, c),
                2 if i < text.len() => text[i] = c,
                _ => {
                    let end = (i + n).min(text.len());
                    let span: Vec<char> = text[i..end].to_vec();
                    text.splice(i..i, span);
                }
            }
        }
        check_against_serde(&text.into_iter().collect::<String>());
    }
}

#[test]
fn seeds_numbers_and_nesting_agree_with_serde_json() {
    for seed in SEEDS {
        check_against_serde(seed);
    }
    let big = "9".repeat(400);
    // 2^1024 - 2^970, the halfway point to infinity, written out (309 digits).
    let edge = "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704342711559699508093042880177904174497792";
    for n in [
        "1e308",
        "1e309",
        "-1e400",
        "0.0e999",
        "1e-400",
        "1.7976931348623157e308",
        "-0.0",
        "01",
        "1.",
        ".5",
        "-",
        "1e",
        "1e+",
        "2E-3",
        &big,
        "123456789012345678901234567890",
        "1.79769313486231580794e308",
        "1.7976931348623158e308",
        "1.7976931348623159e308",
        edge,
    ] {
        check_against_serde(&format!(r#"{{"data":[{{"riskScore":{n}}},{n}]}}"#));
    }
    // serde_json's nesting limit, inside a record and around it.
    for depth in 120..=130 {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        check_against_serde(&format!(r#"{{"data":[{{"x":{nested}}}]}}"#));
        check_against_serde(&format!(r#"{{"data":[{nested}]}}"#));
        check_against_serde(&format!(r#"{{"y":{nested},"data":[]}}"#));
    }
}
