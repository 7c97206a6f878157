//! Answer-IP ranges: a longest-prefix-match set of CIDR ranges.
//!
//! One small hash map per prefix length present (network address → rule),
//! per address family. A lookup masks the address to each present length,
//! longest first, and probes: at most as many probes as there are distinct
//! lengths in the lists (usually a handful), and overlapping ranges resolve to
//! the most specific one. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is
//! also checked against the IPv4 ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hashbrown::HashMap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::parse::{LineError, RuleRef, parse_ip_list};

/// Builds a [`RangeSet`] from answer-IP files.
pub struct RangeSetBuilder {
    /// Indexed by prefix length 0..=32.
    v4: Vec<HashMap<u32, RuleRef>>,
    /// Indexed by prefix length 0..=128.
    v6: Vec<HashMap<u128, RuleRef>>,
}

impl Default for RangeSetBuilder {
    fn default() -> Self {
        RangeSetBuilder {
            v4: (0..=32).map(|_| HashMap::new()).collect(),
            v6: (0..=128).map(|_| HashMap::new()).collect(),
        }
    }
}

#[inline]
fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

#[inline]
fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

impl RangeSetBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one answer-IP file (`42.62.48.0/24`, `42.62.48.157`,
    /// `2a00:1450::/32`, one a line). Returns the line errors.
    pub fn add_text(&mut self, file: u16, text: &str) -> Vec<LineError> {
        parse_ip_list(text, |line, net| self.add(net, RuleRef { file, line }))
    }

    /// Add one range (host bits are cleared). A range already present keeps
    /// its first rule.
    pub fn add(&mut self, net: IpNet, rule: RuleRef) {
        match net.trunc() {
            IpNet::V4(n) => {
                let len = n.prefix_len();
                self.v4[usize::from(len)]
                    .entry(u32::from(n.network()))
                    .or_insert(rule);
            }
            IpNet::V6(n) => {
                let len = n.prefix_len();
                self.v6[usize::from(len)]
                    .entry(u128::from(n.network()))
                    .or_insert(rule);
            }
        }
    }

    pub fn build(self) -> RangeSet {
        fn present<K: Eq + std::hash::Hash>(
            maps: Vec<HashMap<K, RuleRef>>,
        ) -> Vec<(u8, HashMap<K, RuleRef>)> {
            let mut v: Vec<_> = maps
                .into_iter()
                .enumerate()
                .filter(|(_, m)| !m.is_empty())
                .map(|(len, mut m)| {
                    m.shrink_to_fit();
                    (len as u8, m)
                })
                .collect();
            v.reverse(); // longest prefix first
            v
        }
        let v4 = present(self.v4);
        let v6 = present(self.v6);
        let len = v4.iter().map(|(_, m)| m.len()).sum::<usize>()
            + v6.iter().map(|(_, m)| m.len()).sum::<usize>();
        RangeSet { v4, v6, len }
    }
}

/// An immutable set of answer-IP ranges.
#[derive(Default)]
pub struct RangeSet {
    /// (prefix length, network → rule), longest prefix first.
    v4: Vec<(u8, HashMap<u32, RuleRef>)>,
    v6: Vec<(u8, HashMap<u128, RuleRef>)>,
    len: usize,
}

impl RangeSet {
    /// Distinct ranges.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most specific range containing `ip`, with the rule that listed it.
    pub fn check(&self, ip: IpAddr) -> Option<(RuleRef, IpNet)> {
        match ip {
            IpAddr::V4(a) => self.check4(a),
            IpAddr::V6(a) => self
                .check6(a)
                .or_else(|| a.to_ipv4_mapped().and_then(|a| self.check4(a))),
        }
    }

    fn check4(&self, a: Ipv4Addr) -> Option<(RuleRef, IpNet)> {
        let addr = u32::from(a);
        self.v4.iter().find_map(|(len, map)| {
            let net = mask4(addr, *len);
            map.get(&net).map(|r| (*r, net4(net, *len)))
        })
    }

    fn check6(&self, a: Ipv6Addr) -> Option<(RuleRef, IpNet)> {
        let addr = u128::from(a);
        self.v6.iter().find_map(|(len, map)| {
            let net = mask6(addr, *len);
            map.get(&net).map(|r| (*r, net6(net, *len)))
        })
    }

    /// Every range with its rule, for a firewall export: IPv4 before IPv6,
    /// ascending by address, then by prefix length.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, RuleRef)> + '_ {
        let mut v4: Vec<(u32, u8, RuleRef)> = self
            .v4
            .iter()
            .flat_map(|(len, m)| m.iter().map(move |(n, r)| (*n, *len, *r)))
            .collect();
        v4.sort_unstable_by_key(|&(n, len, _)| (n, len));
        let mut v6: Vec<(u128, u8, RuleRef)> = self
            .v6
            .iter()
            .flat_map(|(len, m)| m.iter().map(move |(n, r)| (*n, *len, *r)))
            .collect();
        v6.sort_unstable_by_key(|&(n, len, _)| (n, len));
        v4.into_iter()
            .map(|(n, len, r)| (net4(n, len), r))
            .chain(v6.into_iter().map(|(n, len, r)| (net6(n, len), r)))
    }
}

fn net4(net: u32, len: u8) -> IpNet {
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(net), len).expect("prefix length <= 32"))
}

fn net6(net: u128, len: u8) -> IpNet {
    IpNet::V6(Ipv6Net::new(Ipv6Addr::from(net), len).expect("prefix length <= 128"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hit(s: &RangeSet, a: &str) -> Option<(u16, u32, String)> {
        s.check(ip(a)).map(|(r, n)| (r.file, r.line, n.to_string()))
    }

    #[test]
    fn longest_prefix_and_overlaps() {
        let mut b = RangeSetBuilder::new();
        let e = b.add_text(
            1,
            "# xiaomi\n42.62.0.0/16\n42.62.48.0/24 # cloud\n42.62.48.157\n\
             0.0.0.0/0\n2a00:1450::/32\n2a00:1450:4001::/48\n::ffff:0:0/96\nbogus\n",
        );
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 9);
        let s = b.build();
        assert_eq!(s.len(), 7);
        assert_eq!(
            hit(&s, "42.62.48.157"),
            Some((1, 4, "42.62.48.157/32".into()))
        );
        assert_eq!(
            hit(&s, "42.62.48.158"),
            Some((1, 3, "42.62.48.0/24".into()))
        );
        assert_eq!(hit(&s, "42.62.49.1"), Some((1, 2, "42.62.0.0/16".into())));
        assert_eq!(hit(&s, "8.8.8.8"), Some((1, 5, "0.0.0.0/0".into())));
        assert_eq!(
            hit(&s, "2a00:1450:4001::5"),
            Some((1, 7, "2a00:1450:4001::/48".into()))
        );
        assert_eq!(
            hit(&s, "2a00:1450:4002::5"),
            Some((1, 6, "2a00:1450::/32".into()))
        );
        assert_eq!(hit(&s, "2001:db8::1"), None);
        // IPv4-mapped: the v6 /96 matches first, being a v6 range.
        assert_eq!(
            hit(&s, "::ffff:42.62.48.157"),
            Some((1, 8, "::ffff:0.0.0.0/96".into()))
        );
    }

    #[test]
    fn mapped_v4_falls_back_to_v4_ranges() {
        let mut b = RangeSetBuilder::new();
        assert!(b.add_text(0, "42.62.48.0/24\n").is_empty());
        let s = b.build();
        assert_eq!(
            hit(&s, "::ffff:42.62.48.1"),
            Some((0, 1, "42.62.48.0/24".into()))
        );
        assert_eq!(hit(&s, "42.62.47.255"), None);
        assert_eq!(hit(&s, "42.62.49.0"), None);
    }

    #[test]
    fn duplicates_keep_first_and_host_bits_cleared() {
        let mut b = RangeSetBuilder::new();
        b.add_text(0, "10.1.2.3/8\n");
        b.add_text(1, "10.0.0.0/8\n10.9.9.9/8\n");
        let s = b.build();
        assert_eq!(s.len(), 1);
        assert_eq!(hit(&s, "10.200.0.1"), Some((0, 1, "10.0.0.0/8".into())));
    }

    #[test]
    fn iter_sorted_for_export() {
        let mut b = RangeSetBuilder::new();
        b.add_text(2, "2a00::/16\n9.0.0.0/8\n1.2.3.4\n1.2.0.0/16\n::1\n");
        let s = b.build();
        let got: Vec<_> = s.iter().map(|(n, r)| (n.to_string(), r.line)).collect();
        let want = [
            ("1.2.0.0/16", 4),
            ("1.2.3.4/32", 3),
            ("9.0.0.0/8", 2),
            ("::1/128", 5),
            ("2a00::/16", 1),
        ];
        let want: Vec<_> = want.iter().map(|(n, l)| (n.to_string(), *l)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn empty() {
        let s = RangeSetBuilder::new().build();
        assert!(s.is_empty());
        assert_eq!(s.check(ip("1.1.1.1")), None);
        assert_eq!(s.iter().count(), 0);
        assert_eq!(RangeSet::default().check(ip("::")), None);
    }

    #[test]
    fn masks() {
        assert_eq!(mask4(0xffff_ffff, 0), 0);
        assert_eq!(mask4(0xffff_ffff, 32), 0xffff_ffff);
        assert_eq!(mask4(0xffff_ffff, 1), 0x8000_0000);
        assert_eq!(mask6(u128::MAX, 0), 0);
        assert_eq!(mask6(u128::MAX, 128), u128::MAX);
    }
}
