//! `vacuum`: deletes the data files no table version within the retention needs.
//!
//! A file goes when it is not active and either a `remove` of it is older than the retention
//! (a compaction replaced it; time travel to versions within the retention still finds it), or
//! no commit ever added it and it was written before the retention (an attempt that never
//! reached the table). Only `dt=…` folders are touched: never the log, the markers
//! (`_aos-audit-export/`) or the quarantine (`_quarantine/`).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use object_store::ObjectStoreExt;

use super::log::percent_decode;
use super::{DeltaTable, StoreError, kernel};

/// What a vacuum deleted (or, dry, would delete).
#[derive(Debug, Default, Clone, Copy)]
pub struct Vacuumed {
    /// Files deleted.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files kept because a version within the retention may read them.
    pub kept: u64,
}

impl DeltaTable {
    /// Deletes (unless `dry_run`) the files of `dt=…` folders that no version within
    /// `retention` reads: removed by a commit before it, or never added and named as `ours`
    /// says this program names files (another tool's file is left alone).
    pub async fn vacuum(
        &self,
        retention: chrono::Duration,
        dry_run: bool,
        ours: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vacuumed, StoreError> {
        let cutoff = chrono::Utc::now() - retention;
        let active: HashSet<String> = self.view().await?.files.into_keys().collect();
        // Every path a commit added, and when a commit removed it (the log's JSON commits;
        // files added in commits a log clean-up removed are either active or unreachable).
        let mut added: HashSet<String> = HashSet::new();
        let mut removed: HashMap<String, i64> = HashMap::new();
        let mut logs = self.store.list(Some(&self.log_dir));
        let mut commits = Vec::new();
        while let Some(m) = logs.next().await {
            let m = m.map_err(|e| kernel("cannot list the table's log", e))?;
            if m.location.as_ref().ends_with(".json") && !m.location.as_ref().ends_with("_last_checkpoint") {
                commits.push(m.location);
            }
        }
        drop(logs);
        for c in commits {
            let body = self.store.get(&c).await.map_err(|e| kernel("cannot read the table's log", e))?;
            let bytes = body.bytes().await.map_err(|e| kernel("cannot read the table's log", e))?;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
                    continue;
                };
                if let Some(p) = v.pointer("/add/path").and_then(|p| p.as_str()) {
                    added.insert(percent_decode(p));
                }
                if let Some(p) = v.pointer("/remove/path").and_then(|p| p.as_str()) {
                    let at = v.pointer("/remove/deletionTimestamp").and_then(|t| t.as_i64()).unwrap_or(i64::MAX);
                    let e = removed.entry(percent_decode(p)).or_insert(at);
                    *e = (*e).max(at);
                }
            }
        }
        // Paths a log may hold as absolute URIs: relative to the root, or vacuum stops (a file
        // outside the root, or under another spelling of it, could be taken for an orphan).
        let root = self.root.as_str().to_string();
        let relative = |p: String| -> Result<String, StoreError> {
            if !p.contains("://") && !p.starts_with('/') {
                return Ok(p);
            }
            p.strip_prefix(&root)
                .map(str::to_string)
                .ok_or_else(|| kernel("vacuum refused", format!("the log names {p}, outside the table root {root}")))
        };
        let added: HashSet<String> = added.into_iter().map(relative).collect::<Result<_, _>>()?;
        let removed: HashMap<String, i64> = removed
            .into_iter()
            .map(|(p, t)| relative(p).map(|p| (p, t)))
            .collect::<Result<_, _>>()?;
        let active: HashSet<String> = active.into_iter().map(relative).collect::<Result<_, _>>()?;
        let mut out = Vacuumed::default();
        let mut listed = self.store.list(Some(&self.prefix));
        let mut doomed = Vec::new();
        while let Some(m) = listed.next().await {
            let m = m.map_err(|e| kernel("cannot list the table", e))?;
            let rel: Vec<String> = m
                .location
                .prefix_match(&self.prefix)
                .map(|it| it.map(|p| p.as_ref().to_string()).collect())
                .unwrap_or_default();
            let [part, name] = rel.as_slice() else { continue };
            if !part.starts_with("dt=") {
                continue;
            }
            let path = rel.join("/");
            if active.contains(&path) {
                continue;
            }
            let old = match removed.get(&path) {
                Some(at) => *at < cutoff.timestamp_millis(),
                None => !added.contains(&path) && ours(name) && m.last_modified < cutoff,
            };
            if old {
                out.files += 1;
                out.bytes += m.size;
                doomed.push(m.location);
            } else {
                out.kept += 1;
            }
        }
        drop(listed);
        if !dry_run {
            for loc in doomed {
                match self.store.delete(&loc).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(kernel("cannot delete a vacuumed file", e)),
                }
            }
        }
        Ok(out)
    }
}
