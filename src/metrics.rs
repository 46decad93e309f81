//! Process-wide operator signals, kept in a `prometheus-client` registry and served by the
//! daemon's `/metrics`. Every stage may record into [`Metrics`] (it is a sink for numbers, not
//! a stage of the flow); nothing reads them back to make decisions.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set naming a stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabel {
    /// Stream id.
    pub stream: String,
}

/// Label set naming a cause or outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// Cause (`throttled`, `server`, `timeout`, `connection`, `malformed`) or status code.
    pub cause: String,
}

/// Label set naming a command.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    /// `run`, `backfill`, `reconcile`.
    pub command: String,
}

/// All counters and gauges; cheap to clone handles share the same values.
pub struct Metrics {
    registry: Registry,
    runs_ok: Counter,
    runs_failed: Family<CauseLabel, Counter>,
    pass_seconds: Family<CommandLabel, Histogram>,
    pages: Counter,
    responses: Family<CauseLabel, Counter>,
    retries: Family<CauseLabel, Counter>,
    records_written: Counter,
    records_duplicate: Counter,
    bytes_written: Counter,
    out_of_range: Counter,
    quarantined: Counter,
    windows_committed: Counter,
    last_success: Gauge<f64, AtomicU64>,
    lag_seconds: Family<StreamLabel, Gauge>,
    concurrency: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("aos_export");
        let m = Metrics {
            runs_ok: Counter::default(),
            runs_failed: Family::default(),
            pass_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.1, 2.0, 14))),
            pages: Counter::default(),
            responses: Family::default(),
            retries: Family::default(),
            records_written: Counter::default(),
            records_duplicate: Counter::default(),
            bytes_written: Counter::default(),
            out_of_range: Counter::default(),
            quarantined: Counter::default(),
            windows_committed: Counter::default(),
            last_success: Gauge::default(),
            lag_seconds: Family::default(),
            concurrency: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "runs_ok",
            "Passes (run, backfill, reconcile) that finished successfully",
            m.runs_ok.clone(),
        );
        registry.register(
            "runs_failed",
            "Passes that failed or were interrupted, by cause (config, auth, api, output, state, deadline, interrupted, internal)",
            m.runs_failed.clone(),
        );
        registry.register("pass_duration_seconds", "Duration of a pass", m.pass_seconds.clone());
        registry.register("api_pages", "Valid pages fetched from the audit API", m.pages.clone());
        registry.register(
            "api_responses",
            "HTTP responses of the audit API by status code (\"error\" = no response)",
            m.responses.clone(),
        );
        registry.register("api_retries", "Audit API requests retried, by cause", m.retries.clone());
        registry.register("records_written", "Records written to the output", m.records_written.clone());
        registry.register(
            "records_deduplicated",
            "Records fetched again and recognised as already exported",
            m.records_duplicate.clone(),
        );
        registry.register("bytes_written", "Bytes of files published", m.bytes_written.clone());
        registry.register("windows_committed", "Windows committed", m.windows_committed.clone());
        registry.register(
            "records_out_of_range",
            "Records a padded query returned from a neighbouring window (exported by the window holding their instant)",
            m.out_of_range.clone(),
        );
        registry.register(
            "records_quarantined",
            "Records holding text a strict JSON reader refuses, kept as sent in _quarantine/ (export.on_invalid_record)",
            m.quarantined.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful pass",
            m.last_success.clone(),
        );
        registry.register(
            "watermark_lag_seconds",
            "How far the end of a stream's contiguous coverage is behind now",
            m.lag_seconds.clone(),
        );
        registry.register(
            "api_concurrency_limit",
            "Audit API requests allowed in flight (adaptive concurrency)",
            m.concurrency.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric (`application/openmetrics-text`).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Replaces the group at `url` (a Prometheus Pushgateway group, `PUT`) with these metrics in
    /// the classic text format. For commands that end (CronJobs, Jobs), which nobody scrapes.
    pub async fn push(&self, url: &url::Url) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let resp = client
            .put(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
            .body(self.encode_classic())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: String = resp.text().await.unwrap_or_default().chars().take(200).collect();
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(())
    }

    /// The classic Prometheus text format (`text/plain; version=0.0.4`), for parsers that do not
    /// speak OpenMetrics: a counter's `# TYPE`/`# HELP` name its `_total` samples, and the
    /// OpenMetrics-only lines (`# UNIT`, `# EOF`) are left out.
    pub fn encode_classic(&self) -> String {
        let open = self.encode();
        let counters: std::collections::HashSet<&str> = open
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
            .collect();
        let mut out = String::with_capacity(open.len());
        for line in open.lines() {
            if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
                continue;
            }
            let renamed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
                let rest = line.strip_prefix(p)?;
                let (name, tail) = rest.split_once(' ')?;
                counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
            });
            out.push_str(renamed.as_deref().unwrap_or(line));
            out.push('\n');
        }
        out
    }

    /// A pass ended: `failure` is `None`, or its cause (the exit code's class: `config`,
    /// `auth`, `api`, `output`, `state`, `deadline`, `interrupted`, `internal`).
    pub fn pass(&self, command: &str, failure: Option<&str>, seconds: f64) {
        match failure {
            None => {
                self.runs_ok.inc();
                self.last_success.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
            }
            Some(cause) => {
                self.runs_failed.get_or_create(&CauseLabel { cause: cause.into() }).inc();
            }
        }
        self.pass_seconds
            .get_or_create(&CommandLabel { command: command.into() })
            .observe(seconds);
    }

    /// A response (or, with `None`, a request that got none).
    pub fn api_response(&self, status: Option<u16>) {
        let cause = status.map(|s| s.to_string()).unwrap_or_else(|| "error".into());
        self.responses.get_or_create(&CauseLabel { cause }).inc();
    }

    /// A valid page was fetched.
    pub fn page_fetched(&self) {
        self.pages.inc();
    }

    /// A request will be retried because of `cause`.
    pub fn api_retry(&self, cause: &str) {
        self.retries.get_or_create(&CauseLabel { cause: cause.into() }).inc();
    }

    /// Records a padded query returned from a neighbouring window.
    pub fn out_of_range(&self, n: u64) {
        self.out_of_range.inc_by(n);
    }

    /// New records set aside in the quarantine.
    pub fn quarantined(&self, n: u64) {
        self.quarantined.inc_by(n);
    }

    /// A window committed.
    pub fn window_committed(&self, written: u64, duplicates: u64, bytes: u64) {
        self.windows_committed.inc();
        self.records_written.inc_by(written);
        self.records_duplicate.inc_by(duplicates);
        self.bytes_written.inc_by(bytes);
    }

    /// The adaptive concurrency limit is now `limit`.
    pub fn concurrency_limit(&self, limit: usize) {
        self.concurrency.set(limit as i64);
    }

    /// A stream's coverage end is `seconds` behind now.
    pub fn stream_lag(&self, stream: &str, seconds: i64) {
        self.lag_seconds.get_or_create(&StreamLabel { stream: stream.into() }).set(seconds);
    }

    /// Total responses received (any status), for tests and summaries.
    pub fn api_requests(&self) -> u64 {
        let text = self.encode();
        text.lines()
            .filter(|l| l.starts_with("aos_export_api_responses_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prometheus_text() {
        let m = Metrics::new();
        m.api_response(Some(200));
        m.api_response(Some(429));
        m.api_retry("throttled");
        m.window_committed(10, 2, 999);
        m.stream_lag("all", 60);
        m.pass("run", None, 1.5);
        m.pass("run", Some("auth"), 0.5);
        let t = m.encode();
        for needle in [
            "aos_export_api_responses_total{cause=\"429\"} 1",
            "aos_export_api_retries_total{cause=\"throttled\"} 1",
            "aos_export_records_written_total 10",
            "aos_export_bytes_written_total 999",
            "aos_export_watermark_lag_seconds{stream=\"all\"} 60",
            "aos_export_pass_duration_seconds_count{command=\"run\"} 2",
            "aos_export_runs_failed_total{cause=\"auth\"} 1",
            "# EOF",
        ] {
            assert!(t.contains(needle), "{needle} missing in\n{t}");
        }
        assert_eq!(m.api_requests(), 2);
        let classic = m.encode_classic();
        assert!(classic.contains("# TYPE aos_export_runs_failed_total counter\n"), "{classic}");
        assert!(classic.contains("# HELP aos_export_records_written_total "), "{classic}");
        assert!(!classic.contains("# EOF") && !classic.contains("# TYPE aos_export_runs_ok counter"));
    }
}
