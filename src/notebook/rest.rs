//! Zeppelin's REST API under `/api/`: what its web UI calls, and the
//! notebook API scripts and client libraries use. Replies use Zeppelin's
//! envelope `{"status":"OK","message":"","body":…}`.

use serde_json::{Value, json};

use super::app::NotebookHandler;
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::Context;

/// A reply in Zeppelin's envelope.
pub(super) fn envelope(status: u16, message: &str, body: Value) -> HttpResponse {
    let name = match status {
        200 | 201 => "OK",
        400 => "BAD_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        409 => "CONFLICT",
        413 => "PAYLOAD_TOO_LARGE",
        503 => "SERVICE_UNAVAILABLE",
        _ => "INTERNAL_SERVER_ERROR",
    };
    let mut reply = json!({ "status": name, "message": message });
    if !body.is_null() {
        reply["body"] = body;
    }
    HttpResponse::with_body(status, "application/json", reply.to_string().into_bytes())
        .with_header("Cache-Control", "no-store")
}

impl NotebookHandler {
    /// Answers a request under `/api/` other than the ticket and logout.
    pub(super) fn rest(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> HttpResponse {
        let _ = ctx;
        envelope(404, &format!("no API at {}", request.path()), Value::Null)
    }
}
