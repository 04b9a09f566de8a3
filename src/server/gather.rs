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

use std::ops::Range;

use super::socket::Socket;
use super::write::write_gathered;
use crate::proto::EncodedHeader;

/// Payloads at least this large are gathered rather than copied. Below it
/// a copy costs less than the extra pieces of the vectored write.
pub(crate) const GATHER_MIN: usize = 4 * 1024;

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

    /// The frames recorded and not yet written.
    #[cfg(test)]
    pub fn entries(&self) -> &[Gathered] {
        &self.entries
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
    pub fn write(&mut self, conn: Option<&mut Socket>, input: &[u8]) {
        if let Some(conn) = conn
            && !self.entries.is_empty()
        {
            write_gathered(conn, &self.entries, input);
        }
        self.entries.clear();
        self.recorded_len = 0;
    }

    /// [`Gather::write`], and recording ends.
    pub fn finish(&mut self, conn: Option<&mut Socket>, input: &[u8]) {
        self.write(conn, input);
        self.slot = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::OpCode;

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
}
