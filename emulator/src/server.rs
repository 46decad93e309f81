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
use crate::page::{Query, find_page, mask, page_body};

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
