//! Pure record identity and deduplication: placing records in their window, fingerprints and
//! multiset deduplication.
//!
//! A record's `_record_id` (id scheme 3, [`ID_SCHEME`]) is SHA-256 over its identity — the
//! documented fields only ([`crate::model::DOCUMENTED_FIELDS`]), those whose value is `null`
//! left out like absent ones, `actionTime` as an instant in nanoseconds rather than its text,
//! other values in the canonical spelling of [`canonical`] (keys sorted, nulls dropped, numbers
//! by value, escapes and whitespace normalized) — and its occurrence number among records of
//! the same identity in the same read, truncated to 128 bits. So whatever spelling the API
//! chooses for the same record (nulls omitted or sent, keys reordered, `1` or `1.0`, `Z` or
//! `+00:00`, 3 or 7 fraction digits), and whatever field AvePoint adds later, a known record is
//! never new; unknown fields still ride along in the output. Identical twins always share
//! `actionTime`, so every window that holds one holds all of them: occurrence numbers are the
//! same whichever window boundaries a re-read uses. Re-reads collapse, legitimate twins survive.
//!
//! Older schemes: 1 hashed the whole record's canonical JSON; 2 the documented fields with
//! `null` distinct from absent and numbers as serde_json re-printed them. Files written under
//! them keep their ids; a re-read that meets such files computes those ids too, so an upgrade
//! never duplicates the look-back.

pub mod canonical;
mod counts;
pub use counts::IdCounts;
use counts::held_in;

use std::collections::HashMap;
use std::io::Write as _;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::record::{ACTION_TIME, Kind, Record, is_canonical_string, kind, string_of};
use crate::model::{DOCUMENTED_FIELDS, RecordId, Window};

/// The id scheme this version writes (recorded per file in the manifest).
pub const ID_SCHEME: i64 = 3;

/// The manifest's id scheme of a file adopted from the lake whose scheme is not known: a
/// re-read computes the ids of every scheme for it.
pub const UNKNOWN_SCHEME: i64 = 0;

/// Where a record belongs relative to the window that returned it.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// Inside `[start, end)`.
    In(DateTime<Utc>),
    /// Outside, at this instant: at the window's end, a server with inclusive bounds returned
    /// the next window's record; anywhere else, the server misplaced it.
    Out(DateTime<Utc>),
    /// No parseable `actionTime`: kept (never dropped) in `dt=unknown`, deduplicated against
    /// the files of the windows this read overlaps.
    Unplaced,
}

/// Where `record` belongs relative to `window`.
pub fn place(record: &Record<'_>, window: &Window) -> Placement {
    match record.time {
        Some(t) if window.contains(t) => Placement::In(t),
        Some(t) => Placement::Out(t),
        None => Placement::Unplaced,
    }
}

/// Writes `v` as canonical JSON: keys sorted, no insignificant whitespace.
pub fn canonical_json(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(k, out);
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(xs) => {
            out.push(b'[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(x, out);
            }
            out.push(b']');
        }
        other => write_json(other, out),
    }
}

/// Appends a scalar as JSON. Serializing a `str` or a JSON value into a `Vec` cannot fail; if
/// it ever did, the bytes written so far still identify the value deterministically.
fn write_json<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// Writes a raw value as canonical JSON. A string without escapes is already canonical (its
/// raw text is what serde_json writes), so the common case copies bytes and allocates nothing.
fn canonical_raw(v: &str, out: &mut Vec<u8>) {
    let text = v;
    match kind(v) {
        Kind::String if is_canonical_string(text) => out.extend_from_slice(text.as_bytes()),
        Kind::String => match string_of(v) {
            Some(s) => write_json(s.as_ref(), out),
            None => out.extend_from_slice(text.as_bytes()),
        },
        Kind::Null => out.extend_from_slice(b"null"),
        Kind::Other if text == "true" || text == "false" => out.extend_from_slice(text.as_bytes()),
        Kind::Other => match serde_json::from_str::<Value>(text) {
            Ok(value) => canonical_json(&value, out),
            Err(_) => out.extend_from_slice(text.as_bytes()),
        },
    }
}

/// The identity bytes of a record under scheme 3: each documented field present and not
/// `null`, in a fixed order, as `name=value;` with `actionTime` as `@` and nanoseconds since the
/// epoch when it parses, and every other value in its [`canonical`] spelling.
fn identity(record: &Record<'_>, out: &mut Vec<u8>) {
    let time_ns = record.time.and_then(|t| t.timestamp_nanos_opt());
    for (i, f) in DOCUMENTED_FIELDS.iter().enumerate() {
        let Some(v) = record.fields[i] else { continue };
        if kind(v) == Kind::Null {
            continue;
        }
        out.extend_from_slice(f.as_bytes());
        out.push(b'=');
        match time_ns {
            // Written straight into the buffer: no string per record.
            Some(ns) if i == ACTION_TIME => {
                let _ = write!(out, "@{ns}");
            }
            // A string without escapes is its own canonical spelling.
            _ if record.is_plain(i) => out.extend_from_slice(v.as_bytes()),
            _ => canonical::canonical(v, out),
        }
        out.push(b';');
    }
}

/// The identity bytes of a record under scheme 2 (kept to recognise files written by it):
/// each documented field present, in a fixed order, as `name=value;` with `actionTime` as
/// nanoseconds since the epoch when it parses.
fn identity_v2(record: &Record<'_>, out: &mut Vec<u8>) {
    let time_ns = record.time.and_then(|t| t.timestamp_nanos_opt());
    for (i, f) in DOCUMENTED_FIELDS.iter().enumerate() {
        let Some(v) = record.fields[i] else { continue };
        out.extend_from_slice(f.as_bytes());
        out.push(b'=');
        match time_ns {
            // Written straight into the buffer: no string per record.
            Some(ns) if i == ACTION_TIME => {
                let _ = write!(out, "@{ns}");
            }
            // A string without escapes is its own canonical JSON.
            _ if record.is_plain(i) => out.extend_from_slice(v.as_bytes()),
            _ => canonical_raw(v, out),
        }
        out.push(b';');
    }
}

/// A 128-bit key that is already a uniform hash (a prefix of SHA-256): byte-aligned, so a
/// map entry is 20 bytes rather than a `u128`'s padded 32, and hashed by taking its first
/// 8 bytes rather than running SipHash over it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 16]);

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

/// The hasher for [`Key`]s: the key's own first 8 bytes are the hash.
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Key`; anything else still hashes deterministically.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap = HashMap<Key, u32, std::hash::BuildHasherDefault<KeyHasher>>;

fn key_of(bytes: &[u8]) -> Key {
    let mut k = [0u8; 16];
    k.copy_from_slice(&bytes[..16]);
    Key(k)
}

/// Counts occurrences of each content key within one read: a set of the keys seen (17 bytes
/// a slot), and counts only for the few keys seen more than once (identical twins).
#[derive(Default)]
struct Occurrences {
    seen: KeySet,
    repeats: KeyMap,
}

type KeySet = std::collections::HashSet<Key, std::hash::BuildHasherDefault<KeyHasher>>;

impl Occurrences {
    /// How many records with this content were numbered so far.
    fn count(&self, content: [u8; 32]) -> u32 {
        let key = key_of(&content);
        match self.repeats.get(&key) {
            Some(n) => *n,
            None => u32::from(self.seen.contains(&key)),
        }
    }

    /// The id of the next record with this content: hash(content, occurrence number).
    fn next_id(&mut self, content: [u8; 32]) -> RecordId {
        let key = key_of(&content);
        let occurrence = if self.seen.insert(key) {
            0
        } else {
            let n = self.repeats.entry(key).or_insert(1);
            *n += 1;
            *n - 1
        };
        id_of(content, occurrence)
    }

    /// Map slots held.
    fn capacity(&self) -> usize {
        self.seen.capacity() + self.repeats.capacity()
    }
}

/// A record identity's hash, shared by identical twins.
pub type Content = [u8; 32];

/// What [`Deduper::admit_unplaced`] decided for a record without a usable `actionTime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unplaced {
    /// Not in the lake: write it.
    New,
    /// Already in the lake.
    Known,
    /// A neighbour holds copies of this content: decided by [`Deduper::resolve`] once the
    /// overlaps with the neighbours are read.
    Deferred {
        /// The record's content hash.
        content: Content,
        /// Its number among the copies of this content in this read.
        occurrence: u32,
    },
}

/// The id of the `occurrence`-th record with this content.
fn id_of(content: [u8; 32], occurrence: u32) -> RecordId {
    let mut h = Sha256::new();
    h.update(content);
    h.update(occurrence.to_be_bytes());
    let full: [u8; 32] = h.finalize().into();
    let mut id = [0u8; 16];
    id.copy_from_slice(&full[..16]);
    id
}

/// Multiset deduplication for one read of one window.
///
/// Memory per record read: one 16-byte content key and a counter (identical records share
/// one entry); the committed ids are only looked up, never added to.
///
/// Records without a usable `actionTime` are numbered per window that wrote them, so the lake
/// can hold the same id more than once (identical such records of different windows); for
/// them, the committed ids are counted as a multiset: the n-th copy a read returns is new only
/// if the lake holds fewer than n copies of that content.
pub struct Deduper {
    known: KeyMap,
    /// Ids in the `dt=unknown` files of windows overlapping this one (records without a usable
    /// `actionTime`: the only ones [`Deduper::admit_unplaced`] looks up).
    known_unplaced: KeyMap,
    /// Ids in the `dt=unknown` files of windows that overlap this one without lying inside it:
    /// their copies of a content may lie inside this window or outside it.
    straddling: KeyMap,
    /// Copies held per content (overlapping, before, after, straddling), computed once per
    /// content: N identical records cost N lookups, not N² (each count walks the content's ids).
    held_memo: HashMap<Content, [u32; 4]>,
    /// Copies of a content among `known` (for [`Deduper::admit`] of an unplaced record), memoized.
    known_memo: HashMap<Content, u32>,
    /// Ids probed while counting copies (see [`Deduper::probes`]).
    probes: u64,
    /// Ids in the `dt=unknown` files of the neighbouring windows before and after this one
    /// (they only meet its padded query).
    neighbours: [KeyMap; 2],
    occurrences: Occurrences,
    /// Present when some committed file of the range carries scheme-1 ids.
    legacy: Option<Occurrences>,
    /// Present when some committed file of the range carries scheme-2 ids.
    legacy2: Option<Occurrences>,
    buf: Vec<u8>,
}

impl Deduper {
    /// `known`: ids already committed for the window's time range; `schemes`: the id schemes
    /// they were written under ([`UNKNOWN_SCHEME`] for any).
    pub fn new(known: impl IntoIterator<Item = RecordId>, schemes: &[i64]) -> Self {
        let mut counts = KeyMap::default();
        for id in known {
            *counts.entry(Key(id)).or_insert(0) += 1;
        }
        let has = |n: i64| schemes.iter().any(|s| *s == n || *s == UNKNOWN_SCHEME);
        Deduper {
            known: counts,
            known_unplaced: KeyMap::default(),
            straddling: KeyMap::default(),
            held_memo: HashMap::new(),
            known_memo: HashMap::new(),
            probes: 0,
            neighbours: Default::default(),
            occurrences: Occurrences::default(),
            legacy: has(1).then(Occurrences::default),
            legacy2: has(2).then(Occurrences::default),
            buf: Vec::with_capacity(2048),
        }
    }

    /// Adds the ids of the `dt=unknown` files of windows overlapping this one.
    pub fn add_unplaced(&mut self, ids: impl IntoIterator<Item = RecordId>) {
        for id in ids {
            *self.known_unplaced.entry(Key(id)).or_insert(0) += 1;
        }
    }

    /// Adds the ids of the `dt=unknown` files of windows that overlap this one without lying
    /// inside it (also given to [`Deduper::add_unplaced`]).
    pub fn add_straddling(&mut self, ids: impl IntoIterator<Item = RecordId>) {
        for id in ids {
            *self.straddling.entry(Key(id)).or_insert(0) += 1;
        }
    }

    /// Copies of `content` held: in the overlapping windows' `dt=unknown` files, in the
    /// neighbours' before and after, and in the straddling windows' files.
    fn held(&mut self, content: Content) -> [u32; 4] {
        if let Some(h) = self.held_memo.get(&content) {
            return *h;
        }
        let h = [
            held_in(&self.known_unplaced, content, &mut self.probes),
            held_in(&self.neighbours[0], content, &mut self.probes),
            held_in(&self.neighbours[1], content, &mut self.probes),
            held_in(&self.straddling, content, &mut self.probes),
        ];
        self.held_memo.insert(content, h);
        h
    }

    /// Adds the ids of a neighbouring window's `dt=unknown` files (`side` 0: before, 1: after).
    pub fn add_neighbour(&mut self, side: usize, ids: impl IntoIterator<Item = RecordId>) {
        for id in ids {
            *self.neighbours[side].entry(Key(id)).or_insert(0) += 1;
        }
    }

    /// The content hash of a record's identity (what twins share).
    pub fn content_of(&mut self, record: &Record<'_>) -> Content {
        self.buf.clear();
        identity(record, &mut self.buf);
        Sha256::digest(&self.buf).into()
    }

    /// Records without a usable `actionTime`: the copy's id and its fate. Copies are numbered
    /// per content in this read; the n-th (0-based) is new if the lake holds at most n copies
    /// that this read can return. The files of windows inside this one count whole; a
    /// neighbour's count only as far as the two windows' queries overlap (two seconds at each
    /// bound), which only a query of that overlap can tell; a straddling window's, only as far
    /// as its copies lie inside this window. Such a copy is [`Unplaced::Deferred`] until
    /// [`Deduper::resolve`] (or the count over the windows it chains to) knows it.
    pub fn admit_unplaced(&mut self, record: &Record<'_>) -> (RecordId, Unplaced) {
        let content = self.content_of(record);
        let id = self.occurrences.next_id(content);
        let occurrence = self.occurrences.count(content).saturating_sub(1);
        if self.legacy_known(record) {
            return (id, Unplaced::Known);
        }
        let [own, before, after, straddling] = self.held(content);
        if before + after + straddling > 0 {
            return (id, Unplaced::Deferred { content, occurrence });
        }
        let new = occurrence >= own;
        (id, if new { Unplaced::New } else { Unplaced::Known })
    }

    /// Whether a deferred copy is new, given how many copies of its content the queries of the
    /// overlaps with the neighbours before and after returned (`band`).
    pub fn resolve(&mut self, content: Content, occurrence: u32, band: [u32; 2]) -> bool {
        let [own, before, after, _] = self.held(content);
        occurrence >= own + before.min(band[0]) + after.min(band[1])
    }

    /// Whether a window straddling this one holds copies of `content`: where those lie, only
    /// counting them window by window over the windows they chain to tells (see
    /// `window::hull`), and [`Deduper::resolve`] does not apply.
    pub fn straddled(&mut self, content: Content) -> bool {
        self.held(content)[3] > 0
    }

    /// Copies of `content` in the files of windows lying inside this one.
    pub fn held_inside(&mut self, content: Content) -> u32 {
        let [own, _, _, straddling] = self.held(content);
        own.saturating_sub(straddling)
    }

    /// Whether the record's id under an older scheme is committed.
    fn legacy_known(&mut self, record: &Record<'_>) -> bool {
        let mut known = false;
        if let Some(legacy) = &mut self.legacy
            && let Some(value) = record.to_value()
        {
            self.buf.clear();
            canonical_json(&value, &mut self.buf);
            let old = Key(legacy.next_id(Sha256::digest(&self.buf).into()));
            known |= self.known.contains_key(&old) || self.known_unplaced.contains_key(&old);
        }
        if let Some(legacy2) = &mut self.legacy2 {
            self.buf.clear();
            identity_v2(record, &mut self.buf);
            let old = Key(legacy2.next_id(Sha256::digest(&self.buf).into()));
            known |= self.known.contains_key(&old) || self.known_unplaced.contains_key(&old);
        }
        known
    }

    /// How many ids were looked up to count copies of a content so far: the work of
    /// deduplicating identical records, which must grow with the records, not their square.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// About how many bytes this read's ids take (what `export.dedup_memory` counts).
    pub fn memory_bytes(&self) -> usize {
        // A map slot is a 16-byte key, a 4-byte count and a control byte, at 7/8 load.
        let slot = 24;
        let legacy = self.legacy.as_ref().map_or(0, Occurrences::capacity) + self.legacy2.as_ref().map_or(0, Occurrences::capacity);
        let unplaced =
            self.known_unplaced.capacity() + self.straddling.capacity() + self.neighbours.iter().map(|m| m.capacity()).sum::<usize>();
        (self.known.capacity() + self.occurrences.capacity() + legacy + unplaced) * slot
    }

    /// The record's id, and whether it is new (not already committed). `placed`: whether the
    /// record has a usable `actionTime` inside the window.
    pub fn admit(&mut self, record: &Record<'_>, placed: bool) -> (RecordId, bool) {
        self.buf.clear();
        identity(record, &mut self.buf);
        let content: [u8; 32] = Sha256::digest(&self.buf).into();
        let id = self.occurrences.next_id(content);
        let mut new = if placed {
            // Twins share their instant, so one window holds them all and numbers them the
            // same way in every read: an id can repeat only if it was committed before.
            !self.known.contains_key(&Key(id))
        } else {
            // The n-th copy (0-based) is new if the lake holds at most n of this content.
            let seen = self.occurrences.count(content).saturating_sub(1);
            let known = match self.known_memo.get(&content) {
                Some(n) => *n,
                None => {
                    let n = held_in(&self.known, content, &mut self.probes);
                    self.known_memo.insert(content, n);
                    n
                }
            };
            seen >= known + self.held(content)[0]
        };
        new = new && !self.legacy_known(record);
        (id, new)
    }
}

#[cfg(test)]
mod tests;
