//! The ticket check every op goes through.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::ids;

/// Live tickets kept per principal: every login (a browser tab, a device,
/// a tool) gets its own, and logging in again does not end the others.
/// Beyond this many, the one used least recently stops working.
pub const MAX_TICKETS_PER_PRINCIPAL: usize = 32;

/// How long a ticket may go unused before it stops working, unless
/// configured otherwise: a day, as Zeppelin's sample Shiro session timeout.
pub const DEFAULT_TICKET_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The outcome of checking a message's principal and ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TicketCheck {
    /// Let the op through, acting as this principal.
    Valid {
        /// Who the op acts as.
        principal: String,
        /// The roles stored with the ticket (never the ones sent).
        roles: Vec<String>,
    },
    /// A known principal with the wrong ticket: SESSION_LOGOUT.
    WrongTicket,
    /// A principal with no ticket here (or anonymous while anonymous
    /// access is off): AUTH_INFO.
    UnknownPrincipal,
}

/// Tickets issued to principals, and whether anonymous access is on.
#[derive(Debug, Clone)]
pub struct Tickets {
    anonymous_allowed: bool,
    /// Principals that can log in (configured users): a message from one
    /// of them with a ticket this server does not know (say, one issued
    /// before a restart) is told to log in again.
    known: Vec<String>,
    /// Live tickets per principal, least recently used first.
    issued: HashMap<String, VecDeque<Issued>>,
    /// A ticket unused for longer stops working.
    idle_timeout: Duration,
}

/// One live ticket.
#[derive(Debug, Clone)]
struct Issued {
    ticket: String,
    /// The roles stored at issue.
    roles: Vec<String>,
    last_used: Instant,
}

/// Compares secrets without an early exit, so timing does not reveal how
/// much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tickets {
    /// No tickets yet; `known` are the principals that can log in, and a
    /// ticket unused for `idle_timeout` expires.
    pub fn new(anonymous_allowed: bool, known: Vec<String>, idle_timeout: Duration) -> Tickets {
        Tickets {
            anonymous_allowed,
            known,
            issued: HashMap::new(),
            idle_timeout,
        }
    }

    /// Whether anonymous access is enabled.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous_allowed
    }

    /// Issues a fresh random ticket for `principal`. Its earlier tickets
    /// stay valid, up to [`MAX_TICKETS_PER_PRINCIPAL`] (the one used least
    /// recently goes).
    pub fn issue(&mut self, principal: &str, roles: Vec<String>, now: Instant) -> String {
        let ticket = ids::uuid_v4();
        let live = self.issued.entry(principal.to_owned()).or_default();
        if live.len() >= MAX_TICKETS_PER_PRINCIPAL {
            live.pop_front();
        }
        live.push_back(Issued {
            ticket: ticket.clone(),
            roles,
            last_used: now,
        });
        ticket
    }

    /// The principal and roles a ticket was issued to (for the cookie),
    /// which counts as using it.
    pub fn principal_for(&mut self, ticket: &str, now: Instant) -> Option<(String, Vec<String>)> {
        let idle_timeout = self.idle_timeout;
        self.issued.iter_mut().find_map(|(principal, live)| {
            Self::use_ticket(live, ticket, now, idle_timeout)
                .map(|roles| (principal.clone(), roles))
        })
    }

    /// Ends a ticket (a logout); whether it was live.
    pub fn revoke(&mut self, ticket: &str) -> bool {
        let mut found = false;
        for live in self.issued.values_mut() {
            live.retain(|issued| {
                let matches = constant_time_eq(issued.ticket.as_bytes(), ticket.as_bytes());
                found |= matches;
                !matches
            });
        }
        self.issued.retain(|_, live| !live.is_empty());
        found
    }

    /// The roles of `ticket` among `live`, which moves it to the back (most
    /// recently used). Tickets idle for longer than `idle_timeout` are
    /// dropped first. Every ticket is compared in full, so timing does not
    /// tell which one came close.
    fn use_ticket(
        live: &mut VecDeque<Issued>,
        ticket: &str,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<Vec<String>> {
        live.retain(|issued| now.saturating_duration_since(issued.last_used) <= idle_timeout);
        let index = live
            .iter()
            .enumerate()
            .fold(None, |found, (index, issued)| {
                let matches = constant_time_eq(issued.ticket.as_bytes(), ticket.as_bytes());
                found.or(matches.then_some(index))
            })?;
        let mut used = live.remove(index)?;
        used.last_used = now;
        let roles = used.roles.clone();
        live.push_back(used);
        Some(roles)
    }

    /// Checks a message's claimed identity (a valid ticket counts as used).
    pub fn check(&mut self, principal: &str, ticket: &str, now: Instant) -> TicketCheck {
        let idle_timeout = self.idle_timeout;
        if let Some(live) = self.issued.get_mut(principal) {
            return match Self::use_ticket(live, ticket, now, idle_timeout) {
                Some(roles) => TicketCheck::Valid {
                    principal: principal.to_owned(),
                    roles,
                },
                None => TicketCheck::WrongTicket,
            };
        }
        if self.known.iter().any(|known| known == principal) {
            return TicketCheck::WrongTicket;
        }
        if principal == "anonymous" && self.anonymous_allowed {
            return if ticket == "anonymous" {
                TicketCheck::Valid {
                    principal: "anonymous".to_owned(),
                    roles: vec!["anonymous".to_owned()],
                }
            } else {
                TicketCheck::WrongTicket
            };
        }
        TicketCheck::UnknownPrincipal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    const HOUR: Duration = Duration::from_secs(3600);

    /// A fixed instant plus `seconds`, so expiry tests need no sleeping.
    fn at(seconds: u64) -> Instant {
        static START: OnceLock<Instant> = OnceLock::new();
        *START.get_or_init(Instant::now) + Duration::from_secs(seconds)
    }

    #[test]
    fn anonymous_known_and_unknown_principals() {
        let mut tickets = Tickets::new(true, Vec::new(), HOUR);
        assert!(matches!(
            tickets.check("anonymous", "anonymous", at(0)),
            TicketCheck::Valid { .. }
        ));
        assert_eq!(
            tickets.check("anonymous", "forged", at(0)),
            TicketCheck::WrongTicket
        );
        assert_eq!(
            tickets.check("alice", "anything", at(0)),
            TicketCheck::UnknownPrincipal
        );
        let ticket = tickets.issue("alice", vec!["admin".into()], at(0));
        assert_eq!(
            tickets.check("alice", &ticket, at(0)),
            TicketCheck::Valid {
                principal: "alice".into(),
                roles: vec!["admin".into()]
            }
        );
        assert_eq!(
            tickets.check("alice", "stale", at(0)),
            TicketCheck::WrongTicket
        );
        let mut closed = Tickets::new(false, Vec::new(), HOUR);
        assert_eq!(
            closed.check("anonymous", "anonymous", at(0)),
            TicketCheck::UnknownPrincipal
        );
    }

    #[test]
    fn logging_in_again_keeps_the_earlier_tickets_valid() {
        let mut tickets = Tickets::new(false, vec!["alice".into()], HOUR);
        let first = tickets.issue("alice", vec!["admin".into()], at(0));
        let second = tickets.issue("alice", vec!["admin".into()], at(0));
        assert_ne!(first, second);
        for ticket in [&first, &second] {
            assert!(matches!(
                tickets.check("alice", ticket, at(0)),
                TicketCheck::Valid { .. }
            ));
            assert_eq!(
                tickets.principal_for(ticket, at(0)),
                Some(("alice".into(), vec!["admin".into()]))
            );
        }
        // Only the ones used most recently stay: a ticket in use (the
        // second, checked with every message) outlives many new logins.
        for _ in 0..MAX_TICKETS_PER_PRINCIPAL {
            tickets.issue("alice", vec!["admin".into()], at(0));
            assert!(matches!(
                tickets.check("alice", &second, at(0)),
                TicketCheck::Valid { .. }
            ));
        }
        assert_eq!(
            tickets.check("alice", &first, at(0)),
            TicketCheck::WrongTicket
        );
        assert_eq!(tickets.principal_for(&first, at(0)), None);
    }

    #[test]
    fn a_configured_user_without_a_ticket_is_asked_to_log_in_again() {
        // After a restart no ticket is known, but alice is still a user.
        let mut tickets = Tickets::new(false, vec!["alice".into()], HOUR);
        let answers = [("alice", "from-before"), ("mallory", "any")]
            .map(|(principal, ticket)| tickets.check(principal, ticket, at(0)));
        assert_eq!(
            answers,
            [TicketCheck::WrongTicket, TicketCheck::UnknownPrincipal]
        );
    }

    #[test]
    fn a_ticket_left_unused_past_the_idle_timeout_expires() {
        let mut tickets = Tickets::new(false, vec!["alice".into()], HOUR);
        let busy = tickets.issue("alice", vec!["admin".into()], at(0));
        let idle = tickets.issue("alice", vec!["admin".into()], at(0));
        // Use keeps a ticket alive: checked every 50 minutes, for 5 hours.
        for minutes in (50..=300).step_by(50) {
            assert!(matches!(
                tickets.check("alice", &busy, at(minutes * 60)),
                TicketCheck::Valid { .. }
            ));
        }
        // The other went unused for 5 hours; SESSION_LOGOUT, and the cookie
        // no longer identifies anyone.
        assert_eq!(
            tickets.check("alice", &idle, at(300 * 60)),
            TicketCheck::WrongTicket
        );
        assert_eq!(tickets.principal_for(&idle, at(300 * 60)), None);
        // Exactly at the timeout it still works; a second later it does not.
        let edge = tickets.issue("alice", vec![], at(0));
        assert!(tickets.principal_for(&edge, at(3600)).is_some());
        assert!(tickets.principal_for(&edge, at(3600 + 3601)).is_none());
    }

    #[test]
    fn a_revoked_ticket_stops_working_and_the_others_go_on() {
        let mut tickets = Tickets::new(false, vec!["alice".into()], HOUR);
        let gone = tickets.issue("alice", vec!["admin".into()], at(0));
        let kept = tickets.issue("alice", vec!["admin".into()], at(0));
        assert!(tickets.revoke(&gone));
        assert!(!tickets.revoke(&gone), "revoked twice");
        assert!(!tickets.revoke("never-issued"));
        assert_eq!(
            tickets.check("alice", &gone, at(1)),
            TicketCheck::WrongTicket
        );
        assert!(matches!(
            tickets.check("alice", &kept, at(1)),
            TicketCheck::Valid { .. }
        ));
        // With every ticket gone, alice is still a known user: log in again.
        assert!(tickets.revoke(&kept));
        assert_eq!(
            tickets.check("alice", &kept, at(2)),
            TicketCheck::WrongTicket
        );
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
