//! Bad input of every kind, and what sinkd does with it. README.md's
//! "Bad input" table points at these tests.

mod common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

fn zone(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(answer(req, vec![a(&owner, 300, "192.0.2.1")]))
}

/// A query in wire form, built by hand so it can be wrong on purpose.
fn raw_query(labels: &[&[u8]], qtype: u16, qclass: u16, opts: &[(u16, u8)]) -> Vec<u8> {
    let mut p = vec![
        0x42,
        0x42,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        opts.len() as u8,
    ];
    for label in labels {
        p.push(label.len() as u8);
        p.extend_from_slice(label);
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&qclass.to_be_bytes());
    for (size, version) in opts {
        p.extend_from_slice(&[0, 0, 41]);
        p.extend_from_slice(&size.to_be_bytes());
        p.extend_from_slice(&[0, *version, 0, 0, 0, 0]);
    }
    p
}

async fn send(sinkd: &Sinkd, bytes: &[u8]) -> Option<Message> {
    exchange_udp_raw(
        sinkd.addr,
        "127.0.0.1".parse().unwrap(),
        bytes,
        Duration::from_millis(500),
    )
    .await
    .map(|b| Message::from_vec(&b).expect("sinkd's answers always parse"))
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_queries_get_the_right_error() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");

    let r = send(&sinkd, &raw_query(&[b"example"], 1, 1, &[(1232, 1)]))
        .await
        .unwrap();
    // BADVERS is extended rcode 16 (hickory names 16 BADSIG, its TSIG twin).
    assert_eq!(
        u16::from(r.metadata.response_code),
        16,
        "EDNS version 1: BADVERS"
    );

    let r = send(
        &sinkd,
        &raw_query(&[b"example"], 1, 1, &[(1232, 0), (1232, 0)]),
    )
    .await
    .unwrap();
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::FormErr,
        "two OPT records"
    );

    let r = send(&sinkd, &raw_query(&[b"example"], 252, 1, &[]))
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NotImp, "AXFR");

    let long = vec![[b'a'; 63]; 5];
    let labels: Vec<&[u8]> = long.iter().map(|l| l.as_slice()).collect();
    let r = send(&sinkd, &raw_query(&labels, 1, 1, &[])).await.unwrap();
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::FormErr,
        "a 320-byte name"
    );

    let mut pointer_loop = raw_query(&[], 1, 1, &[]);
    pointer_loop.truncate(12);
    pointer_loop.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
    let r = send(&sinkd, &pointer_loop).await.unwrap();
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::FormErr,
        "compression loop"
    );

    assert_eq!(upstream.count(), 0, "nothing malformed went upstream");
    let r = ask(sinkd.addr, "still.example.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_types_and_classes_are_forwarded_as_they_are() {
    let upstream =
        Upstream::start(|req: &Message| Reply::Answer(response(req, ResponseCode::NoError))).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let r = send(&sinkd, &raw_query(&[b"example"], 65280, 1, &[]))
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    let r = send(&sinkd, &raw_query(&[b"version", b"bind"], 16, 3, &[]))
        .await
        .unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError, "class CH");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_garbage_answer_from_upstream_is_a_servfail_not_a_crash() {
    // An "upstream" that answers every query with noise.
    let noise = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let noise_addr = noise.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((_, src)) = noise.recv_from(&mut buf).await {
            // The right ID, then garbage: a compression loop in the answer.
            let reply = [
                buf[0], buf[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1, 0xC0, 18,
            ];
            let _ = noise.send_to(&reply, src).await;
        }
    });
    let sinkd = Sinkd::with_upstreams(&[noise_addr], "");
    let r = ask(sinkd.addr, "noise.example.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    let r = ask(sinkd.addr, "noise.example.", RecordType::A).await;
    assert_eq!(
        r.metadata.response_code,
        ResponseCode::ServFail,
        "and serving goes on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_answer_fits_512_bytes_whatever_the_name_and_rule() {
    let upstream = Upstream::start(zone).await;
    // A 240-byte name blocked by a long regex: answer, SOA and EDE text
    // together would pass 512 bytes.
    let label = "a".repeat(60);
    let name = format!("{label}.{label}.{label}.{}.", "b".repeat(55));
    let rule = format!("/^a+\\.({}|a+)\\./", "z".repeat(150));
    let sinkd = Sinkd::start_with_files(
        &config_for(
            &[upstream.addr],
            "[blocking]\nlists = [\"block.txt\"]\nmode = \"nodata\"\n",
        ),
        &[("block.txt", &format!("{rule}\n"))],
    );
    let bytes = exchange_udp_raw(
        sinkd.addr,
        "127.0.0.1".parse().unwrap(),
        &query(&name, RecordType::A, Some((512, false)))
            .to_vec()
            .unwrap(),
        Duration::from_secs(2),
    )
    .await
    .expect("an answer");
    assert!(bytes.len() <= 512, "{} bytes", bytes.len());
    let r = Message::from_vec(&bytes).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(!r.metadata.truncation);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(ede(&r).map(|e| e.0), Some(15), "still says blocked");
}
