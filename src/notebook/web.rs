//! The notebook's plain-HTTP side on the WebSocket port: the page,
//! `/healthz`, `/metrics`, `/api/security/ticket`, and the authentication
//! and `Origin` check of the `/ws` upgrade.

use std::fmt::Write as _;
use std::time::Instant;

use serde_json::json;

use super::app::NotebookHandler;
use super::auth::TicketCheck;
use super::security::{
    Credentials, FAILURE_WINDOW, TICKET_COOKIE, basic_credentials, ticket_cookie,
};
use crate::handler::Accept;
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::{Context, write_labelled};

/// The notebook page: HTML, CSS and JS in one file, nothing fetched from
/// elsewhere.
const PAGE: &str = include_str!("page.html");

/// Keeps the page from being framed, sniffed, or loading anything foreign.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn unauthorized(body: &str) -> HttpResponse {
    HttpResponse::text(401, body).with_header(
        "WWW-Authenticate",
        "Basic realm=\"wsloop\", charset=\"UTF-8\"",
    )
}

fn json_response(status: u16, body: &serde_json::Value) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![("Content-Type".to_owned(), "application/json".to_owned())],
        body: body.to_string().into_bytes(),
    }
    .with_header("Cache-Control", "no-store")
}

/// Who an authenticated request acts as.
struct Identity {
    principal: String,
    roles: Vec<String>,
    /// The ticket the request was identified by, or that its cookie names
    /// beside Basic credentials of the same user: asking for a ticket with
    /// it continues that session.
    ticket: Option<String>,
}

impl NotebookHandler {
    /// Answers a plain HTTP request.
    pub(super) fn http(
        &mut self,
        ctx: &mut Context<'_>,
        request: &HttpRequest<'_>,
    ) -> HttpResponse {
        let path = request.path();
        let known = matches!(
            path,
            "/" | "/index.html"
                | "/healthz"
                | "/metrics"
                | "/api/security/ticket"
                | "/api/login/logout"
        );
        if !known {
            return HttpResponse::not_found();
        }
        let method = if path == "/api/login/logout" {
            "POST"
        } else {
            "GET"
        };
        if request.method != method {
            return HttpResponse::text(405, format!("only {method} is supported here\n"))
                .with_header("Allow", method);
        }
        match path {
            "/healthz" => HttpResponse::text(200, "ok\n"),
            "/metrics" => self.metrics(ctx),
            "/api/security/ticket" => self.ticket(ctx, request),
            "/api/login/logout" => self.logout(ctx, request),
            _ => HttpResponse {
                status: 200,
                headers: vec![(
                    "Content-Type".to_owned(),
                    "text/html; charset=utf-8".to_owned(),
                )],
                body: PAGE.as_bytes().to_vec(),
            }
            .with_header("Content-Security-Policy", PAGE_POLICY)
            .with_header("X-Content-Type-Options", "nosniff")
            .with_header("Referrer-Policy", "no-referrer")
            .with_header("Cache-Control", "no-cache"),
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
            self.notes.summaries().len()
        );
        let _ = write!(
            out,
            "# HELP wsloop_notebook_paragraph_runs_held Paragraph runs queued or running (bounded by notebook.max_runs).\n# TYPE wsloop_notebook_paragraph_runs_held gauge\nwsloop_notebook_paragraph_runs_held {}\n",
            self.jobs.runs_held()
        );
        HttpResponse {
            status: 200,
            headers: vec![(
                "Content-Type".to_owned(),
                "text/plain; version=0.0.4; charset=utf-8".to_owned(),
            )],
            body: out.into_bytes(),
        }
    }

    /// Authenticates a request from its Basic credentials, `ticket` query
    /// parameter or ticket cookie. `Ok(None)`: no credentials at all.
    fn identify(
        &mut self,
        ctx: &Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Option<Identity>, HttpResponse> {
        let peer = ctx.peer_addr().map(|addr| addr.ip());
        match basic_credentials(request) {
            Some(Credentials::Basic { user, password }) => {
                let now = ctx.now();
                if peer.is_some_and(|ip| self.security.throttled(ip, now)) {
                    return Err(HttpResponse::text(
                        429,
                        "too many failed logins; try again later\n",
                    )
                    .with_header("Retry-After", FAILURE_WINDOW.as_secs().to_string()));
                }
                let identity = self
                    .security
                    .verify(&user, &password)
                    .map(|found| Identity {
                        principal: found.name.clone(),
                        roles: found.roles.clone(),
                        ticket: None,
                    });
                return match (identity, peer) {
                    (Some(mut identity), peer) => {
                        if let Some(ip) = peer {
                            self.security.record_success(ip);
                        }
                        // A browser sends its cached Basic credentials with
                        // every request: the session its cookie names (same
                        // user) goes on, instead of a new ticket per load.
                        identity.ticket = self
                            .cookie_session(request, now)
                            .filter(|session| session.principal == identity.principal)
                            .and_then(|session| session.ticket);
                        Ok(Some(identity))
                    }
                    (None, peer) => {
                        log::warn!("refused credentials for user {user:?} from {peer:?}");
                        if let Some(ip) = peer {
                            self.security.record_failure(ip, now);
                        }
                        Err(unauthorized("wrong user name or password\n"))
                    }
                };
            }
            Some(Credentials::Malformed) => {
                return Err(unauthorized("malformed Authorization header\n"));
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
                _ => Err(unauthorized("invalid ticket\n")),
            };
        }
        Ok(self.cookie_session(request, ctx.now()))
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
    fn ticket(&mut self, ctx: &Context<'_>, request: &HttpRequest<'_>) -> HttpResponse {
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
            _ => return unauthorized("log in with HTTP Basic credentials\n"),
        };
        let roles = serde_json::to_string(&roles).unwrap_or_else(|_| "[]".to_owned());
        let body = json!({ "status": "OK", "body": { "principal": principal, "ticket": ticket, "roles": roles } });
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
        let body = json!({ "status": "OK", "body": { "loggedOut": ended } });
        json_response(200, &body)
            .with_header("Set-Cookie", ticket_cookie_header(ctx, "", "; Max-Age=0"))
    }

    /// The `/ws` upgrade: right path, allowed `Origin`, and valid
    /// credentials (or anonymous access).
    pub(super) fn authorize_upgrade(
        &mut self,
        ctx: &Context<'_>,
        request: &HttpRequest<'_>,
    ) -> Result<Accept, HttpResponse> {
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
fn ticket_cookie_header(ctx: &Context<'_>, ticket: &str, extra: &str) -> String {
    let secure = if ctx.is_tls() { "; Secure" } else { "" };
    format!("{TICKET_COOKIE}={ticket}; Path=/; HttpOnly; SameSite=Strict{secure}{extra}")
}
