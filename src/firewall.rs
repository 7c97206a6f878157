//! The firewall feed: what DNS alone cannot stop, for the router to drop.
//!
//! A phone can connect to an address it already knows, or to its own
//! resolver on port 853, without asking sinkd. `sinkd firewall` prints the
//! ranges of the `answer_ips` lists, the current addresses of the names in
//! `[firewall] resolve` lists (looked up through the upstreams in the
//! background by the running server, never answered to a client), and the
//! port-853 block, as an nftables script, iptables commands or a plain list.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::stream::{self, StreamExt};
use ipnet::IpNet;
use tracing::{info, warn};

use crate::config::Loaded;
use crate::policy::{Rule, RuleKind, parse_domain_list, parse_ip_list};
use crate::upstream::Upstreams;

/// Lookups in flight at once while refreshing the addresses.
const PARALLEL_LOOKUPS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Nft,
    Iptables,
    Plain,
}

/// Everything the router should drop.
#[derive(Debug, Default)]
pub struct Feed {
    /// Range → where it came from (`file:line`).
    pub ranges: BTreeMap<IpNet, String>,
    /// Address → the blocked name it belongs to.
    pub addresses: BTreeMap<IpAddr, String>,
    /// When the addresses were looked up, if they were.
    pub resolved_at: Option<SystemTime>,
}

/// Where the server keeps the addresses it looked up.
pub fn state_file(loaded: &Loaded) -> PathBuf {
    crate::remote::remote_dir(loaded).join("firewall-addresses.txt")
}

/// The names in the `[firewall] resolve` lists (exact and subtree entries;
/// patterns that name no single host are left out).
pub fn names(loaded: &Loaded) -> Vec<String> {
    let mut names = Vec::new();
    for pattern in &loaded.config.firewall.resolve {
        let files = crate::blocking::expand(loaded, pattern).unwrap_or_default();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                warn!(file = %file.display(), "firewall: cannot read");
                continue;
            };
            parse_domain_list(&text, false, |_, rule| {
                if let Rule::Name {
                    name,
                    kind: RuleKind::Exact | RuleKind::Subtree,
                    allow: false,
                } = rule
                {
                    names.push(name.to_string());
                }
                Ok(())
            });
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Looks every name up through the upstreams, a few at a time.
pub async fn resolve(upstreams: &Arc<Upstreams>, names: Vec<String>) -> BTreeMap<IpAddr, String> {
    let found: Vec<(String, Vec<IpAddr>)> = stream::iter(names)
        .map(|name| async move {
            let ips = upstreams.lookup_ips(&name).await.unwrap_or_default();
            (name, ips)
        })
        .buffer_unordered(PARALLEL_LOOKUPS)
        .collect()
        .await;
    let mut addresses = BTreeMap::new();
    for (name, ips) in found {
        for ip in ips {
            // A sinkhole answer from a resolver further up is no address.
            if !ip.is_unspecified() && !ip.is_loopback() {
                addresses.entry(ip).or_insert_with(|| name.clone());
            }
        }
    }
    addresses
}

/// Writes the looked-up addresses for `sinkd firewall` to read.
pub fn store(loaded: &Loaded, addresses: &BTreeMap<IpAddr, String>) -> std::io::Result<()> {
    let path = state_file(loaded);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::from("# sinkd: current addresses of [firewall] resolve names\n");
    for (ip, name) in addresses {
        let _ = writeln!(text, "{ip} {name}");
    }
    let temp = path.with_extension("partial");
    std::fs::write(&temp, text)?;
    std::fs::rename(temp, path)
}

/// The running server's refresher: looks the names up now and every
/// `[firewall] refresh`.
pub fn spawn_refresher(loaded: &Loaded, upstreams: Arc<Upstreams>) {
    if loaded.config.firewall.resolve.is_empty() {
        return;
    }
    let loaded = loaded.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(loaded.config.firewall.refresh.0);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let names = names(&loaded);
            let count = names.len();
            let addresses = resolve(&upstreams, names).await;
            match store(&loaded, &addresses) {
                Ok(()) => info!(
                    names = count,
                    addresses = addresses.len(),
                    "firewall addresses refreshed"
                ),
                Err(e) => warn!(error = %e, "firewall: cannot store the addresses"),
            }
        }
    });
}

/// The feed from the `answer_ips` lists and the stored addresses.
pub fn load(loaded: &Loaded) -> Feed {
    let mut feed = Feed::default();
    for pattern in &loaded.config.blocking.answer_ips {
        let files = crate::blocking::expand(loaded, pattern).unwrap_or_default();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let shown = file
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            parse_ip_list(&text, |line, net| {
                feed.ranges
                    .entry(net)
                    .or_insert_with(|| format!("{shown}:{line}"));
            });
        }
    }
    let path = state_file(loaded);
    if let Ok(text) = std::fs::read_to_string(&path) {
        feed.resolved_at = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((ip, name)) = line.split_once(' ')
                && let Ok(ip) = ip.parse::<IpAddr>()
                && !feed.ranges.keys().any(|net| net.contains(&ip))
            {
                feed.addresses.insert(ip, name.to_string());
            }
        }
    }
    feed
}

/// Whether the stored addresses are missing or stale.
pub fn needs_lookup(loaded: &Loaded, feed: &Feed) -> bool {
    if loaded.config.firewall.resolve.is_empty() {
        return false;
    }
    let stale_after = loaded.config.firewall.refresh.0 * 2;
    feed.resolved_at
        .and_then(|at| at.elapsed().ok())
        .is_none_or(|age| age > stale_after)
}

fn families(feed: &Feed) -> (Vec<String>, Vec<String>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for net in feed.ranges.keys() {
        match net {
            IpNet::V4(_) => v4.push(net.to_string()),
            IpNet::V6(_) => v6.push(net.to_string()),
        }
    }
    for ip in feed.addresses.keys() {
        match ip {
            IpAddr::V4(_) => v4.push(ip.to_string()),
            IpAddr::V6(_) => v6.push(ip.to_string()),
        }
    }
    (v4, v6)
}

/// The feed as the router wants it.
pub fn render(feed: &Feed, format: Format, source: &str) -> String {
    let mut out = String::new();
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now());
    let resolved = match feed.resolved_at {
        Some(at) => humantime::format_rfc3339_seconds(at).to_string(),
        None => "never".to_string(),
    };
    let header = format!(
        "sinkd firewall feed from {source}, made {stamp}: {} ranges, {} addresses of blocked names (looked up {resolved}), and DNS over TLS (port 853)",
        feed.ranges.len(),
        feed.addresses.len()
    );
    let (v4, v6) = families(feed);
    match format {
        Format::Plain => {
            let _ = writeln!(out, "# {header}");
            let _ = writeln!(out, "# block outbound port 853 (tcp and udp) too");
            for (net, from) in &feed.ranges {
                let _ = writeln!(out, "{net}\t# {from}");
            }
            for (ip, name) in &feed.addresses {
                let _ = writeln!(out, "{ip}\t# {name}");
            }
        }
        Format::Nft => {
            let _ = writeln!(out, "#!/usr/sbin/nft -f");
            let _ = writeln!(out, "# {header}");
            let _ = writeln!(
                out,
                "# Load with `nft -f FILE`; loading again replaces the table."
            );
            let _ = writeln!(out, "table inet sinkd_block");
            let _ = writeln!(out, "delete table inet sinkd_block");
            let _ = writeln!(out, "table inet sinkd_block {{");
            for (set, kind, elements) in [("v4", "ipv4_addr", &v4), ("v6", "ipv6_addr", &v6)] {
                let _ = writeln!(out, "  set {set} {{");
                let _ = writeln!(out, "    type {kind}; flags interval; auto-merge;");
                if !elements.is_empty() {
                    let _ = writeln!(out, "    elements = {{ {} }}", elements.join(", "));
                }
                let _ = writeln!(out, "  }}");
            }
            let _ = writeln!(out, "  chain forward {{");
            let _ = writeln!(
                out,
                "    type filter hook forward priority filter; policy accept;"
            );
            let _ = writeln!(out, "    ip daddr @v4 reject");
            let _ = writeln!(out, "    ip6 daddr @v6 reject");
            let _ = writeln!(out, "    meta l4proto {{ tcp, udp }} th dport 853 reject");
            let _ = writeln!(out, "  }}");
            let _ = writeln!(out, "}}");
        }
        Format::Iptables => {
            let _ = writeln!(out, "#!/bin/sh");
            let _ = writeln!(out, "# {header}");
            let _ = writeln!(
                out,
                "# Run as root on the router; running it again replaces the chain."
            );
            for (tool, addresses) in [("iptables", &v4), ("ip6tables", &v6)] {
                let _ = writeln!(
                    out,
                    "{tool} -N SINKD_BLOCK 2>/dev/null || {tool} -F SINKD_BLOCK"
                );
                for address in addresses {
                    let _ = writeln!(out, "{tool} -A SINKD_BLOCK -d {address} -j REJECT");
                }
                for proto in ["tcp", "udp"] {
                    let _ = writeln!(
                        out,
                        "{tool} -A SINKD_BLOCK -p {proto} --dport 853 -j REJECT"
                    );
                }
                let _ = writeln!(
                    out,
                    "{tool} -C FORWARD -j SINKD_BLOCK 2>/dev/null || {tool} -I FORWARD -j SINKD_BLOCK"
                );
            }
        }
    }
    out
}

/// For the command line: how long a lookup on the spot may take at most.
pub const LOOKUP_BUDGET: Duration = Duration::from_secs(20);
