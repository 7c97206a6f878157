//! Many datagrams per system call: `recvmmsg` takes in up to [`BATCH`]
//! queries that are waiting, `sendmmsg` sends their answers back together.
//! Under load that saves about a tenth of the kernel's cost per query;
//! when queries trickle in, a batch is simply one query.
//!
//! The socket itself is left blocking, and every call here but
//! [`Batch::wait_and_receive`] passes `MSG_DONTWAIT`: that one sleeps in
//! `recvmmsg`, so a query arriving at an idle thread is read by the call it
//! wakes, without the runtime's `epoll_wait`, its dispatch and a second call.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A UDP socket registered with the runtime for reading only. A socket
/// also registered for writing (as `tokio::net::UdpSocket` always is) is
/// woken after every send, when the kernel frees the datagram: with queries
/// trickling in that is a second `epoll_wait` for each one. Writability is
/// asked for only in the rare case the send buffer is full.
pub type UdpListener = AsyncFd<std::net::UdpSocket>;

/// Registers `socket` for reading only. `idle_wake`: the longest
/// [`Batch::wait_and_receive`] sleeps without a datagram.
pub fn listen(socket: std::net::UdpSocket, idle_wake: Duration) -> io::Result<UdpListener> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(idle_wake))?;
    register(socket, Interest::READABLE)
}

fn register(socket: std::net::UdpSocket, interest: Interest) -> io::Result<UdpListener> {
    // SAFETY: the socket owns its descriptor, and the AsyncFd owns the socket.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

/// Sends one datagram without waiting, unless the send buffer is full.
///
/// The waiting is boxed: this future is part of every forwarded query's
/// task, and inline it (an address and a registration) made that task over
/// a kilobyte, a size glibc's allocator serves only after tidying its free
/// lists, on every cache miss.
pub async fn send_to(socket: &UdpListener, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    match try_send_to(socket, datagram, to) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Box::pin(send_to_when_writable(socket, datagram, to)).await
        }
        sent => sent,
    }
}

fn try_send_to(socket: &UdpListener, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
    let to = socket2::SockAddr::from(to);
    socket2::SockRef::from(socket.get_ref()).send_to_with_flags(datagram, &to, libc::MSG_DONTWAIT)
}

async fn send_to_when_writable(
    socket: &UdpListener,
    datagram: &[u8],
    to: SocketAddr,
) -> io::Result<usize> {
    loop {
        until_writable(socket).await?;
        match try_send_to(socket, datagram, to) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            sent => return sent,
        }
    }
}

/// Waits until the kernel has room for a datagram, through a duplicate
/// descriptor registered for writing only for as long as the wait lasts.
async fn until_writable(socket: &UdpListener) -> io::Result<()> {
    let writer = register(socket.get_ref().try_clone()?, Interest::WRITABLE)?;
    writer.writable().await.map(drop)
}

/// Datagrams taken in per system call.
pub const BATCH: usize = 32;
/// A query larger than this is cut short (and then malformed): real ones
/// are a few hundred bytes at most.
const QUERY_BUFFER: usize = 4096;

/// Buffers and message headers for one socket's batches, reused.
pub struct Batch {
    buffers: Box<[[u8; QUERY_BUFFER]]>,
    lengths: [usize; BATCH],
    addresses: Box<[libc::sockaddr_storage]>,
    address_lengths: [libc::socklen_t; BATCH],
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// One answer per received datagram, by the same index.
    pub answers: Vec<Vec<u8>>,
    /// Indexes of the datagrams with an answer to send.
    ready: Vec<usize>,
}

// The raw pointers in the headers only ever point into this struct's own
// heap buffers, and are rebuilt before each system call.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new() -> Batch {
        Batch {
            buffers: vec![[0u8; QUERY_BUFFER]; BATCH].into_boxed_slice(),
            lengths: [0; BATCH],
            // SAFETY: all-zero bytes are a valid value of these C structs.
            addresses: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            address_lengths: [0; BATCH],
            iovecs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            headers: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            answers: (0..BATCH).map(|_| Vec::with_capacity(1232)).collect(),
            ready: Vec::with_capacity(BATCH),
        }
    }

    /// Takes in the datagrams waiting, up to [`BATCH`], without waiting:
    /// `WouldBlock` when there are none.
    pub fn try_receive(&mut self, socket: &UdpListener) -> io::Result<usize> {
        socket.try_io(Interest::READABLE, |socket| {
            self.recvmmsg(socket.as_raw_fd(), libc::MSG_DONTWAIT)
        })
    }

    /// Waits for datagrams and takes in those waiting, up to [`BATCH`].
    /// Returns how many; `datagram(i)` for `i` below that is each one.
    pub async fn receive(&mut self, socket: &UdpListener) -> io::Result<usize> {
        loop {
            let mut ready = socket.readable().await?;
            match ready.try_io(|socket| self.recvmmsg(socket.as_raw_fd(), libc::MSG_DONTWAIT)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sleeps until a datagram comes, then takes in those waiting, up to
    /// [`BATCH`]. Blocks the thread, and with it the runtime: only for a
    /// thread with nothing else to do. `WouldBlock` after `listen`'s
    /// `idle_wake` without a datagram.
    pub fn wait_and_receive(&mut self, socket: &UdpListener) -> io::Result<usize> {
        self.recvmmsg(socket.as_raw_fd(), libc::MSG_WAITFORONE)
    }

    fn recvmmsg(&mut self, fd: libc::c_int, flags: libc::c_int) -> io::Result<usize> {
        for i in 0..BATCH {
            self.iovecs[i] = libc::iovec {
                iov_base: self.buffers[i].as_mut_ptr().cast(),
                iov_len: QUERY_BUFFER,
            };
            let header = &mut self.headers[i];
            // SAFETY: all-zero is a valid msghdr (no name, no control data).
            header.msg_hdr = unsafe { zeroed() };
            header.msg_hdr.msg_name = (&raw mut self.addresses[i]).cast();
            header.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = &raw mut self.iovecs[i];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_len = 0;
        }
        // SAFETY: every header points at live buffers of the stated sizes.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            return Err(io::Error::last_os_error());
        }
        let received = received as usize;
        for i in 0..received {
            self.lengths[i] = self.headers[i].msg_len as usize;
            self.address_lengths[i] = self.headers[i].msg_hdr.msg_namelen;
        }
        Ok(received)
    }

    /// Datagram `i` of the last batch, its sender, and room for its answer.
    pub fn datagram(&mut self, i: usize) -> (&[u8], Option<SocketAddr>, &mut Vec<u8>) {
        let source = socket_addr(&self.addresses[i], self.address_lengths[i]);
        (
            &self.buffers[i][..self.lengths[i]],
            source,
            &mut self.answers[i],
        )
    }

    /// Marks datagram `i`'s answer (in `answers[i]`) to be sent.
    pub fn answer(&mut self, i: usize) {
        self.ready.push(i);
    }

    /// Sends every marked answer, to the address its query came from. An
    /// answer the kernel refuses is skipped, not retried.
    pub async fn send(&mut self, socket: &UdpListener) {
        let mut sent = 0;
        while sent < self.ready.len() {
            let result = match self.sendmmsg(socket.get_ref(), sent) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if until_writable(socket).await.is_err() {
                        break;
                    }
                    continue;
                }
                result => result,
            };
            match result {
                Ok(n) => sent += n.max(1),
                Err(e) => {
                    tracing::debug!(error = %e, "udp send");
                    sent += 1;
                }
            }
        }
        self.ready.clear();
    }

    fn sendmmsg(&mut self, socket: &std::net::UdpSocket, from: usize) -> io::Result<usize> {
        let count = self.ready.len() - from;
        for (slot, &i) in self.ready[from..].iter().enumerate() {
            self.iovecs[slot] = libc::iovec {
                iov_base: self.answers[i].as_mut_ptr().cast(),
                iov_len: self.answers[i].len(),
            };
            let header = &mut self.headers[slot];
            // SAFETY: as in `recvmmsg`.
            header.msg_hdr = unsafe { zeroed() };
            header.msg_hdr.msg_name = (&raw mut self.addresses[i]).cast();
            header.msg_hdr.msg_namelen = self.address_lengths[i];
            header.msg_hdr.msg_iov = &raw mut self.iovecs[slot];
            header.msg_hdr.msg_iovlen = 1;
            header.msg_len = 0;
        }
        // SAFETY: the headers point at the answers and addresses, all live.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }
}

/// The sender of a datagram, from the kernel's address structure.
fn socket_addr(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match storage.ss_family as libc::c_int {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(v4.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            let port = u16::from_be(v6.sin6_port);
            Some(SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id).into())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE_WAKE: Duration = Duration::from_millis(100);

    /// The socket is blocking; only `wait_and_receive` may wait on it.
    #[tokio::test]
    async fn only_the_idle_wait_sleeps_in_the_kernel() {
        let listener =
            listen(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), IDLE_WAKE).unwrap();
        let address = listener.get_ref().local_addr().unwrap();
        let mut batch = Batch::new();

        let started = std::time::Instant::now();
        let nothing = batch.try_receive(&listener).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        assert!(started.elapsed() < IDLE_WAKE, "try_receive waited");

        let nothing = batch.wait_and_receive(&listener).unwrap_err();
        assert_eq!(
            nothing.kind(),
            io::ErrorKind::WouldBlock,
            "woken by its timeout"
        );
        assert!(started.elapsed() >= IDLE_WAKE);

        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for query in [&b"first"[..], b"second"] {
            client.send_to(query, address).unwrap();
        }
        // Both are waiting (loopback delivers within the send): one call
        // takes them both in.
        assert_eq!(batch.wait_and_receive(&listener).unwrap(), 2);
        assert_eq!(batch.datagram(0).0, b"first");
        assert_eq!(batch.datagram(1).0, b"second");

        // Sent from another thread while this one sleeps in the kernel.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            client.send_to(b"third", address).unwrap();
        });
        assert_eq!(batch.wait_and_receive(&listener).unwrap(), 1);
        assert_eq!(batch.datagram(0).0, b"third");
        sender.join().unwrap();
    }

    /// Registered for writing too, every answer sent would wake the thread
    /// again: the listener must never report itself writable.
    #[tokio::test]
    async fn the_listener_is_registered_for_reading_only() {
        let listener =
            listen(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), IDLE_WAKE).unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = client.local_addr().unwrap();
        send_to(&listener, b"answer", to).await.unwrap();
        let writable = tokio::time::timeout(Duration::from_millis(200), listener.writable()).await;
        assert!(writable.is_err(), "the listener reported itself writable");
    }

    /// The wait for room registers a second descriptor of the socket for
    /// writing; the reading registration must come through it untouched.
    #[tokio::test]
    async fn waiting_for_room_to_send_leaves_the_socket_listening() {
        let listener =
            listen(std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), IDLE_WAKE).unwrap();
        let address = listener.get_ref().local_addr().unwrap();
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let within = Duration::from_secs(5);

        tokio::time::timeout(within, until_writable(&listener))
            .await
            .expect("a socket with an empty send buffer has room")
            .unwrap();

        let mut batch = Batch::new();
        for query in [&b"first"[..], b"second"] {
            client.send_to(query, address).await.unwrap();
            let received = tokio::time::timeout(within, batch.receive(&listener))
                .await
                .expect("the query is read after the wait for room")
                .unwrap();
            assert_eq!(received, 1);
            let (packet, from, _) = batch.datagram(0);
            assert_eq!(packet, query);
            send_to(&listener, b"answer", from.unwrap()).await.unwrap();
            let mut answer = [0u8; 16];
            let (len, _) = tokio::time::timeout(within, client.recv_from(&mut answer))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&answer[..len], b"answer");
            until_writable(&listener).await.unwrap();
        }
    }
}
