//! The mio driver's loop: one thread, one `Poll`, a `Slab` of connections.
//!
//! Each wakeup: accept until `WouldBlock`, read each ready socket until
//! `WouldBlock` (`read`: into a shared scratch buffer when nothing is held
//! back, so idle connections own no receive memory), hand what was read to
//! the handshake or the decoder and decoded messages to the handler
//! (`dispatch`, `upgrade`), then write every connection with queued output
//! once (`write`), and run due timers. WRITABLE interest is registered only
//! while output is pending.
//!
//! Connections are removed in one place, [`Driver::settle`]: reading,
//! flushing and timers return an [`Outcome`], and the loop settles it.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use super::addresses::{AddressTable, HandshakeQueue, Refusal};
use super::budget::BufferBudget;
use super::config::ServerConfig;
use super::context::{Context, Deferrals, HeldOutput, Outbound};
use super::gather::Gather;
use super::read::{READ_CHUNK, calls_for_read};
use super::shutdown::{Notifier, ShutdownHandle};
use super::socket::Socket;
use super::sources::{SOURCE_TOKEN_BASE, SourceId, Sources};
use super::stats::ServerStats;
use super::timers::Timers;
use super::tls::TlsState;
use super::write::{EARLY_WRITE_ALONE, EARLY_WRITE_SHARED, GATHER_EARLY_WRITE_ALONE};
use crate::handler::{ConnectionId, Handler};
use crate::proto::{CloseCode, CloseReport, Phase, TimeoutAction, frame::MAX_HEADER_LEN};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Size of the shared read buffer every socket is read into first.
const SCRATCH_SIZE: usize = 128 * 1024;
/// Pause before accepting again after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At the socket limit, a new connection takes the socket of the oldest
/// handshake in progress only if that began at least this long ago: a
/// client's handshake takes a few round trips, so one this old is slow
/// (and a burst of new clients does not push out each other's).
const EVICTABLE_HANDSHAKE_AGE: Duration = Duration::from_secs(1);

/// What handling a connection's event left it as: the loop settles it
/// ([`Driver::settle`]), the one place a connection is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(super) enum Outcome {
    /// It goes on.
    Live,
    /// It is finished (peer gone, write failed, closed and delivered,
    /// timed out): remove it.
    Done,
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
    driver: Driver<H>,
}

/// Everything but the poller, listener and scratch buffer, so the loop can
/// lend the scratch buffer to the driver while it works.
pub(super) struct Driver<H: Handler> {
    pub(super) handler: H,
    pub(super) config: ServerConfig,
    pub(super) registry: Registry,
    pub(super) conns: Slab<Socket>,
    pub(super) timers: Timers,
    pub(super) flush_list: Vec<usize>,
    pub(super) read_again: Vec<usize>,
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
    pub(super) inflate_queue: VecDeque<(usize, u32)>,
    /// Queued output at which the connection being processed is written
    /// before the end of the batch (`EARLY_WRITE_ALONE` or `_SHARED`).
    pub(super) early_write: usize,
    /// The same for frames gathered from the read being processed.
    pub(super) gather_early_write: usize,
    pub(super) stats: ServerStats,
    pub(super) outbound: Outbound,
    pub(super) gather: Gather,
    pub(super) next_generation: u32,
    pub(super) open_websockets: usize,
    pub(super) max_inbuf: usize,
    pub(super) accept_paused_until: Option<Instant>,
    pub(super) shutdown_deadline: Option<Instant>,
    pub(super) deferrals: Deferrals,
    pub(super) held: HeldOutput,
    pub(super) budget: BufferBudget,
    pub(super) addresses: AddressTable,
    pub(super) handshakes: HandshakeQueue,
    /// The application's own file descriptors and its alarm.
    pub(super) sources: Sources,
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
        let driver = Driver {
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
            driver,
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
        &self.driver.handler
    }

    /// Runs the loop until a graceful shutdown completes.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut failure = None;
        self.driver.handler.on_start(self.notifier.clone());
        loop {
            let now = Instant::now();
            if let Some(deadline) = self.driver.shutdown_deadline
                && (now >= deadline || self.driver.all_delivered())
            {
                break;
            }
            let timeout = if self.driver.read_again.is_empty()
                && self.driver.inflate_queue.is_empty()
                && self.driver.deferrals.resumed.is_empty()
                && self.driver.sources.again.is_empty()
            {
                self.driver
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
            (self.driver.early_write, self.driver.gather_early_write) =
                if self.driver.several_to_read(&events) {
                    (EARLY_WRITE_SHARED, usize::MAX)
                } else {
                    (EARLY_WRITE_ALONE, GATHER_EARLY_WRITE_ALONE)
                };
            for slot in mem::take(&mut self.driver.read_again) {
                let outcome = self.driver.on_readable(slot, &mut self.scratch, now, false);
                self.driver.settle(slot, outcome, now);
            }
            if let Some((slot, outcome)) = self.driver.inflate_next(&mut self.scratch, now) {
                self.driver.settle(slot, outcome, now);
            }
            for source in mem::take(&mut self.driver.sources.again) {
                self.driver.on_source_ready(source, now);
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
                            let (handler, mut ctx) = self.driver.context(now);
                            handler.on_notify(&mut ctx);
                            self.driver.resume_deferred(now);
                        }
                        if self.shutdown.is_requested() {
                            self.begin_shutdown(now);
                        }
                    }
                    Token(token) if token >= SOURCE_TOKEN_BASE => {
                        if let Some(source) = self.driver.sources.id_for(token) {
                            self.driver.on_source_ready(source, now);
                        }
                    }
                    Token(slot) => {
                        let closing = event.is_read_closed() || event.is_error();
                        if calls_for_read(event) {
                            // When the peer's FIN (or an error) came with
                            // the data, no further edge will announce it:
                            // read on until the read that reports it.
                            let outcome =
                                self.driver
                                    .on_readable(slot, &mut self.scratch, now, !closing);
                            self.driver.settle(slot, outcome, now);
                        }
                        if event.is_writable() {
                            let outcome = self.driver.flush(slot);
                            self.driver.settle(slot, outcome, now);
                        }
                    }
                }
            }
            self.driver.resume_deferred(now);
            self.driver.flush_all(now);
            self.driver.run_timers(now);
            if self.driver.sources.take_due_alarm(now) {
                let (handler, mut ctx) = self.driver.context(now);
                handler.on_alarm(&mut ctx);
                self.driver.resume_deferred(now);
            }
            self.driver.flush_all(now);
            if self
                .driver
                .accept_paused_until
                .is_some_and(|until| now >= until)
            {
                self.accept_all(now);
            }
        }
        let now = Instant::now();
        let remaining: Vec<usize> = self.driver.conns.iter().map(|(slot, _)| slot).collect();
        for slot in remaining {
            self.driver.settle(slot, Outcome::Done, now);
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
        let spin = self.driver.config.busy_poll;
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
            .driver
            .accept_paused_until
            .is_some_and(|until| now < until)
        {
            return;
        }
        self.driver.accept_paused_until = None;
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((socket, peer)) => self.driver.add_connection(socket, peer, now),
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
                    self.driver.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        if self.driver.shutdown_deadline.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        log::info!(
            "shutting down: closing {} connection(s) with 1001",
            self.driver.conns.len()
        );
        self.driver.begin_shutdown(now);
    }
}

impl<H: Handler> Driver<H> {
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

    pub(super) fn context(&mut self, now: Instant) -> (&mut H, Context<'_>) {
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
                recording: None,
            },
        )
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
                Ok(session) => Some(Box::new(TlsState::new(session))),
                Err(error) => {
                    log::warn!("{peer}: TLS session: {error}");
                    let _ = self.registry.deregister(&mut socket);
                    return;
                }
            },
        };
        entry.insert(Socket::new(socket, peer, id, &self.config.limits, tls, now));
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
        self.settle(slot, Outcome::Done, now);
        true
    }

    /// Bookkeeping after a connection was processed: queue its flush,
    /// deliver its close report, re-arm its timer.
    pub(super) fn after_io(&mut self, slot: usize, now: Instant) {
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
            conn.proto.discard_input();
            conn.read_paused = false;
        }
        if conn.in_handshake && conn.proto.opened() {
            conn.in_handshake = false;
            self.addresses.handshake_done(conn.peer.ip());
        }
        let over_budget = self.budget.update(conn);
        if let Some(report) = conn.proto.poll_close_report() {
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
        // A peer that goes away without a closing handshake (1006: a tab
        // closed, a network drop) is an ordinary connection event; a
        // connection failed for what it sent or for a limit is an error.
        if matches!(report.code.0, 1000 | 1001 | 1005 | 1006) {
            log::debug!("{id}: closed with {} {:?}", report.code, report.reason);
        } else {
            log::warn!(
                "{id}: closed abnormally with {} {:?}",
                report.code,
                report.reason
            );
        }
        let (handler, mut ctx) = self.context(now);
        handler.on_close(&mut ctx, id, report.code, &report.reason);
    }

    pub(super) fn arm_timer(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else {
            return;
        };
        if let Some(deadline) = conn.proto.poll_timeout()
            && conn.timer_at.is_none_or(|armed| deadline < armed)
        {
            self.timers.schedule(deadline, slot, conn.id.generation);
            conn.timer_at = Some(deadline);
        }
    }

    fn flush_all(&mut self, now: Instant) {
        while let Some(slot) = self.flush_list.pop() {
            let outcome = self.flush(slot);
            self.settle(slot, outcome, now);
        }
    }

    fn run_timers(&mut self, now: Instant) {
        while let Some((at, slot, generation)) = self.timers.pop_due(now) {
            if self
                .conns
                .get(slot)
                .is_some_and(|conn| conn.id.generation == generation)
            {
                let outcome = self.on_timer(slot, at, now);
                self.settle(slot, outcome, now);
            }
        }
    }

    /// A timer armed for `at` fired for the connection in `slot`.
    fn on_timer(&mut self, slot: usize, at: Instant, now: Instant) -> Outcome {
        let conn = &mut self.conns[slot];
        if conn.timer_at == Some(at) {
            conn.timer_at = None;
        }
        // A timer only fires on a quiet connection: give its buffers back.
        conn.proto.release_idle_memory();
        if conn.proto.pong_overdue(now) && conn.took_output_since_ping() {
            // Slow, not dead: its pong is behind our output or unread.
            conn.proto.handle_peer_activity(now);
        }
        let awaiting_pong = conn.proto.awaiting_pong();
        let failed_before = conn.proto.failure().is_some();
        let action = conn.proto.handle_timeout(now);
        if !failed_before && let Some((code, reason)) = conn.proto.failure() {
            log::debug!("{} {}: closing with {code}: {reason}", conn.id, conn.peer);
        }
        if !awaiting_pong && conn.proto.awaiting_pong() {
            conn.note_ping_queued();
        }
        match action {
            TimeoutAction::None => {}
            TimeoutAction::Flush => conn.queue_flush(slot, &mut self.flush_list),
            TimeoutAction::Drop => {
                log::debug!("{} {}: timed out", conn.id, conn.peer);
                return Outcome::Done;
            }
        }
        self.after_io(slot, now);
        Outcome::Live
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
                Phase::Handshaking => self.settle(slot, Outcome::Done, now),
                Phase::Closing | Phase::Closed => {}
            }
        }
    }

    /// The one place a connection is removed: settles what handling it
    /// left it as. A finished connection is dropped, its close report
    /// delivered if one is owed.
    #[inline]
    pub(super) fn settle(&mut self, slot: usize, outcome: Outcome, now: Instant) {
        if outcome == Outcome::Done {
            self.remove(slot, now);
        }
    }

    /// Drops the connection in `slot`, if any; only [`Driver::settle`]
    /// calls it.
    #[inline(never)]
    fn remove(&mut self, slot: usize, now: Instant) {
        if !self.conns.contains(slot) {
            return;
        }
        let mut conn = self.conns.remove(slot);
        let _ = self.registry.deregister(&mut conn.stream);
        self.budget.forget(&conn);
        self.addresses.remove(conn.peer.ip(), conn.in_handshake);
        conn.proto.abort(now);
        if let Some(report) = conn.proto.poll_close_report() {
            self.deliver_close(conn.id, report, now);
        }
    }
}

/// Whether `id` names a connection still counted as a handshake.
fn in_handshake(conns: &Slab<Socket>, id: ConnectionId) -> bool {
    conns
        .get(id.index as usize)
        .is_some_and(|conn| conn.id.generation == id.generation && conn.in_handshake)
}
