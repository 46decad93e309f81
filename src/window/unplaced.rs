//! The fate of a window's deferred records without a usable `actionTime`: copies of a content
//! the lake holds where a count over this window alone cannot tell.
//!
//! - A **neighbour** (a window touching this one) holds copies: only those in the two seconds
//!   where the two padded queries overlap can come back here, so the band at that bound is
//!   counted ([`Deduper::resolve`]).
//! - A **straddling** window (overlapping this one without lying inside it: a `reconcile` from
//!   another start, a run's look-back inside a backfill's week) holds copies: they may lie
//!   inside this window or outside it, and nothing in a record says which. So the content is
//!   counted over its **chain**: the windows holding it that straddle this one, the windows
//!   holding it that those straddle, and so on, until every window holding it that overlaps
//!   the chain's hull lies inside it. Every copy the lake holds of that content in the hull is
//!   then held by a window of the chain; what the API serves in the hull beyond that (give or
//!   take the bands at the hull's bounds, counted as for neighbours) is new, and this read
//!   writes as many of the copies it returned.
//!
//! Copies carry no instant, so a copy written here may be one that lies elsewhere in the hull;
//! the chain keeps every later count right: the window holding it is in every chain that
//! reaches the copy's instant, since that instant lies in a window of its chain, and chains
//! only grow. Invariant: the copies of a content held by a chain never outnumber those the API
//! serves in its hull, so nothing is written twice; a read whose chain holds fewer writes the
//! difference, so a final `reconcile` misses nothing.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use url::Url;

use super::{Deps, ExportError, is_unknown_partition, read_ids};
use crate::api::Page;
use crate::checkpoint::Side;
use crate::dedup::{Content, Deduper, ID_SCHEME, IdCounts};
use crate::model::{BOUND_PAD, MAX_QUERY_WINDOW, StreamSpec, Window};

type Instant = chrono::DateTime<chrono::Utc>;

/// The longest chain counted: two windows of the longest size straddling each other.
const CHAIN_SPAN: chrono::Duration = chrono::Duration::days(14);

/// How much of the API's range one read may count chains over, all hulls together.
const READ_BUDGET: chrono::Duration = chrono::Duration::days(21);

/// Counts what the API serves, with the window's fetch (cancellation, retries, crash points).
pub(super) struct Counter<'a, 'd, F> {
    pub(super) deps: &'a Deps<'d>,
    pub(super) stream: &'a StreamSpec,
    pub(super) fetch: &'a F,
}

/// The band of two seconds around `bound` where two padded queries meet.
fn band(bound: Instant) -> (Instant, Instant) {
    (bound - BOUND_PAD, bound + BOUND_PAD)
}

impl<F, Fut> Counter<'_, '_, F>
where
    F: Fn(Url) -> Fut,
    Fut: Future<Output = Result<Page, ExportError>>,
{
    /// Copies served per content of `want`: every record without a usable `actionTime` in
    /// every page of the query `[start, end]`, added to `into` with `sign`.
    async fn count(
        &self,
        range: (Instant, Instant),
        sign: i64,
        dedup: &mut Deduper,
        want: &HashSet<Content>,
        into: &mut HashMap<Content, i64>,
    ) -> Result<(), ExportError> {
        let mut next = Some(self.deps.api.first_url(self.stream, range.0, range.1));
        let mut followed = HashSet::new();
        while let Some(url) = next.take() {
            let page = (self.fetch)(url).await?;
            for rec in page.records().filter(|r| r.time.is_none()) {
                let c = dedup.content_of(&rec);
                if want.contains(&c) {
                    *into.entry(c).or_insert(0) += sign;
                }
            }
            if let Some(n) = &page.next_link {
                if !followed.insert(n.to_string()) {
                    return Err(ExportError::RepeatedNextLink(n.to_string()));
                }
                next = Some(n.clone());
            }
        }
        Ok(())
    }

    /// Copies of each content of `want` the two bands at `w`'s bounds serve (before, after).
    pub(super) async fn bands(
        &self,
        w: &Window,
        dedup: &mut Deduper,
        want: &HashSet<Content>,
    ) -> Result<[HashMap<Content, i64>; 2], ExportError> {
        let mut out: [HashMap<Content, i64>; 2] = Default::default();
        for (side, bound) in [w.start, w.end].into_iter().enumerate() {
            self.count(band(bound), 1, dedup, want, &mut out[side]).await?;
        }
        Ok(out)
    }

    /// Copies of each content of `want` served in `hull`: the API's 7 days at most per query,
    /// so a longer hull is read in pieces, and the band where two pieces' padded queries meet
    /// (read between them, so a record arriving meanwhile is never counted twice) is taken
    /// off once.
    async fn served(&self, hull: &Window, dedup: &mut Deduper, want: &HashSet<Content>) -> Result<HashMap<Content, i64>, ExportError> {
        let mut out = HashMap::new();
        let mut start = hull.start;
        loop {
            let end = (start + MAX_QUERY_WINDOW).min(hull.end);
            let piece = Window { start, end }.query();
            self.count((piece.start, piece.end), 1, dedup, want, &mut out).await?;
            if end >= hull.end {
                return Ok(out);
            }
            self.count(band(end), -1, dedup, want, &mut out).await?;
            start = end;
        }
    }

    /// For each content of `chained` (copies held by a window straddling `w`) whose chain it
    /// counts, how many copies the chain lacks. Those left out (a chain too long, an older id
    /// scheme, past [`READ_BUDGET`]) are not written at all: a copy a chain wrote elsewhere may
    /// stand for one of them, which no count over fewer windows sees.
    pub(super) async fn chained_new(
        &self,
        w: &Window,
        chained: &HashSet<Content>,
        dedup: &mut Deduper,
    ) -> Result<HashMap<Content, u32>, ExportError> {
        let mut lake = Lake {
            deps: self.deps,
            listed: HashMap::new(),
            ids: HashMap::new(),
            legacy: HashSet::new(),
            counted: HashMap::new(),
        };
        let mut by_hull: HashMap<Window, Vec<(Content, Chain)>> = HashMap::new();
        let mut left = 0;
        for c in chained {
            match lake.chain(w, *c).await? {
                Some(chain) => by_hull.entry(chain.hull).or_default().push((*c, chain)),
                None => left += 1,
            }
        }
        let mut hulls: Vec<_> = by_hull.into_iter().collect();
        // The shortest first, within the budget.
        hulls.sort_by_key(|(h, _)| (h.end - h.start, h.start));
        let mut spent = chrono::Duration::zero();
        let mut out = HashMap::new();
        for (hull, chains) in hulls {
            spent += hull.end - hull.start;
            if spent > READ_BUDGET {
                left += chains.len();
                continue;
            }
            let want: HashSet<Content> = chains.iter().map(|(c, _)| *c).collect();
            tracing::info!(
                start = %w.start, hull_start = %hull.start, hull_end = %hull.end, contents = want.len(),
                "records without actionTime that a window straddling this one holds copies of: counted over the windows they chain to"
            );
            let served = self.served(&hull, dedup, &want).await?;
            let bands = if chains.iter().any(|(_, ch)| ch.near != [0, 0]) {
                self.bands(&hull, dedup, &want).await?
            } else {
                Default::default()
            };
            for (c, ch) in chains {
                let at = |side: usize| u32::try_from(bands[side].get(&c).copied().unwrap_or(0).max(0)).unwrap_or(u32::MAX);
                let known = i64::from(ch.held) + i64::from(ch.near[0].min(at(0))) + i64::from(ch.near[1].min(at(1)));
                let new = (served.get(&c).copied().unwrap_or(0) - known).max(0);
                out.insert(c, u32::try_from(new).unwrap_or(u32::MAX));
            }
        }
        if left > 0 {
            tracing::warn!(
                start = %w.start, end = %w.end, contents = left,
                "records without actionTime whose copies straddle this window over too long a range (or near files of an older id scheme): not written by this read, so a late identical copy may be missed (none is written twice)"
            );
        }
        Ok(out)
    }
}

/// One content's chain: the hull, the copies its windows hold, and the copies held by the
/// windows touching the hull (before, after).
struct Chain {
    hull: Window,
    held: u32,
    near: [u32; 2],
}

/// The committed `dt=unknown` files a read of `w` meets, with their side and window, and their
/// ids counted (read once per file).
struct Lake<'a, 'd> {
    deps: &'a Deps<'d>,
    listed: HashMap<Window, Vec<(String, Side, Window)>>,
    ids: HashMap<String, IdCounts>,
    /// Files whose ids are of an older scheme (not counted by [`IdCounts`]).
    legacy: HashSet<String>,
    /// Copies of a content per file, counted once (a count hashes hundreds of ids, and a
    /// chain asks again as it grows).
    counted: HashMap<(String, Content), u32>,
}

impl Lake<'_, '_> {
    async fn files(&mut self, w: &Window) -> Result<Vec<(String, Side, Window)>, ExportError> {
        if !self.listed.contains_key(w) {
            let mut v = Vec::new();
            for (path, scheme, side, fw) in self.deps.checkpoint.files_overlapping(w)? {
                if is_unknown_partition(&path) {
                    if scheme != ID_SCHEME {
                        self.legacy.insert(path.clone());
                    }
                    if !self.ids.contains_key(&path) {
                        let ids = IdCounts::new(read_ids(self.deps, &path).await?);
                        self.ids.insert(path.clone(), ids);
                    }
                    v.push((path, side, fw));
                }
            }
            self.listed.insert(*w, v);
        }
        Ok(self.listed[w].clone())
    }

    fn copies(&mut self, path: &str, c: Content) -> u32 {
        if let Some(n) = self.counted.get(&(path.to_string(), c)) {
            return *n;
        }
        let n = self.ids.get(path).map_or(0, |ids| ids.copies(c));
        self.counted.insert((path.to_string(), c), n);
        n
    }

    /// The chain of `c` from `w`; none when it reaches past [`CHAIN_SPAN`] or meets a file of
    /// an older id scheme (whose copies [`IdCounts`] cannot count).
    async fn chain(&mut self, w: &Window, c: Content) -> Result<Option<Chain>, ExportError> {
        let mut hull = *w;
        let mut members = HashSet::new();
        loop {
            let mut grew = false;
            for (path, side, fw) in self.files(&hull).await? {
                if self.legacy.contains(&path) {
                    return Ok(None);
                }
                if side == Side::Overlap && self.copies(&path, c) > 0 && members.insert(path) {
                    hull.start = hull.start.min(fw.start);
                    hull.end = hull.end.max(fw.end);
                    grew = true;
                }
            }
            if hull.end - hull.start > CHAIN_SPAN {
                return Ok(None);
            }
            if !grew {
                break;
            }
        }
        let mut held = 0;
        for p in &members {
            held += self.copies(p, c);
        }
        let mut chain = Chain { hull, held, near: [0, 0] };
        for (path, side, _) in self.files(&hull).await? {
            match side {
                Side::Before => chain.near[0] += self.copies(&path, c),
                Side::After => chain.near[1] += self.copies(&path, c),
                Side::Overlap => {}
            }
        }
        Ok(Some(chain))
    }
}
