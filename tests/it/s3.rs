//! S3 output against a real S3 implementation: moto's server (PyPI `moto[server]`), started by
//! the test on 127.0.0.1 and stopped with it. `.ci/run` installs moto and sets
//! `AOS_TEST_REQUIRE_MOTO=1`, so in CI this test cannot silently skip.

use std::time::Duration;

use crate::common::*;

fn moto_available() -> bool {
    std::process::Command::new("moto_server")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn export_to_s3_and_verify() {
    if !moto_available() {
        assert!(
            std::env::var("AOS_TEST_REQUIRE_MOTO").is_err(),
            "moto_server is required here: pip install 'moto[server]'"
        );
        eprintln!("SKIPPED: moto_server not installed (pip install 'moto[server]')");
        return;
    }
    let port = free_port();
    let _moto = tokio::process::Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let s3 = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        if http.get(&s3).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "moto_server started");
    assert!(
        http.put(format!("{s3}/lake")).send().await.unwrap().status().is_success(),
        "bucket created"
    );

    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let env = [
        ("AWS_ENDPOINT", s3.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let verified = backfill_remote_and_verify(&s, "s3://lake/aos", &env).await;
    // Read the bucket back with a separate signed S3 client and compare with the ground truth.
    use futures::TryStreamExt;
    use object_store::{ObjectStore, ObjectStoreExt};
    let store = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&s3)
        .with_allow_http(true)
        .with_bucket_name("lake")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_region("us-east-1")
        .build()
        .unwrap();
    let prefix = object_store::path::Path::from("aos");
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let keys: Vec<String> = objects.iter().map(|o| o.location.to_string()).collect();
    assert!(
        keys.len() >= 3 && keys.iter().all(|k| k.starts_with("aos/dt=2024-03-0") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(verified.contains(&format!("verified {} files", keys.len())), "{verified}");
    let mirror = s.dir.path().join("mirror");
    for o in &objects {
        let data = store.get(&o.location).await.unwrap().bytes().await.unwrap();
        let p = mirror.join(o.location.to_string().strip_prefix("aos/").unwrap());
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let (from, to) = range(3);
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));
}
