//! The path of one query, in the order it is taken. This is the one place
//! where the order is written down:
//!
//! 1. parse   the packet; malformed ones get FORMERR or are dropped
//! 2. who     the client's address (device names come later)
//! 3. may ask? `server.allow`, else REFUSED: never an open resolver
//! 4. policy  allow lists, then blocklists: a blocked name is answered here
//! 5. answer  from the cache, else from the upstreams
//! 6. inspect a listed CNAME target or an address in a blocked range blocks
//!    the answer, unless step 4 allow-listed the name
//! 7. record  counters (and, later, the query log); never blocks the path
//!
//! Steps 1–6 up to a cache hit run inline on the listener's task
//! ([`Pipeline::answer_now`]); only a miss goes to a task of its own
//! ([`Pipeline::answer_upstream`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use tracing::debug;

use crate::blocking::{Blocking, NameVerdict, Policy};
use crate::cache::Cache;
use crate::config::Loaded;
use crate::upstream::{UpstreamError, Upstreams};
use crate::wire::{self, Ede, Query, Rcode, Reject, TtlPolicy};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

/// What sinkd did with a query: the query log's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Forwarded,
    Blocked,
    Cached,
    Refused,
    Failed,
    /// Malformed or unsupported: answered with an error rcode or dropped.
    Rejected,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Forwarded => "forwarded",
            Action::Blocked => "blocked",
            Action::Cached => "cached",
            Action::Refused => "refused",
            Action::Failed => "failed",
            Action::Rejected => "rejected",
        }
    }
}

/// The outcome of the inline part of the path.
pub enum Step {
    /// `out` holds the answer; send it.
    Reply,
    /// Send nothing.
    Drop,
    /// Needs the upstreams: hand this to [`Pipeline::answer_upstream`].
    Forward(Pending),
}

/// A query on its way upstream, owning what it needs.
pub struct Pending {
    packet: Arc<[u8]>,
    query: Query,
    key: Box<[u8]>,
    proto: Proto,
    /// Allow-listed: answer inspection does not apply.
    exempt: bool,
}

pub struct Pipeline {
    allow: Vec<IpNet>,
    blocking: Blocking,
    cache: Cache,
    upstreams: Arc<Upstreams>,
}

impl Pipeline {
    /// `policy`: the lists as first loaded (see [`crate::blocking::load`]).
    pub fn new(loaded: &Loaded, policy: Policy) -> Result<Pipeline, String> {
        let config = &loaded.config;
        let ttl = TtlPolicy {
            min: config.cache.min_ttl,
            max: config.cache.max_ttl,
        };
        let ca_file = config.upstream.ca_file.as_ref().map(|p| loaded.resolve(p));
        Ok(Pipeline {
            allow: config.server.allow.clone(),
            blocking: Blocking::new(policy),
            cache: Cache::new(config.cache.size),
            upstreams: Arc::new(Upstreams::new(
                &config.upstream.servers.0,
                config.upstream.timeout(),
                ttl,
                ca_file.as_deref(),
            )?),
        })
    }

    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    pub fn blocking(&self) -> &Blocking {
        &self.blocking
    }

    /// Everything up to a cache hit. `key` is scratch space reused across
    /// queries so a hit allocates nothing but the answer.
    pub fn answer_now(
        &self,
        packet: &[u8],
        src: SocketAddr,
        proto: Proto,
        out: &mut Vec<u8>,
        key: &mut Vec<u8>,
    ) -> Step {
        // 1. parse
        let query = match Query::parse(packet) {
            Ok(query) => query,
            Err(Reject::Drop) => {
                record(Action::Rejected);
                return Step::Drop;
            }
            Err(Reject::Answer(rcode)) => {
                record(Action::Rejected);
                wire::header_only_answer(packet, rcode, out);
                return Step::Reply;
            }
        };
        if query.edns.is_some_and(|e| e.version > 0) {
            record(Action::Rejected);
            wire::error_answer(packet, &query, Rcode::BadVers, out);
            return Step::Reply;
        }
        if matches!(query.qtype, wire::TYPE_AXFR | wire::TYPE_IXFR) {
            record(Action::Rejected);
            wire::error_answer(packet, &query, Rcode::NotImp, out);
            return Step::Reply;
        }

        // 2. who
        let client = src.ip().to_canonical();

        // 3. may ask?
        if !self.allowed(client) {
            debug!(%client, "refused: not in server.allow");
            record(Action::Refused);
            wire::error_answer(packet, &query, Rcode::Refused, out);
            return Step::Reply;
        }

        // 4. policy
        let policy = self.blocking.load();
        let exempt = match query.name_end > wire::HEADER_LEN + 1 {
            false => false, // the root: on no list
            true => match policy.check(&query.name(packet)) {
                NameVerdict::Blocked(rule) => {
                    block(packet, &query, &policy, rule, out);
                    return Step::Reply;
                }
                NameVerdict::Allowed(_) => true,
                NameVerdict::Pass => false,
            },
        };

        // 5. answer: the cache
        query.cache_key(packet, key);
        let now = Instant::now();
        if let Some(entry) = self.cache.get(key, now) {
            // 6. inspect
            if let Some(rule) = (!exempt).then(|| policy.inspect(&entry.answer)).flatten() {
                block(packet, &query, &policy, rule, out);
                return Step::Reply;
            }
            entry
                .answer
                .write(packet, &query, entry.age(now), limit(proto, &query), out);
            record(Action::Cached);
            return Step::Reply;
        }
        Step::Forward(Pending {
            packet: packet.into(),
            query,
            key: key.as_slice().into(),
            proto,
            exempt,
        })
    }

    /// Step 5 from the upstreams, then steps 6 and 7. Always produces an
    /// answer: SERVFAIL when no upstream could give one.
    pub async fn answer_upstream(&self, pending: Pending) -> Vec<u8> {
        let Pending {
            packet,
            query,
            key,
            proto,
            exempt,
        } = pending;
        let mut out = Vec::new();
        match self.upstreams.resolve(&key, packet.clone(), query).await {
            Ok(answered) => {
                // Stored as the upstream gave it: inspection runs on every
                // hit, against the lists of that moment.
                self.cache.insert(&key, &answered.answer, Instant::now());
                let policy = self.blocking.load();
                if let Some(rule) = (!exempt)
                    .then(|| policy.inspect(&answered.answer))
                    .flatten()
                {
                    block(&packet, &query, &policy, rule, &mut out);
                    return out;
                }
                answered
                    .answer
                    .write(&packet, &query, 0, limit(proto, &query), &mut out);
                record(Action::Forwarded);
            }
            Err(e) => {
                match &e {
                    UpstreamError::Timeout(_) | UpstreamError::Failed(_) => {
                        debug!(name = %query.name(&packet), error = %e, "SERVFAIL")
                    }
                }
                wire::error_answer(&packet, &query, Rcode::ServFail, &mut out);
                record(Action::Failed);
            }
        }
        out
    }

    fn allowed(&self, client: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&client))
    }
}

/// Answers a blocked query as the configured mode says, naming the rule in
/// an Extended DNS Error.
fn block(packet: &[u8], query: &Query, policy: &Policy, rule: String, out: &mut Vec<u8>) {
    debug!(name = %query.name(packet), %rule, "blocked");
    let ede = Ede {
        code: Ede::BLOCKED,
        text: rule,
    };
    wire::blocked_answer(packet, query, &policy.answer_for(query.qtype), &ede, out);
    record(Action::Blocked);
}

fn limit(proto: Proto, query: &Query) -> usize {
    match proto {
        Proto::Udp => query.udp_limit(),
        Proto::Tcp => u16::MAX as usize,
    }
}

// 5. record
fn record(action: Action) {
    metrics::counter!("sinkd_queries_total", "action" => action.as_str()).increment(1);
}
