//! The query log: one JSON object a line, appended to a file that rotates by
//! size, so `sinkd tail` (and `jq`, `grep`) can follow it.
//!
//! The query path formats its line into a per-thread scratch buffer (no
//! allocation, no serde) and appends it to one shared buffer under a
//! short lock; a UDP listener's batch of answers ([`StagedLines`]) hands
//! its lines over together, one lock per batch. A writer thread lets lines
//! gather for `GATHER` and writes them with one system call: at 100k
//! queries a second that is twenty writes, not 100k wake-ups. Under steady
//! load it looks again every `GATHER` on its own; only the first line after
//! a quiet spell wakes it, so no query pays for that. A slow or full disk must never
//! slow an answer, so past `QUEUE_CAPACITY` waiting lines a line is dropped
//! and counted instead. The writer alone touches the file, rotates it and
//! recovers from write errors.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::sync::oneshot;
use tracing::warn;

/// Lines waiting for the writer. At ~250 bytes each a full queue is about
/// 16 MiB, and it absorbs seconds of a query burst while the disk stalls.
const QUEUE_CAPACITY: usize = 65_536;
/// How long the writer lets lines gather after the first of a burst: the
/// delay before a line reaches the file, and the reason a busy resolver
/// writes its log twenty times a second instead of once a query.
const GATHER: Duration = Duration::from_millis(50);
const WRITE_BUFFER: usize = 64 << 10;
/// The writer keeps its spare buffer for the next batch unless a burst grew
/// it past this.
const SPARE_BUFFER_MAX: usize = 4 << 20;
const WARN_EVERY: Duration = Duration::from_secs(60);
/// Readers (`sinkd tail`, `sinkd report`) skip a "line" longer than this
/// rather than buffer it: the writer never writes one.
pub(crate) const MAX_LINE: usize = 1 << 20;

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
    pub const ALL: [Action; 6] = [
        Action::Forwarded,
        Action::Cached,
        Action::Local,
        Action::Blocked,
        Action::Refused,
        Action::Failed,
    ];

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

/// One query, as the pipeline saw it, borrowed from the query path: it is
/// formatted at once, so nothing in it needs to be copied or allocated.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    pub at: SystemTime,
    pub client: IpAddr,
    pub mac: Option<&'a str>,
    pub device: Option<&'a str>,
    pub group: Option<&'a str>,
    /// "udp" or "tcp".
    pub proto: &'static str,
    /// Lowercase, no trailing dot.
    pub name: &'a str,
    pub qtype: u16,
    pub action: Action,
    /// `file:line pattern` of the rule that decided, if one did.
    pub rule: Option<&'a str>,
    pub rcode: u16,
    /// The answer, in answer order: CNAME targets, then addresses.
    pub cnames: &'a [Box<str>],
    pub addresses: &'a [IpAddr],
    pub upstream: Option<&'a str>,
    pub elapsed: Duration,
}

/// Lines formatted and waiting for the writer.
#[derive(Default)]
struct Queue {
    lines: Vec<u8>,
    count: usize,
    flushes: Vec<oneshot::Sender<()>>,
    /// The handle is gone: write what is left, then stop.
    closed: bool,
    /// The writer is gone (or never ran): nothing will be written.
    writer_gone: bool,
    /// The writer waits to be woken (it was idle through a whole gather).
    /// Only then does a new line wake it: under steady load the writer
    /// looks again on its own, and no query pays for waking it.
    writer_waiting: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    capacity: usize,
}

impl Shared {
    /// A panic elsewhere while holding the lock leaves the queue usable:
    /// it is only bytes and counters.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `count` whole lines for the writer, or drops and counts them
    /// all when the queue has no room for them.
    fn enqueue(&self, lines: &[u8], count: usize, drops: &Drops) {
        let mut queue = self.lock();
        if queue.writer_gone || queue.count + count > self.capacity {
            drop(queue);
            drops.queue_full.add(count as u64);
            if let Some(n) = drops.queue_full.due(drops.started) {
                warn!(
                    path = %drops.path.display(),
                    dropped = n,
                    "query log: the writer is falling behind; dropped {n} lines"
                );
            }
            return;
        }
        let asleep = queue.writer_waiting;
        queue.lines.extend_from_slice(lines);
        queue.count += count;
        drop(queue);
        // The first lines after a quiet spell wake the writer; the rest gather.
        if asleep {
            self.wake.notify_one();
        }
    }
}

/// Lines formatted on this thread while [`StagedLines`] lives, for one log;
/// outside a batch, the formatter's own buffer holds the one line.
#[derive(Default)]
struct Staged {
    formatter: LineFormatter,
    open: bool,
    lines: Vec<u8>,
    count: usize,
    /// The log they belong to (a test process runs several).
    log: Option<(Arc<Shared>, Arc<Drops>)>,
}

impl Staged {
    /// Formats `record` straight into the staged lines (for `log`).
    fn add(&mut self, log: &QueryLog, record: &Record) {
        if !self
            .log
            .as_ref()
            .is_some_and(|(shared, _)| Arc::ptr_eq(shared, &log.shared))
        {
            self.publish();
            self.log = Some((log.shared.clone(), log.drops.clone()));
        }
        self.formatter.append(record, &mut self.lines);
        self.count += 1;
    }

    fn publish(&mut self) {
        if let Some((shared, drops)) = &self.log
            && self.count > 0
        {
            shared.enqueue(&self.lines, self.count, drops);
        }
        self.lines.clear();
        self.count = 0;
    }
}

/// While `StagedLines` lives, lines this thread records wait in a per-thread
/// buffer; when it ends they go to the writer's queue together: one lock
/// per batch instead of one per query, and no cache line passed between
/// cores per query. Not `Send`: it must end on the thread it began on,
/// before any `.await` (lines must not wait on a quiet socket).
pub struct StagedLines(std::marker::PhantomData<*const ()>);

impl StagedLines {
    pub fn begin() -> StagedLines {
        STAGED.with_borrow_mut(|staged| staged.open = true);
        StagedLines(std::marker::PhantomData)
    }
}

impl Drop for StagedLines {
    fn drop(&mut self) {
        STAGED.with_borrow_mut(|staged| {
            staged.open = false;
            staged.publish();
        });
    }
}

/// The handle the query path holds. `Send + Sync`; share it in an `Arc`.
/// The writer thread ends once the handle is dropped and the queue drained.
pub struct QueryLog {
    shared: Arc<Shared>,
    ignore: Arc<Ignore>,
    drops: Arc<Drops>,
}

thread_local! {
    /// Each thread formats its lines here before taking the queue's lock.
    static STAGED: RefCell<Staged> = RefCell::new(Staged::default());
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
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
            capacity,
        });
        let drops = Arc::new(Drops::new(config.path.clone()));
        let writer = Writer {
            path: config.path,
            max_bytes,
            keep: config.keep,
            shared: shared.clone(),
            drops: drops.clone(),
            out: Some(out),
            spare: Vec::new(),
            last_error: None,
            busy: false,
        };
        let ignore = Arc::new(Ignore::new(&config.ignore));
        Ok((
            QueryLog {
                shared,
                ignore,
                drops,
            },
            writer,
        ))
    }

    /// Formats `record` and queues it for the writer, unless `ignore` leaves
    /// it out; never blocks on the disk. A full queue drops the line and
    /// counts it.
    pub fn record(&self, record: &Record) {
        if self
            .ignore
            .matches(record.name, record.client, record.mac, record.device)
        {
            return;
        }
        STAGED.with_borrow_mut(|staged| {
            if staged.open {
                staged.add(self, record);
            } else {
                let line = staged.formatter.format(record);
                self.shared.enqueue(line, 1, &self.drops);
            }
        });
    }

    /// Whether a query for `name` (lowercase, no trailing dot) from this
    /// client is left out of the log.
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
        {
            let mut queue = self.shared.lock();
            if queue.writer_gone {
                return;
            }
            queue.flushes.push(done);
        }
        self.shared.wake.notify_one();
        // An error means the writer is gone: nothing left to wait for.
        let _ = wait.await;
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
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
    shared: Arc<Shared>,
    drops: Arc<Drops>,
    /// `None` after a failure, until a reopen succeeds.
    out: Option<Output>,
    /// The buffer the query path fills next, swapped with the full one.
    spare: Vec<u8>,
    last_error: Option<String>,
    /// The last batch had lines: gather again before waiting to be woken.
    busy: bool,
}

/// One batch taken from the queue.
struct Batch {
    lines: Vec<u8>,
    count: usize,
    flushes: Vec<oneshot::Sender<()>>,
    last: bool,
}

impl Writer {
    fn spawn(self) -> io::Result<()> {
        std::thread::Builder::new()
            .name("sinkd-querylog".into())
            .spawn(move || self.run())
            .map(drop)
    }

    fn run(mut self) {
        loop {
            let batch = self.next_batch();
            if batch.count > 0 {
                self.check_file();
                self.write_lines(&batch.lines, batch.count);
                // Lines reach the file now, not when the buffer happens to fill.
                self.flush();
            }
            for done in batch.flushes {
                let _ = done.send(());
            }
            self.warn_if_due();
            let mut lines = batch.lines;
            if lines.capacity() <= SPARE_BUFFER_MAX {
                lines.clear();
                self.spare = lines;
            }
            if batch.last {
                return;
            }
        }
    }

    /// Lets lines gather for `GATHER`, then takes everything queued. After
    /// a gather that brought nothing, first waits for lines, a flush
    /// request or the end.
    fn next_batch(&mut self) -> Batch {
        let shared = self.shared.clone();
        let mut queue = shared.lock();
        if !self.busy && queue.count == 0 {
            queue.writer_waiting = true;
            while queue.count == 0 && queue.flushes.is_empty() && !queue.closed {
                queue = shared
                    .wake
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            queue.writer_waiting = false;
        }
        if queue.flushes.is_empty() && !queue.closed {
            drop(queue);
            std::thread::sleep(GATHER);
            queue = shared.lock();
        }
        let batch = Batch {
            lines: std::mem::replace(&mut queue.lines, std::mem::take(&mut self.spare)),
            count: std::mem::take(&mut queue.count),
            flushes: std::mem::take(&mut queue.flushes),
            last: queue.closed,
        };
        self.busy = batch.count > 0;
        batch
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

    /// Writes `count` whole lines, rotating between lines whenever the next
    /// ones would take the file past `max_bytes`.
    fn write_lines(&mut self, mut rest: &[u8], mut count: usize) {
        while !rest.is_empty() {
            let Some(out) = &mut self.out else {
                self.drops.write_failed.add(count as u64);
                return;
            };
            let mut take = rest.len();
            if self.max_bytes > 0 && out.size + rest.len() as u64 > self.max_bytes {
                let room = self.max_bytes.saturating_sub(out.size) as usize;
                take = rest[..room.min(rest.len())]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |end| end + 1);
                if take == 0 && out.size > 0 {
                    self.rotate();
                    continue;
                }
                if take == 0 {
                    // A line longer than a whole file gets a file of its own.
                    take = rest
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(rest.len(), |end| end + 1);
                }
            }
            let (chunk, after) = rest.split_at(take);
            let lines = match after.is_empty() {
                true => count,
                false => chunk.iter().filter(|&&b| b == b'\n').count(),
            };
            match out.file.write_all(chunk) {
                Ok(()) => {
                    out.size += take as u64;
                    out.unflushed += lines as u64;
                }
                Err(e) => self.failed(&e, lines as u64),
            }
            rest = after;
            count -= lines;
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

/// `path.N`: the N-th rotated file, for the writer and the readers alike.
pub(crate) fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    name.into()
}

impl Drop for Writer {
    /// Nothing queued now or later will be written: count it, and wake
    /// whoever waits for a flush.
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.writer_gone = true;
        let lost = std::mem::take(&mut queue.count);
        queue.lines = Vec::new();
        queue.flushes.clear();
        drop(queue);
        self.drops.write_failed.add(lost as u64);
    }
}

/// Formats log lines by hand, into a buffer reused for every line: serde's
/// generic path and one `String` per field cost more than the rest of a
/// cache hit. Field order is the key order in the file.
#[derive(Default)]
struct LineFormatter {
    line: Vec<u8>,
    /// The Unix second `stamp` is for.
    second: Option<u64>,
    /// `2026-11-23T19:04:05.` for that second.
    stamp: String,
    /// Who asked last, and the line's text from the client to the name:
    /// a home's queries come in runs from one device, and writing this part
    /// anew for every line was about 200 instructions (callgrind).
    asker: Asker,
    asker_text: Vec<u8>,
}

/// The fields of a line that name who asked (none before the first line).
#[derive(Default)]
struct Asker {
    client: Option<IpAddr>,
    mac: Option<String>,
    device: Option<String>,
    group: Option<String>,
    proto: &'static str,
}

impl Asker {
    fn is(&self, r: &Record) -> bool {
        self.client == Some(r.client)
            && self.mac.as_deref() == r.mac
            && self.device.as_deref() == r.device
            && self.group.as_deref() == r.group
            && self.proto == r.proto
    }

    /// Becomes `r`'s asker, in the strings it already holds.
    fn remember(&mut self, r: &Record) {
        fn copy(slot: &mut Option<String>, value: Option<&str>) {
            match (slot.as_mut(), value) {
                (Some(held), Some(value)) => {
                    held.clear();
                    held.push_str(value);
                }
                _ => *slot = value.map(str::to_owned),
            }
        }
        self.client = Some(r.client);
        copy(&mut self.mac, r.mac);
        copy(&mut self.device, r.device);
        copy(&mut self.group, r.group);
        self.proto = r.proto;
    }
}

impl LineFormatter {
    /// The line for `r`, in this formatter's own buffer.
    fn format(&mut self, r: &Record) -> &[u8] {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        self.append(r, &mut line);
        self.line = line;
        &self.line
    }

    /// Appends the line for `r` to `line`.
    fn append(&mut self, r: &Record, line: &mut Vec<u8>) {
        let since_epoch = r.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        if self.second != Some(since_epoch.as_secs()) {
            self.second = Some(since_epoch.as_secs());
            self.stamp = humantime::format_rfc3339_seconds(r.at).to_string();
            self.stamp.pop(); // the 'Z'
            self.stamp.push('.');
        }
        line.extend_from_slice(b"{\"ts\":\"");
        line.extend_from_slice(self.stamp.as_bytes());
        let millis = since_epoch.subsec_millis();
        line.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
        ]);
        if !self.asker.is(r) {
            self.asker.remember(r);
            let text = &mut self.asker_text;
            text.clear();
            text.extend_from_slice(b"Z\",\"client\":\"");
            push_ip(text, r.client.to_canonical());
            text.extend_from_slice(b"\",\"mac\":");
            push_optional(text, r.mac);
            text.extend_from_slice(b",\"device\":");
            push_optional(text, r.device);
            text.extend_from_slice(b",\"group\":");
            push_optional(text, r.group);
            text.extend_from_slice(b",\"proto\":");
            push_string(text, r.proto);
            text.extend_from_slice(b",\"name\":");
        }
        line.extend_from_slice(&self.asker_text);
        push_string(line, r.name);
        line.extend_from_slice(b",\"type\":\"");
        push_type(line, r.qtype);
        line.extend_from_slice(b"\",\"action\":\"");
        line.extend_from_slice(r.action.as_str().as_bytes());
        line.extend_from_slice(b"\",\"rule\":");
        push_optional(line, r.rule);
        line.extend_from_slice(b",\"rcode\":\"");
        push_rcode(line, r.rcode);
        line.extend_from_slice(b"\",\"answer\":[");
        for (i, target) in r.cnames.iter().enumerate() {
            if i > 0 {
                line.push(b',');
            }
            push_string(line, target);
        }
        for (i, ip) in r.addresses.iter().enumerate() {
            if i > 0 || !r.cnames.is_empty() {
                line.push(b',');
            }
            line.push(b'"');
            push_ip(line, *ip);
            line.push(b'"');
        }
        line.extend_from_slice(b"],\"upstream\":");
        push_optional(line, r.upstream);
        line.extend_from_slice(b",\"ms\":");
        push_millis(line, r.elapsed);
        line.extend_from_slice(b"}\n");
    }
}

/// The `Display` form, without the formatting machinery for IPv4 (nearly
/// every address in a home's log).
fn push_ip(line: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Written into one buffer and appended once, each octet's digits
            // from a table: digit by digit into the line this was a tenth of
            // a cache hit's instructions.
            let mut text = [0u8; 16];
            let mut len = 0;
            for octet in v4.octets() {
                let (digits, width) = OCTET_TEXT[octet as usize];
                text[len..len + 4].copy_from_slice(&digits);
                len += width as usize;
            }
            // The last octet's dot is not part of the address.
            let len = len - 1;
            line.extend_from_slice(&text[..len]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(line, "{v6}");
        }
    }
}

/// Each octet's decimal digits followed by a dot, padded to four bytes, and
/// how many of those bytes it uses.
const OCTET_TEXT: [([u8; 4], u8); 256] = {
    let mut table = [([0u8; 4], 0u8); 256];
    let mut n = 0;
    while n < 256 {
        let (hundreds, tens, ones) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = if n >= 100 {
            ([b'0' + hundreds, b'0' + tens, b'0' + ones, b'.'], 4)
        } else if n >= 10 {
            ([b'0' + tens, b'0' + ones, b'.', 0], 3)
        } else {
            ([b'0' + ones, b'.', 0, 0], 2)
        };
        n += 1;
    }
    table
};

/// Query types and rcodes by the names `dig` prints.
fn push_type(line: &mut Vec<u8>, qtype: u16) {
    match type_name(qtype) {
        Some(name) => line.extend_from_slice(name.as_bytes()),
        None => push_number(line, "TYPE", qtype.into()),
    }
}

fn push_rcode(line: &mut Vec<u8>, rcode: u16) {
    match crate::wire::rcode_name(rcode) {
        Some(name) => line.extend_from_slice(name.as_bytes()),
        None => push_number(line, "RCODE", rcode.into()),
    }
}

fn push_number(line: &mut Vec<u8>, prefix: &str, n: u64) {
    line.extend_from_slice(prefix.as_bytes());
    line.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn push_optional(line: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(s) => push_string(line, s),
        None => line.extend_from_slice(b"null"),
    }
}

fn push_string(line: &mut Vec<u8>, s: &str) {
    line.push(b'"');
    escape_into(line, s);
    line.push(b'"');
}

/// JSON string escaping: quotes, backslashes and control characters.
fn escape_into(line: &mut Vec<u8>, s: &str) {
    if !needs_escaping(s.as_bytes()) {
        line.extend_from_slice(s.as_bytes());
        return;
    }
    for b in s.bytes() {
        match b {
            b'"' => line.extend_from_slice(b"\\\""),
            b'\\' => line.extend_from_slice(b"\\\\"),
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            b'\t' => line.extend_from_slice(b"\\t"),
            b if b < 0x20 => {
                let _ = write!(line, "\\u{b:04x}");
            }
            b => line.push(b),
        }
    }
}

/// Whether `bytes` holds a quote, a backslash or a control character.
/// Eight bytes a step: every line has a name and a rule to check, and
/// byte by byte this was a sixth of a blocked query's instructions.
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact for "is any byte below n" when n <= 0x80 (bytes of 0x80 and
    // up, UTF-8, never count).
    let any_below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS != 0;
    let any_equal = |word: u64, b: u8| any_below(word ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        if any_below(word, 0x20) || any_equal(word, b'"') || any_equal(word, b'\\') {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Milliseconds, rounded: microseconds matter below 1 ms (cache hits,
/// blocks), tens of microseconds are noise above it. Written as the shortest
/// decimal, as a JSON number (`0.04`, `12345.68`, `0.0`).
fn push_millis(line: &mut Vec<u8>, elapsed: Duration) {
    // u64 holds 584 years of nanoseconds; u128 division is a library call.
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let decimals: u32 = if nanos < 1_000_000 { 3 } else { 2 };
    let unit = 10u64.pow(6 - decimals);
    let units = nanos.saturating_add(unit / 2) / unit;
    let scale = 10u64.pow(decimals);
    push_number(line, "", units / scale);
    line.push(b'.');
    let mut fraction = units % scale;
    let mut digits = decimals;
    while digits > 1 && fraction.is_multiple_of(10) {
        fraction /= 10;
        digits -= 1;
    }
    let mut place = 10u64.pow(digits - 1);
    while place > 0 {
        line.push(b'0' + (fraction / place % 10) as u8);
        place /= 10;
    }
}

/// Query types by the names `dig` prints.
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

    static SINKHOLE: [IpAddr; 1] = [IpAddr::V4(Ipv4Addr::UNSPECIFIED)];

    fn record(name: &str) -> Record<'_> {
        Record {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_460_645_123),
            client: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 23)),
            mac: Some("aa:bb:cc:dd:ee:ff"),
            device: Some("Anna's Redmi Note"),
            group: Some("phones"),
            proto: "udp",
            name,
            qtype: 1,
            action: Action::Blocked,
            rule: Some("blocklists/xiaomi.txt:12 miui.com"),
            rcode: 0,
            cnames: &[],
            addresses: &SINKHOLE,
            upstream: None,
            elapsed: Duration::from_micros(40),
        }
    }

    fn line_of(record: &Record) -> String {
        let mut formatter = LineFormatter::default();
        String::from_utf8(formatter.format(record).to_vec()).unwrap()
    }

    /// One formatter keeps the text naming the last asker: each line must
    /// still name its own, whichever field changed.
    #[test]
    fn each_line_names_its_own_asker() {
        let mut formatter = LineFormatter::default();
        let first = record("a.example");
        let mut other_client = first;
        other_client.client = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 24));
        let mut no_mac = first;
        no_mac.mac = None;
        let mut other_device = first;
        other_device.device = Some("Kitchen TV");
        let mut no_group = first;
        no_group.group = None;
        let mut tcp = first;
        tcp.proto = "tcp";
        // Each differs from `first` in one field, and comes between two of it.
        let mut askers = vec![first];
        for one_change in [other_client, no_mac, other_device, no_group, tcp] {
            askers.extend([one_change, first]);
        }
        for r in &askers {
            let line = String::from_utf8(formatter.format(r).to_vec()).unwrap();
            assert_eq!(line, line_of(r), "after other lines from one formatter");
            let back: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(back["client"], r.client.to_string());
            assert_eq!(back["mac"], serde_json::json!(r.mac));
            assert_eq!(back["device"], serde_json::json!(r.device));
            assert_eq!(back["group"], serde_json::json!(r.group));
            assert_eq!(back["proto"], r.proto);
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
        log.record(&record("tracking.miui.com"));
        let cnames: [Box<str>; 1] = ["cdn.example.net".into()];
        let addresses = ["93.184.216.34".parse().unwrap()];
        let mut forwarded = record("example.com");
        forwarded.client = "::ffff:10.0.0.7".parse().unwrap();
        (
            forwarded.mac,
            forwarded.device,
            forwarded.group,
            forwarded.rule,
        ) = (None, None, None, None);
        forwarded.proto = "tcp";
        forwarded.qtype = 65400;
        forwarded.action = Action::Forwarded;
        forwarded.rcode = 3;
        forwarded.cnames = &cnames;
        forwarded.addresses = &addresses;
        forwarded.upstream = Some("tls://9.9.9.9:853#dns.quad9.net");
        forwarded.elapsed = Duration::from_micros(12_345_678);
        log.record(&forwarded);
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
        let text = |push: fn(&mut Vec<u8>, u16), n| {
            let mut line = Vec::new();
            push(&mut line, n);
            String::from_utf8(line).unwrap()
        };
        let t = |n| text(push_type, n);
        let r = |n| text(push_rcode, n);
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
        let ms = |d: Duration| {
            let mut line = Vec::new();
            push_millis(&mut line, d);
            String::from_utf8(line).unwrap()
        };
        assert_eq!(ms(Duration::from_nanos(43_210)), "0.043");
        assert_eq!(ms(Duration::from_micros(40)), "0.04");
        assert_eq!(ms(Duration::from_nanos(999_600)), "1.0");
        assert_eq!(ms(Duration::from_micros(1_234)), "1.23");
        assert_eq!(ms(Duration::from_micros(12_000)), "12.0");
        assert_eq!(ms(Duration::from_micros(153_206)), "153.21");
        assert_eq!(ms(Duration::ZERO), "0.0");
        // Past what u64 nanoseconds hold: clamped, never a panic.
        assert_eq!(ms(Duration::MAX), "18446744073709.55");
    }

    #[test]
    fn ipv4_addresses_are_written_as_display_writes_them() {
        for octet in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(octet, 0, 10, 100),
                Ipv4Addr::new(9, octet, 99, octet),
            ] {
                let mut line = Vec::new();
                push_ip(&mut line, IpAddr::V4(ip));
                assert_eq!(String::from_utf8(line).unwrap(), ip.to_string());
            }
        }
    }

    /// The word-at-a-time check agrees with the byte-by-byte one wherever
    /// the odd byte sits.
    #[test]
    fn needs_escaping_finds_every_odd_byte() {
        let odd = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        let base = "blocklists/xiaomi.txt:12 tracking.miui.com é".as_bytes();
        assert!(!needs_escaping(base));
        for at in 0..base.len() {
            for b in 0..=255u8 {
                let mut bytes = base.to_vec();
                bytes[at] = b;
                assert_eq!(needs_escaping(&bytes), odd(b), "byte {b} at {at}");
            }
        }
    }

    #[test]
    fn escapes_what_json_needs() {
        let mut r = record("we\"ird\\name");
        r.device = Some("Tab\t\u{1}");
        let rule = "a \"quoted\" rule";
        r.rule = Some(rule);
        let json = line_of(&r);
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["name"], "we\"ird\\name");
        assert_eq!(back["device"], "Tab\t\u{1}");
        assert_eq!(back["rule"], "a \"quoted\" rule");
    }

    #[tokio::test]
    async fn counts_drops_when_the_queue_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let (log, writer) = QueryLog::open(config(path.clone()), 4, 0).unwrap();
        for i in 0..10 {
            log.record(&record(&format!("n{i}.example")));
        }
        assert_eq!(log.dropped(), 6);
        writer.spawn().unwrap();
        log.flush().await;
        let got = lines(&path);
        assert_eq!(got.len(), 4);
        assert!(got[3].contains("\"n3.example\""), "{}", got[3]);
        assert_eq!(log.dropped(), 6);
    }

    /// Under steady load the writer looks again on its own, so a query
    /// never wakes it; after a gather with nothing it waits to be woken, and
    /// the next line does wake it.
    #[tokio::test]
    async fn the_writer_is_woken_only_after_a_quiet_spell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let (log, writer) = QueryLog::open(config(path.clone()), 100, 0).unwrap();
        writer.spawn().unwrap();
        fn waiting(log: &QueryLog) -> bool {
            log.shared.lock().writer_waiting
        }
        async fn until(log: &QueryLog, wanted: bool) {
            for _ in 0..200 {
                if waiting(log) == wanted {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("writer_waiting never became {wanted}");
        }
        until(&log, true).await;
        log.record(&record("one.example"));
        until(&log, false).await;
        // Lines keep coming: between gathers the writer does not wait.
        for i in 0..6 {
            log.record(&record(&format!("steady{i}.example")));
            assert!(!waiting(&log), "a steady stream left the writer waiting");
            tokio::time::sleep(GATHER / 2).await;
        }
        // Quiet for two gathers: it waits again, and a new line still gets out.
        until(&log, true).await;
        log.record(&record("two.example"));
        log.flush().await;
        assert_eq!(lines(&path).len(), 8);
    }

    /// A batch's lines wait until it ends, each goes to its own log, and a
    /// batch the queue has no room for is dropped whole and counted.
    #[tokio::test]
    async fn staged_lines_reach_their_log_when_the_batch_ends() {
        let dir = tempfile::tempdir().unwrap();
        let (a_path, b_path) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
        let (a, a_writer) = QueryLog::open(config(a_path.clone()), 4, 0).unwrap();
        let (b, b_writer) = QueryLog::open(config(b_path.clone()), 4, 0).unwrap();
        {
            let _staged = StagedLines::begin();
            a.record(&record("one.example"));
            a.record(&record("two.example"));
            assert_eq!(a.shared.lock().count, 0);
            b.record(&record("three.example"));
            a.record(&record("four.example"));
        }
        assert_eq!((a.shared.lock().count, b.shared.lock().count), (3, 1));
        {
            let _staged = StagedLines::begin();
            a.record(&record("five.example"));
            a.record(&record("six.example"));
        }
        assert_eq!(a.dropped(), 2);
        a.record(&record("seven.example"));
        a_writer.spawn().unwrap();
        b_writer.spawn().unwrap();
        a.flush().await;
        b.flush().await;
        let names = |path| -> Vec<String> {
            lines(path)
                .iter()
                .map(|l| {
                    l.split("\"name\":\"")
                        .nth(1)
                        .unwrap()
                        .split('"')
                        .next()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        assert_eq!(
            names(&a_path),
            [
                "one.example",
                "two.example",
                "four.example",
                "seven.example"
            ]
        );
        assert_eq!(names(&b_path), ["three.example"]);
    }

    #[tokio::test]
    async fn rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.jsonl");
        let line_len = line_of(&record("r00.example")).len() as u64;
        let mut config = config(path.clone());
        config.keep = 2;
        // Three lines a file.
        let (log, writer) = QueryLog::open(config, 64, 3 * line_len).unwrap();
        writer.spawn().unwrap();
        // A leftover from an earlier, larger `keep`.
        fs::write(numbered(&path, 3), "old\n").unwrap();
        for i in 0..11 {
            log.record(&record(&format!("r{i:02}.example")));
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
            log.record(&record(&format!("k{i}.example")));
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
        log.record(&record("before.example"));
        log.flush().await;
        assert_eq!(lines(&path).len(), 1);

        fs::remove_dir_all(&logs).unwrap();
        log.record(&record("lost1.example"));
        log.record(&record("lost2.example"));
        log.flush().await;
        assert!(log.dropped() >= 2, "dropped {}", log.dropped());
        assert!(!logs.exists(), "a vanished directory is not recreated");

        // Back as soon as the directory is.
        fs::create_dir(&logs).unwrap();
        let dropped = log.dropped();
        log.record(&record("after.example"));
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
        log.record(&record("one.example"));
        log.flush().await;
        fs::remove_file(&path).unwrap();
        log.record(&record("two.example"));
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
        log.record(&hidden);
        let mut by_device = record("x.com");
        by_device.device = Some("LIVING ROOM TV");
        log.record(&by_device);
        log.record(&record("shown.example"));
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
        log.record(&record("x.example"));
        assert_eq!(log.dropped(), 1);
    }
}
