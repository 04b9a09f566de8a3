//! The two peer echo servers, each set up the way its crate documents it,
//! on a single-threaded (`current_thread`) tokio runtime, like wsloop's one
//! event-loop thread.
//!
//! Both echo every text and binary message back to its sender and set
//! `TCP_NODELAY` on accepted sockets (wsloop does too). A failing connection
//! is logged to stderr and dropped; it never takes the server down.

use std::io;
use std::net::SocketAddr;

use clap::ValueEnum;
use tokio::net::{TcpListener, TcpStream};

/// The peer implementations `serve` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// `tokio_tungstenite::accept_async`, then `next()` / `send()`.
    TokioTungstenite,
    /// hyper 1 `http1` + `fastwebsockets::upgrade`, `read_frame` / `write_frame`.
    Fastwebsockets,
}

/// Runs the chosen peer on `listen` until the process is killed (SIGTERM).
pub fn serve(peer: Peer, listen: SocketAddr) -> io::Result<()> {
    // The same runtime as fastwebsockets' echo_server example: current_thread,
    // I/O driver only (neither server uses timers).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        loop {
            let (stream, peer_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: log, let other tasks run, retry.
                    eprintln!("accept: {error}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                eprintln!("{peer_addr}: set_nodelay: {error}");
            }
            match peer {
                Peer::TokioTungstenite => {
                    tokio::spawn(tungstenite::connection(stream, peer_addr));
                }
                Peer::Fastwebsockets => {
                    tokio::spawn(fastws::connection(stream, peer_addr));
                }
            }
        }
    })
}

/// tokio-tungstenite, in its documented echo style.
mod tungstenite {
    use super::*;
    use futures_util::{SinkExt, StreamExt};

    /// Handshake with `accept_async`, then echo text and binary messages.
    pub async fn connection(stream: TcpStream, peer: SocketAddr) {
        let mut ws = match tokio_tungstenite::accept_async(stream).await {
            Ok(ws) => ws,
            Err(error) => {
                eprintln!("{peer}: handshake: {error}");
                return;
            }
        };
        while let Some(message) = ws.next().await {
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    eprintln!("{peer}: read: {error}");
                    return;
                }
            };
            if (message.is_text() || message.is_binary())
                && let Err(error) = ws.send(message).await
            {
                eprintln!("{peer}: write: {error}");
                return;
            }
        }
    }
}

/// fastwebsockets, exactly as its `examples/echo_server.rs`.
mod fastws {
    use super::*;
    use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
    use http_body_util::Empty;
    use hyper::body::{Bytes, Incoming};
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};

    /// Serves one TCP connection with hyper's HTTP/1 server, upgrades allowed.
    pub async fn connection(stream: TcpStream, peer: SocketAddr) {
        let io = hyper_util::rt::TokioIo::new(stream);
        let connection = http1::Builder::new()
            .serve_connection(io, service_fn(server_upgrade))
            .with_upgrades();
        if let Err(error) = connection.await {
            eprintln!("{peer}: http: {error:?}");
        }
    }

    /// Answers the upgrade request and spawns the WebSocket task.
    async fn server_upgrade(
        mut request: Request<Incoming>,
    ) -> Result<Response<Empty<Bytes>>, WebSocketError> {
        let (response, upgrade) = upgrade::upgrade(&mut request)?;
        tokio::task::spawn(async move {
            if let Err(error) = tokio::task::unconstrained(echo(upgrade)).await {
                eprintln!("Error in websocket connection: {error}");
            }
        });
        Ok(response)
    }

    /// The echo loop: `read_frame`, and `write_frame` for text and binary.
    async fn echo(upgrade: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
        let mut ws = upgrade.await?;
        ws.set_auto_close(true);
        ws.set_auto_pong(true);
        let mut ws = FragmentCollector::new(ws);
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => break,
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
        Ok(())
    }
}
