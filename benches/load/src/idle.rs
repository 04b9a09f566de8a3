//! `idle`: opens many WebSocket connections and holds them without traffic,
//! so the orchestrator can read the server's resident memory per connection.
//!
//! Prints `{"event":"open",...}` on stdout once every connection has
//! completed its handshake, then holds them for `--hold-seconds`, answering
//! pings (wsloop pings after 30 s of silence) so nothing is closed for
//! inactivity, and finally prints `{"event":"done",...}`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::handshake::{self, OP_CLOSE, OP_PING, OP_PONG};
use crate::sys;

/// Connections per handshake batch: small enough never to overrun a listen
/// backlog (tokio and mio both listen with 1024).
const BATCH: usize = 100;

/// One held connection: the stream and whatever partial frame it received.
struct Held {
    stream: TcpStream,
    pending: Vec<u8>,
    open: bool,
}

/// Opens `connections` connections to `addr` and holds them `hold_seconds`.
pub fn run(addr: SocketAddr, connections: usize, hold_seconds: f64) -> io::Result<()> {
    let limit = sys::raise_nofile_limit()?;
    if limit < connections as u64 + 16 {
        eprintln!(
            "idle: file-descriptor limit {limit} is below {connections} connections; opening will fail"
        );
    }
    let started = Instant::now();
    let opened = handshake::open_all(&handshake::Dial::plain(addr), connections, BATCH, |done| {
        if done % 1000 == 0 && done < connections {
            eprintln!("idle: {done}/{connections} open");
        }
    })?;
    let open_seconds = started.elapsed().as_secs_f64();

    let mut poll = Poll::new()?;
    let mut held = Vec::with_capacity(opened.len());
    for (index, opened) in opened.into_iter().enumerate() {
        opened.stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(opened.stream);
        poll.registry()
            .register(&mut stream, Token(index), Interest::READABLE)?;
        held.push(Held {
            stream,
            pending: opened.leftover,
            open: true,
        });
    }
    println!(r#"{{"event":"open","connections":{connections},"seconds":{open_seconds:.3}}}"#);
    io::stdout().flush()?;

    let deadline = Instant::now() + Duration::from_secs_f64(hold_seconds.max(0.0));
    let mut events = Events::with_capacity(1024);
    let mut closed = 0usize;
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in events.iter() {
            let conn = &mut held[event.token().0];
            if conn.open && !conn.service(&mut buffer) {
                conn.open = false;
                closed += 1;
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
    println!(r#"{{"event":"done","connections":{connections},"closed_by_server":{closed}}}"#);
    Ok(())
}

impl Held {
    /// Reads what arrived, answers pings; `false` once the connection is over.
    fn service(&mut self, buffer: &mut [u8]) -> bool {
        loop {
            match self.stream.read(buffer) {
                Ok(0) => return false,
                Ok(n) => self.pending.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        loop {
            let header = match handshake::parse_server_header(&self.pending) {
                Ok(Some(header)) if !header.rsv1 => header,
                Ok(None) => return true,
                // RSV1 without an agreed extension is a protocol error too.
                Ok(Some(_)) | Err(_) => return false,
            };
            let end = header.len + header.payload_len as usize;
            if self.pending.len() < end {
                return true;
            }
            match header.opcode {
                OP_CLOSE => return false,
                OP_PING => {
                    let pong = handshake::masked_frame(OP_PONG, &self.pending[header.len..end]);
                    if self.stream.write_all(&pong).is_err() {
                        return false;
                    }
                }
                _ => {}
            }
            self.pending.drain(..end);
        }
    }
}
