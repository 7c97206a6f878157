//! The domain matcher: block and allow name rules from any number of list
//! files, looked up by walking a query name's label suffixes.
//!
//! # Memory layout
//!
//! Names are not stored. Each normalized name is reduced to a 64-bit xxh3
//! hash (fixed seed) and kept as one 12-byte slot: the hash (as two `u32`s)
//! and one `u32` holding the rule kind (2 bits), a "split" flag (1 bit) and
//! a 29-bit *global line id*. A global line id is the line number offset by
//! the lines of every file added before it; a tiny file table (one entry per
//! `add_text` call) turns it back into a [`RuleRef`] on a hit.
//!
//! The slots sit in ascending hash order in 64-byte buckets of five, one
//! cache line each ([`Buckets`]), 3.75 names a bucket: 17.1 bytes per name
//! whatever the count (1,004,062 names, the two HaGeZi lists: 17.1 MB). A
//! name's home bucket is picked by its hash's high bits; a lookup reads that
//! one line, and for about one name in five also the line below it. (A
//! `hashbrown` table, used before, needed 15 to 30 bytes per name and two
//! random cache lines per hit: its control bytes and its slot.)
//!
//! # Loading
//!
//! `add_text` parses and pushes one 12-byte pending slot per rule (no string
//! is kept or allocated per line). `build` sorts the pending slots by hash,
//! allocates the table once at its final size and fills it from the top
//! down (see `NameTable::build`), releasing the pending buffer piece by
//! piece, so the peak stays close to the table's own size.
//!
//! Hash collisions: two different names collide with probability 2^-64 per
//! pair; with n = 1,000,000 names the chance that *any* two collide is about
//! n²/2^65 ≈ 3·10^-8, and the chance that a given non-listed query name hits
//! a listed hash is about (labels × n)/2^64 ≈ 3·10^-13. Negligible; the
//! real-data test checks the shipped lists are collision-free.
//!
//! # Several rules for one name
//!
//! A name has two roles: the name itself ("E", matched by Exact and Subtree
//! rules) and the names below it ("S", matched by SubdomainsOnly and Subtree
//! rules). Each role keeps one providing rule:
//! * E: the first rule, except that an Exact rule replaces a Subtree rule
//!   (so at the same name an exact rule is reported over a subtree rule,
//!   whatever their order in the files);
//! * S: the first rule.
//!
//! When both roles come from the same (Subtree) rule the name uses one slot.
//! When they come from different rules, the main slot holds E with the split
//! flag set and a small side table holds S. Duplicates (the same name listed
//! twice, in one file or in several) thus keep the first occurrence.
//!
//! # Lookup
//!
//! For `a.b.miui.com` the suffixes `a.b.miui.com` (E role), `b.miui.com`,
//! `miui.com`, `com` (S role) are hashed and probed, longest first, in the
//! allow table (if not empty) and the block table. The first block hit is the
//! most specific. Any allow hit wins over any block hit. Regexes (one
//! `RegexSet` per side) run only after the probes: allow regexes whenever the
//! hash probes found no allow rule, block regexes only when no block hash
//! matched.

use std::borrow::Cow;

use hashbrown::HashTable;
use regex::{Regex, RegexSet, RegexSetBuilder};
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::parse::{LineError, Rule, RuleKind, RuleRef, parse_domain_list};

/// Fixed seed: a name hashes the same in every snapshot and every run.
const HASH_SEED: u64 = 0x7369_6e6b_642d_6831; // "sinkd-h1"

/// The 64-bit hash under which a normalized name is stored; never 0, which
/// marks an empty slot.
#[inline]
fn name_hash(name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), HASH_SEED).max(1)
}

const CODE_EXACT: u32 = 0;
const CODE_SUBONLY: u32 = 1;
const CODE_SUBTREE: u32 = 2;
const CODE_MASK: u32 = 0b11;
const SPLIT: u32 = 1 << 2;
const GLID_SHIFT: u32 = 3;
/// Largest global line id: the sum of the line counts of all files in one set.
const GLID_MAX: u32 = u32::MAX >> GLID_SHIFT;

/// One table slot: 12 bytes, align 4.
#[derive(Clone, Copy)]
struct Slot {
    key: [u32; 2],
    val: u32,
}

impl Slot {
    #[inline]
    fn new(hash: u64, val: u32) -> Self {
        Slot {
            key: split_hash(hash),
            val,
        }
    }
    #[inline]
    fn hash(&self) -> u64 {
        u64::from(self.key[0]) | (u64::from(self.key[1]) << 32)
    }
}

#[inline]
fn split_hash(hash: u64) -> [u32; 2] {
    [hash as u32, (hash >> 32) as u32]
}

/// The rule that provides a role: kind and global line id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Prov {
    kind: RuleKind,
    glid: u32,
}

fn code_of(kind: RuleKind) -> u32 {
    match kind {
        RuleKind::Exact => CODE_EXACT,
        RuleKind::SubdomainsOnly => CODE_SUBONLY,
        RuleKind::Subtree | RuleKind::Regex => CODE_SUBTREE,
    }
}

fn kind_of(code: u32) -> RuleKind {
    match code {
        CODE_EXACT => RuleKind::Exact,
        CODE_SUBONLY => RuleKind::SubdomainsOnly,
        _ => RuleKind::Subtree,
    }
}

#[inline]
fn pack(p: Prov, split: bool) -> u32 {
    (p.glid << GLID_SHIFT) | code_of(p.kind) | if split { SPLIT } else { 0 }
}

#[inline]
fn unpack(val: u32) -> Prov {
    Prov {
        kind: kind_of(val & CODE_MASK),
        glid: val >> GLID_SHIFT,
    }
}

/// Add a rule to a name's roles (E: the name itself; S: names below it).
/// E keeps the first rule, except that an Exact rule replaces a Subtree rule;
/// S keeps the first rule. Rules must come in file order.
fn merge_roles(e: &mut Option<Prov>, s: &mut Option<Prov>, new: Prov) {
    match new.kind {
        RuleKind::Exact => {
            if e.is_none_or(|p| p.kind == RuleKind::Subtree) {
                *e = Some(new);
            }
        }
        RuleKind::SubdomainsOnly => *s = s.or(Some(new)),
        _ => {
            *e = e.or(Some(new));
            *s = s.or(Some(new));
        }
    }
}

/// Slot values for a name's roles: the main slot, and the side slot when
/// the two roles come from different rules.
fn encode_roles(e: Option<Prov>, s: Option<Prov>) -> (u32, Option<u32>) {
    match (e, s) {
        (Some(e), Some(s)) if e != s => (pack(e, true), Some(pack(s, false))),
        (Some(p), _) | (None, Some(p)) => (pack(p, false), None),
        (None, None) => unreachable!("a name in the table has a role"),
    }
}

/// Five 12-byte slots (three words each) and a spare word: 64 bytes.
const BUCKET_WORDS: usize = 16;
const BUCKET_SLOTS: usize = 5;
const CACHE_LINE: usize = 64;

/// One side's names, a slot each, in ascending hash order in buckets of one
/// cache line. A name lives in its home bucket (the hash's high bits scaled
/// to the bucket count, so home order is hash order) or, when that bucket
/// is full, in the nearest bucket below it with room. Buckets are filled
/// from the top down, so within the run of full buckets ending at a name's
/// home, everything below the name has a smaller hash: a lookup can stop at
/// the first bucket holding a smaller hash or an empty slot.
#[derive(Default)]
struct Buckets {
    /// All zero at first (a zero hash is an empty slot), from calloc: pages
    /// are only touched as they are filled.
    words: Vec<u32>,
    /// Where bucket 0 starts in `words`: the first cache-line boundary.
    first: usize,
    /// Buckets below the first home bucket, for names spilling past it.
    spill: usize,
    homes: usize,
    len: usize,
}

impl Buckets {
    /// 3.75 names per bucket of five: a lookup reads 1.2 lines on average.
    fn homes_for(names: usize) -> usize {
        names * 4 / 15 + 1
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        self.spill + ((u128::from(hash) * self.homes as u128) >> 64) as usize
    }

    /// Word index of slot `position` (bucket-major).
    #[inline]
    fn word(&self, position: usize) -> usize {
        self.first + position / BUCKET_SLOTS * BUCKET_WORDS + position % BUCKET_SLOTS * 3
    }

    /// The value stored under `hash`.
    #[inline]
    fn find(&self, hash: u64) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let mut bucket = self.home(hash);
        loop {
            let start = self.first + bucket * BUCKET_WORDS;
            let words = &self.words[start..start + BUCKET_SLOTS * 3];
            let mut lower = false;
            for slot in words.chunks_exact(3) {
                let stored = u64::from(slot[0]) | (u64::from(slot[1]) << 32);
                if stored == hash {
                    return Some(slot[2]);
                }
                lower |= stored < hash;
            }
            if lower || bucket == 0 {
                return None;
            }
            bucket -= 1;
        }
    }

    /// The slot for the next name down (the names go in from the highest
    /// hash), given the slot of the name above it: the top of its home
    /// bucket, or the slot below that name's when that is lower.
    #[inline]
    fn below(&self, above: isize, hash: u64) -> isize {
        let home_top = ((self.home(hash) + 1) * BUCKET_SLOTS) as isize - 1;
        (above - 1).min(home_top)
    }

    fn top(&self) -> isize {
        ((self.spill + self.homes) * BUCKET_SLOTS) as isize
    }

    /// Room for the names whose distinct hashes, highest first, `hashes`
    /// gives: their home buckets and as many spill buckets as they need.
    fn with_room(names: usize, hashes: impl Iterator<Item = u64>) -> Buckets {
        let mut table = Buckets {
            homes: Buckets::homes_for(names),
            ..Buckets::default()
        };
        let lowest = hashes.fold(table.top(), |above, hash| table.below(above, hash));
        table.spill = (-lowest.min(0) as usize).div_ceil(BUCKET_SLOTS);
        // One bucket more, to start bucket 0 on a cache line.
        table.words = vec![0; (table.spill + table.homes + 1) * BUCKET_WORDS];
        let misalignment = table.words.as_ptr() as usize % CACHE_LINE;
        table.first = (CACHE_LINE - misalignment) % CACHE_LINE / size_of::<u32>();
        table
    }

    fn put(&mut self, position: usize, slot: Slot) {
        let at = self.word(position);
        self.words[at..at + 3].copy_from_slice(&[slot.key[0], slot.key[1], slot.val]);
        self.len += 1;
    }

    fn heap_bytes(&self) -> usize {
        self.words.capacity() * size_of::<u32>()
    }
}

/// Hash table of one side (block or allow).
#[derive(Default)]
struct NameTable {
    main: Buckets,
    /// S-role providers of names whose two roles come from different rules
    /// (a few, so a plain hash table).
    side: HashTable<Slot>,
}

impl NameTable {
    fn len(&self) -> usize {
        self.main.len + self.side.len()
    }

    /// Build the table from all rules of one side. `pending` holds one slot
    /// per rule (hash, kind code and global line id; no split flag).
    ///
    /// The rules are sorted by hash, which is table order, and then by line,
    /// so that
    /// * the table is allocated once, at its final size;
    /// * slots are written in address order: no cache or TLB miss per
    ///   insert, which makes this several times faster than inserting in
    ///   file order;
    /// * all rules for one name are adjacent, in file order, and are merged
    ///   before the name's single insert;
    /// * `pending` can be given back to the allocator piece by piece while
    ///   the table's untouched pages fill, so the peak stays near the
    ///   table's own size.
    fn build(mut pending: Vec<Slot>) -> NameTable {
        let mut table = NameTable::default();
        if pending.is_empty() {
            return table;
        }
        pending.sort_unstable_by_key(Slot::hash);
        // Restore file order within each name's run (duplicates are a minority).
        let mut distinct = 0;
        let mut run = 0;
        while run < pending.len() {
            let key = pending[run].key;
            let len = pending[run..].iter().take_while(|s| s.key == key).count();
            if len > 1 {
                pending[run..run + len].sort_unstable_by_key(|s| s.val >> GLID_SHIFT);
            }
            distinct += 1;
            run += len;
        }
        let mut previous = None;
        let hashes = pending.iter().rev().map(Slot::hash).filter(|&hash| {
            let new = previous != Some(hash);
            previous = Some(hash);
            new
        });
        table.main = Buckets::with_room(distinct, hashes);
        let mut at = table.main.top();
        let chunk = (pending.len() / 16).max(1 << 14);
        let mut shrink_at = pending.len().saturating_sub(chunk);
        let mut end = pending.len();
        while end > 0 {
            let key = pending[end - 1].key;
            let mut start = end - 1;
            while start > 0 && pending[start - 1].key == key {
                start -= 1;
            }
            let (mut e, mut s) = (None, None);
            for p in &pending[start..end] {
                merge_roles(&mut e, &mut s, unpack(p.val));
            }
            let hash = pending[start].hash();
            let (main, side) = encode_roles(e, s);
            at = table.main.below(at, hash);
            table.main.put(at as usize, Slot { key, val: main });
            if let Some(val) = side {
                table
                    .side
                    .insert_unique(hash, Slot { key, val }, Slot::hash);
            }
            end = start;
            if end <= shrink_at {
                pending.truncate(end);
                pending.shrink_to_fit();
                shrink_at = end.saturating_sub(chunk);
            }
        }
        table
    }

    /// The rule matching the name with this hash: as the query name itself
    /// (`whole`) or as a proper suffix of it.
    #[inline]
    fn probe(&self, hash: u64, whole: bool) -> Option<Prov> {
        let val = self.main.find(hash)?;
        let p = unpack(val);
        if whole {
            // With the split flag the main slot is the E role (Exact or Subtree).
            (p.kind != RuleKind::SubdomainsOnly).then_some(p)
        } else if val & SPLIT != 0 {
            let key = split_hash(hash);
            self.side
                .find(hash, |s| s.key == key)
                .map(|s| unpack(s.val))
        } else {
            (p.kind != RuleKind::Exact).then_some(p)
        }
    }

    fn heap_bytes(&self) -> usize {
        self.main.heap_bytes() + self.side.allocation_size()
    }
}

/// A matched rule, for the query log and the EDE text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Match {
    pub rule: RuleRef,
    pub kind: RuleKind,
    /// The matched list entry as written for a person: `miui.com` (subtree),
    /// `|miui.com^` (exact), `*.miui.com` (subdomains only), `/regex/`.
    pub pattern: String,
}

/// The outcome of [`DomainSet::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched.
    None,
    /// A block rule matched and no allow rule did.
    Blocked(Match),
    /// An allow (exception) rule matched; it wins over any block rule.
    Allowed(Match),
}

/// Normalize a query name for [`DomainSet::check`]: strip one trailing dot,
/// lowercase ASCII, convert an IDN to punycode. Borrows when the name is
/// already normal (the usual case for names off the wire).
pub fn normalize_name(name: &str) -> Cow<'_, str> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if !name.is_ascii() {
        return match idna::domain_to_ascii_cow(name.as_bytes(), idna::AsciiDenyList::EMPTY) {
            Ok(ascii) => Cow::Owned(ascii.into_owned()),
            Err(_) => Cow::Owned(name.to_lowercase()),
        };
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

/// Regex rules of one side, in file order.
#[derive(Default)]
struct Regexes {
    /// Pattern (without slashes) and global line id.
    rules: Vec<(Box<str>, u32)>,
    matcher: RegexMatcher,
}

#[derive(Default)]
enum RegexMatcher {
    #[default]
    Empty,
    Set(RegexSet),
    /// Fallback when the combined set exceeds the size limit.
    List(Vec<Regex>),
}

/// Size limit of one side's compiled `RegexSet`.
const REGEX_SET_SIZE_LIMIT: usize = 64 << 20;

impl Regexes {
    fn compile(&mut self) {
        if self.rules.is_empty() {
            return;
        }
        let patterns = self.rules.iter().map(|(p, _)| &**p);
        self.matcher = match RegexSetBuilder::new(patterns)
            .size_limit(REGEX_SET_SIZE_LIMIT)
            .build()
        {
            Ok(set) => RegexMatcher::Set(set),
            // Each pattern compiled on its own in add_text.
            Err(_) => RegexMatcher::List(
                self.rules
                    .iter()
                    .filter_map(|(p, _)| Regex::new(p).ok())
                    .collect(),
            ),
        };
    }

    /// Index of the first regex (in file order) matching `name`.
    #[inline]
    fn first_match(&self, name: &str) -> Option<usize> {
        match &self.matcher {
            RegexMatcher::Empty => None,
            RegexMatcher::Set(set) => {
                if set.is_match(name) {
                    set.matches(name).iter().next()
                } else {
                    None
                }
            }
            RegexMatcher::List(list) => list.iter().position(|r| r.is_match(name)),
        }
    }
}

/// Builds a [`DomainSet`] from list files.
#[derive(Default)]
pub struct DomainSetBuilder {
    /// Every name rule of each side, in file order, until `build`.
    block: Vec<Slot>,
    allow: Vec<Slot>,
    block_re: Regexes,
    allow_re: Regexes,
    /// (global line id base, file) per `add_text` call, bases ascending.
    files: Vec<(u32, u16)>,
    next_base: u32,
}

impl DomainSetBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parse one file's text; entries go to the block side, or to the allow
    /// side when `as_allow` (an allow file) or when written as `@@…`
    /// exceptions. Returns the line errors; those lines are skipped.
    pub fn add_text(&mut self, file: u16, text: &str, as_allow: bool) -> Vec<LineError> {
        self.add_lines(file, text, as_allow, 0)
    }

    /// Like [`add_text`](Self::add_text) for a piece of a file that starts
    /// after `lines_before` lines (whole lines only): a large list is read
    /// and parsed a piece at a time instead of held in memory whole. Pieces
    /// of one file come one after another, starting with `lines_before` 0.
    pub fn add_lines(
        &mut self,
        file: u16,
        text: &str,
        as_allow: bool,
        lines_before: u32,
    ) -> Vec<LineError> {
        let base = match self.files.last() {
            Some(&(base, last)) if lines_before > 0 && last == file => base,
            _ => {
                self.files.push((self.next_base, file));
                self.next_base
            }
        };
        let base = base.saturating_add(lines_before);
        // About one pending slot a line: size the buffer for the file up front.
        // Growth is at least 1/4 (amortized linear over many small files) but
        // not the 2x of plain `reserve`, which would double a large buffer.
        let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
        let pending = if as_allow {
            &mut self.allow
        } else {
            &mut self.block
        };
        if pending.capacity() - pending.len() < lines {
            pending.reserve_exact(lines.max(pending.capacity() / 4));
        }
        let mut max_line = 0u32;
        let Self {
            block,
            allow,
            block_re,
            allow_re,
            ..
        } = self;
        let mut errors = parse_domain_list(text, as_allow, |line, rule| {
            max_line = line;
            let glid = match base.checked_add(line) {
                Some(g) if g <= GLID_MAX => g,
                _ => {
                    return Err(format!("too many list lines in all (at most {GLID_MAX})"));
                }
            };
            match rule {
                Rule::Name {
                    name,
                    kind,
                    allow: a,
                } => {
                    let pending = if a { &mut *allow } else { &mut *block };
                    pending.push(Slot::new(name_hash(name), pack(Prov { kind, glid }, false)));
                }
                Rule::Regex { pattern, allow: a } => {
                    if let Err(e) = Regex::new(pattern) {
                        return Err(format!(
                            "invalid regex /{pattern}/: {}",
                            regex_error_summary(&e)
                        ));
                    }
                    let re = if a { &mut *allow_re } else { &mut *block_re };
                    re.rules.push((pattern.into(), glid));
                }
            }
            Ok(())
        });
        if let Some(last) = errors.last() {
            max_line = max_line.max(last.line);
        }
        self.next_base = base.saturating_add(max_line).min(GLID_MAX);
        for error in &mut errors {
            error.line = error.line.saturating_add(lines_before);
        }
        errors.shrink_to_fit();
        errors
    }

    /// Finish: build the hash tables and compile the regexes (one `RegexSet`
    /// per side). Errors were all reported by `add_text`.
    pub fn build(mut self) -> DomainSet {
        self.block_re.compile();
        self.allow_re.compile();
        DomainSet {
            block: NameTable::build(self.block),
            allow: NameTable::build(self.allow),
            block_re: self.block_re,
            allow_re: self.allow_re,
            files: self.files.into_boxed_slice(),
        }
    }
}

/// The last, most telling line of a regex error (`unclosed group`).
fn regex_error_summary(e: &regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    last.strip_prefix("error: ").unwrap_or(last).to_string()
}

/// An immutable set of block and allow rules.
pub struct DomainSet {
    block: NameTable,
    allow: NameTable,
    block_re: Regexes,
    allow_re: Regexes,
    files: Box<[(u32, u16)]>,
}

impl DomainSet {
    /// Distinct stored entries: block + allow names (a name listed with two
    /// different rules for itself and its subdomains counts twice) + regexes.
    pub fn len(&self) -> usize {
        self.block.len() + self.allow.len() + self.block_re.rules.len() + self.allow_re.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries on the block side.
    pub fn block_len(&self) -> usize {
        self.block.len() + self.block_re.rules.len()
    }

    /// Entries on the allow side.
    pub fn allow_len(&self) -> usize {
        self.allow.len() + self.allow_re.rules.len()
    }

    /// Heap bytes of the hash tables and the file table (regexes not counted).
    pub fn heap_bytes(&self) -> usize {
        self.block.heap_bytes()
            + self.allow.heap_bytes()
            + self.files.len() * std::mem::size_of::<(u32, u16)>()
    }

    /// Check a normalized name (lowercase ASCII, no trailing dot: see
    /// [`normalize_name`]). Any allow match wins over any block match; among
    /// block (or allow) name rules the longest matched suffix is reported.
    pub fn check(&self, name: &str) -> Verdict {
        let allow_on = self.allow.main.len > 0;
        let mut block_hit: Option<(Prov, usize)> = None;
        let mut start = 0usize;
        while start < name.len() {
            let suffix = &name[start..];
            let hash = name_hash(suffix);
            let whole = start == 0;
            if allow_on && let Some(p) = self.allow.probe(hash, whole) {
                return Verdict::Allowed(self.name_match(p, suffix, whole));
            }
            if block_hit.is_none()
                && let Some(p) = self.block.probe(hash, whole)
            {
                block_hit = Some((p, start));
                if !allow_on {
                    break;
                }
            }
            match suffix.find('.') {
                Some(dot) => start += dot + 1,
                None => break,
            }
        }
        if let Some(i) = self.allow_re.first_match(name) {
            return Verdict::Allowed(self.regex_match(&self.allow_re, i));
        }
        if let Some((p, start)) = block_hit {
            return Verdict::Blocked(self.name_match(p, &name[start..], start == 0));
        }
        if let Some(i) = self.block_re.first_match(name) {
            return Verdict::Blocked(self.regex_match(&self.block_re, i));
        }
        Verdict::None
    }

    fn rule_ref(&self, glid: u32) -> RuleRef {
        let idx = self.files.partition_point(|&(base, _)| base < glid);
        let (base, file) = self.files[idx.saturating_sub(1)];
        RuleRef {
            file,
            line: glid - base,
        }
    }

    fn name_match(&self, p: Prov, suffix: &str, whole: bool) -> Match {
        let pattern = match p.kind {
            RuleKind::Exact => ["|", suffix, "^"].concat(),
            RuleKind::SubdomainsOnly => ["*.", suffix].concat(),
            _ => suffix.to_owned(),
        };
        debug_assert!(whole || p.kind != RuleKind::Exact);
        Match {
            rule: self.rule_ref(p.glid),
            kind: p.kind,
            pattern,
        }
    }

    fn regex_match(&self, re: &Regexes, i: usize) -> Match {
        let (pattern, glid) = &re.rules[i];
        Match {
            rule: self.rule_ref(*glid),
            kind: RuleKind::Regex,
            pattern: format!("/{pattern}/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, bool)]) -> DomainSet {
        let mut b = DomainSetBuilder::new();
        for (i, (text, allow)) in files.iter().enumerate() {
            let errs = b.add_text(i as u16, text, *allow);
            assert!(errs.is_empty(), "file {i}: {errs:?}");
        }
        b.build()
    }

    fn r(file: u16, line: u32) -> RuleRef {
        RuleRef { file, line }
    }

    /// (action, file, line, kind, pattern) or None.
    fn chk(s: &DomainSet, name: &str) -> Option<(&'static str, u16, u32, RuleKind, String)> {
        match s.check(name) {
            Verdict::None => None,
            Verdict::Blocked(m) => Some(("block", m.rule.file, m.rule.line, m.kind, m.pattern)),
            Verdict::Allowed(m) => Some(("allow", m.rule.file, m.rule.line, m.kind, m.pattern)),
        }
    }

    fn blocked(s: &DomainSet, name: &str) -> Option<(u32, RuleKind, String)> {
        match s.check(name) {
            Verdict::Blocked(m) => Some((m.rule.line, m.kind, m.pattern)),
            Verdict::None => None,
            v => panic!("{name}: {v:?}"),
        }
    }

    use RuleKind::{Exact, SubdomainsOnly, Subtree};

    #[test]
    fn slot_is_12_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 12);
    }

    #[test]
    fn sets_are_shareable_across_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<DomainSet>();
        send_sync::<super::super::RangeSet>();
        send_sync::<Verdict>();
    }

    #[test]
    fn subtree_exact_subdomains_only() {
        let s = set(&[(
            "miui.com\n|exact.org^\n*.wild.net\n0.0.0.0 host.io other.io\n||adb.com^\n",
            false,
        )]);
        assert_eq!(
            blocked(&s, "miui.com"),
            Some((1, Subtree, "miui.com".into()))
        );
        assert_eq!(
            blocked(&s, "a.b.miui.com"),
            Some((1, Subtree, "miui.com".into()))
        );
        assert_eq!(blocked(&s, "notmiui.com"), None);
        assert_eq!(blocked(&s, "miui.com.evil"), None);
        assert_eq!(blocked(&s, "com"), None);
        assert_eq!(
            blocked(&s, "exact.org"),
            Some((2, Exact, "|exact.org^".into()))
        );
        assert_eq!(blocked(&s, "a.exact.org"), None);
        assert_eq!(blocked(&s, "wild.net"), None);
        assert_eq!(
            blocked(&s, "a.wild.net"),
            Some((3, SubdomainsOnly, "*.wild.net".into()))
        );
        assert_eq!(
            blocked(&s, "b.a.wild.net"),
            Some((3, SubdomainsOnly, "*.wild.net".into()))
        );
        assert_eq!(blocked(&s, "host.io"), Some((4, Exact, "|host.io^".into())));
        assert_eq!(
            blocked(&s, "other.io"),
            Some((4, Exact, "|other.io^".into()))
        );
        assert_eq!(blocked(&s, "x.host.io"), None);
        assert_eq!(
            blocked(&s, "x.adb.com"),
            Some((5, Subtree, "adb.com".into()))
        );
        assert_eq!(blocked(&s, ""), None);
        assert_eq!(s.len(), 6);
        assert_eq!(s.block_len(), 6);
        assert_eq!(s.allow_len(), 0);
    }

    #[test]
    fn most_specific_block_rule_reported() {
        let s = set(&[("x.com\na.x.com\n*.b.x.com\n|c.b.x.com^\n", false)]);
        assert_eq!(
            blocked(&s, "z.a.x.com"),
            Some((2, Subtree, "a.x.com".into()))
        );
        assert_eq!(blocked(&s, "q.x.com"), Some((1, Subtree, "x.com".into())));
        assert_eq!(blocked(&s, "b.x.com"), Some((1, Subtree, "x.com".into())));
        assert_eq!(
            blocked(&s, "d.b.x.com"),
            Some((3, SubdomainsOnly, "*.b.x.com".into()))
        );
        assert_eq!(
            blocked(&s, "c.b.x.com"),
            Some((4, Exact, "|c.b.x.com^".into()))
        );
        assert_eq!(
            blocked(&s, "e.c.b.x.com"),
            Some((3, SubdomainsOnly, "*.b.x.com".into()))
        );
    }

    #[test]
    fn exact_over_subtree_at_same_name_in_either_order() {
        for text in ["x.com\n|x.com^\n", "|x.com^\nx.com\n"] {
            let s = set(&[(text, false)]);
            let (sub, ex) = if text.starts_with('x') {
                (1, 2)
            } else {
                (2, 1)
            };
            assert_eq!(
                blocked(&s, "x.com"),
                Some((ex, Exact, "|x.com^".into())),
                "{text}"
            );
            assert_eq!(
                blocked(&s, "a.x.com"),
                Some((sub, Subtree, "x.com".into())),
                "{text}"
            );
            assert_eq!(s.len(), 2);
        }
        // A hosts line and a subtree entry for the same name, in two files.
        let s = set(&[("x.com\n", false), ("0.0.0.0 x.com\n", false)]);
        assert_eq!(
            chk(&s, "x.com"),
            Some(("block", 1, 1, Exact, "|x.com^".into()))
        );
        assert_eq!(
            chk(&s, "w.x.com"),
            Some(("block", 0, 1, Subtree, "x.com".into()))
        );
    }

    #[test]
    fn exact_plus_subdomains_only_cover_subtree() {
        for text in ["*.x.com\n|x.com^\n", "|x.com^\n*.x.com\n"] {
            let s = set(&[(text, false)]);
            let (w, e) = if text.starts_with('*') {
                (1, 2)
            } else {
                (2, 1)
            };
            assert_eq!(blocked(&s, "x.com"), Some((e, Exact, "|x.com^".into())));
            assert_eq!(
                blocked(&s, "a.x.com"),
                Some((w, SubdomainsOnly, "*.x.com".into()))
            );
        }
        // SubdomainsOnly first, then a subtree: E comes from the subtree, S stays.
        let s = set(&[("*.x.com\nx.com\n||x.com^\n", false)]);
        assert_eq!(blocked(&s, "x.com"), Some((2, Subtree, "x.com".into())));
        assert_eq!(
            blocked(&s, "a.x.com"),
            Some((1, SubdomainsOnly, "*.x.com".into()))
        );
        // A later exact replaces the subtree's E role; S unchanged.
        let s = set(&[("*.x.com\nx.com\n|x.com^\n", false)]);
        assert_eq!(blocked(&s, "x.com"), Some((3, Exact, "|x.com^".into())));
        assert_eq!(
            blocked(&s, "a.x.com"),
            Some((1, SubdomainsOnly, "*.x.com".into()))
        );
    }

    #[test]
    fn duplicates_keep_first() {
        let s = set(&[
            ("a.com\n||a.com^\nA.COM.\n0.0.0.0 b.com\n|b.com^\n", false),
            ("a.com\n*.c.com\n", false),
            ("c.com\n*.c.com\n", false),
        ]);
        assert_eq!(
            chk(&s, "x.a.com"),
            Some(("block", 0, 1, Subtree, "a.com".into()))
        );
        assert_eq!(
            chk(&s, "b.com"),
            Some(("block", 0, 4, Exact, "|b.com^".into()))
        );
        assert_eq!(
            chk(&s, "x.c.com"),
            Some(("block", 1, 2, SubdomainsOnly, "*.c.com".into()))
        );
        assert_eq!(
            chk(&s, "c.com"),
            Some(("block", 2, 1, Subtree, "c.com".into()))
        );
        // a.com, b.com, c.com (split: E from file 2, S from file 1).
        assert_eq!(s.len(), 4);
    }

    /// Table built from (name, kind, glid) rules given in any order.
    fn table(rules: &[(&str, RuleKind, u32)]) -> NameTable {
        let pending = rules
            .iter()
            .map(|&(n, kind, glid)| Slot::new(name_hash(n), pack(Prov { kind, glid }, false)))
            .collect();
        NameTable::build(pending)
    }

    fn prov(kind: RuleKind, glid: u32) -> Option<Prov> {
        Some(Prov { kind, glid })
    }

    #[test]
    fn roles_merge_in_line_order_whatever_the_input_order() {
        let h = name_hash("x.com");
        // Exact then subtree: split; later rules change nothing.
        let mut rules = vec![
            ("x.com", Exact, 1),
            ("x.com", Subtree, 2),
            ("x.com", SubdomainsOnly, 3),
            ("x.com", Exact, 4),
            ("x.com", Subtree, 5),
        ];
        for _ in 0..2 {
            let t = table(&rules);
            assert_eq!(t.probe(h, true), prov(Exact, 1));
            assert_eq!(t.probe(h, false), prov(Subtree, 2));
            assert_eq!((t.main.len, t.side.len()), (1, 1));
            rules.reverse();
        }
        // Subtree then SubdomainsOnly: one slot; then Exact takes E.
        let t = table(&[("x.com", Subtree, 1), ("x.com", SubdomainsOnly, 2)]);
        assert_eq!((t.main.len, t.side.len()), (1, 0));
        assert_eq!(t.probe(h, true), prov(Subtree, 1));
        let t = table(&[
            ("x.com", Exact, 3),
            ("x.com", Subtree, 1),
            ("x.com", SubdomainsOnly, 2),
        ]);
        assert_eq!(t.probe(h, true), prov(Exact, 3));
        assert_eq!(t.probe(h, false), prov(Subtree, 1));
        // Only exact / only subdomains.
        let t = table(&[("x.com", Exact, 9)]);
        assert_eq!(
            (t.probe(h, true), t.probe(h, false)),
            (prov(Exact, 9), None)
        );
        let t = table(&[("x.com", SubdomainsOnly, 9)]);
        assert_eq!(
            (t.probe(h, true), t.probe(h, false)),
            (None, prov(SubdomainsOnly, 9))
        );
        assert_eq!(t.probe(name_hash("y.com"), true), None);
    }

    #[test]
    fn bulk_build_many_names_with_duplicates() {
        // Enough rules to exercise the piecewise release of the pending buffer.
        let names: Vec<String> = (0..100_000).map(|i| format!("n{i}.test")).collect();
        let mut rules: Vec<(&str, RuleKind, u32)> = Vec::new();
        for (i, n) in names.iter().enumerate() {
            rules.push((n, Subtree, i as u32 + 1));
        }
        for (i, n) in names.iter().enumerate().step_by(3) {
            rules.push((n, Exact, 200_000 + i as u32));
        }
        let t = table(&rules);
        assert_eq!(t.main.len, 100_000);
        assert_eq!(t.side.len(), 33_334);
        for (i, n) in names.iter().enumerate() {
            let h = name_hash(n);
            let e = if i % 3 == 0 {
                prov(Exact, 200_000 + i as u32)
            } else {
                prov(Subtree, i as u32 + 1)
            };
            assert_eq!(t.probe(h, true), e, "{n}");
            assert_eq!(t.probe(h, false), prov(Subtree, i as u32 + 1), "{n}");
        }
    }

    /// Names whose hashes all fall in the lowest buckets spill below them,
    /// and every name stored is found; absent hashes between them are not.
    #[test]
    fn crowded_low_buckets_spill_and_stay_findable() {
        let hashes: Vec<u64> = (1..=400u64).map(|i| i * 1_000_003).collect();
        let pending = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| Slot::new(h, pack(prov(Subtree, i as u32 + 1).unwrap(), false)))
            .collect();
        let t = NameTable::build(pending);
        assert!(t.main.spill > 50, "spill {}", t.main.spill);
        for (i, &h) in hashes.iter().enumerate() {
            assert_eq!(t.probe(h, true), prov(Subtree, i as u32 + 1), "{h}");
            assert_eq!(t.probe(h + 1, true), None);
        }
        assert_eq!(t.probe(u64::MAX, true), None);
        assert_eq!(t.probe(1, true), None);
    }

    /// Random hashes against a reference map, at sizes where the bucket count
    /// rounds differently; buckets start on a cache line.
    #[test]
    fn random_names_found_exactly() {
        use rand::RngExt;
        let mut rng = rand::rng();
        for names in [1, 4, 5, 6, 77, 1000, 65_537] {
            let stored: std::collections::HashMap<u64, u32> = (0..names)
                .map(|i| (rng.random::<u64>().max(1), i as u32 + 1))
                .collect();
            let pending = stored
                .iter()
                .map(|(&h, &glid)| Slot::new(h, pack(prov(Subtree, glid).unwrap(), false)))
                .collect();
            let t = NameTable::build(pending);
            assert_eq!(t.main.len, stored.len());
            assert_eq!(
                t.main.words[t.main.first..].as_ptr() as usize % CACHE_LINE,
                0
            );
            for (&h, &glid) in &stored {
                assert_eq!(t.probe(h, true), prov(Subtree, glid));
            }
            for _ in 0..10_000 {
                let h = rng.random::<u64>().max(1);
                assert_eq!(
                    t.probe(h, true),
                    stored.get(&h).map(|&g| Prov {
                        kind: Subtree,
                        glid: g
                    })
                );
            }
        }
    }

    #[test]
    fn allow_wins_over_block() {
        let s = set(&[
            (
                "ads.com\n|exact.ads.com^\n/track/\n@@||ok.ads.com^\n@@|only.com^\nonly.com\n",
                false,
            ),
            ("deep.x.ads.com\n*.wild.com\n/tracker/\n", true),
            ("x.ads.com\nwild.com\n", false),
        ]);
        // Exception in a block file.
        assert_eq!(
            chk(&s, "ok.ads.com"),
            Some(("allow", 0, 4, Subtree, "ok.ads.com".into()))
        );
        assert_eq!(
            chk(&s, "a.ok.ads.com"),
            Some(("allow", 0, 4, Subtree, "ok.ads.com".into()))
        );
        // Allow at a deeper name than a more specific block.
        assert_eq!(
            chk(&s, "a.deep.x.ads.com"),
            Some(("allow", 1, 1, Subtree, "deep.x.ads.com".into()))
        );
        assert_eq!(
            chk(&s, "y.x.ads.com"),
            Some(("block", 2, 1, Subtree, "x.ads.com".into()))
        );
        // Allow exact vs block subtree.
        assert_eq!(
            chk(&s, "only.com"),
            Some(("allow", 0, 5, Exact, "|only.com^".into()))
        );
        assert_eq!(
            chk(&s, "a.only.com"),
            Some(("block", 0, 6, Subtree, "only.com".into()))
        );
        // Allow subdomains-only under a blocked subtree.
        assert_eq!(
            chk(&s, "wild.com"),
            Some(("block", 2, 2, Subtree, "wild.com".into()))
        );
        assert_eq!(
            chk(&s, "a.wild.com"),
            Some(("allow", 1, 2, SubdomainsOnly, "*.wild.com".into()))
        );
        // Allow regex beats block names; block regex when nothing else matched.
        assert_eq!(
            chk(&s, "tracker.ads.com"),
            Some(("allow", 1, 3, RuleKind::Regex, "/tracker/".into()))
        );
        assert_eq!(
            chk(&s, "track.ads.com"),
            Some(("block", 0, 1, Subtree, "ads.com".into()))
        );
        assert_eq!(
            chk(&s, "track.example"),
            Some(("block", 0, 3, RuleKind::Regex, "/track/".into()))
        );
        assert_eq!(
            chk(&s, "mytracker.example"),
            Some(("allow", 1, 3, RuleKind::Regex, "/tracker/".into()))
        );
        assert_eq!(chk(&s, "example.org"), None);
        assert_eq!(s.allow_len(), 5);
    }

    #[test]
    fn allow_only_from_regex_with_empty_allow_table() {
        let s = set(&[("ads.com\n", false), ("/^safe\\./\n", true)]);
        assert_eq!(
            chk(&s, "safe.ads.com"),
            Some(("allow", 1, 1, RuleKind::Regex, "/^safe\\./".into()))
        );
        assert_eq!(
            chk(&s, "x.safe.ads.com"),
            Some(("block", 0, 1, Subtree, "ads.com".into()))
        );
    }

    #[test]
    fn regexes() {
        let mut b = DomainSetBuilder::new();
        let errs = b.add_text(
            3,
            "# regexes\n/^ad[0-9]+\\./\n/(unclosed/\n/tele(metry)?/\n/^exact\\.com$/\n/[/\n",
            false,
        );
        let lines: Vec<_> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 6]);
        assert_eq!(errs[0].message, "invalid regex /(unclosed/: unclosed group");
        let s = b.build();
        let m = |n| match s.check(n) {
            Verdict::Blocked(m) => Some((m.rule, m.pattern)),
            _ => None,
        };
        assert_eq!(
            m("ad12.example.com"),
            Some((r(3, 2), "/^ad[0-9]+\\./".into()))
        );
        assert_eq!(m("x.ad12.example.com"), None);
        // Unanchored unless anchored by the user.
        assert_eq!(
            m("foo.telemetry.net"),
            Some((r(3, 4), "/tele(metry)?/".into()))
        );
        assert_eq!(m("television"), Some((r(3, 4), "/tele(metry)?/".into())));
        assert_eq!(m("exact.com"), Some((r(3, 5), "/^exact\\.com$/".into())));
        assert_eq!(m("a.exact.com"), None);
        assert_eq!(s.len(), 3);
        // The first listed regex is reported when several match.
        let s = set(&[("/b/\n/a/\n/ab/\n", false)]);
        assert_eq!(
            chk(&s, "ab"),
            Some(("block", 0, 1, RuleKind::Regex, "/b/".into()))
        );
    }

    #[test]
    fn regex_list_fallback_matches_like_set() {
        let mut re = Regexes::default();
        re.rules.push(("^x".into(), 1));
        re.rules.push(("y$".into(), 2));
        re.matcher = RegexMatcher::List(vec![Regex::new("^x").unwrap(), Regex::new("y$").unwrap()]);
        assert_eq!(re.first_match("xy"), Some(0));
        assert_eq!(re.first_match("ay"), Some(1));
        assert_eq!(re.first_match("a"), None);
    }

    #[test]
    fn rule_refs_across_files_and_errors() {
        let mut b = DomainSetBuilder::new();
        assert!(b.add_text(7, "", false).is_empty());
        let e = b.add_text(7, "a.com\nbad line\n\n", false);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].line, 2);
        assert!(
            e[0].message
                .starts_with("not a domain, hosts line or adblock rule")
        );
        let e = b.add_text(2, "# c\n\n\nb.com\n|bad..name^\n||x^$popup\nc.com", false);
        let lines: Vec<_> = e.iter().map(|e| (e.line, e.message.as_str())).collect();
        assert_eq!(lines[0].0, 5);
        assert_eq!(lines[1], (6, "unsupported modifier $popup"));
        assert!(b.add_text(9, "only errors\n", false).len() == 1);
        b.add_text(4, "@@a.com\n", false);
        b.add_text(5, "d.com\n", false);
        let s = b.build();
        assert_eq!(
            chk(&s, "b.com"),
            Some(("block", 2, 4, Subtree, "b.com".into()))
        );
        assert_eq!(
            chk(&s, "c.com"),
            Some(("block", 2, 7, Subtree, "c.com".into()))
        );
        assert_eq!(
            chk(&s, "a.com"),
            Some(("allow", 4, 1, Subtree, "a.com".into()))
        );
        assert_eq!(
            chk(&s, "d.com"),
            Some(("block", 5, 1, Subtree, "d.com".into()))
        );
    }

    #[test]
    fn many_small_files() {
        let mut b = DomainSetBuilder::new();
        for f in 0..300u16 {
            let text = format!("# file {f}\nf{f}.com\n@@ok.f{f}.com\n0.0.0.0 h{f}.net\n");
            assert!(b.add_text(f, &text, f % 10 == 9).is_empty());
        }
        let s = b.build();
        assert_eq!(s.len(), 900);
        for f in 0..300u16 {
            let act = if f % 10 == 9 { "allow" } else { "block" };
            let got = chk(&s, &format!("x.f{f}.com"));
            assert_eq!(got, Some((act, f, 2, Subtree, format!("f{f}.com"))));
            let got = chk(&s, &format!("ok.f{f}.com"));
            assert_eq!(got, Some(("allow", f, 3, Subtree, format!("ok.f{f}.com"))));
            let got = chk(&s, &format!("h{f}.net"));
            assert_eq!(got, Some((act, f, 4, Exact, format!("|h{f}.net^"))));
        }
    }

    #[test]
    fn glid_overflow_is_a_line_error() {
        let mut b = DomainSetBuilder::new();
        b.next_base = GLID_MAX - 2;
        let e = b.add_text(0, "a.com\nb.com\nc.com\nd.com\n", false);
        let lines: Vec<_> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4]);
        assert!(e[0].message.starts_with("too many list lines"));
        let s = b.build();
        assert_eq!(
            chk(&s, "b.com"),
            Some(("block", 0, 2, Subtree, "b.com".into()))
        );
        assert_eq!(chk(&s, "c.com"), None);
    }

    #[test]
    fn idn_and_case_in_lists_and_queries() {
        let s = set(&[("Bücher.DE\n0.0.0.0 пример.рф\n", false)]);
        assert_eq!(normalize_name("www.BÜCHER.de."), "www.xn--bcher-kva.de");
        let q = normalize_name("www.BÜCHER.de.");
        assert_eq!(
            chk(&s, &q),
            Some(("block", 0, 1, Subtree, "xn--bcher-kva.de".into()))
        );
        let q = normalize_name("ПРИМЕР.РФ");
        assert_eq!(
            chk(&s, &q),
            Some(("block", 0, 2, Exact, "|xn--e1afmkfd.xn--p1ai^".into()))
        );
    }

    #[test]
    fn normalize_name_borrows_when_normal() {
        assert!(matches!(
            normalize_name("a.example.com"),
            Cow::Borrowed("a.example.com")
        ));
        assert!(matches!(
            normalize_name("a.example.com."),
            Cow::Borrowed("a.example.com")
        ));
        assert!(matches!(normalize_name("."), Cow::Borrowed("")));
        assert_eq!(normalize_name("A.Example.COM."), "a.example.com");
        assert_eq!(normalize_name("münchen.de"), "xn--mnchen-3ya.de");
    }

    #[test]
    fn empty_set() {
        let s = DomainSetBuilder::new().build();
        assert!(s.is_empty());
        assert_eq!(s.check("a.com"), Verdict::None);
        assert_eq!(s.check(""), Verdict::None);
    }

    #[test]
    fn odd_query_names_do_not_panic() {
        let s = set(&[("com\n*.b\n", false)]);
        for n in ["", ".", "..", "a..com", ".com", "com.", "a.", "x.b", "b"] {
            let _ = s.check(n);
        }
        assert_eq!(chk(&s, "a..com").map(|m| m.4), Some("com".into()));
        assert_eq!(chk(&s, "x.b").map(|m| m.4), Some("*.b".into()));
        assert_eq!(chk(&s, "b"), None);
    }

    /// A large generated list: every name matches itself, and names that are
    /// not listed (nor below a listed name) never match.
    #[test]
    fn generated_list_no_false_hits() {
        let mut text = String::new();
        for i in 0..50_000u32 {
            text.push_str(&format!("n{i}.example{}.com\n", i % 97));
        }
        let s = set(&[(&text, false)]);
        assert_eq!(s.len(), 50_000);
        for i in (0..50_000u32).step_by(7) {
            let name = format!("n{i}.example{}.com", i % 97);
            assert_eq!(blocked(&s, &name).map(|m| m.0), Some(i + 1));
            assert_eq!(blocked(&s, &format!("x.{name}")).map(|m| m.0), Some(i + 1));
            assert_eq!(
                blocked(&s, &format!("n{}.example{}.com", i + 50_000, i % 97)),
                None
            );
            assert_eq!(
                blocked(&s, &format!("n{i}.example{}.com", (i + 1) % 97)),
                None
            );
        }
    }

    /// The real lists in shared/data (if present): no two listed names share a
    /// hash, every listed name matches its own line, and names near listed ones
    /// match exactly as a plain string oracle says.
    #[test]
    fn real_lists_collision_free() {
        let Some(files) = real_lists() else {
            eprintln!("real_lists_collision_free: shared/data lists not found, skipped");
            return;
        };
        let mut b = DomainSetBuilder::new();
        for (i, text) in files.iter().enumerate() {
            let errs = b.add_text(i as u16, text, false);
            assert!(errs.is_empty(), "{:?}", &errs[..errs.len().min(5)]);
        }
        let s = b.build();

        // Oracle: name -> first (file, line).
        let mut first: std::collections::HashMap<&str, RuleRef> = Default::default();
        for (f, text) in files.iter().enumerate() {
            for (i, line) in text.lines().enumerate() {
                if !line.starts_with('#') && !line.is_empty() {
                    first.entry(line).or_insert(r(f as u16, i as u32 + 1));
                }
            }
        }
        assert!(first.len() > 900_000, "{}", first.len());
        let hashes: hashbrown::HashSet<u64> = first.keys().map(|n| name_hash(n)).collect();
        assert_eq!(
            hashes.len(),
            first.len(),
            "64-bit hash collision in the real lists"
        );
        assert_eq!(s.len(), first.len());

        for (name, rule) in &first {
            match s.check(name) {
                Verdict::Blocked(m) => {
                    assert_eq!(
                        (m.rule, m.kind, m.pattern.as_str()),
                        (*rule, Subtree, *name)
                    )
                }
                v => panic!("{name}: {v:?}"),
            }
        }

        // Names near listed ones, and random ones, against the oracle.
        let oracle = |q: &str| -> Option<RuleRef> {
            let mut start = 0;
            loop {
                if let Some(r) = first.get(&q[start..]) {
                    return Some(*r);
                }
                start += q[start..].find('.')? + 1;
            }
        };
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (mut hits, mut misses) = (0, 0);
        let mut q = String::new();
        for name in first.keys().step_by(5) {
            for variant in 0..3 {
                q.clear();
                match variant {
                    // Change one character of the first label.
                    0 => {
                        let label = name.find('.').unwrap_or(name.len());
                        let at = (next() as usize) % label;
                        q.push_str(&name[..at]);
                        q.push((b'a' + (next() % 26) as u8) as char);
                        q.push_str(&name[at + 1..]);
                    }
                    // A random label under the parent.
                    1 => {
                        q.push_str(&format!("z{:x}", next() & 0xffff_ffff));
                        if let Some(dot) = name.find('.') {
                            q.push_str(&name[dot..]);
                        }
                    }
                    // A random label under the name itself (always a hit).
                    _ => q.push_str(&format!("q{:x}.{name}", next() & 0xffff)),
                }
                let want = oracle(&q);
                let got = match s.check(&q) {
                    Verdict::Blocked(m) => Some(m.rule),
                    Verdict::None => None,
                    v => panic!("{q}: {v:?}"),
                };
                assert_eq!(got, want, "{q}");
                if want.is_some() {
                    hits += 1
                } else {
                    misses += 1
                }
            }
        }
        assert!(misses > 100_000 && hits > 200_000, "{hits} {misses}");
    }

    /// Decompressed texts of the shared/data lists, or None when not present.
    fn real_lists() -> Option<Vec<String>> {
        let dir = std::env::var_os("SINKD_TEST_DATA")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
            });
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                n.starts_with("hagezi-") && n.ends_with(".txt.gz")
            })
            .collect();
        paths.sort();
        if paths.is_empty() {
            return None;
        }
        let texts = paths
            .iter()
            .map(|p| {
                let out = std::process::Command::new("gzip")
                    .arg("-dc")
                    .arg(p)
                    .output()
                    .expect("run gzip");
                assert!(out.status.success(), "gzip -dc {}", p.display());
                String::from_utf8(out.stdout).expect("utf-8 list")
            })
            .collect();
        Some(texts)
    }
}
