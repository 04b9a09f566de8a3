//! Persistence across a crash: every change the server acknowledged is on
//! disk when it is killed with SIGKILL, and served again after a restart.

mod common;

use common::{JsonClient, Wsloop};
use serde_json::json;

fn start(dir: &std::path::Path) -> Wsloop {
    Wsloop::start("", &["--notebook-dir", dir.to_str().unwrap()])
}

fn kill_9(server: &mut Wsloop) {
    server.child.kill().unwrap();
    let status = server.child.wait().unwrap();
    assert!(!status.success(), "SIGKILL, not a clean exit: {status:?}");
}

#[test]
fn acknowledged_changes_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("wsloop-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let mut server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    client.send_op("NEW_NOTE", json!({ "name": "durable" }));
    let note = client.expect("NEW_NOTE")["note"].clone();
    let note_id = note["id"].as_str().unwrap().to_owned();
    let first = note["paragraphs"][0]["id"].as_str().unwrap().to_owned();
    client.expect("NOTES_INFO");
    client.send_op(
        "COMMIT_PARAGRAPH",
        json!({ "id": first, "paragraph": "%md committed", "title": "T" }),
    );
    client.expect("PARAGRAPH");
    client.send_op("INSERT_PARAGRAPH", json!({ "index": 1 }));
    let second = client.expect("PARAGRAPH_ADDED")["paragraph"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": second, "paragraph": "%sql select 40+2 as answer" }),
    );
    loop {
        let paragraph = client.expect("PARAGRAPH")["paragraph"].clone();
        if paragraph["status"] == "FINISHED" {
            break;
        }
    }
    // A run in progress and one queued behind it (same interpreter, so the
    // same lane) when the server dies.
    let forever = "%sql with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c";
    let mut cut_short = Vec::new();
    for index in [2, 3] {
        client.send_op("INSERT_PARAGRAPH", json!({ "index": index }));
        let added = client.expect("PARAGRAPH_ADDED")["paragraph"]["id"].clone();
        cut_short.push(added.as_str().unwrap().to_owned());
    }
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": cut_short[0], "paragraph": forever }),
    );
    assert_eq!(client.expect("PARAGRAPH")["paragraph"]["status"], "PENDING");
    assert_eq!(client.expect("PARAGRAPH")["paragraph"]["status"], "RUNNING");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": cut_short[1], "paragraph": "%sql select 'queued'" }),
    );
    assert_eq!(client.expect("PARAGRAPH")["paragraph"]["status"], "PENDING");
    kill_9(&mut server);

    let mut server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    client.send_op("LIST_NOTES", json!({}));
    assert_eq!(
        client.expect("NOTES_INFO")["notes"],
        json!([{ "id": note_id, "path": "/durable" }])
    );
    client.send_op("GET_NOTE", json!({ "id": note_id }));
    let note = client.expect("NOTE")["note"].clone();
    assert_eq!(note["paragraphs"][0]["text"], "%md committed");
    assert_eq!(note["paragraphs"][0]["title"], "T");
    assert_eq!(note["paragraphs"][1]["id"], second);
    assert_eq!(note["paragraphs"][1]["status"], "FINISHED");
    assert_eq!(
        note["paragraphs"][1]["results"]["msg"][0]["data"],
        "answer\n42"
    );
    // No job survives the restart: what was running or queued is ABORT
    // (as Zeppelin loads it), and runs again on request.
    for (index, id) in [(2, &cut_short[0]), (3, &cut_short[1])] {
        assert_eq!(note["paragraphs"][index]["id"], id.as_str());
        assert_eq!(note["paragraphs"][index]["status"], "ABORT", "{id}");
    }
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": cut_short[1], "paragraph": "%md *again*" }),
    );
    loop {
        let paragraph = client.expect("PARAGRAPH")["paragraph"].clone();
        if paragraph["status"] == "FINISHED" {
            break;
        }
    }

    // A deletion is durable too.
    client.send_op("DEL_NOTE", json!({ "id": note_id }));
    client.expect("NOTES_INFO");
    kill_9(&mut server);
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    client.send_op("LIST_NOTES", json!({}));
    assert_eq!(client.expect("NOTES_INFO")["notes"], json!([]));
    drop(client);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}
