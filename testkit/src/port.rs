//! A port that was free a moment ago. Only for peers that must be told a port before
//! they start (FreeRADIUS's config, an agent's `--listen` given to a NAS): whatever can
//! bind port 0 and report what it got should do that instead.

use std::net::{TcpListener, UdpSocket};

/// A TCP port on 127.0.0.1 that was free when this returned.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A UDP port on 127.0.0.1 that was free when this returned.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picked_port_can_be_bound() {
        TcpListener::bind(("127.0.0.1", free_tcp_port())).unwrap();
        UdpSocket::bind(("127.0.0.1", free_udp_port())).unwrap();
    }
}
