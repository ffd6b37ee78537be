//! The UDP loops. Each socket gets one receive loop; each datagram is handled on the
//! blocking pool (the [`Backend`] may wait on the disk) and answered from there.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tracing::{Instrument, error, info, info_span, warn};

use super::handler::{ErrorChain, Handler, Listener};
use super::stats::Stats;
use super::{Backend, Error, Result};

/// The largest RADIUS packet (RFC 2865 §3); a longer datagram is cut here and then
/// refused by the codec if its Length says more.
const MAX_DATAGRAM: usize = 4096;

/// Tuning of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long an answer stays in the reply cache. NASes retransmit for a few
    /// seconds to tens of seconds; 30 s covers common defaults (MikroTik 3 × 3 s,
    /// accel-ppp 3 × 3 s) with room to spare.
    pub reply_cache_ttl: Duration,
    /// The most answers the reply cache holds; the oldest go first.
    pub reply_cache_capacity: usize,
    /// The most datagrams handled at once. When reached, the loops stop reading and
    /// let the kernel's socket buffer absorb the burst, instead of queueing without
    /// bound on the blocking pool.
    pub max_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            reply_cache_ttl: Duration::from_secs(30),
            reply_cache_capacity: 16_384,
            max_in_flight: 64,
        }
    }
}

/// The RADIUS server of one site.
///
/// Runs until a socket fails or the future returned by [`Server::run`] or
/// [`Server::serve`] is dropped (cancelled); requests already being handled then
/// finish and are still answered.
#[derive(Debug, Clone)]
pub struct Server {
    handler: Arc<Handler>,
    in_flight: Arc<Semaphore>,
}

impl Server {
    /// A server answering from `backend`.
    pub fn new(backend: Arc<dyn Backend>, config: Config) -> Self {
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
        Self {
            handler: Arc::new(Handler::new(backend, &config)),
            in_flight,
        }
    }

    /// The counters.
    pub fn stats(&self) -> Arc<Stats> {
        self.handler.stats().clone()
    }

    /// Serves the standard split: Access-Requests on `auth` (1812-style) and
    /// Accounting-Requests on `acct` (1813-style). Returns only on a socket error.
    pub async fn run(&self, auth: UdpSocket, acct: UdpSocket) -> Result<()> {
        tokio::try_join!(
            self.serve(auth, Listener::Auth),
            self.serve(acct, Listener::Acct)
        )?;
        Ok(())
    }

    /// Serves one socket, answering what `listener` says it is for. Returns only on a
    /// socket error.
    pub async fn serve(&self, socket: UdpSocket, listener: Listener) -> Result<()> {
        let local = socket.local_addr().map_err(|source| Error::Io {
            op: "local_addr",
            source,
        })?;
        let span = info_span!("radius_server", %local, ?listener);
        self.receive_loop(Arc::new(socket), listener)
            .instrument(span)
            .await
    }

    async fn receive_loop(&self, socket: Arc<UdpSocket>, listener: Listener) -> Result<()> {
        info!("RADIUS listening");
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            // Wait for room before reading, so a burst waits in the socket buffer.
            let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
                unreachable!("the semaphore is never closed")
            };
            let (len, src) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                // ICMP errors from earlier sends can surface on the next receive on
                // some platforms; they say nothing about this socket's health.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    warn!(error = %e, "ignoring ICMP error reported on receive");
                    continue;
                }
                Err(source) => return Err(Error::Io { op: "recv", source }),
            };
            let datagram = buf[..len].to_vec();
            let handler = self.handler.clone();
            let socket = socket.clone();
            tokio::spawn(async move {
                let stats = handler.stats().clone();
                let handled =
                    tokio::task::spawn_blocking(move || handler.handle(listener, src, &datagram))
                        .await;
                match handled {
                    Ok(Some(reply)) => {
                        if let Err(e) = socket.send_to(&reply, src).await {
                            let e = Error::Io {
                                op: "send",
                                source: e,
                            };
                            warn!(%src, error = %ErrorChain(&e), "reply not sent");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => error!(%src, error = %e, "RADIUS handler failed"),
                }
                stats.mark_handled();
                drop(permit);
            });
        }
    }
}
