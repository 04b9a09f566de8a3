//! The notes in memory, an index from paragraph id to note, and the store
//! they are persisted to. Every change is written to disk before it takes
//! effect in memory, so an acknowledged change survives a crash and a
//! failed write changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;

use serde::Serialize;

use super::model::Note;
use super::store::NoteStore;

/// An entry of NOTES_INFO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoteSummary {
    /// The note id.
    pub id: String,
    /// The note path.
    pub path: String,
}

/// All notes, and where they live.
#[derive(Debug)]
pub struct Notes {
    store: NoteStore,
    notes: BTreeMap<String, Note>,
    paragraph_index: HashMap<String, String>,
}

impl Notes {
    /// Loads every note in `dir` (created if missing).
    pub fn load(dir: &Path) -> io::Result<Notes> {
        let mut store = NoteStore::open(dir)?;
        let loaded = store.load_all();
        let mut notes = Notes {
            store,
            notes: BTreeMap::new(),
            paragraph_index: HashMap::new(),
        };
        for note in loaded {
            notes.index(&note);
            notes.notes.insert(note.id.clone(), note);
        }
        Ok(notes)
    }

    /// The notebook directory.
    pub fn dir(&self) -> &Path {
        self.store.dir()
    }

    fn index(&mut self, note: &Note) {
        for paragraph in &note.paragraphs {
            self.paragraph_index
                .insert(paragraph.id.clone(), note.id.clone());
        }
    }

    fn unindex(&mut self, note: &Note) {
        for paragraph in &note.paragraphs {
            if self.paragraph_index.get(&paragraph.id) == Some(&note.id) {
                self.paragraph_index.remove(&paragraph.id);
            }
        }
    }

    /// The note with `id`.
    pub fn get(&self, id: &str) -> Option<&Note> {
        self.notes.get(id)
    }

    /// The id of the note holding paragraph `paragraph_id`.
    pub fn note_of_paragraph(&self, paragraph_id: &str) -> Option<&str> {
        self.paragraph_index.get(paragraph_id).map(String::as_str)
    }

    /// The note at `path`, if one exists.
    pub fn find_by_path(&self, path: &str) -> Option<&Note> {
        self.notes.values().find(|n| n.path == path)
    }

    /// Every note's id and path, sorted by path.
    pub fn summaries(&self) -> Vec<NoteSummary> {
        let mut list: Vec<NoteSummary> = self
            .notes
            .values()
            .map(|n| NoteSummary {
                id: n.id.clone(),
                path: n.path.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.path.cmp(&b.path).then(a.id.cmp(&b.id)));
        list
    }

    /// Stores a new note (persisted first).
    pub fn insert(&mut self, note: Note) -> io::Result<()> {
        self.store.save(&note)?;
        self.index(&note);
        self.notes.insert(note.id.clone(), note);
        Ok(())
    }

    /// Applies `change` to a copy of note `id`, persists the copy, then
    /// makes it the note. Nothing changes if `change` or the write fails.
    pub fn update<R>(
        &mut self,
        id: &str,
        change: impl FnOnce(&mut Note) -> Result<R, String>,
    ) -> Result<R, String> {
        let mut copy = self
            .notes
            .get(id)
            .cloned()
            .ok_or_else(|| format!("note {id} not found"))?;
        let result = change(&mut copy)?;
        self.store
            .save(&copy)
            .map_err(|e| format!("could not save note {id}: {e}"))?;
        if let Some(old) = self.notes.remove(id) {
            self.unindex(&old);
        }
        self.index(&copy);
        self.notes.insert(id.to_owned(), copy);
        Ok(result)
    }

    /// Deletes note `id` (its file first).
    pub fn remove(&mut self, id: &str) -> Result<Note, String> {
        if !self.notes.contains_key(id) {
            return Err(format!("note {id} not found"));
        }
        self.store
            .delete(id)
            .map_err(|e| format!("could not delete note {id}: {e}"))?;
        let note = self
            .notes
            .remove(id)
            .ok_or_else(|| format!("note {id} not found"))?;
        self.unindex(&note);
        Ok(note)
    }
}
