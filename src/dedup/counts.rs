//! Ids counted as a multiset, asked how many copies of a content they stand for: what a read
//! needs of each committed `dt=unknown` file when it counts a content's copies window by window.

use super::{Content, Key, KeyMap, RecordId, id_of};

/// The ids of one file (or any set of files), counted.
#[derive(Default)]
pub struct IdCounts {
    map: KeyMap,
}

impl IdCounts {
    /// Counts these ids.
    pub fn new(ids: impl IntoIterator<Item = RecordId>) -> Self {
        let mut map = KeyMap::default();
        for id in ids {
            *map.entry(Key(id)).or_insert(0) += 1;
        }
        IdCounts { map }
    }

    /// How many copies of `content` the ids stand for.
    pub fn copies(&self, content: Content) -> u32 {
        held_in(&self.map, content, &mut 0)
    }
}

/// How many copies of `content` the ids in `map` stand for: every occurrence number up to
/// 256, and on while they keep being found (a read numbers its copies 0, 1, …, but a re-read
/// may hold a later number without an earlier one).
pub(super) fn held_in(map: &KeyMap, content: Content, probes: &mut u64) -> u32 {
    if map.is_empty() {
        return 0;
    }
    let mut total = 0;
    for n in 0u32.. {
        *probes += 1;
        let c = map.get(&Key(id_of(content, n))).copied().unwrap_or(0);
        if c == 0 && n >= 256 {
            break;
        }
        total += c;
    }
    total
}
