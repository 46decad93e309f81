//! Identity-service outages: transient token-endpoint failures (503) are retried with the
//! shared backoff policy and, when they outlast it, fail with exit 4 (the service did not
//! answer), never exit 3 (which tells the operator the credential is bad). A rejected
//! credential is still exit 3.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::*;

/// The production backoff (500 ms doubling, full jitter, 8 retries), not the fast test one.
const DEFAULT_BACKOFF: [(&str, &str); 2] = [
    ("AOS_EXPORT_API__RETRY_INITIAL_BACKOFF", "500ms"),
    ("AOS_EXPORT_API__RETRY_MAX_BACKOFF", "30s"),
];

#[tokio::test(flavor = "multi_thread")]
async fn three_and_a_half_seconds_of_token_503s_are_ridden_out() {
    let mut cfg = emu_config(2, 200);
    cfg.token_unavailable_until = Some(Instant::now() + Duration::from_millis(3500));
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-03"], &DEFAULT_BACKOFF).await;
    assert_ok(&o);
    let c = emu.counters();
    assert!(
        c.token_unavailable.load(Ordering::Relaxed) >= 2,
        "the outage was hit and retried: {} 503s",
        c.token_unavailable.load(Ordering::Relaxed)
    );
    assert!(c.tokens_issued.load(Ordering::Relaxed) >= 1);
    assert!(stderr(&o).contains("token request failed; retrying"), "{}", stderr(&o));
    let (from, to) = range(2);
    assert_same_multiset(&read_all(&s.out()), &emu.ground_truth(from, to));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_identity_service_that_stays_down_is_exit_4_not_a_bad_credential() {
    let mut cfg = emu_config(1, 50);
    cfg.token_unavailable_until = Some(Instant::now() + Duration::from_secs(3600));
    let emu = start(cfg).await;
    let s = setup(&emu, "");
    let o = cli(
        &s,
        &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"],
        &[("AOS_EXPORT_API__MAX_RETRIES", "2")],
    )
    .await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("kept failing after 3 attempts") && err.contains("503"), "{err}");
    for wrong in ["rejected", "credential", "invalid_client", "check auth."] {
        assert!(!err.contains(wrong), "an outage must not blame the credential ({wrong}): {err}");
    }
    assert_eq!(emu.counters().token_unavailable.load(Ordering::Relaxed), 3, "1 try + 2 retries");
    assert_eq!(emu.audit_requests(), 0);
    assert!(read_all(&s.out()).is_empty(), "nothing exported");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_secret_is_exit_3_and_not_retried() {
    let emu = start(emu_config(1, 50)).await;
    let s = setup(&emu, "");
    std::fs::write(s.dir.path().join("secret"), "not-the-secret\n").unwrap();
    let o = cli(&s, &["backfill", "--from", "2024-03-01", "--to", "2024-03-02"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("invalid_client") && err.contains("401"), "{err}");
    assert!(!err.contains("not-the-secret"), "the secret never reaches a message: {err}");
    assert_eq!(
        emu.counters().token_requests.load(Ordering::Relaxed),
        1,
        "a rejection is not retried"
    );
}
