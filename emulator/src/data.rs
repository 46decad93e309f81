//! Deterministic audit-record generator.
//!
//! Given a seed, every day's records depend only on `(seed, day)`, so the ground truth of any
//! sub-range is the same whatever range was generated. Records look like the real API's: all 20
//! documented fields (some absent), `additionalDetails` objects, non-ASCII text, embedded quotes
//! and newlines, ~2% identical twins, a few unknown fields, and 7-digit fractional seconds.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::{Map, Value, json};

/// Product types as the API's `productTypes` filter names them, with the display name records carry.
pub const PRODUCTS: &[(&str, &str)] = &[
    ("Office365Management", "Cloud Management"),
    ("Office365Backup", "Cloud Backup for Microsoft 365"),
    ("GovernanceAutomation", "Cloud Governance"),
    ("Portal", "AvePoint Online Services"),
    ("PolicyEnforcer", "Policies and Insights"),
    ("CPManagement", "Confide"),
    ("SMP", "Cloud Management SMP"),
    ("VDR", "Confide VDR"),
    ("AvePointRecords", "AvePoint Cloud Records"),
    ("GsuiteBackup", "Cloud Backup for Google Workspace"),
    ("CRMBackup", "Cloud Backup for Dynamics 365"),
];

/// Geo locations as the API's `geoLocations` filter names them.
pub const GEOS: &[&str] = &["NAM", "EUR", "GBR", "JPN", "APC", "AUS", "CAN", "IND", "FRA", "CHE", "KOR", "DEU"];

const ACTIONS: &[&str] = &[
    "Login", "Logout", "Create", "Update", "Delete", "Export", "Restore", "Approve", "Assign", "Download",
];
const USERS: &[&str] = &[
    "alice@contoso.com",
    "bob@contoso.com",
    "józef.müller@contoso.com",
    "田中太郎@contoso.co.jp",
    "zoë.o'neil@fabrikam.com",
    "svc-backup@contoso.onmicrosoft.com",
    "Ærøskøbing-admin@contoso.dk",
];
const CONTROLLERS: &[&str] = &["Tenant", "User", "Job", "Policy", "Workspace", "Report"];
const OBJECT_TYPES: &[&str] = &["Site", "Team", "Group", "Mailbox", "OneDrive", "Plan"];
const MODULES: &[&str] = &["Administration", "Backup", "Restore", "Governance", "Insights"];

/// One generated record plus what the emulator needs to serve it.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// Parsed `actionTime` (what the query filters on).
    pub time: DateTime<Utc>,
    /// When the record becomes visible to the API (late arrival); equals `time` without delay.
    pub visible_at: DateTime<Utc>,
    /// The `productTypes` name of the record's product.
    pub product_type: &'static str,
    /// The record exactly as the API returns it.
    pub json: Value,
}

/// Parameters of a generated data set.
#[derive(Clone, Debug)]
pub struct DataSpec {
    pub seed: u64,
    /// First day (truncated to UTC midnight).
    pub start: DateTime<Utc>,
    pub days: u32,
    pub records_per_day: u32,
    /// Records become visible up to this long after their `actionTime` (0 = at once).
    pub max_delay: Duration,
}

/// Generates one day's records in a shuffled (non-sorted) order.
pub fn generate_day(spec: &DataSpec, day: u32) -> Vec<StoredRecord> {
    let day_start = midnight(spec.start) + Duration::days(day as i64);
    let day_key = day_start.timestamp() as u64;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ day_key.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut out: Vec<StoredRecord> = Vec::with_capacity(spec.records_per_day as usize);
    while out.len() < spec.records_per_day as usize {
        // ~2% legitimate identical twins: the same action twice in the same instant.
        if !out.is_empty() && rng.random_bool(0.02) {
            let mut twin = out[out.len() - 1].clone();
            twin.visible_at = delay(&mut rng, twin.time, spec.max_delay);
            out.push(twin);
            continue;
        }
        let rec = random_record(&mut rng, day_start, out.len());
        let visible_at = delay(&mut rng, rec.0, spec.max_delay);
        out.push(StoredRecord {
            time: rec.0,
            visible_at,
            product_type: rec.1,
            json: rec.2,
        });
    }
    out.shuffle(&mut rng);
    out
}

fn delay(rng: &mut ChaCha8Rng, t: DateTime<Utc>, max: Duration) -> DateTime<Utc> {
    let max_ms = max.num_milliseconds();
    if max_ms <= 0 {
        t
    } else {
        t + Duration::milliseconds(rng.random_range(0..=max_ms))
    }
}

/// UTC midnight of the day containing `t`.
pub fn midnight(t: DateTime<Utc>) -> DateTime<Utc> {
    let d = t.date_naive();
    Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"))
}

fn pick<'a>(rng: &mut ChaCha8Rng, xs: &'a [&'a str]) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

fn random_record(rng: &mut ChaCha8Rng, day_start: DateTime<Utc>, n: usize) -> (DateTime<Utc>, &'static str, Value) {
    // A few records sit exactly on midnight, where inclusive window bounds meet.
    let (secs, nanos) = if rng.random_bool(0.005) {
        (0, 0)
    } else if rng.random_bool(0.3) {
        (rng.random_range(0..86_400), rng.random_range(0..10_000_000u32) * 100)
    } else {
        (rng.random_range(0..86_400), 0)
    };
    let time = day_start + Duration::seconds(secs) + Duration::nanoseconds(nanos as i64);
    let action_time = if nanos == 0 {
        time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        // The service sends .NET's 7-digit fractions.
        format!("{}.{:07}Z", time.format("%Y-%m-%dT%H:%M:%S"), nanos / 100)
    };
    let (ptype, pname) = PRODUCTS[rng.random_range(0..PRODUCTS.len())];
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
    m.insert("geoLocation".into(), json!(pick(rng, GEOS)));
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
    // AvePoint may add fields at any time; a few records carry one the schema does not know.
    if rng.random_bool(0.003) {
        m.insert("riskScore".into(), json!(rng.random_range(0..100)));
        m.insert("tenantRegion".into(), json!("EU-West \"β\""));
    }
    (time, ptype, Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(has(&|v| v.get("riskScore").is_some()), "unknown fields");
        assert!(has(&|v| v["additionalDetails"].is_object()), "additionalDetails objects");
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
    }
}
