//! Unit tests of identity and deduplication.

use super::*;
use crate::model::page_index::with_record;
use crate::model::parse_action_time;
use serde_json::json;

/// Admits a JSON value through the borrowed path, as a page would deliver it.
fn admit(d: &mut Deduper, v: &Value, placed: bool) -> (RecordId, bool) {
    with_record(&v.to_string(), |r| d.admit(r, placed)).unwrap()
}

fn place_v(v: &Value, w: &Window) -> Placement {
    with_record(&v.to_string(), |r| place(r, w)).unwrap()
}

#[test]
fn canonical_json_sorts_keys_recursively() {
    let mut s = Vec::new();
    canonical_json(&json!({"b": 1, "a": {"d": [1, {"z": null, "y": "é\n\""}], "c": true}}), &mut s);
    assert_eq!(
        String::from_utf8(s).unwrap(),
        r#"{"a":{"c":true,"d":[1,{"y":"é\n\"","z":null}]},"b":1}"#
    );
}

#[test]
fn key_order_does_not_change_the_id() {
    let mut d1 = Deduper::new([], &[]);
    let mut d2 = Deduper::new([], &[]);
    assert_eq!(
        admit(&mut d1, &json!({"a": 1, "b": 2}), true).0,
        admit(&mut d2, &json!({"b": 2, "a": 1}), true).0
    );
}

#[test]
fn twins_survive_and_rereads_collapse() {
    let r = json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00Z"});
    let mut first = Deduper::new([], &[]);
    let (a, new_a) = admit(&mut first, &r, true);
    let (b, new_b) = admit(&mut first, &r, true);
    assert!(new_a && new_b);
    assert_ne!(a, b, "identical twins get distinct ids");
    // A re-read that sees the same twins plus a late third one admits only the third.
    let mut reread = Deduper::new([a, b], &[]);
    assert!(!admit(&mut reread, &r, true).1);
    assert!(!admit(&mut reread, &r, true).1);
    assert!(admit(&mut reread, &r, true).1);
}

#[test]
fn placement_is_half_open() {
    let w = Window {
        start: parse_action_time("2024-01-01T00:00:00Z").unwrap(),
        end: parse_action_time("2024-01-02T00:00:00Z").unwrap(),
    };
    assert!(matches!(
        place_v(&json!({"actionTime": "2024-01-01T00:00:00Z"}), &w),
        Placement::In(_)
    ));
    assert_eq!(place_v(&json!({"actionTime": "2024-01-02T00:00:00Z"}), &w), Placement::Out(w.end));
    assert!(matches!(
        place_v(&json!({"actionTime": "2024-01-01T23:59:59.9999999Z"}), &w),
        Placement::In(_)
    ));
    assert_eq!(place_v(&json!({"actionTime": "yesterday"}), &w), Placement::Unplaced);
    assert_eq!(place_v(&json!({}), &w), Placement::Unplaced);
}

#[test]
fn identity_ignores_new_fields_and_fraction_spelling() {
    let mut d1 = Deduper::new([], &[]);
    let mut d2 = Deduper::new([], &[]);
    let a = admit(
        &mut d1,
        &json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00.5Z"}),
        true,
    )
    .0;
    let b = admit(
        &mut d2,
        &json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00.5000000Z", "riskScore": "7"}),
        true,
    )
    .0;
    assert_eq!(a, b);
    let mut d3 = Deduper::new([], &[]);
    assert_ne!(
        a,
        admit(
            &mut d3,
            &json!({"actionName": "Logout", "actionTime": "2024-01-01T00:00:00.5Z"}),
            true
        )
        .0
    );
}

#[test]
fn scheme_one_ids_are_recognised_after_an_upgrade() {
    let r = json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00Z", "x": 1});
    // What the previous version wrote: SHA-256(canonical JSON) + occurrence 0.
    let mut buf = Vec::new();
    canonical_json(&r, &mut buf);
    let old = Occurrences::default().next_id(Sha256::digest(&buf).into());
    assert!(!admit(&mut Deduper::new([old], &[1]), &r, true).1);
    assert!(
        admit(&mut Deduper::new([old], &[3]), &r, true).1,
        "without the legacy flag it looks new"
    );
}

/// A lake written under scheme 2 (null distinct from absent, numbers as serde_json printed
/// them): a re-read that meets its files recognises its records, placed or not, twins
/// included, and an adopted file of unknown scheme too.
#[test]
fn scheme_two_ids_are_recognised_after_an_upgrade() {
    let r = json!({"actionName": "Login", "actionTime": "2024-01-01T00:00:00Z", "status": null, "additionalDetails": {"n": 1.0}});
    let u = json!({"actionName": "Login", "status": null});
    let old = |v: &Value, copies: u32| {
        let mut buf = Vec::new();
        identity_of_value(v, &mut buf);
        let mut occ = Occurrences::default();
        (0..copies).map(|_| occ.next_id(Sha256::digest(&buf).into())).collect::<Vec<_>>()
    };
    for scheme in [2, UNKNOWN_SCHEME] {
        let mut known = old(&r, 2);
        known.extend(old(&u, 1));
        let mut d = Deduper::new(known.clone(), &[scheme]);
        assert!(!admit(&mut d, &r, true).1, "scheme {scheme}");
        assert!(!admit(&mut d, &r, true).1, "the twin too");
        assert!(admit(&mut d, &r, true).1, "a third copy is new");
        assert!(!admit(&mut d, &u, false).1, "a record without actionTime too");
        assert!(admit(&mut Deduper::new(known, &[3]), &r, true).1, "without the scheme it looks new");
    }
}

#[test]
fn identical_unplaced_records_of_different_windows_count_as_a_multiset() {
    let r = json!({"actionName": "Login"});
    // Windows A and B each wrote one copy: both carry occurrence 0's id.
    let a = admit(&mut Deduper::new([], &[]), &r, false).0;
    let b = admit(&mut Deduper::new([], &[]), &r, false).0;
    assert_eq!(a, b);
    // A read spanning both returns the two copies (known), then a third (new).
    let mut c = Deduper::new([a, b], &[]);
    assert!(!admit(&mut c, &r, false).1);
    assert!(!admit(&mut c, &r, false).1);
    assert!(admit(&mut c, &r, false).1);
}

/// Scheme 2 as the previous version computed it, from a `Value` tree.
fn identity_of_value(record: &Value, out: &mut Vec<u8>) {
    for f in DOCUMENTED_FIELDS {
        let Some(v) = record.get(f) else { continue };
        out.extend_from_slice(f.as_bytes());
        out.push(b'=');
        match (f, v) {
            ("actionTime", Value::String(s)) => match parse_action_time(s).and_then(|t| t.timestamp_nanos_opt()) {
                Some(ns) => {
                    let _ = write!(out, "@{ns}");
                }
                None => write_json(s.as_str(), out),
            },
            _ => canonical_json(v, out),
        }
        out.push(b';');
    }
}

#[test]
fn borrowed_identity_equals_the_value_identity_of_earlier_versions() {
    // Ids written by the previous version must be recognised: the identity bytes from
    // the raw text must equal those from the parsed tree, whatever the spelling.
    let texts = [
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.1234567Z","comment":"a \"q\" \n é"}"#,
        r#"{"actionName":"caf\u00e9 \/ x","actionTime":"2024-01-01T00:00:00Z","status":null}"#,
        "{ \"actionTime\" : \"yesterday\" ,\n \"additionalDetails\": {\"b\": [1, 2.50, 1e2, -0], \"a\": true} }",
        r#"{"actionName":42,"actionUser":true,"actionParameters":false,"actionTime":7,"clientIP":[1,"x"]}"#,
        r#"{"actionName":"first","actionName":"second","unknown":1}"#,
        r#"{"actionTime":"\u0032024-01-01T00:00:00Z","objectName":"\ud83d\ude00"}"#,
        r#"[1, 2]"#,
        r#""just a string""#,
        r#"{}"#,
    ];
    for text in texts {
        let value: Value = serde_json::from_str(text).unwrap();
        let (mut old, mut new) = (Vec::new(), Vec::new());
        identity_of_value(&value, &mut old);
        with_record(text, |r| identity_v2(r, &mut new)).unwrap();
        assert_eq!(String::from_utf8_lossy(&new), String::from_utf8_lossy(&old), "{text}");
    }
}

/// Scheme 3 of a record's text.
fn id3(text: &str) -> String {
    let mut out = Vec::new();
    with_record(text, |r| identity(r, &mut out)).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn identity_is_the_same_under_every_spelling_of_one_record() {
    let base = id3(
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.5000000Z","status":null,"comment":"é","additionalDetails":{"n":1,"m":null,"a":[2.50]}}"#,
    );
    for text in [
        // nulls omitted, keys reordered, whitespace
        r#"{ "additionalDetails" : { "a" : [ 2.5 ], "n" : 1 }, "comment" : "é", "actionTime" : "2024-01-01T00:00:00.5Z", "actionName" : "Login" }"#,
        // numbers and times re-spelled, escapes
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.500+00:00","comment":"\u00e9","additionalDetails":{"n":1.0,"a":[25e-1]}}"#,
        r#"{"actionName":"Log\u0069n","actionTime":"2024-01-01T01:00:00.5+01:00","comment":"é","additionalDetails":{"a":[2.500],"n":1e0,"m":null},"status":null}"#,
    ] {
        assert_eq!(id3(text), base, "{text}");
    }
    // Values still matter.
    for other in [
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.5Z","status":"Failed","comment":"é","additionalDetails":{"n":1,"a":[2.5]}}"#,
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.5Z","comment":"é","additionalDetails":{"n":2,"a":[2.5]}}"#,
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.6Z","comment":"é","additionalDetails":{"n":1,"a":[2.5]}}"#,
        r#"{"actionName":"Login","actionTime":"2024-01-01T00:00:00.5Z","comment":"e","additionalDetails":{"n":1,"a":[2.5]}}"#,
    ] {
        assert_ne!(id3(other), base, "{other}");
    }
}

#[cfg(feature = "emulator")]
#[test]
fn identity_is_the_same_under_every_emulator_spelling_of_generated_records() {
    let spec = aos_emulator::DataSpec {
        seed: 5,
        start: parse_action_time("2024-01-01T00:00:00Z").unwrap(),
        days: 1,
        records_per_day: 1500,
        max_delay: chrono::Duration::zero(),
    };
    let mut spellings = Vec::new();
    for bits in 0..16u8 {
        spellings.push(aos_emulator::Serialization {
            omit_nulls: bits & 1 != 0,
            reverse_keys: bits & 2 != 0,
            respell: bits & 4 != 0,
            pretty: bits & 8 != 0,
        });
    }
    let mut differ = 0;
    for r in aos_emulator::data::generate_day(&spec, 0) {
        let text = r.json.to_string();
        let base = id3(&text);
        for s in &spellings {
            let mut other = Vec::new();
            s.rewrite(text.as_bytes(), &mut other);
            let other = String::from_utf8(other).unwrap();
            differ += usize::from(other != text);
            assert_eq!(id3(&other), base, "{s:?}: {other}");
        }
    }
    assert!(differ > 10_000, "the spellings really differ: {differ}");
}

#[cfg(feature = "emulator")]
#[test]
fn borrowed_identity_equals_the_value_identity_on_generated_records() {
    let spec = aos_emulator::DataSpec {
        seed: 11,
        start: parse_action_time("2024-01-01T00:00:00Z").unwrap(),
        days: 1,
        records_per_day: 3000,
        max_delay: chrono::Duration::zero(),
    };
    for r in aos_emulator::data::generate_day(&spec, 0) {
        let text = r.json.to_string();
        let (mut old, mut new) = (Vec::new(), Vec::new());
        identity_of_value(&r.json, &mut old);
        with_record(&text, |r| identity_v2(r, &mut new)).unwrap();
        assert_eq!(new, old, "{text}");
    }
}

/// N identical records without a usable `actionTime`, re-read against a lake holding them:
/// the work is linear in N (before: each record walked every id of its content, N², which made
/// 20,000 such records cost 41.6 s on every look-back run).
#[test]
fn identical_unplaced_records_cost_linear_work() {
    let text = r#"{"actionName":"Sync","comment":"no time"}"#;
    let n = 20_000u32;
    let mut first = Deduper::new([], &[]);
    let ids: Vec<RecordId> = (0..n).map(|_| with_record(text, |r| first.admit_unplaced(r)).unwrap().0).collect();
    for placed_api in [false, true] {
        let mut d = Deduper::new(ids.clone(), &[]);
        d.add_unplaced(ids.clone());
        let mut new = 0;
        for _ in 0..n {
            let fresh = with_record(text, |r| {
                if placed_api {
                    d.admit_unplaced(r).1 == Unplaced::New
                } else {
                    d.admit(r, false).1
                }
            })
            .unwrap();
            new += u32::from(fresh);
        }
        assert_eq!(new, 0, "a re-read writes none of them again");
        assert!(d.probes() <= 3 * u64::from(n) + 2048, "{} probes for {n} records", d.probes());
    }
}

/// A record a strict reader refuses (a lone surrogate) has one id however it is spelled, like
/// any other: it is deduplicated (quarantined once) whatever the API does on a re-read.
#[test]
fn flawed_records_have_one_id_under_every_spelling() {
    let spellings = [
        r#"{"actionName":"Rename","additionalDetails":{"a":"x\ud800y","b":[1,2]},"comment":"\udc00"}"#,
        r#"{"comment":"\uDC00","additionalDetails":{ "b" : [1.0, 2e0], "a" : "\u0078\uD800\u0079" },"actionName":"Rename"}"#,
        "{\n  \"actionName\": \"Rename\",\n  \"comment\": \"\\udc00\",\n  \"additionalDetails\": {\"b\": [1, 2], \"a\": \"x\\ud800y\", \"c\": null}\n}",
    ];
    let content = |t: &str| {
        let mut d = Deduper::new([], &[]);
        with_record(t, |r| {
            assert!(r.flaw.is_some(), "{t}");
            d.content_of(r)
        })
        .unwrap()
    };
    let first = content(spellings[0]);
    for s in &spellings[1..] {
        assert_eq!(content(s), first, "{s}");
    }
    // A different broken unit is a different record.
    assert_ne!(content(&spellings[0].replace("ud800", "ud801")), first);
}
