//! The notebook's plain-HTTP side on the WebSocket port: the page,
//! `/healthz`, `/metrics`, `/api/security/ticket`, and the authentication
//! and `Origin` check of the `/ws` upgrade.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::json;

use super::access::{Credentials, FAILURE_WINDOW, TICKET_COOKIE, basic_credentials, ticket_cookie};
use super::app::NotebookHandler;
use super::passwords::Busy;
use super::tickets::TicketCheck;
use super::web_root::Served;
use crate::handler::Accept;
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::{Context, write_labelled};

/// The notebook page: HTML, CSS and JS in one file, nothing fetched from
/// elsewhere.
const PAGE: &str = include_str!("page.html");

/// Keeps the page from being framed, sniffed, or loading anything foreign.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A `401`; `WWW-Authenticate: Basic` (which makes a browser prompt for
/// credentials) only for requests that are not a script's XHR, such as
/// Zeppelin's UI, whose own login page asks instead.
pub(super) fn unauthorized_for(request: &HttpRequest<'_>, body: &str) -> HttpResponse {
    if request.header_str("x-requested-with") == Some("XMLHttpRequest") {
        HttpResponse::text(401, body)
    } else {
        unauthorized(body)
    }
}

fn unauthorized(body: &str) -> HttpResponse {
    HttpResponse::text(401, body).with_header(
        "WWW-Authenticate",
        "Basic realm=\"wsloop\", charset=\"UTF-8\"",
    )
}

/// The answer to a request whose `Host` the server does not answer to
/// (see [`super::access::Security::host_allowed`]), logged once.
fn host_refused(request: &HttpRequest<'_>) -> HttpResponse {
    let host = request.header_str("host").unwrap_or("");
    log::debug!("refused a request for host {host:?} (DNS rebinding check)");
    HttpResponse::text(
        403,
        format!(
            "this server does not answer to the host name {host:?}; \
             add it to security.allowed_hosts to allow it\n"
        ),
    )
}

fn json_response(status: u16, body: &serde_json::Value) -> HttpResponse {
    HttpResponse::with_body(status, "application/json", body.to_string().into_bytes())
        .with_header("Cache-Control", "no-store")
}

/// Who an authenticated request acts as.
pub(super) struct Identity {
    pub(super) principal: String,
    pub(super) roles: Vec<String>,
    /// The ticket the request was identified by, or that its cookie names
    /// beside Basic credentials of the same user: asking for a ticket with
    /// it continues that session.
    pub(super) ticket: Option<String>,
}

impl NotebookHandler {
    /// Answers a plain HTTP request.
    pub(super) fn http(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> HttpResponse {
        if !self.security.host_allowed(request) {
            return host_refused(request);
        }
        let path = request.path();
        let known = matches!(
            path,
            "/healthz" | "/metrics" | "/api/security/ticket" | "/api/login/logout"
        ) || (self.web_root.is_none() && matches!(path, "/" | "/index.html"));
        if !known {
            if path.starts_with("/api/") {
                return self.rest(ctx, request);
            }
            return self.static_file(ctx, request);
        }
        let method = if path == "/api/login/logout" {
            "POST"
        } else {
            "GET"
        };
        // HEAD is GET without the body (the server sends only the head).
        let as_get = method == "GET" && request.method == "HEAD";
        if request.method != method && !as_get {
            let allow = if method == "GET" { "GET, HEAD" } else { method };
            return HttpResponse::text(405, format!("only {allow} is supported here\n"))
                .with_header("Allow", allow);
        }
        match path {
            "/healthz" => HttpResponse::text(200, "ok\n"),
            "/metrics" => self.metrics(ctx),
            "/api/security/ticket" => self.ticket(ctx, request),
            "/api/login/logout" => self.logout(ctx, request),
            _ => HttpResponse::with_body(200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec())
                .with_header("Content-Security-Policy", PAGE_POLICY)
                .with_header("X-Content-Type-Options", "nosniff")
                .with_header("Referrer-Policy", "no-referrer")
                .with_header("Cache-Control", "no-cache"),
        }
    }

    /// A file from the web root (`--web-dir`), or `404` without one.
    /// Reading a file not cached yet defers the request to the web root's
    /// worker.
    fn static_file(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        let Some(web_root) = &mut self.web_root else {
            return HttpResponse::not_found();
        };
        if !matches!(request.method, "GET" | "HEAD") {
            return HttpResponse::text(405, "only GET and HEAD are supported here\n")
                .with_header("Allow", "GET, HEAD");
        }
        match web_root.serve(ctx.request_id(), request, ctx.now()) {
            Served::Response(response) => response,
            Served::Deferred => match ctx.defer() {
                Some(_) => HttpResponse::text(503, "deferred\n"),
                None => HttpResponse::text(503, "try again\n").with_header("Retry-After", "1"),
            },
        }
    }

    fn metrics(&self, ctx: &mut Context<'_>) -> HttpResponse {
        let mut out = String::new();
        ctx.stats().write_prometheus(&mut out);
        write_labelled(
            &mut out,
            "wsloop_notebook_ops_total",
            "Notebook ops received, by op.",
            "op",
            &self.op_counts,
        );
        write_labelled(
            &mut out,
            "wsloop_notebook_paragraph_runs_total",
            "Paragraph runs ended, by status.",
            "status",
            &self.run_counts,
        );
        write_labelled(
            &mut out,
            "wsloop_notebook_refusals_total",
            "Requests refused, by the reply sent (ERROR_INFO, SESSION_LOGOUT, AUTH_INFO).",
            "reply",
            &self.refusal_counts,
        );
        let _ = write!(
            out,
            "# HELP wsloop_notebook_notes Notes stored.\n# TYPE wsloop_notebook_notes gauge\nwsloop_notebook_notes {}\n",
            self.notes.len()
        );
        let _ = write!(
            out,
            "# HELP wsloop_notebook_write_failures_total Note writes that failed.\n# TYPE wsloop_notebook_write_failures_total counter\nwsloop_notebook_write_failures_total {}\n",
            self.failed_writes
        );
        let _ = write!(
            out,
            "# HELP wsloop_notebook_held_output_bytes Output waiting for note writes to be durable.\n# TYPE wsloop_notebook_held_output_bytes gauge\nwsloop_notebook_held_output_bytes {}\n",
            ctx.held_output_bytes()
        );
        let _ = write!(
            out,
            "# HELP wsloop_notebook_paragraph_runs_held Paragraph runs queued or running (bounded by notebook.max_runs).\n# TYPE wsloop_notebook_paragraph_runs_held gauge\nwsloop_notebook_paragraph_runs_held {}\n",
            self.jobs.runs_held()
        );
        if let Some(web_root) = &self.web_root {
            let _ = write!(
                out,
                "# HELP wsloop_web_cache_bytes Web root files held in memory (bounded by web.cache_bytes).\n# TYPE wsloop_web_cache_bytes gauge\nwsloop_web_cache_bytes {}\n",
                web_root.cached_bytes()
            );
        }
        HttpResponse::with_body(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            out.into_bytes(),
        )
    }

    /// Authenticates a request from its Basic credentials, `ticket` query
    /// parameter or ticket cookie. `Ok(None)`: no credentials at all.
    pub(super) fn identify(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Option<Identity>, HttpResponse> {
        self.identify_with(ctx, request, basic_credentials(request))
    }

    /// [`Self::identify`] with `credentials` standing for the request's
    /// Basic credentials (a login form's fields, say).
    pub(super) fn identify_with(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
        credentials: Option<Credentials>,
    ) -> Result<Option<Identity>, HttpResponse> {
        let peer = ctx.peer_addr().map(|addr| addr.ip());
        match credentials {
            Some(Credentials::Basic { user, password }) => {
                let now = ctx.now();
                let digest = self.security.cache_digest(&user, &password);
                // The second offer of a request whose check finished: its
                // verdict answers it (failures were counted on arrival).
                let verdict = ctx
                    .request_id()
                    .and_then(|id| self.passwords.take_verdict(id))
                    .filter(|verdict| verdict.user == user && verdict.digest == digest);
                if verdict.is_none() && peer.is_some_and(|ip| self.security.throttled(ip, now)) {
                    return Err(HttpResponse::text(
                        429,
                        "too many failed logins; try again later\n",
                    )
                    .with_header("Retry-After", FAILURE_WINDOW.as_secs().to_string()));
                }
                let found = match verdict {
                    Some(verdict) if verdict.valid => self.security.remember(&user, digest),
                    Some(_) => None,
                    None => match self.security.verified_before(&user, &digest) {
                        Some(found) => Some(found),
                        None => {
                            return Err(self.check_password_later(ctx, &user, &password, digest));
                        }
                    },
                };
                let Some(found) = found else {
                    return Err(unauthorized_for(request, "wrong user name or password\n"));
                };
                let mut identity = Identity {
                    principal: found.name.clone(),
                    roles: found.roles.clone(),
                    ticket: None,
                };
                if let Some(ip) = peer {
                    self.security.record_success(ip);
                }
                // A browser sends its cached Basic credentials with every
                // request: the session its cookie names (same user) goes
                // on, instead of a new ticket per load.
                identity.ticket = self
                    .cookie_session(request, now)
                    .filter(|session| session.principal == identity.principal)
                    .and_then(|session| session.ticket);
                return Ok(Some(identity));
            }
            Some(Credentials::Malformed) => {
                return Err(unauthorized_for(
                    request,
                    "malformed Authorization header\n",
                ));
            }
            None => {}
        }
        if let Some(ticket) = request.query_param("ticket") {
            let principal = request.query_param("principal").unwrap_or("anonymous");
            return match self.tickets.check(principal, ticket, ctx.now()) {
                TicketCheck::Valid { principal, roles } => Ok(Some(Identity {
                    principal,
                    roles,
                    ticket: Some(ticket.to_owned()),
                })),
                _ => Err(unauthorized_for(request, "invalid ticket\n")),
            };
        }
        Ok(self.cookie_session(request, ctx.now()))
    }

    /// Queues a password check on the worker and defers the request until
    /// its verdict is in; the answer when the server-wide or the address's
    /// budget of checks is spent. (A deferred request's response is
    /// discarded by the server.)
    fn check_password_later(
        &mut self,
        ctx: &mut Context<'_>,
        user: &str,
        password: &str,
        digest: [u8; 20],
    ) -> HttpResponse {
        let busy = || {
            HttpResponse::text(
                503,
                "too many logins are being checked; try again in a moment\n",
            )
            .with_header("Retry-After", "1")
        };
        let Some(conn) = ctx.request_id() else {
            return busy();
        };
        let peer = ctx.peer_addr().map(|addr| addr.ip());
        let hash = self.security.password_hash(user);
        match self
            .passwords
            .submit(conn, peer, user, password, hash, digest, ctx.now())
        {
            Ok(()) if ctx.defer().is_some() => HttpResponse::text(503, "deferred\n"),
            Ok(()) | Err(Busy::Server) => busy(),
            Err(Busy::Address) => {
                HttpResponse::text(429, "a login from this address is already being checked\n")
                    .with_header("Retry-After", "1")
            }
        }
    }

    /// Takes the password checks the worker finished: counts failures and
    /// successes per address, remembers valid credentials, and offers the
    /// waiting requests again.
    pub(super) fn collect_password_checks(&mut self, ctx: &mut Context<'_>) {
        let now = ctx.now();
        for (conn, peer, verdict) in self.passwords.collect(now) {
            match (verdict.valid, peer) {
                (true, Some(ip)) => self.security.record_success(ip),
                (true, None) => {}
                (false, peer) => {
                    log::warn!(
                        "refused credentials for user {:?} from {peer:?}",
                        verdict.user
                    );
                    if let Some(ip) = peer {
                        self.security.record_failure(ip, now);
                    }
                }
            }
            ctx.resume(conn);
        }
    }

    /// The identity the request's ticket cookie names, if it is valid.
    fn cookie_session(&mut self, request: &HttpRequest<'_>, now: Instant) -> Option<Identity> {
        let ticket = ticket_cookie(request)?;
        let (principal, roles) = self.tickets.principal_for(ticket, now)?;
        Some(Identity {
            principal,
            roles,
            ticket: Some(ticket.to_owned()),
        })
    }

    /// `GET /api/security/ticket`: a fresh ticket for Basic credentials
    /// (also set as an HttpOnly cookie), the same ticket for a request
    /// identified by one, or the anonymous identity.
    fn ticket(&mut self, ctx: &mut Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        if !self.security.origin_allowed(request) {
            return HttpResponse::text(403, "origin not allowed\n");
        }
        let identity = match self.identify(ctx, request) {
            Ok(identity) => identity,
            Err(refusal) => return refusal,
        };
        let (principal, roles, ticket, cookie) = match identity {
            Some(Identity {
                principal,
                roles,
                ticket,
            }) if principal != "anonymous" => {
                let ticket = match ticket {
                    Some(ticket) => ticket,
                    None => self.tickets.issue(&principal, roles.clone(), ctx.now()),
                };
                let cookie = ticket_cookie_header(ctx, &ticket, "");
                (principal, roles, ticket, Some(cookie))
            }
            _ if self.tickets.anonymous_allowed() => (
                "anonymous".to_owned(),
                vec!["anonymous".to_owned()],
                "anonymous".to_owned(),
                None,
            ),
            _ => return unauthorized_for(request, "log in with HTTP Basic credentials\n"),
        };
        let roles = serde_json::to_string(&roles).unwrap_or_else(|_| "[]".to_owned());
        let body = json!({ "status": "OK", "message": "", "body": { "principal": principal, "ticket": ticket, "roles": roles } });
        let response = json_response(200, &body);
        match cookie {
            Some(cookie) => response.with_header("Set-Cookie", cookie),
            None => response,
        }
    }

    /// `POST /api/login/logout`: ends the session the request's ticket
    /// cookie (or `ticket` query parameter) names, and clears the cookie.
    /// The ticket's connections get SESSION_LOGOUT on their next op.
    fn logout(&mut self, ctx: &Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
        if !self.security.origin_allowed(request) {
            return HttpResponse::text(403, "origin not allowed\n");
        }
        let ended = ticket_cookie(request)
            .into_iter()
            .chain(request.query_param("ticket"))
            .fold(false, |ended, ticket| self.tickets.revoke(ticket) | ended);
        let body = json!({ "status": "OK", "message": "", "body": { "loggedOut": ended } });
        json_response(200, &body)
            .with_header("Set-Cookie", ticket_cookie_header(ctx, "", "; Max-Age=0"))
    }

    /// The `/ws` upgrade: right path, allowed `Origin`, and valid
    /// credentials (or anonymous access).
    pub(super) fn authorize_upgrade(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Accept, HttpResponse> {
        if !self.security.host_allowed(request) {
            return Err(host_refused(request));
        }
        if request.path() != "/ws" {
            return Err(HttpResponse::text(404, "the WebSocket endpoint is /ws\n"));
        }
        if !self.security.origin_allowed(request) {
            return Err(HttpResponse::text(403, "origin not allowed\n"));
        }
        match self.identify(ctx, request)? {
            Some(identity) => log::debug!("upgrade by {} {:?}", identity.principal, identity.roles),
            None if self.tickets.anonymous_allowed() => {}
            None => {
                return Err(unauthorized(
                    "log in first: HTTP Basic, a ticket, or the ticket cookie\n",
                ));
            }
        }
        Ok(Accept::default())
    }
}

/// The `Set-Cookie` value carrying `ticket` (HttpOnly, same-site only,
/// and over TLS never sent in the clear), with `extra` attributes.
pub(super) fn ticket_cookie_header(ctx: &Context<'_>, ticket: &str, extra: &str) -> String {
    let secure = if ctx.is_tls() { "; Secure" } else { "" };
    format!("{TICKET_COOKIE}={ticket}; Path=/; HttpOnly; SameSite=Strict{secure}{extra}")
}
