//! sinkd as a forwarder: faithful answers, cache, TCP, access control,
//! failover. Every packet stays on 127.0.0.0/8.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::svcb::{Alpn, SVCB, SvcParamKey, SvcParamValue};
use hickory_proto::rr::rdata::{HTTPS, NULL};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The upstream zone most tests use.
fn zone(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    let dnssec_ok = req.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
    use RecordType::{A, AAAA, MX, RRSIG, TXT, Unknown};
    let m = match (owner.as_str(), q.query_type()) {
        ("www.example.test.", A) => answer(req, vec![a(&owner, 300, "192.0.2.1")]),
        ("www.example.test.", AAAA) => answer(req, vec![aaaa(&owner, 300, "2001:db8::1")]),
        ("example.test.", MX) => answer(req, vec![mx(&owner, 300, 10, "mail.example.test.")]),
        ("example.test.", TXT) => answer(req, vec![txt(&owner, 300, "v=spf1 -all")]),
        ("www.example.test.", RecordType::HTTPS) => {
            let svcb = SVCB::new(
                1,
                Name::root(),
                vec![(
                    SvcParamKey::Alpn,
                    SvcParamValue::Alpn(Alpn(vec!["h2".into()])),
                )],
            );
            answer(
                req,
                vec![Record::from_rdata(
                    common::name(&owner),
                    300,
                    RData::HTTPS(HTTPS(svcb)),
                )],
            )
        }
        ("alias.example.test.", A) => answer(
            req,
            vec![
                cname(&owner, 300, "alias2.example.test."),
                cname("alias2.example.test.", 300, "www.example.test."),
                a("www.example.test.", 300, "192.0.2.1"),
            ],
        ),
        ("www.example.test.", MX) => {
            let mut m = response(req, ResponseCode::NoError);
            m.authorities.push(soa("example.test.", 3600, 60));
            m
        }
        ("big.example.test.", TXT) => answer(
            req,
            (0..30)
                .map(|i| txt(&owner, 300, &format!("{i:02} {}", "x".repeat(40))))
                .collect(),
        ),
        ("signed.example.test.", A) => {
            let mut m = answer(req, vec![a(&owner, 300, "192.0.2.7")]);
            if dnssec_ok {
                m.answers.push(Record::from_rdata(
                    common::name(&owner),
                    300,
                    RData::Unknown {
                        code: RRSIG,
                        rdata: NULL::with(vec![0, 1, 8, 3, 0, 0, 1, 44]),
                    },
                ));
                m.metadata.authentic_data = true;
            }
            m
        }
        ("opaque.example.test.", Unknown(65400)) => answer(
            req,
            vec![Record::from_rdata(
                common::name(&owner),
                300,
                RData::Unknown {
                    code: Unknown(65400),
                    rdata: NULL::with(vec![0xde, 0xad, 0xbe, 0xef]),
                },
            )],
        ),
        ("slow.example.test.", A) => {
            return Reply::AnswerAfter(
                Duration::from_millis(300),
                answer(req, vec![a(&owner, 300, "192.0.2.9")]),
            );
        }
        ("refused.example.test.", A) => response(req, ResponseCode::Refused),
        _ => {
            let mut m = response(req, ResponseCode::NXDomain);
            m.authorities.push(soa("example.test.", 3600, 30));
            m
        }
    };
    Reply::Answer(m)
}

/// An authoritative server as the upstream (a NAS, the router's own zone):
/// AA set, no recursion offered.
fn authoritative_zone(req: &Message) -> Reply {
    let owner = req.queries[0].name().to_string();
    let mut m = answer(req, vec![a(&owner, 300, "192.0.2.44")]);
    m.metadata.authoritative = true;
    m.metadata.recursion_available = false;
    Reply::Answer(m)
}

/// Clients are told sinkd recurses (RA), and that it is not the authority
/// for what it relays (no AA), whatever flags its upstream answered with:
/// `dig` warns "recursion requested but not available" otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn relayed_answers_offer_recursion_and_claim_no_authority() {
    let upstream = Upstream::start(authoritative_zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    for action in ["forwarded", "cached"] {
        let r = ask(sinkd.addr, "nas.example.test.", RecordType::A).await;
        assert_eq!(rdatas(&r), ["192.0.2.44"], "{action}");
        assert_eq!(
            upstream.count(),
            1,
            "{action}: the second comes from the cache"
        );
        assert!(r.metadata.recursion_available, "{action}: RA");
        assert!(!r.metadata.authoritative, "{action}: no AA");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_common_types_faithfully() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");

    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    assert_eq!(r.answers[0].ttl, 300);
    assert!(r.metadata.recursion_available);
    assert!(r.edns.is_some(), "an EDNS query gets our OPT back");

    let r = ask(sinkd.addr, "www.example.test.", RecordType::AAAA).await;
    assert_eq!(rdatas(&r), ["2001:db8::1"]);
    let r = ask(sinkd.addr, "example.test.", RecordType::MX).await;
    assert_eq!(rdatas(&r), ["10 mail.example.test."]);
    let r = ask(sinkd.addr, "example.test.", RecordType::TXT).await;
    assert_eq!(rdatas(&r), ["v=spf1 -all"]);
    let r = ask(sinkd.addr, "www.example.test.", RecordType::HTTPS).await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].record_type(), RecordType::HTTPS);
    assert!(rdatas(&r)[0].contains("h2"), "{:?}", rdatas(&r));

    let r = ask(
        sinkd.addr,
        "opaque.example.test.",
        RecordType::Unknown(65400),
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    match &r.answers[0].data {
        RData::Unknown { rdata, .. } => assert_eq!(rdata.anything, [0xde, 0xad, 0xbe, 0xef]),
        other => panic!("unknown type came back as {other:?}"),
    }

    // Without EDNS from the client there is no OPT in the answer.
    let r = ask_udp(sinkd.addr, &query("www.example.test.", RecordType::A, None)).await;
    assert!(r.edns.is_none());
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cname_chains_come_as_given() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let r = ask(sinkd.addr, "alias.example.test.", RecordType::A).await;
    let chain: Vec<String> = r
        .answers
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    assert_eq!(
        chain,
        [
            "alias.example.test. alias2.example.test.",
            "alias2.example.test. www.example.test.",
            "www.example.test. 192.0.2.1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nxdomain_and_nodata_carry_the_soa_and_are_cached() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");

    let r = ask(sinkd.addr, "nope.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities.len(), 1);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    // RFC 2308: the negative TTL is the lesser of the SOA's TTL and MINIMUM.
    assert_eq!(r.authorities[0].ttl, 30);

    let r = ask(sinkd.addr, "www.example.test.", RecordType::MX).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(r.authorities[0].ttl, 60);

    let before = upstream.count();
    let r = ask(sinkd.addr, "nope.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = ask(sinkd.addr, "www.example.test.", RecordType::MX).await;
    assert!(r.answers.is_empty());
    assert_eq!(
        upstream.count(),
        before,
        "negative answers come from the cache"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_hits_count_ttls_down_and_match_case_insensitively() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 300);
    assert_eq!(upstream.count(), 1);

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = ask(sinkd.addr, "WWW.Example.TEST.", RecordType::A).await;
    assert_eq!(upstream.count(), 1, "served from the cache");
    assert!(
        (297..=298).contains(&r.answers[0].ttl),
        "TTL counted down: {}",
        r.answers[0].ttl
    );
    assert_eq!(
        r.queries[0].name().to_string(),
        "WWW.Example.TEST.",
        "the question is echoed as the client spelled it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_clamps_apply() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "[cache]\nmin_ttl = 10\nmax_ttl = 120\n");
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.answers[0].ttl, 120);
    let r = ask(sinkd.addr, "nope.example.test.", RecordType::A).await;
    assert_eq!(r.authorities[0].ttl, 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn cache_size_zero_turns_it_off() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "[cache]\nsize = 0\n");
    ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn dnssec_ok_and_flags_pass_through() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");

    let mut q = query("signed.example.test.", RecordType::A, Some((1232, true)));
    q.metadata.checking_disabled = true;
    let r = ask_udp(sinkd.addr, &q).await;
    let sent = upstream.last.lock().unwrap().clone().unwrap();
    assert!(
        sent.edns.as_ref().unwrap().flags().dnssec_ok,
        "DO goes upstream"
    );
    assert!(sent.metadata.checking_disabled, "CD goes upstream");
    assert!(r.metadata.authentic_data, "AD comes back");
    assert!(r.metadata.checking_disabled);
    assert!(r.edns.as_ref().unwrap().flags().dnssec_ok, "DO is echoed");
    let types: Vec<RecordType> = r.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::A, RecordType::RRSIG]);

    // Without DO: a separate cache entry, and no signatures.
    let r = ask(sinkd.addr, "signed.example.test.", RecordType::A).await;
    assert_eq!(r.answers.len(), 1);
    assert!(!r.metadata.authentic_data);
}

#[tokio::test(flavor = "multi_thread")]
async fn large_answers_truncate_over_udp_and_come_whole_over_tcp() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");

    let q = query("big.example.test.", RecordType::TXT, None);
    let r = ask_udp(sinkd.addr, &q).await;
    assert!(r.metadata.truncation, "over 512 bytes without EDNS: TC");
    assert!(r.answers.is_empty());

    let r = ask_tcp_pipelined(sinkd.addr, &[q]).await.remove(0);
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 30);

    // A client advertising 4096 bytes gets it whole over UDP.
    let r = ask_udp(
        sinkd.addr,
        &query("big.example.test.", RecordType::TXT, Some((4096, false))),
    )
    .await;
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_tcp_queries_are_answered_out_of_order() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let slow = query("slow.example.test.", RecordType::A, None);
    let fast1 = query("www.example.test.", RecordType::A, None);
    let fast2 = query("example.test.", RecordType::MX, None);
    let replies =
        ask_tcp_pipelined(sinkd.addr, &[slow.clone(), fast1.clone(), fast2.clone()]).await;
    let ids: Vec<u16> = replies.iter().map(|r| r.metadata.id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        ids[2], slow.metadata.id,
        "the slow answer comes last: {ids:?}"
    );
    assert!(ids.contains(&fast1.metadata.id) && ids.contains(&fast2.metadata.id));
    assert_eq!(rdatas(&replies[2]), ["192.0.2.9"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn strangers_are_refused_and_nothing_is_forwarded() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::start(&format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nallow = [\"127.0.0.1/32\"]\n\
         [upstream]\nservers = [\"udp://{}\"]\n",
        upstream.addr
    ));
    let q = query("www.example.test.", RecordType::A, Some((1232, false)));
    let r = ask_udp_from(sinkd.addr, "127.0.0.2", &q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert!(r.answers.is_empty());
    assert_eq!(upstream.count(), 0, "nothing forwarded for a stranger");

    let r = ask_udp_from(sinkd.addr, "127.0.0.1", &q).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_upstream_fails_over_to_a_live_one() {
    let dead = Upstream::start(|_| Reply::Silence).await;
    let live = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[dead.addr, live.addr], "");
    for i in 0..5 {
        let started = Instant::now();
        let r = ask(sinkd.addr, &format!("n{i}.example.test."), RecordType::A).await;
        assert_eq!(
            r.metadata.response_code,
            ResponseCode::NXDomain,
            "live answer, not SERVFAIL"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "within the timeout"
        );
    }
    assert_eq!(live.count(), 5);
    // After the first failure the dead one is no longer asked first.
    assert!(
        dead.count() <= 2,
        "dead upstream asked {} times",
        dead.count()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_upstream_is_passed_over() {
    let refusing = Upstream::start(|req| Reply::Answer(response(req, ResponseCode::Refused))).await;
    let live = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[refusing.addr, live.addr], "");
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    // A REFUSED that is the only answer is passed on as it is.
    let r = ask(sinkd.addr, "refused.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_upstreams_dead_gives_servfail_within_the_timeout() {
    let dead1 = Upstream::start(|_| Reply::Silence).await;
    let dead2 = Upstream::start(|_| Reply::Silence).await;
    let sinkd = Sinkd::with_upstreams(&[dead1.addr, dead2.addr], "");
    let started = Instant::now();
    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "timeout_ms = 1000, took {took:?}"
    );
    let lines = sinkd.querylog_of(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["action"], "failed");
    assert_eq!(lines[0]["rcode"], "SERVFAIL");
}

/// An idle UDP thread sleeps in `recvmmsg` for up to a second at a time
/// (`IDLE_WAKE`), and its runtime with it. A query it forwards must keep
/// the runtime going until answered, or the upstream exchange would move
/// on only as those sleeps end: a second or two per query.
#[tokio::test(flavor = "multi_thread")]
async fn a_forward_from_an_idle_thread_does_not_wait_for_it_to_wake() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    // Opens the upstream sockets.
    ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    for (name, qtype) in [
        ("example.test.", RecordType::MX),
        ("example.test.", RecordType::TXT),
        ("www.example.test.", RecordType::AAAA),
    ] {
        // Idle: the thread is asleep in `recvmmsg` when the query comes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let r = ask(sinkd.addr, name, qtype).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1, "forwarded, not cached: {r:?}");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(500),
            "{name} {qtype}: answered after {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identical_queries_in_flight_go_upstream_once() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let q = query("slow.example.test.", RecordType::A, None);
    let futures = (0..8).map(|i| {
        let mut q = q.clone();
        q.metadata.id = 2000 + i;
        let addr = sinkd.addr;
        async move { ask_udp(addr, &q).await }
    });
    let replies = futures_util::future::join_all(futures).await;
    for r in &replies {
        assert_eq!(rdatas(r), ["192.0.2.9"]);
    }
    assert_eq!(upstream.count(), 1, "eight clients, one upstream query");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_packets_get_formerr_or_nothing_and_serving_goes_on() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let from = "127.0.0.1".parse().unwrap();
    let wait = Duration::from_millis(300);

    // Shorter than a header: dropped.
    assert!(
        exchange_udp_raw(sinkd.addr, from, &[1, 2, 3], wait)
            .await
            .is_none()
    );
    // A header claiming a question that is not there: FORMERR, same ID.
    let bad = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'w'];
    let r = exchange_udp_raw(sinkd.addr, from, &bad, wait)
        .await
        .expect("FORMERR");
    let r = Message::from_vec(&r).unwrap();
    assert_eq!(r.metadata.id, 0xabcd);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // A label longer than 63 bytes.
    let mut long = vec![0x11, 0x22, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 64];
    long.extend([b'a'; 64]);
    long.extend([0, 0, 1, 0, 1]);
    let r = exchange_udp_raw(sinkd.addr, from, &long, wait)
        .await
        .expect("FORMERR");
    assert_eq!(
        Message::from_vec(&r).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    // A response sent to us is never answered (no reflection loops).
    let mut response = query("www.example.test.", RecordType::A, None)
        .to_vec()
        .unwrap();
    response[2] |= 0x80;
    assert!(
        exchange_udp_raw(sinkd.addr, from, &response, wait)
            .await
            .is_none()
    );
    // Garbage over TCP closes that connection only.
    let mut tcp = tokio::net::TcpStream::connect(sinkd.addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&[0, 3, 1, 2, 3]).await.unwrap();

    let r = ask(sinkd.addr, "www.example.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"], "still serving");
    assert_eq!(upstream.count(), 1);
}
