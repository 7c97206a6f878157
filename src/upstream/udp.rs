//! Plain DNS over UDP to one upstream, without a socket per query.
//!
//! hickory's UDP exchange opens, binds, registers and closes a socket for
//! every query, and builds and parses whole messages around it: about half
//! the cost of a cache miss. Here each thread keeps a few connected sockets:
//! each query takes a random ID on one of its thread's, and one reader task
//! per socket hands each answer to whoever waits for that ID and question.
//!
//! What the per-query socket bought was an unpredictable source port (the
//! defence against off-path spoofing, with the random ID). That is kept by
//! retiring a socket after [`QUERIES_PER_SOCKET`] queries or
//! [`SOCKET_LIFETIME`], whichever comes first, for one with a new random
//! port; an answer must also come from the server's address (the socket is
//! connected) and repeat the question exactly.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::wire::{self, HEADER_LEN};

/// Sockets open to one upstream at a time, per thread.
const SOCKETS: usize = 8;
/// Queries sent over one socket before it gives way to a new one.
const QUERIES_PER_SOCKET: usize = 512;
/// And its age at most: a port kept for minutes could be found by scanning.
const SOCKET_LIFETIME: Duration = Duration::from_secs(10);
/// Room for any UDP datagram, whatever the upstream sends.
const MAX_ANSWER: usize = 65_535;

thread_local! {
    /// Answers are read into this and copied out at their size: one buffer
    /// per thread, not one per socket (a flood of misses keeps hundreds of
    /// sockets open while they are rotated).
    static ANSWER_BUFFER: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0; MAX_ANSWER].into_boxed_slice());
}

/// The UDP side of one `udp://` upstream.
pub struct UdpUpstream {
    server: SocketAddr,
    /// Each thread asks over sockets of its own, registered with its own
    /// runtime: an answer wakes the query's task on the thread it waits on.
    slots: thread_local::ThreadLocal<Slots>,
    /// How long a retired socket keeps listening for late answers.
    grace: Duration,
    /// Sockets open, current and retired.
    open: Arc<AtomicUsize>,
}

/// One thread's sockets: only that thread touches them, so no lock.
#[derive(Default)]
struct Slots {
    sockets: [RefCell<Option<Arc<Socket>>>; SOCKETS],
    next: Cell<usize>,
}

/// One connected socket, and the queries waiting for an answer on it.
struct Socket {
    udp: UdpSocket,
    /// hashbrown's seeded foldhash: an insert and a remove per query, a
    /// fraction of std's SipHash.
    waiting: Mutex<hashbrown::HashMap<u16, Waiter>>,
    sent: AtomicUsize,
    opened: Instant,
    reader: Mutex<Option<tokio::task::AbortHandle>>,
    /// Replaced by a fresh socket: closes once no query waits on it.
    retired: std::sync::atomic::AtomicBool,
    open: Arc<AtomicUsize>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Waiter {
    /// The question section we sent, which the answer must repeat.
    question: Box<[u8]>,
    /// Taken by the first answer. The entry itself stays until the query is
    /// done (`Forget`): removed at once, its ID could go to a new query
    /// whose entry the old query's `Forget` would then remove, leaving the
    /// new one with no answer ever ("the socket's reader stopped").
    answer: Option<oneshot::Sender<Vec<u8>>>,
}

impl UdpUpstream {
    /// `timeout`: the longest anyone waits for an answer; a retired socket
    /// listens that long for answers still on their way.
    pub fn new(server: SocketAddr, timeout: Duration) -> UdpUpstream {
        UdpUpstream {
            server,
            slots: thread_local::ThreadLocal::new(),
            grace: timeout + Duration::from_secs(1),
            open: Arc::default(),
        }
    }

    /// Sends the client's question (with `wire::upstream_query`'s header and
    /// OPT) and waits for the answer, sending again after `retransmit`
    /// without an answer. The caller bounds the whole wait.
    pub async fn exchange(
        &self,
        packet: &[u8],
        query: &wire::Query,
        retransmit: Duration,
    ) -> io::Result<Vec<u8>> {
        let socket = self.socket().await?;
        let question: Box<[u8]> = packet[HEADER_LEN..query.question_end].into();
        let (tx, mut rx) = oneshot::channel();
        let id = {
            let mut waiting = socket
                .waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let mut id: u16 = rand::random();
            while waiting.contains_key(&id) {
                id = rand::random();
            }
            waiting.insert(
                id,
                Waiter {
                    question,
                    answer: Some(tx),
                },
            );
            id
        };
        let _forget = Forget {
            socket: &socket,
            id,
        };
        let mut request = Vec::with_capacity(query.question_end + 11);
        wire::upstream_query(packet, query, id, &mut request);
        loop {
            socket.udp.send(&request).await?;
            match tokio::time::timeout(retransmit, &mut rx).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(_)) => {
                    return Err(io::Error::other("the socket's reader stopped"));
                }
                Err(_) => {} // no answer yet: ask again, same ID
            }
        }
    }

    /// The next socket in turn, replaced first if it is used up or too old.
    async fn socket(&self) -> io::Result<Arc<Socket>> {
        let index = {
            let slots = self.slots.get_or_default();
            let index = slots.next.get() % SOCKETS;
            slots.next.set(index + 1);
            if let Some(socket) = slots.sockets[index].borrow().as_ref()
                && socket.sent.fetch_add(1, Ordering::Relaxed) < QUERIES_PER_SOCKET
                && socket.opened.elapsed() < SOCKET_LIFETIME
            {
                return Ok(socket.clone());
            }
            index
        };
        let fresh = self.open().await?;
        // Looked up again: on a multi-threaded runtime (TCP clients) the
        // task may have moved to another thread while it waited.
        let old = self.slots.get_or_default().sockets[index].replace(Some(fresh.clone()));
        if let Some(old) = old {
            retire(old, self.grace);
        }
        Ok(fresh)
    }

    async fn open(&self) -> io::Result<Arc<Socket>> {
        let any: SocketAddr = match self.server {
            SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        // Port 0: the kernel picks a random ephemeral port.
        let udp = UdpSocket::bind(any).await?;
        udp.connect(self.server).await?;
        let socket = Arc::new(Socket {
            udp,
            waiting: Mutex::new(hashbrown::HashMap::new()),
            sent: AtomicUsize::new(1),
            opened: Instant::now(),
            reader: Mutex::new(None),
            retired: std::sync::atomic::AtomicBool::new(false),
            open: self.open.clone(),
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        let reader = tokio::spawn(read_answers(socket.clone()));
        *socket.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(reader.abort_handle());
        Ok(socket)
    }
}

impl Drop for UdpUpstream {
    fn drop(&mut self) {
        for slot in self.slots.iter_mut().flat_map(|slots| &mut slots.sockets) {
            if let Some(socket) = slot.get_mut().take() {
                socket.stop_reading();
            }
        }
    }
}

impl Socket {
    fn nobody_waits(&self) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn stop_reading(&self) {
        if let Some(reader) = self
            .reader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            reader.abort();
        }
    }
}

/// Lets a replaced socket hear the answers still owed to it, then closes it:
/// when the last is answered, or after `grace` at the latest.
fn retire(socket: Arc<Socket>, grace: Duration) {
    socket.retired.store(true, Ordering::Release);
    if socket.nobody_waits() {
        socket.stop_reading();
        return;
    }
    // Weak: once its reader and waiters are gone, the socket closes at once.
    let socket = Arc::downgrade(&socket);
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        if let Some(socket) = socket.upgrade() {
            socket.stop_reading();
        }
    });
}

/// Removes a query's entry however its wait ends (answer, error, timeout,
/// or the caller giving up), so IDs are not held by the departed.
struct Forget<'a> {
    socket: &'a Socket,
    id: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.socket
            .waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Hands each answer to the query waiting for its ID, if it repeats that
/// query's question; anything else (late, duplicate, spoofed) is dropped.
/// Runs until aborted, or until its socket is retired and owes no answer.
async fn read_answers(socket: Arc<Socket>) {
    loop {
        if socket.udp.readable().await.is_err() {
            continue;
        }
        ANSWER_BUFFER.with_borrow_mut(|buf| {
            // ICMP port unreachable and the like come as errors: the waiter
            // times out and the caller marks the server failed.
            if let Ok(len) = socket.udp.try_recv(buf) {
                deliver(&socket, &buf[..len]);
            }
        });
        if socket.retired.load(Ordering::Acquire) && socket.nobody_waits() {
            return;
        }
    }
}

fn deliver(socket: &Socket, answer: &[u8]) {
    if answer.len() < HEADER_LEN || answer[2] & 0x80 == 0 {
        return;
    }
    let id = u16::from_be_bytes([answer[0], answer[1]]);
    let mut waiting = socket
        .waiting
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let Some(waiter) = waiting.get_mut(&id) else {
        return;
    };
    if !wire::repeats_question(answer, &waiter.question) {
        return;
    }
    let Some(sender) = waiter.answer.take() else {
        return; // a duplicate
    };
    drop(waiting);
    let _ = sender.send(answer.to_vec());
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    use std::collections::HashSet;

    fn client_query(name: &str) -> Vec<u8> {
        let mut message = Message::query();
        message.metadata.recursion_desired = true;
        let name = Name::from_ascii(name).unwrap();
        message.queries.push(Query::query(name, RecordType::A));
        message.to_vec().unwrap()
    }

    /// An answer to `request` (ID and question copied), with the question
    /// name changed by `mangle`.
    fn answer_to(request: &[u8], id: u16, mangle: impl Fn(&mut [u8])) -> Vec<u8> {
        let parsed = wire::Query::parse(request).unwrap();
        let mut answer = request[..parsed.question_end].to_vec();
        answer[0..2].copy_from_slice(&id.to_be_bytes());
        answer[2] |= 0x80;
        answer[10..12].copy_from_slice(&[0, 0]); // no OPT in this answer
        mangle(&mut answer[HEADER_LEN..parsed.question_end]);
        answer
    }

    #[tokio::test]
    async fn only_an_answer_with_our_id_and_question_is_taken() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = UdpUpstream::new(server.local_addr().unwrap(), Duration::from_secs(2));
        let packet = client_query("www.Example.org.");
        let query = wire::Query::parse(&packet).unwrap();
        let serve = async {
            let mut buf = [0u8; 512];
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            let request = &buf[..len];
            let id = u16::from_be_bytes([request[0], request[1]]);
            // Not a question we asked, a wrong ID, then the answer (in
            // another case, which is allowed).
            let other = answer_to(request, id, |q| q[1] = b'x');
            let wrong_id = answer_to(request, id.wrapping_add(1), |_| {});
            let right = answer_to(request, id, |q| q[1..4].make_ascii_uppercase());
            for answer in [other, wrong_id, right.clone()] {
                server.send_to(&answer, from).await.unwrap();
            }
            right
        };
        let (got, sent) = tokio::join!(
            upstream.exchange(&packet, &query, Duration::from_secs(1)),
            serve
        );
        assert_eq!(got.unwrap(), sent);
    }

    #[tokio::test]
    async fn an_answered_id_stays_taken_until_its_query_is_done() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = UdpUpstream::new(server.local_addr().unwrap(), Duration::from_secs(2));
        let socket = upstream.open().await.unwrap();
        let request = client_query("a.example.");
        let parsed = wire::Query::parse(&request).unwrap();
        let (tx, mut rx) = oneshot::channel();
        socket.waiting.lock().unwrap().insert(
            7,
            Waiter {
                question: request[HEADER_LEN..parsed.question_end].into(),
                answer: Some(tx),
            },
        );
        let done = Forget {
            socket: &socket,
            id: 7,
        };
        let answer = answer_to(&request, 7, |_| {});
        deliver(&socket, &answer);
        deliver(&socket, &answer);
        assert_eq!(rx.try_recv().unwrap(), answer);
        // Answered but not yet done: a new query must not be given ID 7.
        assert!(socket.waiting.lock().unwrap().contains_key(&7));
        drop(done);
        assert!(socket.waiting.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn asks_again_when_no_answer_comes() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream = UdpUpstream::new(server.local_addr().unwrap(), Duration::from_secs(2));
        let packet = client_query("lossy.example.");
        let query = wire::Query::parse(&packet).unwrap();
        let serve = async {
            let mut buf = [0u8; 512];
            let _lost = server.recv_from(&mut buf).await.unwrap();
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            let answer = answer_to(&buf[..len], id, |_| {});
            server.send_to(&answer, from).await.unwrap();
        };
        let (got, ()) = tokio::join!(
            upstream.exchange(&packet, &query, Duration::from_millis(100)),
            serve
        );
        assert!(got.is_ok());
    }

    #[tokio::test]
    async fn source_ports_change_as_sockets_are_used_up() {
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let upstream = UdpUpstream::new(server.local_addr().unwrap(), Duration::from_secs(2));
        let ports = Arc::new(Mutex::new(HashSet::new()));
        let echo = {
            let (server, ports) = (server.clone(), ports.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    let (len, from) = server.recv_from(&mut buf).await.unwrap();
                    ports.lock().unwrap().insert(from.port());
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    let answer = answer_to(&buf[..len], id, |_| {});
                    server.send_to(&answer, from).await.unwrap();
                }
            })
        };
        let packet = client_query("many.example.");
        let query = wire::Query::parse(&packet).unwrap();
        let rounds = 3 * SOCKETS * QUERIES_PER_SOCKET;
        for _ in 0..rounds {
            let got = upstream.exchange(&packet, &query, Duration::from_secs(1));
            got.await.unwrap();
        }
        echo.abort();
        // Replaced sockets with nothing owed close at once (not after the
        // grace period): only the current ones stay open.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let open = upstream.open.load(Ordering::Relaxed);
        assert!(open <= SOCKETS, "{open} sockets open after rotating");
        let ports = ports.lock().unwrap().len();
        assert!(
            ports >= 3 * SOCKETS,
            "{rounds} queries went out from only {ports} ports"
        );
    }
}
