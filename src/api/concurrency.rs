//! Adaptive request concurrency (the idea of Vector's ARC and of TCP congestion control): how
//! many audit API requests may be in flight at once, shared by every window a client fetches.
//!
//! The limit starts at 1 and is revised once per round trip from the gradient of Netflix's
//! concurrency-limits, `baseline ÷ latency`, where the baseline is the best round-trip latency
//! of the last 10 s: while latency stays within 1.25× of it the limit grows by one (if the
//! windows use it); above, it shrinks to `limit × gradient + 1`, settling where the server
//! queues about one of our requests; back-pressure (429, 503, timeouts) cuts it by a quarter. A fixed limit
//! (`api.max_concurrency`) turns adaptation off. Waiting for a slot ends on cancellation.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Multiplicative decrease on back-pressure or a latency rise.
const DECREASE: f64 = 0.75;
/// Latency within this of the baseline counts as no queueing at all.
const RISE_SLACK: Duration = Duration::from_millis(2);
/// A gradient at least this high means the server is not queueing our requests.
const STEADY: f64 = 0.8;
/// How long the best latency seen stays the baseline.
const BASELINE_MEMORY: Duration = Duration::from_secs(10);

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
    /// The limit before rounding down, so that fractional steps accumulate.
    estimate: f64,
    in_flight: usize,
    /// Smallest round-trip latency of recent periods, seconds, and when it was seen.
    baseline: Option<f64>,
    baseline_at: Instant,
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

/// A slot for one request; give it back with [`Limiter::release`]. A slot dropped unreleased
/// (its request's future was dropped mid-flight, e.g. a sibling window failed) is given back
/// without a verdict, so the limit can never leak away.
#[derive(Debug)]
pub struct Slot<'a> {
    limiter: &'a Limiter,
    started: Instant,
    released: bool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.released {
            self.limiter.give_back(self.started, Outcome::Ignore);
        }
    }
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
                estimate: limit as f64,
                in_flight: 0,
                baseline: None,
                baseline_at: Instant::now(),
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
    pub async fn acquire(&self, cancel: &CancellationToken) -> Option<Slot<'_>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if s.in_flight < s.limit {
                    s.in_flight += 1;
                    s.period_max_in_flight = s.period_max_in_flight.max(s.in_flight);
                    return Some(Slot {
                        limiter: self,
                        started: Instant::now(),
                        released: false,
                    });
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = cancel.cancelled() => return None,
            }
        }
    }

    /// Gives a slot back and learns from how its request ended.
    pub fn release(&self, mut slot: Slot<'_>, outcome: Outcome) {
        slot.released = true;
        self.give_back(slot.started, outcome);
    }

    fn give_back(&self, started: Instant, outcome: Outcome) {
        let rtt = started.elapsed().as_secs_f64();
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
        if s.period_backpressure {
            s.estimate = (s.estimate * DECREASE).max(1.0);
        } else if let (Some(m), Some(b)) = (mean, s.baseline) {
            // The gradient of Netflix's concurrency-limits, baseline ÷ latency: near 1 the
            // server is not queueing our requests and the limit grows by one (if the windows
            // used it); lower, the limit shrinks to `limit × gradient + 1`, which keeps a queue
            // of about one request at the server. Additive growth does not overshoot a server's
            // queue before the latency signal arrives, so 429s stay rare.
            let gradient = ((b + RISE_SLACK.as_secs_f64()) / m).clamp(0.5, 1.0);
            if gradient >= STEADY {
                if s.period_max_in_flight >= s.limit {
                    s.estimate += 1.0;
                }
            } else {
                s.estimate = (s.estimate * gradient + 1.0).min(s.estimate);
            }
        } else if mean.is_some() && s.period_max_in_flight >= s.limit {
            s.estimate += 1.0;
        }
        s.estimate = s.estimate.clamp(1.0, self.max as f64);
        s.limit = s.estimate.floor() as usize;
        if let Some(m) = mean {
            // The baseline is the best period latency of the last BASELINE_MEMORY (as BBR keeps
            // its min RTT): our own queueing cannot drag it up, and a server that became slower
            // for good is accepted once the old minimum expires.
            let expired = s.baseline_at.elapsed() > BASELINE_MEMORY;
            if s.baseline.is_none_or(|b| m <= b) || expired {
                s.baseline = Some(m);
                s.baseline_at = Instant::now();
            }
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
    async fn a_dropped_request_gives_its_slot_back() {
        let l = Limiter::fixed(1);
        let c = CancellationToken::new();
        let held = l.acquire(&c).await.unwrap();
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(50), l.acquire(&c)).await;
        assert!(again.is_ok_and(|s| s.is_some()), "the slot of a dropped request is free again");
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
