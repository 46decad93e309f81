//! `demo` and `emulator`: the in-process AOS emulator for first contact and for testing
//! pipelines. Compiled only with the `emulator` feature (default on; off in the image).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::cli::EmulatorArgs;
use crate::config::{self, RawConfig};
use crate::error::{self, Mismatch};
use crate::exporter::Exporter;

/// The README's first command: emulator + export into a local folder, checked against the
/// emulator's ground truth.
pub(super) async fn demo(out: &Path, format: Option<&str>, now: DateTime<Utc>, cancel: &CancellationToken) -> anyhow::Result<u8> {
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
    let ex = Exporter::new(settings).await?;
    let s = ex.run_once(now, cancel).await?;
    let truth = emu.record_count();
    let report = ex.checkpoint().report()?;
    let exported: u64 = report.partitions.iter().map(|p| p.rows).sum();
    let files: u64 = report.partitions.iter().map(|p| p.files).sum();
    println!(
        "demo: {} records in {} ({} partitions dt=YYYY-MM-DD, {} files, {:?}); this run wrote {} new, emulator ground truth {}; {:.1}s",
        exported,
        std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf()).display(),
        report.partitions.len(),
        files,
        ex.settings().export.sink.format,
        s.written,
        truth,
        started.elapsed().as_secs_f64()
    );
    println!("  status: aos-audit-export status --state {}", ex.settings().state_path.display());
    println!(
        "  verify: aos-audit-export verify --state {} --output {}",
        ex.settings().state_path.display(),
        ex.settings().export.output
    );
    if exported != truth {
        return Err(Mismatch(format!("demo exported {exported} records but the emulator holds {truth}")).into());
    }
    Ok(error::OK)
}

/// `emulator`: serve until a signal.
pub(super) async fn standalone(a: EmulatorArgs, cancel: &CancellationToken) -> anyhow::Result<u8> {
    let mut cfg = aos_emulator::EmulatorConfig::default();
    cfg.data.seed = a.seed;
    cfg.data.days = a.days;
    cfg.data.records_per_day = a.records_per_day;
    cfg.data.start = match a.start {
        Some(s) => config::parse_instant(&s).with_context(|| format!("--start {s:?} is not YYYY-MM-DD"))?,
        None => aos_emulator::data::midnight(Utc::now()) - chrono::Duration::days(a.days as i64),
    };
    cfg.data.max_delay = chrono::Duration::from_std(config::parse_duration("--late-max", &a.late_max)?)?;
    cfg.page_size = a.page_size.max(1);
    cfg.latency = std::time::Duration::from_millis(a.latency_ms);
    cfg.faults = aos_emulator::Faults::mixed(a.fault_rate.clamp(0.0, 1.0), a.seed);
    cfg.bounds = aos_emulator::Bounds {
        start_inclusive: !a.start_exclusive,
        end_inclusive: !a.end_exclusive,
        precision: match a.precision.as_str() {
            "millis" => aos_emulator::Precision::Millis,
            "seconds" => aos_emulator::Precision::Seconds,
            _ => aos_emulator::Precision::Tick,
        },
    };
    cfg.serialization = aos_emulator::Serialization {
        omit_nulls: a.omit_nulls,
        reverse_keys: a.reverse_keys,
        respell: a.respell,
        pretty: a.pretty,
    };
    if let Some(path) = &a.extra_records {
        load_extras(path, &mut cfg)?;
    }
    let emu = aos_emulator::EmulatorHandle::start(cfg, a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let (s, e) = emu.data_range();
    println!("AOS emulator listening on {}", emu.base_url());
    println!("  token URL:     {}", emu.token_url());
    println!("  audit API:     {}/aos/audit", emu.base_url());
    println!("  client id:     {}", aos_emulator::DEMO_CLIENT_ID);
    println!("  client secret: {} (emulator only)", aos_emulator::DEMO_CLIENT_SECRET);
    println!(
        "  data:          {} records from {} to {}",
        emu.record_count(),
        s.format("%Y-%m-%d"),
        e.format("%Y-%m-%d")
    );
    println!(
        "Point the exporter at it with AOS_EXPORT_AUTH__TOKEN_URL={} AOS_EXPORT_API__BASE_URL={}",
        emu.token_url(),
        emu.base_url()
    );
    cancel.cancelled().await;
    emu.stop().await;
    Ok(error::OK)
}

/// `--extra-records`: one `{"servedAt", "record", "arrivesAt"?}` object per line.
fn load_extras(path: &Path, cfg: &mut aos_emulator::EmulatorConfig) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Extra {
        served_at: DateTime<Utc>,
        record: serde_json::Value,
        arrives_at: Option<DateTime<Utc>>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("--extra-records {}: cannot read", path.display()))?;
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let e: Extra = serde_json::from_str(line).with_context(|| format!("--extra-records {} line {}", path.display(), n + 1))?;
        if let Some(at) = e.arrives_at {
            cfg.extra_arrivals.insert(cfg.extra_records.len(), at);
        }
        cfg.extra_records.push((e.served_at, e.record));
    }
    Ok(())
}
