//! `status` and `verify`: the read model of the state, printed for people or as JSON.

use anyhow::Context;
use chrono::{DateTime, Utc};

use crate::config::RawConfig;
use crate::config::settings::spool_path;
use crate::error::{self, Mismatch};
use crate::sink::readback;

/// `3d 04h`, `2h 05m`, `0h 12m`.
fn human_lag(d: chrono::Duration) -> String {
    let m = d.num_minutes().max(0);
    if m >= 48 * 60 {
        format!("{}d {:02}h", m / 1440, (m % 1440) / 60)
    } else {
        format!("{}h {:02}m", m / 60, m % 60)
    }
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 { format!("{b} B") } else { format!("{v:.1} {}", units[i]) }
}

/// Gaps of each stream's coverage in `[export.start, now − lag)`: what the next `run` exports.
fn gaps(coverage: &[(DateTime<Utc>, DateTime<Utc>)], start: DateTime<Utc>, until: DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    crate::planner::gaps(start, until, coverage)
}

/// Delta mode: the table's version and active files per partition (files, rows, bytes).
struct TableInfo {
    version: Option<u64>,
    per_partition: std::collections::BTreeMap<String, (u64, u64, u64)>,
    files: std::collections::HashMap<String, crate::store::delta::ActiveFile>,
}

async fn table_info(output: &str, state: &std::path::Path) -> anyhow::Result<TableInfo> {
    let store = crate::store::Store::open(output, &spool_path(state))?;
    let view = store.delta_table()?.view().await?;
    let mut per_partition: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for f in view.files.values() {
        let part = f.path.split_once('/').map_or("", |p| p.0).to_string();
        let e = per_partition.entry(part).or_default();
        *e = (e.0 + 1, e.1 + f.rows.unwrap_or(0), e.2 + f.size);
    }
    Ok(TableInfo {
        version: view.version,
        per_partition,
        files: view.files,
    })
}

/// The settings `status` reports from: those the last writer recorded in the state (the data
/// was written with them), else this configuration's, saying so.
struct ReportSettings {
    start: DateTime<Utc>,
    lag: chrono::Duration,
    /// One line for people.
    line: String,
    /// The same for `--json` (`settings`).
    json: serde_json::Value,
}

fn written_with(
    cp: &crate::checkpoint::Checkpoint,
    export: &crate::config::settings::ExportSettings,
    now: DateTime<Utc>,
) -> anyhow::Result<ReportSettings> {
    let format = export.format_name();
    let output = crate::config::without_credentials(&export.output);
    let configured =
        serde_json::json!({"start": export.start_setting, "lag_seconds": export.lag.num_seconds(), "output": output, "format": format});
    let recorded: Option<serde_json::Value> = cp.written_with()?.and_then(|s| serde_json::from_str(&s).ok());
    let Some(w) = recorded else {
        return Ok(ReportSettings {
            start: export.start,
            lag: export.lag,
            line: format!(
                "settings: not recorded in this state (an earlier version wrote it): gaps follow this configuration (export.start {}, export.lag {}s)",
                export.start_setting,
                export.lag.num_seconds()
            ),
            json: serde_json::json!({"source": "configuration", "configured": configured}),
        });
    };
    let rec_start = w["start"].as_str().unwrap_or_default();
    let start = crate::config::parse_instant_or_ago(rec_start, now).unwrap_or(export.start);
    let lag = w["lag_seconds"].as_i64().map_or(export.lag, chrono::Duration::seconds);
    // Starts compare as the instants they mean now (`2024-03-01` is `2024-03-01T00:00:00Z`).
    let same = |k: &str| match k {
        "start" => crate::config::parse_instant_or_ago(&export.start_setting, now) == Some(start),
        _ => w[k] == configured[k],
    };
    let differs: Vec<String> = ["start", "lag_seconds", "output", "format"]
        .iter()
        .filter(|k| !same(k))
        .map(|k| format!("{k} {} (recorded {})", configured[*k], w[*k]))
        .collect();
    let mut line = format!(
        "settings: as the last writer recorded them at {}: export.start {rec_start}, export.lag {}s, output {}, format {}",
        w["recorded_at"].as_str().unwrap_or("?"),
        lag.num_seconds(),
        w["output"].as_str().unwrap_or("?"),
        w["format"].as_str().unwrap_or("?")
    );
    if !differs.is_empty() {
        line.push_str(&format!(
            "\n  this configuration differs ({}): what follows is reported with the recorded settings",
            differs.join(", ")
        ));
    }
    Ok(ReportSettings {
        start,
        lag,
        line,
        json: serde_json::json!({"source": "recorded", "recorded": w, "configured": configured, "configuration_differs": !differs.is_empty()}),
    })
}

/// `status [--json]`.
pub(super) async fn status(raw: &RawConfig, json: bool, now: DateTime<Utc>) -> anyhow::Result<u8> {
    let export = raw.validate_export(now)?;
    let state = raw.validate_state()?;
    let cp = crate::checkpoint::Checkpoint::open_read(&state)
        .with_context(|| format!("no state at state.path {} (has a run happened yet?)", state.display()))?;
    let r = cp.report()?;
    let table = if export.delta {
        Some(table_info(&export.output, &state).await?)
    } else {
        None
    };
    let settings = written_with(&cp, &export, now)?;
    let (start, lag) = (settings.start, settings.lag);
    // Whole seconds, as window bounds are: a sub-second `now` would show a phantom gap below a
    // second after every run.
    let until = DateTime::from_timestamp((now - lag).timestamp(), 0).unwrap_or(now - lag);
    // Streams in effect are the configured ones; others in the state are earlier filters.
    let configured: Vec<String> = raw.validate_streams()?.into_iter().map(|s| s.id).collect();
    let in_effect = |id: &str| configured.iter().any(|c| c == id);
    // How far a stream is exported: its watermark, or (before the prefix from `export.start`
    // is complete, e.g. after a backfill alone) the end of its newest committed range.
    let exported_to = |s: &crate::checkpoint::StreamStatus| s.watermark.or_else(|| s.coverage.iter().map(|c| c.1).max());
    if json {
        let mut v = serde_json::to_value(&r)?;
        if let Some(streams) = v.get_mut("streams").and_then(|s| s.as_array_mut()) {
            for (sv, s) in streams.iter_mut().zip(&r.streams) {
                let active = in_effect(&s.id);
                let g = if active { gaps(&s.coverage, start, until) } else { vec![] };
                sv["gaps"] = serde_json::to_value(g)?;
                sv["in_effect"] = active.into();
                sv["exported_to"] = serde_json::to_value(exported_to(s))?;
                sv["lag_seconds"] = serde_json::to_value(exported_to(s).map(|t| (now - t).num_seconds()))?;
            }
            for id in configured.iter().filter(|c| !r.streams.iter().any(|s| &s.id == *c)) {
                streams.push(serde_json::json!({"id": id, "in_effect": true, "coverage": [], "gaps": gaps(&[], start, until), "watermark": null, "exported_to": null, "lag_seconds": null}));
            }
        }
        if let Some(t) = &table {
            let per_day: serde_json::Map<String, serde_json::Value> = t
                .per_partition
                .iter()
                .map(|(p, (n, rows, bytes))| (p.clone(), serde_json::json!({"files": n, "rows": rows, "bytes": bytes})))
                .collect();
            v["table"] = serde_json::json!({"version": t.version, "active_files": t.files.len(), "partitions": per_day});
        }
        v["settings"] = settings.json;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(error::OK);
    }
    println!("state: {}", r.state_path);
    println!("{}", settings.line);
    for s in &r.streams {
        let filters = match (s.product_types.is_empty(), s.geo_locations.is_empty()) {
            (true, true) => "all products, all locations".to_string(),
            _ => format!("productTypes=[{}] geoLocations=[{}]", s.product_types, s.geo_locations),
        };
        let active = in_effect(&s.id);
        let retired = if active {
            ""
        } else {
            " [not in effect: no configured stream has these filters]"
        };
        match exported_to(s) {
            Some(w) => {
                let what = if s.watermark.is_some() {
                    "exported up to"
                } else {
                    "exported ranges end at"
                };
                println!(
                    "stream {} ({filters}){retired}: {what} {} ({} behind now), {} windows, {} records",
                    s.id,
                    w.to_rfc3339(),
                    human_lag(now - w),
                    s.windows_committed,
                    s.records_written,
                );
                let g = gaps(&s.coverage, start, until);
                if active && g.is_empty() {
                    println!("  coverage: complete from {} to now − lag", start.to_rfc3339());
                }
                for (a, b) in g.iter().filter(|_| active) {
                    println!("  gap: {} .. {} (the next run exports it)", a.to_rfc3339(), b.to_rfc3339());
                }
                if s.quarantined > 0 {
                    println!(
                        "  quarantined: {} records holding text a strict JSON reader refuses, kept as sent in _quarantine/",
                        s.quarantined
                    );
                }
                if s.out_of_range > 0 {
                    println!(
                        "  records returned from a neighbouring window: {} (exported by the window holding their instant)",
                        s.out_of_range
                    );
                }
            }
            None => println!("stream {} ({filters}){retired}: nothing exported yet", s.id),
        }
    }
    for id in configured.iter().filter(|c| !r.streams.iter().any(|s| &s.id == *c)) {
        println!("stream {id}: nothing exported yet");
    }
    let (files, rows, bytes) = r
        .partitions
        .iter()
        .fold((0, 0, 0), |a, p| (a.0 + p.files, a.1 + p.rows, a.2 + p.bytes));
    println!(
        "files: {files} in {} partitions, {rows} rows, {}",
        r.partitions.len(),
        human_bytes(bytes)
    );
    for p in &r.partitions {
        println!(
            "  {:<16} files {:>4}  rows {:>10}  {:>10}",
            p.partition,
            p.files,
            p.rows,
            human_bytes(p.bytes)
        );
    }
    if let Some(t) = &table {
        match t.version {
            Some(v) => println!("Delta table: version {v}, {} active files", t.files.len()),
            None => println!("Delta table: not created yet"),
        }
        for (p, (n, rows, bytes)) in &t.per_partition {
            println!("  {p:<16} files {n:>4}  rows {rows:>10}  {:>10}", human_bytes(*bytes));
        }
    }
    println!("last runs:");
    for run in &r.runs {
        let secs = run
            .finished_at
            .map(|f| format!("{:.1}s", (f - run.started_at).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "  #{:<4} {:<8} {}  {:<11} {:>5} windows {:>10} records  {secs}{}",
            run.id,
            run.command,
            run.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
            run.status,
            run.windows,
            run.records_written,
            run.error.as_deref().map(|e| format!("  error: {e}")).unwrap_or_default()
        );
    }
    if r.pending_attempts > 0 {
        println!("uncommitted attempts: {} (cleaned up by the next run)", r.pending_attempts);
    }
    Ok(error::OK)
}

/// What `verify` found.
pub(super) struct Verified {
    /// Files in the manifest.
    pub files: usize,
    /// Rows in the files that matched.
    pub rows: u64,
    /// `(path, what is wrong)`, one per problem.
    pub problems: Vec<(String, String)>,
    /// Folder mode: data files the manifest does not know (nor an attempt in flight).
    pub strays: Vec<String>,
    /// The output, as logs name it.
    pub output: String,
}

/// Checks every manifest file (and, in Delta mode, the table) against the lake; reads only.
pub(super) async fn check(raw: &RawConfig, now: DateTime<Utc>) -> anyhow::Result<Verified> {
    use sha2::Digest;
    let export = raw.validate_export(now)?;
    let state = raw.validate_state()?;
    let cp = crate::checkpoint::Checkpoint::open_read(&state).with_context(|| format!("no state at state.path {}", state.display()))?;
    let store = crate::store::Store::open(&export.output, &spool_path(&state))?;
    // Listed before the manifest is read: a window a running exporter commits meanwhile is in
    // the manifest, never taken for a stray.
    // Then the attempts in flight, then the manifest: a commit moves a file from the first to
    // the second in one transaction, so a listed file of a live attempt is in one of them.
    let listed = if export.delta { Vec::new() } else { store.data_files().await? };
    let pending: Vec<String> = cp.pending()?.into_iter().map(|p| p.prefix).collect();
    let files = cp.files()?;
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut rows_total = 0;
    for f in &files {
        let mut bad = |m: String| problems.push((f.path.clone(), m));
        let data = match store.read(&f.path).await {
            Ok(d) => d,
            Err(e) => {
                bad(format!("missing or unreadable ({e})"));
                continue;
            }
        };
        if data.len() as u64 != f.bytes {
            bad(format!("{} bytes, manifest says {}", data.len(), f.bytes));
            continue;
        }
        let sha = hex::encode(sha2::Sha256::digest(&data));
        if sha != f.sha256 {
            bad(format!("SHA-256 {sha} differs from the manifest's {}", f.sha256));
            continue;
        }
        match readback::count_rows(&f.path, data) {
            Ok(n) if n == f.rows => rows_total += n,
            Ok(n) => bad(format!("{n} rows, manifest says {}", f.rows)),
            Err(e) => bad(format!("unreadable ({e})")),
        }
    }
    let mut strays = Vec::new();
    // Delta mode: every active file of the table against the log (exists, size, rows), and
    // every data file of the manifest in the table.
    if export.delta {
        let t = table_info(&export.output, &state).await?;
        let manifest: std::collections::HashMap<&str, &crate::checkpoint::FileRow> = files.iter().map(|f| (f.path.as_str(), f)).collect();
        for a in t.files.values() {
            let (size, rows) = match manifest.get(a.path.as_str()) {
                Some(m) => (m.bytes, Some(m.rows)),
                None => match store.read(&a.path).await {
                    Ok(d) => (d.len() as u64, readback::count_rows(&a.path, d).ok()),
                    Err(e) => {
                        problems.push((a.path.clone(), format!("in the table's log, missing or unreadable ({e})")));
                        continue;
                    }
                },
            };
            if size != a.size {
                problems.push((a.path.clone(), format!("{size} bytes, the table's log says {}", a.size)));
            } else if a.rows.is_some() && rows != a.rows {
                problems.push((a.path.clone(), format!("{rows:?} rows, the table's log says {:?}", a.rows)));
            }
        }
        for f in files.iter().filter(|f| !crate::model::is_quarantine(&f.partition)) {
            if !t.files.contains_key(&f.path) {
                problems.push((f.path.clone(), "in the manifest but not in the Delta table".into()));
            }
        }
    } else {
        // Folder mode: every file a reader of the folder sees is one the manifest accounts for
        // (a file of an attempt in flight, published and not yet committed, excepted).
        let known: std::collections::HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for (path, _) in listed {
            let name = path.rsplit_once('/').map_or(path.as_str(), |p| p.1);
            if !known.contains(path.as_str()) && !pending.iter().any(|p| crate::model::is_attempt_file(name, p)) {
                strays.push(path);
            }
        }
        strays.sort();
    }
    Ok(Verified {
        files: files.len(),
        rows: rows_total,
        problems,
        strays,
        output: store.describe(),
    })
}

/// `verify [--json]`: prints what [`check`] found (after what a repair did, if one ran).
pub(super) async fn verify(raw: &RawConfig, json: bool, now: DateTime<Utc>, repaired: Option<serde_json::Value>) -> anyhow::Result<u8> {
    let v = check(raw, now).await?;
    let mut problems: Vec<String> = v.problems.iter().map(|(p, m)| format!("{p}: {m}")).collect();
    let (files, rows_total) = (v.files, v.rows);
    if json {
        let mut out = serde_json::json!({"files": files, "rows": rows_total, "problems": problems, "strays": v.strays});
        if let Some(r) = repaired {
            out["repair"] = r;
        }
        println!("{out}");
    }
    problems.extend(
        v.strays.iter().map(|p| {
            format!("{p}: a data file the manifest does not know (readers of the folder see it; `verify --repair` sets it aside)")
        }),
    );
    if !json {
        for p in &problems {
            println!("MISMATCH {p}");
        }
        println!(
            "verified {files} files in {}: {rows_total} rows, {} problems",
            v.output,
            problems.len()
        );
    }
    if problems.is_empty() {
        Ok(error::OK)
    } else {
        Err(Mismatch(format!("verify found {} problem(s); first: {}", problems.len(), problems[0])).into())
    }
}
