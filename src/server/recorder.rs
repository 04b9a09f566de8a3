//! Driving a [`Handler`](crate::Handler) without sockets: a [`Recorder`]
//! hands out [`Context`]s whose sends, broadcasts and closes are recorded
//! instead of written, to connections that exist only as ids. So an
//! application's replies, audiences and ordering can be unit-tested
//! deterministically, callback by callback, with no server, port or client.
//!
//! Everything else a context does works as in the loop: output held with
//! [`Context::hold_output`] is recorded only once released, deferred
//! requests and resumptions are kept for the test to read, sources are
//! watched on the recorder's own poller, and the [`Notifier`] it gives out
//! can be waited for with [`Recorder::wait_for_notify`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token, Waker};
use slab::Slab;

use super::budget::BufferBudget;
use super::context::{Context, Deferrals, HeldOutput, Outbound};
use super::gather::Gather;
use super::shutdown::Notifier;
use super::socket::Socket;
use super::sources::{SourceId, Sources};
use super::stats::ServerStats;
use crate::handler::ConnectionId;
use crate::proto::{CloseCode, Message, SendError};

/// The recorder's waker token; sources use tokens from the middle up.
const WAKER_TOKEN: Token = Token(usize::MAX);

/// The write budget the recorder's contexts report (nothing is buffered).
const RECORDER_BUDGET: usize = 64 * 1024 * 1024;

/// One thing a handler sent through a recording [`Context`], in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// A text message to one connection (a broadcast records one per
    /// recipient that was open).
    Text {
        /// The recipient.
        to: ConnectionId,
        /// The message.
        text: String,
    },
    /// A binary message to one connection.
    Binary {
        /// The recipient.
        to: ConnectionId,
        /// The message.
        bytes: Vec<u8>,
    },
    /// The closing handshake started with a connection.
    Close {
        /// The connection.
        to: ConnectionId,
        /// The close code sent.
        code: CloseCode,
        /// The reason sent.
        reason: String,
    },
}

impl Sent {
    /// The connection it went to.
    pub fn to(&self) -> ConnectionId {
        match self {
            Sent::Text { to, .. } | Sent::Binary { to, .. } | Sent::Close { to, .. } => *to,
        }
    }

    /// The text, for a text message.
    pub fn text(&self) -> Option<&str> {
        match self {
            Sent::Text { text, .. } => Some(text),
            _ => None,
        }
    }
}

/// The connections a recording context knows and what it recorded.
#[derive(Debug, Default)]
pub(crate) struct Recording {
    open: Vec<ConnectionId>,
    sent: Vec<Sent>,
}

impl Recording {
    /// Whether `id` can be sent to.
    pub fn is_open(&self, id: ConnectionId) -> bool {
        self.open.contains(&id)
    }

    /// The connections that can be sent to.
    pub fn open(&self) -> &[ConnectionId] {
        &self.open
    }

    /// Records `message` to `to`, as a send to an open connection would
    /// queue it.
    pub fn message(&mut self, to: ConnectionId, message: Message<'_>) -> Result<(), SendError> {
        if !self.is_open(to) {
            return Err(SendError::NotOpen);
        }
        self.sent.push(match message {
            Message::Text(text) => Sent::Text {
                to,
                text: text.to_owned(),
            },
            Message::Binary(bytes) => Sent::Binary {
                to,
                bytes: bytes.to_vec(),
            },
        });
        Ok(())
    }

    /// Records the start of a closing handshake; the connection can no
    /// longer be sent to.
    pub fn close(&mut self, to: ConnectionId, code: CloseCode, reason: &str) {
        if !self.is_open(to) {
            return;
        }
        self.open.retain(|id| *id != to);
        self.sent.push(Sent::Close {
            to,
            code,
            reason: reason.to_owned(),
        });
    }
}

/// Hands out recording [`Context`]s over connections that are only ids:
/// a test calls the handler's callbacks with them and reads back what the
/// handler sent. Time stands still unless [`Recorder::advance`] moves it.
///
/// ```
/// use wsloop::server::{Recorder, Sent};
/// use wsloop::{ConnectionId, Context, Handler, Message};
///
/// struct Shout;
/// impl Handler for Shout {
///     fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnectionId, message: Message<'_>) {
///         if let Message::Text(text) = message {
///             let _ = ctx.send_text(id, &text.to_uppercase());
///         }
///     }
/// }
///
/// let mut recorder = Recorder::new()?;
/// let alice = recorder.connect();
/// Shout.on_message(&mut recorder.context(), alice, Message::Text("hi"));
/// assert_eq!(recorder.take_sent(), [Sent::Text { to: alice, text: "HI".into() }]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Recorder {
    conns: Slab<Socket>,
    flush_list: Vec<usize>,
    stats: ServerStats,
    outbound: Outbound,
    gather: Gather,
    deferrals: Deferrals,
    held: HeldOutput,
    budget: BufferBudget,
    poll: Poll,
    events: Events,
    sources: Sources,
    recording: Recording,
    notifier: Notifier,
    now: Instant,
    next_index: u32,
    last_deferred: bool,
    /// Watched sources that became ready while waiting, not yet taken.
    ready_sources: Vec<SourceId>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("open", &self.recording.open)
            .field("sent", &self.recording.sent.len())
            .field("held", &self.held.queue.len())
            .finish()
    }
}

impl Recorder {
    /// A recorder with no connections, its clock at the present instant.
    pub fn new() -> io::Result<Recorder> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        Ok(Recorder {
            conns: Slab::new(),
            flush_list: Vec::new(),
            stats: ServerStats::default(),
            outbound: Outbound::default(),
            gather: Gather::default(),
            deferrals: Deferrals::default(),
            held: HeldOutput::default(),
            budget: BufferBudget::new(RECORDER_BUDGET),
            poll,
            events: Events::with_capacity(16),
            sources: Sources::default(),
            recording: Recording::default(),
            notifier: Notifier {
                pending: Arc::new(AtomicBool::new(false)),
                waker,
            },
            now: Instant::now(),
            next_index: 0,
            last_deferred: false,
            ready_sources: Vec::new(),
        })
    }

    /// The notifier to give the handler's `on_start`.
    pub fn notifier(&self) -> Notifier {
        self.notifier.clone()
    }

    /// The time the recorder's contexts report.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves the recorder's clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// A new open connection (the test calls the handler's `on_open`, if
    /// it needs one).
    pub fn connect(&mut self) -> ConnectionId {
        let id = ConnectionId {
            index: self.next_index,
            generation: 0,
        };
        self.next_index += 1;
        self.recording.open.push(id);
        id
    }

    /// Ends a connection from the peer's side: it can no longer be sent to
    /// (the test calls the handler's `on_close`).
    pub fn disconnect(&mut self, id: ConnectionId) {
        self.recording.open.retain(|open| *open != id);
    }

    /// A context for a callback about no request in particular
    /// (`on_message`, `on_notify`, `on_close` …).
    pub fn context(&mut self) -> Context<'_> {
        self.build(None, None)
    }

    /// A context for `on_http` or `on_upgrade` of the request `id` made
    /// from `peer`: it may defer that request, as in the loop.
    pub fn request_context(&mut self, id: ConnectionId, peer: SocketAddr) -> Context<'_> {
        self.build(Some((id, true)), Some(peer))
    }

    /// A context for `on_open` of connection `id` from `peer`: it names the
    /// request but cannot defer it (the upgrade is done), as in the loop.
    pub fn open_context(&mut self, id: ConnectionId, peer: SocketAddr) -> Context<'_> {
        self.build(Some((id, false)), Some(peer))
    }

    fn build(
        &mut self,
        request: Option<(ConnectionId, bool)>,
        peer: Option<SocketAddr>,
    ) -> Context<'_> {
        if std::mem::take(&mut self.deferrals.current) {
            self.last_deferred = true;
        }
        Context {
            conns: &mut self.conns,
            flush_list: &mut self.flush_list,
            stats: &mut self.stats,
            outbound: &mut self.outbound,
            peer,
            tls: false,
            now: self.now,
            lone: None,
            gather: &mut self.gather,
            request,
            deferrals: &mut self.deferrals,
            holding: false,
            held: &mut self.held,
            budget: &mut self.budget,
            registry: self.poll.registry(),
            sources: &mut self.sources,
            recording: Some(&mut self.recording),
        }
    }

    /// Everything sent since the last call, in order.
    pub fn take_sent(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.recording.sent)
    }

    /// Messages held back (see [`Context::hold_output`]) and not yet
    /// released.
    pub fn held_messages(&self) -> usize {
        self.held.queue.len()
    }

    /// Whether a request was deferred (see [`Context::defer`]) since the
    /// last call.
    pub fn take_deferred(&mut self) -> bool {
        let deferred = std::mem::take(&mut self.deferrals.current) || self.last_deferred;
        self.last_deferred = false;
        deferred
    }

    /// Requests the handler asked to have offered again, since the last
    /// call.
    pub fn take_resumed(&mut self) -> Vec<ConnectionId> {
        std::mem::take(&mut self.deferrals.resumed)
    }

    /// The time the handler asked to be woken at ([`Context::wake_at`]),
    /// taken.
    pub fn take_alarm(&mut self) -> Option<Instant> {
        self.sources.alarm.take()
    }

    /// Waits up to `timeout` for the [`Notifier`] to be used; `true` if it
    /// was (then call the handler's `on_notify`). Watched sources that
    /// become ready meanwhile are kept for [`Recorder::take_ready_sources`]
    /// (edge-triggered: they are not reported again).
    pub fn wait_for_notify(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.notifier.take_pending() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.poll_once(left) {
                return false;
            }
        }
    }

    /// Waits up to `timeout` for a watched source to become ready; the
    /// ones that did (then call the handler's `on_source_ready` for each).
    /// A notification meanwhile is kept for [`Recorder::wait_for_notify`].
    pub fn wait_for_sources(&mut self, timeout: Duration) -> Vec<SourceId> {
        let deadline = Instant::now() + timeout;
        while self.ready_sources.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.poll_once(left) {
                break;
            }
        }
        self.take_ready_sources()
    }

    /// Watched sources that became ready while waiting, since the last call.
    pub fn take_ready_sources(&mut self) -> Vec<SourceId> {
        std::mem::take(&mut self.ready_sources)
    }

    /// One poll of up to `timeout`: ready sources are kept, the waker's
    /// event only ends the poll. False if polling failed.
    fn poll_once(&mut self, timeout: Duration) -> bool {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return true,
            Err(_) => return false,
        }
        for event in self.events.iter() {
            if let Some(id) = self.sources.id_for(event.token().0)
                && !self.ready_sources.contains(&id)
            {
                self.ready_sources.push(id);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_broadcasts_and_closes_are_recorded_in_order() {
        let mut recorder = Recorder::new().unwrap();
        let a = recorder.connect();
        let b = recorder.connect();
        let c = recorder.connect();
        recorder.disconnect(c);
        {
            let mut ctx = recorder.context();
            assert!(ctx.is_open(a) && !ctx.is_open(c));
            assert_eq!(ctx.open_connections().collect::<Vec<_>>(), vec![a, b]);
            ctx.send_text(a, "one").unwrap();
            assert_eq!(ctx.send_text(c, "gone"), Err(SendError::NotOpen));
            assert_eq!(ctx.broadcast([a, b, c], Message::Binary(b"two")), 2);
            ctx.close(b, CloseCode::NORMAL, "bye");
            assert_eq!(ctx.send_text(b, "after close"), Err(SendError::NotOpen));
        }
        let sent = recorder.take_sent();
        assert_eq!(
            sent,
            vec![
                Sent::Text {
                    to: a,
                    text: "one".into()
                },
                Sent::Binary {
                    to: a,
                    bytes: b"two".to_vec()
                },
                Sent::Binary {
                    to: b,
                    bytes: b"two".to_vec()
                },
                Sent::Close {
                    to: b,
                    code: CloseCode::NORMAL,
                    reason: "bye".into()
                },
            ]
        );
        assert!(recorder.take_sent().is_empty());
    }

    #[test]
    fn held_output_is_recorded_only_when_released() {
        let mut recorder = Recorder::new().unwrap();
        let a = recorder.connect();
        let mark = {
            let mut ctx = recorder.context();
            ctx.hold_output();
            ctx.send_text(a, "first").unwrap();
            let mark = ctx.output_mark();
            ctx.send_text(a, "second").unwrap();
            mark
        };
        assert!(recorder.take_sent().is_empty());
        assert_eq!(recorder.held_messages(), 2);
        recorder.context().release_output(mark);
        assert_eq!(recorder.take_sent()[0].text(), Some("first"));
        assert_eq!(recorder.held_messages(), 1);
    }

    #[test]
    fn deferral_and_notifications_are_observable() {
        let mut recorder = Recorder::new().unwrap();
        let a = recorder.connect();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(recorder.request_context(a, peer).defer(), Some(a));
        assert!(recorder.take_deferred());
        assert!(!recorder.take_deferred());
        assert_eq!(recorder.context().defer(), None);
        recorder.context().resume(a);
        assert_eq!(recorder.take_resumed(), vec![a]);

        assert_eq!(
            recorder.open_context(a, peer).defer(),
            None,
            "on_open cannot defer"
        );
        assert!(!recorder.take_deferred());

        assert!(!recorder.wait_for_notify(Duration::from_millis(10)));
        let notifier = recorder.notifier();
        std::thread::spawn(move || notifier.notify().unwrap());
        assert!(recorder.wait_for_notify(Duration::from_secs(5)));
    }

    #[test]
    fn a_watched_source_that_becomes_ready_is_reported() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut recorder = Recorder::new().unwrap();
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair().unwrap();
        reader.set_nonblocking(true).unwrap();
        let id = recorder
            .context()
            .watch(reader.as_raw_fd(), super::super::sources::Watch::Readable)
            .unwrap();
        assert!(
            recorder
                .wait_for_sources(Duration::from_millis(10))
                .is_empty()
        );
        writer.write_all(b"x").unwrap();
        // Seen while waiting for a notification, kept for the test.
        assert!(!recorder.wait_for_notify(Duration::from_millis(200)));
        assert_eq!(recorder.take_ready_sources(), vec![id]);
        recorder.context().unwatch(id);
    }
}
