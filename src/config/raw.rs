//! The raw configuration layers: serde sections with their defaults, exactly as the user
//! writes them. Every field's `///` doc is its user documentation. [`super::settings`] turns
//! a [`RawConfig`] into validated [`super::Settings`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::Secret;
/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[auth]`: the credential and identity service.
    pub auth: AuthSection,
    /// `[api]`: the Graph API, filters and retries.
    pub api: ApiSection,
    /// `[export]`: output, format and windows.
    pub export: ExportSection,
    /// `[state]`: the checkpoint database.
    pub state: StateSection,
    /// `[schedule]`: when the daemon runs.
    pub schedule: ScheduleSection,
    /// `[daemon]`: the daemon's HTTP endpoints.
    pub daemon: DaemonSection,
    /// `[log]`: log level and format.
    pub log: LogSection,
    /// `[metrics]`: where a run that is not the daemon pushes its metrics.
    pub metrics: MetricsSection,
}

/// `[metrics]`: metrics of `run`, `backfill` and `reconcile` (CronJobs and Jobs, which nobody
/// scrapes) pushed to a Prometheus Pushgateway when the command ends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// The Pushgateway's base URL (e.g. `http://pushgateway.monitoring:9091`); empty = no push.
    /// Treated as a secret (it may carry basic-auth credentials): never printed.
    pub push_url: Option<super::Secret>,
    /// The `job` label of the pushed group (the `command` label is the subcommand).
    pub push_job: String,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            push_url: None,
            push_job: "aos-audit-export".into(),
        }
    }
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
    /// `productTypes` filter of this stream; empty = all products.
    pub product_types: Vec<String>,
    /// `geoLocations` filter of this stream; empty = all locations.
    pub geo_locations: Vec<String>,
}

/// `[api]`: the Graph API and how hard to try.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    /// Data center: au sg ca ne we fr de jp kr ch uk us uae za qa gcp-au gcp-jp gcp-us gcp-we
    /// gcp-kr (commercial; default us), or gov / aos2 / fedramp, which `auth.environment` of that
    /// name selects by itself. Ignored when `base_url` is set.
    pub region: Option<String>,
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
    /// Client-side cap on requests per second, shared by all workers; 0 = no cap (default:
    /// adaptive concurrency finds the rate the API sustains).
    pub requests_per_second: f64,
    /// Requests in flight at most: 0 = adaptive (grows while latency holds, backs off on 429,
    /// 503, timeouts or rising latency); a number fixes the limit.
    pub max_concurrency: usize,
    /// PEM bundle of extra CA certificates trusted for the token endpoint and the API (e.g.
    /// a TLS-inspecting proxy's CA), in addition to the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Largest response body accepted, after decompression (e.g. `16MiB`): what bounds the
    /// memory a page can take, whatever a server sends.
    pub max_page_bytes: String,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            region: None,
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
            requests_per_second: 0.0,
            max_concurrency: 0,
            ca_bundle: None,
            max_page_bytes: "16MiB".into(),
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
    /// Memory for Parquet row groups being built, shared by every open file; when it is
    /// used up, row groups are ended early (smaller, same data).
    pub buffer_memory: String,
    /// Memory for the record ids of the windows being read; past it, windows other than
    /// the oldest wait before their next page.
    pub dedup_memory: String,
    /// Windows fetched at once (backfill and catch-up runs); requests in flight are further
    /// bounded by `api.max_concurrency` or the adaptive limit.
    pub concurrency: usize,
    /// Give up a run after this long (committed windows stay committed); empty = no deadline.
    pub run_deadline: Option<String>,
    /// A record holding text a strict JSON reader refuses (a lone surrogate escape, a number
    /// out of range): `quarantine` (kept as sent under `_quarantine/`, counted, the export
    /// goes on) or `fail` (the window fails, naming the record's page and byte offset).
    pub on_invalid_record: String,
    /// Permissions of every file the exporter creates locally (output, state database, staging),
    /// as octal (`0600`); folders get the same plus search (`0700`). Audit data names people.
    pub file_mode: String,
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
            zstd_level: 1,
            row_group_rows: 50_000,
            file_max_rows: 1_000_000,
            file_max_bytes: "512MiB".into(),
            buffer_memory: "32MiB".into(),
            dedup_memory: "32MiB".into(),
            concurrency: 8,
            run_deadline: None,
            on_invalid_record: "quarantine".into(),
            file_mode: "0600".into(),
        }
    }
}

/// `[state]`: the SQLite checkpoint database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateSection {
    /// Path of the SQLite database (its folder is created). One process at a time holds it (an
    /// OS lock on the file itself).
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
    /// `/readyz` answers 503 once this many passes in a row have failed (at least 1).
    pub unready_after_failures: u32,
    /// `/readyz` also answers 503 while a stream's covered end is further behind now than this
    /// (e.g. `2h`); empty = never (only failed passes count).
    pub unready_after_lag: Option<String>,
}

impl Default for DaemonSection {
    fn default() -> Self {
        DaemonSection {
            listen: "0.0.0.0:9464".into(),
            unready_after_failures: 1,
            unready_after_lag: None,
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

impl RawConfig {
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

    /// `export.file_mode` as the process umask that creates files with that mode and folders
    /// with it plus search where it allows reading (`0600` → umask `077`: files 0600, folders
    /// 0700; `0640` → `027`).
    pub fn umask(&self) -> Result<u32, super::ConfigError> {
        let s = self.export.file_mode.trim();
        let mode = u32::from_str_radix(s.strip_prefix("0o").unwrap_or(s), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| super::invalid("export.file_mode", format!("{s:?} is not an octal mode such as 0600 or 0640")))?;
        if mode & 0o600 != 0o600 {
            return Err(super::invalid(
                "export.file_mode",
                format!("{s} must let the owner read and write (0600 at least)"),
            ));
        }
        if mode & 0o111 != 0 {
            return Err(super::invalid("export.file_mode", format!("{s} must not make files executable")));
        }
        Ok(0o777 & !(mode | ((mode & 0o444) >> 2)))
    }

    /// Checks `[log]` before logging starts: `format` is `text` or `json`, `level` a level or
    /// filter (`info`, `debug,hyper=warn`).
    pub fn check_log(&self) -> Result<(), super::ConfigError> {
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(super::invalid(
                "log.format",
                format!("must be text or json, not {:?}", self.log.format),
            ));
        }
        // A bare word that is no level would parse as a target name and log everything.
        let levels = ["error", "warn", "info", "debug", "trace", "off"];
        let directives_ok = self
            .log
            .level
            .split(',')
            .all(|d| d.contains('=') || levels.contains(&d.trim().to_ascii_lowercase().as_str()));
        // `RUST_LOG`, when set, replaces `log.level`.
        let overridden = std::env::var("RUST_LOG").is_ok_and(|v| tracing_subscriber::EnvFilter::try_new(v).is_ok());
        if !overridden && (!directives_ok || tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err()) {
            return Err(super::invalid(
                "log.level",
                format!("{:?} is not a level (error, warn, info, debug, trace) or a filter", self.log.level),
            ));
        }
        Ok(())
    }

    /// The Pushgateway group URL for `command` (`{push_url}/metrics/job/{push_job}/command/{command}`),
    /// or `None` without `metrics.push_url`.
    pub fn push_target(&self, command: &str) -> Result<Option<url::Url>, super::ConfigError> {
        let Some(base) = self.metrics.push_url.as_ref().map(|s| s.expose().trim()).filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let mut url = url::Url::parse(base).map_err(|e| super::invalid("metrics.push_url", format!("is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(super::invalid("metrics.push_url", "must be http:// or https://"));
        }
        let job = self.metrics.push_job.trim();
        if job.is_empty() {
            return Err(super::invalid("metrics.push_job", "must not be empty"));
        }
        url.path_segments_mut()
            .map_err(|()| super::invalid("metrics.push_url", "cannot take a path"))?
            .pop_if_empty()
            .extend(["metrics", "job", job, "command", command]);
        Ok(Some(url))
    }

    /// Every key (`section.key`) the configuration accepts, from the definitions themselves.
    pub fn keys() -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(serde_json::Value::Object(sections)) = serde_json::to_value(RawConfig::default()) {
            for (section, v) in sections {
                if let serde_json::Value::Object(keys) = v {
                    out.extend(keys.keys().map(|k| format!("{section}.{k}")));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_raw_layer_redacts() {
        let mut c = RawConfig::default();
        c.auth.client_secret = Some("s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(!c.redacted_toml().contains("s3cret"));
    }

    #[test]
    fn keys_list_every_section() {
        let k = RawConfig::keys();
        for key in [
            "auth.client_id",
            "api.region",
            "export.lookback",
            "state.path",
            "schedule.cron",
            "daemon.listen",
            "log.level",
        ] {
            assert!(k.iter().any(|x| x == key), "{key} in {k:?}");
        }
    }
}
