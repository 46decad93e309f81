//! HTTP routes of the emulator: `/connect/token` and `/aos/audit`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use rand::Rng;
use serde_json::json;

use crate::State;
use crate::data::{GEOS, PRODUCTS};

pub(crate) struct IssuedToken {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/connect/token", post(token))
        .route("/aos/audit", get(audit))
        .with_state(state)
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, axum::Json(json!({"error": error, "error_description": description}))).into_response()
}

async fn token(AxState(st): AxState<Arc<State>>, Form(form): Form<HashMap<String, String>>) -> Response {
    st.counters.token_requests.fetch_add(1, Ordering::Relaxed);
    let down = *st.token_outage.lock().expect("outage lock");
    if down.is_some_and(|until| std::time::Instant::now() < until) {
        st.counters.token_unavailable.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::SERVICE_UNAVAILABLE, "identity service unavailable").into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only client_credentials is supported",
        );
    }
    let Some(client_id) = form.get("client_id") else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "client_id is required");
    };
    let Some(client) = st.cfg.clients.iter().find(|c| &c.client_id == client_id) else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client");
    };
    let now = st.now();
    if let Some(secret) = form.get("client_secret") {
        if client.secret.as_deref() != Some(secret.as_str()) {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "invalid client secret");
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_client", "unsupported client_assertion_type");
        }
        let Some(cert) = &client.certificate_der else {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "no certificate registered for the client",
            );
        };
        let audience = format!("{}/connect/token", st.base_url);
        match crate::assertion::validate(assertion, client_id, cert, &audience, now.timestamp()) {
            Ok(valid) => {
                // IdentityServer keeps seen jti values until the assertion expires and rejects replays.
                if !st.seen_jti.lock().expect("jti lock").insert(valid.jti) {
                    return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client assertion jti was already used");
                }
                let _ = valid.exp;
            }
            Err(e) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", &e),
        }
    } else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "no client credentials");
    }
    let requested: Vec<String> = form
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if requested.is_empty() || requested.iter().any(|s| !client.scopes.contains(s)) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "scope not granted to the client");
    }
    let token = format!("emu.{}", uuid::Uuid::new_v4().simple());
    let ttl = st.cfg.token_ttl;
    st.tokens.lock().expect("tokens lock").insert(
        token.clone(),
        IssuedToken {
            client_id: client_id.clone(),
            scopes: requested.clone(),
            expires_at: now + ttl,
        },
    );
    st.counters.tokens_issued.fetch_add(1, Ordering::Relaxed);
    axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl.num_seconds(),
        "scope": requested.join(" "),
    }))
    .into_response()
}

fn api_error(status: StatusCode, msg: &str) -> Response {
    let body = json!({"traceId": format!("00-{}-01", uuid::Uuid::new_v4().simple()), "error": msg, "statusCode": status.as_u16()});
    (status, axum::Json(body)).into_response()
}

enum Fault {
    TooMany,
    Server(StatusCode),
    Slow,
    Reset,
    Truncated,
    Malformed,
}

fn draw_fault(st: &State) -> Option<Fault> {
    let f = &st.cfg.faults;
    let mut rng = st.rng.lock().expect("rng lock");
    let x: f64 = rng.random();
    let mut acc = f.rate_429;
    if x < acc {
        return Some(Fault::TooMany);
    }
    acc += f.rate_5xx;
    if x < acc {
        let codes = [500, 502, 503, 504];
        return Some(Fault::Server(StatusCode::from_u16(codes[rng.random_range(0..4)]).expect("code")));
    }
    acc += f.rate_slow;
    if x < acc {
        return Some(Fault::Slow);
    }
    acc += f.rate_reset;
    if x < acc {
        return Some(Fault::Reset);
    }
    acc += f.rate_truncated;
    if x < acc {
        return Some(Fault::Truncated);
    }
    acc += f.rate_malformed;
    if x < acc {
        return Some(Fault::Malformed);
    }
    None
}

fn parse_list(values: &[String], allowed: &[&str], name: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for v in values {
        for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match allowed.iter().find(|a| a.eq_ignore_ascii_case(item)) {
                Some(a) => out.push(a.to_string()),
                None if name == "geoLocations" && item.eq_ignore_ascii_case("PrimaryGeoLocation") => out.push(GEOS[0].to_string()),
                None => return Err(format!("The value '{item}' is not valid for {name}.")),
            }
        }
    }
    Ok(out)
}

async fn audit(AxState(st): AxState<Arc<State>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    st.counters.audit_requests.fetch_add(1, Ordering::Relaxed);
    let now = st.now();
    // Authentication first, as the real gateway does.
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let Some(bearer) = bearer else {
        st.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let scopes = {
        let tokens = st.tokens.lock().expect("tokens lock");
        match tokens.get(&bearer) {
            Some(t) if t.expires_at > now && !st.revoked.lock().expect("revoked").contains(&bearer) => {
                let _ = &t.client_id;
                t.scopes.clone()
            }
            _ => {
                st.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                return StatusCode::UNAUTHORIZED.into_response();
            }
        }
    };
    if !scopes.iter().any(|s| s == "audit.read.all") {
        return StatusCode::FORBIDDEN.into_response();
    }
    // Capacity model: wait for a serving slot, or be turned away when the queue is full.
    struct Outstanding<'a>(&'a std::sync::atomic::AtomicUsize);
    impl Drop for Outstanding<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let in_server = st.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
    let _outstanding = Outstanding(&st.outstanding);
    st.counters.max_outstanding.fetch_max(in_server as u64, Ordering::Relaxed);
    if let Some(c) = &st.cfg.capacity
        && in_server > c.concurrent + c.max_queued
    {
        st.counters.over_capacity.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, c.retry_after_secs.to_string())],
            "Too Many Requests",
        )
            .into_response();
    }
    let Ok(_slot) = st.serving.acquire().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    if st.audit_outage.load(Ordering::Relaxed) {
        st.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
        return api_error(StatusCode::SERVICE_UNAVAILABLE, "injected outage");
    }
    let fault = draw_fault(&st);
    let latency = std::time::Duration::from_micros(st.latency_us.load(Ordering::Relaxed));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        Some(Fault::TooMany) => {
            st.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, st.cfg.faults.retry_after_secs.to_string())],
                "Too Many Requests",
            )
                .into_response();
        }
        Some(Fault::Server(code)) => {
            st.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
            return api_error(code, "injected server fault");
        }
        Some(Fault::Slow) => tokio::time::sleep(st.cfg.faults.slow).await,
        _ => {}
    }

    let mut params: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        params.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    let one = |k: &str| params.get(k).and_then(|v| v.first()).cloned();
    let parse_time = |k: &str| -> Result<DateTime<Utc>, String> {
        let v = one(k).ok_or_else(|| format!("The {k} field is required."))?;
        DateTime::parse_from_rfc3339(&v)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("The value '{v}' is not valid for {k}."))
    };
    let (start, end) = match (parse_time("startTime"), parse_time("endTime")) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    if end < start {
        return api_error(StatusCode::BAD_REQUEST, "endTime must be later than startTime.");
    }
    if end - start > Duration::days(7) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "The time range between startTime and endTime cannot exceed 7 days.",
        );
    }
    let product_names: Vec<&str> = PRODUCTS.iter().map(|p| p.0).collect();
    let products = match parse_list(
        params.get("productTypes").map(Vec::as_slice).unwrap_or(&[]),
        &product_names,
        "productTypes",
    ) {
        Ok(p) => p,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    let geos = match parse_list(params.get("geoLocations").map(Vec::as_slice).unwrap_or(&[]), GEOS, "geoLocations") {
        Ok(g) => g,
        Err(e) => return api_error(StatusCode::BAD_REQUEST, &e),
    };
    // The skip token pins the offset and the visibility snapshot (whole milliseconds) of the
    // first page, so late records do not shift offsets while a client pages through one query.
    // It also carries where the next page's first match is, so a page costs the same deep in a
    // query as at its start; a token without one (or with one outside the query) is served by
    // skipping `offset` matches from the start.
    let (offset, snapshot, resume) = match one("skipToken") {
        None => (0usize, DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now), None),
        Some(tok) => match decode_skip(&tok) {
            Some(x) => x,
            None => return api_error(StatusCode::BAD_REQUEST, "The skipToken is invalid."),
        },
    };
    let query = Query {
        start,
        end,
        snapshot,
        products: mask(&products, PRODUCTS.iter().map(|p| p.0)),
        geos: mask(&geos, GEOS.iter().copied()),
    };
    let (items, next_at) = find_page(&st, &query, resume, offset, st.cfg.page_size);
    let next_link = next_at.map(|at| {
        let base = st.cfg.next_link_base.clone().unwrap_or_else(|| st.base_url.clone());
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, vs) in &params {
            if k != "skipToken" {
                for v in vs {
                    ser.append_pair(k, v);
                }
            }
        }
        ser.append_pair("skipToken", &encode_skip(offset + items.len(), snapshot, at));
        format!("{base}/aos/audit?{}", ser.finish())
    });
    let body = page_body(&st, next_link.as_deref(), &items);
    match fault {
        Some(Fault::Malformed) => {
            st.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
            (
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"error":"upstream request timeout"}"#,
            )
                .into_response()
        }
        Some(Fault::Truncated) => {
            st.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
            let cut = body.len() / 2;
            ([(header::CONTENT_TYPE, "application/json")], body[..cut].to_vec()).into_response()
        }
        Some(Fault::Reset) => {
            st.counters.faults_injected.fetch_add(1, Ordering::Relaxed);
            let cut = body.len() / 2;
            let first = bytes::Bytes::copy_from_slice(&body[..cut]);
            let stream = futures::stream::iter(vec![
                Ok::<_, std::io::Error>(first),
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset")),
            ]);
            Response::builder()
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, body.len())
                .body(Body::from_stream(stream))
                .expect("response")
        }
        _ => {
            st.counters.audit_ok.fetch_add(1, Ordering::Relaxed);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}

/// What a query asks for. Masks have bit `i` set for `PRODUCTS[i]` / `GEOS[i]`; 0 = no filter.
pub(crate) struct Query {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub snapshot: DateTime<Utc>,
    pub products: u32,
    pub geos: u32,
}

fn mask<'a>(names: &[String], all: impl Iterator<Item = &'a str>) -> u32 {
    all.enumerate()
        .filter(|(_, n)| names.iter().any(|x| x == n))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// A record of a page: a generated one (day, [`crate::data::Meta::base`]) or `extra_records[i]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    Generated { day: u32, base: u32 },
    Extra(usize),
}

/// `t - day_start` in nanoseconds, saturated.
fn rel_ns(t: DateTime<Utc>, day_start: DateTime<Utc>) -> i64 {
    (t - day_start)
        .num_nanoseconds()
        .unwrap_or(if t < day_start { i64::MIN } else { i64::MAX })
}

/// The page of a query: its matches are the generated records of the days it touches, day by day
/// in serving order, then the matching `extra_records`. Each has a position `at`: record `p` of
/// day `d` is at `d × records_per_day + p`, `extra_records[k]` at `days × records_per_day + k`.
/// The page is the first `page_size` matches from position `resume` (a match), or if `resume` is
/// none or outside the query, after skipping `offset` matches. Returns the page and the position
/// of the next match, if any. Only metadata is read: no JSON is built.
pub(crate) fn find_page(st: &State, q: &Query, resume: Option<u64>, offset: usize, page_size: usize) -> (Vec<Item>, Option<u64>) {
    let spec = &st.cfg.data;
    let per_day = u64::from(spec.records_per_day);
    let generated = spec.record_count();
    let extras = &st.cfg.extra_records;
    let day0 = crate::data::midnight(spec.start);
    let day_of = |t: DateTime<Utc>| (t - day0).num_seconds().div_euclid(86_400);
    let first_day = day_of(q.start).clamp(0, i64::from(spec.days)) as u64;
    let end_day = (day_of(q.end) + 1).clamp(0, i64::from(spec.days)) as u64;
    let (query_start, query_end) = (first_day * per_day, generated + extras.len() as u64);
    let (mut at, mut skip) = match resume {
        Some(at) if (query_start..=query_end).contains(&at) => (at, 0),
        _ => (query_start, offset),
    };
    let mut items = Vec::with_capacity(page_size.min(16_384));
    while per_day > 0 && at < end_day * per_day {
        let day = (at / per_day) as u32;
        let from = (at % per_day) as usize;
        let meta = st.day_meta(day);
        let day_start = crate::data::day_start(spec, day);
        let (lo, hi, snap) = (rel_ns(q.start, day_start), rel_ns(q.end, day_start), rel_ns(q.snapshot, day_start));
        let inclusive = st.cfg.inclusive_end;
        for (p, m) in meta.iter().enumerate().skip(from) {
            let t = m.time_ns();
            if t < lo || t > hi || (t == hi && !inclusive) || m.visible_ns() > snap {
                continue;
            }
            if (q.products != 0 && q.products & 1 << m.product() == 0) || (q.geos != 0 && q.geos & 1 << m.geo() == 0) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
            } else if items.len() == page_size {
                return (items, Some(u64::from(day) * per_day + p as u64));
            } else {
                items.push(Item::Generated { day, base: m.base() });
            }
        }
        at = (u64::from(day) + 1) * per_day;
    }
    for (k, (served_at, _)) in extras.iter().enumerate().skip(at.saturating_sub(generated) as usize) {
        if *served_at < q.start || *served_at >= q.end {
            continue;
        }
        if skip > 0 {
            skip -= 1;
        } else if items.len() == page_size {
            return (items, Some(generated + k as u64));
        } else {
            items.push(Item::Extra(k));
        }
    }
    (items, None)
}

/// `{"nextLink":…,"data":[…]}`, written straight to bytes (what `serde_json` writes for the value).
pub(crate) fn page_body(st: &State, next_link: Option<&str>, items: &[Item]) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + items.len() * 1024);
    body.extend_from_slice(b"{\"nextLink\":");
    match next_link {
        Some(link) => serde_json::to_writer(&mut body, link).expect("writing to a Vec does not fail"),
        None => body.extend_from_slice(b"null"),
    }
    body.extend_from_slice(b",\"data\":[");
    let mut writer: Option<(u32, crate::data::DayWriter)> = None;
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        match *item {
            Item::Generated { day, base } => {
                let w = match &writer {
                    Some((d, w)) if *d == day => w,
                    _ => &writer.insert((day, crate::data::DayWriter::new(&st.cfg.data, day))).1,
                };
                w.write_base(base, &mut body);
            }
            Item::Extra(k) => serde_json::to_writer(&mut body, &st.cfg.extra_records[k].1).expect("writing to a Vec does not fail"),
        }
    }
    body.extend_from_slice(b"]}");
    body
}

fn encode_skip(offset: usize, snapshot: DateTime<Utc>, at: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{offset}:{}:{at}", snapshot.timestamp_millis()))
}

/// `offset:snapshot_ms[:position]`.
fn decode_skip(tok: &str) -> Option<(usize, DateTime<Utc>, Option<u64>)> {
    let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(tok).ok()?).ok()?;
    let mut parts = raw.split(':');
    let offset = parts.next()?.parse().ok()?;
    let snapshot = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
    let at = match parts.next() {
        Some(a) => Some(a.parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((offset, snapshot, at))
}
