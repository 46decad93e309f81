//! The terminal progress bar of long passes.

/// A progress bar (windows, records, rate, ETA) for `backfill` and `reconcile` when stderr is a
/// terminal; elsewhere (logs collected by a scheduler) each window logs a plain line instead.
pub(super) fn progress_bar(command: &str, stream: &str, windows: usize) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || windows == 0 {
        return None;
    }
    let bar = indicatif::ProgressBar::new(windows as u64);
    let style =
        indicatif::ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} windows, {per_sec}, ETA {eta}  {msg}")
            .ok()?;
    bar.set_style(style);
    bar.set_prefix(format!("{command} {stream}"));
    Some(bar)
}
