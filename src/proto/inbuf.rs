//! A connection's receive buffer for bytes that could not be processed yet
//! (a partial request head or frame). It grows as bytes arrive, never from a
//! length the peer declared, and is released when empty.

/// Receive bytes kept between reads: `buf[start..end]` is unprocessed data.
///
/// `buf` is kept fully initialized (its `len` is its usable size) so reads
/// can go straight into the spare tail without zeroing it every time.
#[derive(Debug, Default)]
pub struct InBuffer {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl InBuffer {
    /// Whether no unprocessed bytes are held.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Number of unprocessed bytes.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Heap bytes held.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes the buffer can hold without growing.
    pub fn usable_size(&self) -> usize {
        self.buf.len()
    }

    /// The unprocessed bytes, for in-place decoding.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    /// Marks `n` bytes at the front as processed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Appends bytes left over from a shared read buffer.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let spare = self.spare_mut(bytes.len(), usize::MAX);
        spare[..bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Free space after the data to read into: at least `want` bytes unless
    /// that would take the buffer past `max_total` (then whatever is left,
    /// possibly nothing). Call [`InBuffer::commit`] with what was filled.
    pub fn spare_mut(&mut self, want: usize, max_total: usize) -> &mut [u8] {
        if self.buf.len() - self.end < want && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < want {
            let needed = self.end.saturating_add(want);
            let grown = needed
                .max(self.buf.len() * 2)
                .min(max_total.max(self.buf.len()));
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into the spare space.
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// Frees the memory if no data is held.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.buf = Vec::new();
        }
    }

    /// Frees the memory if no data is held and more than `keep` bytes are
    /// allocated: a busy connection keeps a moderate buffer, a burst of
    /// large frames does not pin a large one.
    pub fn release_if_empty_over(&mut self, keep: usize) {
        if self.buf.capacity() > keep {
            self.release_if_empty();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_data_in_order_across_consume_and_growth() {
        let mut b = InBuffer::default();
        b.extend_from_slice(b"hello ");
        b.consume(2);
        let spare = b.spare_mut(16, 1024);
        spare[..5].copy_from_slice(b"world");
        b.commit(5);
        assert_eq!(b.data_mut(), b"llo world");
        b.consume(9);
        assert!(b.is_empty());
        b.release_if_empty();
        assert_eq!(b.capacity(), 0);
    }

    #[test]
    fn growth_stops_at_the_cap() {
        let mut b = InBuffer::default();
        let spare = b.spare_mut(64, 100);
        assert_eq!(spare.len(), 64);
        b.commit(64);
        let spare = b.spare_mut(64, 100);
        assert_eq!(spare.len(), 36);
        b.commit(36);
        assert!(b.spare_mut(64, 100).is_empty());
        assert_eq!(b.len(), 100);
    }
}
