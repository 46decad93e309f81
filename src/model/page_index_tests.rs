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
