//! The server-wide budget for buffered bytes: output queued for peers and
//! input held for them (the unprocessed part of a read, the fragments of a
//! message not yet complete), summed over every connection.
//!
//! The sum is kept as it changes: each connection remembers the share it
//! last reported, so bringing it up to date is a few additions wherever a
//! connection's buffers change, never a walk over the connections. Only
//! when growth takes the sum past the budget are the connections walked,
//! and the largest holders closed until it is back under it.

use std::time::Instant;

use slab::Slab;

use super::socket::Socket;
use super::stats::ServerStats;
use crate::proto::CloseCode;

/// Why a connection closed for the budget's sake tells its peer.
const NOT_READING: &str = "peer is not reading; server buffers full";
/// The same for a peer that sends more than the server can hold.
const TOO_MUCH_INPUT: &str = "message too big for the server's buffers now";

/// Bytes held in connections' buffers, and the bound on them.
#[derive(Debug)]
pub(crate) struct BufferBudget {
    /// The sum of every connection's `Socket::accounted`.
    total: usize,
    /// The budget: growth past it closes the largest holders.
    limit: usize,
    /// What closing brings the total down to: an eighth under the limit,
    /// so one pass buys room for more than a message before the next.
    target: usize,
}

impl BufferBudget {
    /// A budget of `limit` bytes, nothing held yet.
    pub fn new(limit: usize) -> BufferBudget {
        BufferBudget {
            total: 0,
            limit,
            target: limit - limit / 8,
        }
    }

    /// Bytes held now, over all connections.
    pub fn total(&self) -> usize {
        self.total
    }

    /// The configured budget.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Brings `conn`'s share of the total up to date; returns whether it
    /// grew and took the total past the budget (then call
    /// [`BufferBudget::shed`]). Shrinking never asks for a pass, so writes
    /// never pay for one.
    #[inline]
    pub fn update(&mut self, conn: &mut Socket) -> bool {
        let held = conn.held_bytes();
        let grew = held > conn.accounted;
        self.total = self.total.saturating_sub(conn.accounted) + held;
        conn.accounted = held;
        grew && self.total > self.limit
    }

    /// Takes a connection that is going away out of the total.
    pub fn forget(&mut self, conn: &Socket) {
        self.total = self.total.saturating_sub(conn.accounted);
    }

    /// Closes the connections holding the most until the total is back at
    /// the target: a WebSocket gets a close frame in place of its unsent
    /// output (1008 when most of what it holds is output, 1009 when it is
    /// input); one already closed that way, or one that never became a
    /// WebSocket, is dropped with everything it holds. Nothing is removed
    /// here (handler callbacks may be running): dropped connections are
    /// queued in `flush_list` with a failed write, which removes them.
    pub fn shed(
        &mut self,
        conns: &mut Slab<Socket>,
        flush_list: &mut Vec<usize>,
        stats: &mut ServerStats,
        now: Instant,
    ) {
        if self.total <= self.limit {
            return;
        }
        let mut holders: Vec<(usize, usize)> = conns
            .iter()
            .filter(|(_, conn)| conn.accounted > 0)
            .map(|(slot, conn)| (conn.accounted, slot))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        for (held, slot) in holders {
            if self.total <= self.target {
                break;
            }
            let total_before = self.total;
            let conn = &mut conns[slot];
            let output = conn.proto.pending_output_len();
            let input = held.saturating_sub(output);
            let (code, reason) = if output >= input {
                (CloseCode::POLICY_VIOLATION, NOT_READING)
            } else {
                (CloseCode::MESSAGE_TOO_BIG, TOO_MUCH_INPUT)
            };
            conn.proto.discard_input();
            let action = if conn.budget_shed || !conn.proto.opened() {
                conn.proto.consume_output(output);
                conn.proto.abort(now);
                conn.write_failed = true;
                "dropped".to_owned()
            } else {
                conn.proto.shed(code, reason, now);
                conn.budget_shed = true;
                format!("closing with {code}")
            };
            self.update(conn);
            log::warn!(
                "{} {}: {action} to keep server buffers within budget: it held {held} bytes \
                 ({output} output, {input} input), all connections {total_before} of {}",
                conn.id,
                conn.peer,
                self.limit
            );
            stats.budget_closes += 1;
            conn.queue_flush(slot, flush_list);
        }
    }
}
