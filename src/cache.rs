//! The answer cache: wire-format answers keyed by question, DO and CD.
//!
//! A hit is a hash lookup, an `Arc` clone and a copy of the stored bytes with
//! ID and TTLs patched (see [`WireAnswer::write`]); no record is decoded or
//! encoded and no lock is held beyond the shard's own lookup.
//!
//! The store is keyed by a seeded 64-bit hash of the key, and the entry
//! itself proves it is the one asked for: the key is the question (name
//! lowercased) plus one byte for DO and CD ([`Query::cache_key`]), and the
//! entry holds that byte beside an answer whose question is stored
//! lowercased. A hit then reads no key of its own: in `perf`, comparing
//! separately allocated keys was one of the memory reads that dominate a
//! hit's time, not its instructions.
//!
//! [`Query::cache_key`]: crate::wire::Query::cache_key

use std::sync::Arc;
use std::time::{Duration, Instant};

use quick_cache::sync::Cache as Store;

use crate::wire::WireAnswer;

/// In this order (`repr(C)`): what every hit checks first shares the cache
/// line of the `Arc`'s count, which a hit increments with a locked
/// instruction that no later read can overtake; spread over the entry, they
/// were a second wait for memory on each hit.
#[repr(C)]
pub struct Entry {
    /// When it was stored is derived: `cache_ttl` seconds before this.
    expires: Instant,
    /// The verdict of the lists and zones when the answer was asked for.
    pub checked: Checked,
    /// The key's last byte, DO and CD; the rest of it is the answer's question.
    variant: u8,
    pub answer: WireAnswer,
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
        // Only answers with a cache TTL are stored (`Cache::insert`).
        let ttl = self.answer.cache_ttl.unwrap_or(0);
        let left = self.expires.saturating_duration_since(now);
        // Whole seconds since it was stored, rounded down: the seconds left,
        // rounded up, taken from its TTL.
        ttl.saturating_sub(left.as_secs() as u32 + u32::from(left.subsec_nanos() > 0))
    }

    fn is_for(&self, key: &[u8]) -> bool {
        key.split_last().is_some_and(|(&variant, question)| {
            variant == self.variant && self.answer.question() == question
        })
    }
}

pub struct Cache {
    store: Option<Store<u64, Arc<Entry>>>,
    /// Random per process, so no one can pick names whose hashes collide.
    /// A collision would cost a miss, not a wrong answer ([`Entry::is_for`]).
    seed: u64,
}

impl Cache {
    /// `size` entries at most; 0 turns the cache off.
    pub fn new(size: usize) -> Cache {
        Cache {
            store: (size > 0).then(|| Store::new(size)),
            seed: rand::random(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed)
    }

    /// A fresh entry for `key`, or `None`. Expired entries count as misses;
    /// the next insert for the key replaces them.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Arc<Entry>> {
        let entry = self.store.as_ref()?.get(&self.hash(key))?;
        (entry.expires > now && entry.is_for(key)).then_some(entry)
    }

    /// Stores `answer` if it says it may be cached.
    pub fn insert(&self, key: &[u8], answer: &WireAnswer, checked: Checked, now: Instant) {
        let (Some(store), Some(ttl)) = (&self.store, answer.cache_ttl) else {
            return;
        };
        let Some((&variant, _)) = key.split_last() else {
            return;
        };
        let mut answer = answer.clone();
        answer.lowercase_question();
        let entry = Entry {
            answer,
            checked,
            variant,
            expires: now + Duration::from_secs(ttl as u64),
        };
        store.insert(self.hash(key), Arc::new(entry));
    }

    pub fn len(&self) -> usize {
        self.store.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Query, TtlPolicy};
    use hickory_proto::op::{Edns, Message, MessageType};
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};

    /// A query for `name` A (DO set when `dnssec_ok`) and an upstream's
    /// answer to it, taken apart as the forwarding path does.
    fn asked(name: &str, dnssec_ok: bool) -> (Vec<u8>, WireAnswer) {
        let mut message = Message::query();
        let name = Name::from_ascii(name).unwrap();
        let question = hickory_proto::op::Query::query(name.clone(), RecordType::A);
        message.queries.push(question);
        let mut edns = Edns::new();
        edns.set_dnssec_ok(dnssec_ok);
        message.edns = Some(edns);
        let packet = message.to_vec().unwrap();
        let mut reply = message.clone();
        reply.metadata.message_type = MessageType::Response;
        reply.edns = None;
        let address = RData::A(A::new(192, 0, 2, 1));
        reply.answers.push(Record::from_rdata(name, 300, address));
        let query = Query::parse(&packet).unwrap();
        let ttl = TtlPolicy { min: 0, max: 86400 };
        let answer = WireAnswer::from_upstream(reply.to_vec().unwrap(), &packet, &query, ttl);
        (packet, answer.unwrap())
    }

    fn key_of(packet: &[u8]) -> Vec<u8> {
        let mut key = Vec::new();
        Query::parse(packet).unwrap().cache_key(packet, &mut key);
        key
    }

    const CHECKED: Checked = Checked {
        generation: 1,
        exempt: false,
        rebinding: false,
    };

    #[test]
    fn an_answer_is_found_by_its_question_in_any_case_and_by_no_other() {
        let cache = Cache::new(100);
        let now = Instant::now();
        let (packet, answer) = asked("Phone.Example.", false);
        cache.insert(&key_of(&packet), &answer, CHECKED, now);

        let (same_in_lowercase, _) = asked("phone.example.", false);
        let entry = cache.get(&key_of(&same_in_lowercase), now).expect("a hit");
        assert_eq!(
            entry.answer.addresses(),
            ["192.0.2.1".parse::<std::net::IpAddr>().unwrap()]
        );
        let (with_do, _) = asked("Phone.Example.", true);
        assert!(
            cache.get(&key_of(&with_do), now).is_none(),
            "DO is part of the key"
        );
        let (other, _) = asked("Phono.Example.", false);
        assert!(cache.get(&key_of(&other), now).is_none());
        let ages = [0, 999, 1000, 299_999].map(|ms| entry.age(now + Duration::from_millis(ms)));
        assert_eq!(ages, [0, 0, 1, 299], "whole seconds since it was stored");
        let later = now + Duration::from_secs(300);
        assert!(cache.get(&key_of(&packet), later).is_none(), "expired");
    }

    #[test]
    fn an_entry_found_under_a_colliding_hash_is_not_served() {
        let cache = Cache::new(100);
        let now = Instant::now();
        let (packet, answer) = asked("phone.example.", false);
        let (other, _) = asked("tracker.example.", false);
        let (with_do, _) = asked("phone.example.", true);
        cache.insert(&key_of(&packet), &answer, CHECKED, now);
        let entry = cache.get(&key_of(&packet), now).expect("a hit");
        // As if the other keys hashed to the same 64 bits as this one.
        let store = cache.store.as_ref().unwrap();
        for colliding in [key_of(&other), key_of(&with_do)] {
            store.insert(cache.hash(&colliding), entry.clone());
            assert!(cache.get(&colliding, now).is_none());
        }
    }
}
