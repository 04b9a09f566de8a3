//! wss:// and https:// with a generated self-signed certificate: handshake,
//! echo, a notebook exchange, close, HTTP endpoints, and clients that do
//! not speak TLS to the TLS port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::{IO_TIMEOUT, RawClient, TestServer, upgrade_request};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tungstenite::Message;
use wsloop::ServerConfig;
use wsloop::notebook::{NotebookConfig, NotebookHandler};
use wsloop::server::tls_config_from_der;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A self-signed certificate for `localhost`, as the server's TLS settings
/// and the DER a client should trust.
fn certificate() -> (wsloop::server::TlsConfig, CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    (tls_config_from_der(vec![cert.clone()], key).unwrap(), cert)
}

fn tls_server<H: wsloop::Handler + Send + 'static>(
    handler: H,
) -> (TestServer, CertificateDer<'static>) {
    let (tls, cert) = certificate();
    let server = TestServer::start(
        ServerConfig {
            tls: Some(tls),
            ..ServerConfig::default()
        },
        handler,
    );
    (server, cert)
}

/// A TLS connection to `addr` trusting only `cert`.
fn connect_tls(addr: SocketAddr, cert: &CertificateDer<'static>) -> TlsStream {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    rustls::StreamOwned::new(session, tcp)
}

fn open_wss(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    path: &str,
) -> tungstenite::WebSocket<TlsStream> {
    let url = format!("wss://localhost:{}{path}", addr.port());
    let (socket, response) = tungstenite::client(url, connect_tls(addr, cert)).expect("handshake");
    assert_eq!(response.status(), 101);
    socket
}

#[test]
fn wss_echo_and_close() {
    let (server, cert) = tls_server(wsloop::EchoHandler);
    let mut socket = open_wss(server.addr, &cert, "/");
    socket.send(Message::text("over TLS")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("over TLS"));
    // Larger than one TLS record and than the direct-write threshold.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    socket.send(Message::binary(big.clone())).unwrap();
    assert_eq!(socket.read().unwrap(), Message::binary(big));
    socket.close(None).unwrap();
    loop {
        match socket.read() {
            Ok(Message::Close(frame)) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), None);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(error) => panic!("close failed: {error}"),
        }
    }
}

#[test]
fn notebook_exchange_and_http_endpoints_over_tls() {
    let dir = std::env::temp_dir().join(format!("wsloop-tls-notebook-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let hash = wsloop::notebook::access::hash_password("s3cret").unwrap();
    let alice = wsloop::notebook::access::User::new("alice", &hash, vec![]).unwrap();
    let handler = NotebookHandler::open(NotebookConfig {
        notebook_dir: dir.clone(),
        users: vec![alice],
        ..NotebookConfig::default()
    })
    .unwrap();
    let (server, cert) = tls_server(handler);

    let mut socket = open_wss(server.addr, &cert, "/ws");
    let run = serde_json::json!({
        "op": "RUN_PARAGRAPH",
        "data": {"id": "p1", "paragraph": "%sql select 6*7 as answer"},
        "principal": "anonymous", "ticket": "anonymous", "roles": "[]",
    });
    socket.send(Message::text(run.to_string())).unwrap();
    let mut statuses = Vec::new();
    while statuses
        .last()
        .is_none_or(|s| s == "PENDING" || s == "RUNNING")
    {
        let Message::Text(text) = socket.read().unwrap() else {
            continue;
        };
        let message: serde_json::Value = serde_json::from_str(&text).unwrap();
        if message["op"] == "NOTES_INFO" && statuses.is_empty() {
            // The scratch note the run creates on a fresh server.
            continue;
        }
        assert_eq!(message["op"], "PARAGRAPH", "{message}");
        let paragraph = &message["data"]["paragraph"];
        statuses.push(paragraph["status"].as_str().unwrap().to_owned());
        if statuses.last().unwrap() == "FINISHED" {
            assert_eq!(paragraph["results"]["msg"][0]["data"], "answer\n42");
        }
    }
    assert_eq!(statuses, ["PENDING", "RUNNING", "FINISHED"]);
    socket.close(None).unwrap();

    // The page, the health check and a login over https; the ticket
    // cookie is marked Secure there.
    for (path, extra, expect) in [
        ("/healthz", "", "ok"),
        ("/", "", "<!doctype html>"),
        (
            "/api/security/ticket",
            "Authorization: Basic YWxpY2U6czNjcmV0\r\n",
            "; httponly; samesite=strict; secure\r\n",
        ),
    ] {
        let mut stream = connect_tls(server.addr, &cert);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = Vec::new();
        match stream.read_to_end(&mut response) {
            Ok(_) => {}
            // A peer that closes TCP right after close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(e) => panic!("{path}: {e}"),
        }
        let response = String::from_utf8_lossy(&response).to_lowercase();
        assert!(response.starts_with("http/1.1 200"), "{path}: {response}");
        assert!(response.contains(expect), "{path}: {response}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plain_clients_on_the_tls_port_fail_cleanly_and_the_server_carries_on() {
    let (server, cert) = tls_server(wsloop::EchoHandler);

    // A plain ws:// upgrade gets a plain-text 400 saying what to use.
    let mut plain = RawClient::connect(server.addr);
    plain.send_raw(upgrade_request("/", "").as_bytes());
    let (status, _, body) = plain.read_response();
    assert_eq!(status, 400);
    assert!(body.contains("TLS"), "{body}");
    plain.expect_eof();

    // Binary garbage that starts like a handshake record but is not one.
    let mut garbage = TcpStream::connect(server.addr).unwrap();
    garbage.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    // At most a TLS alert record, then the end.
    assert!(rest.is_empty() || rest[0] == 0x15, "{rest:?}");

    // A client that does not trust the certificate gives up; the server
    // drops that connection and serves the next one.
    let (_, other_cert) = certificate();
    let url = format!("wss://localhost:{}/", server.addr.port());
    assert!(tungstenite::client(url, connect_tls(server.addr, &other_cert)).is_err());

    let mut socket = open_wss(server.addr, &cert, "/");
    socket.send(Message::text("still serving")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("still serving"));
}

#[test]
fn a_server_initiated_close_still_ends_with_close_notify() {
    let (mut server, cert) = tls_server(wsloop::EchoHandler);
    let mut socket = open_wss(server.addr, &cert, "/");
    socket.send(Message::text("hi")).unwrap();
    assert_eq!(socket.read().unwrap(), Message::text("hi"));
    // Graceful shutdown: the server closes first, with 1001.
    server.request_stop();
    let stream = socket.get_mut();
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x88, "a close frame");
    let mut payload = vec![0u8; usize::from(head[1])];
    stream.read_exact(&mut payload).unwrap();
    assert_eq!(payload[..2], 1001u16.to_be_bytes());
    // The reply, close_notify and FIN together, as browsers send them.
    stream
        .conn
        .writer()
        .write_all(&[0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE9 ^ 2])
        .unwrap();
    stream.conn.send_close_notify();
    while stream.conn.wants_write() {
        stream.conn.write_tls(&mut stream.sock).unwrap();
    }
    stream.sock.shutdown(std::net::Shutdown::Write).unwrap();
    // A clean TLS end: the server's close_notify, not a bare TCP close.
    let mut rest = Vec::new();
    let end = stream.read_to_end(&mut rest);
    assert!(end.is_ok(), "{end:?}");
    assert!(rest.is_empty());
    server.join();
}
