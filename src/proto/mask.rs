//! XOR masking of frame payloads (RFC 6455 §5.3), a machine word at a time.

/// Payloads at least this long are masked from an aligned address on: the
/// bytes before it one at a time, the rest a word at a time. (Below it the
/// bytes before the boundary cost what the alignment saves.)
const ALIGN_FROM_LEN: usize = 1024;
/// The alignment the word loop starts at, so that its vector loads and
/// stores never straddle a cache line. A payload starts wherever its header
/// ends (14 bytes into a client frame with a 64-bit length); masked from
/// there as it lies, 16 KiB and 256 KiB payloads went about a third slower
/// (`cargo bench --bench micro -- unmask`).
const CHUNK_ALIGN: usize = 16;

/// XORs `buf` with the 4-byte masking `key`, where `buf[0]` is byte number
/// `offset` of the frame payload. Applying it twice restores the input, so
/// it both masks and unmasks; `offset` lets a payload be unmasked in pieces
/// as it arrives.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let head_len = if buf.len() < ALIGN_FROM_LEN {
        0
    } else {
        buf.as_ptr().addr().wrapping_neg() % CHUNK_ALIGN
    };
    let (head, body) = buf.split_at_mut(head_len);
    mask_bytes(head, key_from(key, offset));
    mask_chunks(body, key_from(key, offset + head_len));
}

/// The key as it applies from payload byte `offset` on: byte `i` of the
/// result masks byte `offset + i` (mod 4).
#[inline(always)]
fn key_from(key: [u8; 4], offset: usize) -> [u8; 4] {
    let shift = (offset % 4) as u32;
    u32::from_le_bytes(key)
        .rotate_right(8 * shift)
        .to_le_bytes()
}

/// Masks `buf` one byte at a time with a key already rotated to its start.
#[inline(always)]
fn mask_bytes(buf: &mut [u8], key: [u8; 4]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Masks `buf` eight bytes at a time (the compiler turns the loop into
/// vector instructions) with a key already rotated to its start.
#[inline(always)]
fn mask_chunks(buf: &mut [u8], key: [u8; 4]) {
    let key32 = u64::from(u32::from_le_bytes(key));
    let key64 = key32 | key32 << 32;
    // Every chunk starts a multiple of 8 bytes on, so one key serves all.
    let (chunks, tail) = buf.as_chunks_mut::<8>();
    for chunk in chunks {
        *chunk = (u64::from_le_bytes(*chunk) ^ key64).to_le_bytes();
    }
    mask_bytes(tail, key);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn matches_bytewise_masking_for_all_lengths_and_offsets() {
        let key = [0x12, 0x34, 0x56, 0x78];
        // Every start within a word-loop alignment, so the aligned head
        // takes each of its lengths, on either side of ALIGN_FROM_LEN.
        for start in 0..CHUNK_ALIGN {
            for len in (0..80).chain(ALIGN_FROM_LEN - 40..ALIGN_FROM_LEN + 40) {
                for offset in 0..8 {
                    let original: Vec<u8> = (0..start + len).map(|i| (i * 7 + 3) as u8).collect();
                    let mut fast = original.clone();
                    let mut slow = original.clone();
                    apply_mask(&mut fast[start..], key, offset);
                    naive(&mut slow[start..], key, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                    apply_mask(&mut fast[start..], key, offset);
                    assert_eq!(fast, original);
                }
            }
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let key = [0xde, 0xad, 0xbe, 0xef];
        let original: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, key, 0);
        let mut pieces = original.clone();
        let mut start = 0;
        for piece in [1, 2, 3, 5, 8, 13, 100, 868] {
            apply_mask(&mut pieces[start..start + piece], key, start);
            start += piece;
        }
        assert_eq!(whole, pieces);
    }
}
