//! Static files from a web root (`--web-dir`), such as a build of
//! Zeppelin's own web UI. Files are read, checked and hashed on a worker
//! thread, never on the event loop: a request for a file not in the cache
//! is deferred (see `Context::defer`) until the worker has it. Read files
//! are kept once in memory as `Arc<[u8]>`, shared by every response that
//! sends them; the server streams such a body to each peer a slice at a
//! time as it takes it, so no connection holds a copy of a whole file.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::handler::ConnectionId;
use crate::proto::{HttpRequest, HttpResponse};
use crate::server::Notifier;

/// Default of [`WebRootConfig::cache_bytes`]: 256 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 256 * 1024 * 1024;

/// A cached file is checked against the disk again (on the worker) when
/// it was last checked longer ago than this, so edits show up.
const RECHECK_AFTER: Duration = Duration::from_secs(2);

/// Lookups the worker may have queued; more requests are answered `503`.
const MAX_QUEUED_LOOKUPS: usize = 256;

/// An answer kept for a deferred request that its connection never
/// collected (it went away) is dropped after this long.
const ANSWER_LIFETIME: Duration = Duration::from_secs(30);

/// Settings of the web root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebRootConfig {
    /// The folder served at `/` (`index.html` for `/`).
    pub dir: PathBuf,
    /// Most bytes of files kept in memory; the least recently used go
    /// first. A file larger than this is not served (`404`, logged).
    /// Default [`DEFAULT_CACHE_BYTES`].
    pub cache_bytes: usize,
}

/// A file read from the web root.
#[derive(Debug)]
pub struct StaticFile {
    /// Its contents, shared by every response sending it.
    pub body: Arc<[u8]>,
    /// A strong validator from its length and modification time.
    pub etag: String,
    /// Its `Content-Type`, from its extension.
    pub content_type: &'static str,
    /// Its `Cache-Control`: hashed bundle names are immutable, the rest
    /// revalidated on every use.
    pub cache_control: &'static str,
}

/// What the worker found for one path.
#[derive(Debug, Clone)]
enum Lookup {
    Found(Arc<StaticFile>),
    /// Missing, a folder, outside the root (symlink), unreadable, or
    /// larger than the cache.
    NotFound,
}

/// A cached file and when it was last checked against the disk.
struct Cached {
    file: Arc<StaticFile>,
    checked_at: Instant,
    last_used: Instant,
}

/// One lookup for the worker: the path relative to the root, and the
/// validator of the cached copy, if any (unchanged: no re-read).
struct Job {
    relative: String,
    cached_etag: Option<String>,
}

/// The worker's answer for one path; `None`: the cached copy is current.
struct Done {
    relative: String,
    lookup: Option<Lookup>,
}

/// The web root: its cache, its worker, and the requests waiting for it.
pub struct WebRoot {
    config: WebRootConfig,
    cache: HashMap<String, Cached>,
    cached_bytes: usize,
    /// Paths being looked up, with the requests waiting for each.
    waiting: HashMap<String, Vec<ConnectionId>>,
    /// Answers for deferred requests, taken when they are offered again.
    answers: HashMap<ConnectionId, (Lookup, Instant)>,
    sender: Option<SyncSender<Job>>,
    done: Arc<Mutex<Vec<Done>>>,
    worker: Option<JoinHandle<()>>,
}

/// What the handler should do with a request for a file.
pub enum Served {
    /// Answer with this.
    Response(HttpResponse),
    /// The worker is looking it up: defer the request, it is resumed
    /// when the answer is in.
    Deferred,
}

impl WebRoot {
    /// A web root for `config.dir`; nothing is read until [`WebRoot::start`].
    pub fn new(config: WebRootConfig) -> WebRoot {
        WebRoot {
            config,
            cache: HashMap::new(),
            cached_bytes: 0,
            waiting: HashMap::new(),
            answers: HashMap::new(),
            sender: None,
            done: Arc::default(),
            worker: None,
        }
    }

    /// Starts the worker thread; it notifies the loop after each lookup.
    pub fn start(&mut self, notifier: Notifier) {
        let (sender, receiver) = mpsc::sync_channel(MAX_QUEUED_LOOKUPS);
        let done = self.done.clone();
        let root = self.config.dir.clone();
        let max_file = self.config.cache_bytes;
        let spawned = std::thread::Builder::new()
            .name("wsloop-web-root".to_owned())
            .spawn(move || run_lookups(&root, max_file, receiver, done, notifier));
        match spawned {
            Ok(worker) => {
                self.sender = Some(sender);
                self.worker = Some(worker);
            }
            Err(error) => log::warn!("web root: could not start its worker: {error}"),
        }
    }

    /// Answers a `GET` or `HEAD` for `request`'s path, from the cache or
    /// an answer the worker left for this request (`conn`), or asks the
    /// worker and says to defer.
    pub fn serve(
        &mut self,
        conn: Option<ConnectionId>,
        request: &HttpRequest<'_>,
        now: Instant,
    ) -> Served {
        let Some(relative) = relative_path(request.path()) else {
            return Served::Response(HttpResponse::not_found());
        };
        if let Some((lookup, _)) = conn.and_then(|id| self.answers.remove(&id)) {
            return Served::Response(respond(&lookup, request));
        }
        let cached_etag = match self.cache.get_mut(&relative) {
            Some(cached) if now.duration_since(cached.checked_at) < RECHECK_AFTER => {
                cached.last_used = now;
                let lookup = Lookup::Found(cached.file.clone());
                return Served::Response(respond(&lookup, request));
            }
            Some(cached) => Some(cached.file.etag.clone()),
            None => None,
        };
        let Some(conn) = conn else {
            return Served::Response(busy());
        };
        if let Some(waiters) = self.waiting.get_mut(&relative) {
            waiters.push(conn);
            return Served::Deferred;
        }
        let Some(sender) = &self.sender else {
            return Served::Response(busy());
        };
        let job = Job {
            relative: relative.clone(),
            cached_etag,
        };
        match sender.try_send(job) {
            Ok(()) => {
                self.waiting.insert(relative, vec![conn]);
                Served::Deferred
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Served::Response(busy()),
        }
    }

    /// Takes the worker's answers: updates the cache and returns the
    /// requests to offer again.
    pub fn collect(&mut self, now: Instant) -> Vec<ConnectionId> {
        self.answers
            .retain(|_, (_, at)| now.duration_since(*at) < ANSWER_LIFETIME);
        let done = std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()));
        let mut resumed = Vec::new();
        for Done { relative, lookup } in done {
            let lookup = match lookup {
                // Unchanged on disk: the cached copy stays, checked now.
                None => match self.cache.get_mut(&relative) {
                    Some(cached) => {
                        cached.checked_at = now;
                        Lookup::Found(cached.file.clone())
                    }
                    None => Lookup::NotFound,
                },
                Some(lookup) => {
                    self.store(&relative, &lookup, now);
                    lookup
                }
            };
            for conn in self.waiting.remove(&relative).unwrap_or_default() {
                self.answers.insert(conn, (lookup.clone(), now));
                resumed.push(conn);
            }
        }
        resumed
    }

    /// Puts a fresh lookup in the cache (or takes a vanished file out),
    /// then evicts the least recently used files past the budget.
    fn store(&mut self, relative: &str, lookup: &Lookup, now: Instant) {
        if let Some(old) = self.cache.remove(relative) {
            self.cached_bytes -= old.file.body.len();
        }
        let Lookup::Found(file) = lookup else {
            return;
        };
        self.cached_bytes += file.body.len();
        self.cache.insert(
            relative.to_owned(),
            Cached {
                file: file.clone(),
                checked_at: now,
                last_used: now,
            },
        );
        while self.cached_bytes > self.config.cache_bytes {
            let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(path, _)| path.clone())
            else {
                break;
            };
            if let Some(evicted) = self.cache.remove(&oldest) {
                self.cached_bytes -= evicted.file.body.len();
            }
        }
    }

    /// Bytes of files held in the cache.
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }
}

impl Drop for WebRoot {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn busy() -> HttpResponse {
    HttpResponse::text(503, "busy reading files; try again in a moment\n")
        .with_header("Retry-After", "1")
}

/// The response for a looked-up file: `304` when the request's
/// `If-None-Match` names its ETag, else the file (sent from the shared
/// copy).
fn respond(lookup: &Lookup, request: &HttpRequest<'_>) -> HttpResponse {
    let Lookup::Found(file) = lookup else {
        return HttpResponse::not_found();
    };
    let revalidated = request.header_str("if-none-match").is_some_and(|tags| {
        tags.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == file.etag)
    });
    let response = if revalidated {
        HttpResponse::with_body(304, file.content_type, Vec::new())
    } else {
        let mut response = HttpResponse::with_body(200, file.content_type, Vec::new());
        response.shared_body = Some(file.body.clone());
        response
    };
    response
        .with_header("ETag", file.etag.clone())
        .with_header("Cache-Control", file.cache_control)
        .with_header("X-Content-Type-Options", "nosniff")
}

/// The file a request path names, relative to the root, percent-decoded:
/// `index.html` for `/` (and for a path ending in `/`). `None` for a path
/// that could leave the root: `..` segments (also encoded), backslashes,
/// NUL, or a path that is not valid UTF-8 once decoded.
pub fn relative_path(request_path: &str) -> Option<String> {
    let decoded = percent_decode(request_path.strip_prefix('/')?)?;
    if decoded.contains(['\0', '\\']) {
        return None;
    }
    let mut segments = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return None,
            other => segments.push(other),
        }
    }
    if decoded.is_empty() || decoded.ends_with('/') {
        segments.push("index.html");
    }
    let relative = segments.join("/");
    // A component Path would read as a root or prefix (cannot come from
    // the segments above, but the file system gets the last word).
    Path::new(&relative)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(relative)
}

/// `%XX` escapes decoded; `None` for a malformed escape or bytes that are
/// not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` of a file, from its extension.
pub fn content_type(relative: &str) -> &'static str {
    let extension = relative
        .rsplit_once('.')
        .map_or("", |(_, ext)| ext)
        .to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "eot" => "application/vnd.ms-fontobject",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        _ => "application/octet-stream",
    }
}

/// `Cache-Control` for a file: a name carrying a content hash
/// (`main.4f9c2a1b0d3e5f67.js`: a segment of 8 or more hex digits before
/// the extension) never changes, so browsers keep it a year; anything
/// else is revalidated with its ETag on every use.
pub fn cache_control(relative: &str) -> &'static str {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    let mut parts = name.rsplit('.');
    let hashed = parts.next().is_some()
        && parts
            .next()
            .is_some_and(|hash| hash.len() >= 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts.next().is_some();
    if hashed {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// The worker: looks each path up under `root` until the channel closes.
fn run_lookups(
    root: &Path,
    max_file: usize,
    receiver: Receiver<Job>,
    done: Arc<Mutex<Vec<Done>>>,
    notifier: Notifier,
) {
    while let Ok(job) = receiver.recv() {
        let lookup = look_up(root, &job.relative, job.cached_etag.as_deref(), max_file);
        done.lock().unwrap_or_else(|e| e.into_inner()).push(Done {
            relative: job.relative,
            lookup,
        });
        if notifier.notify().is_err() {
            return;
        }
    }
}

/// Finds `relative` under `root`, following symlinks only as long as they
/// stay inside it, and reads it unless its validator is `cached_etag`
/// (then `None`).
fn look_up(
    root: &Path,
    relative: &str,
    cached_etag: Option<&str>,
    max_file: usize,
) -> Option<Lookup> {
    let found = (|| {
        let root = root.canonicalize().ok()?;
        let path = root.join(relative).canonicalize().ok()?;
        if !path.starts_with(&root) {
            log::debug!("web root: {relative} leads outside the root; not served");
            return None;
        }
        let mut file = std::fs::File::open(&path).ok()?;
        let metadata = file.metadata().ok()?;
        if !metadata.is_file() {
            return None;
        }
        let len = usize::try_from(metadata.len()).ok()?;
        if len > max_file {
            log::warn!(
                "web root: {relative} ({len} bytes) is larger than web.cache_bytes; not served"
            );
            return None;
        }
        let modified = metadata
            .modified()
            .ok()
            .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos());
        let etag = format!("\"{len:x}-{modified:x}\"");
        if cached_etag == Some(etag.as_str()) {
            return Some(None);
        }
        // Read what the file holds now, bounded by the length checked.
        let mut body = Vec::with_capacity(len);
        file.by_ref()
            .take(max_file as u64 + 1)
            .read_to_end(&mut body)
            .ok()?;
        if body.len() > max_file {
            return None;
        }
        Some(Some(Arc::new(StaticFile {
            body: body.into(),
            etag,
            content_type: content_type(relative),
            cache_control: cache_control(relative),
        })))
    })();
    match found {
        Some(None) => None,
        Some(Some(file)) => Some(Lookup::Found(file)),
        None => Some(Lookup::NotFound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_never_leave_the_root() {
        assert_eq!(relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(relative_path("/a/b.js").as_deref(), Some("a/b.js"));
        assert_eq!(relative_path("/a/").as_deref(), Some("a/index.html"));
        assert_eq!(relative_path("/a%20b.css").as_deref(), Some("a b.css"));
        assert_eq!(relative_path("//x/./y.js").as_deref(), Some("x/y.js"));
        for hostile in [
            "/../etc/passwd",
            "/a/../../b",
            "/%2e%2e/secret",
            "/%2E%2E%2fsecret",
            "/a%00.js",
            "/a\\..\\b",
            "/a%5c..%5cb",
            "/%zz",
            "/%ff",
            "relative",
        ] {
            assert_eq!(relative_path(hostile), None, "{hostile}");
        }
    }

    #[test]
    fn types_and_caching_by_name() {
        assert_eq!(content_type("main.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("x/y.WOFF2"), "font/woff2");
        assert_eq!(content_type("a.wasm"), "application/wasm");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(
            cache_control("main.beb1e708ad8596e8.js"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(cache_control("index.html"), "no-cache");
        assert_eq!(cache_control("assets/app.js"), "no-cache");
        assert_eq!(cache_control("deadbeef.js"), "no-cache");
    }

    #[test]
    fn symlinks_out_of_the_root_are_not_found() {
        let base = std::env::temp_dir().join(format!("wsloop-web-root-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        std::fs::write(root.join("ok.txt"), "ok").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("out.txt")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(root.join("ok.txt"), root.join("in.txt")).unwrap();
        let body = |relative: &str| match look_up(&root, relative, None, 1 << 20) {
            Some(Lookup::Found(file)) => Some(file.body.to_vec()),
            _ => None,
        };
        assert_eq!(body("ok.txt").as_deref(), Some(&b"ok"[..]));
        assert_eq!(body("in.txt").as_deref(), Some(&b"ok"[..]));
        assert_eq!(body("out.txt"), None);
        assert_eq!(body("missing.txt"), None);
        // Larger than the cache: not served.
        assert!(matches!(
            look_up(&root, "ok.txt", None, 1),
            Some(Lookup::NotFound)
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
