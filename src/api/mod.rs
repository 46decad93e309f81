//! The Graph API client: `GET /aos/audit` pages for one window and stream.
//!
//! Owns which responses are retried (the waits are [`crate::retry`]'s, shared with auth), the
//! shared client-side rate limit, the 401 → refresh token → retry-once rule, and the rule that
//! a `nextLink` is followed only on the configured scheme, host and port (the bearer token is
//! never sent anywhere else). What makes a 2xx body a valid page is [`page`]'s. Cancellation
//! is checked before each request and during sleeps.
//!
//! The retry loop is written out rather than delegated to a retry crate because its decisions
//! depend on the response (Retry-After, the single token refresh on 401, cancellation) in ways
//! the generic combinators express less clearly than this loop.

pub mod concurrency;
pub mod page;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::auth::{AuthError, SendFailure, TokenProvider, send_failure, without_url};
use crate::config::ApiSettings;
use crate::metrics::Metrics;
use crate::model::StreamSpec;
use crate::retry::{self, parse_retry_after};
pub use page::Page;

/// The HTTP client for the token endpoint and the API: timeouts from `[api]`, no redirects (a
/// redirect would re-send the client secret or the bearer token elsewhere), the extra CA
/// certificates of `api.ca_bundle` trusted beside the system's, and the proxy from
/// `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (minus `NO_PROXY`), which reqwest reads by itself.
pub fn http_client(settings: &ApiSettings) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .connect_timeout(settings.connect_timeout)
        .user_agent(concat!("aos-audit-export/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(bundle) = &settings.ca_bundle {
        let certs = bundle
            .certificates
            .iter()
            .map(|der| reqwest::Certificate::from_der(der))
            .collect::<Result<Vec<_>, _>>()?;
        builder = builder.tls_certs_merge(certs);
    }
    builder.build()
}

/// Why fetching a page from the audit API failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API's TLS certificate was refused; not retried.
    #[error("the API request failed: {0}")]
    Tls(String),
    /// The API answered HTTP 400; not retried.
    #[error("the API refused the request (HTTP 400): {error} (traceId {trace_id})")]
    BadRequest {
        /// The body's `error` (or up to 300 characters of the raw body).
        error: String,
        /// The body's `traceId`, or `-` when absent.
        trace_id: String,
    },
    /// The API answered HTTP 403: the token lacks `audit.read.all`.
    #[error("the token lacks the audit.read.all permission (HTTP 403); grant it to the app registration")]
    Forbidden,
    /// The API answered 401 again right after the token was refreshed.
    #[error("the API keeps answering 401 after a token refresh; check the app registration")]
    Unauthorized,
    /// A page's `nextLink` is unparsable or on another scheme, host or port than `api.base_url`.
    #[error(
        "refusing nextLink {link}: its scheme, host or port differ from api.base_url {base}; the bearer token is only sent to api.base_url"
    )]
    ForeignNextLink {
        /// The refused `nextLink`, as sent by the API.
        link: String,
        /// The configured `api.base_url`.
        base: String,
    },
    /// Retryable failures (timeouts, 408/429/5xx, malformed pages) outlasted the retry policy.
    #[error("giving up after {attempts} attempts: {last}")]
    Exhausted {
        /// How many attempts failed.
        attempts: u32,
        /// Why the last attempt failed.
        last: String,
    },
    /// A response body grew past `api.max_page_bytes` (after decompression); not retried.
    #[error(
        "a response of the audit API exceeds api.max_page_bytes ({limit} bytes, counted after decompression); raise api.max_page_bytes if the API really sends pages this large"
    )]
    PageTooLarge {
        /// `api.max_page_bytes`.
        limit: usize,
    },
    /// The API answered a status that is neither success nor handled above; not retried.
    #[error("unexpected HTTP {status} from the API: {body}")]
    Unexpected {
        /// The HTTP status code.
        status: u16,
        /// Up to 300 characters of the response body.
        body: String,
    },
    /// Getting an access token failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The cancellation token fired before or while fetching.
    #[error("cancelled")]
    Cancelled,
}

#[derive(Deserialize, Default)]
struct WireError {
    #[serde(default)]
    error: Option<Value>,
    #[serde(default, rename = "traceId")]
    trace_id: Option<String>,
}

/// Client for the audit API's `/aos/audit` endpoint, with retries, rate limiting and token refresh.
pub struct ApiClient {
    http: reqwest::Client,
    settings: ApiSettings,
    tokens: Arc<TokenProvider>,
    limiter: Option<DefaultDirectRateLimiter>,
    concurrency: concurrency::Limiter,
    metrics: Arc<Metrics>,
}

/// Ceiling of the adaptive limit (windows in flight, `export.concurrency`, bound it too).
const ADAPTIVE_MAX: usize = 64;

enum Attempt {
    Done(Page),
    Retry {
        why: String,
        cause: &'static str,
        after: Option<Duration>,
    },
    Unauthorized,
}

/// What a request's ending says about the server's load.
fn load_signal(attempt: &Result<Attempt, ApiError>) -> concurrency::Outcome {
    use concurrency::Outcome;
    match attempt {
        Ok(Attempt::Done(_)) => Outcome::Done,
        Ok(Attempt::Retry { cause, .. }) if matches!(*cause, "throttled" | "server" | "timeout") => Outcome::Backpressure,
        _ => Outcome::Ignore,
    }
}

impl ApiClient {
    /// The current limit of requests in flight.
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency.limit()
    }

    /// A client over `http`, authenticating with `tokens`, counting into `metrics`.
    pub fn new(settings: ApiSettings, http: reqwest::Client, tokens: Arc<TokenProvider>, metrics: Arc<Metrics>) -> Self {
        let limiter = settings.requests_per_second.map(|rps| {
            let period = Duration::from_secs_f64(1.0 / rps);
            let burst = std::num::NonZeroU32::new((rps.ceil() as u32).max(1)).unwrap_or(std::num::NonZeroU32::MIN);
            // Validation guarantees rps > 0, so the period is positive; fall back to 1/s anyway.
            let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN));
            RateLimiter::direct(quota.allow_burst(burst))
        });
        let concurrency = match settings.max_concurrency {
            Some(n) => concurrency::Limiter::fixed(n),
            None => concurrency::Limiter::adaptive(ADAPTIVE_MAX),
        };
        ApiClient {
            http,
            settings,
            tokens,
            limiter,
            concurrency,
            metrics,
        }
    }

    /// URL of the first page of `[start, end)` for `stream` (array filters as repeated keys).
    pub fn first_url(&self, stream: &StreamSpec, start: DateTime<Utc>, end: DateTime<Utc>) -> Url {
        let mut url = self.settings.base_url.clone();
        {
            // `base_url` may carry a path; the endpoint is below it.
            let mut path = url.path().trim_end_matches('/').to_string();
            path.push_str("/aos/audit");
            url.set_path(&path);
        }
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
            let token = match self.tokens.token_with(cancel).await {
                Err(AuthError::Cancelled) => return Err(ApiError::Cancelled),
                other => other?,
            };
            let Some(slot) = self.concurrency.acquire(cancel).await else {
                return Err(ApiError::Cancelled);
            };
            let attempt = self.attempt(url, &token).await;
            self.concurrency.release(slot, load_signal(&attempt));
            self.metrics.concurrency_limit(self.concurrency.limit());
            match attempt? {
                Attempt::Done(p) => return Ok(p),
                Attempt::Unauthorized if !refreshed => {
                    // An expired or revoked token: refresh once and try again at once.
                    tracing::info!("API answered 401; refreshing the access token");
                    self.tokens.invalidate(&token).await;
                    refreshed = true;
                }
                Attempt::Unauthorized => return Err(ApiError::Unauthorized),
                Attempt::Retry { why, cause, after } => {
                    failures += 1;
                    if !s.retry.may_retry(failures) {
                        return Err(ApiError::Exhausted {
                            attempts: failures,
                            last: why,
                        });
                    }
                    self.metrics.api_retry(cause);
                    let wait = s.retry.backoff(failures, after);
                    tracing::warn!(attempt = failures, wait_ms = wait.as_millis() as u64, reason = %why, "retrying API request");
                    retry::sleep(wait, cancel).await.map_err(|_| ApiError::Cancelled)?;
                }
            }
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn attempt(&self, url: &Url, token: &crate::auth::AccessToken) -> Result<Attempt, ApiError> {
        tracing::debug!(url = %url, "GET page");
        let resp = match self.http.get(url.clone()).bearer_auth(token.bearer()).send().await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.api_response(None);
                let why = match send_failure(&e, url.as_str()) {
                    SendFailure::Tls(message) => return Err(ApiError::Tls(message)),
                    SendFailure::Transport(why) => why,
                };
                return Ok(Attempt::Retry {
                    cause: if e.is_timeout() { "timeout" } else { "connection" },
                    why,
                    after: None,
                });
            }
        };
        let status = resp.status();
        self.metrics.api_response(Some(status.as_u16()));
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = match read_body(resp, self.settings.max_page_bytes).await {
            Ok(b) => b,
            Err(Body::TooLarge) => {
                return Err(ApiError::PageTooLarge {
                    limit: self.settings.max_page_bytes,
                });
            }
            Err(Body::Transport(e)) => {
                return Ok(Attempt::Retry {
                    why: format!("reading body: {}", without_url(&e)),
                    cause: "connection",
                    after: None,
                });
            }
        };
        match status.as_u16() {
            200..=299 => match page::parse(body.clone()) {
                Ok(mut p) => {
                    let next_link = match p.next_link.take() {
                        Some(l) => Some(self.check_next_link(&l)?),
                        None => None,
                    };
                    self.metrics.page_fetched();
                    Ok(Attempt::Done(Page::new(p, next_link)))
                }
                // A truncated, garbled or malformed body is a transport fault: ask again. Past
                // the retries the window fails rather than commit what may be a lost page.
                Err(e) => Ok(Attempt::Retry {
                    why: format!("malformed page ({} bytes): {e}", body.len()),
                    cause: "malformed",
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
                cause: if status.as_u16() == 429 { "throttled" } else { "server" },
                after: retry_after,
            }),
            other => Err(ApiError::Unexpected {
                status: other,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            }),
        }
    }
}

/// Why a body could not be read whole.
enum Body {
    /// Past the cap.
    TooLarge,
    /// The connection failed (or the body could not be decompressed).
    Transport(reqwest::Error),
}

/// Reads a response body (decompressed, if the server compressed it), refusing it as soon as it
/// grows past `cap`: a server, a proxy or a gzip bomb cannot make a page take more memory. The
/// buffer grows by doubling but never past `cap`, so a page holds at most `cap` bytes. An error
/// answer's body (not 2xx) only serves the message: its first 64 KiB are kept, the rest dropped.
async fn read_body(mut resp: reqwest::Response, cap: usize) -> Result<bytes::Bytes, Body> {
    let success = resp.status().is_success();
    let limit = if success { cap } else { cap.min(64 << 10) };
    // A declared length is only a hint (a compressed body's is not the decoded size).
    let hint = resp
        .content_length()
        .map_or(64 << 10, |n| usize::try_from(n).unwrap_or(limit))
        .min(limit);
    let mut body: Vec<u8> = Vec::with_capacity(hint);
    while let Some(chunk) = resp.chunk().await.map_err(Body::Transport)? {
        let needed = body.len() + chunk.len();
        if needed > limit {
            if !success {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            return Err(Body::TooLarge);
        }
        if needed > body.capacity() {
            let grown = needed.max(body.capacity() * 2).min(limit);
            body.reserve_exact(grown - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(bytes::Bytes::from(body))
}
