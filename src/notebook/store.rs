//! Notes on disk: one `<path>_<id>.zpln` file per note under the notebook
//! directory, loaded at start-up (files that do not parse are logged and
//! left alone), and where each note's file is. The writing itself happens
//! on the writer thread (see `writer`).

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use super::model::Note;

/// Why a note path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    /// Contains a NUL byte.
    Nul,
    /// Has a `.` or `..` segment.
    DotSegment,
    /// A segment is longer than the file system allows.
    TooLong,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::Nul => "note path must not contain NUL bytes",
            PathError::DotSegment => "note path must not contain '.' or '..' segments",
            PathError::TooLong => "note path segment is too long",
        })
    }
}

/// Turns a requested note name into a clean absolute note path: blank →
/// `/Untitled Note`; leading `/` added; empty segments dropped; `.`/`..`
/// and NUL refused, so a note can never be stored outside the directory.
pub fn normalize_note_path(requested: &str) -> Result<String, PathError> {
    if requested.contains('\0') {
        return Err(PathError::Nul);
    }
    let segments: Vec<&str> = requested
        .split('/')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if segments.is_empty() {
        return Ok("/Untitled Note".to_owned());
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(PathError::DotSegment);
    }
    // Room for "_<9-char id>.zpln" after the last segment.
    if segments.iter().any(|s| s.len() > 255 - 16) {
        return Err(PathError::TooLong);
    }
    Ok(format!("/{}", segments.join("/")))
}

/// The notebook directory.
#[derive(Debug)]
pub struct NoteStore {
    dir: PathBuf,
    /// Where each note's file is, so saves replace the file it came from.
    files: HashMap<String, PathBuf>,
}

impl NoteStore {
    /// Opens (creating if needed) the notebook directory.
    pub fn open(dir: &Path) -> io::Result<NoteStore> {
        fs::create_dir_all(dir)?;
        Ok(NoteStore {
            dir: dir.to_path_buf(),
            files: HashMap::new(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads every `.zpln` file below the directory. Unreadable ones and
    /// duplicates of an id already loaded are logged and skipped.
    pub fn load_all(&mut self) -> Vec<Note> {
        let mut files = Vec::new();
        collect_note_files(&self.dir, &mut files);
        files.sort();
        let mut notes = Vec::new();
        for file in files {
            let parsed = fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<Note>(&bytes).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(mut note) => {
                    if self.files.contains_key(&note.id) {
                        log::warn!(
                            "{}: note id {} already loaded; skipped",
                            file.display(),
                            note.id
                        );
                        continue;
                    }
                    note.after_load();
                    if normalize_note_path(&note.path).is_err() {
                        log::warn!(
                            "{}: unsafe note path {:?}; skipped",
                            file.display(),
                            note.path
                        );
                        continue;
                    }
                    self.files.insert(note.id.clone(), file);
                    notes.push(note);
                }
                Err(error) => {
                    log::warn!("{}: not a readable note ({error}); skipped", file.display())
                }
            }
        }
        notes
    }

    /// Where a note with this id and path is stored.
    fn file_for(&self, note: &Note) -> PathBuf {
        let relative = note.path.trim_start_matches('/');
        let mut file = self.dir.clone();
        for component in Path::new(relative).components() {
            if let Component::Normal(segment) = component {
                file.push(segment);
            }
        }
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        file.set_file_name(format!("{name}_{}.zpln", note.id));
        file
    }

    /// The file a note is written to: the one it was loaded from or first
    /// written to (a renamed note keeps its file), else one named after
    /// its path and id.
    pub fn file_of(&mut self, note: &Note) -> PathBuf {
        if let Some(file) = self.files.get(&note.id) {
            return file.clone();
        }
        let file = self.file_for(note);
        self.files.insert(note.id.clone(), file.clone());
        file
    }

    /// Forgets a deleted note's file; returns it, to be removed.
    pub fn forget(&mut self, note_id: &str) -> Option<PathBuf> {
        self.files.remove(note_id)
    }
}

fn collect_note_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        log::warn!("{}: cannot list directory; skipped", dir.display());
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if kind.is_dir() && !hidden {
            collect_note_files(&path, out);
        } else if kind.is_file() && !hidden && path.extension().is_some_and(|e| e == "zpln") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::writer::{WriteRequest, write_batch};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsloop-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn paths_are_normalized_and_never_escape() {
        assert_eq!(normalize_note_path("").unwrap(), "/Untitled Note");
        assert_eq!(normalize_note_path("  ").unwrap(), "/Untitled Note");
        assert_eq!(normalize_note_path("Daily").unwrap(), "/Daily");
        assert_eq!(
            normalize_note_path("//reports//Daily ").unwrap(),
            "/reports/Daily"
        );
        assert_eq!(
            normalize_note_path("../etc/passwd"),
            Err(PathError::DotSegment)
        );
        assert_eq!(normalize_note_path("/a/./b"), Err(PathError::DotSegment));
        assert_eq!(normalize_note_path("a\0b"), Err(PathError::Nul));
        assert_eq!(
            normalize_note_path(&"x".repeat(300)),
            Err(PathError::TooLong)
        );
    }

    #[test]
    fn save_load_delete_round_trip_and_bad_files_are_left_alone() {
        let dir = temp_dir("roundtrip");
        let mut store = NoteStore::open(&dir).unwrap();
        let note = Note::new(
            "2A94M5J1Z".into(),
            "/reports/Daily".into(),
            "md",
            "anonymous",
        );
        let file = store.file_of(&note);
        let saved = write_batch(vec![WriteRequest::Save {
            seq: 1,
            file,
            note: Box::new(note.clone()),
        }]);
        assert_eq!(saved[0].outcome, Ok(()));
        assert!(dir.join("reports/Daily_2A94M5J1Z.zpln").is_file());
        fs::write(dir.join("broken_XXXXXXXXX.zpln"), b"{ not json").unwrap();

        let mut reopened = NoteStore::open(&dir).unwrap();
        let loaded = reopened.load_all();
        assert_eq!(loaded, vec![note.clone()]);
        assert_eq!(
            fs::read(dir.join("broken_XXXXXXXXX.zpln")).unwrap(),
            b"{ not json"
        );

        let file = reopened.forget(&note.id).unwrap();
        let deleted = write_batch(vec![WriteRequest::Delete {
            seq: 2,
            note_id: note.id.clone(),
            file,
        }]);
        assert_eq!(deleted[0].outcome, Ok(()));
        assert!(!dir.join("reports/Daily_2A94M5J1Z.zpln").exists());
        assert!(NoteStore::open(&dir).unwrap().load_all().is_empty());
        let leftovers: Vec<_> = fs::read_dir(dir.join("reports")).unwrap().collect();
        assert!(leftovers.is_empty(), "no temp files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }
}
