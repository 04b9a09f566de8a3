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
            busy_poll: Duration::from_micros(50),
            handle_signals: false,
            deflate: None,
            tls: None,
        }
    }
}

impl ServerConfig {
    /// Sockets kept at most: open WebSockets plus headroom for handshakes,
    /// plain HTTP requests and `503` answers. Connections accepted beyond
    /// it are closed at once.
    pub fn max_sockets(&self) -> usize {
        self.max_connections + self.max_connections / 8 + 64
    }
}
