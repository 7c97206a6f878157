//! Many datagrams per system call: `recvmmsg` takes in up to [`BATCH`]
//! queries that are waiting, `sendmmsg` sends their answers back together.
//! Under load that saves about a tenth of the kernel's cost per query;
//! when queries trickle in, a batch is simply one query.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

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
    pub fn try_receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        socket.try_io(Interest::READABLE, || self.recvmmsg(socket.as_raw_fd()))
    }

    /// Waits for datagrams and takes in those waiting, up to [`BATCH`].
    /// Returns how many; `datagram(i)` for `i` below that is each one.
    pub async fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        loop {
            socket.readable().await?;
            match socket.try_io(Interest::READABLE, || self.recvmmsg(socket.as_raw_fd())) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    fn recvmmsg(&mut self, fd: libc::c_int) -> io::Result<usize> {
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
                libc::MSG_DONTWAIT,
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
    pub async fn send(&mut self, socket: &UdpSocket) {
        let mut sent = 0;
        while sent < self.ready.len() {
            let result = match socket.try_io(Interest::WRITABLE, || self.sendmmsg(socket, sent)) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if socket.writable().await.is_err() {
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

    fn sendmmsg(&mut self, socket: &UdpSocket, from: usize) -> io::Result<usize> {
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
