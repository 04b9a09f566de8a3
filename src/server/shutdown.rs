//! Stopping a running server from another thread.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::Waker;

/// Asks a running server to shut down gracefully: stop accepting, send
/// close 1001 to every open connection, wait up to the close timeout, and
/// return from `Server::run`. Cloneable and usable from any thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    pub(crate) requested: Arc<AtomicBool>,
    pub(crate) waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Requests the shutdown; returns at once.
    pub fn shutdown(&self) -> io::Result<()> {
        self.requested.store(true, Ordering::SeqCst);
        self.waker.wake()
    }

    pub(crate) fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}
