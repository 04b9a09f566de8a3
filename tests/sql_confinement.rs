//! `%sql` over a real WebSocket: a huge result comes back cut to the result
//! budget with a notice, and statements that would reach files outside the
//! notebook's database end in ERROR with the reason.

mod common;

use std::path::{Path, PathBuf};

use common::{JsonClient, TestServer};
use serde_json::{Value, json};
use wsloop::ServerConfig;
use wsloop::notebook::{NotebookConfig, NotebookHandler};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-sql-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(dir: &Path) -> TestServer {
    let handler = NotebookHandler::open(NotebookConfig {
        notebook_dir: dir.to_path_buf(),
        ..NotebookConfig::default()
    })
    .expect("open notebook");
    TestServer::start(ServerConfig::default(), handler)
}

/// Runs `text` as paragraph `id`; returns the final PARAGRAPH update's
/// paragraph and the size of the message that carried it.
fn run(client: &mut JsonClient, id: &str, text: &str) -> (Value, usize) {
    client.send_op("RUN_PARAGRAPH", json!({ "id": id, "paragraph": text }));
    loop {
        let frame = client.raw.read_frame().expect("a message");
        if frame.opcode != 1 {
            continue;
        }
        let message: Value = serde_json::from_slice(&frame.payload).unwrap();
        if message["op"] != "PARAGRAPH" {
            continue;
        }
        let paragraph = message["data"]["paragraph"].clone();
        if !matches!(paragraph["status"].as_str(), Some("PENDING" | "RUNNING")) {
            return (paragraph, frame.payload.len());
        }
    }
}

#[test]
fn a_100_mb_result_arrives_cut_to_the_budget_with_a_notice() {
    let dir = temp_dir("big-result");
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    // 1000 rows of 100 KB: 100 MB of result.
    let query = "%sql with recursive c(x) as (select 1 union all select x + 1 from c limit 1000) select x, printf('%.*c', 100000, 'y') as s from c";
    let (paragraph, message_size) = run(&mut client, "big", query);
    assert_eq!(paragraph["status"], "FINISHED", "{}", paragraph["results"]);
    let results = serde_json::to_string(&paragraph["results"]).unwrap();
    assert!(
        results.len() <= 1_100 * 1024,
        "results of {} bytes",
        results.len()
    );
    assert!(
        message_size <= 1_200 * 1024,
        "message of {message_size} bytes"
    );
    let msg = &paragraph["results"]["msg"];
    assert_eq!(msg.as_array().unwrap().len(), 2);
    assert_eq!(msg[0]["type"], "TABLE");
    assert!(msg[0]["data"].as_str().unwrap().starts_with("x\ts\n1\tyyy"));
    assert_eq!(msg[1]["type"], "TEXT");
    let notice = msg[1]["data"].as_str().unwrap();
    assert!(
        notice.starts_with("Output truncated at 1 MiB")
            && notice.contains("notebook.max_result_bytes"),
        "{notice}"
    );
    drop(client);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn attach_and_vacuum_into_end_in_error_and_create_nothing() {
    let dir = temp_dir("attach");
    let outside = temp_dir("attach-outside");
    std::fs::create_dir_all(&outside).unwrap();
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    let cases = [
        (
            format!(
                "%sql ATTACH DATABASE '{}' AS x",
                outside.join("x.db").display()
            ),
            "not authorized: ATTACH is disabled in wsloop's %sql",
        ),
        (
            format!("%sql VACUUM INTO '{}'", outside.join("y.db").display()),
            "not authorized: VACUUM INTO is disabled in wsloop's %sql",
        ),
    ];
    for (text, error) in cases {
        let (paragraph, _) = run(&mut client, "escape", &text);
        assert_eq!(paragraph["status"], "ERROR", "{text}");
        assert_eq!(
            paragraph["results"]["msg"],
            json!([{ "type": "TEXT", "data": error }]),
            "{text}"
        );
    }
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // Plain VACUUM of the notebook's own database works.
    let (paragraph, _) = run(&mut client, "vacuum", "%sql VACUUM");
    assert_eq!(paragraph["status"], "FINISHED", "{}", paragraph["results"]);
    drop(client);
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}
