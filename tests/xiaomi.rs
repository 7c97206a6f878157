//! The shipped protection: the curated lists and config as they ship, bypass
//! hygiene, and Xiaomi trackers hidden behind CNAMEs or in 42.62.48.0/24.

mod common;

use std::path::Path;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// An upstream where everything exists; two names lead into Xiaomi space.
fn world(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    Reply::Answer(match (owner.as_str(), q.query_type()) {
        ("stats.shop.test.", RecordType::A) => answer(
            req,
            vec![
                cname(&owner, 300, "data.mistat.xiaomi.com."),
                a("data.mistat.xiaomi.com.", 300, "203.0.113.7"),
            ],
        ),
        ("sync.example.test.", RecordType::A) => answer(req, vec![a(&owner, 300, "42.62.48.157")]),
        (_, RecordType::A) => answer(req, vec![a(&owner, 300, "203.0.113.1")]),
        _ => response(req, ResponseCode::NoError),
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The shipped config.toml and blocklists/, listening on loopback and
/// forwarding to `upstream`, in a temp dir.
fn shipped(upstream: &Upstream) -> Sinkd {
    let config = std::fs::read_to_string(format!("{REPO}/config.toml")).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    let mut section = String::new();
    for line in config.lines() {
        if skipping {
            skipping = !line.trim_end().ends_with(']');
            continue;
        }
        if line.starts_with('[') {
            section = line.trim().to_string();
        }
        if section == "[metrics]" && line.starts_with("listen =") {
            // Tests run side by side: no fixed metrics port.
            continue;
        }
        if line.starts_with("listen =") {
            out.push_str("listen = [\"127.0.0.1:0\"]\n");
        } else if line.starts_with("servers =") {
            out.push_str(&format!("servers = [\"udp://{}\"]\n", upstream.addr));
            skipping = !line.trim_end().ends_with(']');
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        Path::new(&format!("{REPO}/blocklists")),
        &dir.path().join("blocklists"),
    );
    let files: Vec<(String, String)> = walk(&dir.path().join("blocklists"))
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir.path()).unwrap().display().to_string();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    Sinkd::start_with_files(&out, &files)
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_shipped_list_passes_check_without_a_warning() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkd"))
        .args(["check", "-c", &format!("{REPO}/config.toml")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.trim().is_empty(), "no warnings: {err}");
    // doh.txt ships off; it must be clean too.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nservers = [\"udp://127.0.0.1:9\"]\n[blocking]\nlists = [\"{REPO}/blocklists/*.txt\"]\nallow = [\"{REPO}/blocklists/allow/*.txt\"]\nanswer_ips = [\"{REPO}/blocklists/*.cidr\"]\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkd"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_config_blocks_telemetry_and_keeps_what_owners_rely_on() {
    let upstream = Upstream::start(world).await;
    let sinkd = shipped(&upstream);
    for name in [
        "tracking.miui.com.",
        "data.mistat.xiaomi.com.",
        "api.ad.xiaomi.com.",
        "resolver.msg.xiaomi.net.",
        "galleryapi.micloud.xiaomi.net.",
        "smsapi.micloud.xiaomi.net.",
    ] {
        let r = ask(sinkd.addr, name, RecordType::A).await;
        assert_eq!(rdatas(&r), ["0.0.0.0"], "{name} is blocked");
        assert_eq!(ede(&r).unwrap().0, 15, "{name}");
    }
    for name in [
        "account.xiaomi.com.",
        "update.miui.com.",
        "app.mi.com.",
        "connect.rom.miui.com.",
        "www.example.org.",
    ] {
        let r = ask(sinkd.addr, name, RecordType::A).await;
        assert_eq!(rdatas(&r), ["203.0.113.1"], "{name} resolves");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn trackers_behind_cnames_and_in_the_beijing_range_are_blocked() {
    let upstream = Upstream::start(world).await;
    let sinkd = shipped(&upstream);
    let r = ask(sinkd.addr, "stats.shop.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["0.0.0.0"]);
    assert!(
        ede(&r)
            .unwrap()
            .1
            .contains("(CNAME data.mistat.xiaomi.com)"),
        "{:?}",
        ede(&r)
    );
    let r = ask(sinkd.addr, "sync.example.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["0.0.0.0"]);
    assert!(
        ede(&r)
            .unwrap()
            .1
            .contains("42.62.48.0/24 (answer 42.62.48.157)"),
        "{:?}",
        ede(&r)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_doh_canary_and_ddr_keep_devices_on_sinkd() {
    let upstream = Upstream::start(world).await;
    let sinkd = Sinkd::with_upstreams(&[upstream.addr], "");
    let r = ask(sinkd.addr, "use-application-dns.net.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    let r = ask(sinkd.addr, "_dns.resolver.arpa.", RecordType::SVCB).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty(), "NODATA");
    assert_eq!(upstream.count(), 0);

    let off = Sinkd::with_upstreams(&[upstream.addr], "[blocking]\nbypass_hygiene = false\n");
    let r = ask(off.addr, "use-application-dns.net.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["203.0.113.1"], "off: forwarded like any name");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_firewall_feed_has_ranges_addresses_and_port_853_in_every_format() {
    let upstream = Upstream::start(|req: &Message| {
        let q = &req.queries[0];
        let owner = q.name().to_string();
        Reply::Answer(match (owner.as_str(), q.query_type()) {
            ("upload.example.test.", RecordType::A) => {
                answer(req, vec![a(&owner, 60, "203.0.113.9")])
            }
            ("upload.example.test.", RecordType::AAAA) => {
                answer(req, vec![aaaa(&owner, 60, "2001:db8::9")])
            }
            ("inside.example.test.", RecordType::A) => {
                answer(req, vec![a(&owner, 60, "42.62.48.157")])
            }
            _ => response(req, ResponseCode::NoError),
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ranges.cidr"),
        "42.62.48.0/24\n2001:db8:42::/48\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("names.txt"),
        "upload.example.test\ninside.example.test\n*.wild.example.test\n",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nservers = [\"udp://{}\"]\n[blocking]\nanswer_ips = [\"ranges.cidr\"]\n\
             [firewall]\nresolve = [\"names.txt\"]\n",
            upstream.addr
        ),
    )
    .unwrap();
    let feed = |format: &str| {
        let config = config.clone();
        let format = format.to_string();
        async move {
            tokio::task::spawn_blocking(move || {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkd"))
                    .args(["firewall", "--format", &format, "-c"])
                    .arg(&config)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap()
            })
            .await
            .unwrap()
        }
    };

    let plain = feed("plain").await;
    assert!(plain.contains("42.62.48.0/24\t# ranges.cidr:1"), "{plain}");
    assert!(plain.contains("2001:db8:42::/48"), "{plain}");
    assert!(
        plain.contains("203.0.113.9\t# upload.example.test"),
        "{plain}"
    );
    assert!(
        plain.contains("2001:db8::9\t# upload.example.test"),
        "{plain}"
    );
    assert!(
        !plain.contains("42.62.48.157"),
        "inside a listed range already: {plain}"
    );
    assert!(plain.contains("853"), "{plain}");
    assert_eq!(
        upstream.count(),
        4,
        "looked up once, then kept: A and AAAA of two names"
    );

    let nft = feed("nft").await;
    assert!(
        nft.contains("elements = { 42.62.48.0/24, 203.0.113.9 }"),
        "{nft}"
    );
    assert!(nft.contains("th dport 853 reject"), "{nft}");
    if std::process::Command::new("nft")
        .arg("--version")
        .output()
        .is_ok()
    {
        let file = dir.path().join("feed.nft");
        std::fs::write(&file, &nft).unwrap();
        let check = std::process::Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nft -c -f: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let iptables = feed("iptables").await;
    assert!(
        iptables.contains("iptables -A SINKD_BLOCK -d 42.62.48.0/24 -j REJECT"),
        "{iptables}"
    );
    assert!(
        iptables.contains("ip6tables -A SINKD_BLOCK -d 2001:db8::9 -j REJECT"),
        "{iptables}"
    );
    assert!(
        iptables.contains("iptables -A SINKD_BLOCK -p udp --dport 853 -j REJECT"),
        "{iptables}"
    );
    assert_eq!(upstream.count(), 4, "the stored addresses are reused");
}

#[test]
fn the_report_shows_each_device_in_text_and_html() {
    let log = format!("{REPO}/tests/fixtures/querylog.jsonl");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sinkd"))
            .arg("report")
            .args(["--file", &log])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&[]);
    for expected in [
        "Anna's Redmi Note",
        "Xiaomi telemetry",
        "tracking.miui.com",
        "Mi Cloud sync",
        "HTTP-DNS",
        "resolver.msg.xiaomi.net",
        "use-application-dns.net",
    ] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    let tv = run(&["--device", "Living-room Mi TV"]);
    assert!(!tv.contains("Anna's Redmi Note"), "{tv}");

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    run(&["--html", page.to_str().unwrap()]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<svg"), "charts");
    assert!(
        html.contains("Anna&#39;s Redmi Note")
            || html.contains("Anna&#x27;s Redmi Note")
            || html.contains("Anna's Redmi Note")
    );
    for fetch in ["http://", "https://", "src=", "<script"] {
        assert!(!html.contains(fetch), "self-contained, no {fetch}");
    }
}
