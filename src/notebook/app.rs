//! The notebook `Handler`: parses each message's envelope, checks its
//! ticket, dispatches the op, and carries paragraph runs between the loop
//! and the job thread.

use std::collections::{BTreeMap, VecDeque};
use std::io;

use serde::Serialize;

use super::NotebookConfig;
use super::access::Security;
use super::envelope::{self, Request};
use super::interpreter::{
    ChildInterpreter, Kind, MarkdownInterpreter, SqlInterpreter, SqlLimits, StreamUpdate,
};
use super::jobs::{Jobs, RunLimits, Runner};
use super::notes::Notes;
use super::passwords::PasswordChecks;
use super::tickets::{TicketCheck, Tickets};
use super::watchers::Watchers;
use super::web_root::{WebRoot, WebRootConfig};
use crate::handler::{Accept, ConnectionId, Handler};
use crate::proto::{HttpRequest, HttpResponse, Message};
use crate::server::{Context, Notifier, SourceId};

/// How long streamed output collects before it is sent to watchers.
const STREAM_BATCH: std::time::Duration = std::time::Duration::from_millis(50);

/// A REST answer held for durability whose request was not offered again
/// within this long is dropped (its connection is gone: requests time out
/// sooner).
const KEEP_DURABLE_REPLY: std::time::Duration = std::time::Duration::from_secs(60);

/// The notebook server application.
pub struct NotebookHandler {
    pub(super) config: NotebookConfig,
    pub(super) notes: Notes,
    pub(super) watchers: Watchers,
    pub(super) tickets: Tickets,
    pub(super) security: Security,
    pub(super) jobs: Jobs,
    pub(super) passwords: PasswordChecks,
    /// Ops received, by name (for `/metrics`).
    pub(super) op_counts: BTreeMap<String, u64>,
    /// Paragraph runs ended, by final status (for `/metrics`).
    pub(super) run_counts: BTreeMap<&'static str, u64>,
    /// Requests answered with a refusal, by reply op (for `/metrics`).
    pub(super) refusal_counts: BTreeMap<&'static str, u64>,
    /// Output held until writes are durable: (the write's sequence
    /// number, the output mark after what waits for it), oldest first.
    durability_barriers: VecDeque<(u64, u64)>,
    /// Note writes that failed (for `/metrics`).
    pub(super) failed_writes: u64,
    /// The interpreter groups whose programs were found at start-up.
    pub(super) available: Vec<&'static str>,
    /// Notes with a Run all in progress: their watchers were sent
    /// `NOTE_RUNNING_STATUS {status: true}` and get `false` when the
    /// note's last run ends, as Zeppelin's `Note.runAll` does.
    pub(super) running_notes: std::collections::HashSet<String>,
    /// Static files served at `/` (`--web-dir`), if configured.
    pub(super) web_root: Option<WebRoot>,
    /// REST requests waiting for a paragraph run to end, by connection.
    pub(super) sync_runs: std::collections::HashMap<ConnectionId, super::rest_notebook::SyncRun>,
    /// Table and column names of the `%sql` database, for completion.
    pub(super) sql_names: super::sql_names::SqlNames,
    /// REST answers held until the write they acknowledge is on disk: the
    /// write's sequence number, the answer, and when it was kept, by
    /// connection.
    pub(super) durable_replies:
        std::collections::HashMap<ConnectionId, (u64, HttpResponse, std::time::Instant)>,
}

impl NotebookHandler {
    /// Loads the notebook directory and prepares the interpreters.
    pub fn open(config: NotebookConfig) -> io::Result<NotebookHandler> {
        let web_root = match &config.web_dir {
            Some(dir) if !dir.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("web root {} is not a folder", dir.display()),
                ));
            }
            Some(dir) => Some(WebRoot::new(WebRootConfig {
                dir: dir.clone(),
                cache_bytes: config.web_cache_bytes,
            })),
            None => None,
        };
        let mut notes = Notes::load(&config.notebook_dir)?;
        notes.set_max_notes(config.max_notes);
        let sql_path = config.notebook_dir.join(&config.sql_database);
        let sql = SqlInterpreter::new(
            sql_path.clone(),
            SqlLimits {
                timeout: config.sql_timeout,
                max_value_bytes: config.sql_max_value_bytes,
                max_heap_bytes: config.sql_max_heap_bytes,
                max_result_bytes: config.max_result_bytes,
            },
        );
        let sql_cancel = sql.canceller();
        let passwords = PasswordChecks::new(
            config.password_checks_pending,
            config.password_checks_per_second,
        );
        let runners = vec![
            Runner {
                interpreter: Box::new(MarkdownInterpreter),
                interrupt: None,
            },
            Runner {
                interpreter: Box::new(sql),
                interrupt: Some(Box::new(move || sql_cancel.cancel())),
            },
        ];
        let mut child_settings = config.interpreters.clone();
        child_settings.log_dir = config.notebook_dir.clone();
        child_settings.max_output = config.max_result_bytes;
        let children = [Kind::Python, Kind::Shell, Kind::Spark, Kind::PySpark]
            .into_iter()
            .map(|kind| ChildInterpreter::new(kind, child_settings.clone()))
            .collect();
        let run_limits = RunLimits {
            per_principal: config.max_runs_per_user,
            total: config.max_runs,
        };
        Ok(NotebookHandler {
            tickets: Tickets::new(
                config.anonymous_allowed,
                config.users.iter().map(|user| user.name.clone()).collect(),
                config.ticket_idle_timeout,
            ),
            security: Security::new(
                config.users.clone(),
                config.allowed_origins.clone(),
                config.allowed_hosts.clone(),
            ),
            config,
            notes,
            watchers: Watchers::default(),
            jobs: Jobs::with_children(runners, children, run_limits),
            passwords,
            op_counts: BTreeMap::new(),
            run_counts: BTreeMap::new(),
            refusal_counts: BTreeMap::new(),
            durability_barriers: VecDeque::new(),
            failed_writes: 0,
            available: super::interpreter::available_groups(&child_settings),
            running_notes: std::collections::HashSet::new(),
            web_root,
            sync_runs: std::collections::HashMap::new(),
            durable_replies: std::collections::HashMap::new(),
            sql_names: super::sql_names::SqlNames::new(sql_path),
        })
    }

    /// Number of notes loaded.
    pub fn note_count(&self) -> usize {
        self.notes.len()
    }

    /// The ticket store (for issuing tickets to authenticated users).
    pub fn tickets_mut(&mut self) -> &mut Tickets {
        &mut self.tickets
    }

    /// Sends one message to one connection.
    pub(super) fn send<T: Serialize>(ctx: &mut Context<'_>, to: ConnectionId, op: &str, data: &T) {
        let _ = ctx.send_text(to, &envelope::encode(op, data, None));
    }

    /// Sends one message, serialized once, to the watchers of a note (and
    /// the connections in `also`, such as the requester, even if they are
    /// not bound).
    pub(super) fn to_watchers<T: Serialize>(
        &self,
        ctx: &mut Context<'_>,
        note_id: &str,
        also: &[ConnectionId],
        op: &str,
        data: &T,
        msg_id: Option<&str>,
    ) {
        let text = envelope::encode(op, data, msg_id);
        let mut targets = self.watchers.of_note(note_id).to_vec();
        for extra in also {
            if !targets.contains(extra) {
                targets.push(*extra);
            }
        }
        ctx.broadcast(targets, Message::Text(&text));
    }

    /// Sends one message, serialized once, to every connection.
    pub(super) fn to_everyone<T: Serialize>(ctx: &mut Context<'_>, op: &str, data: &T) {
        let text = envelope::encode(op, data, None);
        let everyone: Vec<ConnectionId> = ctx.open_connections().collect();
        ctx.broadcast(everyone, Message::Text(&text));
    }

    fn handle_text(&mut self, ctx: &mut Context<'_>, conn: ConnectionId, text: &str) {
        let request: Request = match envelope::parse(text) {
            Ok(request) => request,
            Err(info) => return self.refuse(ctx, conn, "ERROR_INFO", &info),
        };
        let principal = match self
            .tickets
            .check(&request.principal, &request.ticket, ctx.now())
        {
            TicketCheck::Valid { principal, .. } => principal,
            _ if request.op == "PING" => return,
            TicketCheck::WrongTicket => {
                let info =
                    "Your ticket is invalid possibly due to server restart. Please login again.";
                return self.refuse(ctx, conn, "SESSION_LOGOUT", info);
            }
            TicketCheck::UnknownPrincipal => {
                let info = format!(
                    "Unknown principal {:?}: get a ticket from /api/security/ticket and send it with every message.",
                    request.principal
                );
                return self.refuse(ctx, conn, "AUTH_INFO", &info);
            }
        };
        let counted = if super::ops::is_known(&request.op) {
            request.op.as_str()
        } else {
            "unknown"
        };
        *self.op_counts.entry(counted.to_owned()).or_default() += 1;
        if let Err(info) = self.dispatch(ctx, conn, &request, &principal) {
            log::debug!("{conn}: {} refused: {info}", request.op);
            self.refuse(ctx, conn, "ERROR_INFO", &info);
        }
    }

    /// Called at the end of every callback that may send (which began
    /// with `ctx.hold_output()`): what it sent waits for the writes queued
    /// so far, or goes now when none are pending. Nothing the server says
    /// about a change reaches anyone before the change is on disk, and
    /// nothing overtakes it.
    pub(super) fn settle_output(&mut self, ctx: &mut Context<'_>) {
        self.end_note_runs(ctx);
        let mark = ctx.output_mark();
        let seq = self.notes.commit();
        if !self.notes.writes_pending() {
            self.durability_barriers.clear();
            ctx.release_output(mark);
            return;
        }
        match self.durability_barriers.back_mut() {
            Some((last, held)) if *last == seq => *held = mark,
            _ => self.durability_barriers.push_back((seq, mark)),
        }
    }

    /// Takes the writer's reports: releases the output that waited for
    /// the writes now done, and tells a failed note's watchers.
    fn collect_writes(&mut self, ctx: &mut Context<'_>) {
        let reports = self.notes.take_write_reports();
        let done = self.notes.reported_write();
        let mut release = None;
        while let Some(&(seq, mark)) = self.durability_barriers.front()
            && seq <= done
        {
            release = Some(mark);
            self.durability_barriers.pop_front();
        }
        if let Some(mark) = release {
            ctx.release_output(mark);
        }
        // Answers whose request went away (it timed out) are dropped.
        let now = ctx.now();
        self.durable_replies
            .retain(|_, (_, _, kept)| now.duration_since(*kept) < KEEP_DURABLE_REPLY);
        for (conn, (seq, _, _)) in &self.durable_replies {
            if *seq <= done {
                ctx.resume(*conn);
            }
        }
        let mut failed: Vec<(String, String)> = Vec::new();
        for report in reports {
            if let Err(reason) = report.outcome
                && !failed.iter().any(|(id, _)| *id == report.note_id)
            {
                failed.push((report.note_id, reason));
            }
        }
        for (note_id, reason) in failed {
            self.failed_writes += 1;
            let info = format!(
                "note {note_id} could not be saved ({reason}): its latest changes are in memory only, and are saved with its next change"
            );
            *self.refusal_counts.entry("ERROR_INFO").or_default() += 1;
            self.to_watchers(
                ctx,
                &note_id,
                &[],
                "ERROR_INFO",
                &serde_json::json!({ "info": info }),
                None,
            );
        }
    }

    /// Tells the watchers of notes whose Run all has ended (no run of the
    /// note is queued or running any more) that the note stopped running.
    pub(super) fn end_note_runs(&mut self, ctx: &mut Context<'_>) {
        if self.running_notes.is_empty() {
            return;
        }
        let ended: Vec<String> = self
            .running_notes
            .iter()
            .filter(|note_id| !self.jobs.holds_note(note_id))
            .cloned()
            .collect();
        for note_id in ended {
            self.running_notes.remove(&note_id);
            let status = serde_json::json!({ "status": false });
            self.to_watchers(ctx, &note_id, &[], "NOTE_RUNNING_STATUS", &status, None);
        }
    }

    /// Sends what running paragraphs printed since the last batch to
    /// their notes' watchers, as Zeppelin does: `PARAGRAPH_UPDATE_OUTPUT`
    /// for a result message they have not seen, `PARAGRAPH_APPEND_OUTPUT`
    /// for more of one they have.
    fn stream_output(&mut self, ctx: &mut Context<'_>) {
        for (job, updates) in self.jobs.take_stream_updates() {
            for update in updates {
                let (op, data) = match update {
                    StreamUpdate::Replace { index, kind, data } => (
                        "PARAGRAPH_UPDATE_OUTPUT",
                        serde_json::json!({
                            "noteId": job.note_id, "paragraphId": job.paragraph_id,
                            "index": index, "type": kind, "data": data,
                        }),
                    ),
                    StreamUpdate::Append { index, data } => (
                        "PARAGRAPH_APPEND_OUTPUT",
                        serde_json::json!({
                            "noteId": job.note_id, "paragraphId": job.paragraph_id,
                            "index": index, "data": data,
                        }),
                    ),
                    StreamUpdate::Progress { percent } => (
                        "PROGRESS",
                        serde_json::json!({ "id": job.paragraph_id, "progress": percent }),
                    ),
                };
                self.to_watchers(ctx, &job.note_id, &[job.requester], op, &data, None);
            }
        }
    }

    /// Asks the loop for an alarm when the jobs next need one: a batch of
    /// streamed output, or a child interpreter's deadline.
    fn arm_alarm(&self, ctx: &mut Context<'_>) {
        if self.jobs.has_stream_updates() {
            ctx.wake_at(ctx.now() + STREAM_BATCH);
        }
        if let Some(at) = self.jobs.next_deadline() {
            ctx.wake_at(at);
        }
    }

    /// Records the runs a restart ended (as ABORT) and starts the next.
    pub(super) fn collect_restarted_runs(&mut self, ctx: &mut Context<'_>) {
        self.collect_runs(ctx);
    }

    /// Records the runs child interpreters ended and starts the next.
    fn collect_runs(&mut self, ctx: &mut Context<'_>) {
        let mut ended = false;
        while let Some(finished) = self.jobs.take_finished() {
            if !ended {
                // What streamed before the end goes first.
                self.stream_output(ctx);
                ended = true;
            }
            self.finish_run(ctx, finished);
        }
        self.run_next(ctx);
    }

    /// Answers the sender with `reply` (ERROR_INFO, SESSION_LOGOUT or
    /// AUTH_INFO) saying `info`, and counts it.
    fn refuse(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnectionId,
        reply: &'static str,
        info: &str,
    ) {
        *self.refusal_counts.entry(reply).or_default() += 1;
        Self::send(ctx, conn, reply, &serde_json::json!({ "info": info }));
    }
}

impl Handler for NotebookHandler {
    fn on_start(&mut self, notifier: Notifier) {
        self.passwords.start(notifier.clone());
        self.sql_names.start(notifier.clone());
        if let Some(web_root) = &mut self.web_root {
            web_root.start(notifier.clone());
        }
        self.notes.start_writer(notifier.clone());
        self.jobs.start(notifier);
    }

    fn on_notify(&mut self, ctx: &mut Context<'_>) {
        ctx.hold_output();
        self.collect_writes(ctx);
        self.collect_password_checks(ctx);
        for found in self.sql_names.collect() {
            self.answer_completion(ctx, found);
        }
        if let Some(web_root) = &mut self.web_root {
            for conn in web_root.collect(ctx.now()) {
                ctx.resume(conn);
            }
        }
        self.collect_runs(ctx);
        self.arm_alarm(ctx);
        self.settle_output(ctx);
    }

    fn on_source_ready(&mut self, ctx: &mut Context<'_>, source: SourceId) {
        ctx.hold_output();
        if self.jobs.on_source_ready(ctx, source) {
            self.collect_runs(ctx);
        }
        self.arm_alarm(ctx);
        self.settle_output(ctx);
    }

    fn on_alarm(&mut self, ctx: &mut Context<'_>) {
        ctx.hold_output();
        self.jobs.on_alarm(ctx);
        self.stream_output(ctx);
        self.collect_runs(ctx);
        self.arm_alarm(ctx);
        self.settle_output(ctx);
    }

    fn on_http(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        // Whatever a request changes (the notebook API, or an interpreter
        // restart ending its runs) is told to watchers only once on disk,
        // as for ops.
        ctx.hold_output();
        let response = self.http(ctx, request);
        self.arm_alarm(ctx);
        self.settle_output(ctx);
        response
    }

    fn on_upgrade(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Accept, HttpResponse> {
        self.authorize_upgrade(ctx, request)
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnectionId, message: Message<'_>) {
        ctx.hold_output();
        match message {
            Message::Text(text) => self.handle_text(ctx, conn, text),
            Message::Binary(_) => self.refuse(
                ctx,
                conn,
                "ERROR_INFO",
                "binary messages are not part of the protocol; send JSON text",
            ),
        }
        self.arm_alarm(ctx);
        self.settle_output(ctx);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_>,
        conn: ConnectionId,
        _code: crate::proto::CloseCode,
        _reason: &str,
    ) {
        self.watchers.unbind(conn);
    }
}
