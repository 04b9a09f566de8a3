//! Per-address limits: how many sockets one client address may hold, and
//! how many of them may be in their opening handshake; and, for the socket
//! limit, the order in which handshakes began.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::handler::ConnectionId;

/// What the per-address limits count as one client: an IPv4 address, or
/// an IPv6 /64. A site is normally given a whole /64, so one host can pick
/// any number of addresses in it; counting them one by one would not limit
/// anything. An IPv4-mapped IPv6 address counts as its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum AddressKey {
    /// An IPv4 address.
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
}

impl AddressKey {
    /// The client `ip` counts as.
    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Why a connection was closed as soon as it was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address holds its most sockets.
    Connections,
    /// Its address has its most handshakes in progress.
    Handshakes,
    /// The server holds its most sockets, none of them an old handshake.
    SocketLimit,
}

impl Refusal {
    /// The label of the refusal in metrics.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Connections => "address_connections",
            Refusal::Handshakes => "address_handshakes",
            Refusal::SocketLimit => "socket_limit",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::Connections => "connections per address",
            Refusal::Handshakes => "handshakes per address",
            Refusal::SocketLimit => "socket limit",
        })
    }
}

/// What one address holds.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    sockets: usize,
    handshakes: usize,
}

/// Sockets and handshakes held per address, against their limits. Only
/// addresses holding something have an entry, so the table is never larger
/// than the number of sockets.
#[derive(Debug)]
pub(crate) struct AddressTable {
    held: HashMap<AddressKey, Held>,
    /// Handshakes in progress over all addresses.
    handshakes: usize,
    max_sockets: usize,
    max_handshakes: usize,
}

impl AddressTable {
    /// Empty, with at most `max_sockets` sockets per address, of which at
    /// most `max_handshakes` in their handshake.
    pub fn new(max_sockets: usize, max_handshakes: usize) -> AddressTable {
        AddressTable {
            held: HashMap::new(),
            handshakes: 0,
            max_sockets,
            max_handshakes,
        }
    }

    /// Handshakes in progress over all addresses.
    pub fn handshakes(&self) -> usize {
        self.handshakes
    }

    /// Whether a new socket from `ip` is within its address's limits (a new
    /// socket starts in its handshake).
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let held = self
            .held
            .get(&AddressKey::of(ip))
            .copied()
            .unwrap_or_default();
        if held.sockets >= self.max_sockets {
            Err(Refusal::Connections)
        } else if held.handshakes >= self.max_handshakes {
            Err(Refusal::Handshakes)
        } else {
            Ok(())
        }
    }

    /// Counts a new socket from `ip`, in its handshake.
    pub fn add(&mut self, ip: IpAddr) {
        let held = self.held.entry(AddressKey::of(ip)).or_default();
        held.sockets += 1;
        held.handshakes += 1;
        self.handshakes += 1;
    }

    /// A socket from `ip` finished its handshake: it is a WebSocket now.
    pub fn handshake_done(&mut self, ip: IpAddr) {
        if let Some(held) = self.held.get_mut(&AddressKey::of(ip)) {
            held.handshakes = held.handshakes.saturating_sub(1);
            self.handshakes = self.handshakes.saturating_sub(1);
        }
    }

    /// A socket from `ip` is gone; `in_handshake` if it was still counted
    /// as a handshake.
    pub fn remove(&mut self, ip: IpAddr, in_handshake: bool) {
        let key = AddressKey::of(ip);
        if let Some(held) = self.held.get_mut(&key) {
            held.sockets = held.sockets.saturating_sub(1);
            if in_handshake {
                held.handshakes = held.handshakes.saturating_sub(1);
                self.handshakes = self.handshakes.saturating_sub(1);
            }
            if held.sockets == 0 {
                self.held.remove(&key);
            }
        }
    }
}

/// Handshakes in the order they began, to find the oldest one still in
/// progress when a new connection needs its socket. Entries of connections
/// that opened or went away are skipped when met, and cleared out when
/// they make up most of the queue, so it stays within about twice the
/// handshakes in progress (an idle WebSocket costs it nothing).
#[derive(Debug, Default)]
pub(crate) struct HandshakeQueue {
    started: VecDeque<(Instant, ConnectionId)>,
}

impl HandshakeQueue {
    /// Records that `id` began its handshake at `now`; `in_progress` tells
    /// which recorded ones still are, and `handshakes` how many are.
    pub fn push(
        &mut self,
        id: ConnectionId,
        now: Instant,
        handshakes: usize,
        in_progress: impl Fn(ConnectionId) -> bool,
    ) {
        if self.started.len() > 2 * handshakes + 64 {
            self.started.retain(|&(_, id)| in_progress(id));
        }
        self.started.push_back((now, id));
    }

    /// Takes the oldest handshake still in progress if it began at least
    /// `min_age` before `now`.
    pub fn take_oldest(
        &mut self,
        now: Instant,
        min_age: Duration,
        in_progress: impl Fn(ConnectionId) -> bool,
    ) -> Option<ConnectionId> {
        while let Some(&(started, id)) = self.started.front() {
            if !in_progress(id) {
                self.started.pop_front();
            } else if now.saturating_duration_since(started) >= min_age {
                self.started.pop_front();
                return Some(id);
            } else {
                return None;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_its_64_bit_prefix_and_mapped_ipv4_as_ipv4() {
        let key = |text| AddressKey::of(ip(text));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn each_address_is_refused_at_its_own_limits() {
        let mut table = AddressTable::new(3, 2);
        let (a, b) = (ip("127.0.0.2"), ip("127.0.0.3"));
        table.add(a);
        table.add(a);
        assert_eq!(table.check(a), Err(Refusal::Handshakes));
        assert_eq!(table.check(b), Ok(()));
        table.handshake_done(a);
        table.add(a);
        assert_eq!(table.check(a), Err(Refusal::Connections));
        // A WebSocket going away frees a socket, not a handshake.
        table.remove(a, false);
        assert_eq!(table.check(a), Err(Refusal::Handshakes));
        table.remove(a, true);
        assert_eq!(table.check(a), Ok(()));
        table.remove(a, true);
        assert!(
            table.held.is_empty(),
            "no entry for an address holding nothing"
        );
        assert_eq!(table.handshakes(), 0);
    }

    #[test]
    fn the_oldest_handshake_in_progress_is_taken_once_old_enough() {
        let start = Instant::now();
        let id = |index| ConnectionId {
            index,
            generation: 0,
        };
        let mut queue = HandshakeQueue::default();
        for index in 0..4 {
            queue.push(
                id(index),
                start + Duration::from_secs(index.into()),
                4,
                |_| true,
            );
        }
        // #0 opened; #1 is the oldest still in progress.
        let in_progress = |id: ConnectionId| id.index != 0;
        let min_age = Duration::from_secs(2);
        assert_eq!(
            queue.take_oldest(start + Duration::from_secs(2), min_age, in_progress),
            None
        );
        let later = start + Duration::from_secs(3);
        assert_eq!(queue.take_oldest(later, min_age, in_progress), Some(id(1)));
        assert_eq!(queue.take_oldest(later, min_age, in_progress), None);
        // Finished handshakes do not pile up.
        for index in 4..1000 {
            queue.push(id(index), later, 4, |id| id.index >= 996);
        }
        assert!(
            queue.started.len() <= 2 * 4 + 64 + 1,
            "{}",
            queue.started.len()
        );
        assert_eq!(queue.started.back(), Some(&(later, id(999))));
    }
}
