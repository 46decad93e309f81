//! Named crash points: the crash tests make the process abort at the n-th time it reaches a
//! step of the commit protocol (`AOS_TEST_CRASH_AT=publish:3`), so every step between fetch
//! and commit is provably interrupted, not just the ones a random kill happens to hit. Compiled
//! only with the `emulator` (testing) feature; the production image has none.

/// Steps of the protocol a crash can interrupt, in the order a window passes them.
pub const STEPS: &[&str] = &["fetch", "encode", "stage", "publish", "marker", "commit", "recover"];

/// Aborts the process if the crash point `step` is armed and reached for the armed time.
#[cfg(feature = "emulator")]
pub fn hit(step: &'static str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static ARMED: OnceLock<Option<(String, u64, bool)>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    // `step:n`, or `step:n:panic` to panic there instead (what a bug would do).
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("AOS_TEST_CRASH_AT").ok()?;
        let mut parts = v.split(':');
        let (s, n) = (parts.next()?, parts.next()?);
        Some((s.to_string(), n.parse().ok()?, parts.next() == Some("panic")))
    });
    if let Some((s, n, panic)) = armed
        && s == step
        && COUNT.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        if *panic {
            panic!("crashpoint: panicking at {step} #{n}");
        }
        eprintln!("crashpoint: aborting at {step} #{n}");
        std::process::abort();
    }
}

/// Without the testing feature, crash points are no-ops.
#[cfg(not(feature = "emulator"))]
pub fn hit(_step: &'static str) {}
