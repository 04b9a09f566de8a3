//! The notebook's ops driven without sockets: each test calls the handler's
//! callbacks with a [`Recorder`]'s contexts and reads back exactly who was
//! sent what, in which order, and when (held until the change is on disk).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{NotebookConfig, NotebookHandler};
use crate::handler::{ConnectionId, Handler};
use crate::proto::{CloseCode, HttpRequest, Message};
use crate::server::Recorder;

/// How long a test waits for the writer or a job thread.
const WAIT: Duration = Duration::from_secs(10);

/// One message the handler sent: recipient, op, data, msgId.
#[derive(Debug, Clone)]
struct Reply {
    to: ConnectionId,
    op: String,
    data: Value,
    msg_id: Option<String>,
}

struct Harness {
    recorder: Recorder,
    notebook: NotebookHandler,
    dir: PathBuf,
}

impl Harness {
    fn new(name: &str) -> Harness {
        let dir = std::env::temp_dir().join(format!("wsloop-ops-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = NotebookConfig {
            notebook_dir: dir.clone(),
            ..NotebookConfig::default()
        };
        let mut notebook = NotebookHandler::open(config).unwrap();
        let recorder = Recorder::new().unwrap();
        notebook.on_start(recorder.notifier());
        Harness {
            recorder,
            notebook,
            dir,
        }
    }

    /// Hands the handler one text message from `from`, as the loop would.
    fn message(&mut self, from: ConnectionId, text: &str) {
        let mut ctx = self.recorder.context();
        self.notebook
            .on_message(&mut ctx, from, Message::Text(text));
    }

    /// Sends an op as the anonymous user.
    fn op(&mut self, from: ConnectionId, op: &str, data: Value) {
        let text =
            json!({ "op": op, "data": data, "principal": "anonymous", "ticket": "anonymous" });
        self.message(from, &text.to_string());
    }

    /// Waits for the writer or a job thread to notify, calls `on_notify`
    /// as the loop would, and returns what that sent.
    fn notify(&mut self) -> Vec<Reply> {
        assert!(self.recorder.wait_for_notify(WAIT), "no notification");
        self.notebook.on_notify(&mut self.recorder.context());
        self.take()
    }

    /// Everything sent until `done` holds for it.
    fn until(&mut self, mut done: impl FnMut(&[Reply]) -> bool) -> Vec<Reply> {
        let mut replies = self.take();
        while !done(&replies) {
            replies.extend(self.notify());
        }
        replies
    }

    /// Everything sent until nothing is held back any more.
    fn settle(&mut self) -> Vec<Reply> {
        let mut replies = self.take();
        while self.recorder.held_messages() > 0 {
            replies.extend(self.notify());
        }
        replies
    }

    fn take(&mut self) -> Vec<Reply> {
        self.recorder
            .take_sent()
            .into_iter()
            .map(|sent| {
                let to = sent.to();
                let text = sent.text().expect("the notebook sends text").to_owned();
                let value: Value = serde_json::from_str(&text).unwrap();
                Reply {
                    to,
                    op: value["op"].as_str().unwrap().to_owned(),
                    data: value["data"].clone(),
                    msg_id: value["msgId"].as_str().map(str::to_owned),
                }
            })
            .collect()
    }

    /// Creates a note from `conn` (which then watches it); its id and its
    /// first paragraph's id.
    fn new_note(&mut self, conn: ConnectionId, name: &str) -> (String, String) {
        self.op(conn, "NEW_NOTE", json!({ "name": name }));
        let replies = self.settle();
        let note = &only(&replies, conn, "NEW_NOTE").data["note"];
        (
            note["id"].as_str().unwrap().to_owned(),
            note["paragraphs"][0]["id"].as_str().unwrap().to_owned(),
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What a REST client sends besides the request line: a loopback `Host`
/// (the DNS-rebinding check) and a JSON body type.
const REST_HEADERS: &[httparse::Header<'static>] = &[
    httparse::Header {
        name: "Host",
        value: b"127.0.0.1:8081",
    },
    httparse::Header {
        name: "Content-Type",
        value: b"application/json",
    },
];

/// A `POST` to `target` with `body`.
fn post<'a>(target: &'a str, body: &'a [u8]) -> HttpRequest<'a> {
    HttpRequest {
        method: "POST",
        target,
        minor_version: 1,
        headers: REST_HEADERS,
        body,
    }
}

/// The ops `to` got, in order.
fn ops_to(replies: &[Reply], to: ConnectionId) -> Vec<&str> {
    replies
        .iter()
        .filter(|r| r.to == to)
        .map(|r| r.op.as_str())
        .collect()
}

/// The one reply `op` to `to`.
fn only<'r>(replies: &'r [Reply], to: ConnectionId, op: &str) -> &'r Reply {
    let found: Vec<&Reply> = replies
        .iter()
        .filter(|r| r.to == to && r.op == op)
        .collect();
    assert_eq!(found.len(), 1, "{op} to {to}: {replies:?}");
    found[0]
}

#[test]
fn a_new_note_is_announced_only_once_it_is_on_disk() {
    let mut h = Harness::new("new");
    let creator = h.recorder.connect();
    let other = h.recorder.connect();
    h.op(creator, "NEW_NOTE", json!({ "name": "/plans/q1" }));
    // Nothing leaves before the writer has reported the note durable.
    assert!(h.recorder.take_sent().is_empty());
    assert!(h.recorder.held_messages() >= 2);
    let replies = h.settle();
    assert_eq!(ops_to(&replies, creator), ["NEW_NOTE", "NOTES_INFO"]);
    assert_eq!(ops_to(&replies, other), ["NOTES_INFO"]);
    let note = &only(&replies, creator, "NEW_NOTE").data["note"];
    assert_eq!(note["path"], "/plans/q1");
    let listed = &only(&replies, other, "NOTES_INFO").data["notes"];
    assert_eq!(listed[0]["path"], "/plans/q1");
    let file = h
        .dir
        .join("plans")
        .join(format!("q1_{}.zpln", note["id"].as_str().unwrap()));
    assert!(file.is_file(), "{} not written", file.display());
}

#[test]
fn a_commit_reaches_the_notes_watchers_and_no_one_else() {
    let mut h = Harness::new("commit");
    let editor = h.recorder.connect();
    let watcher = h.recorder.connect();
    let elsewhere = h.recorder.connect();
    let (note, paragraph) = h.new_note(editor, "shared");
    h.op(watcher, "GET_NOTE", json!({ "id": note }));
    assert_eq!(ops_to(&h.settle(), watcher), ["NOTE"]);
    let text = json!({
        "op": "COMMIT_PARAGRAPH", "msgId": "m-7", "principal": "anonymous", "ticket": "anonymous",
        "data": { "id": paragraph, "paragraph": "%md edited", "noteId": note },
    });
    h.message(editor, &text.to_string());
    let replies = h.settle();
    assert_eq!(ops_to(&replies, editor), ["PARAGRAPH"]);
    assert_eq!(ops_to(&replies, watcher), ["PARAGRAPH"]);
    assert!(ops_to(&replies, elsewhere).is_empty(), "{replies:?}");
    let reply = only(&replies, watcher, "PARAGRAPH");
    assert_eq!(reply.data["paragraph"]["text"], "%md edited");
    assert_eq!(reply.msg_id.as_deref(), Some("m-7"));

    // A watcher that went away hears nothing more.
    h.recorder.disconnect(watcher);
    h.notebook.on_close(
        &mut h.recorder.context(),
        watcher,
        CloseCode::GOING_AWAY,
        "",
    );
    h.op(
        editor,
        "COMMIT_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%md again", "noteId": note }),
    );
    let replies = h.settle();
    assert_eq!(ops_to(&replies, editor), ["PARAGRAPH"]);
    assert!(ops_to(&replies, watcher).is_empty());
}

#[test]
fn a_run_saves_its_edit_and_pending_as_one_write_and_ends_finished() {
    let mut h = Harness::new("run");
    let runner = h.recorder.connect();
    let (note, paragraph) = h.new_note(runner, "run");
    let before = h.notebook.notes.commit();
    h.op(
        runner,
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%md **bold**", "noteId": note }),
    );
    // The edit and the PENDING status changed one note in one callback:
    // one write, not two.
    assert_eq!(h.notebook.notes.commit(), before + 1);
    let replies = h.until(|replies| {
        replies
            .iter()
            .any(|r| r.op == "PARAGRAPH" && r.data["paragraph"]["status"] == "FINISHED")
    });
    let statuses: Vec<&str> = replies
        .iter()
        .filter(|r| r.to == runner && r.op == "PARAGRAPH")
        .map(|r| r.data["paragraph"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.first(), Some(&"PENDING"), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&"FINISHED"), "{statuses:?}");
    let finished = replies.last().unwrap();
    let output = &finished.data["paragraph"]["results"]["msg"][0];
    assert_eq!(output["type"], "HTML");
    assert!(
        output["data"]
            .as_str()
            .unwrap()
            .contains("<strong>bold</strong>"),
        "{output}"
    );
    assert_eq!(finished.data["paragraph"]["text"], "%md **bold**");
}

#[test]
fn refusals_go_to_the_sender_alone_and_change_nothing() {
    let mut h = Harness::new("refusals");
    let sender = h.recorder.connect();
    let bystander = h.recorder.connect();
    let check = |h: &mut Harness, text: &str, op: &str, says: &str| {
        h.message(sender, text);
        let replies = h.settle();
        assert_eq!(ops_to(&replies, sender), [op], "{text}: {replies:?}");
        assert!(ops_to(&replies, bystander).is_empty(), "{text}");
        let info = replies[0].data["info"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(info.contains(says), "{text}: {info}");
    };
    check(&mut h, "not json", "ERROR_INFO", "malformed JSON");
    check(
        &mut h,
        r#"{"op":"NO_SUCH_OP","principal":"anonymous","ticket":"anonymous"}"#,
        "ERROR_INFO",
        "unknown op NO_SUCH_OP",
    );
    check(
        &mut h,
        r#"{"op":"LIST_NOTES","principal":"anonymous","ticket":"forged"}"#,
        "SESSION_LOGOUT",
        "ticket is invalid",
    );
    check(
        &mut h,
        r#"{"op":"LIST_NOTES","principal":"mallory","ticket":"x"}"#,
        "AUTH_INFO",
        "Unknown principal",
    );
    check(
        &mut h,
        r#"{"op":"GET_NOTE","data":{"id":"missing"},"principal":"anonymous","ticket":"anonymous"}"#,
        "ERROR_INFO",
        "note missing not found",
    );
    // A binary message is not part of the protocol.
    h.notebook
        .on_message(&mut h.recorder.context(), sender, Message::Binary(b"{}"));
    assert_eq!(ops_to(&h.settle(), sender), ["ERROR_INFO"]);
    assert_eq!(h.notebook.note_count(), 0);
    assert_eq!(h.notebook.notes.commit(), 0, "nothing written");
}

#[test]
fn a_deleted_note_is_gone_from_disk_and_from_everyones_list() {
    let mut h = Harness::new("delete");
    let owner = h.recorder.connect();
    let other = h.recorder.connect();
    let (note, _) = h.new_note(owner, "doomed");
    let (kept, _) = h.new_note(owner, "kept");
    h.op(owner, "DEL_NOTE", json!({ "id": note }));
    let replies = h.settle();
    assert_eq!(ops_to(&replies, owner), ["NOTES_INFO"]);
    let listed = &only(&replies, other, "NOTES_INFO").data["notes"];
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], kept.as_str());
    let left: Vec<String> = std::fs::read_dir(&h.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".zpln"))
        .collect();
    assert_eq!(left, [format!("kept_{kept}.zpln")]);
}

#[test]
fn every_op_in_the_table_answers_empty_data_without_panicking() {
    let mut h = Harness::new("table");
    let conn = h.recorder.connect();
    let (note, _) = h.new_note(conn, "table");
    for op in super::ops::op_names() {
        // Every op must refuse or answer empty data, never panic.
        h.op(conn, op, json!({}));
        h.settle();
    }
    // The note survived all of them (none took empty data as "delete").
    h.op(conn, "GET_NOTE", json!({ "id": note }));
    assert_eq!(ops_to(&h.settle(), conn), ["NOTE"]);
}

#[test]
fn a_rest_change_is_answered_only_once_it_is_on_disk() {
    let mut h = Harness::new("rest");
    let watcher = h.recorder.connect();
    let caller = h.recorder.connect();
    let peer = "127.0.0.1:40000".parse().unwrap();
    let request = post("/api/notebook", br#"{"name": "/rest/made"}"#);
    let first = h
        .notebook
        .on_http(&mut h.recorder.request_context(caller, peer), &request);
    // Deferred (its placeholder answer is discarded) until the writer
    // reports the note durable; meanwhile the list change is held too.
    assert!(
        h.recorder.take_deferred(),
        "answered at once: {}",
        first.status
    );
    assert!(h.recorder.take_sent().is_empty());
    let mut told = Vec::new();
    while !h.recorder.take_resumed().contains(&caller) {
        told.extend(h.notify());
    }
    assert_eq!(ops_to(&told, watcher), ["NOTES_INFO"]);
    // Offered again from its first byte, as the loop does: now answered.
    let answer = h
        .notebook
        .on_http(&mut h.recorder.request_context(caller, peer), &request);
    assert!(!h.recorder.take_deferred());
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["status"], "OK");
    let id = body["body"].as_str().unwrap();
    let file = h.dir.join("rest").join(format!("made_{id}.zpln"));
    assert!(
        file.is_file(),
        "{} not on disk when acknowledged",
        file.display()
    );
}

#[test]
fn a_synchronous_rest_run_is_answered_once_its_result_is_on_disk() {
    let mut h = Harness::new("rest-run");
    let owner = h.recorder.connect();
    let caller = h.recorder.connect();
    let peer = "127.0.0.1:40001".parse().unwrap();
    let (note, paragraph) = h.new_note(owner, "sync");
    h.op(
        owner,
        "COMMIT_PARAGRAPH",
        json!({ "id": paragraph, "noteId": note, "paragraph": "%md all *done*" }),
    );
    h.settle();
    let target = format!("/api/notebook/run/{note}/{paragraph}");
    let request = post(&target, b"");
    // Deferred while the run goes on, and again until its end is durable;
    // each time resumed, offered again as the loop does.
    let answer = loop {
        let response = h
            .notebook
            .on_http(&mut h.recorder.request_context(caller, peer), &request);
        if !h.recorder.take_deferred() {
            break response;
        }
        while !h.recorder.take_resumed().contains(&caller) {
            h.notify();
        }
    };
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        !h.notebook.notes.writes_pending(),
        "answered while the run's result was still on its way to disk"
    );
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    let html = body["body"]["msg"][0]["data"].as_str().unwrap_or_default();
    assert!(html.contains("<em>done</em>"), "{body}");
    let file = h.dir.join(format!("sync_{note}.zpln"));
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.contains("FINISHED"), "{saved}");
}
