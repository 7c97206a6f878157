//! The blocking snapshot: every list loaded into one immutable [`Policy`],
//! and the watcher that builds a new one when a list or the config changes.
//!
//! A query loads the current `Arc<Policy>` once and never waits: a reload
//! builds the next snapshot on a blocking thread and swaps it in whole, so no
//! query ever sees half a list. A list that cannot be read keeps the running
//! snapshot; a broken line is reported as `path:line: why` and skipped.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::{BlockMode, Loaded, Problem};
use crate::policy::{
    DomainSet, DomainSetBuilder, LineError, Match, RangeSet, RangeSetBuilder, Verdict,
};
use crate::wire::{BlockedAnswer, Rcode, TYPE_A, TYPE_AAAA, WireAnswer};

/// Line errors logged per file before the rest are only counted.
const LOGGED_LINE_ERRORS: usize = 20;

/// Everything blocking needs to decide about one query.
pub struct Policy {
    domains: DomainSet,
    ranges: RangeSet,
    /// Rule files as shown to people (relative to the config's directory).
    files: Vec<String>,
    mode: BlockMode,
    ttl: u32,
    bypass_hygiene: bool,
}

/// A decision to block, and how.
pub struct Block {
    /// Why, for the query log and the EDE: `file:line pattern`.
    pub rule: String,
    pub answer: BlockedAnswer,
}

/// Names answered by sinkd itself so devices keep using it (bypass hygiene,
/// `[blocking] bypass_hygiene`), and how.
const KEEP_CLIENTS_HERE: &[(&str, Rcode, &str)] = &[
    // Firefox turns its own DNS-over-HTTPS off when this name does not exist.
    (
        "use-application-dns.net",
        Rcode::NxDomain,
        "browsers keep using this resolver",
    ),
    // RFC 9462 discovery: no answer, so devices do not move to the
    // upstream's encrypted resolver behind sinkd's back.
    (
        "_dns.resolver.arpa",
        Rcode::NoError,
        "no automatic upgrade to another resolver",
    ),
];

/// The outcome of the name check.
pub enum NameVerdict {
    Blocked(Block),
    /// On an allow list: exempt from blocking and from answer inspection.
    Allowed(String),
    Pass,
}

impl Policy {
    pub fn empty() -> Policy {
        Policy {
            domains: DomainSetBuilder::new().build(),
            ranges: RangeSetBuilder::new().build(),
            files: Vec::new(),
            mode: BlockMode::Null,
            ttl: 60,
            bypass_hygiene: true,
        }
    }

    /// `name`: lowercase, no trailing dot; `qtype` decides the answer.
    pub fn check(&self, name: &str, qtype: u16) -> NameVerdict {
        if self.bypass_hygiene
            && let Some((canary, rcode, why)) =
                KEEP_CLIENTS_HERE.iter().find(|(n, _, _)| *n == name)
        {
            return NameVerdict::Blocked(Block {
                rule: format!("built-in {canary} ({why})"),
                answer: BlockedAnswer {
                    rcode: *rcode,
                    address: None,
                    soa: true,
                    ttl: self.ttl,
                },
            });
        }
        match self.domains.check(name) {
            Verdict::None => NameVerdict::Pass,
            Verdict::Blocked(m) => NameVerdict::Blocked(self.block(self.describe(&m), qtype)),
            Verdict::Allowed(m) => NameVerdict::Allowed(self.describe(&m)),
        }
    }

    fn block(&self, rule: String, qtype: u16) -> Block {
        Block {
            rule,
            answer: self.answer_for(qtype),
        }
    }

    /// `file:line pattern`, put together without the formatting machinery
    /// or `concat`'s generic path: this runs for every blocked query.
    fn describe(&self, m: &Match) -> String {
        let file = self.file_name(m.rule.file);
        let mut line = itoa::Buffer::new();
        let line = line.format(m.rule.line);
        let mut rule = String::with_capacity(file.len() + line.len() + m.pattern.len() + 2);
        rule.push_str(file);
        rule.push(':');
        rule.push_str(line);
        rule.push(' ');
        rule.push_str(&m.pattern);
        rule
    }

    fn file_name(&self, file: u16) -> &str {
        self.files.get(file as usize).map_or("?", |f| f.as_str())
    }

    /// Answer inspection: a CNAME target on a blocklist (CNAME cloaking) or an
    /// address in an `answer_ips` range blocks the whole answer.
    /// With `rebinding`, a private, loopback or link-local address in the
    /// answer blocks it too (the caller knows whether the name is public).
    pub fn inspect(&self, answer: &WireAnswer, qtype: u16, rebinding: bool) -> Option<Block> {
        for target in answer.cname_targets() {
            if let Verdict::Blocked(m) = self.domains.check(target) {
                let rule = format!("{} (CNAME {target})", self.describe(&m));
                return Some(self.block(rule, qtype));
            }
        }
        if rebinding && let Some(ip) = answer.addresses().iter().find(|ip| is_internal(**ip)) {
            let rule = format!("rebind protection: a public name answered with {ip}");
            return Some(self.block(rule, qtype));
        }
        if self.ranges.is_empty() {
            return None;
        }
        for &ip in answer.addresses() {
            if let Some((rule, net)) = self.ranges.check(ip) {
                let file = self.file_name(rule.file);
                let rule = format!("{file}:{} {net} (answer {ip})", rule.line);
                return Some(self.block(rule, qtype));
            }
        }
        None
    }

    /// How to answer a blocked query of type `qtype`.
    pub fn answer_for(&self, qtype: u16) -> BlockedAnswer {
        let ttl = self.ttl;
        let nodata = BlockedAnswer {
            rcode: Rcode::NoError,
            address: None,
            soa: true,
            ttl,
        };
        let with = |address: Option<IpAddr>| match address {
            Some(_) => BlockedAnswer { address, ..nodata },
            None => nodata,
        };
        match (self.mode, qtype) {
            (BlockMode::Null, TYPE_A) => with(Some(Ipv4Addr::UNSPECIFIED.into())),
            (BlockMode::Null, TYPE_AAAA) => with(Some(Ipv6Addr::UNSPECIFIED.into())),
            (BlockMode::Ip { v4, .. }, TYPE_A) => with(v4.map(IpAddr::from)),
            (BlockMode::Ip { v6, .. }, TYPE_AAAA) => with(v6.map(IpAddr::from)),
            (BlockMode::Null | BlockMode::Ip { .. } | BlockMode::NoData, _) => nodata,
            (BlockMode::NxDomain, _) => BlockedAnswer {
                rcode: Rcode::NxDomain,
                ..nodata
            },
            (BlockMode::Refused, _) => BlockedAnswer {
                rcode: Rcode::Refused,
                soa: false,
                ..nodata
            },
        }
    }

    /// Entries loaded: block and allow names and rules, and address ranges.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.domains.block_len(),
            self.domains.allow_len(),
            self.ranges.len(),
        )
    }
}

/// Addresses that only mean something inside the LAN or the host.
fn is_internal(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        }
    }
}

/// The files one `lists`/`allow`/`answer_ips` entry stands for.
pub(crate) fn expand(loaded: &Loaded, pattern: &str) -> Result<Vec<PathBuf>, String> {
    let path = loaded.resolve(pattern);
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[']) {
        let mut files: Vec<PathBuf> = glob::glob(&text)
            .map_err(|e| format!("`{pattern}`: {e}"))?
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        return Ok(files);
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_list_file(p))
            .collect();
        files.sort();
        return Ok(files);
    }
    Ok(vec![path])
}

/// In a directory, the files that hold lists: not hidden, not documentation,
/// not an editor's backup.
pub(crate) fn is_list_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !(name.starts_with('.')
        || name.ends_with('~')
        || name.ends_with(".md")
        || name.ends_with(".swp")
        || name.ends_with(".bak"))
}

/// What a load produced: the snapshot, or why the running one must stay.
pub struct Load {
    pub policy: Policy,
    /// Broken lines: skipped, the rest loaded.
    pub problems: Vec<Problem>,
    /// Lists that could not be read (or patterns that could not be expanded):
    /// a reload with any of these keeps the running snapshot; at start sinkd
    /// serves what it could read.
    pub unreadable: Vec<Problem>,
    pub files: usize,
    pub took: Duration,
}

/// The shown name of a list file: relative to the config's directory when
/// inside it.
fn shown(loaded: &Loaded, path: &Path) -> String {
    let dir = loaded.path.parent().unwrap_or(Path::new(""));
    let relative = match dir.as_os_str().is_empty() {
        true => path,
        false => path.strip_prefix(dir).unwrap_or(path),
    };
    relative.display().to_string()
}

/// Bytes read at a time from a list file.
const PIECE: usize = 1 << 20;

/// Reads `path` in pieces of whole lines (about [`PIECE`] bytes), handing
/// each to `parse` with the number of lines before it, and gathers what
/// `parse` reports. Invalid UTF-8 is replaced, not fatal.
fn for_each_piece(
    path: &Path,
    mut parse: impl FnMut(&str, u32) -> Vec<LineError>,
) -> std::io::Result<Vec<LineError>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut errors = Vec::new();
    let mut buffer = Vec::with_capacity(PIECE);
    let mut lines_before = 0u32;
    loop {
        let kept = buffer.len();
        buffer.resize(kept + PIECE, 0);
        let got = file.read(&mut buffer[kept..])?;
        buffer.truncate(kept + got);
        let at_end = got == 0;
        // Whole lines only, unless the file ends without a newline.
        let end = match at_end {
            true => buffer.len(),
            false => match buffer.iter().rposition(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                None => continue, // a line longer than a piece: read on
            },
        };
        if end > 0 {
            let piece = String::from_utf8_lossy(&buffer[..end]);
            errors.extend(parse(&piece, lines_before));
            let lines = buffer[..end].iter().filter(|&&b| b == b'\n').count();
            lines_before = lines_before.saturating_add(lines as u32);
            buffer.drain(..end);
        }
        if at_end {
            return Ok(errors);
        }
    }
}

/// Reads every list of `loaded`'s `[blocking]` section, and the downloaded
/// copies of its remote lists, into a new [`Policy`].
pub fn load(loaded: &Loaded) -> Load {
    let started = Instant::now();
    let config = &loaded.config.blocking;
    let mut problems = Vec::new();
    let mut fatal = Vec::new();
    let mut files = Vec::new();
    let mut domains = DomainSetBuilder::new();
    let mut ranges = RangeSetBuilder::new();
    let mut seen = HashSet::new();

    let planned = list_files(loaded);
    for pattern in &planned.unmatched {
        warn!("blocking: `{pattern}` matches no file");
    }
    fatal.extend(
        planned
            .unexpandable
            .into_iter()
            .map(|message| config_problem(loaded, message)),
    );
    for (path, kind) in planned.files {
        if !seen.insert((path.clone(), kind)) {
            continue;
        }
        let Ok(file) = u16::try_from(files.len()) else {
            fatal.push(config_problem(loaded, "more than 65535 list files".into()));
            break;
        };
        files.push(shown(loaded, &path));
        let read = match kind {
            // Name lists are read a piece at a time: a million-line file is
            // never in memory whole beside the table built from it.
            Kind::Block | Kind::Allow => for_each_piece(&path, |piece, lines_before| {
                domains.add_lines(file, piece, kind == Kind::Allow, lines_before)
            }),
            Kind::Ranges => std::fs::read(&path)
                .map(|bytes| ranges.add_text(file, &String::from_utf8_lossy(&bytes))),
        };
        let errors = match read {
            Ok(errors) => errors,
            Err(e) => {
                fatal.push(Problem {
                    path: path.clone(),
                    line: 0,
                    column: None,
                    message: format!("cannot read this list: {e}"),
                });
                continue;
            }
        };
        problems.extend(errors.into_iter().map(|e| Problem {
            path: path.clone(),
            line: e.line as usize,
            column: None,
            message: e.message,
        }));
    }
    let file_count = files.len();
    Load {
        policy: Policy {
            domains: domains.build(),
            ranges: ranges.build(),
            files,
            mode: config.mode,
            ttl: config.ttl,
            bypass_hygiene: config.bypass_hygiene,
        },
        problems,
        unreadable: fatal,
        files: file_count,
        took: started.elapsed(),
    }
}

/// Every file the `[blocking]` section names (patterns and directories
/// expanded) and the cached remote lists, each with what it holds.
#[derive(Default)]
struct ListFiles {
    files: Vec<(PathBuf, Kind)>,
    /// Patterns that match no file.
    unmatched: Vec<String>,
    /// Why patterns could not be expanded.
    unexpandable: Vec<String>,
}

fn list_files(loaded: &Loaded) -> ListFiles {
    let config = &loaded.config.blocking;
    let groups = [
        (&config.lists, Kind::Block),
        (&config.allow, Kind::Allow),
        (&config.answer_ips, Kind::Ranges),
    ];
    let mut found = ListFiles::default();
    for (patterns, kind) in groups {
        for pattern in patterns {
            match expand(loaded, pattern) {
                Ok(paths) if paths.is_empty() => found.unmatched.push(pattern.clone()),
                Ok(paths) => found.files.extend(paths.into_iter().map(|p| (p, kind))),
                Err(message) => found.unexpandable.push(message),
            }
        }
    }
    found.files.extend(
        crate::remote::cached_lists(loaded)
            .into_iter()
            .map(|(p, allow)| (p, if allow { Kind::Allow } else { Kind::Block })),
    );
    found
}

/// The size on disk of the name lists `loaded` names: what a reload is
/// about to read, known before reading it. Files that cannot be read count
/// nothing (the load reports them).
pub fn name_list_bytes(loaded: &Loaded) -> u64 {
    list_files(loaded)
        .files
        .into_iter()
        .filter(|(_, kind)| *kind != Kind::Ranges)
        .filter_map(|(path, _)| std::fs::metadata(path).ok())
        .map(|meta| meta.len())
        .sum()
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Block,
    Allow,
    Ranges,
}

fn config_problem(loaded: &Loaded, message: String) -> Problem {
    Problem {
        path: loaded.path.clone(),
        line: 0,
        column: None,
        message: format!("blocking: {message}"),
    }
}

/// Logs a load's problems (a few broken lines per file) and its summary.
pub fn report(load: &Load) {
    for problem in &load.unreadable {
        error!("{problem}");
    }
    let mut per_file: std::collections::HashMap<&Path, usize> = Default::default();
    for problem in &load.problems {
        let n = per_file.entry(&problem.path).or_default();
        *n += 1;
        if *n <= LOGGED_LINE_ERRORS {
            warn!("{problem}");
        }
    }
    for (path, n) in per_file {
        if n > LOGGED_LINE_ERRORS {
            warn!(
                "{}: {} more lines skipped",
                path.display(),
                n - LOGGED_LINE_ERRORS
            );
        }
    }
    let (block, allow, ranges) = load.policy.counts();
    info!(
        files = load.files,
        block,
        allow,
        ranges,
        skipped = load.problems.len(),
        ms = load.took.as_millis() as u64,
        "lists loaded"
    );
}

/// The live snapshot and what it was built from.
pub struct Blocking {
    current: ArcSwap<Policy>,
}

impl Blocking {
    pub fn new(policy: Policy) -> Blocking {
        Blocking {
            current: ArcSwap::from_pointee(policy),
        }
    }

    /// The snapshot for one query.
    pub fn load(&self) -> arc_swap::Guard<Arc<Policy>> {
        self.current.load()
    }

    /// Puts `policy` in place. The old one is freed here, on the caller's
    /// (reload) thread, once the queries still holding it are done: freeing
    /// tens of megabytes on a query's thread would hold that query up.
    pub fn swap(&self, policy: Policy) {
        let old = self.current.swap(Arc::new(policy));
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_read_in_pieces_keeps_its_line_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.txt");
        // About 3 pieces, a broken line in the third, and no final newline.
        let mut text = String::new();
        for n in 1..=150_000 {
            match n {
                120_000 => text.push_str("bad name.example\n"),
                _ => text.push_str(&format!("host{n}.example.test\n")),
            }
        }
        text.push_str("last.example.test");
        assert!(text.len() > 2 * PIECE);
        std::fs::write(&path, &text).unwrap();

        let mut builder = DomainSetBuilder::new();
        builder.add_text(0, "first.example\n", false);
        let mut pieces = 0;
        let errors = for_each_piece(&path, |piece, before| {
            pieces += 1;
            builder.add_lines(1, piece, false, before)
        })
        .unwrap();
        assert!(pieces >= 3, "{pieces} pieces");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, 120_000);
        builder.add_text(2, "after.example\n", false);
        let set = builder.build();
        let line_of = |name: &str| match set.check(name) {
            Verdict::Blocked(m) => (m.rule.file, m.rule.line),
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(line_of("first.example"), (0, 1));
        assert_eq!(line_of("host1.example.test"), (1, 1));
        assert_eq!(line_of("host77777.example.test"), (1, 77_777));
        assert_eq!(line_of("host149999.example.test"), (1, 149_999));
        assert_eq!(line_of("last.example.test"), (1, 150_001));
        assert_eq!(line_of("after.example"), (2, 1));
    }
}
