//! S3 output against a real S3 implementation: moto's server (PyPI `moto[server]`), started by
//! the test on 127.0.0.1 and stopped with it. `.ci/run` installs moto and sets
//! `AOS_TEST_REQUIRE_MOTO=1`, so in CI this test cannot silently skip.

use std::path::Path;
use std::time::Duration;

use crate::common::*;

pub(crate) fn moto_available() -> bool {
    std::process::Command::new("moto_server")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A moto S3 server on 127.0.0.1 with the bucket `bucket` created; killed on drop.
pub(crate) struct Moto {
    _child: tokio::process::Child,
    /// `http://127.0.0.1:port`, the S3 endpoint.
    pub(crate) url: String,
}

impl Moto {
    pub(crate) async fn start(bucket: &str) -> Moto {
        let port = free_port();
        let child = tokio::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        // No proxy for the test's own requests, whatever the environment says.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut up = false;
        for _ in 0..300 {
            if http.get(&url).send().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(up, "moto_server started");
        assert!(
            http.put(format!("{url}/{bucket}")).send().await.unwrap().status().is_success(),
            "bucket created"
        );
        Moto { _child: child, url }
    }

    /// The environment that points object_store's S3 client at this server.
    pub(crate) fn env(&self) -> [(&str, &str); 5] {
        [
            ("AWS_ENDPOINT", self.url.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// Reads every object under `bucket/prefix/` back with a separate signed S3 client into
    /// the folder `dest` (keys relative to the prefix); returns the keys, sorted.
    pub(crate) async fn download(&self, bucket: &str, prefix: &str, dest: &Path) -> Vec<String> {
        use futures::TryStreamExt;
        use object_store::{ObjectStore, ObjectStoreExt};
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.url)
            .with_allow_http(true)
            .with_bucket_name(bucket)
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_region("us-east-1")
            .build()
            .unwrap();
        let objects: Vec<_> = store
            .list(Some(&object_store::path::Path::from(prefix)))
            .try_collect()
            .await
            .unwrap();
        let mut keys = Vec::new();
        for o in &objects {
            let key = o.location.to_string();
            let data = store.get(&o.location).await.unwrap().bytes().await.unwrap();
            let p = dest.join(key.strip_prefix(&format!("{prefix}/")).unwrap());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
            keys.push(key);
        }
        keys.sort();
        keys
    }
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
    let moto = Moto::start("lake").await;
    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let env = moto.env();
    let verified = backfill_remote_and_verify(&s, "s3://lake/aos", &env).await;
    // Read the bucket back with a separate signed S3 client and compare with the ground truth.
    let mirror = s.dir.path().join("mirror");
    let all = moto.download("lake", "aos", &mirror).await;
    let (markers, keys): (Vec<String>, Vec<String>) = all.into_iter().partition(|k| k.starts_with("aos/_aos-audit-export/commits/"));
    assert_eq!(markers.len(), 3, "a commit marker per window: {markers:?}");
    assert!(
        keys.len() >= 3 && keys.iter().all(|k| k.starts_with("aos/dt=2024-03-0") && k.ends_with(".parquet")),
        "{keys:?}"
    );
    assert!(verified.contains(&format!("verified {} files", keys.len())), "{verified}");
    let (from, to) = range(3);
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));
}

/// The lake is the source of truth in object storage too: the state lost between two runs,
/// the second learns the committed windows from the bucket's commit markers and writes nothing
/// twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_lost_state_never_duplicates_an_s3_lake() {
    if !moto_available() {
        assert!(std::env::var("AOS_TEST_REQUIRE_MOTO").is_err(), "moto_server is required here");
        eprintln!("SKIPPED: moto_server not installed");
        return;
    }
    let moto = Moto::start("lake").await;
    let emu = start(emu_config(4, 200)).await;
    let s = setup(&emu, "");
    let env = moto.env();
    let run = |now: &'static str| {
        let s = &s;
        let env = &env;
        async move { cli(s, &["--output", "s3://lake/aos", "--now", now, "run"], env).await }
    };
    assert_ok(&run("2024-03-03T00:00:00Z").await);
    std::fs::remove_dir_all(s.state().parent().unwrap()).unwrap();
    let o = run("2024-03-05T00:00:00Z").await;
    assert_ok(&o);
    assert!(stderr(&o).contains("adopted what the output holds"), "{}", stderr(&o));
    let mirror = s.dir.path().join("mirror");
    moto.download("lake", "aos", &mirror).await;
    let (from, to) = range(4);
    assert_same_multiset(&read_all(&mirror), &emu.ground_truth(from, to));
}
