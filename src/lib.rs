//! wsloop: an RFC 6455 WebSocket server on a hand-written, single-threaded
//! mio event loop.
//!
//! - [`proto`]: the sans-IO protocol core (handshake, frames, UTF-8,
//!   per-connection state machine, limits, typed errors).
//! - [`server`]: the mio driver (listener, slab of connections, timers,
//!   backpressure, graceful shutdown).
//! - [`handler`]: the application API, called synchronously with whole
//!   messages; [`echo`] is the simplest application and [`notebook`] the
//!   default one (Zeppelin's op protocol with embedded interpreters).

pub mod config;
pub mod echo;
pub mod handler;
pub mod notebook;
pub mod proto;
pub mod server;

pub use echo::EchoHandler;
pub use handler::{Accept, ConnectionId, Handler};
pub use proto::{CloseCode, HttpRequest, HttpResponse, Limits, Message};
pub use server::{Context, Notifier, Server, ServerConfig, ShutdownHandle};
