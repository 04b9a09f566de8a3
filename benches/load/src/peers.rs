//! The two peer echo servers, each set up the way its crate documents it,
//! on a single-threaded (`current_thread`) tokio runtime, like wsloop's one
//! event-loop thread.
//!
//! Both echo every text and binary message back to its sender and set
//! `TCP_NODELAY` on accepted sockets (wsloop does too). A failing connection
//! is logged to stderr and dropped; it never takes the server down.
//!
//! With a certificate and key both speak only TLS, through tokio-rustls with
//! the same rustls settings as wsloop's (ring provider, TLS 1.2 and 1.3,
//! ALPN `http/1.1`); the TLS handshake runs in the connection's task.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The peer implementations `serve` can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// `tokio_tungstenite::accept_async`, then the stream `forward`ed into its sink.
    TokioTungstenite,
    /// hyper 1 `http1` + `fastwebsockets::upgrade`, `read_frame` / `write_frame`.
    Fastwebsockets,
}

/// Runs the chosen peer on `listen` until the process is killed (SIGTERM);
/// with `tls` (PEM certificate chain, PEM private key) over TLS only.
pub fn serve(peer: Peer, listen: SocketAddr, tls: Option<(&Path, &Path)>) -> io::Result<()> {
    let acceptor = tls.map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
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
            match (&acceptor, peer) {
                (None, Peer::TokioTungstenite) => {
                    tokio::spawn(tungstenite::connection(stream, peer_addr));
                }
                (None, Peer::Fastwebsockets) => {
                    tokio::spawn(fastws::connection(stream, peer_addr));
                }
                (Some(acceptor), _) => {
                    let accept = acceptor.accept(stream);
                    tokio::spawn(async move {
                        match accept.await {
                            Ok(stream) => connection(peer, stream, peer_addr).await,
                            Err(error) => eprintln!("{peer_addr}: tls: {error}"),
                        }
                    });
                }
            }
        }
    })
}

/// Serves one connection (a TLS stream) with the chosen peer.
async fn connection<S>(peer: Peer, stream: S, peer_addr: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match peer {
        Peer::TokioTungstenite => tungstenite::connection(stream, peer_addr).await,
        Peer::Fastwebsockets => fastws::connection(stream, peer_addr).await,
    }
}

/// The TLS acceptor for a PEM certificate chain (leaf first) and PEM key:
/// the same settings as wsloop's (`src/server/tls.rs`).
fn tls_acceptor(cert: &Path, key: &Path) -> io::Result<TlsAcceptor> {
    let context = |path: &Path, error: &dyn std::fmt::Display| {
        io::Error::other(format!("{}: {error}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .map_err(|error| context(cert, &error))?;
    if chain.is_empty() {
        return Err(context(cert, &"no PEM certificate in the file"));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|error| context(key, &error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(io::Error::other)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// tokio-tungstenite, as its `examples/echo-server.rs`.
mod tungstenite {
    use super::*;
    use futures_util::{StreamExt, TryStreamExt, future};

    /// Handshake with `accept_async`, then forward every text and binary
    /// message back into the sink. `forward` feeds messages while the stream
    /// has more ready and flushes when it has to wait, so a batch that
    /// arrived in one read goes back in one write, the way the crate's echo
    /// example runs (a `send` per message would flush, and write, each one).
    pub async fn connection<S>(stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ws = match tokio_tungstenite::accept_async(stream).await {
            Ok(ws) => ws,
            Err(error) => {
                eprintln!("{peer}: handshake: {error}");
                return;
            }
        };
        let (write, read) = ws.split();
        if let Err(error) = read
            .try_filter(|message| future::ready(message.is_text() || message.is_binary()))
            .forward(write)
            .await
        {
            eprintln!("{peer}: {error}");
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

    /// Serves one connection with hyper's HTTP/1 server, upgrades allowed.
    pub async fn connection<S>(stream: S, peer: SocketAddr)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
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
