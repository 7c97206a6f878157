//! Upstream resolvers: transports, server selection and failover, and
//! collapsing identical queries in flight.
//!
//! Plain UDP to an address is sinkd's own (`udp.rs`: a few sockets per
//! thread, not one per query); TCP, DoT, DoH and UDP to a name are hickory's
//! connection provider. What goes over them is the client's question with its DO/CD/AD
//! bits, and what comes back is kept byte for byte. hickory's `NameServerPool` is not
//! used because it turns NXDOMAIN, NODATA, SERVFAIL and REFUSED into errors
//! and drops the flags the client needs.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::xfer::{DnsExchange, DnsHandle, FirstAnswer};
use hickory_proto::op::{DnsRequest, DnsRequestOptions, Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_resolver::config::{ConnectionConfig, ProtocolConfig, ResolverOpts};
use hickory_resolver::{ConnectionProvider, PoolContext, TlsConfig};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tracing::{debug, warn};

use crate::config::{Host, Transport, UpstreamSpec};
use crate::wire::{self, OUR_UDP_PAYLOAD, TtlPolicy, WireAnswer};

mod udp;

type Conn = DnsExchange<TokioRuntimeProvider>;

/// A server that failed is tried after the healthy ones for this long.
const PENALTY: Duration = Duration::from_secs(30);
/// Bounds on how long to wait for one server before also asking the next.
const MIN_HEDGE: Duration = Duration::from_millis(40);
const MAX_HEDGE: Duration = Duration::from_millis(500);
const MIN_RETRANSMIT: Duration = Duration::from_millis(400);

/// The upstream's answer, ready to cache and to serve.
#[derive(Debug)]
pub struct Answered {
    pub answer: WireAnswer,
    /// Which server answered, as written in the config.
    pub server: Arc<str>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream answered within {0:?}")]
    Timeout(Duration),
    #[error("every upstream failed; last error: {0}")]
    Failed(String),
}

type SharedLookup = Shared<BoxFuture<'static, Result<Arc<Answered>, UpstreamError>>>;

pub struct Upstreams {
    servers: Vec<Arc<Server>>,
    timeout: Duration,
    context: Arc<PoolContext>,
    ttl: TtlPolicy,
    /// Keyed by the cache key, hashed twice per forwarded query: hashbrown's
    /// seeded foldhash rather than std's SipHash, for the cost.
    inflight: Mutex<hashbrown::HashMap<Box<[u8]>, SharedLookup>>,
    epoch: Instant,
}

struct Server {
    spec: UpstreamSpec,
    label: Arc<str>,
    /// Smoothed round-trip time in microseconds.
    srtt_us: AtomicU64,
    /// Microseconds since `Upstreams::epoch` of the last failure, 0 if none.
    failed_at_us: AtomicU64,
    conn: Mutex<Option<Conn>>,
    /// Owns the background tasks of this server's stream connections: they
    /// live as long as it does.
    provider: TokioRuntimeProvider,
    /// A UDP server's TCP fallback for truncated answers.
    tcp_fallback: Mutex<Option<Conn>>,
    /// `udp://` to an address: sinkd's own sockets (a few per thread), not
    /// hickory's socket per query.
    udp: Option<udp::UdpUpstream>,
}

impl Upstreams {
    /// `ca_file`: extra trust anchors for TLS upstreams (already resolved
    /// against the config's directory).
    pub fn new(
        specs: &[UpstreamSpec],
        timeout: Duration,
        ttl: TtlPolicy,
        ca_file: Option<&Path>,
    ) -> Result<Upstreams, String> {
        let mut options = ResolverOpts::default();
        options.timeout = timeout;
        let tls = tls_config(ca_file)?;
        Ok(Upstreams {
            servers: specs
                .iter()
                .map(|spec| {
                    Arc::new(Server {
                        label: spec.text.as_str().into(),
                        spec: spec.clone(),
                        srtt_us: AtomicU64::new(0),
                        failed_at_us: AtomicU64::new(0),
                        conn: Mutex::new(None),
                        provider: TokioRuntimeProvider::new(),
                        tcp_fallback: Mutex::new(None),
                        udp: match (&spec.transport, &spec.host) {
                            (Transport::Udp, Host::Ip(ip)) => Some(udp::UdpUpstream::new(
                                SocketAddr::new(*ip, spec.port),
                                timeout,
                            )),
                            _ => None,
                        },
                    })
                })
                .collect(),
            timeout,
            context: Arc::new(PoolContext::new(options, tls)),
            ttl,
            inflight: Mutex::new(hashbrown::HashMap::new()),
            epoch: Instant::now(),
        })
    }

    /// Resolves the client's query upstream. Identical queries (same cache
    /// key) already in flight share one upstream exchange.
    pub async fn resolve(
        self: &Arc<Self>,
        key: &[u8],
        packet: Arc<[u8]>,
        query: wire::Query,
    ) -> Result<Arc<Answered>, UpstreamError> {
        let (lookup, leader) = {
            let mut inflight = self.inflight.lock().unwrap();
            match inflight.get(key) {
                Some(lookup) => (lookup.clone(), false),
                None => {
                    let this = self.clone();
                    let lookup = async move { this.exchange(&packet, &query).await.map(Arc::new) }
                        .boxed()
                        .shared();
                    inflight.insert(key.into(), lookup.clone());
                    (lookup, true)
                }
            }
        };
        let _cleanup = leader.then(|| InflightGuard {
            upstreams: self,
            key,
        });
        lookup.await
    }

    /// Asks the upstreams directly, for sinkd's own lookups (list downloads,
    /// device names), which blocking and the query log never see.
    async fn ask(self: &Arc<Self>, name: &str, qtype: RecordType) -> Result<Arc<Answered>, String> {
        let fqdn = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|e| format!("{name}: {e}"))?;
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        message.queries.push(Query::query(fqdn, qtype));
        let packet: Arc<[u8]> = message.to_vec().map_err(|e| e.to_string())?.into();
        let query = wire::Query::parse(&packet).map_err(|_| format!("{name}: not a valid name"))?;
        let mut key = Vec::new();
        query.cache_key(&packet, &mut key);
        self.resolve(&key, packet.clone(), query)
            .await
            .map_err(|e| e.to_string())
    }

    /// The name a PTR record gives for `reverse` (`4.3.2.1.in-addr.arpa`).
    pub async fn lookup_ptr(self: &Arc<Self>, reverse: &str) -> Option<String> {
        let answered = self.ask(reverse, RecordType::PTR).await.ok()?;
        let message = Message::from_vec(answered.answer.bytes()).ok()?;
        message.answers.iter().find_map(|r| match &r.data {
            hickory_proto::rr::RData::PTR(ptr) => Some(ptr.0.to_ascii()),
            _ => None,
        })
    }

    /// The addresses of `name` (A and AAAA), asked of the upstreams directly.
    pub async fn lookup_ips(self: &Arc<Self>, name: &str) -> Result<Vec<IpAddr>, String> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let mut ips = Vec::new();
        let mut last_error = None;
        for qtype in [RecordType::A, RecordType::AAAA] {
            match self.ask(name, qtype).await {
                Ok(answered) => ips.extend_from_slice(answered.answer.addresses()),
                Err(e) => last_error = Some(e),
            }
        }
        match (ips.is_empty(), last_error) {
            (false, _) => Ok(ips),
            (true, Some(e)) => Err(format!("{name}: {e}")),
            (true, None) => Err(format!("{name} has no address")),
        }
    }

    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    /// Healthy servers first, fastest first; recently failed ones last.
    fn ordered(&self) -> Vec<Arc<Server>> {
        let now = self.now_us();
        let penalty = PENALTY.as_micros() as u64;
        let mut servers = self.servers.clone();
        servers.sort_by_key(|s| {
            let failed = s.failed_at_us.load(Ordering::Relaxed);
            let recently_failed = failed != 0 && now.saturating_sub(failed) < penalty;
            (recently_failed, s.srtt_us.load(Ordering::Relaxed))
        });
        servers
    }

    /// Asks the best server; if it has not answered within a few of its usual
    /// round trips, or fails, asks the next one too. The first good answer
    /// wins. SERVFAIL and REFUSED are kept only in case nothing better comes.
    async fn exchange(
        &self,
        packet: &[u8],
        query: &wire::Query,
    ) -> Result<Answered, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut waiting = self.ordered().into_iter();
        let mut attempts = FuturesUnordered::new();
        let mut fallback: Option<Answered> = None;
        let mut last_error = String::from("no upstream configured");
        let mut pending: Vec<Arc<Server>> = Vec::new();

        let start = |server: Arc<Server>, pending: &mut Vec<Arc<Server>>| {
            let retransmit = self.retransmit_after(&server);
            pending.push(server.clone());
            async move {
                let started = Instant::now();
                let result = server.send(packet, query, retransmit, &self.context).await;
                (server, started, result)
            }
        };

        loop {
            // Start at once when nothing is in flight: going through the
            // timer, even for zero, costs a timer tick (up to a millisecond).
            if attempts.is_empty() {
                match waiting.next() {
                    Some(server) => attempts.push(start(server, &mut pending)),
                    None => break,
                }
            }
            let hedge = (waiting.len() > 0).then(|| self.hedge_delay());
            tokio::select! {
                biased;
                Some((server, started, result)) = attempts.next(), if !attempts.is_empty() => {
                    let server: Arc<Server> = server;
                    pending.retain(|s| !Arc::ptr_eq(s, &server));
                    match result {
                        Ok(bytes) => match parse_answer(bytes, packet, query, self.ttl) {
                            Some(answer) => {
                                let answered = Answered { answer, server: server.label.clone() };
                                if matches!(answered.answer.rcode, 2 | 5) {
                                    self.record_failure(&server);
                                    last_error = format!("{} answered {}", server.label, wire::Rcode::name(answered.answer.rcode));
                                    fallback.get_or_insert(answered);
                                } else {
                                    self.record_success(&server, started);
                                    // Servers asked earlier and still silent were slower.
                                    for slower in &pending {
                                        self.record_failure(slower);
                                    }
                                    return Ok(answered);
                                }
                            }
                            None => {
                                self.record_failure(&server);
                                last_error = format!("{} sent a malformed answer", server.label);
                            }
                        },
                        Err(e) => {
                            debug!(upstream = %server.label, error = %e, "upstream failed");
                            self.record_failure(&server);
                            last_error = format!("{}: {e}", server.label);
                        }
                    }
                    if attempts.is_empty() && waiting.len() == 0 {
                        break;
                    }
                }
                _ = tokio::time::sleep(hedge.unwrap_or_default()), if hedge.is_some() => {
                    let server = waiting.next().expect("hedge only while servers wait");
                    attempts.push(start(server, &mut pending));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    for server in &pending {
                        self.record_failure(server);
                    }
                    return fallback.ok_or(UpstreamError::Timeout(self.timeout));
                }
            }
        }
        fallback.ok_or(UpstreamError::Failed(last_error))
    }

    fn hedge_delay(&self) -> Duration {
        let best = self
            .servers
            .iter()
            .map(|s| s.srtt_us.load(Ordering::Relaxed))
            .filter(|&t| t > 0)
            .min()
            .unwrap_or(0);
        Duration::from_micros(best * 3).clamp(MIN_HEDGE, MAX_HEDGE)
    }

    /// When to send a UDP query again to the same server if it has not
    /// answered: a few of its usual round trips, but never sooner than a slow
    /// upstream's recursion would take.
    fn retransmit_after(&self, server: &Server) -> Duration {
        let srtt = Duration::from_micros(server.srtt_us.load(Ordering::Relaxed));
        (srtt * 4).clamp(MIN_RETRANSMIT, self.timeout.max(MIN_RETRANSMIT))
    }

    fn record_success(&self, server: &Server, started: Instant) {
        let sample = started.elapsed().as_micros() as u64;
        let old = server.srtt_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        server.srtt_us.store(new.max(1), Ordering::Relaxed);
        server.failed_at_us.store(0, Ordering::Relaxed);
    }

    fn record_failure(&self, server: &Server) {
        server.failed_at_us.store(self.now_us(), Ordering::Relaxed);
    }

    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| &*s.label)
    }
}

/// The TLS client settings of the upstreams (Mozilla roots plus `ca_file`),
/// for other HTTPS clients of sinkd's: list downloads.
pub fn client_tls(ca_file: Option<&Path>) -> Result<ClientConfig, String> {
    let mut config = tls_config(ca_file)?.config;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// hickory's TLS settings, with the Mozilla roots plus those in `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<TlsConfig, String> {
    let mut tls = TlsConfig::new().map_err(|e| format!("TLS setup: {e}"))?;
    let Some(path) = ca_file else {
        return Ok(tls);
    };
    let unreadable = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
        let cert = cert.map_err(|e| unreadable(&e))?;
        roots.add(cert).map_err(|e| unreadable(&e))?;
        added += 1;
    }
    if added == 0 {
        return Err(unreadable(&"no PEM certificate in the file"));
    }
    tls.config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(tls)
}

/// Removes a finished lookup from the in-flight table, even if the task that
/// led it was cancelled.
struct InflightGuard<'a> {
    upstreams: &'a Upstreams,
    key: &'a [u8],
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        self.upstreams.inflight.lock().unwrap().remove(self.key);
    }
}

/// Takes an upstream's bytes apart. An answer whose OPT record is not last
/// (legal, rare) cannot be cut in place and is re-encoded without it.
fn parse_answer(
    bytes: Vec<u8>,
    packet: &[u8],
    query: &wire::Query,
    ttl: TtlPolicy,
) -> Option<WireAnswer> {
    let answer = match WireAnswer::from_upstream(bytes.clone(), packet, query, ttl) {
        Some(answer) => answer,
        None => {
            let mut message = Message::from_vec(&bytes).ok()?;
            message.edns = None;
            WireAnswer::from_upstream(message.to_vec().ok()?, packet, query, ttl)?
        }
    };
    Some(answer.relayed())
}

/// The message sent upstream: the client's question, RD set (we are a
/// forwarder), its CD and AD bits, and EDNS with its DO bit. Client EDNS
/// options (client subnet, cookies) are not passed on.
fn upstream_request(
    packet: &[u8],
    query: &wire::Query,
    retransmit: Duration,
) -> Result<DnsRequest, String> {
    let question = query
        .question(packet)
        .ok_or("the query could not be re-encoded")?;
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.metadata.checking_disabled = query.checking_disabled();
    message.metadata.authentic_data = query.authentic_data();
    message.queries.push(question);
    let mut edns = Edns::new();
    edns.set_max_payload(OUR_UDP_PAYLOAD)
        .set_dnssec_ok(query.dnssec_ok());
    message.edns = Some(edns);
    let mut options = DnsRequestOptions::default();
    options.use_edns = true;
    options.edns_payload_len = OUR_UDP_PAYLOAD;
    options.edns_set_dnssec_ok = query.dnssec_ok();
    options.case_randomization = false;
    options.retry_interval = retransmit;
    Ok(DnsRequest::new(message, options))
}

impl Server {
    fn connection_config(&self, force_tcp: bool) -> ConnectionConfig {
        let protocol = match &self.spec.transport {
            Transport::Udp if force_tcp => ProtocolConfig::Tcp,
            Transport::Udp => ProtocolConfig::Udp,
            Transport::Tcp => ProtocolConfig::Tcp,
            Transport::Tls { server_name } => ProtocolConfig::Tls {
                server_name: server_name.as_str().into(),
            },
            Transport::Https { server_name, path } => ProtocolConfig::Https {
                server_name: server_name.as_str().into(),
                path: path.as_str().into(),
            },
        };
        let mut config = ConnectionConfig::new(protocol);
        config.port = self.spec.port;
        config
    }

    async fn address(&self) -> Result<SocketAddr, String> {
        match &self.spec.host {
            Host::Ip(ip) => Ok(SocketAddr::new(*ip, self.spec.port)),
            Host::Name(name) => tokio::net::lookup_host((name.as_str(), self.spec.port))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .next()
                .ok_or_else(|| format!("{name} has no address")),
        }
    }

    async fn connect(&self, force_tcp: bool, cx: &PoolContext) -> Result<Conn, String> {
        let addr = self.address().await?;
        let config = self.connection_config(force_tcp);
        self.provider
            .new_connection(addr.ip(), &config, cx)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends over this server's connection, opening it if needed. A reused
    /// stream connection that turns out to be closed is reopened once.
    async fn send_over(
        &self,
        slot: &Mutex<Option<Conn>>,
        force_tcp: bool,
        request: DnsRequest,
        cx: &PoolContext,
    ) -> Result<Vec<u8>, String> {
        let mut reopened = false;
        loop {
            let existing = slot.lock().unwrap().clone();
            let (conn, fresh) = match existing {
                Some(conn) => (conn, false),
                None => {
                    let conn = self.connect(force_tcp, cx).await?;
                    *slot.lock().unwrap() = Some(conn.clone());
                    (conn, true)
                }
            };
            match conn.send(request.clone()).first_answer().await {
                Ok(response) => return Ok(response.into_buffer()),
                Err(e) => {
                    *slot.lock().unwrap() = None;
                    if fresh
                        || reopened
                        || matches!(self.spec.transport, Transport::Udp) && !force_tcp
                    {
                        return Err(e.to_string());
                    }
                    reopened = true;
                }
            }
        }
    }

    async fn send(
        &self,
        packet: &[u8],
        query: &wire::Query,
        retransmit: Duration,
        cx: &PoolContext,
    ) -> Result<Vec<u8>, String> {
        let request = || upstream_request(packet, query, retransmit);
        // `send_over` (hickory's connections) is boxed so its state, over a
        // kilobyte, is not part of this future: inline, it made every UDP
        // exchange allocate that much, a size glibc serves only after
        // sorting its free chunks (a tenth of a cache miss's CPU in `perf`).
        let bytes = match &self.udp {
            Some(udp) => udp
                .exchange(packet, query, retransmit)
                .await
                .map_err(|e| e.to_string())?,
            None => Box::pin(self.send_over(&self.conn, false, request()?, cx)).await?,
        };
        let truncated = bytes.len() > 2 && bytes[2] & 0x02 != 0;
        if truncated && self.spec.transport == Transport::Udp {
            debug!(upstream = %self.label, "truncated over UDP, asking again over TCP");
            return Box::pin(self.send_over(&self.tcp_fallback, true, request()?, cx)).await;
        }
        Ok(bytes)
    }
}

/// Logs the configured upstreams once at start.
pub fn describe(upstreams: &Upstreams) {
    for server in upstreams.servers.iter() {
        if let Host::Name(name) = &server.spec.host {
            warn!(
                upstream = %server.label,
                "{name} is resolved with the system resolver; if that is sinkd itself, write the address: https://IP/path#{name}"
            );
        }
    }
}
