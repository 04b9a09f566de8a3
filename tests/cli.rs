//! The `wsloop` binary: starts in echo mode, SIGTERM shuts it down
//! gracefully (close 1001 to open connections, exit status 0), and running
//! out of file descriptors makes it back off rather than spin.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::RawClient;

/// A running `wsloop` process, killed if the test ends early.
struct Wsloop {
    child: Child,
    addr: SocketAddr,
    log: Option<JoinHandle<Vec<String>>>,
}

impl Wsloop {
    /// Starts `wsloop --echo` on a free port under `sh -c "<prelude> exec wsloop …"`.
    fn start(prelude: &str) -> Wsloop {
        let script = format!("{prelude} exec \"$0\" --echo --listen 127.0.0.1:0 --log-level info");
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .arg(env!("CARGO_BIN_EXE_wsloop"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsloop");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let addr = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.kill();
                panic!("wsloop exited before listening");
            }
            if let Some(rest) = line.split("listening on ws://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining stderr so logging never blocks the server.
        let log = std::thread::spawn(move || stderr.lines().map_while(Result::ok).collect());
        Wsloop {
            child,
            addr,
            log: Some(log),
        }
    }

    fn terminate(&mut self) -> (ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = self.child.wait().unwrap();
        let log = self.log.take().unwrap().join().unwrap().join("\n");
        (status, log)
    }

    /// CPU time (user + system) used so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        // utime and stime are fields 14 and 15 of stat: 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for Wsloop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigterm_closes_connections_with_1001_and_exits_0() {
    let mut server = Wsloop::start("");
    let mut client = RawClient::open(server.addr, "/");
    client.send_frame(0x81, b"before shutdown");
    assert_eq!(client.read_frame().unwrap().payload, b"before shutdown");

    let pid = server.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
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
    for option in ["--listen", "--echo", "--log-level"] {
        assert!(
            help.contains(option),
            "{option} missing from --help:\n{help}"
        );
    }
}

#[test]
fn running_out_of_descriptors_backs_off_instead_of_spinning_and_recovers() {
    // 16 descriptors: the process needs about 8 for itself.
    let mut server = Wsloop::start("ulimit -n 16 &&");
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
