//! Running for years: rebinding protection, and the faults a home network
//! meets (dead upstreams, reloads under load, shutdown).

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// Answers every name with a private address: what a rebinding attacker's
/// name server does.
fn rebinder(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(match q.query_type() {
        RecordType::A => answer(req, vec![a(&owner, 60, "192.168.1.1")]),
        RecordType::AAAA => answer(req, vec![aaaa(&owner, 60, "fe80::1")]),
        _ => response(req, ResponseCode::NoError),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn public_names_answered_with_private_addresses_are_blocked() {
    let upstream = Upstream::start(rebinder).await;
    let router = Upstream::start(rebinder).await;
    let extra = format!(
        "[blocking]\nallow = [\"allow.txt\"]\n[[forward]]\ndomains = [\"home.arpa\"]\nservers = [\"udp://{}\"]\n",
        router.addr
    );
    let sinkd = Sinkd::start_with_files(
        &config_for(&[upstream.addr], &extra),
        &[("allow.txt", "plex.direct\n")],
    );
    for qtype in [RecordType::A, RecordType::AAAA] {
        for _ in 0..2 {
            // Second time from the cache: still blocked.
            let r = ask(sinkd.addr, "evil.example.", qtype).await;
            assert!(
                rdatas(&r) == ["0.0.0.0"] || rdatas(&r) == ["::"],
                "{qtype}: {:?}",
                rdatas(&r)
            );
            assert!(
                ede(&r).unwrap().1.starts_with("rebind protection"),
                "{:?}",
                ede(&r)
            );
        }
    }
    let r = ask(sinkd.addr, "abc.plex.direct.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.168.1.1"], "allow-listed");
    let r = ask(sinkd.addr, "nas.home.arpa.", RecordType::A).await;
    assert_eq!(
        rdatas(&r),
        ["192.168.1.1"],
        "a forwarded domain is the LAN's own"
    );

    let off = Sinkd::start(
        &config_for(&[upstream.addr], "")
            .replace("[server]\n", "[server]\nrebind_protection = false\n"),
    );
    let r = ask(off.addr, "evil.example.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.168.1.1"]);
}

fn zone(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(match q.query_type() {
        RecordType::A => answer(req, vec![a(&owner, 1, "192.0.2.1")]),
        _ => response(req, ResponseCode::NoError),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_dying_mid_stream_is_taken_over_within_the_timeout() {
    let mut first = Upstream::start(zone).await;
    let second = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[first.addr, second.addr], "");
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(3) {
        if i == 40 {
            first.kill();
        }
        let asked = Instant::now();
        let r = ask(sinkd.addr, &format!("n{i}.example."), RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "query {i}");
        worst = worst.max(asked.elapsed());
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        worst < Duration::from_millis(1000),
        "no client waited past the timeout: {worst:?}"
    );
    assert!(second.count() > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_upstream_dead_cached_answers_still_flow() {
    let mut upstream = Upstream::start(|req: &Message| {
        let owner = req.queries[0].name().to_string();
        Reply::Answer(answer(req, vec![a(&owner, 300, "192.0.2.1")]))
    })
    .await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let r = ask(sinkd.addr, "kept.example.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    upstream.kill();
    let r = ask(sinkd.addr, "kept.example.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"], "from the cache");
    let started = Instant::now();
    let r = ask(sinkd.addr, "new.example.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_what_is_in_flight_writes_the_log_and_exits_0() {
    let upstream = Upstream::start(|req: &Message| {
        let owner = req.queries[0].name().to_string();
        Reply::AnswerAfter(
            Duration::from_millis(400),
            answer(req, vec![a(&owner, 300, "192.0.2.1")]),
        )
    })
    .await;
    let mut sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let addr = sinkd.addr;
    let asking = tokio::spawn(async move { ask(addr, "slow.example.", RecordType::A).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = tokio::task::block_in_place(|| sinkd.terminate());
    assert!(status.success(), "exit status {status:?}");
    let r = asking.await.unwrap();
    assert_eq!(
        rdatas(&r),
        ["192.0.2.1"],
        "the query in flight was answered"
    );
    let log = sinkd.querylog();
    assert_eq!(log.len(), 1, "its log line was written before exit");
    assert_eq!(log[0]["name"], "slow.example");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flooding_client_is_limited_while_others_keep_getting_answers() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::start(&config_for(&[upstream.addr], "").replace(
        "[server]\n",
        "[server]\nrate_limit = 50\nrate_limit_burst = 50\n",
    ));
    // The flood: 400 queries from 127.0.0.2 as fast as the socket goes.
    let flood = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let bytes = query("loop.example.", RecordType::A, None)
        .to_vec()
        .unwrap();
    for _ in 0..400 {
        flood.send_to(&bytes, sinkd.addr).await.unwrap();
    }
    // Meanwhile a well-behaved device on 127.0.0.3 is answered every time.
    for i in 0..10 {
        let q = query(
            &format!("ok{i}.example."),
            RecordType::A,
            Some((1232, false)),
        );
        let r = ask_udp_from(sinkd.addr, "127.0.0.3", &q).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    }
    let mut answered = 0;
    let mut buf = vec![0u8; 4096];
    while let Ok(Ok(_)) =
        tokio::time::timeout(Duration::from_millis(300), flood.recv_from(&mut buf)).await
    {
        answered += 1;
    }
    assert!(
        (50..=80).contains(&answered),
        "the flood got {answered} of 400 answers"
    );
    // Every answer is logged (the 10 for 127.0.0.3 too), the excess not.
    let log = sinkd.querylog_of(answered + 10).await;
    let flooded = log.iter().filter(|l| l["client"] == "127.0.0.2").count();
    assert_eq!(
        flooded, answered,
        "one line per answer, none for the excess"
    );
    assert!(sinkd.log().contains("over its rate limit"), "warned about");
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_keep_flowing_when_the_query_log_cannot_be_written() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::start(&config_for(
        &[upstream.addr],
        "[querylog]\npath = \"logs/querylog.jsonl\"\n",
    ));
    let r = ask(sinkd.addr, "before.example.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    // The disk goes away under the log.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_dir_all(sinkd.path("logs")).unwrap();
    for i in 0..20 {
        let r = ask(sinkd.addr, &format!("during{i}.example."), RecordType::A).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "query {i}");
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !sinkd.log().contains("dropped") {
        assert!(
            Instant::now() < deadline,
            "the dropped lines are counted and said: {}",
            sinkd.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_in_flight_the_oldest_waiting_query_is_given_up() {
    let silent = Upstream::start(|_| Reply::Silence).await;
    let sinkd = Sinkd::start(
        &config_for(&[silent.addr], "").replace("[server]\n", "[server]\nmax_in_flight = 4\n"),
    );
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..10u16 {
        let mut q = query(&format!("q{i}.example."), RecordType::A, None);
        q.metadata.id = i;
        socket
            .send_to(&q.to_vec().unwrap(), sinkd.addr)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answered = Vec::new();
    let mut buf = vec![0u8; 512];
    while let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_millis(2000), socket.recv_from(&mut buf)).await
    {
        let r = Message::from_vec(&buf[..len]).unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
        answered.push(r.metadata.id);
    }
    answered.sort();
    assert_eq!(
        answered,
        [6, 7, 8, 9],
        "the four newest were kept, the oldest given up"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_cannot_take_every_tcp_connection() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let mut held = Vec::new();
    for _ in 0..40 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        held.push(socket.connect(sinkd.addr).await.unwrap());
    }
    // Past 32 connections this client's new ones are closed at once.
    let mut closed = 0;
    for stream in &mut held {
        use tokio::io::AsyncReadExt;
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(200), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert_eq!(closed, 8, "40 tried, 32 kept");
    // Another client (127.0.0.1) is still served over TCP.
    let r = ask_tcp_pipelined(sinkd.addr, &[query("ok.example.", RecordType::A, None)]).await;
    assert_eq!(rdatas(&r[0]), ["192.0.2.1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_metrics_count_queries_by_action() {
    let upstream = Upstream::start(zone).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sinkd = Sinkd::start_with_files(
        &config_for(
            &[upstream.addr],
            &format!(
                "[blocking]\nlists = [\"block.txt\"]\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
            ),
        ),
        &[("block.txt", "tracker.example\n")],
    );
    ask(sinkd.addr, "tracker.example.", RecordType::A).await;
    ask(sinkd.addr, "fine.example.", RecordType::A).await;
    ask(sinkd.addr, "fine.example.", RecordType::A).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let scrape = || async {
        let mut http = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        http.write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        http.read_to_string(&mut text).await.unwrap();
        text
    };
    // Counts reach the exporter once a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut text = scrape().await;
    while !text.contains("sinkd_queries_total{action=\"cached\"} 1")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = scrape().await;
    }
    for line in [
        "sinkd_queries_total{action=\"blocked\"} 1",
        "sinkd_queries_total{action=\"forwarded\"} 1",
        "sinkd_queries_total{action=\"cached\"} 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn systemd_hears_ready_reloading_and_stopping() {
    let upstream = Upstream::start(zone).await;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let systemd = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let hear = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let mut sinkd = Sinkd::start_with_env(
        &config_for(&[upstream.addr], ""),
        &[],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    assert!(hear().contains("READY=1"), "ready once bound and loaded");
    sinkd.hangup();
    let reloading = hear();
    assert!(reloading.contains("RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(hear().contains("READY=1"), "ready again after the reload");
    let status = tokio::task::block_in_place(|| sinkd.terminate());
    assert!(status.success());
    assert!(hear().contains("STOPPING=1"));
}
