//! What a page of `/aos/audit` is: a 2xx body that is a JSON object with a `data` array and a
//! `nextLink` that is absent, null or a string. Anything else (a gateway's HTML, `{}`, a
//! `data` that is not an array) is malformed: taking it as an empty last page would commit a
//! window without its records.

use serde::Deserialize;
use serde_json::Value;
use url::Url;

/// One page of `/aos/audit`.
#[derive(Debug)]
pub struct Page {
    /// The records, as the API sent them.
    pub data: Vec<Value>,
    /// The next page, already checked to be on the configured host.
    pub next_link: Option<Url>,
}

/// A parsed but not yet host-checked page.
#[derive(Debug)]
pub struct WirePage {
    /// The records.
    pub data: Vec<Value>,
    /// `nextLink`, when non-empty.
    pub next_link: Option<String>,
}

#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "nextLink", default)]
    next_link: Option<Value>,
    data: Option<Value>,
}

/// Parses and validates a 2xx body.
pub fn parse(body: &[u8]) -> Result<WirePage, String> {
    let w: Wire = serde_json::from_slice(body).map_err(|e| format!("not a JSON object: {e}"))?;
    let data = match w.data {
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("\"data\" is {}, not an array", kind(&other))),
        None => return Err("no \"data\" array".into()),
    };
    let next_link = match w.next_link {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => return Err(format!("\"nextLink\" is {}, not a string or null", kind(&other))),
    };
    Ok(WirePage { data, next_link })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_pages_parse() {
        let p = parse(br#"{"nextLink": null, "data": [{"a": 1}]}"#).unwrap();
        assert_eq!(p.data.len(), 1);
        assert!(p.next_link.is_none());
        let p = parse(br#"{"data": [], "nextLink": "https://h/aos/audit?skipToken=2"}"#).unwrap();
        assert_eq!(p.next_link.as_deref(), Some("https://h/aos/audit?skipToken=2"));
        assert!(parse(br#"{"data": []}"#).unwrap().next_link.is_none());
    }

    #[test]
    fn malformed_pages_are_refused() {
        for body in [
            &br#"{}"#[..],
            br#"{"nextLink": null}"#,
            br#"{"data": null}"#,
            br#"{"data": {"a": 1}}"#,
            br#"{"data": [], "nextLink": 7}"#,
            br#"[]"#,
            b"<html>bad gateway</html>",
            br#"{"data": [1, 2"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
