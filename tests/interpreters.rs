//! Child-process interpreters over real WebSocket connections: `%python`
//! keeps state, shows a trailing expression, reports exceptions, streams
//! output to watchers while it runs, is cancelled and capped, and comes
//! back after being killed; `%sh` reports exit status and loses its whole
//! process group on cancel; no child outlives the server.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{JsonClient, TestServer, Wsloop};
use serde_json::{Value, json};
use wsloop::ServerConfig;
use wsloop::notebook::{NotebookConfig, NotebookHandler};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsloop-interp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn start(dir: &Path, notebook: NotebookConfig) -> TestServer {
    let handler = NotebookHandler::open(NotebookConfig {
        notebook_dir: dir.to_path_buf(),
        ..notebook
    })
    .expect("open notebook");
    TestServer::start(ServerConfig::default(), handler)
}

/// A note with one paragraph, watched by `client`: (note id, paragraph id).
fn new_note(client: &mut JsonClient, name: &str) -> (String, String) {
    client.send_op("NEW_NOTE", json!({ "name": name }));
    let note = client.expect("NEW_NOTE")["note"].clone();
    client.expect("NOTES_INFO");
    let note_id = note["id"].as_str().unwrap().to_owned();
    let paragraph = note["paragraphs"][0]["id"].as_str().unwrap().to_owned();
    (note_id, paragraph)
}

fn watch(client: &mut JsonClient, note_id: &str) {
    client.send_op("GET_NOTE", json!({ "id": note_id }));
    client.expect("NOTE");
}

/// Runs `text` in `paragraph` and returns the final PARAGRAPH (skipping
/// PENDING, RUNNING and streamed output).
fn run(client: &mut JsonClient, paragraph: &str, text: &str) -> Value {
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": text }),
    );
    final_paragraph(client)
}

fn final_paragraph(client: &mut JsonClient) -> Value {
    loop {
        let message = client.recv();
        if message["op"] != "PARAGRAPH" {
            continue;
        }
        let paragraph = message["data"]["paragraph"].clone();
        if !matches!(paragraph["status"].as_str(), Some("PENDING" | "RUNNING")) {
            return paragraph;
        }
    }
}

fn output(paragraph: &Value) -> String {
    paragraph["results"]["msg"]
        .as_array()
        .map(|msg| {
            msg.iter()
                .map(|m| m["data"].as_str().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Reads streamed output until `pattern` appears in it; returns it all.
fn stream_until(client: &mut JsonClient, pattern: &str) -> String {
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let message = client.recv();
        match message["op"].as_str() {
            Some("PARAGRAPH_UPDATE_OUTPUT" | "PARAGRAPH_APPEND_OUTPUT") => {
                seen.push_str(message["data"]["data"].as_str().unwrap_or(""));
                if seen.contains(pattern) {
                    return seen;
                }
            }
            Some("PARAGRAPH") => {
                let status = message["data"]["paragraph"]["status"].as_str();
                assert!(
                    matches!(status, Some("PENDING" | "RUNNING")),
                    "the run ended before streaming {pattern:?}: {message}"
                );
            }
            _ => {}
        }
    }
    panic!("{pattern:?} was not streamed; got {seen:?}");
}

fn alive(pid: u32) -> bool {
    // A zombie is not alive: it ran its course and waits to be reaped.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    !alive(pid)
}

fn first_number(text: &str) -> u32 {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no number in {text:?}"))
}

#[test]
fn python_keeps_state_shows_the_last_value_and_reports_exceptions() {
    let dir = temp_dir("python");
    let server = start(&dir, NotebookConfig::default());
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "py");

    let done = run(&mut client, &paragraph, "%python\nx = 40\nprint('set')");
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(output(&done), "set\n");

    let done = run(&mut client, &paragraph, "%python x + 2");
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(
        output(&done),
        "42\n",
        "state kept and the trailing value shown"
    );

    let done = run(
        &mut client,
        &paragraph,
        "%python.python\ndef f():\n    return 1 / 0\nf()",
    );
    assert_eq!(done["status"], "ERROR", "{done}");
    let text = output(&done);
    assert!(
        text.contains("Traceback") && text.contains("ZeroDivisionError"),
        "{text}"
    );
    assert!(
        !text.contains("driver"),
        "the driver's frames are hidden: {text}"
    );

    let done = run(
        &mut client,
        &paragraph,
        "%python\nprint('%html <b>bold</b>')\nprint('%table a\\tb\\n1\\t2')",
    );
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(done["results"]["msg"][0]["type"], "HTML", "{done}");
    assert_eq!(done["results"]["msg"][1]["type"], "TABLE", "{done}");
    assert_eq!(done["results"]["msg"][1]["data"], "a\tb\n1\t2\n");
}

#[test]
fn python_output_streams_to_a_second_watcher_before_the_end() {
    let dir = temp_dir("stream");
    let server = start(&dir, NotebookConfig::default());
    let mut runner = JsonClient::open(server.addr);
    let (note_id, paragraph) = new_note(&mut runner, "stream");
    let mut watcher = JsonClient::open(server.addr);
    watch(&mut watcher, &note_id);
    runner.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%python\nimport time\nprint('first')\ntime.sleep(1)\nprint('second')" }),
    );
    let seen = stream_until(&mut watcher, "first");
    assert!(
        !seen.contains("second"),
        "streamed before the end: {seen:?}"
    );
    let done = final_paragraph(&mut watcher);
    assert_eq!(done["status"], "FINISHED");
    assert_eq!(output(&done), "first\nsecond\n");
}

#[test]
fn python_cancel_aborts_and_keeps_the_interpreter() {
    let dir = temp_dir("cancel");
    let server = start(&dir, NotebookConfig::default());
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "cancel");
    run(&mut client, &paragraph, "%python kept = 'yes'");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%python\nimport time\nprint('sleeping')\ntime.sleep(60)" }),
    );
    stream_until(&mut client, "sleeping");
    let asked = Instant::now();
    client.send_op("CANCEL_PARAGRAPH", json!({ "id": paragraph }));
    let done = final_paragraph(&mut client);
    assert_eq!(done["status"], "ABORT", "{done}");
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let done = run(&mut client, &paragraph, "%python kept");
    assert_eq!(
        output(&done),
        "'yes'\n",
        "same interpreter after the cancel"
    );
}

#[test]
fn a_flooding_paragraph_is_capped_and_does_not_starve_others() {
    let dir = temp_dir("flood");
    let server = start(
        &dir,
        NotebookConfig {
            max_result_bytes: 64 * 1024,
            ..NotebookConfig::default()
        },
    );
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "flood");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%python\nwhile True: print(1)" }),
    );
    stream_until(&mut client, "1\n1\n");
    // Another client is served while the child floods.
    let mut bystander = JsonClient::open(server.addr);
    for _ in 0..5 {
        let sent = Instant::now();
        bystander.send_op("LIST_CONFIGURATIONS", json!({}));
        bystander.expect("CONFIGURATIONS_INFO");
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{:?}",
            sent.elapsed()
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    client.send_op("CANCEL_PARAGRAPH", json!({ "id": paragraph }));
    let done = final_paragraph(&mut client);
    assert_eq!(done["status"], "ABORT");
    let text = output(&done);
    assert!(
        text.len() < 64 * 1024 + 1024,
        "capped: {} bytes",
        text.len()
    );
    assert!(
        text.contains("Output exceeds 65536 bytes"),
        "notice: {}",
        &text[text.len().saturating_sub(300)..]
    );
}

#[test]
fn a_python_killed_from_outside_errors_and_restarts() {
    let dir = temp_dir("killed");
    let server = start(&dir, NotebookConfig::default());
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "killed");
    run(&mut client, &paragraph, "%python lost = 1");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%python\nimport os, time\nprint(os.getpid())\ntime.sleep(60)" }),
    );
    let pid = first_number(&stream_until(&mut client, "\n"));
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let done = final_paragraph(&mut client);
    assert_eq!(done["status"], "ERROR", "{done}");
    assert!(
        output(&done).contains("python interpreter exited: signal 9 (SIGKILL)"),
        "{done}"
    );
    let done = run(&mut client, &paragraph, "%python 'lost' in globals()");
    assert_eq!(output(&done), "False\n", "a new interpreter");
}

#[test]
fn shell_paragraphs_report_exit_status_and_cancel_kills_their_group() {
    let dir = temp_dir("sh");
    let server = start(&dir, NotebookConfig::default());
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "sh");

    let done = run(&mut client, &paragraph, "%sh echo out; echo err >&2");
    assert_eq!(done["status"], "FINISHED", "{done}");
    assert_eq!(output(&done), "out\nerr\n");

    let done = run(&mut client, &paragraph, "%sh.sh\necho partial\nexit 3");
    assert_eq!(done["status"], "ERROR", "{done}");
    assert_eq!(output(&done), "partial\nExited with exit status 3.\n");

    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": paragraph, "paragraph": "%sh\nsleep 300 &\necho $!\nwait" }),
    );
    let sleeper = first_number(&stream_until(&mut client, "\n"));
    assert!(alive(sleeper));
    client.send_op("CANCEL_PARAGRAPH", json!({ "id": paragraph }));
    let done = final_paragraph(&mut client);
    assert_eq!(done["status"], "ABORT", "{done}");
    assert!(
        wait_gone(sleeper, Duration::from_secs(5)),
        "the group's sleep ended"
    );
}

/// Starts the wsloop binary with a notebook in `dir`, runs a `%python` and
/// a `%sh` paragraph that leave processes running, and returns their pids.
fn server_with_children(dir: &Path) -> (Wsloop, Vec<u32>) {
    let dir_arg = dir.to_str().unwrap();
    let server = Wsloop::start("", &["--notebook-dir", dir_arg]);
    let mut client = JsonClient::open(server.addr);
    let (_, first) = new_note(&mut client, "left");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": first, "paragraph": "%python\nimport os, time\nprint(os.getpid())\ntime.sleep(300)" }),
    );
    let python = first_number(&stream_until(&mut client, "\n"));
    let (_, second) = new_note(&mut client, "left-sh");
    client.send_op(
        "RUN_PARAGRAPH",
        json!({ "id": second, "paragraph": "%sh\nsleep 300 &\necho $!\nwait" }),
    );
    let sleeper = first_number(&stream_until(&mut client, "\n"));
    assert!(alive(python) && alive(sleeper));
    (server, vec![python, sleeper])
}

#[test]
fn no_child_outlives_the_server_after_sigterm_or_kill_9() {
    let dir = temp_dir("outlive-term");
    let (mut server, pids) = server_with_children(&dir);
    let (status, _) = server.terminate();
    assert!(status.success());
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "{pid} outlived SIGTERM"
        );
    }

    let dir = temp_dir("outlive-kill");
    let (mut server, pids) = server_with_children(&dir);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)),
            "{pid} outlived kill -9"
        );
    }
}

#[test]
fn code_interpreters_are_refused_to_anonymous_users_beyond_loopback() {
    let dir = temp_dir("refused");
    let exposed = NotebookConfig {
        listens_on_loopback: false,
        ..NotebookConfig::default()
    };
    let server = start(&dir, exposed.clone());
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "exposed");
    for text in ["%python 1", "%sh echo 1", "%spark sc.version", "%pyspark 1"] {
        let done = run(&mut client, &paragraph, text);
        assert_eq!(done["status"], "ERROR", "{text}: {done}");
        assert!(
            output(&done).contains("security.allow_anonymous_code"),
            "{done}"
        );
    }
    let done = run(&mut client, &paragraph, "%md still *fine*");
    assert_eq!(done["status"], "FINISHED", "{done}");
    drop(server);

    let dir = temp_dir("allowed");
    let server = start(
        &dir,
        NotebookConfig {
            allow_anonymous_code: true,
            ..exposed
        },
    );
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "allowed");
    let done = run(&mut client, &paragraph, "%sh echo ran");
    assert_eq!(output(&done), "ran\n", "{done}");
}

#[test]
fn a_missing_interpreter_program_is_a_clear_error() {
    let dir = temp_dir("missing");
    let mut notebook = NotebookConfig::default();
    notebook.interpreters.python = "/nonexistent/python3".to_owned();
    notebook.interpreters.shell = "/nonexistent/bash".to_owned();
    let server = start(&dir, notebook);
    let mut client = JsonClient::open(server.addr);
    let (_, paragraph) = new_note(&mut client, "missing");
    let done = run(&mut client, &paragraph, "%python 1");
    assert_eq!(done["status"], "ERROR", "{done}");
    let text = output(&done);
    assert!(
        text.contains("python interpreter is not available") && text.contains("install Python 3"),
        "{text}"
    );
    let done = run(&mut client, &paragraph, "%sh echo 1");
    assert!(
        output(&done).contains("sh interpreter is not available"),
        "{done}"
    );
    client.send_op("GET_INTERPRETER_BINDINGS", json!({}));
    let bindings = client.expect("INTERPRETER_BINDINGS")["interpreterBindings"].clone();
    let names: Vec<&str> = bindings
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"python") && !names.contains(&"sh"),
        "{names:?}"
    );
    client.send_op("LIST_CONFIGURATIONS", json!({}));
    let configurations = client.expect("CONFIGURATIONS_INFO")["configurations"].clone();
    let listed = configurations["wsloop.interpreters"].as_str().unwrap();
    assert!(
        listed.starts_with("md,sql") && !listed.contains("python"),
        "{listed}"
    );
}
