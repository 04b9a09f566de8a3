//! The `wsloop` binary: starts in echo mode, and SIGTERM shuts it down
//! gracefully (close 1001 to open connections, exit status 0).

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::RawClient;

#[test]
fn sigterm_closes_connections_with_1001_and_exits_0() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--echo", "--listen", "127.0.0.1:0", "--log-level", "info"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsloop");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "wsloop exited before listening"
        );
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so logging never blocks the server.
    let drain =
        std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect::<Vec<_>>());

    let mut client = RawClient::open(addr, "/");
    client.send_frame(0x81, b"before shutdown");
    assert_eq!(client.read_frame().unwrap().payload, b"before shutdown");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.expect_close(), 1001);
    client.send_frame(0x88, &1001u16.to_be_bytes());
    let replied = std::time::Instant::now();
    client.expect_eof();

    let exit = child.wait().unwrap();
    // With every closing handshake finished there is nothing to wait for:
    // the server must not sit out its 5 s close timeout.
    assert!(
        replied.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        replied.elapsed()
    );
    assert!(exit.success(), "exit status {exit:?}");
    let log = drain.join().unwrap().join("\n");
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn help_lists_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for option in ["--listen", "--echo", "--log-level"] {
        assert!(
            help.contains(option),
            "{option} missing from --help:\n{help}"
        );
    }
}
