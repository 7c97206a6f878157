//! The answer cache: wire-format answers keyed by question, DO and CD.
//!
//! A hit is a hash lookup, an `Arc` clone and a copy of the stored bytes with
//! ID and TTLs patched (see [`WireAnswer::write`]); no record is decoded or
//! encoded and no lock is held beyond the shard's own lookup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache as Store;

use crate::wire::WireAnswer;

pub struct Entry {
    pub answer: WireAnswer,
    /// The verdict of the lists and zones when the answer was asked for.
    pub checked: Checked,
    stored: Instant,
    expires: Instant,
}

/// What steps 4 to 6 of the query path decided for a name, and under which
/// lists and zones (`generation`, bumped by each reload). A hit under the
/// same generation may skip those steps: they would decide the same.
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    pub generation: u64,
    /// Allow-listed: answer inspection does not apply.
    pub exempt: bool,
    /// Sent to the public upstreams (not a `[[forward]]` target) with
    /// rebind protection on: a private address in the answer is an attack.
    pub rebinding: bool,
}

impl Entry {
    /// Whole seconds since the answer was stored, which every TTL loses.
    pub fn age(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.stored).as_secs() as u32
    }
}

pub struct Cache {
    store: Option<Store<Box<[u8]>, Arc<Entry>>>,
}

impl Cache {
    /// `size` entries at most; 0 turns the cache off.
    pub fn new(size: usize) -> Cache {
        Cache {
            store: (size > 0).then(|| Store::new(size)),
        }
    }

    /// A fresh entry for `key`, or `None`. Expired entries count as misses;
    /// the next insert for the key replaces them.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Arc<Entry>> {
        let entry = self.store.as_ref()?.get(key)?;
        (entry.expires > now).then_some(entry)
    }

    /// Stores `answer` if it says it may be cached.
    pub fn insert(&self, key: &[u8], answer: &WireAnswer, checked: Checked, now: Instant) {
        let (Some(store), Some(ttl)) = (&self.store, answer.cache_ttl) else {
            return;
        };
        let entry = Entry {
            answer: answer.clone(),
            checked,
            stored: now,
            expires: now + Duration::from_secs(ttl as u64),
        };
        store.insert(key.into(), Arc::new(entry));
    }

    pub fn len(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
