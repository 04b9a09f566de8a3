//! The notebook application: Apache Zeppelin's `/ws` JSON op protocol
//! (the subset `shared/PROTOCOL.md` specifies), notes stored as `.zpln`
//! files, and embedded `%md` and `%sql` interpreters.

pub mod access;
mod app;
pub mod dates;
pub mod envelope;
pub mod ids;
pub mod interpreter;
pub mod jobs;
pub mod model;
pub mod notes;
#[cfg(test)]
mod op_tests;
mod ops;
mod ops_notes;
mod ops_paragraphs;
pub mod passwords;
mod rest;
mod rest_notebook;
pub mod sql_names;
pub mod store;
pub mod tickets;
pub mod watchers;
mod web;
pub mod web_root;
pub mod writer;

use std::path::PathBuf;
use std::time::Duration;

pub use app::NotebookHandler;

/// The notebook's default message size limit: Zeppelin's own default
/// (`zeppelin.websocket.max.text.message.size`, 10,240,000), so whatever a
/// Zeppelin server accepts (an imported note, say) is accepted here too,
/// and the number LIST_CONFIGURATIONS reports, which Zeppelin's frontend
/// checks note exports against, is the same. (Zeppelin counts characters,
/// wsloop bytes.) The echo application keeps the protocol core's 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10_240_000;

/// Settings of the notebook application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotebookConfig {
    /// Where notes (`<path>_<id>.zpln`) and the SQL database live.
    /// Default `./notebook`.
    pub notebook_dir: PathBuf,
    /// Whether `anonymous`/`anonymous` passes the ticket check. Default on.
    pub anonymous_allowed: bool,
    /// Interpreter for paragraphs with no `%` directive in new notes.
    /// Default `md`.
    pub default_interpreter: String,
    /// The `%sql` database file, relative to the notebook directory.
    /// Default `notebook.sqlite3`.
    pub sql_database: PathBuf,
    /// Time budget of one `%sql` paragraph. Default 10 s.
    pub sql_timeout: Duration,
    /// Largest string or blob `%sql` builds; bigger ones end the statement
    /// with an error instead of being held. Default 16 MiB.
    pub sql_max_value_bytes: usize,
    /// Ceiling of SQLite's (process-wide) heap, the `%sql` interpreter's
    /// memory budget. Default 256 MiB.
    pub sql_max_heap_bytes: usize,
    /// Most bytes (as JSON) of results one paragraph keeps, sends and
    /// saves; the rest is cut with a notice. Default 1 MiB.
    pub max_result_bytes: usize,
    /// The server's message size limit, reported by LIST_CONFIGURATIONS.
    /// Default [`DEFAULT_MAX_MESSAGE_SIZE`]; a server embedding the
    /// notebook should give `Limits::max_message_size` the same value.
    pub max_message_size: usize,
    /// Origins allowed besides the server's own host; `*` allows any.
    /// Empty (default): the own host plus localhost/127.0.0.1, any port.
    pub allowed_origins: Vec<String>,
    /// Host names the server answers to besides IP addresses and
    /// `localhost` (the DNS-rebinding check): exact names, `*.domain`, or
    /// `*` for any. Default empty.
    pub allowed_hosts: Vec<String>,
    /// Users who can log in with HTTP Basic (argon2 password hashes).
    pub users: Vec<access::User>,
    /// Most notes the notebook holds; creating more is refused. Default
    /// 10,000.
    pub max_notes: usize,
    /// Password checks (argon2, on a worker thread) waiting or running at
    /// once, server-wide; more logins are answered `503`. Default 16.
    pub password_checks_pending: usize,
    /// Password checks started per second, server-wide. Default 8.
    pub password_checks_per_second: u32,
    /// A login ticket unused for this long stops working (its connections
    /// get SESSION_LOGOUT). Default 24 h.
    pub ticket_idle_timeout: Duration,
    /// Paragraph runs one principal may have queued or running; more are
    /// refused with ERROR_INFO. Default 100.
    pub max_runs_per_user: usize,
    /// Paragraph runs all principals together may have queued or running;
    /// more are refused with ERROR_INFO. Default 10,000.
    pub max_runs: usize,
    /// How the child-process interpreters (`%python`, `%sh`, `%spark`,
    /// `%spark.sql`, `%pyspark`) start (`[interpreters.*]`).
    pub interpreters: interpreter::ChildSettings,
    /// Run code-running interpreters for anonymous users even when the
    /// server listens beyond loopback (`security.allow_anonymous_code`).
    /// Default off.
    pub allow_anonymous_code: bool,
    /// The server listens on a loopback address only: code-running
    /// interpreters are then open to anonymous users. Default on.
    pub listens_on_loopback: bool,
    /// Static files served at `/` instead of the built-in page (a build of
    /// Zeppelin's web UI, say). Default none.
    pub web_dir: Option<PathBuf>,
    /// Most bytes of web root files kept in memory. Default 256 MiB.
    pub web_cache_bytes: usize,
}

impl Default for NotebookConfig {
    fn default() -> Self {
        NotebookConfig {
            notebook_dir: PathBuf::from("notebook"),
            anonymous_allowed: true,
            default_interpreter: "md".to_owned(),
            sql_database: PathBuf::from("notebook.sqlite3"),
            sql_timeout: Duration::from_secs(10),
            sql_max_value_bytes: interpreter::DEFAULT_MAX_VALUE_BYTES,
            sql_max_heap_bytes: interpreter::DEFAULT_MAX_HEAP_BYTES,
            max_result_bytes: interpreter::DEFAULT_MAX_RESULT_BYTES,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            users: Vec::new(),
            ticket_idle_timeout: tickets::DEFAULT_TICKET_IDLE_TIMEOUT,
            max_notes: 10_000,
            password_checks_pending: passwords::DEFAULT_MAX_PENDING,
            password_checks_per_second: passwords::DEFAULT_CHECKS_PER_SECOND,
            max_runs_per_user: jobs::DEFAULT_MAX_RUNS_PER_USER,
            max_runs: jobs::DEFAULT_MAX_RUNS,
            interpreters: interpreter::ChildSettings::default(),
            allow_anonymous_code: false,
            listens_on_loopback: true,
            web_dir: None,
            web_cache_bytes: web_root::DEFAULT_CACHE_BYTES,
        }
    }
}
