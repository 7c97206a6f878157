//! Inputs the fuzzers found (fuzz/README.md), kept as tests.

use sinkd::wire::{Layout, Query, TYPE_OPT, TtlPolicy, WireAnswer};

/// Found by fuzzing (fuzz/seeds/upstream_answer/regress-opt-counted-twice):
/// an upstream answer without the question, to a client that used EDNS, was
/// served with ARCOUNT 2 and one OPT.
#[test]
fn answer_without_question_to_edns_query_has_one_opt() {
    // AAAA www.example.com, EDNS 1232 with DO.
    let query: &[u8] = b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x03com\x00\x00\x1c\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00";
    // The upstream's SERVFAIL without the question section.
    let upstream: &[u8] = b"\xab\xcd\x81\x82\x00\x00\x00\x00\x00\x00\x00\x00";
    let q = Query::parse(query).unwrap();
    let ttl = TtlPolicy {
        min: 0,
        max: 86_400,
    };
    let answer = WireAnswer::from_upstream(upstream.to_vec(), query, &q, ttl).unwrap();
    let mut out = Vec::new();
    answer.write(query, &q, 0, q.udp_limit(), &mut out);
    assert_eq!(out[3] & 0xF, 2, "the upstream's SERVFAIL");
    assert_eq!(out[10..12], [0, 1], "ARCOUNT: our OPT, once");
    let layout = Layout::scan(&out).expect("a well-formed message");
    assert_eq!(layout.additionals.len(), 1);
    assert_eq!(layout.additionals[0].rtype, TYPE_OPT);
    assert_eq!(layout.additionals[0].end, out.len());
}
