//! The notebook application over real WebSocket connections: the seed
//! exchange replayed exactly, every op with its reply and audience,
//! interpreters, persistence, rearranging (NOTE_RENAME, MOVE_PARAGRAPH),
//! and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{JsonClient, RawClient, TestServer};
use serde_json::{Value, json};
use wsloop::notebook::access::{User, hash_password};
use wsloop::notebook::{NotebookConfig, NotebookHandler};
use wsloop::{Limits, ServerConfig};

const SEED_LIST_CONFIGURATIONS: &str = include_str!("fixtures/seed_list_configurations.json");
const SEED_PING: &str = include_str!("fixtures/seed_ping.json");
const SEED_RUN_PARAGRAPH: &str = include_str!("fixtures/seed_run_paragraph.json");
const SEED_PARAGRAPH_ID: &str = "20190226-165409_698627529";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-notebook-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start_with(dir: &Path, notebook: NotebookConfig, server: ServerConfig) -> TestServer {
    let handler = NotebookHandler::open(NotebookConfig {
        notebook_dir: dir.to_path_buf(),
        ..notebook
    })
    .expect("open notebook");
    TestServer::start(server, handler)
}

fn start(dir: &Path) -> TestServer {
    start_with(dir, NotebookConfig::default(), ServerConfig::default())
}

/// Reads the PARAGRAPH updates of one run: PENDING, RUNNING, then the end.
fn run_updates(client: &mut JsonClient) -> Vec<Value> {
    let mut updates = Vec::new();
    loop {
        let data = client.expect("PARAGRAPH");
        let status = data["paragraph"]["status"].as_str().unwrap().to_owned();
        updates.push(data["paragraph"].clone());
        if !matches!(status.as_str(), "PENDING" | "RUNNING") {
            return updates;
        }
    }
}

fn statuses(updates: &[Value]) -> Vec<&str> {
    updates
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect()
}

#[test]
fn seed_exchange_replays_exactly_on_a_fresh_server() {
    let dir = temp_dir("seed");
    let server = start(&dir);
    // The browser's upgrade request from the capture, absolute-form target,
    // Origin and deflate offer included.
    let mut raw = RawClient::connect(server.addr);
    raw.send_raw(
        b"GET ws://10.96.111.130:8081/ws HTTP/1.1\r\nHost: 10.96.111.130:8081\r\nConnection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\nUpgrade: websocket\r\nOrigin: http://10.96.111.130:8081\r\nSec-WebSocket-Version: 13\r\nUser-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_12_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/72.0.3626.109 Safari/537.36\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: zh-CN,zh;q=0.9,en;q=0.8\r\nSec-WebSocket-Key: zDZ/E2myeYgoGbO1hLHQWw==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
    );
    let (status, head, _) = raw.read_response_head();
    assert_eq!(status, 101);
    assert!(
        head.contains("Sec-WebSocket-Accept: 51sbFernckDhcYaHbpe542qK848=\r\n"),
        "{head}"
    );
    let mut client = JsonClient { raw };

    client.send_text(SEED_LIST_CONFIGURATIONS);
    let data = client.expect("CONFIGURATIONS_INFO");
    assert_eq!(
        data["configurations"]["zeppelin.websocket.max.text.message.size"],
        "10240000"
    );
    assert!(
        data["configurations"]
            .as_object()
            .unwrap()
            .values()
            .all(Value::is_string)
    );

    client.send_text(SEED_PING);
    client.expect_silence();

    client.send_text(SEED_RUN_PARAGRAPH);
    // On a fresh server the paragraph lands in the scratch note, created
    // now: every connection hears of the new note first.
    let notes = client.expect("NOTES_INFO")["notes"].clone();
    assert_eq!(notes.as_array().unwrap().len(), 1, "{notes}");
    assert_eq!(notes[0]["path"], "/scratch");
    let updates = run_updates(&mut client);
    assert_eq!(statuses(&updates), ["PENDING", "RUNNING", "FINISHED"]);
    assert!(
        updates[0].get("results").is_none(),
        "PENDING has no results"
    );
    let finished = &updates[2];
    assert_eq!(finished["id"], SEED_PARAGRAPH_ID);
    assert_eq!(finished["text"], "sc.version\n");
    assert_eq!(finished["config"]["editorMode"], "ace/mode/scala");
    assert_eq!(finished["results"]["code"], "SUCCESS");
    assert_eq!(finished["results"]["msg"][0]["type"], "HTML");
    assert!(
        finished["results"]["msg"][0]["data"]
            .as_str()
            .unwrap()
            .contains("sc.version")
    );
    for date in ["dateCreated", "dateUpdated", "dateStarted", "dateFinished"] {
        let value = finished[date].as_str().unwrap();
        assert_eq!(
            value.len(),
            "2019-03-08T16:57:41+0800".len(),
            "{date}: {value}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn note_lifecycle_with_every_reply_and_audience() {
    let dir = temp_dir("lifecycle");
    let server = start(&dir);
    let mut alice = JsonClient::open(server.addr);
    let mut bob = JsonClient::open(server.addr);

    alice.send_op("LIST_NOTES", json!({}));
    assert_eq!(alice.expect("NOTES_INFO")["notes"], json!([]));

    alice.send_op("NEW_NOTE", json!({ "name": "reports/Daily" }));
    let note = alice.expect("NEW_NOTE")["note"].clone();
    let note_id = note["id"].as_str().unwrap().to_owned();
    assert_eq!(note["path"], "/reports/Daily");
    assert_eq!(note["name"], "Daily");
    assert_eq!(note["paragraphs"].as_array().unwrap().len(), 1);
    let expected_list = json!([{ "id": note_id, "path": "/reports/Daily" }]);
    assert_eq!(alice.expect("NOTES_INFO")["notes"], expected_list);
    assert_eq!(
        bob.expect("NOTES_INFO")["notes"],
        expected_list,
        "NOTES_INFO goes to everyone"
    );
    assert!(dir.join(format!("reports/Daily_{note_id}.zpln")).is_file());

    bob.send_op("GET_NOTE", json!({ "id": note_id }));
    assert_eq!(bob.expect("NOTE")["note"]["id"], note_id);

    alice.send_text(
        &json!({
            "op": "INSERT_PARAGRAPH", "data": { "index": 1 }, "msgId": "m-1",
            "principal": "anonymous", "ticket": "anonymous", "roles": "[]",
        })
        .to_string(),
    );
    for client in [&mut alice, &mut bob] {
        let message = client.recv();
        assert_eq!(message["op"], "PARAGRAPH_ADDED");
        assert_eq!(message["data"]["index"], 1);
        assert_eq!(message["msgId"], "m-1", "msgId echoed");
    }

    let first_id = note["paragraphs"][0]["id"].as_str().unwrap().to_owned();
    alice.send_op(
        "COMMIT_PARAGRAPH",
        json!({ "id": first_id, "title": "Intro", "paragraph": "%md **hi**", "config": { "colWidth": 6 }, "params": {} }),
    );
    for client in [&mut alice, &mut bob] {
        let paragraph = client.expect("PARAGRAPH")["paragraph"].clone();
        assert_eq!(
            (paragraph["text"].as_str(), paragraph["title"].as_str()),
            (Some("%md **hi**"), Some("Intro"))
        );
        assert_eq!(paragraph["config"]["colWidth"], 6);
        assert_eq!(paragraph["status"], "READY");
    }

    alice.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": first_id, "paragraph": "%md **hi**" }),
    );
    let updates = run_updates(&mut alice);
    assert_eq!(statuses(&updates), ["PENDING", "RUNNING", "FINISHED"]);
    assert!(
        updates[2]["results"]["msg"][0]["data"]
            .as_str()
            .unwrap()
            .contains("<strong>hi</strong>")
    );
    assert_eq!(
        statuses(&run_updates(&mut bob)),
        ["PENDING", "RUNNING", "FINISHED"]
    );

    // A connection bound to no note finds the note by the paragraph id.
    let mut carol = JsonClient::open(server.addr);
    carol.send_op(
        "COMMIT_PARAGRAPH",
        json!({ "id": first_id, "paragraph": "%md **hi** again" }),
    );
    for client in [&mut carol, &mut alice, &mut bob] {
        let paragraph = client.expect("PARAGRAPH")["paragraph"].clone();
        assert_eq!(paragraph["text"], "%md **hi** again");
    }

    // A blank paragraph goes PENDING, then FINISHED with no results.
    alice.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": first_id, "paragraph": "  \n" }),
    );
    for client in [&mut alice, &mut bob] {
        let updates = run_updates(client);
        assert_eq!(statuses(&updates), ["PENDING", "FINISHED"]);
        assert!(updates[1].get("results").is_none(), "{}", updates[1]);
    }

    let second = alice_note_paragraph(&mut alice, &note_id, 1);
    alice.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": second, "paragraph": "%sql select 1+1 as two" }),
    );
    let updates = run_updates(&mut alice);
    assert_eq!(statuses(&updates), ["PENDING", "RUNNING", "FINISHED"]);
    assert_eq!(
        updates[2]["results"]["msg"][0],
        json!({ "type": "TABLE", "data": "two\n2" })
    );
    run_updates(&mut bob);

    alice.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": second, "paragraph": "%nosuch print(1)" }),
    );
    let updates = run_updates(&mut alice);
    assert_eq!(statuses(&updates).last(), Some(&"ERROR"));
    assert_eq!(
        updates.last().unwrap()["results"]["msg"][0],
        json!({ "type": "TEXT", "data": "Interpreter name not found" })
    );
    run_updates(&mut bob);

    alice.send_op("PARAGRAPH_REMOVE", json!({ "id": second }));
    assert_eq!(alice.expect("PARAGRAPH_REMOVED")["id"], second);
    assert_eq!(bob.expect("PARAGRAPH_REMOVED")["id"], second);

    alice.send_op("GET_INTERPRETER_BINDINGS", json!({ "noteId": note_id }));
    let bindings = alice.expect("INTERPRETER_BINDINGS")["interpreterBindings"].clone();
    let names: Vec<&str> = bindings
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    // Groups, as Zeppelin lists them (this machine has python3 and bash).
    assert_eq!(names, ["md", "sql", "python", "sh", "spark"]);
    let spark = &bindings[4]["interpreters"];
    assert_eq!(spark[1]["name"], "sql", "{spark}");
    assert_eq!(spark[2]["name"], "pyspark", "{spark}");

    alice.send_op(
        "EDITOR_SETTING",
        json!({ "paragraphId": first_id, "paragraphText": "%sql select" }),
    );
    let setting = alice.expect("EDITOR_SETTING");
    assert_eq!(setting["paragraphId"], first_id);
    assert_eq!(
        setting["editor"],
        json!({ "language": "sql", "editOnDblClick": false, "completionSupport": true })
    );
    alice.send_op(
        "EDITOR_SETTING",
        json!({ "paragraphId": first_id, "paragraphText": "%md.md # Title" }),
    );
    assert_eq!(
        alice.expect("EDITOR_SETTING")["editor"],
        json!({ "language": "markdown", "editOnDblClick": true, "completionSupport": false })
    );

    alice.send_op("GET_HOME_NOTE", json!({}));
    assert_eq!(alice.expect("NOTE")["note"], Value::Null);

    bob.send_op("DEL_NOTE", json!({ "id": note_id }));
    assert_eq!(bob.expect("NOTES_INFO")["notes"], json!([]));
    assert_eq!(alice.expect("NOTES_INFO")["notes"], json!([]));
    assert_eq!(carol.expect("NOTES_INFO")["notes"], json!([]));
    assert!(!dir.join(format!("reports/Daily_{note_id}.zpln")).exists());

    // Its watchers are unbound: a run of a new paragraph lands in the
    // scratch note instead of failing on the deleted one.
    alice.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": "after", "paragraph": "%md x" }),
    );
    let notes = alice.expect("NOTES_INFO")["notes"].clone();
    assert_eq!(notes[0]["path"], "/scratch", "{notes}");
    assert_eq!(
        statuses(&run_updates(&mut alice)),
        ["PENDING", "RUNNING", "FINISHED"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The id of paragraph `index` of a note, via GET_NOTE (which also binds).
fn alice_note_paragraph(client: &mut JsonClient, note_id: &str, index: usize) -> String {
    client.send_op("GET_NOTE", json!({ "id": note_id }));
    client.expect("NOTE")["note"]["paragraphs"][index]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn watchers_of_a_note_see_runs_and_others_do_not() {
    let dir = temp_dir("watchers");
    let server = start(&dir);
    let mut creator = JsonClient::open(server.addr);
    creator.send_op("NEW_NOTE", json!({ "name": "shared" }));
    let note = creator.expect("NEW_NOTE")["note"].clone();
    creator.expect("NOTES_INFO");
    creator.send_op("NEW_NOTE", json!({ "name": "other" }));
    let other = creator.expect("NEW_NOTE")["note"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    creator.expect("NOTES_INFO");

    let note_id = note["id"].as_str().unwrap();
    let paragraph = note["paragraphs"][0]["id"].as_str().unwrap();
    let mut first = JsonClient::open(server.addr);
    let mut second = JsonClient::open(server.addr);
    let mut outsider = JsonClient::open(server.addr);
    for (client, id) in [
        (&mut first, note_id),
        (&mut second, note_id),
        (&mut outsider, other.as_str()),
    ] {
        client.send_op("GET_NOTE", json!({ "id": id }));
        client.expect("NOTE");
    }
    first.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%md shared *run*" }),
    );
    let seen_by_first = run_updates(&mut first);
    let seen_by_second = run_updates(&mut second);
    assert_eq!(statuses(&seen_by_first), ["PENDING", "RUNNING", "FINISHED"]);
    assert_eq!(
        seen_by_first, seen_by_second,
        "the same updates reach every watcher"
    );
    outsider.expect_silence();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_real_zeppelin_note_in_the_directory_is_served() {
    let dir = temp_dir("zeppelin");
    std::fs::create_dir_all(dir.join("reports")).unwrap();
    let original = include_str!("fixtures/zeppelin_note.zpln");
    std::fs::write(dir.join("reports/Sales_2G4K8XQ7M.zpln"), original).unwrap();
    std::fs::write(dir.join("garbage_ABCDEFGHJ.zpln"), "{ this is not json").unwrap();
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    client.send_op("LIST_NOTES", json!({}));
    assert_eq!(
        client.expect("NOTES_INFO")["notes"],
        json!([{ "id": "2G4K8XQ7M", "path": "/reports/Sales" }])
    );
    client.send_op("GET_NOTE", json!({ "id": "2G4K8XQ7M" }));
    let note = client.expect("NOTE")["note"].clone();
    assert_eq!(note["paragraphs"][0]["title"], "Intro");
    assert_eq!(
        note["paragraphs"][0]["dateStarted"],
        "2021-04-12T09:31:02+0000"
    );
    assert_eq!(
        note["paragraphs"][1]["config"]["results"]["0"]["graph"]["mode"],
        "table"
    );

    let sql = note["paragraphs"][1]["id"].as_str().unwrap();
    client.send_op("RUN_PARAGRAPH", json!({ "id": sql }));
    let updates = run_updates(&mut client);
    assert_eq!(
        updates.last().unwrap()["results"]["msg"][0]["data"],
        "one\n1"
    );
    // Saved back in Zeppelin's layout, unknown fields kept; the broken file untouched.
    let saved: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reports/Sales_2G4K8XQ7M.zpln")).unwrap(),
    )
    .unwrap();
    assert_eq!(saved["version"], "0.10.1");
    assert_eq!(saved["paragraphs"][1]["runtimeInfos"], json!({}));
    assert_eq!(saved["paragraphs"][1]["status"], "FINISHED");
    assert_eq!(
        saved["paragraphs"][0]["dateStarted"],
        "2021-04-12 09:31:02.101"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("garbage_ABCDEFGHJ.zpln")).unwrap(),
        "{ this is not json"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gets_a_clear_answer_and_changes_nothing() {
    let dir = temp_dir("bad-input");
    let server = start_with(
        &dir,
        NotebookConfig::default(),
        ServerConfig {
            limits: Limits {
                max_message_size: 64 * 1024,
                ..Limits::default()
            },
            ..ServerConfig::default()
        },
    );
    let mut client = JsonClient::open(server.addr);
    client.send_op("NEW_NOTE", json!({ "name": "keep" }));
    let note = client.expect("NEW_NOTE")["note"].clone();
    client.expect("NOTES_INFO");
    let note_id = note["id"].as_str().unwrap();
    let snapshot = std::fs::read(dir.join(format!("keep_{note_id}.zpln"))).unwrap();

    let cases: Vec<(String, &str)> = vec![
        ("{\"op\":".to_owned(), "malformed JSON"),
        ("[1,2]".to_owned(), "must be a JSON object"),
        ("{\"data\":{}}".to_owned(), "missing \"op\""),
        (json!({ "op": "FLY_TO_MOON" }).to_string(), "unknown op FLY_TO_MOON"),
        (json!({ "op": "GET_NOTE", "data": { "id": 42 } }).to_string(), "data.id must be a string"),
        (json!({ "op": "GET_NOTE", "data": "x" }).to_string(), "\"data\" must be an object"),
        (json!({ "op": "GET_NOTE", "data": { "id": "NOSUCHNOTE" } }).to_string(), "note NOSUCHNOTE not found"),
        (json!({ "op": "COMMIT_PARAGRAPH", "data": { "id": "nope", "noteId": note_id, "paragraph": "x" } }).to_string(), "paragraph nope not found"),
        (json!({ "op": "COMMIT_PARAGRAPH", "data": { "id": note["paragraphs"][0]["id"], "noteId": note_id, "config": [1] } }).to_string(), "data.config must be an object"),
        (json!({ "op": "INSERT_PARAGRAPH", "data": { "noteId": note_id, "index": -3 } }).to_string(), "data.index must be a non-negative integer"),
        (json!({ "op": "NEW_NOTE", "data": { "name": "../../escape" } }).to_string(), "'..' segments"),
        (json!({ "op": "NEW_NOTE", "data": { "name": "nul\u{0}byte" } }).to_string(), "NUL"),
        (json!({ "op": "NEW_NOTE", "data": { "name": "keep" } }).to_string(), "already exists"),
        (json!({ "op": "RUN_ALL_PARAGRAPHS", "data": { "noteId": note_id, "paragraphs": "not json" } }).to_string(), "not a JSON array"),
        (json!({ "op": "RUN_ALL_PARAGRAPHS", "data": { "noteId": note_id, "paragraphs": [{ "id": note["paragraphs"][0]["id"], "paragraph": "%md edited" }, { "id": note["paragraphs"][0]["id"] }] } }).to_string(), "is listed twice"),
        (json!({ "op": "DEL_NOTE", "data": { "id": "NOSUCHNOTE" } }).to_string(), "not found"),
    ];
    for (message, expected) in cases {
        client.send_text(&message);
        let info = client.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(info.contains(expected), "{message} -> {info}");
    }
    // A refused run on a connection bound to no note leaves no scratch
    // note behind (checked with the note list below).
    let mut unbound = JsonClient::open(server.addr);
    unbound.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": "p1", "paragraph": "%md x", "config": "x" }),
    );
    assert!(
        unbound.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("data.config must be an object")
    );
    client.raw.send_frame(0x82, b"\x00\x01");
    assert!(
        client.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("binary")
    );

    client.send_op("LIST_NOTES", json!({}));
    assert_eq!(
        client.expect("NOTES_INFO")["notes"],
        json!([{ "id": note_id, "path": "/keep" }])
    );
    assert_eq!(
        std::fs::read(dir.join(format!("keep_{note_id}.zpln"))).unwrap(),
        snapshot,
        "note unchanged"
    );
    assert!(!dir.parent().unwrap().join("escape").exists());
    let escaped: Vec<_> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("escape"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");

    // Oversized messages: the core closes with 1009.
    let huge = format!("{{\"op\":\"PING\",\"pad\":\"{}\"}}", "x".repeat(70 * 1024));
    client.send_text(&huge);
    assert_eq!(client.raw.expect_close(), 1009);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tickets_are_checked_on_every_op() {
    let dir = temp_dir("tickets");
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    client.send_text(
        &json!({ "op": "LIST_NOTES", "principal": "anonymous", "ticket": "forged" }).to_string(),
    );
    assert!(
        client.expect("SESSION_LOGOUT")["info"]
            .as_str()
            .unwrap()
            .contains("login again")
    );
    client.send_text(
        &json!({ "op": "LIST_NOTES", "principal": "mallory", "ticket": "t" }).to_string(),
    );
    assert!(
        client.expect("AUTH_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("mallory")
    );
    client.send_text(
        &json!({ "op": "PING", "principal": "anonymous", "ticket": "forged" }).to_string(),
    );
    client.expect_silence();
    // The connection stays open and usable.
    client.send_op("LIST_NOTES", json!({}));
    client.expect("NOTES_INFO");

    // With anonymous access off, anonymous requests are refused.
    drop(client);
    drop(server);
    let closed = start_with(
        &dir,
        NotebookConfig {
            anonymous_allowed: false,
            ..NotebookConfig::default()
        },
        ServerConfig::default(),
    );
    // The upgrade itself is refused without credentials.
    let mut raw = RawClient::connect(closed.addr);
    raw.send_raw(common::upgrade_request("/ws", "").as_bytes());
    let (status, head, _) = raw.read_response();
    assert_eq!(status, 401);
    assert!(head.contains("WWW-Authenticate: Basic"), "{head}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn runaway_sql_is_interrupted_and_the_loop_stays_responsive() {
    let dir = temp_dir("runaway");
    let server = start_with(
        &dir,
        NotebookConfig {
            sql_timeout: Duration::from_millis(1500),
            ..NotebookConfig::default()
        },
        ServerConfig::default(),
    );
    let mut runner = JsonClient::open(server.addr);
    let forever = "%sql with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c";
    runner.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": "runaway", "paragraph": forever }),
    );
    let scratch = runner.expect("NOTES_INFO")["notes"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(runner.expect("PARAGRAPH")["paragraph"]["status"], "PENDING");
    assert_eq!(runner.expect("PARAGRAPH")["paragraph"]["status"], "RUNNING");
    let started = Instant::now();

    // While the query runs, other requests are answered at once.
    let mut other = JsonClient::open(server.addr);
    other.send_op("LIST_NOTES", json!({}));
    other.expect("NOTES_INFO");
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "loop blocked: {:?}",
        started.elapsed()
    );
    // Running it again with all others is refused, and its text stays.
    other.send_op(
        "RUN_ALL_PARAGRAPHS",
        json!({ "noteId": scratch, "paragraphs": json!([{ "id": "runaway", "paragraph": "%md edited" }]).to_string() }),
    );
    assert!(
        other.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("already queued or running")
    );
    other.send_op("GET_NOTE", json!({ "id": scratch }));
    assert_eq!(
        other.expect("NOTE")["note"]["paragraphs"][0]["text"],
        forever
    );

    // A query queued behind it waits (a %md would not: it has a thread of
    // its own), and can be cancelled while PENDING; each update carries
    // the msgId of the request that caused it.
    let with_msg_id = |op: &str, data: Value, msg_id: &str| {
        json!({ "op": op, "data": data, "principal": "anonymous", "ticket": "anonymous", "msgId": msg_id })
            .to_string()
    };
    runner.send_text(&with_msg_id(
        "RUN_PARAGRAPH",
        json!({ "id": "queued", "paragraph": "%sql select 'never runs'" }),
        "run-1",
    ));
    let pending = runner.recv();
    assert_eq!(
        (
            &pending["op"],
            &pending["data"]["paragraph"]["status"],
            &pending["msgId"]
        ),
        (&json!("PARAGRAPH"), &json!("PENDING"), &json!("run-1"))
    );
    runner.send_text(&with_msg_id(
        "CANCEL_PARAGRAPH",
        json!({ "id": "queued" }),
        "cancel-1",
    ));
    let aborted = runner.recv();
    assert_eq!(aborted["msgId"], "cancel-1", "{aborted}");
    let aborted = aborted["data"]["paragraph"].clone();
    assert_eq!(
        (aborted["id"].as_str(), aborted["status"].as_str()),
        (Some("queued"), Some("ABORT"))
    );

    let end = runner.expect("PARAGRAPH")["paragraph"].clone();
    assert_eq!(
        (end["id"].as_str(), end["status"].as_str()),
        (Some("runaway"), Some("ERROR"))
    );
    assert!(
        end["results"]["msg"][0]["data"]
            .as_str()
            .unwrap()
            .contains("interrupted")
    );
    assert!(started.elapsed() < Duration::from_secs(8));

    // A running query can be cancelled too.
    runner.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": "runaway", "paragraph": forever }),
    );
    assert_eq!(runner.expect("PARAGRAPH")["paragraph"]["status"], "PENDING");
    assert_eq!(runner.expect("PARAGRAPH")["paragraph"]["status"], "RUNNING");
    // Cancelled from a connection bound to no note (found by the
    // paragraph id): the canceller gets the ABORT too, the runner as well.
    let mut canceller = JsonClient::open(server.addr);
    canceller.send_text(&with_msg_id(
        "CANCEL_PARAGRAPH",
        json!({ "id": "runaway" }),
        "cancel-2",
    ));
    for client in [&mut canceller, &mut runner] {
        let aborted = client.recv();
        assert_eq!(aborted["data"]["paragraph"]["status"], "ABORT", "{aborted}");
        assert_eq!(aborted["msgId"], "cancel-2", "{aborted}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_all_runs_in_order_and_stops_at_the_first_error() {
    let dir = temp_dir("run-all");
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    client.send_op("NEW_NOTE", json!({ "name": "batch" }));
    let note = client.expect("NEW_NOTE")["note"].clone();
    client.expect("NOTES_INFO");
    let note_id = note["id"].as_str().unwrap().to_owned();
    let mut ids = vec![note["paragraphs"][0]["id"].as_str().unwrap().to_owned()];
    for index in 1..4 {
        client.send_op("INSERT_PARAGRAPH", json!({ "index": index }));
        ids.push(
            client.expect("PARAGRAPH_ADDED")["paragraph"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let texts = [
        "%sql create table t(x)",
        "%sql insert into t values (1)",
        "%sql select * from nope",
        "%md after",
    ];
    let paragraphs: Vec<Value> = ids
        .iter()
        .zip(texts)
        .map(|(id, text)| json!({ "id": id, "paragraph": text }))
        .collect();
    client.send_op(
        "RUN_ALL_PARAGRAPHS",
        json!({ "noteId": note_id, "paragraphs": serde_json::to_string(&paragraphs).unwrap() }),
    );
    // As Zeppelin's Note.runAll: the note is running until its batch ends.
    assert_eq!(
        client.expect("NOTE_RUNNING_STATUS"),
        json!({ "status": true })
    );
    let mut finished = Vec::new();
    while finished.len() < 3 {
        let paragraph = client.expect("PARAGRAPH")["paragraph"].clone();
        if !matches!(paragraph["status"].as_str(), Some("PENDING" | "RUNNING")) {
            finished.push((
                paragraph["id"].as_str().unwrap().to_owned(),
                paragraph["status"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert_eq!(
        finished,
        [
            (ids[0].clone(), "FINISHED".to_owned()),
            (ids[1].clone(), "FINISHED".to_owned()),
            (ids[2].clone(), "ERROR".to_owned())
        ]
    );
    assert_eq!(
        client.expect("NOTE_RUNNING_STATUS"),
        json!({ "status": false })
    );
    client.expect_silence();
    client.send_op("GET_NOTE", json!({ "id": note_id }));
    let note = client.expect("NOTE")["note"].clone();
    assert_eq!(
        note["paragraphs"][3]["status"], "READY",
        "the batch stopped at the error"
    );
    assert_eq!(
        note["paragraphs"][3]["text"], "%md after",
        "but its text was saved"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn one_user_s_queued_queries_hold_neither_markdown_nor_another_user_s_query() {
    let dir = temp_dir("fair");
    let hash = hash_password("s3cret").unwrap();
    let mut handler = NotebookHandler::open(NotebookConfig {
        notebook_dir: dir.clone(),
        sql_timeout: Duration::from_secs(1),
        max_runs_per_user: 10,
        users: vec![User::new("alice", &hash, Vec::new()).unwrap()],
        ..NotebookConfig::default()
    })
    .expect("open notebook");
    let ticket = handler
        .tickets_mut()
        .issue("alice", Vec::new(), Instant::now());
    let server = TestServer::start(ServerConfig::default(), handler);

    // Alice queues ten queries that each run until the 1 s time limit,
    // then an eleventh, which is beyond her bound.
    let mut alice = JsonClient::open(server.addr);
    let forever = "%sql with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c";
    for index in 0..11 {
        let run = json!({
            "op": "RUN_PARAGRAPH",
            "data": { "id": format!("q{index}"), "paragraph": forever },
            "principal": "alice", "ticket": ticket,
        });
        alice.send_text(&run.to_string());
    }
    let refusal = loop {
        let message = alice.recv();
        if message["op"] == "ERROR_INFO" {
            break message["data"]["info"].as_str().unwrap().to_owned();
        }
    };
    assert!(
        refusal.contains("10 paragraph runs queued or running (notebook.max_runs_per_user)"),
        "{refusal}"
    );
    let mut http = RawClient::connect(server.addr);
    http.send_raw(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let (_, _, metrics) = http.read_response();
    assert!(
        metrics.contains("\nwsloop_notebook_paragraph_runs_held 10\n"),
        "{metrics}"
    );

    // Another user (anonymous, in the same scratch note) runs a paragraph
    // and waits for its end: the updates, and how long they took.
    let mut other = JsonClient::open(server.addr);
    let mut run = |id: &str, text: &str| {
        let started = Instant::now();
        other.send_op("RUN_PARAGRAPH", json!({ "id": id, "paragraph": text }));
        let updates = run_updates(&mut other);
        assert_eq!(statuses(&updates), ["PENDING", "RUNNING", "FINISHED"]);
        (updates, started.elapsed())
    };
    // A %md finishes at once: markdown has a thread of its own. Behind
    // Alice's queries on one job thread for all, it took ten seconds.
    let (_, waited) = run("words", "%md **hello**");
    assert!(waited < Duration::from_secs(4), "the %md waited {waited:?}");
    // A query runs right after Alice's current one, not after her nine
    // queued ones (first come, first served: nine seconds or more).
    let (updates, waited) = run("answer", "%sql select 42 as answer");
    assert_eq!(updates[2]["results"]["msg"][0]["data"], "answer\n42");
    assert!(
        waited < Duration::from_secs(5),
        "the query waited {waited:?}"
    );
    // Closed first, so the server's shutdown waits for no closing
    // handshake; it interrupts Alice's running query.
    drop((alice, other, http));
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn paragraph_ids(note: &Value) -> Vec<String> {
    note["paragraphs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn rename_into_a_folder_and_move_paragraphs_reach_watchers_and_persist() {
    let dir = temp_dir("rearranging");
    let mut server = start(&dir);
    let mut alice = JsonClient::open(server.addr);
    let mut bob = JsonClient::open(server.addr);

    alice.send_op("NEW_NOTE", json!({ "name": "draft" }));
    let note = alice.expect("NEW_NOTE")["note"].clone();
    let note_id = note["id"].as_str().unwrap().to_owned();
    alice.expect("NOTES_INFO");
    bob.expect("NOTES_INFO");
    bob.send_op("GET_NOTE", json!({ "id": note_id }));
    bob.expect("NOTE");
    for index in [1, 2] {
        alice.send_op(
            "INSERT_PARAGRAPH",
            json!({ "noteId": note_id, "index": index }),
        );
        alice.expect("PARAGRAPH_ADDED");
        bob.expect("PARAGRAPH_ADDED");
    }

    alice.send_op(
        "NOTE_RENAME",
        json!({ "id": note_id, "name": "projects/q4/final" }),
    );
    let renamed = alice.expect("NOTE")["note"].clone();
    assert_eq!(
        (renamed["path"].as_str(), renamed["name"].as_str()),
        (Some("/projects/q4/final"), Some("final"))
    );
    assert_eq!(bob.expect("NOTE")["note"]["path"], "/projects/q4/final");
    let listed = json!([{ "id": note_id, "path": "/projects/q4/final" }]);
    assert_eq!(alice.expect("NOTES_INFO")["notes"], listed);
    assert_eq!(bob.expect("NOTES_INFO")["notes"], listed);

    let ids = paragraph_ids(&renamed);
    alice.send_op("MOVE_PARAGRAPH", json!({ "id": ids[2], "index": 0 }));
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            client.expect("PARAGRAPH_MOVED"),
            json!({ "id": ids[2], "index": 0 })
        );
    }

    // Refused, and nothing changes: an index past the end, a taken path.
    alice.send_op("MOVE_PARAGRAPH", json!({ "id": ids[0], "index": 3 }));
    assert!(
        alice.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("past")
    );
    alice.send_op("NEW_NOTE", json!({ "name": "other" }));
    alice.expect("NEW_NOTE");
    alice.expect("NOTES_INFO");
    alice.send_op("NOTE_RENAME", json!({ "id": note_id, "name": "/other" }));
    assert!(
        alice.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );

    drop((alice, bob));
    server.stop();
    let server = start(&dir);
    let mut carol = JsonClient::open(server.addr);
    carol.send_op("GET_NOTE", json!({ "id": note_id }));
    let reloaded = carol.expect("NOTE")["note"].clone();
    assert_eq!(reloaded["path"], "/projects/q4/final");
    assert_eq!(
        paragraph_ids(&reloaded),
        [ids[2].clone(), ids[0].clone(), ids[1].clone()]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_lossy_table_carries_exact_cells_that_survive_a_restart() {
    let dir = temp_dir("exact-cells");
    let mut server = start(&dir);
    let mut alice = JsonClient::open(server.addr);
    alice.send_op("NEW_NOTE", json!({ "name": "nulls" }));
    let note = alice.expect("NEW_NOTE")["note"].clone();
    let note_id = note["id"].as_str().unwrap().to_owned();
    alice.expect("NOTES_INFO");
    let paragraph = paragraph_ids(&note)[0].clone();
    let expected = json!({
        "type": "TABLE",
        "data": "a\tb\tc\nnull\tnull\tx y",
        "cells": [["a", "b", "c"], [null, "null", "x\ty"]],
    });
    alice.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%sql select null as a, 'null' as b, 'x'||char(9)||'y' as c" }),
    );
    let updates = run_updates(&mut alice);
    assert_eq!(statuses(&updates).last(), Some(&"FINISHED"));
    assert_eq!(updates.last().unwrap()["results"]["msg"][0], expected);

    drop(alice);
    server.stop();
    let server = start(&dir);
    let mut bob = JsonClient::open(server.addr);
    bob.send_op("GET_NOTE", json!({ "id": note_id }));
    let reloaded = bob.expect("NOTE")["note"].clone();
    assert_eq!(reloaded["paragraphs"][0]["results"]["msg"][0], expected);
    let _ = std::fs::remove_dir_all(&dir);
}
