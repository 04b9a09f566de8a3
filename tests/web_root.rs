//! `--web-dir`: static files at `/` (content types, ETag and 304, HEAD,
//! Cache-Control, path safety), the API and /ws winning over files, and a
//! large file streamed without each connection holding all of it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{JsonClient, TestServer, header_value, http_request, metric};
use wsloop::ServerConfig;
use wsloop::notebook::{NotebookConfig, NotebookHandler};

/// A web root with a few files, a symlink out of it, and a notebook dir.
fn web_root(name: &str) -> (PathBuf, PathBuf) {
    let base = std::env::temp_dir().join(format!("wsloop-webroot-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join("root");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(root.join("index.html"), "<!doctype html><title>ui</title>").unwrap();
    std::fs::write(root.join("main.0123456789abcdef.js"), "console.log(1)").unwrap();
    std::fs::write(root.join("assets/app.css"), "body{}").unwrap();
    std::fs::write(root.join("assets/font.woff2"), [0u8, 1, 2, 255]).unwrap();
    std::fs::write(root.join("healthz"), "a file named like an endpoint").unwrap();
    std::fs::write(base.join("secret.txt"), "outside the root").unwrap();
    std::os::unix::fs::symlink(base.join("secret.txt"), root.join("leak.txt")).unwrap();
    std::os::unix::fs::symlink(base.clone(), root.join("up")).unwrap();
    (base, root)
}

fn start(base: &std::path::Path, root: &std::path::Path) -> TestServer {
    let config = NotebookConfig {
        notebook_dir: base.join("notes"),
        web_dir: Some(root.to_owned()),
        ..NotebookConfig::default()
    };
    TestServer::start(
        ServerConfig::default(),
        NotebookHandler::open(config).unwrap(),
    )
}

fn request(
    server: &TestServer,
    method: &str,
    target: &str,
    headers: &str,
) -> (u16, String, Vec<u8>) {
    http_request(server.addr, method, target, headers, None)
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    header_value(head, name)
}

#[test]
fn files_are_served_with_types_validators_and_caching() {
    let (base, root) = web_root("serve");
    let server = start(&base, &root);

    let (status, head, body) = request(&server, "GET", "/", "");
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"<!doctype html><title>ui</title>");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header(&head, "cache-control"), Some("no-cache"));
    let etag = header(&head, "etag").expect("an ETag").to_owned();

    // Revalidation: the same ETag gets 304 with no body.
    let (status, head, body) = request(
        &server,
        "GET",
        "/index.html",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(status, 304, "{head}");
    assert!(body.is_empty());
    let (status, _, _) = request(&server, "GET", "/", "If-None-Match: \"other\"\r\n");
    assert_eq!(status, 200);

    let (status, head, body) = request(&server, "GET", "/main.0123456789abcdef.js", "");
    assert_eq!(status, 200);
    assert_eq!(body, b"console.log(1)");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        header(&head, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let (_, head, body) = request(&server, "GET", "/assets/font.woff2", "");
    assert_eq!(header(&head, "content-type"), Some("font/woff2"));
    assert_eq!(body, [0u8, 1, 2, 255]);
    let (_, head, _) = request(&server, "GET", "/assets/app.css?v=2", "");
    assert_eq!(
        header(&head, "content-type"),
        Some("text/css; charset=utf-8")
    );

    // HEAD: the length of the body, and no body.
    let (status, head, body) = request(&server, "HEAD", "/assets/app.css", "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-length"), Some("6"));
    assert!(body.is_empty());

    // An edit shows up (after the recheck interval) with a new ETag.
    std::thread::sleep(Duration::from_millis(2100));
    std::fs::write(root.join("index.html"), "<!doctype html><title>new</title>").unwrap();
    let (status, head, body) = request(&server, "GET", "/", &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, b"<!doctype html><title>new</title>");
    assert_ne!(header(&head, "etag"), Some(etag.as_str()));
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn nothing_outside_the_root_and_the_api_wins() {
    let (base, root) = web_root("safety");
    let server = start(&base, &root);
    for target in [
        "/../secret.txt",
        "/assets/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/leak.txt",
        "/up/secret.txt",
        "/index.html%00.js",
        "/missing.js",
        "/assets",
        "/assets/..%5c..%5csecret.txt",
    ] {
        let (status, _, body) = request(&server, "GET", target, "");
        assert_eq!(status, 404, "{target}");
        assert!(!String::from_utf8_lossy(&body).contains("outside the root"));
    }
    let (status, head, _) = request(&server, "POST", "/index.html", "Content-Length: 0\r\n");
    assert_eq!(status, 405);
    assert_eq!(header(&head, "allow"), Some("GET, HEAD"));
    // Endpoints win over files of the same name, and /ws still upgrades.
    let (status, _, body) = request(&server, "GET", "/healthz", "");
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    let (status, _, body) = request(&server, "GET", "/api/security/ticket", "");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"principal\":\"anonymous\""));
    let mut client = JsonClient::open(server.addr);
    client.send_op("LIST_NOTES", serde_json::json!({}));
    client.expect("NOTES_INFO");
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_large_file_streams_without_a_copy_per_connection() {
    let (base, root) = web_root("large");
    // 6 MiB of a pattern that shows any misplaced or missing slice.
    let large: Vec<u8> = (0..6u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &large).unwrap();
    let server = start(&base, &root);
    // Warm the cache, then eight clients ask for it and do not read.
    let (status, _, body) = request(&server, "GET", "/big.bin", "");
    assert_eq!(status, 200);
    assert!(body == large, "the first download differs");
    // Held once, in the cache.
    let cached = metric(server.addr, "wsloop_web_cache_bytes").unwrap();
    assert!((6 << 20..7 << 20).contains(&cached), "{cached}");
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            write!(
                stream,
                "GET /big.bin HTTP/1.1\r\nHost: {}\r\n\r\n",
                server.addr
            )
            .unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Each holds about a slice plus what the kernel took, not 6 MiB.
    let buffered = metric(server.addr, "wsloop_buffered_bytes").unwrap();
    assert!(
        buffered < 8 << 20,
        "{buffered} bytes buffered for 8 stalled downloads of 6 MiB"
    );
    // And each still gets the whole file, exactly.
    for mut stream in stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(all[end..] == large[..], "a stalled download differs");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
}
