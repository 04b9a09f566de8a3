//! A broadcast server for the fan-out benchmark (`benches/load`, `fanout`):
//! every text or binary message a connection sends goes to every other open
//! connection, through [`Context::broadcast`] (the frame header encoded
//! once). One publisher and N subscribers make one delivery per subscriber
//! per message.
//!
//! ```sh
//! cargo build --release --example broadcast
//! target/release/examples/broadcast 127.0.0.1:9001
//! ```
//!
//! The limits are the library's defaults (write buffer soft 1 MiB, hard
//! 16 MiB per connection: a subscriber that stops reading is closed with
//! 1008 at the hard limit), except those every connection from one
//! address would hit: up to 20,000 connections, all from 127.0.0.1.

use std::process::ExitCode;

use wsloop::{
    CloseCode, ConnectionId, Context, Handler, HttpRequest, Message, Server, ServerConfig,
};

/// Keeps the open connections and sends each message to all but its sender.
#[derive(Default)]
struct Broadcast {
    open: Vec<ConnectionId>,
}

impl Handler for Broadcast {
    fn on_open(&mut self, _ctx: &mut Context<'_>, id: ConnectionId, _request: &HttpRequest<'_>) {
        self.open.push(id);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, from: ConnectionId, message: Message<'_>) {
        let others = self.open.iter().copied().filter(|&id| id != from);
        ctx.broadcast(others, message);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_>,
        id: ConnectionId,
        _code: CloseCode,
        _reason: &str,
    ) {
        if let Some(index) = self.open.iter().position(|&open| open == id) {
            self.open.swap_remove(index);
        }
    }
}

fn main() -> ExitCode {
    let Some(Ok(listen)) = std::env::args().nth(1).map(|arg| arg.parse()) else {
        eprintln!("usage: broadcast ADDRESS (e.g. 127.0.0.1:9001)");
        return ExitCode::from(2);
    };
    let config = ServerConfig {
        listen,
        max_connections: 20_000,
        max_connections_per_address: 100_000,
        max_handshakes_per_address: 100_000,
        handle_signals: true,
        ..ServerConfig::default()
    };
    let mut server = match Server::bind(config, Broadcast::default()) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("broadcast: cannot listen on {listen}: {error}");
            return ExitCode::from(1);
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("broadcast: {error}");
            ExitCode::from(1)
        }
    }
}
