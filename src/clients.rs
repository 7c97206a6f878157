//! Who is asking: a client's address turned into a device a person knows.
//!
//! Best source first: a `[[clients]]` entry (by MAC, then IP, then the most
//! specific network), a DHCP lease (by MAC, then IP), reverse DNS through
//! the `[[forward]]` target for the client's network, then the bare IP. The
//! MAC comes from the kernel's neighbour table, so a phone keeps its name
//! when DHCP or IPv6 privacy addresses change its IP.
//!
//! A query only reads a cache; each client is looked up again at most once a
//! minute, the neighbour table is re-read in the background, and reverse
//! lookups run on their own tasks.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{debug, warn};

use crate::config::{ClientMatch, ClientRule, Loaded, Problem, format_mac, parse_mac};

/// How long what we know about a client is used before looking again.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// How often the neighbour table is read.
const NEIGHBOURS_EVERY: Duration = Duration::from_secs(10);

/// A device as the query log shows it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Device {
    pub mac: Option<Arc<str>>,
    pub name: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
}

/// A device's name and group, as `[[clients]]` gives them.
type Named = (Arc<str>, Option<Arc<str>>);

/// Names from config and lease files: rebuilt on reload.
#[derive(Default)]
pub struct Directory {
    by_mac: HashMap<[u8; 6], Named>,
    by_ip: HashMap<IpAddr, Named>,
    /// Networks, most specific first.
    by_net: Vec<(ipnet::IpNet, Arc<str>, Option<Arc<str>>)>,
    lease_by_mac: HashMap<[u8; 6], Arc<str>>,
    lease_by_ip: HashMap<IpAddr, Arc<str>>,
}

impl Directory {
    pub fn new(rules: &[ClientRule]) -> Directory {
        let mut d = Directory::default();
        for rule in rules {
            let name: Arc<str> = rule.name.as_str().into();
            let group: Option<Arc<str>> = rule.group.as_deref().map(Into::into);
            for m in &rule.matches {
                match *m {
                    ClientMatch::Mac(mac) => {
                        d.by_mac.entry(mac).or_insert((name.clone(), group.clone()));
                    }
                    ClientMatch::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                        d.by_ip
                            .entry(net.addr())
                            .or_insert((name.clone(), group.clone()));
                    }
                    ClientMatch::Net(net) => d.by_net.push((net, name.clone(), group.clone())),
                }
            }
        }
        d.by_net
            .sort_by_key(|(net, _, _)| std::cmp::Reverse(net.prefix_len()));
        d
    }

    /// Reads lease files (dnsmasq's and ISC dhcpd's formats).
    pub fn add_leases(&mut self, path: &Path, text: &str) -> Vec<Problem> {
        if text.contains("lease ") && text.contains('{') {
            self.add_isc_leases(text);
            return Vec::new();
        }
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // dnsmasq: expiry MAC IP hostname client-id
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() || line.starts_with("duid") {
                continue;
            }
            let (Some(mac), Some(Ok(ip)), Some(host)) = (
                fields.get(1).and_then(|m| parse_mac(m)),
                fields.get(2).map(|ip| ip.parse::<IpAddr>()),
                fields.get(3),
            ) else {
                problems.push(Problem {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: None,
                    message: "not a dnsmasq lease line (expiry MAC IP hostname client-id)".into(),
                });
                continue;
            };
            if *host != "*" {
                let host: Arc<str> = (*host).into();
                self.lease_by_mac.insert(mac, host.clone());
                self.lease_by_ip.insert(ip, host);
            }
        }
        problems
    }

    fn add_isc_leases(&mut self, text: &str) {
        // lease 192.168.1.23 { … hardware ethernet aa:bb:…; client-hostname "name"; … }
        for block in text.split("lease ").skip(1) {
            let Some((head, body)) = block.split_once('{') else {
                continue;
            };
            let Ok(ip) = head.trim().parse::<IpAddr>() else {
                continue;
            };
            let body = body.split('}').next().unwrap_or("");
            let mut mac = None;
            let mut host = None;
            for statement in body.split(';').map(str::trim) {
                if let Some(m) = statement.strip_prefix("hardware ethernet ") {
                    mac = parse_mac(m.trim());
                } else if let Some(h) = statement.strip_prefix("client-hostname ") {
                    host = Some(h.trim().trim_matches('"').to_string());
                }
            }
            if let Some(host) = host {
                let host: Arc<str> = host.into();
                if let Some(mac) = mac {
                    self.lease_by_mac.insert(mac, host.clone());
                }
                self.lease_by_ip.insert(ip, host);
            }
        }
    }

    /// Name and group from config, then from leases.
    fn name(&self, ip: IpAddr, mac: Option<[u8; 6]>) -> Option<Named> {
        mac.and_then(|m| self.by_mac.get(&m).cloned())
            .or_else(|| self.by_ip.get(&ip).cloned())
            .or_else(|| {
                self.by_net
                    .iter()
                    .find(|(net, _, _)| net.contains(&ip))
                    .map(|(_, n, g)| (n.clone(), g.clone()))
            })
            .or_else(|| {
                mac.and_then(|m| self.lease_by_mac.get(&m))
                    .or_else(|| self.lease_by_ip.get(&ip))
                    .map(|host| (host.clone(), None))
            })
    }
}

/// Loads the `[[clients]]` entries and `[dhcp] leases` files.
pub fn load_directory(loaded: &Loaded) -> (Directory, Vec<Problem>) {
    let mut directory = Directory::new(&loaded.config.clients);
    let mut problems = Vec::new();
    for pattern in &loaded.config.dhcp.leases {
        let path = loaded.resolve(pattern);
        match std::fs::read_to_string(&path) {
            Ok(text) => problems.extend(directory.add_leases(&path, &text)),
            Err(e) => problems.push(Problem {
                path,
                line: 0,
                column: None,
                message: format!("cannot read this lease file: {e}"),
            }),
        }
    }
    (directory, problems)
}

/// IP → MAC from the kernel (IPv4 ARP and IPv6 neighbour discovery).
#[derive(Default)]
pub struct Neighbours(HashMap<IpAddr, [u8; 6]>);

impl Neighbours {
    /// `/proc/net/arp` (or `$SINKD_ARP_TABLE`, for tests) and `ip -6 neigh`.
    pub fn read() -> Neighbours {
        let mut table = HashMap::new();
        let arp: PathBuf = std::env::var_os("SINKD_ARP_TABLE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/proc/net/arp"));
        if let Ok(text) = std::fs::read_to_string(&arp) {
            // IP address  HW type  Flags  HW address  Mask  Device
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if let (Some(Ok(ip)), Some(Some(mac))) = (
                    fields.first().map(|f| f.parse::<IpAddr>()),
                    fields.get(3).map(|f| parse_mac(f)),
                ) && mac != [0; 6]
                {
                    table.insert(ip, mac);
                }
            }
        }
        if std::env::var_os("SINKD_ARP_TABLE").is_none()
            && let Ok(out) = std::process::Command::new("ip")
                .args(["-6", "neigh", "show"])
                .output()
        {
            // fe80::1 dev eth0 lladdr aa:bb:cc:dd:ee:ff REACHABLE
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let mac = fields
                    .iter()
                    .position(|f| *f == "lladdr")
                    .and_then(|i| fields.get(i + 1))
                    .and_then(|m| parse_mac(m));
                if let (Some(Ok(ip)), Some(mac)) =
                    (fields.first().map(|f| f.parse::<IpAddr>()), mac)
                {
                    table.insert(ip, mac);
                }
            }
        }
        Neighbours(table)
    }
}

struct Known {
    device: Arc<Device>,
    at: Instant,
}

/// Looks for a client's PTR name through a `[[forward]]` target (never a
/// public upstream: LAN addresses are nobody else's business).
pub type ReverseLookup = Arc<
    dyn Fn(IpAddr) -> Option<futures_util::future::BoxFuture<'static, Option<String>>>
        + Send
        + Sync,
>;

pub struct Clients {
    directory: ArcSwap<Directory>,
    neighbours: ArcSwap<Neighbours>,
    known: Arc<quick_cache::sync::Cache<IpAddr, Arc<Known>>>,
    reverse_names: Arc<quick_cache::sync::Cache<IpAddr, Option<Arc<str>>>>,
    reverse: Option<ReverseLookup>,
    /// Where reverse lookups run, once the server has started.
    lookups: std::sync::OnceLock<tokio::runtime::Handle>,
    /// Tells the threads' own copies apart from another `Clients`'.
    id: u64,
    /// Bumped whenever what is known about any client changes: every
    /// thread's copies are then looked up again.
    generation: Arc<AtomicU64>,
}

/// Devices a thread has looked up recently, by `Clients::id` and address.
struct NearKnown {
    device: Arc<Device>,
    at: Instant,
    generation: u64,
}

/// A thread forgets its copies past this many clients (and looks again).
const NEAR_MAX: usize = 1024;

thread_local! {
    // hashbrown's default hasher (foldhash, seeded per process like std's
    // SipHash, a fraction of its cost): this runs on every query, and the
    // map never holds more than NEAR_MAX clients.
    static NEAR: std::cell::RefCell<hashbrown::HashMap<(u64, IpAddr), NearKnown>> =
        std::cell::RefCell::new(hashbrown::HashMap::new());
}

impl Clients {
    pub fn new(directory: Directory, reverse: Option<ReverseLookup>) -> Clients {
        Clients {
            directory: ArcSwap::from_pointee(directory),
            neighbours: ArcSwap::from_pointee(Neighbours::default()),
            known: Arc::new(quick_cache::sync::Cache::new(4096)),
            reverse_names: Arc::new(quick_cache::sync::Cache::new(4096)),
            reverse,
            lookups: std::sync::OnceLock::new(),
            id: {
                static NEXT: AtomicU64 = AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            generation: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn set_directory(&self, directory: Directory) {
        self.directory.store(Arc::new(directory));
        self.known.clear();
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Re-reads the neighbour table every few seconds on its own idle-only
    /// thread: starting `ip` costs milliseconds of CPU that a query on a
    /// one-core box must not wait behind.
    pub fn spawn_neighbour_refresh(self: &Arc<Self>) {
        let this = Arc::downgrade(self);
        let started = std::thread::Builder::new()
            .name("sinkd-neighbours".into())
            .spawn(move || {
                crate::yield_to_queries();
                while let Some(clients) = this.upgrade() {
                    clients.neighbours.store(Arc::new(Neighbours::read()));
                    drop(clients);
                    std::thread::sleep(NEIGHBOURS_EVERY);
                }
            });
        if let Err(e) = started {
            warn!(error = %e, "cannot start reading the neighbour table; devices go without MACs");
        }
    }

    /// The device behind `ip` as of `now`, from the cache when fresh.
    ///
    /// Each thread keeps its own copies of the devices it has seen: on a
    /// busy resolver every query names a device, and one shared `Arc` per
    /// device would have its counter bounce between cores on each of them.
    pub fn identify(&self, ip: IpAddr, now: Instant) -> Arc<Device> {
        let generation = self.generation.load(Ordering::Acquire);
        NEAR.with_borrow_mut(|near| {
            let key = (self.id, ip);
            if let Some(known) = near.get(&key)
                && known.generation == generation
                && now.saturating_duration_since(known.at) < FRESH_FOR
            {
                return known.device.clone();
            }
            let (shared, at) = self.identify_shared(ip, now);
            let own = Arc::new(Device::clone(&shared));
            if near.len() >= NEAR_MAX {
                near.clear();
            }
            let known = NearKnown {
                device: own.clone(),
                at,
                generation,
            };
            near.insert(key, known);
            own
        })
    }

    fn identify_shared(&self, ip: IpAddr, now: Instant) -> (Arc<Device>, Instant) {
        if let Some(known) = self.known.get(&ip)
            && now.saturating_duration_since(known.at) < FRESH_FOR
        {
            return (known.device.clone(), known.at);
        }
        let mac = self.neighbours.load().0.get(&ip).copied();
        let named = self.directory.load().name(ip, mac);
        let (name, group) = match named {
            Some((name, group)) => (Some(name), group),
            None => (self.reverse_name(ip), None),
        };
        let device = Arc::new(Device {
            mac: mac.map(|m| format_mac(&m).into()),
            name,
            group,
        });
        self.known.insert(
            ip,
            Arc::new(Known {
                device: device.clone(),
                at: now,
            }),
        );
        (device, now)
    }

    /// A cached PTR name, or none for now while one is looked up.
    fn reverse_name(&self, ip: IpAddr) -> Option<Arc<str>> {
        if let Some(name) = self.reverse_names.get(&ip) {
            return name;
        }
        let lookup = self.reverse.as_ref()?(ip)?;
        // Mark it asked so it is asked once; the answer fills it in.
        self.reverse_names.insert(ip, None);
        let (names, known) = (self.reverse_names.clone(), self.known.clone());
        let generation = self.generation.clone();
        let lookup = async move {
            let name = lookup
                .await
                .map(|n| Arc::<str>::from(n.trim_end_matches('.')));
            debug!(%ip, ?name, "reverse name");
            names.insert(ip, name);
            // The next query from this client picks the name up.
            known.remove(&ip);
            generation.fetch_add(1, Ordering::Release);
        };
        match self.lookups.get() {
            Some(runtime) => drop(runtime.spawn(lookup)),
            None => drop(tokio::spawn(lookup)),
        }
        None
    }

    /// Runs reverse lookups on `runtime` from now on, not on the runtime of
    /// the thread that asked: a UDP thread's runtime may be asleep while
    /// its thread waits in `recvmmsg` (see `listener.rs`).
    pub fn look_up_names_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.lookups.set(runtime);
    }
}
