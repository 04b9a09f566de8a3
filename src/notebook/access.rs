//! Who may connect: configured users with argon2 password hashes, HTTP
//! Basic credentials, the ticket cookie, and the `Origin` and `Host`
//! allowlists.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::tickets::constant_time_eq;
use crate::proto::HttpRequest;

/// Failed logins from one address within [`FAILURE_WINDOW`] after which its
/// further attempts are refused without running argon2.
pub const MAX_FAILURES: u32 = 5;

/// How long failed logins are remembered (and an address stays refused).
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Addresses tracked at most; the oldest entries make way beyond it.
const MAX_TRACKED: usize = 10_000;

/// Name of the cookie the ticket endpoint sets.
pub const TICKET_COOKIE: &str = "wsloop_ticket";

/// A configured user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name (the principal).
    pub name: String,
    password_hash: String,
    /// Roles reported with the user's tickets.
    pub roles: Vec<String>,
}

impl User {
    /// A user whose password hash is a valid PHC string (as printed by
    /// `wsloop hash-password`).
    pub fn new(name: &str, password_hash: &str, roles: Vec<String>) -> Result<User, String> {
        PasswordHash::new(password_hash).map_err(|e| {
            format!("not a PHC password hash (make one with `wsloop hash-password`): {e}")
        })?;
        Ok(User {
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
            roles,
        })
    }
}

/// Hashes a password with argon2id and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| e.to_string())
}

/// The user list, host and origin policy, with a cache of verified
/// credentials.
#[derive(Debug)]
pub struct Security {
    users: Vec<User>,
    allowed_origins: Vec<String>,
    allowed_hosts: Vec<String>,
    /// user → SHA-1 of (secret key, user, password) for credentials that
    /// passed argon2 once, so repeated logins do not stall the loop for an
    /// argon2 run each. The key is random per process.
    verified: HashMap<String, [u8; 20]>,
    cache_key: [u8; 32],
    /// Failed logins per peer address: count, and when the count started.
    failures: HashMap<IpAddr, (u32, Instant)>,
}

/// Credentials a request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A malformed `Authorization` header.
    Malformed,
}

impl Security {
    /// The configured users, origins and host names (see
    /// [`Security::host_allowed`]).
    pub fn new(
        users: Vec<User>,
        allowed_origins: Vec<String>,
        allowed_hosts: Vec<String>,
    ) -> Security {
        let mut cache_key = [0u8; 32];
        getrandom::fill(&mut cache_key).expect("the OS random source is unavailable");
        Security {
            users,
            allowed_origins,
            allowed_hosts,
            verified: HashMap::new(),
            cache_key,
            failures: HashMap::new(),
        }
    }

    /// Whether `peer` failed to log in too often lately: its attempts are
    /// refused without an argon2 run, so a password flood cannot keep the
    /// event loop busy.
    pub fn throttled(&self, peer: IpAddr, now: Instant) -> bool {
        self.failures.get(&peer).is_some_and(|(count, since)| {
            *count >= MAX_FAILURES && now.duration_since(*since) < FAILURE_WINDOW
        })
    }

    /// Records a failed login from `peer`.
    pub fn record_failure(&mut self, peer: IpAddr, now: Instant) {
        if self.failures.len() >= MAX_TRACKED {
            self.failures
                .retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if self.failures.len() >= MAX_TRACKED {
                self.failures.clear();
            }
        }
        let entry = self.failures.entry(peer).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }

    /// Forgets `peer`'s failures after a successful login.
    pub fn record_success(&mut self, peer: IpAddr) {
        self.failures.remove(&peer);
    }

    /// Names a user's credentials without keeping the password: SHA-1 of
    /// a per-process random key, the user and the password.
    pub fn cache_digest(&self, user: &str, password: &str) -> [u8; 20] {
        let mut sha = sha1_smol::Sha1::new();
        sha.update(&self.cache_key);
        sha.update(user.as_bytes());
        sha.update(&[0]);
        sha.update(password.as_bytes());
        sha.digest().bytes()
    }

    /// The user, if these exact credentials passed a password check
    /// before (see [`Security::remember`]): repeated logins cost a SHA-1,
    /// not an argon2 run.
    pub fn verified_before(&self, user: &str, digest: &[u8; 20]) -> Option<&User> {
        let known = self.verified.get(user)?;
        if !constant_time_eq(known, digest) {
            return None;
        }
        self.users.iter().find(|u| u.name == user)
    }

    /// The user's password hash, to check a password against off the loop
    /// (`None`: no such user).
    pub fn password_hash(&self, user: &str) -> Option<String> {
        self.users
            .iter()
            .find(|u| u.name == user)
            .map(|u| u.password_hash.clone())
    }

    /// Records credentials that passed a password check; returns the user.
    pub fn remember(&mut self, user: &str, digest: [u8; 20]) -> Option<&User> {
        let found = self.users.iter().find(|u| u.name == user)?;
        self.verified.insert(user.to_owned(), digest);
        Some(found)
    }

    /// Whether the request's `Host` is a name this server answers to: the
    /// defence against DNS rebinding, where a web page whose own name the
    /// attacker re-points at 127.0.0.1 reaches the server as a "same-origin"
    /// page (its `Host` and `Origin` then name the attacker's domain).
    ///
    /// Allowed: no `Host` at all (not a browser), an IP address literal (a
    /// browser only sends one when the page itself was loaded from that
    /// address, which no DNS answer can fake), `localhost` and names under
    /// `.localhost` (browsers resolve these to loopback themselves), and
    /// the configured `allowed_hosts`: exact names, `*.example.com` for the
    /// names under a domain, or `*` for any (for a server behind a proxy
    /// that checks `Host` itself). Ports are not compared.
    pub fn host_allowed(&self, request: &HttpRequest<'_>) -> bool {
        let Some(host) = request.header_str("host") else {
            return true;
        };
        let name = host_name(host).to_ascii_lowercase();
        if name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
        {
            return true;
        }
        self.allowed_hosts.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            match allowed.strip_prefix("*.") {
                _ if allowed == "*" => true,
                Some(domain) => name
                    .strip_suffix(domain)
                    .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
                None => host_name(&allowed) == name,
            }
        })
    }

    /// Whether `Origin` may open a WebSocket or get a ticket. Requests
    /// without `Origin` (non-browser clients) pass. Allowed: `*` in the
    /// list, an origin in the list, the server's own host (as the `Host`
    /// header names it), and, when no list is configured, localhost and
    /// 127.0.0.1 on any port. The `Host` comparison is only as good as
    /// [`Security::host_allowed`], which callers check first.
    pub fn origin_allowed(&self, request: &HttpRequest<'_>) -> bool {
        let Some(origin) = request.header_str("origin") else {
            return true;
        };
        if self
            .allowed_origins
            .iter()
            .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
        {
            return true;
        }
        let Some((_, authority)) = origin.split_once("://") else {
            return false;
        };
        let authority = authority.trim_end_matches('/');
        if request
            .header_str("host")
            .is_some_and(|host| host.eq_ignore_ascii_case(authority))
        {
            return true;
        }
        if !self.allowed_origins.is_empty() {
            return false;
        }
        matches!(
            host_name(authority).to_ascii_lowercase().as_str(),
            "localhost" | "127.0.0.1" | "::1"
        )
    }
}

/// The host part of a `Host` header value or an origin's authority: the
/// port dropped, an IPv6 literal's brackets removed.
fn host_name(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    }
    .trim_end_matches('.')
}

/// The `Authorization: Basic` credentials of a request, if it has any.
pub fn basic_credentials(request: &HttpRequest<'_>) -> Option<Credentials> {
    let value = request.header_str("authorization")?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Some(Credentials::Malformed);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Some(Credentials::Malformed);
    }
    let decoded = BASE64.decode(encoded.trim()).ok();
    let text = decoded.and_then(|bytes| String::from_utf8(bytes).ok());
    match text.as_deref().and_then(|t| t.split_once(':')) {
        Some((user, password)) => Some(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        }),
        None => Some(Credentials::Malformed),
    }
}

/// The ticket cookie's value, if the request carries one.
pub fn ticket_cookie<'a>(request: &HttpRequest<'a>) -> Option<&'a str> {
    request
        .header_values("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == TICKET_COOKIE)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    fn request<'a>(headers: &'a [httparse::Header<'a>]) -> HttpRequest<'a> {
        HttpRequest {
            method: "GET",
            target: "/ws",
            minor_version: 1,
            headers,
            body: &[],
        }
    }

    fn header<'a>(name: &'a str, value: &'a str) -> httparse::Header<'a> {
        httparse::Header {
            name,
            value: value.as_bytes(),
        }
    }

    /// Checks a password on this thread, as the worker does, remembering
    /// it as the loop does on a valid verdict.
    fn verify<'s>(security: &'s mut Security, user: &str, password: &str) -> Option<&'s User> {
        let digest = security.cache_digest(user, password);
        if security.verified_before(user, &digest).is_none() {
            let hash = security.password_hash(user)?;
            let hash = PasswordHash::new(&hash).ok()?;
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .ok()?;
        }
        security.remember(user, digest)
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        let mut security = Security::new(
            vec![User::new("alice", &hash, vec!["admin".into()]).unwrap()],
            vec![],
            vec![],
        );
        assert_eq!(
            verify(&mut security, "alice", "correct horse").map(|u| u.name.as_str()),
            Some("alice")
        );
        assert!(
            verify(&mut security, "alice", "correct horse").is_some(),
            "cached path"
        );
        assert!(verify(&mut security, "alice", "wrong").is_none());
        assert!(verify(&mut security, "bob", "correct horse").is_none());
        assert!(User::new("x", "plaintext", vec![]).is_err());
    }

    #[test]
    fn repeated_failures_throttle_an_address_for_a_while() {
        let mut security = Security::new(vec![], vec![], vec![]);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            security.record_failure(peer, t0);
        }
        assert!(!security.throttled(peer, t0));
        security.record_failure(peer, t0);
        assert!(security.throttled(peer, t0));
        assert!(!security.throttled(other, t0));
        assert!(
            !security.throttled(peer, t0 + FAILURE_WINDOW),
            "forgiven after the window"
        );
        security.record_success(peer);
        assert!(!security.throttled(peer, t0));
    }

    #[test]
    fn origin_policy() {
        let default = Security::new(vec![], vec![], vec![]);
        let same = [
            header("Host", "notes.example:8081"),
            header("Origin", "http://notes.example:8081"),
        ];
        assert!(default.origin_allowed(&request(&same)));
        let local = [
            header("Host", "notes.example"),
            header("Origin", "http://localhost:3000"),
        ];
        assert!(default.origin_allowed(&request(&local)));
        let evil = [
            header("Host", "notes.example"),
            header("Origin", "https://evil.example"),
        ];
        assert!(!default.origin_allowed(&request(&evil)));
        let none = [header("Host", "notes.example")];
        assert!(default.origin_allowed(&request(&none)));
        let listed = Security::new(vec![], vec!["https://evil.example".into()], vec![]);
        assert!(listed.origin_allowed(&request(&evil)));
        assert!(
            !listed.origin_allowed(&request(&local)),
            "a configured list replaces the localhost default"
        );
        let any = Security::new(vec![], vec!["*".into()], vec![]);
        assert!(any.origin_allowed(&request(&evil)));
    }

    #[test]
    fn host_policy_answers_to_addresses_localhost_and_the_allowlist() {
        let default = Security::new(vec![], vec![], vec![]);
        let allows = |security: &Security, host: &str| {
            security.host_allowed(&request(&[header("Host", host)]))
        };
        for host in [
            "127.0.0.1:8081",
            "localhost:8081",
            "LOCALHOST",
            "app.localhost:3000",
            "[::1]:8081",
            "192.168.1.20:8081",
            "localhost.:8081",
        ] {
            assert!(allows(&default, host), "{host}");
        }
        for host in [
            "evil.example:8081",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "",
        ] {
            assert!(!allows(&default, host), "{host}");
        }
        assert!(
            default.host_allowed(&request(&[])),
            "no Host: not a browser"
        );
        let listed = Security::new(
            vec![],
            vec![],
            vec!["notes.example.com".into(), "*.corp.example".into()],
        );
        assert!(allows(&listed, "notes.example.com:443"));
        assert!(allows(&listed, "Notes.Example.Com"));
        assert!(allows(&listed, "a.b.corp.example"));
        assert!(!allows(&listed, "corp.example"));
        assert!(!allows(&listed, "evilcorp.example"));
        assert!(!allows(&listed, "example.com"));
        let any = Security::new(vec![], vec![], vec!["*".into()]);
        assert!(allows(&any, "evil.example"));
    }

    #[test]
    fn basic_and_cookie_parsing() {
        let h = [header(
            "Authorization",
            "Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z",
        )];
        assert_eq!(
            basic_credentials(&request(&h)),
            Some(Credentials::Basic {
                user: "alice".into(),
                password: "s3cr3t:with:colons".into()
            })
        );
        let bad = [header("Authorization", "Bearer x")];
        assert_eq!(
            basic_credentials(&request(&bad)),
            Some(Credentials::Malformed)
        );
        let cookies = [header("Cookie", "a=1; wsloop_ticket=abc-123; b=2")];
        assert_eq!(ticket_cookie(&request(&cookies)), Some("abc-123"));
    }
}
