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

/// Every key `docs/configuration.md` or `config/example.toml` names, as `section.key`.
fn documented_keys(path: &str) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap();
    let mut section = String::new();
    let mut keys = std::collections::BTreeSet::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if path.ends_with(".md") {
            if let Some(rest) = line.strip_prefix("## `[") {
                section = rest.split(']').next().unwrap_or_default().to_string();
            } else if line.starts_with("## ") {
                section.clear();
            } else if let Some(rest) = line.strip_prefix("| `")
                && !section.is_empty()
            {
                let key = rest.split('`').next().unwrap_or_default();
                keys.insert(if key.contains('.') {
                    key.to_string()
                } else {
                    format!("{section}.{key}")
                });
            }
        } else if let Some(rest) = l.strip_prefix('[').filter(|r| !r.starts_with('[')) {
            section = rest.trim_end_matches(']').to_string();
        } else if l.starts_with("[[") {
            // `[[api.streams]]` tables sit among the [api] keys (commented out in the example).
            section = "api".into();
            keys.insert("api.streams".into());
        } else if let Some((key, _)) = l.split_once(" = ")
            && !key.contains(' ')
            && !(section == "api" && key == "name")
        {
            keys.insert(format!("{section}.{key}"));
        }
    }
    keys
}

#[test]
fn the_config_reference_and_the_example_list_exactly_the_keys_that_exist() {
    let real: std::collections::BTreeSet<String> = aos_audit_export::config::RawConfig::keys().into_iter().collect();
    for doc in ["docs/configuration.md", "config/example.toml"] {
        let listed = documented_keys(doc);
        let missing: Vec<_> = real.difference(&listed).collect();
        let unknown: Vec<_> = listed.difference(&real).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{doc}: missing {missing:?}, not a key {unknown:?}"
        );
    }
}
