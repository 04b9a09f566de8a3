//! UTF-8 validation of text that arrives in pieces (partial frames and
//! fragments), failing at the first byte that cannot start or continue a
//! valid sequence rather than at the end of the message.

use super::error::ProtocolError;

/// Incremental UTF-8 validator. Feed it consecutive pieces of one text
/// message, then call [`Utf8Validator::finish`] when the message ends.
///
/// Only the up-to-3-byte tail of an unfinished code point is kept between
/// pieces; validation itself is std's (word-at-a-time ASCII fast path).
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// Width of the sequence a lead byte starts. Only called on a lead byte std
/// already accepted as the start of a valid prefix.
fn sequence_width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// Validates the next piece. Errors as soon as the bytes seen so far
    /// cannot be the prefix of valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), ProtocolError> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_width(self.pending[0]);
            let take = (need - have).min(input.len());
            self.pending[have..have + take].copy_from_slice(&input[..take]);
            let filled = have + take;
            self.pending_len = filled as u8;
            match std::str::from_utf8(&self.pending[..filled]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()),
                Err(_) => return Err(ProtocolError::InvalidUtf8),
            }
            input = &input[take..];
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Ends the message: errors if it stopped inside a code point. The
    /// validator is ready for the next message afterwards.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(ProtocolError::InvalidUtf8)
        }
    }

    /// Whether no partial code point is pending.
    pub fn is_at_boundary(&self) -> bool {
        self.pending_len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_in_pieces(bytes: &[u8], piece: usize) -> Result<(), ProtocolError> {
        let mut v = Utf8Validator::default();
        for chunk in bytes.chunks(piece.max(1)) {
            v.feed(chunk)?;
        }
        v.finish()
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        let samples: &[&[u8]] = &[
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "\u{10FFFF}\u{FFFF}\u{7FF}a".as_bytes(),
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
            b"\xf4\x90\x80\x80",
            b"\xc0\xaf",
            b"\xe0\x80\xaf",
            b"abc\xf0\x9f\x98",
            b"\x80",
            b"\xed\x9f\xbf",
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for piece in 1..=sample.len().max(1) {
                assert_eq!(
                    validate_in_pieces(sample, piece).is_ok(),
                    expected,
                    "{sample:x?} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn fails_fast_on_the_first_impossible_byte() {
        let mut v = Utf8Validator::default();
        v.feed("κόσμε".as_bytes()).unwrap();
        // 0xED 0xA0 starts a UTF-16 surrogate: invalid before the sequence ends.
        assert_eq!(v.feed(b"\xed\xa0"), Err(ProtocolError::InvalidUtf8));
        let mut v = Utf8Validator::default();
        v.feed(b"\xf4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn incomplete_sequence_at_the_end_fails_finish_and_resets() {
        let mut v = Utf8Validator::default();
        v.feed(b"ok\xe2\x82").unwrap();
        assert!(!v.is_at_boundary());
        assert_eq!(v.finish(), Err(ProtocolError::InvalidUtf8));
        assert!(v.is_at_boundary());
        v.feed(b"fine").unwrap();
        assert_eq!(v.finish(), Ok(()));
    }
}
