//! The application API: a [`Handler`] the event loop calls synchronously
//! with whole messages, and the types it exchanges with the server.

use std::fmt;

use crate::proto::{CloseCode, HttpRequest, HttpResponse, Message};
use crate::server::{Context, Notifier, SourceId};

/// Names one WebSocket connection for as long as it lives. A slot reused by
/// a later connection gets a new generation, so a stale id never reaches
/// the wrong peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.index, self.generation)
    }
}

/// How the application accepts an upgrade.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accept {
    /// The subprotocol to confirm. It must be one the client offered; any
    /// other value is dropped (and logged) rather than sent.
    pub protocol: Option<String>,
    /// Extra header fields for the `101` response (e.g. `Set-Cookie`).
    pub headers: Vec<(String, String)>,
}

impl Accept {
    /// Accepts and confirms the first protocol in `supported` (in the
    /// server's order of preference) that the client offered, if any.
    pub fn preferring(request: &HttpRequest<'_>, supported: &[&str]) -> Accept {
        let offered: Vec<&str> = crate::proto::handshake::offered_protocols(request).collect();
        let protocol = supported
            .iter()
            .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
            .map(|p| (*p).to_owned());
        Accept {
            protocol,
            headers: Vec::new(),
        }
    }
}

/// The application. The event loop calls it synchronously, on its one
/// thread; it never sees sockets, only whole messages and a [`Context`] to
/// send, broadcast and close with.
///
/// Every connection whose upgrade is accepted gets exactly one
/// [`Handler::on_open`] and, later, exactly one [`Handler::on_close`],
/// whatever way it ends.
pub trait Handler {
    /// Called once when the loop starts, with a [`Notifier`] that other
    /// threads can use to have [`Handler::on_notify`] called on the loop.
    fn on_start(&mut self, notifier: Notifier) {
        let _ = notifier;
    }

    /// The [`Notifier`] was used: collect whatever the other threads
    /// produced and send it.
    fn on_notify(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A file descriptor watched with [`Context::watch`] is ready: read
    /// (or write) it until `WouldBlock`, or stop early and ask for another
    /// call with [`Context::call_again`].
    fn on_source_ready(&mut self, ctx: &mut Context<'_>, source: SourceId) {
        let _ = (ctx, source);
    }

    /// The time asked for with [`Context::wake_at`] has come.
    fn on_alarm(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A request that is not a WebSocket upgrade. The response is sent and
    /// the connection closed. Default: `404 Not Found`.
    fn on_http(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        let _ = (ctx, request);
        HttpResponse::not_found()
    }

    /// A valid upgrade request: accept it (optionally choosing a
    /// subprotocol), or refuse it with a response such as `403`. Called
    /// with the raw request so path, `Origin`, cookies and query can be
    /// checked. Default: accept on any path, no subprotocol.
    fn on_upgrade(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Accept, HttpResponse> {
        let _ = (ctx, request);
        Ok(Accept::default())
    }

    /// The WebSocket is open (the `101` is queued). `request` is the
    /// upgrade request, for state the application keys on it.
    fn on_open(&mut self, ctx: &mut Context<'_>, id: ConnectionId, request: &HttpRequest<'_>) {
        let _ = (ctx, id, request);
    }

    /// A whole message arrived. It is borrowed from the receive buffer:
    /// copy what must outlive the call.
    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>);

    /// The connection ended: `code` is the peer's close code (1005 when its
    /// close frame had none), the code the server failed it with, or 1006
    /// when it went away without a closing handshake.
    fn on_close(&mut self, ctx: &mut Context<'_>, id: ConnectionId, code: CloseCode, reason: &str) {
        let _ = (ctx, id, code, reason);
    }
}
