//! SIGINT/SIGTERM → a [`CancellationToken`] passed down explicitly. The first signal asks the
//! work to stop at the next consistent point (a page boundary; a published window still
//! commits); a second one exits at once, which is safe too because every commit is atomic.

use tokio_util::sync::CancellationToken;

pub fn install() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::warn!("stopping at the next consistent checkpoint (signal again to exit now)");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(crate::error::INTERRUPTED as i32);
    });
    token
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
