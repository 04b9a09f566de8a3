//! Note writes happen off the event loop (a writer thread with group
//! commit): editors cannot stall other clients, an acknowledgment is sent
//! only once its change is on disk, and a write that fails is reported
//! instead of leaving a run hanging.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{JsonClient, TestServer, bystander_round_trips, quantile};
use serde_json::{Value, json};
use wsloop::ServerConfig;
use wsloop::notebook::{NotebookConfig, NotebookHandler};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-durability-{name}-{}", std::process::id()));
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

/// Creates a note named `name`; returns its id and its first paragraph's.
fn new_note(client: &mut JsonClient, name: &str) -> (String, String) {
    client.send_op("NEW_NOTE", json!({ "name": name }));
    let note = loop {
        let message = client.recv();
        if message["op"] == "NEW_NOTE" {
            break message["data"]["note"].clone();
        }
    };
    let id = note["id"].as_str().unwrap().to_owned();
    let paragraph = note["paragraphs"][0]["id"].as_str().unwrap().to_owned();
    (id, paragraph)
}

/// The next message with op `op`, skipping others (NOTES_INFO etc.).
fn next(client: &mut JsonClient, op: &str) -> Value {
    loop {
        let message = client.recv();
        if message["op"] == op {
            return message["data"].clone();
        }
    }
}

/// The text of the note file for `note_id` on disk.
fn on_disk(dir: &Path, note_id: &str) -> String {
    let suffix = format!("_{note_id}.zpln");
    let file = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .expect("the note's file");
    std::fs::read_to_string(file.path()).unwrap()
}

#[test]
fn twenty_editors_neither_stall_a_bystander_nor_get_ahead_of_the_disk() {
    // With each change fsynced on the loop thread, 20 editors stalled
    // other clients for seconds.
    let dir = temp_dir("editors");
    let server = start(&dir);
    let addr = server.addr;
    let stop = AtomicBool::new(false);
    let (times, commits) = std::thread::scope(|scope| {
        let bystander = scope.spawn(|| bystander_round_trips(addr, &stop));
        let editors: Vec<_> = (0..20)
            .map(|i| {
                let (stop, dir) = (&stop, &dir);
                scope.spawn(move || {
                    let mut client = JsonClient::open(addr);
                    let (note_id, paragraph_id) = new_note(&mut client, &format!("editor {i}"));
                    let mut commits = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let text = format!("%md edit {i}-{commits}");
                        client.send_op(
                            "COMMIT_PARAGRAPH",
                            json!({ "id": paragraph_id, "noteId": note_id, "paragraph": text }),
                        );
                        let paragraph = next(&mut client, "PARAGRAPH");
                        assert_eq!(paragraph["paragraph"]["text"], text.as_str());
                        // Acknowledged: it must be on disk already.
                        assert!(
                            on_disk(dir, &note_id).contains(&text),
                            "acknowledged before it was written: {text}"
                        );
                        commits += 1;
                    }
                    commits
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        let commits: u32 = editors.into_iter().map(|e| e.join().unwrap()).sum();
        (bystander.join().unwrap(), commits)
    });
    let (p99, max) = (quantile(&times, 0.99), quantile(&times, 1.0));
    eprintln!(
        "{} bystander round trips: p50 {:?} p99 {p99:?} max {max:?}; {commits} commits",
        times.len(),
        quantile(&times, 0.5)
    );
    assert!(commits >= 20, "every editor committed");
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    assert!(max < Duration::from_millis(500), "max {max:?}");
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_whose_result_cannot_be_saved_still_ends_and_says_so() {
    let dir = temp_dir("unsaveable");
    let server = start(&dir);
    let mut client = JsonClient::open(server.addr);
    let (note_id, paragraph_id) = new_note(&mut client, "doomed");
    // The database connection opens on the first %sql run and stays open:
    // open it now, so breaking the directory below cannot race the job
    // thread opening it (RUNNING is sent when the run is handed over).
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph_id, "noteId": note_id, "paragraph": "%sql select 1" }),
    );
    loop {
        let paragraph = next(&mut client, "PARAGRAPH");
        if paragraph["paragraph"]["status"] == "FINISHED" {
            break;
        }
    }
    // A query that runs long enough to break the disk under it.
    let query = "%sql with recursive c(x) as (select 1 union all select x + 1 from c limit 3000000) select count(*) from c";
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph_id, "noteId": note_id, "paragraph": query }),
    );
    loop {
        let paragraph = next(&mut client, "PARAGRAPH");
        if paragraph["paragraph"]["status"] == "RUNNING" {
            break;
        }
    }
    // No write can succeed now, not even as root: the directory is a file.
    let moved = dir.with_extension("moved");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"the disk is gone").unwrap();
    let started = Instant::now();
    let mut ended = None;
    let mut told = None;
    while ended.is_none() || told.is_none() {
        let message = client.recv();
        match message["op"].as_str() {
            Some("PARAGRAPH") => {
                let status = message["data"]["paragraph"]["status"].as_str().unwrap();
                if !matches!(status, "PENDING" | "RUNNING") {
                    ended = Some(status.to_owned());
                }
            }
            Some("ERROR_INFO") => told = Some(message["data"]["info"].to_string()),
            _ => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the run never ended"
        );
    }
    let told = told.unwrap();
    assert!(told.contains("could not be saved"), "{told}");
    assert_eq!(ended.as_deref(), Some("FINISHED"));
    drop(client);
    drop(server);
    std::fs::remove_file(&dir).unwrap();
    std::fs::remove_dir_all(&moved).unwrap();
}
