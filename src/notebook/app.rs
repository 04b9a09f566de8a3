//! The notebook `Handler`: parses each message's envelope, checks its
//! ticket, dispatches the op, and carries paragraph runs between the loop
//! and the job thread.

use std::collections::BTreeMap;
use std::io;

use serde::Serialize;

use super::NotebookConfig;
use super::auth::{TicketCheck, Tickets};
use super::envelope::{self, Request};
use super::interpreter::{MarkdownInterpreter, SqlInterpreter};
use super::jobs::{Jobs, RunLimits, Runner};
use super::notes::Notes;
use super::security::Security;
use super::watchers::Watchers;
use crate::handler::{Accept, ConnectionId, Handler};
use crate::proto::{HttpRequest, HttpResponse, Message};
use crate::server::{Context, Notifier};

/// The notebook server application.
pub struct NotebookHandler {
    pub(super) config: NotebookConfig,
    pub(super) notes: Notes,
    pub(super) watchers: Watchers,
    pub(super) tickets: Tickets,
    pub(super) security: Security,
    pub(super) jobs: Jobs,
    /// Ops received, by name (for `/metrics`).
    pub(super) op_counts: BTreeMap<String, u64>,
    /// Paragraph runs ended, by final status (for `/metrics`).
    pub(super) run_counts: BTreeMap<&'static str, u64>,
    /// Requests answered with a refusal, by reply op (for `/metrics`).
    pub(super) refusal_counts: BTreeMap<&'static str, u64>,
}

impl NotebookHandler {
    /// Loads the notebook directory and prepares the interpreters.
    pub fn open(config: NotebookConfig) -> io::Result<NotebookHandler> {
        let notes = Notes::load(&config.notebook_dir)?;
        let sql = SqlInterpreter::new(
            config.notebook_dir.join(&config.sql_database),
            config.sql_timeout,
        );
        let sql_cancel = sql.canceller();
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
            security: Security::new(config.users.clone(), config.allowed_origins.clone()),
            config,
            notes,
            watchers: Watchers::default(),
            jobs: Jobs::new(runners, run_limits),
            op_counts: BTreeMap::new(),
            run_counts: BTreeMap::new(),
            refusal_counts: BTreeMap::new(),
        })
    }

    /// Number of notes loaded.
    pub fn note_count(&self) -> usize {
        self.notes.summaries().len()
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
        self.jobs.start(notifier);
    }

    fn on_notify(&mut self, ctx: &mut Context<'_>) {
        while let Some(finished) = self.jobs.take_finished() {
            self.finish_run(ctx, finished);
        }
        self.run_next(ctx);
    }

    fn on_http(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        self.http(ctx, request)
    }

    fn on_upgrade(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Accept, HttpResponse> {
        self.authorize_upgrade(ctx, request)
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnectionId, message: Message<'_>) {
        match message {
            Message::Text(text) => self.handle_text(ctx, conn, text),
            Message::Binary(_) => self.refuse(
                ctx,
                conn,
                "ERROR_INFO",
                "binary messages are not part of the protocol; send JSON text",
            ),
        }
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
