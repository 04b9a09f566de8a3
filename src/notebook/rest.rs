//! Zeppelin's REST API under `/api/`: what its web UI calls at start-up
//! and while it runs. Replies use Zeppelin's envelope
//! `{"status":"OK","message":"","body":…}`; requests are identified like
//! the WebSocket's (anonymous, ticket cookie, Basic, `ticket` query). The
//! notebook API proper (notes, paragraphs, jobs) is in `rest_notebook`.

use serde_json::{Value, json};

use super::access::Credentials;
use super::app::NotebookHandler;
use super::interpreter::BUILT_IN;
use super::web::{Identity, ticket_cookie_header, unauthorized_for};
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::Context;

/// The Zeppelin version the UI is told (it shows it in its About box).
const ZEPPELIN_VERSION: &str = "0.12.0";

/// A reply in Zeppelin's envelope; `body` left out when null.
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
        429 => "TOO_MANY_REQUESTS",
        500 => "INTERNAL_SERVER_ERROR",
        503 => "SERVICE_UNAVAILABLE",
        _ => "ERROR",
    };
    let mut reply = json!({ "status": name, "message": message });
    if !body.is_null() {
        reply["body"] = body;
    }
    HttpResponse::with_body(status, "application/json", reply.to_string().into_bytes())
        .with_header("Cache-Control", "no-store")
}

/// `200` with `body`.
pub(super) fn ok(body: Value) -> HttpResponse {
    envelope(200, "", body)
}

/// `404` saying what was not found.
pub(super) fn not_found(what: &str) -> HttpResponse {
    envelope(404, what, Value::Null)
}

/// `400` saying what was wrong.
pub(super) fn bad_request(why: &str) -> HttpResponse {
    envelope(400, why, Value::Null)
}

/// A plain-text refusal from the identity check (`401`, `429`, `503`)
/// in the envelope, its headers (`Retry-After`) kept.
fn as_envelope(refusal: HttpResponse) -> HttpResponse {
    let message = String::from_utf8_lossy(&refusal.body).trim().to_owned();
    let mut reply = envelope(refusal.status, &message, Value::Null);
    reply.headers.extend(
        refusal
            .headers
            .into_iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type")),
    );
    reply
}

/// Every interpreter setting, in Zeppelin's shape: one per interpreter
/// group whose programs this machine has (`available`), each with its
/// interpreters, from the one list the job lanes are built from.
pub(super) fn interpreter_settings(available: &[&str]) -> Vec<Value> {
    let mut settings: Vec<Value> = Vec::new();
    for info in BUILT_IN.iter().filter(|i| available.contains(&i.group)) {
        let name = info
            .name
            .strip_prefix(info.group)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(info.name);
        let interpreter = json!({
            "name": name,
            "class": format!("wsloop.{}", info.name),
            "defaultInterpreter": name == info.group,
            "editor": {
                "language": info.language,
                "editOnDblClick": info.edit_on_double_click,
                "completionSupport": info.completion_support,
            },
        });
        if let Some(setting) = settings.iter_mut().find(|s| s["id"] == info.group) {
            if let Some(list) = setting["interpreterGroup"].as_array_mut() {
                list.push(interpreter);
            }
            continue;
        }
        settings.push(json!({
            "id": info.group,
            "name": info.group,
            "group": info.group,
            "properties": {},
            "status": "READY",
            "interpreterGroup": [interpreter],
            "dependencies": [],
            "option": {
                "remote": info.runs_code, "port": -1, "isExistingProcess": false,
                "setPermission": false, "owners": [], "isUserImpersonate": false,
                "perNote": "shared", "perUser": "shared",
            },
        }));
    }
    settings
}

/// The `%` directive names of interpreter setting `name`, if wsloop has it.
fn interpreter_setting(available: &[&str], name: &str) -> Option<Value> {
    interpreter_settings(available)
        .into_iter()
        .find(|setting| setting["name"] == name)
}

/// Decodes `application/x-www-form-urlencoded` text into its pairs.
pub(super) fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let decode = |text: &str| -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    if let Some(byte) = hex {
                        out.push(byte);
                        i += 2;
                    } else {
                        out.push(b'%');
                    }
                }
                other => out.push(other),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// The request's `q` query parameter, percent-decoded.
pub(super) fn query_text(request: &HttpRequest<'_>, name: &str) -> String {
    request
        .query_param(name)
        .map(|raw| {
            form_fields(format!("v={raw}").as_bytes())
                .pop()
                .map(|(_, value)| value)
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

impl NotebookHandler {
    /// Answers a request under `/api/` other than the ticket and logout.
    pub(super) fn rest(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> HttpResponse {
        if !self.security.origin_allowed(request) {
            return envelope(403, "origin not allowed", Value::Null);
        }
        let path = request.path();
        let segments: Vec<&str> = path["/api/".len()..]
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();
        if request.method == "POST" && segments == ["login"] {
            return self.login(ctx, request);
        }
        let principal = match self.identify(ctx, request) {
            Ok(Some(Identity { principal, .. })) => principal,
            Ok(None) if self.tickets.anonymous_allowed() => "anonymous".to_owned(),
            Ok(None) => {
                return as_envelope(unauthorized_for(request, "log in first"));
            }
            Err(refusal) if refusal.status == 503 && ctx.request_id().is_some() => {
                // Deferred for a password check, or busy: as it came.
                return refusal;
            }
            Err(refusal) => return as_envelope(refusal),
        };
        if segments.first() == Some(&"notebook") {
            return self.rest_durably(ctx, request, &segments[1..], &principal);
        }
        self.rest_ui(ctx, request, &segments)
    }

    /// The notebook API, answered only once what it changed is on disk:
    /// an answer that acknowledges a write still on its way is kept and
    /// the request deferred until the writer reports it done (the same
    /// rule that holds the ops' messages back).
    fn rest_durably(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        segments: &[&str],
        principal: &str,
    ) -> HttpResponse {
        let Some(conn) = ctx.request_id() else {
            return envelope(500, "no request", Value::Null);
        };
        if let Some((seq, response, kept)) = self.durable_replies.remove(&conn) {
            if seq <= self.notes.reported_write() {
                return response;
            }
            self.durable_replies.insert(conn, (seq, response, kept));
            ctx.defer();
            return envelope(503, "deferred", Value::Null);
        }
        ctx.hold_output();
        let response = self.rest_notebook(ctx, request, segments, principal);
        self.settle_output(ctx);
        // Not only what this request changed: what it reports (a run's
        // result, say) may be a write still on its way.
        let seq = self.notes.commit();
        if seq <= self.notes.reported_write() || response.status == 503 {
            return response;
        }
        if ctx.defer().is_none() {
            return response;
        }
        self.durable_replies
            .insert(conn, (seq, response, ctx.now()));
        envelope(503, "deferred", Value::Null)
    }

    /// The endpoints Zeppelin's UI calls besides the notebook API.
    fn rest_ui(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        segments: &[&str],
    ) -> HttpResponse {
        let _ = ctx;
        match (request.method, segments) {
            ("GET", ["version"]) => ok(json!({
                "version": ZEPPELIN_VERSION,
                "git-commit-id": format!("wsloop {}", env!("CARGO_PKG_VERSION")),
                "git-timestamp": "",
            })),
            ("GET", ["helium", "enabledPackage"]) => ok(json!([])),
            ("GET", ["helium", "bundle", "load", name]) => {
                not_found(&format!("wsloop has no Helium package {name}"))
            }
            ("GET", ["configurations", "client" | "all"]) => ok(self.configurations()),
            ("GET", ["interpreter", "setting"]) => {
                ok(Value::Array(interpreter_settings(&self.available)))
            }
            ("GET", ["interpreter", "setting", name]) => {
                match interpreter_setting(&self.available, name) {
                    Some(setting) => ok(setting),
                    None => not_found(&format!("interpreter setting {name} not found")),
                }
            }
            ("PUT", ["interpreter", "setting", "restart", name]) => {
                match interpreter_setting(&self.available, name) {
                    Some(setting) => {
                        // Ends the group's child processes (a running
                        // paragraph ends as ABORT); the next run starts
                        // them again. %md and %sql keep no session.
                        let lanes: Vec<&str> = BUILT_IN
                            .iter()
                            .filter(|info| info.group == *name)
                            .map(|info| info.lane)
                            .collect();
                        for lane in lanes {
                            self.jobs.restart(lane, ctx);
                        }
                        self.collect_restarted_runs(ctx);
                        ok(setting)
                    }
                    None => not_found(&format!("interpreter setting {name} not found")),
                }
            }
            ("GET", ["interpreter"]) => {
                let all: serde_json::Map<String, Value> = interpreter_settings(&self.available)
                    .into_iter()
                    .filter_map(|setting| {
                        let name = setting["name"].as_str()?.to_owned();
                        Some((name, setting))
                    })
                    .collect();
                ok(Value::Object(all))
            }
            ("GET", ["interpreter", "property", "types"]) => ok(json!([
                "textarea", "string", "number", "url", "password", "checkbox"
            ])),
            ("GET", ["interpreter", "repository"]) => ok(json!([])),
            ("GET", ["notebook-repositories"]) => ok(json!([])),
            ("GET", ["credential"]) => ok(json!({ "userCredentials": {} })),
            ("GET", ["security", "userlist", search]) => {
                let search = search.to_lowercase();
                let users: Vec<&str> = self
                    .config
                    .users
                    .iter()
                    .map(|user| user.name.as_str())
                    .filter(|name| name.to_lowercase().contains(&search))
                    .take(5)
                    .collect();
                ok(json!({ "users": users, "roles": [] }))
            }
            (
                "POST" | "PUT" | "DELETE",
                ["interpreter" | "credential" | "notebook-repositories", ..],
            ) => envelope(
                403,
                "wsloop's interpreters, credentials and repositories are set in its configuration file",
                Value::Null,
            ),
            _ => not_found(&format!(
                "wsloop has no API {} {}",
                request.method,
                request.path()
            )),
        }
    }

    /// The effective settings as strings (LIST_CONFIGURATIONS and the
    /// configurations endpoints), never secrets.
    pub(super) fn configurations(&self) -> Value {
        let config = &self.config;
        json!({
            "zeppelin.websocket.max.text.message.size": config.max_message_size.to_string(),
            "zeppelin.notebook.dir": self.notes.dir().display().to_string(),
            "zeppelin.anonymous.allowed": self.tickets.anonymous_allowed().to_string(),
            "zeppelin.interpreter.group.default": config.default_interpreter,
            "zeppelin.notebook.storage": "wsloop .zpln files",
            "zeppelin.notebook.git.remote.url": "",
            "isRevisionSupported": "false",
            "wsloop.sql.database": config.sql_database.display().to_string(),
            "wsloop.sql.timeout.ms": config.sql_timeout.as_millis().to_string(),
            "wsloop.version": env!("CARGO_PKG_VERSION"),
            "wsloop.interpreters": self.available.join(","),
            "wsloop.spark.master": config.interpreters.spark_master,
        })
    }

    /// `POST /api/login`: form fields `userName` and `password`, checked
    /// like Basic credentials (argon2 on the worker, the request deferred
    /// meanwhile); a ticket and its cookie on success.
    fn login(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        let fields = form_fields(request.body);
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        };
        let (Some(user), Some(password)) = (field("userName"), field("password")) else {
            return bad_request("send the form fields userName and password");
        };
        let credentials = Credentials::Basic { user, password };
        let identity = match self.identify_with(ctx, request, Some(credentials)) {
            Ok(Some(identity)) => identity,
            Ok(None) => return envelope(403, "wrong user name or password", Value::Null),
            Err(refusal) if refusal.status == 503 => return refusal,
            Err(refusal) if refusal.status == 401 => {
                return envelope(403, "wrong user name or password", Value::Null);
            }
            Err(refusal) => return as_envelope(refusal),
        };
        let ticket = match identity.ticket {
            Some(ticket) => ticket,
            None => self
                .tickets
                .issue(&identity.principal, identity.roles.clone(), ctx.now()),
        };
        let roles = serde_json::to_string(&identity.roles).unwrap_or_else(|_| "[]".to_owned());
        ok(json!({ "principal": identity.principal, "ticket": ticket, "roles": roles }))
            .with_header("Set-Cookie", ticket_cookie_header(ctx, &ticket, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_fields(b"userName=al%20ice&password=a+b%26c%3D&empty="),
            vec![
                ("userName".to_owned(), "al ice".to_owned()),
                ("password".to_owned(), "a b&c=".to_owned()),
                ("empty".to_owned(), String::new()),
            ]
        );
        assert_eq!(
            form_fields(b"bad=%zz%"),
            vec![("bad".to_owned(), "%zz%".to_owned())]
        );
    }

    #[test]
    fn every_interpreter_has_a_setting() {
        let all = ["md", "sql", "python", "sh", "spark"];
        let settings = interpreter_settings(&all);
        assert_eq!(settings.len(), all.len(), "one setting per group");
        assert!(interpreter_setting(&all, "sql").is_some());
        assert!(
            interpreter_setting(&all, "spark").is_some_and(|s| s["interpreterGroup"]
                .as_array()
                .unwrap()
                .len()
                == 3)
        );
        assert!(interpreter_setting(&all, "nope").is_none());
    }
}
