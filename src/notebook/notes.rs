//! The notes in memory, an index from paragraph id to note, and the
//! writer that persists them. A change takes effect in memory at once and
//! is handed to the writer thread (see `writer`) as a snapshot with a
//! sequence number; the application holds back what it says about the
//! change until that number is reported durable.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;

use serde::Serialize;

use super::model::Note;
use super::store::NoteStore;
use super::writer::{NoteWriter, WriteReport, WriteRequest};
use crate::server::Notifier;

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
    writer: NoteWriter,
    /// Every write up to this sequence number has been reported.
    reported_seq: u64,
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
            writer: NoteWriter::new(),
            reported_seq: 0,
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

    /// Starts the writer thread, which notifies the loop as writes end.
    pub fn start_writer(&mut self, notifier: Notifier) {
        self.writer.start(notifier);
    }

    /// The sequence number of the last write submitted.
    pub fn last_write(&self) -> u64 {
        self.writer.last_seq()
    }

    /// Every write up to this sequence number is done (or failed).
    pub fn reported_write(&self) -> u64 {
        self.reported_seq
    }

    /// Whether writes are still on their way to disk.
    pub fn writes_pending(&self) -> bool {
        self.reported_seq < self.writer.last_seq()
    }

    /// The writes finished since the last call, in order.
    pub fn take_write_reports(&mut self) -> Vec<WriteReport> {
        let reports = self.writer.take_reports();
        if let Some(last) = reports.last() {
            self.reported_seq = self.reported_seq.max(last.seq);
        }
        reports
    }

    /// Queues the note's current state for writing.
    fn persist(&mut self, id: &str) {
        let Some(note) = self.notes.get(id) else {
            return;
        };
        let file = self.store.file_of(note);
        let seq = self.writer.next_seq();
        self.writer.submit(WriteRequest::Save {
            seq,
            file,
            note: Box::new(note.clone()),
        });
    }

    /// Stores a new note (its write queued).
    pub fn insert(&mut self, note: Note) -> io::Result<()> {
        self.index(&note);
        let id = note.id.clone();
        self.notes.insert(id.clone(), note);
        self.persist(&id);
        Ok(())
    }

    /// Applies `change` to a copy of note `id` and makes the copy the note,
    /// its write queued. Nothing changes if `change` fails.
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
        if let Some(old) = self.notes.remove(id) {
            self.unindex(&old);
        }
        self.index(&copy);
        self.notes.insert(id.to_owned(), copy);
        self.persist(id);
        Ok(result)
    }

    /// Writes note `id` again (after a failed write, say).
    pub fn save_again(&mut self, id: &str) {
        self.persist(id);
    }

    /// Applies `change` to note `id` in place (no copy), its write queued;
    /// for changes that cannot fail.
    pub fn update_in_place(&mut self, id: &str, change: impl FnOnce(&mut Note)) {
        if let Some(note) = self.notes.get_mut(id) {
            change(note);
            self.persist(id);
        }
    }

    /// Deletes note `id` (its file's removal queued).
    pub fn remove(&mut self, id: &str) -> Result<Note, String> {
        if !self.notes.contains_key(id) {
            return Err(format!("note {id} not found"));
        }
        if let Some(file) = self.store.forget(id) {
            let seq = self.writer.next_seq();
            self.writer.submit(WriteRequest::Delete {
                seq,
                note_id: id.to_owned(),
                file,
            });
        }
        let note = self
            .notes
            .remove(id)
            .ok_or_else(|| format!("note {id} not found"))?;
        self.unindex(&note);
        Ok(note)
    }
}
