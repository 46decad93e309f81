//! What the output itself says it holds: small control objects (the commit markers) and
//! listings of the data files and markers, so a new, lost or stale state can learn the lake.

use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::{Store, StoreError, sync_dir};
use crate::model::MARKER_DIR;

impl Store {
    /// Reads the object at `rel`, or `None` if there is none.
    pub async fn read_if_exists(&self, rel: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Store::Local { root } => match std::fs::read(root.join(rel)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StoreError::Io {
                    path: root.join(rel),
                    source,
                }),
            },
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                let err = |m: String| StoreError::Object {
                    path: path.to_string(),
                    message: m,
                };
                match store.get(&path).await {
                    Ok(got) => Ok(Some(got.bytes().await.map_err(|e| err(e.to_string()))?.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(err(e.to_string())),
                }
            }
        }
    }

    /// The last `n` bytes of the object at `rel`, whose size is `size` (all of it when smaller):
    /// a Parquet footer without reading the file.
    pub async fn read_tail(&self, rel: &str, size: u64, n: u64) -> Result<Vec<u8>, StoreError> {
        let start = size.saturating_sub(n);
        match self {
            Store::Local { root } => {
                use std::io::{Read, Seek};
                let path = root.join(rel);
                let io = |source| StoreError::Io {
                    path: path.clone(),
                    source,
                };
                let mut f = std::fs::File::open(&path).map_err(io)?;
                f.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
                let mut out = Vec::with_capacity((size - start) as usize);
                f.take(size - start).read_to_end(&mut out).map_err(io)?;
                Ok(out)
            }
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                let got = store.get_range(&path, start..size).await.map_err(|e| StoreError::Object {
                    path: path.to_string(),
                    message: e.to_string(),
                })?;
                Ok(got.to_vec())
            }
        }
    }

    /// The size of the object at `rel`, or `None` if there is none.
    pub async fn size(&self, rel: &str) -> Result<Option<u64>, StoreError> {
        match self {
            Store::Local { root } => match std::fs::metadata(root.join(rel)) {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StoreError::Io {
                    path: root.join(rel),
                    source,
                }),
            },
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                match store.head(&path).await {
                    Ok(m) => Ok(Some(m.size)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(StoreError::Object {
                        path: path.to_string(),
                        message: e.to_string(),
                    }),
                }
            }
        }
    }

    /// Deletes the staging copies (`.tmp-…`) that [`Store::put_small`] leaves in the markers
    /// folder when the process dies mid-write (a local output only: an object store's put is
    /// atomic). A second writer's copy in flight (another deployment on the same output) is
    /// written again by [`Store::put_small`] when it vanishes.
    pub fn remove_stale_marker_copies(&self) -> Result<usize, StoreError> {
        let Store::Local { root } = self else { return Ok(0) };
        let dir = root.join(crate::model::MARKER_DIR);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
        let mut removed = 0;
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(crate::model::STAGING_MARK) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => removed += 1,
                    // Renamed into place meanwhile by a second writer on the same output.
                    Err(source) if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(StoreError::Io { path: e.path(), source }),
                }
            }
        }
        if removed > 0 {
            sync_dir(&dir).map_err(|source| StoreError::Io { path: dir.clone(), source })?;
        }
        Ok(removed)
    }

    /// Writes a small object at `rel` whole (locally: a fsynced temp file renamed into place,
    /// and the folders fsynced), replacing any earlier one.
    pub async fn put_small(&self, rel: &str, data: Vec<u8>) -> Result<(), StoreError> {
        match self {
            Store::Local { root } => {
                let dest = root.join(rel);
                let io = |source| StoreError::Io {
                    path: dest.clone(),
                    source,
                };
                let dir = dest.parent().unwrap_or(root);
                std::fs::create_dir_all(dir).map_err(io)?;
                // Another writer on the same output (a second deployment, with its own state
                // and lock) deletes staging copies at its start-up: a copy of ours that
                // vanishes before its rename is written again. The nonce keeps two writers'
                // copies apart.
                let mut attempts = 0;
                loop {
                    let tmp = dir.join(format!(
                        "{}{:08x}-{}",
                        crate::model::STAGING_MARK,
                        rand::random::<u32>(),
                        dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
                    ));
                    {
                        use std::io::Write as _;
                        let mut f = std::fs::File::create(&tmp).map_err(io)?;
                        f.write_all(&data).map_err(io)?;
                        f.sync_all().map_err(io)?;
                    }
                    match std::fs::rename(&tmp, &dest) {
                        Ok(()) => break,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 8 => attempts += 1,
                        Err(e) => return Err(io(e)),
                    }
                }
                for d in [Some(dir), dir.parent()].into_iter().flatten() {
                    sync_dir(d).map_err(io)?;
                }
                Ok(())
            }
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                store.put(&path, data.into()).await.map_err(|e| StoreError::Object {
                    path: path.to_string(),
                    message: e.to_string(),
                })?;
                Ok(())
            }
        }
    }

    /// Deletes the object at `rel`; one that does not exist is already deleted.
    pub async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self {
            Store::Local { root } => {
                let p = root.join(rel);
                match std::fs::remove_file(&p) {
                    Ok(()) => sync_dir(p.parent().unwrap_or(root)).map_err(|source| StoreError::Io { path: p.clone(), source }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(source) => Err(StoreError::Io { path: p, source }),
                }
            }
            Store::Object { store, prefix, .. } => {
                let path = Self::obj_path(prefix, rel);
                match store.delete(&path).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(StoreError::Object {
                        path: path.to_string(),
                        message: e.to_string(),
                    }),
                }
            }
        }
    }

    /// Moves the object at `rel` to `to` (both relative to the root), bytes unchanged: a file
    /// set aside by a repair, out of every reader's sight. `Ok(false)`: there is none at `rel`.
    pub async fn move_aside(&self, rel: &str, to: &str) -> Result<bool, StoreError> {
        match self {
            Store::Local { root } => {
                let (from, dest) = (root.join(rel), root.join(to));
                let io = |source| StoreError::Io {
                    path: dest.clone(),
                    source,
                };
                if !from.exists() {
                    return Ok(false);
                }
                let parent = dest.parent().unwrap_or(root);
                std::fs::create_dir_all(parent).map_err(io)?;
                std::fs::rename(&from, &dest).map_err(io)?;
                sync_dir(parent).map_err(io)?;
                sync_dir(from.parent().unwrap_or(root)).map_err(io)?;
                Ok(true)
            }
            Store::Object { store, prefix, .. } => {
                let (from, dest) = (Self::obj_path(prefix, rel), Self::obj_path(prefix, to));
                let err = |e: object_store::Error| StoreError::Object {
                    path: from.to_string(),
                    message: e.to_string(),
                };
                match store.copy(&from, &dest).await {
                    Ok(()) => {}
                    Err(object_store::Error::NotFound { .. }) => return Ok(false),
                    Err(e) => return Err(err(e)),
                }
                match store.delete(&from).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
                    Err(e) => Err(err(e)),
                }
            }
        }
    }

    /// Keys of the commit markers after `after` (all of them without), sorted.
    pub async fn marker_keys_after(&self, after: Option<&str>) -> Result<Vec<String>, StoreError> {
        let mut keys: Vec<String> = match self {
            Store::Local { root } => {
                let dir = root.join(MARKER_DIR);
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
                    Err(source) => return Err(StoreError::Io { path: dir, source }),
                };
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
                    .filter(|k| !k.starts_with('.'))
                    .collect()
            }
            Store::Object { store, prefix, .. } => {
                let dir = Self::obj_path(prefix, MARKER_DIR);
                let mut list = match after {
                    Some(a) => store.list_with_offset(Some(&dir), &Self::obj_path(&dir, &format!("{a}.json"))),
                    None => store.list(Some(&dir)),
                };
                let mut keys = Vec::new();
                while let Some(meta) = list.next().await {
                    let meta = meta.map_err(|e| StoreError::Object {
                        path: dir.to_string(),
                        message: e.to_string(),
                    })?;
                    if let Some(k) = meta.location.filename().and_then(|n| n.strip_suffix(".json")) {
                        keys.push(k.to_string());
                    }
                }
                keys
            }
        };
        keys.retain(|k| after.is_none_or(|a| k.as_str() > a));
        keys.sort();
        Ok(keys)
    }

    /// Every data file in the output (`dt=…/name`, and the quarantine's `_quarantine/dt=…/name`;
    /// hidden and `_` names excluded) with its size, relative to the output root.
    pub async fn data_files(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let visible = |n: &str| !n.starts_with('.') && !n.starts_with('_');
        let mut out = Vec::new();
        match self {
            Store::Local { root } => {
                let parts = match std::fs::read_dir(root) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(source) => {
                        return Err(StoreError::Io {
                            path: root.clone(),
                            source,
                        });
                    }
                };
                // The partition folders, and those of the quarantine.
                let mut folders: Vec<(String, std::path::PathBuf)> = Vec::new();
                for part in parts.flatten() {
                    let pname = part.file_name().to_string_lossy().into_owned();
                    if pname.starts_with("dt=") && part.path().is_dir() {
                        folders.push((pname, part.path()));
                    } else if pname == crate::model::QUARANTINE_DIR && part.path().is_dir() {
                        let inner = std::fs::read_dir(part.path()).map_err(|source| StoreError::Io { path: part.path(), source })?;
                        for q in inner.flatten() {
                            let qname = q.file_name().to_string_lossy().into_owned();
                            if qname.starts_with("dt=") && q.path().is_dir() {
                                folders.push((format!("{pname}/{qname}"), q.path()));
                            }
                        }
                    }
                }
                for (pname, path) in folders {
                    let files = std::fs::read_dir(&path).map_err(|source| StoreError::Io {
                        path: path.clone(),
                        source,
                    })?;
                    for f in files.flatten() {
                        let name = f.file_name().to_string_lossy().into_owned();
                        if visible(&name) && f.path().is_file() {
                            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                            out.push((format!("{pname}/{name}"), size));
                        }
                    }
                }
            }
            Store::Object { store, prefix, .. } => {
                let mut list = store.list(Some(prefix));
                while let Some(meta) = list.next().await {
                    let meta = meta.map_err(|e| StoreError::Object {
                        path: prefix.to_string(),
                        message: e.to_string(),
                    })?;
                    let rel: Vec<String> = meta
                        .location
                        .prefix_match(prefix)
                        .map(|it| it.map(|p| p.as_ref().to_string()).collect())
                        .unwrap_or_default();
                    match rel.as_slice() {
                        [part, name] if part.starts_with("dt=") && visible(name) => out.push((format!("{part}/{name}"), meta.size)),
                        [q, part, name] if q == crate::model::QUARANTINE_DIR && part.starts_with("dt=") && visible(name) => {
                            out.push((format!("{q}/{part}/{name}"), meta.size));
                        }
                        _ => {}
                    }
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
