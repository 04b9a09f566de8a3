//! permessage-deflate (RFC 7692) for the load generator: compressing the one
//! message it sends, and inflating the server's compressed echoes.
//!
//! The client offers `client_no_context_takeover`, so each message it sends
//! is compressed from a fresh state and every send is the same bytes: the
//! message is compressed once, up front. The server may take context over,
//! so each connection keeps one inflater for all the echoes it receives,
//! in order, and never resets it between messages.

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The bytes a sync flush ends with: stripped from a compressed message
/// (RFC 7692 §7.2.1) and appended again before inflating one (§7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses `payload` as one permessage-deflate message: raw DEFLATE
/// (no zlib header), sync flush, tail stripped.
pub fn compress_message(payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = compress.total_in();
        compress
            .compress_vec(input, &mut out, FlushCompress::Sync)
            .map_err(io::Error::other)?;
        input = &input[(compress.total_in() - before) as usize..];
        // The flush is complete once everything is taken and room is left.
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    if !out.ends_with(&SYNC_TAIL) {
        return Err(io::Error::other("sync flush did not end with 00 00 ff ff"));
    }
    out.truncate(out.len() - SYNC_TAIL.len());
    Ok(out)
}

/// One connection's inflater for compressed echoes: the compressed payload
/// of the current echo is collected frame by frame, then inflated at FIN
/// and compared with the message sent.
pub struct EchoInflater {
    decompress: Decompress,
    /// Compressed payload of the current echo, then its sync tail.
    input: Vec<u8>,
    /// Inflated echo: one byte longer than the message, to see a longer echo.
    output: Box<[u8]>,
    /// Compressed payload bigger than this is refused (a broken server).
    max_input: usize,
}

impl EchoInflater {
    /// An inflater for echoes of a `message_len`-byte message.
    pub fn new(message_len: usize) -> EchoInflater {
        EchoInflater {
            decompress: Decompress::new(false),
            input: Vec::with_capacity(message_len / 2 + 64),
            output: vec![0u8; message_len + 1].into_boxed_slice(),
            // Stored blocks cost 5 bytes per 64 KiB: anything far beyond
            // the message itself is not a compressed echo of it.
            max_input: message_len + message_len / 8 + 1024,
        }
    }

    /// A compressed echo starts (RSV1 on its first frame).
    pub fn start(&mut self) {
        self.input.clear();
    }

    /// Appends compressed payload bytes of the current echo.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        if self.input.len() + bytes.len() > self.max_input {
            return Err("compressed echo far longer than the message sent");
        }
        self.input.extend_from_slice(bytes);
        Ok(())
    }

    /// The echo is complete: inflates it and compares it with `expected`.
    /// Returns the compressed payload length (without the sync tail).
    pub fn finish(&mut self, expected: &[u8]) -> Result<usize, &'static str> {
        let compressed = self.input.len();
        self.input.extend_from_slice(&SYNC_TAIL);
        let mut input = &self.input[..];
        let mut produced = 0;
        // The output has room for one byte more than expected.
        let room = (expected.len() + 1).min(self.output.len());
        loop {
            let (in_before, out_before) = (self.decompress.total_in(), self.decompress.total_out());
            let status = self
                .decompress
                .decompress(
                    input,
                    &mut self.output[produced..room],
                    FlushDecompress::Sync,
                )
                .map_err(|_| "invalid compressed echo")?;
            let consumed = (self.decompress.total_in() - in_before) as usize;
            let wrote = (self.decompress.total_out() - out_before) as usize;
            input = &input[consumed..];
            produced += wrote;
            if produced > expected.len() {
                return Err("echo longer than the message sent");
            }
            match status {
                // The server ended its stream (BFINAL): its next message
                // starts a new one. Whatever is left is the sync tail.
                Status::StreamEnd => {
                    self.decompress.reset(false);
                    break;
                }
                // Everything taken and room left over: nothing is pending.
                _ if input.is_empty() && produced < room => break,
                _ if consumed == 0 && wrote == 0 => return Err("invalid compressed echo"),
                _ => {}
            }
        }
        if self.output[..produced] != *expected {
            return Err(if produced < expected.len() {
                "echo shorter than the message sent"
            } else {
                "echo payload differs from the message sent"
            });
        }
        Ok(compressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::text_payload;

    /// What a server with context takeover sends: one compressor, sync
    /// flushes, tails stripped.
    fn server_messages(payload: &[u8], count: usize) -> Vec<Vec<u8>> {
        let mut compress = Compress::new(Compression::fast(), false);
        (0..count)
            .map(|_| {
                let mut out = Vec::with_capacity(payload.len() + 64);
                let before = compress.total_in();
                compress
                    .compress_vec(payload, &mut out, FlushCompress::Sync)
                    .unwrap();
                assert_eq!(compress.total_in() - before, payload.len() as u64);
                assert!(out.ends_with(&SYNC_TAIL));
                out.truncate(out.len() - 4);
                out
            })
            .collect()
    }

    #[test]
    fn the_text_payload_compresses_like_json() {
        // Small messages have less to refer back to, like real JSON.
        for (len, ratios) in [(1024, 1.8..4.0), (16384, 3.0..5.0)] {
            let payload = text_payload(len);
            assert_eq!(payload.len(), len);
            assert!(std::str::from_utf8(&payload).is_ok());
            assert_eq!(payload, text_payload(len), "deterministic");
            let compressed = compress_message(&payload).unwrap();
            let ratio = len as f64 / compressed.len() as f64;
            assert!(ratios.contains(&ratio), "{len}: ratio {ratio:.2}");
        }
    }

    #[test]
    fn echoes_with_context_takeover_inflate_in_order() {
        let payload = text_payload(16384);
        let mut inflater = EchoInflater::new(payload.len());
        let messages = server_messages(&payload, 3);
        assert!(messages[1].len() < messages[0].len(), "context takeover");
        for message in &messages {
            inflater.start();
            for part in message.chunks(1000) {
                inflater.push(part).unwrap();
            }
            assert_eq!(inflater.finish(&payload), Ok(message.len()));
        }
    }

    #[test]
    fn our_message_inflates_and_wrong_echoes_are_caught() {
        let payload = text_payload(1024);
        let message = compress_message(&payload).unwrap();
        let mut inflater = EchoInflater::new(payload.len());
        inflater.start();
        inflater.push(&message).unwrap();
        assert!(inflater.finish(&payload).is_ok());

        let mut other = payload.clone();
        other[500] ^= 1;
        let mut inflater = EchoInflater::new(payload.len());
        inflater.start();
        inflater.push(&compress_message(&other).unwrap()).unwrap();
        assert!(inflater.finish(&payload).is_err());

        let mut inflater = EchoInflater::new(payload.len());
        inflater.start();
        inflater.push(&[0xff; 64]).unwrap();
        assert!(inflater.finish(&payload).is_err());

        let longer = text_payload(1100);
        let mut inflater = EchoInflater::new(payload.len());
        inflater.start();
        inflater.push(&compress_message(&longer).unwrap()).unwrap();
        assert_eq!(
            inflater.finish(&payload),
            Err("echo longer than the message sent")
        );
    }
}
