//! How output leaves a connection: decided here and nowhere else.
//!
//! A frame the handler sends takes one of three ways to the socket:
//!
//! 1. **Gathered**: a payload of at least [`GATHER_MIN`] bytes that lies
//!    in the read being processed, sent to the connection that read it
//!    (an echo), is recorded by [`Gather`] and written from the read
//!    itself with one vectored write per read, never copied.
//! 2. **Direct**: a payload of at least [`DIRECT_WRITE`] bytes
//!    ([`LONE_DIRECT_WRITE`] for the connection whose read ended with the
//!    message being handled) is written to an idle plain-TCP socket at once,
//!    header and payload in one vectored write; the output buffer takes only
//!    what the socket did not.
//! 3. **Queued**: everything else is copied into the connection's output
//!    buffer ([`crate::proto::Connection`]) and written by the loop's flush
//!    after the batch (or early, see [`Driver::write_early`]), through rustls
//!    on a TLS connection.
//!
//! **The ordering rule**: a frame may bypass the output buffer only while
//! nothing is queued in it ([`may_bypass`]), and a direct write also only
//! while no gathered frames wait for the connection. Gathered frames are
//! due before anything queued after them was, so they are written first
//! and the part the socket does not take is queued ahead of the buffer
//! (`Connection::queue_ahead`).

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::time::Instant;

use mio::{Interest, Token};

use super::event_loop::{Driver, Outcome};
use super::gather::{GATHER_MIN, Gather, Gathered};
use super::socket::Socket;
use super::tls;
use crate::handler::Handler;
use crate::proto::{EncodedHeader, Phase, SendError};

/// Payloads at least this large are written straight to an idle socket.
pub(crate) const DIRECT_WRITE: usize = 32 * 1024;

/// The same for a send to the connection whose read ended with the message
/// being handled: no later message of that read can share its write, so
/// copying it into the output buffer only to write it alone would be
/// wasted work.
pub(crate) const LONE_DIRECT_WRITE: usize = 8 * 1024;

/// Queued output at which a connection is written in the middle of a
/// batch rather than at its end, when it is the only connection reading in
/// the batch: its peer then has nothing else to work on, and an early write
/// lets it start on the first answers while the rest are made.
pub(super) const EARLY_WRITE_ALONE: usize = 32 * 1024;

/// The same when other connections read in the same batch: their peers
/// keep the other side busy meanwhile, so fewer, larger writes win.
pub(super) const EARLY_WRITE_SHARED: usize = 64 * 1024;

/// Frames gathered from one read go out before the read is processed to
/// its end once they reach this, if the connection is the only one reading
/// in the batch; with others reading, they go out together at the end of
/// the read (at most a read's worth of bytes).
pub(super) const GATHER_EARLY_WRITE_ALONE: usize = EARLY_WRITE_ALONE;

/// Slices per vectored write (two per gathered frame), well below
/// `IOV_MAX`.
const MAX_SLICES: usize = 64;

/// The way a sent frame took (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Recorded, to be written from the read it lies in.
    Gathered,
    /// Written to the socket at once; what it did not take is queued.
    Direct,
    /// Copied into the output buffer (or refused: see the result).
    Queued,
}

/// The ordering rule: whether a frame for `conn` may bypass its output
/// buffer, because nothing is queued there ahead of it (and its socket did
/// not fail).
fn may_bypass(conn: &Socket) -> bool {
    conn.proto.can_write_directly() && !conn.write_failed
}

/// Sends one encoded frame to `conn` (in `slot`) the way this module
/// decides; `lone` says whether `slot`'s read ended with the message being
/// handled. Returns the way taken and whether the frame was accepted.
pub(crate) fn send_frame(
    conn: &mut Socket,
    slot: usize,
    header: &EncodedHeader,
    payload: &[u8],
    gather: &mut Gather,
    lone: bool,
    now: Instant,
) -> (Route, Result<(), SendError>) {
    if gather.records_for(slot)
        && payload.len() >= GATHER_MIN
        && may_bypass(conn)
        && gather.record(header, payload)
    {
        return (Route::Gathered, Ok(()));
    }
    let direct_write = if lone {
        LONE_DIRECT_WRITE
    } else {
        DIRECT_WRITE
    };
    if payload.len() >= direct_write
        && !gather.holds_frames_for(slot)
        && conn.tls.is_none()
        && may_bypass(conn)
    {
        // A large frame with nothing queued ahead goes to the socket at
        // once, from where it lies: no copy into the output buffer.
        let written = write_direct(conn, header.as_bytes(), payload);
        conn.proto
            .send_encoded_after_direct_write(header, payload, written);
        return (Route::Direct, Ok(()));
    }
    (Route::Queued, conn.proto.send_encoded(header, payload, now))
}

/// Writes the bytes `fill` lists to `sink` until all `total` went out or
/// the sink would block: `fill(skip, slices)` puts the bytes from offset
/// `skip` on into at most `N` `slices` and returns how many it used.
/// Returns the bytes written and the error that stopped it, if one did.
/// The one write-until-`WouldBlock` loop of the plain-TCP paths; `N` is
/// a constant so that a one-piece write sets up one slice, not
/// [`MAX_SLICES`].
fn write_until_blocked<'a, W: Write, const N: usize>(
    sink: &mut W,
    total: usize,
    mut fill: impl FnMut(usize, &mut [IoSlice<'a>; N]) -> usize,
) -> (usize, Option<io::Error>) {
    let mut written = 0;
    while written < total {
        let mut slices = [IoSlice::new(&[]); N];
        let count = fill(written, &mut slices);
        // One piece: a plain write, the syscall it always was.
        let result = match &slices[..count] {
            [one] => sink.write(one),
            many => sink.write_vectored(many),
        };
        match result {
            Ok(0) => return (written, Some(io::ErrorKind::WriteZero.into())),
            Ok(n) => written += n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return (written, Some(error)),
        }
    }
    (written, None)
}

/// Records a failed write on `conn`: the next flush removes it (never in
/// the middle of handling its input).
fn write_failed(conn: &mut Socket, error: &io::Error) {
    log::debug!("{} {}: write error: {error}", conn.id, conn.peer);
    conn.write_failed = true;
}

/// Writes `header` then `payload` with vectored writes, as far as the
/// socket takes them; returns the bytes written.
fn write_direct(conn: &mut Socket, header: &[u8], payload: &[u8]) -> usize {
    let total = header.len() + payload.len();
    let (written, error) =
        write_until_blocked(&mut conn.stream, total, |skip, slices: &mut [_; 2]| {
            if skip < header.len() {
                slices[0] = IoSlice::new(&header[skip..]);
                slices[1] = IoSlice::new(payload);
                2
            } else {
                slices[0] = IoSlice::new(&payload[skip - header.len()..]);
                1
            }
        });
    if let Some(error) = error {
        write_failed(conn, &error);
    }
    written
}

/// Writes `conn`'s queued output until the socket would block (through
/// rustls on TLS, with close_notify after a closed connection's last
/// bytes).
pub(super) fn write_queued(conn: &mut Socket) {
    loop {
        top_up_body(conn);
        let before = conn.proto.pending_output_len();
        if conn.tls.is_some() {
            write_queued_tls(conn);
        } else {
            write_queued_plain(conn);
        }
        // A shared body slice taken whole makes room for the next; output
        // left pending means the socket is full.
        if conn.write_failed
            || conn.body_tail.is_none()
            || conn.proto.pending_output_len() > 0
            || before == 0
        {
            return;
        }
    }
}

/// A shared response body is moved into the output buffer this much at a
/// time, when less than a quarter of it is pending: a connection streaming
/// a large file holds about this much of it, not all of it.
const BODY_SLICE: usize = 256 * 1024;

/// Moves the next slice of a shared response body into the output buffer
/// when little is pending.
fn top_up_body(conn: &mut Socket) {
    let Some(tail) = conn.body_tail.as_mut() else {
        return;
    };
    if conn.proto.pending_output_len() >= BODY_SLICE / 4 {
        return;
    }
    let (body, queued) = &mut **tail;
    let end = queued.saturating_add(BODY_SLICE).min(body.len());
    conn.proto.queue_response_body(&body[*queued..end]);
    *queued = end;
    if end == body.len() {
        conn.body_tail = None;
    }
}

/// [`write_queued`] on a plain socket.
fn write_queued_plain(conn: &mut Socket) {
    let pending = conn.proto.poll_output();
    if conn.write_failed || pending.is_empty() {
        return;
    }
    let (written, error) = write_until_blocked(
        &mut conn.stream,
        pending.len(),
        |skip, slices: &mut [_; 1]| {
            slices[0] = IoSlice::new(&pending[skip..]);
            1
        },
    );
    if written > 0 {
        conn.proto.consume_output(written);
    }
    if let Some(error) = error {
        write_failed(conn, &error);
    }
}

/// [`write_queued`] through TLS.
fn write_queued_tls(conn: &mut Socket) {
    let Some(state) = conn.tls.as_mut() else {
        return;
    };
    if conn.proto.phase() == Phase::Closed
        && conn.proto.pending_output_len() == 0
        && conn.body_tail.is_none()
        && !state.close_notify_sent
    {
        state.session.send_close_notify();
        state.close_notify_sent = true;
    }
    match tls::write_tls(
        &mut state.session,
        &mut conn.stream,
        conn.proto.poll_output(),
    ) {
        Ok(taken) => {
            conn.proto.consume_output(taken);
            if conn.proto.phase() == Phase::Closed
                && conn.proto.pending_output_len() == 0
                && conn.body_tail.is_none()
                && !state.close_notify_sent
            {
                write_queued_tls(conn);
            }
        }
        Err(error) => {
            log::debug!("{} {}: TLS write error: {error}", conn.id, conn.peer);
            conn.write_failed = true;
        }
    }
}

/// Best effort after a TLS failure: the alert rustls queued, and nothing
/// else.
pub(super) fn write_tls_alert(conn: &mut Socket) {
    if let Some(state) = conn.tls.as_mut() {
        let _ = tls::write_tls(&mut state.session, &mut conn.stream, &[]);
    }
}

/// The bytes of `entries` (payloads in `input`) as pieces, leaving out the
/// first `skip` bytes.
pub(super) fn pieces<'a>(
    entries: &'a [Gathered],
    input: &'a [u8],
    mut skip: usize,
) -> impl Iterator<Item = &'a [u8]> {
    entries
        .iter()
        .flat_map(move |entry| {
            let payload = input.get(entry.payload.clone());
            debug_assert!(payload.is_some(), "a recorded range outside its read");
            [entry.header.as_bytes(), payload.unwrap_or_default()]
        })
        .filter_map(move |piece| {
            let cut = skip.min(piece.len());
            skip -= cut;
            (cut < piece.len()).then(|| &piece[cut..])
        })
}

/// Writes gathered `entries` (payloads in `input`) to `sink` until it
/// would block; returns the pieces it did not take, in order.
fn write_gathered_to<'a, W: Write>(
    sink: &mut W,
    entries: &'a [Gathered],
    input: &'a [u8],
) -> io::Result<Vec<&'a [u8]>> {
    let total = entries
        .iter()
        .map(|entry| entry.header.as_bytes().len() + entry.payload.len())
        .sum();
    let (written, error) =
        write_until_blocked(sink, total, |skip, slices: &mut [_; MAX_SLICES]| {
            let mut count = 0;
            for piece in pieces(entries, input, skip).take(slices.len()) {
                slices[count] = IoSlice::new(piece);
                count += 1;
            }
            count
        });
    match error {
        Some(error) => Err(error),
        None => Ok(pieces(entries, input, written).collect()),
    }
}

/// Writes gathered `entries` (payloads in `input`) to `conn` until the
/// socket would block, then queues what is left ahead of its pending
/// output.
pub(super) fn write_gathered(conn: &mut Socket, entries: &[Gathered], input: &[u8]) {
    match write_gathered_to(&mut conn.stream, entries, input) {
        Ok(rest) if rest.is_empty() => {}
        Ok(rest) => conn.proto.queue_ahead(&rest),
        Err(error) => write_failed(conn, &error),
    }
}

impl<H: Handler> Driver<H> {
    /// Writes the connection whose read is being processed before the end
    /// of the batch once enough waits: first the frames gathered from the
    /// read, then its output buffer (unless gathered frames still wait,
    /// which must go first).
    pub(super) fn write_early(&mut self, slot: usize, input: &[u8]) {
        if self.gather.recorded_len() >= self.gather_early_write {
            self.gather.write(self.conns.get_mut(slot), input);
        }
        if let Some(conn) = self.conns.get_mut(slot)
            && conn.proto.pending_output_len() >= self.early_write
            && !self.gather.holds_frames_for(slot)
        {
            write_queued(conn);
        }
    }

    /// Writes a connection's output right after its input was handled,
    /// so its peer is not kept waiting for the rest of the batch. Output
    /// the handler queued for other connections waits for the batch end,
    /// so a broadcast still costs one write per recipient.
    pub(super) fn flush_now(&mut self, slot: usize) -> Outcome {
        if self.conns.get(slot).is_some_and(|conn| conn.flush_queued) {
            return self.flush(slot);
        }
        Outcome::Live
    }

    /// Writes queued output once, as far as the socket takes it, and
    /// adjusts WRITABLE interest and read backpressure; shuts the sending
    /// side down after a closed connection's last byte.
    pub(super) fn flush(&mut self, slot: usize) -> Outcome {
        let Some(conn) = self.conns.get_mut(slot) else {
            return Outcome::Live;
        };
        conn.flush_queued = false;
        write_queued(conn);
        // Writing only shrinks what is held: never a reason to shed.
        self.budget.update(conn);
        if conn.write_failed {
            return Outcome::Done;
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
                .reregister(&mut conn.stream, Token(slot), interest)
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
            let _ = conn.stream.shutdown(Shutdown::Write);
            conn.write_shutdown = true;
            if conn.read_closed {
                return Outcome::Done;
            }
        }
        self.arm_timer(slot);
        Outcome::Live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::OpCode;

    /// A socket that takes at most `per_call` bytes per write and would
    /// block after `calls` writes.
    struct Trickle {
        taken: Vec<u8>,
        per_call: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.calls == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.calls -= 1;
            let mut room = self.per_call;
            for buf in bufs {
                let take = room.min(buf.len());
                self.taken.extend_from_slice(&buf[..take]);
                room -= take;
            }
            Ok(self.per_call - room)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A read holding `sizes.len()` client frames (a 14-byte masked header,
    /// the longest, before each payload), each payload recorded for
    /// sending; returns the read, the recorded frames, and their bytes in
    /// order.
    fn recorded(sizes: &[usize]) -> (Vec<u8>, Vec<Gathered>, Vec<u8>) {
        const CLIENT_HEADER: usize = 14;
        let total: usize = sizes.iter().map(|size| CLIENT_HEADER + size).sum();
        let input: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut gather = Gather::default();
        gather.start(0, &input);
        let mut expected = Vec::new();
        let mut start = 0;
        for &size in sizes {
            start += CLIENT_HEADER;
            let payload = &input[start..start + size];
            let header = EncodedHeader::new(true, 0, OpCode::Binary, size);
            assert!(gather.record(&header, payload));
            expected.extend_from_slice(header.as_bytes());
            expected.extend_from_slice(payload);
            start += size;
        }
        assert_eq!(gather.recorded_len(), expected.len());
        let entries = gather.entries().to_vec();
        (input, entries, expected)
    }

    #[test]
    fn what_the_socket_does_not_take_is_returned_in_order() {
        let (input, entries, expected) = recorded(&[5000, 130, 70_000, 4096, 1]);
        for per_call in [1, 3, 9, 10, 4000, 5009, 100_000] {
            for calls in [0, 1, 2, 5, 50] {
                let mut sink = Trickle {
                    taken: Vec::new(),
                    per_call,
                    calls,
                };
                let rest = write_gathered_to(&mut sink, &entries, &input).unwrap();
                let mut all = sink.taken.clone();
                all.extend(rest.iter().flat_map(|piece| piece.iter().copied()));
                assert_eq!(all, expected, "{per_call} bytes per call, {calls} calls");
                assert!(rest.iter().all(|piece| !piece.is_empty()));
            }
        }
    }

    /// What a [`Scripted`] socket does with one write.
    enum Step {
        Take,
        TakeNothing,
        Fail(io::ErrorKind),
    }

    /// A socket that answers its writes by `script`, in turn, and takes
    /// every write once the script ran out.
    struct Scripted {
        script: Vec<Step>,
        calls: usize,
    }

    impl Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let step = self.script.get(self.calls).unwrap_or(&Step::Take);
            self.calls += 1;
            match step {
                Step::Take => Ok(bufs.iter().map(|buf| buf.len()).sum()),
                Step::TakeNothing => Ok(0),
                Step::Fail(kind) => Err((*kind).into()),
            }
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_is_reported_and_an_interrupted_one_retried() {
        // Two writes' worth of frames, so a failure can come after the
        // first went out.
        let sizes = vec![4096; MAX_SLICES / 2 + 1];
        let (input, entries, _) = recorded(&sizes);
        let run = |script: Vec<Step>| {
            let mut sink = Scripted { script, calls: 0 };
            let result = write_gathered_to(&mut sink, &entries, &input).map(|rest| rest.len());
            (result, sink.calls)
        };
        // The peer went away after the first batch: the error comes back,
        // not a remainder to queue (the caller then drops the connection).
        let (result, calls) = run(vec![Step::Take, Step::Fail(io::ErrorKind::BrokenPipe)]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(calls, 2);
        // A socket that takes nothing without saying why fails too, at
        // once, instead of being asked again forever.
        let (result, calls) = run(vec![Step::TakeNothing]);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::WriteZero);
        assert_eq!(calls, 1);
        // A signal in the middle is tried again, and everything goes out.
        let (result, calls) = run(vec![Step::Take, Step::Fail(io::ErrorKind::Interrupted)]);
        assert_eq!(result.unwrap(), 0);
        assert_eq!(calls, 3);
    }

    #[test]
    fn more_frames_than_one_write_takes_all_go_out() {
        let sizes = vec![4096; 3 * MAX_SLICES / 2 + 1];
        let (input, entries, expected) = recorded(&sizes);
        let mut sink = Trickle {
            taken: Vec::new(),
            per_call: usize::MAX,
            calls: usize::MAX,
        };
        let rest = write_gathered_to(&mut sink, &entries, &input).unwrap();
        assert!(rest.is_empty());
        assert_eq!(sink.taken, expected);
    }

    #[test]
    fn one_piece_goes_out_whole_across_partial_writes() {
        // The queued-output and direct-write shapes of the same loop.
        let bytes: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for (per_call, calls) in [(1, 5), (999, 3), (4096, 50), (usize::MAX, 1)] {
            let mut sink = Trickle {
                taken: Vec::new(),
                per_call,
                calls,
            };
            let (written, error) =
                write_until_blocked(&mut sink, bytes.len(), |skip, slices: &mut [_; 1]| {
                    slices[0] = IoSlice::new(&bytes[skip..]);
                    1
                });
            assert!(error.is_none());
            assert_eq!(sink.taken, bytes[..written]);
            assert_eq!(written, bytes.len().min(per_call.saturating_mul(calls)));
        }
    }
}
