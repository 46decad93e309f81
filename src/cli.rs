//! Command-line interface (clap derive). No logic: parsing only.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aos-audit-export",
    version,
    about = "Export the AvePoint Online Services audit log into a data lake, exactly once."
)]
/// The parsed command line: global options plus one subcommand.
pub struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "AOS_EXPORT_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Overrides export.output.
    #[arg(long, global = true, value_name = "DIR_OR_URL")]
    pub output: Option<String>,
    /// Overrides export.format (parquet | ndjson | delta).
    #[arg(long, global = true)]
    pub format: Option<String>,
    /// Overrides export.run_deadline (`none`: no deadline), e.g. per Kubernetes workload.
    #[arg(long, global = true, value_name = "DURATION")]
    pub run_deadline: Option<String>,
    /// Overrides state.path.
    #[arg(long, global = true, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Overrides log.level.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Overrides log.format (text | json).
    #[arg(long, global = true)]
    pub log_format: Option<String>,
    /// Testing aid: pretend the current time is this RFC 3339 instant.
    #[arg(long, global = true, hide = true)]
    pub now: Option<String>,
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One export pass from the checkpoint up to now − lag, then exit (Kubernetes CronJob).
    Run,
    /// Export a historical range; resumable, and a finished range is never fetched again.
    Backfill {
        /// Start: RFC 3339 instant, YYYY-MM-DD (UTC), or a duration before now (e.g. 30d).
        #[arg(long)]
        from: String,
        /// End, exclusive (default: now − lag); same forms as --from.
        #[arg(long)]
        to: Option<String>,
    },
    /// Re-read a range (committed or not) and write only the records the lake lacks; reports
    /// what it found per window. Safe to repeat; schedule it (e.g. daily over the last 7 days)
    /// to repair records published later than lag + lookback.
    Reconcile {
        /// Start: RFC 3339 instant, YYYY-MM-DD (UTC), or a duration before now (e.g. 7d).
        #[arg(long)]
        from: String,
        /// End, exclusive (default: now − lag); same forms as --from.
        #[arg(long)]
        to: Option<String>,
    },
    /// Delta mode: rewrite the closed days' small files into few large ones, one table commit
    /// per day (also done after every `run`). Earlier table versions stay readable.
    Compact {
        /// Start: RFC 3339 instant, YYYY-MM-DD (UTC), or a duration before now (e.g. 30d).
        #[arg(long)]
        from: String,
        /// End, exclusive (default: now); same forms as --from.
        #[arg(long)]
        to: Option<String>,
    },
    /// Delta mode: delete the data files no table version within the retention reads (replaced
    /// by a compaction, or written by attempts that never reached the table).
    Vacuum {
        /// Keep what versions younger than this read (time travel), e.g. 7d.
        #[arg(long, default_value = "7d")]
        retention: String,
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Allow a retention shorter than lag + lookback + 1h (a writer's attempt in flight may
        /// then lose its files).
        #[arg(long)]
        force: bool,
    },
    /// Make a Parquet-folder lake this program wrote a Delta table in place (no file is
    /// rewritten); then set export.format = "delta".
    Convert,
    /// Long-running: `run` on schedule.cron; serves /healthz, /readyz and /metrics.
    Daemon,
    /// Checkpoints, lag, last runs and files written.
    Status {
        /// Print the report as JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Re-read every published file and check it against the manifest (rows, bytes, SHA-256);
    /// report data files the manifest does not know.
    Verify {
        /// Print the result as JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Export again exactly the records of missing or corrupt files (set aside, never
        /// deleted), and set aside the folder's stray files; then verify again.
        #[arg(long)]
        repair: bool,
    },
    /// Obtain a token and print client, method, scope and expiry (never the token).
    Token,
    /// Start the emulator in-process and export its data into DIR.
    #[cfg(feature = "emulator")]
    Demo {
        /// Folder (DIR) to export the emulator's data into.
        #[arg(long, default_value = "./demo-out")]
        out: PathBuf,
    },
    /// Run the AOS emulator standalone, for testing pipelines.
    #[cfg(feature = "emulator")]
    Emulator(EmulatorArgs),
    /// Print the effective configuration, secrets redacted.
    Config,
}

/// `emulator` options.
#[cfg(feature = "emulator")]
#[derive(Debug, clap::Args)]
pub struct EmulatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Days of data.
    #[arg(long, default_value_t = 45)]
    pub days: u32,
    /// Records per day.
    #[arg(long, default_value_t = 1200)]
    pub records_per_day: u32,
    /// Seed of the deterministic data generator.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Records per page.
    #[arg(long, default_value_t = 500)]
    pub page_size: usize,
    /// Delay added to every audit page.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of audit requests failing (429, 5xx, resets, truncated bodies), 0..1.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Records become visible up to this long after their actionTime (e.g. 30m).
    #[arg(long, default_value = "0s")]
    pub late_max: String,
    /// First day of data (YYYY-MM-DD); default: `days` before today.
    #[arg(long)]
    pub start: Option<String>,
    /// Compare `startTime` exclusively (`actionTime > startTime`); default inclusive.
    #[arg(long)]
    pub start_exclusive: bool,
    /// Compare `endTime` exclusively (`actionTime < endTime`); default inclusive.
    #[arg(long)]
    pub end_exclusive: bool,
    /// Precision of the bounds comparison: tick (100 ns), millis or seconds.
    #[arg(long, default_value = "tick", value_parser = ["tick", "millis", "seconds"])]
    pub precision: String,
    /// Leave out fields whose value is null.
    #[arg(long)]
    pub omit_nulls: bool,
    /// Write every object's keys in reverse order.
    #[arg(long)]
    pub reverse_keys: bool,
    /// Re-spell numbers (`5` as `5.0`), `actionTime` (`+00:00`, no trailing zeros) and
    /// non-ASCII text (`\u` escapes).
    #[arg(long)]
    pub respell: bool,
    /// Pretty-print records (whitespace between tokens).
    #[arg(long)]
    pub pretty: bool,
    /// Odd records to serve as well, one JSON object per line:
    /// `{"servedAt": RFC 3339, "record": {...}, "arrivesAt": RFC 3339 (optional)}`. Each is
    /// returned by every query whose range holds `servedAt` (whatever its `actionTime` says),
    /// from `arrivesAt` on.
    #[arg(long)]
    pub extra_records: Option<std::path::PathBuf>,
}
