//! The two Rust peers of the fan-out cells: every text or binary message a
//! connection sends goes to every other connection. Both run on a tokio
//! `current_thread` runtime and pass messages through one
//! `tokio::sync::broadcast` channel: each connection has a reader task
//! (its messages into the channel, tagged with the connection's number) and
//! a writer task (the channel into its socket, skipping its own messages).
//! A writer that falls more than [`CHANNEL_CAPACITY`] messages behind loses
//! the oldest ones (the channel's `Lagged`): that, not an unbounded queue,
//! is how these peers treat a subscriber that stops reading.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::peers::Peer;

/// Messages the channel holds for its slowest receiver.
pub const CHANNEL_CAPACITY: usize = 4096;

/// A message, and the number of the connection it came from.
type Published = (u64, Bytes, bool);

/// Messages dropped for lagging writers, over all connections (reported
/// on stderr when a connection ends).
static LAGGED: AtomicU64 = AtomicU64::new(0);

/// Runs the broadcast server of `peer` on `listen` until killed.
pub fn serve(peer: Peer, listen: SocketAddr) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let (sender, _) = broadcast::channel::<Published>(CHANNEL_CAPACITY);
        let mut next_id = 0u64;
        loop {
            let (stream, peer_addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    eprintln!("accept: {error}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                eprintln!("{peer_addr}: set_nodelay: {error}");
            }
            next_id += 1;
            let sender = sender.clone();
            match peer {
                Peer::TokioTungstenite => {
                    tokio::spawn(tungstenite::connection(stream, next_id, sender));
                }
                Peer::Fastwebsockets => {
                    tokio::spawn(fastws::connection(stream, next_id, sender));
                }
            }
        }
    })
}

/// Reports a lagging writer's loss.
fn lagged(skipped: u64) {
    let total = LAGGED.fetch_add(skipped, Ordering::Relaxed) + skipped;
    eprintln!("writer lagged: {skipped} message(s) skipped ({total} in all)");
}

/// tokio-tungstenite: `accept_async`, `split()`, the sink fed from the
/// channel and flushed when the channel has nothing more ready.
mod tungstenite {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;

    pub async fn connection(stream: TcpStream, id: u64, sender: broadcast::Sender<Published>) {
        let ws = match tokio_tungstenite::accept_async(stream).await {
            Ok(ws) => ws,
            Err(error) => {
                eprintln!("#{id}: handshake: {error}");
                return;
            }
        };
        let (mut write, mut read) = ws.split();
        let mut receiver = sender.subscribe();
        let writer = tokio::spawn(async move {
            let message = |(_, bytes, text): Published| {
                if text {
                    // The reader only publishes text it received as text.
                    Message::Text(String::from_utf8_lossy(&bytes).into_owned().into())
                } else {
                    Message::Binary(bytes)
                }
            };
            loop {
                let published = match receiver.recv().await {
                    Ok(published) => published,
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        lagged(skipped);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if published.0 == id {
                    continue;
                }
                if write.feed(message(published)).await.is_err() {
                    return;
                }
                while let Ok(published) = receiver.try_recv() {
                    if published.0 != id && write.feed(message(published)).await.is_err() {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    return;
                }
            }
        });
        while let Some(Ok(message)) = read.next().await {
            match message {
                Message::Binary(bytes) => {
                    let _ = sender.send((id, bytes, false));
                }
                Message::Text(text) => {
                    let _ = sender.send((id, Bytes::copy_from_slice(text.as_bytes()), true));
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        writer.abort();
    }
}

/// fastwebsockets: hyper 1 upgrade, `WebSocket::split` (its
/// `unstable-split` feature) into a reader and a writer task.
mod fastws {
    use super::*;
    use fastwebsockets::{Frame, OpCode, Payload, WebSocketError, upgrade};
    use http_body_util::Empty;
    use hyper::body::Incoming;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use tokio::net::TcpStream;

    pub async fn connection(stream: TcpStream, id: u64, sender: broadcast::Sender<Published>) {
        let io = hyper_util::rt::TokioIo::new(stream);
        let service = service_fn(move |request| server_upgrade(request, id, sender.clone()));
        let connection = http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades();
        if let Err(error) = connection.await {
            eprintln!("#{id}: http: {error:?}");
        }
    }

    async fn server_upgrade(
        mut request: Request<Incoming>,
        id: u64,
        sender: broadcast::Sender<Published>,
    ) -> Result<Response<Empty<hyper::body::Bytes>>, WebSocketError> {
        let (response, upgrade) = upgrade::upgrade(&mut request)?;
        tokio::task::spawn(async move {
            if let Err(error) = relay(upgrade, id, sender).await {
                eprintln!("#{id}: {error}");
            }
        });
        Ok(response)
    }

    async fn relay(
        upgrade: upgrade::UpgradeFut,
        id: u64,
        sender: broadcast::Sender<Published>,
    ) -> Result<(), WebSocketError> {
        let ws = upgrade.await?;
        let (mut read, mut write) = ws.split(tokio::io::split);
        let mut receiver = sender.subscribe();
        let writer = tokio::spawn(async move {
            loop {
                let (from, bytes, text) = match receiver.recv().await {
                    Ok(published) => published,
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        lagged(skipped);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if from == id {
                    continue;
                }
                let payload = Payload::Borrowed(&bytes);
                let frame = if text {
                    Frame::text(payload)
                } else {
                    Frame::binary(payload)
                };
                if write.write_frame(frame).await.is_err() {
                    return;
                }
            }
        });
        // Pings and closes from the clients are not answered (the load
        // generator sends neither).
        let mut ignore = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
        let result = loop {
            let frame = match read.read_frame(&mut ignore).await {
                Ok(frame) => frame,
                Err(error) => break Err(error),
            };
            match frame.opcode {
                OpCode::Binary | OpCode::Text => {
                    let text = frame.opcode == OpCode::Text;
                    let _ = sender.send((id, Bytes::copy_from_slice(&frame.payload), text));
                }
                OpCode::Close => break Ok(()),
                _ => {}
            }
        };
        writer.abort();
        result
    }
}
