//! Reaching a running loop from other threads: stopping it, or waking the
//! application.

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

/// Wakes the event loop so it calls the handler's `on_notify`, from any
/// thread: how work done off the loop (e.g. an interpreter on a worker
/// thread) hands results back. Many notifications before the loop wakes
/// coalesce into one call.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub(crate) pending: Arc<AtomicBool>,
    pub(crate) waker: Arc<Waker>,
}

impl Notifier {
    /// Requests an `on_notify` call on the loop thread; returns at once.
    pub fn notify(&self) -> io::Result<()> {
        self.pending.store(true, Ordering::SeqCst);
        self.waker.wake()
    }

    pub(crate) fn take_pending(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }
}
