//! The `aos-audit-export` binary: parse the command line, install the signal handlers once,
//! run, print one error line, exit with the code `error.rs` assigns. No logic lives here.

use std::process::ExitCode;

use aos_audit_export::{cli, commands, error};
use clap::Parser;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    restore_sigpipe();
    aos_audit_export::tune_allocator();
    aos_audit_export::set_umask(0o077);
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { error::CONFIG } else { error::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::FAILURE);
        }
    };
    let code = runtime.block_on(async {
        let cancel = install_signal_handlers();
        match commands::dispatch(cli, cancel).await {
            Ok(code) => code,
            Err(e) => {
                let code = error::exit_code(e.as_ref());
                commands::report_fatal(&error::one_line(e.as_ref()), code);
                code
            }
        }
    });
    ExitCode::from(code)
}

/// Like other Unix tools, stop quietly when the reader of stdout goes away (`status | head`),
/// instead of panicking on a broken pipe.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// SIGINT/SIGTERM → a [`CancellationToken`] passed down explicitly. The first signal asks the
/// work to stop at the next consistent point (a page boundary; a published window still
/// commits); a second one exits at once, which is safe too because every commit is atomic.
fn install_signal_handlers() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        if wait_for_signal().await.is_err() {
            return;
        }
        tracing::warn!("stopping at the next consistent checkpoint (signal again to exit now)");
        t.cancel();
        if wait_for_signal().await.is_ok() {
            tracing::warn!("second signal: exiting now");
            std::process::exit(i32::from(error::INTERRUPTED));
        }
    });
    token
}

async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
