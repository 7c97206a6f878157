//! Per-client rate limit: one looping phone must not starve the others or
//! flood the query log. A token bucket per client address, lock-free: one
//! atomic word holds the tokens and the time they were counted at.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::warn;

/// Clients tracked at once; the least recently seen are forgotten first.
const CLIENTS: usize = 4096;

pub struct RateLimiter {
    per_second: u64,
    burst: u64,
    epoch: Instant,
    buckets: quick_cache::sync::Cache<IpAddr, Arc<Bucket>>,
}

struct Bucket {
    /// Tokens (in thousandths) in the high 32 bits, milliseconds since the
    /// epoch in the low 32.
    state: AtomicU64,
    /// Seconds since the epoch of the last warning about this client.
    warned: AtomicU64,
}

impl RateLimiter {
    /// `per_second` queries a second on average, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            per_second: per_second as u64,
            burst: burst.max(per_second) as u64,
            epoch: Instant::now(),
            buckets: quick_cache::sync::Cache::new(CLIENTS),
        }
    }

    /// Whether `client` may ask now; takes a token if so.
    pub fn admit(&self, client: IpAddr) -> bool {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        let full = self.burst * 1000;
        let bucket = match self.buckets.get(&client) {
            Some(bucket) => bucket,
            None => {
                let bucket = Arc::new(Bucket {
                    state: AtomicU64::new((full << 32) | (now_ms & 0xFFFF_FFFF)),
                    warned: AtomicU64::new(0),
                });
                self.buckets.insert(client, bucket.clone());
                bucket
            }
        };
        let mut current = bucket.state.load(Ordering::Relaxed);
        loop {
            let tokens = current >> 32;
            let then = current & 0xFFFF_FFFF;
            let elapsed = (now_ms & 0xFFFF_FFFF).wrapping_sub(then) & 0xFFFF_FFFF;
            // Thousandths of a query earned per millisecond = per_second.
            let refilled = (tokens + elapsed * self.per_second).min(full);
            let (admitted, left) = match refilled >= 1000 {
                true => (true, refilled - 1000),
                false => (false, refilled),
            };
            let next = (left << 32) | (now_ms & 0xFFFF_FFFF);
            match bucket.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if !admitted {
                        self.warn_once_a_minute(client, &bucket);
                    }
                    return admitted;
                }
                Err(actual) => current = actual,
            }
        }
    }

    fn warn_once_a_minute(&self, client: IpAddr, bucket: &Bucket) {
        metrics::counter!("sinkd_rate_limited_total").increment(1);
        let now = self.epoch.elapsed().as_secs() + 60;
        let last = bucket.warned.load(Ordering::Relaxed);
        if now >= last + 60
            && bucket
                .warned
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(%client, limit = self.per_second, "client over its rate limit; its excess queries are not answered or logged (shown once a minute)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let limiter = RateLimiter::new(10, 20);
        let phone: IpAddr = "192.168.1.23".parse().unwrap();
        let laptop: IpAddr = "192.168.1.24".parse().unwrap();
        let admitted = (0..100).filter(|_| limiter.admit(phone)).count();
        assert!((20..=21).contains(&admitted), "{admitted}");
        assert!(limiter.admit(laptop), "others are not affected");
        std::thread::sleep(std::time::Duration::from_millis(220));
        let admitted = (0..100).filter(|_| limiter.admit(phone)).count();
        assert!((2..=3).contains(&admitted), "refilled at 10/s: {admitted}");
    }
}
