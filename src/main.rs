//! The `aos-audit-export` binary: parse the command line, run, print one error line, exit with
//! the code `error.rs` assigns.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: records are allocated and freed per page; glibc malloc spent a third of the
/// pipeline's time there (see the pipeline benchmark).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Like other Unix tools, stop quietly when the reader of stdout goes away
    // (`status | head`), instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match aos_audit_export::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { aos_audit_export::error::CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(aos_audit_export::error::FAILURE);
        }
    };
    match runtime.block_on(aos_audit_export::commands::dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", aos_audit_export::error::one_line(&e));
            ExitCode::from(aos_audit_export::error::exit_code(&e))
        }
    }
}
