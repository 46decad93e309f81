//! In-process emulator of the AvePoint Online Services identity and audit APIs.
//!
//! It behaves as the real service is documented to (see `shared/aos-api.md`): OAuth2 client
//! credentials at `POST /connect/token` (client secret or RFC 7523 certificate assertion), bearer
//! tokens that expire, `GET /aos/audit` with the documented parameters, errors and paging through
//! absolute `nextLink`s. Records come from a deterministic generator ([`data`]) and the ground truth
//! is available in process ([`EmulatorHandle::ground_truth`]). Faults ([`Faults`]), per-page
//! latency, late arrival and a settable clock let tests drive the exporter through the hard cases.
//! Every server binds the address it is given (tests use `127.0.0.1:0`) and stops when its handle
//! is dropped.
//!
//! Nothing is generated at start: a query scans the compact metadata of the days it touches
//! ([`data::Meta`], 16 bytes a record, built on first use and kept in a bounded LRU of
//! [`EmulatorConfig::meta_cache_days`] days) and writes the JSON of the page's records only, so
//! tenants of tens of millions of records are served in bounded memory.

pub mod assertion;
pub mod data;
mod dialect;
mod page;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

pub use data::{DataSpec, StoredRecord};
pub use dialect::{Bounds, Precision, Serialization};

/// The key of an extra record served as its raw text (see [`EmulatorConfig::extra_records`]).
pub const RAW_EXTRA: &str = "$raw";

/// Default of [`EmulatorConfig::meta_cache_days`]: 64 days, 87 MB at 85,000 records a day.
pub const DEFAULT_META_CACHE_DAYS: usize = 64;

/// A client the identity service knows.
#[derive(Clone, Debug)]
pub struct ClientRegistration {
    pub client_id: String,
    /// Accepted client secret, if the app has one.
    pub secret: Option<String>,
    /// DER of the certificate registered for the app, if any.
    pub certificate_der: Option<Vec<u8>>,
    /// Scopes the app was granted (e.g. `audit.read.all`).
    pub scopes: Vec<String>,
}

/// Probabilities (0..1) of injected faults on `GET /aos/audit`; drawn from a seeded generator.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub seed: u64,
    /// 429 with `Retry-After: retry_after_secs`.
    pub rate_429: f64,
    pub retry_after_secs: u64,
    /// 500/502/503/504.
    pub rate_5xx: f64,
    /// Responses delayed by `slow`.
    pub rate_slow: f64,
    pub slow: std::time::Duration,
    /// The connection is cut in the middle of the body.
    pub rate_reset: f64,
    /// A 200 whose JSON body is cut short.
    pub rate_truncated: f64,
    /// A 200 whose body is valid JSON but no page (a gateway's `{"error": …}`, no `data`).
    pub rate_malformed: f64,
}

impl Faults {
    /// The same total failure rate spread over 429, 5xx, resets and truncated bodies.
    pub fn mixed(total: f64, seed: u64) -> Self {
        Faults {
            seed,
            rate_429: total / 4.0,
            retry_after_secs: 0,
            rate_5xx: total / 4.0,
            rate_slow: 0.0,
            slow: std::time::Duration::ZERO,
            rate_reset: total / 4.0,
            rate_truncated: total / 4.0,
            rate_malformed: 0.0,
        }
    }
}

/// Everything the emulator can be told at start.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    pub data: DataSpec,
    /// Records per page (server-chosen page size).
    pub page_size: usize,
    /// Lifetime of issued access tokens.
    pub token_ttl: Duration,
    pub clients: Vec<ClientRegistration>,
    /// How the server compares `actionTime` with `startTime`/`endTime` (the API does not say).
    pub bounds: Bounds,
    /// How the server spells the same record (the API does not promise one spelling).
    pub serialization: Serialization,
    pub faults: Faults,
    /// Added to every audit page response.
    pub latency: std::time::Duration,
    /// Base URL put into `nextLink`s instead of the emulator's own (to test foreign hosts).
    pub next_link_base: Option<String>,
    /// The identity service is down until this instant: `POST /connect/token` answers 503
    /// (an outage of the identity service, as during a deployment). Settable at run time with
    /// [`EmulatorHandle::set_token_unavailable_until`].
    pub token_unavailable_until: Option<std::time::Instant>,
    /// A server of limited capacity (none = unlimited).
    pub capacity: Option<Capacity>,
    /// Odd records served as the API stores them, whatever their `actionTime` says: each is
    /// returned by every query whose range holds its `served_at` (records without a usable
    /// `actionTime`, or misplaced ones). Not part of [`EmulatorHandle::ground_truth`]. An
    /// object `{"$raw": text}` is served as `text` itself: a record no JSON value can hold
    /// (a lone surrogate escape, a number out of range), as a .NET serializer may send it.
    pub extra_records: Vec<(DateTime<Utc>, Value)>,
    /// Late extra records: `extra_records[k]` is served only from the instant
    /// `extra_arrivals[&k]` on (the emulator's now), like a record the API ingests late.
    pub extra_arrivals: std::collections::HashMap<usize, DateTime<Utc>>,
    /// Days of record metadata kept in memory (least recently used evicted; 16 bytes a record).
    /// A query scans the metadata of the days it touches; an evicted day is rebuilt (a few ms for
    /// 85,000 records).
    pub meta_cache_days: usize,
}

/// Capacity model of the audit API: `concurrent` requests are served at once at the base
/// latency; more wait their turn (so latency grows with the queue); beyond `max_queued`
/// waiting, requests get 429 with `Retry-After: retry_after_secs`.
#[derive(Clone, Debug)]
pub struct Capacity {
    pub concurrent: usize,
    pub max_queued: usize,
    pub retry_after_secs: u64,
}

/// Client id and secret the default configuration registers (demo, tests).
pub const DEMO_CLIENT_ID: &str = "demo-client";
pub const DEMO_CLIENT_SECRET: &str = "demo-secret";

impl Default for EmulatorConfig {
    fn default() -> Self {
        let today = data::midnight(Utc::now());
        EmulatorConfig {
            data: DataSpec {
                seed: 42,
                start: today - Duration::days(45),
                days: 45,
                records_per_day: 1200,
                max_delay: Duration::zero(),
            },
            page_size: 500,
            token_ttl: Duration::hours(1),
            clients: vec![ClientRegistration {
                client_id: DEMO_CLIENT_ID.into(),
                secret: Some(DEMO_CLIENT_SECRET.into()),
                certificate_der: None,
                scopes: vec!["audit.read.all".into()],
            }],
            bounds: Bounds::default(),
            serialization: Serialization::default(),
            faults: Faults::default(),
            latency: std::time::Duration::ZERO,
            next_link_base: None,
            capacity: None,
            extra_records: Vec::new(),
            extra_arrivals: Default::default(),
            token_unavailable_until: None,
            meta_cache_days: DEFAULT_META_CACHE_DAYS,
        }
    }
}

/// Counters tests read to prove what did (or did not) reach the server.
#[derive(Debug, Default)]
pub struct Counters {
    pub token_requests: AtomicU64,
    pub tokens_issued: AtomicU64,
    /// Token requests answered 503 by an identity-service outage.
    pub token_unavailable: AtomicU64,
    pub audit_requests: AtomicU64,
    pub audit_ok: AtomicU64,
    pub faults_injected: AtomicU64,
    pub unauthorized: AtomicU64,
    /// 429s sent because the capacity model's queue was full.
    pub over_capacity: AtomicU64,
    /// Most audit requests ever in the server at once (served + queued).
    pub max_outstanding: AtomicU64,
    /// Days whose record metadata was built (first use, or again after eviction).
    pub meta_days_built: AtomicU64,
}

pub(crate) struct State {
    pub cfg: EmulatorConfig,
    /// Record metadata of recently used days (index = day offset from `cfg.data.start`).
    pub meta: Mutex<MetaCache>,
    pub tokens: Mutex<std::collections::HashMap<String, server::IssuedToken>>,
    pub seen_jti: Mutex<HashSet<String>>,
    pub rng: Mutex<rand_chacha::ChaCha8Rng>,
    pub clock: Mutex<Option<DateTime<Utc>>>,
    pub counters: Counters,
    pub base_url: String,
    /// Tokens revoked by a test (the next use gets 401).
    pub revoked: Mutex<HashSet<String>>,
    /// Serving slots of the capacity model.
    pub serving: tokio::sync::Semaphore,
    /// Audit requests in the server (served + queued).
    pub outstanding: std::sync::atomic::AtomicUsize,
    /// Identity-service outage: `/connect/token` answers 503 until this instant.
    pub token_outage: Mutex<Option<std::time::Instant>>,
    /// Audit API outage: every authenticated `/aos/audit` request answers 503 while set.
    pub audit_outage: AtomicBool,
    /// Added to every audit page response, in microseconds (`cfg.latency` at start).
    pub latency_us: AtomicU64,
    /// Bound semantics and serialization in force (`cfg`'s at start, switchable at run time).
    pub dialect: Mutex<(Bounds, Serialization)>,
}

impl State {
    pub fn dialect(&self) -> (Bounds, Serialization) {
        *self.dialect.lock().expect("dialect lock")
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.lock().expect("clock lock").unwrap_or_else(Utc::now)
    }

    /// The metadata of day `day` in serving order, from the cache or built (outside the lock).
    pub fn day_meta(&self, day: u32) -> Arc<Vec<data::Meta>> {
        if let Some(m) = self.meta.lock().expect("meta lock").get(day) {
            return m;
        }
        let built = Arc::new(data::day_meta(&self.cfg.data, day));
        self.counters.meta_days_built.fetch_add(1, Ordering::Relaxed);
        self.meta.lock().expect("meta lock").insert(day, built)
    }

    /// The generated records with `from <= actionTime < to` (and `visible_at <= at`), day by day in
    /// serving order.
    fn truth(&self, from: DateTime<Utc>, to: DateTime<Utc>, at: Option<DateTime<Utc>>) -> Vec<Value> {
        let spec = &self.cfg.data;
        let day0 = data::midnight(spec.start);
        let day_of = |t: DateTime<Utc>| (t - day0).num_seconds().div_euclid(86_400);
        let first = day_of(from).max(0);
        let last = day_of(to).min(i64::from(spec.days) - 1);
        let mut out = Vec::new();
        let mut buf = Vec::with_capacity(1024);
        for day in first..=last {
            let day = day as u32;
            let (start, writer) = (data::day_start(spec, day), data::DayWriter::new(spec, day));
            for m in self.day_meta(day).iter() {
                let time = start + Duration::nanoseconds(m.time_ns());
                let visible = start + Duration::nanoseconds(m.visible_ns());
                if time >= from && time < to && at.is_none_or(|at| visible <= at) {
                    buf.clear();
                    writer.write_base(m.base(), &mut buf);
                    out.push(serde_json::from_slice(&buf).expect("generated records are valid JSON"));
                }
            }
        }
        out
    }
}

/// A small LRU of days' metadata.
pub(crate) struct MetaCache {
    capacity: usize,
    tick: u64,
    days: HashMap<u32, (Arc<Vec<data::Meta>>, u64)>,
}

impl MetaCache {
    fn new(capacity: usize) -> Self {
        MetaCache {
            capacity: capacity.max(1),
            tick: 0,
            days: HashMap::new(),
        }
    }

    fn get(&mut self, day: u32) -> Option<Arc<Vec<data::Meta>>> {
        self.tick += 1;
        let tick = self.tick;
        self.days.get_mut(&day).map(|(m, used)| {
            *used = tick;
            m.clone()
        })
    }

    /// Inserts `meta` (unless another request built the day meanwhile) and evicts the least
    /// recently used days beyond capacity.
    fn insert(&mut self, day: u32, meta: Arc<Vec<data::Meta>>) -> Arc<Vec<data::Meta>> {
        if let Some(m) = self.get(day) {
            return m;
        }
        while self.days.len() >= self.capacity {
            let Some(oldest) = self.days.iter().min_by_key(|(_, (_, used))| *used).map(|(d, _)| *d) else {
                break;
            };
            self.days.remove(&oldest);
        }
        self.days.insert(day, (meta.clone(), self.tick));
        meta
    }

    pub(crate) fn len(&self) -> usize {
        self.days.len()
    }
}

/// A running emulator; dropping it stops the server.
pub struct EmulatorHandle {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl EmulatorHandle {
    /// Binds `addr` (e.g. `127.0.0.1:0`) and serves until the handle is dropped or [`Self::stop`].
    pub async fn start(cfg: EmulatorConfig, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        use rand::SeedableRng;
        let cfg_capacity = cfg.capacity.clone();
        let cfg_dialect = (cfg.bounds, cfg.serialization);
        let token_outage = Mutex::new(cfg.token_unavailable_until);
        let latency_us = AtomicU64::new(u64::try_from(cfg.latency.as_micros()).unwrap_or(u64::MAX));
        let state = Arc::new(State {
            rng: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(cfg.faults.seed)),
            meta: Mutex::new(MetaCache::new(cfg.meta_cache_days)),
            cfg,
            tokens: Mutex::default(),
            seen_jti: Mutex::default(),
            clock: Mutex::new(None),
            counters: Counters::default(),
            base_url,
            revoked: Mutex::default(),
            serving: tokio::sync::Semaphore::new(
                cfg_capacity
                    .as_ref()
                    .map_or(tokio::sync::Semaphore::MAX_PERMITS, |c| c.concurrent.max(1)),
            ),
            outstanding: Default::default(),
            token_outage,
            audit_outage: AtomicBool::new(false),
            latency_us,
            dialect: Mutex::new((cfg_dialect.0, cfg_dialect.1)),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = server::router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(EmulatorHandle {
            addr,
            state,
            stop: Some(tx),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: both the graph base URL and the identity host.
    pub fn base_url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn token_url(&self) -> String {
        format!("{}/connect/token", self.state.base_url)
    }

    pub fn counters(&self) -> &Counters {
        &self.state.counters
    }

    pub fn audit_requests(&self) -> u64 {
        self.state.counters.audit_requests.load(Ordering::Relaxed)
    }

    /// Switches how the server compares record times with query bounds.
    pub fn set_bounds(&self, bounds: Bounds) {
        self.state.dialect.lock().expect("dialect lock").0 = bounds;
    }

    /// Switches how records are spelled from the next page on.
    pub fn set_serialization(&self, serialization: Serialization) {
        self.state.dialect.lock().expect("dialect lock").1 = serialization;
    }

    /// Pins the emulator's clock (record visibility, token expiry); `None` returns to real time.
    pub fn set_now(&self, now: Option<DateTime<Utc>>) {
        *self.state.clock.lock().expect("clock lock") = now;
    }

    /// Makes every token issued so far invalid (the API answers 401 until a new one is fetched).
    pub fn revoke_all_tokens(&self) {
        let tokens = self.state.tokens.lock().expect("tokens lock");
        self.state.revoked.lock().expect("revoked lock").extend(tokens.keys().cloned());
    }

    /// Makes `/connect/token` answer 503 until `until` (`None` ends the outage at once).
    pub fn set_token_unavailable_until(&self, until: Option<std::time::Instant>) {
        *self.state.token_outage.lock().expect("outage lock") = until;
    }

    /// While `down`, every authenticated `/aos/audit` request answers 503 (a total API outage,
    /// beyond any retry budget). Counted in `faults_injected`.
    pub fn set_audit_outage(&self, down: bool) {
        self.state.audit_outage.store(down, Ordering::Relaxed);
    }

    /// Changes the latency added to every audit page response from now on.
    pub fn set_latency(&self, latency: std::time::Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.state.latency_us.store(us, Ordering::Relaxed);
    }

    /// Every access token issued so far (tests search logs for them).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.tokens.lock().expect("tokens lock").keys().cloned().collect()
    }

    /// First and last instant of the generated data: `[start, end)`.
    pub fn data_range(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let s = data::midnight(self.state.cfg.data.start);
        (s, s + Duration::days(self.state.cfg.data.days as i64))
    }

    /// The records with `from <= actionTime < to` that were visible at `at`, in no order (in
    /// fact: day by day, in the order the API serves them). Generated on demand: meant for small
    /// data sets.
    pub fn visible_truth(&self, from: DateTime<Utc>, to: DateTime<Utc>, at: DateTime<Utc>) -> Vec<Value> {
        self.state.truth(from, to, Some(at))
    }

    /// Every generated record with `from <= actionTime < to` (visible or not), in no order (in
    /// fact: day by day, in the order the API serves them). Generated on demand: meant for small
    /// data sets.
    pub fn ground_truth(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Value> {
        self.state.truth(from, to, None)
    }

    /// All generated records (not `extra_records`). Generated on demand: meant for small data
    /// sets; [`Self::record_count`] counts them without building them.
    pub fn all_records(&self) -> Vec<Value> {
        let (from, to) = self.data_range();
        self.state.truth(from, to, None)
    }

    /// How many records [`Self::all_records`] holds (`days × records_per_day`), in O(1).
    pub fn record_count(&self) -> u64 {
        self.state.cfg.data.record_count()
    }

    /// Days whose metadata is in memory now (at most [`EmulatorConfig::meta_cache_days`]).
    pub fn cached_days(&self) -> usize {
        self.state.meta.lock().expect("meta lock").len()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
