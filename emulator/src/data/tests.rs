//! Tests of the generator; `generation_figures` prints its costs.

use std::time::Instant;

use super::json::{COMMENT_JSON, PARAMS_PREFIX, PARAMS_SUFFIX, TENANT_REGION_JSON};
use super::*;
use serde_json::{Map, json};

fn spec(seed: u64, per_day: u32) -> DataSpec {
    DataSpec {
        seed,
        start: Utc.with_ymd_and_hms(2024, 3, 1, 5, 0, 0).unwrap(),
        days: 3,
        records_per_day: per_day,
        max_delay: Duration::zero(),
    }
}

#[test]
fn same_seed_same_day_same_records() {
    let a: Vec<Value> = generate_day(&spec(7, 500), 1).into_iter().map(|r| r.json).collect();
    let b: Vec<Value> = generate_day(&spec(7, 500), 1).into_iter().map(|r| r.json).collect();
    let c: Vec<Value> = generate_day(&spec(8, 500), 1).into_iter().map(|r| r.json).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // A day's records do not depend on how many days were generated.
    let mut longer = spec(7, 500);
    longer.days = 30;
    assert_eq!(a, generate_day(&longer, 1).into_iter().map(|r| r.json).collect::<Vec<_>>());
    // Nor on where the data set starts: day 1 of one is day 0 of a set starting a day later.
    let mut later = spec(7, 500);
    later.start += Duration::days(1);
    assert_eq!(a, generate_day(&later, 0).into_iter().map(|r| r.json).collect::<Vec<_>>());
}

#[test]
fn realistic_shape() {
    let recs = generate_day(&spec(1, 5000), 0);
    assert_eq!(recs.len(), 5000);
    let day = midnight(spec(1, 1).start);
    assert!(recs.iter().all(|r| r.time >= day && r.time < day + Duration::days(1)));
    let mut counts = std::collections::HashMap::new();
    for r in &recs {
        *counts.entry(r.json.to_string()).or_insert(0) += 1;
    }
    let twins: usize = counts.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    assert!((50..=150).contains(&twins), "~2% twins, got {twins}");
    let has = |f: &dyn Fn(&Value) -> bool| recs.iter().any(|r| f(&r.json));
    assert!(
        has(&|v| v["actionTime"].as_str().unwrap().len() == "2024-03-01T00:00:00.1234567Z".len()),
        "7-digit fractions"
    );
    assert!(
        has(&|v| v["actionTime"].as_str().unwrap() == "2024-03-01T00:00:00Z"),
        "records at midnight"
    );
    assert!(has(&|v| v.get("riskScore").is_some()), "unknown fields");
    assert!(has(&|v| v["additionalDetails"].is_object()), "additionalDetails objects");
    assert!(has(&|v| v["previousValue"].is_null()) && has(&|v| v["previousValue"].is_string()));
    assert!(has(&|v| v
        .get("comment")
        .and_then(Value::as_str)
        .is_some_and(|c| c.contains('\n') && c.contains('"') && !c.is_ascii())));
    for field in [
        "actionName",
        "actionUser",
        "actionParameters",
        "controllerName",
        "product",
        "geoLocation",
        "status",
        "objectType",
        "operationType",
        "module",
        "functionality",
        "objectName",
        "clientIP",
        "previousValue",
        "currentValue",
        "partnerTenantOwner",
        "action",
    ] {
        assert!(has(&|v| v.get(field).is_some()), "{field} generated");
    }
    // `action` only on Cloud Governance records.
    assert!(
        recs.iter()
            .all(|r| r.json.get("action").is_some() == (r.product_type == "GovernanceAutomation"))
    );
    // Not sorted.
    assert!(recs.windows(2).any(|w| w[0].time > w[1].time));
}

#[test]
fn late_arrival_is_bounded() {
    let mut s = spec(3, 1000);
    s.max_delay = Duration::hours(2);
    let recs = generate_day(&s, 0);
    assert!(
        recs.iter()
            .all(|r| r.visible_at >= r.time && r.visible_at <= r.time + Duration::hours(2))
    );
    assert!(recs.iter().any(|r| r.visible_at > r.time + Duration::minutes(30)));
    // Twins share the JSON, not the arrival.
    let mut by_json: std::collections::HashMap<String, Vec<DateTime<Utc>>> = Default::default();
    for r in &recs {
        by_json.entry(r.json.to_string()).or_default().push(r.visible_at);
    }
    assert!(by_json.values().any(|v| v.len() > 1 && v.iter().any(|t| *t != v[0])));
}

/// The record as the old generator built it (a `Map` in insertion order) from the same draws.
fn reference(spec: &DataSpec, day: u32, base: u32) -> (DateTime<Utc>, &'static str, Value) {
    let (day_start, key) = day_key(spec, day);
    let rng = &mut RecordRng::new(spec.seed, key, base);
    let h = draw_head(rng, max_delay_ms(spec));
    let (secs, nanos, n) = (h.secs, h.nanos, base);
    let time = day_start + Duration::seconds(i64::from(secs)) + Duration::nanoseconds(i64::from(nanos));
    let action_time = if nanos == 0 {
        time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        format!("{}.{:07}Z", time.format("%Y-%m-%dT%H:%M:%S"), nanos / 100)
    };
    let (ptype, pname) = PRODUCTS[h.product];
    let action = pick(rng, ACTIONS);
    let user = pick(rng, USERS);
    let mut m = Map::new();
    m.insert("actionName".into(), json!(action));
    m.insert("actionUser".into(), json!(user));
    m.insert(
        "actionParameters".into(),
        json!(format!("{{\"id\":{n},\"note\":\"line one\\nline \\\"two\\\"\"}}")),
    );
    m.insert("actionTime".into(), json!(action_time));
    m.insert("controllerName".into(), json!(pick(rng, CONTROLLERS)));
    m.insert("product".into(), json!(pname));
    m.insert("geoLocation".into(), json!(GEOS[h.geo]));
    if rng.random_bool(0.5) {
        m.insert("previousValue".into(), json!(format!("Quota: {} GB", rng.random_range(1..100))));
        m.insert("currentValue".into(), json!(format!("Quota: {} GB", rng.random_range(1..100))));
    } else {
        m.insert("previousValue".into(), Value::Null);
        m.insert("currentValue".into(), Value::Null);
    }
    if rng.random_bool(0.1) {
        m.insert("partnerTenantOwner".into(), json!("partner@msp.example"));
    }
    m.insert("status".into(), json!(if rng.random_bool(0.93) { "Successful" } else { "Failed" }));
    if rng.random_bool(0.3) {
        m.insert("comment".into(), json!("Approved by \"Müller\", ticket #42\nsecond line — ✓ 完了"));
    }
    m.insert("objectType".into(), json!(pick(rng, OBJECT_TYPES)));
    m.insert("operationType".into(), json!(action));
    m.insert("module".into(), json!(pick(rng, MODULES)));
    m.insert(
        "functionality".into(),
        json!(format!("{} {}", pick(rng, MODULES), pick(rng, ACTIONS))),
    );
    m.insert(
        "objectName".into(),
        json!(format!("https://contoso.sharepoint.com/sites/site-{}", rng.random_range(0..500))),
    );
    if ptype == "GovernanceAutomation" {
        m.insert("action".into(), json!(format!("{action} request")));
    }
    m.insert(
        "clientIP".into(),
        json!(format!(
            "{}.{}.{}.{}",
            rng.random_range(1..255),
            rng.random_range(0..255),
            rng.random_range(0..255),
            rng.random_range(1..255)
        )),
    );
    if ptype == "CPManagement" || rng.random_bool(0.05) {
        m.insert(
            "additionalDetails".into(),
            json!({"workspaceId": format!("ws-{}", rng.random_range(0..1000)), "labels": ["Confidential", "Ünïcode"], "count": rng.random_range(0..10)}),
        );
    }
    if rng.random_bool(0.003) {
        m.insert("riskScore".into(), json!(rng.random_range(0..100)));
        m.insert("tenantRegion".into(), json!("EU-West \"β\""));
    }
    (time, ptype, Value::Object(m))
}

#[test]
fn bytes_are_what_serde_json_writes_for_the_old_record() {
    let mut s = spec(11, 20_000);
    s.max_delay = Duration::minutes(10);
    let mut buf = Vec::new();
    let mut unknown = 0;
    for day in [0, 2] {
        for m in day_meta(&s, day) {
            buf.clear();
            write_base_record(&s, day, m.base(), &mut buf);
            let (time, ptype, want) = reference(&s, day, m.base());
            // Byte for byte what serializing the old `Value` gives (same keys, same order, same escapes).
            assert_eq!(std::str::from_utf8(&buf).unwrap(), serde_json::to_string(&want).unwrap());
            assert_eq!(day_start(&s, day) + Duration::nanoseconds(m.time_ns()), time);
            assert_eq!(PRODUCTS[m.product()].0, ptype);
            assert_eq!(want["geoLocation"], GEOS[m.geo()]);
            unknown += usize::from(want.get("riskScore").is_some());
        }
    }
    assert!(unknown > 50, "~0.3% unknown fields, got {unknown}");
}

#[test]
fn twins_follow_the_chain_and_meta_is_a_permutation() {
    let s = spec(5, 3000);
    let (_, key) = day_key(&s, 1);
    let twins: Vec<u32> = (1..3000).filter(|&i| is_twin(s.seed, key, i)).collect();
    assert!((30..=90).contains(&twins.len()), "{}", twins.len());
    let rec = |i| {
        let mut b = Vec::new();
        write_record(&s, 1, i, &mut b);
        b
    };
    for &i in &twins {
        assert_eq!(rec(i), rec(i - 1));
        if !is_twin(s.seed, key, i + 1) {
            assert_ne!(rec(i), rec(i + 1));
        }
    }
    // The served metadata names every non-twin once, plus once more per twin.
    let meta = day_meta(&s, 1);
    assert_eq!(meta.len(), 3000);
    let mut bases: Vec<u32> = meta.iter().map(Meta::base).collect();
    bases.sort_unstable();
    let mut want: Vec<u32> = (0..3000u32)
        .map(|mut i| {
            while is_twin(s.seed, key, i) {
                i -= 1;
            }
            i
        })
        .collect();
    want.sort_unstable();
    assert_eq!(bases, want);
    assert!(meta.windows(2).any(|w| w[0].time_ns() > w[1].time_ns()), "not in time order");
    assert_eq!(std::mem::size_of::<Meta>(), 16);
}

#[test]
fn constant_strings_are_json() {
    for s in ACTIONS
        .iter()
        .chain(USERS)
        .chain(CONTROLLERS)
        .chain(OBJECT_TYPES)
        .chain(MODULES)
        .chain(GEOS)
    {
        assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{s}\""), "{s} needs no escaping");
    }
    for (t, name) in PRODUCTS {
        assert_eq!(serde_json::to_string(name).unwrap(), format!("\"{name}\""));
        assert!(serde_json::to_string(t).unwrap() == format!("\"{t}\""));
    }
    let comment = "Approved by \"Müller\", ticket #42\nsecond line — ✓ 完了";
    assert_eq!(serde_json::to_string(comment).unwrap(), COMMENT_JSON);
    assert_eq!(serde_json::to_string("EU-West \"β\"").unwrap(), TENANT_REGION_JSON);
    // Years the fast path does not write.
    let mut s = spec(1, 50);
    s.start = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
    for r in generate_day(&s, 0) {
        let t = r.json["actionTime"].as_str().unwrap().to_string();
        assert!(t.starts_with("+10000-01-01T"), "{t}");
    }
}

#[test]
fn action_parameters_pieces() {
    let raw = format!("{{\"id\":{},\"note\":\"line one\\nline \\\"two\\\"\"}}", 123);
    assert_eq!(serde_json::to_string(&raw).unwrap(), format!("{PARAMS_PREFIX}123{PARAMS_SUFFIX}"));
}

/// `cargo test -p aos-emulator --release -- --ignored --nocapture generation_figures`
#[test]
#[ignore]
fn generation_figures() {
    let spec = DataSpec {
        seed: 42,
        start: Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap(),
        days: 600,
        records_per_day: 85_000,
        max_delay: Duration::hours(2),
    };
    let best = |f: &mut dyn FnMut()| {
        (0..std::env::var("FIG_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::MAX, f64::min)
    };
    let mut meta = Vec::new();
    let s = best(&mut || meta = day_meta(&spec, 7));
    println!("day_meta: {:.2} ms/day, {:.0} ns/record", s * 1e3, s * 1e9 / 85_000.0);
    let mut buf = Vec::with_capacity(1 << 20);
    let s = best(&mut || {
        buf.clear();
        let w = DayWriter::new(&spec, 7);
        for m in &meta[..1000] {
            w.write_base(m.base(), &mut buf);
        }
    });
    println!("write 1000 records: {:.0} µs, {} bytes", s * 1e6, buf.len());
    let s = best(&mut || {
        let mut x = 0u64;
        for i in 0..1000u32 {
            let mut r = RecordRng::new(1, 2, i);
            for _ in 0..30 {
                x = x.wrapping_add(r.random_range(0..100u32) as u64);
            }
        }
        std::hint::black_box(x);
    });
    println!("30 range draws × 1000: {:.0} µs", s * 1e6);
}
