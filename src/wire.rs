//! DNS messages as bytes.
//!
//! The hot path (cache hits, refusals, errors) never builds a `hickory_proto`
//! `Message`: it reads the few header and question fields it needs straight
//! from the packet and answers by copying stored bytes. hickory-proto is used
//! where a whole message must be understood (talking to upstreams, tests).

use smallvec::SmallVec;
use std::net::IpAddr;
use std::ops::Range;

pub const HEADER_LEN: usize = 12;
pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_IXFR: u16 = 251;
/// Largest UDP payload we advertise and the most we send over UDP: the DNS
/// Flag Day 2020 value, which avoids IP fragmentation on every common path.
pub const OUR_UDP_PAYLOAD: u16 = 1232;
/// Largest UDP answer we send even when a client advertises more.
pub const MAX_UDP_ANSWER: usize = 4096;
/// Without EDNS a UDP answer may not exceed 512 bytes (RFC 1035).
pub const CLASSIC_UDP_LIMIT: usize = 512;

/// Response codes we produce ourselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
    /// Extended rcode 16 (RFC 6891): only expressible with an OPT record.
    BadVers = 16,
}

/// The mnemonic of an rcode (RFC 1035, 2136, 6891), if it has one.
pub fn rcode_name(code: u16) -> Option<&'static str> {
    Some(match code {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        16 => "BADVERS",
        _ => return None,
    })
}

impl Rcode {
    pub fn name(code: u16) -> &'static str {
        rcode_name(code).unwrap_or("RCODE?")
    }
}

/// The EDNS(0) parameters a client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    pub udp_payload: u16,
    pub dnssec_ok: bool,
    pub version: u8,
}

/// A query whose header and question have been checked. Offsets index into
/// the packet it was parsed from, so the struct is `Copy` and can travel to
/// another task beside an owned copy of the packet.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    pub id: u16,
    /// Header bytes 2 and 3 (QR, opcode, AA, TC, RD / RA, Z, AD, CD, rcode).
    pub flags: u16,
    /// The question name occupies `HEADER_LEN..name_end`.
    pub name_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    /// End of the question section (name + type + class).
    pub question_end: usize,
    pub edns: Option<Edns>,
}

/// Why a packet is not a query we can answer normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Too short to have a header, or it is a response: answering it could
    /// start a loop or a reflection, so it is dropped silently.
    Drop,
    /// The header is good but the rest is not: answer with this rcode.
    Answer(Rcode),
}

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;
const FLAG_AD: u16 = 0x0020;
const FLAG_CD: u16 = 0x0010;

impl Query {
    pub fn parse(packet: &[u8]) -> Result<Query, Reject> {
        if packet.len() < HEADER_LEN {
            return Err(Reject::Drop);
        }
        let flags = u16::from_be_bytes([packet[2], packet[3]]);
        if flags & FLAG_QR != 0 {
            return Err(Reject::Drop);
        }
        let opcode = (flags >> 11) & 0xF;
        if opcode != 0 {
            return Err(Reject::Answer(Rcode::NotImp));
        }
        let count = |i: usize| u16::from_be_bytes([packet[4 + 2 * i], packet[5 + 2 * i]]);
        if count(0) != 1 {
            return Err(Reject::Answer(Rcode::FormErr));
        }
        let formerr = Reject::Answer(Rcode::FormErr);
        // Question names in queries are never compressed in practice; a
        // pointer here is refused rather than followed.
        let name_end = uncompressed_name_end(packet, HEADER_LEN).ok_or(formerr)?;
        let question_end = name_end + 4;
        if packet.len() < question_end {
            return Err(formerr);
        }
        let qtype = u16::from_be_bytes([packet[name_end], packet[name_end + 1]]);
        let qclass = u16::from_be_bytes([packet[name_end + 2], packet[name_end + 3]]);

        let mut pos = question_end;
        for _ in 0..(count(1) as usize + count(2) as usize) {
            pos = skip_record(packet, pos).ok_or(formerr)?.end;
        }
        let mut edns = None;
        for _ in 0..count(3) {
            let rec = skip_record(packet, pos).ok_or(formerr)?;
            if rec.rtype == TYPE_OPT {
                if edns.is_some() || packet[pos] != 0 {
                    // RFC 6891 6.1.1: more than one OPT, or one not owned by the root.
                    return Err(formerr);
                }
                edns = Some(Edns {
                    udp_payload: rec.class,
                    version: packet[rec.ttl_at + 1],
                    dnssec_ok: packet[rec.ttl_at + 2] & 0x80 != 0,
                });
            }
            pos = rec.end;
        }
        Ok(Query {
            id: u16::from_be_bytes([packet[0], packet[1]]),
            flags,
            name_end,
            qtype,
            qclass,
            question_end,
            edns,
        })
    }

    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    pub fn checking_disabled(&self) -> bool {
        self.flags & FLAG_CD != 0
    }
    pub fn authentic_data(&self) -> bool {
        self.flags & FLAG_AD != 0
    }
    pub fn dnssec_ok(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The most a UDP answer to this query may weigh.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.udp_payload as usize).clamp(CLASSIC_UDP_LIMIT, MAX_UDP_ANSWER),
            None => CLASSIC_UDP_LIMIT,
        }
    }

    /// The question name in presentation form, lowercase, without the final dot
    /// (`"."` for the root). Used for logs and policy.
    pub fn name(&self, packet: &[u8]) -> String {
        let mut out = String::new();
        self.name_into(packet, &mut out);
        out
    }

    /// [`Query::name`], written over `out` (whose buffer is reused).
    pub fn name_into(&self, packet: &[u8], out: &mut String) {
        out.clear();
        out.reserve(self.name_end - HEADER_LEN);
        // The question was checked when parsed, so reading it cannot fail.
        read_name(packet, HEADER_LEN, out);
        if out.is_empty() {
            out.push('.');
        }
    }

    /// The question as hickory-proto's type, for the paths that build whole
    /// messages (upstream requests, local answers).
    pub fn question(&self, packet: &[u8]) -> Option<hickory_proto::op::Query> {
        use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
        let mut decoder = BinDecoder::new(&packet[HEADER_LEN..self.question_end]);
        hickory_proto::op::Query::read(&mut decoder).ok()
    }

    /// Writes the cache key for this query: the lowercased question name in
    /// wire form, type, class, and the DO and CD bits, which change what an
    /// upstream returns.
    pub fn cache_key(&self, packet: &[u8], key: &mut Vec<u8>) {
        key.clear();
        key.extend_from_slice(&packet[HEADER_LEN..self.question_end]);
        // Label lengths (at most 63) are below b'A', so they stay as they are.
        key[..self.name_end - HEADER_LEN].make_ascii_lowercase();
        key.push(u8::from(self.dnssec_ok()) | (u8::from(self.checking_disabled()) << 1));
    }
}

/// Where a resource record sits in a message.
#[derive(Clone, Copy, Debug)]
pub struct RecordAt {
    pub start: usize,
    pub rtype: u16,
    pub class: u16,
    pub ttl_at: usize,
    pub rdata: (usize, usize),
    pub end: usize,
}

/// End of an uncompressed name starting at `pos`, checking label and name
/// lengths.
fn uncompressed_name_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *buf.get(pos)? as usize;
        if len == 0 {
            return Some(pos + 1);
        }
        if len > 63 {
            return None;
        }
        pos += 1 + len;
        if pos - start > 254 {
            return None;
        }
    }
}

/// Skips a possibly compressed name; compression pointers are not followed
/// because only the length of the name in this place matters.
fn skip_name(buf: &[u8], mut pos: usize) -> Option<usize> {
    let start = pos;
    loop {
        let len = *buf.get(pos)?;
        match len {
            0 => return Some(pos + 1),
            1..=63 => pos += 1 + len as usize,
            0xC0..=0xFF => {
                buf.get(pos + 1)?;
                return Some(pos + 2);
            }
            _ => return None,
        }
        if pos - start > 255 {
            return None;
        }
    }
}

fn skip_record(buf: &[u8], pos: usize) -> Option<RecordAt> {
    let fixed = skip_name(buf, pos)?;
    let head = buf.get(fixed..fixed + 10)?;
    let rdlen = u16::from_be_bytes([head[8], head[9]]) as usize;
    let rdata = (fixed + 10, fixed + 10 + rdlen);
    if buf.len() < rdata.1 {
        return None;
    }
    Some(RecordAt {
        start: pos,
        rtype: u16::from_be_bytes([head[0], head[1]]),
        class: u16::from_be_bytes([head[2], head[3]]),
        ttl_at: fixed + 4,
        rdata,
        end: rdata.1,
    })
}

/// Reads the possibly compressed name at `pos` as lowercase text without the
/// final dot (`""` for the root). Pointers must point backwards, which also
/// rules out loops.
pub fn read_name(buf: &[u8], pos: usize, out: &mut String) -> Option<()> {
    // Built as bytes: label by label through `String` was a tenth of a
    // cache hit's instructions, and checking the bytes as UTF-8 afterwards
    // another 2%.
    // SAFETY: `read_name_bytes` only writes ASCII (`NAME_BYTE`'s values
    // and `\DDD` escapes), which is UTF-8; `clear` leaves nothing else.
    let text = unsafe { out.as_mut_vec() };
    text.clear();
    read_name_bytes(buf, pos, text)
}

fn read_name_bytes(buf: &[u8], mut pos: usize, text: &mut Vec<u8>) -> Option<()> {
    let mut limit = pos;
    loop {
        let len = *buf.get(pos)? as usize;
        match len {
            0 => return Some(()),
            1..=63 => {
                let label = buf.get(pos + 1..pos + 1 + len)?;
                if !text.is_empty() {
                    text.push(b'.');
                }
                let start = text.len();
                // One table lookup a byte lowercases and checks it at once:
                // copying, then checking, then lowercasing each label was a
                // sixth of a cache hit's instructions (every log line has
                // the name).
                let mut plain = true;
                text.extend(label.iter().map(|&b| {
                    let folded = NAME_BYTE[b as usize];
                    plain &= folded != 0;
                    folded
                }));
                if !plain {
                    text.truncate(start);
                    for &b in label {
                        match NAME_BYTE[b as usize] {
                            0 => text.extend_from_slice(
                                format!("\\{:03}", b.to_ascii_lowercase()).as_bytes(),
                            ),
                            c => text.push(c),
                        }
                    }
                }
                if text.len() > 1024 {
                    return None;
                }
                pos += 1 + len;
            }
            0xC0..=0xFF => {
                let target = ((len & 0x3F) << 8) | *buf.get(pos + 1)? as usize;
                if target >= limit {
                    return None;
                }
                limit = target;
                pos = target;
            }
            _ => return None,
        }
    }
}

/// For each byte of a label, its lowercase form if it keeps it in a name's
/// text form, or 0 if it is written as `\DDD` (lowercased first).
const NAME_BYTE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = (b as u8).to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'*') {
            table[b] = c;
        }
        b += 1;
    }
    table
};

/// What a blocked query is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockedAnswer {
    pub rcode: Rcode,
    /// The address for the answer section, when there is one for this type.
    pub address: Option<IpAddr>,
    /// Whether to add an SOA so the client caches the negative answer.
    pub soa: bool,
    pub ttl: u32,
}

/// Writes a synthesized answer for a blocked query: the question, an address
/// record or an SOA (owned by the question name, MINIMUM = TTL, so clients
/// cache it for `ttl`), and an Extended DNS Error naming the rule.
pub fn blocked_answer(
    packet: &[u8],
    query: &Query,
    blocked: &BlockedAnswer,
    ede: &Ede,
    out: &mut Vec<u8>,
) {
    error_answer_with(packet, query, blocked.rcode, None, out);
    out.truncate(query.question_end);
    out[7] = 0; // ANCOUNT, NSCOUNT and ARCOUNT are set below
    out[9] = 0;
    out[11] = 0;
    let ttl = blocked.ttl.to_be_bytes();
    let owner = [0xC0, HEADER_LEN as u8]; // pointer to the question name
    if let Some(address) = blocked.address {
        let (rtype, rdata): (u16, &[u8]) = match &address {
            IpAddr::V4(v4) => (TYPE_A, &v4.octets()[..]),
            IpAddr::V6(v6) => (TYPE_AAAA, &v6.octets()[..]),
        };
        out.extend_from_slice(&owner);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
        set_count(out, 1, 1);
    } else if blocked.soa {
        const MNAME: &[u8] = b"\x05sinkd\x07invalid\x00";
        const RNAME: &[u8] = b"\x07blocked\x05sinkd\x07invalid\x00";
        out.extend_from_slice(&owner);
        out.extend_from_slice(&TYPE_SOA.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl);
        out.extend_from_slice(&((MNAME.len() + RNAME.len() + 20) as u16).to_be_bytes());
        out.extend_from_slice(MNAME);
        out.extend_from_slice(RNAME);
        for value in [1u32, 3600, 600, 86400, blocked.ttl] {
            out.extend_from_slice(&value.to_be_bytes());
        }
        set_count(out, 2, 1);
    }
    if query.edns.is_some() {
        push_opt(out, query, 0, Some(ede));
    }
}

/// The record layout of a whole message (typically an upstream's answer).
/// A few records per section are kept inline: taking apart a typical answer
/// (an address or two, an OPT) then allocates nothing.
#[derive(Debug, Default)]
pub struct Layout {
    pub question_count: u16,
    pub question_end: usize,
    pub answers: Records,
    pub authorities: Records,
    pub additionals: Records,
}

pub type Records = SmallVec<[RecordAt; 4]>;

impl Layout {
    pub fn scan(buf: &[u8]) -> Option<Layout> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let count = |i: usize| u16::from_be_bytes([buf[4 + 2 * i], buf[5 + 2 * i]]) as usize;
        let mut pos = HEADER_LEN;
        for _ in 0..count(0) {
            pos = skip_name(buf, pos)? + 4;
        }
        if pos > buf.len() {
            return None;
        }
        let mut layout = Layout {
            question_count: count(0) as u16,
            question_end: pos,
            ..Layout::default()
        };
        for (section, n) in [count(1), count(2), count(3)].into_iter().enumerate() {
            for _ in 0..n {
                let rec = skip_record(buf, pos)?;
                pos = rec.end;
                match section {
                    0 => layout.answers.push(rec),
                    1 => layout.authorities.push(rec),
                    _ => layout.additionals.push(rec),
                }
            }
        }
        Some(layout)
    }

    pub fn records(&self) -> impl Iterator<Item = &RecordAt> {
        self.answers
            .iter()
            .chain(&self.authorities)
            .chain(&self.additionals)
    }
}

pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    buf[at..at + 4].copy_from_slice(&value.to_be_bytes());
}

fn set_count(buf: &mut [u8], section: usize, value: u16) {
    buf[4 + 2 * section..6 + 2 * section].copy_from_slice(&value.to_be_bytes());
}

fn count(buf: &[u8], section: usize) -> u16 {
    u16::from_be_bytes([buf[4 + 2 * section], buf[5 + 2 * section]])
}

/// Appends our OPT record (RFC 6891) and counts it in ARCOUNT. `ext_rcode`
/// carries the upper eight bits of a 12-bit rcode; `ede` adds an Extended
/// DNS Error (RFC 8914).
fn push_opt(out: &mut Vec<u8>, query: &Query, ext_rcode: u8, ede: Option<&Ede>) {
    let dnssec_ok = if query.dnssec_ok() { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, 41]); // root owner, TYPE OPT
    out.extend_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[ext_rcode, 0, dnssec_ok, 0]);
    match ede {
        None => out.extend_from_slice(&[0, 0]),
        Some(ede) => {
            // Keep the whole answer well inside 512 bytes whatever the rule says.
            let text = truncate_utf8(&ede.text, 200).as_bytes();
            let option_len = 2 + text.len() as u16;
            out.extend_from_slice(&(4 + option_len).to_be_bytes());
            out.extend_from_slice(&EDE_OPTION.to_be_bytes());
            out.extend_from_slice(&option_len.to_be_bytes());
            out.extend_from_slice(&ede.code.to_be_bytes());
            out.extend_from_slice(text);
        }
    }
    let arcount = count(out, 3) + 1;
    set_count(out, 3, arcount);
}

fn truncate_utf8(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// EDNS option code of Extended DNS Errors (RFC 8914).
const EDE_OPTION: u16 = 15;

/// An Extended DNS Error: why an answer is what it is, for the person looking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ede {
    pub code: u16,
    pub text: String,
}

impl Ede {
    /// RFC 8914 info-code 15: the name is on a blocklist of this resolver.
    pub const BLOCKED: u16 = 15;
}

/// An answer sinkd makes itself from the query alone: REFUSED, SERVFAIL,
/// NOTIMP, FORMERR… The question is echoed and our OPT added when the client
/// used EDNS.
pub fn error_answer(packet: &[u8], query: &Query, rcode: Rcode, out: &mut Vec<u8>) {
    error_answer_with(packet, query, rcode, None, out)
}

/// [`error_answer`] with an Extended DNS Error for clients that use EDNS.
pub fn error_answer_with(
    packet: &[u8],
    query: &Query,
    rcode: Rcode,
    ede: Option<&Ede>,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&packet[..query.question_end]);
    let flags = FLAG_QR | FLAG_RA | (query.flags & (FLAG_RD | FLAG_CD)) | (rcode as u16 & 0xF);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    for section in 1..4 {
        set_count(out, section, 0);
    }
    if query.edns.is_some() || rcode == Rcode::BadVers {
        push_opt(out, query, (rcode as u16 >> 4) as u8, ede);
    }
}

/// An answer to a packet whose header parsed but whose body did not: the
/// header alone, with the ID and RD echoed so the client can match it.
pub fn header_only_answer(packet: &[u8], rcode: Rcode, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&packet[..HEADER_LEN]);
    let flags = u16::from_be_bytes([packet[2], packet[3]]);
    let flags = FLAG_QR | FLAG_RA | (flags & (0x7800 | FLAG_RD)) | (rcode as u16 & 0xF);
    out[2..4].copy_from_slice(&flags.to_be_bytes());
    for section in 0..4 {
        set_count(out, section, 0);
    }
}

/// The query sinkd sends upstream for a client's: a fresh `id`, RD (sinkd
/// forwards), the client's CD and AD bits, its question as asked, and our
/// own OPT (payload [`OUR_UDP_PAYLOAD`], the client's DO bit). Client EDNS
/// options (client subnet, cookies) are not passed on.
pub fn upstream_query(packet: &[u8], query: &Query, id: u16, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    let flags = FLAG_RD | (query.flags & (FLAG_CD | FLAG_AD));
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
    out.extend_from_slice(&packet[HEADER_LEN..query.question_end]);
    let do_bit: u8 = if query.dnssec_ok() { 0x80 } else { 0 };
    out.extend_from_slice(&[0, 0, TYPE_OPT as u8]);
    out.extend_from_slice(&OUR_UDP_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0, do_bit, 0, 0, 0]);
}

/// Whether an upstream's answer repeats `question` (the question section
/// sinkd sent: name, type, class) as its one question; the name in any case.
pub fn repeats_question(answer: &[u8], question: &[u8]) -> bool {
    let Some(asked) = answer.get(HEADER_LEN..HEADER_LEN + question.len()) else {
        return false;
    };
    let name_len = question.len().saturating_sub(4);
    answer[4..6] == [0, 1]
        // Label lengths are at most 63, below 'A': comparing the whole name
        // without case cannot confuse a length with a letter.
        && asked[..name_len].eq_ignore_ascii_case(&question[..name_len])
        && asked[name_len..] == question[name_len..]
}

/// Most answers' size or less: an address or two, or a negative answer's SOA.
/// Longer ones (CNAME chains) are kept in an allocation of their own.
pub const INLINE_ANSWER: usize = 128;

/// A complete answer kept as wire bytes: header (ID zeroed), the question,
/// and every record except OPT, which is per client and added when sent.
/// Serving it is a copy plus a few patched bytes.
#[derive(Debug, Clone)]
pub struct WireAnswer {
    /// Inline up to [`INLINE_ANSWER`] bytes, so a cache hit finds them in
    /// the lines after its entry's header rather than behind one more
    /// pointer, a separate wait for memory.
    bytes: SmallVec<[u8; INLINE_ANSWER]>,
    ttl_offsets: SmallVec<[u16; 8]>,
    question_end: u16,
    /// The TTL this answer may be cached for (RFC 2308 for negative ones),
    /// after the configured clamps; `None` when it must not be cached.
    pub cache_ttl: Option<u32>,
    pub rcode: u16,
    cname_targets: Box<[Box<str>]>,
    addresses: SmallVec<[IpAddr; 2]>,
}

/// Clamps applied to TTLs of stored answers.
#[derive(Clone, Copy, Debug)]
pub struct TtlPolicy {
    pub min: u32,
    pub max: u32,
}

impl WireAnswer {
    /// Takes an upstream's answer to `query` apart. Returns `None` when the
    /// bytes are not a well-formed message.
    pub fn from_upstream(
        mut buf: Vec<u8>,
        packet: &[u8],
        query: &Query,
        ttl: TtlPolicy,
    ) -> Option<WireAnswer> {
        let layout = Layout::scan(&buf)?;
        let question = &packet[HEADER_LEN..query.question_end];
        let question_ok = layout.question_count == 1
            && layout.question_end == query.question_end
            && buf[HEADER_LEN..layout.question_end].eq_ignore_ascii_case(question);
        if !question_ok {
            // Answers that do not echo our question (some servers drop it on
            // errors) are reduced to their rcode.
            let rcode = u16::from_be_bytes([buf[2], buf[3]]) & 0xF;
            let mut out = Vec::with_capacity(query.question_end);
            error_answer(packet, query, Rcode::ServFail, &mut out);
            out[3] = (out[3] & 0xF0) | rcode as u8;
            // Without our OPT, which `write` adds per client, and its count.
            out.truncate(query.question_end);
            set_count(&mut out, 3, 0);
            return Some(WireAnswer {
                bytes: SmallVec::from_slice(&out),
                ttl_offsets: SmallVec::new(),
                question_end: query.question_end as u16,
                cache_ttl: None,
                rcode,
                cname_targets: Box::new([]),
                addresses: SmallVec::new(),
            });
        }

        // Bytes after the last record belong to no record: they would reach
        // the client as garbage.
        let end = layout
            .records()
            .map(|r| r.end)
            .max()
            .unwrap_or(layout.question_end);
        buf.truncate(end);
        // Drop the upstream's OPT. It is almost always the last record; if it
        // is not, the bytes after it may hold compression pointers to bytes
        // after it, so cutting it out is not safe and the answer is refused
        // (as is one with two OPTs, which RFC 6891 calls malformed).
        let Layout {
            answers,
            authorities,
            mut additionals,
            ..
        } = layout;
        if additionals.iter().filter(|r| r.rtype == TYPE_OPT).count() > 1 {
            return None;
        }
        if let Some(i) = additionals.iter().position(|r| r.rtype == TYPE_OPT) {
            if i != additionals.len() - 1 {
                return None;
            }
            let opt = additionals.remove(i);
            buf.truncate(opt.start);
            let arcount = count(&buf, 3) - 1;
            set_count(&mut buf, 3, arcount);
        }
        buf[0] = 0;
        buf[1] = 0;
        let rcode = u16::from_be_bytes([buf[2], buf[3]]) & 0xF;
        let truncated = u16::from_be_bytes([buf[2], buf[3]]) & FLAG_TC != 0;

        let records = || answers.iter().chain(&authorities).chain(&additionals);
        let negative_ttl = authorities
            .iter()
            .find(|r| r.rtype == TYPE_SOA && r.rdata.1 - r.rdata.0 >= 20)
            .map(|soa| read_u32(&buf, soa.ttl_at).min(read_u32(&buf, soa.rdata.1 - 4)));

        let cacheable = !truncated
            && match rcode {
                0 if !answers.is_empty() => true,
                0 | 3 => negative_ttl.is_some(),
                _ => false,
            };
        let mut lowest = u32::MAX;
        for rec in records() {
            let mut value = read_u32(&buf, rec.ttl_at);
            if answers.is_empty() && rec.rtype == TYPE_SOA {
                // RFC 2308 §5: a cached negative answer's SOA carries the negative TTL.
                value = negative_ttl.unwrap_or(value);
            }
            let value = value.clamp(ttl.min, ttl.max.max(ttl.min));
            write_u32(&mut buf, rec.ttl_at, value);
            lowest = lowest.min(value);
        }
        let cache_ttl = match (cacheable, lowest) {
            (false, _) | (true, 0) => None,
            (true, u32::MAX) => negative_ttl,
            (true, t) => Some(t),
        };
        let mut cname_targets = Vec::new();
        let mut addresses = SmallVec::new();
        for rec in &answers {
            let rdata = &buf[rec.rdata.0..rec.rdata.1];
            match rec.rtype {
                TYPE_A if rdata.len() == 4 => {
                    addresses.push(IpAddr::from(<[u8; 4]>::try_from(rdata).unwrap()))
                }
                TYPE_AAAA if rdata.len() == 16 => {
                    addresses.push(IpAddr::from(<[u8; 16]>::try_from(rdata).unwrap()))
                }
                TYPE_CNAME => {
                    let mut name = String::new();
                    read_name(&buf, rec.rdata.0, &mut name)?;
                    cname_targets.push(name.into());
                }
                _ => {}
            }
        }
        let ttl_offsets = records().map(|r| r.ttl_at as u16).collect();
        // Inline when short enough, else only as long as it is.
        let mut bytes = SmallVec::from_vec(buf);
        bytes.shrink_to_fit();
        Some(WireAnswer {
            ttl_offsets,
            bytes,
            question_end: query.question_end as u16,
            cache_ttl,
            rcode,
            cname_targets: cname_targets.into(),
            addresses,
        })
    }

    /// Writes this answer for `query` into `out`: its ID, question spelling and
    /// flags, TTLs aged by `age` seconds, our OPT if it used EDNS, and TC with
    /// no records if the result exceeds `limit` bytes.
    pub fn write(&self, packet: &[u8], query: &Query, age: u32, limit: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        out[..2].copy_from_slice(&query.id.to_be_bytes());
        // The stored question may be spelled in another case (0x20); echo the client's.
        let qend = self.question_end as usize;
        out[HEADER_LEN..qend].copy_from_slice(&packet[HEADER_LEN..qend]);
        let stored = u16::from_be_bytes([out[2], out[3]]);
        // RA whatever the upstream said: an authoritative upstream (a NAS,
        // the router's own zone) offers no recursion, but sinkd does.
        let flags = (stored & !(FLAG_RD | FLAG_CD)) | FLAG_RA | (query.flags & (FLAG_RD | FLAG_CD));
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        if age > 0 {
            for &at in self.ttl_offsets.iter() {
                let at = at as usize;
                let aged = read_u32(out, at).saturating_sub(age);
                write_u32(out, at, aged);
            }
        }
        let opt_len = if query.edns.is_some() { 11 } else { 0 };
        if out.len() + opt_len > limit {
            out.truncate(qend);
            out[2] |= (FLAG_TC >> 8) as u8;
            for section in 1..4 {
                set_count(out, section, 0);
            }
        }
        if query.edns.is_some() {
            push_opt(out, query, 0, None);
        }
    }

    /// CNAME targets in the answer section: what CNAME-cloaking inspection checks.
    pub fn cname_targets(&self) -> &[Box<str>] {
        &self.cname_targets
    }

    /// A and AAAA addresses in the answer section: what answer-IP inspection checks.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }

    pub fn is_authoritative(&self) -> bool {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]]) & FLAG_AA != 0
    }

    /// This answer as sinkd relays it from an upstream: sinkd is not the
    /// authority for the name, so without AA (as Unbound and dnsmasq relay).
    pub fn relayed(mut self) -> WireAnswer {
        self.bytes[2] &= !((FLAG_AA >> 8) as u8);
        self
    }

    /// The stored message with its OPT removed (tests and diagnostics).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn question_range(&self) -> Range<usize> {
        HEADER_LEN..self.question_end as usize
    }

    /// The question section: name, type, class.
    pub fn question(&self) -> &[u8] {
        &self.bytes[self.question_range()]
    }

    /// Lowercases the question's name, as [`Query::cache_key`] does. Not seen
    /// by clients: [`WireAnswer::write`] echoes each client's own spelling.
    pub fn lowercase_question(&mut self) {
        let name_end = self.question_end as usize - 4;
        self.bytes[HEADER_LEN..name_end].make_ascii_lowercase();
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_upstream_query_and_its_answer() {
        let mut message = hickory_proto::op::Message::query();
        message.metadata.checking_disabled = true;
        let name = hickory_proto::rr::Name::from_ascii("Mixed.Example.").unwrap();
        message.queries.push(hickory_proto::op::Query::query(
            name,
            hickory_proto::rr::RecordType::AAAA,
        ));
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(4096).set_dnssec_ok(true);
        message.edns = Some(edns);
        let packet = message.to_vec().unwrap();
        let query = Query::parse(&packet).unwrap();
        let mut sent = Vec::new();
        upstream_query(&packet, &query, 0xBEEF, &mut sent);
        let parsed = hickory_proto::op::Message::from_vec(&sent).unwrap();
        assert_eq!(parsed.metadata.id, 0xBEEF);
        assert!(parsed.metadata.recursion_desired && parsed.metadata.checking_disabled);
        assert_eq!(parsed.queries[0].name().to_ascii(), "Mixed.Example.");
        let edns = parsed.edns.as_ref().unwrap();
        assert_eq!(edns.max_payload(), OUR_UDP_PAYLOAD);
        assert!(edns.flags().dnssec_ok);

        let question = &sent[HEADER_LEN..query.question_end];
        let mut answer = sent.clone();
        answer[2] |= 0x80;
        assert!(repeats_question(&answer, question));
        answer[HEADER_LEN + 1..HEADER_LEN + 6].make_ascii_lowercase();
        assert!(repeats_question(&answer, question), "any case");
        let mut other_type = answer.clone();
        other_type[query.question_end - 3] = 1;
        assert!(!repeats_question(&other_type, question));
        let mut other_name = answer.clone();
        other_name[HEADER_LEN + 2] = b'a';
        assert!(!repeats_question(&other_name, question));
        assert!(!repeats_question(&answer[..20], question), "cut short");
        let mut two = answer;
        two[5] = 2;
        assert!(!repeats_question(&two, question));
    }
    use super::*;

    fn query_packet(name: &[&str], qtype: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&1u16.to_be_bytes());
        if let Some((size, dnssec_ok)) = edns {
            p[11] = 1;
            p.extend_from_slice(&[0, 0, 41]);
            p.extend_from_slice(&size.to_be_bytes());
            p.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
        }
        p
    }

    #[test]
    fn names_are_lowercase_text_with_odd_bytes_escaped() {
        let p = query_packet(&["Mi-Cloud_1", "A.B", "x y*"], 1, None);
        let q = Query::parse(&p).unwrap();
        assert_eq!(q.name(&p), "mi-cloud_1.a\\046b.x\\032y*");
        let root = query_packet(&[], 1, None);
        assert_eq!(Query::parse(&root).unwrap().name(&root), ".");
    }

    #[test]
    fn bytes_beyond_ascii_are_escaped_and_a_reused_buffer_keeps_nothing_of_its_last_name() {
        let mut p = query_packet(&["Caf---", "example"], 1, None);
        // "Café" in UTF-8, then a byte that is not UTF-8 at all.
        p[HEADER_LEN + 4..HEADER_LEN + 7].copy_from_slice(&[0xC3, 0xA9, 0xFF]);
        let q = Query::parse(&p).unwrap();
        let mut name = String::from("a-much-longer-name-left-over-from-an-earlier-query.example");
        q.name_into(&p, &mut name);
        assert_eq!(name, "caf\\195\\169\\255.example");
    }

    #[test]
    fn parses_a_plain_query() {
        let p = query_packet(&["WWW", "Example", "com"], 1, None);
        let q = Query::parse(&p).unwrap();
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.qtype, 1);
        assert!(q.recursion_desired());
        assert_eq!(q.name(&p), "www.example.com");
        assert_eq!(q.udp_limit(), 512);
        let mut key = Vec::new();
        q.cache_key(&p, &mut key);
        assert_eq!(&key[..4], b"\x03www");
    }

    #[test]
    fn parses_edns() {
        let p = query_packet(&["a"], 28, Some((4096, true)));
        let q = Query::parse(&p).unwrap();
        assert_eq!(
            q.edns,
            Some(Edns {
                udp_payload: 4096,
                dnssec_ok: true,
                version: 0
            })
        );
        assert_eq!(q.udp_limit(), 4096);
    }

    #[test]
    fn rejects_bad_packets() {
        assert_eq!(Query::parse(&[1, 2, 3]).unwrap_err(), Reject::Drop);
        let mut p = query_packet(&["a"], 1, None);
        p[2] |= 0x80;
        assert_eq!(Query::parse(&p).unwrap_err(), Reject::Drop);
        let mut p = query_packet(&["a"], 1, None);
        p.truncate(p.len() - 2);
        assert_eq!(
            Query::parse(&p).unwrap_err(),
            Reject::Answer(Rcode::FormErr)
        );
        let mut p = query_packet(&["a"], 1, None);
        p[2] |= 0x10; // opcode 2 (STATUS)
        assert_eq!(Query::parse(&p).unwrap_err(), Reject::Answer(Rcode::NotImp));
        // A compression loop in the question.
        let mut p = query_packet(&[], 1, None);
        p.truncate(HEADER_LEN);
        p.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(
            Query::parse(&p).unwrap_err(),
            Reject::Answer(Rcode::FormErr)
        );
    }

    /// An upstream answer to `query_packet(&["a"], 1, None)`: one A record,
    /// then `extra` after the records.
    fn upstream_answer(extra: &[u8], opts: usize) -> Vec<u8> {
        let mut a = query_packet(&["a"], 1, None);
        a[2] |= 0x80;
        a[7] = 1; // ANCOUNT
        a[11] = opts as u8; // ARCOUNT
        a.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        for _ in 0..opts {
            a.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        }
        a.extend_from_slice(extra);
        a
    }

    #[test]
    fn upstream_answers_lose_trailing_bytes_and_two_opts_are_refused() {
        let p = query_packet(&["a"], 1, None);
        let q = Query::parse(&p).unwrap();
        let ttl = TtlPolicy { min: 0, max: 86400 };
        // Found by fuzzing (fuzz/seeds/upstream_answer/regress-trailing-bytes).
        let answer = WireAnswer::from_upstream(upstream_answer(b"junk", 0), &p, &q, ttl).unwrap();
        let mut out = Vec::new();
        answer.write(&p, &q, 0, 512, &mut out);
        let layout = Layout::scan(&out).unwrap();
        assert_eq!(
            layout.records().map(|r| r.end).max(),
            Some(out.len()),
            "nothing after the records"
        );
        // RFC 6891: two OPT records make a message malformed.
        assert!(WireAnswer::from_upstream(upstream_answer(b"", 2), &p, &q, ttl).is_none());
    }

    #[test]
    fn error_answer_echoes_question_and_opt() {
        let p = query_packet(&["a", "b"], 1, Some((1232, true)));
        let q = Query::parse(&p).unwrap();
        let mut out = Vec::new();
        error_answer(&p, &q, Rcode::Refused, &mut out);
        assert_eq!(out[3] & 0xF, 5);
        assert_eq!(&out[12..q.question_end], &p[12..q.question_end]);
        let layout = Layout::scan(&out).unwrap();
        assert_eq!(layout.additionals.len(), 1);
        assert_eq!(layout.additionals[0].rtype, TYPE_OPT);
    }
}
