//! Ops on paragraphs beyond editing and running: move, copy, clear
//! output, cancel all, and completion.

use serde_json::{Value, json};

use super::app::NotebookHandler;
use super::interpreter::{self, parse_directive};
use super::model::{Note, Paragraph, Status};
use super::ops::{Call, apply_edits, paragraph_in};
use super::sql_names::{FoundNames, NameLookup};
use crate::server::Context;

type OpResult = Result<(), String>;

/// The SQL words `%sql` completion offers besides table and column names.
const SQL_KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "HAVING",
    "LIMIT",
    "OFFSET",
    "JOIN",
    "LEFT JOIN",
    "INNER JOIN",
    "ON",
    "AS",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "IS",
    "IN",
    "LIKE",
    "BETWEEN",
    "DISTINCT",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "INSERT INTO",
    "VALUES",
    "UPDATE",
    "SET",
    "DELETE FROM",
    "CREATE TABLE",
    "DROP TABLE",
    "ALTER TABLE",
    "PRIMARY KEY",
    "INTEGER",
    "TEXT",
    "REAL",
    "BLOB",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "UNION",
    "WITH",
    "EXISTS",
    "ASC",
    "DESC",
];

impl NotebookHandler {
    /// MOVE_PARAGRAPH `{id, index}`: PARAGRAPH_MOVED `{id, index}` to
    /// watchers.
    pub(super) fn move_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("id")?;
        let index = call
            .data
            .opt_index("index")?
            .ok_or("data.index is required")?;
        let note_id = self.target_note(call.conn, call.data)?;
        let index = self
            .notes
            .update(&note_id, |note| move_within(note, id, index))?;
        let data = json!({ "id": id, "index": index });
        self.to_watchers(ctx, &note_id, &[call.conn], "PARAGRAPH_MOVED", &data, None);
        Ok(())
    }

    /// COPY_PARAGRAPH `{index, title, paragraph, config, params}`: a new
    /// paragraph with that content; PARAGRAPH_ADDED to watchers.
    pub(super) fn copy_paragraph(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let note_id = self.target_note(call.conn, call.data)?;
        let requested = call.data.opt_index("index")?;
        let mut paragraph = Paragraph::new(call.user);
        apply_edits(&mut paragraph, call.data, call.user)?;
        self.add_paragraph(ctx, &note_id, paragraph, requested, call)
    }

    /// Inserts `paragraph` into note `note_id` at `requested` (clamped;
    /// the end when `None`); PARAGRAPH_ADDED `{paragraph, index}` to
    /// watchers and to `call`'s sender (with its msgId).
    pub(super) fn add_paragraph(
        &mut self,
        ctx: &mut Context<'_>,
        note_id: &str,
        paragraph: Paragraph,
        requested: Option<usize>,
        call: Call<'_>,
    ) -> OpResult {
        let (wire, index) = self.notes.update(note_id, |note| {
            let index = requested
                .unwrap_or(note.paragraphs.len())
                .min(note.paragraphs.len());
            let wire = paragraph.for_wire();
            note.paragraphs.insert(index, paragraph);
            Ok((wire, index))
        })?;
        let data = json!({ "paragraph": wire, "index": index });
        self.to_watchers(
            ctx,
            note_id,
            &[call.conn],
            "PARAGRAPH_ADDED",
            &data,
            call.msg_id,
        );
        Ok(())
    }

    /// PARAGRAPH_CLEAR_OUTPUT `{id}`: PARAGRAPH (results gone) to watchers.
    pub(super) fn clear_output(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("id")?;
        let note_id = self.target_note(call.conn, call.data)?;
        if self.jobs.is_active(id) {
            return Err(format!("paragraph {id} is running; cancel it first"));
        }
        let paragraph = self.notes.update(&note_id, |note| {
            let paragraph = paragraph_in(note, id)?;
            paragraph.results = None;
            Ok(paragraph.for_wire())
        })?;
        let data = json!({ "paragraph": paragraph });
        self.to_watchers(ctx, &note_id, &[call.conn], "PARAGRAPH", &data, None);
        Ok(())
    }

    /// PARAGRAPH_CLEAR_ALL_OUTPUT `{id: noteId}`: NOTE to watchers.
    pub(super) fn clear_all_output(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let note_id = call.data.string("id")?;
        let jobs = &self.jobs;
        let note = self.notes.update(note_id, |note| {
            for paragraph in &mut note.paragraphs {
                if !jobs.is_active(&paragraph.id) {
                    paragraph.results = None;
                }
            }
            Ok(note.for_wire())
        })?;
        self.to_watchers(
            ctx,
            note_id,
            &[call.conn],
            "NOTE",
            &json!({ "note": note }),
            None,
        );
        Ok(())
    }

    /// CANCEL_ALL_PARAGRAPHS `{noteId}`: every queued or running paragraph
    /// of the note is cancelled as by CANCEL_PARAGRAPH.
    pub(super) fn cancel_all_paragraphs(
        &mut self,
        ctx: &mut Context<'_>,
        call: Call<'_>,
    ) -> OpResult {
        let note_id = call.data.string("noteId")?;
        self.cancel_note_runs(ctx, note_id, Some(call.conn), call.msg_id)
    }

    /// Cancels every queued or running paragraph of note `note_id` (queued
    /// ones become ABORT at once, running ones when interrupted).
    pub(super) fn cancel_note_runs(
        &mut self,
        ctx: &mut Context<'_>,
        note_id: &str,
        canceller: Option<crate::handler::ConnectionId>,
        msg_id: Option<&str>,
    ) -> OpResult {
        let ids: Vec<String> = self
            .notes
            .get(note_id)
            .ok_or_else(|| format!("note {note_id} not found"))?
            .paragraphs
            .iter()
            .map(|p| p.id.clone())
            .collect();
        for id in ids {
            if let Some(job) = self.jobs.cancel(&id, canceller, msg_id) {
                self.set_status(ctx, &job, Status::Abort, None);
            }
        }
        Ok(())
    }

    /// COMPLETION `{id, buf, cursor}`: COMPLETION_LIST `{id, completions}`
    /// to the sender; for `%sql`, SQL keywords matching the word before
    /// the cursor (an empty list for other interpreters).
    pub(super) fn completion(&mut self, ctx: &mut Context<'_>, call: Call<'_>) -> OpResult {
        let id = call.data.string("id")?;
        let buffer = call.data.opt_string("buf")?.unwrap_or("");
        let cursor = match call.data.0.get("cursor") {
            Some(Value::Number(n)) => n.as_f64().map_or(0, |c| c.max(0.0) as usize),
            _ => buffer.len(),
        };
        let group = self
            .notes
            .note_of_paragraph(id)
            .and_then(|note_id| self.notes.get(note_id))
            .map_or(self.config.default_interpreter.clone(), |note| {
                note.default_interpreter_group.clone()
            });
        let name = parse_directive(buffer).name.unwrap_or(&group);
        if interpreter::resolve(name).is_none_or(|info| info.name != "sql") {
            let data = json!({ "id": id, "completions": [] });
            Self::send(ctx, call.conn, "COMPLETION_LIST", &data);
            return Ok(());
        }
        // Table and column names come from the worker; keywords alone if
        // it is busy.
        let lookup = NameLookup {
            conn: call.conn,
            paragraph_id: id.to_owned(),
            prefix: word_at(buffer, cursor),
        };
        if let Err(lookup) = self.sql_names.submit(lookup) {
            self.answer_completion(
                ctx,
                FoundNames {
                    lookup,
                    names: Vec::new(),
                },
            );
        }
        Ok(())
    }

    /// COMPLETION_LIST for a finished name lookup: the SQL keywords, then
    /// the table and column names, starting with the word typed.
    pub(super) fn answer_completion(&self, ctx: &mut Context<'_>, found: FoundNames) {
        let FoundNames { lookup, names } = found;
        let mut completions = keyword_completions(&lookup.prefix);
        completions.extend(
            names
                .into_iter()
                .map(|(name, meta)| json!({ "name": name, "value": name, "meta": meta })),
        );
        let data = json!({ "id": lookup.paragraph_id, "completions": completions });
        Self::send(ctx, lookup.conn, "COMPLETION_LIST", &data);
    }
}

/// Moves paragraph `id` to `index` (clamped); returns where it landed.
fn move_within(note: &mut Note, id: &str, index: usize) -> Result<usize, String> {
    let from = note
        .paragraphs
        .iter()
        .position(|p| p.id == id)
        .ok_or_else(|| format!("paragraph {id} not found in note {}", note.id))?;
    // As Zeppelin: an index past the last paragraph is refused, not clamped.
    if index >= note.paragraphs.len() {
        return Err(format!(
            "index {index} is past the note's last paragraph ({})",
            note.paragraphs.len() - 1
        ));
    }
    let paragraph = note.paragraphs.remove(from);
    note.paragraphs.insert(index, paragraph);
    Ok(index)
}

/// The word that ends at `cursor` (a char index, as the editor counts).
fn word_at(buffer: &str, cursor: usize) -> String {
    let before: Vec<char> = buffer.chars().take(cursor).collect();
    let start = before
        .iter()
        .rposition(|c| !(c.is_alphanumeric() || *c == '_'))
        .map_or(0, |at| at + 1);
    before[start..].iter().collect()
}

/// SQL keywords starting with `word` (case-insensitive), in Zeppelin's
/// `{name, value, meta}`.
fn keyword_completions(word: &str) -> Vec<Value> {
    let word = word.to_uppercase();
    SQL_KEYWORDS
        .iter()
        .filter(|keyword| keyword.starts_with(&word))
        .map(|keyword| json!({ "name": keyword, "value": keyword, "meta": "keyword" }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_keeps_every_paragraph() {
        let mut note = Note::new("N".into(), "/n".into(), "md", "u");
        note.paragraphs.push(Paragraph::new("u"));
        note.paragraphs.push(Paragraph::new("u"));
        let ids: Vec<String> = note.paragraphs.iter().map(|p| p.id.clone()).collect();
        assert_eq!(move_within(&mut note, &ids[0], 2), Ok(2));
        let now: Vec<&str> = note.paragraphs.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(now, [&ids[1], &ids[2], &ids[0]]);
        assert!(
            move_within(&mut note, &ids[0], 99).is_err(),
            "past the end: refused"
        );
        assert!(move_within(&mut note, "nope", 0).is_err());
    }

    #[test]
    fn sql_keywords_complete_the_word_at_the_cursor() {
        assert_eq!(word_at("%sql sel", 8), "sel");
        assert_eq!(word_at("%sql select * fr", 16), "fr");
        assert_eq!(word_at("%sql x", 100), "x");
        assert_eq!(word_at("%sql a.b", 8), "b");
        let names: Vec<Value> = keyword_completions("sel")
            .into_iter()
            .map(|c| c["value"].clone())
            .collect();
        assert_eq!(names, [json!("SELECT")]);
        assert!(
            keyword_completions("fr")
                .iter()
                .any(|c| c["value"] == "FROM")
        );
        assert!(keyword_completions("x").is_empty());
    }
}
