//! Query counters without a shared cache line: every query counts itself, so
//! one atomic shared by all worker threads would bounce between cores on
//! every query. Each thread adds to its own shard; [`QueryCounters::publish`]
//! (once a second, and at shutdown) adds what is new to the Prometheus
//! counters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::querylog::Action;

const ACTIONS: usize = Action::ALL.len();
/// More shards than worker threads on any home server; beyond that two
/// threads share one, which is still correct.
const SHARDS: usize = 16;

/// One thread's counts, alone on its cache lines.
#[repr(align(128))]
#[derive(Default)]
struct Shard([AtomicU64; ACTIONS]);

/// `sinkd_queries_total` by action.
pub struct QueryCounters {
    shards: Box<[Shard]>,
    exported: [metrics::Counter; ACTIONS],
    published: Mutex<[u64; ACTIONS]>,
}

impl QueryCounters {
    /// Registers the counters with the installed recorder (none: they only
    /// count).
    pub fn new() -> QueryCounters {
        QueryCounters {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            exported: Action::ALL.map(
                |action| metrics::counter!("sinkd_queries_total", "action" => action.as_str()),
            ),
            published: Mutex::new([0; ACTIONS]),
        }
    }

    pub fn add(&self, action: Action) {
        self.shards[shard()].0[action as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Queries counted so far, by action (in [`Action::ALL`] order).
    pub fn totals(&self) -> [u64; ACTIONS] {
        let mut totals = [0; ACTIONS];
        for shard in &self.shards {
            for (total, count) in totals.iter_mut().zip(&shard.0) {
                *total += count.load(Ordering::Relaxed);
            }
        }
        totals
    }

    /// Hands what was counted since the last call to the exporter.
    pub fn publish(&self) {
        let mut published = self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (i, total) in self.totals().into_iter().enumerate() {
            self.exported[i].increment(total - published[i]);
            published[i] = total;
        }
    }
}

impl Default for QueryCounters {
    fn default() -> Self {
        QueryCounters::new()
    }
}

/// This thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_count_apart_and_add_up() {
        let counters = std::sync::Arc::new(QueryCounters::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counters = counters.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.add(Action::Cached);
                    }
                    counters.add(Action::Blocked);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let totals = counters.totals();
        assert_eq!(totals[Action::Cached as usize], 4000);
        assert_eq!(totals[Action::Blocked as usize], 4);
        assert_eq!(totals[Action::Forwarded as usize], 0);
        counters.publish();
        counters.publish();
    }
}
