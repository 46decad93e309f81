//! CLI glue: turns a parsed command line into calls on the library. `anyhow` lives here and in
//! `main` only.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::cli::{Cli, Command};
use crate::config::{self, RawConfig};
use crate::error::{self, Mismatch};
use crate::scheduler::{Exporter, RunSummary};

/// Sets up logging on stderr. `RUST_LOG` wins over the configured level.
pub fn init_tracing(level: &str, format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(format!("{level},tokio_cron_scheduler=warn,hyper_util=info,hyper=info")).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if format == "json" { b.json().try_init() } else { b.try_init() };
}

fn overrides(cli: &Cli) -> Vec<(&'static str, String)> {
    let mut o = Vec::new();
    if let Some(v) = &cli.output {
        o.push(("export.output", v.clone()));
    }
    if let Some(v) = &cli.format {
        o.push(("export.format", v.clone()));
    }
    if let Some(v) = &cli.state {
        o.push(("state.path", v.display().to_string()));
    }
    if let Some(v) = &cli.log_level {
        o.push(("log.level", v.clone()));
    }
    if let Some(v) = &cli.log_format {
        o.push(("log.format", v.clone()));
    }
    o
}

fn now_of(cli: &Cli) -> anyhow::Result<DateTime<Utc>> {
    match &cli.now {
        Some(s) => config::parse_instant(s).with_context(|| format!("--now {s:?} is not an RFC 3339 instant")),
        None => Ok(Utc::now()),
    }
}

/// Runs the command; returns the process exit code.
pub async fn dispatch(cli: Cli) -> anyhow::Result<u8> {
    let ov = overrides(&cli);
    let raw = config::load(cli.config.as_deref(), &ov)?;
    // The demo prints its own summary; per-window logs would bury it.
    let quiet = matches!(cli.command, Command::Demo { .. }) && cli.log_level.is_none();
    init_tracing(if quiet { "warn" } else { &raw.log.level }, &raw.log.format);
    let now = now_of(&cli)?;
    match cli.command {
        Command::Run => {
            let settings = raw.validate(now)?;
            let cancel = crate::shutdown::install();
            let ex = Exporter::new(settings).await?;
            let s = ex.run_once(now, &cancel).await?;
            print_summary("run", &ex, &s);
            Ok(error::OK)
        }
        Command::Backfill { from, to } => {
            let settings = raw.validate(now)?;
            let from_t =
                config::parse_instant(&from).with_context(|| format!("--from {from:?} is not an RFC 3339 instant or YYYY-MM-DD"))?;
            let to_t = match &to {
                Some(t) => config::parse_instant(t).with_context(|| format!("--to {t:?} is not an RFC 3339 instant or YYYY-MM-DD"))?,
                None => now,
            };
            if to_t <= from_t {
                bail!(config::ConfigError::Invalid {
                    key: "--to",
                    message: format!("{to_t} is not after --from {from_t}")
                });
            }
            let cancel = crate::shutdown::install();
            let ex = Exporter::new(settings).await?;
            let s = ex.backfill(from_t, to_t, now, &cancel).await?;
            print_summary("backfill", &ex, &s);
            Ok(error::OK)
        }
        Command::Daemon => {
            let settings = raw.validate(now)?;
            let cancel = crate::shutdown::install();
            crate::daemon::serve(settings, cancel).await?;
            Ok(error::OK)
        }
        Command::Status { json } => status(&raw, json),
        Command::Verify { json } => verify(&raw, json).await,
        Command::Token => token(&raw, now).await,
        Command::Demo { out } => demo(&out, cli.format.as_deref(), now).await,
        Command::Emulator {
            listen,
            days,
            records_per_day,
            seed,
            page_size,
            latency_ms,
            fault_rate,
            late_max,
            start,
        } => {
            let mut cfg = aos_emulator::EmulatorConfig::default();
            cfg.data.seed = seed;
            cfg.data.days = days;
            cfg.data.records_per_day = records_per_day;
            cfg.data.start = match start {
                Some(s) => config::parse_instant(&s).with_context(|| format!("--start {s:?} is not YYYY-MM-DD"))?,
                None => aos_emulator::data::midnight(Utc::now()) - chrono::Duration::days(days as i64),
            };
            cfg.data.max_delay = chrono::Duration::from_std(config::parse_duration("--late-max", &late_max)?)?;
            cfg.page_size = page_size.max(1);
            cfg.latency = std::time::Duration::from_millis(latency_ms);
            cfg.faults = aos_emulator::Faults::mixed(fault_rate.clamp(0.0, 1.0), seed);
            let emu = aos_emulator::EmulatorHandle::start(cfg, listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let (s, e) = emu.data_range();
            println!("AOS emulator listening on {}", emu.base_url());
            println!("  token URL:     {}", emu.token_url());
            println!("  audit API:     {}/aos/audit", emu.base_url());
            println!("  client id:     {}", aos_emulator::DEMO_CLIENT_ID);
            println!("  client secret: {} (emulator only)", aos_emulator::DEMO_CLIENT_SECRET);
            println!(
                "  data:          {} records from {} to {}",
                emu.all_records().len(),
                s.format("%Y-%m-%d"),
                e.format("%Y-%m-%d")
            );
            println!(
                "Point the exporter at it with AOS_EXPORT_AUTH__TOKEN_URL={} AOS_EXPORT_API__BASE_URL={}",
                emu.token_url(),
                emu.base_url()
            );
            let cancel = crate::shutdown::install();
            cancel.cancelled().await;
            emu.stop().await;
            Ok(error::OK)
        }
        Command::Config => {
            print!("{}", raw.redacted_toml());
            raw.validate(now)?;
            Ok(error::OK)
        }
    }
}

fn print_summary(command: &str, ex: &Exporter, s: &RunSummary) {
    println!(
        "{command}: wrote {} new records ({} fetched, {} already exported) in {} files from {} windows / {} pages to {} in {:.1}s",
        s.written,
        s.fetched,
        s.duplicates,
        s.files,
        s.windows,
        s.pages,
        ex.store.describe(),
        s.seconds
    );
    for st in &ex.settings.api.streams {
        if let Ok(Some(w)) = ex.checkpoint.watermark(&st.id) {
            println!("  stream {}: exported up to {}", st.id, w.to_rfc3339());
        }
    }
}

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

fn status(raw: &RawConfig, json: bool) -> anyhow::Result<u8> {
    let cp = crate::checkpoint::Checkpoint::open_read(&raw.state.path)
        .with_context(|| format!("no state at state.path {} (has a run happened yet?)", raw.state.path.display()))?;
    let r = cp.report()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(error::OK);
    }
    println!("state: {}", r.state_path);
    let now = Utc::now();
    for s in &r.streams {
        let filters = match (s.product_types.is_empty(), s.geo_locations.is_empty()) {
            (true, true) => "all products, all locations".to_string(),
            _ => format!("productTypes=[{}] geoLocations=[{}]", s.product_types, s.geo_locations),
        };
        match s.watermark {
            Some(w) => {
                println!(
                    "stream {} ({filters}): exported up to {} ({} behind now), {} windows, {} records, {} dedup keys",
                    s.id,
                    w.to_rfc3339(),
                    human_lag(now - w),
                    s.windows_committed,
                    s.records_written,
                    s.dedup_keys
                );
            }
            None => println!("stream {} ({filters}): nothing exported yet", s.id),
        }
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

/// Rows in a published file, counted from its bytes.
fn count_rows(path: &str, data: Vec<u8>) -> anyhow::Result<u64> {
    use std::io::Read;
    if path.ends_with(".parquet") {
        use parquet::file::reader::FileReader;
        let r = parquet::file::reader::SerializedFileReader::new(bytes::Bytes::from(data))?;
        return Ok(r.metadata().file_metadata().num_rows() as u64);
    }
    let mut text = Vec::new();
    if path.ends_with(".gz") {
        flate2::read::GzDecoder::new(data.as_slice()).read_to_end(&mut text)?;
    } else if path.ends_with(".zst") {
        zstd::stream::read::Decoder::new(data.as_slice())?.read_to_end(&mut text)?;
    } else {
        text = data;
    }
    Ok(text.iter().filter(|b| **b == b'\n').count() as u64)
}

async fn verify(raw: &RawConfig, json: bool) -> anyhow::Result<u8> {
    use sha2::Digest;
    let cp = crate::checkpoint::Checkpoint::open_read(&raw.state.path)
        .with_context(|| format!("no state at state.path {}", raw.state.path.display()))?;
    let store = crate::store::Store::open(&raw.export.output, &raw.state.path.with_extension("spool"))?;
    let files = cp.files()?;
    let mut problems = Vec::new();
    let mut rows_total = 0;
    for f in &files {
        let data = match store.read(&f.path).await {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{}: missing or unreadable ({e})", f.path));
                continue;
            }
        };
        if data.len() as u64 != f.bytes {
            problems.push(format!("{}: {} bytes, manifest says {}", f.path, data.len(), f.bytes));
            continue;
        }
        let sha = hex::encode(sha2::Sha256::digest(&data));
        if sha != f.sha256 {
            problems.push(format!("{}: SHA-256 {sha} differs from the manifest's {}", f.path, f.sha256));
            continue;
        }
        match count_rows(&f.path, data) {
            Ok(n) if n == f.rows => rows_total += n,
            Ok(n) => problems.push(format!("{}: {n} rows, manifest says {}", f.path, f.rows)),
            Err(e) => problems.push(format!("{}: unreadable ({e})", f.path)),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"files": files.len(), "rows": rows_total, "problems": problems})
        );
    } else {
        for p in &problems {
            println!("MISMATCH {p}");
        }
        println!(
            "verified {} files in {}: {} rows, {} problems",
            files.len(),
            store.describe(),
            rows_total,
            problems.len()
        );
    }
    if problems.is_empty() {
        Ok(error::OK)
    } else {
        Err(Mismatch(format!("verify found {} problem(s); first: {}", problems.len(), problems[0])).into())
    }
}

async fn token(raw: &RawConfig, now: DateTime<Utc>) -> anyhow::Result<u8> {
    let settings = raw.validate(now)?;
    let http = reqwest::Client::builder().timeout(settings.api.request_timeout).build()?;
    let tp = crate::auth::TokenProvider::new(settings.auth.clone(), http)?;
    let t = tp.token().await?;
    println!("client id:  {}", tp.client_id());
    println!("method:     {}", tp.method_description());
    println!("token URL:  {}", settings.auth.token_url);
    println!("scope:      {}", t.scope);
    println!(
        "expires:    {} (in {} s)",
        t.expires_at.to_rfc3339(),
        (t.expires_at - Utc::now()).num_seconds()
    );
    Ok(error::OK)
}

/// The README's first command: emulator + export into a local folder, checked against the
/// emulator's ground truth.
async fn demo(out: &Path, format: Option<&str>, now: DateTime<Utc>) -> anyhow::Result<u8> {
    let started = Instant::now();
    let emu = aos_emulator::EmulatorHandle::start(aos_emulator::EmulatorConfig::default(), "127.0.0.1:0".parse()?).await?;
    let (data_start, _) = emu.data_range();
    let mut raw = RawConfig::local(
        emu.token_url(),
        emu.base_url(),
        aos_emulator::DEMO_CLIENT_ID,
        aos_emulator::DEMO_CLIENT_SECRET,
    );
    raw.export.start = data_start.to_rfc3339();
    // The emulator's data is final: no lag needed.
    raw.export.lag = "0s".into();
    raw.export.output = out.display().to_string();
    if let Some(f) = format {
        raw.export.format = f.into();
    }
    raw.state.path = out.join("_state").join("demo.db");
    let settings = raw.validate(now)?;
    let cancel = crate::shutdown::install();
    let ex = Exporter::new(settings).await?;
    let s = ex.run_once(now, &cancel).await?;
    let truth = emu.all_records().len() as u64;
    let report = ex.checkpoint.report()?;
    let exported: u64 = report.partitions.iter().map(|p| p.rows).sum();
    let files: u64 = report.partitions.iter().map(|p| p.files).sum();
    println!(
        "demo: {} records in {} ({} partitions dt=YYYY-MM-DD, {} files, {:?}); this run wrote {} new, emulator ground truth {}; {:.1}s",
        exported,
        std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf()).display(),
        report.partitions.len(),
        files,
        ex.settings.export.format,
        s.written,
        truth,
        started.elapsed().as_secs_f64()
    );
    println!("  status: aos-audit-export status --state {}", ex.settings.state_path.display());
    if exported != truth {
        return Err(Mismatch(format!("demo exported {exported} records but the emulator holds {truth}")).into());
    }
    Ok(error::OK)
}
