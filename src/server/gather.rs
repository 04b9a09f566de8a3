//! Gathered writes: echoes whose payload still lies in the bytes just read
//! are written from there with one vectored write per read, instead of
//! being copied into the connection's output buffer first.
//!
//! While the loop processes one read of a plain-TCP connection, sends of
//! at least [`GATHER_MIN`] bytes to that same connection whose payload lies
//! inside the read are recorded here (header plus position in the read) as
//! long as nothing is queued in its output buffer. Anything queued later
//! (a pong, a close, a small or foreign message) is, by that rule, due
//! after every recorded frame, so the recorded frames go out first and
//! whatever part the socket does not take is queued ahead of the rest.

use std::io::{self, IoSlice, Write};
use std::ops::Range;

use super::conn::Conn;
use crate::proto::EncodedHeader;

/// Payloads at least this large are gathered rather than copied. Below it
/// a copy costs less than the extra pieces of the vectored write.
pub(crate) const GATHER_MIN: usize = 4 * 1024;

/// Frames per `writev` call (two pieces each), well below `IOV_MAX`.
const FRAMES_PER_WRITE: usize = 32;

/// One recorded frame: its header, and where its payload lies in the read.
#[derive(Debug, Clone)]
pub(crate) struct Gathered {
    pub header: EncodedHeader,
    pub payload: Range<usize>,
}

/// The frames recorded for the read being processed.
#[derive(Debug, Default)]
pub(crate) struct Gather {
    /// The connection whose read is being processed, while recording is
    /// allowed for it.
    slot: Option<usize>,
    /// Addresses of the read's first byte and one past its last.
    input: Range<usize>,
    entries: Vec<Gathered>,
    recorded_len: usize,
}

impl Gather {
    /// Starts recording for a read of connection `slot` held in `input`.
    pub fn start(&mut self, slot: usize, input: &[u8]) {
        let base = input.as_ptr() as usize;
        self.slot = Some(slot);
        self.input = base..base + input.len();
        self.entries.clear();
        self.recorded_len = 0;
    }

    /// Whether frames are being recorded for `slot`.
    pub fn records_for(&self, slot: usize) -> bool {
        self.slot == Some(slot)
    }

    /// Whether frames recorded for `slot` wait to be written: anything else
    /// for it must not be written before them.
    pub fn holds_frames_for(&self, slot: usize) -> bool {
        self.records_for(slot) && !self.entries.is_empty()
    }

    /// Records `payload` with `header` if it lies inside the read and the
    /// frames recorded so far, this one included, are no longer than the
    /// read (an echo's frames never are; a handler sending one payload
    /// many times would otherwise hold frames past the write limits);
    /// returns whether it did (if not, the caller queues the frame as
    /// usual).
    pub fn record(&mut self, header: &EncodedHeader, payload: &[u8]) -> bool {
        let start = payload.as_ptr() as usize;
        let inside = start >= self.input.start
            && start
                .checked_add(payload.len())
                .is_some_and(|end| end <= self.input.end);
        let frame_len = header.as_bytes().len() + payload.len();
        let input_len = self.input.end - self.input.start;
        if !inside || self.recorded_len + frame_len > input_len {
            return false;
        }
        let offset = start - self.input.start;
        self.recorded_len += frame_len;
        self.entries.push(Gathered {
            header: *header,
            payload: offset..offset + payload.len(),
        });
        true
    }

    /// Bytes of the frames recorded and not yet written.
    pub fn recorded_len(&self) -> usize {
        self.recorded_len
    }

    /// Writes the frames recorded so far to `conn` from `input` (the same
    /// read [`Gather::start`] was given), as far as the socket takes them;
    /// the rest is queued ahead of the connection's other output.
    /// Recording goes on; the caller records only while the output buffer
    /// is empty, so anything queued here stops it until that is written.
    pub fn write(&mut self, conn: Option<&mut Conn>, input: &[u8]) {
        if let Some(conn) = conn
            && !self.entries.is_empty()
        {
            write_gathered(conn, &self.entries, input);
        }
        self.entries.clear();
        self.recorded_len = 0;
    }

    /// [`Gather::write`], and recording ends.
    pub fn finish(&mut self, conn: Option<&mut Conn>, input: &[u8]) {
        self.write(conn, input);
        self.slot = None;
    }
}

/// The bytes of `entries` (payloads in `input`) as pieces, leaving out the
/// first `skip` bytes.
fn pieces<'a>(
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

/// Writes `entries` (payloads in `input`) until the socket would block,
/// then queues what is left ahead of the connection's pending output.
fn write_gathered(conn: &mut Conn, entries: &[Gathered], input: &[u8]) {
    match write_until_blocked(&mut conn.socket, entries, input) {
        Ok(rest) if rest.is_empty() => {}
        Ok(rest) => conn.proto.queue_ahead(&rest),
        Err(error) => {
            log::debug!("{} {}: write error: {error}", conn.id, conn.peer);
            conn.write_failed = true;
        }
    }
}

/// Writes `entries` (payloads in `input`) to `sink` until it would block;
/// returns the pieces it did not take, in order.
fn write_until_blocked<'a, W: Write>(
    sink: &mut W,
    entries: &'a [Gathered],
    input: &'a [u8],
) -> io::Result<Vec<&'a [u8]>> {
    let frame_len = |entry: &Gathered| entry.header.as_bytes().len() + entry.payload.len();
    // Next frame to write, and how much of it went out already.
    let mut next = 0;
    let mut done_in_next = 0;
    while next < entries.len() {
        let mut slices = [IoSlice::new(&[]); 2 * FRAMES_PER_WRITE];
        let mut count = 0;
        let batch = &entries[next..entries.len().min(next + FRAMES_PER_WRITE)];
        for piece in pieces(batch, input, done_in_next) {
            slices[count] = IoSlice::new(piece);
            count += 1;
        }
        match sink.write_vectored(&slices[..count]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut written) => {
                while written > 0 && next < entries.len() {
                    let left = frame_len(&entries[next]) - done_in_next;
                    if written >= left {
                        written -= left;
                        next += 1;
                        done_in_next = 0;
                    } else {
                        done_in_next += written;
                        written = 0;
                    }
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(pieces(&entries[next..], input, done_in_next).collect())
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
        let entries = gather.entries.clone();
        (input, entries, expected)
    }

    #[test]
    fn recording_stops_at_a_reads_worth_of_frames() {
        let input = vec![1u8; 10_000];
        let header = EncodedHeader::new(true, 0, OpCode::Binary, 6000);
        let mut gather = Gather::default();
        gather.start(0, &input);
        // The same payload twice would hold more than the read did.
        assert!(gather.record(&header, &input[..6000]));
        assert!(!gather.record(&header, &input[..6000]));
        assert_eq!(gather.recorded_len(), 6004);
    }

    #[test]
    fn only_payloads_inside_the_read_are_recorded() {
        let input = vec![7u8; 100];
        let elsewhere = vec![7u8; 10];
        let header = EncodedHeader::new(true, 0, OpCode::Binary, 10);
        let mut gather = Gather::default();
        gather.start(3, &input);
        assert!(gather.records_for(3) && !gather.records_for(4));
        assert!(!gather.record(&header, &elsewhere));
        assert!(!gather.holds_frames_for(3));
        assert!(gather.record(&header, &input[90..]));
        assert!(gather.holds_frames_for(3));
        assert_eq!(gather.entries[0].payload, 90..100);
        gather.finish(None, &input);
        assert!(!gather.records_for(3));
        assert_eq!(gather.recorded_len(), 0);
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
                let rest = write_until_blocked(&mut sink, &entries, &input).unwrap();
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
        // Two batches' worth of frames, so a failure can come after the
        // first went out.
        let sizes = vec![4096; FRAMES_PER_WRITE + 1];
        let (input, entries, _) = recorded(&sizes);
        let run = |script: Vec<Step>| {
            let mut sink = Scripted { script, calls: 0 };
            let result = write_until_blocked(&mut sink, &entries, &input).map(|rest| rest.len());
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
        let sizes = vec![4096; 3 * FRAMES_PER_WRITE + 1];
        let (input, entries, expected) = recorded(&sizes);
        let mut sink = Trickle {
            taken: Vec::new(),
            per_call: usize::MAX,
            calls: usize::MAX,
        };
        let rest = write_until_blocked(&mut sink, &entries, &input).unwrap();
        assert!(rest.is_empty());
        assert_eq!(sink.taken, expected);
    }
}
