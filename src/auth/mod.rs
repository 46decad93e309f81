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

use crate::config::{AuthSettings, Credential, Secret};
pub use certificate::AppCertificate;

/// Lifetime of a client assertion (AOS accepts at most one hour).
pub const ASSERTION_LIFETIME_SECS: i64 = 600;
/// Certificates expiring within this many days produce a warning.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("certificate {path}: {message}")]
    Certificate { path: std::path::PathBuf, message: String },
    #[error("token request to {url} rejected ({status}): {error}: {description} (check auth.client_id, the credential and auth.scope)")]
    Rejected {
        url: String,
        status: u16,
        error: String,
        description: String,
    },
    #[error("token request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("cannot sign the client assertion: {0}")]
    Signing(String),
}

impl AuthError {
    /// Whether asking again may succeed (transport faults and 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Transport { .. })
    }
}

/// A bearer token. Its value is reachable only through [`AccessToken::bearer`].
#[derive(Clone)]
pub struct AccessToken {
    value: Secret,
    pub expires_at: DateTime<Utc>,
    pub scope: String,
    refresh_after: Instant,
}

impl AccessToken {
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

    pub fn client_id(&self) -> &str {
        &self.settings.client_id
    }

    /// Number of token requests sent so far.
    pub fn token_requests(&self) -> u64 {
        self.requests.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A valid token: the cached one, or a fresh one. Concurrent callers wait for one refresh.
    pub async fn token(&self) -> Result<AccessToken, AuthError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.as_ref()
            && Instant::now() < t.refresh_after
        {
            return Ok(t.clone());
        }
        let fresh = self.fetch().await?;
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

    async fn fetch(&self) -> Result<AccessToken, AuthError> {
        let url = self.settings.token_url.to_string();
        // Token endpoint faults are retried a few times here; the API client's own retries
        // cover longer outages.
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self.fetch_once(&url).await {
                Err(e) if e.is_retryable() && attempt < 4 => {
                    tracing::warn!(attempt, error = %e, "token request failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250 * 2u64.pow(attempt))).await;
                }
                other => return other,
            }
        }
    }

    async fn fetch_once(&self, url: &str) -> Result<AccessToken, AuthError> {
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
                form.push(("client_assertion", self.client_assertion(c, Utc::now().timestamp())?));
            }
        }
        self.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(token_url = %url, client_id = %self.settings.client_id, "requesting access token");
        let started = Instant::now();
        let resp = self.http.post(url).form(&form).send().await.map_err(|e| AuthError::Transport {
            url: url.into(),
            message: without_url(&e),
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| AuthError::Transport {
            url: url.into(),
            message: without_url(&e),
        })?;
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| AuthError::Transport {
                url: url.into(),
                message: format!("invalid token response: {e}"),
            })?;
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
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(AuthError::Transport {
                url: url.into(),
                message: format!("HTTP {status}"),
            });
        }
        let err: OAuthError = serde_json::from_slice(&body).unwrap_or_default();
        Err(AuthError::Rejected {
            url: url.into(),
            status: status.as_u16(),
            error: if err.error.is_empty() { "unknown_error".into() } else { err.error },
            description: err.error_description,
        })
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
