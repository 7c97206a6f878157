//! `sinkd report`: what each device asked for over a period, read from the
//! query log (the rotated files too), as aligned text for a terminal or as one
//! self-contained HTML page with charts.
//!
//! Plain blocking std code like `sinkd tail`: one pass over files on disk.
//! Everything a device name or query name puts on the page is escaped, and
//! the page loads nothing: no scripts, fonts or images from anywhere.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::querylog::{DeviceFilter, MAX_LINE, numbered};

/// Rotated files looked for beyond `path.1`; `keep` is far below this.
const MAX_ROTATED: usize = 1000;
/// More bars than this make a timeline unreadable on a phone, so longer
/// periods get wider buckets.
const MAX_BUCKETS: u64 = 48;
const HOUR: u64 = 3600;
/// Names listed per category; the rest are summed up in one line.
const TEXT_TOP: usize = 5;
const HTML_TOP: usize = 8;
const HTML_BYPASS_TOP: usize = 12;

pub struct ReportOptions {
    /// The current log file; `path.1`, `path.2`, … are older.
    pub path: PathBuf,
    /// Only queries this recent.
    pub since: Option<Duration>,
    /// A device name (any case), client IP or MAC.
    pub device: Option<String>,
    /// The end of the period; injectable so tests do not depend on the clock.
    pub now: SystemTime,
}

/// The summary of a period of the query log.
#[derive(Clone, Debug)]
pub struct Report {
    /// Start of the period: `now - since`, else the first query read.
    pub from: Option<SystemTime>,
    /// End of the period: `now` with `since`, else the last query read.
    pub until: Option<SystemTime>,
    pub since: Option<Duration>,
    pub device_filter: Option<String>,
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    pub queries: u64,
    pub blocked: u64,
    /// Lines that were not a query-log record, skipped.
    pub malformed: u64,
    /// Most blocked first.
    pub devices: Vec<DeviceReport>,
    /// All devices together.
    pub timeline: Timeline,
    /// Print times in UTC rather than the local time zone (build sets false).
    pub utc: bool,
}

#[derive(Clone, Debug)]
pub struct DeviceReport {
    /// The device name, or the client IP when the log had none.
    pub name: String,
    /// False when `name` is only the client IP.
    pub named: bool,
    /// Client IPs and MACs seen, most queries first.
    pub addresses: Vec<String>,
    pub macs: Vec<String>,
    pub queries: u64,
    pub blocked: u64,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// Blocked queries by the list that blocked them, most first.
    pub categories: Vec<CategoryReport>,
    /// Queries that tried to get around sinkd, most first.
    pub bypass: Vec<BypassAttempt>,
    pub timeline: Timeline,
}

#[derive(Clone, Debug)]
pub struct CategoryReport {
    pub category: Category,
    pub queries: u64,
    /// Every name blocked in this category, most queries first.
    pub endpoints: Vec<Endpoint>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    pub queries: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BypassAttempt {
    pub name: String,
    pub category: Category,
    pub queries: u64,
}

/// Queries per time bucket, `step` wide from `start`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeline {
    pub start: SystemTime,
    pub step: Duration,
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Everything not blocked (forwarded, cached, local, refused, failed).
    pub allowed: u64,
    pub blocked: u64,
}

/// What kind of endpoint a blocked query was, from the list its rule names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    XiaomiTelemetry,
    XiaomiAds,
    HttpDns,
    MiCloud,
    Doh,
    AddressRange,
    BypassHygiene,
    /// Another list: its file name without the extension.
    List(String),
    /// Blocked by a rule this report cannot read.
    Unknown,
}

impl Category {
    /// From a log line's `rule`: `file:line pattern`, `file:line pattern
    /// (CNAME target)`, `file:line range (answer ip)` or `built-in name (why)`.
    pub fn from_rule(rule: Option<&str>) -> Category {
        let Some(rule) = rule else {
            return Category::Unknown;
        };
        if rule.starts_with("built-in ") {
            return Category::BypassHygiene;
        }
        let Some(file) = rule_file(rule) else {
            return Category::Unknown;
        };
        // Lists may be named by path or URL; only the file name says which.
        let base = file.rsplit('/').next().unwrap_or(file);
        let known = [
            ("xiaomi-telemetry.txt", Category::XiaomiTelemetry),
            ("xiaomi-ads.txt", Category::XiaomiAds),
            ("xiaomi-httpdns.txt", Category::HttpDns),
            ("xiaomi-cloud.txt", Category::MiCloud),
            ("doh.txt", Category::Doh),
        ];
        if let Some((_, category)) = known
            .into_iter()
            .find(|(f, _)| f.eq_ignore_ascii_case(base))
        {
            return category;
        }
        if base.to_ascii_lowercase().ends_with(".cidr") {
            return Category::AddressRange;
        }
        let stem = match base.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem,
            _ => base,
        };
        if stem.is_empty() {
            Category::Unknown
        } else {
            Category::List(stem.to_owned())
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Category::XiaomiTelemetry => "Xiaomi telemetry",
            Category::XiaomiAds => "Xiaomi ads",
            Category::HttpDns => "HTTP-DNS (resolver bypass)",
            Category::MiCloud => "Mi Cloud sync",
            Category::Doh => "DoH/DoT resolvers (bypass)",
            Category::AddressRange => "Blocked address range",
            Category::BypassHygiene => "Bypass hygiene",
            Category::List(name) => name,
            Category::Unknown => "Other rules",
        }
    }

    /// A query meant to get around sinkd: a private resolver, a public
    /// encrypted one, or the probes that decide whether to use one.
    pub fn is_bypass(&self) -> bool {
        matches!(
            self,
            Category::HttpDns | Category::Doh | Category::BypassHygiene
        )
    }

    fn colour(&self) -> &'static str {
        const OTHERS: [&str; 5] = ["#2b8a3e", "#0b7285", "#5f3dc4", "#a61e4d", "#5c940d"];
        match self {
            Category::XiaomiTelemetry => "#e8590c",
            Category::XiaomiAds => "#f59f00",
            Category::HttpDns => "#ae3ec9",
            Category::MiCloud => "#1c7ed6",
            Category::Doh => "#6741d9",
            Category::AddressRange => "#c92a2a",
            Category::BypassHygiene => "#d6336c",
            // Stable across runs, so a list keeps its colour from report to report.
            Category::List(name) => {
                let hash = name
                    .bytes()
                    .fold(0usize, |h, b| h.wrapping_mul(31) + b as usize);
                OTHERS[hash % OTHERS.len()]
            }
            Category::Unknown => "#868e96",
        }
    }
}

/// The file of a `file:line …` rule. File names may hold spaces and colons
/// (paths, URLs), so the location ends at the first `:digits` followed by a
/// space or the end.
fn rule_file(rule: &str) -> Option<&str> {
    let bytes = rule.as_bytes();
    for (i, _) in rule.match_indices(':') {
        let digits = bytes[i + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let after = bytes.get(i + 1 + digits);
        if i > 0 && digits > 0 && matches!(after, None | Some(b' ')) {
            return Some(&rule[..i]);
        }
    }
    None
}

impl Report {
    pub fn bypass_attempts(&self) -> u64 {
        self.devices.iter().map(DeviceReport::bypass_attempts).sum()
    }

    pub fn blocked_share(&self) -> f64 {
        share(self.blocked, self.queries)
    }
}

impl DeviceReport {
    pub fn bypass_attempts(&self) -> u64 {
        self.bypass.iter().map(|b| b.queries).sum()
    }

    pub fn blocked_share(&self) -> f64 {
        share(self.blocked, self.queries)
    }
}

fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

// ---------------------------------------------------------------------------
// Reading

/// The fields the report needs; the rest of a line is not looked at.
#[derive(Deserialize)]
struct Line {
    ts: String,
    client: String,
    #[serde(default)]
    mac: Option<String>,
    #[serde(default)]
    device: Option<String>,
    name: String,
    action: String,
    #[serde(default)]
    rule: Option<String>,
}

/// Reads the log files for the period and sums them up.
pub fn build(options: &ReportOptions) -> io::Result<Report> {
    let cutoff = options.since.and_then(|s| options.now.checked_sub(s));
    let mut reading = Reading {
        cutoff,
        // humantime cannot write times before 1970 (`--since 100y`); such a
        // cutoff is only compared parsed.
        cutoff_text: cutoff
            .filter(|c| *c >= UNIX_EPOCH)
            .map(|c| humantime::format_rfc3339_millis(c).to_string()),
        filter: DeviceFilter::new(options.device.as_deref()),
        devices: HashMap::new(),
        malformed: 0,
    };
    let files = log_files(&options.path);
    let mut read = Vec::new();
    for (i, file) in files.iter().enumerate() {
        // A rotated file ends where the next one starts: when that start is
        // already before the period, none of this file is in it, and a
        // short `--since` need not parse hundreds of old megabytes.
        if let (Some(cutoff), Some(next)) = (cutoff, files.get(i + 1))
            && first_time(next).is_some_and(|t| t < cutoff)
        {
            continue;
        }
        let newest = i + 1 == files.len();
        match File::open(file) {
            Ok(f) => reading.read(BufReader::new(f), newest)?,
            // Rotated away between listing and opening (its lines moved on),
            // or mid-rotation with no current file yet.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", file.display()))),
        }
        read.push(file.clone());
    }
    if read.is_empty() {
        let e = io::Error::from(io::ErrorKind::NotFound);
        return Err(io::Error::new(
            e.kind(),
            format!("{}: {e}", options.path.display()),
        ));
    }
    Ok(reading.finish(options, read))
}

/// `path.N` … `path.1`, then `path`: oldest first.
fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (1..=MAX_ROTATED)
        .map(|n| numbered(path, n))
        .take_while(|p| p.is_file())
        .collect();
    files.reverse();
    files.push(path.to_owned());
    files
}

/// The time of the first readable line of `path`.
fn first_time(path: &Path) -> Option<SystemTime> {
    let mut reader = BufReader::new(File::open(path).ok()?);
    let mut line = Vec::new();
    for _ in 0..16 {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Ok(entry) = serde_json::from_slice::<Line>(&line)
            && let Ok(at) = humantime::parse_rfc3339(&entry.ts)
        {
            return Some(at);
        }
    }
    None
}

struct Reading {
    cutoff: Option<SystemTime>,
    /// The cutoff as the log writes times, to skip old lines unparsed.
    cutoff_text: Option<String>,
    filter: DeviceFilter,
    devices: HashMap<String, DeviceAcc>,
    malformed: u64,
}

impl Reading {
    fn read(&mut self, mut reader: impl BufRead, newest: bool) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            let complete = line.last() == Some(&b'\n');
            if !complete && line.len() > MAX_LINE {
                skip_line(&mut reader)?;
                self.malformed += 1;
                continue;
            }
            let parsed = self.line(&line);
            // The writer may be halfway through the newest file's last line:
            // that is not a broken line, only one not finished yet.
            if !parsed && (complete || !newest) {
                self.malformed += 1;
            }
        }
    }

    /// False when `line` is not a query-log record.
    fn line(&mut self, line: &[u8]) -> bool {
        if line.iter().all(u8::is_ascii_whitespace) {
            return true;
        }
        if let Some(cutoff) = &self.cutoff_text
            && written_before(line, cutoff)
        {
            return true;
        }
        let Ok(entry) = serde_json::from_slice::<Line>(line) else {
            return false;
        };
        let Ok(at) = humantime::parse_rfc3339(&entry.ts) else {
            return false;
        };
        if self.cutoff.is_some_and(|c| at < c)
            || !self
                .filter
                .wants(entry.device.as_deref(), &entry.client, entry.mac.as_deref())
        {
            return true;
        }
        let key = match entry.device.as_deref() {
            Some(d) if !d.trim().is_empty() => d,
            _ => entry.client.as_str(),
        };
        if !self.devices.contains_key(key) {
            let acc = DeviceAcc::new(key.to_owned(), key != entry.client, at);
            self.devices.insert(key.to_owned(), acc);
        }
        if let Some(device) = self.devices.get_mut(key) {
            device.add(&entry, at);
        }
        true
    }

    fn finish(self, options: &ReportOptions, files: Vec<PathBuf>) -> Report {
        let first = self.devices.values().map(|d| d.first).min();
        let last = self.devices.values().map(|d| d.last).max();
        let (from, until) = match self.cutoff {
            Some(cutoff) => (Some(cutoff), Some(options.now.max(last.unwrap_or(cutoff)))),
            None => (first, last),
        };
        let frame = match (from, until) {
            (Some(from), Some(until)) => Frame::new(from, until),
            _ => Frame::new(options.now, options.now),
        };
        let mut devices: Vec<DeviceReport> = self
            .devices
            .into_values()
            .map(|d| d.finish(&frame))
            .collect();
        devices.sort_by(|a, b| {
            b.blocked
                .cmp(&a.blocked)
                .then(b.queries.cmp(&a.queries))
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut timeline = frame.empty();
        for d in &devices {
            for (sum, b) in timeline.buckets.iter_mut().zip(&d.timeline.buckets) {
                sum.allowed += b.allowed;
                sum.blocked += b.blocked;
            }
        }
        Report {
            from,
            until,
            since: options.since,
            device_filter: options.device.clone(),
            files,
            queries: devices.iter().map(|d| d.queries).sum(),
            blocked: devices.iter().map(|d| d.blocked).sum(),
            malformed: self.malformed,
            devices,
            timeline,
            utc: false,
        }
    }
}

/// Whether `line` starts the way the writer starts every line, with a time
/// before `cutoff`. Fixed-width UTC times compare as text.
fn written_before(line: &[u8], cutoff: &str) -> bool {
    let Some(ts) = line
        .strip_prefix(br#"{"ts":""#)
        .and_then(|rest| rest.get(..cutoff.len()))
    else {
        return false;
    };
    let shaped = ts.len() == 24 && ts[10] == b'T' && ts[19] == b'.' && ts[23] == b'Z';
    shaped && ts < cutoff.as_bytes()
}

fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                reader.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    }
}

struct DeviceAcc {
    name: String,
    named: bool,
    addresses: HashMap<String, u64>,
    macs: HashMap<String, u64>,
    queries: u64,
    blocked: u64,
    first: SystemTime,
    last: SystemTime,
    categories: HashMap<Category, HashMap<String, u64>>,
    /// By hour since the epoch: the period is only known at the end.
    hours: HashMap<u64, Bucket>,
}

impl DeviceAcc {
    fn new(name: String, named: bool, at: SystemTime) -> DeviceAcc {
        DeviceAcc {
            name,
            named,
            addresses: HashMap::new(),
            macs: HashMap::new(),
            queries: 0,
            blocked: 0,
            first: at,
            last: at,
            categories: HashMap::new(),
            hours: HashMap::new(),
        }
    }

    fn add(&mut self, entry: &Line, at: SystemTime) {
        self.queries += 1;
        self.first = self.first.min(at);
        self.last = self.last.max(at);
        *self.addresses.entry(entry.client.clone()).or_default() += 1;
        if let Some(mac) = entry.mac.as_deref().filter(|m| !m.is_empty()) {
            *self.macs.entry(mac.to_ascii_lowercase()).or_default() += 1;
        }
        let hour = self.hours.entry(unix_secs(at) / HOUR).or_default();
        if entry.action == "blocked" {
            self.blocked += 1;
            hour.blocked += 1;
            let category = Category::from_rule(entry.rule.as_deref());
            let names = self.categories.entry(category).or_default();
            *names.entry(entry.name.to_ascii_lowercase()).or_default() += 1;
        } else {
            hour.allowed += 1;
        }
    }

    fn finish(self, frame: &Frame) -> DeviceReport {
        let mut categories: Vec<CategoryReport> = self
            .categories
            .into_iter()
            .map(|(category, names)| {
                let endpoints = ranked(names);
                CategoryReport {
                    category,
                    queries: endpoints.iter().map(|e| e.queries).sum(),
                    endpoints,
                }
            })
            .collect();
        categories.sort_by(|a, b| {
            b.queries
                .cmp(&a.queries)
                .then_with(|| a.category.label().cmp(b.category.label()))
        });
        let mut bypass: Vec<BypassAttempt> = categories
            .iter()
            .filter(|c| c.category.is_bypass())
            .flat_map(|c| {
                c.endpoints.iter().map(|e| BypassAttempt {
                    name: e.name.clone(),
                    category: c.category.clone(),
                    queries: e.queries,
                })
            })
            .collect();
        bypass.sort_by(|a, b| b.queries.cmp(&a.queries).then_with(|| a.name.cmp(&b.name)));
        let mut timeline = frame.empty();
        for (hour, counts) in self.hours {
            let bucket = frame.bucket(hour);
            timeline.buckets[bucket].allowed += counts.allowed;
            timeline.buckets[bucket].blocked += counts.blocked;
        }
        DeviceReport {
            name: self.name,
            named: self.named,
            addresses: ranked(self.addresses).into_iter().map(|e| e.name).collect(),
            macs: ranked(self.macs).into_iter().map(|e| e.name).collect(),
            queries: self.queries,
            blocked: self.blocked,
            first_seen: self.first,
            last_seen: self.last,
            categories,
            bypass,
            timeline,
        }
    }
}

/// Most first; ties by name so reports come out the same every time.
fn ranked(counts: HashMap<String, u64>) -> Vec<Endpoint> {
    let mut v: Vec<Endpoint> = counts
        .into_iter()
        .map(|(name, queries)| Endpoint { name, queries })
        .collect();
    v.sort_by(|a, b| b.queries.cmp(&a.queries).then_with(|| a.name.cmp(&b.name)));
    v
}

/// The timeline's buckets: whole hours from the period's first hour.
struct Frame {
    first_hour: u64,
    hours_per_bucket: u64,
    buckets: usize,
}

impl Frame {
    fn new(from: SystemTime, until: SystemTime) -> Frame {
        let first_hour = unix_secs(from) / HOUR;
        let end_hour = unix_secs(until).div_ceil(HOUR).max(first_hour + 1);
        let hours = end_hour - first_hour;
        let hours_per_bucket = [1, 2, 3, 4, 6, 8, 12, 24]
            .into_iter()
            .find(|step| hours.div_ceil(*step) <= MAX_BUCKETS)
            .unwrap_or_else(|| hours.div_ceil(MAX_BUCKETS).div_ceil(24) * 24);
        Frame {
            first_hour,
            hours_per_bucket,
            buckets: hours.div_ceil(hours_per_bucket) as usize,
        }
    }

    /// Times outside the period (a clock that jumped) go to its edges.
    fn bucket(&self, hour: u64) -> usize {
        let i = hour.saturating_sub(self.first_hour) / self.hours_per_bucket;
        (i as usize).min(self.buckets - 1)
    }

    fn empty(&self) -> Timeline {
        Timeline {
            start: UNIX_EPOCH + Duration::from_secs(self.first_hour * HOUR),
            step: Duration::from_secs(self.hours_per_bucket * HOUR),
            buckets: vec![Bucket::default(); self.buckets],
        }
    }
}

fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// Times

/// A wall-clock time in the report's zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday.
    weekday: u32,
    /// Seconds east of UTC.
    offset: i64,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

fn civil(at: SystemTime, utc: bool) -> Civil {
    let secs = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64) - 1,
    };
    if !utc && let Some(local) = local_civil(secs) {
        return local;
    }
    utc_civil(secs)
}

fn local_civil(secs: i64) -> Option<Civil> {
    let t = secs as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which we own; nothing in
    // `sinkd report` changes the environment (TZ) while it runs.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        (!libc::localtime_r(&t, &mut tm).is_null()).then_some(tm)
    }?;
    Some(Civil {
        year: tm.tm_year as i64 + 1900,
        month: tm.tm_mon as u32 + 1,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        weekday: tm.tm_wday as u32,
        offset: tm.tm_gmtoff as i64,
    })
}

/// Proleptic Gregorian calendar from days since 1970 (H. Hinnant's
/// `civil_from_days`), so UTC needs no C library.
fn utc_civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem / 60 % 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 4).rem_euclid(7) as u32,
        offset: 0,
    }
}

impl Civil {
    /// `2026-11-23 19:04:05`
    fn stamp(&self) -> String {
        format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `Mon 23 Nov 2026, 19:04`
    fn long(&self) -> String {
        format!(
            "{} {} {} {}, {:02}:{:02}",
            WEEKDAYS[self.weekday as usize % 7],
            self.day,
            MONTHS[(self.month as usize + 11) % 12],
            self.year,
            self.hour,
            self.minute
        )
    }

    /// `Mon 23 Nov, 19:04:05`
    fn short(&self) -> String {
        format!(
            "{} {} {}, {:02}:{:02}:{:02}",
            WEEKDAYS[self.weekday as usize % 7],
            self.day,
            MONTHS[(self.month as usize + 11) % 12],
            self.hour,
            self.minute,
            self.second
        )
    }
}

/// Which clock the times are on: `UTC`, or `local time, UTC+01:00`.
fn zone_label(report: &Report) -> String {
    if report.utc {
        return "UTC".into();
    }
    let at = report.until.unwrap_or(UNIX_EPOCH);
    let secs = unix_secs(at) as i64;
    match local_civil(secs) {
        Some(c) => {
            let sign = if c.offset < 0 { '-' } else { '+' };
            let off = c.offset.abs();
            format!(
                "local time, UTC{sign}{:02}:{:02}",
                off / 3600,
                off / 60 % 60
            )
        }
        None => "UTC".into(),
    }
}

/// `24h`, `7d`, `90m`: the way `--since` is written.
fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => humantime::format_duration(d).to_string(),
        _ if s.is_multiple_of(86_400) && s >= 2 * 86_400 => format!("{}d", s / 86_400),
        _ if s.is_multiple_of(HOUR) => format!("{}h", s / HOUR),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => humantime::format_duration(d).to_string(),
    }
}

fn period_line(report: &Report) -> String {
    match (report.from, report.until) {
        (Some(from), Some(until)) => {
            let mut line = format!(
                "{} – {}",
                civil(from, report.utc).long(),
                civil(until, report.utc).long()
            );
            if let Some(since) = report.since {
                let _ = write!(line, " (last {})", span(since));
            }
            line
        }
        _ => match report.since {
            Some(since) => format!("last {}", span(since)),
            None => "the whole log".into(),
        },
    }
}

fn percent(part: u64, whole: u64) -> String {
    let p = share(part, whole) * 100.0;
    if part == 0 || part == whole {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// `12,345`
fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", num(n), if n == 1 { one } else { many })
}

fn file_names(report: &Report) -> String {
    report
        .files
        .iter()
        .map(|f| {
            f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Text

const TEXT_BAR: usize = 24;

/// The report for a terminal: aligned columns, no colour.
pub fn write_text(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut s = String::new();
    let _ = writeln!(s, "sinkd report: {}", period_line(report));
    let _ = writeln!(s, "times: {}", zone_label(report));
    if let Some(device) = &report.device_filter {
        let _ = writeln!(s, "device: {}", printable(device));
    }
    let _ = writeln!(
        s,
        "{}, {}, {} blocked ({}), {}",
        plural(report.devices.len() as u64, "device", "devices"),
        plural(report.queries, "query", "queries"),
        num(report.blocked),
        percent(report.blocked, report.queries),
        plural(
            report.bypass_attempts(),
            "bypass attempt",
            "bypass attempts"
        ),
    );
    if report.devices.is_empty() {
        s.push_str("\nNo queries in this period.\n");
    }
    for device in &report.devices {
        s.push('\n');
        text_device(report, device, &mut s);
    }
    s.push('\n');
    let _ = write!(s, "read {}", file_names(report));
    if report.malformed > 0 {
        let _ = write!(
            s,
            "; skipped {} that {} not a query-log record",
            plural(report.malformed, "line", "lines"),
            if report.malformed == 1 { "was" } else { "were" }
        );
    }
    s.push('\n');
    out.write_all(s.as_bytes())
}

fn text_device(report: &Report, d: &DeviceReport, s: &mut String) {
    let mut ids: Vec<Cow<str>> = Vec::new();
    if d.named {
        ids.extend(d.addresses.iter().map(|a| printable(a)));
    }
    ids.extend(d.macs.iter().map(|m| printable(m)));
    s.push_str(&printable(&d.name));
    if !d.named {
        s.push_str(" (no device name)");
    }
    if !ids.is_empty() {
        let _ = write!(s, "  {}", ids.join(", "));
    }
    s.push('\n');
    let _ = writeln!(
        s,
        "  {}, {} blocked ({})",
        plural(d.queries, "query", "queries"),
        num(d.blocked),
        percent(d.blocked, d.queries)
    );
    let _ = writeln!(
        s,
        "  first seen {}, last seen {}",
        civil(d.first_seen, report.utc).stamp(),
        civil(d.last_seen, report.utc).stamp()
    );
    if d.categories.is_empty() {
        s.push_str("  nothing blocked\n");
    }
    // One column for the counts of categories and names alike.
    let width = 2 + d
        .categories
        .iter()
        .flat_map(|c| {
            let names = c.endpoints.iter().take(TEXT_TOP);
            std::iter::once(2 + c.category.label().chars().count())
                .chain(names.map(|e| 4 + e.name.chars().count()))
        })
        .chain(d.bypass.iter().map(|b| 4 + b.name.chars().count()))
        .max()
        .unwrap_or(0)
        .clamp(28, 60);
    let count_width = num(d.blocked).len().max(5);
    let most = d.categories.first().map_or(1, |c| c.queries.max(1));
    if !d.categories.is_empty() {
        s.push_str("  blocked by category:\n");
    }
    for c in &d.categories {
        let bar = (c.queries as usize * TEXT_BAR).div_ceil(most as usize);
        let _ = writeln!(
            s,
            "{}{:>cw$}  {}",
            padded(&format!("  {}", printable(c.category.label())), width),
            num(c.queries),
            "█".repeat(bar),
            cw = count_width
        );
        for e in c.endpoints.iter().take(TEXT_TOP) {
            let _ = writeln!(
                s,
                "{}{:>cw$}",
                padded(&format!("    {}", printable(&e.name)), width),
                num(e.queries),
                cw = count_width
            );
        }
        let rest = &c.endpoints[c.endpoints.len().min(TEXT_TOP)..];
        if !rest.is_empty() {
            let queries: u64 = rest.iter().map(|e| e.queries).sum();
            let _ = writeln!(s, "    … {}", more_names(rest.len(), queries));
        }
    }
    if !d.bypass.is_empty() {
        let _ = writeln!(
            s,
            "  ! {} to get around sinkd",
            plural(d.bypass_attempts(), "bypass attempt", "bypass attempts")
        );
        for b in &d.bypass {
            let _ = writeln!(
                s,
                "{}{:>cw$}  {}",
                padded(&format!("    {}", printable(&b.name)), width),
                num(b.queries),
                printable(b.category.label()),
                cw = count_width
            );
        }
    }
}

/// Device and query names come from the network: a control character in
/// one must not reach the terminal as an escape sequence.
fn printable(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(
            text.chars()
                .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// `3 more names (7 queries)`
fn more_names(names: usize, queries: u64) -> String {
    format!(
        "{} more {} ({})",
        num(names as u64),
        word(names as u64, "name", "names"),
        plural(queries, "query", "queries")
    )
}

/// `value` padded with spaces to `width` characters; a longer value is kept
/// whole and followed by one space so columns never run together.
fn padded(value: &str, width: usize) -> String {
    let len = value.chars().count();
    let mut out = value.to_owned();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(len).max(1)));
    out
}

// ---------------------------------------------------------------------------
// HTML

/// Text for HTML element content and attribute values alike.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Controls have no business on the page and some are not
            // allowed in HTML at all.
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root{--bg:#f3f4f7;--card:#fff;--ink:#1d2330;--muted:#667085;--line:#e4e7ec;
--allowed:#9db1c9;--blocked:#e03131;--warn:#b54708;--warnbg:#fff6e5;--warnline:#f5b544}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.wrap{max-width:1120px;margin:0 auto;padding:0 20px}
header.top{background:#141a26;color:#f4f6fa;padding:28px 0 30px}
header h1{margin:0;font-size:26px;letter-spacing:-.01em}
header h1 span{color:#ff8a65}
.period{margin:4px 0 18px;color:#b8c0cf}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px}
.tile{background:#1f2735;border-radius:12px;padding:12px 16px}
.tile b{display:block;font-size:28px;line-height:1.15;font-variant-numeric:tabular-nums}
.tile span{color:#b8c0cf;font-size:13px}
.tile.bad b{color:#ff6b6b}.tile.warn b{color:#ffc078}
.overview{display:grid;grid-template-columns:minmax(0,1.15fr) minmax(0,1fr);gap:16px;margin-top:16px}
.panel{background:#1f2735;border-radius:12px;padding:14px 16px}
.panel h2{margin:0 0 8px;font-size:13px;font-weight:600;color:#b8c0cf;text-transform:uppercase;letter-spacing:.06em}
.panel svg text{fill:#b8c0cf}
.glance{list-style:none;margin:0;padding:0}
.glance li{display:grid;grid-template-columns:minmax(0,1fr) auto;gap:2px 10px;padding:5px 0}
.glance .who{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.glance .pct{color:#b8c0cf;font-size:13px;font-variant-numeric:tabular-nums}
.glance .bar{grid-column:1/3;height:8px;border-radius:4px;background:#3a4558;overflow:hidden}
.glance .bar i{display:block;height:100%;background:#ff6b6b;border-radius:4px}
main.wrap{padding-top:24px;padding-bottom:8px}
.card{background:var(--card);border-radius:16px;box-shadow:0 1px 2px rgba(16,24,40,.06),0 4px 14px rgba(16,24,40,.05);
padding:22px 24px;margin:0 0 22px}
.card-head{display:flex;align-items:center;gap:16px}
.card-head svg{flex:none}
.card h2{margin:0;font-size:21px;overflow-wrap:anywhere}
.ids{margin:2px 0 0;color:var(--muted);font-size:13px;overflow-wrap:anywhere}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(140px,1fr));gap:10px;margin:18px 0 0}
.stats div{background:#f7f8fa;border-radius:10px;padding:8px 12px}
.stats dt{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.stats dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
.bypass{margin:16px 0 0;border:1px solid var(--warnline);background:var(--warnbg);border-radius:12px;padding:12px 16px}
.bypass-head{display:flex;gap:10px;align-items:baseline;flex-wrap:wrap}
.bypass-head strong{color:var(--warn);font-size:16px}
.bypass-head .why{color:#7a4a12;font-size:13px}
.bang{font-style:normal;display:inline-grid;place-items:center;width:22px;height:22px;border-radius:50%;background:var(--warn);color:#fff;font-weight:700;font-size:14px;flex:none;align-self:center}
.bypass ul{list-style:none;margin:8px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:6px}
.bypass li{background:#fff;border:1px solid #f4d19b;border-radius:12px;padding:3px 10px;font-size:13px}
.bypass li code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.bypass li b{margin-left:6px;color:var(--warn)}
.bypass li em{font-style:normal;color:var(--muted);margin-left:6px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:18px;margin:20px 0 0}
figure{margin:0}
figcaption,h3{font-size:13px;font-weight:600;color:var(--muted);text-transform:uppercase;letter-spacing:.06em;margin:0 0 8px}
svg{display:block;width:100%;height:auto}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#475467}
.legend{display:flex;gap:14px;font-size:12px;color:var(--muted);margin-top:4px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.none{color:var(--muted);margin:8px 0}
h3{margin-top:22px}
.endpoints{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px}
.cat{border:1px solid var(--line);border-top:4px solid var(--c);border-radius:10px;padding:10px 12px}
.cat h4{margin:0 0 6px;font-size:14px;display:flex;justify-content:space-between;gap:8px}
.cat h4 span{color:var(--muted);font-weight:500;font-variant-numeric:tabular-nums}
.cat ol{list-style:none;margin:0;padding:0}
.cat li{position:relative;display:flex;justify-content:space-between;gap:10px;padding:3px 6px;font-size:13px;border-radius:5px;overflow:hidden}
.cat li::before{content:"";position:absolute;inset:0 auto 0 0;width:var(--w);background:var(--c);opacity:.13}
.cat li code{position:relative;font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.cat li b{position:relative;font-weight:600;font-variant-numeric:tabular-nums}
.cat .more{color:var(--muted);font-size:12px;padding:4px 6px 0}
footer{color:var(--muted);font-size:13px;padding:4px 0 30px}
@media (max-width:760px){
.overview{grid-template-columns:1fr}
}
@media (max-width:520px){
body{font-size:14px}
.wrap{padding:0 12px}
header.top{padding:20px 0 22px}
.tile b{font-size:23px}
.tiles{grid-template-columns:1fr 1fr;gap:8px}
.card{padding:16px 14px;border-radius:14px}
.card h2{font-size:18px}
.stats{grid-template-columns:1fr 1fr}
.charts{grid-template-columns:1fr}
.endpoints{grid-template-columns:1fr}
}
"#;

/// The report as one HTML page: inline CSS and SVG, nothing fetched, no
/// script, readable on a laptop and a phone.
pub fn write_html(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut h = String::with_capacity(64 << 10);
    let period = period_line(report);
    h.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n");
    // The page may hold names an attacker chose; even if escaping ever
    // failed, the browser would neither run nor fetch anything.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    let _ = writeln!(h, "<title>sinkd report · {}</title>", esc(&period));
    let _ = writeln!(h, "<style>{CSS}</style>\n</head>\n<body>");

    h.push_str("<header class=\"top\"><div class=\"wrap\">\n");
    h.push_str("<h1><span>sinkd</span> report</h1>\n");
    let _ = write!(
        h,
        "<p class=\"period\">{} · {}",
        esc(&period),
        esc(&zone_label(report))
    );
    if let Some(device) = &report.device_filter {
        let _ = write!(h, " · device {}", esc(device));
    }
    h.push_str("</p>\n<div class=\"tiles\">\n");
    let tile = |h: &mut String, class: &str, big: String, small: String| {
        let _ = writeln!(
            h,
            "<div class=\"tile {class}\"><b>{}</b><span>{}</span></div>",
            esc(&big),
            esc(&small)
        );
    };
    let devices = report.devices.len() as u64;
    tile(&mut h, "", num(devices), word(devices, "device", "devices"));
    tile(
        &mut h,
        "",
        num(report.queries),
        word(report.queries, "query", "queries"),
    );
    tile(
        &mut h,
        "bad",
        percent(report.blocked, report.queries),
        format!("{} blocked", num(report.blocked)),
    );
    let bypass = report.bypass_attempts();
    tile(
        &mut h,
        if bypass > 0 { "warn" } else { "" },
        num(bypass),
        word(bypass, "bypass attempt", "bypass attempts"),
    );
    h.push_str("</div>\n");
    if !report.devices.is_empty() {
        h.push_str("<div class=\"overview\">\n<section class=\"panel\"><h2>Queries over time, all devices</h2>\n");
        timeline_svg(report, &report.timeline, true, &mut h);
        h.push_str("</section>\n<section class=\"panel\"><h2>Blocked share by device</h2>\n<ul class=\"glance\">\n");
        for d in &report.devices {
            let _ = writeln!(
                h,
                "<li><span class=\"who\">{}</span><span class=\"pct\">{} of {}</span><span class=\"bar\"><i style=\"width:{:.1}%\"></i></span></li>",
                esc(&d.name),
                percent(d.blocked, d.queries),
                num(d.queries),
                d.blocked_share() * 100.0
            );
        }
        h.push_str("</ul>\n</section>\n</div>\n");
    }
    h.push_str("</div></header>\n<main class=\"wrap\">\n");
    if report.devices.is_empty() {
        h.push_str("<p class=\"none\">No queries in this period.</p>\n");
    }
    for d in &report.devices {
        html_device(report, d, &mut h);
    }
    h.push_str("</main>\n<footer class=\"wrap\">");
    let _ = write!(h, "Read {}.", esc(&file_names(report)));
    if report.malformed > 0 {
        let _ = write!(
            h,
            " Skipped {} that {} not a query-log record.",
            plural(report.malformed, "line", "lines"),
            if report.malformed == 1 { "was" } else { "were" }
        );
    }
    h.push_str("</footer>\n</body>\n</html>\n");
    out.write_all(h.as_bytes())
}

fn word(n: u64, one: &str, many: &str) -> String {
    if n == 1 { one } else { many }.to_owned()
}

fn html_device(report: &Report, d: &DeviceReport, h: &mut String) {
    h.push_str("<section class=\"card\">\n<div class=\"card-head\">");
    ring_svg(d, h);
    let _ = write!(h, "<div><h2>{}</h2><p class=\"ids\">", esc(&d.name));
    let mut ids: Vec<String> = Vec::new();
    if d.named {
        ids.extend(d.addresses.iter().map(|a| esc(a)));
    } else {
        ids.push("no device name, IP only".into());
    }
    ids.extend(d.macs.iter().map(|m| esc(m)));
    h.push_str(&ids.join(" · "));
    h.push_str("</p></div></div>\n<dl class=\"stats\">");
    let stat = |h: &mut String, label: &str, value: String| {
        let _ = write!(h, "<div><dt>{label}</dt><dd>{}</dd></div>", esc(&value));
    };
    stat(h, "Queries", num(d.queries));
    stat(
        h,
        "Blocked",
        format!("{} · {}", num(d.blocked), percent(d.blocked, d.queries)),
    );
    stat(h, "First seen", civil(d.first_seen, report.utc).short());
    stat(h, "Last seen", civil(d.last_seen, report.utc).short());
    h.push_str("</dl>\n");

    if !d.bypass.is_empty() {
        let _ = write!(
            h,
            "<div class=\"bypass\"><div class=\"bypass-head\"><i class=\"bang\">!</i><strong>{}</strong><span class=\"why\">tried to resolve names through other resolvers or probed for them; sinkd answered, so the device stays here</span></div>\n<ul>",
            esc(&plural(
                d.bypass_attempts(),
                "bypass attempt",
                "bypass attempts"
            ))
        );
        for b in d.bypass.iter().take(HTML_BYPASS_TOP) {
            let _ = write!(
                h,
                "<li><code>{}</code><b>{}</b><em>{}</em></li>",
                esc(&b.name),
                num(b.queries),
                esc(short_label(&b.category))
            );
        }
        let rest = d.bypass.len().saturating_sub(HTML_BYPASS_TOP);
        if rest > 0 {
            let _ = write!(h, "<li>… {}</li>", plural(rest as u64, "more", "more"));
        }
        h.push_str("</ul></div>\n");
    }

    h.push_str("<div class=\"charts\">\n<figure><figcaption>Blocked by category</figcaption>\n");
    if d.categories.is_empty() {
        h.push_str("<p class=\"none\">Nothing blocked.</p>\n");
    } else {
        categories_svg(d, h);
    }
    h.push_str("</figure>\n<figure><figcaption>Queries over time</figcaption>\n");
    timeline_svg(report, &d.timeline, false, h);
    h.push_str("</figure>\n</div>\n");

    if !d.categories.is_empty() {
        h.push_str("<h3>Top endpoints</h3>\n<div class=\"endpoints\">\n");
        for c in &d.categories {
            let most = c.endpoints.first().map_or(1, |e| e.queries.max(1));
            let _ = write!(
                h,
                "<div class=\"cat\" style=\"--c:{}\"><h4>{}<span>{}</span></h4><ol>",
                c.category.colour(),
                esc(c.category.label()),
                num(c.queries)
            );
            for e in c.endpoints.iter().take(HTML_TOP) {
                let _ = write!(
                    h,
                    "<li style=\"--w:{:.1}%\"><code>{}</code><b>{}</b></li>",
                    e.queries as f64 * 100.0 / most as f64,
                    esc(&e.name),
                    num(e.queries)
                );
            }
            h.push_str("</ol>");
            let rest = &c.endpoints[c.endpoints.len().min(HTML_TOP)..];
            if !rest.is_empty() {
                let queries: u64 = rest.iter().map(|e| e.queries).sum();
                let _ = write!(
                    h,
                    "<div class=\"more\">… {}</div>",
                    more_names(rest.len(), queries)
                );
            }
            h.push_str("</div>\n");
        }
        h.push_str("</div>\n");
    }
    h.push_str("</section>\n");
}

/// The label without its parenthesis, for the small tags in the bypass box.
fn short_label(category: &Category) -> &str {
    let label = category.label();
    label.split(" (").next().unwrap_or(label)
}

/// A ring with the share blocked in its middle.
fn ring_svg(d: &DeviceReport, h: &mut String) {
    let r = 27.0;
    let circumference = 2.0 * std::f64::consts::PI * r;
    let arc = circumference * d.blocked_share();
    let pct = (d.blocked_share() * 100.0).round();
    let _ = write!(
        h,
        "<svg width=\"68\" height=\"68\" viewBox=\"0 0 68 68\" role=\"img\" aria-label=\"{pct:.0}% blocked\" style=\"width:68px\">\
<circle cx=\"34\" cy=\"34\" r=\"{r}\" fill=\"none\" stroke=\"#e9edf2\" stroke-width=\"8\"/>\
<circle cx=\"34\" cy=\"34\" r=\"{r}\" fill=\"none\" stroke=\"#e03131\" stroke-width=\"8\" stroke-linecap=\"{cap}\" \
stroke-dasharray=\"{arc:.2} {circumference:.2}\" transform=\"rotate(-90 34 34)\"/>\
<text x=\"34\" y=\"33\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"700\" style=\"fill:#1d2330\">{pct:.0}%</text>\
<text x=\"34\" y=\"46\" text-anchor=\"middle\" font-size=\"9\">blocked</text></svg>",
        cap = if arc > 0.0 { "round" } else { "butt" },
    );
}

/// Horizontal bars, one a category: its label and count above, the bar below.
fn categories_svg(d: &DeviceReport, h: &mut String) {
    const W: f64 = 420.0;
    const ROW: f64 = 38.0;
    let most = d.categories.first().map_or(1, |c| c.queries.max(1)) as f64;
    let height = ROW * d.categories.len() as f64;
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 {W} {height}\" role=\"img\" aria-label=\"blocked queries by category\">"
    );
    for (i, c) in d.categories.iter().enumerate() {
        let y = i as f64 * ROW;
        let w = (c.queries as f64 / most * W).max(4.0);
        let label = esc(c.category.label());
        let _ = write!(
            h,
            "<g><title>{label}: {}</title>\
<text x=\"0\" y=\"{:.1}\" font-size=\"13\" style=\"fill:#1d2330\">{label}</text>\
<text x=\"{W}\" y=\"{:.1}\" font-size=\"13\" font-weight=\"600\" text-anchor=\"end\">{}</text>\
<rect x=\"0\" y=\"{:.1}\" width=\"{W}\" height=\"11\" rx=\"5.5\" fill=\"#eef1f5\"/>\
<rect x=\"0\" y=\"{:.1}\" width=\"{w:.1}\" height=\"11\" rx=\"5.5\" fill=\"{}\"/></g>",
            esc(&plural(c.queries, "query", "queries")),
            y + 14.0,
            y + 14.0,
            num(c.queries),
            y + 20.0,
            y + 20.0,
            c.category.colour()
        );
    }
    h.push_str("</svg>\n");
}

/// Stacked bars per bucket, allowed below and blocked on top, with hour
/// ticks in the report's zone.
fn timeline_svg(report: &Report, t: &Timeline, dark: bool, h: &mut String) {
    const W: f64 = 420.0;
    const H: f64 = 150.0;
    const LEFT: f64 = 30.0;
    const TOP: f64 = 8.0;
    const BOTTOM: f64 = 124.0;
    let n = t.buckets.len().max(1);
    let most = t
        .buckets
        .iter()
        .map(|b| b.allowed + b.blocked)
        .max()
        .unwrap_or(0);
    let scale = nice_ceiling(most.max(1));
    let slot = (W - LEFT) / n as f64;
    let bar = (slot * 0.74).max(1.0);
    let y = |v: u64| BOTTOM - (BOTTOM - TOP) * v as f64 / scale as f64;
    let (grid, allowed) = if dark {
        ("#3a4558", "#7d8fa8")
    } else {
        ("#e4e7ec", "#9db1c9")
    };
    let _ = write!(
        h,
        "<svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"allowed and blocked queries over time\">"
    );
    for v in [0, scale / 2, scale] {
        let gy = y(v);
        let _ = write!(
            h,
            "<line x1=\"{LEFT}\" x2=\"{W}\" y1=\"{gy:.1}\" y2=\"{gy:.1}\" stroke=\"{grid}\" stroke-width=\"1\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            LEFT - 5.0,
            gy + 3.5,
            num(v)
        );
    }
    for (i, b) in t.buckets.iter().enumerate() {
        let x = LEFT + i as f64 * slot + (slot - bar) / 2.0;
        let start = t.start + t.step * i as u32;
        let c = civil(start, report.utc);
        let end = civil(start + t.step, report.utc);
        let _ = write!(
            h,
            "<g><title>{} {:02}:{:02}–{:02}:{:02}: {} allowed, {} blocked</title>",
            esc(&format!("{} {}", WEEKDAYS[c.weekday as usize % 7], c.day)),
            c.hour,
            c.minute,
            end.hour,
            end.minute,
            num(b.allowed),
            num(b.blocked)
        );
        let ya = y(b.allowed);
        let yb = y(b.allowed + b.blocked);
        if b.allowed > 0 {
            let _ = write!(
                h,
                "<rect x=\"{x:.2}\" y=\"{ya:.2}\" width=\"{bar:.2}\" height=\"{:.2}\" fill=\"{allowed}\"/>",
                BOTTOM - ya
            );
        }
        if b.blocked > 0 {
            let _ = write!(
                h,
                "<rect x=\"{x:.2}\" y=\"{yb:.2}\" width=\"{bar:.2}\" height=\"{:.2}\" fill=\"#e03131\"/>",
                ya - yb
            );
        }
        h.push_str("</g>");
    }
    for (i, label) in ticks(report, t) {
        let x = LEFT + i as f64 * slot;
        let anchor = match i {
            0 => "start",
            _ if i == n => "end",
            _ => "middle",
        };
        let _ = write!(
            h,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{BOTTOM}\" y2=\"{:.1}\" stroke=\"{grid}\"/>\
<text x=\"{x:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"{anchor}\">{}</text>",
            BOTTOM + 4.0,
            BOTTOM + 16.0,
            esc(&label)
        );
    }
    h.push_str("</svg>\n");
    let _ = writeln!(
        h,
        "<div class=\"legend\"><span><i style=\"background:{allowed}\"></i>allowed</span><span><i style=\"background:#e03131\"></i>blocked</span><span>{} per bar</span></div>",
        span(t.step)
    );
}

/// Bucket edges to label and their labels: at most seven, on round hours
/// of the report's clock (midnight shown as the day), else evenly spaced.
fn ticks(report: &Report, t: &Timeline) -> Vec<(usize, String)> {
    const MOST: u64 = 7;
    let n = t.buckets.len();
    let step_hours = (t.step.as_secs() / HOUR).max(1);
    let hours = step_hours * n as u64;
    let edge = |i: usize| civil(t.start + t.step * i as u32, report.utc);
    let day = |c: &Civil| format!("{} {}", WEEKDAYS[c.weekday as usize % 7], c.day);
    let every = [1, 2, 3, 4, 6, 8, 12, 24, 48, 72, 96, 168]
        .into_iter()
        .find(|h| h % step_hours == 0 && hours.div_ceil(*h) <= MOST);
    if let Some(every) = every {
        let round: Vec<(usize, String)> = (0..=n)
            .map(|i| (i, edge(i)))
            .filter(|(_, c)| {
                let hour = u64::from(c.hour);
                c.minute == 0
                    && if every < 24 {
                        hour % every == 0
                    } else {
                        hour == 0
                    }
            })
            .step_by((every / 24).max(1) as usize)
            .map(|(i, c)| match c.hour {
                0 => (i, day(&c)),
                _ => (i, format!("{:02}:00", c.hour)),
            })
            .collect();
        if round.len() >= 2 {
            return round;
        }
    }
    // Months, or a zone whose hours are not whole hours off UTC.
    let spacing = n.div_ceil(MOST as usize).max(1);
    (0..=n)
        .step_by(spacing)
        .map(|i| {
            let c = edge(i);
            match hours > 48 {
                true => (
                    i,
                    format!("{} {}", c.day, MONTHS[(c.month as usize + 11) % 12]),
                ),
                false => (i, format!("{:02}:{:02}", c.hour, c.minute)),
            }
        })
        .collect()
}

/// The axis top: the smallest round number at least `v` whose half is a
/// whole number too, so both grid lines read evenly (17 → 20, 27 → 30).
fn nice_ceiling(v: u64) -> u64 {
    let mut unit = 1u64;
    loop {
        for m in [2, 3, 4, 5, 6, 8, 10] {
            let top = m * unit;
            if top >= v && top.is_multiple_of(2) {
                return top;
            }
        }
        unit *= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::atomic::{AtomicU32, Ordering};

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/querylog.jsonl");

    fn at(ts: &str) -> SystemTime {
        humantime::parse_rfc3339(ts).unwrap()
    }

    /// The fixture's lines were written up to this moment.
    fn now() -> SystemTime {
        at("2026-11-23T20:00:00Z")
    }

    fn options(since: Option<&str>, device: Option<&str>) -> ReportOptions {
        ReportOptions {
            path: FIXTURE.into(),
            since: since.map(|s| humantime::parse_duration(s).unwrap()),
            device: device.map(str::to_owned),
            now: now(),
        }
    }

    fn report(since: Option<&str>, device: Option<&str>) -> Report {
        let mut r = build(&options(since, device)).unwrap();
        r.utc = true;
        r
    }

    fn device<'a>(r: &'a Report, name: &str) -> &'a DeviceReport {
        r.devices.iter().find(|d| d.name == name).unwrap()
    }

    fn category<'a>(d: &'a DeviceReport, label: &str) -> &'a CategoryReport {
        d.categories
            .iter()
            .find(|c| c.category.label() == label)
            .unwrap_or_else(|| panic!("no category {label} for {}", d.name))
    }

    fn endpoints(c: &CategoryReport) -> Vec<(&str, u64)> {
        c.endpoints
            .iter()
            .map(|e| (e.name.as_str(), e.queries))
            .collect()
    }

    fn text(r: &Report) -> String {
        let mut out = Vec::new();
        write_text(r, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn html(r: &Report) -> String {
        let mut out = Vec::new();
        write_html(r, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("sinkd-report-{}-{n}", std::process::id()));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn log(&self, name: &str, text: &str) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn line(ts: &str, device: &str, name: &str, action: &str, rule: &str) -> String {
        let device = serde_json::to_string(device).unwrap();
        let name = serde_json::to_string(name).unwrap();
        let rule = serde_json::to_string(rule).unwrap();
        format!(
            r#"{{"ts":"{ts}","client":"192.168.1.9","mac":null,"device":{device},"group":null,"proto":"udp","name":{name},"type":"A","action":"{action}","rule":{rule},"rcode":"NOERROR","answer":[],"upstream":null,"ms":0.04}}"#
        )
    }

    #[test]
    fn counts_queries_and_blocked_share_per_device() {
        let r = report(Some("24h"), None);
        let rows: Vec<(&str, u64, u64)> = r
            .devices
            .iter()
            .map(|d| (d.name.as_str(), d.queries, d.blocked))
            .collect();
        // Most blocked first.
        assert_eq!(
            rows,
            [
                ("Anna's Redmi Note", 170, 123),
                ("Living-room Mi TV", 53, 15),
                ("Ben's ThinkPad", 71, 4),
                ("192.168.1.77", 10, 1),
            ]
        );
        assert_eq!((r.queries, r.blocked), (304, 143));
        let anna = device(&r, "Anna's Redmi Note");
        assert!((anna.blocked_share() - 123.0 / 170.0).abs() < 1e-9);
        assert_eq!(anna.addresses, ["192.168.1.23"]);
        assert_eq!(anna.macs, ["aa:bb:cc:dd:ee:ff"]);
        assert!(anna.named);
        let anon = device(&r, "192.168.1.77");
        assert!(!anon.named);
        assert!(anon.macs.is_empty());
    }

    #[test]
    fn blocked_queries_by_category_with_top_names() {
        let r = report(Some("24h"), None);
        let anna = device(&r, "Anna's Redmi Note");
        let cats: Vec<(&str, u64)> = anna
            .categories
            .iter()
            .map(|c| (c.category.label(), c.queries))
            .collect();
        assert_eq!(
            cats,
            [
                ("Xiaomi telemetry", 66),
                ("Xiaomi ads", 22),
                ("Mi Cloud sync", 15),
                ("HTTP-DNS (resolver bypass)", 13),
                ("Bypass hygiene", 4),
                ("Blocked address range", 2),
                ("DoH/DoT resolvers (bypass)", 1),
            ]
        );
        let telemetry = category(anna, "Xiaomi telemetry");
        assert_eq!(
            endpoints(telemetry)[..2],
            [("tracking.miui.com", 22), ("data.mistat.xiaomi.com", 18)]
        );
        // CNAME cloaking counts under the list of the CNAME target.
        assert!(endpoints(telemetry).contains(&("stats.mi-fds.com", 2)));
        assert_eq!(
            endpoints(category(anna, "Blocked address range")),
            [("mis.migc.xiaomi.com", 2)]
        );
        assert_eq!(
            endpoints(category(anna, "Mi Cloud sync"))[0],
            ("galleryapi.micloud.xiaomi.net", 7)
        );
        assert_eq!(
            endpoints(category(anna, "Xiaomi ads"))[0],
            ("sdkconfig.ad.xiaomi.com", 10)
        );
        // Any other list: its file name without the extension.
        let anon = device(&r, "192.168.1.77");
        assert_eq!(
            anon.categories[0].category,
            Category::List("my-extra".into())
        );
        assert_eq!(
            endpoints(&anon.categories[0]),
            [("pixel.adsafeprotected.com", 1)]
        );
        let sum: u64 = anna.categories.iter().map(|c| c.queries).sum();
        assert_eq!(sum, anna.blocked);
    }

    #[test]
    fn categories_come_from_the_rule_file() {
        let cases = [
            (
                "blocklists/xiaomi-telemetry.txt:69 tracking.miui.com",
                Category::XiaomiTelemetry,
            ),
            (
                "/etc/sinkd/blocklists/xiaomi-ads.txt:41 sdkconfig.ad.xiaomi.com",
                Category::XiaomiAds,
            ),
            (
                "blocklists/xiaomi-httpdns.txt:39 resolver.msg.xiaomi.net",
                Category::HttpDns,
            ),
            (
                "blocklists/xiaomi-cloud.txt:75 galleryapi.micloud.xiaomi.net",
                Category::MiCloud,
            ),
            ("blocklists/doh.txt:33 dns.google", Category::Doh),
            (
                "blocklists/xiaomi-telemetry.txt:62 mistat.intl.xiaomi.com.edgesuite.net (CNAME mistat.intl.xiaomi.com.edgesuite.net)",
                Category::XiaomiTelemetry,
            ),
            (
                "blocklists/xiaomi.cidr:33 42.62.48.0/24 (answer 42.62.48.157)",
                Category::AddressRange,
            ),
            (
                "built-in use-application-dns.net (browsers keep using this resolver)",
                Category::BypassHygiene,
            ),
            (
                "built-in _dns.resolver.arpa (no automatic upgrade to another resolver)",
                Category::BypassHygiene,
            ),
            (
                "/home/me/My Lists/kids.list:3 games.example",
                Category::List("kids".into()),
            ),
            (
                "https://lists.example/hosts.txt:120 ads.example",
                Category::List("hosts".into()),
            ),
            ("lists/noext:1 x.example", Category::List("noext".into())),
            ("something else entirely", Category::Unknown),
            (":12 x", Category::Unknown),
        ];
        for (rule, want) in cases {
            assert_eq!(Category::from_rule(Some(rule)), want, "{rule}");
        }
        assert_eq!(Category::from_rule(None), Category::Unknown);
        assert!(Category::HttpDns.is_bypass() && Category::Doh.is_bypass());
        assert!(Category::BypassHygiene.is_bypass());
        assert!(!Category::XiaomiTelemetry.is_bypass() && !Category::AddressRange.is_bypass());
    }

    #[test]
    fn bypass_attempts_are_http_dns_doh_and_built_in() {
        let r = report(Some("24h"), None);
        let anna = device(&r, "Anna's Redmi Note");
        let seen: Vec<(&str, &str, u64)> = anna
            .bypass
            .iter()
            .map(|b| (b.name.as_str(), b.category.label(), b.queries))
            .collect();
        assert_eq!(
            seen,
            [
                ("resolver.msg.xiaomi.net", "HTTP-DNS (resolver bypass)", 8),
                ("resolver.gslb.mi-idc.com", "HTTP-DNS (resolver bypass)", 3),
                ("use-application-dns.net", "Bypass hygiene", 3),
                ("httpdns.browser.miui.com", "HTTP-DNS (resolver bypass)", 2),
                ("_dns.resolver.arpa", "Bypass hygiene", 1),
                ("dns.google", "DoH/DoT resolvers (bypass)", 1),
            ]
        );
        assert_eq!(anna.bypass_attempts(), 18);
        let ben = device(&r, "Ben's ThinkPad");
        assert_eq!(ben.bypass_attempts(), 4);
        assert_eq!(ben.bypass[0].name, "mozilla.cloudflare-dns.com");
        assert_eq!(ben.bypass[0].category, Category::Doh);
        assert!(device(&r, "Living-room Mi TV").bypass.is_empty());
        assert_eq!(r.bypass_attempts(), 22);
    }

    #[test]
    fn since_leaves_out_older_lines() {
        let all = report(None, None);
        assert_eq!((all.queries, all.blocked), (401, 192));
        let anna = device(&all, "Anna's Redmi Note");
        assert_eq!(
            (anna.queries, anna.blocked, anna.bypass_attempts()),
            (219, 161, 26)
        );
        assert_eq!(all.from, Some(at("2026-11-22T14:05:51.198Z")));
        assert_eq!(all.until, Some(at("2026-11-23T19:57:39.598Z")));

        let day = report(Some("24h"), None);
        assert_eq!(day.queries, 304);
        assert_eq!(day.from, Some(at("2026-11-22T20:00:00Z")));
        assert_eq!(day.until, Some(now()));

        // Two hours: the rotated file ends before them, so it is not read.
        let recent = report(Some("2h"), None);
        assert_eq!(recent.files, [PathBuf::from(FIXTURE)]);
        assert!(recent.queries > 0 && recent.queries < 60);
        for d in &recent.devices {
            assert!(d.first_seen >= at("2026-11-23T18:00:00Z"), "{}", d.name);
        }
    }

    #[test]
    fn device_filter_takes_a_name_ip_or_mac() {
        let names =
            |r: &Report| -> Vec<String> { r.devices.iter().map(|d| d.name.clone()).collect() };
        let by_name = report(Some("24h"), Some("ANNA'S redmi NOTE"));
        assert_eq!(names(&by_name), ["Anna's Redmi Note"]);
        assert_eq!(by_name.queries, 170);
        assert_eq!(
            names(&report(Some("24h"), Some("192.168.1.60"))),
            ["Living-room Mi TV"]
        );
        assert_eq!(
            names(&report(Some("24h"), Some("3C:22:FB:10:7A:01"))),
            ["Ben's ThinkPad"]
        );
        let anon = report(Some("24h"), Some("192.168.1.77"));
        assert_eq!(names(&anon), ["192.168.1.77"]);
        assert_eq!(anon.queries, 10);
        let nobody = report(Some("24h"), Some("kitchen-tablet"));
        assert!(nobody.devices.is_empty());
        assert_eq!(nobody.queries, 0);
        assert!(text(&nobody).contains("No queries in this period."));
        assert!(html(&nobody).contains("No queries in this period."));
    }

    #[test]
    fn first_and_last_seen() {
        let r = report(Some("24h"), None);
        let anna = device(&r, "Anna's Redmi Note");
        // The first of the period is in the rotated file, the last in the current one.
        assert_eq!(anna.first_seen, at("2026-11-22T20:01:28.416Z"));
        assert_eq!(anna.last_seen, at("2026-11-23T19:57:39.598Z"));
        let ben = device(&r, "Ben's ThinkPad");
        assert_eq!(ben.first_seen, at("2026-11-22T20:07:23.182Z"));
        assert_eq!(ben.last_seen, at("2026-11-23T19:49:26.234Z"));
        let all = report(None, None);
        assert_eq!(
            device(&all, "Anna's Redmi Note").first_seen,
            at("2026-11-22T14:05:51.198Z")
        );
    }

    #[test]
    fn reads_rotated_files_oldest_first() {
        let r = report(Some("24h"), None);
        let rotated = PathBuf::from(format!("{FIXTURE}.1"));
        assert_eq!(r.files, [rotated.clone(), PathBuf::from(FIXTURE)]);

        // The current file alone has 222 records, 82 of the period are older.
        let dir = TempDir::new();
        let current = dir.log("q.jsonl", &fs::read_to_string(FIXTURE).unwrap());
        let alone = build(&ReportOptions {
            path: current.clone(),
            ..options(Some("24h"), None)
        })
        .unwrap();
        assert_eq!(alone.queries, 222);
        assert_eq!(alone.files, std::slice::from_ref(&current));

        // path.2 is older than path.1.
        let old = line(
            "2026-11-23T01:00:00.000Z",
            "Old phone",
            "a.example",
            "forwarded",
            "x",
        );
        dir.log("q.jsonl.2", &format!("{old}\n"));
        dir.log("q.jsonl.1", &fs::read_to_string(&rotated).unwrap());
        let three = build(&ReportOptions {
            path: current.clone(),
            ..options(None, None)
        })
        .unwrap();
        assert_eq!(three.files.len(), 3);
        assert!(three.files[0].ends_with("q.jsonl.2"));
        assert_eq!(three.queries, 402);
        // With a period, a file is judged by where the next one starts: path.1
        // starts before the period, so all of path.2 is older and not read.
        let day = build(&ReportOptions {
            path: current,
            ..options(Some("24h"), None)
        })
        .unwrap();
        assert_eq!(day.files.len(), 2);
        assert_eq!(day.queries, 304);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let r = report(Some("24h"), None);
        assert_eq!(r.malformed, 1);
        assert!(text(&r).ends_with(
            "read querylog.jsonl.1, querylog.jsonl; skipped 1 line that was not a query-log record\n"
        ));
        assert!(html(&r).contains("Skipped 1 line that was not a query-log record."));

        let dir = TempDir::new();
        let good = line(
            "2026-11-23T10:00:00.000Z",
            "Phone",
            "a.example",
            "forwarded",
            "x",
        );
        let no_name =
            r#"{"ts":"2026-11-23T10:00:00.000Z","client":"192.168.1.9","action":"forwarded"}"#;
        let bad_time = line("yesterday", "Phone", "a.example", "forwarded", "x");
        dir.log(
            "q.jsonl.1",
            &format!(
                "{good}\nnot json at all\n{no_name}\n\n   \n{bad_time}\n{{\"ts\":\"2026-11-23T10:0"
            ),
        );
        // A last line without its newline is one the writer is still
        // writing: not counted in the newest file.
        let path = dir.log(
            "q.jsonl",
            &format!("{good}\n{{\"ts\":\"2026-11-23T11:00:00"),
        );
        let r = build(&ReportOptions {
            path,
            since: None,
            device: None,
            now: now(),
        })
        .unwrap();
        assert_eq!(r.queries, 2);
        assert_eq!(r.malformed, 4);
    }

    #[test]
    fn a_missing_log_is_an_error_and_an_empty_one_an_empty_report() {
        let dir = TempDir::new();
        let missing = build(&ReportOptions {
            path: dir.0.join("nothing.jsonl"),
            ..options(None, None)
        });
        let e = missing.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("nothing.jsonl"), "{e}");

        // Mid-rotation: only `path.1` is there.
        let good = line(
            "2026-11-23T10:00:00.000Z",
            "Phone",
            "a.example",
            "forwarded",
            "x",
        );
        dir.log("moved.jsonl.1", &format!("{good}\n"));
        let rotated = build(&ReportOptions {
            path: dir.0.join("moved.jsonl"),
            ..options(None, None)
        })
        .unwrap();
        assert_eq!(rotated.queries, 1);

        // A period reaching back before 1970 is the whole log.
        let long_ago = build(&ReportOptions {
            since: Some(Duration::from_secs(100 * 365 * 86_400)),
            ..options(None, None)
        })
        .unwrap();
        assert_eq!(long_ago.queries, 401);
        assert!(long_ago.timeline.buckets.len() as u64 <= MAX_BUCKETS);

        let path = dir.log("empty.jsonl", "");
        let mut r = build(&ReportOptions {
            path,
            ..options(Some("24h"), None)
        })
        .unwrap();
        r.utc = true;
        assert!(r.devices.is_empty());
        assert_eq!(r.timeline.buckets.len(), 24);
        let t = text(&r);
        assert!(
            t.contains("0 devices, 0 queries, 0 blocked (0%), 0 bypass attempts"),
            "{t}"
        );
        assert!(html(&r).contains("No queries in this period."));
    }

    #[test]
    fn hourly_timeline_covers_the_period() {
        let r = report(Some("24h"), None);
        assert_eq!(r.timeline.start, at("2026-11-22T20:00:00Z"));
        assert_eq!(r.timeline.step, Duration::from_secs(3600));
        assert_eq!(r.timeline.buckets.len(), 24);
        let total: u64 = r
            .timeline
            .buckets
            .iter()
            .map(|b| b.allowed + b.blocked)
            .sum();
        let blocked: u64 = r.timeline.buckets.iter().map(|b| b.blocked).sum();
        assert_eq!((total, blocked), (r.queries, r.blocked));
        for d in &r.devices {
            assert_eq!(d.timeline.buckets.len(), 24);
            let sum: u64 = d
                .timeline
                .buckets
                .iter()
                .map(|b| b.allowed + b.blocked)
                .sum();
            assert_eq!(sum, d.queries, "{}", d.name);
        }
        let labels: Vec<String> = ticks(&r, &r.timeline).into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            labels,
            [
                "20:00", "Mon 23", "04:00", "08:00", "12:00", "16:00", "20:00"
            ]
        );
        // A week gets wider bars, never more than fit a phone.
        let week = report(Some("7d"), None);
        assert_eq!(week.timeline.step, Duration::from_secs(4 * 3600));
        assert!(week.timeline.buckets.len() as u64 <= MAX_BUCKETS);
        let days: Vec<String> = ticks(&week, &week.timeline)
            .into_iter()
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            days,
            [
                "Tue 17", "Wed 18", "Thu 19", "Fri 20", "Sat 21", "Sun 22", "Mon 23"
            ]
        );
        let month = Frame::new(at("2026-10-01T00:00:00Z"), at("2026-11-23T20:00:00Z"));
        assert!(month.buckets as u64 <= MAX_BUCKETS);
        assert_eq!(month.hours_per_bucket % 24, 0);
    }

    #[test]
    fn text_report_reads_like_this() {
        let r = report(Some("24h"), None);
        let t = text(&r);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "sinkd report: Sun 22 Nov 2026, 20:00 – Mon 23 Nov 2026, 20:00 (last 24h)",
                "times: UTC",
                "4 devices, 304 queries, 143 blocked (47.0%), 22 bypass attempts",
                "",
            ]
        );
        let anna = t
            .find("Anna's Redmi Note  192.168.1.23, aa:bb:cc:dd:ee:ff\n")
            .unwrap();
        let block = &t[anna..];
        assert!(
            block.starts_with(
                "Anna's Redmi Note  192.168.1.23, aa:bb:cc:dd:ee:ff\n\
             \x20 170 queries, 123 blocked (72.4%)\n\
             \x20 first seen 2026-11-22 20:01:28, last seen 2026-11-23 19:57:39\n\
             \x20 blocked by category:\n\
             \x20 Xiaomi telemetry                    66  ████████████████████████\n\
             \x20   tracking.miui.com                 22\n\
             \x20   data.mistat.xiaomi.com            18\n"
            ),
            "{block}"
        );
        assert!(
            block.contains("    … 3 more names (7 queries)\n"),
            "{block}"
        );
        assert!(block.contains("  ! 18 bypass attempts to get around sinkd\n"));
        assert!(
            block
                .contains("    resolver.msg.xiaomi.net            8  HTTP-DNS (resolver bypass)\n")
        );
        assert!(t.contains("192.168.1.77 (no device name)\n"));
        assert!(t.contains("  nothing blocked\n") || r.devices.iter().all(|d| d.blocked > 0));

        // Counts line up in one column within a device's block.
        let block = &block[..block.find("\n\n").unwrap()];
        let table = &block[block.find("blocked by category:\n").unwrap()..];
        let columns: Vec<usize> = table
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("  !") && !l.contains('…'))
            .map(|l| {
                // Where the first all-digit word ends: the count.
                let mut at = 0;
                for word in l.split(' ') {
                    at += word.chars().count() + 1;
                    if !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit()) {
                        return at - 1;
                    }
                }
                0
            })
            .collect();
        assert!(columns.len() > 20, "{columns:?}");
        assert!(
            columns.iter().all(|&c| c == columns[0]),
            "{columns:?}\n{block}"
        );
    }

    #[test]
    fn html_is_one_page_that_fetches_and_runs_nothing() {
        let r = report(Some("24h"), None);
        let page = html(&r);
        let lower = page.to_lowercase();
        assert!(lower.starts_with("<!doctype html>"));
        for banned in [
            "http://",
            "https://",
            "src=",
            "href=",
            "<script",
            "<link",
            "<img",
            "<iframe",
            "url(",
            "@import",
            "@font-face",
            "javascript:",
        ] {
            assert!(!lower.contains(banned), "found {banned}");
        }
        assert!(page.contains("Content-Security-Policy"));
        for tag in ["section", "svg", "figure", "div", "ul", "ol", "li", "g"] {
            let open = page.matches(&format!("<{tag}>")).count()
                + page.matches(&format!("<{tag} ")).count();
            let close = page.matches(&format!("</{tag}>")).count();
            assert_eq!(open, close, "<{tag}> opened {open} times, closed {close}");
        }
        // The parts a person looks for.
        assert_eq!(page.matches("<section class=\"card\">").count(), 4);
        assert!(page.contains("<h2>Anna&#39;s Redmi Note</h2>"));
        assert!(page.contains("18 bypass attempts"));
        assert!(page.contains("<code>resolver.msg.xiaomi.net</code>"));
        assert!(page.contains("Sun 22 Nov, 20:01:28"));
        assert!(page.contains(">72.4% of 170<"));
        assert!(page.contains("Xiaomi telemetry"));
        assert_eq!(page.matches("class=\"bypass\"").count(), 2);
    }

    #[test]
    fn html_escapes_everything_from_the_log() {
        let dir = TempDir::new();
        let evil_device = r#"<script>alert("pwned")</script> & Co's"#;
        let evil_name = r#"x.example"><img src=x onerror=alert(1)>"#;
        let evil_rule = "lists/x<b>bold.txt:1 x";
        let log = [
            line(
                "2026-11-23T10:00:00.000Z",
                evil_device,
                evil_name,
                "blocked",
                evil_rule,
            ),
            line(
                "2026-11-23T10:05:00.000Z",
                evil_device,
                "use-application-dns.net</code><script>x</script>",
                "blocked",
                "built-in use-application-dns.net (browsers keep using this resolver)",
            ),
        ]
        .join("\n");
        let path = dir.log("q.jsonl", &format!("{log}\n"));
        let r = build(&ReportOptions {
            path,
            since: None,
            device: Some(evil_device.to_uppercase()),
            now: now(),
        })
        .unwrap();
        assert_eq!(r.queries, 2);
        let page = html(&r);
        let lower = page.to_lowercase();
        assert!(!lower.contains("<script"), "{page}");
        assert!(!lower.contains("<img"));
        assert!(!lower.contains("<b>bold"));
        assert!(
            page.contains("&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; Co&#39;s")
        );
        assert!(page.contains("x.example&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
        assert!(page.contains("x&lt;b&gt;bold"));
        assert_eq!(esc("a\u{0}b\u{1b}[31m"), "a\u{fffd}b\u{fffd}[31m");

        // The terminal gets no escape sequences from the log either.
        let t = text(&r);
        assert!(t.contains("<script>alert(\"pwned\")</script> & Co's"));
        let dir = TempDir::new();
        let bell = line(
            "2026-11-23T10:00:00.000Z",
            "tv\u{1b}]0;owned\u{7}",
            "a\u{1b}[2J.example",
            "blocked",
            "l.txt:1 x",
        );
        let path = dir.log("q.jsonl", &format!("{bell}\n"));
        let r = build(&ReportOptions {
            path,
            ..options(None, None)
        })
        .unwrap();
        let t = text(&r);
        assert!(!t.contains('\u{1b}') && !t.contains('\u{7}'), "{t:?}");
        assert!(t.contains("tv\u{fffd}]0;owned\u{fffd}"));
    }

    #[test]
    fn utc_calendar() {
        let c = civil(at("2026-11-23T19:04:05.123Z"), true);
        assert_eq!(c.stamp(), "2026-11-23 19:04:05");
        assert_eq!(c.long(), "Mon 23 Nov 2026, 19:04");
        assert_eq!(c.short(), "Mon 23 Nov, 19:04:05");
        assert_eq!(civil(UNIX_EPOCH, true).long(), "Thu 1 Jan 1970, 00:00");
        assert_eq!(
            civil(at("2000-02-29T23:59:59Z"), true).stamp(),
            "2000-02-29 23:59:59"
        );
        assert_eq!(
            civil(at("2024-12-31T12:00:00Z"), true).long(),
            "Tue 31 Dec 2024, 12:00"
        );
        // Local time is a real time of day whatever the zone.
        let local = civil(at("2026-11-23T19:04:05Z"), false);
        assert!(local.hour < 24 && local.minute == 4 || local.offset % 3600 != 0);
    }

    #[test]
    fn small_formats() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(percent(0, 0), "0%");
        assert_eq!(percent(3, 3), "100%");
        assert_eq!(percent(1, 3), "33.3%");
        assert_eq!(span(Duration::from_secs(86_400)), "24h");
        assert_eq!(span(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(span(Duration::from_secs(90 * 60)), "90m");
        assert_eq!(nice_ceiling(1), 2);
        assert_eq!(nice_ceiling(5), 6);
        assert_eq!(nice_ceiling(17), 20);
        assert_eq!(nice_ceiling(27), 30);
        assert_eq!(nice_ceiling(31), 40);
        assert_eq!(nice_ceiling(101), 200);
        assert_eq!(padded("ab", 4), "ab  ");
        assert_eq!(padded("abcdef", 4), "abcdef ");
        assert_eq!(rule_file("a/b c.txt:12 x"), Some("a/b c.txt"));
        assert_eq!(
            rule_file("https://h:8443/l.txt:7 x"),
            Some("https://h:8443/l.txt")
        );
    }

    #[test]
    fn old_lines_are_skipped_without_parsing_only_when_shaped_as_written() {
        let cutoff = "2026-11-22T20:00:00.000Z";
        assert!(written_before(
            br#"{"ts":"2026-11-22T19:59:59.999Z","client":"x"}"#,
            cutoff
        ));
        assert!(!written_before(
            br#"{"ts":"2026-11-22T20:00:00.000Z","client":"x"}"#,
            cutoff
        ));
        assert!(!written_before(
            br#"{"client":"x","ts":"2026-11-22T19:59:59.999Z"}"#,
            cutoff
        ));
        assert!(!written_before(
            br#"{"ts":"2026-11-22T19:59:59Z","client":"x"}"#,
            cutoff
        ));
    }
}
