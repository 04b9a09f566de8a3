//! Message compression for permessage-deflate (RFC 7692 §7.2): raw DEFLATE
//! through flate2, with the `00 00 ff ff` tail of a sync flush stripped on
//! send and appended on receive.
//!
//! Memory is the reason for most of the shape here. An inflater holds the
//! client's window (2^bits bytes) plus zlib's state, and is created on the
//! first compressed message; a compressor is far larger (its window, hash
//! chains and pending buffer: a few hundred KiB at 15 bits), so it is created
//! on the first compressed send, dropped when the connection goes quiet, and
//! when the server does not take context over it is borrowed from a
//! [`DeflaterPool`] shared by every such connection.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::error::ProtocolError;

/// The bytes a sync flush ends with; stripped from every compressed message
/// (RFC 7692 §7.2.1) and appended before inflating one (§7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compression level for outgoing messages. Level 1 costs a fraction of the
/// default level's CPU and still shrinks JSON several times over: the right
/// trade for a low-latency server.
const LEVEL: u32 = 1;

/// Output growth step while inflating, so memory follows what was actually
/// inflated instead of a guess.
const INFLATE_STEP: usize = 16 * 1024;

/// One direction of compressed messages from the peer.
pub struct Inflater {
    decompress: Decompress,
    /// The stream ended with a BFINAL block: the next message starts a new
    /// stream.
    stream_ended: bool,
    /// Compressed bytes were seen in the current message.
    message_started: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("stream_ended", &self.stream_ended)
            .finish_non_exhaustive()
    }
}

/// What one call to [`Inflater::inflate_some`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inflated {
    /// Input bytes used up; the rest must be offered again.
    pub used: usize,
    /// The input is used up and nothing of it is held back inside the
    /// inflater: the output is complete up to the end of the input.
    pub done: bool,
}

impl Inflater {
    /// An inflater for a peer compressing with at most `window_bits` (9-15).
    pub fn new(window_bits: u8) -> Inflater {
        Inflater {
            decompress: Decompress::new_with_window_bits(false, window_bits.clamp(9, 15)),
            stream_ended: false,
            message_started: false,
        }
    }

    /// Inflates one fragment's compressed bytes, appending to `out`, which
    /// may never grow past `max_len` bytes: a message inflating to more
    /// fails with [`ProtocolError::MessageTooLarge`] as soon as the output
    /// passes the limit, so a small bomb never costs more than the limit.
    pub fn inflate(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        self.inflate_some(input, out, max_len, usize::MAX)
            .map(|_| ())
    }

    /// [`Inflater::inflate`], stopping once `out` has grown by `budget`
    /// bytes (a call never writes more than that), so a message that
    /// inflates to megabytes can be inflated a slice at a time with other
    /// work in between. Offer the unused input (and, when it was all used
    /// but the result is not `done`, nothing) again to go on.
    pub fn inflate_some(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_len: usize,
        budget: usize,
    ) -> Result<Inflated, ProtocolError> {
        self.message_started |= !input.is_empty();
        if self.stream_ended {
            return after_final_block(input);
        }
        let stop_at = out.len().saturating_add(budget);
        let mut used = 0;
        loop {
            if out.len() >= stop_at {
                return Ok(Inflated { used, done: false });
            }
            if out.len() == out.capacity() {
                if out.len() > max_len {
                    return Err(ProtocolError::MessageTooLarge);
                }
                // One byte of room past the limit, to see a message
                // that does not stop there.
                let room = INFLATE_STEP
                    .max(out.len() / 2)
                    .min(max_len.saturating_add(1) - out.len());
                out.reserve_exact(room);
            }
            // Only the part of the spare capacity the budget allows is
            // handed to zlib, which is what bounds a step's output.
            let start = out.len();
            let room = (out.capacity() - start).min(stop_at - start);
            let (in_before, out_before) = (self.decompress.total_in(), self.decompress.total_out());
            let result = self.decompress.decompress_uninit(
                &input[used..],
                &mut out.spare_capacity_mut()[..room],
                FlushDecompress::Sync,
            );
            let produced = ((self.decompress.total_out() - out_before) as usize).min(room);
            // SAFETY: zlib wrote `produced` bytes (its output count) to the
            // front of the `room` bytes of spare capacity it was given, so
            // the first `start + produced` bytes are initialized and within
            // the capacity: flate2's own `decompress_vec`, on a shorter
            // slice. Zeroing the room first instead (safe) made inflating
            // JSON 10-13% slower in the `decode_compressed` bench.
            unsafe { out.set_len(start + produced) };
            let status = result.map_err(|_| ProtocolError::InvalidCompressedData)?;
            let consumed = (self.decompress.total_in() - in_before) as usize;
            used += consumed;
            if out.len() > max_len {
                return Err(ProtocolError::MessageTooLarge);
            }
            match status {
                Status::StreamEnd => {
                    self.stream_ended = true;
                    return after_final_block(&input[used..]).map(|_| Inflated {
                        used: input.len(),
                        done: true,
                    });
                }
                // Everything taken and room left over: nothing is pending.
                _ if used == input.len() && produced < room => {
                    return Ok(Inflated { used, done: true });
                }
                _ if consumed == 0 && produced == 0 => {
                    return Err(ProtocolError::InvalidCompressedData);
                }
                _ => {}
            }
        }
    }

    /// Ends a message: inflates the sync-flush tail and, when the peer does
    /// not take context over (or its stream ended), starts afresh.
    pub fn finish_message(
        &mut self,
        out: &mut Vec<u8>,
        max_len: usize,
        reset: bool,
    ) -> Result<(), ProtocolError> {
        // A message with no compressed bytes at all is empty (RFC 7692
        // wants one 0x00 octet, but nothing is all it can mean): the tail
        // alone would not parse.
        if !self.stream_ended && self.message_started {
            self.inflate(&SYNC_TAIL, out, max_len)?;
        }
        self.message_started = false;
        if reset || self.stream_ended {
            self.decompress.reset(false);
            self.stream_ended = false;
        }
        Ok(())
    }
}

/// Input after a final (BFINAL) block: only padding may follow.
fn after_final_block(input: &[u8]) -> Result<Inflated, ProtocolError> {
    if input.iter().all(|&b| b == 0) {
        Ok(Inflated {
            used: input.len(),
            done: true,
        })
    } else {
        Err(ProtocolError::InvalidCompressedData)
    }
}

/// One compressor for outgoing messages.
pub struct Deflater {
    compress: Compress,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// A compressor with a `window_bits` (9-15) window.
    pub fn new(window_bits: u8) -> Deflater {
        Deflater::with_level(window_bits, LEVEL)
    }

    /// A compressor at zlib `level` (0-9) rather than the server's fast
    /// one: 9 packs 15 MiB of zeros into 15 KB, as a hostile client would,
    /// which is what tests and benchmarks of the inflating side want.
    pub fn with_level(window_bits: u8, level: u32) -> Deflater {
        Deflater {
            compress: Compress::new_with_window_bits(
                Compression::new(level.min(9)),
                false,
                window_bits.clamp(9, 15),
            ),
        }
    }

    /// Compresses one whole message into `out` (cleared first), as the
    /// payload of a frame with RSV1 set. With `reset`, the next message
    /// refers to nothing before it (no context takeover): a full flush
    /// does that, and costs less than resetting the compressor.
    ///
    /// `false` (zlib refused, which raw deflate into a buffer with room
    /// never should) means: send the message uncompressed. The compressor
    /// then starts afresh, which the peer's inflater never notices.
    #[must_use]
    pub fn compress_message(&mut self, payload: &[u8], out: &mut Vec<u8>, reset: bool) -> bool {
        out.clear();
        out.reserve(payload.len() / 2 + 64);
        let flush = if reset {
            FlushCompress::Full
        } else {
            FlushCompress::Sync
        };
        let mut input = payload;
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let before = self.compress.total_in();
            if self.compress.compress_vec(input, out, flush).is_err() {
                self.compress.reset();
                return false;
            }
            input = &input[(self.compress.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&SYNC_TAIL) {
            out.truncate(out.len() - SYNC_TAIL.len());
        }
        if out.is_empty() {
            // Nothing was pending (an empty message right after a flush):
            // RFC 7692 §7.2.1 still wants the header octet of an empty
            // stored block, which is 0x00 once the tail is removed.
            out.push(0x00);
        }
        true
    }
}

/// Compressors shared by connections whose server side takes no context
/// over (each message compresses from a fresh state, so any compressor
/// of the right window size will do): one per window size, made on first
/// use. The loop is single-threaded, so sharing needs no locking.
#[derive(Debug, Default)]
pub struct DeflaterPool {
    by_window_bits: [Option<Box<Deflater>>; 7],
}

impl DeflaterPool {
    /// The shared compressor for `window_bits` (9-15).
    pub fn get(&mut self, window_bits: u8) -> &mut Deflater {
        let bits = window_bits.clamp(9, 15);
        self.by_window_bits[usize::from(bits - 9)]
            .get_or_insert_with(|| Box::new(Deflater::new(bits)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(deflater: &mut Deflater, text: &[u8], reset: bool) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(deflater.compress_message(text, &mut out, reset));
        out
    }

    fn inflate(inflater: &mut Inflater, parts: &[&[u8]], reset: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            inflater.inflate(part, &mut out, 1 << 20).unwrap();
        }
        inflater.finish_message(&mut out, 1 << 20, reset).unwrap();
        out
    }

    #[test]
    fn the_rfc_example_inflates() {
        // RFC 7692 §7.2.3.1: "Hello" compressed.
        let wire = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut inflater = Inflater::new(15);
        assert_eq!(inflate(&mut inflater, &[&wire], false), b"Hello");
        // §7.2.3.2: the same message again, referring to the first.
        let again = [0xf2, 0x00, 0x11, 0x00, 0x00];
        assert_eq!(inflate(&mut inflater, &[&again], false), b"Hello");
        // §7.2.3.3: a message in a stored (uncompressed) block.
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&mut Inflater::new(15), &[&stored], false), b"Hello");
        // §7.2.3.4: a message ending in a final (BFINAL) block.
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut inflater = Inflater::new(15);
        assert_eq!(inflate(&mut inflater, &[&last], false), b"Hello");
        assert_eq!(inflate(&mut inflater, &[&wire], false), b"Hello");
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        let text = br#"{"op":"PARAGRAPH","data":{"paragraph":{"status":"FINISHED"}}}"#;
        for reset in [false, true] {
            let mut deflater = Deflater::new(15);
            let mut inflater = Inflater::new(15);
            let first = compress(&mut deflater, text, reset);
            let second = compress(&mut deflater, text, reset);
            assert!(!first.ends_with(&SYNC_TAIL));
            if reset {
                assert_eq!(first, second, "no context: each message stands alone");
            } else {
                assert!(second.len() < first.len(), "context makes repeats cheap");
            }
            assert_eq!(inflate(&mut inflater, &[&first], reset), text);
            assert_eq!(inflate(&mut inflater, &[&second], reset), text);
        }
    }

    #[test]
    fn a_message_split_anywhere_inflates_the_same() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let wire = compress(&mut Deflater::new(15), &text, true);
        for split in [1, 7, wire.len() / 2, wire.len() - 1] {
            let (a, b) = wire.split_at(split);
            assert_eq!(inflate(&mut Inflater::new(15), &[a, b], true), text);
        }
    }

    #[test]
    fn slices_never_outgrow_their_budget_and_add_up_to_the_message() {
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{{\"n\":{}}},", i % 977).into_bytes())
            .collect();
        let wire = compress(&mut Deflater::new(15), &text, true);
        for budget in [1, 7, 4096, 64 * 1024, 300_000] {
            let mut inflater = Inflater::new(15);
            let mut out = Vec::new();
            let mut input = &wire[..];
            let mut calls = 0;
            loop {
                let before = out.len();
                let step = inflater
                    .inflate_some(input, &mut out, usize::MAX, budget)
                    .unwrap();
                calls += 1;
                assert!(out.len() - before <= budget, "budget {budget}");
                input = &input[step.used..];
                if step.done {
                    break;
                }
            }
            assert!(input.is_empty());
            inflater.finish_message(&mut out, usize::MAX, true).unwrap();
            assert!(out == text, "budget {budget}");
            assert!(
                calls >= text.len() / budget,
                "budget {budget}: {calls} calls"
            );
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 * 1024 * 1024];
        let wire = compress(&mut Deflater::new(15), &zeros, true);
        assert!(wire.len() < zeros.len() / 50, "{} bytes", wire.len());
        let mut out = Vec::new();
        let limit = 1024 * 1024;
        let result = Inflater::new(15).inflate(&wire, &mut out, limit);
        assert_eq!(result, Err(ProtocolError::MessageTooLarge));
        assert!(out.capacity() <= limit + 1, "grew to {}", out.capacity());
    }

    #[test]
    fn empty_messages_round_trip_back_to_back() {
        // Found by fuzzing: a second empty message compressed to nothing.
        for reset in [false, true] {
            let mut deflater = Deflater::new(10);
            let mut inflater = Inflater::new(10);
            for text in [&b""[..], b"", b"after two empty ones", b""] {
                let wire = compress(&mut deflater, text, reset);
                assert!(!wire.is_empty(), "RFC 7692 wants at least one octet");
                assert_eq!(inflate(&mut inflater, &[&wire], reset), text);
            }
        }
        // Leniency: a peer's empty compressed payload is an empty message.
        let mut inflater = Inflater::new(15);
        assert_eq!(inflate(&mut inflater, &[], false), b"");
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(inflate(&mut inflater, &[&hello], false), b"Hello");
    }

    #[test]
    fn data_after_a_final_block_is_refused() {
        let last = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut out = Vec::new();
        assert_eq!(Inflater::new(15).inflate(&last, &mut out, 1 << 20), Ok(()));
        let mut trailing = last.to_vec();
        trailing.push(0x42);
        let mut out = Vec::new();
        assert_eq!(
            Inflater::new(15).inflate(&trailing, &mut out, 1 << 20),
            Err(ProtocolError::InvalidCompressedData)
        );
        // A limit at the top of usize does not overflow.
        let mut out = Vec::new();
        assert_eq!(
            Inflater::new(15).inflate(&last, &mut out, usize::MAX),
            Ok(())
        );
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut out = Vec::new();
        let result = Inflater::new(15).inflate(&[0xff; 64], &mut out, 1 << 20);
        assert_eq!(result, Err(ProtocolError::InvalidCompressedData));
    }

    #[test]
    fn small_windows_round_trip() {
        let text = "window ".repeat(500);
        let mut deflater = Deflater::new(9);
        let wire = compress(&mut deflater, text.as_bytes(), false);
        assert_eq!(
            inflate(&mut Inflater::new(9), &[&wire], false),
            text.as_bytes()
        );
        let mut pool = DeflaterPool::default();
        let shared = compress(pool.get(9), text.as_bytes(), true);
        assert_eq!(
            inflate(&mut Inflater::new(9), &[&shared], true),
            text.as_bytes()
        );
    }
}
