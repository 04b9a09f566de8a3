//! The ops Zeppelin's web UI sends beyond the core set, over real
//! WebSocket connections: each reply, its audience (sender, a note's
//! watchers, everyone), and what is stored.

mod common;

use std::path::PathBuf;

use common::{JsonClient, TestServer};
use serde_json::{Value, json};
use wsloop::ServerConfig;
use wsloop::notebook::{NotebookConfig, NotebookHandler};

fn start(name: &str) -> (TestServer, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wsloop-zops-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = NotebookConfig {
        notebook_dir: dir.clone(),
        ..NotebookConfig::default()
    };
    let handler = NotebookHandler::open(config).unwrap();
    (TestServer::start(ServerConfig::default(), handler), dir)
}

/// The next message with op `op`, skipping others.
fn next(client: &mut JsonClient, op: &str) -> Value {
    for _ in 0..20 {
        let message = client.recv();
        if message["op"] == op {
            return message["data"].clone();
        }
        assert_ne!(message["op"], "ERROR_INFO", "{message}");
    }
    panic!("no {op}");
}

/// Creates a note at `name` from `client` (bound to it); returns its id
/// and first paragraph id.
fn new_note(client: &mut JsonClient, name: &str) -> (String, String) {
    client.send_op("NEW_NOTE", json!({ "name": name }));
    let note = next(client, "NEW_NOTE")["note"].clone();
    next(client, "NOTES_INFO");
    (
        note["id"].as_str().unwrap().to_owned(),
        note["paragraphs"][0]["id"].as_str().unwrap().to_owned(),
    )
}

fn paths(client: &mut JsonClient) -> Vec<String> {
    client.send_op("LIST_NOTES", json!({}));
    let mut paths: Vec<String> = next(client, "NOTES_INFO")["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    paths
}

#[test]
fn rename_update_move_and_copy_reach_watchers() {
    let (server, dir) = start("edit");
    let mut alice = JsonClient::open(server.addr);
    let (id, first) = new_note(&mut alice, "/team/plan");
    let mut bob = JsonClient::open(server.addr);
    bob.send_op("GET_NOTE", json!({ "id": id }));
    next(&mut bob, "NOTE");

    // Relative rename: same folder, new name; NOTE to watchers, NOTES_INFO to all.
    alice.send_op(
        "NOTE_RENAME",
        json!({ "id": id, "name": "roadmap", "relative": true }),
    );
    assert_eq!(next(&mut bob, "NOTE")["note"]["path"], "/team/roadmap");
    assert_eq!(
        next(&mut bob, "NOTES_INFO")["notes"][0]["path"],
        "/team/roadmap"
    );
    next(&mut alice, "NOTES_INFO");

    alice.send_op(
        "NOTE_UPDATE",
        json!({ "id": id, "name": "/team/roadmap", "config": { "looknfeel": "report" } }),
    );
    let updated = next(&mut bob, "NOTE_UPDATED");
    assert_eq!(
        (
            updated["name"].as_str(),
            updated["config"]["looknfeel"].as_str()
        ),
        (Some("roadmap"), Some("report"))
    );
    next(&mut alice, "NOTES_INFO");

    alice.send_op(
        "COPY_PARAGRAPH",
        json!({ "index": 0, "title": "copied", "paragraph": "%md copy", "config": {}, "params": {} }),
    );
    let added = next(&mut bob, "PARAGRAPH_ADDED");
    assert_eq!(
        (added["index"].as_u64(), added["paragraph"]["text"].as_str()),
        (Some(0), Some("%md copy"))
    );
    let copy = added["paragraph"]["id"].as_str().unwrap().to_owned();
    next(&mut alice, "PARAGRAPH_ADDED");

    alice.send_op("MOVE_PARAGRAPH", json!({ "id": copy, "index": 1 }));
    assert_eq!(
        next(&mut bob, "PARAGRAPH_MOVED"),
        json!({ "id": copy, "index": 1 })
    );
    next(&mut alice, "PARAGRAPH_MOVED");
    bob.send_op("GET_NOTE", json!({ "id": id }));
    let note = next(&mut bob, "NOTE")["note"].clone();
    assert_eq!(note["paragraphs"][0]["id"], first.as_str());
    assert_eq!(note["paragraphs"][1]["id"], copy.as_str());
    assert_eq!(note["config"]["looknfeel"], "report");

    // Refusals change nothing and say why, once.
    alice.send_op("MOVE_PARAGRAPH", json!({ "id": "nope", "index": 0 }));
    assert!(
        alice.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    alice.send_op("NOTE_RENAME", json!({ "id": id, "name": "../x" }));
    alice.expect("ERROR_INFO");
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn folders_trash_restore_and_empty() {
    let (server, dir) = start("trash");
    let mut client = JsonClient::open(server.addr);
    let (a, _) = new_note(&mut client, "/f/a");
    new_note(&mut client, "/f/sub/b");
    new_note(&mut client, "/other");

    client.send_op("FOLDER_RENAME", json!({ "id": "f", "name": "g" }));
    next(&mut client, "NOTES_INFO");
    assert_eq!(paths(&mut client), ["/g/a", "/g/sub/b", "/other"]);

    client.send_op("MOVE_NOTE_TO_TRASH", json!({ "id": a }));
    next(&mut client, "NOTES_INFO");
    assert_eq!(paths(&mut client), ["/g/sub/b", "/other", "/~Trash/g/a"]);
    client.send_op("MOVE_FOLDER_TO_TRASH", json!({ "id": "/g" }));
    next(&mut client, "NOTES_INFO");
    assert_eq!(
        paths(&mut client),
        ["/other", "/~Trash/g/a", "/~Trash/g/sub/b"]
    );
    client.send_op("RESTORE_NOTE", json!({ "id": a }));
    next(&mut client, "NOTES_INFO");
    assert_eq!(paths(&mut client), ["/g/a", "/other", "/~Trash/g/sub/b"]);
    client.send_op("RESTORE_FOLDER", json!({ "id": "~Trash/g" }));
    next(&mut client, "NOTES_INFO");
    assert_eq!(paths(&mut client), ["/g/a", "/g/sub/b", "/other"]);
    client.send_op("MOVE_FOLDER_TO_TRASH", json!({ "id": "g" }));
    next(&mut client, "NOTES_INFO");
    client.send_op("RESTORE_ALL", json!({}));
    next(&mut client, "NOTES_INFO");
    assert_eq!(paths(&mut client), ["/g/a", "/g/sub/b", "/other"]);
    client.send_op("MOVE_FOLDER_TO_TRASH", json!({ "id": "g" }));
    next(&mut client, "NOTES_INFO");
    client.send_op("EMPTY_TRASH", json!({}));
    next(&mut client, "NOTES_INFO");
    assert_eq!(paths(&mut client), ["/other"]);
    client.send_op("REMOVE_FOLDER", json!({ "id": "/" }));
    client.expect("ERROR_INFO");
    drop(server);
    // Emptied notes are gone from disk too, the rest stays.
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zpln"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn clone_import_clear_and_cancel_all() {
    let (server, dir) = start("clone");
    let mut client = JsonClient::open(server.addr);
    let (id, first) = new_note(&mut client, "/src");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": first, "paragraph": "%md **x**" }),
    );
    while next(&mut client, "PARAGRAPH")["paragraph"]["status"] != "FINISHED" {}

    client.send_op("CLONE_NOTE", json!({ "id": id, "name": "/copy" }));
    let clone = next(&mut client, "NEW_NOTE")["note"].clone();
    assert_eq!(clone["path"], "/copy");
    assert_eq!(clone["paragraphs"][0]["text"], "%md **x**");
    assert_ne!(clone["paragraphs"][0]["id"], first.as_str());

    let export = json!({
        "name": "Imported", "paragraphs": [{ "text": "%sql select 1", "config": {}, "settings": { "params": {}, "forms": {} } }]
    });
    client.send_op("IMPORT_NOTE", json!({ "note": export }));
    next(&mut client, "NOTES_INFO");
    // As text too (the .zpln file's contents), at a free path.
    client.send_op("IMPORT_NOTE", json!({ "note": export.to_string() }));
    next(&mut client, "NOTES_INFO");
    assert_eq!(
        paths(&mut client),
        ["/Imported", "/Imported (1)", "/copy", "/src"]
    );
    client.send_op("IMPORT_NOTE", json!({ "note": "{not json" }));
    client.expect("ERROR_INFO");

    client.send_op("GET_NOTE", json!({ "id": id }));
    next(&mut client, "NOTE");
    client.send_op("PARAGRAPH_CLEAR_OUTPUT", json!({ "id": first }));
    assert!(
        next(&mut client, "PARAGRAPH")["paragraph"]
            .get("results")
            .is_none()
    );
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": first, "paragraph": "%md y" }),
    );
    while next(&mut client, "PARAGRAPH")["paragraph"]["status"] != "FINISHED" {}
    client.send_op("PARAGRAPH_CLEAR_ALL_OUTPUT", json!({ "id": id }));
    assert!(
        next(&mut client, "NOTE")["note"]["paragraphs"][0]
            .get("results")
            .is_none()
    );

    // Cancel all: a slow %sql and a queued one behind it both end ABORT.
    client.send_op("INSERT_PARAGRAPH", json!({ "index": 1 }));
    let second = next(&mut client, "PARAGRAPH_ADDED")["paragraph"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let slow = "%sql with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c";
    client.send_op("RUN_PARAGRAPH", json!({ "id": first, "paragraph": slow }));
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": second, "paragraph": "%sql select 2" }),
    );
    let mut running = false;
    while !running {
        running = next(&mut client, "PARAGRAPH")["paragraph"]["status"] == "RUNNING";
    }
    client.send_op("CANCEL_ALL_PARAGRAPHS", json!({ "noteId": id }));
    let mut aborted = Vec::new();
    while aborted.len() < 2 {
        let paragraph = next(&mut client, "PARAGRAPH")["paragraph"].clone();
        if paragraph["status"] == "ABORT" {
            aborted.push(paragraph["id"].as_str().unwrap().to_owned());
        }
    }
    aborted.sort();
    let mut expected = vec![first.clone(), second];
    expected.sort();
    assert_eq!(aborted, expected);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn settings_forms_revisions_completion_and_jobs() {
    let (server, dir) = start("misc");
    let mut client = JsonClient::open(server.addr);
    let (id, first) = new_note(&mut client, "/misc");

    client.send_op("GET_INTERPRETER_SETTINGS", json!({}));
    let settings = next(&mut client, "INTERPRETER_SETTINGS")["interpreterSettings"].clone();
    assert!(
        settings
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "sql")
    );

    client.send_op(
        "SAVE_INTERPRETER_BINDINGS",
        json!({ "noteId": id, "selectedSettingIds": ["sql", "md"] }),
    );
    next(&mut client, "INTERPRETER_BINDINGS");
    client.send_op("GET_NOTE", json!({ "id": id }));
    assert_eq!(
        next(&mut client, "NOTE")["note"]["defaultInterpreterGroup"],
        "sql"
    );

    client.send_op("LIST_REVISION_HISTORY", json!({ "noteId": id }));
    assert_eq!(
        next(&mut client, "LIST_REVISION_HISTORY"),
        json!({ "revisionList": [] })
    );
    client.send_op(
        "CHECKPOINT_NOTE",
        json!({ "noteId": id, "commitMessage": "x" }),
    );
    assert!(
        client.expect("ERROR_INFO")["info"]
            .as_str()
            .unwrap()
            .contains("no note revisions")
    );

    client.send_op(
        "SAVE_NOTE_FORMS",
        json!({ "noteId": id, "noteParams": { "city": "Oslo" } }),
    );
    assert_eq!(
        next(&mut client, "SAVE_NOTE_FORMS")["formsData"]["params"],
        json!({ "city": "Oslo" })
    );
    client.send_op(
        "REMOVE_NOTE_FORMS",
        json!({ "noteId": id, "formName": "city" }),
    );
    assert_eq!(
        next(&mut client, "SAVE_NOTE_FORMS")["formsData"]["params"],
        json!({})
    );

    client.send_op(
        "UPDATE_PERSONALIZED_MODE",
        json!({ "id": id, "personalized": "true" }),
    );
    assert_eq!(
        next(&mut client, "NOTE")["note"]["config"]["personalizedMode"],
        "true"
    );

    client.send_op(
        "COMPLETION",
        json!({ "id": first, "buf": "%sql sel", "cursor": 8 }),
    );
    let completions = next(&mut client, "COMPLETION_LIST");
    assert_eq!(completions["id"], first.as_str());
    assert_eq!(completions["completions"][0]["value"], "SELECT");
    // Table and column names of the database, after the keywords.
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": first, "paragraph": "%sql create table orders (id integer, owner text)" }),
    );
    while next(&mut client, "PARAGRAPH")["paragraph"]["status"] != "FINISHED" {}
    client.send_op(
        "COMPLETION",
        json!({ "id": first, "buf": "%sql select * from o", "cursor": 20 }),
    );
    let completions = next(&mut client, "COMPLETION_LIST")["completions"].clone();
    let values: Vec<(&str, &str)> = completions
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["value"].as_str().unwrap(), c["meta"].as_str().unwrap()))
        .collect();
    assert_eq!(
        values,
        [
            ("ORDER BY", "keyword"),
            ("OFFSET", "keyword"),
            ("ON", "keyword"),
            ("OR", "keyword"),
            ("orders", "table"),
            ("owner", "column")
        ]
    );
    client.send_op(
        "COMPLETION",
        json!({ "id": first, "buf": "%md sel", "cursor": 7 }),
    );
    assert_eq!(
        next(&mut client, "COMPLETION_LIST")["completions"],
        json!([])
    );

    client.send_op("LIST_NOTE_JOBS", json!({}));
    let jobs = next(&mut client, "LIST_NOTE_JOBS")["noteJobs"]["jobs"].clone();
    assert_eq!(jobs[0]["noteId"], id.as_str());
    assert_eq!(jobs[0]["isRunningJob"], false);

    // Accepted without an answer: the UI expects none.
    for op in [
        "PATCH_PARAGRAPH",
        "UNSUBSCRIBE_UPDATE_NOTE_JOBS",
        "ANGULAR_OBJECT_CLIENT_BIND",
    ] {
        client.send_op(
            op,
            json!({ "id": first, "noteId": id, "patch": "@@ -1 +1 @@" }),
        );
    }
    client.expect_silence();
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
