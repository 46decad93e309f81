//! Bad configuration: one line naming the key or file, a non-zero exit, nothing written.

use crate::common::*;

async fn refused(extra_export: &str, edit: impl Fn(&str) -> String, expect: &str) {
    let emu = start(emu_config(1, 10)).await;
    let s = setup(&emu, extra_export);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, edit(&text)).unwrap();
    let o = cli(&s, &["run"], &[]).await;
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "exit code 2 for config errors; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(expect), "error names {expect:?}: {err}");
    assert!(!s.out().exists(), "no output written");
    assert!(!s.state().parent().unwrap().exists(), "no state written");
    assert_eq!(
        emu.audit_requests() + emu.counters().token_requests.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "no request sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_client_id() {
    refused(
        "",
        |t| t.lines().filter(|l| !l.starts_with("client_id")).collect::<Vec<_>>().join("\n"),
        "auth.client_id",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_key() {
    refused("colour = \"blue\"", |t| t.to_string(), "colour").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_duration() {
    refused("lookback = \"2 fortnights\"", |t| t.to_string(), "export.lookback").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn window_over_seven_days() {
    refused("window = \"8d\"", |t| t.to_string(), "export.window").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_secret_file() {
    refused("", |t| t.replace("/secret\"", "/no-such-secret\""), "no-such-secret").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn env_layer_overrides_file_and_is_checked() {
    let emu = start(emu_config(1, 10)).await;
    let s = setup(&emu, "");
    let o = cli(&s, &["run"], &[("AOS_EXPORT_EXPORT__WINDOW", "9d")]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("export.window"), "{}", stderr(&o));
}
