//! The ticket check every op goes through.

use std::collections::{HashMap, VecDeque};

use super::ids;

/// Live tickets kept per principal: every login (a browser tab, a device,
/// a tool) gets its own, and logging in again does not end the others.
/// Beyond this many, the one used least recently stops working.
pub const MAX_TICKETS_PER_PRINCIPAL: usize = 32;

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
    /// Live tickets per principal, oldest first, with the roles stored at
    /// issue.
    issued: HashMap<String, VecDeque<(String, Vec<String>)>>,
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
    /// No tickets yet; `known` are the principals that can log in.
    pub fn new(anonymous_allowed: bool, known: Vec<String>) -> Tickets {
        Tickets {
            anonymous_allowed,
            known,
            issued: HashMap::new(),
        }
    }

    /// Whether anonymous access is enabled.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous_allowed
    }

    /// Issues a fresh random ticket for `principal`. Its earlier tickets
    /// stay valid, up to [`MAX_TICKETS_PER_PRINCIPAL`] (the one used least
    /// recently goes).
    pub fn issue(&mut self, principal: &str, roles: Vec<String>) -> String {
        let ticket = ids::uuid_v4();
        let live = self.issued.entry(principal.to_owned()).or_default();
        if live.len() >= MAX_TICKETS_PER_PRINCIPAL {
            live.pop_front();
        }
        live.push_back((ticket.clone(), roles));
        ticket
    }

    /// The principal and roles a ticket was issued to (for the cookie),
    /// which counts as using it.
    pub fn principal_for(&mut self, ticket: &str) -> Option<(String, Vec<String>)> {
        self.issued.iter_mut().find_map(|(principal, live)| {
            Self::use_ticket(live, ticket).map(|roles| (principal.clone(), roles))
        })
    }

    /// The roles of `ticket` among `live`, which moves it to the back (most
    /// recently used). Every ticket is compared in full, so timing does not
    /// tell which one came close.
    fn use_ticket(live: &mut VecDeque<(String, Vec<String>)>, ticket: &str) -> Option<Vec<String>> {
        let index = live
            .iter()
            .enumerate()
            .fold(None, |found, (index, (issued, _))| {
                let matches = constant_time_eq(issued.as_bytes(), ticket.as_bytes());
                found.or(matches.then_some(index))
            })?;
        let used = live.remove(index)?;
        let roles = used.1.clone();
        live.push_back(used);
        Some(roles)
    }

    /// Checks a message's claimed identity (a valid ticket counts as used).
    pub fn check(&mut self, principal: &str, ticket: &str) -> TicketCheck {
        if let Some(live) = self.issued.get_mut(principal) {
            return match Self::use_ticket(live, ticket) {
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

    #[test]
    fn anonymous_known_and_unknown_principals() {
        let mut tickets = Tickets::new(true, Vec::new());
        assert!(matches!(
            tickets.check("anonymous", "anonymous"),
            TicketCheck::Valid { .. }
        ));
        assert_eq!(
            tickets.check("anonymous", "forged"),
            TicketCheck::WrongTicket
        );
        assert_eq!(
            tickets.check("alice", "anything"),
            TicketCheck::UnknownPrincipal
        );
        let ticket = tickets.issue("alice", vec!["admin".into()]);
        assert_eq!(
            tickets.check("alice", &ticket),
            TicketCheck::Valid {
                principal: "alice".into(),
                roles: vec!["admin".into()]
            }
        );
        assert_eq!(tickets.check("alice", "stale"), TicketCheck::WrongTicket);
        let mut closed = Tickets::new(false, Vec::new());
        assert_eq!(
            closed.check("anonymous", "anonymous"),
            TicketCheck::UnknownPrincipal
        );
    }

    #[test]
    fn logging_in_again_keeps_the_earlier_tickets_valid() {
        let mut tickets = Tickets::new(false, vec!["alice".into()]);
        let first = tickets.issue("alice", vec!["admin".into()]);
        let second = tickets.issue("alice", vec!["admin".into()]);
        assert_ne!(first, second);
        for ticket in [&first, &second] {
            assert!(matches!(
                tickets.check("alice", ticket),
                TicketCheck::Valid { .. }
            ));
            assert_eq!(
                tickets.principal_for(ticket),
                Some(("alice".into(), vec!["admin".into()]))
            );
        }
        // Only the ones used most recently stay: a ticket in use (the
        // second, checked with every message) outlives many new logins.
        for _ in 0..MAX_TICKETS_PER_PRINCIPAL {
            tickets.issue("alice", vec!["admin".into()]);
            assert!(matches!(
                tickets.check("alice", &second),
                TicketCheck::Valid { .. }
            ));
        }
        assert_eq!(tickets.check("alice", &first), TicketCheck::WrongTicket);
        assert_eq!(tickets.principal_for(&first), None);
    }

    #[test]
    fn a_configured_user_without_a_ticket_is_asked_to_log_in_again() {
        // After a restart no ticket is known, but alice is still a user.
        let mut tickets = Tickets::new(false, vec!["alice".into()]);
        let answers = [("alice", "from-before"), ("mallory", "any")]
            .map(|(principal, ticket)| tickets.check(principal, ticket));
        assert_eq!(
            answers,
            [TicketCheck::WrongTicket, TicketCheck::UnknownPrincipal]
        );
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
