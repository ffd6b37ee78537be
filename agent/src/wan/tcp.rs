//! TCP connect probes: a SYN answered by a SYN-ACK is up; a refusal (RST) or silence
//! until the timeout is a failure. At most `concurrency` connects are in flight. Each
//! socket has SO_LINGER 0, so closing it sends an RST: no FIN handshake, and no
//! TIME_WAIT entry per probe piling up on the agent's box.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Connects to every address, `concurrency` at a time: the connect time of each that
/// accepted within `timeout`, `None` for the rest.
pub async fn probe_all(
    targets: &[SocketAddr],
    concurrency: usize,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut out = vec![None; targets.len()];
    let mut set = JoinSet::new();
    for (i, &addr) in targets.iter().enumerate() {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        set.spawn(async move {
            let rtt = probe(addr, timeout).await;
            drop(permit);
            (i, rtt)
        });
        // Take finished ones as we go, so the set holds only those in flight.
        while let Some(Ok((i, rtt))) = set.try_join_next() {
            out[i] = rtt;
        }
    }
    while let Some(done) = set.join_next().await {
        if let Ok((i, rtt)) = done {
            out[i] = rtt;
        }
    }
    out
}

/// One connect: its time to the SYN-ACK, or `None`.
pub async fn probe(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).ok()?;
    socket.set_linger(Some(Duration::ZERO)).ok()?;
    socket.set_nonblocking(true).ok()?;
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    let start = Instant::now();
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        // Dropped here: SO_LINGER 0 makes the close an RST.
        Ok(Ok(_stream)) => Some(start.elapsed()),
        _ => None,
    }
}
