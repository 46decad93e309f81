//! Authentication: OAuth2 client credentials against the AOS identity service.
//!
//! Owns the credential (client secret or certificate), the RFC 7523 client assertion, and the
//! token cache. Invariants: at most one token request is in flight (the cache mutex is held
//! while refreshing); a token is refreshed once 80% of its lifetime has passed; a token the API
//! rejected is dropped by [`TokenProvider::invalidate`]; no secret, key or token value ever
//! reaches a log line, an error or a `Debug` output.

pub mod certificate;

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header};
use serde::Deserialize;
use serde_json::json;

use tokio_util::sync::CancellationToken;

use crate::config::{AuthSettings, Credential, Secret};
use crate::retry;
pub use certificate::AppCertificate;

/// Largest token response read.
const TOKEN_BODY_MAX: usize = 1 << 20;

/// Lifetime of a client assertion (AOS accepts at most one hour).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;
/// Certificates expiring within this many days produce a warning.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

/// Why an access token could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The certificate or its private key cannot be read, parsed, is not RSA, does not match,
    /// or is outside its validity period.
    #[error("certificate {path}: {message}")]
    Certificate {
        /// The certificate (or private key) file at fault.
        path: std::path::PathBuf,
        /// What is wrong with it (never its contents).
        message: String,
    },
    /// The identity service refused the request with a non-retryable HTTP status.
    #[error("token request to {url} rejected ({status}): {error}: {description} (check auth.client_id, the credential and auth.scope)")]
    Rejected {
        /// The token endpoint.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The OAuth2 `error` code, or `unknown_error` when the body has none.
        error: String,
        /// The OAuth2 `error_description` (may be empty).
        description: String,
    },
    /// A retryable failure: connection fault, timeout, HTTP 408/429/5xx, or an unparsable token response.
    #[error("token request to {url} failed: {message}")]
    Transport {
        /// The token endpoint.
        url: String,
        /// What went wrong, without the request URL.
        message: String,
    },
    /// The identity service's TLS certificate was refused; not retried.
    #[error("token request to {url} failed: {message}")]
    Tls {
        /// The token endpoint.
        url: String,
        /// What was refused, and what to do.
        message: String,
    },
    /// Signing the RFC 7523 client assertion with the certificate's key failed.
    #[error("cannot sign the client assertion: {0}")]
    Signing(String),
    /// Retryable failures outlasted the retry policy.
    #[error("token request to {url} kept failing after {attempts} attempts: {last}")]
    Exhausted {
        /// The token endpoint.
        url: String,
        /// How many attempts failed.
        attempts: u32,
        /// The last attempt's error message.
        last: String,
    },
    /// The cancellation token fired before a request or during a retry wait.
    #[error("cancelled")]
    Cancelled,
}

impl AuthError {
    /// Whether asking again may succeed (connection faults, timeouts, 408, 429 and 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Transport { .. })
    }

    /// Whether the identity service rejected the credential itself (exit 3), as opposed to
    /// failing to answer.
    pub fn is_credential_problem(&self) -> bool {
        matches!(
            self,
            AuthError::Certificate { .. } | AuthError::Rejected { .. } | AuthError::Signing(_)
        )
    }
}

/// A bearer token. Its value is reachable only through [`AccessToken::bearer`].
#[derive(Clone)]
pub struct AccessToken {
    value: Secret,
    /// When the token expires: time of receipt plus `expires_in` (3600 s when absent).
    pub expires_at: DateTime<Utc>,
    /// The granted scope (the requested `auth.scope` when the response names none).
    pub scope: String,
    refresh_after: Instant,
}

impl AccessToken {
    /// The token value, for an `Authorization: Bearer` header; never log it.
    pub fn bearer(&self) -> &str {
        self.value.expose()
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

enum Method {
    Secret(Secret),
    Certificate(Box<AppCertificate>),
}

/// Obtains and caches access tokens.
pub struct TokenProvider {
    http: reqwest::Client,
    settings: AuthSettings,
    method: Method,
    cache: tokio::sync::Mutex<Option<AccessToken>>,
    requests: std::sync::atomic::AtomicU64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

impl TokenProvider {
    /// Loads the credential (reading and checking a certificate) without contacting the server.
    pub fn new(settings: AuthSettings, http: reqwest::Client) -> Result<Self, AuthError> {
        let method = match &settings.credential {
            Credential::Secret(s) => Method::Secret(s.clone()),
            Credential::Certificate {
                path,
                password,
                private_key_path,
            } => {
                let now = Utc::now();
                let cert = certificate::load(path, password.as_ref().map(Secret::expose), private_key_path.as_deref(), now)?;
                let left = cert.not_after - now;
                if left < chrono::Duration::days(CERT_EXPIRY_WARNING_DAYS) {
                    tracing::warn!(
                        thumbprint = %cert.thumbprint_hex,
                        not_after = %cert.not_after,
                        "certificate expires in {} days; upload a new one to the app registration",
                        left.num_days()
                    );
                }
                Method::Certificate(Box::new(cert))
            }
        };
        Ok(TokenProvider {
            http,
            settings,
            method,
            cache: tokio::sync::Mutex::new(None),
            requests: Default::default(),
        })
    }

    /// "certificate (thumbprint …, expires …)" or "client secret".
    pub fn method_description(&self) -> String {
        match &self.method {
            Method::Secret(_) => "client secret".into(),
            Method::Certificate(c) => format!(
                "certificate (thumbprint {}, subject {}, expires {})",
                c.thumbprint_hex, c.subject, c.not_after
            ),
        }
    }

    /// The configured `auth.client_id`.
    pub fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// Number of token requests sent so far.
    pub fn token_requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a fresh one. Concurrent callers wait for one refresh.
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        self.token_with(&CancellationToken::new()).await
    }

    /// [`TokenProvider::token`], giving up when `cancel` fires during a retry wait.
    pub async fn token_with(&self, cancel: &CancellationToken) -> Result<AccessToken, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref()
            && Instant::now() < t.refresh_after
        {
            return Ok(t.clone());
        }
        let fresh = self.fetch(cancel).await?;
        *cache = Some(fresh.clone());
        Ok(fresh)
    }

    /// Drops `rejected` from the cache (after a 401), unless another caller already replaced it.
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut cache = self.cache.lock().await;
        if cache.as_ref().is_some_and(|t| t.value == rejected.value) {
            *cache = None;
        }
    }

    /// Builds the RFC 7523 client assertion for one token request.
    pub fn client_assertion(&self, cert: &AppCertificate, now: i64) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".into());
        header.kid = Some(cert.thumbprint_hex.clone());
        header.x5t = Some(cert.x5t.clone());
        let id = &self.settings.client_id;
        let claims = json!({
            "iss": id,
            "sub": id,
            "aud": self.settings.token_url.as_str(),
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        jsonwebtoken::encode(&header, &claims, &cert.key).map_err(|e| AuthError::Signing(e.to_string()))
    }

    /// Asks the identity service, retrying transient failures with the shared policy.
    async fn fetch(&self, cancel: &CancellationToken) -> Result<AccessToken, AuthError> {
        let url = self.settings.token_url.to_string();
        let policy = &self.settings.retry;
        let mut failures = 0u32;
        loop {
            if cancel.is_cancelled() {
                return Err(AuthError::Cancelled);
            }
            let (e, retry_after) = match self.fetch_once(&url).await {
                Err((e, retry_after)) if e.is_retryable() => (e, retry_after),
                other => return other.map_err(|(e, _)| e),
            };
            failures += 1;
            if !policy.may_retry(failures) {
                return Err(AuthError::Exhausted {
                    url,
                    attempts: failures,
                    last: e.to_string(),
                });
            }
            let wait = policy.backoff(failures, retry_after);
            tracing::warn!(attempt = failures, wait_ms = wait.as_millis() as u64, error = %e, "token request failed; retrying");
            retry::sleep(wait, cancel).await.map_err(|_| AuthError::Cancelled)?;
        }
    }

    /// One token request; a failure carries the server's `Retry-After`, if any.
    async fn fetch_once(&self, url: &str) -> Result<AccessToken, (AuthError, Option<Duration>)> {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.settings.client_id.clone()),
            ("scope", self.settings.scope.clone()),
        ];
        match &self.method {
            Method::Secret(s) => form.push(("client_secret", s.expose().to_string())),
            Method::Certificate(c) => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    self.client_assertion(c, Utc::now().timestamp()).map_err(|e| (e, None))?,
                ));
            }
        }
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(token_url = %url, client_id = %self.settings.client_id, "requesting access token");
        let started = Instant::now();
        let transport = |message: String| (AuthError::Transport { url: url.into(), message }, None);
        let resp = self
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|e| match send_failure(&e, url) {
                SendFailure::Tls(message) => (AuthError::Tls { url: url.into(), message }, None),
                SendFailure::Transport(message) => transport(message),
            })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        // A token response is a few KiB: more than 1 MiB is no token response, and is not read.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(without_url(&e)))? {
            if body.len() + chunk.len() > TOKEN_BODY_MAX {
                return Err(transport(format!(
                    "the response is larger than {TOKEN_BODY_MAX} bytes; not a token response"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| transport(format!("invalid token response: {e}")))?;
            let lifetime = t.expires_in.unwrap_or(3600).max(1);
            let refresh_after = started + Duration::from_millis((lifetime as u64) * 800);
            let tok = AccessToken {
                value: Secret::new(t.access_token),
                expires_at: Utc::now() + chrono::Duration::seconds(lifetime),
                scope: t.scope.unwrap_or_else(|| self.settings.scope.clone()),
                refresh_after,
            };
            tracing::info!(client_id = %self.settings.client_id, expires_at = %tok.expires_at, "obtained access token");
            return Ok(tok);
        }
        if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
            let (e, _) = transport(format!("HTTP {status}"));
            return Err((e, retry_after));
        }
        let err: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
        Err((
            AuthError::Rejected {
                url: url.into(),
                status: status.as_u16(),
                error: if err.error.is_empty() { "unknown_error".into() } else { err.error },
                description: err.error_description,
            },
            None,
        ))
    }
}

/// Why a request could not be sent, for the error a user reads.
pub(crate) enum SendFailure {
    /// The server's TLS certificate was refused: retrying cannot help (a trust setting can).
    Tls(String),
    /// Anything else (connection, timeout…): retryable.
    Transport(String),
}

/// Classifies a send error for `url`: a refused server certificate apart (rustls reports it as
/// "invalid peer certificate"), and a failed connection attributed to the proxy the
/// environment names for `url`, if any (only its scheme, host and port: it may carry
/// credentials).
pub(crate) fn send_failure(e: &reqwest::Error, url: &str) -> SendFailure {
    let msg = without_url(e);
    if msg.contains("invalid peer certificate") {
        return SendFailure::Tls(format!(
            "{msg}; the server's TLS certificate was refused (a TLS-inspecting proxy or a private CA? trust it with api.ca_bundle); not retried"
        ));
    }
    match proxy_for(url).filter(|_| e.is_connect()) {
        Some((var, proxy)) => SendFailure::Transport(format!(
            "{msg} (connecting through the proxy {proxy} that {var} names; is it reachable?)"
        )),
        None => SendFailure::Transport(msg),
    }
}

/// The proxy the environment names for `url` as reqwest picks it (`HTTPS_PROXY`/`HTTP_PROXY` by
/// scheme, else `ALL_PROXY`, lower-case names too, unless `NO_PROXY` lists the host): the
/// variable and the proxy's `scheme://host:port`.
fn proxy_for(url: &str) -> Option<(String, String)> {
    let u = url::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    let var = |name: &str| {
        std::env::var(name)
            .or_else(|_| std::env::var(name.to_ascii_lowercase()))
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| (name.to_string(), v))
    };
    if let Some((_, no)) = var("NO_PROXY") {
        // As hyper-util reads it: an IP host matches IP and CIDR entries only, a name matches
        // `*`, itself or a parent domain.
        let ip = host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok();
        let listed = no
            .split(',')
            .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
            .any(|h| match ip {
                Some(ip) => !h.is_empty() && in_cidr(ip, &h),
                None => !h.is_empty() && (h == "*" || host == h || host.ends_with(&format!(".{h}"))),
            });
        if listed {
            return None;
        }
    }
    let by_scheme = if u.scheme() == "https" { "HTTPS_PROXY" } else { "HTTP_PROXY" };
    let (name, value) = var(by_scheme).or_else(|| var("ALL_PROXY"))?;
    // A value without a scheme is an http:// proxy (`proxy.corp:3128`), as reqwest takes it.
    let value = if value.contains("://") { value } else { format!("http://{value}") };
    let p = url::Url::parse(&value)
        .ok()
        .filter(|p| matches!(p.scheme(), "http" | "https" | "socks5" | "socks5h"))?;
    let port = p.port_or_known_default().map(|n| format!(":{n}")).unwrap_or_default();
    Some((name, format!("{}://{}{port}", p.scheme(), p.host_str()?)))
}

/// Whether `ip` is in `cidr` (`10.0.0.0/8`, `fd00::/8`, or one address).
fn in_cidr(ip: std::net::IpAddr, cidr: &str) -> bool {
    use std::net::IpAddr;
    let (net, bits) = cidr.split_once('/').unwrap_or((cidr, ""));
    let bits_of = |max: u32| {
        if bits.is_empty() {
            Some(max)
        } else {
            bits.parse::<u32>().ok().filter(|b| *b <= max)
        }
    };
    match (ip, net.parse::<IpAddr>()) {
        (IpAddr::V4(a), Ok(IpAddr::V4(n))) => bits_of(32).is_some_and(|b| {
            let mask = if b == 0 { 0 } else { u32::MAX << (32 - b) };
            u32::from(a) & mask == u32::from(n) & mask
        }),
        (IpAddr::V6(a), Ok(IpAddr::V6(n))) => bits_of(128).is_some_and(|b| {
            let mask = if b == 0 { 0 } else { u128::MAX << (128 - b) };
            u128::from(a) & mask == u128::from(n) & mask
        }),
        _ => false,
    }
}

/// reqwest errors print the URL; ours carry it separately, and must never carry a query with
/// credentials, so keep only the error kind and its source chain.
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(u) = e.url() {
        msg = msg.replace(&format!(" for url ({u})"), "");
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::in_cidr;

    #[test]
    fn no_proxy_cidrs_match_as_reqwest_reads_them() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert!(in_cidr(ip("10.1.2.3"), "10.0.0.0/8"));
        assert!(!in_cidr(ip("11.1.2.3"), "10.0.0.0/8"));
        assert!(in_cidr(ip("127.0.0.1"), "127.0.0.1"));
        assert!(!in_cidr(ip("127.0.0.2"), "127.0.0.1"));
        assert!(in_cidr(ip("fd00::1"), "fd00::/8"));
        assert!(!in_cidr(ip("10.1.2.3"), "fd00::/8"));
        assert!(!in_cidr(ip("10.1.2.3"), "10.0.0.0/33"));
        assert!(in_cidr(ip("8.8.8.8"), "0.0.0.0/0"));
    }
}
