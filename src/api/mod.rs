//! The Graph API client: `GET /aos/audit` pages for one window and stream.
//!
//! Owns retries (exponential backoff with full jitter, `Retry-After` honoured up to a cap),
//! the shared client-side rate limit, the 401 → refresh token → retry-once rule, and the rule
//! that a `nextLink` is followed only on the configured scheme, host and port (the bearer token
//! is never sent anywhere else). Cancellation is checked before each request and during sleeps.
//!
//! The retry loop is written out rather than delegated to a retry crate because its decisions
//! depend on the response (Retry-After, the single token refresh on 401, cancellation) in ways
//! the generic combinators express less clearly than this loop.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::{AuthError, TokenProvider, without_url};
use crate::config::{ApiSettings, StreamSpec};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the API refused the request (HTTP 400): {error} (traceId {trace_id})")]
    BadRequest { error: String, trace_id: String },
    #[error("the token lacks the audit.read.all permission (HTTP 403); grant it to the app registration")]
    Forbidden,
    #[error("the API keeps answering 401 after a token refresh; check the app registration")]
    Unauthorized,
    #[error(
        "refusing nextLink {link}: its scheme, host or port differ from api.base_url {base}; the bearer token is only sent to api.base_url"
    )]
    ForeignNextLink { link: String, base: String },
    #[error("giving up after {attempts} attempts: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("unexpected HTTP {status} from the API: {body}")]
    Unexpected { status: u16, body: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cancelled")]
    Cancelled,
}

/// One page of `/aos/audit`.
#[derive(Debug)]
pub struct Page {
    pub data: Vec<Value>,
    pub next_link: Option<Url>,
}

#[derive(Deserialize)]
struct WirePage {
    #[serde(default, rename = "nextLink")]
    next_link: Option<String>,
    #[serde(default)]
    data: Option<Vec<Value>>,
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, rename = "traceId")]
    trace_id: Option<String>,
}

/// Counters of what the client did (for `status`, metrics and tests).
#[derive(Debug, Default)]
pub struct ApiStats {
    pub requests: std::sync::atomic::AtomicU64,
    pub retries: std::sync::atomic::AtomicU64,
}

pub struct ApiClient {
    http: reqwest::Client,
    settings: ApiSettings,
    tokens: Arc<TokenProvider>,
    limiter: Option<DefaultDirectRateLimiter>,
    pub stats: ApiStats,
}

enum Attempt {
    Done(Page),
    Retry { why: String, after: Option<Duration> },
    Unauthorized,
}

impl ApiClient {
    pub fn new(settings: ApiSettings, http: reqwest::Client, tokens: Arc<TokenProvider>) -> Self {
        let limiter = settings.requests_per_second.map(|rps| {
            let period = Duration::from_secs_f64(1.0 / rps);
            let burst = std::num::NonZeroU32::new((rps.ceil() as u32).max(1)).expect("nonzero");
            RateLimiter::direct(Quota::with_period(period).expect("positive period").allow_burst(burst))
        });
        ApiClient {
            http,
            settings,
            tokens,
            limiter,
            stats: ApiStats::default(),
        }
    }

    /// URL of the first page of `[start, end)` for `stream` (array filters as repeated keys).
    pub fn first_url(&self, stream: &StreamSpec, start: DateTime<Utc>, end: DateTime<Utc>) -> Url {
        let mut url = self.settings.base_url.join("aos/audit").expect("valid base URL");
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("startTime", &start.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            q.append_pair("endTime", &end.to_rfc3339_opts(SecondsFormat::AutoSi, true));
            for p in &stream.product_types {
                q.append_pair("productTypes", p);
            }
            for g in &stream.geo_locations {
                q.append_pair("geoLocations", g);
            }
        }
        url
    }

    /// Checks that `link` may receive our bearer token.
    pub fn check_next_link(&self, link: &str) -> Result<Url, ApiError> {
        let base = &self.settings.base_url;
        let foreign = || ApiError::ForeignNextLink {
            link: link.to_string(),
            base: base.to_string(),
        };
        let url = Url::parse(link).map_err(|_| foreign())?;
        if url.scheme() != base.scheme() || url.host_str() != base.host_str() || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(foreign());
        }
        Ok(url)
    }

    /// Fetches one page, retrying what may succeed on another try.
    pub async fn fetch_page(&self, url: &Url, cancel: &CancellationToken) -> Result<Page, ApiError> {
        let s = &self.settings;
        let mut refreshed = false;
        let mut failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Err(ApiError::Cancelled);
            }
            if let Some(l) = &self.limiter {
                tokio::select! {
                    _ = l.until_ready() => {}
                    _ = cancel.cancelled() => return Err(ApiError::Cancelled),
                }
            }
            let token = self.tokens.token().await?;
            match self.attempt(url, &token).await? {
                Attempt::Done(p) => return Ok(p),
                Attempt::Unauthorized if !refreshed => {
                    // An expired or revoked token: refresh once and try again at once.
                    tracing::info!("API answered 401; refreshing the access token");
                    self.tokens.invalidate(&token).await;
                    refreshed = true;
                }
                Attempt::Unauthorized => return Err(ApiError::Unauthorized),
                Attempt::Retry { why, after } => {
                    failures += 1;
                    if failures > s.max_retries {
                        return Err(ApiError::Exhausted {
                            attempts: failures,
                            last: why,
                        });
                    }
                    self.stats.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let wait = match after {
                        Some(ra) => ra.min(s.retry_after_max),
                        None => {
                            let cap = s
                                .retry_initial_backoff
                                .saturating_mul(1u32 << (failures - 1).min(20))
                                .min(s.retry_max_backoff);
                            Duration::from_secs_f64(rand::rng().random_range(0.0..=cap.as_secs_f64()))
                        }
                    };
                    tracing::warn!(attempt = failures, wait_ms = wait.as_millis() as u64, reason = %why, "retrying API request");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return Err(ApiError::Cancelled),
                    }
                }
            }
        }
    }

    async fn attempt(&self, url: &Url, token: &crate::auth::AccessToken) -> Result<Attempt, ApiError> {
        self.stats.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(url = %url, "GET page");
        let resp = match self.http.get(url.clone()).bearer_auth(token.bearer()).send().await {
            Ok(r) => r,
            Err(e) => {
                return Ok(Attempt::Retry {
                    why: without_url(&e),
                    after: None,
                });
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Ok(Attempt::Retry {
                    why: format!("reading body: {}", without_url(&e)),
                    after: None,
                });
            }
        };
        match status.as_u16() {
            200 => match serde_json::from_slice::<WirePage>(&body) {
                Ok(p) => {
                    let next_link = match p.next_link.filter(|l| !l.is_empty()) {
                        Some(l) => Some(self.check_next_link(&l)?),
                        None => None,
                    };
                    Ok(Attempt::Done(Page {
                        data: p.data.unwrap_or_default(),
                        next_link,
                    }))
                }
                // A truncated or garbled body is a transport fault: ask again.
                Err(e) => Ok(Attempt::Retry {
                    why: format!("invalid JSON body ({} bytes): {e}", body.len()),
                    after: None,
                }),
            },
            401 => Ok(Attempt::Unauthorized),
            403 => Err(ApiError::Forbidden),
            400 => {
                let w: WireError = serde_json::from_slice(&body).unwrap_or_default();
                let error = match w.error {
                    Some(Value::String(s)) => s,
                    Some(v) => v.to_string(),
                    None => String::from_utf8_lossy(&body).chars().take(300).collect(),
                };
                Err(ApiError::BadRequest {
                    error,
                    trace_id: w.trace_id.unwrap_or_else(|| "-".into()),
                })
            }
            408 | 429 | 500 | 502 | 503 | 504 => Ok(Attempt::Retry {
                why: format!("HTTP {status}"),
                after: retry_after,
            }),
            other => Err(ApiError::Unexpected {
                status: other,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            }),
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let t = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let future = (Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&future).unwrap();
        assert!(d > Duration::from_secs(25) && d <= Duration::from_secs(30), "{d:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
