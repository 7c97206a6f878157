//! The LAN's own names and devices: local zones, hosts files, automatic
//! PTRs, private reverse zones, conditional forwarding, device names in the
//! query log, and `sinkd tail`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::PTR;
use hickory_proto::rr::{RData, Record, RecordType};

/// The public upstream: must never hear about LAN names.
fn public(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(match q.query_type() {
        RecordType::A => answer(req, vec![a(&owner, 300, "192.0.2.1")]),
        _ => {
            let mut m = response(req, ResponseCode::NXDomain);
            m.authorities.push(soa("test.", 3600, 60));
            m
        }
    })
}

/// The home router: knows fritz.box and the LAN's reverse names.
fn router(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(match (owner.as_str(), q.query_type()) {
        ("printer.fritz.box.", RecordType::A) => answer(req, vec![a(&owner, 60, "192.168.178.5")]),
        ("99.1.168.192.in-addr.arpa.", RecordType::PTR)
        | ("5.0.0.127.in-addr.arpa.", RecordType::PTR) => answer(
            req,
            vec![Record::from_rdata(
                name(&owner),
                60,
                RData::PTR(PTR(name("laptop.fritz.box."))),
            )],
        ),
        _ => {
            let mut m = response(req, ResponseCode::NXDomain);
            m.authorities.push(soa("fritz.box.", 3600, 60));
            m
        }
    })
}

const LOCAL: &str = r#"
[local]
zones = ["home.lan"]
hosts = ["hosts"]
[[local.records]]
name = "nas.home.lan"
type = "A"
value = "192.168.1.10"
[[local.records]]
name = "files.home.lan"
type = "CNAME"
value = "nas.home.lan"
[[local.records]]
name = "home.lan"
type = "MX"
value = "10 mail.home.lan"
[[local.records]]
name = "_ipp._tcp.home.lan"
type = "SRV"
value = "0 0 631 printer.home.lan"
[[local.records]]
name = "home.lan"
type = "TXT"
value = "hello"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn local_zones_hosts_and_ptrs_are_answered_here() {
    let upstream = Upstream::start(public).await;
    let sinkd = Sinkd::start_with_files(
        &config_for(&[upstream.addr], LOCAL),
        &[("hosts", "192.168.1.30 tv tv.home.lan   # living room\n")],
    );

    let r = ask(sinkd.addr, "nas.home.lan.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.168.1.10"]);
    assert!(r.metadata.authoritative);
    let r = ask(sinkd.addr, "files.home.lan.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["nas.home.lan.", "192.168.1.10"]);
    let r = ask(sinkd.addr, "home.lan.", RecordType::MX).await;
    assert_eq!(rdatas(&r), ["10 mail.home.lan."]);
    let r = ask(sinkd.addr, "_ipp._tcp.home.lan.", RecordType::SRV).await;
    assert_eq!(rdatas(&r), ["0 0 631 printer.home.lan."]);
    let r = ask(sinkd.addr, "home.lan.", RecordType::TXT).await;
    assert_eq!(rdatas(&r), ["hello"]);
    let r = ask(sinkd.addr, "home.lan.", RecordType::SOA).await;
    assert_eq!(r.answers[0].record_type(), RecordType::SOA);
    let r = ask(sinkd.addr, "home.lan.", RecordType::NS).await;
    assert_eq!(r.answers.len(), 1);

    // NODATA and NXDOMAIN inside the zone, with its SOA.
    let r = ask(sinkd.addr, "nas.home.lan.", RecordType::AAAA).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = ask(sinkd.addr, "nope.home.lan.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);

    // Hosts file names, and PTRs for every address.
    let r = ask(sinkd.addr, "tv.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.168.1.30"]);
    let r = ask(sinkd.addr, "10.1.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rdatas(&r), ["nas.home.lan."]);
    let r = ask(sinkd.addr, "30.1.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert!(rdatas(&r).contains(&"tv.".to_string()), "{:?}", rdatas(&r));

    // A private reverse name nobody knows: NXDOMAIN here, never upstream.
    let r = ask(sinkd.addr, "99.1.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask(sinkd.addr, "1.0.0.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(upstream.count(), 0, "no LAN name went upstream");

    // Everything else still forwards.
    let r = ask(sinkd.addr, "example.org.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    assert_eq!(upstream.count(), 1);

    // The hosts file is reloaded when it changes.
    std::fs::write(sinkd.path("hosts"), "192.168.1.31 tv\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let r = ask(sinkd.addr, "tv.", RecordType::A).await;
        if rdatas(&r) == ["192.168.1.31"] {
            break;
        }
        assert!(Instant::now() < deadline, "hosts edit picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_forwarding_sends_domains_to_their_server() {
    let upstream = Upstream::start(public).await;
    let router = Upstream::start(router).await;
    let extra = format!(
        "[[forward]]\ndomains = [\"fritz.box\", \"168.192.in-addr.arpa\"]\nservers = [\"udp://{}\"]\n",
        router.addr
    );
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], &extra);
    let r = ask(sinkd.addr, "printer.fritz.box.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.168.178.5"]);
    let r = ask(sinkd.addr, "99.1.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rdatas(&r), ["laptop.fritz.box."]);
    assert_eq!(router.count(), 2);
    assert_eq!(
        upstream.count(),
        0,
        "forwarded domains never reach the public upstream"
    );
    let r = ask(sinkd.addr, "example.org.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);
    assert_eq!(router.count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_log_names_each_device() {
    let upstream = Upstream::start(public).await;
    let router = Upstream::start(router).await;
    let config = config_for(
        &[upstream.addr],
        &format!(
            r#"
[blocking]
lists = ["block.txt"]

[[clients]]
name = "Anna's Redmi Note"
match = ["127.0.0.2"]
group = "phones"

[[clients]]
name = "Living room TV"
match = ["aa:bb:cc:dd:ee:04"]

[dhcp]
leases = ["dnsmasq.leases"]

[[forward]]
domains = ["127.in-addr.arpa"]
servers = ["udp://{}"]

[querylog]
ignore = ["ignored.example"]
"#,
            router.addr
        ),
    );
    let sinkd = Sinkd::start_with_env(
        &config,
        &[
            ("block.txt", "miui.com\n"),
            (
                "dnsmasq.leases",
                "1764000000 aa:bb:cc:dd:ee:03 127.0.0.3 kitchen-tablet 01:aa:bb:cc:dd:ee:03\n",
            ),
            (
                "arp",
                "IP address       HW type     Flags       HW address            Mask     Device\n\
                 127.0.0.4        0x1         0x2         aa:bb:cc:dd:ee:04     *        eth0\n",
            ),
        ],
        &[("SINKD_ARP_TABLE", "{dir}/arp")],
    );
    // Let the neighbour table be read once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let q = |name: &str| query(name, RecordType::A, Some((1232, false)));
    ask_udp_from(sinkd.addr, "127.0.0.2", &q("tracking.miui.com.")).await;
    ask_udp_from(sinkd.addr, "127.0.0.3", &q("www.example.org.")).await;
    ask_udp_from(sinkd.addr, "127.0.0.4", &q("www.example.org.")).await;
    ask_udp_from(sinkd.addr, "127.0.0.1", &q("ignored.example.")).await;
    // Cache hits: the first one's line, and the reverse lookup it starts,
    // come from the UDP thread, which then sleeps in `recvmmsg` (nothing of
    // its own is under way); the lookup must go on meanwhile.
    ask_udp_from(sinkd.addr, "127.0.0.5", &q("www.example.org.")).await;
    // The reverse name of 127.0.0.5 arrives in the background.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ask_udp_from(sinkd.addr, "127.0.0.5", &q("www.example.org.")).await;

    let lines = sinkd.querylog_of(5).await;
    assert_eq!(
        lines.len(),
        5,
        "one line per query, the ignored one left out: {lines:#?}"
    );
    let blocked = &lines[0];
    assert_eq!(blocked["client"], "127.0.0.2");
    assert_eq!(blocked["device"], "Anna's Redmi Note");
    assert_eq!(blocked["group"], "phones");
    assert_eq!(blocked["proto"], "udp");
    assert_eq!(blocked["name"], "tracking.miui.com");
    assert_eq!(blocked["type"], "A");
    assert_eq!(blocked["action"], "blocked");
    assert_eq!(blocked["rule"], "block.txt:1 miui.com");
    assert_eq!(blocked["rcode"], "NOERROR");
    assert_eq!(blocked["answer"], serde_json::json!(["0.0.0.0"]));
    assert!(blocked["ts"].as_str().unwrap().ends_with('Z'));

    assert_eq!(
        lines[1]["device"], "kitchen-tablet",
        "named by its DHCP lease"
    );
    assert_eq!(lines[1]["action"], "forwarded");
    assert_eq!(lines[1]["answer"], serde_json::json!(["192.0.2.1"]));
    assert!(
        lines[1]["upstream"]
            .as_str()
            .unwrap()
            .starts_with("udp://127.0.0.1:")
    );
    assert_eq!(lines[2]["device"], "Living room TV", "named by its MAC");
    assert_eq!(lines[2]["mac"], "aa:bb:cc:dd:ee:04");
    assert_eq!(lines[2]["action"], "cached");
    assert_eq!(lines[3]["client"], "127.0.0.5");
    assert_eq!(lines[3]["device"], serde_json::Value::Null, "not known yet");
    assert_eq!(lines[4]["client"], "127.0.0.5");
    assert_eq!(
        lines[4]["device"], "laptop.fritz.box",
        "named by reverse DNS through the router"
    );

    // sinkd tail shows the same story, one line a query.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkd"))
        .args(["tail", "--no-follow", "--blocked", "-c"])
        .arg(&sinkd.config_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("Anna's Redmi Note"), "{text}");
    assert!(text.contains("tracking.miui.com"), "{text}");
    assert!(text.contains("BLOCKED"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
}
