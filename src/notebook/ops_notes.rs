//! Ops on whole notes and folders: rename, update, clone, import, the
//! trash (`/~Trash`, as Zeppelin), note forms, bindings and the jobs list.

use serde_json::{Value, json};

use super::app::NotebookHandler;
use super::ids;
use super::interpreter;
use super::model::{Note, Paragraph, name_of};
use super::ops::Call;
use super::store::normalize_note_path;
use crate::handler::ConnectionId;
use crate::server::Context;

type OpResult = Result<(), String>;

/// Zeppelin's trash folder: a note in it has a path under it.
pub(super) const TRASH: &str = "/~Trash";

/// A folder named by the UI (`a/b`, `/a/b/`) as an absolute path without
/// a trailing slash; `None` for the root or a path with `.`/`..`.
fn folder_path(requested: &str) -> Option<String> {
    let path = normalize_note_path(requested).ok()?;
    (requested.trim_matches('/').trim() != "").then_some(path)
}

/// Whether `path` lies in `folder` (at any depth).
fn in_folder(path: &str, folder: &str) -> bool {
    path.strip_prefix(folder)
        .is_some_and(|rest| rest.starts_with('/'))
}

impl NotebookHandler {
    /// `path`, or the first of `path (1)`, `path (2)`, … no note has.
    fn free_path(&self, path: &str) -> String {
        if self.notes.find_by_path(path).is_none() {
            return path.to_owned();
        }
        (1..)
            .map(|n| format!("{path} ({n})"))
            .find(|candidate| self.notes.find_by_path(candidate).is_none())
            .unwrap_or_else(|| path.to_owned())
    }

    /// Moves note `id` to `path` (refused if another note has it), tells
    /// its watchers (NOTE); the caller sends NOTES_INFO.
    pub(super) fn move_note(&mut self, ctx: &mut Context<'_>, id: &str, path: &str) -> OpResult {
        if self.notes.find_by_path(path).is_some_and(|n| n.id != id) {
            return Err(format!("a note at {path} already exists"));
        }
        let note = self.notes.update(id, |note| {
            note.path = path.to_owned();
            note.name = name_of(path).to_owned();
            Ok(note.for_wire())
        })?;
        self.to_watchers(ctx, id, &[], "NOTE", &json!({ "note": note }), None);
        Ok(())
    }

    /// Tells every connection the note list changed.
    pub(super) fn notes_changed(&self, ctx: &mut Context<'_>) {
        Self::to_everyone(ctx, "NOTES_INFO", &self.notes.notes_info());
    }

    /// The ids and paths of the notes in `folder`.
    fn notes_in(&self, folder: &str) -> Vec<(String, String)> {
        self.notes
            .summaries()
            .into_iter()
            .filter(|note| in_folder(&note.path, folder))
            .map(|note| (note.id, note.path))
            .collect()
    }

    /// Deletes note `id` and forgets its runs and watchers; the caller
    /// sends NOTES_INFO.
    pub(super) fn remove_note(&mut self, id: &str) -> OpResult {
        self.notes.remove(id)?;
        self.jobs.forget_note(id);
        self.watchers.forget_note(id);
        Ok(())
    }

    /// NOTE_RENAME `{id, name, relative?}`: a new path (`relative`: a new
    /// name in the same folder). NOTE to watchers, NOTES_INFO to all.
    pub(super) fn rename_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("id")?;
        let name = call.data.string("name")?;
        let relative = call.data.0.get("relative").and_then(Value::as_bool) == Some(true);
        let current = self
            .notes
            .get(id)
            .ok_or_else(|| format!("note {id} not found"))?;
        let requested = if relative {
            let folder = current
                .path
                .rsplit_once('/')
                .map_or("", |(folder, _)| folder);
            format!("{folder}/{name}")
        } else {
            name.to_owned()
        };
        let path = normalize_note_path(&requested).map_err(|e| e.to_string())?;
        self.move_note(ctx, id, &path)?;
        self.notes_changed(ctx);
        Ok(())
    }

    /// FOLDER_RENAME `{id: old folder, name: new folder}`: moves every
    /// note in it. NOTES_INFO to all.
    pub(super) fn rename_folder(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let from = folder_path(call.data.string("id")?).ok_or("not a folder")?;
        let to = folder_path(call.data.string("name")?).ok_or("not a folder name")?;
        let moves: Vec<(String, String)> = self
            .notes_in(&from)
            .into_iter()
            .map(|(id, path)| (id, format!("{to}{}", &path[from.len()..])))
            .collect();
        if moves.is_empty() {
            return Err(format!("folder {from} holds no notes"));
        }
        if let Some((_, taken)) = moves
            .iter()
            .find(|(id, path)| self.notes.find_by_path(path).is_some_and(|n| &n.id != id))
        {
            return Err(format!("a note at {taken} already exists"));
        }
        for (id, path) in moves {
            self.move_note(ctx, &id, &path)?;
        }
        self.notes_changed(ctx);
        Ok(())
    }

    /// NOTE_UPDATE `{id, name?, config}`: the note's config (and name);
    /// NOTE_UPDATED to watchers, NOTES_INFO to all.
    pub(super) fn update_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("id")?;
        let config = call
            .data
            .opt_object("config")?
            .ok_or("data.config is required")?
            .clone();
        let name = call
            .data
            .opt_string("name")?
            .filter(|n| !n.trim().is_empty());
        if let Some(name) = name {
            let path = normalize_note_path(name).map_err(|e| e.to_string())?;
            let current = self.notes.get(id).map(|n| n.path.clone());
            if current.as_deref() != Some(path.as_str()) {
                self.move_note(ctx, id, &path)?;
            }
        }
        let (name, info) = self.notes.update(id, |note| {
            for (key, value) in &config {
                note.config.insert(key.clone(), value.clone());
            }
            Ok((note.name.clone(), note.info.clone()))
        })?;
        let updated = json!({ "name": name, "config": config, "info": info });
        self.to_watchers(ctx, id, &[], "NOTE_UPDATED", &updated, None);
        self.notes_changed(ctx);
        Ok(())
    }

    /// Stores `note` as a new note (fresh note and paragraph ids, so
    /// paragraph ids stay unique), at `path` or the next free variant of
    /// it; returns its id. NOTES_INFO to all.
    pub(super) fn add_copy(
        &mut self,
        ctx: &mut Context<'_>,
        mut note: Note,
        path: &str,
        user: &str,
    ) -> Result<String, String> {
        let path = self.free_path(path);
        note.id = ids::note_id();
        note.name = name_of(&path).to_owned();
        note.path = path;
        for paragraph in &mut note.paragraphs {
            let fresh = Paragraph::new(user);
            paragraph.id = fresh.id.clone();
            paragraph.job_name = fresh.job_name;
        }
        if interpreter::info(&note.default_interpreter_group).is_none() {
            note.default_interpreter_group = self.config.default_interpreter.clone();
        }
        let id = note.id.clone();
        self.notes
            .insert(note)
            .map_err(|e| format!("could not save the note: {e}"))?;
        self.notes_changed(ctx);
        Ok(id)
    }

    /// CLONE_NOTE `{id, name}`: a copy of the note; NEW_NOTE to the
    /// sender (the UI opens it), NOTES_INFO to all.
    pub(super) fn clone_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("id")?;
        let source = self
            .notes
            .get(id)
            .ok_or_else(|| format!("note {id} not found"))?
            .clone();
        let requested = call.data.opt_string("name")?.unwrap_or("");
        let path = if requested.trim().is_empty() {
            format!("{} Clone", source.path)
        } else {
            normalize_note_path(requested).map_err(|e| e.to_string())?
        };
        let new_id = self.add_copy(ctx, source, &path, call.user)?;
        self.watchers.bind(call.conn, &new_id);
        let note = self.notes.get(&new_id).map(Note::for_wire);
        Self::send(ctx, call.conn, "NEW_NOTE", &json!({ "note": note }));
        Ok(())
    }

    /// IMPORT_NOTE `{note}`: a Zeppelin export (`.zpln` or JSON, as an
    /// object or its text) as a new note; NOTES_INFO to all.
    pub(super) fn import_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let note = match call.data.0.get("note") {
            Some(Value::String(text)) => parse_import(text)?,
            Some(value @ Value::Object(_)) => parse_import_value(value.clone())?,
            _ => return Err("data.note must be a note (object or JSON text)".to_owned()),
        };
        let path = import_path(&note)?;
        self.add_copy(ctx, note, &path, call.user)?;
        Ok(())
    }

    /// Moves note `id` into the trash (its path under `/~Trash`).
    fn trash_note(&mut self, ctx: &mut Context<'_>, id: &str) -> OpResult {
        let path = self
            .notes
            .get(id)
            .ok_or_else(|| format!("note {id} not found"))?
            .path
            .clone();
        if in_folder(&path, TRASH) {
            return Ok(());
        }
        let target = self.free_path(&format!("{TRASH}{path}"));
        self.move_note(ctx, id, &target)
    }

    /// Moves note `id` out of the trash.
    fn untrash_note(&mut self, ctx: &mut Context<'_>, id: &str) -> OpResult {
        let path = self
            .notes
            .get(id)
            .ok_or_else(|| format!("note {id} not found"))?
            .path
            .clone();
        let Some(outside) = path.strip_prefix(TRASH).filter(|p| p.starts_with('/')) else {
            return Ok(());
        };
        let target = self.free_path(outside);
        self.move_note(ctx, id, &target)
    }

    /// MOVE_NOTE_TO_TRASH `{id}`.
    pub(super) fn move_note_to_trash(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        self.trash_note(ctx, call.data.string("id")?)?;
        self.notes_changed(ctx);
        Ok(())
    }

    /// MOVE_FOLDER_TO_TRASH `{id: folder}`.
    pub(super) fn move_folder_to_trash(
        &mut self,
        ctx: &mut Context<'_>,
        call: Call<'_>,
    ) -> OpResult {
        let folder = folder_path(call.data.string("id")?).ok_or("not a folder")?;
        for (id, _) in self.notes_in(&folder) {
            self.trash_note(ctx, &id)?;
        }
        self.notes_changed(ctx);
        Ok(())
    }

    /// RESTORE_NOTE `{id}`.
    pub(super) fn restore_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        self.untrash_note(ctx, call.data.string("id")?)?;
        self.notes_changed(ctx);
        Ok(())
    }

    /// RESTORE_FOLDER `{id: folder in the trash}`.
    pub(super) fn restore_folder(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let mut folder = folder_path(call.data.string("id")?).ok_or("not a folder")?;
        if !in_folder(&folder, TRASH) && folder != TRASH {
            folder = format!("{TRASH}{folder}");
        }
        for (id, _) in self.notes_in(&folder) {
            self.untrash_note(ctx, &id)?;
        }
        self.notes_changed(ctx);
        Ok(())
    }

    /// RESTORE_ALL: every note out of the trash.
    pub(super) fn restore_all(&mut self, ctx: &mut Context<'_>) -> OpResult {
        for (id, _) in self.notes_in(TRASH) {
            self.untrash_note(ctx, &id)?;
        }
        self.notes_changed(ctx);
        Ok(())
    }

    /// EMPTY_TRASH: deletes every note in the trash.
    pub(super) fn empty_trash(&mut self, ctx: &mut Context<'_>) -> OpResult {
        for (id, _) in self.notes_in(TRASH) {
            self.remove_note(&id)?;
        }
        self.notes_changed(ctx);
        Ok(())
    }

    /// REMOVE_FOLDER `{id: folder}`: deletes every note in it.
    pub(super) fn remove_folder(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let folder = folder_path(call.data.string("id")?).ok_or("not a folder")?;
        for (id, _) in self.notes_in(&folder) {
            self.remove_note(&id)?;
        }
        self.notes_changed(ctx);
        Ok(())
    }

    /// UPDATE_PERSONALIZED_MODE `{id, personalized}`: kept in the note's
    /// config (every user still sees the same results); NOTE to watchers.
    pub(super) fn update_personalized_mode(
        &mut self,
        ctx: &mut Context<'_>,
        call: Call<'_>,
    ) -> OpResult {
        let id = call.data.string("id")?;
        let personalized = match call.data.0.get("personalized") {
            Some(Value::String(text)) => text == "true",
            Some(Value::Bool(on)) => *on,
            _ => return Err("data.personalized must be \"true\" or \"false\"".to_owned()),
        };
        let note = self.notes.update(id, |note| {
            note.config.insert(
                "personalizedMode".to_owned(),
                json!(personalized.to_string()),
            );
            Ok(note.for_wire())
        })?;
        self.to_watchers(
            ctx,
            id,
            &[call.conn],
            "NOTE",
            &json!({ "note": note }),
            None,
        );
        Ok(())
    }

    /// SAVE_NOTE_FORMS `{noteId, noteParams}`: the note's form values;
    /// SAVE_NOTE_FORMS `{formsData}` to watchers.
    pub(super) fn save_note_forms(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("noteId")?;
        let params = call
            .data
            .opt_object("noteParams")?
            .cloned()
            .unwrap_or_default();
        let forms = self.notes.update(id, |note| {
            note.note_params = params;
            Ok(json!({ "forms": note.note_forms, "params": note.note_params }))
        })?;
        let data = json!({ "formsData": forms });
        self.to_watchers(ctx, id, &[call.conn], "SAVE_NOTE_FORMS", &data, None);
        Ok(())
    }

    /// REMOVE_NOTE_FORMS `{noteId, formName}`: drops a note form and its
    /// value; SAVE_NOTE_FORMS `{formsData}` to watchers.
    pub(super) fn remove_note_forms(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("noteId")?;
        let name = call.data.string("formName")?;
        let forms = self.notes.update(id, |note| {
            note.note_forms.remove(name);
            note.note_params.remove(name);
            Ok(json!({ "forms": note.note_forms, "params": note.note_params }))
        })?;
        let data = json!({ "formsData": forms });
        self.to_watchers(ctx, id, &[call.conn], "SAVE_NOTE_FORMS", &data, None);
        Ok(())
    }

    /// SAVE_INTERPRETER_BINDINGS `{noteId, selectedSettingIds}`: the first
    /// selected interpreter becomes the note's default; INTERPRETER_BINDINGS
    /// to the sender.
    pub(super) fn save_interpreter_bindings(
        &mut self,
        ctx: &mut Context<'_>,
        call: Call<'_>,
    ) -> OpResult {
        let id = call.data.string("noteId")?;
        let first = match call.data.0.get("selectedSettingIds") {
            Some(Value::Array(ids)) => ids.first().and_then(Value::as_str).map(str::to_owned),
            None | Some(Value::Null) => None,
            Some(_) => return Err("data.selectedSettingIds must be an array".to_owned()),
        };
        if let Some(group) = first {
            if interpreter::info(&group).is_none() {
                return Err(format!("unknown interpreter {group}"));
            }
            self.notes.update(id, |note| {
                note.default_interpreter_group = group;
                Ok(())
            })?;
        }
        self.interpreter_bindings(ctx, call.conn);
        Ok(())
    }

    /// LIST_NOTE_JOBS: every note with its paragraphs' run state, as the
    /// jobs page shows it; LIST_NOTE_JOBS `{noteJobs}` to the sender.
    pub(super) fn list_note_jobs(&self, ctx: &mut Context<'_>, conn: ConnectionId) {
        let jobs: Vec<Value> = self
            .notes
            .summaries()
            .into_iter()
            .filter(|summary| !in_folder(&summary.path, TRASH))
            .filter_map(|summary| self.notes.get(&summary.id))
            .map(|note| {
                let running = note
                    .paragraphs
                    .iter()
                    .any(|p| matches!(p.status.as_str(), "RUNNING" | "PENDING"));
                let paragraphs: Vec<Value> = note
                    .paragraphs
                    .iter()
                    .map(|p| {
                        json!({
                            "id": p.id,
                            "name": p.title.clone().unwrap_or_default(),
                            "status": p.status.as_str(),
                        })
                    })
                    .collect();
                json!({
                    "noteId": note.id,
                    "noteName": note.path,
                    "noteType": "normal",
                    "interpreter": note.default_interpreter_group,
                    "isRunningJob": running,
                    "isRemoved": false,
                    "unixTimeLastRun": 0,
                    "paragraphs": paragraphs,
                })
            })
            .collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let data = json!({ "noteJobs": { "lastResponseUnixTime": now_ms, "jobs": jobs } });
        Self::send(ctx, conn, "LIST_NOTE_JOBS", &data);
    }
}

/// A note from the text of a Zeppelin export.
pub(super) fn parse_import(text: &str) -> Result<Note, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("the note is not JSON: {e}"))?;
    parse_import_value(value)
}

/// A note from a Zeppelin export (`.zpln` or the older JSON): ids and
/// missing fields are filled in by the caller.
pub(super) fn parse_import_value(mut value: Value) -> Result<Note, String> {
    let Some(fields) = value.as_object_mut() else {
        return Err("the note must be a JSON object".to_owned());
    };
    // Ids are replaced on import; an export without them is fine.
    fields.entry("id").or_insert_with(|| json!(""));
    fields.entry("name").or_insert_with(|| json!(""));
    fields.entry("paragraphs").or_insert_with(|| json!([]));
    if let Some(Value::Array(paragraphs)) = fields.get_mut("paragraphs") {
        for paragraph in paragraphs.iter_mut() {
            if let Some(p) = paragraph.as_object_mut() {
                p.entry("id").or_insert_with(|| json!(""));
            }
        }
    }
    let mut note: Note =
        serde_json::from_value(value).map_err(|e| format!("not a Zeppelin note: {e}"))?;
    note.after_load();
    Ok(note)
}

/// Where an imported note goes: its path, else its name.
fn import_path(note: &Note) -> Result<String, String> {
    let requested = if note.path.trim_matches('/').is_empty() {
        note.name.as_str()
    } else {
        note.path.as_str()
    };
    normalize_note_path(requested).map_err(|e| e.to_string())
}

/// A note's JSON for export: the `.zpln` layout, dates as on disk.
pub(super) fn export_text(note: &Note) -> String {
    serde_json::to_string_pretty(note).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_and_trash_paths() {
        assert_eq!(folder_path("a/b/").as_deref(), Some("/a/b"));
        assert_eq!(folder_path("/"), None);
        assert_eq!(folder_path("../x"), None);
        assert!(in_folder("/~Trash/a", TRASH));
        assert!(!in_folder("/~Trashy/a", TRASH));
        assert!(!in_folder("/~Trash", TRASH));
    }

    #[test]
    fn zeppelin_exports_import_with_or_without_ids() {
        let note = parse_import(
            r#"{"name":"Imported","paragraphs":[{"text":"%md hi","config":{},"settings":{"params":{},"forms":{}}}]}"#,
        )
        .unwrap();
        assert_eq!(note.paragraphs.len(), 1);
        assert_eq!(note.paragraphs[0].text, "%md hi");
        assert_eq!(import_path(&note).unwrap(), "/Imported");
        assert!(parse_import("[1]").is_err());
        assert!(parse_import("{").is_err());
    }
}
