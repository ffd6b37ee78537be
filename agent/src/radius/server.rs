//! The UDP loops. Each socket is answered by a few dedicated OS threads, each of which
//! receives what the socket holds (up to [`BATCH`] datagrams, `recvmmsg`), handles
//! them with [`Handler::handle_batch`] and sends the answers (`sendmmsg`), with
//! blocking calls. The accounting records of a batch are handed to the store together
//! and group-committed with those of the other threads (`store::group`): the thread
//! waits for that one commit, then sends every answer of its batch, none for a record
//! that is not durable.
//!
//! Why threads and not tasks: the handler is synchronous (the [`Backend`] may wait on
//! the disk for accounting), so an async loop had to hop every datagram to the blocking
//! pool and back, two context switches and a task allocation per request; measured on
//! one core, that hopping cost more than the RADIUS work itself. A thread that blocks
//! in `recvmmsg` and keeps going while the socket has datagrams queued switches only
//! when the socket runs dry.
//!
//! Why several threads per socket: while one waits on a journal commit (an accounting
//! record, a journaled reject), the others keep answering. Each thread holds one batch
//! at a time, so threads × [`BATCH`] bounds the datagrams of a socket in progress; a
//! burst beyond that waits in the kernel's socket buffer.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::handler::{Handler, Listener};
use super::stats::Stats;
use super::{Backend, Error, Result};
use crate::ErrorChain;

/// The largest RADIUS packet (RFC 2865 §3); a longer datagram is cut here and then
/// refused by the codec if its Length says more.
const MAX_DATAGRAM: usize = 4096;

/// The most datagrams one thread takes from its socket at once (`recvmmsg`) and
/// answers in one call (`sendmmsg`). Under load, one system call per batch instead of
/// two per datagram; idle, a batch is the one datagram that woke the thread.
pub const BATCH: usize = 16;

/// How often an idle thread looks up from `recvmmsg` to see whether the server was
/// stopped. Short enough that a dropped server frees its port promptly, long enough
/// that idle threads cost nothing measurable.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Tuning of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long an answer stays in the reply cache. NASes retransmit for a few
    /// seconds to tens of seconds; 30 s covers common defaults (MikroTik 3 × 3 s,
    /// accel-ppp 3 × 3 s) with room to spare.
    pub reply_cache_ttl: Duration,
    /// The most answers the reply cache holds; the oldest go first.
    pub reply_cache_capacity: usize,
    /// Threads answering each socket; each holds at most [`BATCH`] (16) datagrams,
    /// so this also bounds the datagrams of one socket in progress (64 by default).
    /// More let requests proceed while others wait on the journal (accounting
    /// records, journaled rejects); a burst beyond them waits in the kernel's socket
    /// buffer instead of queueing in memory.
    pub threads_per_socket: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            reply_cache_ttl: Duration::from_secs(30),
            reply_cache_capacity: 16_384,
            threads_per_socket: 4,
        }
    }
}

/// The RADIUS server of one site.
///
/// Runs until a socket fails or the future returned by [`Server::run`] or
/// [`Server::serve`] is dropped (cancelled); its threads then finish the batch in
/// hand, answer it, and stop within 200 ms.
#[derive(Debug, Clone)]
pub struct Server {
    handler: Arc<Handler>,
    threads_per_socket: usize,
    /// Threads serving a socket now, across every [`Server::serve`] of this server.
    running: Arc<AtomicUsize>,
}

impl Server {
    /// A server answering from `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: Config) -> Self {
        Self {
            handler: Arc::new(Handler::new(backend, &config)),
            threads_per_socket: config.threads_per_socket.max(1),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Threads still serving a socket. After the serving future is dropped this falls
    /// to 0 within 200 ms, and then the sockets are closed: a caller that must know its
    /// ports are free (a clean shutdown, a test) waits for it.
    pub fn threads_running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.handler.stats().clone()
    }

    /// Serves the standard split: Access-Requests on `auth` (1812-style) and
    /// Accounting-Requests on `acct` (1813-style). Returns only on a socket error.
    pub async fn run(
        &self,
        auth: tokio::net::UdpSocket,
        acct: tokio::net::UdpSocket,
    ) -> Result<()> {
        tokio::try_join!(
            self.serve(auth, Listener::Auth),
            self.serve(acct, Listener::Acct)
        )?;
        Ok(())
    }

    /// Serves one socket, answering what `listener` says it is for. Returns only on a
    /// socket error.
    pub async fn serve(&self, socket: tokio::net::UdpSocket, listener: Listener) -> Result<()> {
        let io = |op| move |source| Error::Io { op, source };
        let socket = socket.into_std().map_err(io("into_std"))?;
        let local = socket.local_addr().map_err(io("local_addr"))?;
        socket
            .set_nonblocking(false)
            .map_err(io("set_nonblocking"))?;
        socket
            .set_read_timeout(Some(STOP_POLL))
            .map_err(io("set_read_timeout"))?;
        let socket = Arc::new(socket);
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (failed, mut failure) = mpsc::unbounded_channel();
        for n in 0..self.threads_per_socket {
            let worker = Worker {
                handler: self.handler.clone(),
                socket: socket.clone(),
                listener,
                stop: stop.0.clone(),
            };
            let failed = failed.clone();
            let running = Running::start(&self.running);
            std::thread::Builder::new()
                .name(format!("radius-{local}-{n}"))
                .spawn(move || {
                    let _running = running;
                    if let Err(e) = worker.run() {
                        let _ = failed.send(e);
                    }
                })
                .map_err(io("spawn thread"))?;
        }
        drop(failed);
        info!(%local, ?listener, threads = self.threads_per_socket, "RADIUS listening");
        match failure.recv().await {
            Some(e) => Err(e),
            // Threads stop without an error only once told to, which is on drop; a
            // thread that died otherwise (a panic outside the handler) ends up here.
            None => Err(Error::Io {
                op: "serve",
                source: std::io::Error::other("every thread serving the socket stopped"),
            }),
        }
    }
}

/// Tells the socket's threads to stop when the serving future is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Counts one serving thread for [`Server::threads_running`] until it ends, however
/// it ends.
struct Running(Arc<AtomicUsize>);

impl Running {
    fn start(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Running(count.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One thread's share of a socket.
struct Worker {
    handler: Arc<Handler>,
    socket: Arc<UdpSocket>,
    listener: Listener,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) -> Result<()> {
        let fd = self.socket.as_raw_fd();
        let mut buffers = vec![[0u8; MAX_DATAGRAM]; BATCH];
        let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut received: Vec<(usize, Option<SocketAddr>)> = Vec::with_capacity(BATCH);
        let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
        // Kept across batches: at 128 octets an address, a fresh vector per batch is a
        // large allocation, which made glibc consolidate its free lists every time.
        let mut addresses: Vec<Option<SockaddrStorage>> = Vec::with_capacity(BATCH);
        while !self.stop.load(Ordering::Relaxed) {
            received.clear();
            {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                    .iter_mut()
                    .map(|b| [IoSliceMut::new(b.as_mut_slice())])
                    .collect();
                // Waits for one datagram, then takes whatever else is queued already.
                let results = match recvmmsg(
                    fd,
                    &mut receive_headers,
                    slices.iter_mut(),
                    MsgFlags::MSG_WAITFORONE,
                    None,
                ) {
                    Ok(results) => results,
                    Err(Errno::EAGAIN | Errno::EINTR) => continue,
                    // ICMP errors from earlier sends can surface on the next receive on
                    // some platforms; they say nothing about this socket's health.
                    Err(e @ (Errno::ECONNREFUSED | Errno::ECONNRESET)) => {
                        warn!(error = %e, "ignoring ICMP error reported on receive");
                        continue;
                    }
                    Err(e) => {
                        return Err(Error::Io {
                            op: "recv",
                            source: e.into(),
                        });
                    }
                };
                received.extend(results.map(|r| (r.bytes, r.address.and_then(socket_addr))));
            }
            // A datagram without an IP source cannot come from a NAS or be answered.
            let datagrams: Vec<(SocketAddr, &[u8])> = buffers
                .iter()
                .zip(&received)
                .filter_map(|(buffer, &(len, src))| Some((src?, &buffer[..len.min(MAX_DATAGRAM)])))
                .collect();
            for (reply, &(src, _)) in self.answer(&datagrams).into_iter().zip(&datagrams) {
                if let Some(reply) = reply {
                    replies.push((reply, src));
                }
            }
            drop(datagrams);
            self.send(fd, &mut send_headers, &replies, &mut addresses);
            replies.clear();
            for _ in &received {
                self.handler.stats().mark_handled();
            }
        }
        Ok(())
    }

    /// The replies to a batch, one per datagram; the accounting records among them are
    /// committed together and answered only once durable.
    fn answer(&self, datagrams: &[(SocketAddr, &[u8])]) -> Vec<Option<Vec<u8>>> {
        let handled = catch_unwind(AssertUnwindSafe(|| {
            self.handler.handle_batch(self.listener, datagrams)
        }));
        handled.unwrap_or_else(|_| {
            // `handle` must not panic on any input; should it, the batch is lost (the
            // NAS retransmits) but the socket keeps being served.
            error!(datagrams = datagrams.len(), "RADIUS handler panicked");
            vec![None; datagrams.len()]
        })
    }

    /// Sends `replies` in as few calls as the kernel allows; one that cannot be sent is
    /// logged and skipped (the NAS retransmits and gets it from the reply cache).
    fn send(
        &self,
        fd: RawFd,
        headers: &mut MultiHeaders<SockaddrStorage>,
        replies: &[(Vec<u8>, SocketAddr)],
        addresses: &mut Vec<Option<SockaddrStorage>>,
    ) {
        let mut next = 0;
        while next < replies.len() {
            let pending = &replies[next..];
            let slices: Vec<[IoSlice<'_>; 1]> = pending
                .iter()
                .map(|(reply, _)| [IoSlice::new(reply)])
                .collect();
            addresses.clear();
            addresses.extend(
                pending
                    .iter()
                    .map(|(_, to)| Some(SockaddrStorage::from(*to))),
            );
            let no_control: [ControlMessage<'_>; 0] = [];
            match sendmmsg(
                fd,
                headers,
                &slices,
                &*addresses,
                no_control,
                MsgFlags::empty(),
            ) {
                Ok(sent) => next += sent.count().max(1),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    let e = Error::Io {
                        op: "send",
                        source: e.into(),
                    };
                    warn!(src = %pending[0].1, error = %ErrorChain(&e), "reply not sent");
                    next += 1;
                }
            }
        }
    }
}

/// The source of a received datagram as the standard library spells it.
fn socket_addr(address: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        Some(SocketAddr::V4((*v4).into()))
    } else {
        address
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::V6((*v6).into()))
    }
}
