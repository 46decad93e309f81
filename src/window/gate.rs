//! Back-pressure on the windows read at once: their dedup state (one key per record read)
//! is counted against `export.dedup_memory`. While the windows in flight hold more, every
//! window but the oldest waits before its next page; the oldest always proceeds (it is the
//! one the next commit needs), so progress never stops and a window larger than the limit
//! still completes. Memory stays near the limit plus one window, however large the windows
//! and however many are in flight.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Dedup memory of the windows in flight.
#[derive(Debug)]
pub struct MemoryGate {
    limit: usize,
    /// Bytes held per window, by the window's place in commit order.
    held: Mutex<BTreeMap<u64, usize>>,
    changed: Notify,
}

/// A window's place in the gate; leaving (drop) releases what it held.
pub struct Ticket<'a> {
    gate: &'a MemoryGate,
    seq: u64,
    /// Whether this window has said once that it waits (operators see why a run slowed).
    told: std::sync::atomic::AtomicBool,
}

impl MemoryGate {
    /// A gate admitting about `limit` bytes of dedup state.
    pub fn new(limit: usize) -> Self {
        MemoryGate {
            limit,
            held: Mutex::new(BTreeMap::new()),
            changed: Notify::new(),
        }
    }

    /// Registers the window `seq` (lower = earlier in commit order).
    pub fn enter(&self, seq: u64) -> Ticket<'_> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(seq, 0);
        Ticket {
            gate: self,
            seq,
            told: Default::default(),
        }
    }

    /// Bytes held by every window in flight.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
    }

    /// Whether `seq` may read on: it is the oldest in flight, or all hold less than the limit.
    fn may_proceed(&self, seq: u64) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.keys().next() == Some(&seq) || held.values().sum::<usize>() <= self.limit
    }
}

impl Ticket<'_> {
    /// Records what the window holds now.
    pub fn hold(&self, bytes: usize) {
        let mut held = self.gate.held.lock().unwrap_or_else(|p| p.into_inner());
        let before = held.insert(self.seq, bytes).unwrap_or(0);
        drop(held);
        if bytes < before {
            self.gate.changed.notify_waiters();
        }
    }

    /// Whether [`Ticket::room`] would wait now.
    pub fn must_wait(&self) -> bool {
        !self.gate.may_proceed(self.seq)
    }

    /// Waits until the window may fetch its next page; `false` if cancelled first.
    pub async fn room(&self, cancel: &CancellationToken) -> bool {
        loop {
            let changed = self.gate.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.gate.may_proceed(self.seq) {
                return true;
            }
            if !self.told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::info!(
                    held_bytes = self.gate.held(),
                    limit_bytes = self.gate.limit,
                    "export.dedup_memory reached: this window waits for the oldest before its next page"
                );
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = cancel.cancelled() => return false,
            }
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.gate.held.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.seq);
        self.gate.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn only_the_oldest_reads_on_over_the_limit() {
        let gate = MemoryGate::new(100);
        let cancel = CancellationToken::new();
        let a = gate.enter(1);
        let b = gate.enter(2);
        a.hold(80);
        b.hold(30);
        assert!(a.room(&cancel).await, "the oldest always proceeds");
        let waiting = tokio::time::timeout(Duration::from_millis(50), b.room(&cancel)).await;
        assert!(waiting.is_err(), "a younger window waits while over the limit");
        // The oldest finishing frees its share: the younger one proceeds.
        let wait = async { b.room(&cancel).await };
        let release = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(a);
        };
        let (ok, ()) = tokio::join!(wait, release);
        assert!(ok);
        assert_eq!(gate.held(), 30);
        // Under the limit nobody waits; cancellation ends a wait.
        let c = gate.enter(3);
        assert!(c.room(&cancel).await);
        c.hold(500);
        let d = gate.enter(4);
        cancel.cancel();
        assert!(!d.room(&cancel).await);
    }
}
