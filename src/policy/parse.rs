//! Line parsers for blocklist / allowlist files and answer-IP files.
//!
//! The parsers are zero-allocation on the common path: a line is a `&str`
//! slice of the file text, and a name that is already lowercase ASCII is
//! handed to the consumer as a slice of that line. Only names that need
//! lowercasing (copied into one reusable buffer) or IDN conversion allocate.
//!
//! Accepted domain-list forms (mixed freely in one file):
//!
//! | line                          | rule                                       |
//! | ----------------------------- | ------------------------------------------ |
//! | `example.com`                 | [`RuleKind::Subtree`]                      |
//! | `0.0.0.0 a.com b.com`         | [`RuleKind::Exact`] for each name          |
//! | `\|\|example.com^`            | [`RuleKind::Subtree`]                      |
//! | `\|example.com^`              | [`RuleKind::Exact`]                        |
//! | `*.example.com`               | [`RuleKind::SubdomainsOnly`]               |
//! | `/regex/`                     | [`RuleKind::Regex`] (pattern as written)   |
//! | `@@` + any of the above       | exception (allow)                          |
//!
//! `#` or `!` at the start of a line starts a comment; on an entry line a `#`
//! preceded by whitespace starts a trailing comment (not on `/regex/` lines).
//! `$important` is accepted (and ignored) on adblock rules; any other
//! `$modifier` is a line error.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// How a domain rule matches names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleKind {
    /// The name and every name below it (`example.com`, `||example.com^`).
    Subtree,
    /// Exactly the name (`|example.com^`, hosts-file lines).
    Exact,
    /// Every name below the name, not the name itself (`*.example.com`).
    SubdomainsOnly,
    /// A regular expression over the whole name (`/regex/`).
    Regex,
}

/// Where a rule came from: index into the snapshot's file table + 1-based line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub file: u16,
    pub line: u32,
}

/// A line that could not be parsed; the line is skipped, the rest of the file loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: u32,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for LineError {}

/// One rule parsed from a domain-list line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule<'a> {
    /// A name rule. `name` is normalized: lowercase ASCII (IDNs as punycode),
    /// no trailing dot, validated. `kind` is never [`RuleKind::Regex`].
    Name {
        name: &'a str,
        kind: RuleKind,
        allow: bool,
    },
    /// A `/regex/` rule; `pattern` is the text between the slashes.
    Regex { pattern: &'a str, allow: bool },
}

/// Names that hosts files carry as boilerplate; skipped silently on hosts lines.
const HOSTS_BOILERPLATE: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "localhost4",
    "localhost4.localdomain4",
    "localhost6",
    "localhost6.localdomain6",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Longest part of an offending line quoted in an error message.
const QUOTE_MAX: usize = 80;

/// Quote (a prefix of) a line for an error message.
fn quote(s: &str) -> String {
    if s.len() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let mut end = QUOTE_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{:?}…", &s[..end])
    }
}

/// Iterate over `(line_number, trimmed_line)` for the non-blank, non-comment
/// lines of `text`. Handles a UTF-8 BOM, CRLF, and leading/trailing spaces and tabs.
fn content_lines(text: &str) -> impl Iterator<Item = (u32, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.split('\n').enumerate().filter_map(|(i, raw)| {
        let line = raw.trim_ascii();
        match line.as_bytes().first() {
            None | Some(b'#') | Some(b'!') => None,
            Some(_) => Some((u32::try_from(i + 1).unwrap_or(u32::MAX), line)),
        }
    })
}

/// Cut a trailing comment: a `#` preceded by a space or tab. The result is trimmed.
pub fn strip_trailing_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    let mut from = 0;
    while let Some(pos) = memchr_hash(&bytes[from..]) {
        let at = from + pos;
        if at > 0 && matches!(bytes[at - 1], b' ' | b'\t') {
            return line[..at].trim_ascii_end();
        }
        from = at + 1;
    }
    line
}

#[inline]
fn memchr_hash(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'#')
}

/// Validate a lowercase ASCII name (no trailing dot): labels of 1..=63
/// characters from `[a-z0-9_-]`, at most 253 characters in all.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "name is {} characters long (at most 253)",
            name.len()
        ));
    }
    let mut label = 0usize;
    for &b in name.as_bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {
                label += 1;
                if label > 63 {
                    return Err("label longer than 63 characters".into());
                }
            }
            b'.' => {
                if label == 0 {
                    return Err("empty label".into());
                }
                label = 0;
            }
            _ => {
                let c = name
                    .chars()
                    .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
                    .unwrap_or('?');
                return Err(format!("invalid character {c:?}"));
            }
        }
    }
    if label == 0 {
        return Err("empty label".into());
    }
    Ok(())
}

/// Normalize and validate a list entry's name: strip one trailing dot,
/// lowercase, convert an IDN to punycode, validate. Returns a slice of `raw`
/// when it already was normal, else a slice of `buf`.
pub fn normalize_entry<'a>(raw: &'a str, buf: &'a mut String) -> Result<&'a str, String> {
    let raw = raw.strip_suffix('.').unwrap_or(raw);
    let name: &'a str = if !raw.is_ascii() {
        match idna::domain_to_ascii_cow(raw.as_bytes(), idna::AsciiDenyList::EMPTY) {
            Ok(ascii) => {
                buf.clear();
                buf.push_str(&ascii);
                buf.as_str()
            }
            Err(_) => return Err("invalid internationalized name".into()),
        }
    } else if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        buf.clear();
        buf.push_str(raw);
        buf.make_ascii_lowercase();
        buf.as_str()
    } else {
        raw
    };
    validate_name(name)?;
    Ok(name)
}

/// One pass: `name` is a valid, lowercase name with a letter, `-` or `_`
/// somewhere (so not an IP address) and no trailing dot. A `false` sends the
/// line down the general path, which gives the precise verdict.
#[inline]
fn is_plain_normal_name(name: &str) -> bool {
    if name.len() > 253 {
        return false;
    }
    let mut label = 0u32;
    let mut non_digit = false;
    for &b in name.as_bytes() {
        match b {
            b'a'..=b'z' | b'-' | b'_' => {
                non_digit = true;
                label += 1;
            }
            b'0'..=b'9' => label += 1,
            b'.' => {
                if label == 0 {
                    return false;
                }
                label = 0;
                continue;
            }
            _ => return false,
        }
        if label > 63 {
            return false;
        }
    }
    label > 0 && non_digit
}

fn is_hosts_boilerplate(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    HOSTS_BOILERPLATE
        .iter()
        .any(|b| b.eq_ignore_ascii_case(name))
}

/// Parse a domain list. `sink` receives each rule with its 1-based line; it may
/// refuse a rule with a message (e.g. an invalid regex), which becomes that
/// line's error. Lines in error are skipped; returns the errors in line order.
/// `as_allow` makes every entry an exception (allow file).
pub fn parse_domain_list<F>(text: &str, as_allow: bool, mut sink: F) -> Vec<LineError>
where
    F: FnMut(u32, Rule<'_>) -> Result<(), String>,
{
    let mut errors = Vec::new();
    let mut buf = String::new();
    for (line_no, line) in content_lines(text) {
        if let Err(message) = parse_line(line, as_allow, &mut buf, &mut |r| sink(line_no, r)) {
            errors.push(LineError {
                line: line_no,
                message,
            });
        }
    }
    errors
}

/// Parse one trimmed, non-comment line. On a hosts line with several names,
/// valid names are still emitted when another one is bad; the first problem
/// is returned.
fn parse_line(
    line: &str,
    as_allow: bool,
    buf: &mut String,
    sink: &mut dyn FnMut(Rule<'_>) -> Result<(), String>,
) -> Result<(), String> {
    // Fast path for the bulk of real lists: a plain name, already normal.
    if is_plain_normal_name(line) {
        return sink(Rule::Name {
            name: line,
            kind: RuleKind::Subtree,
            allow: as_allow,
        });
    }
    // Adblock header such as "[Adblock Plus 2.0]".
    if line.starts_with('[') && line.ends_with(']') {
        return Ok(());
    }
    let (allow, body) = match line.strip_prefix("@@") {
        Some(rest) => (true, rest),
        None => (as_allow, line),
    };

    // Regex lines: no trailing-comment stripping, the pattern is as written.
    if let Some(rest) = body.strip_prefix('/') {
        return match rest.strip_suffix('/') {
            Some(pattern) if !pattern.is_empty() => sink(Rule::Regex { pattern, allow }),
            _ => Err(format!(
                "not a domain, hosts line or adblock rule: {} (a regex is written /pattern/)",
                quote(line)
            )),
        };
    }

    let body = strip_trailing_comment(body);
    if body.is_empty() {
        return Err(format!("no rule after \"@@\": {}", quote(line)));
    }

    if let Some(rest) = body.strip_prefix("||") {
        let raw = adblock_name(rest, line)?;
        return emit_name(raw, RuleKind::Subtree, allow, buf, sink);
    }
    if let Some(rest) = body.strip_prefix('|') {
        let raw = adblock_name(rest, line)?;
        return emit_name(raw, RuleKind::Exact, allow, buf, sink);
    }
    if let Some(rest) = body.strip_prefix("*.") {
        if rest.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(format!(
                "not a domain, hosts line or adblock rule: {}",
                quote(line)
            ));
        }
        return emit_name(rest, RuleKind::SubdomainsOnly, allow, buf, sink);
    }

    if body.bytes().any(|b| b == b' ' || b == b'\t') {
        // Hosts line: IP address then names.
        let mut tokens = body.split_ascii_whitespace();
        let first = tokens.next().unwrap_or("");
        if first.parse::<IpAddr>().is_err() {
            return Err(format!(
                "not a domain, hosts line or adblock rule: {}",
                quote(line)
            ));
        }
        let mut result = Ok(());
        let mut names = 0usize;
        for token in tokens {
            names += 1;
            if is_hosts_boilerplate(token) {
                continue;
            }
            let r = match normalize_entry(token, buf) {
                Ok(name) => sink(Rule::Name {
                    name,
                    kind: RuleKind::Exact,
                    allow,
                }),
                Err(e) => Err(format!("invalid name {}: {e}", quote(token))),
            };
            if result.is_ok() {
                result = r;
            }
        }
        if names == 0 {
            return Err(format!("hosts line without names: {}", quote(line)));
        }
        return result;
    }

    // A single token: a plain domain (subtree).
    if looks_like_ip(body) {
        return Err(format!(
            "an IP address, not a domain: {} (answer-IP ranges go in an answer-IP file)",
            quote(line)
        ));
    }
    match normalize_entry(body, buf) {
        Ok(name) => sink(Rule::Name {
            name,
            kind: RuleKind::Subtree,
            allow,
        }),
        Err(e) => Err(format!(
            "not a domain, hosts line or adblock rule: {} ({e})",
            quote(line)
        )),
    }
}

fn emit_name(
    raw: &str,
    kind: RuleKind,
    allow: bool,
    buf: &mut String,
    sink: &mut dyn FnMut(Rule<'_>) -> Result<(), String>,
) -> Result<(), String> {
    match normalize_entry(raw, buf) {
        Ok(name) => sink(Rule::Name { name, kind, allow }),
        Err(e) => Err(format!("invalid name {}: {e}", quote(raw))),
    }
}

/// The name of an adblock rule body after `||` or `|`: `name^` optionally
/// followed by `$important`.
fn adblock_name<'a>(rest: &'a str, line: &str) -> Result<&'a str, String> {
    let Some(caret) = rest.find('^') else {
        return Err(format!(
            "adblock rule without \"^\" after the name: {}",
            quote(line)
        ));
    };
    let (name, after) = (&rest[..caret], &rest[caret + 1..]);
    if !after.is_empty() {
        let Some(mods) = after.strip_prefix('$') else {
            return Err(format!(
                "unexpected text after \"^\" in adblock rule: {}",
                quote(line)
            ));
        };
        for m in mods.split(',') {
            let m = m.trim_ascii();
            if m != "important" {
                return Err(format!("unsupported modifier ${m}"));
            }
        }
    }
    Ok(name)
}

/// Cheap pre-check before a full IP parse: digits and dots only, or a colon.
fn looks_like_ip(s: &str) -> bool {
    let b = s.as_bytes();
    let plausible = b.contains(&b':') || b.iter().all(|c| c.is_ascii_digit() || *c == b'.');
    plausible && s.parse::<IpAddr>().is_ok()
}

/// Parse an answer-IP list: one address (`42.62.48.157`, `2a00:1450::1`) or
/// CIDR range (`42.62.48.0/24`, `2a00:1450::/32`) a line, same comment rules
/// as domain lists. A range with host bits set is truncated to its network.
pub fn parse_ip_list<F>(text: &str, mut sink: F) -> Vec<LineError>
where
    F: FnMut(u32, IpNet),
{
    let mut errors = Vec::new();
    for (line_no, line) in content_lines(text) {
        let body = strip_trailing_comment(line);
        let parsed = if body.contains('/') {
            body.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| format!("invalid CIDR range: {}", quote(body)))
        } else {
            body.parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| format!("not an IP address or CIDR range: {}", quote(body)))
        };
        match parsed {
            Ok(net) => sink(line_no, net),
            Err(message) => errors.push(LineError {
                line: line_no,
                message,
            }),
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Owned rules: (line, name-or-pattern, kind, allow).
    type Rules = Vec<(u32, String, RuleKind, bool)>;

    fn parse(text: &str, as_allow: bool) -> (Rules, Vec<LineError>) {
        let mut out = Vec::new();
        let errs = parse_domain_list(text, as_allow, |line, rule| {
            match rule {
                Rule::Name { name, kind, allow } => out.push((line, name.to_string(), kind, allow)),
                Rule::Regex { pattern, allow } => {
                    out.push((line, pattern.to_string(), RuleKind::Regex, allow))
                }
            }
            Ok(())
        });
        (out, errs)
    }

    fn one(line: &str) -> (String, RuleKind, bool) {
        let (rules, errs) = parse(line, false);
        assert!(errs.is_empty(), "{line:?}: {errs:?}");
        assert_eq!(rules.len(), 1, "{line:?}: {rules:?}");
        let (_, n, k, a) = rules.into_iter().next().unwrap();
        (n, k, a)
    }

    fn err(line: &str) -> String {
        let (rules, errs) = parse(line, false);
        assert!(rules.is_empty(), "{line:?} parsed: {rules:?}");
        assert_eq!(errs.len(), 1, "{line:?}: {errs:?}");
        assert_eq!(errs[0].line, 1);
        errs[0].message.clone()
    }

    use RuleKind::*;

    #[test]
    fn every_form() {
        assert_eq!(one("example.com"), ("example.com".into(), Subtree, false));
        assert_eq!(
            one("||example.com^"),
            ("example.com".into(), Subtree, false)
        );
        assert_eq!(one("|example.com^"), ("example.com".into(), Exact, false));
        assert_eq!(
            one("*.example.com"),
            ("example.com".into(), SubdomainsOnly, false)
        );
        assert_eq!(
            one("0.0.0.0 example.com"),
            ("example.com".into(), Exact, false)
        );
        assert_eq!(
            one("127.0.0.1 example.com"),
            ("example.com".into(), Exact, false)
        );
        assert_eq!(one(":: example.com"), ("example.com".into(), Exact, false));
        assert_eq!(one("::1 example.com"), ("example.com".into(), Exact, false));
        assert_eq!(one("/^ad[0-9]+\\./"), ("^ad[0-9]+\\.".into(), Regex, false));
        assert_eq!(one("||x.com^$important"), ("x.com".into(), Subtree, false));
        assert_eq!(one("|x.com^$important"), ("x.com".into(), Exact, false));
    }

    #[test]
    fn exceptions() {
        assert_eq!(
            one("@@||example.com^"),
            ("example.com".into(), Subtree, true)
        );
        assert_eq!(one("@@|example.com^"), ("example.com".into(), Exact, true));
        assert_eq!(one("@@example.com"), ("example.com".into(), Subtree, true));
        assert_eq!(
            one("@@*.example.com"),
            ("example.com".into(), SubdomainsOnly, true)
        );
        assert_eq!(one("@@/tracker/"), ("tracker".into(), Regex, true));
        assert_eq!(one("@@||x.com^$important"), ("x.com".into(), Subtree, true));
        // In an allow file every entry is an exception.
        let (rules, errs) = parse(
            "[AdGuard]\na.com\n||b.com^\n0.0.0.0 c.com\n/d/\n@@e.com\n",
            true,
        );
        assert!(errs.is_empty());
        assert!(rules.iter().all(|r| r.3), "{rules:?}");
        assert_eq!(rules.len(), 5);
    }

    #[test]
    fn hosts_lines() {
        let (rules, errs) = parse("127.0.0.1 a.com\tB.com   c.com.\n", false);
        assert!(errs.is_empty(), "{errs:?}");
        let names: Vec<_> = rules.iter().map(|r| (r.1.as_str(), r.2)).collect();
        assert_eq!(
            names,
            [("a.com", Exact), ("b.com", Exact), ("c.com", Exact)]
        );

        let boiler = "127.0.0.1 localhost\n127.0.0.1 localhost.localdomain\n\
            127.0.0.1 local\n255.255.255.255 broadcasthost\n::1 localhost ip6-localhost ip6-loopback\n\
            fe80::1%lo0 localhost\nff00::0 ip6-localnet\nff00::0 ip6-mcastprefix\n\
            ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\nff02::3 ip6-allhosts\n\
            0.0.0.0 0.0.0.0\n127.0.0.1 LocalHost.\n0.0.0.0 localhost real.com\n";
        let (rules, errs) = parse(boiler, false);
        // fe80::1%lo0 is not an address std parses: one error on line 6.
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 6);
        assert_eq!(rules, [(14, "real.com".to_string(), Exact, false)]);

        // An IP alone is neither a hosts line nor a domain.
        assert!(err("0.0.0.0").contains("IP address"));
        assert!(err("2a00:1450::1").contains("IP address"));
        // Bad names on a hosts line: the good ones still load, one error for the line.
        let (rules, errs) = parse("0.0.0.0 good.com bad!name also.good", false);
        assert_eq!(rules.len(), 2);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].message.contains("bad!name"), "{errs:?}");
        // Not an IP at the front.
        assert!(err("foo.com bar.com").starts_with("not a domain, hosts line or adblock rule"));
    }

    #[test]
    fn comments_and_whitespace() {
        let text = "# comment\r\n! adblock comment\r\n\r\n   \t\r\n  example.com  \r\n\
            a.com # trailing\r\n||b.com^\t# trailing\r\n0.0.0.0 c.com d.com # x\r\n\
            e.com#notacomment\r\n   # indented comment\r\n/f # g/\r\n\t*.h.com\t\r\n[Adblock Plus 2.0]\n";
        let (rules, errs) = parse(text, false);
        let got: Vec<_> = rules.iter().map(|r| (r.0, r.1.as_str(), r.2)).collect();
        assert_eq!(
            got,
            [
                (5, "example.com", Subtree),
                (6, "a.com", Subtree),
                (7, "b.com", Subtree),
                (8, "c.com", Exact),
                (8, "d.com", Exact),
                (11, "f # g", Regex),
                (12, "h.com", SubdomainsOnly),
            ]
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 9);
        assert!(
            errs[0].message.contains("invalid character '#'"),
            "{errs:?}"
        );
        // BOM
        assert_eq!(one("\u{feff}bom.com").0, "bom.com");
    }

    #[test]
    fn names_normalized() {
        assert_eq!(one("ExAmPle.COM.").0, "example.com");
        assert_eq!(one("||EXAMPLE.com.^").0, "example.com");
        assert_eq!(one("_dmarc.x-y.com").0, "_dmarc.x-y.com");
        // IDN to punycode.
        assert_eq!(one("bücher.de").0, "xn--bcher-kva.de");
        assert_eq!(one("BÜCHER.de").0, "xn--bcher-kva.de");
        assert_eq!(one("0.0.0.0 пример.рф").0, "xn--e1afmkfd.xn--p1ai");
        assert_eq!(one("||münchen.de^").0, "xn--mnchen-3ya.de");
        assert_eq!(one("xn--mnchen-3ya.de").0, "xn--mnchen-3ya.de");
        assert_eq!(one("com").0, "com");
    }

    #[test]
    fn name_validation() {
        let l63 = "a".repeat(63);
        assert_eq!(one(&format!("{l63}.com")).0.len(), 67);
        assert!(err(&format!("{l63}a.com")).contains("63"));
        let long = vec!["abcdefghi"; 25].join("."); // 249
        assert_eq!(one(&format!("{long}.com")).0.len(), 253);
        assert!(err(&format!("{long}.comm")).contains("253"));
        assert!(err("a..com").contains("empty label"));
        assert!(err(".a.com").contains("empty label"));
        assert!(err("a.com..").contains("empty label"));
        assert!(err("exa$mple.com").contains("invalid character '$'"));
        assert!(err("http://x.com").starts_with("not a domain, hosts line or adblock rule"));
        assert!(err("||a..b^").starts_with("invalid name"));
        assert!(err("*.").contains("invalid name"));
        assert!(err("*.*.x.com").contains("invalid character '*'"));
        assert!(err("*x.com").contains("invalid character '*'"));
    }

    #[test]
    fn adblock_errors() {
        assert_eq!(
            err("||x.com^$third-party"),
            "unsupported modifier $third-party"
        );
        assert_eq!(
            err("||x.com^$important,domain=y.com"),
            "unsupported modifier $domain=y.com"
        );
        assert!(err("||x.com").contains("without \"^\""));
        assert!(err("|x.com").contains("without \"^\""));
        assert!(err("||x.com^|").contains("unexpected text"));
        assert!(err("||x.com/ads^").contains("invalid name"));
        assert!(err("/unterminated").contains("/pattern/"));
        assert!(err("//").contains("/pattern/"));
        assert!(err("@@").contains("no rule"));
        assert!(err("example.com##.banner").contains("invalid character '#'"));
    }

    #[test]
    fn line_numbers_and_sink_errors() {
        let text = "a.com\nbad name here\n\n# c\nb.com\n||c.com^$popup\n/re/\nd.com\n";
        let mut seen = Vec::new();
        let errs = parse_domain_list(text, false, |line, rule| {
            if let Rule::Regex { .. } = rule {
                return Err("invalid regex: nope".into());
            }
            seen.push(line);
            Ok(())
        });
        assert_eq!(seen, [1, 5, 8]);
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 6, 7]);
        assert_eq!(errs[2].message, "invalid regex: nope");
        assert_eq!(errs[0].to_string(), format!("line 2: {}", errs[0].message));
    }

    #[test]
    fn long_line_quoted_briefly() {
        let line = format!("bad {}", "é".repeat(200));
        let e = err(&line);
        assert!(e.len() < 200, "{e}");
        assert!(e.ends_with('…'));
    }

    #[test]
    fn fast_path_agrees_with_general_path() {
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 26].join(".");
        for name in [
            "a.com",
            "x",
            "a-b_c.d9",
            "1.2.3.4",
            "123.456",
            "a.com.",
            "a..com",
            ".a",
            "A.com",
            "a.com ",
            "a#b",
            &long_label,
            &long_name,
            "1a.2",
            "é.com",
        ] {
            let mut buf = String::new();
            let general =
                !looks_like_ip(name) && normalize_entry(name, &mut buf).is_ok_and(|n| n == name);
            // The fast path never accepts what the general path would not;
            // it may leave the odd case (all digits) to the general path.
            let fast = is_plain_normal_name(name);
            assert!(!fast || general, "{name:?}");
            assert_eq!(
                fast,
                general && name.bytes().any(|b| !b.is_ascii_digit() && b != b'.')
            );
        }
    }

    #[test]
    fn trailing_comment_helper() {
        assert_eq!(strip_trailing_comment("a.com # x"), "a.com");
        assert_eq!(strip_trailing_comment("a.com\t#x # y"), "a.com");
        assert_eq!(strip_trailing_comment("a#b # c"), "a#b");
        assert_eq!(strip_trailing_comment("a#b"), "a#b");
    }

    #[test]
    fn ip_lists() {
        let text = "# answer IPs\r\n42.62.48.0/24\r\n42.62.48.157 # one host\r\n\
            2a00:1450::/32\n10.1.2.3/8\nnot-an-ip\n1.2.3.4/33\n::1\n1.2.3.4 5.6.7.8\n";
        let mut got = Vec::new();
        let errs = parse_ip_list(text, |line, net| got.push((line, net.to_string())));
        let want: Vec<(u32, String)> = [
            (2, "42.62.48.0/24"),
            (3, "42.62.48.157/32"),
            (4, "2a00:1450::/32"),
            (5, "10.0.0.0/8"),
            (8, "::1/128"),
        ]
        .iter()
        .map(|(l, s)| (*l, s.to_string()))
        .collect();
        assert_eq!(got, want);
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [6, 7, 9]);
        assert!(
            errs[0]
                .message
                .starts_with("not an IP address or CIDR range")
        );
        assert!(errs[1].message.starts_with("invalid CIDR range"));
    }
}
