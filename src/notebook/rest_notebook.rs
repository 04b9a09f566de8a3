//! Zeppelin's notebook REST API (`/api/notebook/…`): notes, paragraphs and
//! jobs for scripts and client libraries. Changes go through the same op
//! handlers as the WebSocket wherever one exists, so every watcher hears
//! of a REST change exactly as of the op.

use serde_json::{Value, json};

use super::app::NotebookHandler;
use super::envelope::{Data, Request};
use super::model::{Note, Object, Paragraph, Status};
use super::ops::Call;
use super::ops_notes::{export_text, parse_import_value};
use super::rest::{bad_request, envelope, not_found, ok, query_text};
use super::store::normalize_note_path;
use super::{ids, interpreter};
use crate::handler::ConnectionId;
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::Context;

/// Search answers at most this many hits.
const MAX_SEARCH_HITS: usize = 100;

/// A REST request waiting for its paragraph run to end
/// (`POST /api/notebook/run/{id}/{pid}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
    /// The paragraph run.
    pub paragraph_id: String,
    /// The run ended; the request is being offered again.
    pub done: bool,
}

/// The request body as a JSON object (an empty body is an empty object).
fn body_object(request: &HttpRequest<'_>) -> Result<Object, HttpResponse> {
    if request.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Object::new());
    }
    match serde_json::from_slice::<Value>(request.body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(bad_request("the request body must be a JSON object")),
        Err(error) => Err(bad_request(&format!("malformed JSON: {error}"))),
    }
}

/// A paragraph's run state in Zeppelin's `ParagraphJobStatus` shape.
fn paragraph_status(paragraph: &Paragraph) -> Value {
    let wire = paragraph.for_wire();
    let progress = match paragraph.status {
        Status::Finished | Status::Error | Status::Abort => "100",
        _ => "0",
    };
    let mut status = json!({
        "id": paragraph.id,
        "status": paragraph.status.as_str(),
        "progress": progress,
    });
    if let Some(started) = wire.date_started {
        status["started"] = json!(started);
    }
    if let Some(finished) = wire.date_finished {
        status["finished"] = json!(finished);
    }
    if paragraph.status == Status::Error
        && let Some(results) = &paragraph.results
    {
        let message: Vec<&str> = results.msg.iter().map(|m| m.data.as_str()).collect();
        status["errorMessage"] = json!(message.join("\n"));
    }
    status
}

impl NotebookHandler {
    /// Runs op `op` with `data` for the REST request being handled, as if
    /// its connection had sent it: the same changes and broadcasts.
    fn rest_op(
        &mut self,
        ctx: &mut Context<'_>,
        op: &str,
        data: Value,
        principal: &str,
    ) -> Result<(), HttpResponse> {
        let Value::Object(data) = data else {
            return Err(bad_request("not an object"));
        };
        let conn = ctx
            .request_id()
            .ok_or_else(|| envelope(500, "no request", Value::Null))?;
        let request = Request {
            op: op.to_owned(),
            data,
            principal: principal.to_owned(),
            ticket: String::new(),
            msg_id: None,
        };
        *self.op_counts.entry(op.to_owned()).or_default() += 1;
        self.dispatch(ctx, conn, &request, principal)
            .map_err(|why| bad_request(&why))
    }

    /// The note `id`, or `404`.
    fn rest_note(&self, id: &str) -> Result<&Note, HttpResponse> {
        self.notes
            .get(id)
            .ok_or_else(|| not_found(&format!("note {id} not found")))
    }

    /// Paragraph `pid` of note `id`, or `404`.
    fn rest_paragraph(&self, id: &str, pid: &str) -> Result<&Paragraph, HttpResponse> {
        self.rest_note(id)?
            .paragraphs
            .iter()
            .find(|p| p.id == pid)
            .ok_or_else(|| not_found(&format!("paragraph {pid} not found in note {id}")))
    }

    /// `/api/notebook/…`, `segments` after `notebook`.
    pub(super) fn rest_notebook(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        segments: &[&str],
        principal: &str,
    ) -> HttpResponse {
        match self.route_notebook(ctx, request, segments, principal) {
            Ok(response) | Err(response) => response,
        }
    }

    fn route_notebook(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        segments: &[&str],
        user: &str,
    ) -> Result<HttpResponse, HttpResponse> {
        Ok(match (request.method, segments) {
            ("GET", ["capabilities"]) => ok(json!({ "isRevisionSupported": false })),
            ("GET", []) => ok(serde_json::to_value(self.notes.summaries()).unwrap_or_default()),
            ("POST", []) => self.rest_create_note(ctx, request, user)?,
            ("GET", ["search"]) => ok(self.search(&query_text(request, "q"))),
            ("POST", ["import"]) => {
                let note = parse_import_value(Value::Object(body_object(request)?))
                    .map_err(|why| bad_request(&why))?;
                let path = if note.path.trim_matches('/').is_empty() {
                    note.name.clone()
                } else {
                    note.path.clone()
                };
                let path = normalize_note_path(&path).map_err(|e| bad_request(&e.to_string()))?;
                let id = self
                    .add_copy(ctx, note, &path, user)
                    .map_err(|why| bad_request(&why))?;
                ok(json!(id))
            }
            ("GET", ["export", id]) => ok(json!(export_text(self.rest_note(id)?))),
            ("GET", ["job", id]) => {
                let note = self.rest_note(id)?;
                let paragraphs: Vec<Value> = note.paragraphs.iter().map(paragraph_status).collect();
                let running = note.paragraphs.iter().any(|p| self.jobs.is_active(&p.id));
                ok(json!({ "id": id, "isRunning": running, "paragraphs": paragraphs }))
            }
            ("POST", ["job", id]) => {
                let items: Vec<Value> = self
                    .rest_note(id)?
                    .paragraphs
                    .iter()
                    .map(|p| json!({ "id": p.id, "paragraph": p.text }))
                    .collect();
                let paragraphs = Value::Array(items).to_string();
                let data = json!({ "noteId": id, "paragraphs": paragraphs });
                self.rest_op(ctx, "RUN_ALL_PARAGRAPHS", data, user)?;
                ok(Value::Null)
            }
            ("DELETE", ["job", id]) => {
                self.rest_note(id)?;
                let conn = ctx.request_id();
                self.cancel_note_runs(ctx, id, conn, None)
                    .map_err(|why| bad_request(&why))?;
                ok(Value::Null)
            }
            ("GET", ["job", id, pid]) => ok(paragraph_status(self.rest_paragraph(id, pid)?)),
            ("POST", ["job", id, pid]) => {
                self.rest_run(ctx, request, id, pid, user)?;
                ok(Value::Null)
            }
            ("DELETE", ["job", id, pid]) => {
                self.rest_paragraph(id, pid)?;
                let data = json!({ "id": pid, "noteId": id });
                self.rest_op(ctx, "CANCEL_PARAGRAPH", data, user)?;
                ok(Value::Null)
            }
            ("POST", ["run", id, pid]) => self.rest_run_and_wait(ctx, request, id, pid, user)?,
            ("GET", [id]) => ok(json!(self.rest_note(id)?.for_wire())),
            ("DELETE", [id]) => {
                self.rest_note(id)?;
                self.remove_note(id).map_err(|why| bad_request(&why))?;
                self.notes_changed(ctx);
                ok(Value::Null)
            }
            ("POST", [id]) => {
                let source = self.rest_note(id)?.clone();
                let body = body_object(request)?;
                let name = Data(&body)
                    .opt_string("name")
                    .map_err(|w| bad_request(&w))?;
                let path = match name.filter(|n| !n.trim().is_empty()) {
                    Some(name) => {
                        normalize_note_path(name).map_err(|e| bad_request(&e.to_string()))?
                    }
                    None => format!("{} Clone", source.path),
                };
                let new_id = self
                    .add_copy(ctx, source, &path, user)
                    .map_err(|why| bad_request(&why))?;
                ok(json!(new_id))
            }
            ("PUT", [id, "rename"]) => {
                self.rest_note(id)?;
                let body = body_object(request)?;
                let name = Data(&body).string("name").map_err(|w| bad_request(&w))?;
                self.rest_op(ctx, "NOTE_RENAME", json!({ "id": id, "name": name }), user)?;
                ok(Value::Null)
            }
            ("PUT", [id, "clear"]) => {
                self.rest_note(id)?;
                self.rest_op(ctx, "PARAGRAPH_CLEAR_ALL_OUTPUT", json!({ "id": id }), user)?;
                ok(Value::Null)
            }
            ("GET", [id, "permissions"]) => {
                self.rest_note(id)?;
                ok(json!({ "owners": [], "readers": [], "writers": [], "runners": [] }))
            }
            ("PUT", [id, "permissions"]) => {
                self.rest_note(id)?;
                envelope(
                    403,
                    "wsloop has no per-note permissions: every user who can log in reads and writes every note",
                    Value::Null,
                )
            }
            ("GET", [id, "revision"]) => {
                self.rest_note(id)?;
                ok(json!([]))
            }
            ("POST", [id, "paragraph"]) => self.rest_add_paragraph(ctx, request, id, user)?,
            ("GET", [id, "paragraph", pid]) => ok(json!(self.rest_paragraph(id, pid)?.for_wire())),
            ("PUT", [id, "paragraph", pid]) => {
                self.rest_paragraph(id, pid)?;
                let body = body_object(request)?;
                let fields = Data(&body);
                let text = fields.opt_string("text").map_err(|w| bad_request(&w))?;
                let title = fields.opt_string("title").map_err(|w| bad_request(&w))?;
                let mut data = json!({ "id": pid, "noteId": id });
                if let Some(text) = text {
                    data["paragraph"] = json!(text);
                }
                if let Some(title) = title {
                    data["title"] = json!(title);
                }
                self.rest_op(ctx, "COMMIT_PARAGRAPH", data, user)?;
                ok(Value::Null)
            }
            ("PUT", [id, "paragraph", pid, "config"]) => {
                self.rest_paragraph(id, pid)?;
                let config = body_object(request)?;
                let data = json!({ "id": pid, "noteId": id, "config": config });
                self.rest_op(ctx, "COMMIT_PARAGRAPH", data, user)?;
                ok(json!(self.rest_paragraph(id, pid)?.for_wire()))
            }
            ("POST", [id, "paragraph", pid, "move", index]) => {
                self.rest_paragraph(id, pid)?;
                let index: usize = index
                    .parse()
                    .map_err(|_| bad_request("the index must be a non-negative integer"))?;
                let data = json!({ "id": pid, "noteId": id, "index": index });
                self.rest_op(ctx, "MOVE_PARAGRAPH", data, user)?;
                ok(Value::Null)
            }
            ("DELETE", [id, "paragraph", pid]) => {
                self.rest_paragraph(id, pid)?;
                self.rest_op(
                    ctx,
                    "PARAGRAPH_REMOVE",
                    json!({ "id": pid, "noteId": id }),
                    user,
                )?;
                ok(Value::Null)
            }
            _ => not_found(&format!(
                "wsloop has no API {} {}",
                request.method,
                request.path()
            )),
        })
    }

    /// `POST /api/notebook` `{name, defaultInterpreterGroup?, paragraphs?:
    /// [{title?, text, config?}]}`: the new note's id; NOTES_INFO to all.
    fn rest_create_note(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        user: &str,
    ) -> Result<HttpResponse, HttpResponse> {
        let body = body_object(request)?;
        let fields = Data(&body);
        let name = fields.opt_string("name").map_err(|w| bad_request(&w))?;
        let path =
            normalize_note_path(name.unwrap_or("")).map_err(|e| bad_request(&e.to_string()))?;
        if self.notes.find_by_path(&path).is_some() {
            return Err(envelope(
                409,
                &format!("a note at {path} already exists"),
                Value::Null,
            ));
        }
        let group = fields
            .opt_string("defaultInterpreterGroup")
            .map_err(|w| bad_request(&w))?
            .filter(|g| !g.is_empty())
            .unwrap_or(&self.config.default_interpreter)
            .to_owned();
        if interpreter::info(&group).is_none() {
            return Err(bad_request(&format!("unknown interpreter group {group}")));
        }
        let mut note = Note::new(ids::note_id(), path, &group, user);
        match body.get("paragraphs") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                note.paragraphs.clear();
                for item in items {
                    note.paragraphs.push(new_paragraph(item, user)?);
                }
            }
            Some(_) => return Err(bad_request("paragraphs must be an array")),
        }
        let id = note.id.clone();
        self.notes
            .insert(note)
            .map_err(|e| envelope(503, &e.to_string(), Value::Null))?;
        self.notes_changed(ctx);
        Ok(ok(json!(id)))
    }

    /// `POST /api/notebook/{id}/paragraph` `{title?, text, index?,
    /// config?}`: the new paragraph's id; PARAGRAPH_ADDED to watchers.
    fn rest_add_paragraph(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        id: &str,
        user: &str,
    ) -> Result<HttpResponse, HttpResponse> {
        self.rest_note(id)?;
        let body = body_object(request)?;
        let requested = Data(&body)
            .opt_index("index")
            .map_err(|w| bad_request(&w))?;
        let paragraph = new_paragraph(&Value::Object(body), user)?;
        let pid = paragraph.id.clone();
        let call = Call {
            conn: ctx
                .request_id()
                .ok_or_else(|| envelope(500, "no request", Value::Null))?,
            data: Data(&Object::new()),
            user,
            msg_id: None,
        };
        self.add_paragraph(ctx, id, paragraph, requested, call)
            .map_err(|why| bad_request(&why))?;
        Ok(ok(json!(pid)))
    }

    /// Starts paragraph `pid` of note `id` (with the body's `params`, if
    /// any) as RUN_PARAGRAPH would.
    fn rest_run(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        id: &str,
        pid: &str,
        user: &str,
    ) -> Result<(), HttpResponse> {
        let text = self.rest_paragraph(id, pid)?.text.clone();
        let body = body_object(request)?;
        let mut data = json!({ "id": pid, "noteId": id, "paragraph": text });
        match body.get("params") {
            None | Some(Value::Null) => {}
            Some(params @ Value::Object(_)) => data["params"] = params.clone(),
            Some(_) => return Err(bad_request("params must be an object")),
        }
        self.rest_op(ctx, "RUN_PARAGRAPH", data, user)
    }

    /// `POST /api/notebook/run/{id}/{pid}`: runs the paragraph and answers
    /// with its results when the run ends (the request waits deferred,
    /// within the handshake timeout).
    fn rest_run_and_wait(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        id: &str,
        pid: &str,
        user: &str,
    ) -> Result<HttpResponse, HttpResponse> {
        let conn = ctx
            .request_id()
            .ok_or_else(|| envelope(500, "no request", Value::Null))?;
        match self.sync_runs.get(&conn) {
            Some(run) if run.done => {
                self.sync_runs.remove(&conn);
                let paragraph = self.rest_paragraph(id, pid)?;
                let results = paragraph
                    .results
                    .as_deref()
                    .map_or(json!({ "code": "SUCCESS", "msg": [] }), |r| json!(r));
                let status = if paragraph.status == Status::Error {
                    500
                } else {
                    200
                };
                return Ok(envelope(status, "", results));
            }
            Some(_) => {
                ctx.defer();
                return Ok(envelope(503, "deferred", Value::Null));
            }
            None => {}
        }
        self.rest_run(ctx, request, id, pid, user)?;
        let still_running = self.jobs.is_active(pid);
        if still_running && ctx.defer().is_some() {
            self.sync_runs.insert(
                conn,
                SyncRun {
                    paragraph_id: pid.to_owned(),
                    done: false,
                },
            );
            return Ok(envelope(503, "deferred", Value::Null));
        }
        // A blank paragraph ends at once.
        self.sync_runs.insert(
            conn,
            SyncRun {
                paragraph_id: pid.to_owned(),
                done: true,
            },
        );
        self.rest_run_and_wait(ctx, request, id, pid, user)
    }

    /// A run of `paragraph_id` ended: the requests waiting for it are
    /// offered again.
    pub(super) fn wake_sync_runs(&mut self, ctx: &mut Context<'_>, paragraph_id: &str) {
        // Woken before and never collected: their requests went away.
        self.sync_runs.retain(|_, run| !run.done);
        let waiting: Vec<ConnectionId> = self
            .sync_runs
            .iter_mut()
            .filter(|(_, run)| run.paragraph_id == paragraph_id && !run.done)
            .map(|(conn, run)| {
                run.done = true;
                *conn
            })
            .collect();
        for conn in waiting {
            ctx.resume(conn);
        }
    }

    /// `GET /api/notebook/search?q=`: notes whose path, and paragraphs
    /// whose title or text, contain `query` (case-insensitive), in
    /// Zeppelin's shape (`id` is `noteId` or `noteId/paragraph/pid`).
    fn search(&self, query: &str) -> Value {
        let query = query.trim().to_lowercase();
        if query.is_empty() {
            return json!([]);
        }
        let mut hits = Vec::new();
        for summary in self.notes.summaries() {
            let Some(note) = self.notes.get(&summary.id) else {
                continue;
            };
            if note.path.to_lowercase().contains(&query) {
                hits.push(json!({ "id": note.id, "name": note.name, "snippet": "", "text": "", "header": "" }));
            }
            for paragraph in &note.paragraphs {
                let title = paragraph.title.clone().unwrap_or_default();
                if paragraph.text.to_lowercase().contains(&query)
                    || title.to_lowercase().contains(&query)
                {
                    hits.push(json!({
                        "id": format!("{}/paragraph/{}", note.id, paragraph.id),
                        "name": note.name,
                        "snippet": snippet(&paragraph.text, &query),
                        "text": paragraph.text,
                        "header": title,
                    }));
                }
            }
            if hits.len() >= MAX_SEARCH_HITS {
                hits.truncate(MAX_SEARCH_HITS);
                break;
            }
        }
        Value::Array(hits)
    }
}

/// A paragraph from a REST body `{title?, text?, config?}`.
fn new_paragraph(item: &Value, user: &str) -> Result<Paragraph, HttpResponse> {
    let Value::Object(fields) = item else {
        return Err(bad_request("each paragraph must be an object"));
    };
    let fields = Data(fields);
    let mut paragraph = Paragraph::new(user);
    if let Some(text) = fields.opt_string("text").map_err(|w| bad_request(&w))? {
        paragraph.text = text.to_owned();
    }
    if let Some(title) = fields.opt_string("title").map_err(|w| bad_request(&w))? {
        paragraph.title = Some(title.to_owned());
    }
    if let Some(config) = fields.opt_object("config").map_err(|w| bad_request(&w))? {
        paragraph.config = config.clone();
    }
    Ok(paragraph)
}

/// The line of `text` holding `query` (lower-case), for a search hit.
fn snippet(text: &str, query: &str) -> String {
    text.lines()
        .find(|line| line.to_lowercase().contains(query))
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}
