//! `config.toml`: the public interface of sinkd. Key names never change.
//!
//! Every value is checked while it is deserialized, so a wrong value is
//! reported by toml with the exact line and column of the value, the same way
//! a syntax error or an unknown key is.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub upstream: UpstreamConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub blocking: BlockingConfig,
    #[serde(default)]
    pub local: LocalConfig,
    /// Conditional forwarding: these domains go to these servers.
    #[serde(default)]
    pub forward: Vec<ForwardRule>,
    /// Named devices.
    #[serde(default)]
    pub clients: Vec<ClientRule>,
    #[serde(default)]
    pub dhcp: DhcpConfig,
    #[serde(default)]
    pub querylog: QueryLogSection,
    #[serde(default)]
    pub firewall: FirewallConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Prometheus metrics: counters of queries by action, malformed packets,
/// rate-limited and dropped log lines.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve `/metrics` (e.g. "127.0.0.1:9153"); off when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// What `sinkd firewall` hands the router besides the `answer_ips` ranges.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirewallConfig {
    /// Lists whose names are looked up in the background, so their current
    /// addresses can be dropped on the router.
    #[serde(default)]
    pub resolve: Vec<String>,
    #[serde(default = "default_firewall_refresh")]
    pub refresh: HumanDuration,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        FirewallConfig {
            resolve: Vec::new(),
            refresh: default_firewall_refresh(),
        }
    }
}

fn default_firewall_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Zones sinkd answers for itself (SOA, NS, NXDOMAIN for unknown names).
    #[serde(default)]
    pub zones: Vec<String>,
    /// Hosts files (`/etc/hosts` format), reloaded on change.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub records: Vec<LocalRecord>,
    /// TTL of local answers and negative TTL of local zones.
    #[serde(default = "default_local_ttl")]
    pub ttl: u32,
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            zones: Vec::new(),
            hosts: Vec::new(),
            records: Vec::new(),
            ttl: default_local_ttl(),
        }
    }
}

fn default_local_ttl() -> u32 {
    300
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalRecord {
    pub name: String,
    /// A, AAAA, CNAME, TXT, SRV, MX
    #[serde(rename = "type")]
    pub rtype: String,
    pub value: String,
    #[serde(default)]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    /// The domains (and everything below them) sent to `servers`.
    pub domains: NonEmpty<String>,
    pub servers: NonEmpty<UpstreamSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientRule {
    pub name: String,
    /// MAC addresses, IPs and networks this device is known by.
    #[serde(rename = "match")]
    pub matches: Vec<ClientMatch>,
    #[serde(default)]
    pub group: Option<String>,
}

/// How a `[[clients]]` entry recognises a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMatch {
    Mac([u8; 6]),
    Net(IpNet),
}

impl FromStr for ClientMatch {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(mac) = parse_mac(text) {
            return Ok(ClientMatch::Mac(mac));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(ClientMatch::Net(IpNet::from(ip)));
        }
        text.parse::<IpNet>()
            .map(ClientMatch::Net)
            .map_err(|_| format!("`{text}` is not a MAC address, an IP address or a network"))
    }
}

impl<'de> Deserialize<'de> for ClientMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<ClientMatch>::new(
            "a MAC (aa:bb:cc:dd:ee:ff), an IP or a network",
        ))
    }
}

/// `aa:bb:cc:dd:ee:ff` or `aa-bb-cc-dd-ee-ff`, any case.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes = text.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let sep = bytes[2];
    if sep != b':' && sep != b'-' {
        return None;
    }
    let mut mac = [0; 6];
    for (i, octet) in mac.iter_mut().enumerate() {
        if i > 0 && bytes[i * 3 - 1] != sep {
            return None;
        }
        let hex = std::str::from_utf8(&bytes[i * 3..i * 3 + 2]).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *octet = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(mac)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// DHCP lease files that name devices (dnsmasq and ISC dhcpd formats).
/// (A `[clients]` table cannot sit beside the `[[clients]]` list in TOML.)
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    #[serde(default)]
    pub leases: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueryLogSection {
    /// Writes the query log at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_querylog_path")]
    pub path: PathBuf,
    /// Rotate when the file is larger than this; 0: never.
    #[serde(default = "default_max_size_mb")]
    pub max_size_mb: u64,
    /// Rotated files kept.
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Names (and their subdomains), client IPs, networks, MACs or device
    /// names left out of the log.
    #[serde(default)]
    pub ignore: Vec<String>,
}

impl Default for QueryLogSection {
    fn default() -> Self {
        QueryLogSection {
            enabled: true,
            path: default_querylog_path(),
            max_size_mb: default_max_size_mb(),
            keep: default_keep(),
            ignore: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_querylog_path() -> PathBuf {
    PathBuf::from("querylog.jsonl")
}

fn default_max_size_mb() -> u64 {
    100
}

fn default_keep() -> usize {
    5
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Every address serves UDP and TCP.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Clients outside these networks get REFUSED.
    #[serde(default = "default_allow")]
    pub allow: Vec<IpNet>,
    /// Worker threads, and the most threads reading each address's UDP
    /// socket (more than one only under load); 0 means one per core.
    #[serde(default)]
    pub threads: usize,
    /// A public name answered with a private, loopback or link-local address
    /// is blocked (DNS rebinding), unless it is local, forwarded or allowed.
    #[serde(default = "yes")]
    pub rebind_protection: bool,
    /// Queries a second one client may ask on average; 0 turns the limit off.
    #[serde(default = "default_rate_limit")]
    pub rate_limit: u32,
    /// Queries one client may ask at once (default: twice `rate_limit`).
    #[serde(default)]
    pub rate_limit_burst: Option<u32>,
    /// What a client over its limit gets: nothing ("drop") or REFUSED.
    #[serde(default)]
    pub rate_limit_action: OverLimit,
    /// Queries waiting for an upstream at most; past it the oldest is given up.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: Positive,
}

fn default_max_in_flight() -> Positive {
    Positive(4096)
}

fn default_rate_limit() -> u32 {
    200
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverLimit {
    #[default]
    Drop,
    Refused,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            rebind_protection: true,
            rate_limit: default_rate_limit(),
            rate_limit_burst: None,
            rate_limit_action: OverLimit::Drop,
            max_in_flight: default_max_in_flight(),
            listen: default_listen(),
            allow: default_allow(),
            threads: 0,
        }
    }
}

fn default_listen() -> Vec<SocketAddr> {
    vec!["0.0.0.0:53".parse().unwrap(), "[::]:53".parse().unwrap()]
}

/// Loopback, the RFC 1918 and unique-local ranges and link-local IPv6: the
/// addresses a home LAN hands out. Everything else is a stranger.
fn default_allow() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default = "default_upstreams")]
    pub servers: NonEmpty<UpstreamSpec>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: Positive,
    /// Extra CA certificates (PEM) trusted for tls:// and https:// upstreams,
    /// beside the Mozilla roots: for a resolver with its own CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl UpstreamConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.0)
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            servers: default_upstreams(),
            timeout_ms: default_timeout_ms(),
            ca_file: None,
        }
    }
}

fn default_upstreams() -> NonEmpty<UpstreamSpec> {
    NonEmpty(vec![
        "tls://9.9.9.9:853#dns.quad9.net".parse().unwrap(),
        "tls://1.1.1.1:853#cloudflare-dns.com".parse().unwrap(),
    ])
}

fn default_timeout_ms() -> Positive {
    Positive(1500)
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(try_from = "RawCacheConfig")]
pub struct CacheConfig {
    pub size: usize,
    pub min_ttl: u32,
    pub max_ttl: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size: 100_000,
            min_ttl: 0,
            max_ttl: 86_400,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCacheConfig {
    size: Option<usize>,
    min_ttl: Option<u32>,
    max_ttl: Option<u32>,
}

impl TryFrom<RawCacheConfig> for CacheConfig {
    type Error = String;
    fn try_from(raw: RawCacheConfig) -> Result<Self, String> {
        let default = CacheConfig::default();
        let config = CacheConfig {
            size: raw.size.unwrap_or(default.size),
            min_ttl: raw.min_ttl.unwrap_or(default.min_ttl),
            max_ttl: raw.max_ttl.unwrap_or(default.max_ttl),
        };
        if config.min_ttl > config.max_ttl {
            return Err(format!(
                "min_ttl ({}) is larger than max_ttl ({})",
                config.min_ttl, config.max_ttl
            ));
        }
        Ok(config)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlockingConfig {
    /// Block lists: files, globs or directories.
    #[serde(default)]
    pub lists: Vec<String>,
    /// Exception lists: every entry in them is allowed, whatever blocks it.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Address lists: forwarded answers pointing into these ranges are blocked.
    #[serde(default)]
    pub answer_ips: Vec<String>,
    #[serde(default)]
    pub mode: BlockMode,
    /// TTL of blocked answers (and the SOA's negative TTL).
    #[serde(default = "default_block_ttl")]
    pub ttl: u32,
    /// Lists downloaded over HTTP(S) and refreshed in the background.
    #[serde(default)]
    pub remote: Vec<RemoteList>,
    /// Where downloaded lists are kept (default: `$STATE_DIRECTORY/lists`
    /// under systemd, else `remote-lists/` beside the config).
    #[serde(default)]
    pub remote_dir: Option<PathBuf>,
    /// Keep devices on this resolver: NXDOMAIN for Firefox's DoH canary
    /// (use-application-dns.net), NODATA for DDR (_dns.resolver.arpa).
    #[serde(default = "yes")]
    pub bypass_hygiene: bool,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig {
            lists: Vec::new(),
            allow: Vec::new(),
            answer_ips: Vec::new(),
            mode: BlockMode::default(),
            ttl: default_block_ttl(),
            remote: Vec::new(),
            remote_dir: None,
            bypass_hygiene: true,
        }
    }
}

fn default_block_ttl() -> u32 {
    60
}

/// How a blocked name is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockMode {
    /// A gets 0.0.0.0, AAAA gets ::, other types NODATA.
    #[default]
    Null,
    NxDomain,
    NoData,
    Refused,
    /// A and AAAA get these addresses (NODATA for a family not given).
    Ip {
        v4: Option<std::net::Ipv4Addr>,
        v6: Option<std::net::Ipv6Addr>,
    },
}

impl FromStr for BlockMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "null" => Ok(BlockMode::Null),
            "nxdomain" => Ok(BlockMode::NxDomain),
            "nodata" => Ok(BlockMode::NoData),
            "refused" => Ok(BlockMode::Refused),
            _ => {
                let Some(list) = text.strip_prefix("ip:") else {
                    return Err(format!(
                        "unknown mode `{text}`: use null, nxdomain, nodata, refused or \"ip:192.0.2.9,2001:db8::9\""
                    ));
                };
                let (mut v4, mut v6) = (None, None);
                for part in list.split(',').map(str::trim) {
                    match part.parse::<IpAddr>() {
                        Ok(IpAddr::V4(ip)) if v4.is_none() => v4 = Some(ip),
                        Ok(IpAddr::V6(ip)) if v6.is_none() => v6 = Some(ip),
                        Ok(_) => {
                            return Err(format!("`{text}`: one IPv4 and one IPv6 address at most"));
                        }
                        Err(_) => return Err(format!("`{text}`: `{part}` is not an IP address")),
                    }
                }
                Ok(BlockMode::Ip { v4, v6 })
            }
        }
    }
}

impl<'de> Deserialize<'de> for BlockMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<BlockMode>::new(
            "a blocking mode such as \"null\"",
        ))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteList {
    pub url: HttpUrl,
    /// How often to download it again, e.g. "24h", "30m".
    #[serde(default = "default_refresh")]
    pub refresh: HumanDuration,
    /// An exception list rather than a block list.
    #[serde(default)]
    pub allow: bool,
}

fn default_refresh() -> HumanDuration {
    HumanDuration(Duration::from_secs(24 * 3600))
}

/// A duration written for people: "24h", "90m", "1d 12h".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(text)
            .map_err(|e| format!("`{text}`: {e} (write e.g. \"24h\" or \"30m\")"))?;
        if d < Duration::from_secs(60) {
            return Err(format!("`{text}`: refresh at most once a minute"));
        }
        Ok(HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<HumanDuration>::new(
            "a duration such as \"24h\"",
        ))
    }
}

/// An http:// or https:// URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub String);

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"))
            .ok_or_else(|| format!("`{text}`: a list URL starts with https:// or http://"))?;
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("`{text}`: the URL has no host"));
        }
        Ok(HttpUrl(text.to_string()))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<HttpUrl>::new("an https:// URL"))
    }
}

/// Deserializes a string through `FromStr` inside the visitor, so toml points
/// at the string itself when parsing fails.
struct FromStrVisitor<T> {
    expecting: &'static str,
    _type: std::marker::PhantomData<T>,
}

impl<T> FromStrVisitor<T> {
    fn new(expecting: &'static str) -> Self {
        FromStrVisitor {
            expecting,
            _type: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err = String>> serde::de::Visitor<'_> for FromStrVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
        text.parse().map_err(E::custom)
    }
}

/// A list that must have at least one element.
#[derive(Debug, Clone, PartialEq)]
pub struct NonEmpty<T>(pub Vec<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NonEmpty<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items = Vec::<T>::deserialize(d)?;
        if items.is_empty() {
            return Err(serde::de::Error::custom("needs at least one entry"));
        }
        Ok(NonEmpty(items))
    }
}

/// A whole number greater than zero.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Positive(pub u64);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u64::deserialize(d)? {
            0 => Err(serde::de::Error::custom("must be greater than 0")),
            n => Ok(Positive(n)),
        }
    }
}

/// How sinkd talks to one upstream resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS (RFC 7858); the name is checked against the certificate.
    Tls {
        server_name: String,
    },
    /// DNS over HTTPS (RFC 8484), HTTP/2 POST.
    Https {
        server_name: String,
        path: String,
    },
}

/// One entry of `upstream.servers`: `udp://ip[:port]`, `tcp://ip[:port]`,
/// `tls://ip[:port]#name`, `https://host[:port]/path` (`https://ip/path#name`
/// to skip resolving the host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub transport: Transport,
    pub host: Host,
    pub port: u16,
    /// As written in the config, for logs.
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Ip(IpAddr),
    /// Resolved by the system resolver when connecting (DoH only).
    Name(String),
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for UpstreamSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text.split_once("://").unwrap_or(("udp", text));
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f.to_string())),
            None => (rest, None),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let default_port = match scheme {
            "udp" | "tcp" => 53,
            "tls" => 853,
            "https" => 443,
            other => {
                return Err(format!(
                    "unknown scheme `{other}://` in `{text}`: use udp://, tcp://, tls:// or https://"
                ));
            }
        };
        let (host, port) = split_host_port(authority, default_port).ok_or_else(|| {
            format!("`{text}`: expected an address like 9.9.9.9 or [2620:fe::fe]:853")
        })?;
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if scheme == "https" && !host.is_empty() => Host::Name(host.to_string()),
            Err(_) => {
                return Err(format!(
                    "`{text}`: {scheme}:// needs an IP address (a name would have to be resolved through sinkd itself)"
                ));
            }
        };
        let name_or_host = || match (&fragment, &host) {
            (Some(name), _) => name.clone(),
            (None, Host::Name(name)) => name.clone(),
            (None, Host::Ip(ip)) => ip.to_string(),
        };
        let transport = match scheme {
            "udp" | "tcp" if path.is_some() || fragment.is_some() => {
                return Err(format!(
                    "`{text}`: {scheme}:// takes only an address and port"
                ));
            }
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls {
                server_name: name_or_host(),
            },
            _ => Transport::Https {
                server_name: name_or_host(),
                path: path.unwrap_or("/dns-query").to_string(),
            },
        };
        Ok(UpstreamSpec {
            transport,
            host,
            port,
            text: text.to_string(),
        })
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        // A bare IPv6 address has several colons and no port.
        Some((host, _)) if host.contains(':') => Some((authority, default_port)),
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, default_port)),
    }
}

impl<'de> Deserialize<'de> for UpstreamSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(FromStrVisitor::<UpstreamSpec>::new(
            "an upstream such as \"tls://9.9.9.9:853#dns.quad9.net\"",
        ))
    }
}

/// A problem with a file sinkd reads, located for a person: `path:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    pub column: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if let Some(col) = self.column {
            write!(f, ":{col}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: PathBuf,
}

impl Loaded {
    /// Relative paths in the config are relative to the config file's directory.
    pub fn resolve(&self, relative: impl AsRef<Path>) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        dir.join(relative)
    }
}

pub fn load(path: &Path) -> Result<Loaded, Problem> {
    let text = std::fs::read_to_string(path).map_err(|e| Problem {
        path: path.to_path_buf(),
        line: 0,
        column: None,
        message: format!("cannot read the config: {e}"),
    })?;
    let config = parse(&text).map_err(|(line, column, message)| Problem {
        path: path.to_path_buf(),
        line,
        column: Some(column),
        message,
    })?;
    Ok(Loaded {
        config,
        path: path.to_path_buf(),
    })
}

/// Parses config text; an error comes with its 1-based line and column.
///
/// ```
/// let config = sinkd::config::parse("[cache]\nsize = 0\n").unwrap();
/// assert_eq!(config.cache.size, 0);
/// let (line, column, message) = sinkd::config::parse("[cache]\nsise = 0\n").unwrap_err();
/// assert_eq!((line, column), (2, 1));
/// assert!(message.contains("unknown field `sise`"));
/// ```
pub fn parse(text: &str) -> Result<Config, (usize, usize, String)> {
    toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        let (line, column) = line_col(text, offset);
        (line, column, e.message().trim().to_string())
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_home_setup() {
        let config = parse("").unwrap();
        assert_eq!(config.server.listen.len(), 2);
        assert!(
            config
                .server
                .allow
                .iter()
                .any(|n| n.to_string() == "192.168.0.0/16")
        );
        assert_eq!(config.cache.size, 100_000);
        assert!(matches!(
            config.upstream.servers.0[0].transport,
            Transport::Tls { .. }
        ));
    }

    #[test]
    fn upstream_forms() {
        let s: UpstreamSpec = "udp://1.1.1.1".parse().unwrap();
        assert_eq!((s.transport, s.port), (Transport::Udp, 53));
        let s: UpstreamSpec = "tcp://[2606:4700::1111]:5353".parse().unwrap();
        assert_eq!(s.port, 5353);
        assert_eq!(s.host, Host::Ip("2606:4700::1111".parse().unwrap()));
        let s: UpstreamSpec = "tls://9.9.9.9#dns.quad9.net".parse().unwrap();
        assert_eq!(
            s.transport,
            Transport::Tls {
                server_name: "dns.quad9.net".into()
            }
        );
        assert_eq!(s.port, 853);
        let s: UpstreamSpec = "https://dns.quad9.net/dns-query".parse().unwrap();
        assert_eq!(s.host, Host::Name("dns.quad9.net".into()));
        let s: UpstreamSpec = "https://1.1.1.1/dns-query#cloudflare-dns.com"
            .parse()
            .unwrap();
        assert_eq!(
            s.transport,
            Transport::Https {
                server_name: "cloudflare-dns.com".into(),
                path: "/dns-query".into()
            }
        );
        assert!("quic://1.1.1.1".parse::<UpstreamSpec>().is_err());
        assert!("tls://dns.quad9.net".parse::<UpstreamSpec>().is_err());
    }

    #[test]
    fn errors_name_line_and_column() {
        let text = "[server]\nlisten = [\"127.0.0.1:53\"]\nlisen = 1\n";
        let (line, col, msg) = parse(text).unwrap_err();
        assert_eq!((line, col), (3, 1));
        assert!(msg.contains("unknown field `lisen`"), "{msg}");

        let text = "[upstream]\nservers = [\"udp://1.1.1.1\", \"ftp://x\"]\n";
        let (line, col, msg) = parse(text).unwrap_err();
        assert_eq!((line, col), (2, 29));
        assert!(msg.contains("unknown scheme"), "{msg}");

        let text = "[cache]\nmin_ttl = 600\nmax_ttl = 300\n";
        let (line, _, msg) = parse(text).unwrap_err();
        assert_eq!(line, 1);
        assert!(
            msg.contains("min_ttl (600) is larger than max_ttl (300)"),
            "{msg}"
        );

        let (line, _, msg) = parse("[server]\nallow = [\"10.0.0.0/33\"]").unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("invalid"), "{msg}");
    }
}
