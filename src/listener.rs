//! The front end: UDP (one socket per address, read by threads of their own,
//! each with a single-threaded runtime; more than one only while one cannot
//! keep up, see [`Spill`]; datagrams are read and written in batches:
//! `batch.rs`; the first thread, when no upstream task of its own runs,
//! waits for queries in `recvmmsg` itself, see [`UpstreamTasks`]) and TCP
//! with pipelining (RFC 7766).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tracing::{debug, warn};

use crate::pipeline::{Moment, Pipeline, Proto, Step, Unlogged};

mod batch;
use batch::Batch;

/// A TCP connection with nothing to say for this long is closed (RFC 7766
/// suggests seconds, not minutes).
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Open TCP connections at most; more are closed at once.
pub const TCP_MAX_CONNECTIONS: usize = 512;
/// Open TCP connections one client may hold.
pub const TCP_MAX_PER_CLIENT: usize = 32;
/// Answers waiting to be written on one TCP connection.
const TCP_WRITE_QUEUE: usize = 64;
/// Room for bursts: the kernel default (~208 KB) overflows at a few hundred
/// queries in flight.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// Sockets bound for one `listen` address.
pub struct Bound {
    pub addr: SocketAddr,
    /// Registered with a runtime only on the threads that serve it.
    udp: std::net::UdpSocket,
    tcp: TcpListener,
}

/// Why a listen address could not be bound, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}{}", hint(.source, *.addr))]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

impl BindError {
    /// An IPv6 wildcard on a host without IPv6 is skipped, not fatal.
    pub fn is_missing_ipv6(&self) -> bool {
        self.addr.is_ipv6()
            && matches!(
                self.source.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
            )
    }
}

fn hint(error: &io::Error, addr: SocketAddr) -> String {
    match error.kind() {
        io::ErrorKind::AddrInUse => format!(
            "\n  another program holds port {port}: often systemd-resolved's stub on 127.0.0.53 \
             (set DNSStubListener=no in /etc/systemd/resolved.conf, then `systemctl restart systemd-resolved`) \
             or dnsmasq; `ss -lunp 'sport = :{port}'` shows which",
            port = addr.port()
        ),
        io::ErrorKind::PermissionDenied => format!(
            "\n  ports below 1024 need root or CAP_NET_BIND_SERVICE: run as root, use systemd/sinkd.service, \
             or `sudo setcap cap_net_bind_service=+ep $(command -v sinkd)`; or listen on a high port such as {}:5353",
            addr.ip()
        ),
        io::ErrorKind::AddrNotAvailable => {
            "\n  that address is not on this machine: use 0.0.0.0 / [::] or an address from `ip addr`".into()
        }
        _ => String::new(),
    }
}

fn socket_for(addr: SocketAddr, kind: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        // [::] and 0.0.0.0 are both in the default config: keep them apart.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = socket_for(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket_for(addr, Type::STREAM, Protocol::TCP)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// Binds UDP and TCP on `addr`, on the same port even when the port is 0.
pub fn bind(addr: SocketAddr) -> Result<Bound, BindError> {
    let fail = |source| BindError { addr, source };
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind_udp(addr).map_err(fail)?;
        let local = udp.local_addr().map_err(fail)?;
        match bind_tcp(local) {
            Ok(tcp) => {
                return Ok(Bound {
                    addr: local,
                    udp,
                    tcp,
                });
            }
            // The port UDP got is taken for TCP: try another.
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && addr.port() == 0 => last = Some(e),
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(last.expect("at least one attempt")))
}

impl Bound {
    /// Runs every loop of this address: UDP on `udp_threads` threads of its
    /// own (see [`Spill`]), TCP as a task of the calling runtime. Aborting
    /// the handle stops TCP; `stop` turning true stops UDP. Queries already
    /// taken in are answered: a UDP thread keeps its runtime (and the
    /// upstream tasks on it) going until nothing is in flight or `drain`
    /// has passed.
    pub fn spawn(
        self,
        pipeline: Arc<Pipeline>,
        tcp_slots: Arc<Semaphore>,
        udp_threads: usize,
        stop: &tokio::sync::watch::Receiver<bool>,
        drain: Duration,
    ) -> io::Result<tokio::task::JoinHandle<()>> {
        let spill = Arc::new(Spill::new(udp_threads.max(1) - 1));
        let socket = Arc::new(self.udp);
        for helper in 0..=spill.helpers {
            let role = (helper > 0).then_some(helper);
            spawn_udp_thread(
                socket.clone(),
                role,
                spill.clone(),
                pipeline.clone(),
                stop.clone(),
                drain,
            )?;
        }
        Ok(tokio::spawn(serve_tcp(self.tcp, pipeline, tcp_slots)))
    }
}

/// The threads serving one UDP socket share the load only when one cannot
/// carry it. The first thread reads all the time; helper `i` reads while
/// `wanted >= i`, asked in when the first is busy through a whole window and
/// leaving when the two together would fit one thread again. Spreading a
/// load one thread can carry costs more than it gives: each thread gets
/// smaller batches and sleeps and wakes more often. On two cores shared with
/// the load generator, two threads reading all the time spent 20-40% more
/// CPU per query than one (six times the context switches).
struct Spill {
    helpers: usize,
    wanted: AtomicUsize,
    /// The first thread's load in its last window (per mille, low 16 bits)
    /// and when that window ended (ms since `epoch`, the bits above).
    first: AtomicU64,
    epoch: Instant,
    asked: tokio::sync::Notify,
}

/// How often each thread weighs its load.
const LOAD_WINDOW: Duration = Duration::from_millis(100);
/// A helper is asked in when the first thread worked this share (per mille)
/// of a window.
const JOIN_AT: u64 = 950;
/// A helper leaves when its load and the first thread's add up to less.
const LEAVE_BELOW: u64 = 800;

impl Spill {
    fn new(helpers: usize) -> Spill {
        Spill {
            helpers,
            wanted: AtomicUsize::new(0),
            first: AtomicU64::new(0),
            epoch: Instant::now(),
            asked: tokio::sync::Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The first thread ended a window with `load`.
    fn first_load(&self, load: u64) {
        tracing::trace!(load, "udp: the first thread's load");
        self.first
            .store(self.now_ms() << 16 | load, Ordering::Relaxed);
        if load >= JOIN_AT {
            let more = self
                .wanted
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |wanted| {
                    (wanted < self.helpers).then_some(wanted + 1)
                });
            if more.is_ok() {
                debug!(load, "udp: the first thread is saturated; a helper joins");
                self.asked.notify_waiters();
            }
        }
    }

    /// Whether `helper`, with `load` in the window it just ended, leaves.
    fn helper_leaves(&self, helper: usize, load: u64) -> bool {
        let first = self.first.load(Ordering::Relaxed);
        // A first thread with no datagrams ends no window: a stale figure
        // means it is idle.
        let first_load =
            if self.now_ms().saturating_sub(first >> 16) > 3 * LOAD_WINDOW.as_millis() as u64 {
                0
            } else {
                first & 0xffff
            };
        first_load + load < LEAVE_BELOW
            && self
                .wanted
                .compare_exchange(helper, helper - 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    async fn wait_until_wanted(&self, helper: usize) {
        loop {
            let asked = self.asked.notified();
            if self.wanted.load(Ordering::Relaxed) >= helper {
                return;
            }
            asked.await;
        }
    }
}

/// The share of wall-clock time a thread is not waiting for datagrams, by
/// window: a thread that never finds its socket empty is behind.
struct LoadMeter {
    window_start: Instant,
    waited: Duration,
}

impl LoadMeter {
    fn new() -> LoadMeter {
        LoadMeter {
            window_start: Instant::now(),
            waited: Duration::ZERO,
        }
    }

    /// At the end of a window, its load in per mille.
    fn window_end(&mut self, now: Instant) -> Option<u64> {
        let elapsed = now - self.window_start;
        if elapsed < LOAD_WINDOW {
            return None;
        }
        let waited = (self.waited.as_micros() * 1000 / elapsed.as_micros().max(1)) as u64;
        self.window_start = now;
        self.waited = Duration::ZERO;
        Some(1000u64.saturating_sub(waited))
    }
}

/// One thread with a single-threaded runtime: a query, its upstream
/// exchange and its answer stay on one core, with no task handed between
/// threads and no shared run queue. `helper`: `None` for the first thread.
fn spawn_udp_thread(
    socket: Arc<std::net::UdpSocket>,
    helper: Option<usize>,
    spill: Arc<Spill>,
    pipeline: Arc<Pipeline>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("sinkd-udp".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::select! {
                    () = serve_udp_thread(&socket, helper, &spill, &pipeline) => {}
                    _ = stop.wait_for(|stopping| *stopping) => {}
                }
                pipeline.until_answered(drain).await;
            });
        })?;
    Ok(())
}

async fn serve_udp_thread(
    socket: &std::net::UdpSocket,
    helper: Option<usize>,
    spill: &Spill,
    pipeline: &Arc<Pipeline>,
) {
    loop {
        if let Some(helper) = helper {
            spill.wait_until_wanted(helper).await;
        }
        // Each thread registers its own descriptor of the socket with its
        // runtime, and a helper only while it reads: registered, every
        // datagram would wake it.
        match socket
            .try_clone()
            .and_then(|socket| batch::listen(socket, IDLE_WAKE))
        {
            Ok(registered) => {
                serve_udp(Arc::new(registered), pipeline.clone(), helper, spill).await
            }
            Err(e) => {
                warn!(error = %e, "cannot serve a UDP socket");
                // Asked in again when the first thread is next saturated.
                if let Some(helper) = helper {
                    spill.wanted.fetch_min(helper - 1, Ordering::Relaxed);
                }
            }
        }
        if helper.is_none() {
            return;
        }
    }
}

/// Runs `f`; a panic in it (a bug) is counted and gives `None`, so it costs
/// one query rather than the listener.
fn unless_panics<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .inspect_err(|_| metrics::counter!("sinkd_panics_total").increment(1))
        .ok()
}

/// The inline path; a query that makes it panic is logged with its packet
/// and dropped.
fn answer_now(
    pipeline: &Pipeline,
    packet: &[u8],
    src: SocketAddr,
    proto: Proto,
    received: Instant,
    out: &mut Vec<u8>,
    key: &mut Vec<u8>,
) -> Step {
    unless_panics(|| pipeline.answer_now(packet, src, proto, received, out, key)).unwrap_or_else(|| {
        tracing::error!(%src, packet = ?packet, "a query made sinkd panic; it was dropped (please report this)");
        Step::Drop
    })
}

/// Step 8 for answers already sent (at `sent`).
fn log_sent(pipeline: &Pipeline, unlogged: impl IntoIterator<Item = Unlogged>, sent: Moment) {
    for unlogged in unlogged {
        if unless_panics(|| pipeline.log(unlogged, sent)).is_none() {
            tracing::error!(
                "logging a query made sinkd panic; its line was lost (please report this)"
            );
        }
    }
}

/// The longest the first UDP thread sleeps in `recvmmsg` without a
/// datagram before its runtime gets a turn: for housekeeping that may wait
/// (closing upstream sockets replaced a while ago), never for a query.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// The upstream tasks a UDP thread has started and that still run: each
/// holds a clone. While there are none, nothing on the thread's runtime
/// needs it, so the thread may wait for queries in `recvmmsg` itself rather
/// than in the runtime. (A query's name lookups for the log go to the main
/// runtime.)
#[derive(Default)]
struct UpstreamTasks(Arc<()>);

impl UpstreamTasks {
    fn none(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// Held by one task for as long as it lives.
    fn begin(&self) -> Arc<()> {
        self.0.clone()
    }
}

/// What a forwarded query's task may take (see [`start_upstream_task`]):
/// glibc's largest size served from its per-thread caches is 1,032 bytes.
const TASK_SIZE_LIMIT: usize = 1024;

/// Sends a forwarded query on its way at once, then leaves the wait for
/// its answer to a task. Spawned unpolled, its upstream query would leave
/// only once the thread had finished the batch, tried another `recvmmsg`
/// and handed the runtime its turn: a few microseconds added to every cache
/// miss's latency. The first poll is under a waker that does nothing, which
/// is sound because a spawned task is always polled once more, under its
/// own waker, before it waits. A panic in that first poll costs the one
/// query, as it would in the task, not the thread.
///
/// The task's future is kept under a kilobyte. glibc serves blocks of a
/// kilobyte and more only after merging its small free blocks, so one per
/// cache miss made the small allocations around it slow too: at 1,592 bytes
/// `perf` put a tenth of a miss's CPU in `malloc` and `free`.
fn start_upstream_task(
    pipeline: &Pipeline,
    mut upstream: Pin<Box<impl Future<Output = ()> + Send + 'static>>,
) {
    debug_assert!(
        size_of_val(&*upstream) < TASK_SIZE_LIMIT,
        "a forwarded query's task takes {} bytes",
        size_of_val(&*upstream)
    );
    let mut first_poll = std::task::Context::from_waker(std::task::Waker::noop());
    match unless_panics(|| upstream.as_mut().poll(&mut first_poll)) {
        Some(Poll::Pending) => {
            let task = tokio::spawn(upstream);
            pipeline.admit_upstream_task(task.abort_handle());
        }
        Some(Poll::Ready(())) => {}
        None => tracing::error!(
            "forwarding a query made sinkd panic; it was dropped (please report this)"
        ),
    }
}

/// Answers datagrams until a helper's turn ends (the first thread's never
/// does).
async fn serve_udp(
    socket: Arc<batch::UdpListener>,
    pipeline: Arc<Pipeline>,
    helper: Option<usize>,
    spill: &Spill,
) {
    let mut batch = Batch::new();
    let mut key = Vec::with_capacity(300);
    let mut unlogged = Vec::with_capacity(batch::BATCH);
    let mut places = Vec::with_capacity(batch::BATCH);
    let mut meter = LoadMeter::new();
    let upstream_tasks = UpstreamTasks::default();
    let mut forwarded = Vec::new();
    loop {
        let received = match batch.try_receive(&socket) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let waiting = Instant::now();
                let received = match helper {
                    // Nothing else on this thread needs its runtime: the
                    // next query wakes the very call that reads it.
                    None if upstream_tasks.none() => batch.wait_and_receive(&socket),
                    None => batch.receive(&socket).await,
                    // A helper with nothing to read still weighs its load.
                    Some(_) => tokio::time::timeout(LOAD_WINDOW, batch.receive(&socket))
                        .await
                        .unwrap_or(Ok(0)),
                };
                let woke = Instant::now();
                meter.waited += woke - waiting;
                received.map(|n| (n, woke))
            }
            received => received.map(|n| (n, Instant::now())),
        };
        let (received, received_at) = match received {
            Ok(received) => received,
            Err(e) => {
                // `wait_and_receive` woke with nothing (IDLE_WAKE), or an
                // ICMP error from an earlier send surfaced: keep serving,
                // after giving the runtime its turn.
                if e.kind() != io::ErrorKind::WouldBlock {
                    debug!(error = %e, "udp receive");
                }
                tokio::task::yield_now().await;
                continue;
            }
        };
        let log_lines = crate::querylog::StagedLines::begin();
        // A batch's cache lookups wait for memory together, not in turn:
        // first every set, then every entry. Parsing is as guarded here as
        // in `answer_now`, which reports the query that makes it panic.
        if received > 1 {
            places.clear();
            unless_panics(|| {
                places.extend(
                    (0..received).map(|i| pipeline.prefetch(batch.datagram(i).0, &mut key)),
                );
                for &place in places.iter().flatten() {
                    pipeline.prefetch_entry(place);
                }
            });
        }
        for i in 0..received {
            let (packet, src, out) = batch.datagram(i);
            let Some(src) = src else { continue };
            match answer_now(
                &pipeline,
                packet,
                src,
                Proto::Udp,
                received_at,
                out,
                &mut key,
            ) {
                Step::Reply(done) => {
                    batch.answer(i);
                    unlogged.extend(done);
                }
                Step::Drop => {}
                Step::Forward(pending) => {
                    let socket = socket.clone();
                    let send = async move |answer: &[u8]| {
                        if let Err(e) = batch::send_to(&socket, answer, src).await {
                            debug!(%src, error = %e, "udp send");
                        }
                    };
                    let answering = pipeline.clone().answer_upstream(pending, send);
                    let running = upstream_tasks.begin();
                    // `map`, not an `async` block around it: that would keep
                    // the whole future twice in the task.
                    forwarded.push(Box::pin(answering.map(move |()| drop(running))));
                }
            }
        }
        batch.send(&socket).await;
        for upstream in forwarded.drain(..) {
            start_upstream_task(&pipeline, upstream);
        }
        // The answers are out before their lines are formatted, and before
        // those may wake the log writer.
        let sent = Moment::now();
        log_sent(&pipeline, unlogged.drain(..), sent);
        drop(log_lines);
        if let Some(load) = meter.window_end(sent.instant) {
            match helper {
                None => spill.first_load(load),
                Some(helper) if spill.helper_leaves(helper, load) => {
                    debug!(load, "udp: the load fits one thread again; a helper leaves");
                    return;
                }
                Some(_) => {}
            }
        }
    }
}

/// Counts one client's open TCP connections while it lives.
struct ClientSlot {
    counts: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    client: std::net::IpAddr,
}

impl ClientSlot {
    fn take(
        counts: &Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
        client: std::net::IpAddr,
    ) -> Option<ClientSlot> {
        let mut map = counts.lock().unwrap();
        let open = map.entry(client).or_default();
        if *open >= TCP_MAX_PER_CLIENT {
            return None;
        }
        *open += 1;
        Some(ClientSlot {
            counts: counts.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap();
        if let Some(open) = map.get_mut(&self.client) {
            *open -= 1;
            if *open == 0 {
                map.remove(&self.client);
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, pipeline: Arc<Pipeline>, slots: Arc<Semaphore>) {
    let per_client = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly.
                warn!(error = %e, "tcp accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%src, "tcp connection limit reached, closing");
            continue;
        };
        let Some(client_slot) = ClientSlot::take(&per_client, src.ip()) else {
            debug!(%src, "this client holds too many tcp connections, closing");
            continue;
        };
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let _slots = (slot, client_slot);
            if let Err(e) = serve_tcp_connection(stream, src, pipeline).await {
                debug!(%src, error = %e, "tcp connection");
            }
        });
    }
}

/// Reads queries as they come and answers each as soon as it is ready, so a
/// slow upstream answer never holds up a cached one behind it (RFC 7766 6.2.1.1).
async fn serve_tcp_connection(
    stream: TcpStream,
    src: SocketAddr,
    pipeline: Arc<Pipeline>,
) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let (answers, mut queue) = mpsc::channel::<Vec<u8>>(TCP_WRITE_QUEUE);
    let write_loop = tokio::spawn(async move {
        let mut writer = BufWriter::new(writer);
        while let Some(answer) = queue.recv().await {
            writer
                .write_all(&(answer.len() as u16).to_be_bytes())
                .await?;
            writer.write_all(&answer).await?;
            // Flush once the burst of ready answers is written.
            if queue.is_empty() {
                writer.flush().await?;
            }
        }
        writer.shutdown().await
    });

    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    let mut key = Vec::with_capacity(300);
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, reader.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            // Idle, closed by the client, or broken: stop reading; answers
            // still in flight are written before the connection closes.
            Ok(Err(_)) | Err(_) => break,
        };
        match tokio::time::timeout(TCP_IDLE, reader.read_exact(&mut buf[..len])).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
        let received = Instant::now();
        match answer_now(
            &pipeline,
            &buf[..len],
            src,
            Proto::Tcp,
            received,
            &mut out,
            &mut key,
        ) {
            Step::Reply(unlogged) => {
                let queued = answers.send(out.clone()).await;
                log_sent(&pipeline, unlogged, Moment::now());
                if queued.is_err() {
                    break;
                }
            }
            Step::Drop => {}
            Step::Forward(pending) => {
                let answers = answers.clone();
                let send = async move |answer: &[u8]| {
                    let _ = answers.send(answer.to_vec()).await;
                };
                let task = tokio::spawn(pipeline.clone().answer_upstream(pending, send));
                pipeline.admit_upstream_task(task.abort_handle());
            }
        }
    }
    drop(answers);
    write_loop.await.unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_join_one_at_a_time_while_the_first_thread_is_saturated() {
        let spill = Spill::new(2);
        spill.first_load(JOIN_AT - 1);
        assert_eq!(spill.wanted.load(Ordering::Relaxed), 0);
        spill.first_load(1000);
        assert_eq!(spill.wanted.load(Ordering::Relaxed), 1);
        spill.first_load(JOIN_AT);
        spill.first_load(1000);
        assert_eq!(
            spill.wanted.load(Ordering::Relaxed),
            2,
            "no more than there are helpers"
        );
    }

    #[test]
    fn the_last_helper_leaves_when_the_load_fits_one_thread() {
        let spill = Spill::new(2);
        spill.first_load(1000);
        spill.first_load(1000);
        // Helper 1 is not the last one in: it stays.
        assert!(!spill.helper_leaves(1, 0));
        spill.first_load(500);
        assert!(
            !spill.helper_leaves(2, LEAVE_BELOW - 500),
            "together a full thread's worth"
        );
        assert!(spill.helper_leaves(2, LEAVE_BELOW - 501));
        assert_eq!(spill.wanted.load(Ordering::Relaxed), 1);
        assert!(spill.helper_leaves(1, 0));
        assert_eq!(spill.wanted.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_idle_first_thread_counts_as_no_load() {
        let spill = Spill::new(1);
        // A saturated window long ago, and nothing since.
        spill.first.store(1000, Ordering::Relaxed);
        spill.wanted.store(1, Ordering::Relaxed);
        std::thread::sleep(LOAD_WINDOW * 4);
        assert!(spill.helper_leaves(1, 100));
    }

    /// The path a helper takes only under saturation, which no load in the
    /// tests reaches: asked in, it answers on the shared socket; with the
    /// load gone it leaves, and a query still gets its answer afterwards
    /// (from the first thread alone).
    #[tokio::test]
    async fn a_helper_answers_on_the_shared_socket_and_leaves_when_idle() {
        use hickory_proto::op::{Message, Query, ResponseCode};
        use hickory_proto::rr::{Name, RecordType};

        let loaded = crate::config::Loaded {
            config: crate::config::parse("[upstream]\nservers = [\"udp://127.0.0.1:9\"]\n")
                .unwrap(),
            path: "sinkd.toml".into(),
        };
        let pipeline = Arc::new(Pipeline::new(&loaded, crate::blocking::Policy::empty()).unwrap());
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = socket.local_addr().unwrap();
        let spill = Spill::new(1);
        spill.wanted.store(1, Ordering::Relaxed);
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // A private reverse name: answered here, no upstream asked.
        let ask = || async {
            let mut message = Message::query();
            message.metadata.id = 7;
            let name = Name::from_ascii("9.1.168.192.in-addr.arpa.").unwrap();
            message.queries.push(Query::query(name, RecordType::PTR));
            client
                .send_to(&message.to_vec().unwrap(), server)
                .await
                .unwrap();
            let mut buf = [0u8; 512];
            let len = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            Message::from_vec(&buf[..len]).unwrap()
        };
        let helper = serve_udp_thread(&socket, Some(1), &spill, &pipeline);
        tokio::pin!(helper);
        let test = async {
            let answer = ask().await;
            assert_eq!(answer.metadata.id, 7);
            assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain);
            // Idle through its windows, with the first thread's load stale.
            for _ in 0..100 {
                if spill.wanted.load(Ordering::Relaxed) == 0 {
                    break;
                }
                tokio::time::sleep(LOAD_WINDOW).await;
            }
            assert_eq!(spill.wanted.load(Ordering::Relaxed), 0, "the helper left");
        };
        tokio::select! {
            () = &mut helper => panic!("a helper's thread never ends on its own"),
            () = test => {}
        }
        // Gone from the socket: the first thread answers alone.
        let first = serve_udp_thread(&socket, None, &spill, &pipeline);
        tokio::select! {
            () = first => panic!("the first thread never ends on its own"),
            answer = ask() => assert_eq!(answer.metadata.response_code, ResponseCode::NXDomain),
        }
    }

    #[tokio::test]
    async fn a_helper_waits_until_asked_in() {
        let spill = Arc::new(Spill::new(1));
        let waiting = tokio::spawn({
            let spill = spill.clone();
            async move { spill.wait_until_wanted(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        spill.first_load(1000);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("asked in")
            .unwrap();
    }
}
