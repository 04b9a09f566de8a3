//! The `wsloop` binary: starts in echo mode, SIGTERM shuts it down
//! gracefully (close 1001 to open connections, exit status 0), and running
//! out of file descriptors makes it back off rather than spin.

mod common;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{RawClient, Wsloop};

#[test]
fn sigterm_closes_connections_with_1001_and_exits_0() {
    let mut server = Wsloop::start("", &["--echo"]);
    let mut client = RawClient::open(server.addr, "/");
    client.send_frame(0x81, b"before shutdown");
    assert_eq!(client.read_frame().unwrap().payload, b"before shutdown");

    server.send_sigterm();
    assert_eq!(client.expect_close(), 1001);
    client.send_frame(0x88, &1001u16.to_be_bytes());
    let replied = Instant::now();
    client.expect_eof();
    let status = server.child.wait().unwrap();
    // With every closing handshake finished there is nothing to wait for:
    // the server must not sit out its 5 s close timeout.
    assert!(
        replied.elapsed() < Duration::from_secs(3),
        "{:?}",
        replied.elapsed()
    );
    assert!(status.success(), "exit status {status:?}");
    let log = server.log.take().unwrap().join().unwrap().join("\n");
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
    for option in ["--listen", "--echo", "--notebook-dir", "--log-level"] {
        assert!(
            help.contains(option),
            "{option} missing from --help:\n{help}"
        );
    }
}

#[test]
fn running_out_of_descriptors_backs_off_instead_of_spinning_and_recovers() {
    // 16 descriptors: the process needs about 8 for itself.
    let mut server = Wsloop::start("ulimit -n 16 &&", &["--echo"]);
    let mut first = RawClient::open(server.addr, "/");
    // More connections than descriptors: the kernel completes them into the
    // backlog, the server accepts until EMFILE.
    let waiting: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = server.cpu_ticks();
    std::thread::sleep(Duration::from_secs(1));
    let spent = server.cpu_ticks() - before;
    // A spinning accept loop burns ~100 ticks (one core) in that second.
    assert!(
        spent < 30,
        "server used {spent} ticks of CPU while out of descriptors"
    );
    // Connections it did accept keep working meanwhile.
    first.send_frame(0x81, b"still served");
    assert_eq!(first.read_frame().unwrap().payload, b"still served");

    // Free descriptors: the server works through the backlog and serves anew.
    drop(waiting);
    drop(first);
    let mut client = RawClient::open(server.addr, "/again");
    client.send_frame(0x81, b"recovered");
    assert_eq!(client.read_frame().unwrap().payload, b"recovered");
    drop(client);

    let (status, log) = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(log.contains("pausing accepts"), "{log}");
}

/// Runs `wsloop ARGS` to its end (it must stop by itself); gives its exit
/// code and standard error.
fn run_to_end(args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn listen_takes_a_host_name() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .args(["--echo", "--listen", "localhost:0", "--log-level", "info"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let listening = loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap_or(0) == 0 {
            break None;
        }
        log.push_str(&line);
        if let Some(rest) = line.split("listening on ws://").nth(1) {
            break rest.split(['/', ' ']).next().map(str::to_owned);
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let address: std::net::SocketAddr = listening
        .unwrap_or_else(|| panic!("not listening:\n{log}"))
        .parse()
        .unwrap();
    assert_eq!(address.ip().to_string(), "127.0.0.1", "{log}");
}

#[test]
fn help_says_it_serves_a_notebook_and_where() {
    let output = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    for wanted in [
        "notebook",
        "http://127.0.0.1:8081/",
        "./notebook",
        "HOST:PORT",
    ] {
        assert!(
            help.contains(wanted),
            "{wanted} missing from --help:\n{help}"
        );
    }
}

#[test]
fn a_notebook_directory_it_cannot_write_stops_start_up() {
    // /proc exists and takes no new files, even for root.
    let (code, stderr) = run_to_end(&["--notebook-dir", "/proc", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/proc is not writable"), "{stderr}");
}

#[test]
fn a_config_file_with_several_bad_values_reports_them_all() {
    let dir = std::env::temp_dir().join(format!("wsloop-cli-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(
        &file,
        "busy_poll = \"soon\"\n[limits]\nping_interval = \"often\"\nmax_frame_size = 0\n\
         [notebook]\nsql_timeout = \"forever\"\n",
    )
    .unwrap();
    let (code, stderr) = run_to_end(&["--config", file.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("4 problems"), "{stderr}");
    for key in [
        "busy_poll",
        "limits.ping_interval",
        "limits.max_frame_size",
        "notebook.sql_timeout",
    ] {
        assert!(stderr.contains(key), "{key} not reported:\n{stderr}");
    }
}
