//! The list parsers and matchers: any text (invalid UTF-8 replaced, as
//! `blocking::load` does) as a domain list, as several list files (the text
//! split at NUL bytes, odd parts as allow files) and as an answer-IP list;
//! then names and addresses taken from the text, and a few fixed ones, are
//! checked against what was built.
//!
//! Besides no panic and no hang, two facts are checked: a line that is
//! nothing but a valid lowercase name blocks that name when the text has no
//! exception (`@@`) in it, and a line that is nothing but an IP address puts
//! that address in the range set.

#![no_main]

use std::net::IpAddr;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use sinkd::policy::{DomainSetBuilder, RangeSetBuilder, Verdict, normalize_name};

const FIXED_NAMES: &[&str] = &[
    "example.com",
    "www.example.com",
    "a.b.c.d.example.com",
    "miui.com",
    "data.mistat.xiaomi.com",
    "com",
    "",
    ".",
    "..",
    "a..b",
    "-",
    "xn--bcher-kva.example",
];

const FIXED_IPS: &[&str] = &[
    "0.0.0.0",
    "255.255.255.255",
    "42.62.48.157",
    "10.1.2.3",
    "::",
    "::1",
    "::ffff:42.62.48.1",
    "2001:db8::1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// A line the plain-name fast path takes: a valid, lowercase name.
fn plain_name(line: &str) -> bool {
    !line.is_empty()
        && line.len() <= 253
        && line
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.'))
        && line.bytes().any(|b| !b.is_ascii_digit() && b != b'.')
        && line.split('.').all(|l| (1..=63).contains(&l.len()))
}

/// A counted repetition of 100 or more (`a{1000}`): the regex crate takes
/// about 0.3 s (under ASan) to find such a pattern over its size limit, and a
/// corpus full of them runs at 20 inputs a second. Such lines are rejected
/// by the regex crate's own limit, not by sinkd, so they are skipped here.
fn big_repetition(text: &str) -> bool {
    text.as_bytes()
        .windows(4)
        .any(|w| w[0] == b'{' && w[1..].iter().all(u8::is_ascii_digit))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let text = text.as_ref();
    if big_repetition(text) {
        return;
    }

    // Names and addresses to ask about: tokens of the text, and fixed ones.
    let tokens: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || "|^@/$,#!*".contains(c))
        .filter(|t| !t.is_empty())
        .take(64)
        .collect();

    // One file, as a blocklist.
    let mut builder = DomainSetBuilder::new();
    let _ = builder.add_text(0, text, false);
    let set = builder.build();
    let _ = (
        set.len(),
        set.block_len(),
        set.allow_len(),
        set.heap_bytes(),
    );
    for name in tokens.iter().chain(FIXED_NAMES) {
        let normal = normalize_name(name);
        let _ = set.check(&normal);
        let _ = set.check(name);
        // Every suffix, as a lookup walks them.
        let mut rest = normal.as_ref();
        while let Some((_, parent)) = rest.split_once('.') {
            let _ = set.check(parent);
            rest = parent;
        }
    }
    if !text.contains("@@") {
        let body = text.strip_prefix('\u{feff}').unwrap_or(text);
        for line in body.split('\n').map(str::trim_ascii).take(256) {
            if plain_name(line) {
                assert!(
                    matches!(set.check(line), Verdict::Blocked(_)),
                    "listed name {line:?} is not blocked: {:?}",
                    set.check(line)
                );
            }
        }
    }

    // Several files, block and allow.
    if text.contains('\0') {
        let mut builder = DomainSetBuilder::new();
        for (i, part) in text.split('\0').take(8).enumerate() {
            let _ = builder.add_text(i as u16, part, i % 2 == 1);
        }
        let set = builder.build();
        for name in tokens.iter().chain(FIXED_NAMES) {
            let _ = set.check(&normalize_name(name));
        }
    }

    // The same text as an answer-IP list.
    let mut ranges = RangeSetBuilder::new();
    let _ = ranges.add_text(0, text);
    let ranges = ranges.build();
    let _ = (ranges.len(), ranges.is_empty(), ranges.iter().count());
    for token in tokens.iter().chain(FIXED_IPS) {
        if let Ok(ip) = token.parse::<IpAddr>() {
            let _ = ranges.check(ip);
        }
    }
    for line in text.split('\n').map(str::trim_ascii).take(256) {
        if let Ok(ip) = line.parse::<IpAddr>() {
            assert!(
                ranges.check(ip).is_some(),
                "listed address {ip} is not in the range set"
            );
        }
        if let Ok(net) = line.parse::<IpNet>() {
            for ip in [net.network(), net.broadcast()] {
                assert!(
                    ranges.check(ip).is_some(),
                    "address {ip} of listed range {net} is not in the range set"
                );
            }
        }
    }
});
