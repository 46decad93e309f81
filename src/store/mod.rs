//! Where published files live: a local folder, or object storage (S3, Azure Blob/ADLS Gen2,
//! GCS) through `object_store`.
//!
//! Publishing is atomic: locally a fsynced staging file (hidden `.tmp-` name in the final
//! folder) is renamed over its final name and the folder is fsynced; in object storage a put
//! (multipart for large files) becomes visible whole. Readers never see a partial file under a
//! final name. Hive-style readers skip names starting with `.` or `_`, so staging files and the
//! `_state` folder of the demo are never read as data.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::model::{STAGING_MARK, is_attempt_file};

pub mod delta;
mod gcs;
mod lake;

/// Why the output could not be opened, written, listed or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `export.output` has an unsupported scheme, is not a valid URL, or `object_store` rejects it.
    #[error("export.output {output}: {message}")]
    Open {
        /// `export.output` as configured.
        output: String,
        /// Why it cannot be used.
        message: String,
    },
    /// A local file system operation (write check, rename, fsync, listing, delete, read) failed.
    #[error("output file {path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An object storage request (or reading the spooled file to upload) failed.
    #[error("object storage {path}: {message}")]
    Object {
        /// The object (or listed folder) path in the store.
        path: String,
        /// The error message.
        message: String,
    },
}

/// The output destination of published files.
pub enum Store {
    /// A local folder (a plain path or a `file://` URL).
    Local {
        /// The output root; partitions are its subfolders.
        root: PathBuf,
    },
    /// An object store (S3, Azure, GCS, or `memory://` in tests).
    Object {
        /// The `object_store` client.
        store: Arc<dyn ObjectStore>,
        /// The key prefix under which partitions are written (the URL's path).
        prefix: ObjPath,
        /// `export.output` as the user wrote it, for messages.
        display: String,
        /// Local folder where files are staged before upload.
        spool: PathBuf,
    },
}

/// URL schemes of object storage that `export.output` accepts (`memory://` is for tests).
pub const OBJECT_SCHEMES: &[&str] = &["s3", "s3a", "az", "azure", "abfs", "abfss", "adl", "gs", "memory"];

/// Checks that `output` is a local path, `file://`, or a supported object-store URL. Anything
/// else that looks like a URL (`wasbs://`, `gcs://`, `S3://`, `http://`) is refused: taken as a
/// local path it would silently become a folder named after it.
pub fn check_output(output: &str) -> Result<(), String> {
    if output.is_empty() {
        return Err("must not be empty".into());
    }
    let Some((scheme, _)) = output.split_once("://") else {
        return Ok(());
    };
    // `memory://` keeps nothing past the process: a test aid, never a production output.
    if scheme == "memory" && !cfg!(feature = "emulator") {
        return Err("memory:// keeps nothing; it exists only in test builds".into());
    }
    if scheme == "file" {
        return Ok(());
    }
    if OBJECT_SCHEMES.contains(&scheme) && scheme != "memory" {
        // The bucket (s3, gs), container (az) or filesystem@account (abfss) is the URL's host.
        let url = url::Url::parse(output).map_err(|e| format!("{output:?} is not a URL: {e}"))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("{output:?} names no bucket or container (e.g. {scheme}://my-bucket/audit)"));
        }
        return Ok(());
    }
    if scheme == "memory" {
        return Ok(());
    }
    Err(format!(
        "unsupported scheme {scheme:?} in {output:?}; use a local path, file://, s3://, az://, abfss://, gs:// (lower case)"
    ))
}

/// Files up to this size are uploaded in one request.
const SINGLE_PUT_MAX: u64 = 8 << 20;
/// Size of one multipart part.
const PART_SIZE: usize = 8 << 20;
/// Parts uploaded at once: memory stays at about `PARTS_IN_FLIGHT × PART_SIZE` per file.
const PARTS_IN_FLIGHT: usize = 4;

/// Streams `staged` into a multipart upload of `path`, with a bounded number of parts in
/// flight; on any failure the multipart upload is aborted, so no orphaned parts stay behind.
async fn upload_multipart(store: &dyn ObjectStore, path: &ObjPath, staged: &Path) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    let upload = store.put_multipart(path).await.map_err(|e| e.to_string())?;
    let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    let result: Result<(), String> = async {
        let mut file = tokio::fs::File::open(staged).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            w.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(|e| e.to_string())?;
            w.write(&buf[..n]);
        }
    }
    .await;
    match result {
        Ok(()) => w.finish().await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => {
            if let Err(abort) = w.abort().await {
                tracing::warn!(path = %path, error = %abort, "could not abort the multipart upload");
            }
            Err(e)
        }
    }
}

/// `spool/dt=…__name`: the flat spool name of a file bound for `rel`.
fn spool_staging(spool: &Path, rel: &str) -> PathBuf {
    spool.join(rel.replace('/', "__"))
}

/// Options for object_store taken from the environment (AWS_*, AZURE_*, GOOGLE_*), the same
/// variables the cloud SDKs read.
///
/// Proxies and CA roots need no option here: object_store sets no proxy of its own (so reqwest
/// reads `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY` itself, as for the API client; an
/// explicit `AWS_PROXY_URL` would replace that) and keeps the system roots, which on Linux honour
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`. `tests/it/proxy.rs` checks the proxy for S3 uploads.
fn env_options() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("AZURE_") || k.starts_with("GOOGLE_") || k.starts_with("OBJECT_STORE_"))
        .map(|(k, v)| {
            let v = if k == "GOOGLE_SERVICE_ACCOUNT_KEY" {
                gcs::emulator_key(v)
            } else {
                v
            };
            (k.to_ascii_lowercase(), v)
        })
        .collect()
}

#[cfg(test)]
thread_local! {
    /// Folders fsynced by this thread (tests read it: a publish must sync its folders).
    static SYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes a folder's entries (a rename, a new file, a deletion) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(test)]
    SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    Ok(())
}

/// Moves `staged` to `dest` atomically, never over an existing file: a hard link (which fails
/// if `dest` exists) and the removal of the staging name. Where the file system has no hard
/// links, a rename after checking that `dest` does not exist.
fn publish_local(staged: &Path, dest: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(staged, dest) {
        Ok(()) => std::fs::remove_file(staged),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(std::io::Error::new(
            e.kind(),
            "a file of this name is already published; refusing to overwrite it",
        )),
        Err(_) if !dest.exists() => std::fs::rename(staged, dest),
        Err(e) => Err(e),
    }
}

/// `root/dt=…/.tmp-name`: same folder as the final file, so the publishing rename is atomic.
fn local_staging(root: &Path, rel: &str) -> PathBuf {
    let p = root.join(rel);
    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    p.with_file_name(format!("{STAGING_MARK}{name}"))
}

impl Store {
    /// Opens `output`; `spool` is where files for object storage are staged before upload.
    pub fn open(output: &str, spool: &Path) -> Result<Store, StoreError> {
        check_output(output).map_err(|message| StoreError::Open {
            output: output.into(),
            message,
        })?;
        if !output.split_once("://").is_some_and(|(s, _)| OBJECT_SCHEMES.contains(&s)) {
            let root = PathBuf::from(output.strip_prefix("file://").unwrap_or(output));
            return Ok(Store::Local { root });
        }
        let url = url::Url::parse(output).map_err(|e| StoreError::Open {
            output: output.into(),
            message: e.to_string(),
        })?;
        let (store, prefix) = object_store::parse_url_opts(&url, env_options()).map_err(|e| StoreError::Open {
            output: output.into(),
            message: e.to_string(),
        })?;
        Ok(Store::Object {
            store: Arc::from(store),
            prefix,
            display: output.to_string(),
            spool: spool.to_path_buf(),
        })
    }

    /// The output as the user named it: the local root, or the object-store URL.
    pub fn describe(&self) -> String {
        match self {
            Store::Local { root } => root.display().to_string(),
            Store::Object { display, .. } => display.clone(),
        }
    }

    /// Checks the destination is usable before any API call: the local root can be created and
    /// written.
    pub fn check(&self) -> Result<(), StoreError> {
        if let Store::Local { root } = self {
            let io = |source| StoreError::Io {
                path: root.clone(),
                source,
            };
            std::fs::create_dir_all(root).map_err(io)?;
            // Named per process: two exporters starting on one output must not remove each
            // other's probe.
            let probe = root.join(format!(".aos-audit-export-write-test-{}", std::process::id()));
            std::fs::write(&probe, b"ok").map_err(io)?;
            std::fs::remove_file(&probe).map_err(io)?;
        }
        Ok(())
    }

    /// A function from final relative path to staging path, owned (for the sink).
    pub fn stager(&self) -> Box<dyn Fn(&str) -> PathBuf + Send + Sync> {
        match self {
            Store::Local { root } => {
                let root = root.clone();
                Box::new(move |rel| local_staging(&root, rel))
            }
            Store::Object { spool, .. } => {
                let spool = spool.clone();
                Box::new(move |rel| spool_staging(&spool, rel))
            }
        }
    }

    fn obj_path(prefix: &ObjPath, rel: &str) -> ObjPath {
        let mut p = prefix.clone();
        for part in rel.split('/') {
            p = p.clone().join(part);
        }
        p
    }

    /// Makes the staged file visible under `rel`. Locally a file already under that name is
    /// never replaced (the publish fails): a committed file is never written again. Names are
    /// unique per attempt, so in object storage (where a put replaces) that cannot happen.
    pub async fn publish(&self, staged: &Path, rel: &str) -> Result<(), StoreError> {
        match self {
            Store::Local { root } => {
                let dest = root.join(rel);
                publish_local(staged, &dest).map_err(|source| StoreError::Io {
                    path: dest.clone(),
                    source,
                })?;
                // The rename is durable only once the folder entry is, and a new folder
                // (`dt=…`, `_quarantine/dt=…`) only once its own entry in its parent is: fsync
                // every folder from the file's up to the output root.
                let dirs: Vec<&Path> = dest.ancestors().skip(1).take_while(|d| d.starts_with(root)).collect();
                for dir in dirs {
                    sync_dir(dir).map_err(|source| StoreError::Io {
                        path: dir.to_path_buf(),
                        source,
                    })?;
                }
                Ok(())
            }
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                let err = |m: String| StoreError::Object {
                    path: path.to_string(),
                    message: m,
                };
                let size = tokio::fs::metadata(staged).await.map_err(|e| err(e.to_string()))?.len();
                if size <= SINGLE_PUT_MAX {
                    let data = tokio::fs::read(staged).await.map_err(|e| err(e.to_string()))?;
                    store.put(&path, data.into()).await.map_err(|e| err(e.to_string()))?;
                } else {
                    upload_multipart(store.as_ref(), &path, staged).await.map_err(err)?;
                }
                let _ = tokio::fs::remove_file(staged).await;
                Ok(())
            }
        }
    }

    /// Deletes every file (published or staged) of the attempt `prefix` in `partitions`: the
    /// leftovers of an attempt that never committed. Names are matched exactly
    /// ([`is_attempt_file`]), never by bare prefix.
    pub async fn remove_attempt(&self, partitions: &[String], attempt: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        match self {
            Store::Local { root } => {
                for part in partitions {
                    let dir = root.join(part);
                    let entries = match std::fs::read_dir(&dir) {
                        Ok(e) => e,
                        // No folder (or something else in its place) holds none of our files.
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => continue,
                        Err(source) => return Err(StoreError::Io { path: dir, source }),
                    };
                    let before = removed;
                    for entry in entries.flatten() {
                        let name = entry.file_name().to_string_lossy().into_owned();
                        if is_attempt_file(&name, attempt) {
                            std::fs::remove_file(entry.path()).map_err(|source| StoreError::Io {
                                path: entry.path(),
                                source,
                            })?;
                            removed += 1;
                        }
                    }
                    // The deletions must be durable before the caller forgets the attempt, or a
                    // power loss could bring back a file nobody will clean up.
                    if removed > before {
                        sync_dir(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
                    }
                }
            }
            Store::Object { store, prefix, spool, .. } => {
                for part in partitions {
                    let dir = Self::obj_path(prefix, part);
                    let mut list = store.list(Some(&dir));
                    while let Some(meta) = list.next().await {
                        let meta = meta.map_err(|e| StoreError::Object {
                            path: dir.to_string(),
                            message: e.to_string(),
                        })?;
                        if meta.location.filename().is_some_and(|n| is_attempt_file(n, attempt)) {
                            store.delete(&meta.location).await.map_err(|e| StoreError::Object {
                                path: meta.location.to_string(),
                                message: e.to_string(),
                            })?;
                            removed += 1;
                        }
                    }
                    // Spooled uploads of the attempt.
                    if let Ok(entries) = std::fs::read_dir(spool) {
                        for entry in entries.flatten() {
                            let name = entry.file_name().to_string_lossy().into_owned();
                            let spooled = format!("{}__", part.replace('/', "__"));
                            if name.strip_prefix(&spooled).is_some_and(|n| is_attempt_file(n, attempt)) {
                                let _ = std::fs::remove_file(entry.path());
                            }
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// A published file opened for reading in place, when the output is a local folder
    /// (`None` for object storage, whose files are fetched with [`Store::read`]).
    pub fn open_local(&self, rel: &str) -> Option<Result<std::fs::File, StoreError>> {
        match self {
            Store::Local { root } => {
                let p = root.join(rel);
                Some(std::fs::File::open(&p).map_err(|source| StoreError::Io { path: p, source }))
            }
            Store::Object { .. } => None,
        }
    }

    /// Reads a published file back (for `verify`).
    pub async fn read(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Store::Local { root } => {
                let p = root.join(rel);
                std::fs::read(&p).map_err(|source| StoreError::Io { path: p, source })
            }
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                let err = |m: String| StoreError::Object {
                    path: path.to_string(),
                    message: m,
                };
                let got = store.get(&path).await.map_err(|e| err(e.to_string()))?;
                Ok(got.bytes().await.map_err(|e| err(e.to_string()))?.to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn large_files_stream_as_multipart_uploads_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("memory://", &dir.path().join("spool")).unwrap();
        let staged = dir.path().join("big");
        // 20 MiB + a tail: three parts, the last one short.
        let data: Vec<u8> = (0..(20 << 20) + 12345).map(|i| (i % 251) as u8).collect();
        std::fs::write(&staged, &data).unwrap();
        store.publish(&staged, "dt=2024-01-01/big.parquet").await.unwrap();
        assert_eq!(store.read("dt=2024-01-01/big.parquet").await.unwrap(), data);
        assert!(!staged.exists(), "the spool file is removed once uploaded");
    }

    /// Publishing makes the file durable where it is: the partition folder and (for a new
    /// partition) the root are fsynced after the rename; and a published name is never
    /// published over. Cleaning up an attempt fsyncs the folder it deleted from.
    #[tokio::test(flavor = "current_thread")]
    async fn publish_syncs_its_folders_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("out");
        let store = Store::open(root.to_str().unwrap(), &dir.path().join("spool")).unwrap();
        store.check().unwrap();
        std::fs::create_dir_all(root.join("dt=2024-01-01")).unwrap();
        let rel = "dt=2024-01-01/all-20240101T000000Z-20240102T000000Z-g0-00000001-p000.ndjson";
        let staged = (store.stager())(rel);
        std::fs::write(&staged, b"first\n").unwrap();
        SYNCED.with(|s| s.borrow_mut().clear());
        store.publish(&staged, rel).await.unwrap();
        let synced = SYNCED.with(|s| s.borrow().clone());
        assert!(synced.contains(&root.join("dt=2024-01-01")), "{synced:?}");
        assert!(synced.contains(&root), "{synced:?}");
        assert!(!staged.exists());
        std::fs::write(&staged, b"second\n").unwrap();
        assert!(store.publish(&staged, rel).await.is_err(), "a published name is never replaced");
        assert_eq!(std::fs::read(root.join(rel)).unwrap(), b"first\n");
        SYNCED.with(|s| s.borrow_mut().clear());
        let parts = ["dt=2024-01-01".to_string()];
        let n = store
            .remove_attempt(&parts, "all-20240101T000000Z-20240102T000000Z-g0-00000001")
            .await
            .unwrap();
        assert_eq!(n, 2, "the published file and the staged one");
        assert!(SYNCED.with(|s| s.borrow().contains(&root.join("dt=2024-01-01"))));
    }

    #[test]
    fn unsupported_schemes_are_refused() {
        for bad in ["wasbs://c/x", "gcs://b/x", "S3://b/x", "http://h/x"] {
            assert!(check_output(bad).is_err(), "{bad}");
        }
        for good in ["./out", "file:///x", "s3://b/x", "gs://b/x", "abfss://c@a.dfs.core.windows.net/x"] {
            assert!(check_output(good).is_ok(), "{good}");
        }
    }
}
