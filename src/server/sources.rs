//! File descriptors the application asks the loop to watch besides its
//! connections, such as a child process's pipes or a pidfd, so that a
//! child's output reaches the handler as it comes without a thread per
//! child and without the loop ever blocking on one. Also the handler's
//! alarm: one wake-up time it may ask for, e.g. to batch output.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;

/// Tokens from here up name watched sources (source index = token − base);
/// connections use the slots below, the loop's own tokens the top few.
pub(crate) const SOURCE_TOKEN_BASE: usize = usize::MAX / 2;

/// Names one watched file descriptor for as long as it is watched. A slot
/// reused later gets a new generation, so a stale id never matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId {
    index: u32,
    generation: u32,
}

/// What to be told about a watched file descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// It has bytes to read, or its writer closed it.
    Readable,
    /// It can take more bytes.
    Writable,
}

#[derive(Debug)]
struct Slot {
    fd: RawFd,
    generation: u32,
}

/// The watched sources, the ones to call the handler for again on the
/// next turn, and the handler's alarm.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    slots: Slab<Slot>,
    next_generation: u32,
    /// Sources whose handler stopped before `WouldBlock` (its budget for
    /// one wake-up ran out): edge-triggered polling would not report them
    /// again, so the loop calls for them on its next turn itself.
    pub again: Vec<SourceId>,
    /// When the handler asked to be called (`on_alarm`), earliest first.
    pub alarm: Option<Instant>,
}

impl Sources {
    /// Registers `fd` with the poller, edge-triggered.
    pub fn watch(&mut self, registry: &Registry, fd: RawFd, watch: Watch) -> io::Result<SourceId> {
        let entry = self.slots.vacant_entry();
        let index = entry.key();
        let interest = match watch {
            Watch::Readable => Interest::READABLE,
            Watch::Writable => Interest::WRITABLE,
        };
        registry.register(
            &mut SourceFd(&fd),
            Token(SOURCE_TOKEN_BASE + index),
            interest,
        )?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        entry.insert(Slot { fd, generation });
        Ok(SourceId {
            index: index as u32,
            generation,
        })
    }

    /// Deregisters a watched source; unknown ids are ignored.
    pub fn unwatch(&mut self, registry: &Registry, id: SourceId) {
        if self.get(id).is_none() {
            return;
        }
        let slot = self.slots.remove(id.index as usize);
        if let Err(error) = registry.deregister(&mut SourceFd(&slot.fd)) {
            log::debug!("deregistering a watched source: {error}");
        }
        self.again.retain(|again| *again != id);
    }

    /// The id of the source registered under `token`, if it still is.
    pub fn id_for(&self, token: usize) -> Option<SourceId> {
        let index = token.checked_sub(SOURCE_TOKEN_BASE)?;
        let slot = self.slots.get(index)?;
        Some(SourceId {
            index: index as u32,
            generation: slot.generation,
        })
    }

    fn get(&self, id: SourceId) -> Option<&Slot> {
        self.slots
            .get(id.index as usize)
            .filter(|slot| slot.generation == id.generation)
    }

    /// Whether `id` is still watched.
    pub fn is_watched(&self, id: SourceId) -> bool {
        self.get(id).is_some()
    }

    /// Sets the alarm to `at` unless an earlier one is set.
    pub fn wake_at(&mut self, at: Instant) {
        self.alarm = Some(self.alarm.map_or(at, |set| set.min(at)));
    }

    /// Takes the alarm if it is due.
    pub fn take_due_alarm(&mut self, now: Instant) -> bool {
        if self.alarm.is_some_and(|at| at <= now) {
            self.alarm = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    #[test]
    fn a_watched_pipe_wakes_the_poller_under_its_token_until_unwatched() {
        let mut poll = mio::Poll::new().unwrap();
        let (mut sender, receiver) = mio::unix::pipe::new().unwrap();
        let mut sources = Sources::default();
        let id = sources
            .watch(poll.registry(), receiver.as_raw_fd(), Watch::Readable)
            .unwrap();
        sender.write_all(b"x").unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        let token = events.iter().next().expect("an event").token().0;
        assert_eq!(sources.id_for(token), Some(id));
        sources.unwatch(poll.registry(), id);
        assert!(!sources.is_watched(id));
        assert_eq!(sources.id_for(token), None);
        let again = sources
            .watch(poll.registry(), receiver.as_raw_fd(), Watch::Readable)
            .unwrap();
        assert_ne!(again, id, "a reused slot gets a new generation");
    }

    #[test]
    fn the_earliest_alarm_wins_and_fires_once() {
        let mut sources = Sources::default();
        let now = Instant::now();
        sources.wake_at(now + Duration::from_millis(50));
        sources.wake_at(now + Duration::from_millis(10));
        sources.wake_at(now + Duration::from_millis(90));
        assert_eq!(sources.alarm, Some(now + Duration::from_millis(10)));
        assert!(!sources.take_due_alarm(now));
        assert!(sources.take_due_alarm(now + Duration::from_millis(10)));
        assert!(!sources.take_due_alarm(now + Duration::from_millis(100)));
    }
}
