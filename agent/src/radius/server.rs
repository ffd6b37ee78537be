//! The UDP loops. Each socket is answered by a few dedicated OS threads, each of which
//! receives a datagram, handles it whole with [`Handler::handle`] and sends the answer,
//! with blocking calls.
//!
//! Why threads and not tasks: the handler is synchronous (the [`Backend`] may wait on
//! the disk for accounting), so an async loop had to hop every datagram to the blocking
//! pool and back, two context switches and a task allocation per request; measured on
//! one core, that hopping cost more than the RADIUS work itself. A thread that blocks
//! in `recv_from` and keeps going while the socket has datagrams queued switches only
//! when the socket runs dry.
//!
//! Why several threads per socket: while one waits on a journal commit (an accounting
//! record, a journaled reject), the others keep answering. Each thread holds one
//! datagram at a time, so the threads per socket are also the bound on datagrams in
//! progress; a burst beyond them waits in the kernel's socket buffer.

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::handler::{ErrorChain, Handler, Listener};
use super::stats::Stats;
use super::{Backend, Error, Result};

/// The largest RADIUS packet (RFC 2865 §3); a longer datagram is cut here and then
/// refused by the codec if its Length says more.
const MAX_DATAGRAM: usize = 4096;

/// How often an idle thread looks up from `recv_from` to see whether the server was
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
    /// Threads answering each socket, which is also the most datagrams of one socket
    /// in progress at once. More let requests proceed while others wait on the
    /// journal (accounting records, journaled rejects); a burst beyond them waits in
    /// the kernel's socket buffer instead of queueing in memory.
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
/// [`Server::serve`] is dropped (cancelled); its threads then finish the datagram in
/// hand, answer it, and stop within [`STOP_POLL`].
#[derive(Debug, Clone)]
pub struct Server {
    handler: Arc<Handler>,
    threads_per_socket: usize,
}

impl Server {
    /// A server answering from `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: Config) -> Self {
        Self {
            handler: Arc::new(Handler::new(backend, &config)),
            threads_per_socket: config.threads_per_socket.max(1),
        }
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
            std::thread::Builder::new()
                .name(format!("radius-{local}-{n}"))
                .spawn(move || {
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

/// One thread's share of a socket.
struct Worker {
    handler: Arc<Handler>,
    socket: Arc<UdpSocket>,
    listener: Listener,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(self) -> Result<()> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.stop.load(Ordering::Relaxed) {
            let (len, src) = match self.socket.recv_from(&mut buf) {
                Ok(received) => received,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends can surface on the next receive on
                // some platforms; they say nothing about this socket's health.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                    ) =>
                {
                    warn!(error = %e, "ignoring ICMP error reported on receive");
                    continue;
                }
                Err(source) => return Err(Error::Io { op: "recv", source }),
            };
            self.answer(&buf[..len], src);
        }
        Ok(())
    }

    fn answer(&self, datagram: &[u8], src: SocketAddr) {
        let handled = catch_unwind(AssertUnwindSafe(|| {
            self.handler.handle(self.listener, src, datagram)
        }));
        match handled {
            Ok(Some(reply)) => {
                if let Err(source) = self.socket.send_to(&reply, src) {
                    let e = Error::Io { op: "send", source };
                    warn!(%src, error = %ErrorChain(&e), "reply not sent");
                }
            }
            Ok(None) => {}
            // `handle` must not panic on any input; should it, the datagram is lost
            // (the NAS retransmits) but the socket keeps being served.
            Err(_) => error!(%src, "RADIUS handler panicked"),
        }
        self.handler.stats().mark_handled();
    }
}
