//! The page reader against serde_json.

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

/// Checks `index_page` against serde_json on `body`: the same verdict, and when both take
/// it, every record, field, extra key and plain-string flag as serde_json reads them.
fn check_against_serde(body: &str) {
    let ours = index_page(body);
    assert_eq!(ours.is_ok(), serde_accepts(body), "verdicts differ on {body:?}: {:?}", ours.err());
    let Ok(page) = ours else { return };
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let want = v.get("data").and_then(|d| d.as_array()).cloned();
    let got = page
        .records
        .as_ref()
        .map(|rs| rs.iter().map(|r| r.record(body)).collect::<Vec<_>>());
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
