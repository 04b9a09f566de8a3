//! The notebook server's HTTP face: endpoints, every authentication path
//! (accepted and refused), the Origin allowlist, and configuration files.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{
    JsonClient, RawClient, TestServer, Wsloop, bystander_round_trips, connect_from, quantile,
    upgrade_request,
};
use serde_json::{Value, json};
use wsloop::ServerConfig;
use wsloop::notebook::access::{User, hash_password};
use wsloop::notebook::{NotebookConfig, NotebookHandler};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-web-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(name: &str, configure: impl FnOnce(&mut NotebookConfig)) -> (TestServer, PathBuf) {
    let dir = temp_dir(name);
    let mut config = NotebookConfig {
        notebook_dir: dir.clone(),
        ..NotebookConfig::default()
    };
    configure(&mut config);
    let handler = NotebookHandler::open(config).unwrap();
    (TestServer::start(ServerConfig::default(), handler), dir)
}

/// Sends one HTTP request; returns status, head and body.
fn get(server: &TestServer, method: &str, target: &str, headers: &str) -> (u16, String, String) {
    let mut client = RawClient::connect(server.addr);
    client.send_raw(
        format!(
            "{method} {target} HTTP/1.1\r\nHost: {}\r\n{headers}\r\n",
            server.addr
        )
        .as_bytes(),
    );
    let response = client.read_response();
    client.expect_eof();
    response
}

/// Tries an upgrade to `target` with extra headers; returns the status.
fn upgrade_status(server: &TestServer, target: &str, headers: &str) -> u16 {
    let mut client = RawClient::connect(server.addr);
    client.send_raw(upgrade_request(target, headers).as_bytes());
    client.read_response_head().0
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[test]
fn endpoints_answer_with_length_and_type() {
    let (server, dir) = start("endpoints", |_| {});
    let (status, head, body) = get(&server, "GET", "/healthz", "");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(
        header(&head, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(header(&head, "Content-Length"), Some("3"));

    let (status, head, body) = get(&server, "GET", "/", "");
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "Content-Type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        header(&head, "Content-Security-Policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(body.contains("wsloop notebook") && body.contains("new WebSocket("));
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "the page loads nothing from elsewhere"
    );

    assert_eq!(get(&server, "GET", "/nope", "").0, 404);
    // HEAD: the GET's head, no body (a load balancer's health check).
    let mut raw = std::net::TcpStream::connect(server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        raw,
        "HEAD /healthz HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut raw, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("Content-Length: 3\r\n"), "{reply}");
    assert!(
        reply.ends_with("\r\n\r\n"),
        "no body after the head: {reply:?}"
    );
    let (status, head, _) = get(&server, "POST", "/healthz", "Content-Length: 0\r\n");
    assert_eq!(status, 405);
    assert_eq!(header(&head, "Allow"), Some("GET, HEAD"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn metrics_count_connections_messages_ops_runs_and_refusals() {
    let (server, dir) = start("metrics", |_| {});
    let mut client = JsonClient::open(server.addr);
    client.send_op("LIST_NOTES", json!({}));
    client.expect("NOTES_INFO");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": "m1", "paragraph": "%md *x*" }),
    );
    client.expect("NOTES_INFO"); // the scratch note it creates
    loop {
        if client.expect("PARAGRAPH")["paragraph"]["status"] == "FINISHED" {
            break;
        }
    }
    client.send_op("GET_NOTE", json!({ "id": "NOSUCHNOTE" }));
    client.expect("ERROR_INFO");
    let mut closer = JsonClient::open(server.addr);
    closer.raw.send_frame(0x88, &4321u16.to_be_bytes());
    assert_eq!(closer.raw.expect_close(), 4321);
    // A second, different version header: refused as an unsupported version.
    assert_eq!(
        upgrade_status(&server, "/ws", "Sec-WebSocket-Version: 99\r\n"),
        426
    );

    let (status, head, body) = get(&server, "GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        header(&head, "Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for expected in [
        "wsloop_open_connections 1\n",
        "wsloop_notebook_ops_total{op=\"LIST_NOTES\"} 1\n",
        "wsloop_notebook_ops_total{op=\"RUN_PARAGRAPH\"} 1\n",
        "wsloop_notebook_paragraph_runs_total{status=\"FINISHED\"} 1\n",
        "wsloop_notebook_refusals_total{reply=\"ERROR_INFO\"} 1\n",
        "wsloop_closes_total{code=\"4321\"} 1\n",
        "wsloop_messages_in_total 3\n",
        "# TYPE wsloop_bytes_out_total counter\n",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in\n{body}");
    }
    assert!(
        body.contains("wsloop_rejected_handshakes_total{status=\"426\"} 1\n"),
        "{body}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn ticket_endpoint_issues_tickets_for_users_and_the_anonymous_identity() {
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("ticket", |c| {
        c.users = vec![User::new("alice", &hash, vec!["admin".into()]).unwrap()]
    });
    let (status, _, body) = get(&server, "GET", "/api/security/ticket", "");
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        json!({ "status": "OK", "message": "", "body": { "principal": "anonymous", "ticket": "anonymous", "roles": "[\"anonymous\"]" } })
    );

    let (status, head, body) = get(
        &server,
        "GET",
        "/api/security/ticket",
        &basic("alice", "s3cret"),
    );
    assert_eq!(status, 200);
    assert_eq!(header(&head, "Content-Type"), Some("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["body"]["principal"], "alice");
    assert_eq!(body["body"]["roles"], "[\"admin\"]");
    let ticket = body["body"]["ticket"].as_str().unwrap().to_owned();
    assert_eq!(ticket.len(), 36, "a UUID");
    let cookie = header(&head, "Set-Cookie").unwrap();
    assert_eq!(
        cookie,
        format!("wsloop_ticket={ticket}; Path=/; HttpOnly; SameSite=Strict")
    );

    // A second login issues a fresh ticket.
    let (_, _, again) = get(
        &server,
        "GET",
        "/api/security/ticket",
        &basic("alice", "s3cret"),
    );
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_ne!(again["body"]["ticket"], ticket.as_str());
    // The first still works: logging in from another tab or device ends
    // no session.
    assert_eq!(
        upgrade_status(&server, &format!("/ws?principal=alice&ticket={ticket}"), ""),
        101
    );
    // Asking with the ticket cookie continues that session.
    let (status, _, same) = get(
        &server,
        "GET",
        "/api/security/ticket",
        &format!("Cookie: wsloop_ticket={ticket}\r\n"),
    );
    assert_eq!(status, 200);
    let same: Value = serde_json::from_str(&same).unwrap();
    assert_eq!(same["body"]["ticket"], ticket.as_str());
    assert_eq!(same["body"]["principal"], "alice");
    // So does a page load sending cached Basic credentials with the cookie.
    let (_, _, reload) = get(
        &server,
        "GET",
        "/api/security/ticket",
        &format!(
            "{}Cookie: wsloop_ticket={ticket}\r\n",
            basic("alice", "s3cret")
        ),
    );
    let reload: Value = serde_json::from_str(&reload).unwrap();
    assert_eq!(reload["body"]["ticket"], ticket.as_str());

    let (status, head, _) = get(
        &server,
        "GET",
        "/api/security/ticket",
        &basic("alice", "wrong"),
    );
    assert_eq!(status, 401);
    assert!(
        header(&head, "WWW-Authenticate")
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(
        get(
            &server,
            "GET",
            "/api/security/ticket",
            &basic("mallory", "s3cret")
        )
        .0,
        401
    );
    assert_eq!(
        get(
            &server,
            "GET",
            "/api/security/ticket",
            "Authorization: Basic !!!\r\n"
        )
        .0,
        401
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn with_anonymous_off_every_upgrade_path_is_checked() {
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("auth", |c| {
        c.anonymous_allowed = false;
        c.users = vec![User::new("alice", &hash, vec!["admin".into()]).unwrap()];
    });
    let (status, head, _) = get(&server, "GET", "/api/security/ticket", "");
    assert_eq!(status, 401);
    assert!(header(&head, "WWW-Authenticate").is_some());

    assert_eq!(upgrade_status(&server, "/ws", ""), 401, "no credentials");

    // A configured user with a ticket this server never issued (one from
    // before a restart) is asked to log in again, not treated as unknown.
    let mut client = RawClient::connect(server.addr);
    client.send_raw(upgrade_request("/ws", &basic("alice", "s3cret")).as_bytes());
    assert_eq!(client.read_response_head().0, 101);
    let mut client = JsonClient { raw: client };
    client.send_text(
        &json!({ "op": "LIST_NOTES", "principal": "alice", "ticket": "from-before" }).to_string(),
    );
    client.expect("SESSION_LOGOUT");
    drop(client);
    assert_eq!(
        upgrade_status(&server, "/ws", &basic("alice", "s3cret")),
        101,
        "Basic"
    );
    assert_eq!(
        upgrade_status(&server, "/ws", &basic("alice", "nope")),
        401,
        "wrong password"
    );

    let (_, _, body) = get(
        &server,
        "GET",
        "/api/security/ticket",
        &basic("alice", "s3cret"),
    );
    let ticket = serde_json::from_str::<Value>(&body).unwrap()["body"]["ticket"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        upgrade_status(&server, &format!("/ws?principal=alice&ticket={ticket}"), ""),
        101,
        "ticket parameter"
    );
    assert_eq!(
        upgrade_status(&server, "/ws?principal=alice&ticket=forged", ""),
        401,
        "wrong ticket"
    );
    assert_eq!(
        upgrade_status(
            &server,
            "/ws",
            &format!("Cookie: wsloop_ticket={ticket}\r\n")
        ),
        101,
        "cookie"
    );
    assert_eq!(
        upgrade_status(&server, "/ws", "Cookie: wsloop_ticket=stale\r\n"),
        401,
        "stale cookie"
    );

    // On an authenticated connection, messages need the ticket too.
    let mut client = RawClient::connect(server.addr);
    client.send_raw(upgrade_request("/ws", &basic("alice", "s3cret")).as_bytes());
    assert_eq!(client.read_response_head().0, 101);
    let mut client = JsonClient { raw: client };
    client.send_text(
        &json!({ "op": "LIST_NOTES", "principal": "alice", "ticket": ticket }).to_string(),
    );
    client.expect("NOTES_INFO");
    client.send_text(
        &json!({ "op": "LIST_NOTES", "principal": "alice", "ticket": "old" }).to_string(),
    );
    client.expect("SESSION_LOGOUT");
    client.send_op("LIST_NOTES", json!({}));
    client.expect("AUTH_INFO");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn origins_outside_the_allowlist_get_403() {
    let (server, dir) = start("origin", |_| {});
    let own = format!("Origin: http://{}\r\n", server.addr);
    let host_line = format!("Host: {}\r\n", server.addr);
    let same_host = upgrade_request("/ws", &own).replace("Host: 127.0.0.1\r\n", &host_line);
    let mut client = RawClient::connect(server.addr);
    client.send_raw(same_host.as_bytes());
    assert_eq!(client.read_response_head().0, 101, "own origin");
    assert_eq!(
        upgrade_status(&server, "/ws", "Origin: http://localhost:5173\r\n"),
        101,
        "localhost"
    );
    let mut refused = RawClient::connect(server.addr);
    refused.send_raw(upgrade_request("/ws", "Origin: https://evil.example\r\n").as_bytes());
    let (status, _, body) = refused.read_response();
    assert_eq!((status, body.as_str()), (403, "origin not allowed\n"));
    assert_eq!(
        get(
            &server,
            "GET",
            "/api/security/ticket",
            "Origin: https://evil.example\r\n"
        )
        .0,
        403
    );
    drop(client);
    drop(server);

    let (listed, _) = start("origin", |c| {
        c.allowed_origins = vec!["https://notes.example".into()]
    });
    assert_eq!(
        upgrade_status(&listed, "/ws", "Origin: https://notes.example\r\n"),
        101
    );
    assert_eq!(
        upgrade_status(&listed, "/ws", "Origin: http://localhost:5173\r\n"),
        403
    );
    drop(listed);
    let (open, _) = start("origin", |c| c.allowed_origins = vec!["*".into()]);
    assert_eq!(
        upgrade_status(&open, "/ws", "Origin: https://evil.example\r\n"),
        101
    );
    drop(open);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The status of a raw request for `target` naming `host` (and the same
/// origin, as a page served from that host sends), upgrading or not.
fn status_for_host(server: &TestServer, target: &str, host: &str, upgrade: bool) -> u16 {
    let upgrade = if upgrade {
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    let mut client = RawClient::connect(server.addr);
    client.send_raw(
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n{upgrade}\r\n")
            .as_bytes(),
    );
    client.read_response_head().0
}

#[test]
fn a_dns_rebinding_page_is_refused_and_allowed_hosts_are_answered() {
    // A page on evil.example whose DNS now points at 127.0.0.1: its
    // requests name evil.example in both Host and Origin.
    let (server, dir) = start("rebinding", |_| {});
    let port = server.addr.port();
    let evil = format!("evil.example:{port}");
    assert_eq!(status_for_host(&server, "/ws", &evil, true), 403);
    for target in ["/", "/api/security/ticket", "/metrics", "/healthz"] {
        assert_eq!(
            status_for_host(&server, target, &evil, false),
            403,
            "{target}"
        );
    }
    // The names a local user types still work.
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(status_for_host(&server, "/ws", &host, true), 101, "{host}");
        assert_eq!(status_for_host(&server, "/", &host, false), 200, "{host}");
    }
    drop(server);
    let (listed, _) = start("rebinding", |c| {
        c.allowed_hosts = vec!["notes.example".into()];
    });
    let port = listed.addr.port();
    let named = format!("notes.example:{port}");
    assert_eq!(status_for_host(&listed, "/ws", &named, true), 101);
    assert_eq!(
        status_for_host(&listed, "/api/security/ticket", &named, false),
        200
    );
    assert_eq!(
        status_for_host(&listed, "/ws", &format!("evil.example:{port}"), true),
        403
    );
    drop(listed);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn password_guesses_from_many_addresses_do_not_stall_other_clients() {
    // argon2 takes 50-80 ms a check: on the loop thread, 50 addresses
    // guessing (5 each before their throttle) stalled everyone for
    // seconds at a time.
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("guesses", |c| {
        c.users = vec![User::new("alice", &hash, vec![]).unwrap()]
    });
    let addr = server.addr;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (times, statuses) = std::thread::scope(|scope| {
        let bystander = scope.spawn(|| bystander_round_trips(addr, &stop));
        let guessers: Vec<_> = (0..50u8)
            .map(|i| {
                let stop = &stop;
                scope.spawn(move || {
                    let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + i);
                    let mut statuses = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let stream = connect_from(from, addr, None);
                        let mut client = RawClient::from_stream(stream);
                        client.send_raw(
                            format!(
                                "GET /api/security/ticket HTTP/1.1\r\nHost: 127.0.0.1\r\n{}\r\n",
                                basic("alice", &format!("guess{i}"))
                            )
                            .as_bytes(),
                        );
                        statuses.push(client.read_response_head().0);
                    }
                    statuses
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let statuses: Vec<u16> = guessers
            .into_iter()
            .flat_map(|g| g.join().unwrap())
            .collect();
        (bystander.join().unwrap(), statuses)
    });
    let (p99, max) = (quantile(&times, 0.99), quantile(&times, 1.0));
    eprintln!(
        "{} round trips: p50 {:?} p99 {p99:?} max {max:?}; {} guesses answered",
        times.len(),
        quantile(&times, 0.5),
        statuses.len()
    );
    assert!(
        statuses.iter().all(|s| [401, 429, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&401), "some guesses were really checked");
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(max < Duration::from_millis(500), "max {max:?}");
    // The right password works once the checks queued by the flood are
    // done (until then: 503 and Retry-After).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match upgrade_status(&server, "/ws", &basic("alice", "s3cret")) {
            101 => break,
            503 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            other => panic!("the right password got {other}"),
        }
    }
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unknown_user_is_refused_as_slowly_as_a_wrong_password() {
    // Answering an unknown user at once told which names exist.
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("enumeration", |c| {
        c.users = vec![User::new("alice", &hash, vec![]).unwrap()]
    });
    let timed = |user: &str, from: u8| {
        let mut times: Vec<std::time::Duration> = (0..3)
            .map(|_| {
                let stream =
                    connect_from(std::net::Ipv4Addr::new(127, 0, 1, from), server.addr, None);
                let mut client = RawClient::from_stream(stream);
                let started = Instant::now();
                client.send_raw(upgrade_request("/ws", &basic(user, "guess")).as_bytes());
                assert_eq!(client.read_response_head().0, 401);
                started.elapsed()
            })
            .collect();
        times.sort();
        times[1]
    };
    let known = timed("alice", 1);
    let unknown = timed("mallory", 2);
    eprintln!("401 for a wrong password: {known:?}, for an unknown user: {unknown:?}");
    assert!(unknown * 4 > known, "known {known:?}, unknown {unknown:?}");
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Runs `wsloop --config FILE` with `contents`; returns (exit code, stderr).
/// A server that starts anyway (the configuration was not refused) is
/// killed after a few seconds and reported, rather than left to run.
fn run_with_config(name: &str, contents: &str) -> (Option<i32>, String) {
    let path =
        std::env::temp_dir().join(format!("wsloop-config-{name}-{}.toml", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--config", path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            std::fs::remove_file(&path).unwrap();
            panic!("{name}: wsloop started with this configuration instead of refusing it");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    std::fs::remove_file(&path).unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_config_files_stop_start_up_naming_the_key() {
    let cases = [
        (
            "unknown",
            "[limits]\nmax_frame_sise = 10\n",
            "max_frame_sise",
        ),
        (
            "duration",
            "[limits]\nping_interval = \"often\"\n",
            "limits.ping_interval",
        ),
        ("type", "[limits]\nmax_connections = \"many\"\n", "line 2"),
        ("syntax", "listen = \"127.0.0.1:1\n", "line 1"),
        (
            "hash",
            "[[security.users]]\nname = \"bob\"\npassword_hash = \"hunter2\"\n",
            "security.users[0].password_hash",
        ),
        ("origins", "[security]\nallowed_origins = \"*\"\n", "line 2"),
        (
            "interpreter",
            "[notebook]\ndefault_interpreter = \"scala\"\n",
            "notebook.default_interpreter",
        ),
    ];
    for (name, contents, key) in cases {
        let (code, stderr) = run_with_config(name, contents);
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("invalid configuration") && stderr.contains(key),
            "{name}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--config", "/nonexistent/wsloop.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn hash_password_output_works_in_a_config_file_and_the_command_line_wins() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"open sesame\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let hash = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");

    let dir = temp_dir("configured");
    let config = dir.with_extension("toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:1\"\n[notebook]\ndir = \"{}\"\n[security]\nanonymous = false\n[[security.users]]\nname = \"ops\"\npassword_hash = \"{hash}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    // --listen (added by the helper) overrides the file's unusable port 1.
    let server = Wsloop::start("", &["--config", config.to_str().unwrap()]);
    let status = |headers: &str| {
        let mut client = RawClient::connect(server.addr);
        client.send_raw(upgrade_request("/ws", headers).as_bytes());
        client.read_response_head().0
    };
    assert_eq!(status(""), 401);
    assert_eq!(status(&basic("ops", "open sesame")), 101);
    assert_eq!(status(&basic("ops", "closed sesame")), 401);
    drop(server);
    std::fs::remove_file(config).unwrap();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn repeated_wrong_passwords_are_throttled_without_running_argon2() {
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("throttle", |c| {
        c.users = vec![User::new("alice", &hash, vec![]).unwrap()]
    });
    for _ in 0..5 {
        assert_eq!(
            upgrade_status(&server, "/ws", &basic("alice", "guess")),
            401
        );
    }
    // From now on even the right password is refused for a while.
    let mut client = RawClient::connect(server.addr);
    client.send_raw(upgrade_request("/ws", &basic("alice", "s3cret")).as_bytes());
    let (status, head, body) = client.read_response();
    assert_eq!(status, 429, "{body}");
    assert_eq!(header(&head, "Retry-After"), Some("60"));
    assert_eq!(
        get(
            &server,
            "GET",
            "/api/security/ticket",
            &basic("alice", "s3cret")
        )
        .0,
        429
    );
    // Requests without a password are not affected.
    assert_eq!(upgrade_status(&server, "/ws", ""), 101);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Logs `user` in with Basic credentials; returns the ticket.
fn log_in(server: &TestServer, user: &str, password: &str) -> String {
    let (status, _, body) = get(
        server,
        "GET",
        "/api/security/ticket",
        &basic(user, password),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["body"]["ticket"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A connection to `/ws` authenticated by `ticket`.
fn open_with_ticket(server: &TestServer, user: &str, ticket: &str) -> JsonClient {
    let mut raw = RawClient::connect(server.addr);
    raw.send_raw(upgrade_request(&format!("/ws?principal={user}&ticket={ticket}"), "").as_bytes());
    assert_eq!(raw.read_response_head().0, 101);
    JsonClient { raw }
}

fn list_notes(client: &mut JsonClient, user: &str, ticket: &str) -> String {
    client
        .send_text(&json!({ "op": "LIST_NOTES", "principal": user, "ticket": ticket }).to_string());
    client.recv()["op"].as_str().unwrap().to_owned()
}

#[test]
fn logout_ends_the_session_its_cookie_names_and_no_other() {
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("logout", |c| {
        c.users = vec![User::new("alice", &hash, vec!["admin".into()]).unwrap()]
    });
    let ended = log_in(&server, "alice", "s3cret");
    let other = log_in(&server, "alice", "s3cret");
    let mut ended_tab = open_with_ticket(&server, "alice", &ended);
    let mut other_tab = open_with_ticket(&server, "alice", &other);
    assert_eq!(list_notes(&mut ended_tab, "alice", &ended), "NOTES_INFO");

    let cookie = format!("Cookie: wsloop_ticket={ended}\r\n");
    assert_eq!(get(&server, "GET", "/api/login/logout", &cookie).0, 405);
    let (status, head, body) = get(
        &server,
        "POST",
        "/api/login/logout",
        &format!("{cookie}Content-Length: 0\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["body"]["loggedOut"], true);
    assert_eq!(
        header(&head, "Set-Cookie"),
        Some("wsloop_ticket=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    );

    // The open connection's next op is told to log in again; the ticket
    // opens nothing and names no session any more.
    assert_eq!(
        list_notes(&mut ended_tab, "alice", &ended),
        "SESSION_LOGOUT"
    );
    assert_eq!(
        upgrade_status(&server, &format!("/ws?principal=alice&ticket={ended}"), ""),
        401
    );
    let (_, _, anonymous) = get(&server, "GET", "/api/security/ticket", &cookie);
    let anonymous: Value = serde_json::from_str(&anonymous).unwrap();
    assert_eq!(anonymous["body"]["principal"], "anonymous");
    // Logging out twice is harmless, and says nothing was ended.
    let (status, _, again) = get(&server, "POST", "/api/login/logout", &cookie);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&again).unwrap()["body"]["loggedOut"],
        false
    );
    // The other login goes on.
    assert_eq!(list_notes(&mut other_tab, "alice", &other), "NOTES_INFO");
    // A page from another origin cannot log anyone out.
    let (status, _, _) = get(
        &server,
        "POST",
        "/api/login/logout",
        &format!("Cookie: wsloop_ticket={other}\r\nOrigin: https://evil.example\r\n"),
    );
    assert_eq!(status, 403);
    assert_eq!(list_notes(&mut other_tab, "alice", &other), "NOTES_INFO");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_ticket_unused_for_the_idle_timeout_expires() {
    let hash = hash_password("s3cret").unwrap();
    let (server, dir) = start("idle-ticket", |c| {
        c.users = vec![User::new("alice", &hash, vec!["admin".into()]).unwrap()];
        c.ticket_idle_timeout = Duration::from_millis(600);
    });
    let busy = log_in(&server, "alice", "s3cret");
    let idle = log_in(&server, "alice", "s3cret");
    let mut busy_tab = open_with_ticket(&server, "alice", &busy);
    let mut idle_tab = open_with_ticket(&server, "alice", &idle);
    // Used every 200 ms for a second: stays valid past the timeout.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(list_notes(&mut busy_tab, "alice", &busy), "NOTES_INFO");
    }
    assert_eq!(list_notes(&mut idle_tab, "alice", &idle), "SESSION_LOGOUT");
    std::fs::remove_dir_all(dir).unwrap();
}
