//! The LAN's own names: authoritative local zones, `[[local.records]]`, hosts
//! files, PTR records made from every address, and private reverse zones
//! that never leak upstream.
//!
//! The data is an immutable snapshot like the blocklists (rebuilt on reload),
//! so a lookup is a few hash probes and never waits on a lock. It is ours
//! rather than hickory-server's `InMemoryZoneHandler`, whose async `RwLock`
//! and dynamic-update machinery a read-only snapshot does not need; the
//! records themselves are hickory-proto's.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::config::{Loaded, LocalRecord, Problem};

/// Reverse zones of private, loopback and link-local space (RFC 6303):
/// questions about them mean nothing outside the LAN and never go upstream.
pub const PRIVATE_REVERSE_ZONES: &[&str] = &[
    "10.in-addr.arpa",
    "16.172.in-addr.arpa",
    "17.172.in-addr.arpa",
    "18.172.in-addr.arpa",
    "19.172.in-addr.arpa",
    "20.172.in-addr.arpa",
    "21.172.in-addr.arpa",
    "22.172.in-addr.arpa",
    "23.172.in-addr.arpa",
    "24.172.in-addr.arpa",
    "25.172.in-addr.arpa",
    "26.172.in-addr.arpa",
    "27.172.in-addr.arpa",
    "28.172.in-addr.arpa",
    "29.172.in-addr.arpa",
    "30.172.in-addr.arpa",
    "31.172.in-addr.arpa",
    "168.192.in-addr.arpa",
    "127.in-addr.arpa",
    "254.169.in-addr.arpa",
    "c.f.ip6.arpa",
    "d.f.ip6.arpa",
    "8.e.f.ip6.arpa",
    "9.e.f.ip6.arpa",
    "a.e.f.ip6.arpa",
    "b.e.f.ip6.arpa",
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa",
];

/// What the local stage says about a question.
#[derive(Debug, PartialEq)]
pub enum LocalAnswer {
    /// Authoritative data (answer records; an SOA in authority when empty).
    Answer {
        rcode: ResponseCode,
        answers: Vec<Record>,
        authority: Vec<Record>,
    },
    /// Not ours: go on (forwarding, upstreams).
    NotLocal,
}

pub struct LocalZones {
    /// Lowercase zone apexes without the final dot, with their SOA.
    zones: HashMap<String, Record>,
    /// Records by lowercase owner name (no final dot) and type.
    records: HashMap<(String, RecordType), Vec<Record>>,
    /// Every owner name and every name between an owner and its zone apex
    /// (empty non-terminals answer NODATA, not NXDOMAIN).
    names: HashSet<String>,
    ttl: u32,
}

fn key(name: &Name) -> String {
    let text = name.to_ascii().to_ascii_lowercase();
    text.strip_suffix('.').unwrap_or(&text).to_string()
}

fn fqdn(text: &str) -> Result<Name, String> {
    let text = text.trim().trim_end_matches('.');
    Name::from_ascii(format!("{text}.")).map_err(|e| format!("`{text}` is not a valid name: {e}"))
}

impl LocalZones {
    pub fn empty() -> LocalZones {
        LocalZones {
            zones: HashMap::new(),
            records: HashMap::new(),
            names: HashSet::new(),
            ttl: 300,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.zones.is_empty()
    }

    /// Counts for `sinkd check` and the log: zones, records.
    pub fn counts(&self) -> (usize, usize) {
        (self.zones.len(), self.records.values().map(Vec::len).sum())
    }

    fn soa(zone: &str, ttl: u32) -> Record {
        let apex = fqdn(zone).expect("zone names are checked when loaded");
        let host = |label: &str| {
            Name::from_ascii(format!("{label}.{apex}")).unwrap_or_else(|_| apex.clone())
        };
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs() as u32);
        Record::from_rdata(
            apex.clone(),
            ttl,
            RData::SOA(SOA::new(
                host("ns"),
                host("hostmaster"),
                serial,
                3600,
                600,
                86400,
                ttl,
            )),
        )
    }

    fn add_zone(&mut self, zone: &str) -> Result<(), String> {
        let apex = key(&fqdn(zone)?);
        if !self.zones.contains_key(&apex) {
            let soa = LocalZones::soa(&apex, self.ttl);
            let ns = Record::from_rdata(
                soa.name.clone(),
                self.ttl,
                RData::NS(NS(
                    Name::from_ascii(format!("ns.{apex}.")).map_err(|e| e.to_string())?
                )),
            );
            self.insert(soa.clone());
            self.insert(ns);
            self.zones.insert(apex, soa);
        }
        Ok(())
    }

    fn insert(&mut self, record: Record) {
        let owner = key(&record.name);
        let entry = self
            .records
            .entry((owner.clone(), record.record_type()))
            .or_default();
        if !entry.contains(&record) {
            entry.push(record);
        }
        self.names.insert(owner);
    }

    /// An address record, and its PTR.
    fn insert_address(&mut self, name: Name, ip: IpAddr) {
        let ttl = self.ttl;
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.insert(Record::from_rdata(name.clone(), ttl, data));
        self.insert(Record::from_rdata(
            Name::from(ip),
            ttl,
            RData::PTR(PTR(name)),
        ));
    }

    /// Fills in the names between owners and their zone apex.
    fn finish(&mut self) {
        let owners: Vec<String> = self.names.iter().cloned().collect();
        for owner in owners {
            let Some(zone) = self.zone_of(&owner).map(str::to_string) else {
                continue;
            };
            let mut name = owner.as_str();
            while let Some((_, parent)) = name.split_once('.') {
                if parent.len() < zone.len() {
                    break;
                }
                self.names.insert(parent.to_string());
                name = parent;
            }
        }
    }

    /// The longest local or private reverse zone containing `name`.
    fn zone_of(&self, name: &str) -> Option<&str> {
        let mut suffix = name;
        loop {
            if let Some((apex, _)) = self.zones.get_key_value(suffix) {
                return Some(apex);
            }
            suffix = suffix.split_once('.')?.1;
        }
    }

    /// Answers `name` (lowercase, no final dot) and `qtype` from local data.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> LocalAnswer {
        if self.is_empty() {
            return LocalAnswer::NotLocal;
        }
        let mut answers = Vec::new();
        let mut owner = name.to_string();
        // Follow local CNAMEs (a few, against loops).
        for _ in 0..8 {
            if let Some(found) = self.records.get(&(owner.clone(), qtype)) {
                answers.extend(found.iter().cloned());
                return self.positive(answers);
            }
            if qtype == RecordType::CNAME {
                break;
            }
            match self.records.get(&(owner.clone(), RecordType::CNAME)) {
                Some(cname) => {
                    answers.push(cname[0].clone());
                    let RData::CNAME(target) = &cname[0].data else {
                        break;
                    };
                    owner = key(&target.0);
                }
                None => break,
            }
        }
        if !answers.is_empty() {
            // A CNAME whose target is not ours: the client asks on.
            return self.positive(answers);
        }
        let zone = self.zone_of(name);
        if self.names.contains(name) {
            return LocalAnswer::Answer {
                rcode: ResponseCode::NoError,
                answers,
                authority: zone
                    .map(|z| vec![self.zones[z].clone()])
                    .unwrap_or_default(),
            };
        }
        match zone {
            Some(zone) => LocalAnswer::Answer {
                rcode: ResponseCode::NXDomain,
                answers,
                authority: vec![self.zones[zone].clone()],
            },
            None => LocalAnswer::NotLocal,
        }
    }

    fn positive(&self, answers: Vec<Record>) -> LocalAnswer {
        LocalAnswer::Answer {
            rcode: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
        }
    }

    /// Whether `name` lies in a private reverse zone (see [`PRIVATE_REVERSE_ZONES`]).
    pub fn is_private_reverse(name: &str) -> bool {
        private_reverse_zone(name).is_some()
    }

    /// NXDOMAIN for a private reverse name nobody here knows.
    pub fn private_reverse_nxdomain(&self, name: &str) -> LocalAnswer {
        let zone = private_reverse_zone(name).expect("checked with is_private_reverse");
        LocalAnswer::Answer {
            rcode: ResponseCode::NXDomain,
            answers: Vec::new(),
            authority: vec![LocalZones::soa(zone, self.ttl)],
        }
    }
}

/// The private reverse zone `name` is in or under. Asked for every
/// forwarded query, so no allocation, and one comparison for most names.
fn private_reverse_zone(name: &str) -> Option<&'static str> {
    if !name.ends_with(".arpa") {
        return None;
    }
    PRIVATE_REVERSE_ZONES.iter().copied().find(|zone| {
        name.strip_suffix(zone)
            .is_some_and(|above| above.is_empty() || above.ends_with('.'))
    })
}

/// The answer message for a local result, without OPT (added per client).
pub fn message(
    id: u16,
    question: &hickory_proto::op::Query,
    rd: bool,
    answer: LocalAnswer,
) -> Option<Vec<u8>> {
    let LocalAnswer::Answer {
        rcode,
        answers,
        authority,
    } = answer
    else {
        return None;
    };
    let mut m = Message::new(id, MessageType::Response, OpCode::Query);
    m.metadata.authoritative = true;
    m.metadata.recursion_desired = rd;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.queries.push(question.clone());
    m.answers = answers;
    m.authorities = authority;
    m.to_vec().ok()
}

/// Loads `[local]`: zones, records and hosts files. Problems are reported as
/// `path:line: why` and the rest still loads.
pub fn load(loaded: &Loaded) -> (LocalZones, Vec<Problem>) {
    let config = &loaded.config.local;
    let mut zones = LocalZones::empty();
    zones.ttl = config.ttl;
    let mut problems = Vec::new();
    let config_problem = |message: String| Problem {
        path: loaded.path.clone(),
        line: 0,
        column: None,
        message: format!("local: {message}"),
    };
    for zone in &config.zones {
        if let Err(e) = zones.add_zone(zone) {
            problems.push(config_problem(e));
        }
    }
    for record in &config.records {
        if let Err(e) = add_record(&mut zones, record) {
            problems.push(config_problem(format!(
                "{} {}: {e}",
                record.name, record.rtype
            )));
        }
    }
    for pattern in &config.hosts {
        let path = loaded.resolve(pattern);
        match std::fs::read_to_string(&path) {
            Ok(text) => problems.extend(add_hosts(&mut zones, &path, &text)),
            Err(e) => problems.push(Problem {
                path,
                line: 0,
                column: None,
                message: format!("cannot read this hosts file: {e}"),
            }),
        }
    }
    zones.finish();
    (zones, problems)
}

fn add_record(zones: &mut LocalZones, record: &LocalRecord) -> Result<(), String> {
    let name = fqdn(&record.name)?;
    let ttl = record.ttl.unwrap_or(zones.ttl);
    let value = record.value.trim();
    let rtype = record.rtype.to_ascii_uppercase();
    let data = match rtype.as_str() {
        "A" | "AAAA" => {
            let ip: IpAddr = value
                .parse()
                .map_err(|_| format!("`{value}` is not an IP address"))?;
            match (rtype.as_str(), ip) {
                ("A", IpAddr::V4(_)) | ("AAAA", IpAddr::V6(_)) => {}
                _ => return Err(format!("`{value}` is not an address for {rtype}")),
            }
            zones.insert_address(name, ip);
            return Ok(());
        }
        "CNAME" => RData::CNAME(CNAME(fqdn(value)?)),
        "TXT" => RData::TXT(TXT::new(vec![value.to_string()])),
        "MX" => {
            let (pref, host) = value
                .split_once(char::is_whitespace)
                .ok_or("write MX values as \"10 mail.home.lan\"")?;
            let pref = pref
                .parse()
                .map_err(|_| format!("`{pref}` is not a preference"))?;
            RData::MX(MX::new(pref, fqdn(host)?))
        }
        "SRV" => {
            let parts: Vec<&str> = value.split_whitespace().collect();
            let [priority, weight, port, target] = parts[..] else {
                return Err("write SRV values as \"priority weight port target\"".into());
            };
            let number = |s: &str| u16::from_str(s).map_err(|_| format!("`{s}` is not a number"));
            RData::SRV(SRV::new(
                number(priority)?,
                number(weight)?,
                number(port)?,
                fqdn(target)?,
            ))
        }
        other => {
            return Err(format!(
                "type `{other}` is not supported: A, AAAA, CNAME, TXT, SRV, MX"
            ));
        }
    };
    zones.insert(Record::from_rdata(name, ttl, data));
    Ok(())
}

/// `/etc/hosts` lines: an address and the names it has.
fn add_hosts(zones: &mut LocalZones, path: &Path, text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut fields = line.split_whitespace();
        let Some(address) = fields.next() else {
            continue;
        };
        let problem = |message: String| Problem {
            path: PathBuf::from(path),
            line: i + 1,
            column: None,
            message,
        };
        let Ok(ip) = address.parse::<IpAddr>() else {
            problems.push(problem(format!("`{address}` is not an IP address")));
            continue;
        };
        for host in fields {
            match fqdn(host) {
                Ok(name) => zones.insert_address(name, ip),
                Err(e) => problems.push(problem(e)),
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zones() -> LocalZones {
        let mut z = LocalZones::empty();
        z.add_zone("home.lan").unwrap();
        z.insert_address(
            fqdn("nas.home.lan").unwrap(),
            "192.168.1.10".parse().unwrap(),
        );
        z.insert(Record::from_rdata(
            fqdn("files.home.lan").unwrap(),
            300,
            RData::CNAME(CNAME(fqdn("nas.home.lan").unwrap())),
        ));
        z.insert_address(
            fqdn("printer.office.home.lan").unwrap(),
            "192.168.1.20".parse().unwrap(),
        );
        add_hosts(
            &mut z,
            Path::new("hosts"),
            "192.168.1.30 tv tv.home.lan # living room\n",
        );
        z.finish();
        z
    }

    fn rcode_and_count(a: LocalAnswer) -> (ResponseCode, usize, usize) {
        match a {
            LocalAnswer::Answer {
                rcode,
                answers,
                authority,
            } => (rcode, answers.len(), authority.len()),
            LocalAnswer::NotLocal => panic!("not local"),
        }
    }

    #[test]
    fn answers_nodata_nxdomain_and_cname() {
        let z = zones();
        assert_eq!(
            rcode_and_count(z.lookup("nas.home.lan", RecordType::A)),
            (ResponseCode::NoError, 1, 0)
        );
        assert_eq!(
            rcode_and_count(z.lookup("nas.home.lan", RecordType::AAAA)),
            (ResponseCode::NoError, 0, 1)
        );
        assert_eq!(
            rcode_and_count(z.lookup("nope.home.lan", RecordType::A)),
            (ResponseCode::NXDomain, 0, 1)
        );
        assert_eq!(
            rcode_and_count(z.lookup("files.home.lan", RecordType::A)),
            (ResponseCode::NoError, 2, 0)
        );
        // Empty non-terminal: NODATA, not NXDOMAIN.
        assert_eq!(
            rcode_and_count(z.lookup("office.home.lan", RecordType::A)),
            (ResponseCode::NoError, 0, 1)
        );
        assert_eq!(
            rcode_and_count(z.lookup("home.lan", RecordType::SOA)),
            (ResponseCode::NoError, 1, 0)
        );
        assert_eq!(
            rcode_and_count(z.lookup("tv", RecordType::A)),
            (ResponseCode::NoError, 1, 0)
        );
        assert_eq!(
            z.lookup("example.com", RecordType::A),
            LocalAnswer::NotLocal
        );
    }

    #[test]
    fn ptr_records_are_made_for_every_address() {
        let z = zones();
        let LocalAnswer::Answer { answers, .. } =
            z.lookup("10.1.168.192.in-addr.arpa", RecordType::PTR)
        else {
            panic!("PTR")
        };
        assert_eq!(answers[0].data.to_string(), "nas.home.lan.");
        assert!(LocalZones::is_private_reverse("99.1.168.192.in-addr.arpa"));
        assert!(!LocalZones::is_private_reverse("8.8.8.8.in-addr.arpa"));
        assert!(LocalZones::is_private_reverse("10.in-addr.arpa"));
        assert!(!LocalZones::is_private_reverse("1.110.in-addr.arpa"));
        assert!(!LocalZones::is_private_reverse("example.com"));
        assert_eq!(
            rcode_and_count(z.private_reverse_nxdomain("99.1.168.192.in-addr.arpa")),
            (ResponseCode::NXDomain, 0, 1)
        );
    }
}
