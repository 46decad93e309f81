//! Parsers of setting values: durations, sizes, instants, URLs and secret files. Each error
//! names the key it was parsing.

use std::path::Path;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use url::Url;

use super::secret::Secret;
use super::{ConfigError, invalid};

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

/// The longest duration a setting takes: arithmetic on instants stays far from overflow.
const LONGEST: std::time::Duration = std::time::Duration::from_secs(200 * 366 * 86_400);

/// [`parse_duration`], as a `chrono::Duration`, at most 200 years.
pub fn parse_chrono(key: &'static str, s: &str) -> Result<chrono::Duration, ConfigError> {
    let d = parse_duration(key, s)?;
    if d > LONGEST {
        return Err(invalid(key, format!("duration {s:?} is too large (at most 200 years)")));
    }
    chrono::Duration::from_std(d).map_err(|_| invalid(key, format!("duration {s:?} is too large")))
}

/// Parses an instant: RFC 3339, or `YYYY-MM-DD` meaning UTC midnight.
pub fn parse_instant(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    // Four-digit years only, as in RFC 3339 (`%Y` alone would take `-2024` or `+12345`).
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .filter(|_| s.len() == 10 && s.as_bytes()[0].is_ascii_digit())?;
    Some(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?))
}

/// Checks a URL and that it is https, or http on a loopback host.
pub fn check_url(key: &'static str, s: &str) -> Result<Url, ConfigError> {
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

/// Reads a secret from `path`, without trailing line breaks; an empty file is an error.
pub fn read_secret_file(key: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let s = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let s = s.trim_end_matches(['\r', '\n']).to_string();
    if s.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(Secret::new(s))
}

/// Parses an instant, or a duration meaning "that long before `now`" (e.g. `7d`), truncated to
/// whole seconds: window bounds name files to the second, so two ranges that differ only below
/// a second must never exist (their files would share names).
pub fn parse_instant_or_ago(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let t = match parse_instant(s) {
        Some(t) => t,
        None => {
            let ago = humantime::parse_duration(s.trim()).ok().filter(|d| *d <= LONGEST)?;
            now.checked_sub_signed(chrono::Duration::from_std(ago).ok()?)?
        }
    };
    DateTime::from_timestamp(t.timestamp(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("k", "512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("k", "64 MB").unwrap(), 64_000_000);
        assert_eq!(parse_size("k", "1000").unwrap(), 1000);
        assert!(parse_size("k", "12 parsecs").is_err());
        assert!(parse_size("k", "0").is_err());
    }

    #[test]
    fn instants_dates_and_ago() {
        let now = parse_instant("2026-01-31T00:00:00Z").unwrap();
        assert_eq!(parse_instant_or_ago("2026-01-01", now), parse_instant("2026-01-01T00:00:00Z"));
        assert_eq!(parse_instant_or_ago("10d", now), parse_instant("2026-01-21T00:00:00Z"));
        assert_eq!(parse_instant_or_ago("yesterday", now), None);
        let odd = parse_instant("2026-01-31T00:00:00.123456Z").unwrap();
        assert_eq!(
            parse_instant_or_ago("7d", odd),
            parse_instant("2026-01-24T00:00:00Z"),
            "whole seconds"
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(check_url("k", "http://example.com").unwrap_err().to_string().contains("https"));
        assert!(check_url("k", "http://127.0.0.1:8080").is_ok());
        assert!(check_url("k", "ftp://x").is_err());
    }
}
