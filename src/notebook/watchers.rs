//! Which connection is bound to which note, and who watches each note.

use std::collections::HashMap;

use crate::handler::ConnectionId;

/// The note bindings of all connections, indexed both ways.
#[derive(Debug, Default)]
pub struct Watchers {
    by_note: HashMap<String, Vec<ConnectionId>>,
    binding: HashMap<ConnectionId, String>,
}

impl Watchers {
    /// Binds `conn` to `note_id`, leaving the note it watched before.
    pub fn bind(&mut self, conn: ConnectionId, note_id: &str) {
        if self.binding.get(&conn).is_some_and(|n| n == note_id) {
            return;
        }
        self.unbind(conn);
        self.binding.insert(conn, note_id.to_owned());
        self.by_note
            .entry(note_id.to_owned())
            .or_default()
            .push(conn);
    }

    /// Removes `conn`'s binding (on GET_HOME_NOTE and disconnect).
    pub fn unbind(&mut self, conn: ConnectionId) {
        if let Some(note_id) = self.binding.remove(&conn)
            && let Some(watchers) = self.by_note.get_mut(&note_id)
        {
            watchers.retain(|c| *c != conn);
            if watchers.is_empty() {
                self.by_note.remove(&note_id);
            }
        }
    }

    /// Unbinds everyone watching a deleted note.
    pub fn forget_note(&mut self, note_id: &str) {
        for conn in self.by_note.remove(note_id).unwrap_or_default() {
            self.binding.remove(&conn);
        }
    }

    /// The connections bound to `note_id`.
    pub fn of_note(&self, note_id: &str) -> &[ConnectionId] {
        self.by_note.get(note_id).map_or(&[], Vec::as_slice)
    }

    /// The note `conn` is bound to.
    pub fn note_of(&self, conn: ConnectionId) -> Option<&str> {
        self.binding.get(&conn).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(index: u32) -> ConnectionId {
        ConnectionId {
            index,
            generation: 0,
        }
    }

    #[test]
    fn bind_rebind_unbind_and_forget() {
        let mut w = Watchers::default();
        w.bind(id(1), "A");
        w.bind(id(2), "A");
        w.bind(id(3), "B");
        assert_eq!(w.of_note("A"), [id(1), id(2)]);
        w.bind(id(2), "B");
        assert_eq!(w.of_note("A"), [id(1)]);
        assert_eq!(w.of_note("B"), [id(3), id(2)]);
        w.unbind(id(1));
        assert!(w.of_note("A").is_empty());
        assert_eq!(w.note_of(id(1)), None);
        w.forget_note("B");
        assert!(w.of_note("B").is_empty());
        assert_eq!(w.note_of(id(3)), None);
    }
}
