//! Tests of [`super`]: validation of every section.

use super::*;
use crate::config::parse_instant;

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
    assert!(!format!("{:?}", base().validate(Utc::now()).unwrap()).contains("s3cret"));
}

#[test]
fn environments_and_regions_pick_documented_endpoints() {
    let mut c = base();
    for (env, url, graph) in [
        (
            "gov",
            "https://identity-gov.avepointonlineservices.com/connect/token",
            "graph-gov.avepointonlineservices.com",
        ),
        (
            "aos2",
            "https://identity-aos2.avepointonlineservices.com/connect/token",
            "graph-aos2.avepointonlineservices.com",
        ),
        (
            "fedramp",
            "https://identity.online15.net/connect/token",
            "graphusgovapi.online15.net",
        ),
    ] {
        c.auth.environment = env.into();
        let s = c.validate(Utc::now()).unwrap();
        assert_eq!(s.auth.token_url.as_str(), url);
        assert_eq!(s.api.base_url.host_str(), Some(graph), "{env} picks its own graph host");
    }
    c.auth.environment = "gov".into();
    c.api.region = Some("us".into());
    let e = c.validate(Utc::now()).unwrap_err().to_string();
    assert!(e.starts_with("api.region") && e.contains("contradicts"), "{e}");
    c.auth.environment = "mars".into();
    c.api.region = None;
    assert!(c.validate(Utc::now()).unwrap_err().to_string().starts_with("auth.environment"));
    c.auth.environment = "commercial".into();
    c.api.region = Some("de".into());
    assert_eq!(
        c.validate(Utc::now()).unwrap().api.base_url.as_str(),
        "https://graph-de.avepointonlineservices.com/"
    );
    c.api.region = Some("uae".into());
    assert_eq!(
        c.validate(Utc::now()).unwrap().api.base_url.host_str(),
        Some("graph-uae.avepointonlineservices.com")
    );
    c.api.region = Some("xx".into());
    assert!(c.validate(Utc::now()).unwrap_err().to_string().starts_with("api.region"));
    c.auth.token_url = Some("https://login.example.com/connect/token".into());
    c.api.base_url = Some("https://graph.example.com".into());
    let s = c.validate(Utc::now()).unwrap();
    assert_eq!(s.auth.token_url.host_str(), Some("login.example.com"));
    assert_eq!(s.api.base_url.host_str(), Some("graph.example.com"));
}

#[test]
fn overlapping_streams_are_refused() {
    let mut c = base();
    let stream = |products: &[&str]| crate::config::raw::StreamSection {
        name: None,
        product_types: products.iter().map(|s| s.to_string()).collect(),
        geo_locations: vec![],
    };
    c.api.streams = vec![stream(&["Portal"]), stream(&["SMP"])];
    assert_eq!(c.validate(Utc::now()).unwrap().api.streams.len(), 2);
    c.api.streams = vec![stream(&["Portal", "SMP"]), stream(&["SMP"])];
    let e = c.validate(Utc::now()).unwrap_err().to_string();
    assert!(e.starts_with("api.streams") && e.contains("overlap"), "{e}");
}

#[test]
fn a_cron_that_does_not_parse_is_a_config_error() {
    let mut c = base();
    c.schedule.cron = "0 */15 * * * mondays".into();
    assert!(c.validate(Utc::now()).unwrap_err().to_string().starts_with("schedule.cron"));
}

#[test]
fn unsupported_output_schemes_are_refused() {
    let mut c = base();
    for bad in ["wasbs://c@a.blob.core.windows.net/x", "gcs://b/x", "S3://b/x", "http://h/x"] {
        c.export.output = bad.into();
        let e = c.validate(Utc::now()).unwrap_err().to_string();
        assert!(e.starts_with("export.output") && e.contains("s3://"), "{bad}: {e}");
    }
    for good in [
        "./out",
        "/data/lake",
        "file:///data/lake",
        "s3://b/x",
        "az://c/x",
        "abfss://c@a.dfs.core.windows.net/x",
        "gs://b/x",
    ] {
        c.export.output = good.into();
        assert!(c.validate(Utc::now()).is_ok(), "{good}");
    }
}

#[test]
fn unready_after_failures_defaults_to_one_and_must_be_positive() {
    assert_eq!(base().validate(Utc::now()).unwrap().daemon.unready_after_failures, 1);
    let mut c = base();
    c.daemon.unready_after_failures = 3;
    assert_eq!(c.validate(Utc::now()).unwrap().daemon.unready_after_failures, 3);
    c.daemon.unready_after_failures = 0;
    let e = c.validate(Utc::now()).unwrap_err().to_string();
    assert!(e.starts_with("daemon.unready_after_failures"), "{e}");
}

#[test]
fn durations_that_move_window_bounds_are_whole_seconds() {
    for key in ["window", "lag", "lookback"] {
        let mut c = base();
        let v = "90m500ms".to_string();
        match key {
            "window" => c.export.window = v,
            "lag" => c.export.lag = v,
            _ => c.export.lookback = v,
        }
        let e = c.validate(Utc::now()).unwrap_err().to_string();
        assert!(e.starts_with(&format!("export.{key}")) && e.contains("whole seconds"), "{e}");
    }
}
