//! The echo application: every text and binary message goes straight back
//! to its sender. Used by conformance suites and benchmarks.

use crate::handler::{ConnectionId, Handler};
use crate::proto::Message;
use crate::server::Context;

/// Echoes every message to the connection it came from, on any path.
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoHandler;

impl Handler for EchoHandler {
    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>) {
        // A refused send means the connection is already closing; the
        // server has logged and handled that.
        let _ = ctx.send(id, message);
    }
}
