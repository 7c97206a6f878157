//! The upstream answer path: bytes an upstream (or anyone spoofing one)
//! sends back, through `WireAnswer::from_upstream` (with the hickory
//! re-encoding fallback of `upstream::parse_answer`), `WireAnswer::write`,
//! answer inspection and `wire::read_name`. These bytes come from the
//! network: they must never panic.
//!
//! Input layout: byte 0 chooses the query and the knobs, the rest is the
//! upstream's answer.
//!
//! * bits 0-2: the query. 0-6 pick one of the fixed queries below; 7 makes
//!   the query from the answer's own question (header ID, then the
//!   question bytes up to the end of the first uncompressed name + 4), so
//!   mutations of the name still reach the full answer path.
//! * bit 3: (derived query only) add an OPT record, bit 4 its DO bit.
//! * bits 5-6: the TTL clamps (see `TTLS`).
//! * bit 7: serve the answer aged by one hour, as from the cache.
//!
//! Checked on every written answer: at least a header, the query's ID,
//! exactly the records its header announces (`Layout::scan`, nothing
//! after them), readable by hickory whenever the upstream's answer was, and
//! no larger than the limit it was written for.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sinkd::blocking::Policy;
use sinkd::config::Loaded;
use sinkd::wire::{Layout, Query, TtlPolicy, WireAnswer, read_name};

/// Real queries as clients send them.
const QUERIES: [&[u8]; 7] = [
    // A www.example.com, RD, no EDNS
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01",
    // AAAA www.example.com, EDNS 1232 with DO
    b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x03com\x00\x00\x1c\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00",
    // HTTPS example.com, EDNS 4096, AD
    b"\x00\x01\x01\x20\x00\x01\x00\x00\x00\x00\x00\x01\x07example\x03com\x00\x00\x41\x00\x01\x00\x00\x29\x10\x00\x00\x00\x00\x00\x00\x00",
    // PTR 10.1.168.192.in-addr.arpa
    b"\x77\x77\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x0210\x011\x03168\x03192\x07in-addr\x04arpa\x00\x00\x0c\x00\x01",
    // A with 0x20 mixed case, CD set, EDNS 512
    b"\x55\xaa\x01\x10\x00\x01\x00\x00\x00\x00\x00\x01\x03wWw\x07ExAmPlE\x03CoM\x00\x00\x01\x00\x01\x00\x00\x29\x02\x00\x00\x00\x00\x00\x00\x00",
    // MX example.com, no RD
    b"\x00\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x0f\x00\x01",
    // A for a name on the repository's blocklists (CNAME cloaking target)
    b"\x43\x21\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04data\x04mistat\x06xiaomi\x03com\x00\x00\x01\x00\x01",
];

const TTLS: [TtlPolicy; 4] = [
    TtlPolicy {
        min: 0,
        max: 86_400,
    },
    TtlPolicy {
        min: 300,
        max: 3600,
    },
    TtlPolicy {
        min: 0,
        max: u32::MAX,
    },
    TtlPolicy { min: 60, max: 60 },
];

/// The repository's lists, for answer inspection (CNAME targets, answer IPs).
fn policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../blocklists");
        let text = format!(
            "[blocking]\nlists = [\"{repo}/xiaomi-*.txt\"]\nallow = [\"{repo}/allow/*.txt\"]\nanswer_ips = [\"{repo}/xiaomi.cidr\"]\n"
        );
        let loaded = Loaded {
            config: sinkd::config::parse(&text).expect("fuzz config parses"),
            path: PathBuf::from(repo).join("config.toml"),
        };
        sinkd::blocking::load(&loaded).policy
    })
}

/// A query asking the answer's own question (see the module docs).
fn derived_query(answer: &[u8], edns: bool, dnssec_ok: bool) -> Option<Vec<u8>> {
    let mut pos = 12;
    loop {
        let len = *answer.get(pos)? as usize;
        if len == 0 || len > 63 {
            break;
        }
        pos += 1 + len;
    }
    let end = pos + 1 + 4;
    let question = answer.get(12..end)?;
    let mut q = vec![answer[0], answer[1], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(question);
    if edns {
        q[11] = 1;
        let flags = if dnssec_ok { 0x80 } else { 0 };
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, flags, 0, 0, 0]);
    }
    Some(q)
}

/// `upstream::parse_answer`: the in-place path, else hickory re-encodes the
/// message without its OPT and the in-place path runs on that.
fn parse_answer(bytes: &[u8], packet: &[u8], query: &Query, ttl: TtlPolicy) -> Option<WireAnswer> {
    match WireAnswer::from_upstream(bytes.to_vec(), packet, query, ttl) {
        Some(answer) => Some(answer),
        None => {
            let mut message = hickory_proto::op::Message::from_vec(bytes).ok()?;
            message.edns = None;
            WireAnswer::from_upstream(message.to_vec().ok()?, packet, query, ttl)
        }
    }
}

/// The sections `out`'s header announces, and nothing after them.
fn well_formed(out: &[u8]) -> bool {
    Layout::scan(out).is_some_and(|layout| {
        let end = layout.records().map(|r| r.end).max();
        end.unwrap_or(layout.question_end) == out.len()
    })
}

fn check_written(query: &Query, answer: &[u8], out: &[u8], limit: usize) {
    assert!(out.len() >= 12, "answer shorter than a header: {out:?}");
    assert_eq!(
        u16::from_be_bytes([out[0], out[1]]),
        query.id,
        "answer with another ID"
    );
    assert!(
        well_formed(out),
        "written answer whose sections do not parse: {out:?}"
    );
    // What hickory (so a client) could read from the upstream, it must be
    // able to read from sinkd's answer too.
    if let Ok(upstream) = hickory_proto::op::Message::from_vec(answer) {
        if let Err(e) = hickory_proto::op::Message::from_vec(out) {
            panic!(
                "hickory reads the upstream answer ({} records) but not ours: {e}: {out:?}",
                upstream.answers.len() + upstream.authorities.len() + upstream.additionals.len()
            );
        }
    }
    assert!(
        out.len() <= limit,
        "answer of {} bytes over its limit of {limit}",
        out.len()
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, answer)) = data.split_first() else {
        return;
    };
    // Nothing larger arrives over UDP, TCP (16-bit length) or DoH.
    if answer.len() > u16::MAX as usize {
        return;
    }
    let packet = match knobs & 7 {
        7 => match derived_query(answer, knobs & 8 != 0, knobs & 16 != 0) {
            Some(q) => q,
            None => return,
        },
        i => QUERIES[i as usize].to_vec(),
    };
    let Ok(query) = Query::parse(&packet) else {
        return;
    };
    let ttl = TTLS[((knobs >> 5) & 3) as usize];
    let age = if knobs & 0x80 != 0 { 3600 } else { 0 };

    // Reading names anywhere in the answer (CNAME targets, query log).
    let mut name = String::new();
    for pos in 0..answer.len().min(300) {
        let _ = read_name(answer, pos, &mut name);
    }
    let _ = Layout::scan(answer).map(|l| l.records().count());

    let Some(wire) = parse_answer(answer, &packet, &query, ttl) else {
        return;
    };
    let _ = (wire.cache_ttl, wire.rcode, wire.is_authoritative());
    let _ = (wire.bytes().len(), wire.question_range());
    for target in wire.cname_targets() {
        let _ = sinkd::policy::normalize_name(target);
    }
    let _ = wire.addresses().len();
    for rebinding in [false, true] {
        let _ = policy().inspect(&wire, query.qtype, rebinding);
    }
    let mut out = Vec::new();
    for limit in [query.udp_limit(), 512, u16::MAX as usize] {
        wire.write(&packet, &query, age, limit, &mut out);
        check_written(&query, answer, &out, limit);
    }
});
