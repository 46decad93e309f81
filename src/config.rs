//! Configuration: the raw file/env/flag layers, and their validation into [`Settings`].
//!
//! Layers, later wins: built-in defaults < TOML file (`--config`) < environment (`AOS_EXPORT_`
//! prefix, `__` between section and key) < command-line flags. Unknown keys are errors. Every
//! field's `///` doc is its user documentation (mirrored in `config/example.toml` and
//! `docs/configuration.md`). Nothing here does network I/O; secret files are read during
//! validation so a missing secret fails before anything is written.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

/// Environment variable prefix of every configuration key.
pub const ENV_PREFIX: &str = "AOS_EXPORT_";
/// Environment variable naming the configuration file (same as `--config`).
pub const ENV_CONFIG_FILE: &str = "AOS_EXPORT_CONFIG";

/// Largest window the API accepts.
pub const MAX_WINDOW: chrono::Duration = chrono::Duration::days(7);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: cannot read: {source}")]
    FileUnreadable { path: PathBuf, source: std::io::Error },
    #[error("configuration: {0}")]
    Layer(String),
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("{key}: cannot read {path}: {source}")]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

// ---------------------------------------------------------------- raw layers

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub auth: AuthSection,
    pub api: ApiSection,
    pub export: ExportSection,
    pub state: StateSection,
    pub schedule: ScheduleSection,
    pub daemon: DaemonSection,
    pub log: LogSection,
}

/// `[auth]`: how to obtain an OAuth2 client-credentials token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// commercial | gov | aos2 | fedramp: picks the identity service (ignored when `token_url` is set).
    pub environment: String,
    /// Token endpoint; overrides `environment`. `http://` only for loopback hosts.
    pub token_url: Option<String>,
    /// The app registration's client id (required).
    pub client_id: Option<String>,
    /// Permission requested.
    pub scope: String,
    /// Client secret (prefer `client_secret_file`).
    pub client_secret: Option<Secret>,
    /// File holding the client secret (trailing newline ignored).
    pub client_secret_file: Option<PathBuf>,
    /// Certificate: `.pfx`/`.p12` (PKCS#12) or `.pem` (certificate, and usually its key).
    pub certificate_path: Option<PathBuf>,
    /// Password of a PKCS#12 certificate (prefer `certificate_password_file`).
    pub certificate_password: Option<Secret>,
    /// File holding the PKCS#12 password.
    pub certificate_password_file: Option<PathBuf>,
    /// PEM private key (PKCS#8 or PKCS#1) when `certificate_path` is a PEM without its key.
    pub private_key_path: Option<PathBuf>,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            environment: "commercial".into(),
            token_url: None,
            client_id: None,
            scope: "audit.read.all".into(),
            client_secret: None,
            client_secret_file: None,
            certificate_path: None,
            certificate_password: None,
            certificate_password_file: None,
            private_key_path: None,
        }
    }
}

/// One export stream: a filter set with its own watermark.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamSection {
    /// Name used in file names and `status` (default: derived from the filters).
    pub name: Option<String>,
    pub product_types: Vec<String>,
    pub geo_locations: Vec<String>,
}

/// `[api]`: the Graph API and how hard to try.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Data center: au sg ca ne we fr de jp kr ch uk us (ignored when `base_url` is set).
    pub region: String,
    /// Graph base URL; overrides `region`. `http://` only for loopback hosts.
    pub base_url: Option<String>,
    /// `productTypes` filter of the default stream; empty = all products.
    pub product_types: Vec<String>,
    /// `geoLocations` filter of the default stream; empty = all locations.
    pub geo_locations: Vec<String>,
    /// Several streams, each its own filter set and watermark; replaces the default stream.
    pub streams: Vec<StreamSection>,
    /// Timeout of one HTTP request (whole response).
    pub request_timeout: String,
    /// Timeout of establishing a connection.
    pub connect_timeout: String,
    /// Retries of one request after a retryable failure (429, 5xx, timeouts, resets, bad JSON).
    pub max_retries: u32,
    /// First backoff; doubles per retry, with full jitter.
    pub retry_initial_backoff: String,
    /// Largest backoff between two retries.
    pub retry_max_backoff: String,
    /// Largest wait honoured from a `Retry-After` header.
    pub retry_after_max: String,
    /// Client-side cap on requests per second, shared by all workers; 0 = no cap.
    pub requests_per_second: f64,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            region: "us".into(),
            base_url: None,
            product_types: vec![],
            geo_locations: vec![],
            streams: vec![],
            request_timeout: "60s".into(),
            connect_timeout: "10s".into(),
            max_retries: 8,
            retry_initial_backoff: "500ms".into(),
            retry_max_backoff: "30s".into(),
            retry_after_max: "5m".into(),
            requests_per_second: 10.0,
        }
    }
}

/// `[export]`: what to export, and where.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// Where the first run begins when no checkpoint exists: RFC 3339 instant, YYYY-MM-DD (UTC),
    /// or a duration meaning "that long before now" (e.g. `30d`).
    pub start: String,
    /// Length of one API query window; at most 7d.
    pub window: String,
    /// Time newer than now − lag is never treated as final.
    pub lag: String,
    /// Each run re-reads this much before the watermark, to catch late records (deduplicated).
    pub lookback: String,
    /// parquet | ndjson.
    pub format: String,
    /// Local path, file://, s3://, az://, abfss://, gs:// (or memory:// for tests).
    pub output: String,
    /// parquet: zstd | snappy | none (default zstd); ndjson: none | gzip | zstd (default none).
    pub compression: Option<String>,
    /// zstd level (1..=22).
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// A file is rolled over after this many rows.
    pub file_max_rows: usize,
    /// ... or once it holds about this many bytes (e.g. 256MiB).
    pub file_max_bytes: String,
    /// Windows fetched at once (backfill and catch-up runs).
    pub concurrency: usize,
    /// Give up a run after this long (committed windows stay committed); empty = no deadline.
    pub run_deadline: Option<String>,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            start: "30d".into(),
            window: "1d".into(),
            lag: "15m".into(),
            lookback: "2h".into(),
            format: "parquet".into(),
            output: "./out".into(),
            compression: None,
            zstd_level: 3,
            row_group_rows: 50_000,
            file_max_rows: 1_000_000,
            file_max_bytes: "512MiB".into(),
            concurrency: 4,
            run_deadline: None,
        }
    }
}

/// `[state]`: the SQLite checkpoint database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// Path of the SQLite database (its folder is created; a `.lock` file sits beside it).
    pub path: PathBuf,
}

impl Default for StateSection {
    fn default() -> Self {
        StateSection {
            path: PathBuf::from("./state/aos-audit-export.db"),
        }
    }
}

/// `[schedule]`: daemon mode only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    /// Cron expression, 6 fields, seconds first, UTC.
    pub cron: String,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        ScheduleSection {
            cron: "0 */15 * * * *".into(),
        }
    }
}

/// `[daemon]`: daemon mode only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSection {
    /// Address serving /healthz, /readyz and /metrics.
    pub listen: String,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            listen: "0.0.0.0:9464".into(),
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// error | warn | info | debug | trace, or a tracing filter; `RUST_LOG` wins when set.
    pub level: String,
    /// text | json.
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

/// Loads the layers. `overrides` are `(dotted.key, value)` pairs from command-line flags.
pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<RawConfig, ConfigError> {
    let mut fig = Figment::new();
    if let Some(path) = file {
        // figment silently skips a missing file; a user who names one wants to hear about it.
        std::fs::metadata(path).map_err(|source| ConfigError::FileUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
    for (k, v) in overrides {
        fig = fig.merge((*k, v.clone()));
    }
    fig.extract::<RawConfig>().map_err(|e| {
        // Report the first error on one line; figment names the key and the source. A type
        // error quotes the value it found: never for a secret key.
        let Some(first) = e.into_iter().next() else {
            return ConfigError::Layer("invalid configuration".into());
        };
        let key = first
            .path
            .iter()
            .filter(|p| p.as_str() != "default")
            .cloned()
            .collect::<Vec<_>>()
            .join(".");
        if SECRET_KEYS.contains(&key.as_str()) {
            return ConfigError::Invalid {
                key: if key.ends_with("client_secret") {
                    "auth.client_secret"
                } else {
                    "auth.certificate_password"
                },
                message: "must be a string".into(),
            };
        }
        ConfigError::Layer(first.to_string().replace('\n', " ").replace("key \"default.", "key \""))
    })
}

// ---------------------------------------------------------------- validated settings

/// Keys whose values are secrets (never echoed, even in errors).
const SECRET_KEYS: &[&str] = &["auth.client_secret", "auth.certificate_password"];

/// A string that must never be printed: `Debug` and `Serialize` show `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Secret(s.to_string())
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself; call only where it is sent to its one legitimate destination.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How the app proves its identity.
#[derive(Debug, Clone)]
pub enum Credential {
    Secret(Secret),
    Certificate {
        path: PathBuf,
        password: Option<Secret>,
        private_key_path: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub token_url: Url,
    pub client_id: String,
    pub scope: String,
    pub credential: Credential,
}

/// One filter set exported with its own watermark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// Safe for file names: `[a-z0-9_-]`.
    pub id: String,
    pub product_types: Vec<String>,
    pub geo_locations: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub base_url: Url,
    pub streams: Vec<StreamSpec>,
    pub request_timeout: std::time::Duration,
    pub connect_timeout: std::time::Duration,
    pub max_retries: u32,
    pub retry_initial_backoff: std::time::Duration,
    pub retry_max_backoff: std::time::Duration,
    pub retry_after_max: std::time::Duration,
    pub requests_per_second: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Parquet,
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd(i32),
    Snappy,
    Gzip,
}

#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub start: DateTime<Utc>,
    pub window: chrono::Duration,
    pub lag: chrono::Duration,
    pub lookback: chrono::Duration,
    pub format: Format,
    pub compression: Compression,
    pub output: String,
    pub row_group_rows: usize,
    pub file_max_rows: usize,
    pub file_max_bytes: u64,
    pub concurrency: usize,
    pub run_deadline: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub auth: AuthSettings,
    pub api: ApiSettings,
    pub export: ExportSettings,
    pub state_path: PathBuf,
    pub schedule_cron: String,
    pub daemon_listen: SocketAddr,
}

/// Identity service token URL per `auth.environment`.
pub fn token_url_for(environment: &str) -> Option<&'static str> {
    Some(match environment {
        "commercial" => "https://identity.avepointonlineservices.com/connect/token",
        "gov" => "https://identity-gov.avepointonlineservices.com/connect/token",
        "aos2" => "https://identity-aos2.avepointonlineservices.com/connect/token",
        "fedramp" => "https://identity.online15.net/connect/token",
        _ => return None,
    })
}

pub const REGIONS: &[&str] = &["au", "sg", "ca", "ne", "we", "fr", "de", "jp", "kr", "ch", "uk", "us"];

/// Parses `1d`, `15m`, `500ms`, `2h 30m`… into a duration.
pub fn parse_duration(key: &'static str, s: &str) -> Result<std::time::Duration, ConfigError> {
    humantime::parse_duration(s.trim()).map_err(|e| invalid(key, format!("invalid duration {s:?} ({e}); use e.g. 15m, 2h, 1d")))
}

/// Parses `512MiB`, `64MB`, `1GiB`, `1000000` (bytes).
pub fn parse_size(key: &'static str, s: &str) -> Result<u64, ConfigError> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| invalid(key, format!("invalid size {s:?}; use e.g. 256MiB")))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        other => return Err(invalid(key, format!("unknown size unit {other:?} in {s:?}; use B, KiB, MiB, GiB"))),
    };
    let v = n.checked_mul(mult).ok_or_else(|| invalid(key, format!("{s:?} is too large")))?;
    if v == 0 {
        return Err(invalid(key, "must be > 0"));
    }
    Ok(v)
}

fn parse_chrono(key: &'static str, s: &str) -> Result<chrono::Duration, ConfigError> {
    let d = parse_duration(key, s)?;
    chrono::Duration::from_std(d).map_err(|_| invalid(key, format!("duration {s:?} is too large")))
}

/// Parses an instant: RFC 3339, or `YYYY-MM-DD` meaning UTC midnight.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}

/// Checks a URL and that it is https, or http on a loopback host.
fn check_url(key: &'static str, s: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(s).map_err(|e| invalid(key, format!("invalid URL {s:?}: {e}")))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
                Ok(url)
            } else {
                Err(invalid(
                    key,
                    format!("{s} must use https (http is allowed only for loopback hosts)"),
                ))
            }
        }
        other => Err(invalid(key, format!("unsupported URL scheme {other:?} in {s}"))),
    }
}

fn read_secret_file(key: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret(s))
}

/// Derives a stream id from its filters: `all`, or a short readable name plus a hash.
pub fn stream_id(name: Option<&str>, products: &[String], geos: &[String]) -> String {
    if let Some(n) = name {
        return n.to_string();
    }
    if products.is_empty() && geos.is_empty() {
        return "all".into();
    }
    use sha2::Digest;
    let key = format!("p={};g={}", products.join(","), geos.join(","));
    let h = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..4]);
    let mut readable: String = products
        .iter()
        .chain(geos.iter())
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join("-");
    readable.truncate(40);
    format!("{readable}-{h}")
}

impl RawConfig {
    /// Validates every key, reads secret files, and resolves defaults into [`Settings`].
    pub fn validate(&self, now: DateTime<Utc>) -> Result<Settings, ConfigError> {
        let a = &self.auth;
        let client_id = a
            .client_id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| invalid("auth.client_id", "is required (the app registration's client id)"))?;
        let token_url = match &a.token_url {
            Some(u) => check_url("auth.token_url", u)?,
            None => {
                let u = token_url_for(&a.environment).ok_or_else(|| {
                    invalid(
                        "auth.environment",
                        format!(
                            "unknown environment {:?}; use commercial, gov, aos2 or fedramp, or set auth.token_url",
                            a.environment
                        ),
                    )
                })?;
                Url::parse(u).expect("built-in URL")
            }
        };
        if a.scope.trim().is_empty() {
            return Err(invalid("auth.scope", "must not be empty"));
        }
        let secret = match (&a.client_secret, &a.client_secret_file) {
            (Some(_), Some(_)) => return Err(invalid("auth.client_secret", "set client_secret or client_secret_file, not both")),
            (Some(s), None) if !s.0.is_empty() => Some(s.clone()),
            (Some(_), None) => return Err(invalid("auth.client_secret", "is empty")),
            (None, Some(p)) => Some(read_secret_file("auth.client_secret_file", p)?),
            (None, None) => None,
        };
        let credential = match (&a.certificate_path, secret) {
            (Some(_), Some(_)) => {
                return Err(invalid("auth.certificate_path", "set a certificate or a client secret, not both"));
            }
            (Some(path), None) => {
                let password = match (&a.certificate_password, &a.certificate_password_file) {
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "auth.certificate_password",
                            "set certificate_password or certificate_password_file, not both",
                        ));
                    }
                    (Some(p), None) => Some(p.clone()),
                    (None, Some(f)) => Some(read_secret_file("auth.certificate_password_file", f)?),
                    (None, None) => None,
                };
                Credential::Certificate {
                    path: path.clone(),
                    password,
                    private_key_path: a.private_key_path.clone(),
                }
            }
            (None, Some(s)) => Credential::Secret(s),
            (None, None) => {
                return Err(invalid(
                    "auth.certificate_path",
                    "no credential: set certificate_path (recommended) or client_secret_file",
                ));
            }
        };

        let p = &self.api;
        let base_url = match &p.base_url {
            Some(u) => check_url("api.base_url", u)?,
            None => {
                if !REGIONS.contains(&p.region.as_str()) {
                    return Err(invalid(
                        "api.region",
                        format!(
                            "unknown region {:?}; use one of {}, or set api.base_url",
                            p.region,
                            REGIONS.join(" ")
                        ),
                    ));
                }
                Url::parse(&format!("https://graph-{}.avepointonlineservices.com", p.region)).expect("built-in URL")
            }
        };
        let mut streams = Vec::new();
        if p.streams.is_empty() {
            streams.push(StreamSpec {
                id: stream_id(None, &p.product_types, &p.geo_locations),
                product_types: p.product_types.clone(),
                geo_locations: p.geo_locations.clone(),
            });
        } else {
            if !p.product_types.is_empty() || !p.geo_locations.is_empty() {
                return Err(invalid(
                    "api.streams",
                    "set filters either in api.streams or in api.product_types/geo_locations, not both",
                ));
            }
            for s in &p.streams {
                let mut products = s.product_types.clone();
                products.sort();
                products.dedup();
                let mut geos = s.geo_locations.clone();
                geos.sort();
                geos.dedup();
                let id = stream_id(s.name.as_deref(), &products, &geos);
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(invalid(
                        "api.streams.name",
                        format!("{id:?} may only hold letters, digits, '-' and '_'"),
                    ));
                }
                let spec = StreamSpec {
                    id,
                    product_types: products,
                    geo_locations: geos,
                };
                if streams.iter().any(|o: &StreamSpec| {
                    o.id == spec.id || (o.product_types == spec.product_types && o.geo_locations == spec.geo_locations)
                }) {
                    return Err(invalid("api.streams", format!("stream {} is configured twice", spec.id)));
                }
                streams.push(spec);
            }
        }
        if !(p.requests_per_second >= 0.0 && p.requests_per_second.is_finite()) {
            return Err(invalid("api.requests_per_second", "must be a number >= 0"));
        }
        let api = ApiSettings {
            base_url,
            streams,
            request_timeout: parse_duration("api.request_timeout", &p.request_timeout)?,
            connect_timeout: parse_duration("api.connect_timeout", &p.connect_timeout)?,
            max_retries: p.max_retries,
            retry_initial_backoff: parse_duration("api.retry_initial_backoff", &p.retry_initial_backoff)?,
            retry_max_backoff: parse_duration("api.retry_max_backoff", &p.retry_max_backoff)?,
            retry_after_max: parse_duration("api.retry_after_max", &p.retry_after_max)?,
            requests_per_second: (p.requests_per_second > 0.0).then_some(p.requests_per_second),
        };

        let e = &self.export;
        let start = match parse_instant(&e.start) {
            Some(t) => t,
            None => {
                let ago = humantime::parse_duration(e.start.trim()).map_err(|_| {
                    invalid(
                        "export.start",
                        format!(
                            "{:?} is neither an RFC 3339 instant, a YYYY-MM-DD date nor a duration like 30d",
                            e.start
                        ),
                    )
                })?;
                now - chrono::Duration::from_std(ago).map_err(|_| invalid("export.start", "duration too large"))?
            }
        };
        let window = parse_chrono("export.window", &e.window)?;
        if window <= chrono::Duration::zero() {
            return Err(invalid("export.window", "must be positive"));
        }
        if window > MAX_WINDOW {
            return Err(invalid(
                "export.window",
                format!("{} exceeds the API's 7-day maximum range", e.window),
            ));
        }
        let format = match e.format.as_str() {
            "parquet" => Format::Parquet,
            "ndjson" | "jsonl" => Format::Ndjson,
            other => return Err(invalid("export.format", format!("unknown format {other:?}; use parquet or ndjson"))),
        };
        if !(1..=22).contains(&e.zstd_level) {
            return Err(invalid("export.zstd_level", "must be 1..=22"));
        }
        let compression = match (format, e.compression.as_deref()) {
            (Format::Parquet, None | Some("zstd")) | (Format::Ndjson, Some("zstd")) => Compression::Zstd(e.zstd_level),
            (Format::Parquet, Some("snappy")) => Compression::Snappy,
            (Format::Ndjson, Some("gzip")) => Compression::Gzip,
            (_, Some("none")) | (Format::Ndjson, None) => Compression::None,
            (f, Some(other)) => {
                return Err(invalid(
                    "export.compression",
                    format!("{other:?} is not available for {f:?}; parquet: zstd|snappy|none, ndjson: none|gzip|zstd"),
                ));
            }
        };
        if e.output.trim().is_empty() {
            return Err(invalid("export.output", "must not be empty"));
        }
        if e.row_group_rows == 0 {
            return Err(invalid("export.row_group_rows", "must be > 0"));
        }
        if e.file_max_rows == 0 {
            return Err(invalid("export.file_max_rows", "must be > 0"));
        }
        if e.concurrency == 0 || e.concurrency > 64 {
            return Err(invalid("export.concurrency", "must be 1..=64"));
        }
        let export = ExportSettings {
            start,
            window,
            lag: parse_chrono("export.lag", &e.lag)?,
            lookback: parse_chrono("export.lookback", &e.lookback)?,
            format,
            compression,
            output: e.output.trim().to_string(),
            row_group_rows: e.row_group_rows,
            file_max_rows: e.file_max_rows,
            file_max_bytes: parse_size("export.file_max_bytes", &e.file_max_bytes)?,
            concurrency: e.concurrency,
            run_deadline: match &e.run_deadline {
                Some(d) if !d.trim().is_empty() => Some(parse_duration("export.run_deadline", d)?),
                _ => None,
            },
        };
        if self.state.path.as_os_str().is_empty() {
            return Err(invalid("state.path", "must not be empty"));
        }
        let fields = self.schedule.cron.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(invalid(
                "schedule.cron",
                format!("{:?} needs 6 fields (seconds first), e.g. \"0 */15 * * * *\"", self.schedule.cron),
            ));
        }
        let daemon_listen = self.daemon.listen.parse().map_err(|e| {
            invalid(
                "daemon.listen",
                format!("{:?} is not an address like 0.0.0.0:9464 ({e})", self.daemon.listen),
            )
        })?;
        Ok(Settings {
            auth: AuthSettings {
                token_url,
                client_id,
                scope: a.scope.trim().to_string(),
                credential,
            },
            api,
            export,
            state_path: self.state.path.clone(),
            schedule_cron: self.schedule.cron.clone(),
            daemon_listen,
        })
    }

    /// Defaults pointed at a local AOS-compatible server (the emulator) with a client secret,
    /// and no client-side rate limit: for `demo`, benchmarks and tests.
    pub fn local(token_url: String, base_url: String, client_id: &str, client_secret: &str) -> Self {
        let mut raw = RawConfig::default();
        raw.auth.client_id = Some(client_id.into());
        raw.auth.client_secret = Some(client_secret.into());
        raw.auth.token_url = Some(token_url);
        raw.api.base_url = Some(base_url);
        raw.api.requests_per_second = 0.0;
        raw
    }

    /// The effective configuration as TOML, with every secret replaced by `<redacted>`
    /// (that is how [`Secret`] serializes).
    pub fn redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> RawConfig {
        let mut c = RawConfig::default();
        c.auth.client_id = Some("id".into());
        c.auth.client_secret = Some("s3cret".into());
        c
    }

    #[test]
    fn defaults_validate_with_a_credential() {
        let s = base().validate(Utc::now()).unwrap();
        assert_eq!(
            s.auth.token_url.as_str(),
            "https://identity.avepointonlineservices.com/connect/token"
        );
        assert_eq!(s.api.base_url.as_str(), "https://graph-us.avepointonlineservices.com/");
        assert_eq!(s.export.window, chrono::Duration::days(1));
        assert_eq!(s.api.streams[0].id, "all");
    }

    #[test]
    fn window_over_seven_days_is_refused() {
        let mut c = base();
        c.export.window = "8d".into();
        let e = c.validate(Utc::now()).unwrap_err().to_string();
        assert!(e.starts_with("export.window"), "{e}");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let mut c = base();
        c.api.base_url = Some("http://example.com".into());
        assert!(c.validate(Utc::now()).unwrap_err().to_string().contains("https"));
        c.api.base_url = Some("http://127.0.0.1:8080".into());
        assert!(c.validate(Utc::now()).is_ok());
    }

    #[test]
    fn start_accepts_dates_instants_and_relative() {
        let now = parse_instant("2026-01-31T00:00:00Z").unwrap();
        let mut c = base();
        c.export.start = "2026-01-01".into();
        assert_eq!(
            c.validate(now).unwrap().export.start,
            parse_instant("2026-01-01T00:00:00Z").unwrap()
        );
        c.export.start = "10d".into();
        assert_eq!(
            c.validate(now).unwrap().export.start,
            parse_instant("2026-01-21T00:00:00Z").unwrap()
        );
        c.export.start = "yesterday".into();
        assert!(c.validate(now).is_err());
    }

    #[test]
    fn secrets_never_render() {
        let t = base().redacted_toml();
        assert!(!t.contains("s3cret"));
        assert!(format!("{:?}", base().validate(Utc::now()).unwrap()).find("s3cret").is_none());
    }

    #[test]
    fn environments_and_regions_pick_documented_endpoints() {
        let mut c = base();
        for (env, url) in [
            ("gov", "https://identity-gov.avepointonlineservices.com/connect/token"),
            ("aos2", "https://identity-aos2.avepointonlineservices.com/connect/token"),
            ("fedramp", "https://identity.online15.net/connect/token"),
        ] {
            c.auth.environment = env.into();
            assert_eq!(c.validate(Utc::now()).unwrap().auth.token_url.as_str(), url);
        }
        c.auth.environment = "mars".into();
        assert!(c.validate(Utc::now()).unwrap_err().to_string().starts_with("auth.environment"));
        c.auth.environment = "commercial".into();
        c.api.region = "de".into();
        assert_eq!(
            c.validate(Utc::now()).unwrap().api.base_url.as_str(),
            "https://graph-de.avepointonlineservices.com/"
        );
        c.api.region = "xx".into();
        assert!(c.validate(Utc::now()).unwrap_err().to_string().starts_with("api.region"));
        c.auth.token_url = Some("https://login.example.com/connect/token".into());
        c.api.base_url = Some("https://graph.example.com".into());
        let s = c.validate(Utc::now()).unwrap();
        assert_eq!(s.auth.token_url.host_str(), Some("login.example.com"));
        assert_eq!(s.api.base_url.host_str(), Some("graph.example.com"));
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("k", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("k", "64 MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("k", "1000").unwrap(), 1000);
        assert!(parse_size("k", "12 parsecs").is_err());
        assert!(parse_size("k", "0").is_err());
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[auth]\nclient_id = \"x\"\nclient_secret = 98765431\n").unwrap();
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.starts_with("auth.client_secret") && !e.contains("98765431"), "{e}");
        assert!(!format!("{:?}", base()).contains("s3cret"), "Debug of the raw layer redacts");
    }

    #[test]
    fn stream_ids_are_stable_and_distinct() {
        let a = stream_id(None, &["Portal".into()], &[]);
        assert_eq!(a, stream_id(None, &["Portal".into()], &[]));
        assert_ne!(a, stream_id(None, &["SMP".into()], &[]));
        assert!(a.starts_with("portal-"));
    }
}
