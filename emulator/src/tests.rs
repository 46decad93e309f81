//! Serving from lazily generated data: pages equal the ground truth, huge tenants start at once.

use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::data::{self, PRODUCTS};
use crate::{DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, EmulatorConfig, EmulatorHandle};

/// A minimal HTTP/1.1 client (one request per connection): status and body.
async fn http(emu: &EmulatorHandle, request: String) -> (u16, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("header end");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    assert!(!head.to_ascii_lowercase().contains("transfer-encoding: chunked"));
    let status = head[9..12].parse().unwrap();
    (status, raw[split + 4..].to_vec())
}

async fn token(emu: &EmulatorHandle) -> String {
    let form = format!("grant_type=client_credentials&client_id={DEMO_CLIENT_ID}&client_secret={DEMO_CLIENT_SECRET}&scope=audit.read.all");
    let (status, body) = http(
        emu,
        format!(
            "POST /connect/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

/// GET of a path and query (`/aos/audit?…`): status and parsed body.
async fn get(emu: &EmulatorHandle, bearer: &str, path: &str) -> (u16, Value) {
    let (status, body) = http(
        emu,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn query(from: DateTime<Utc>, to: DateTime<Utc>, filters: &str) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("startTime", &from.to_rfc3339())
        .append_pair("endTime", &to.to_rfc3339());
    format!("/aos/audit?{}{filters}", q.finish())
}

/// Every record of a query, page by page; also the number of pages.
async fn all_pages(emu: &EmulatorHandle, bearer: &str, first: &str) -> (Vec<Value>, usize) {
    let (mut out, mut pages, mut path) = (Vec::new(), 0, first.to_string());
    loop {
        let (status, page) = get(emu, bearer, &path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["nextLink"].as_str() {
            Some(next) => path = next.strip_prefix(&emu.base_url()).unwrap().to_string(),
            None => return (out, pages),
        }
    }
}

fn day0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap()
}

fn product_type(v: &Value) -> &'static str {
    PRODUCTS.iter().find(|p| p.1 == v["product"]).unwrap().0
}

#[tokio::test]
async fn pages_are_the_ground_truth_with_filters_inclusive_end_late_records_and_extras() {
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = day0();
    cfg.data.days = 3;
    cfg.data.records_per_day = 6000;
    cfg.data.max_delay = Duration::hours(3);
    cfg.page_size = 97;
    cfg.bounds = crate::Bounds::default();
    let extra = |i: i64| (day0() + Duration::hours(30 + i), json!({"odd": i, "note": "no \"actionTime\""}));
    cfg.extra_records = vec![extra(0), extra(1), extra(100)];
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Pinned so some of day 1's records are not visible yet.
    let now = day0() + Duration::hours(36);
    emu.set_now(Some(now));
    let bearer = token(&emu).await;
    let one_ns = Duration::nanoseconds(1);

    // The whole data set, unfiltered: all visible records in serving order, then the extras in range.
    let (from, to) = (day0() - Duration::hours(2), day0() + Duration::days(3));
    let (got, pages) = all_pages(&emu, &bearer, &query(from, to, "")).await;
    let mut want = emu.visible_truth(from, to + one_ns, now);
    assert!(want.len() < 18_000 && want.len() > 8000, "{}", want.len());
    want.extend([extra(0).1, extra(1).1]);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "pages differ from the ground truth");
    assert_eq!(pages, want.len().div_ceil(97));

    // Filters, and an inclusive end exactly at midnight (where records sit).
    let (from, to) = (day0() + Duration::hours(7), day0() + Duration::days(1));
    let filters = "&productTypes=Office365Backup,cpmanagement&geoLocations=EUR&geoLocations=PrimaryGeoLocation,jpn";
    let (got, _) = all_pages(&emu, &bearer, &query(from, to, filters)).await;
    let want: Vec<Value> = emu
        .visible_truth(from, to + one_ns, now)
        .into_iter()
        .filter(|v| ["Office365Backup", "CPManagement"].contains(&product_type(v)))
        .filter(|v| ["EUR", "NAM", "JPN"].contains(&v["geoLocation"].as_str().unwrap()))
        .collect();
    assert!(want.len() > 97, "several pages: {}", want.len());
    assert!(got == want, "filtered pages differ from the ground truth");
    let at_end = to.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (all, _) = all_pages(&emu, &bearer, &query(from, to, "")).await;
    assert!(
        all.iter().any(|v| v["actionTime"] == at_end.as_str()),
        "a record at the inclusive end"
    );
    assert!(!emu.ground_truth(from, to).iter().any(|v| v["actionTime"] == at_end.as_str()));

    // A skip token without a position (or a position outside the query) skips `offset` matches.
    let (_, first) = get(&emu, &bearer, &query(from, to, "")).await;
    let next = first["nextLink"].as_str().unwrap();
    let (_, second) = get(&emu, &bearer, next.strip_prefix(&emu.base_url()).unwrap()).await;
    use base64::Engine;
    for legacy in [
        format!("97:{}", now.timestamp_millis()),
        format!("97:{}:999999999999", now.timestamp_millis()),
    ] {
        let tok = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(legacy);
        let (status, page) = get(&emu, &bearer, &format!("{}&skipToken={tok}", query(from, to, ""))).await;
        assert_eq!(status, 200);
        assert!(page["data"] == second["data"]);
        let tok = |p: &Value| p["nextLink"].as_str().unwrap().split("skipToken=").nth(1).unwrap().to_string();
        assert_eq!(tok(&page), tok(&second));
    }
    let (status, _) = get(&emu, &bearer, &format!("{}&skipToken=bm9wZQ", query(from, to, ""))).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn pages_are_what_serde_json_writes() {
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = day0();
    cfg.data.days = 1;
    cfg.data.records_per_day = 500;
    cfg.page_size = 200;
    cfg.extra_records = vec![(day0() + Duration::hours(1), json!({"b": "ü\n\"", "a": [1, null]}))];
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let bearer = token(&emu).await;
    let mut path = query(day0(), day0() + Duration::days(1), "");
    loop {
        let (status, raw) = http(
            &emu,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(serde_json::to_vec(&v).unwrap(), raw, "compact, keys in order, serde's escapes");
        match v["nextLink"].as_str() {
            Some(n) => path = n.strip_prefix(&emu.base_url()).unwrap().to_string(),
            None => break,
        }
    }
}

/// 51 M records (600 days × 85,000): the old eager generator needed tens of GB and minutes to
/// start. Starts at once, serves a late day's pages from that day's metadata only.
#[tokio::test]
async fn a_fifty_million_record_tenant_starts_at_once_and_serves_a_late_day() {
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = day0();
    cfg.data.days = 600;
    cfg.data.records_per_day = 85_000;
    cfg.page_size = 1000;
    let spec = cfg.data.clone();
    let started = Instant::now();
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(emu.record_count(), 51_000_000);
    assert_eq!(emu.cached_days(), 0);
    emu.set_now(Some(day0() + Duration::days(700)));
    let bearer = token(&emu).await;
    let day = day0() + Duration::days(598);
    let (from, to) = (day + Duration::hours(6), day + Duration::hours(7));
    let (status, first) = get(&emu, &bearer, &query(from, to, "")).await;
    assert_eq!(status, 200);
    let next = first["nextLink"]
        .as_str()
        .unwrap()
        .strip_prefix(&emu.base_url())
        .unwrap()
        .to_string();
    let (_, second) = get(&emu, &bearer, &next).await;
    // Only day 598's metadata was built.
    assert_eq!(emu.counters().meta_days_built.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(emu.cached_days(), 1);

    // The same day as day 0 of a one-day data set with the same seed.
    let mut one = spec.clone();
    one.start = day;
    one.days = 1;
    let in_window = |m: &&data::Meta| (6 * 3600 * 1_000_000_000..7 * 3600 * 1_000_000_000).contains(&m.time_ns());
    let want: Vec<Value> = data::day_meta(&one, 0)
        .iter()
        .filter(in_window)
        .map(|m| data::stored_record(&one, 0, m).json)
        .collect();
    assert!(want.len() > 2000, "{}", want.len());
    assert!(first["data"].as_array().unwrap()[..] == want[..1000]);
    assert!(second["data"].as_array().unwrap()[..] == want[1000..2000]);
    for v in &want {
        let t = DateTime::parse_from_rfc3339(v["actionTime"].as_str().unwrap()).unwrap();
        assert!(t >= from && t < to);
    }
}

#[tokio::test]
async fn the_metadata_cache_is_bounded() {
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = day0();
    cfg.data.days = 30;
    cfg.data.records_per_day = 200;
    cfg.page_size = 1000;
    cfg.meta_cache_days = 4;
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let bearer = token(&emu).await;
    let built = || emu.counters().meta_days_built.load(std::sync::atomic::Ordering::Relaxed);
    for week in 0..4 {
        let from = day0() + Duration::days(7 * week);
        let (got, _) = all_pages(&emu, &bearer, &query(from, from + Duration::days(7), "")).await;
        assert_eq!(
            got,
            emu.visible_truth(from, from + Duration::days(7) + Duration::nanoseconds(1), Utc::now())
        );
        assert!(emu.cached_days() <= 4);
    }
    assert!(built() > 30, "days rebuilt after eviction: {}", built());
}

/// User + system CPU time of the process (Linux), from /proc/self/stat.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map_or(0.0, |f| f.iter().filter_map(|x| x.parse::<f64>().ok()).sum());
    ticks / 100.0
}

fn vm_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Figures, not a test: `cargo test -p aos-emulator --release -- --ignored --nocapture paging_figures`.
/// Pages through one week of an 85,000/day tenant of 600 days at 1,000 records a page: CPU per
/// page (metadata scan + JSON), then the same over HTTP, and peak RSS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn paging_figures() {
    let rss0 = vm_kib("VmHWM:");
    let mut cfg = EmulatorConfig::default();
    cfg.data.start = day0();
    cfg.data.days = 600;
    cfg.data.records_per_day = 85_000;
    cfg.data.max_delay = Duration::hours(2);
    cfg.page_size = 1000;
    let emu = EmulatorHandle::start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let st = emu.state.clone();
    let (from, to) = (day0() + Duration::days(300), day0() + Duration::days(307));
    let q = crate::page::Query {
        start: from,
        end: to,
        snapshot: day0() + Duration::days(700),
        products: 0,
        geos: 0,
    };

    let t = Instant::now();
    for day in 300..=307 {
        st.day_meta(day);
    }
    let meta_ms = t.elapsed().as_secs_f64() * 1e3 / 8.0;
    let (mut at, mut offset, mut pages, mut records, mut bytes) = (None, 0, 0, 0, 0);
    let (mut find_s, mut body_s) = (0.0, 0.0);
    loop {
        let t = Instant::now();
        let (items, next) = crate::page::find_page(&st, &q, at, offset, 1000);
        find_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let body = crate::page::page_body(&st, Some("http://127.0.0.1:1/aos/audit?skipToken=x"), &items);
        body_s += t.elapsed().as_secs_f64();
        pages += 1;
        records += items.len();
        bytes += body.len();
        offset += items.len();
        match next {
            Some(n) => at = Some(n),
            None => break,
        }
    }
    println!(
        "in process: {records} records, {pages} pages, {:.1} MiB of JSON; per page: find {:.1} µs + JSON {:.0} µs = {:.0} µs; metadata build {meta_ms:.1} ms/day",
        bytes as f64 / 1048576.0,
        find_s * 1e6 / pages as f64,
        body_s * 1e6 / pages as f64,
        (find_s + body_s) * 1e6 / pages as f64
    );

    // The same week over HTTP with a cold cache of another week (includes building metadata).
    emu.set_now(Some(day0() + Duration::days(700)));
    let bearer = token(&emu).await;
    let (from, to) = (day0() + Duration::days(500), day0() + Duration::days(507));
    #[derive(serde::Deserialize)]
    struct Page {
        #[serde(rename = "nextLink")]
        next_link: Option<String>,
        data: Vec<serde::de::IgnoredAny>,
    }
    let t = Instant::now();
    let cpu0 = cpu_secs();
    let (mut path, mut pages, mut records) = (query(from, to, ""), 0, 0);
    loop {
        let (status, body) = http(
            &emu,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(status, 200);
        let page: Page = serde_json::from_slice(&body).unwrap();
        pages += 1;
        records += page.data.len();
        match page.next_link {
            Some(n) => path = n.strip_prefix(&emu.base_url()).unwrap().to_string(),
            None => break,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    println!(
        "over HTTP (cold metadata; client skims each page): {records} records, {pages} pages in {secs:.2} s, {:.0} µs/page wall, {:.0} µs/page CPU (server + client), {:.0} records/s",
        secs * 1e6 / pages as f64,
        cpu * 1e6 / pages as f64,
        records as f64 / secs
    );
    let rss_week = vm_kib("VmHWM:");
    // A full metadata cache: 70 days touched.
    for day in 100..170 {
        st.day_meta(day);
    }
    println!(
        "RSS: {:.0} MiB at start, {:.0} MiB peak after paging two weeks, {:.0} MiB with a full metadata cache ({} days)",
        rss0 as f64 / 1024.0,
        rss_week as f64 / 1024.0,
        vm_kib("VmHWM:") as f64 / 1024.0,
        emu.cached_days()
    );
}
