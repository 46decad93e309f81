//! Azure Blob output against Azurite (npm `azurite`), started by the test on 127.0.0.1 and
//! stopped with it. The container is created and the output read back with Microsoft's Python
//! SDK (`azure-storage-blob`), a client independent of ours. `.ci/run` installs both and sets
//! `AOS_TEST_REQUIRE_AZURITE=1`, so in CI this test cannot silently skip.

use std::time::Duration;

use crate::common::*;

const CONN: &str = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;";

pub(crate) fn available() -> bool {
    let azurite = std::process::Command::new("azurite-blob")
        .arg("--help")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let sdk = std::process::Command::new("python3")
        .args(["-c", "import azure.storage.blob"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    azurite && sdk
}

/// Azurite on a free port of 127.0.0.1 storing into `work`, with the container `lake`
/// created: the process (killed on drop), its port and a connection string.
pub(crate) async fn azurite(work: &std::path::Path) -> (tokio::process::Child, u16, String) {
    let port = free_port();
    let child = tokio::process::Command::new("azurite-blob")
        .args([
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--silent",
            "--skipApiVersionCheck",
            "--location",
        ])
        .arg(work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "azurite started");
    let conn = CONN.replace("{port}", &port.to_string());
    python(
        "import sys; from azure.storage.blob import BlobServiceClient as B; B.from_connection_string(sys.argv[1]).create_container('lake')",
        &[&conn],
    );

    (child, port, conn)
}

/// Downloads every blob under `prefix/` of the container `lake` into `dest` (names relative
/// to the prefix); returns the blob names, one per line.
pub(crate) fn mirror(conn: &str, prefix: &str, dest: &std::path::Path) -> String {
    python(
        r#"
import os, sys
from azure.storage.blob import BlobServiceClient as B
c = B.from_connection_string(sys.argv[1]).get_container_client('lake')
p = sys.argv[3] + '/'
for b in c.list_blobs(name_starts_with=p):
    path = os.path.join(sys.argv[2], b.name[len(p):])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(c.download_blob(b.name).readall())
    print(b.name)
"#,
        &[conn, dest.to_str().unwrap(), prefix],
    )
}

fn python(script: &str, args: &[&str]) -> String {
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "python: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_to_azure_blob_and_verify() {
    if !available() {
        assert!(
            std::env::var("AOS_TEST_REQUIRE_AZURITE").is_err(),
            "azurite and azure-storage-blob are required here (npm install -g azurite; pip install azure-storage-blob)"
        );
        eprintln!("SKIPPED: azurite-blob or the azure-storage-blob Python SDK not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let (_azurite, port, conn) = azurite(work.path()).await;

    let emu = start(emu_config(3, 300)).await;
    let s = setup(&emu, "");
    let url = format!("http://127.0.0.1:{port}");
    let env = [("AZURE_STORAGE_USE_EMULATOR", "true"), ("AZURITE_BLOB_STORAGE_URL", url.as_str())];
    let verified = backfill_remote_and_verify(&s, "az://lake/aos", &env).await;
    let mirror_dir = s.dir.path().join("mirror");
    let listed = mirror(&conn, "aos", &mirror_dir);
    let (markers, names): (Vec<&str>, Vec<&str>) = listed.lines().partition(|n| n.starts_with("aos/_aos-audit-export/commits/"));
    assert_eq!(markers.len(), 3, "a commit marker per window: {markers:?}");
    assert!(
        names.len() >= 3 && names.iter().all(|n| n.starts_with("aos/dt=2024-03-0") && n.ends_with(".parquet")),
        "{names:?}"
    );
    assert!(verified.contains(&format!("verified {} files", names.len())), "{verified}");
    let (from, to) = range(3);
    assert_same_multiset(&read_all(&mirror_dir), &emu.ground_truth(from, to));
}
