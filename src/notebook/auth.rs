//! The ticket check every op goes through.

use std::collections::HashMap;

use super::ids;

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
    issued: HashMap<String, (String, Vec<String>)>,
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
    /// No tickets yet.
    pub fn new(anonymous_allowed: bool) -> Tickets {
        Tickets {
            anonymous_allowed,
            issued: HashMap::new(),
        }
    }

    /// Whether anonymous access is enabled.
    pub fn anonymous_allowed(&self) -> bool {
        self.anonymous_allowed
    }

    /// Issues a fresh random ticket for `principal`, replacing any earlier one.
    pub fn issue(&mut self, principal: &str, roles: Vec<String>) -> String {
        let ticket = ids::uuid_v4();
        self.issued
            .insert(principal.to_owned(), (ticket.clone(), roles));
        ticket
    }

    /// The principal and roles a ticket was issued to (for the cookie).
    pub fn principal_for(&self, ticket: &str) -> Option<(String, Vec<String>)> {
        self.issued
            .iter()
            .find(|(_, (issued, _))| constant_time_eq(issued.as_bytes(), ticket.as_bytes()))
            .map(|(principal, (_, roles))| (principal.clone(), roles.clone()))
    }

    /// Checks a message's claimed identity.
    pub fn check(&self, principal: &str, ticket: &str) -> TicketCheck {
        if let Some((expected, roles)) = self.issued.get(principal) {
            return if constant_time_eq(expected.as_bytes(), ticket.as_bytes()) {
                TicketCheck::Valid {
                    principal: principal.to_owned(),
                    roles: roles.clone(),
                }
            } else {
                TicketCheck::WrongTicket
            };
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
        let mut tickets = Tickets::new(true);
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
        let closed = Tickets::new(false);
        assert_eq!(
            closed.check("anonymous", "anonymous"),
            TicketCheck::UnknownPrincipal
        );
    }

    #[test]
    fn constant_time_comparison_is_still_a_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
