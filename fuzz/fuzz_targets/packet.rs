//! The query path: any bytes a client sends, through `Pipeline::answer_now`
//! (parse, allow/rate limit, policy, local zones, cache lookup). The input is
//! the raw packet as it arrives on UDP (or inside a TCP frame), so a crashing
//! input is directly a packet for a regression test.
//!
//! Checked: no panic, no hang, and every `Step::Reply` is a DNS response to
//! the query (at least a header, QR set, same ID) that holds exactly the
//! records its header announces (`Layout::scan`, nothing after them).
//! `Step::Forward` would go to an upstream: it is dropped here, nothing is
//! ever sent.
//!
//! Four pipelines answer every input, one per blocking mode, built once from
//! the repository's real lists (`blocklists/`) plus a few adblock, regex and
//! allow rules, local zones and records of every type, a `[[forward]]` rule
//! and, in one of them, a tight rate limit.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sinkd::config::Loaded;
use sinkd::pipeline::{Pipeline, Proto, Step};
use sinkd::wire::Layout;

/// Extra rules beside the repository's lists: the forms those do not use.
const EXTRA_BLOCK: &str = "\
||ads.example.com^
|exact.example.com^
*.tracker.example
0.0.0.0 hosts-a.example hosts-b.example
/^ad[0-9]+\\.example\\.net$/
@@||ok.ads.example.com^
blocked.home.lan
";
const EXTRA_ALLOW: &str = "allowed.tracker.example\n/^safe-.*$/\n";
const EXTRA_RANGES: &str = "203.0.113.0/24\n2001:db8:bad::/48\n";

fn config_text(dir: &str, mode: &str, extra_server: &str) -> String {
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../blocklists");
    format!(
        r#"
[server]
allow = ["127.0.0.0/8", "::1/128", "192.168.0.0/16", "fc00::/7"]
{extra_server}

[upstream]
servers = ["udp://127.0.0.1:9"]

[cache]
size = 1000

[querylog]
enabled = false

[blocking]
lists = ["{repo}/xiaomi-telemetry.txt", "{repo}/xiaomi-ads.txt", "{repo}/xiaomi-httpdns.txt",
         "{repo}/xiaomi-cloud.txt", "{repo}/doh.txt", "{dir}/extra-block.txt"]
allow = ["{repo}/allow/*.txt", "{dir}/extra-allow.txt"]
answer_ips = ["{repo}/xiaomi.cidr", "{dir}/extra.cidr"]
mode = "{mode}"

[local]
zones = ["home.lan", "lan"]
[[local.records]]
name = "nas.home.lan"
type = "A"
value = "192.168.1.10"
[[local.records]]
name = "nas.home.lan"
type = "AAAA"
value = "fd00::10"
[[local.records]]
name = "www.home.lan"
type = "CNAME"
value = "nas.home.lan"
[[local.records]]
name = "out.home.lan"
type = "CNAME"
value = "example.com"
[[local.records]]
name = "loop1.home.lan"
type = "CNAME"
value = "loop2.home.lan"
[[local.records]]
name = "loop2.home.lan"
type = "CNAME"
value = "loop1.home.lan"
[[local.records]]
name = "home.lan"
type = "MX"
value = "10 nas.home.lan"
[[local.records]]
name = "_http._tcp.home.lan"
type = "SRV"
value = "0 5 80 nas.home.lan"
[[local.records]]
name = "txt.home.lan"
type = "TXT"
value = "hello world"
[[local.records]]
name = "deep.a.b.c.home.lan"
type = "A"
value = "192.168.1.20"

[[forward]]
domains = ["fritz.box", "corp.example"]
servers = ["udp://127.0.0.1:9"]
"#
    )
}

struct Target {
    pipelines: Vec<Pipeline>,
    /// Pipeline::new itself needs no runtime, but client identification
    /// may spawn a reverse lookup: keep one current-thread runtime entered.
    runtime: tokio::runtime::Runtime,
}

fn target() -> &'static Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sinkd-fuzz-packet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("extra-block.txt"), EXTRA_BLOCK).unwrap();
        std::fs::write(dir.join("extra-allow.txt"), EXTRA_ALLOW).unwrap();
        std::fs::write(dir.join("extra.cidr"), EXTRA_RANGES).unwrap();
        let d = dir.display().to_string();
        let variants = [
            ("null", "rate_limit = 0"),
            (
                "ip:192.0.2.9,2001:db8::9",
                "rate_limit = 0\nrebind_protection = false",
            ),
            ("nxdomain", "rate_limit = 0"),
            (
                "refused",
                "rate_limit = 1\nrate_limit_burst = 3\nrate_limit_action = \"refused\"",
            ),
        ];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let mut pipelines = Vec::new();
        for (mode, server) in variants {
            let text = config_text(&d, mode, server);
            let config = sinkd::config::parse(&text).expect("fuzz config parses");
            let loaded = Loaded {
                config,
                path: PathBuf::from(&dir).join("config.toml"),
            };
            let load = sinkd::blocking::load(&loaded);
            assert!(
                load.problems.is_empty() && load.unreadable.is_empty(),
                "fuzz lists load cleanly: {:?} {:?}",
                load.problems,
                load.unreadable
            );
            pipelines.push(Pipeline::new(&loaded, load.policy).expect("pipeline"));
        }
        drop(_guard);
        Target { pipelines, runtime }
    })
}

fn check_reply(packet: &[u8], out: &[u8]) {
    assert!(out.len() >= 12, "reply shorter than a header: {out:?}");
    assert!(out[2] & 0x80 != 0, "reply without QR: {out:?}");
    assert_eq!(out[..2], packet[..2], "reply with another ID");
    let well_formed = Layout::scan(out).is_some_and(|layout| {
        let end = layout.records().map(|r| r.end).max();
        end.unwrap_or(layout.question_end) == out.len()
    });
    assert!(well_formed, "reply whose sections do not parse: {out:?}");
}

fuzz_target!(|packet: &[u8]| {
    // Nothing larger arrives: UDP payloads and TCP frames are at most 64 KiB.
    if packet.len() > u16::MAX as usize {
        return;
    }
    let target = target();
    let _guard = target.runtime.enter();
    let lan: SocketAddr = (IpAddr::V4(Ipv4Addr::new(192, 168, 1, 50)), 5353).into();
    let lan6: SocketAddr = (Ipv4Addr::new(192, 168, 1, 51).to_ipv6_mapped(), 5353).into();
    let stranger: SocketAddr = (
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        53,
    )
        .into();
    let mut out = Vec::new();
    let mut key = Vec::new();
    for (i, pipeline) in target.pipelines.iter().enumerate() {
        let asks: &[(SocketAddr, Proto)] = match i {
            0 => &[
                (lan, Proto::Udp),
                (lan6, Proto::Tcp),
                (stranger, Proto::Udp),
            ],
            _ => &[(lan, Proto::Udp), (lan6, Proto::Tcp)],
        };
        for &(src, proto) in asks {
            out.clear();
            match pipeline.answer_now(packet, src, proto, &mut out, &mut key) {
                Step::Reply => check_reply(packet, &out),
                Step::Drop => {}
                Step::Forward(pending) => drop(pending),
            }
        }
    }
});
