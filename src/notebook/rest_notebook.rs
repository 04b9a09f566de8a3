//! Zeppelin's notebook REST API (`/api/notebook/…`): notes, paragraphs and
//! jobs for scripts and client libraries. Changes go through the same op
//! handlers as the WebSocket, so every watcher hears of a REST change
//! exactly as of the op.

use serde_json::Value;

use super::app::NotebookHandler;
use super::rest::{not_found, ok};
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::Context;

impl NotebookHandler {
    /// `/api/notebook/…`, `segments` after `notebook`.
    pub(super) fn rest_notebook(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        segments: &[&str],
        principal: &str,
    ) -> HttpResponse {
        let _ = (ctx, principal);
        match (request.method, segments) {
            ("GET", ["capabilities"]) => ok(serde_json::json!({ "isRevisionSupported": false })),
            _ => not_found(&format!(
                "wsloop has no API {} {}",
                request.method,
                request.path()
            )),
        }
    }
}
