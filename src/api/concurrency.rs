//! Adaptive request concurrency (the idea of Vector's ARC and of TCP congestion control): how
//! many audit API requests may be in flight at once, shared by every window a client fetches.
//!
//! The limit starts at 1 and is revised once per round trip: it grows by one while responses
//! come back near the best latency seen and the limit was actually used, and shrinks
//! multiplicatively on back-pressure (429, 503, timeouts) or when latency rises well above
//! that baseline — the sign that the server queues our requests. A fixed limit
//! (`api.max_concurrency`) turns adaptation off. Waiting for a slot ends on cancellation.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Multiplicative decrease on back-pressure or a latency rise.
const DECREASE: f64 = 0.75;
/// Latency above `baseline × RISE` (plus [`RISE_SLACK`]) counts as the server queueing.
const RISE: f64 = 1.5;
const RISE_SLACK: Duration = Duration::from_millis(3);

/// How a request ended, as the limiter sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that says nothing about load (success, or an error unrelated to load).
    Done,
    /// The server pushed back: 429, 503, a timeout.
    Backpressure,
    /// No verdict (e.g. a connection reset): the request is not counted.
    Ignore,
}

#[derive(Debug)]
struct State {
    limit: usize,
    in_flight: usize,
    /// Smallest recent round-trip latency (slowly forgetting), seconds.
    baseline: Option<f64>,
    period_start: Instant,
    period_rtt_sum: f64,
    period_count: u32,
    period_backpressure: bool,
    period_max_in_flight: usize,
}

/// The shared limit. Cheap to share behind an `Arc` or a reference.
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    notify: Notify,
    /// Hard ceiling of the limit.
    max: usize,
    adaptive: bool,
}

/// A slot for one request; give it back with [`Limiter::release`].
#[derive(Debug)]
pub struct Slot {
    started: Instant,
}

impl Limiter {
    /// Adaptive between 1 and `max`.
    pub fn adaptive(max: usize) -> Self {
        Self::new(1, max.max(1), true)
    }

    /// Always `limit`.
    pub fn fixed(limit: usize) -> Self {
        Self::new(limit.max(1), limit.max(1), false)
    }

    fn new(limit: usize, max: usize, adaptive: bool) -> Self {
        Limiter {
            state: Mutex::new(State {
                limit,
                in_flight: 0,
                baseline: None,
                period_start: Instant::now(),
                period_rtt_sum: 0.0,
                period_count: 0,
                period_backpressure: false,
                period_max_in_flight: 0,
            }),
            notify: Notify::new(),
            max,
            adaptive,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Waits for a free slot; `None` if `cancel` fires first.
    pub async fn acquire(&self, cancel: &CancellationToken) -> Option<Slot> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    s.period_max_in_flight = s.period_max_in_flight.max(s.in_flight);
                    return Some(Slot { started: Instant::now() });
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }

    /// Gives a slot back and learns from how its request ended.
    pub fn release(&self, slot: Slot, outcome: Outcome) {
        let rtt = slot.started.elapsed().as_secs_f64();
        let changed = {
            let mut s = self.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
            if self.adaptive { self.learn(&mut s, rtt, outcome) } else { None }
        };
        if let Some((from, to)) = changed {
            tracing::debug!(from, to, "adaptive request concurrency: limit changed");
        }
        self.notify.notify_waiters();
    }

    /// Accounts one finished request; once a round trip has passed, revises the limit.
    fn learn(&self, s: &mut State, rtt: f64, outcome: Outcome) -> Option<(usize, usize)> {
        match outcome {
            Outcome::Ignore => return None,
            Outcome::Backpressure => s.period_backpressure = true,
            Outcome::Done => {
                s.period_rtt_sum += rtt;
                s.period_count += 1;
            }
        }
        let period = s.baseline.unwrap_or(rtt).max(0.001);
        if s.period_start.elapsed().as_secs_f64() < period && !s.period_backpressure {
            return None;
        }
        let before = s.limit;
        let mean = (s.period_count > 0).then(|| s.period_rtt_sum / f64::from(s.period_count));
        let rising = match (mean, s.baseline) {
            (Some(m), Some(b)) => m > b * RISE + RISE_SLACK.as_secs_f64(),
            _ => false,
        };
        if s.period_backpressure || rising {
            s.limit = ((s.limit as f64 * DECREASE).floor() as usize).max(1);
        } else if s.period_max_in_flight >= s.limit && mean.is_some() {
            s.limit = (s.limit + 1).min(self.max);
        }
        if let Some(m) = mean {
            // The baseline follows the best latency quickly and forgets it slowly, so a server
            // that became slower for good is accepted after a while.
            s.baseline = Some(match s.baseline {
                Some(b) if m >= b => b * 0.95 + m * 0.05,
                _ => m,
            });
        }
        s.period_start = Instant::now();
        s.period_rtt_sum = 0.0;
        s.period_count = 0;
        s.period_backpressure = false;
        s.period_max_in_flight = s.in_flight;
        (s.limit != before).then_some((before, s.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fixed_limit_bounds_slots() {
        let l = Limiter::fixed(2);
        let c = CancellationToken::new();
        let a = l.acquire(&c).await.unwrap();
        let _b = l.acquire(&c).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), l.acquire(&c)).await;
        assert!(waiting.is_err(), "a third slot waits");
        l.release(a, Outcome::Done);
        assert!(tokio::time::timeout(Duration::from_millis(50), l.acquire(&c)).await.is_ok());
        assert_eq!(l.limit(), 2);
    }

    #[tokio::test]
    async fn grows_while_latency_holds_and_shrinks_on_backpressure() {
        let l = Limiter::adaptive(16);
        let c = CancellationToken::new();
        for _ in 0..200 {
            let n = l.limit();
            let slots: Vec<_> = futures::future::join_all((0..n).map(|_| l.acquire(&c))).await;
            tokio::time::sleep(Duration::from_millis(2)).await;
            for s in slots.into_iter().flatten() {
                l.release(s, Outcome::Done);
            }
        }
        let grown = l.limit();
        assert!(grown >= 8, "constant latency lets the limit grow: {grown}");
        let s = l.acquire(&c).await.unwrap();
        l.release(s, Outcome::Backpressure);
        assert!(l.limit() < grown, "a 429 cuts the limit");
    }

    #[tokio::test]
    async fn cancellation_ends_the_wait() {
        let l = Limiter::fixed(1);
        let c = CancellationToken::new();
        let _held = l.acquire(&c).await.unwrap();
        c.cancel();
        assert!(l.acquire(&c).await.is_none());
    }
}
