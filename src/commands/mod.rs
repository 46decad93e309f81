//! CLI glue: turns a parsed command line into calls on the library. `anyhow` lives here and in
//! `main` only. [`report`] prints `status` and `verify`; [`emulator`] holds `demo` and
//! `emulator` (behind the default-on `emulator` feature).

#[cfg(feature = "emulator")]
mod emulator;
mod report;

use anyhow::bail;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::config::{self, ConfigError, RawConfig};
use crate::error;
use crate::exporter::{Exporter, RunSummary};

/// Sets up logging on stderr. `RUST_LOG` wins over the configured level.
pub fn init_tracing(level: &str, format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| {
            EnvFilter::try_new(format!(
                "{level},tokio_cron_scheduler=warn,hyper_util=info,hyper=info,delta_kernel=warn,delta_kernel_default_engine=warn"
            ))
            .ok()
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: a pod's log, a file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    // JSON: one object per line, `timestamp`, `level` and `message` at the top level with the
    // event's fields beside them (where log shippers look), the run's span under `span`.
    let _ = if format == "json" {
        JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
        // A panic is one JSON object too (the default hook's plain text would be the only
        // line a shipper cannot parse, and the one that matters).
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            let line = serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "message": format!("panic{at}: {what}"),
                "cause": "internal",
                "exit_code": 101,
            });
            eprintln!("{line}");
            // A bug ends the process like a kill (every commit is atomic; the next run
            // recovers), even when it struck a task the runtime would have kept running (a
            // daemon pass).
            std::process::exit(101);
        }));
        b.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            std::process::exit(101);
        }));
        b.try_init()
    };
}

/// Whether logs are JSON (`log.format = "json"`): the fatal error is then an ERROR event too.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Reports the error that ends the process: an ERROR event with its exit code and cause when
/// logs are JSON (so a pipeline filtering on `level` sees it), else the plain `error: …` line.
pub fn report_fatal(message: &str, code: u8) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!(exit_code = code, cause = error::cause(code), "{message}");
    } else {
        eprintln!("error: {message}");
    }
}

fn overrides(cli: &Cli) -> Vec<(&'static str, String)> {
    let mut o = Vec::new();
    if let Some(v) = &cli.output {
        o.push(("export.output", v.clone()));
    }
    if let Some(v) = &cli.format {
        o.push(("export.format", v.clone()));
    }
    if let Some(v) = &cli.run_deadline {
        o.push(("export.run_deadline", v.clone()));
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
        Some(s) => config::parse_instant(s).ok_or_else(|| {
            ConfigError::Invalid {
                key: "--now",
                message: format!("{s:?} is not an RFC 3339 instant"),
            }
            .into()
        }),
        None => Ok(Utc::now()),
    }
}

/// `--from`/`--to` of `backfill` and `reconcile`: an instant, a date, or a duration before now.
fn range_arg(key: &'static str, value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ConfigError> {
    config::parse_instant_or_ago(value, now).ok_or_else(|| ConfigError::Invalid {
        key,
        message: format!("{value:?} is not an RFC 3339 instant, a YYYY-MM-DD date or a duration like 7d"),
    })
}

fn range_args(from: &str, to: Option<&str>, now: DateTime<Utc>) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let from_t = range_arg("--from", from, now)?;
    let to_t = match to {
        Some(t) => range_arg("--to", t, now)?,
        None => now,
    };
    if to.is_none() && from_t >= now {
        bail!(ConfigError::Invalid {
            key: "--from",
            message: format!("{from_t} is in the future (now is {now}); there is nothing to read yet")
        });
    }
    if to_t <= from_t {
        bail!(ConfigError::Invalid {
            key: "--to",
            message: format!("{to_t} is not after --from {from_t}")
        });
    }
    Ok((from_t, to_t))
}

/// Runs the command; returns the process exit code. `cancel` fires on SIGINT/SIGTERM.
pub async fn dispatch(cli: Cli, cancel: CancellationToken) -> anyhow::Result<u8> {
    let ov = overrides(&cli);
    // An error before logging is set up is still reported as the operator asked (JSON).
    let json_early = || {
        if config::log_format_hint(cli.config.as_deref(), &ov).as_deref() == Some("json") {
            init_tracing("info", "json");
        }
    };
    let raw = config::load(cli.config.as_deref(), &ov).inspect_err(|_| json_early())?;
    let early = || -> anyhow::Result<()> {
        crate::set_umask(raw.umask()?);
        raw.check_log()?;
        raw.push_target("run")?;
        Ok(())
    };
    early().inspect_err(|_| json_early())?;
    #[cfg(feature = "emulator")]
    let quiet = matches!(cli.command, Command::Demo { .. }) && cli.log_level.is_none();
    #[cfg(not(feature = "emulator"))]
    let quiet = false;
    // The demo prints its own summary; per-window logs would bury it.
    init_tracing(if quiet { "warn" } else { &raw.log.level }, &raw.log.format);
    let now = now_of(&cli)?;
    match cli.command {
        Command::Run => {
            let ex = started(&raw, "run", Exporter::new(raw.validate(now)?).await).await?;
            let s = ex.run_once(now, &cancel).await;
            push_metrics(&raw, "run", ex.metrics()).await;
            print_summary("run", &ex, &s?);
            ex.compact_after_run(now).await;
            Ok(error::OK)
        }
        Command::Vacuum { retention, dry_run, force } => {
            let settings = raw.validate(now)?;
            if !settings.export.delta {
                bail!(ConfigError::Invalid {
                    key: "export.format",
                    message: "vacuum needs \"delta\"".into()
                });
            }
            let retention = crate::config::parse::parse_chrono("--retention", &retention)?;
            let floor = settings.export.lag + settings.export.lookback + chrono::Duration::hours(1);
            if retention < floor && !force {
                bail!(ConfigError::Invalid {
                    key: "--retention",
                    message: format!(
                        "is shorter than lag + lookback + 1h ({}s): files of an attempt in flight could go; add --force to mean it",
                        floor.num_seconds()
                    )
                });
            }
            let ex = started(&raw, "vacuum", Exporter::new(settings).await).await?;
            let v = ex.vacuum(retention, dry_run).await?;
            println!(
                "vacuum: {} {} files ({:.1} MiB) no version within the retention reads; {} kept for time travel",
                if dry_run { "would delete" } else { "deleted" },
                v.files,
                v.bytes as f64 / (1 << 20) as f64,
                v.kept
            );
            Ok(error::OK)
        }
        Command::Convert => {
            let mut settings = raw.validate(now)?;
            if settings.export.sink.format != crate::sink::Format::Parquet {
                bail!(ConfigError::Invalid {
                    key: "export.format",
                    message: "convert needs a Parquet lake: a Delta table holds Parquet files only (export an NDJSON lake's range again into a new export.output)".into()
                });
            }
            // Opened as the folder it is; a table there already is refused as a format switch.
            settings.export.delta = false;
            let (output, spool) = (settings.export.output.clone(), settings.spool_path());
            let ex = match Exporter::new(settings).await {
                Err(crate::window::ExportError::FormatSwitch { existing, .. }) if existing == "delta" => {
                    // A conversion that stopped between its put and its checkpoint: the
                    // checkpoint now.
                    let table = crate::store::Store::open(&output, &spool)?.delta_table()?;
                    if table.view().await?.version == Some(0) && !table.has_checkpoint().await? {
                        table.checkpoint_latest().await?;
                    }
                    println!("convert: export.output is a Delta table already; nothing to do (set export.format = \"delta\")");
                    return Ok(error::OK);
                }
                other => started(&raw, "convert", other).await?,
            };
            let c = ex.convert().await?;
            println!(
                "convert: export.output is a Delta table now, holding {} files ({} records, {:.1} MiB) as they were; set export.format = \"delta\" before the next run",
                c.files,
                c.rows,
                c.bytes as f64 / (1 << 20) as f64
            );
            if let Some(first) = c.left_out.first() {
                println!(
                    "  {} files this program did not write are not in the table (first: {first})",
                    c.left_out.len()
                );
            }
            Ok(error::OK)
        }
        Command::Compact { from, to } => {
            let settings = raw.validate(now)?;
            if !settings.export.delta {
                bail!(ConfigError::Invalid {
                    key: "export.format",
                    message: "compact needs \"delta\": a folder of files cannot be compacted safely (a reader would see both copies)"
                        .into()
                });
            }
            let (from_t, to_t) = range_args(&from, to.as_deref(), now)?;
            let ex = started(&raw, "compact", Exporter::new(settings).await).await?;
            let c = ex.compact(from_t, to_t, now).await?;
            println!(
                "compact: {} closed days rewritten, {} files before, {} after (days closed before {})",
                c.days,
                c.files_before,
                c.files_after,
                ex.closed_before(now).to_rfc3339()
            );
            Ok(error::OK)
        }
        Command::Backfill { from, to } => {
            let settings = raw.validate(now)?;
            let (from_t, to_t) = range_args(&from, to.as_deref(), now)?;
            let ex = started(&raw, "backfill", Exporter::new(settings).await).await?;
            let s = ex.backfill(from_t, to_t, now, &cancel).await;
            push_metrics(&raw, "backfill", ex.metrics()).await;
            print_summary("backfill", &ex, &s?);
            Ok(error::OK)
        }
        Command::Reconcile { from, to } => {
            let settings = raw.validate(now)?;
            let (from_t, to_t) = range_args(&from, to.as_deref(), now)?;
            let ex = started(&raw, "reconcile", Exporter::new(settings).await).await?;
            let s = ex.reconcile(from_t, to_t, now, &cancel).await;
            push_metrics(&raw, "reconcile", ex.metrics()).await;
            let s = s?;
            for f in s.per_window.iter().filter(|f| f.written > 0) {
                println!(
                    "reconcile: stream {} {} .. {}: {} records were missing and are now written",
                    f.stream,
                    f.start.to_rfc3339(),
                    f.end.to_rfc3339(),
                    f.written
                );
            }
            print_summary("reconcile", &ex, &s);
            Ok(error::OK)
        }
        Command::Daemon => {
            crate::daemon::serve(raw.validate(now)?, cancel).await?;
            Ok(error::OK)
        }
        // These commands do not stop at a checkpoint: a signal simply ends them.
        Command::Status { json } => interruptible(&cancel, report::status(&raw, json, now)).await,
        Command::Verify { json, repair: false } => interruptible(&cancel, report::verify(&raw, json, now, None)).await,
        Command::Verify { json, repair: true } => {
            let found = report::check(&raw, now).await?;
            let mut repaired = None;
            if !found.problems.is_empty() || !found.strays.is_empty() {
                let ex = started(&raw, "repair", Exporter::new(raw.validate(now)?).await).await?;
                let paths: Vec<String> = found.problems.iter().map(|p| p.0.clone()).collect();
                let r = ex.repair(&paths, now, &cancel).await;
                push_metrics(&raw, "repair", ex.metrics()).await;
                let r = r?;
                if !json {
                    println!(
                        "repair: {} files whose records the lake lost ({} rows by the manifest) read again: {} records written; {} files set aside in {}/ ({} strays){}",
                        r.files,
                        r.rows,
                        r.summary.written,
                        r.set_aside,
                        crate::exporter::SET_ASIDE_DIR,
                        r.strays,
                        if r.skipped > 0 {
                            format!("; {} files of streams not configured here left as they are", r.skipped)
                        } else {
                            String::new()
                        }
                    );
                }
                repaired = Some(serde_json::json!({
                    "files": r.files, "rows": r.rows, "written": r.summary.written,
                    "set_aside": r.set_aside, "strays": r.strays, "skipped": r.skipped,
                }));
            }
            report::verify(&raw, json, now, repaired).await
        }
        Command::Token => interruptible(&cancel, token(&raw, now, &cancel)).await,
        #[cfg(feature = "emulator")]
        Command::Demo { out } => emulator::demo(&out, cli.format.as_deref(), now, &cancel).await,
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => emulator::standalone(args, &cancel).await,
        Command::Config => {
            print!("{}", raw.redacted_toml());
            let s = raw.validate(now)?;
            println!("# resolved: token URL {}, graph base URL {}", s.auth.token_url, s.api.base_url);
            Ok(error::OK)
        }
    }
}

async fn interruptible(cancel: &CancellationToken, work: impl Future<Output = anyhow::Result<u8>>) -> anyhow::Result<u8> {
    tokio::select! {
        r = work => r,
        _ = cancel.cancelled() => Ok(error::INTERRUPTED),
    }
}

/// The exporter, or (when it could not start: the state locked or unusable, the output
/// unreachable) the error, after pushing a failed pass with its cause.
async fn started(
    raw: &RawConfig,
    command: &str,
    ex: Result<Exporter, crate::window::ExportError>,
) -> Result<Exporter, crate::window::ExportError> {
    if let Err(e) = &ex {
        let m = crate::metrics::Metrics::new();
        m.pass(command, Some(error::cause(error::exit_code(e))), 0.0);
        push_metrics(raw, command, &m).await;
    }
    ex
}

/// Pushes the metrics of a command that ends to `metrics.push_url` (if set); a failed push is a
/// warning, never the command's failure.
async fn push_metrics(raw: &RawConfig, command: &str, metrics: &crate::metrics::Metrics) {
    if let Ok(Some(url)) = raw.push_target(command) {
        // The URL may carry credentials: only its host is logged.
        let host = url.host_str().unwrap_or("").to_string();
        match metrics.push(&url).await {
            Ok(()) => tracing::debug!(host = %host, "metrics pushed"),
            Err(e) => tracing::warn!(host = %host, error = %e, "could not push the metrics to metrics.push_url"),
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
        ex.output(),
        s.seconds
    );
    if s.quarantined > 0 {
        println!(
            "  {} records holding text a strict JSON reader refuses were kept as sent in _quarantine/ (export.on_invalid_record)",
            s.quarantined
        );
    }
    for st in &ex.settings().api.streams {
        if let Ok(Some(w)) = ex.checkpoint().watermark(&st.id) {
            println!("  stream {}: exported up to {}", st.id, w.to_rfc3339());
        }
    }
}

async fn token(raw: &RawConfig, now: DateTime<Utc>, cancel: &CancellationToken) -> anyhow::Result<u8> {
    let settings = raw.validate(now)?;
    let http = crate::api::http_client(&settings.api)?;
    let tp = crate::auth::TokenProvider::new(settings.auth.clone(), http)?;
    let t = tp.token_with(cancel).await?;
    println!("client id:  {}", tp.client_id());
    println!("method:     {}", tp.method_description());
    println!("token URL:  {}", settings.auth.token_url);
    println!("graph URL:  {}", settings.api.base_url);
    println!("scope:      {}", t.scope);
    println!(
        "expires:    {} (in {} s)",
        t.expires_at.to_rfc3339(),
        (t.expires_at - Utc::now()).num_seconds()
    );
    Ok(error::OK)
}
