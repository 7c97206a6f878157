//! The query log: one JSON object a line, appended to a file that rotates by
//! size, so `sinkd tail` (and `jq`, `grep`) can follow it.
//!
//! The query path only builds a [`Record`] and offers it to a bounded queue:
//! a slow or full disk must never slow an answer, so when the queue is full
//! the line is dropped and counted instead. One writer thread formats,
//! batches and writes; it alone touches the file, rotates it and recovers
//! from write errors.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use serde::{Serialize, Serializer};
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// Records waiting for the writer. At ~250 bytes each a full queue is about
/// 16 MiB, and it absorbs seconds of a query burst while the disk stalls.
const QUEUE_CAPACITY: usize = 65_536;
/// Records written between flushes while the queue never runs empty, so a
/// reader following the file still sees lines under sustained load.
const BATCH: usize = 4096;
const WRITE_BUFFER: usize = 64 << 10;
const WARN_EVERY: Duration = Duration::from_secs(60);

/// The `[querylog]` section, as the caller resolved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryLogConfig {
    pub path: PathBuf,
    /// Rotate once the file would grow past this many MiB; 0: never.
    pub max_size_mb: u64,
    /// Rotated files kept (`path.1` … `path.N`).
    pub keep: usize,
    /// Domain names (with their subdomains), client IPs, CIDRs, MACs or
    /// device names whose queries are left out.
    pub ignore: Vec<String>,
}

/// What sinkd did with a query: the log's `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Forwarded,
    Cached,
    Local,
    Blocked,
    Refused,
    Failed,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Forwarded => "forwarded",
            Action::Cached => "cached",
            Action::Local => "local",
            Action::Blocked => "blocked",
            Action::Refused => "refused",
            Action::Failed => "failed",
        }
    }
}

/// One query, as the pipeline saw it. Built on the query path, so it holds
/// raw values; all formatting happens on the writer thread.
#[derive(Clone, Debug)]
pub struct Record {
    pub at: SystemTime,
    pub client: IpAddr,
    pub mac: Option<Arc<str>>,
    pub device: Option<Arc<str>>,
    pub group: Option<Arc<str>>,
    /// "udp" or "tcp".
    pub proto: &'static str,
    /// Lowercase, no trailing dot.
    pub name: String,
    pub qtype: u16,
    pub action: Action,
    /// `file:line pattern` of the rule that decided, if one did.
    pub rule: Option<String>,
    pub rcode: u16,
    /// Addresses and CNAME targets, in answer order.
    pub answer: Vec<String>,
    pub upstream: Option<Arc<str>>,
    pub elapsed: Duration,
}

enum Message {
    Record(Record),
    Flush(oneshot::Sender<()>),
}

/// The handle the query path holds. `Send + Sync`; share it in an `Arc`.
/// The writer thread ends once the handle is dropped and the queue drained.
pub struct QueryLog {
    queue: mpsc::Sender<Message>,
    ignore: Arc<Ignore>,
    drops: Arc<Drops>,
}

impl QueryLog {
    /// Opens `config.path` for appending (creating its parent directories)
    /// and starts the writer thread. Needs no runtime: the writer is an OS
    /// thread so that a stalled disk never occupies a runtime worker.
    pub fn start(config: QueryLogConfig) -> io::Result<QueryLog> {
        let max_bytes = config.max_size_mb.saturating_mul(1 << 20);
        let (log, writer) = QueryLog::open(config, QUEUE_CAPACITY, max_bytes)?;
        writer.spawn()?;
        Ok(log)
    }

    /// The handle and its writer, not yet running: tests fill the queue
    /// before the writer starts and shrink the rotation size.
    fn open(
        config: QueryLogConfig,
        capacity: usize,
        max_bytes: u64,
    ) -> io::Result<(QueryLog, Writer)> {
        if let Some(dir) = config.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let out = Output::open(&config.path)?;
        let (queue, receiver) = mpsc::channel(capacity);
        let ignore = Arc::new(Ignore::new(&config.ignore));
        let drops = Arc::new(Drops::new(config.path.clone()));
        let writer = Writer {
            path: config.path,
            max_bytes,
            keep: config.keep,
            queue: receiver,
            ignore: ignore.clone(),
            drops: drops.clone(),
            out: Some(out),
            line: Vec::with_capacity(512),
            last_error: None,
        };
        Ok((
            QueryLog {
                queue,
                ignore,
                drops,
            },
            writer,
        ))
    }

    /// Queues `record` for the writer; never blocks, never awaits. A full
    /// queue drops the record and counts it.
    pub fn record(&self, record: Record) {
        if self.queue.try_send(Message::Record(record)).is_err() {
            self.drops.queue_full.add(1);
            if let Some(n) = self.drops.queue_full.due(self.drops.started) {
                warn!(
                    path = %self.drops.path.display(),
                    dropped = n,
                    "query log: the writer is falling behind; dropped {n} lines"
                );
            }
        }
    }

    /// Whether a query for `name` (lowercase, no trailing dot) from this
    /// client is left out of the log. The writer checks again, so a caller
    /// that asks first only saves building the record.
    pub fn ignores(
        &self,
        name: &str,
        client_ip: IpAddr,
        mac: Option<&str>,
        device: Option<&str>,
    ) -> bool {
        self.ignore.matches(name, client_ip, mac, device)
    }

    /// Lines lost so far: queue full, or the file could not be written.
    pub fn dropped(&self) -> u64 {
        self.drops.queue_full.count.load(Ordering::Relaxed)
            + self.drops.write_failed.count.load(Ordering::Relaxed)
    }

    /// Returns once everything queued before the call is written to the
    /// file (or counted as dropped).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            // An error means the writer is gone: nothing left to wait for.
            let _ = wait.await;
        }
    }
}

impl fmt::Debug for QueryLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryLog")
            .field("path", &self.drops.path)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Drop counters with a once-a-minute warning each. Queue-full drops are
/// counted on the query path, write failures on the writer, and each kind
/// gets its own warning so a disk error is never hidden by a burst.
struct Drops {
    path: PathBuf,
    started: Instant,
    queue_full: DropCounter,
    write_failed: DropCounter,
}

impl Drops {
    fn new(path: PathBuf) -> Drops {
        Drops {
            path,
            started: Instant::now(),
            queue_full: DropCounter::new("queue_full"),
            write_failed: DropCounter::new("write_failed"),
        }
    }
}

struct DropCounter {
    reason: &'static str,
    count: AtomicU64,
    reported: AtomicU64,
    /// Seconds since `Drops::started` before which no warning is due.
    next_warning: AtomicU64,
}

impl DropCounter {
    fn new(reason: &'static str) -> DropCounter {
        DropCounter {
            reason,
            count: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            next_warning: AtomicU64::new(0),
        }
    }

    fn add(&self, n: u64) {
        if n > 0 {
            self.count.fetch_add(n, Ordering::Relaxed);
            metrics::counter!("sinkd_querylog_dropped_total", "reason" => self.reason).increment(n);
        }
    }

    /// Lines dropped since the last warning, when a warning is due; at most
    /// one caller a minute gets `Some`.
    fn due(&self, started: Instant) -> Option<u64> {
        let count = self.count.load(Ordering::Relaxed);
        if count == self.reported.load(Ordering::Relaxed) {
            return None;
        }
        let now = started.elapsed().as_secs();
        let next = self.next_warning.load(Ordering::Relaxed);
        if now < next
            || self
                .next_warning
                .compare_exchange(
                    next,
                    now + WARN_EVERY.as_secs(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return None;
        }
        let count = self.count.load(Ordering::Relaxed);
        Some(count - self.reported.swap(count, Ordering::Relaxed))
    }
}

/// The open log file. `id` (device, inode) tells whether `path` still names
/// it; `unflushed` is what a failing flush loses.
struct Output {
    file: BufWriter<File>,
    id: (u64, u64),
    size: u64,
    unflushed: u64,
}

impl Output {
    /// Creates the file but never its directory: a log directory that
    /// vanished (an unmounted disk, a deleted tree) is an error to report,
    /// not something to recreate on whatever filesystem lies underneath.
    fn open(path: &Path) -> io::Result<Output> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            // Who asked for what is private: not world-readable.
            .mode(0o640)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(Output {
            id: (meta.dev(), meta.ino()),
            size: meta.len(),
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            unflushed: 0,
        })
    }
}

struct Writer {
    path: PathBuf,
    /// Rotate before a line would take the file past this; 0: never.
    max_bytes: u64,
    keep: usize,
    queue: mpsc::Receiver<Message>,
    ignore: Arc<Ignore>,
    drops: Arc<Drops>,
    /// `None` after a failure, until a reopen succeeds.
    out: Option<Output>,
    line: Vec<u8>,
    last_error: Option<String>,
}

impl Writer {
    fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("sinkd-querylog".into())
            .spawn(move || self.run())
            .map(drop)
    }

    fn run(mut self) {
        while let Some(first) = self.queue.blocking_recv() {
            self.check_file();
            let mut next = Some(first);
            let mut written = 0;
            while let Some(message) = next.take() {
                match message {
                    Message::Record(record) => self.write(&record),
                    Message::Flush(done) => {
                        self.flush();
                        let _ = done.send(());
                        // What the flusher does next (delete the file, say)
                        // is seen by the next batch's file check.
                        break;
                    }
                }
                written += 1;
                if written < BATCH {
                    next = self.queue.try_recv().ok();
                }
            }
            // The queue is empty (or a batch is done): lines reach the file
            // now, not when the buffer happens to fill.
            self.flush();
            self.warn_if_due();
        }
        self.flush();
    }

    /// Reopens the file when `path` no longer names the one we hold (deleted,
    /// or moved away by an outside logrotate) or after a failure.
    fn check_file(&mut self) {
        if let Some(out) = &self.out {
            match fs::metadata(&self.path) {
                Ok(meta) if (meta.dev(), meta.ino()) == out.id => return,
                _ => self.close(),
            }
        }
        if self.out.is_none() {
            match Output::open(&self.path) {
                Ok(out) => self.out = Some(out),
                Err(e) => self.failed(&e, 0),
            }
        }
    }

    fn write(&mut self, record: &Record) {
        if self.ignore.matches(
            &record.name,
            record.client,
            record.mac.as_deref(),
            record.device.as_deref(),
        ) {
            return;
        }
        self.line.clear();
        if let Err(e) = serde_json::to_writer(&mut self.line, &Line::new(record)) {
            // Cannot happen for these types; losing one line beats a panic.
            self.failed(&io::Error::other(e), 1);
            return;
        }
        self.line.push(b'\n');
        let len = self.line.len() as u64;
        if self.out.as_ref().is_some_and(|out| {
            self.max_bytes > 0 && out.size > 0 && out.size + len > self.max_bytes
        }) {
            self.rotate();
        }
        let Some(out) = &mut self.out else {
            self.drops.write_failed.add(1);
            return;
        };
        match out.file.write_all(&self.line) {
            Ok(()) => {
                out.size += len;
                out.unflushed += 1;
            }
            Err(e) => self.failed(&e, 1),
        }
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.out {
            match out.file.flush() {
                Ok(()) => out.unflushed = 0,
                Err(e) => self.failed(&e, 0),
            }
        }
    }

    fn close(&mut self) {
        self.flush();
        self.out = None;
    }

    /// `path` → `path.1` → … → `path.keep`; older files are deleted.
    fn rotate(&mut self) {
        self.close();
        let rotated = rotate_files(&self.path, self.keep);
        match Output::open(&self.path) {
            Ok(mut out) => {
                if let Err(e) = rotated {
                    // Keep appending; try again after another `max_bytes`
                    // rather than on every line.
                    out.size = 0;
                    self.note_error(&format!("cannot rotate {}: {e}", self.path.display()));
                }
                self.out = Some(out);
            }
            Err(e) => self.failed(&e, 0),
        }
    }

    /// Gives up the file after an error: what was buffered is lost and
    /// counted with `lines`; the next batch tries to reopen.
    fn failed(&mut self, error: &io::Error, lines: u64) {
        let buffered = self.out.take().map_or(0, |out| {
            // Not `drop`: BufWriter's drop would retry the failed write.
            let _ = out.file.into_parts();
            out.unflushed
        });
        self.drops.write_failed.add(lines + buffered);
        self.note_error(&format!("cannot write {}: {error}", self.path.display()));
    }

    fn note_error(&mut self, error: &str) {
        self.last_error = Some(error.to_owned());
        self.warn_if_due();
    }

    fn warn_if_due(&mut self) {
        let drops = &self.drops;
        if let Some(n) = drops.queue_full.due(drops.started) {
            warn!(
                path = %drops.path.display(),
                dropped = n,
                "query log: the writer is falling behind; dropped {n} lines"
            );
        }
        if let Some(n) = drops.write_failed.due(drops.started) {
            let error = self.last_error.as_deref().unwrap_or("write failed");
            warn!(
                dropped = n,
                "query log: {error}; dropped {n} lines, retrying"
            );
        }
    }
}

fn rotate_files(path: &Path, keep: usize) -> io::Result<()> {
    if keep == 0 {
        return fs::remove_file(path);
    }
    // Beyond `keep`: left over from a larger `keep` before a config change.
    let mut extra = keep + 1;
    while fs::remove_file(numbered(path, extra)).is_ok() {
        extra += 1;
    }
    for n in (1..keep).rev() {
        match fs::rename(numbered(path, n), numbered(path, n + 1)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::rename(path, numbered(path, 1))
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    name.into()
}

/// One line of the log. Field order is the key order in the file.
#[derive(Serialize)]
struct Line<'a> {
    ts: Timestamp,
    client: IpAddr,
    mac: Option<&'a str>,
    device: Option<&'a str>,
    group: Option<&'a str>,
    proto: &'a str,
    name: &'a str,
    #[serde(rename = "type")]
    qtype: Mnemonic,
    action: &'static str,
    rule: Option<&'a str>,
    rcode: Mnemonic,
    answer: &'a [String],
    upstream: Option<&'a str>,
    ms: f64,
}

impl<'a> Line<'a> {
    fn new(r: &'a Record) -> Line<'a> {
        Line {
            ts: Timestamp(r.at),
            client: r.client.to_canonical(),
            mac: r.mac.as_deref(),
            device: r.device.as_deref(),
            group: r.group.as_deref(),
            proto: r.proto,
            name: &r.name,
            qtype: Mnemonic::Type(r.qtype),
            action: r.action.as_str(),
            rule: r.rule.as_deref(),
            rcode: Mnemonic::Rcode(r.rcode),
            answer: &r.answer,
            upstream: r.upstream.as_deref(),
            ms: millis(r.elapsed),
        }
    }
}

struct Timestamp(SystemTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// Query types and rcodes by the names `dig` prints.
enum Mnemonic {
    Type(u16),
    Rcode(u16),
}

impl Serialize for Mnemonic {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Mnemonic::Type(t) => match type_name(t) {
                Some(name) => f.write_str(name),
                None => write!(f, "TYPE{t}"),
            },
            Mnemonic::Rcode(r) => match crate::wire::rcode_name(r) {
                Some(name) => f.write_str(name),
                None => write!(f, "RCODE{r}"),
            },
        }
    }
}

fn type_name(qtype: u16) -> Option<&'static str> {
    Some(match qtype {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        10 => "NULL",
        12 => "PTR",
        13 => "HINFO",
        15 => "MX",
        16 => "TXT",
        17 => "RP",
        18 => "AFSDB",
        25 => "KEY",
        28 => "AAAA",
        29 => "LOC",
        33 => "SRV",
        35 => "NAPTR",
        39 => "DNAME",
        41 => "OPT",
        43 => "DS",
        44 => "SSHFP",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        50 => "NSEC3",
        51 => "NSEC3PARAM",
        52 => "TLSA",
        59 => "CDS",
        60 => "CDNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        99 => "SPF",
        251 => "IXFR",
        252 => "AXFR",
        255 => "ANY",
        256 => "URI",
        257 => "CAA",
        _ => return None,
    })
}

/// Milliseconds, rounded: microseconds matter below 1 ms (cache hits,
/// blocks), tens of microseconds are noise above it.
fn millis(elapsed: Duration) -> f64 {
    let ms = elapsed.as_secs_f64() * 1000.0;
    let scale = if ms < 1.0 { 1000.0 } else { 100.0 };
    (ms * scale).round() / scale
}

/// The `ignore` entries, sorted by kind. An entry that is no address,
/// network or MAC is taken as a device name and, when it looks like one, a
/// domain name too: leaving out too much is the safe side for privacy.
#[derive(Debug, Default)]
struct Ignore {
    names: HashSet<Box<str>>,
    nets: Vec<IpNet>,
    macs: Vec<[u8; 6]>,
    devices: Vec<Box<str>>,
}

impl Ignore {
    fn new(entries: &[String]) -> Ignore {
        let mut ignore = Ignore::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(ip) = entry.parse::<IpAddr>() {
                ignore.nets.push(IpNet::from(ip.to_canonical()));
            } else if let Ok(net) = entry.parse::<IpNet>() {
                ignore.nets.push(net.trunc());
            } else if let Some(mac) = crate::config::parse_mac(entry) {
                ignore.macs.push(mac);
            } else {
                let name = entry.trim_end_matches('.').to_ascii_lowercase();
                let looks_like_a_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
                if looks_like_a_name {
                    ignore.names.insert(name.into());
                }
                ignore.devices.push(entry.into());
            }
        }
        ignore
    }

    fn matches(
        &self,
        name: &str,
        client_ip: IpAddr,
        mac: Option<&str>,
        device: Option<&str>,
    ) -> bool {
        (!self.names.is_empty() && self.name_matches(name))
            || (!self.nets.is_empty() && {
                let ip = client_ip.to_canonical();
                self.nets.iter().any(|net| net.contains(&ip))
            })
            || (!self.macs.is_empty()
                && mac
                    .and_then(crate::config::parse_mac)
                    .is_some_and(|mac| self.macs.contains(&mac)))
            || device.is_some_and(|device| self.devices.iter().any(|d| eq_ignore_case(d, device)))
    }

    /// The name or any parent: a few hash probes, one per label.
    fn name_matches(&self, name: &str) -> bool {
        let lowered;
        let mut rest = name.strip_suffix('.').unwrap_or(name);
        if rest.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = rest.to_ascii_lowercase();
            rest = &lowered;
        }
        loop {
            if self.names.contains(rest) {
                return true;
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return false,
            }
        }
    }
}

/// `--device` for `sinkd tail` and `sinkd report`: a device name (any
/// case), a client IP or a MAC, matched against a log line's fields.
pub(crate) struct DeviceFilter {
    device: Option<String>,
    ip: Option<IpAddr>,
    mac: Option<[u8; 6]>,
}

impl DeviceFilter {
    pub(crate) fn new(device: Option<&str>) -> DeviceFilter {
        let device = device.map(str::trim).filter(|d| !d.is_empty());
        DeviceFilter {
            ip: device
                .and_then(|d| d.parse::<IpAddr>().ok())
                .map(|ip| ip.to_canonical()),
            mac: device.and_then(crate::config::parse_mac),
            device: device.map(str::to_owned),
        }
    }

    /// Whether a line with these `device`, `client` and `mac` fields is wanted.
    pub(crate) fn wants(&self, device: Option<&str>, client: &str, mac: Option<&str>) -> bool {
        let Some(wanted) = &self.device else {
            return true;
        };
        device.is_some_and(|d| eq_ignore_case(d, wanted))
            || self.ip.is_some_and(|ip| {
                client
                    .parse::<IpAddr>()
                    .is_ok_and(|c| c.to_canonical() == ip)
            })
            || (self.mac.is_some() && mac.and_then(crate::config::parse_mac) == self.mac)
    }
}

/// Case-insensitive beyond ASCII ("Ånna" = "åNNA"), without allocating.
pub(crate) fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
        || (!(a.is_ascii() && b.is_ascii())
            && a.chars()
                .flat_map(char::to_lowercase)
                .eq(b.chars().flat_map(char::to_lowercase)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn config(path: PathBuf) -> QueryLogConfig {
        QueryLogConfig {
            path,
            max_size_mb: 0,
            keep: 3,
            ignore: Vec::new(),
        }
    }

    fn record(name: &str) -> Record {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_460_645_123),
            client: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 23)),
            mac: Some("aa:bb:cc:dd:ee:ff".into()),
            device: Some("Anna's Redmi Note".into()),
            group: Some("phones".into()),
            proto: "udp",
            name: name.into(),
            qtype: 1,
            action: Action::Blocked,
            rule: Some("blocklists/xiaomi.txt:12 miui.com".into()),
            rcode: 0,
            answer: vec!["0.0.0.0".into()],
            upstream: None,
            elapsed: Duration::from_micros(40),
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[tokio::test]
    async fn writes_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log/querylog.jsonl");
        let log = QueryLog::start(config(path.clone())).unwrap();
        log.record(record("tracking.miui.com"));
        let mut forwarded = record("Example.COM");
        forwarded.client = "::ffff:10.0.0.7".parse().unwrap();
        (
            forwarded.mac,
            forwarded.device,
            forwarded.group,
            forwarded.rule,
        ) = (None, None, None, None);
        forwarded.proto = "tcp";
        forwarded.name = "example.com".into();
        forwarded.qtype = 65400;
        forwarded.action = Action::Forwarded;
        forwarded.rcode = 3;
        forwarded.answer = vec!["cdn.example.net".into(), "93.184.216.34".into()];
        forwarded.upstream = Some("tls://9.9.9.9:853#dns.quad9.net".into());
        forwarded.elapsed = Duration::from_micros(12_345_678);
        log.record(forwarded);
        log.flush().await;

        let got = lines(&path);
        assert_eq!(
            got[0],
            r#"{"ts":"2026-11-23T19:04:05.123Z","client":"192.168.1.23","mac":"aa:bb:cc:dd:ee:ff","device":"Anna's Redmi Note","group":"phones","proto":"udp","name":"tracking.miui.com","type":"A","action":"blocked","rule":"blocklists/xiaomi.txt:12 miui.com","rcode":"NOERROR","answer":["0.0.0.0"],"upstream":null,"ms":0.04}"#
        );
        assert_eq!(
            got[1],
            r#"{"ts":"2026-11-23T19:04:05.123Z","client":"10.0.0.7","mac":null,"device":null,"group":null,"proto":"tcp","name":"example.com","type":"TYPE65400","action":"forwarded","rule":null,"rcode":"NXDOMAIN","answer":["cdn.example.net","93.184.216.34"],"upstream":"tls://9.9.9.9:853#dns.quad9.net","ms":12345.68}"#
        );
        let parsed: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
        assert_eq!(parsed["answer"][1], "93.184.216.34");
        assert_eq!(parsed["ms"], 12345.68);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn mnemonics_and_rounding() {
        let t = |t| Mnemonic::Type(t).to_string();
        let r = |r| Mnemonic::Rcode(r).to_string();
        assert_eq!(
            [t(1), t(28), t(65), t(12), t(64), t(65400)],
            ["A", "AAAA", "HTTPS", "PTR", "SVCB", "TYPE65400"]
        );
        assert_eq!(
            [r(0), r(1), r(2), r(3), r(4), r(5), r(11)],
            [
                "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "RCODE11"
            ]
        );
        assert_eq!(millis(Duration::from_nanos(43_210)), 0.043);
        assert_eq!(millis(Duration::from_micros(1_234)), 1.23);
        assert_eq!(millis(Duration::from_micros(153_206)), 153.21);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }

    #[test]
    fn escapes_what_json_needs() {
        let mut r = record("we\"ird\\name");
        r.device = Some("Tab\t\u{1}".into());
        let json = serde_json::to_string(&Line::new(&r)).unwrap();
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["name"], "we\"ird\\name");
        assert_eq!(back["device"], "Tab\t\u{1}");
    }

    #[tokio::test]
    async fn counts_drops_when_the_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let (log, writer) = QueryLog::open(config(path.clone()), 4, 0).unwrap();
        for i in 0..10 {
            log.record(record(&format!("n{i}.example")));
        }
        assert_eq!(log.dropped(), 6);
        writer.spawn().unwrap();
        log.flush().await;
        let got = lines(&path);
        assert_eq!(got.len(), 4);
        assert!(got[3].contains("\"n3.example\""), "{}", got[3]);
        assert_eq!(log.dropped(), 6);
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let line_len = serde_json::to_vec(&Line::new(&record("r00.example")))
            .unwrap()
            .len() as u64
            + 1;
        let mut config = config(path.clone());
        config.keep = 2;
        // Three lines a file.
        let (log, writer) = QueryLog::open(config, 64, 3 * line_len).unwrap();
        writer.spawn().unwrap();
        // A leftover from an earlier, larger `keep`.
        fs::write(numbered(&path, 3), "old\n").unwrap();
        for i in 0..11 {
            log.record(record(&format!("r{i:02}.example")));
            if i % 4 == 0 {
                log.flush().await;
            }
        }
        log.flush().await;
        let names = |p: &Path| -> Vec<String> {
            lines(p)
                .iter()
                .map(|l| {
                    serde_json::from_str::<serde_json::Value>(l).unwrap()["name"]
                        .as_str()
                        .unwrap()[..3]
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(names(&path), ["r09", "r10"]);
        assert_eq!(names(&numbered(&path, 1)), ["r06", "r07", "r08"]);
        assert_eq!(names(&numbered(&path, 2)), ["r03", "r04", "r05"]);
        assert!(!numbered(&path, 3).exists());
        assert!(fs::metadata(&path).unwrap().len() <= 3 * line_len);
        assert_eq!(log.dropped(), 0);
    }

    #[tokio::test]
    async fn keep_zero_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let mut config = config(path.clone());
        config.keep = 0;
        let (log, writer) = QueryLog::open(config, 64, 10).unwrap();
        writer.spawn().unwrap();
        for i in 0..3 {
            log.record(record(&format!("k{i}.example")));
        }
        log.flush().await;
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("k2.example"));
        assert!(!numbered(&path, 1).exists());
    }

    #[tokio::test]
    async fn survives_its_directory_being_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let path = logs.join("q.jsonl");
        let log = QueryLog::start(config(path.clone())).unwrap();
        log.record(record("before.example"));
        log.flush().await;
        assert_eq!(lines(&path).len(), 1);

        fs::remove_dir_all(&logs).unwrap();
        log.record(record("lost1.example"));
        log.record(record("lost2.example"));
        log.flush().await;
        assert!(log.dropped() >= 2, "dropped {}", log.dropped());
        assert!(!logs.exists(), "a vanished directory is not recreated");

        // Back as soon as the directory is.
        fs::create_dir(&logs).unwrap();
        let dropped = log.dropped();
        log.record(record("after.example"));
        log.flush().await;
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("after.example"));
        assert_eq!(log.dropped(), dropped);
    }

    #[tokio::test]
    async fn reopens_a_file_deleted_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let log = QueryLog::start(config(path.clone())).unwrap();
        log.record(record("one.example"));
        log.flush().await;
        fs::remove_file(&path).unwrap();
        log.record(record("two.example"));
        log.flush().await;
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("two.example"));
        assert_eq!(log.dropped(), 0);
    }

    #[tokio::test]
    async fn ignored_queries_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let mut config = config(path.clone());
        config.ignore = [
            "Private.example.",
            "10.1.2.3",
            "172.16.0.0/12",
            "AA-BB-CC-00-11-22",
            "Living Room TV",
            "kitchen",
            " ",
        ]
        .map(String::from)
        .to_vec();
        let log = QueryLog::start(config).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let lan = ip("192.168.1.5");
        assert!(log.ignores("private.example", lan, None, None));
        assert!(log.ignores("a.b.private.example", lan, None, None));
        assert!(log.ignores("A.Private.Example", lan, None, None));
        assert!(!log.ignores("notprivate.example", lan, None, None));
        assert!(!log.ignores("example", lan, None, None));
        assert!(log.ignores("x.com", ip("10.1.2.3"), None, None));
        assert!(log.ignores("x.com", ip("::ffff:10.1.2.3"), None, None));
        assert!(!log.ignores("x.com", ip("10.1.2.4"), None, None));
        assert!(log.ignores("x.com", ip("172.20.9.9"), None, None));
        assert!(log.ignores("x.com", lan, Some("aa:bb:cc:00:11:22"), None));
        assert!(!log.ignores("x.com", lan, Some("aa:bb:cc:00:11:23"), None));
        assert!(log.ignores("x.com", lan, None, Some("living room tv")));
        assert!(log.ignores("x.com", lan, None, Some("Kitchen")));
        // A bare word is a device name and a single-label name alike.
        assert!(log.ignores("kitchen", lan, None, None));
        assert!(!log.ignores("x.com", lan, Some("not a mac"), Some("Anna's Redmi Note")));

        // The writer applies the same rules even when the caller did not ask.
        let mut hidden = record("www.private.example");
        hidden.client = lan;
        log.record(hidden);
        let mut by_device = record("x.com");
        by_device.device = Some("LIVING ROOM TV".into());
        log.record(by_device);
        log.record(record("shown.example"));
        log.flush().await;
        let got = lines(&path);
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("shown.example"));
    }

    #[test]
    fn helpers() {
        assert_eq!(
            crate::config::parse_mac("AA:bb:0c:dd:ee:0F"),
            Some([0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f])
        );
        assert_eq!(
            crate::config::parse_mac("aa-bb-cc-dd-ee-ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(crate::config::parse_mac("aa:bb-cc:dd:ee:ff"), None);
        assert_eq!(crate::config::parse_mac("aa:bb:cc:dd:ee:f"), None);
        assert_eq!(crate::config::parse_mac("aa:bb:cc:dd:ee:+f"), None);
        assert!(eq_ignore_case("Ånna's", "åNNA'S"));
        assert!(!eq_ignore_case("anna", "anne"));
    }

    #[test]
    fn the_handle_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<QueryLog>();
    }

    #[tokio::test]
    async fn flush_after_the_writer_is_gone_returns() {
        let dir = tempfile::tempdir().unwrap();
        let (log, writer) = QueryLog::open(config(dir.path().join("q.jsonl")), 4, 0).unwrap();
        drop(writer);
        log.flush().await;
        log.record(record("x.example"));
        assert_eq!(log.dropped(), 1);
    }
}
