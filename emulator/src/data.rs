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
