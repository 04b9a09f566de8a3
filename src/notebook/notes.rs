//! The notes in memory, an index from paragraph id to note, and the
//! writer that persists them. A change takes effect in memory at once and
//! is handed to the writer thread (see `writer`) as a snapshot with a
//! sequence number; the application holds back what it says about the
//! change until that number is reported durable.

use std::cell::OnceCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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

/// The data of a NOTES_INFO message, serialized once per change of the
/// list rather than once per message.
#[derive(Debug, Serialize)]
pub struct NotesInfo<'a> {
    /// Every note's id and path, sorted by path.
    pub notes: &'a serde_json::value::RawValue,
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
    /// (path, id) of every note, in NOTES_INFO's order.
    by_path: BTreeSet<(String, String)>,
    /// NOTES_INFO's list, serialized; emptied when the list changes.
    list_json: OnceCell<Box<serde_json::value::RawValue>>,
    /// Most notes the notebook holds (see `NotebookConfig::max_notes`).
    max_notes: usize,
    /// Notes changed since the last [`Notes::commit`], in the order first
    /// changed: each is written once however often it changed meanwhile
    /// (an edit and the PENDING of the run it starts are one write).
    unsubmitted: Vec<String>,
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
            by_path: BTreeSet::new(),
            list_json: OnceCell::new(),
            max_notes: usize::MAX,
            unsubmitted: Vec::new(),
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

    /// Indexes a note's paths and paragraphs. (A change of the path set
    /// empties the cached list, so remove-then-add of the same path does
    /// not.)
    fn index(&mut self, note: &Note) {
        let key = (note.path.clone(), note.id.clone());
        if !self.by_path.contains(&key) {
            self.by_path.insert(key);
            self.list_json = OnceCell::new();
        }
        for paragraph in &note.paragraphs {
            self.paragraph_index
                .insert(paragraph.id.clone(), note.id.clone());
        }
    }

    fn unindex(&mut self, note: &Note, keep_path: Option<&str>) {
        if keep_path != Some(note.path.as_str())
            && self.by_path.remove(&(note.path.clone(), note.id.clone()))
        {
            self.list_json = OnceCell::new();
        }
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
        let (found, id) = self
            .by_path
            .range((path.to_owned(), String::new())..)
            .next()?;
        if found != path {
            return None;
        }
        self.notes.get(id)
    }

    /// How many notes there are.
    pub fn len(&self) -> usize {
        self.notes.len()
    }

    /// Whether there are no notes.
    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    /// Every note's id and path, sorted by path.
    pub fn summaries(&self) -> Vec<NoteSummary> {
        self.by_path
            .iter()
            .map(|(path, id)| NoteSummary {
                id: id.clone(),
                path: path.clone(),
            })
            .collect()
    }

    /// NOTES_INFO's data: the list is serialized on the first call after
    /// it changed, and reused until it changes again.
    pub fn notes_info(&self) -> NotesInfo<'_> {
        let notes = self.list_json.get_or_init(|| {
            let json = serde_json::to_string(&self.summaries()).unwrap_or_else(|_| "[]".into());
            serde_json::value::RawValue::from_string(json).unwrap_or_else(|_| {
                serde_json::value::RawValue::from_string("[]".into()).expect("valid JSON")
            })
        });
        NotesInfo { notes }
    }

    /// Caps the number of notes: creating one more is refused.
    pub fn set_max_notes(&mut self, max_notes: usize) {
        self.max_notes = max_notes;
    }

    /// Starts the writer thread, which notifies the loop as writes end.
    pub fn start_writer(&mut self, notifier: Notifier) {
        self.writer.start(notifier);
    }

    /// Hands every note changed since the last call to the writer, one
    /// snapshot each, and returns the sequence number of the last write
    /// submitted: what the caller's acknowledgements must wait for. Call it
    /// at the end of every callback that may have changed notes.
    pub fn commit(&mut self) -> u64 {
        for id in std::mem::take(&mut self.unsubmitted) {
            let Some(note) = self.notes.get(&id) else {
                continue;
            };
            let file = self.store.file_of(note);
            let seq = self.writer.next_seq();
            self.writer.submit(WriteRequest::Save {
                seq,
                file,
                note: Box::new(note.clone()),
            });
        }
        self.writer.last_seq()
    }

    /// Every write up to this sequence number is done (or failed).
    pub fn reported_write(&self) -> u64 {
        self.reported_seq
    }

    /// Whether writes are still on their way to disk (changes not yet
    /// committed are not counted: commit first).
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

    /// Marks the note changed: its state is written at the next commit.
    fn persist(&mut self, id: &str) {
        if !self.unsubmitted.iter().any(|changed| changed == id) {
            self.unsubmitted.push(id.to_owned());
        }
    }

    /// Stores a new note (its write queued); refused when the notebook
    /// holds its maximum.
    pub fn insert(&mut self, note: Note) -> io::Result<()> {
        if self.notes.len() >= self.max_notes {
            return Err(io::Error::other(format!(
                "the notebook holds its maximum of {} notes (notebook.max_notes)",
                self.max_notes
            )));
        }
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
            self.unindex(&old, Some(&copy.path));
        }
        self.index(&copy);
        self.notes.insert(id.to_owned(), copy);
        self.persist(id);
        Ok(result)
    }

    /// Deletes note `id` (its file's removal queued).
    pub fn remove(&mut self, id: &str) -> Result<Note, String> {
        if !self.notes.contains_key(id) {
            return Err(format!("note {id} not found"));
        }
        self.unsubmitted.retain(|changed| changed != id);
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
        self.unindex(&note, None);
        Ok(note)
    }
}

impl Drop for Notes {
    /// Changes not yet committed still reach the writer, which writes
    /// what it was given before it stops.
    fn drop(&mut self) {
        self.commit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_between_commits_are_one_write_per_note() {
        let (mut notes, dir) = notes_in("commit");
        assert_eq!(notes.commit(), 0);
        notes
            .insert(Note::new("A".into(), "/a".into(), "md", "u"))
            .unwrap();
        notes
            .update("A", |note| {
                note.name = "edited".into();
                Ok(())
            })
            .unwrap();
        notes
            .insert(Note::new("B".into(), "/b".into(), "md", "u"))
            .unwrap();
        // Not submitted until the commit: nothing is pending yet.
        assert!(!notes.writes_pending());
        assert_eq!(
            notes.commit(),
            2,
            "A (inserted and edited) and B: two writes"
        );
        assert!(notes.writes_pending());
        assert_eq!(notes.commit(), 2, "nothing changed since");
        // A note changed then deleted before the commit is only deleted.
        notes
            .update("B", |note| {
                note.name = "doomed".into();
                Ok(())
            })
            .unwrap();
        notes.remove("B").unwrap();
        assert_eq!(notes.commit(), 3);
        // The writer gets the last state: A's file holds the edit.
        let reports = notes.writer.flush_here();
        assert!(reports.iter().all(|r| r.outcome.is_ok()), "{reports:?}");
        let a = notes.get("A").unwrap().clone();
        let file = notes.store.file_of(&a);
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("edited"), "{text}");
        drop(notes);
        let _ = std::fs::remove_dir_all(dir);
    }

    fn notes_in(name: &str) -> (Notes, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("wsloop-notes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Notes::load(&dir).unwrap(), dir)
    }

    #[test]
    fn the_notes_list_is_serialized_once_per_change_of_the_list() {
        let (mut notes, dir) = notes_in("list");
        notes
            .insert(Note::new("B".into(), "/b".into(), "md", "u"))
            .unwrap();
        notes
            .insert(Note::new("A".into(), "/a".into(), "md", "u"))
            .unwrap();
        let first = notes.notes_info().notes as *const _;
        assert_eq!(
            notes.notes_info().notes.get(),
            r#"[{"id":"A","path":"/a"},{"id":"B","path":"/b"}]"#
        );
        // An edit that keeps the path reuses the serialized list.
        notes
            .update("A", |note| {
                note.name = "renamed in place".into();
                Ok(())
            })
            .unwrap();
        assert!(std::ptr::eq(first, notes.notes_info().notes));
        // A new path, a new note or a deletion makes a new one.
        notes
            .update("A", |note| {
                note.path = "/c".into();
                Ok(())
            })
            .unwrap();
        assert_eq!(
            notes.notes_info().notes.get(),
            r#"[{"id":"B","path":"/b"},{"id":"A","path":"/c"}]"#
        );
        assert_eq!(notes.find_by_path("/c").map(|n| n.id.as_str()), Some("A"));
        assert!(notes.find_by_path("/a").is_none());
        notes.remove("B").unwrap();
        assert_eq!(
            notes.notes_info().notes.get(),
            r#"[{"id":"A","path":"/c"}]"#
        );
        notes.set_max_notes(1);
        assert!(
            notes
                .insert(Note::new("D".into(), "/d".into(), "md", "u"))
                .is_err()
        );
        drop(notes);
        let _ = std::fs::remove_dir_all(dir);
    }
}
