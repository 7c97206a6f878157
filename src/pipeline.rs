//! The path of one query, in the order it is taken. This is the one place
//! where the order is written down:
//!
//! 1. parse   the packet; malformed ones get FORMERR or are dropped
//! 2. who     the client's address (its MAC and device name are looked up
//!    for the log line, at step 8: `clients.rs`)
//! 3. may ask? `server.allow`, else REFUSED: never an open resolver; and
//!    within its rate limit, so one looping device cannot starve the rest
//! 4. policy  allow lists, then blocklists: a blocked name is answered here
//! 5. local   the LAN's own zones, records and hosts files (`local.rs`)
//! 6. answer  from the cache, else from a `[[forward]]` target or the
//!    upstreams; private reverse names nobody knows get NXDOMAIN
//! 7. inspect a listed CNAME target or an address in a blocked range blocks
//!    the answer, unless step 4 allow-listed the name
//! 8. record  counters and one query-log line; never blocks the path, and
//!    comes after the answer is sent ([`Unlogged`]), so no client waits on it
//!
//! A cached answer stored since the last reload already passed steps 4 and
//! 5 under the same lists and zones, so a hit on it goes from 3 to 6 (see
//! [`Checked`]); any reload sends hits through the whole path again.
//!
//! Steps 1–7 up to a cache hit run inline on the listener's task
//! ([`Pipeline::answer_now`]); only a query that needs an upstream goes to a
//! task of its own ([`Pipeline::answer_upstream`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use ipnet::IpNet;
use tracing::{debug, warn};

use crate::blocking::{Block, Blocking, NameVerdict, Policy};
use crate::cache::{Cache, Checked, Entry, Place};
use crate::clients::{self, Clients};
use crate::config::{Loaded, OverLimit};
use crate::counters::QueryCounters;
use crate::local::{self, LocalAnswer, LocalZones};
use crate::querylog::{self, QueryLog, Record};
use crate::ratelimit::RateLimiter;
use crate::upstream::{Answered, Upstreams};
use crate::wire::{self, Ede, Query, Rcode, Reject, TtlPolicy, WireAnswer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    fn as_str(self) -> &'static str {
        match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        }
    }
}

pub use crate::querylog::Action;

/// The outcome of the inline part of the path.
pub enum Step {
    /// `out` holds the answer; send it, then log it (if `Some`).
    Reply(Option<Unlogged>),
    /// Send nothing.
    Drop,
    /// Needs an upstream: hand this to [`Pipeline::answer_upstream`].
    Forward(Pending),
}

/// A point in time on both clocks: `instant` to measure with, `wall` for the
/// log line's timestamp. Read once for a whole batch of answers sent
/// together, not once a query: they went out in one system call.
#[derive(Clone, Copy, Debug)]
pub struct Moment {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Moment {
    pub fn now() -> Moment {
        Moment {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

thread_local! {
    /// The buffers of finished queries' names, for the next queries' names:
    /// a name's own allocation and free were 4% of a cache hit's
    /// instructions.
    static SPARE_NAMES: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// More would only be memory held: a UDP batch is 32 queries.
const SPARE_NAMES_KEPT: usize = 64;

fn spare_name() -> String {
    SPARE_NAMES
        .with_borrow_mut(|spare| spare.pop())
        .unwrap_or_default()
}

/// Every query's name buffer goes back when the query is done, however it
/// ends (logged or not: the log may be off, the query dropped).
impl Drop for Asked {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        // `try_with`: a runtime torn down with its thread drops its waiting
        // queries after the thread's locals are gone.
        let _ = SPARE_NAMES.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            if spare.len() < SPARE_NAMES_KEPT {
                spare.push(name);
            }
        });
    }
}

/// What one query is, for the log line at its end.
struct Asked {
    started: Instant,
    client: IpAddr,
    proto: Proto,
    name: String,
}

/// What sinkd did with a query, owning what its log line needs (step 8):
/// whoever sends the answer hands this to [`Pipeline::log`] afterwards.
#[must_use = "an answered query is logged once its answer is sent"]
pub struct Unlogged {
    asked: Asked,
    qtype: u16,
    rcode: u16,
    action: Action,
    /// The rule that blocked, as the Extended DNS Error names it.
    rule: Option<String>,
    answer: Option<Given>,
    /// A blocked name's sinkhole address.
    address: Option<IpAddr>,
}

/// The answer an [`Unlogged`] query was given.
enum Given {
    Cached(Arc<Entry>),
    /// Boxed: a local zone's answer is rare, and every query's `Unlogged`
    /// would otherwise carry room for its inline bytes.
    Built(Box<WireAnswer>),
    Forwarded(Arc<Answered>),
}

impl Given {
    fn answer(&self) -> &WireAnswer {
        match self {
            Given::Cached(entry) => &entry.answer,
            Given::Built(answer) => answer,
            Given::Forwarded(answered) => &answered.answer,
        }
    }

    fn upstream(&self) -> Option<&str> {
        match self {
            Given::Forwarded(answered) => Some(&answered.server),
            Given::Cached(_) | Given::Built(_) => None,
        }
    }
}

impl Unlogged {
    fn new(asked: Asked, query: &Query, out: &[u8], action: Action) -> Unlogged {
        Unlogged {
            asked,
            qtype: query.qtype,
            // The low four bits of the answer's flags.
            rcode: out.get(3).map_or(0, |b| (b & 0xF) as u16),
            action,
            rule: None,
            answer: None,
            address: None,
        }
    }
}

/// A query on its way upstream, owning what it needs.
pub struct Pending {
    packet: Arc<[u8]>,
    query: Query,
    key: Box<[u8]>,
    upstreams: Arc<Upstreams>,
    checked: Checked,
    asked: Asked,
}

/// `[[forward]]`: domains and the upstreams that answer for them.
struct Forwards {
    by_domain: HashMap<String, Arc<Upstreams>>,
}

impl Forwards {
    /// The pool for the longest forwarded domain containing `name`.
    fn route(&self, name: &str) -> Option<&Arc<Upstreams>> {
        if self.by_domain.is_empty() {
            return None;
        }
        let mut suffix = name;
        loop {
            if let Some(pool) = self.by_domain.get(suffix) {
                return Some(pool);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }
}

pub struct Pipeline {
    allow: Vec<IpNet>,
    rate_limit: Option<(RateLimiter, OverLimit)>,
    rebind_protection: bool,
    clients: Arc<Clients>,
    blocking: Blocking,
    local: ArcSwap<LocalZones>,
    cache: Cache,
    forwards: Forwards,
    upstreams: Arc<Upstreams>,
    querylog: Option<QueryLog>,
    /// `sinkd_queries_total` by action.
    queries: QueryCounters,
    /// Bumped by every reload of lists or names: see [`Checked`].
    generation: AtomicU64,
    /// Queries waiting for an upstream: shutdown waits for them.
    in_flight: std::sync::atomic::AtomicUsize,
    /// Their tasks, oldest first: when there are too many, the oldest is
    /// given up on, as the best forwarders do, so a dead upstream cannot pile
    /// up work without bound.
    upstream_tasks: std::sync::Mutex<std::collections::VecDeque<tokio::task::AbortHandle>>,
    max_in_flight: usize,
}

/// Counts a query in flight for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Pipeline {
    /// `policy`: the lists as first loaded (see [`crate::blocking::load`]).
    /// Call from within the tokio runtime when the query log is on.
    pub fn new(loaded: &Loaded, policy: Policy) -> Result<Pipeline, String> {
        let config = &loaded.config;
        let ttl = TtlPolicy {
            min: config.cache.min_ttl,
            max: config.cache.max_ttl,
        };
        let ca_file = config.upstream.ca_file.as_ref().map(|p| loaded.resolve(p));
        let pool = |servers: &[crate::config::UpstreamSpec]| {
            Upstreams::new(servers, config.upstream.timeout(), ttl, ca_file.as_deref())
                .map(Arc::new)
        };
        let mut by_domain = HashMap::new();
        for rule in &config.forward {
            let upstreams = pool(&rule.servers.0)?;
            for domain in &rule.domains.0 {
                let domain = crate::policy::normalize_name(domain).into_owned();
                by_domain.insert(domain, upstreams.clone());
            }
        }
        let forwards = Forwards { by_domain };
        let reverse = reverse_lookup(&forwards);
        let (directory, problems) = clients::load_directory(loaded);
        for problem in problems {
            warn!("{problem}");
        }
        let (zones, problems) = local::load(loaded);
        for problem in problems {
            warn!("{problem}");
        }
        let server = &config.server;
        Ok(Pipeline {
            allow: server.allow.clone(),
            rate_limit: (server.rate_limit > 0).then(|| {
                let burst = server
                    .rate_limit_burst
                    .unwrap_or(server.rate_limit.saturating_mul(2));
                (
                    RateLimiter::new(server.rate_limit, burst),
                    server.rate_limit_action,
                )
            }),
            rebind_protection: config.server.rebind_protection,
            clients: Arc::new(Clients::new(directory, reverse)),
            blocking: Blocking::new(policy),
            local: ArcSwap::from_pointee(zones),
            cache: Cache::new(config.cache.size),
            upstreams: pool(&config.upstream.servers.0)?,
            forwards,
            querylog: None,
            queries: QueryCounters::new(),
            generation: AtomicU64::new(0),
            in_flight: Default::default(),
            upstream_tasks: Default::default(),
            max_in_flight: server.max_in_flight.0 as usize,
        })
    }

    /// Starts the query log writer (needs the tokio runtime).
    pub fn start_querylog(&mut self, loaded: &Loaded) -> Result<(), String> {
        let section = &loaded.config.querylog;
        if !section.enabled {
            return Ok(());
        }
        let path = loaded.resolve(&section.path);
        let log = QueryLog::start(querylog::QueryLogConfig {
            path: path.clone(),
            max_size_mb: section.max_size_mb,
            keep: section.keep,
            ignore: section.ignore.clone(),
        })
        .map_err(|e| format!("query log {}: {e}", path.display()))?;
        self.querylog = Some(log);
        Ok(())
    }

    /// Starts the background refresh of client MAC addresses; reverse
    /// lookups of client names run on the calling runtime.
    pub fn start_client_tracking(&self) {
        self.clients
            .look_up_names_on(tokio::runtime::Handle::current());
        self.clients.spawn_neighbour_refresh();
    }

    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.upstreams
    }

    pub fn querylog(&self) -> Option<&QueryLog> {
        self.querylog.as_ref()
    }

    /// Keeps the number of upstream tasks bounded: past `server.max_in_flight` the
    /// oldest still waiting is given up on (its client retries).
    pub fn admit_upstream_task(&self, task: tokio::task::AbortHandle) {
        let mut tasks = self.upstream_tasks.lock().unwrap();
        while tasks.front().is_some_and(|t| t.is_finished()) {
            tasks.pop_front();
        }
        if tasks.len() >= self.max_in_flight {
            tasks.retain(|t| !t.is_finished());
            if tasks.len() >= self.max_in_flight
                && let Some(oldest) = tasks.pop_front()
            {
                oldest.abort();
                metrics::counter!("sinkd_given_up_total").increment(1);
            }
        }
        tasks.push_back(task);
    }

    /// Hands the query counts to the metrics exporter.
    pub fn publish_counters(&self) {
        self.queries.publish();
    }

    /// Queries still waiting for an upstream.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until no query waits for an upstream, or `within` has passed.
    /// The runtime awaiting this keeps running the upstream tasks on it.
    pub async fn until_answered(&self, within: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Puts freshly loaded lists to work for the next query.
    pub fn swap_policy(&self, policy: Policy) {
        self.blocking.swap(policy);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Re-reads local zones, hosts files and device names (on reload).
    pub fn reload_names(&self, loaded: &Loaded) {
        let (zones, problems) = local::load(loaded);
        let unreadable = problems.iter().any(|p| p.line == 0);
        for problem in &problems {
            warn!("{problem}");
        }
        if !unreadable {
            self.local.store(Arc::new(zones));
        }
        self.generation.fetch_add(1, Ordering::Release);
        let (directory, problems) = clients::load_directory(loaded);
        for problem in &problems {
            warn!("{problem}");
        }
        self.clients.set_directory(directory);
    }

    /// Where the cache would have the answer to `packet`, with the CPU
    /// asked to start loading that set (see [`Cache::prefetch_set`]). Only
    /// a hint: nothing is decided here.
    pub fn prefetch(&self, packet: &[u8], key: &mut Vec<u8>) -> Option<Place> {
        let query = Query::parse(packet).ok()?;
        query.cache_key(packet, key);
        let place = self.cache.place(key)?;
        self.cache.prefetch_set(place);
        Some(place)
    }

    /// See [`Cache::prefetch_entry`].
    pub fn prefetch_entry(&self, place: Place) {
        self.cache.prefetch_entry(place);
    }

    /// Everything up to a cache hit. `key` is scratch space reused across
    /// queries so a hit allocates little beyond the answer.
    /// `received`: when the listener read the packet (for UDP, the batch
    /// it came in: one clock reading a batch, not one a query).
    pub fn answer_now(
        &self,
        packet: &[u8],
        src: SocketAddr,
        proto: Proto,
        received: Instant,
        out: &mut Vec<u8>,
        key: &mut Vec<u8>,
    ) -> Step {
        let started = received;
        // 1. parse
        let query = match Query::parse(packet) {
            Ok(query) => query,
            Err(Reject::Drop) => {
                metrics::counter!("sinkd_malformed_total", "answer" => "dropped").increment(1);
                return Step::Drop;
            }
            Err(Reject::Answer(rcode)) => {
                metrics::counter!("sinkd_malformed_total", "answer" => Rcode::name(rcode as u16))
                    .increment(1);
                wire::header_only_answer(packet, rcode, out);
                return Step::Reply(None);
            }
        };

        // 2. who
        let client = src.ip().to_canonical();
        let mut asked = Asked {
            started,
            client,
            proto,
            name: spare_name(),
        };
        query.name_into(packet, &mut asked.name);

        // 3. may ask?
        if !self.allowed(client) {
            debug!(%client, "refused: not in server.allow");
            wire::error_answer(packet, &query, Rcode::Refused, out);
            let unlogged = Unlogged::new(asked, &query, out, Action::Refused);
            return Step::Reply(Some(unlogged));
        }
        if let Some((limiter, over)) = &self.rate_limit
            && !limiter.admit(client)
        {
            // Counted and warned about by the limiter; not logged per query,
            // so a looping device cannot flood the query log.
            return match over {
                OverLimit::Drop => Step::Drop,
                OverLimit::Refused => {
                    wire::error_answer(packet, &query, Rcode::Refused, out);
                    Step::Reply(None)
                }
            };
        }
        if query.edns.is_some_and(|e| e.version > 0) {
            wire::error_answer(packet, &query, Rcode::BadVers, out);
            let unlogged = Unlogged::new(asked, &query, out, Action::Failed);
            return Step::Reply(Some(unlogged));
        }
        if matches!(query.qtype, wire::TYPE_AXFR | wire::TYPE_IXFR) {
            wire::error_answer(packet, &query, Rcode::NotImp, out);
            let unlogged = Unlogged::new(asked, &query, out, Action::Failed);
            return Step::Reply(Some(unlogged));
        }
        let root = query.name_end == wire::HEADER_LEN + 1;

        // 6, early: an answer cached since the last reload was checked
        // against these very lists and zones (steps 4 and 5) when it was
        // asked for, so a hit on it skips them.
        let generation = self.generation.load(Ordering::Acquire);
        query.cache_key(packet, key);
        let mut cached = self.cache.get(key, started);
        if let Some(entry) = cached.take_if(|entry| entry.checked.generation == generation) {
            let checked = entry.checked;
            let unlogged = self.answer_cached(packet, &query, entry, checked, asked, out);
            return Step::Reply(Some(unlogged));
        }

        // 4. policy
        let policy = self.blocking.load();
        let exempt = match root {
            true => false,
            false => match policy.check(&asked.name, query.qtype) {
                NameVerdict::Blocked(block) => {
                    let unlogged = self.block(packet, &query, block, asked, out);
                    return Step::Reply(Some(unlogged));
                }
                NameVerdict::Allowed(_) => true,
                NameVerdict::Pass => false,
            },
        };

        // 5. local
        let zones = self.local.load();
        let local = zones.lookup(&asked.name, query.qtype.into());
        if local != LocalAnswer::NotLocal {
            let unlogged = self.answer_locally(packet, &query, local, asked, out);
            return Step::Reply(Some(unlogged));
        }

        // 6. answer: the cache
        let routed = self.forwards.route(&asked.name);
        let checked = Checked {
            generation,
            exempt,
            rebinding: routed.is_none() && self.rebind_protection,
        };
        if let Some(entry) = cached {
            let unlogged = self.answer_cached(packet, &query, entry, checked, asked, out);
            return Step::Reply(Some(unlogged));
        }
        // 6. answer: a forward target, the upstreams, or no one
        let upstreams = match routed {
            Some(pool) => pool.clone(),
            None if LocalZones::is_private_reverse(&asked.name) => {
                let nx = zones.private_reverse_nxdomain(&asked.name);
                let unlogged = self.answer_locally(packet, &query, nx, asked, out);
                return Step::Reply(Some(unlogged));
            }
            None => self.upstreams.clone(),
        };
        Step::Forward(Pending {
            packet: packet.into(),
            query,
            key: key.as_slice().into(),
            upstreams,
            checked,
            asked,
        })
    }

    /// A cache hit, then steps 7 and 8.
    fn answer_cached(
        &self,
        packet: &[u8],
        query: &Query,
        entry: Arc<Entry>,
        checked: Checked,
        asked: Asked,
        out: &mut Vec<u8>,
    ) -> Unlogged {
        // 7. inspect, against the lists of this moment
        if !checked.exempt {
            let policy = self.blocking.load();
            if let Some(block) = policy.inspect(&entry.answer, query.qtype, checked.rebinding) {
                return self.block(packet, query, block, asked, out);
            }
        }
        let limit = limit(asked.proto, query);
        let age = entry.age(asked.started);
        entry.answer.write(packet, query, age, limit, out);
        Unlogged {
            answer: Some(Given::Cached(entry)),
            ..Unlogged::new(asked, query, out, Action::Cached)
        }
    }

    /// Step 6 from an upstream, then steps 7 and 8. Always hands `send` an
    /// answer: SERVFAIL when no upstream could give one. The cache and the
    /// query log are written after `send`, so the client does not wait on
    /// them.
    ///
    /// This future is every forwarded query's task, so it is kept small
    /// (under a kilobyte, see `listener::start_upstream_task`): it owns its
    /// `Arc`, so a caller needs no `async` block of its own around it, which
    /// would hold it twice.
    pub async fn answer_upstream(self: Arc<Self>, pending: Pending, send: impl AsyncFnOnce(&[u8])) {
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _in_flight = InFlight(&self.in_flight);
        let mut out = Vec::new();
        let resolved = pending
            .upstreams
            .resolve(&pending.key, pending.packet.clone(), pending.query)
            .await;
        let (packet, query, checked) = (&pending.packet, &pending.query, pending.checked);
        match resolved {
            Ok(answered) => {
                let block = (!checked.exempt)
                    .then(|| {
                        let policy = self.blocking.load();
                        policy.inspect(&answered.answer, query.qtype, checked.rebinding)
                    })
                    .flatten();
                let unlogged = match block {
                    // Rare: an answer into a blocked range.
                    Some(block) => self.block(packet, query, block, pending.asked, &mut out),
                    None => {
                        let limit = limit(pending.asked.proto, query);
                        answered.answer.write(packet, query, 0, limit, &mut out);
                        Unlogged {
                            answer: Some(Given::Forwarded(answered.clone())),
                            ..Unlogged::new(pending.asked, query, &out, Action::Forwarded)
                        }
                    }
                };
                send(&out).await;
                let sent = Moment::now();
                // Stored as the upstream gave it: inspection runs on every
                // hit, against the lists of that moment.
                self.cache
                    .insert(&pending.key, &answered.answer, checked, sent.instant);
                self.log(unlogged, sent);
            }
            Err(e) => {
                debug!(name = %pending.asked.name, error = %e, "SERVFAIL");
                wire::error_answer(packet, query, Rcode::ServFail, &mut out);
                send(&out).await;
                self.log(
                    Unlogged::new(pending.asked, query, &out, Action::Failed),
                    Moment::now(),
                );
            }
        }
    }

    fn allowed(&self, client: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&client))
    }

    /// Answers a blocked query as decided, naming the rule in an Extended
    /// DNS Error.
    fn block(
        &self,
        packet: &[u8],
        query: &Query,
        block: Block,
        asked: Asked,
        out: &mut Vec<u8>,
    ) -> Unlogged {
        let ede = Ede {
            code: Ede::BLOCKED,
            text: block.rule,
        };
        let answer = block.answer;
        wire::blocked_answer(packet, query, &answer, &ede, out);
        if out.len() > limit(asked.proto, query) {
            // A long name and a long rule can outgrow 512 bytes: the rule
            // text goes (it is in the query log anyway), the answer stays.
            let short = Ede {
                code: Ede::BLOCKED,
                text: String::new(),
            };
            wire::blocked_answer(packet, query, &answer, &short, out);
        }
        Unlogged {
            rule: Some(ede.text),
            address: answer.address,
            ..Unlogged::new(asked, query, out, Action::Blocked)
        }
    }

    fn answer_locally(
        &self,
        packet: &[u8],
        query: &Query,
        local: LocalAnswer,
        asked: Asked,
        out: &mut Vec<u8>,
    ) -> Unlogged {
        let built = query
            .question(packet)
            .and_then(|q| local::message(query.id, &q, query.recursion_desired(), local))
            .and_then(|bytes| {
                let keep = TtlPolicy {
                    min: 0,
                    max: u32::MAX,
                };
                WireAnswer::from_upstream(bytes, packet, query, keep)
            });
        match built {
            Some(answer) => {
                answer.write(packet, query, 0, limit(asked.proto, query), out);
                Unlogged {
                    answer: Some(Given::Built(Box::new(answer))),
                    ..Unlogged::new(asked, query, out, Action::Local)
                }
            }
            None => {
                wire::error_answer(packet, query, Rcode::ServFail, out);
                Unlogged::new(asked, query, out, Action::Failed)
            }
        }
    }

    // 8. record, once the answer is sent (at `sent`)
    pub fn log(&self, unlogged: Unlogged, sent: Moment) {
        self.queries.add(unlogged.action);
        let Some(log) = &self.querylog else { return };
        let Unlogged {
            asked,
            qtype,
            rcode,
            action,
            rule,
            answer,
            address,
        } = unlogged;
        let device = self.clients.identify(asked.client, asked.started);
        let (cnames, addresses) = match &answer {
            Some(given) => (given.answer().cname_targets(), given.answer().addresses()),
            None => (&[][..], address.as_slice()),
        };
        log.record(&Record {
            at: sent.wall,
            client: asked.client,
            mac: device.mac.as_deref(),
            device: device.name.as_deref(),
            group: device.group.as_deref(),
            proto: asked.proto.as_str(),
            name: &asked.name,
            qtype,
            action,
            rule: rule.as_deref(),
            rcode,
            cnames,
            addresses,
            upstream: answer.as_ref().and_then(Given::upstream),
            elapsed: sent.instant.saturating_duration_since(asked.started),
        });
    }
}

/// Reverse lookups of client addresses through the `[[forward]]` target
/// that serves their reverse zone, if there is one.
fn reverse_lookup(forwards: &Forwards) -> Option<clients::ReverseLookup> {
    if forwards.by_domain.keys().all(|d| !d.ends_with(".arpa")) {
        return None;
    }
    let routes: HashMap<String, Arc<Upstreams>> = forwards.by_domain.clone();
    let forwards = Arc::new(Forwards { by_domain: routes });
    Some(Arc::new(move |ip: IpAddr| {
        let name = hickory_proto::rr::Name::from(ip).to_ascii();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let pool = forwards.route(&name)?.clone();
        Some(Box::pin(async move { pool.lookup_ptr(&name).await })
            as futures_util::future::BoxFuture<'static, Option<String>>)
    }))
}

fn limit(proto: Proto, query: &Query) -> usize {
    match proto {
        Proto::Udp => query.udp_limit(),
        Proto::Tcp => u16::MAX as usize,
    }
}
