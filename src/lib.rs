//! wsloop: an RFC 6455 WebSocket server on a hand-written, single-threaded
//! mio event loop.
//!
//! - [`proto`]: the sans-IO protocol core (handshake, frames, UTF-8,
//!   per-connection state machine, limits, typed errors).
//! - [`server`]: the mio driver (listener, slab of connections, timers,
//!   backpressure, graceful shutdown).
//! - [`handler`]: the application API, called synchronously with whole
//!   messages; [`echo`] is the simplest application.

pub mod proto;
