//! The mio driver: one thread, one `Poll`, a `Slab` of connections.
//!
//! Each wakeup: accept until `WouldBlock`, read each ready socket until
//! `WouldBlock` (into a shared scratch buffer when nothing is held back, so
//! idle connections own no receive memory), hand decoded messages to the
//! handler, then write every connection with queued output once, and run
//! due timers. WRITABLE interest is registered only while output is pending.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use super::addresses::{AddressTable, HandshakeQueue, Refusal};
use super::budget::BufferBudget;
use super::config::ServerConfig;
use super::conn::Conn;
use super::context::{Context, Deferrals, HeldOutput, Outbound};
use super::gather::Gather;
use super::shutdown::{Notifier, ShutdownHandle};
use super::sources::{SOURCE_TOKEN_BASE, SourceId, Sources};
use super::stats::ServerStats;
use super::timers::Timers;
use crate::handler::{ConnectionId, Handler};
use crate::proto::extensions::negotiate_permessage_deflate;
use crate::proto::handshake::{
    HEADER_SLOTS, header_slots, offered_protocols, parse_request, validate_upgrade, wants_upgrade,
};
use crate::proto::{
    CloseCode, CloseReport, Decoder, HttpRequest, HttpResponse, InBuffer, Phase, Received,
    TimeoutAction,
    frame::{self, MAX_HEADER_LEN},
};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Size of the shared read buffer every socket is read into first.
const SCRATCH_SIZE: usize = 128 * 1024;
/// Leftover input (the start of a frame the last read cut) up to this size
/// is moved to the front of the shared read buffer and read after, rather
/// than read after in the connection's own buffer.
const CARRY_LIMIT: usize = 32 * 1024;
/// Bytes asked for per read when appending to a connection's own buffer.
const READ_CHUNK: usize = 128 * 1024;
/// Receive buffers above this size are freed as soon as they empty
/// (smaller ones are kept while the connection is busy, and freed when it
/// goes quiet).
const KEEP_INBUF_CAPACITY: usize = 1024 * 1024;
/// Queued output at which a connection is written in the middle of a
/// batch rather than at its end, when it is the only connection reading in
/// the batch: its peer then has nothing else to work on, and an early write
/// lets it start on the first answers while the rest are made.
const EARLY_WRITE_ALONE: usize = 32 * 1024;
/// The same when other connections read in the same batch: their peers
/// keep the other side busy meanwhile, so fewer, larger writes win.
const EARLY_WRITE_SHARED: usize = 64 * 1024;
/// Frames gathered from one read (see `gather`) go out before the read is
/// processed to its end once they reach this, if the connection is the
/// only one reading in the batch; with others reading, they go out
/// together at the end of the read (at most a read's worth of bytes).
const GATHER_EARLY_WRITE_ALONE: usize = EARLY_WRITE_ALONE;
/// Reads per socket per wakeup before other sockets get their turn.
const READS_PER_WAKEUP: usize = 16;
/// Pause before accepting again after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At the socket limit, a new connection takes the socket of the oldest
/// handshake in progress only if that began at least this long ago: a
/// client's handshake takes a few round trips, so one this old is slow
/// (and a burst of new clients does not push out each other's).
const EVICTABLE_HANDSHAKE_AGE: Duration = Duration::from_secs(1);

/// Whether a socket's event makes the loop read it: data, or the peer's
/// FIN or an error, which only a read reports.
fn calls_for_read(event: &mio::event::Event) -> bool {
    event.is_readable() || event.is_read_closed() || event.is_error()
}

/// The whole length (header and payload) of the frame that `held` starts,
/// once its header is complete; `None` while it is too short to tell, or
/// when it is not a frame start (a request head, or an error the decoder
/// will report).
fn held_frame_len(held: &[u8]) -> Option<u64> {
    match frame::parse_header(held, 0b111) {
        Ok(Some(header)) => Some(header.payload_len.saturating_add(header.header_len as u64)),
        Ok(None) | Err(_) => None,
    }
}

/// Whether a held-back frame of `frame_len` bytes (see [`held_frame_len`])
/// fits in `room` bytes; an unknown one counts as small. A larger frame is
/// read on in the connection's own buffer: carried into the shared one,
/// most of it would have to be copied back out.
fn completes_within(frame_len: Option<u64>, room: usize) -> bool {
    frame_len.is_none_or(|len| len <= room as u64)
}

/// How much to read into a connection's own buffer holding `held_len`
/// bytes of a frame of `frame_len` (see [`held_frame_len`]): the rest of
/// the frame when that is known and at least a chunk, so a large frame
/// ends at the end of the buffer and consuming it empties the buffer
/// (nothing left over to move down before the next one). Never more than
/// twice what has arrived, or the `room` the buffer already has beyond it
/// (grown by earlier frames): the buffer grows as bytes arrive, not to the
/// length the peer declared, so 15 bytes declaring 16 MiB cost 15 bytes,
/// not a chunk-sized buffer. An empty buffer asks for
/// `last_fill` (see [`Conn::last_fill`]; the caller keeps it within the
/// room the buffer already has), so a stream of equal large frames is read a whole
/// frame per call, like the peers that size their reads by the header.
fn own_read_size(held_len: usize, frame_len: Option<u64>, last_fill: usize, room: usize) -> usize {
    let Some(frame_len) = frame_len else {
        return if held_len == 0 {
            last_fill.max(READ_CHUNK)
        } else {
            READ_CHUNK
        };
    };
    let rest = frame_len.saturating_sub(held_len as u64);
    let cap = held_len.saturating_mul(2).max(room);
    usize::try_from(rest)
        .map_or(cap, |rest| rest.min(cap))
        .max(READ_CHUNK.min(cap))
}

/// A WebSocket server bound to an address, ready to [`Server::run`].
pub struct Server<H: Handler> {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    shutdown: ShutdownHandle,
    notifier: Notifier,
    scratch: Vec<u8>,
    last_activity: Instant,
    core: Core<H>,
}

/// Everything but the poller, listener and scratch buffer, so the loop can
/// lend the scratch buffer to the core while it works.
struct Core<H: Handler> {
    handler: H,
    config: ServerConfig,
    registry: Registry,
    conns: Slab<Conn>,
    timers: Timers,
    flush_list: Vec<usize>,
    read_again: Vec<usize>,
    /// Connections with a complete compressed message left to inflate, by
    /// slot and generation, oldest first. Like `read_again`, a non-empty
    /// queue makes the next poll return at once. Only the first inflates,
    /// one slice per turn, and is not read meanwhile: the others wait
    /// holding one slice of output each (and are not read either), so
    /// however many peers send large compressed messages at once, one
    /// message's worth of inflated output is in memory beyond a slice each,
    /// and no connection is held up longer than a slice per turn. (Taking
    /// turns instead would inflate them all at once: a message's worth of
    /// memory for each.)
    inflate_queue: VecDeque<(usize, u32)>,
    /// Queued output at which the connection being processed is written
    /// before the end of the batch (`EARLY_WRITE_ALONE` or `_SHARED`).
    early_write: usize,
    /// The same for frames gathered from the read being processed.
    gather_early_write: usize,
    stats: ServerStats,
    outbound: Outbound,
    gather: Gather,
    next_generation: u32,
    open_websockets: usize,
    max_inbuf: usize,
    accept_paused_until: Option<Instant>,
    shutdown_deadline: Option<Instant>,
    deferrals: Deferrals,
    held: HeldOutput,
    budget: BufferBudget,
    addresses: AddressTable,
    handshakes: HandshakeQueue,
    /// The application's own file descriptors and its alarm.
    sources: Sources,
}

impl<H: Handler> Server<H> {
    /// Binds `config.listen` and prepares the loop; nothing runs until
    /// [`Server::run`].
    pub fn bind(config: ServerConfig, handler: H) -> io::Result<Server<H>> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let local_addr = listener.local_addr()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let signals = if config.handle_signals {
            let mut signals = signal_hook_mio::v1_0::Signals::new([
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
            ])?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)?;
            Some(signals)
        } else {
            None
        };
        let limits = &config.limits;
        let max_inbuf = limits
            .max_request_head
            .saturating_add(limits.max_request_body)
            .max(limits.max_frame_size.saturating_add(MAX_HEADER_LEN))
            .saturating_add(READ_CHUNK);
        let budget = BufferBudget::new(config.max_buffered_total);
        let addresses = AddressTable::new(
            config.max_connections_per_address,
            config.max_handshakes_per_address,
        );
        let stats = ServerStats {
            buffer_budget: budget.limit() as u64,
            ..ServerStats::default()
        };
        let core = Core {
            handler,
            registry: poll.registry().try_clone()?,
            conns: Slab::new(),
            timers: Timers::default(),
            flush_list: Vec::new(),
            read_again: Vec::new(),
            inflate_queue: VecDeque::new(),
            early_write: EARLY_WRITE_ALONE,
            gather_early_write: GATHER_EARLY_WRITE_ALONE,
            stats,
            outbound: Outbound::default(),
            gather: Gather::default(),
            next_generation: 0,
            open_websockets: 0,
            max_inbuf,
            accept_paused_until: None,
            shutdown_deadline: None,
            deferrals: Deferrals::default(),
            held: HeldOutput::default(),
            budget,
            addresses,
            handshakes: HandshakeQueue::default(),
            sources: Sources::default(),
            config,
        };
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            signals,
            shutdown: ShutdownHandle {
                requested: Arc::new(AtomicBool::new(false)),
                waker: waker.clone(),
            },
            notifier: Notifier {
                pending: Arc::new(AtomicBool::new(false)),
                waker,
            },
            scratch: vec![0; SCRATCH_SIZE],
            last_activity: Instant::now(),
            core,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle that stops this server gracefully from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The application, e.g. to inspect it after [`Server::run`] returns.
    pub fn handler(&self) -> &H {
        &self.core.handler
    }

    /// Runs the loop until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut failure = None;
        self.core.handler.on_start(self.notifier.clone());
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.core.shutdown_deadline
                && (now >= deadline || self.core.all_delivered())
            {
                break;
            }
            let timeout = if self.core.read_again.is_empty()
                && self.core.inflate_queue.is_empty()
                && self.core.deferrals.resumed.is_empty()
                && self.core.sources.again.is_empty()
            {
                self.core
                    .next_wakeup()
                    .map(|at| at.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            if let Err(error) = self.wait(&mut events, timeout, now) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("poll failed: {error}; dropping every connection");
                failure = Some(error);
                break;
            }
            let now = Instant::now();
            if !events.is_empty() {
                self.last_activity = now;
            }
            (self.core.early_write, self.core.gather_early_write) =
                if self.core.several_to_read(&events) {
                    (EARLY_WRITE_SHARED, usize::MAX)
                } else {
                    (EARLY_WRITE_ALONE, GATHER_EARLY_WRITE_ALONE)
                };
            for slot in mem::take(&mut self.core.read_again) {
                self.core.on_readable(slot, &mut self.scratch, now, false);
            }
            self.core.inflate_next(&mut self.scratch, now);
            for source in mem::take(&mut self.core.sources.again) {
                self.core.on_source_ready(source, now);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(now),
                    SIGNALS => {
                        if let Some(signals) = self.signals.as_mut() {
                            for signal in signals.pending() {
                                log::info!("received signal {signal}; shutting down");
                            }
                        }
                        self.begin_shutdown(now);
                    }
                    WAKER => {
                        if self.notifier.take_pending() {
                            let (handler, mut ctx) = self.core.context(now);
                            handler.on_notify(&mut ctx);
                            self.core.resume_deferred(now);
                        }
                        if self.shutdown.is_requested() {
                            self.begin_shutdown(now);
                        }
                    }
                    Token(token) if token >= SOURCE_TOKEN_BASE => {
                        if let Some(source) = self.core.sources.id_for(token) {
                            self.core.on_source_ready(source, now);
                        }
                    }
                    Token(slot) => {
                        let closing = event.is_read_closed() || event.is_error();
                        if calls_for_read(event) {
                            // When the peer's FIN (or an error) came with
                            // the data, no further edge will announce it:
                            // read on until the read that reports it.
                            self.core
                                .on_readable(slot, &mut self.scratch, now, !closing);
                        }
                        if event.is_writable() {
                            self.core.flush(slot, now);
                        }
                    }
                }
            }
            self.core.resume_deferred(now);
            self.core.flush_all(now);
            self.core.run_timers(now);
            if self.core.sources.take_due_alarm(now) {
                let (handler, mut ctx) = self.core.context(now);
                handler.on_alarm(&mut ctx);
                self.core.resume_deferred(now);
            }
            self.core.flush_all(now);
            if self
                .core
                .accept_paused_until
                .is_some_and(|until| now >= until)
            {
                self.accept_all(now);
            }
        }
        let now = Instant::now();
        let remaining: Vec<usize> = self.core.conns.iter().map(|(slot, _)| slot).collect();
        for slot in remaining {
            self.core.remove(slot, now);
        }
        if let Some(error) = failure {
            return Err(error);
        }
        log::info!("server stopped");
        Ok(())
    }

    /// Waits for events. Right after activity, polls without blocking for
    /// up to `busy_poll` first: a peer that answers within that window is
    /// served without the wake-up latency of a sleeping thread.
    fn wait(
        &mut self,
        events: &mut Events,
        timeout: Option<Duration>,
        now: Instant,
    ) -> io::Result<()> {
        let spin = self.core.config.busy_poll;
        if !spin.is_zero()
            && timeout != Some(Duration::ZERO)
            && now.duration_since(self.last_activity) < spin
        {
            let until = now + spin;
            loop {
                self.poll.poll(events, Some(Duration::ZERO))?;
                if !events.is_empty() || Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
            if !events.is_empty() {
                return Ok(());
            }
        }
        self.poll.poll(events, timeout)
    }

    fn accept_all(&mut self, now: Instant) {
        if self
            .core
            .accept_paused_until
            .is_some_and(|until| now < until)
        {
            return;
        }
        self.core.accept_paused_until = None;
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((socket, peer)) => self.core.add_connection(socket, peer, now),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(error) => {
                    // EMFILE/ENFILE/ENOBUFS and the like: the backlog stays
                    // where it is; try again shortly instead of spinning.
                    log::warn!("accept failed: {error}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.core.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.core.shutdown_deadline.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        log::info!(
            "shutting down: closing {} connection(s) with 1001",
            self.core.conns.len()
        );
        self.core.begin_shutdown(now);
    }
}

impl<H: Handler> Core<H> {
    fn next_wakeup(&self) -> Option<Instant> {
        [
            self.timers.next(),
            self.accept_paused_until,
            self.shutdown_deadline,
            self.sources.alarm,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Tells the handler a watched source is ready.
    fn on_source_ready(&mut self, source: SourceId, now: Instant) {
        let (handler, mut ctx) = self.context(now);
        handler.on_source_ready(&mut ctx, source);
        self.resume_deferred(now);
    }

    /// Whether every connection has had its last byte written and its
    /// sending side shut down, so stopping now loses nothing.
    fn all_delivered(&self) -> bool {
        self.conns.iter().all(|(_, conn)| conn.write_shutdown)
    }

    fn context(&mut self, now: Instant) -> (&mut H, Context<'_>) {
        self.stats.open_connections = self.open_websockets as u64;
        self.stats.sockets = self.conns.len() as u64;
        self.stats.buffered_bytes = self.budget.total() as u64;
        (
            &mut self.handler,
            Context {
                conns: &mut self.conns,
                flush_list: &mut self.flush_list,
                stats: &mut self.stats,
                outbound: &mut self.outbound,
                peer: None,
                tls: false,
                now,
                lone: None,
                gather: &mut self.gather,
                request: None,
                deferrals: &mut self.deferrals,
                holding: false,
                held: &mut self.held,
                budget: &mut self.budget,
                registry: &self.registry,
                sources: &mut self.sources,
            },
        )
    }

    /// The context for a callback about the request on `slot`, which knows
    /// the peer's address and whether it came over TLS.
    /// With `deferrable`, the callback may put the request off (see
    /// [`Context::defer`]); the caller checks [`Core::take_deferred`].
    fn request_context(
        &mut self,
        slot: usize,
        deferrable: bool,
        now: Instant,
    ) -> (&mut H, Context<'_>) {
        let conn = &self.conns[slot];
        let (peer, tls, id) = (conn.peer, conn.tls.is_some(), conn.id);
        self.deferrals.current = false;
        let (handler, mut ctx) = self.context(now);
        ctx.peer = Some(peer);
        ctx.tls = tls;
        ctx.request = Some((id, deferrable));
        (handler, ctx)
    }

    /// Whether the callback just made deferred the request on `slot`; if
    /// so, the connection stops being read until it is resumed, and its
    /// request stays unconsumed in its input.
    fn take_deferred(&mut self, slot: usize) -> bool {
        if !mem::take(&mut self.deferrals.current) {
            return false;
        }
        let conn = &mut self.conns[slot];
        conn.deferred = true;
        log::debug!("{} {}: request deferred", conn.id, conn.peer);
        true
    }

    /// Offers the requests the handler asked to resume to it again: the
    /// held input is processed as if it had just arrived, then the socket
    /// is read for whatever came meanwhile.
    /// One pass: a request the handler resumes again while it is offered
    /// waits for the next turn of the loop.
    fn resume_deferred(&mut self, now: Instant) {
        for id in mem::take(&mut self.deferrals.resumed) {
            let slot = id.index as usize;
            let Some(conn) = self
                .conns
                .get_mut(slot)
                .filter(|conn| conn.id == id && conn.deferred)
            else {
                continue;
            };
            conn.deferred = false;
            let mut inbuf = mem::take(&mut conn.inbuf);
            let used = self.process(slot, inbuf.data_mut(), now);
            inbuf.consume(used);
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.inbuf = inbuf;
                if !conn.deferred {
                    self.read_again.push(slot);
                }
            }
            self.after_io(slot, now);
        }
    }

    fn add_connection(&mut self, mut socket: TcpStream, peer: SocketAddr, now: Instant) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        if let Err(refusal) = self.addresses.check(peer.ip()) {
            self.refuse_at_accept(peer, refusal);
            return;
        }
        if self.conns.len() >= self.config.max_sockets() && !self.evict_oldest_handshake(now) {
            self.refuse_at_accept(peer, Refusal::SocketLimit);
            return;
        }
        if let Err(error) = socket.set_nodelay(true) {
            log::debug!("{peer}: set_nodelay: {error}");
        }
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        let Ok(index) = u32::try_from(slot) else {
            return;
        };
        if let Err(error) = self
            .registry
            .register(&mut socket, Token(slot), Interest::READABLE)
        {
            log::warn!("{peer}: register: {error}");
            return;
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let id = ConnectionId { index, generation };
        let tls = match &self.config.tls {
            None => None,
            Some(config) => match rustls::ServerConnection::new(config.clone()) {
                Ok(session) => Some(Box::new(session)),
                Err(error) => {
                    log::warn!("{peer}: TLS session: {error}");
                    let _ = self.registry.deregister(&mut socket);
                    return;
                }
            },
        };
        entry.insert(Conn::new(socket, peer, id, &self.config.limits, tls, now));
        self.addresses.add(peer.ip());
        let conns = &self.conns;
        self.handshakes
            .push(id, now, self.addresses.handshakes(), |id| {
                in_handshake(conns, id)
            });
        self.stats.accepted += 1;
        log::debug!("{id} {peer}: accepted");
        self.arm_timer(slot);
    }

    /// Counts and logs a connection closed at accept (the caller drops its
    /// socket).
    fn refuse_at_accept(&mut self, peer: SocketAddr, why: Refusal) {
        log::debug!("{peer}: refused at accept ({why})");
        *self.stats.refused_at_accept.entry(why.label()).or_default() += 1;
    }

    /// Drops the oldest connection still in its handshake, if it began long
    /// enough ago, to free its socket; returns whether it did.
    fn evict_oldest_handshake(&mut self, now: Instant) -> bool {
        let conns = &self.conns;
        let Some(id) = self
            .handshakes
            .take_oldest(now, EVICTABLE_HANDSHAKE_AGE, |id| in_handshake(conns, id))
        else {
            return false;
        };
        let slot = id.index as usize;
        log::debug!(
            "{id} {}: dropped at the socket limit to make room",
            self.conns[slot].peer
        );
        self.stats.evicted_handshakes += 1;
        self.remove(slot, now);
        true
    }

    /// Whether this batch will read from more than one connection: the
    /// unpaused ones in `read_again` and those with a read event, each
    /// counted once.
    fn several_to_read(&self, events: &Events) -> bool {
        let again = self.read_again.iter().copied().filter(|&slot| {
            self.conns
                .get(slot)
                .is_some_and(|conn| !conn.read_paused && !conn.read_closed)
        });
        let readable = events
            .iter()
            .filter(|event| calls_for_read(event))
            .map(|event| event.token().0)
            // The loop's own tokens sit at the top of the range.
            .filter(|&slot| slot < SIGNALS.0);
        let mut first = None;
        for slot in again.chain(readable) {
            match first {
                None => first = Some(slot),
                Some(seen) if seen != slot => return true,
                Some(_) => {}
            }
        }
        false
    }

    /// Reads until `WouldBlock` (or the per-wakeup budget), processing as
    /// bytes arrive. With `stop_short`, a read that returns less than asked
    /// ends the turn (the queue is drained and the next arrival raises a
    /// new edge); without it, reading goes on until `WouldBlock` or EOF.
    fn on_readable(&mut self, slot: usize, scratch: &mut [u8], now: Instant, stop_short: bool) {
        for _ in 0..READS_PER_WAKEUP {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            // A connection with a message left to inflate is not read until
            // it is done (`inflate_next` reads it then).
            if conn.read_paused || conn.read_closed || conn.deferred || conn.decoder.inflating() {
                return;
            }
            let discard = conn.proto.phase() == Phase::Closed;
            // One look at the held-back frame's header serves both the
            // carry decision and the size of a read into the own buffer.
            // (A request head is never a frame start.)
            let mut frame_len = None;
            if !conn.inbuf.is_empty() && conn.proto.phase() != Phase::Handshaking {
                frame_len = held_frame_len(conn.inbuf.data_mut());
                conn.large_frames = !completes_within(frame_len, scratch.len());
            }
            // A short leftover rides at the front of the shared read
            // buffer, so reads keep landing in that one cache-warm buffer
            // instead of walking through every busy connection's own. The
            // read lands after the room it needs; it moves over only once
            // new bytes came to go with it.
            let carried = if discard
                || conn.inbuf.is_empty()
                || conn.inbuf.len() > CARRY_LIMIT
                || conn.large_frames
            {
                0
            } else {
                conn.inbuf.len()
            };
            // A connection receiving frames too large for the shared buffer
            // reads on in its own even between them, so the start of the
            // next one is not copied over from the shared buffer.
            let into_scratch = discard || (conn.inbuf.len() == carried && !conn.large_frames);
            let mut asked = scratch.len() - carried;
            let result = if into_scratch {
                let result = conn.read_into(&mut scratch[carried..]);
                if carried > 0 && matches!(result, Ok(n) if n > 0) {
                    scratch[..carried].copy_from_slice(conn.inbuf.data_mut());
                    conn.inbuf.consume(carried);
                }
                result
            } else {
                // Out of the connection while it reads into it.
                let mut inbuf = mem::take(&mut conn.inbuf);
                // Past frames' size is a hint only within the room the
                // buffer already has: it makes the buffer grow by nothing.
                let last_fill = conn.last_fill.min(inbuf.usable_size());
                let room = inbuf.usable_size().saturating_sub(inbuf.len());
                let want = own_read_size(inbuf.len(), frame_len, last_fill, room);
                let spare = inbuf.spare_mut(want, self.max_inbuf);
                let spare_len = spare.len().min(want);
                let spare = &mut spare[..spare_len];
                if spare.is_empty() {
                    // Cannot happen within the limits (a complete frame is
                    // always consumed); refuse to grow past them regardless.
                    log::warn!("{} {}: receive buffer full", conn.id, conn.peer);
                    self.remove(slot, now);
                    return;
                }
                asked = spare.len();
                let result = conn.read_into(spare);
                conn.inbuf = inbuf;
                result
            };
            match result {
                Ok(0) => {
                    self.on_eof(slot, now);
                    return;
                }
                Ok(n) => {
                    conn.proto.note_received(now);
                    // A TCP read that returns less than asked emptied the
                    // receive queue: the next arrival raises a new edge, so
                    // the usual extra read that ends in EAGAIN is skipped.
                    // (Not so on TLS: one record's plaintext says nothing
                    // about what else the socket holds.)
                    let drained = stop_short && n < asked && conn.tls.is_none();
                    if discard {
                        if drained {
                            return;
                        }
                        continue;
                    }
                    if into_scratch {
                        let filled = carried + n;
                        let used = self.process(slot, &mut scratch[..filled], now);
                        if used < filled
                            && let Some(conn) = self.conns.get_mut(slot)
                        {
                            conn.inbuf.extend_from_slice(&scratch[used..filled]);
                        }
                    } else {
                        conn.inbuf.commit(n);
                        let mut inbuf = mem::take(&mut conn.inbuf);
                        let used = self.process(slot, inbuf.data_mut(), now);
                        inbuf.consume(used);
                        inbuf.release_if_empty_over(KEEP_INBUF_CAPACITY);
                        if let Some(conn) = self.conns.get_mut(slot) {
                            // A fill consumed whole that the shared buffer
                            // would have held had only frames it fits (a
                            // connection gone back to small messages, say):
                            // back to the shared one. A larger fill sizes
                            // the next read.
                            if inbuf.is_empty() {
                                if used <= scratch.len() {
                                    conn.large_frames = false;
                                } else {
                                    conn.last_fill = used;
                                }
                            }
                            conn.inbuf = inbuf;
                        }
                    }
                    self.after_io(slot, now);
                    if drained {
                        self.flush_now(slot, now);
                        return;
                    }
                    if self.conns.get(slot).is_some_and(|conn| {
                        conn.proto.pending_output_len() > self.config.limits.write_buffer_soft
                    }) {
                        // Let the flush decide whether to pause reading.
                        self.flush_now(slot, now);
                        self.read_again.push(slot);
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if conn.tls.is_some() {
                        // The TLS handshake may have produced records.
                        self.after_io(slot, now);
                    }
                    self.flush_now(slot, now);
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_)
                    if conn.plaintext_on_tls_port && conn.proto.phase() == Phase::Handshaking =>
                {
                    let response =
                        HttpResponse::text(400, "this port speaks TLS: use https:// or wss://\n");
                    self.refuse(slot, &response, "plain text on the TLS port", now);
                    self.after_io(slot, now);
                    self.flush_now(slot, now);
                    return;
                }
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    log::debug!("{} {}: TLS failure: {error}", conn.id, conn.peer);
                    // Best effort: the alert rustls queued, and nothing else.
                    if let Some(session) = conn.tls.as_mut() {
                        let _ = super::tls::write_tls(session, &mut conn.socket, &[]);
                    }
                    self.remove(slot, now);
                    return;
                }
                Err(error) => {
                    log::debug!("{} {}: read error: {error}", conn.id, conn.peer);
                    self.remove(slot, now);
                    return;
                }
            }
        }
        self.read_again.push(slot);
    }

    /// Gives the first connection of the inflation queue its next slice. Once
    /// its message is whole (and delivered) it leaves the queue, and what
    /// it sent meanwhile is processed: held input first, then the socket.
    fn inflate_next(&mut self, scratch: &mut [u8], now: Instant) {
        while let Some(&(slot, generation)) = self.inflate_queue.front() {
            let Some(conn) = self
                .conns
                .get_mut(slot)
                .filter(|conn| conn.id.generation == generation)
            else {
                self.inflate_queue.pop_front();
                continue;
            };
            if matches!(conn.proto.phase(), Phase::Open | Phase::Closing)
                && conn.decoder.inflating()
            {
                self.process_frames(slot, &mut [], now);
                if self
                    .conns
                    .get(slot)
                    .is_some_and(|conn| conn.decoder.inflating())
                {
                    self.after_io(slot, now);
                    return;
                }
            }
            self.inflate_queue.pop_front();
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            conn.inflate_queued = false;
            if conn.proto.phase() == Phase::Closed {
                // Failed while inflating, or closed while waiting.
                conn.decoder = Default::default();
            }
            let mut inbuf = mem::take(&mut conn.inbuf);
            if !inbuf.is_empty() {
                let used = self.process(slot, inbuf.data_mut(), now);
                inbuf.consume(used);
                inbuf.release_if_empty_over(KEEP_INBUF_CAPACITY);
            }
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.inbuf = inbuf;
            }
            self.after_io(slot, now);
            // Reads were skipped since the message came: the edges that
            // announced newer bytes (or the peer's FIN) are spent.
            self.on_readable(slot, scratch, now, false);
            return;
        }
    }

    /// Hands received bytes to the connection's current phase; returns how
    /// many were used (the rest is kept for the next read).
    fn process(&mut self, slot: usize, buf: &mut [u8], now: Instant) -> usize {
        let mut used = 0;
        if self.conns[slot].proto.phase() == Phase::Handshaking {
            used = self.process_handshake(slot, buf, now);
        }
        match self.conns[slot].proto.phase() {
            Phase::Open | Phase::Closing if used < buf.len() => {
                used + self.process_frames(slot, &mut buf[used..], now)
            }
            Phase::Closed => buf.len(),
            _ => used,
        }
    }

    fn process_handshake(&mut self, slot: usize, buf: &[u8], now: Instant) -> usize {
        let limits = &self.config.limits;
        let conn = &mut self.conns[slot];
        let head_len = match conn
            .proto
            .head_scanner()
            .find_end(buf, limits.max_request_head)
        {
            Ok(None) => return 0,
            Ok(Some(len)) => len,
            Err(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
        };
        let mut slots = [httparse::EMPTY_HEADER; HEADER_SLOTS];
        let slot_count = header_slots(limits);
        let max_body = limits.max_request_body;
        let mut request = match parse_request(&buf[..head_len], &mut slots[..slot_count]) {
            Ok(request) => request,
            Err(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
        };
        if !wants_upgrade(&request) {
            let body_len = match declared_body_len(&request, max_body) {
                Ok(len) => len,
                Err(refusal) => {
                    self.refuse(slot, &refusal, "request body refused", now);
                    return buf.len();
                }
            };
            let Some(body) = buf.get(head_len..head_len + body_len) else {
                // The rest of the body is still on its way.
                return 0;
            };
            request.body = body;
            let (handler, mut ctx) = self.request_context(slot, true, now);
            let response = handler.on_http(&mut ctx, &request);
            if self.take_deferred(slot) {
                return 0;
            }
            self.stats.http_requests += 1;
            let conn = &mut self.conns[slot];
            log::debug!(
                "{} {}: {} {} -> {}",
                conn.id,
                conn.peer,
                request.method,
                request.target,
                response.status
            );
            if request.method == "HEAD" {
                conn.proto.respond_head(&response, now);
            } else {
                conn.proto.respond(&response, now);
                conn.body_tail = response.shared_body.map(|body| Box::new((body, 0)));
            }
            return buf.len();
        }
        let accept_key = match validate_upgrade(&request) {
            Ok(key) => key,
            Err(error) => {
                self.refuse(slot, &HttpResponse::from(error), &error.to_string(), now);
                return buf.len();
            }
        };
        if self.open_websockets >= self.config.max_connections || self.shutdown_deadline.is_some() {
            let response = HttpResponse::text(503, "server at its connection limit\n");
            self.refuse(slot, &response, "connection limit", now);
            return buf.len();
        }
        let (handler, mut ctx) = self.request_context(slot, true, now);
        let upgrade = handler.on_upgrade(&mut ctx, &request);
        if self.take_deferred(slot) {
            return 0;
        }
        let accept = match upgrade {
            Ok(accept) => accept,
            Err(response) => {
                self.refuse(slot, &response, "refused by the application", now);
                return buf.len();
            }
        };
        // permessage-deflate is the server's business, not the handler's.
        let mut headers = accept.headers;
        headers.retain(|(name, _)| !name.eq_ignore_ascii_case("sec-websocket-extensions"));
        let deflate = self.config.deflate.as_ref().and_then(|config| {
            let (params, response) = negotiate_permessage_deflate(&request, config)?;
            headers.push(("Sec-WebSocket-Extensions".to_owned(), response));
            Some((params, config.min_compress_size))
        });
        let conn = &mut self.conns[slot];
        let protocol = accept.protocol.filter(|chosen| {
            let offered = offered_protocols(&request).any(|p| p == chosen);
            if !offered {
                log::warn!(
                    "{}: application chose subprotocol {chosen:?}, which was not offered",
                    conn.id
                );
            }
            offered
        });
        conn.proto
            .accept(&accept_key, protocol.as_deref(), &headers, now);
        if let Some((params, min_compress_size)) = deflate {
            self.stats.compressed_upgrades += 1;
            conn.decoder.enable_inflate(
                params.client_max_window_bits,
                params.client_no_context_takeover,
            );
            conn.proto.enable_deflate(
                params.server_max_window_bits,
                params.server_no_context_takeover,
                min_compress_size,
            );
        }
        let id = conn.id;
        log::debug!("{id} {}: open {}", conn.peer, request.target);
        self.open_websockets += 1;
        self.stats.upgrades += 1;
        let (handler, mut ctx) = self.request_context(slot, false, now);
        handler.on_open(&mut ctx, id, &request);
        head_len
    }

    fn refuse(&mut self, slot: usize, response: &HttpResponse, why: &str, now: Instant) {
        *self
            .stats
            .rejected_handshakes
            .entry(response.status)
            .or_default() += 1;
        let conn = &mut self.conns[slot];
        log::warn!(
            "{} {}: handshake refused with {}: {why}",
            conn.id,
            conn.peer,
            response.status
        );
        conn.proto.respond(response, now);
    }

    fn process_frames(&mut self, slot: usize, buf: &mut [u8], now: Instant) -> usize {
        let mut decoder = mem::take(&mut self.conns[slot].decoder);
        let mut pos = 0;
        let len = buf.len();
        if self.conns[slot].tls.is_none() {
            self.gather.start(slot, buf);
        }
        loop {
            let conn = &mut self.conns[slot];
            let id = conn.id;
            match conn.proto.receive(&mut decoder, &mut buf[pos..], now) {
                Received::Message(message, used) => {
                    pos += used;
                    self.stats.messages_in += 1;
                    self.stats.bytes_in += message.len() as u64;
                    let (handler, mut ctx) = self.context(now);
                    if pos == len {
                        ctx.lone = Some(slot);
                    }
                    handler.on_message(&mut ctx, id, message);
                    // Output worth a syscall on its own goes out now, so
                    // large echoes stream instead of waiting for the batch.
                    // (Frames gathered from this read go first.)
                    if self.gather.recorded_len() >= self.gather_early_write {
                        self.gather.write(self.conns.get_mut(slot), buf);
                    }
                    let conn = &mut self.conns[slot];
                    if conn.proto.pending_output_len() >= self.early_write
                        && !self.gather.holds_frames_for(slot)
                    {
                        conn.write_pending();
                    }
                }
                Received::Handled(used) => pos += used,
                Received::NeedMore(used) => {
                    pos += used;
                    break;
                }
                Received::Inflating(used) => {
                    pos += used;
                    if !conn.inflate_queued {
                        conn.inflate_queued = true;
                        self.inflate_queue.push_back((slot, id.generation));
                    }
                    break;
                }
                Received::Closed(used) => {
                    pos += used;
                    // (The budget logged its own closes.)
                    if let Some((code, reason)) = conn.proto.failure()
                        && !conn.budget_shed
                    {
                        log::warn!("{id} {}: failed with {code}: {reason}", conn.peer);
                    }
                    break;
                }
            }
        }
        self.conns[slot].decoder = decoder;
        self.gather.finish(self.conns.get_mut(slot), buf);
        pos
    }

    /// Bookkeeping after a connection was processed: queue its flush,
    /// deliver its close report, re-arm its timer.
    fn after_io(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        let closed = conn.proto.phase() == Phase::Closed;
        // A closed connection is flushed even with nothing queued: the
        // flush is what shuts its sending side down (and a failed write's
        // flush is what removes the connection).
        if (conn.has_unsent_output() || (closed && !conn.write_shutdown) || conn.write_failed)
            && !conn.flush_queued
        {
            conn.flush_queued = true;
            self.flush_list.push(slot);
        }
        if closed {
            conn.inbuf = InBuffer::default();
            conn.read_paused = false;
            if conn.decoder.partial_message_len() > 0 {
                conn.decoder = Decoder::default();
            }
        }
        if conn.in_handshake && conn.proto.opened() {
            conn.in_handshake = false;
            self.addresses.handshake_done(conn.peer.ip());
        }
        let over_budget = self.budget.update(conn);
        if let Some(report) = conn.proto.take_close_report() {
            let id = conn.id;
            self.deliver_close(id, report, now);
        }
        if over_budget {
            self.budget
                .shed(&mut self.conns, &mut self.flush_list, &mut self.stats, now);
        }
        self.arm_timer(slot);
    }

    fn deliver_close(&mut self, id: ConnectionId, report: CloseReport, now: Instant) {
        self.open_websockets = self.open_websockets.saturating_sub(1);
        *self.stats.closes.entry(report.code.0).or_default() += 1;
        if matches!(report.code.0, 1000 | 1001 | 1005) {
            log::debug!("{id}: closed with {} {:?}", report.code, report.reason);
        } else {
            log::info!(
                "{id}: closed abnormally with {} {:?}",
                report.code,
                report.reason
            );
        }
        let (handler, mut ctx) = self.context(now);
        handler.on_close(&mut ctx, id, report.code, &report.reason);
    }

    fn arm_timer(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(deadline) = conn.proto.next_deadline()
            && conn.timer_at.is_none_or(|armed| deadline < armed)
        {
            self.timers.schedule(deadline, slot, conn.id.generation);
            conn.timer_at = Some(deadline);
        }
    }

    fn on_eof(&mut self, slot: usize, now: Instant) {
        let conn = &mut self.conns[slot];
        conn.read_closed = true;
        if conn.proto.phase() != Phase::Closed {
            // No closing handshake: an abnormal closure (1006).
            log::debug!("{} {}: peer went away", conn.id, conn.peer);
            conn.proto.abort(now);
        }
        // A TLS peer that closed first is still owed our close_notify.
        let owes_close_notify = conn.tls.is_some() && !conn.close_notify_sent;
        if conn.write_shutdown || !(conn.has_unsent_output() || owes_close_notify) {
            self.remove(slot, now);
        } else {
            // What is queued still goes out (the peer may only have closed
            // its sending side); the flush removes the connection after.
            self.after_io(slot, now);
        }
    }

    /// Writes a connection's output right after its input was handled,
    /// so its peer is not kept waiting for the rest of the batch. Output
    /// the handler queued for other connections waits for the batch end,
    /// so a broadcast still costs one write per recipient.
    fn flush_now(&mut self, slot: usize, now: Instant) {
        if self.conns.get(slot).is_some_and(|conn| conn.flush_queued) {
            self.flush(slot, now);
        }
    }

    fn flush_all(&mut self, now: Instant) {
        while let Some(slot) = self.flush_list.pop() {
            self.flush(slot, now);
        }
    }

    /// Writes queued output once, as far as the socket takes it, and
    /// adjusts WRITABLE interest and read backpressure.
    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        conn.flush_queued = false;
        conn.write_pending();
        // Writing only shrinks what is held: never a reason to shed.
        self.budget.update(conn);
        if conn.write_failed {
            self.remove(slot, now);
            return;
        }
        let pending = conn.proto.pending_output_len();
        let soft = self.config.limits.write_buffer_soft;
        let closed = conn.proto.phase() == Phase::Closed;
        if pending > soft && !closed {
            conn.read_paused = true;
        } else if conn.read_paused && (pending <= soft / 2 || closed) {
            conn.read_paused = false;
            self.read_again.push(slot);
        }
        let unsent = conn.has_unsent_output();
        let want_writable = unsent;
        if want_writable != conn.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            match self
                .registry
                .reregister(&mut conn.socket, Token(slot), interest)
            {
                Ok(()) => conn.writable_interest = want_writable,
                // Left as it was, so the next flush tries again.
                Err(error) => log::warn!("{}: reregister: {error}", conn.id),
            }
        }
        if !unsent && closed && !conn.write_shutdown {
            // Closing TCP from our side first (RFC 6455 §7.1.1); keep
            // reading until the peer's FIN so unread input cannot turn the
            // close into a reset that destroys the close frame in flight.
            let _ = conn.socket.shutdown(Shutdown::Write);
            conn.write_shutdown = true;
            if conn.read_closed {
                self.remove(slot, now);
                return;
            }
        }
        self.arm_timer(slot);
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some((at, slot, generation)) = self.timers.pop_due(now) {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.id.generation != generation {
                continue;
            }
            if conn.timer_at == Some(at) {
                conn.timer_at = None;
            }
            // A timer only fires on a quiet connection: give its buffers back.
            conn.inbuf.release_if_empty();
            conn.decoder.release_idle_memory();
            conn.proto.release_idle_memory();
            if conn.proto.pong_overdue(now) && conn.took_output_since_ping() {
                // Slow, not dead: its pong is behind our output or unread.
                conn.proto.note_received(now);
            }
            let awaiting_pong = conn.proto.awaiting_pong();
            let failed_before = conn.proto.failure().is_some();
            let action = conn.proto.on_timeout(now);
            if !failed_before && let Some((code, reason)) = conn.proto.failure() {
                log::debug!("{} {}: closing with {code}: {reason}", conn.id, conn.peer);
            }
            if !awaiting_pong && conn.proto.awaiting_pong() {
                conn.note_ping_queued();
            }
            match action {
                TimeoutAction::None => {}
                TimeoutAction::Flush => {
                    if !conn.flush_queued {
                        conn.flush_queued = true;
                        self.flush_list.push(slot);
                    }
                }
                TimeoutAction::Drop => {
                    log::debug!("{} {}: timed out", conn.id, conn.peer);
                    self.remove(slot, now);
                    continue;
                }
            }
            self.after_io(slot, now);
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown_deadline = Some(now + self.config.limits.close_timeout);
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let conn = &mut self.conns[slot];
            match conn.proto.phase() {
                Phase::Open => {
                    conn.proto
                        .close(CloseCode::GOING_AWAY, "server shutting down", now);
                    self.after_io(slot, now);
                }
                Phase::Handshaking => self.remove(slot, now),
                Phase::Closing | Phase::Closed => {}
            }
        }
    }

    /// Drops a connection, delivering its close report if one is owed.
    fn remove(&mut self, slot: usize, now: Instant) {
        if !self.conns.contains(slot) {
            return;
        }
        let mut conn = self.conns.remove(slot);
        let _ = self.registry.deregister(&mut conn.socket);
        self.budget.forget(&conn);
        self.addresses.remove(conn.peer.ip(), conn.in_handshake);
        conn.proto.abort(now);
        if let Some(report) = conn.proto.take_close_report() {
            self.deliver_close(conn.id, report, now);
        }
    }
}

/// Whether `id` names a connection still counted as a handshake.
fn in_handshake(conns: &Slab<Conn>, id: ConnectionId) -> bool {
    conns
        .get(id.index as usize)
        .is_some_and(|conn| conn.id.generation == id.generation && conn.in_handshake)
}

/// The length of a plain HTTP request's body from its `Content-Length`
/// (0 without one), or the refusal: `411` for a chunked body (clients of
/// the API send lengths), `400` for a malformed length, `413` past
/// `max_body`.
fn declared_body_len(request: &HttpRequest<'_>, max_body: usize) -> Result<usize, HttpResponse> {
    if request.header("transfer-encoding").is_some() {
        return Err(HttpResponse::text(
            411,
            "send the request body with a Content-Length\n",
        ));
    }
    let Some(value) = request.header_str("content-length") else {
        return Ok(0);
    };
    let len: u64 = value
        .parse()
        .map_err(|_| HttpResponse::text(400, "malformed Content-Length\n"))?;
    match usize::try_from(len) {
        Ok(len) if len <= max_body => Ok(len),
        _ => Err(HttpResponse::text(
            413,
            format!("the request body is larger than {max_body} bytes (limits.max_request_body)\n"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{EncodedHeader, OpCode};

    /// The start of a masked client frame of `payload_len` bytes, with
    /// `held` payload bytes after its header.
    fn frame_start(payload_len: usize, held: usize) -> Vec<u8> {
        let mut bytes = EncodedHeader::new(true, 0, OpCode::Binary, payload_len)
            .as_bytes()
            .to_vec();
        bytes[1] |= 0x80;
        bytes.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
        bytes.resize(bytes.len() + held, 0);
        bytes
    }

    fn own_read_size_for(held: &[u8]) -> usize {
        own_read_size(held.len(), held_frame_len(held), 0, 0)
    }

    #[test]
    fn own_reads_stop_at_the_end_of_a_large_frame() {
        // Nothing held, or too little to know the frame: a chunk.
        assert_eq!(own_read_size_for(&[]), READ_CHUNK);
        assert_eq!(own_read_size_for(&[0x82, 0xFF, 0, 0]), READ_CHUNK);
        // 300 KB frame, 100 KB of it held (header 14 bytes): exactly the
        // rest, so consuming it empties the buffer.
        let held = frame_start(300_000, 100_000);
        assert_eq!(own_read_size_for(&held), 200_000);
        // A frame about to end: a whole chunk rather than a tiny read.
        let held = frame_start(300_000, 299_000);
        assert_eq!(own_read_size_for(&held), READ_CHUNK);
        // A declared length far beyond what arrived: the read (and so the
        // buffer's growth) is bounded by twice what came so far.
        let held = frame_start(1 << 40, 10);
        assert_eq!(own_read_size_for(&held), 2 * (10 + 14));
        let held = frame_start(8 << 20, 400_000);
        assert_eq!(own_read_size_for(&held), 800_000 + 2 * 14);
    }

    #[test]
    fn room_the_buffer_already_has_may_be_filled() {
        // A buffer grown by earlier large frames takes the rest of a new
        // one at once, however little of it has arrived.
        let held = frame_start(300_000, 10);
        let frame_len = held_frame_len(&held);
        assert_eq!(own_read_size(held.len(), frame_len, 0, 0), 2 * held.len());
        assert_eq!(
            own_read_size(held.len(), frame_len, 0, 400_000),
            300_000 + 14 - held.len()
        );
    }

    #[test]
    fn an_empty_own_buffer_reads_as_much_as_the_last_fill() {
        // A 256 KiB frame follows one of the same size: one read takes it.
        let frame = 256 * 1024 + 8;
        assert_eq!(own_read_size(0, None, frame, 0), frame);
        // A small last fill still reads a whole chunk.
        assert_eq!(own_read_size(0, None, 1000, 0), READ_CHUNK);
        // Once part of a frame is held, its header decides, not the hint.
        let held = frame_start(300_000, 100_000);
        assert_eq!(
            own_read_size(held.len(), held_frame_len(&held), 10 << 20, 0),
            200_000
        );
    }
}
