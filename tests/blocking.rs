//! The sinkhole over real sockets: list formats and precedence, every block
//! mode and query type, answer inspection, live reload.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

/// An upstream that knows a few names, including cloaked trackers.
fn zone(req: &Message) -> Reply {
    let q = &req.queries[0];
    let owner = q.name().to_string();
    let m = match (owner.as_str(), q.query_type()) {
        ("cloaked.shop.test.", RecordType::A) => answer(
            req,
            vec![
                cname(&owner, 300, "shop.tracker.miui.com."),
                a("shop.tracker.miui.com.", 300, "192.0.2.50"),
            ],
        ),
        ("photos.example.test.", RecordType::A) => {
            answer(req, vec![a(&owner, 300, "42.62.48.157")])
        }
        ("beijing.example.test.", RecordType::AAAA) => {
            answer(req, vec![aaaa(&owner, 300, "2001:db8:42::1")])
        }
        (_, RecordType::A) => answer(req, vec![a(&owner, 300, "192.0.2.1")]),
        (_, RecordType::AAAA) => answer(req, vec![aaaa(&owner, 300, "2001:db8::1")]),
        _ => {
            let mut m = response(req, ResponseCode::NoError);
            m.authorities.push(soa("test.", 3600, 60));
            m
        }
    };
    Reply::Answer(m)
}

const LIST: &str = "\
# every form, mixed freely\r
miui.com                     # subtree, trailing comment\r
0.0.0.0 exact.example.test   other.example.test\r
||adblock.example.test^\r
|only.example.test^\r
*.sub.example.test\r
/^ads[0-9]+\\./\r
! an adblock comment\r
@@||ok.miui.com^\r
\tTabbed.Example.Test.  \r
bücher.example.test\r
this is not a rule\r
";

fn start(upstream: &Upstream, blocking: &str) -> Sinkd {
    Sinkd::start_with_files(
        &config_for(&[upstream.addr], &format!("[blocking]\n{blocking}\n")),
        &[
            ("lists/main.txt", LIST),
            (
                "lists/allow.txt",
                "# exceptions\nallowed.example.test\nphotos.example.test\n",
            ),
            (
                "lists/ranges.cidr",
                "42.62.48.0/24   # Xiaomi Beijing, 2014\n2001:db8:42::/48\n",
            ),
        ],
    )
}

const DEFAULT: &str =
    "lists = [\"lists/main.txt\"]\nallow = [\"lists/allow.txt\"]\nanswer_ips = [\"lists/*.cidr\"]";

async fn is_blocked(sinkd: &Sinkd, name: &str) -> bool {
    let r = ask(sinkd.addr, name, RecordType::A).await;
    rdatas(&r) == ["0.0.0.0"]
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_and_precedence_rule() {
    let upstream = Upstream::start(zone).await;
    let sinkd = start(&upstream, DEFAULT);
    let cases = [
        ("miui.com.", true),
        ("tracking.miui.com.", true),
        ("a.b.c.miui.com.", true),
        ("notmiui.com.", false),
        ("ok.miui.com.", false), // @@ exception wins over the subtree
        ("deeper.ok.miui.com.", false),
        ("exact.example.test.", true),
        ("www.exact.example.test.", false), // hosts lines are exact
        ("other.example.test.", true),
        ("adblock.example.test.", true),
        ("x.adblock.example.test.", true),
        ("only.example.test.", true),
        ("x.only.example.test.", false),
        ("sub.example.test.", false), // *. is subdomains only
        ("a.sub.example.test.", true),
        ("ads42.example.test.", true), // regex
        ("ads.example.test.", false),
        ("tabbed.example.test.", true),
        ("TRACKING.MIUI.COM.", true),
        ("xn--bcher-kva.example.test.", true), // the IDN entry, as punycode
        ("allowed.example.test.", false),
    ];
    for (name, blocked) in cases {
        assert_eq!(is_blocked(&sinkd, name).await, blocked, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn null_mode_answers_by_type_with_the_rule_in_an_ede() {
    let upstream = Upstream::start(zone).await;
    let sinkd = start(&upstream, DEFAULT);

    let r = ask(sinkd.addr, "tracking.miui.com.", RecordType::A).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(rdatas(&r), ["0.0.0.0"]);
    assert_eq!(r.answers[0].ttl, 60);
    let (code, text) = ede(&r).expect("an EDE");
    assert_eq!(code, 15, "EDE 15 Blocked");
    assert_eq!(text, "lists/main.txt:2 miui.com");

    let r = ask(sinkd.addr, "tracking.miui.com.", RecordType::AAAA).await;
    assert_eq!(rdatas(&r), ["::"]);

    for qtype in [RecordType::HTTPS, RecordType::MX, RecordType::TXT] {
        let r = ask(sinkd.addr, "tracking.miui.com.", qtype).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NoError, "{qtype}");
        assert!(r.answers.is_empty(), "{qtype}: NODATA");
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA, "{qtype}");
        assert_eq!(r.authorities[0].ttl, 60);
    }
    // Without EDNS the answer is the same, without an OPT.
    let r = ask_udp(
        sinkd.addr,
        &query("tracking.miui.com.", RecordType::A, None),
    )
    .await;
    assert_eq!(rdatas(&r), ["0.0.0.0"]);
    assert!(r.edns.is_none());
    assert_eq!(upstream.count(), 0, "blocked names never go upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn nxdomain_nodata_refused_and_ip_modes() {
    let upstream = Upstream::start(zone).await;
    async fn answers(upstream: &Upstream, mode: &str) -> (Message, Message, Message) {
        let sinkd = start(
            upstream,
            &format!("{DEFAULT}\nmode = \"{mode}\"\nttl = 300"),
        );
        let a = ask(sinkd.addr, "tracking.miui.com.", RecordType::A).await;
        let aaaa = ask(sinkd.addr, "tracking.miui.com.", RecordType::AAAA).await;
        let mx = ask(sinkd.addr, "tracking.miui.com.", RecordType::MX).await;
        (a, aaaa, mx)
    }
    let check = |mode| answers(&upstream, mode);

    let (a, aaaa, mx) = check("nxdomain").await;
    for r in [&a, &aaaa, &mx] {
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
        assert_eq!(r.authorities[0].ttl, 300);
        assert_eq!(ede(r).unwrap().0, 15);
    }

    let (a, _, mx) = check("nodata").await;
    for r in [&a, &mx] {
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.answers.is_empty());
        assert_eq!(r.authorities[0].record_type(), RecordType::SOA);
    }

    let (a, _, _) = check("refused").await;
    assert_eq!(a.metadata.response_code, ResponseCode::Refused);
    assert_eq!(ede(&a).unwrap().0, 15);

    let (a, aaaa, mx) = check("ip:192.0.2.9,2001:db8::9").await;
    assert_eq!(rdatas(&a), ["192.0.2.9"]);
    assert_eq!(a.answers[0].ttl, 300);
    assert_eq!(rdatas(&aaaa), ["2001:db8::9"]);
    assert!(mx.answers.is_empty());

    let (_, aaaa, _) = check("ip:192.0.2.9").await;
    assert!(aaaa.answers.is_empty(), "no IPv6 given: NODATA for AAAA");
    assert_eq!(aaaa.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(upstream.count(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn cname_cloaking_and_blocked_answer_addresses() {
    let upstream = Upstream::start(zone).await;
    let sinkd = start(&upstream, DEFAULT);

    let r = ask(sinkd.addr, "cloaked.shop.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["0.0.0.0"], "the CNAME target is on a list");
    assert_eq!(
        ede(&r).unwrap().1,
        "lists/main.txt:2 miui.com (CNAME shop.tracker.miui.com)"
    );

    let r = ask(sinkd.addr, "innocent.example.test.", RecordType::A).await;
    assert_eq!(rdatas(&r), ["192.0.2.1"]);

    let r = ask(sinkd.addr, "beijing.example.test.", RecordType::AAAA).await;
    assert_eq!(rdatas(&r), ["::"]);
    assert_eq!(
        ede(&r).unwrap().1,
        "lists/ranges.cidr:2 2001:db8:42::/48 (answer 2001:db8:42::1)"
    );

    // Allow-listed names are exempt from inspection; and inspection also runs
    // on cache hits.
    for _ in 0..2 {
        let r = ask(sinkd.addr, "photos.example.test.", RecordType::A).await;
        assert_eq!(
            rdatas(&r),
            ["42.62.48.157"],
            "photos.example.test is allow-listed"
        );
        let r = ask(sinkd.addr, "cloaked.shop.test.", RecordType::A).await;
        assert_eq!(rdatas(&r), ["0.0.0.0"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_edited_while_clients_ask_takes_effect_without_a_failed_query() {
    let upstream = Upstream::start(zone).await;
    let sinkd = start(&upstream, DEFAULT);
    assert!(!is_blocked(&sinkd, "new.example.test.").await);

    let addr = sinkd.addr;
    let asking = tokio::spawn(async move {
        let started = Instant::now();
        let mut answers = Vec::new();
        while started.elapsed() < Duration::from_secs(3) {
            let r = ask(addr, "new.example.test.", RecordType::A).await;
            assert_eq!(r.metadata.response_code, ResponseCode::NoError);
            answers.push((started.elapsed(), rdatas(&r)));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        answers
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // An editor's save: write a new file, then rename it over the old one.
    let list = sinkd.path("lists/main.txt");
    let temp = sinkd.path("lists/.main.txt.swp");
    std::fs::write(&temp, format!("{LIST}new.example.test\n")).unwrap();
    std::fs::rename(&temp, &list).unwrap();
    let edited = Instant::now();

    let answers = asking.await.unwrap();
    assert!(
        answers.len() > 50,
        "the client kept asking: {}",
        answers.len()
    );
    let first_blocked = answers
        .iter()
        .find(|(_, r)| r == &["0.0.0.0"])
        .expect("the edit took effect");
    assert!(
        first_blocked.0 < Duration::from_millis(500) + Duration::from_secs(1),
        "within a second of the edit ({:?} after start, edit at 500 ms)",
        first_blocked.0
    );
    let _ = edited;
    // Once blocked, blocked for good: never a half-loaded list.
    let after: Vec<_> = answers
        .iter()
        .skip_while(|(_, r)| r != &["0.0.0.0"])
        .collect();
    assert!(after.iter().all(|(_, r)| r == &["0.0.0.0"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_files_sinkd_does_not_read_never_cause_a_reload() {
    let upstream = Upstream::start(zone).await;
    let sinkd = start(&upstream, DEFAULT);
    // The query log beside the config, and another file written to often,
    // in watched directories.
    for i in 0..30 {
        ask(sinkd.addr, &format!("q{i}.example.test."), RecordType::A).await;
        std::fs::write(sinkd.path("lists/notes.bak"), format!("{i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !sinkd.querylog().is_empty(),
        "the log was written meanwhile"
    );
    assert!(!sinkd.log().contains("reloading"), "{}", sinkd.log());

    // A file it does read still reloads.
    std::fs::write(
        sinkd.path("lists/main.txt"),
        format!("{LIST}new.example.test\n"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !sinkd.log().contains("reloading") {
        assert!(Instant::now() < deadline, "the list edit reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_and_config_edits_reload_and_a_lost_file_keeps_the_last_good_set() {
    let upstream = Upstream::start(zone).await;
    let sinkd = start(&upstream, DEFAULT);
    assert!(is_blocked(&sinkd, "tracking.miui.com.").await);

    // The list disappears (deleted, unreadable): the running set stays.
    std::fs::remove_file(sinkd.path("lists/main.txt")).unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        is_blocked(&sinkd, "tracking.miui.com.").await,
        "last good set kept"
    );
    sinkd.hangup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        is_blocked(&sinkd, "tracking.miui.com.").await,
        "still, after SIGHUP"
    );

    // The config now names another list: a config edit reloads.
    std::fs::write(sinkd.path("lists/other.txt"), "other-tracker.test\n").unwrap();
    let config = std::fs::read_to_string(&sinkd.config_path)
        .unwrap()
        .replace("lists/main.txt", "lists/other.txt");
    std::fs::write(&sinkd.config_path, config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !is_blocked(&sinkd, "other-tracker.test.").await {
        assert!(Instant::now() < deadline, "config edit picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!is_blocked(&sinkd, "tracking.miui.com.").await);

    // A broken config keeps the running one.
    std::fs::write(&sinkd.config_path, "[blocking\nlists = 3").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(is_blocked(&sinkd, "other-tracker.test.").await);
}

#[test]
fn check_reports_broken_lines_and_query_explains_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lists")).unwrap();
    std::fs::write(dir.path().join("lists/main.txt"), LIST).unwrap();
    std::fs::write(dir.path().join("lists/allow.txt"), "ok.example.test\n").unwrap();
    std::fs::write(
        dir.path().join("lists/ranges.cidr"),
        "42.62.48.0/24\n42.62.48.0/33\n",
    )
    .unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[upstream]\nservers = [\"udp://127.0.0.1:9\"]\n[blocking]\n{DEFAULT}\n"),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_sinkd"))
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap()
    };

    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let list = dir.path().join("lists/main.txt");
    assert!(
        err.contains(&format!("{}:12: ", list.display())),
        "the broken line is named: {err}"
    );
    assert!(err.contains("ranges.cidr:2: "), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("3 list files"), "{text}");

    let out = run(&["query", "www.tracking.miui.com"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("blocked by lists/main.txt:2 miui.com"),
        "{text}"
    );
    let out = run(&["query", "ok.miui.com", "--type", "AAAA"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("AAAA: allowed by lists/main.txt:9 |ok.miui.com^")
            || text.contains("allowed by lists/main.txt:9"),
        "{text}"
    );
    let out = run(&["query", "example.org"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("forwarded"));
}

/// The scheduling policy of each of sinkd's threads, by thread name:
/// field 41 of `/proc/PID/task/TID/stat` (0 normal, 5 SCHED_IDLE).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut policies = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.join("comm")),
            std::fs::read_to_string(task.join("stat")),
        ) else {
            continue;
        };
        // The name in field 2 may hold spaces: count fields after its ')'.
        let after_name = &stat[stat.rfind(')').unwrap() + 1..];
        let policy = after_name.split_whitespace().nth(41 - 3).unwrap();
        policies.push((comm.trim().to_string(), policy.parse().unwrap()));
    }
    policies
}

/// A reload of a million names takes a third of a second of CPU: a big
/// list's rebuild runs only when no query wants the CPU, from the reload
/// that adds it on (judged by the files, not by the running lists). Queries,
/// and the reload thread that waits for edits, keep the normal policy.
#[tokio::test(flavor = "multi_thread")]
async fn adding_a_big_list_rebuilds_at_idle_priority_and_queries_do_not() {
    let upstream = Upstream::start(zone).await;
    let sinkd = Sinkd::start_with_files(
        &config_for(&[upstream.addr], "[blocking]\nlists = [\"lists/\"]\n"),
        &[("lists/small.txt", "small.test\n"), ("staging/.keep", "")],
    );
    assert!(is_blocked(&sinkd, "small.test.").await);
    let big: String = (0..50_000).map(|i| format!("n{i}.big.test\n")).collect();
    // Written where sinkd does not watch and renamed in, as editors do: one
    // change. (Written in the config's directory, its write could start a
    // reload that weighs the lists before the rename and reads them after.)
    std::fs::write(sinkd.path("staging/big.part"), &big).unwrap();
    std::fs::rename(sinkd.path("staging/big.part"), sinkd.path("lists/big.txt")).unwrap();
    // The rebuild thread sets its policy as its first step: wait for that.
    let deadline = Instant::now() + Duration::from_secs(10);
    let policies = loop {
        let policies = thread_policies(sinkd.pid());
        let rebuilding_at_idle = policies
            .iter()
            .any(|(name, policy)| name == "sinkd-rebuild" && *policy == libc::SCHED_IDLE as u32);
        assert!(
            Instant::now() < deadline,
            "no rebuild thread seen at idle priority: {policies:?}\nsinkd's log:\n{}",
            sinkd.log()
        );
        if rebuilding_at_idle {
            break policies;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let policy_of = |wanted: &str| {
        policies
            .iter()
            .filter(|(name, _)| name == wanted)
            .map(|(_, policy)| *policy)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        policy_of("sinkd-rebuild"),
        [libc::SCHED_IDLE as u32],
        "{policies:?}"
    );
    assert_eq!(
        policy_of("sinkd-reload"),
        [libc::SCHED_OTHER as u32],
        "{policies:?}"
    );
    let workers = policy_of("tokio-rt-worker");
    assert!(!workers.is_empty(), "{policies:?}");
    assert!(
        workers.iter().all(|&p| p == libc::SCHED_OTHER as u32),
        "{policies:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_blocked(&sinkd, "n49999.big.test.").await {
        assert!(Instant::now() < deadline, "the big list never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
