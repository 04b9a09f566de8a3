//! Settings of one server instance.

use std::net::SocketAddr;
use std::time::Duration;

use super::tls::TlsConfig;
use crate::proto::Limits;
use crate::proto::extensions::DeflateConfig;

/// Where to listen and how much to allow.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to bind. Port 0 picks a free port (see `Server::local_addr`).
    pub listen: SocketAddr,
    /// Per-connection limits.
    pub limits: Limits,
    /// Open WebSocket connections above which new upgrades get `503`.
    /// Default 10,000.
    pub max_connections: usize,
    /// Bytes all connections together may hold in their buffers: output
    /// queued and not yet written, input received and not yet processed,
    /// fragments of messages not yet complete. Growth past it closes the
    /// connections holding the most (1008 for output, 1009 for input)
    /// until the total is an eighth under it. A fixed size rather than a
    /// share of the machine's memory, so it does not change with the host
    /// (or a container's view of it). Default 512 MiB.
    pub max_buffered_total: usize,
    /// Sockets one client address may hold at once, in any state; more
    /// are closed at accept. An address is an IPv4 address or an IPv6 /64
    /// (a site's usual allocation). Default 256, more than an office
    /// behind one NAT address opens.
    pub max_connections_per_address: usize,
    /// Sockets one client address may hold that have not become
    /// WebSockets: handshakes in progress, and plain HTTP requests being
    /// answered. More are closed at accept, so slow handshakes from one
    /// address cannot take the sockets others need. Default 64.
    pub max_handshakes_per_address: usize,
    /// After activity, how long the loop polls without sleeping before it
    /// blocks: trades a little CPU for the wake-up latency of a sleeping
    /// thread. Zero disables it. Default 50 µs.
    pub busy_poll: Duration,
    /// Stop gracefully on SIGINT/SIGTERM. On for the binary; tests and
    /// embedders use a `ShutdownHandle` instead.
    pub handle_signals: bool,
    /// permessage-deflate (RFC 7692): `Some` offers it to clients that ask
    /// for it, with these parameters; `None` (the default) never
    /// compresses, so no connection pays for it.
    pub deflate: Option<DeflateConfig>,
    /// TLS: `Some` makes the listener speak only TLS (wss:// and
    /// https://), see [`super::load_tls_config`]. Default `None`.
    pub tls: Option<TlsConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            limits: Limits::default(),
            max_connections: 10_000,
            max_buffered_total: 512 * 1024 * 1024,
            max_connections_per_address: 256,
            max_handshakes_per_address: 64,
            busy_poll: Duration::from_micros(50),
            handle_signals: false,
            deflate: None,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// Sockets kept at most: open WebSockets plus headroom for handshakes,
    /// plain HTTP requests and `503` answers. A connection accepted at it
    /// takes the socket of the oldest handshake still in progress, if that
    /// began a second or more ago (so a full server still answers
    /// `/healthz` and lets new clients in while slow handshakes hold the
    /// sockets); otherwise it is closed at once.
    pub fn max_sockets(&self) -> usize {
        self.max_connections + self.max_connections / 8 + 64
    }
}
