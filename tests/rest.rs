//! Zeppelin's REST API over plain HTTP on 127.0.0.1: the endpoints its web
//! UI calls, the notebook API (notes, paragraphs, jobs) with each error
//! status, and REST changes reaching WebSocket watchers as the ops do.

mod common;

use std::path::PathBuf;

use common::{JsonClient, TestServer, header_value, http_request};
use serde_json::{Value, json};
use wsloop::notebook::access::{User, hash_password};
use wsloop::notebook::{NotebookConfig, NotebookHandler};
use wsloop::{Limits, ServerConfig};

fn start(name: &str, configure: impl FnOnce(&mut NotebookConfig)) -> (TestServer, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wsloop-rest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = NotebookConfig {
        notebook_dir: dir.clone(),
        ..NotebookConfig::default()
    };
    configure(&mut config);
    let server_config = ServerConfig {
        limits: Limits {
            max_request_body: 64 * 1024,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    let handler = NotebookHandler::open(config).unwrap();
    (TestServer::start(server_config, handler), dir)
}

/// A REST call; returns the status and the parsed envelope.
fn call(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, head, reply) = http_request(
        server.addr,
        method,
        path,
        "Content-Type: application/json\r\n",
        body.as_deref().map(str::as_bytes),
    );
    assert_eq!(
        header_value(&head, "content-type"),
        Some("application/json"),
        "{head}"
    );
    (
        status,
        serde_json::from_slice(&reply).expect("a JSON envelope"),
    )
}

/// `call` that must answer 200; returns the envelope's body.
fn ok(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Value {
    let (status, reply) = call(server, method, path, body);
    assert_eq!(status, 200, "{method} {path}: {reply}");
    assert_eq!(reply["status"], "OK");
    reply["body"].clone()
}

/// A WebSocket client bound to note `id`.
fn watcher(server: &TestServer, id: &str) -> JsonClient {
    let mut client = JsonClient::open(server.addr);
    client.send_op("GET_NOTE", json!({ "id": id }));
    client.expect("NOTE");
    client
}

/// The next message with op `op`, skipping others (NOTES_INFO and the
/// like that a change also causes).
fn next(client: &mut JsonClient, op: &str) -> Value {
    for _ in 0..20 {
        let message = client.recv();
        if message["op"] == op {
            return message["data"].clone();
        }
    }
    panic!("no {op}");
}

#[test]
fn the_endpoints_zeppelins_ui_calls() {
    let (server, dir) = start("ui", |_| {});
    let version = ok(&server, "GET", "/api/version", None);
    assert!(version["version"].as_str().unwrap().starts_with("0."));
    let (status, ticket) = call(&server, "GET", "/api/security/ticket", None);
    assert_eq!(status, 200);
    assert_eq!(ticket["message"], "");
    assert_eq!(ticket["body"]["principal"], "anonymous");
    assert_eq!(
        ok(&server, "GET", "/api/helium/enabledPackage", None),
        json!([])
    );
    assert_eq!(
        ok(&server, "GET", "/api/notebook/capabilities", None),
        json!({ "isRevisionSupported": false })
    );
    for path in ["/api/configurations/client", "/api/configurations/all"] {
        let configurations = ok(&server, "GET", path, None);
        assert_eq!(
            configurations["zeppelin.websocket.max.text.message.size"],
            "10240000"
        );
    }
    let settings = ok(&server, "GET", "/api/interpreter/setting", None);
    let names: Vec<&str> = settings
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"md") && names.contains(&"sql"), "{names:?}");
    assert_eq!(
        settings[0]["interpreterGroup"][0]["defaultInterpreter"],
        true
    );
    assert!(ok(&server, "GET", "/api/interpreter", None)["sql"].is_object());
    assert_eq!(
        ok(&server, "PUT", "/api/interpreter/setting/restart/sql", None)["name"],
        "sql"
    );
    let (status, reply) = call(
        &server,
        "PUT",
        "/api/interpreter/setting/restart/nope",
        None,
    );
    assert_eq!((status, reply["status"].as_str()), (404, Some("NOT_FOUND")));
    assert_eq!(
        ok(&server, "GET", "/api/security/userlist/al", None),
        json!({ "users": [], "roles": [] })
    );
    let (status, reply) = call(&server, "GET", "/api/nothing/here", None);
    assert_eq!((status, reply["status"].as_str()), (404, Some("NOT_FOUND")));
    // Permissions of a note: readable, not settable (and never a 405).
    let id = ok(
        &server,
        "POST",
        "/api/notebook",
        Some(json!({ "name": "p" })),
    );
    let id = id.as_str().unwrap();
    let permissions = ok(
        &server,
        "GET",
        &format!("/api/notebook/{id}/permissions"),
        None,
    );
    assert_eq!(permissions["owners"], json!([]));
    let (status, _) = call(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/permissions"),
        Some(json!({})),
    );
    assert_eq!(status, 403);
    let (status, _) = call(&server, "GET", "/api/notebook/NOPE/permissions", None);
    assert_eq!(status, 404);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn login_form_and_xhr_refusals() {
    let hash = hash_password("secret").unwrap();
    let (server, dir) = start("login", |config| {
        config.anonymous_allowed = false;
        config.users = vec![User::new("alice", &hash, vec!["admin".into()]).unwrap()];
    });
    let form = |body: &str| {
        http_request(
            server.addr,
            "POST",
            "/api/login",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            Some(body.as_bytes()),
        )
    };
    let (status, head, body) = form("userName=alice&password=secret");
    assert_eq!(status, 200, "{head}");
    let reply: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["body"]["principal"], "alice");
    let ticket = reply["body"]["ticket"].as_str().unwrap().to_owned();
    assert!(header_value(&head, "set-cookie").unwrap().contains(&ticket));
    let (status, _, _) = form("userName=alice&password=wrong");
    assert_eq!(status, 403);
    let (status, _, _) = form("nothing=here");
    assert_eq!(status, 400);
    // Without credentials: 401, with a Basic prompt only for non-XHR.
    let (status, head, _) = http_request(
        server.addr,
        "GET",
        "/api/version",
        "X-Requested-With: XMLHttpRequest\r\n",
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(header_value(&head, "www-authenticate"), None);
    let (status, head, _) = http_request(
        server.addr,
        "GET",
        "/api/security/ticket",
        "X-Requested-With: XMLHttpRequest\r\n",
        None,
    );
    assert_eq!(status, 401);
    assert_eq!(header_value(&head, "www-authenticate"), None);
    let (status, head, _) = http_request(server.addr, "GET", "/api/security/ticket", "", None);
    assert_eq!(status, 401);
    assert!(header_value(&head, "www-authenticate").is_some());
    // The ticket cookie identifies REST calls.
    let cookie = format!("Cookie: wsloop_ticket={ticket}\r\n");
    let (status, _, _) = http_request(server.addr, "GET", "/api/notebook", &cookie, None);
    assert_eq!(status, 200);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn notes_are_created_listed_renamed_cloned_exported_imported_and_deleted() {
    let (server, dir) = start("notes", |_| {});
    let body = json!({
        "name": "/reports/daily",
        "paragraphs": [{ "title": "one", "text": "%md # One" }, { "text": "%sql select 1" }]
    });
    let id = ok(&server, "POST", "/api/notebook", Some(body));
    let id = id.as_str().unwrap().to_owned();
    let note = ok(&server, "GET", &format!("/api/notebook/{id}"), None);
    assert_eq!(note["path"], "/reports/daily");
    assert_eq!(note["paragraphs"][0]["title"], "one");
    assert_eq!(note["paragraphs"][1]["text"], "%sql select 1");
    let list = ok(&server, "GET", "/api/notebook", None);
    assert_eq!(list, json!([{ "id": id, "path": "/reports/daily" }]));

    // A rename reaches a watcher as the op's NOTE does.
    let mut watcher = watcher(&server, &id);
    ok(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/rename"),
        Some(json!({ "name": "/reports/weekly" })),
    );
    assert_eq!(
        next(&mut watcher, "NOTE")["note"]["path"],
        "/reports/weekly"
    );

    let clone = ok(
        &server,
        "POST",
        &format!("/api/notebook/{id}"),
        Some(json!({ "name": "copy" })),
    );
    let clone = clone.as_str().unwrap().to_owned();
    let cloned = ok(&server, "GET", &format!("/api/notebook/{clone}"), None);
    assert_eq!(cloned["path"], "/copy");
    assert_eq!(cloned["paragraphs"][0]["text"], "%md # One");
    assert_ne!(cloned["paragraphs"][0]["id"], note["paragraphs"][0]["id"]);

    let exported = ok(&server, "GET", &format!("/api/notebook/export/{id}"), None);
    let mut exported: Value = serde_json::from_str(exported.as_str().unwrap()).unwrap();
    exported["name"] = json!("imported");
    exported["path"] = json!("/imported");
    let imported = ok(&server, "POST", "/api/notebook/import", Some(exported));
    let imported = ok(
        &server,
        "GET",
        &format!("/api/notebook/{}", imported.as_str().unwrap()),
        None,
    );
    assert_eq!(imported["path"], "/imported");
    assert_eq!(imported["paragraphs"][1]["text"], "%sql select 1");

    ok(&server, "DELETE", &format!("/api/notebook/{clone}"), None);
    let (status, reply) = call(&server, "GET", &format!("/api/notebook/{clone}"), None);
    assert_eq!((status, reply["status"].as_str()), (404, Some("NOT_FOUND")));

    // Errors: unknown note, malformed JSON, wrong types, duplicates, size.
    for (method, path) in [
        ("DELETE", "/api/notebook/NOPE"),
        ("PUT", "/api/notebook/NOPE/rename"),
        ("POST", "/api/notebook/NOPE"),
        ("GET", "/api/notebook/export/NOPE"),
    ] {
        let (status, _) = call(&server, method, path, Some(json!({ "name": "x" })));
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, head, body) =
        http_request(server.addr, "POST", "/api/notebook", "", Some(b"{not json"));
    assert_eq!(status, 400, "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "BAD_REQUEST"
    );
    let (status, _) = call(&server, "POST", "/api/notebook", Some(json!({ "name": 7 })));
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        "POST",
        "/api/notebook",
        Some(json!({ "paragraphs": "x" })),
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        "POST",
        "/api/notebook",
        Some(json!({ "name": "/../x" })),
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        "POST",
        "/api/notebook",
        Some(json!({ "name": "/reports/weekly" })),
    );
    assert_eq!(status, 409);
    let (status, _) = call(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/rename"),
        Some(json!({})),
    );
    assert_eq!(status, 400);
    let (status, _, _) = http_request(
        server.addr,
        "POST",
        "/api/notebook",
        "",
        Some(&vec![b' '; 65 * 1024]),
    );
    assert_eq!(status, 413);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn paragraphs_over_rest_reach_watchers() {
    let (server, dir) = start("paragraphs", |_| {});
    let id = ok(
        &server,
        "POST",
        "/api/notebook",
        Some(json!({ "name": "n", "paragraphs": [] })),
    );
    let id = id.as_str().unwrap().to_owned();
    let mut watcher = watcher(&server, &id);

    let first = ok(
        &server,
        "POST",
        &format!("/api/notebook/{id}/paragraph"),
        Some(json!({ "title": "t", "text": "%md a" })),
    );
    let first = first.as_str().unwrap().to_owned();
    let added = next(&mut watcher, "PARAGRAPH_ADDED");
    assert_eq!(
        (added["index"].as_u64(), added["paragraph"]["id"].as_str()),
        (Some(0), Some(first.as_str()))
    );
    let second = ok(
        &server,
        "POST",
        &format!("/api/notebook/{id}/paragraph"),
        Some(json!({ "text": "%md b", "index": 0 })),
    );
    let second = second.as_str().unwrap().to_owned();
    assert_eq!(next(&mut watcher, "PARAGRAPH_ADDED")["index"], 0);

    let paragraph = ok(
        &server,
        "GET",
        &format!("/api/notebook/{id}/paragraph/{first}"),
        None,
    );
    assert_eq!(
        (paragraph["text"].as_str(), paragraph["title"].as_str()),
        (Some("%md a"), Some("t"))
    );

    ok(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/paragraph/{first}"),
        Some(json!({ "text": "%md changed" })),
    );
    assert_eq!(
        next(&mut watcher, "PARAGRAPH")["paragraph"]["text"],
        "%md changed"
    );
    let config = ok(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/paragraph/{first}/config"),
        Some(json!({ "colWidth": 6 })),
    );
    assert_eq!(config["config"]["colWidth"], 6);
    next(&mut watcher, "PARAGRAPH");

    ok(
        &server,
        "POST",
        &format!("/api/notebook/{id}/paragraph/{second}/move/1"),
        None,
    );
    assert_eq!(
        next(&mut watcher, "PARAGRAPH_MOVED"),
        json!({ "id": second, "index": 1 })
    );
    let note = ok(&server, "GET", &format!("/api/notebook/{id}"), None);
    assert_eq!(note["paragraphs"][1]["id"], second.as_str());

    ok(
        &server,
        "DELETE",
        &format!("/api/notebook/{id}/paragraph/{second}"),
        None,
    );
    assert_eq!(
        next(&mut watcher, "PARAGRAPH_REMOVED")["id"],
        second.as_str()
    );

    for (method, path) in [
        ("GET", format!("/api/notebook/{id}/paragraph/NOPE")),
        ("PUT", format!("/api/notebook/{id}/paragraph/NOPE")),
        ("DELETE", format!("/api/notebook/{id}/paragraph/NOPE")),
        ("POST", format!("/api/notebook/{id}/paragraph/NOPE/move/0")),
        ("POST", "/api/notebook/NOPE/paragraph".to_owned()),
        ("GET", format!("/api/notebook/job/{id}/NOPE")),
        ("POST", format!("/api/notebook/run/{id}/NOPE")),
    ] {
        let (status, _) = call(&server, method, &path, Some(json!({})));
        assert_eq!(status, 404, "{method} {path}");
    }
    let (status, _) = call(
        &server,
        "POST",
        &format!("/api/notebook/{id}/paragraph/{first}/move/x"),
        None,
    );
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/paragraph/{first}"),
        Some(json!({ "text": [1] })),
    );
    assert_eq!(status, 400);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn runs_over_rest_synchronous_asynchronous_and_all() {
    let (server, dir) = start("jobs", |_| {});
    let body = json!({ "name": "jobs", "paragraphs": [{ "text": "%md **bold**" }, { "text": "%sql select 1+1 as two" }] });
    let id = ok(&server, "POST", "/api/notebook", Some(body));
    let id = id.as_str().unwrap().to_owned();
    let note = ok(&server, "GET", &format!("/api/notebook/{id}"), None);
    let md = note["paragraphs"][0]["id"].as_str().unwrap().to_owned();
    let sql = note["paragraphs"][1]["id"].as_str().unwrap().to_owned();
    let mut watcher = watcher(&server, &id);

    // Synchronous: the answer is the result; the watcher saw the run.
    let result = ok(
        &server,
        "POST",
        &format!("/api/notebook/run/{id}/{sql}"),
        None,
    );
    assert_eq!(result["code"], "SUCCESS");
    assert_eq!(result["msg"][0]["type"], "TABLE");
    assert_eq!(result["msg"][0]["data"], "two\n2");
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("FINISHED") {
        let paragraph = next(&mut watcher, "PARAGRAPH");
        seen.push(
            paragraph["paragraph"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(seen, ["PENDING", "RUNNING", "FINISHED"]);

    // Asynchronous, then its status.
    ok(
        &server,
        "POST",
        &format!("/api/notebook/job/{id}/{md}"),
        None,
    );
    while next(&mut watcher, "PARAGRAPH")["paragraph"]["status"] != "FINISHED" {}
    let status = ok(
        &server,
        "GET",
        &format!("/api/notebook/job/{id}/{md}"),
        None,
    );
    assert_eq!(
        (status["status"].as_str(), status["progress"].as_str()),
        (Some("FINISHED"), Some("100"))
    );
    assert!(status["started"].is_string() && status["finished"].is_string());

    // All of them, then the note's status in Zeppelin's shape.
    ok(&server, "PUT", &format!("/api/notebook/{id}/clear"), None);
    next(&mut watcher, "NOTE");
    ok(&server, "POST", &format!("/api/notebook/job/{id}"), None);
    let mut finished = 0;
    while finished < 2 {
        if next(&mut watcher, "PARAGRAPH")["paragraph"]["status"] == "FINISHED" {
            finished += 1;
        }
    }
    let all = ok(&server, "GET", &format!("/api/notebook/job/{id}"), None);
    assert_eq!(all["isRunning"], false);
    let statuses: Vec<&str> = all["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["FINISHED", "FINISHED"]);

    // A synchronous run that fails answers 500 with its error.
    ok(
        &server,
        "PUT",
        &format!("/api/notebook/{id}/paragraph/{sql}"),
        Some(json!({ "text": "%sql select nope" })),
    );
    let (status, reply) = call(
        &server,
        "POST",
        &format!("/api/notebook/run/{id}/{sql}"),
        None,
    );
    assert_eq!(status, 500, "{reply}");
    assert_eq!(reply["body"]["code"], "ERROR");

    // Stopping what does not run is fine; unknown notes are 404.
    ok(&server, "DELETE", &format!("/api/notebook/job/{id}"), None);
    ok(
        &server,
        "DELETE",
        &format!("/api/notebook/job/{id}/{md}"),
        None,
    );
    for method in ["GET", "POST", "DELETE"] {
        let (status, _) = call(&server, method, "/api/notebook/job/NOPE", None);
        assert_eq!(status, 404, "{method}");
    }
    let (status, _) = call(
        &server,
        "POST",
        &format!("/api/notebook/job/{id}/{md}"),
        Some(json!({ "params": 3 })),
    );
    assert_eq!(status, 400);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn search_finds_note_names_and_paragraph_text() {
    let (server, dir) = start("search", |_| {});
    let body = json!({ "name": "/Sales/Q3", "paragraphs": [{ "text": "%sql select revenue from orders" }] });
    let id = ok(&server, "POST", "/api/notebook", Some(body));
    let id = id.as_str().unwrap();
    let hits = ok(&server, "GET", "/api/notebook/search?q=REVENUE", None);
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
    assert!(
        hits[0]["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{id}/paragraph/"))
    );
    assert_eq!(hits[0]["snippet"], "%sql select revenue from orders");
    let hits = ok(&server, "GET", "/api/notebook/search?q=q3", None);
    assert_eq!(hits[0]["id"], id);
    assert_eq!(
        ok(
            &server,
            "GET",
            "/api/notebook/search?q=absent%20words",
            None
        ),
        json!([])
    );
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
