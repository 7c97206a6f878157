//! The answer cache: wire-format answers keyed by question, DO and CD.
//!
//! A hit is a hash lookup, an `Arc` clone and a copy of the stored bytes with
//! ID and TTLs patched (see [`WireAnswer::write`]); no record is decoded or
//! encoded.
//!
//! In `perf`, half of a hit's user time was waiting for memory in the
//! lookup, while it was a twentieth of its instructions; so the lookup is
//! built to read few cache lines, one after another:
//!
//! - The table is set-associative: a seeded 64-bit hash of the key picks a
//!   set of [`WAYS`] entries, and the set's lock, its tags and its entries'
//!   pointers fill one cache line. A hit reads that line and the entry.
//!   (A general hash map read a control byte, an index and a slot first.)
//! - The entry proves it is the one asked for: the key is the question (name
//!   lowercased) plus one byte for DO and CD ([`Query::cache_key`]), and the
//!   entry holds that byte beside an answer whose question is stored
//!   lowercased. No key is stored apart from the entry.
//! - Eviction is CLOCK within a set: a hit marks its entry, and a new entry
//!   in a full set replaces the first one the set's hand finds unmarked,
//!   unmarking those it passes. A new entry starts unmarked, so names asked
//!   once go before names asked again. Expired entries are never marked.
//! - A batch of queries prefetches its sets, then its entries, before the
//!   first is answered ([`Cache::prefetch_set`]), so that the batch's waits
//!   for memory overlap.
//! - A full cache replaces an entry on every miss: the miss prefetches it,
//!   and its memory is reused in place when no one else holds it.
//!
//! [`Query::cache_key`]: crate::wire::Query::cache_key

use std::mem::ManuallyDrop;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

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

/// Entries in a set: with its lock, tags and pointers, one cache line.
const WAYS: usize = 4;

pub struct Cache {
    sets: Box<[Set]>,
    /// Random per process, so no one can pick names whose hashes collide.
    /// A collision would cost a miss, not a wrong answer ([`Entry::is_for`]).
    seed: u64,
}

/// Where a key's entry is, or would be.
#[derive(Clone, Copy)]
pub struct Place {
    set: usize,
    tag: u32,
}

/// Every field is changed only with `lock` held. They are atomics so that
/// [`Cache::prefetch_entry`] can read where an entry is without the lock:
/// a locked instruction there would wait for the set's line to arrive and
/// keep the next query's prefetch from starting meanwhile.
#[derive(Default)]
#[repr(C, align(64))]
struct Set {
    lock: Mutex<()>,
    /// One bit a way: hit since the hand last passed it.
    marked: AtomicU8,
    hand: AtomicU8,
    /// Each entry's key hash, the bits that did not choose the set.
    tags: [AtomicU32; WAYS],
    /// `Arc::into_raw` of each way's entry, or null.
    entries: [AtomicPtr<Entry>; WAYS],
}

const _: () = assert!(std::mem::size_of::<Set>() == 64);
// Entries go from thread to thread behind raw pointers, which the compiler
// does not check: what `Arc<Entry>` across threads would need.
const _: fn() = || {
    fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<Entry>();
};

impl Set {
    /// The way holding an entry tagged `tag`, and its pointer. Reads the
    /// set's line only; dereferencing the pointer needs the lock.
    fn tagged(&self, tag: u32) -> Option<(usize, *mut Entry)> {
        (0..WAYS)
            .map(|way| (way, self.entries[way].load(Relaxed)))
            .find(|&(way, entry)| !entry.is_null() && self.tags[way].load(Relaxed) == tag)
    }

    /// The way holding a fresh entry tagged `tag`. Call with the lock held.
    fn find(&self, tag: u32, now: Instant) -> Option<(usize, *const Entry)> {
        // The tag first: an entry not asked for is not read from memory.
        let (way, entry) = self.tagged(tag)?;
        // SAFETY: a non-null pointer is a live `Arc` of this set's, which
        // only a holder of the lock replaces or frees.
        let fresh = unsafe { (*entry).expires > now };
        fresh.then_some((way, entry.cast_const()))
    }

    /// The way a new entry tagged `tag` goes to, and the hand and marks
    /// after it goes there: over an entry with the same tag (the same key,
    /// or an older one that collides with it), else an empty way, else the
    /// first way from the hand not marked, unmarking those passed (CLOCK).
    /// Reads only; call with the lock held.
    fn victim(&self, tag: u32) -> (usize, u8, u8) {
        let (mut hand, mut marked) = (self.hand.load(Relaxed), self.marked.load(Relaxed));
        let occupied = |way: usize| !self.entries[way].load(Relaxed).is_null();
        let same = self.tagged(tag).map(|(way, _)| way);
        if let Some(way) = same.or_else(|| (0..WAYS).find(|&way| !occupied(way))) {
            return (way, hand, marked & !(1 << way));
        }
        loop {
            let way = hand as usize;
            hand = ((way + 1) % WAYS) as u8;
            if marked & (1 << way) == 0 {
                return (way, hand, marked);
            }
            marked &= !(1 << way);
        }
    }
}

impl Drop for Set {
    fn drop(&mut self) {
        for entry in &self.entries {
            let entry = entry.load(Relaxed);
            if !entry.is_null() {
                // SAFETY: from `Arc::into_raw` in `Cache::insert`, freed once.
                drop(unsafe { Arc::from_raw(entry) });
            }
        }
    }
}

impl Cache {
    /// `size` entries at most (rounded up to a whole set); 0 turns the
    /// cache off.
    pub fn new(size: usize) -> Cache {
        Cache {
            sets: (0..size.div_ceil(WAYS)).map(|_| Set::default()).collect(),
            seed: rand::random(),
        }
    }

    /// The set `key` falls in, chosen by its hash's high bits (multiply and
    /// shift: any number of sets), and its tag, the low bits.
    pub fn place(&self, key: &[u8]) -> Option<Place> {
        if self.sets.is_empty() {
            return None;
        }
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(key, self.seed);
        Some(Place {
            set: ((u128::from(hash) * self.sets.len() as u128) >> 64) as usize,
            tag: hash as u32,
        })
    }

    /// Starts loading the set at `place`. A batch's queries call this, then
    /// [`Cache::prefetch_entry`], before any is answered, so that their
    /// waits for memory overlap instead of coming one after another.
    pub fn prefetch_set(&self, place: Place) {
        prefetch(std::ptr::from_ref(&self.sets[place.set]).cast());
    }

    /// Starts loading the entry at `place`, if there is one.
    pub fn prefetch_entry(&self, place: Place) {
        if let Some((_, entry)) = self.sets[place.set].tagged(place.tag) {
            prefetch_entry(entry);
        }
    }

    /// A fresh entry for `key`, or `None`. Expired entries count as misses;
    /// the next insert for the key replaces them.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<Arc<Entry>> {
        let Place { set, tag } = self.place(key)?;
        let set = &self.sets[set];
        let entry = {
            let _locked = set.lock.lock();
            let Some((way, entry)) = set.find(tag, now) else {
                // The answer will likely be stored here, over an entry
                // long unread: start loading it now rather than when the
                // answer is back.
                let (way, _, _) = set.victim(tag);
                prefetch_entry(set.entries[way].load(Relaxed));
                return None;
            };
            set.marked.fetch_or(1 << way, Relaxed);
            // SAFETY: live while the lock is held (`Set::find`); the count
            // taken here is the returned `Arc`'s.
            unsafe {
                Arc::increment_strong_count(entry);
                Arc::from_raw(entry)
            }
        };
        entry.is_for(key).then_some(entry)
    }

    /// Stores `answer` if it says it may be cached.
    pub fn insert(&self, key: &[u8], answer: &WireAnswer, checked: Checked, now: Instant) {
        let Some(ttl) = answer.cache_ttl else {
            return;
        };
        let (Some((&variant, _)), Some(Place { set, tag })) = (key.split_last(), self.place(key))
        else {
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
        let set = &self.sets[set];
        let locked = set.lock.lock();
        let (way, hand, marked) = set.victim(tag);
        set.hand.store(hand, Relaxed);
        set.marked.store(marked, Relaxed);
        set.tags[way].store(tag, Relaxed);
        let old = set.entries[way].load(Relaxed);
        // SAFETY: a non-null pointer is from `Arc::into_raw` below; held in
        // `ManuallyDrop`, so the set's count is neither taken nor given.
        let mut old = (!old.is_null()).then(|| ManuallyDrop::new(unsafe { Arc::from_raw(old) }));
        // A full cache replaces an entry on every insert. Its memory is
        // reused when nothing else holds it (no one can take a hold without
        // the lock): freeing a long-unread entry and allocating anew was a
        // walk through the allocator's cold free lists on every miss.
        if let Some(unshared) = old.as_deref_mut().and_then(Arc::get_mut) {
            let replaced = std::mem::replace(unshared, entry);
            drop(locked);
            drop(replaced);
            return;
        }
        set.entries[way].store(Arc::into_raw(Arc::new(entry)).cast_mut(), Relaxed);
        drop(locked);
        // Its last holder frees it, after the set is unlocked.
        drop(old.map(ManuallyDrop::into_inner));
    }
}

/// Starts loading every line of `entry`, from the `Arc`'s count before it
/// to its end; nothing for null. It is never dereferenced: it may be freed
/// meanwhile, and a prefetch of freed memory does no harm.
fn prefetch_entry(entry: *const Entry) {
    if entry.is_null() {
        return;
    }
    let entry = entry as usize;
    let lines = (entry - 16) & !63..entry + std::mem::size_of::<Entry>();
    for line in lines.step_by(64) {
        prefetch(line as *const u8);
    }
}

/// A hint to the CPU to load the cache line at `at`, which need not be
/// valid memory; nothing where Rust has no stable instruction for it.
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86-64, and a prefetch reads nothing a program
    // sees and cannot fault, whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
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
        let cache = Cache::new(WAYS);
        let now = Instant::now();
        let (packet, answer) = asked("phone.example.", false);
        let (other, _) = asked("tracker.example.", false);
        let (with_do, _) = asked("phone.example.", true);
        cache.insert(&key_of(&packet), &answer, CHECKED, now);
        let entry = cache.get(&key_of(&packet), now).expect("a hit");
        // One set: as if the other keys' tags were this one's too.
        for colliding in [key_of(&other), key_of(&with_do)] {
            let place = cache.place(&colliding).unwrap();
            let set = &cache.sets[place.set];
            let stored = set.entries.iter().position(|e| !e.load(Relaxed).is_null());
            set.tags[stored.unwrap()].store(place.tag, Relaxed);
            assert!(cache.get(&colliding, now).is_none());
        }
        drop(entry);
    }

    #[test]
    fn a_full_set_replaces_the_first_entry_not_hit_since_the_hand_passed() {
        // One set: every key falls in it.
        let cache = Cache::new(WAYS);
        let now = Instant::now();
        let asked =
            ["a", "b", "c", "d", "e", "f"].map(|name| asked(&format!("{name}.example."), false));
        let keys = asked.each_ref().map(|(packet, _)| key_of(packet));
        // Whether each key is stored, without marking it as `get` would.
        let stored = || {
            keys.each_ref().map(|key| {
                let Place { set, tag } = cache.place(key).unwrap();
                let set = &cache.sets[set];
                (0..WAYS).any(|w| {
                    set.tags[w].load(Relaxed) == tag && !set.entries[w].load(Relaxed).is_null()
                })
            })
        };
        for i in 0..WAYS {
            cache.insert(&keys[i], &asked[i].1, CHECKED, now);
        }
        assert!(cache.get(&keys[0], now).is_some());
        assert!(cache.get(&keys[2], now).is_some());
        // Asked for only once it had expired: not marked.
        assert!(
            cache
                .get(&keys[3], now + Duration::from_secs(300))
                .is_none()
        );

        cache.insert(&keys[4], &asked[4].1, CHECKED, now);
        assert_eq!(
            stored(),
            [true, false, true, true, true, false],
            "b goes, a is passed"
        );
        cache.insert(&keys[5], &asked[5].1, CHECKED, now);
        assert_eq!(
            stored(),
            [true, false, true, false, true, true],
            "c is passed, d goes"
        );
    }

    #[test]
    fn an_entry_replaced_while_a_hit_holds_it_keeps_its_answer() {
        // One set, filled twice over: each first entry is replaced, three
        // of them in place and the held one by a new allocation.
        let cache = Cache::new(WAYS);
        let now = Instant::now();
        let stored: Vec<_> = (0..2 * WAYS)
            .map(|i| asked(&format!("n{i}.example."), false))
            .collect();
        let keys: Vec<_> = stored.iter().map(|(packet, _)| key_of(packet)).collect();
        for (key, (_, answer)) in keys.iter().zip(&stored).take(WAYS) {
            cache.insert(key, answer, CHECKED, now);
        }
        let held = cache.get(&keys[0], now).expect("a hit");
        for (key, (_, answer)) in keys.iter().zip(&stored).skip(WAYS) {
            cache.insert(key, answer, CHECKED, now);
        }
        assert!(cache.get(&keys[0], now).is_none(), "replaced");
        assert!(held.is_for(&keys[0]), "the held answer is still its own");
        for key in &keys[WAYS..] {
            assert!(cache.get(key, now).expect("stored").is_for(key));
        }
    }
}
