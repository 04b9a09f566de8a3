//! The ops of the notebook protocol: what each request changes and who
//! hears about it (the sender, a note's watchers, or everyone).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::app::NotebookHandler;
use super::dates;
use super::envelope::{Data, Request};
use super::ids;
use super::interpreter::{self, BUILT_IN, parse_directive};
use super::jobs::{Finished, Job};
use super::model::{Note, Paragraph, Status};
use super::store::normalize_note_path;
use crate::handler::ConnectionId;
use crate::server::Context;

/// Path of the note that collects paragraphs run without a note.
const SCRATCH_PATH: &str = "/scratch";

type OpResult = Result<(), String>;

/// The request an op is handling: who sent it, its `data`, the principal
/// it acts as, and the `msgId` to echo.
#[derive(Clone, Copy)]
pub(super) struct Call<'r> {
    pub(super) conn: ConnectionId,
    pub(super) data: Data<'r>,
    pub(super) user: &'r str,
    pub(super) msg_id: Option<&'r str>,
}

/// What an op does, given the handler, the context and the request.
type OpFn = fn(&mut NotebookHandler, &mut Context<'_>, Call<'_>) -> OpResult;

/// Every op the server implements, with its handler: the one place an op
/// is added.
const OPS: &[(&str, OpFn)] = &[
    ("PING", |_, _, _| Ok(())),
    ("LIST_CONFIGURATIONS", |h, ctx, call| {
        h.list_configurations(ctx, call.conn);
        Ok(())
    }),
    ("LIST_NOTES", |h, ctx, call| {
        NotebookHandler::send(ctx, call.conn, "NOTES_INFO", &h.notes.notes_info());
        Ok(())
    }),
    ("GET_NOTE", |h, ctx, call| h.get_note(ctx, call)),
    ("GET_HOME_NOTE", |h, ctx, call| {
        h.watchers.unbind(call.conn);
        NotebookHandler::send(ctx, call.conn, "NOTE", &json!({ "note": null }));
        Ok(())
    }),
    ("NEW_NOTE", |h, ctx, call| h.new_note(ctx, call)),
    ("DEL_NOTE", |h, ctx, call| h.delete_note(ctx, call)),
    ("COMMIT_PARAGRAPH", |h, ctx, call| {
        h.commit_paragraph(ctx, call)
    }),
    ("INSERT_PARAGRAPH", |h, ctx, call| {
        h.insert_paragraph(ctx, call)
    }),
    ("PARAGRAPH_REMOVE", |h, ctx, call| {
        h.remove_paragraph(ctx, call)
    }),
    ("RUN_PARAGRAPH", |h, ctx, call| h.run_paragraph(ctx, call)),
    ("CANCEL_PARAGRAPH", |h, ctx, call| {
        h.cancel_paragraph(ctx, call)
    }),
    ("RUN_ALL_PARAGRAPHS", |h, ctx, call| {
        h.run_all_paragraphs(ctx, call)
    }),
    ("GET_INTERPRETER_BINDINGS", |h, ctx, call| {
        h.interpreter_bindings(ctx, call.conn);
        Ok(())
    }),
    ("EDITOR_SETTING", |h, ctx, call| h.editor_setting(ctx, call)),
    ("NOTE_RENAME", |h, ctx, call| h.rename_note(ctx, call)),
    ("FOLDER_RENAME", |h, ctx, call| h.rename_folder(ctx, call)),
    ("NOTE_UPDATE", |h, ctx, call| h.update_note(ctx, call)),
    ("CLONE_NOTE", |h, ctx, call| h.clone_note(ctx, call)),
    ("IMPORT_NOTE", |h, ctx, call| h.import_note(ctx, call)),
    ("RELOAD_NOTE", |h, ctx, call| h.get_note(ctx, call)),
    ("RELOAD_NOTES_FROM_REPO", |h, ctx, call| {
        NotebookHandler::send(ctx, call.conn, "NOTES_INFO", &h.notes.notes_info());
        Ok(())
    }),
    ("MOVE_NOTE_TO_TRASH", |h, ctx, call| {
        h.move_note_to_trash(ctx, call)
    }),
    ("MOVE_FOLDER_TO_TRASH", |h, ctx, call| {
        h.move_folder_to_trash(ctx, call)
    }),
    ("RESTORE_NOTE", |h, ctx, call| h.restore_note(ctx, call)),
    ("RESTORE_FOLDER", |h, ctx, call| h.restore_folder(ctx, call)),
    ("RESTORE_ALL", |h, ctx, _| h.restore_all(ctx)),
    ("EMPTY_TRASH", |h, ctx, _| h.empty_trash(ctx)),
    ("REMOVE_FOLDER", |h, ctx, call| h.remove_folder(ctx, call)),
    ("UPDATE_PERSONALIZED_MODE", |h, ctx, call| {
        h.update_personalized_mode(ctx, call)
    }),
    ("SAVE_NOTE_FORMS", |h, ctx, call| {
        h.save_note_forms(ctx, call)
    }),
    ("REMOVE_NOTE_FORMS", |h, ctx, call| {
        h.remove_note_forms(ctx, call)
    }),
    ("LIST_REVISION_HISTORY", |_, ctx, call| {
        NotebookHandler::send(
            ctx,
            call.conn,
            "LIST_REVISION_HISTORY",
            &json!({ "revisionList": [] }),
        );
        Ok(())
    }),
    ("CHECKPOINT_NOTE", |_, _, _| Err(NO_REVISIONS.to_owned())),
    ("SET_NOTE_REVISION", |_, _, _| Err(NO_REVISIONS.to_owned())),
    ("NOTE_REVISION", |_, _, _| Err(NO_REVISIONS.to_owned())),
    ("NOTE_REVISION_FOR_COMPARE", |_, _, _| {
        Err(NO_REVISIONS.to_owned())
    }),
    ("GET_INTERPRETER_SETTINGS", |h, ctx, call| {
        let settings = super::rest::interpreter_settings(&h.available);
        NotebookHandler::send(
            ctx,
            call.conn,
            "INTERPRETER_SETTINGS",
            &json!({ "interpreterSettings": settings }),
        );
        Ok(())
    }),
    ("SAVE_INTERPRETER_BINDINGS", |h, ctx, call| {
        h.save_interpreter_bindings(ctx, call)
    }),
    ("MOVE_PARAGRAPH", |h, ctx, call| h.move_paragraph(ctx, call)),
    ("COPY_PARAGRAPH", |h, ctx, call| h.copy_paragraph(ctx, call)),
    ("PARAGRAPH_CLEAR_OUTPUT", |h, ctx, call| {
        h.clear_output(ctx, call)
    }),
    ("PARAGRAPH_CLEAR_ALL_OUTPUT", |h, ctx, call| {
        h.clear_all_output(ctx, call)
    }),
    ("CANCEL_ALL_PARAGRAPHS", |h, ctx, call| {
        h.cancel_all_paragraphs(ctx, call)
    }),
    ("COMPLETION", |h, ctx, call| h.completion(ctx, call)),
    ("LIST_NOTE_JOBS", |h, ctx, call| {
        h.list_note_jobs(ctx, call.conn);
        Ok(())
    }),
    // The jobs page stops listening; nothing is pushed per connection.
    ("UNSUBSCRIBE_UPDATE_NOTE_JOBS", |_, _, _| Ok(())),
    // Collaborative editing: the editor sends COMMIT_PARAGRAPH with the
    // whole text on blur and on run, which every watcher gets, so patches
    // of the text in between are not applied or relayed.
    ("PATCH_PARAGRAPH", |_, _, _| Ok(())),
    // Angular objects and spell results belong to interpreters wsloop
    // does not have; the UI expects no answer.
    ("ANGULAR_OBJECT_UPDATED", |_, _, _| Ok(())),
    ("ANGULAR_OBJECT_CLIENT_BIND", |_, _, _| Ok(())),
    ("ANGULAR_OBJECT_CLIENT_UNBIND", |_, _, _| Ok(())),
    ("PARAGRAPH_EXECUTED_BY_SPELL", |_, _, _| Ok(())),
];

/// What the revision ops answer: wsloop keeps no note history.
const NO_REVISIONS: &str =
    "wsloop keeps no note revisions (isRevisionSupported is false): notes are saved as they change";

/// The handler of `op`, if the server implements it.
fn handler_of(op: &str) -> Option<OpFn> {
    OPS.iter()
        .find(|(name, _)| *name == op)
        .map(|(_, handler)| *handler)
}

/// The names of every op the server implements, in the table's order.
#[cfg(test)]
pub(super) fn op_names() -> impl Iterator<Item = &'static str> {
    OPS.iter().map(|(name, _)| *name)
}

/// Whether `op` is one the server implements.
pub(super) fn is_known(op: &str) -> bool {
    handler_of(op).is_some()
}

/// Applies the edits an op carries to a paragraph: text (`paragraph`),
/// title, config (merged key by key, unknown keys kept) and params.
pub(super) fn apply_edits(paragraph: &mut Paragraph, data: Data<'_>, user: &str) -> OpResult {
    if let Some(text) = data.opt_string("paragraph")? {
        paragraph.text = text.to_owned();
    }
    if let Some(title) = data.opt_string("title")? {
        paragraph.title = Some(title.to_owned());
    }
    if let Some(config) = data.opt_object("config")? {
        for (key, value) in config {
            paragraph.config.insert(key.clone(), value.clone());
        }
    }
    if let Some(params) = data.opt_object("params")? {
        paragraph.settings.params = params.clone();
    }
    paragraph.user = user.to_owned();
    paragraph.date_updated = Some(dates::now_disk());
    Ok(())
}

pub(super) fn paragraph_in<'n>(note: &'n mut Note, id: &str) -> Result<&'n mut Paragraph, String> {
    let note_id = note.id.clone();
    note.paragraph_mut(id)
        .ok_or_else(|| format!("paragraph {id} not found in note {note_id}"))
}

impl NotebookHandler {
    /// Runs one authenticated request; an `Err` becomes ERROR_INFO to the
    /// sender, and means nothing changed.
    pub(super) fn dispatch(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnectionId,
        request: &Request,
        user: &str,
    ) -> OpResult {
        let call = Call {
            conn,
            data: Data(&request.data),
            user,
            msg_id: request.msg_id.as_deref(),
        };
        match handler_of(&request.op) {
            Some(handler) => handler(self, ctx, call),
            None => Err(format!("unknown op {}", request.op)),
        }
    }

    /// The note an op acts on: `data.noteId`, else the connection's note,
    /// else the note holding paragraph `data.id`.
    pub(super) fn target_note(&self, conn: ConnectionId, data: Data<'_>) -> Result<String, String> {
        if let Some(note_id) = data.opt_string("noteId")? {
            return match self.notes.get(note_id) {
                Some(_) => Ok(note_id.to_owned()),
                None => Err(format!("note {note_id} not found")),
            };
        }
        if let Some(note_id) = self.watchers.note_of(conn) {
            return Ok(note_id.to_owned());
        }
        if let Some(paragraph_id) = data.opt_string("id")?
            && let Some(note_id) = self.notes.note_of_paragraph(paragraph_id)
        {
            return Ok(note_id.to_owned());
        }
        Err("no note given: send data.noteId, or open a note with GET_NOTE first".to_owned())
    }

    fn list_configurations(&self, ctx: &mut Context<'_>, conn: ConnectionId) {
        let configurations = self.configurations();
        Self::send(
            ctx,
            conn,
            "CONFIGURATIONS_INFO",
            &json!({ "configurations": configurations }),
        );
    }

    fn get_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call { conn, data, .. } = call;
        let id = data.string("id")?;
        let note = self
            .notes
            .get(id)
            .ok_or_else(|| format!("note {id} not found"))?;
        Self::send(ctx, conn, "NOTE", &json!({ "note": note.for_wire() }));
        self.watchers.bind(conn, id);
        Ok(())
    }

    fn new_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call {
            conn, data, user, ..
        } = call;
        let path = normalize_note_path(data.opt_string("name")?.unwrap_or(""))
            .map_err(|e| e.to_string())?;
        if self.notes.find_by_path(&path).is_some() {
            return Err(format!("a note at {path} already exists"));
        }
        let group = data
            .opt_string("defaultInterpreterGroup")?
            .filter(|g| !g.is_empty())
            .unwrap_or(&self.config.default_interpreter);
        if interpreter::info(group).is_none() {
            return Err(format!("unknown interpreter group {group}"));
        }
        let note = Note::new(ids::note_id(), path, group, user);
        let id = note.id.clone();
        self.notes
            .insert(note)
            .map_err(|e| format!("could not save the new note: {e}"))?;
        self.watchers.bind(conn, &id);
        let note = self.notes.get(&id).map(Note::for_wire);
        Self::send(ctx, conn, "NEW_NOTE", &json!({ "note": note }));
        Self::to_everyone(ctx, "NOTES_INFO", &self.notes.notes_info());
        Ok(())
    }

    fn delete_note(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call { data, .. } = call;
        let id = data.string("id")?;
        self.notes.remove(id)?;
        self.jobs.forget_note(id);
        self.watchers.forget_note(id);
        Self::to_everyone(ctx, "NOTES_INFO", &self.notes.notes_info());
        Ok(())
    }

    fn commit_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call {
            conn,
            data,
            user,
            msg_id,
        } = call;
        let id = data.string("id")?;
        let note_id = self.target_note(conn, data)?;
        let paragraph = self.notes.update(&note_id, |note| {
            let paragraph = paragraph_in(note, id)?;
            apply_edits(paragraph, data, user)?;
            Ok(paragraph.for_wire())
        })?;
        self.to_watchers(
            ctx,
            &note_id,
            &[conn],
            "PARAGRAPH",
            &json!({ "paragraph": paragraph }),
            msg_id,
        );
        Ok(())
    }

    fn insert_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let note_id = self.target_note(call.conn, call.data)?;
        let requested = call.data.opt_index("index")?;
        let mut paragraph = Paragraph::new(call.user);
        paragraph.config = call.data.opt_object("config")?.cloned().unwrap_or_default();
        self.add_paragraph(ctx, &note_id, paragraph, requested, call)
    }

    fn remove_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call { conn, data, .. } = call;
        let id = data.string("id")?;
        let note_id = self.target_note(conn, data)?;
        self.notes.update(&note_id, |note| {
            paragraph_in(note, id)?;
            note.paragraphs.retain(|p| p.id != id);
            Ok(())
        })?;
        self.jobs.cancel(id, None, None);
        self.to_watchers(
            ctx,
            &note_id,
            &[conn],
            "PARAGRAPH_REMOVED",
            &json!({ "id": id }),
            None,
        );
        Ok(())
    }

    fn run_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call {
            conn,
            data,
            user,
            msg_id,
        } = call;
        let id = data.string("id")?;
        if self.jobs.is_active(id) {
            return Err(format!("paragraph {id} is already queued or running"));
        }
        self.jobs
            .admit(user)
            .map_err(|refused| refused.to_string())?;
        // The edits are checked before anything is created, so a refused
        // request leaves no scratch note or paragraph behind.
        apply_edits(&mut Paragraph::with_id(id.to_owned(), user), data, user)?;
        let unbound = data.opt_string("noteId")?.is_none() && self.watchers.note_of(conn).is_none();
        let note_id = if unbound && self.notes.note_of_paragraph(id).is_none() {
            self.scratch_note_with(ctx, id, user)?
        } else {
            self.target_note(conn, data)?
        };
        self.notes.update(&note_id, |note| {
            let paragraph = paragraph_in(note, id)?;
            apply_edits(paragraph, data, user)
        })?;
        self.queue_run(
            ctx,
            Job {
                note_id,
                paragraph_id: id.to_owned(),
                principal: user.to_owned(),
                requester: conn,
                msg_id: msg_id.map(str::to_owned),
                canceller: None,
                then: Vec::new(),
            },
        );
        Ok(())
    }

    /// The scratch note, created on first use (NOTES_INFO to everyone, as
    /// for any new note), with a paragraph `id` added if it has none: lets
    /// a client that knows only RUN_PARAGRAPH work on a fresh server.
    fn scratch_note_with(
        &mut self,
        ctx: &mut Context<'_>,
        paragraph_id: &str,
        user: &str,
    ) -> Result<String, String> {
        let note_id = match self.notes.find_by_path(SCRATCH_PATH) {
            Some(note) => note.id.clone(),
            None => {
                let mut note = Note::new(
                    ids::note_id(),
                    SCRATCH_PATH.to_owned(),
                    &self.config.default_interpreter,
                    user,
                );
                note.paragraphs.clear();
                let id = note.id.clone();
                self.notes
                    .insert(note)
                    .map_err(|e| format!("could not create the scratch note: {e}"))?;
                Self::to_everyone(ctx, "NOTES_INFO", &self.notes.notes_info());
                id
            }
        };
        self.notes.update(&note_id, |note| {
            if note.paragraph_mut(paragraph_id).is_none() {
                note.paragraphs
                    .push(Paragraph::with_id(paragraph_id.to_owned(), user));
            }
            Ok(())
        })?;
        Ok(note_id)
    }

    fn cancel_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call {
            conn, data, msg_id, ..
        } = call;
        let id = data.string("id")?;
        let note_id = self.target_note(conn, data)?;
        if self
            .notes
            .get(&note_id)
            .is_none_or(|n| !n.paragraphs.iter().any(|p| p.id == id))
        {
            return Err(format!("paragraph {id} not found in note {note_id}"));
        }
        if let Some(job) = self.jobs.cancel(id, Some(conn), msg_id) {
            self.set_status(ctx, &job, Status::Abort, None);
        }
        Ok(())
    }

    fn run_all_paragraphs(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call {
            conn,
            data,
            user,
            msg_id,
        } = call;
        let note_id = data.string("noteId")?;
        let items: Vec<Value> = match data.0.get("paragraphs") {
            Some(Value::String(text)) => serde_json::from_str(text)
                .map_err(|e| format!("data.paragraphs is not a JSON array: {e}"))?,
            Some(Value::Array(items)) => items.clone(),
            _ => return Err("data.paragraphs must be a JSON string holding an array".to_owned()),
        };
        // Refused before any edit is saved: an error changes nothing. A
        // batch lists each paragraph once, so the list it keeps while it
        // runs is no longer than its note.
        let mut listed = HashSet::new();
        for id in items
            .iter()
            .filter_map(|item| item.get("id").and_then(Value::as_str))
        {
            if self.jobs.is_active(id) {
                return Err("some of these paragraphs are already queued or running".to_owned());
            }
            if !listed.insert(id) {
                return Err(format!("paragraph {id} is listed twice"));
            }
        }
        self.jobs
            .admit(user)
            .map_err(|refused| refused.to_string())?;
        let mut order = Vec::new();
        self.notes.update(note_id, |note| {
            for item in &items {
                let Value::Object(fields) = item else {
                    return Err("each entry of data.paragraphs must be an object".to_owned());
                };
                let edits = Data(fields);
                let id = edits.string("id")?;
                let paragraph = paragraph_in(note, id)?;
                apply_edits(paragraph, edits, user)?;
                let enabled = paragraph
                    .config
                    .get("enabled")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if enabled {
                    order.push(id.to_owned());
                }
            }
            Ok(())
        })?;
        if order.is_empty() {
            return Ok(());
        }
        let first = order.remove(0);
        if self.running_notes.insert(note_id.to_owned()) {
            let status = json!({ "status": true });
            self.to_watchers(ctx, note_id, &[conn], "NOTE_RUNNING_STATUS", &status, None);
        }
        self.queue_run(
            ctx,
            Job {
                note_id: note_id.to_owned(),
                paragraph_id: first,
                principal: user.to_owned(),
                requester: conn,
                msg_id: msg_id.map(str::to_owned),
                canceller: None,
                then: order,
            },
        );
        Ok(())
    }

    /// The interpreter groups whose programs this machine has, each with
    /// its interpreters, in Zeppelin's binding shape.
    pub(super) fn interpreter_bindings(&self, ctx: &mut Context<'_>, conn: ConnectionId) {
        let mut bindings: Vec<Value> = Vec::new();
        for info in BUILT_IN {
            if !self.available.contains(&info.group) {
                continue;
            }
            let name = info
                .name
                .strip_prefix(info.group)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(info.name);
            let interpreter = json!({
                "name": name,
                "defaultInterpreter": name == info.group,
                "editor": { "language": info.language, "editOnDblClick": info.edit_on_double_click },
            });
            match bindings.iter_mut().find(|b| b["id"] == info.group) {
                Some(binding) => {
                    if let Some(list) = binding["interpreters"].as_array_mut() {
                        list.push(interpreter);
                    }
                }
                None => bindings.push(json!({
                    "id": info.group,
                    "name": info.group,
                    "selected": true,
                    "interpreters": [interpreter],
                })),
            }
        }
        Self::send(
            ctx,
            conn,
            "INTERPRETER_BINDINGS",
            &json!({ "interpreterBindings": bindings }),
        );
    }

    fn editor_setting(&self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let Call { conn, data, .. } = call;
        let paragraph_id = data.string("paragraphId")?;
        let text = data.opt_string("paragraphText")?.unwrap_or("");
        let default_group = self
            .notes
            .note_of_paragraph(paragraph_id)
            .and_then(|id| self.notes.get(id))
            .map_or(self.config.default_interpreter.as_str(), |n| {
                n.default_interpreter_group.as_str()
            });
        let name = parse_directive(text).name.unwrap_or(default_group);
        let editor = match interpreter::resolve(name) {
            Some(info) => json!({
                "language": info.language,
                "editOnDblClick": info.edit_on_double_click,
                "completionSupport": info.completion_support,
            }),
            None => {
                json!({ "language": "text", "editOnDblClick": false, "completionSupport": false })
            }
        };
        Self::send(
            ctx,
            conn,
            "EDITOR_SETTING",
            &json!({ "paragraphId": paragraph_id, "editor": editor }),
        );
        Ok(())
    }

    /// Sets a paragraph's status (and results), persists, and tells the
    /// watchers and the requester. Returns false if the paragraph is gone.
    pub(super) fn set_status(
        &mut self,
        ctx: &mut Context<'_>,
        job: &Job,
        status: Status,
        results: Option<super::model::Results>,
    ) -> bool {
        let now = dates::now_disk();
        let updated = self.notes.update(&job.note_id, |note| {
            let paragraph = paragraph_in(note, &job.paragraph_id)?;
            paragraph.status = status;
            match status {
                Status::Pending => {
                    paragraph.results = None;
                    paragraph.date_started = None;
                    paragraph.date_finished = None;
                }
                Status::Running => paragraph.date_started = Some(now.clone()),
                _ => {
                    if paragraph.date_started.is_none() {
                        paragraph.date_started = Some(now.clone());
                    }
                    paragraph.date_finished = Some(now.clone());
                    paragraph.results = results.map(std::sync::Arc::new);
                }
            }
            Ok(paragraph.for_wire())
        });
        match updated {
            Ok(paragraph) => {
                if matches!(status, Status::Finished | Status::Error | Status::Abort) {
                    *self.run_counts.entry(status.as_str()).or_default() += 1;
                    self.wake_sync_runs(ctx, &job.paragraph_id);
                }
                // Whoever ran it, and whoever cancelled it, bound or not.
                let also: Vec<ConnectionId> = std::iter::once(job.requester)
                    .chain(job.canceller)
                    .collect();
                self.to_watchers(
                    ctx,
                    &job.note_id,
                    &also,
                    "PARAGRAPH",
                    &json!({ "paragraph": paragraph }),
                    job.msg_id.as_deref(),
                );
                true
            }
            Err(error) => {
                log::warn!(
                    "paragraph {} -> {}: {error}",
                    job.paragraph_id,
                    status.as_str()
                );
                false
            }
        }
    }

    /// Why a paragraph may not run here, if it may not: code-running
    /// interpreters (Python, shell, Spark) run as the server's user, so an
    /// anonymous user may run them only when the server listens on
    /// loopback, unless `security.allow_anonymous_code` says otherwise.
    fn code_refusal(&self, text: &str, default_group: &str) -> Option<String> {
        let name = parse_directive(text).name.unwrap_or(default_group);
        let info = interpreter::resolve(name)?;
        let config = &self.config;
        let open = config.listens_on_loopback || config.allow_anonymous_code;
        if !info.runs_code || open || !config.anonymous_allowed {
            return None;
        }
        Some(format!(
            "%{} runs code as the server's user, and this server listens beyond loopback with anonymous access on: configure users ([[security.users]], security.anonymous = false) or set security.allow_anonymous_code = true",
            info.name
        ))
    }

    /// Marks a paragraph PENDING and queues it on its interpreter's lane.
    /// A blank one finishes at once with no results, and its batch goes
    /// on with the next paragraph.
    fn queue_run(&mut self, ctx: &mut Context<'_>, mut job: Job) {
        loop {
            // Requests were admitted before any change; a batch's next
            // paragraph replaces the run that just ended, so this refuses
            // nothing unless the bounds changed.
            if let Err(refused) = self.jobs.admit(&job.principal) {
                self.set_status(ctx, &job, Status::Error, Some(error_results(refused)));
                return;
            }
            if !self.set_status(ctx, &job, Status::Pending, None) {
                return;
            }
            let Some(note) = self.notes.get(&job.note_id) else {
                return;
            };
            let Some(paragraph) = note.paragraphs.iter().find(|p| p.id == job.paragraph_id) else {
                return;
            };
            if let Some(refusal) =
                self.code_refusal(&paragraph.text, &note.default_interpreter_group)
            {
                self.set_status(ctx, &job, Status::Error, Some(error_results(refusal)));
                return;
            }
            if !paragraph.text.trim().is_empty() {
                let queued =
                    self.jobs
                        .enqueue(job, &paragraph.text, &note.default_interpreter_group);
                match queued {
                    Ok(()) => self.run_next(ctx),
                    Err(job) => {
                        let results = error_results("no interpreter thread can run it");
                        self.set_status(ctx, &job, Status::Error, Some(results));
                    }
                }
                return;
            }
            if !self.set_status(ctx, &job, Status::Finished, None) {
                return;
            }
            match next_in_batch(job) {
                Some(next) => job = next,
                None => return,
            }
        }
    }

    /// Starts the next queued paragraph of every idle interpreter lane.
    pub(super) fn run_next(&mut self, ctx: &mut Context<'_>) {
        loop {
            let notes = &self.notes;
            let next = self.jobs.next_to_run(|job| {
                let note = notes.get(&job.note_id)?;
                let paragraph = note.paragraphs.iter().find(|p| p.id == job.paragraph_id)?;
                Some((
                    paragraph.text.clone(),
                    note.default_interpreter_group.clone(),
                ))
            });
            let Some(ready) = next else {
                return;
            };
            if !self.set_status(ctx, &ready.job, Status::Running, None) {
                continue;
            }
            if let Err((job, why)) = self.jobs.dispatch_on(ready, ctx) {
                self.set_status(ctx, &job, Status::Error, Some(error_results(why)));
            }
        }
    }

    /// Records a finished run and continues its RUN_ALL batch on success.
    pub(super) fn finish_run(&mut self, ctx: &mut Context<'_>, finished: Finished) {
        let Finished {
            job,
            results,
            cancelled,
        } = finished;
        let status = if cancelled {
            Status::Abort
        } else if results.code == "ERROR" {
            Status::Error
        } else {
            Status::Finished
        };
        if self.set_status(ctx, &job, status, Some(results))
            && status == Status::Finished
            && let Some(next) = next_in_batch(job)
        {
            self.queue_run(ctx, next);
        }
    }
}

/// The run of the next paragraph of `job`'s RUN_ALL batch, if any.
fn next_in_batch(job: Job) -> Option<Job> {
    let mut rest = job.then;
    if rest.is_empty() {
        return None;
    }
    let next = rest.remove(0);
    Some(Job {
        paragraph_id: next,
        then: rest,
        ..job
    })
}

/// The results of a run that could not start, saying why.
pub(super) fn error_results(why: impl ToString) -> super::model::Results {
    super::model::Results {
        code: "ERROR".to_owned(),
        msg: vec![super::model::ResultMessage::text(why.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notebook::model::Object;

    #[test]
    fn edits_merge_config_and_replace_params() {
        let mut p = Paragraph::with_id("p1".into(), "anonymous");
        p.config.insert("keep".into(), json!(1));
        p.config.insert("colWidth".into(), json!(6));
        let data: Object = serde_json::from_value(json!({
            "paragraph": "%md hi", "title": "T", "config": {"colWidth": 12}, "params": {"x": 1}
        }))
        .unwrap();
        apply_edits(&mut p, Data(&data), "alice").unwrap();
        assert_eq!(p.text, "%md hi");
        assert_eq!(p.title.as_deref(), Some("T"));
        assert_eq!(p.config["keep"], json!(1));
        assert_eq!(p.config["colWidth"], json!(12));
        assert_eq!(p.settings.params["x"], json!(1));
        assert_eq!(p.user, "alice");
        let bad: Object = serde_json::from_value(json!({ "config": "nope" })).unwrap();
        assert_eq!(
            apply_edits(&mut p, Data(&bad), "alice"),
            Err("data.config must be an object".to_owned())
        );
    }
}
