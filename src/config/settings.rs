//! Validated settings: what the program runs with, resolved from a [`RawConfig`] section by
//! section. Every check names the key at fault; nothing here does network I/O, but secret
//! files are read so that a missing secret fails before anything is written.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use url::Url;

use super::endpoints::{self, RegionError};
use super::parse::{check_url, parse_chrono, parse_duration, parse_instant_or_ago, parse_size, read_secret_file};
use super::raw::{ApiSection, AuthSection, DaemonSection, ExportSection, RawConfig};
use super::secret::Secret;
use super::{ConfigError, invalid};
use crate::model::{MAX_WINDOW, StreamSpec};
use crate::retry::RetryPolicy;
use crate::sink::{BufferBudget, Compression, Format, SinkOptions};

/// How the app proves its identity.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A client secret.
    Secret(Secret),
    /// A certificate (PKCS#12 or PEM) that signs an RFC 7523 client assertion.
    Certificate {
        /// `.pfx`/`.p12` or `.pem`.
        path: PathBuf,
        /// PKCS#12 password.
        password: Option<Secret>,
        /// PEM key when the certificate file holds none.
        private_key_path: Option<PathBuf>,
    },
}

/// `[auth]`, validated.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Identity service token endpoint.
    pub token_url: Url,
    /// The app registration's client id.
    pub client_id: String,
    /// Permission requested.
    pub scope: String,
    /// Secret or certificate.
    pub credential: Credential,
    /// Retries of transient token-endpoint failures (the API's policy).
    pub retry: RetryPolicy,
}

/// `[api]`, validated.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Graph base URL.
    pub base_url: Url,
    /// Export streams (filter sets); never empty, never overlapping.
    pub streams: Vec<StreamSpec>,
    /// Timeout of one HTTP request.
    pub request_timeout: std::time::Duration,
    /// Timeout of establishing a connection.
    pub connect_timeout: std::time::Duration,
    /// Backoff and retry limits.
    pub retry: RetryPolicy,
    /// Client-side cap on requests per second; `None` = no cap.
    pub requests_per_second: Option<f64>,
    /// Fixed limit of requests in flight; `None` = adaptive.
    pub max_concurrency: Option<usize>,
    /// Extra CA certificates (`api.ca_bundle`), checked to parse.
    pub ca_bundle: Option<CaBundle>,
    /// Largest response body accepted, after decompression.
    pub max_page_bytes: usize,
}

/// `api.ca_bundle`, read and checked: PEM with at least one certificate, each one parsable.
#[derive(Clone)]
pub struct CaBundle {
    /// The file it was read from.
    pub path: PathBuf,
    /// The certificates, DER.
    pub certificates: Vec<Vec<u8>>,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

/// Reads and checks `api.ca_bundle`.
fn ca_bundle(path: &std::path::Path) -> Result<CaBundle, ConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let key = "api.ca_bundle";
    let pem = std::fs::read(path).map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let mut certificates = Vec::new();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| invalid(key, format!("{}: certificate {} is not valid PEM: {e}", path.display(), i + 1)))?;
        x509_parser::parse_x509_certificate(&cert).map_err(|e| {
            invalid(
                key,
                format!("{}: certificate {} is not a valid X.509 certificate: {e}", path.display(), i + 1),
            )
        })?;
        certificates.push(cert.to_vec());
    }
    if certificates.is_empty() {
        return Err(invalid(
            key,
            format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()),
        ));
    }
    Ok(CaBundle {
        path: path.to_path_buf(),
        certificates,
    })
}

/// `[export]`, validated.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Where the first run begins.
    pub start: DateTime<Utc>,
    /// `export.start` as configured (`30d`, a date or an instant), recorded for `status`.
    pub start_setting: String,
    /// Length of one API query window.
    pub window: chrono::Duration,
    /// Time newer than now − lag is never final.
    pub lag: chrono::Duration,
    /// Re-read this much before the covered end each run.
    pub lookback: chrono::Duration,
    /// How files are encoded.
    pub sink: SinkOptions,
    /// Output location (local path or object-store URL).
    pub output: String,
    /// Dedup memory the windows in flight may hold before younger ones wait (bytes).
    pub dedup_memory: usize,
    /// Windows fetched at once.
    pub concurrency: usize,
    /// Give up a run after this long.
    pub run_deadline: Option<std::time::Duration>,
    /// What to do with a record holding text a strict JSON reader refuses.
    pub on_invalid_record: crate::model::OnInvalidRecord,
    /// `export.format = "delta"`: the output is a Delta table (Parquet data files plus
    /// `_delta_log/`), each window added in one commit.
    pub delta: bool,
}

impl ExportSettings {
    /// `export.format` as its user names it: `parquet`, `ndjson` or `delta`.
    pub fn format_name(&self) -> &'static str {
        match (self.delta, self.sink.format) {
            (true, _) => "delta",
            (false, crate::sink::Format::Parquet) => "parquet",
            (false, crate::sink::Format::Ndjson) => "ndjson",
        }
    }
}

/// `[schedule]` and `[daemon]`, validated.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    /// Cron expression (6 or 7 fields, seconds first, UTC), checked to parse.
    pub cron: String,
    /// Address of /healthz, /readyz and /metrics.
    pub listen: SocketAddr,
    /// Consecutive failed passes after which `/readyz` answers 503 (≥ 1).
    pub unready_after_failures: u32,
    /// Lag of a stream's covered end beyond which `/readyz` answers 503.
    pub unready_after_lag: Option<chrono::Duration>,
}

/// Everything the program runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[auth]`.
    pub auth: AuthSettings,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[export]`.
    pub export: ExportSettings,
    /// `state.path`.
    pub state_path: PathBuf,
    /// `[schedule]` + `[daemon]`.
    pub daemon: DaemonSettings,
}

impl Settings {
    /// Where files bound for object storage are staged before upload: beside the state, so
    /// it lives on the same (persistent, writable) volume.
    pub fn spool_path(&self) -> PathBuf {
        spool_path(&self.state_path)
    }
}

/// The spool folder that belongs to a state database.
pub fn spool_path(state_path: &std::path::Path) -> PathBuf {
    state_path.with_extension("spool")
}

impl RawConfig {
    /// Validates every key, reads secret files, and resolves defaults into [`Settings`].
    pub fn validate(&self, now: DateTime<Utc>) -> Result<Settings, ConfigError> {
        let retry = retry_policy(&self.api)?;
        let auth = auth_settings(&self.auth, retry.clone())?;
        let api = api_settings(&self.api, &self.auth.environment, retry)?;
        let export = self.validate_export(now)?;
        let state_path = self.validate_state()?;
        let daemon = daemon_settings(&self.schedule.cron, &self.daemon)?;
        Ok(Settings {
            auth,
            api,
            export,
            state_path,
            daemon,
        })
    }

    /// `[export]` alone (for commands that only read the output, like `verify`).
    pub fn validate_export(&self, now: DateTime<Utc>) -> Result<ExportSettings, ConfigError> {
        export_settings(&self.export, now)
    }

    /// The export streams of `[api]` alone (for `status`, which marks the streams in effect).
    pub fn validate_streams(&self) -> Result<Vec<StreamSpec>, ConfigError> {
        super::streams::stream_specs(&self.api)
    }

    /// `state.path` alone.
    pub fn validate_state(&self) -> Result<PathBuf, ConfigError> {
        if self.state.path.as_os_str().is_empty() {
            return Err(invalid("state.path", "must not be empty"));
        }
        Ok(self.state.path.clone())
    }
}

fn retry_policy(p: &ApiSection) -> Result<RetryPolicy, ConfigError> {
    Ok(RetryPolicy {
        max_retries: p.max_retries,
        initial_backoff: parse_duration("api.retry_initial_backoff", &p.retry_initial_backoff)?,
        max_backoff: parse_duration("api.retry_max_backoff", &p.retry_max_backoff)?,
        retry_after_max: parse_duration("api.retry_after_max", &p.retry_after_max)?,
    })
}

fn auth_settings(a: &AuthSection, retry: RetryPolicy) -> Result<AuthSettings, ConfigError> {
    let client_id = a
        .client_id
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid("auth.client_id", "is required (the app registration's client id)"))?;
    let env_token_url = endpoints::token_url_for(&a.environment);
    let token_url = match &a.token_url {
        Some(u) => check_url("auth.token_url", u)?,
        None => {
            let u = env_token_url.ok_or_else(|| {
                invalid(
                    "auth.environment",
                    format!(
                        "unknown environment {:?}; use {}, or set auth.token_url",
                        a.environment,
                        endpoints::environment_names()
                    ),
                )
            })?;
            Url::parse(u).map_err(|e| invalid("auth.environment", e.to_string()))?
        }
    };
    if a.scope.trim().is_empty() {
        return Err(invalid("auth.scope", "must not be empty"));
    }
    let secret = match (&a.client_secret, &a.client_secret_file) {
        (Some(_), Some(_)) => return Err(invalid("auth.client_secret", "set client_secret or client_secret_file, not both")),
        (Some(s), None) if !s.is_empty() => Some(s.clone()),
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
    Ok(AuthSettings {
        token_url,
        client_id,
        scope: a.scope.trim().to_string(),
        credential,
        retry,
    })
}

fn api_settings(p: &ApiSection, environment: &str, retry: RetryPolicy) -> Result<ApiSettings, ConfigError> {
    let base_url = match &p.base_url {
        Some(u) => check_url("api.base_url", u)?,
        None => {
            let host = endpoints::graph_host(environment, p.region.as_deref()).map_err(|e| match e {
                RegionError::Unknown => invalid(
                    "api.region",
                    format!(
                        "unknown region {:?}; use one of {}, or set api.base_url",
                        p.region.as_deref().unwrap_or_default(),
                        endpoints::region_names()
                    ),
                ),
                RegionError::Contradicts { environment_host } => invalid(
                    "api.region",
                    format!(
                        "{:?} contradicts auth.environment {environment:?}, whose tokens are valid only on {environment_host}; remove api.region or fix auth.environment",
                        p.region.as_deref().unwrap_or_default()
                    ),
                ),
            })?;
            Url::parse(&format!("https://{host}")).map_err(|e| invalid("api.region", e.to_string()))?
        }
    };
    let streams = super::streams::stream_specs(p)?;
    if !(p.requests_per_second >= 0.0 && p.requests_per_second.is_finite()) {
        return Err(invalid("api.requests_per_second", "must be a number >= 0"));
    }
    Ok(ApiSettings {
        base_url,
        streams,
        request_timeout: parse_duration("api.request_timeout", &p.request_timeout)?,
        connect_timeout: parse_duration("api.connect_timeout", &p.connect_timeout)?,
        retry,
        requests_per_second: (p.requests_per_second > 0.0).then_some(p.requests_per_second),
        max_concurrency: (p.max_concurrency > 0).then_some(p.max_concurrency.min(256)),
        ca_bundle: p.ca_bundle.as_deref().map(ca_bundle).transpose()?,
        max_page_bytes: match parse_size("api.max_page_bytes", &p.max_page_bytes)? {
            n if n < 1024 => return Err(invalid("api.max_page_bytes", "must be at least 1KiB")),
            n if n > 1 << 30 => return Err(invalid("api.max_page_bytes", "must be at most 1GiB")),
            n => usize::try_from(n).unwrap_or(usize::MAX),
        },
    })
}

fn export_settings(e: &ExportSection, now: DateTime<Utc>) -> Result<ExportSettings, ConfigError> {
    let start = parse_instant_or_ago(&e.start, now).ok_or_else(|| {
        invalid(
            "export.start",
            format!(
                "{:?} is neither an RFC 3339 instant, a YYYY-MM-DD date nor a duration like 30d",
                e.start
            ),
        )
    })?;
    let window = whole_seconds("export.window", parse_chrono("export.window", &e.window)?)?;
    if window <= chrono::Duration::zero() {
        return Err(invalid("export.window", "must be positive"));
    }
    if window > MAX_WINDOW {
        return Err(invalid(
            "export.window",
            format!("{} exceeds the API's 7-day maximum range", e.window),
        ));
    }
    let delta = e.format == "delta";
    let format = match e.format.as_str() {
        "parquet" | "delta" => Format::Parquet,
        "ndjson" | "jsonl" => Format::Ndjson,
        other => {
            return Err(invalid(
                "export.format",
                format!("unknown format {other:?}; use parquet, ndjson or delta"),
            ));
        }
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
    let output = e.output.trim().to_string();
    crate::store::check_output(&output).map_err(|m| invalid("export.output", m))?;
    if e.row_group_rows == 0 {
        return Err(invalid("export.row_group_rows", "must be > 0"));
    }
    if e.file_max_rows == 0 {
        return Err(invalid("export.file_max_rows", "must be > 0"));
    }
    if e.concurrency == 0 || e.concurrency > 64 {
        return Err(invalid("export.concurrency", "must be 1..=64"));
    }
    Ok(ExportSettings {
        delta,
        start,
        start_setting: e.start.trim().to_string(),
        window,
        lag: whole_seconds("export.lag", parse_chrono("export.lag", &e.lag)?)?,
        lookback: whole_seconds("export.lookback", parse_chrono("export.lookback", &e.lookback)?)?,
        sink: SinkOptions {
            format,
            compression,
            row_group_rows: e.row_group_rows,
            file_max_rows: e.file_max_rows,
            file_max_bytes: parse_size("export.file_max_bytes", &e.file_max_bytes)?,
            buffer: BufferBudget::new(usize::try_from(parse_size("export.buffer_memory", &e.buffer_memory)?).unwrap_or(usize::MAX)),
        },
        output,
        dedup_memory: usize::try_from(parse_size("export.dedup_memory", &e.dedup_memory)?).unwrap_or(usize::MAX),
        concurrency: e.concurrency,
        run_deadline: match &e.run_deadline {
            Some(d) if !d.trim().is_empty() && d.trim() != "none" => Some(parse_duration("export.run_deadline", d)?),
            _ => None,
        },
        on_invalid_record: match e.on_invalid_record.trim() {
            "fail" => crate::model::OnInvalidRecord::Fail,
            "quarantine" => crate::model::OnInvalidRecord::Quarantine,
            other => {
                return Err(invalid(
                    "export.on_invalid_record",
                    format!("must be fail or quarantine, not {other:?}"),
                ));
            }
        },
    })
}

/// Window bounds name files to the second, so every duration that moves them must be whole
/// seconds: two bounds differing below a second would share file names.
fn whole_seconds(key: &'static str, d: chrono::Duration) -> Result<chrono::Duration, ConfigError> {
    if d.subsec_nanos() != 0 {
        return Err(invalid(key, "must be whole seconds (e.g. 90m, 1h30m5s)"));
    }
    Ok(d)
}

fn daemon_settings(cron: &str, d: &DaemonSection) -> Result<DaemonSettings, ConfigError> {
    let fields = cron.split_whitespace().count();
    if !(6..=7).contains(&fields) {
        return Err(invalid(
            "schedule.cron",
            format!("{cron:?} needs 6 fields (seconds first), e.g. \"0 */15 * * * *\""),
        ));
    }
    // Parse it now, with the scheduler's own parser, so a bad expression is a configuration
    // error (exit 2) rather than a failure once the daemon has started.
    tokio_cron_scheduler::Job::new(cron, |_, _| {}).map_err(|e| invalid("schedule.cron", format!("{cron:?} does not parse: {e}")))?;
    let listen = d
        .listen
        .parse()
        .map_err(|e| invalid("daemon.listen", format!("{:?} is not an address like 0.0.0.0:9464 ({e})", d.listen)))?;
    if d.unready_after_failures == 0 {
        return Err(invalid("daemon.unready_after_failures", "must be at least 1"));
    }
    let unready_after_lag = match &d.unready_after_lag {
        Some(v) if !v.trim().is_empty() => Some(parse_chrono("daemon.unready_after_lag", v)?),
        _ => None,
    };
    Ok(DaemonSettings {
        cron: cron.to_string(),
        listen,
        unready_after_failures: d.unready_after_failures,
        unready_after_lag,
    })
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
