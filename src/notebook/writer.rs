//! Note files written off the event loop. The loop hands the writer thread
//! a snapshot of each changed note (cheap: results are shared, not
//! copied) with a sequence number; the thread writes what has queued up as
//! one batch — each note atomically (temp file, fsync, rename), then one
//! fsync per directory — and reports every sequence number as durable or
//! failed. This is group commit: under load many changes share one round
//! of fsyncs, and the loop never waits on the disk.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::model::Note;
use crate::server::Notifier;

/// One change to put on disk.
#[derive(Debug)]
pub enum WriteRequest {
    /// Write `note` to `file` (replacing it atomically).
    Save {
        /// Sequence number of this write.
        seq: u64,
        /// Where the note's file is.
        file: PathBuf,
        /// The note as it should be on disk.
        note: Box<Note>,
    },
    /// Remove a note's file.
    Delete {
        /// Sequence number of this write.
        seq: u64,
        /// The note's id.
        note_id: String,
        /// Where the note's file is.
        file: PathBuf,
    },
}

impl WriteRequest {
    fn seq(&self) -> u64 {
        match self {
            WriteRequest::Save { seq, .. } | WriteRequest::Delete { seq, .. } => *seq,
        }
    }

    fn note_id(&self) -> &str {
        match self {
            WriteRequest::Save { note, .. } => &note.id,
            WriteRequest::Delete { note_id, .. } => note_id,
        }
    }
}

/// What became of one write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Its sequence number.
    pub seq: u64,
    /// The note it wrote.
    pub note_id: String,
    /// `Err` with the system's reason when the note is not on disk as
    /// asked.
    pub outcome: Result<(), String>,
}

/// Performs one batch of writes; the thread's body, and a plain function
/// so tests can drive it directly. A note saved several times in the batch
/// is written once, as its last version; every sequence number gets a
/// report.
pub fn write_batch(batch: Vec<WriteRequest>) -> Vec<WriteReport> {
    let mut last_of: HashMap<String, u64> = HashMap::new();
    for request in &batch {
        last_of.insert(request.note_id().to_owned(), request.seq());
    }
    let mut outcomes: HashMap<u64, Result<(), String>> = HashMap::new();
    let mut directories: HashSet<PathBuf> = HashSet::new();
    let mut done: Vec<(u64, String, Option<PathBuf>)> = Vec::new();
    for request in &batch {
        let seq = request.seq();
        let note_id = request.note_id().to_owned();
        if last_of.get(&note_id) != Some(&seq) {
            // Superseded within the batch; reported with the last one.
            done.push((seq, note_id, None));
            continue;
        }
        let result = match request {
            WriteRequest::Save { file, note, .. } => write_note(file, note),
            WriteRequest::Delete { file, .. } => match fs::remove_file(file) {
                Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
                _ => Ok(()),
            },
        };
        let parent = match request {
            WriteRequest::Save { file, .. } | WriteRequest::Delete { file, .. } => {
                file.parent().map(Path::to_path_buf)
            }
        };
        if result.is_ok()
            && let Some(parent) = &parent
        {
            directories.insert(parent.clone());
        }
        outcomes.insert(seq, result.map_err(|e| e.to_string()));
        done.push((seq, note_id, parent));
    }
    // The renames and removals are durable once their directories are.
    let mut failed_directories: HashMap<PathBuf, String> = HashMap::new();
    for directory in directories {
        if let Err(error) = fs::File::open(&directory).and_then(|d| d.sync_all()) {
            failed_directories.insert(directory, error.to_string());
        }
    }
    let mut reports = Vec::with_capacity(done.len());
    for (seq, note_id, parent) in done {
        let last = last_of.get(&note_id).copied().unwrap_or(seq);
        let mut outcome = outcomes.get(&last).cloned().unwrap_or(Ok(()));
        if outcome.is_ok()
            && let Some(reason) = parent.as_ref().and_then(|p| failed_directories.get(p))
        {
            outcome = Err(reason.clone());
        }
        reports.push(WriteReport {
            seq,
            note_id,
            outcome,
        });
    }
    reports
}

/// Writes one note atomically: a temp file beside it, fsync, rename.
fn write_note(file: &Path, note: &Note) -> io::Result<()> {
    let parent = file
        .parent()
        .ok_or_else(|| io::Error::other("no directory"))?;
    fs::create_dir_all(parent)?;
    let json = serde_json::to_vec_pretty(note).map_err(io::Error::other)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{name}.tmp"));
    let written = (|| {
        let mut out = fs::File::create(&temp)?;
        out.write_all(&json)?;
        out.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    fs::rename(&temp, file)
}

/// The writer thread and the loop's view of it.
pub struct NoteWriter {
    sender: Option<Sender<WriteRequest>>,
    reports: Arc<Mutex<Vec<WriteReport>>>,
    thread: Option<JoinHandle<()>>,
    /// Requests made before the thread started (at load, in tests).
    waiting: Vec<WriteRequest>,
    last_seq: u64,
}

impl NoteWriter {
    /// A writer whose thread starts with [`NoteWriter::start`]; writes
    /// submitted before then wait for it.
    pub fn new() -> NoteWriter {
        NoteWriter {
            sender: None,
            reports: Arc::default(),
            thread: None,
            waiting: Vec::new(),
            last_seq: 0,
        }
    }

    /// Starts the thread; it notifies the loop after each batch.
    pub fn start(&mut self, notifier: Notifier) {
        let (sender, receiver) = mpsc::channel();
        let reports = self.reports.clone();
        let spawned = std::thread::Builder::new()
            .name("wsloop-writer".to_owned())
            .spawn(move || run_writer(receiver, reports, notifier));
        match spawned {
            Ok(thread) => {
                for request in self.waiting.drain(..) {
                    let _ = sender.send(request);
                }
                self.sender = Some(sender);
                self.thread = Some(thread);
            }
            Err(error) => log::error!("cannot start the note writer thread: {error}"),
        }
    }

    /// The next sequence number, for a write about to be submitted.
    pub fn next_seq(&mut self) -> u64 {
        self.last_seq += 1;
        self.last_seq
    }

    /// The sequence number of the last write submitted.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Queues a write.
    pub fn submit(&mut self, request: WriteRequest) {
        match &self.sender {
            Some(sender) => {
                if let Err(mpsc::SendError(request)) = sender.send(request) {
                    log::error!("the note writer thread is gone");
                    let seq = request.seq();
                    let note_id = request.note_id().to_owned();
                    if let Ok(mut reports) = self.reports.lock() {
                        reports.push(WriteReport {
                            seq,
                            note_id,
                            outcome: Err("the note writer thread stopped".to_owned()),
                        });
                    }
                }
            }
            None => self.waiting.push(request),
        }
    }

    /// Reports of finished writes, in sequence order.
    pub fn take_reports(&mut self) -> Vec<WriteReport> {
        let mut reports = match self.reports.lock() {
            Ok(mut reports) => std::mem::take(&mut *reports),
            Err(_) => Vec::new(),
        };
        reports.sort_by_key(|r| r.seq);
        reports
    }

    /// Writes everything still queued on the calling thread (for a
    /// handler that never ran a loop) and returns the reports.
    pub(super) fn flush_here(&mut self) -> Vec<WriteReport> {
        let batch = std::mem::take(&mut self.waiting);
        write_batch(batch)
    }
}

impl std::fmt::Debug for NoteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteWriter")
            .field("last_seq", &self.last_seq)
            .field("started", &self.thread.is_some())
            .finish()
    }
}

impl Default for NoteWriter {
    fn default() -> Self {
        NoteWriter::new()
    }
}

impl Drop for NoteWriter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has written all that
        // was queued: nothing submitted is lost on a graceful stop.
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if !self.waiting.is_empty() {
            for report in self.flush_here() {
                if let Err(error) = report.outcome {
                    log::error!("note {}: not saved at exit: {error}", report.note_id);
                }
            }
        }
    }
}

/// The thread: waits for a write, takes whatever else queued meanwhile,
/// writes the batch, reports, notifies.
fn run_writer(
    receiver: Receiver<WriteRequest>,
    reports: Arc<Mutex<Vec<WriteReport>>>,
    notifier: Notifier,
) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter());
        let done = write_batch(batch);
        for report in &done {
            if let Err(error) = &report.outcome {
                log::warn!("note {}: could not save: {error}", report.note_id);
            }
        }
        if let Ok(mut shared) = reports.lock() {
            shared.extend(done);
        }
        let _ = notifier.notify();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsloop-writer-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn save(seq: u64, dir: &Path, note: &Note) -> WriteRequest {
        WriteRequest::Save {
            seq,
            file: dir.join(format!("n_{}.zpln", note.id)),
            note: Box::new(note.clone()),
        }
    }

    #[test]
    fn a_batch_writes_each_note_once_as_its_last_version() {
        let dir = temp_dir("batch");
        let mut note = Note::new("A1".into(), "/n".into(), "md", "anonymous");
        let first = save(1, &dir, &note);
        note.name = "second".into();
        let second = save(2, &dir, &note);
        let other = Note::new("B2".into(), "/n".into(), "md", "anonymous");
        let reports = write_batch(vec![first, save(3, &dir, &other), second]);
        let seqs: Vec<u64> = reports.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 3, 2]);
        assert!(reports.iter().all(|r| r.outcome.is_ok()), "{reports:?}");
        let on_disk: Note =
            serde_json::from_slice(&fs::read(dir.join("n_A1.zpln")).unwrap()).unwrap();
        assert_eq!(on_disk.name, "second");
        let reports = write_batch(vec![WriteRequest::Delete {
            seq: 4,
            note_id: "B2".into(),
            file: dir.join("n_B2.zpln"),
        }]);
        assert_eq!(reports[0].outcome, Ok(()));
        assert!(!dir.join("n_B2.zpln").exists());
        let names: Vec<_> = fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temp files left: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_write_that_cannot_happen_is_reported_for_every_seq_it_covers() {
        let dir = temp_dir("fails");
        fs::create_dir_all(dir.parent().unwrap()).unwrap();
        // A file where the directory should be: no write can succeed, even
        // for root.
        fs::write(&dir, b"not a directory").unwrap();
        let note = Note::new("C3".into(), "/n".into(), "md", "anonymous");
        let reports = write_batch(vec![save(7, &dir, &note), save(8, &dir, &note)]);
        assert_eq!(reports.len(), 2);
        for report in &reports {
            assert!(report.outcome.is_err(), "{report:?}");
        }
        fs::remove_file(&dir).unwrap();
    }
}
