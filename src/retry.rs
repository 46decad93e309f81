//! The one retry policy, shared by the token endpoint (auth) and the audit API: exponential
//! backoff with full jitter, `Retry-After` honoured up to a cap, and sleeps that end early on
//! cancellation. What is retryable is each caller's decision; how long to wait is this
//! module's.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Backoff and retry limits (`api.max_retries`, `api.retry_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of one request after a retryable failure.
    pub max_retries: u32,
    /// First backoff; doubles per retry, with full jitter.
    pub initial_backoff: Duration,
    /// Largest backoff between two retries.
    pub max_backoff: Duration,
    /// Largest wait honoured from a `Retry-After` header.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
        }
    }
}

/// The sleep was cut short by cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl RetryPolicy {
    /// Whether a request that has failed `failures` times may be tried again.
    pub fn may_retry(&self, failures: u32) -> bool {
        failures <= self.max_retries
    }

    /// The wait before the next try after `failures` (≥ 1) failures: the server's
    /// `Retry-After` (capped) when it sent one, else full-jitter exponential backoff.
    pub fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(ra) = retry_after {
            return ra.min(self.retry_after_max);
        }
        let cap = self
            .initial_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.max_backoff);
        Duration::from_secs_f64(rand::rng().random_range(0.0..=cap.as_secs_f64()))
    }
}

/// Sleeps `d`, or less if `cancel` fires first.
pub async fn sleep(d: Duration, cancel: &CancellationToken) -> Result<(), Cancelled> {
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = cancel.cancelled() => Err(Cancelled),
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

    #[test]
    fn backoff_is_capped_and_honours_retry_after() {
        let p = RetryPolicy {
            max_retries: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            retry_after_max: Duration::from_secs(2),
        };
        for f in 1..10 {
            assert!(p.backoff(f, None) <= Duration::from_millis(250));
        }
        assert_eq!(p.backoff(1, Some(Duration::from_secs(60))), Duration::from_secs(2));
        assert!(p.may_retry(3) && !p.may_retry(4));
    }
}
