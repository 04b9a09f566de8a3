//! Connection deadlines on one thread: a min-heap of (instant, slot,
//! generation). Entries are never removed early; a popped entry whose
//! connection has moved its deadline just re-checks and re-arms, so a busy
//! connection costs no heap work per message.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Pending deadlines, earliest first.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, u32)>>,
}

impl Timers {
    /// Arms a check of connection `slot` (of `generation`) at `at`.
    pub fn schedule(&mut self, at: Instant, slot: usize, generation: u32) {
        self.heap.push(Reverse((at, slot, generation)));
    }

    /// The earliest armed instant.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pops one entry that is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, u32)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(entry)| entry),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.schedule(t0 + Duration::from_secs(3), 3, 0);
        timers.schedule(t0 + Duration::from_secs(1), 1, 0);
        timers.schedule(t0 + Duration::from_secs(2), 2, 7);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.pop_due(t0), None);
        let due: Vec<_> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_secs(2)))
            .map(|(_, slot, generation)| (slot, generation))
            .collect();
        assert_eq!(due, [(1, 0), (2, 7)]);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(3)));
    }
}
