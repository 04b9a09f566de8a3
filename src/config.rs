//! The configuration file (TOML) and how it combines with the command line:
//! built-in defaults, then the file, then command-line options, which win.
//! Every problem is reported with the key it concerns.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::notebook::NotebookConfig;
use crate::notebook::access::User;
use crate::notebook::interpreter;
use crate::proto::extensions::DeflateConfig;
use crate::proto::handshake::HEADER_SLOTS;
use crate::server::{ServerConfig, load_tls_config};

/// A configuration problem: which key, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The key, e.g. `limits.ping_interval`, or the file for syntax errors.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration (at least one when returned as
/// an error): a file with several bad values reports them all at once.
/// A syntax or type error stops the reading, so it comes alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// Keeps the problem of a failed check; gives the value of one that
    /// passed.
    fn note<T>(&mut self, checked: Result<T, ConfigError>) -> Option<T> {
        checked.map_err(|problem| self.0.push(problem)).ok()
    }

    fn push(&mut self, problem: ConfigError) {
        self.0.push(problem);
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(problem: ConfigError) -> ConfigErrors {
        ConfigErrors(vec![problem])
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A listening address: `IP:PORT`, or `HOST:PORT` with a host name
/// resolved at start-up (an IPv4 address preferred, as `localhost` is
/// usually reached at 127.0.0.1).
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let not_an_address =
        || format!("{text:?} is not an address like \"127.0.0.1:8081\" or \"localhost:8081\"");
    if !text.contains(':') {
        return Err(not_an_address());
    }
    let found: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{}: {e}", not_an_address()))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or(found.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn error(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The largest string or blob the bundled SQLite can be allowed to build
/// (its compiled-in `SQLITE_MAX_LENGTH`).
const SQLITE_MAX_LENGTH: usize = 1_000_000_000;

/// The smallest `notebook.sql_max_heap_bytes`: below it SQLite runs out of
/// memory on ordinary queries.
const MIN_SQL_HEAP: usize = 4 << 20;

/// The file's layout. Unknown keys are errors, so a typo never passes
/// silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    busy_poll: Option<String>,
    echo: Option<bool>,
    log_level: Option<String>,
    #[serde(default)]
    limits: LimitsFile,
    #[serde(default)]
    notebook: NotebookFile,
    #[serde(default)]
    security: SecurityFile,
    #[serde(default)]
    deflate: DeflateFile,
    #[serde(default)]
    tls: TlsFile,
    #[serde(default)]
    interpreters: InterpretersFile,
    #[serde(default)]
    web: WebFile,
}

/// `[interpreters.*]`: how the child-process interpreters start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InterpretersFile {
    #[serde(default)]
    python: PythonFile,
    #[serde(default)]
    sh: ShellFile,
    #[serde(default)]
    spark: SparkFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebFile {
    dir: Option<PathBuf>,
    cache_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonFile {
    command: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShellFile {
    command: Option<String>,
    working_dir: Option<PathBuf>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SparkFile {
    spark_home: Option<PathBuf>,
    master: Option<String>,
    #[serde(default)]
    conf: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeflateFile {
    enabled: Option<bool>,
    min_compress_size: Option<usize>,
    server_no_context_takeover: Option<bool>,
    client_no_context_takeover: Option<bool>,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    max_connections: Option<usize>,
    max_buffered_total: Option<usize>,
    max_connections_per_address: Option<usize>,
    max_handshakes_per_address: Option<usize>,
    max_request_head: Option<usize>,
    max_request_body: Option<usize>,
    max_headers: Option<usize>,
    handshake_timeout: Option<String>,
    max_frame_size: Option<usize>,
    max_message_size: Option<usize>,
    max_fragments: Option<usize>,
    write_buffer_soft: Option<usize>,
    write_buffer_hard: Option<usize>,
    inflate_slice: Option<usize>,
    frame_timeout: Option<String>,
    ping_interval: Option<String>,
    pong_timeout: Option<String>,
    close_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NotebookFile {
    dir: Option<PathBuf>,
    default_interpreter: Option<String>,
    sql_database: Option<PathBuf>,
    sql_timeout: Option<String>,
    max_notes: Option<usize>,
    sql_max_value_bytes: Option<usize>,
    sql_max_heap_bytes: Option<usize>,
    max_result_bytes: Option<usize>,
    max_runs_per_user: Option<usize>,
    max_runs: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecurityFile {
    anonymous: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    allowed_hosts: Option<Vec<String>>,
    password_checks_pending: Option<usize>,
    password_checks_per_second: Option<u32>,
    ticket_idle_timeout: Option<String>,
    allow_anonymous_code: Option<bool>,
    #[serde(default)]
    users: Vec<UserFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    name: String,
    password_hash: String,
    #[serde(default)]
    roles: Vec<String>,
}

/// Options given on the command line; `None` leaves the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--echo` (only ever turns echo mode on).
    pub echo: bool,
    /// `--notebook-dir`.
    pub notebook_dir: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<log::LevelFilter>,
    /// `--deflate` / `--no-deflate`.
    pub deflate: Option<bool>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--web-dir`.
    pub web_dir: Option<PathBuf>,
}

/// Everything the binary needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server (address, limits, connection cap).
    pub server: ServerConfig,
    /// Serve the echo application instead of the notebook.
    pub echo: bool,
    /// Log level, if set by file or command line.
    pub log_level: Option<log::LevelFilter>,
    /// The notebook application.
    pub notebook: NotebookConfig,
}

fn duration(key: &str, value: &Option<String>, target: &mut Duration) -> Result<(), ConfigError> {
    if let Some(text) = value {
        let parsed = humantime::parse_duration(text).map_err(|e| {
            error(
                key,
                format!("{text:?} is not a duration like \"30s\" or \"500ms\" ({e})"),
            )
        })?;
        if parsed.is_zero() {
            return Err(error(key, "must be longer than zero"));
        }
        *target = parsed;
    }
    Ok(())
}

fn size(key: &str, value: Option<usize>, target: &mut usize) -> Result<(), ConfigError> {
    if let Some(value) = value {
        if value == 0 {
            return Err(error(key, "must be at least 1"));
        }
        *target = value;
    }
    Ok(())
}

/// permessage-deflate: on by default for the notebook (its JSON compresses
/// well), off for echo (benchmarks and conformance runs measure the
/// transport); the command line wins over the file.
fn deflate(
    file: &DeflateFile,
    cli: Option<bool>,
    echo: bool,
) -> Result<Option<DeflateConfig>, ConfigError> {
    let mut config = DeflateConfig::default();
    for (key, value, target) in [
        (
            "deflate.server_max_window_bits",
            file.server_max_window_bits,
            &mut config.server_max_window_bits,
        ),
        (
            "deflate.client_max_window_bits",
            file.client_max_window_bits,
            &mut config.client_max_window_bits,
        ),
    ] {
        if let Some(bits) = value {
            if !(9..=15).contains(&bits) {
                return Err(error(key, format!("{bits} is not between 9 and 15")));
            }
            *target = bits;
        }
    }
    if let Some(size) = file.min_compress_size {
        config.min_compress_size = size;
    }
    config.server_no_context_takeover = file.server_no_context_takeover.unwrap_or(false);
    config.client_no_context_takeover = file.client_no_context_takeover.unwrap_or(false);
    let enabled = cli.or(file.enabled).unwrap_or(!echo);
    Ok(enabled.then_some(config))
}

/// Reads `path` (if given) and applies `overrides` on top.
pub fn load(path: Option<&Path>, overrides: Overrides) -> Result<Settings, ConfigErrors> {
    let file = match path {
        None => FileConfig::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| error(path.display().to_string(), format!("cannot read: {e}")))?;
            parse(&text).map_err(|e| {
                ConfigErrors(vec![ConfigError {
                    key: format!("{}: {}", path.display(), e.key),
                    problem: e.problem,
                }])
            })?
        }
    };
    resolve(file, overrides)
}

/// Parses the text of a configuration file.
fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().to_owned();
        let location = e
            .span()
            .map(|span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            })
            .unwrap_or_else(|| "file".to_owned());
        error(location, message)
    })
}

fn resolve(file: FileConfig, overrides: Overrides) -> Result<Settings, ConfigErrors> {
    // Every problem is collected, so a file with several is fixed in one go.
    let mut problems = ConfigErrors::default();
    let mut server = ServerConfig {
        handle_signals: true,
        ..ServerConfig::default()
    };
    if let Some(listen) = &file.listen
        && let Some(address) = problems.note(listen_address(listen).map_err(|e| error("listen", e)))
    {
        server.listen = address;
    }
    if let Some(text) = &file.busy_poll
        && let Some(poll) = problems.note(humantime::parse_duration(text).map_err(|e| {
            error(
                "busy_poll",
                format!("{text:?} is not a duration like \"50us\" or \"0s\" ({e})"),
            )
        }))
    {
        server.busy_poll = poll;
    }
    let log_level = file.log_level.as_ref().and_then(|level| {
        problems.note(level.parse::<log::LevelFilter>().map_err(|_| {
            error(
                "log_level",
                format!("{level:?} is not one of off, error, warn, info, debug, trace"),
            )
        }))
    });

    let echo = overrides.echo || file.echo.unwrap_or(false);
    let l = &file.limits;
    let limits = &mut server.limits;
    if !echo {
        // Echo keeps the protocol core's 16 MiB (conformance suites send
        // messages that large); the notebook's own messages are far smaller.
        limits.max_message_size = crate::notebook::DEFAULT_MAX_MESSAGE_SIZE;
    }
    problems.note(size(
        "limits.max_connections",
        l.max_connections,
        &mut server.max_connections,
    ));
    problems.note(size(
        "limits.max_buffered_total",
        l.max_buffered_total,
        &mut server.max_buffered_total,
    ));
    problems.note(size(
        "limits.max_connections_per_address",
        l.max_connections_per_address,
        &mut server.max_connections_per_address,
    ));
    problems.note(size(
        "limits.max_handshakes_per_address",
        l.max_handshakes_per_address,
        &mut server.max_handshakes_per_address,
    ));
    problems.note(size(
        "limits.max_request_head",
        l.max_request_head,
        &mut limits.max_request_head,
    ));
    problems.note(size(
        "limits.max_request_body",
        l.max_request_body,
        &mut limits.max_request_body,
    ));
    problems.note(size(
        "limits.max_headers",
        l.max_headers,
        &mut limits.max_headers,
    ));
    if limits.max_headers > HEADER_SLOTS {
        problems.push(error(
            "limits.max_headers",
            format!("must be at most {HEADER_SLOTS}"),
        ));
    }
    problems.note(size(
        "limits.max_frame_size",
        l.max_frame_size,
        &mut limits.max_frame_size,
    ));
    problems.note(size(
        "limits.max_message_size",
        l.max_message_size,
        &mut limits.max_message_size,
    ));
    problems.note(size(
        "limits.max_fragments",
        l.max_fragments,
        &mut limits.max_fragments,
    ));
    problems.note(size(
        "limits.write_buffer_soft",
        l.write_buffer_soft,
        &mut limits.write_buffer_soft,
    ));
    problems.note(size(
        "limits.write_buffer_hard",
        l.write_buffer_hard,
        &mut limits.write_buffer_hard,
    ));
    problems.note(size(
        "limits.inflate_slice",
        l.inflate_slice,
        &mut limits.inflate_slice,
    ));
    if limits.write_buffer_soft > limits.write_buffer_hard {
        problems.push(error(
            "limits.write_buffer_soft",
            "must not exceed limits.write_buffer_hard",
        ));
    }
    problems.note(duration(
        "limits.handshake_timeout",
        &l.handshake_timeout,
        &mut limits.handshake_timeout,
    ));
    problems.note(duration(
        "limits.frame_timeout",
        &l.frame_timeout,
        &mut limits.frame_timeout,
    ));
    problems.note(duration(
        "limits.ping_interval",
        &l.ping_interval,
        &mut limits.ping_interval,
    ));
    problems.note(duration(
        "limits.pong_timeout",
        &l.pong_timeout,
        &mut limits.pong_timeout,
    ));
    problems.note(duration(
        "limits.close_timeout",
        &l.close_timeout,
        &mut limits.close_timeout,
    ));

    let mut notebook = NotebookConfig {
        max_message_size: server.limits.max_message_size,
        ..NotebookConfig::default()
    };
    let n = &file.notebook;
    if let Some(dir) = &n.dir {
        notebook.notebook_dir = dir.clone();
    }
    if let Some(name) = &n.default_interpreter {
        if interpreter::resolve(name).is_none() {
            let known: Vec<&str> = interpreter::BUILT_IN.iter().map(|i| i.name).collect();
            problems.push(error(
                "notebook.default_interpreter",
                format!("{name:?} is not an interpreter ({})", known.join(", ")),
            ));
        }
        notebook.default_interpreter = name.clone();
    }
    if let Some(database) = &n.sql_database {
        if database
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            problems.push(error(
                "notebook.sql_database",
                "must stay inside the notebook directory (no '..')",
            ));
        }
        notebook.sql_database = database.clone();
    }
    problems.note(duration(
        "notebook.sql_timeout",
        &n.sql_timeout,
        &mut notebook.sql_timeout,
    ));
    problems.note(size(
        "notebook.max_notes",
        n.max_notes,
        &mut notebook.max_notes,
    ));
    problems.note(size(
        "notebook.sql_max_value_bytes",
        n.sql_max_value_bytes,
        &mut notebook.sql_max_value_bytes,
    ));
    if notebook.sql_max_value_bytes > SQLITE_MAX_LENGTH {
        problems.push(error(
            "notebook.sql_max_value_bytes",
            format!("must be at most {SQLITE_MAX_LENGTH} (SQLite's own limit)"),
        ));
    }
    problems.note(size(
        "notebook.sql_max_heap_bytes",
        n.sql_max_heap_bytes,
        &mut notebook.sql_max_heap_bytes,
    ));
    if notebook.sql_max_heap_bytes < MIN_SQL_HEAP {
        problems.push(error(
            "notebook.sql_max_heap_bytes",
            format!("must be at least {MIN_SQL_HEAP} (SQLite needs a few MiB to work)"),
        ));
    }
    problems.note(size(
        "notebook.max_result_bytes",
        n.max_result_bytes,
        &mut notebook.max_result_bytes,
    ));
    problems.note(size(
        "notebook.max_runs_per_user",
        n.max_runs_per_user,
        &mut notebook.max_runs_per_user,
    ));
    problems.note(size(
        "notebook.max_runs",
        n.max_runs,
        &mut notebook.max_runs,
    ));

    let s = &file.security;
    if let Some(anonymous) = s.anonymous {
        notebook.anonymous_allowed = anonymous;
    }
    if let Some(origins) = &s.allowed_origins {
        notebook.allowed_origins = origins.clone();
    }
    if let Some(hosts) = &s.allowed_hosts {
        if let Some(bad) = hosts.iter().find(|h| h.is_empty() || h.contains('/')) {
            problems.push(error(
                "security.allowed_hosts",
                format!("{bad:?} is not a host name (no scheme or path: \"notes.example.com\")"),
            ));
        }
        notebook.allowed_hosts = hosts.clone();
    }
    problems.note(size(
        "security.password_checks_pending",
        s.password_checks_pending,
        &mut notebook.password_checks_pending,
    ));
    if let Some(rate) = s.password_checks_per_second {
        if rate == 0 {
            problems.push(error(
                "security.password_checks_per_second",
                "must be at least 1",
            ));
        }
        notebook.password_checks_per_second = rate;
    }
    problems.note(duration(
        "security.ticket_idle_timeout",
        &s.ticket_idle_timeout,
        &mut notebook.ticket_idle_timeout,
    ));
    for (index, user) in s.users.iter().enumerate() {
        let key = format!("security.users[{index}]");
        if user.name.is_empty() || user.name == "anonymous" || user.name.contains(':') {
            problems.push(error(
                format!("{key}.name"),
                "must be non-empty, not \"anonymous\", without ':'",
            ));
        }
        if s.users[..index].iter().any(|u| u.name == user.name) {
            problems.push(error(
                format!("{key}.name"),
                format!("{:?} is listed twice", user.name),
            ));
        }
        let parsed = User::new(&user.name, &user.password_hash, user.roles.clone())
            .map_err(|e| error(format!("{key}.password_hash"), e));
        if let Some(parsed) = problems.note(parsed) {
            notebook.users.push(parsed);
        }
    }

    server.deflate = problems
        .note(deflate(&file.deflate, overrides.deflate, echo))
        .flatten();
    let cert = overrides.tls_cert.or_else(|| file.tls.cert.clone());
    let key = overrides.tls_key.or_else(|| file.tls.key.clone());
    server.tls = match (cert, key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            problems.note(load_tls_config(&cert, &key).map_err(|e| error("tls", e.to_string())))
        }
        (Some(_), None) => {
            problems.push(error("tls.key", "a certificate needs its key"));
            None
        }
        (None, Some(_)) => {
            problems.push(error("tls.cert", "a key needs its certificate"));
            None
        }
    };

    if let Some(listen) = overrides.listen {
        server.listen = listen;
    }
    if let Some(dir) = overrides.notebook_dir {
        notebook.notebook_dir = dir;
    }
    problems.note(interpreters(&file.interpreters, &mut notebook));
    notebook.allow_anonymous_code = s.allow_anonymous_code.unwrap_or(false);
    notebook.listens_on_loopback = server.listen.ip().is_loopback();
    notebook.web_dir = overrides.web_dir.or_else(|| file.web.dir.clone());
    problems.note(size(
        "web.cache_bytes",
        file.web.cache_bytes,
        &mut notebook.web_cache_bytes,
    ));
    if !problems.0.is_empty() {
        return Err(problems);
    }
    Ok(Settings {
        server,
        echo,
        log_level: overrides.log_level.or(log_level),
        notebook,
    })
}

/// Applies `[interpreters.*]`.
fn interpreters(file: &InterpretersFile, notebook: &mut NotebookConfig) -> Result<(), ConfigError> {
    let children = &mut notebook.interpreters;
    let command = |key: &str, value: &Option<String>, target: &mut String| {
        if let Some(value) = value {
            if value.trim().is_empty() {
                return Err(error(key, "must name a program"));
            }
            *target = value.clone();
        }
        Ok(())
    };
    command(
        "interpreters.python.command",
        &file.python.command,
        &mut children.python,
    )?;
    command(
        "interpreters.sh.command",
        &file.sh.command,
        &mut children.shell,
    )?;
    if let Some(dir) = &file.sh.working_dir {
        children.shell_dir = Some(dir.clone());
    }
    duration(
        "interpreters.sh.timeout",
        &file.sh.timeout,
        &mut children.shell_timeout,
    )?;
    if let Some(home) = &file.spark.spark_home {
        children.spark_home = Some(home.clone());
    }
    command(
        "interpreters.spark.master",
        &file.spark.master,
        &mut children.spark_master,
    )?;
    children.spark_conf = file
        .spark
        .conf
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first problem, for tests about one key.
    fn from_text(text: &str) -> Result<Settings, ConfigError> {
        resolve(parse(text)?, Overrides::default()).map_err(|mut e| e.0.remove(0))
    }

    #[test]
    fn interpreter_settings_are_applied() {
        let settings = from_text(
            r#"
            [notebook]
            default_interpreter = "spark"
            [security]
            allow_anonymous_code = true
            [interpreters.python]
            command = "/opt/py/bin/python3"
            [interpreters.sh]
            command = "sh"
            working_dir = "/srv/work"
            timeout = "30s"
            [interpreters.spark]
            spark_home = "/opt/spark"
            master = "spark://head:7077"
            conf = { "spark.executor.memory" = "2g" }
            "#,
        )
        .unwrap();
        let n = &settings.notebook;
        assert_eq!(n.default_interpreter, "spark");
        assert!(n.allow_anonymous_code);
        assert!(n.listens_on_loopback);
        let i = &n.interpreters;
        assert_eq!(i.python, "/opt/py/bin/python3");
        assert_eq!(
            (i.shell.as_str(), i.shell_timeout),
            ("sh", Duration::from_secs(30))
        );
        assert_eq!(
            i.shell_dir.as_deref(),
            Some(std::path::Path::new("/srv/work"))
        );
        assert_eq!(
            i.spark_home.as_deref(),
            Some(std::path::Path::new("/opt/spark"))
        );
        assert_eq!(i.spark_master, "spark://head:7077");
        assert_eq!(
            i.spark_conf,
            [("spark.executor.memory".to_owned(), "2g".to_owned())]
        );
        let exposed = from_text("listen = \"0.0.0.0:8081\"").unwrap();
        assert!(!exposed.notebook.listens_on_loopback);
        assert!(from_text("[interpreters.python]\ncommand = \" \"").is_err());
    }

    #[test]
    fn a_full_file_is_applied_and_the_command_line_wins() {
        let hash = crate::notebook::access::hash_password("secret").unwrap();
        let text = format!(
            r#"
            listen = "127.0.0.1:9000"
            log_level = "debug"
            [limits]
            max_connections = 50
            ping_interval = "5s"
            close_timeout = "250ms"
            max_message_size = 1048576
            [notebook]
            dir = "/tmp/notes"
            max_notes = 50
            sql_timeout = "2s"
            sql_max_value_bytes = 1000000
            sql_max_heap_bytes = 67108864
            max_result_bytes = 65536
            max_runs_per_user = 5
            max_runs = 50
            [security]
            anonymous = false
            allowed_origins = ["https://example.com"]
            allowed_hosts = ["notes.example.com"]
            password_checks_pending = 4
            password_checks_per_second = 2
            ticket_idle_timeout = "8h"
            [[security.users]]
            name = "alice"
            password_hash = "{hash}"
            roles = ["admin"]
            "#
        );
        let settings = from_text(&text).unwrap();
        assert_eq!(settings.server.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(settings.server.max_connections, 50);
        assert_eq!(settings.server.limits.ping_interval, Duration::from_secs(5));
        assert_eq!(
            settings.server.limits.close_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(settings.notebook.max_message_size, 1048576);
        assert_eq!(settings.notebook.sql_timeout, Duration::from_secs(2));
        assert_eq!(settings.notebook.sql_max_value_bytes, 1_000_000);
        assert_eq!(settings.notebook.sql_max_heap_bytes, 64 << 20);
        assert_eq!(settings.notebook.max_result_bytes, 64 << 10);
        assert_eq!(settings.notebook.max_runs_per_user, 5);
        assert_eq!(settings.notebook.max_runs, 50);
        assert!(!settings.notebook.anonymous_allowed);
        assert_eq!(
            settings.notebook.ticket_idle_timeout,
            Duration::from_secs(8 * 3600)
        );
        assert_eq!(settings.notebook.users[0].name, "alice");
        assert_eq!(settings.notebook.allowed_hosts, ["notes.example.com"]);
        assert_eq!(settings.notebook.password_checks_pending, 4);
        assert_eq!(settings.notebook.max_notes, 50);
        assert_eq!(settings.notebook.password_checks_per_second, 2);
        assert_eq!(settings.log_level, Some(log::LevelFilter::Debug));

        let overridden = resolve(
            parse(&text).unwrap(),
            Overrides {
                listen: Some("127.0.0.1:7000".parse().unwrap()),
                notebook_dir: Some("elsewhere".into()),
                log_level: Some(log::LevelFilter::Warn),
                echo: true,
                deflate: None,
                tls_cert: None,
                tls_key: None,
                web_dir: Some("ui".into()),
            },
        )
        .unwrap();
        assert_eq!(overridden.server.listen.port(), 7000);
        assert_eq!(overridden.notebook.notebook_dir, PathBuf::from("elsewhere"));
        assert_eq!(overridden.notebook.web_dir, Some(PathBuf::from("ui")));
        assert_eq!(overridden.log_level, Some(log::LevelFilter::Warn));
        assert!(overridden.echo);
    }

    #[test]
    fn the_buffer_budget_and_per_address_limits_are_read_from_limits() {
        let settings = from_text(
            "[limits]\nmax_buffered_total = 33554432\nmax_connections_per_address = 10\nmax_handshakes_per_address = 3",
        )
        .unwrap();
        assert_eq!(settings.server.max_buffered_total, 32 << 20);
        assert_eq!(settings.server.max_connections_per_address, 10);
        assert_eq!(settings.server.max_handshakes_per_address, 3);
    }

    #[test]
    fn the_message_limit_is_zeppelins_for_the_notebook_and_16_mib_for_echo() {
        let notebook = from_text("").unwrap();
        assert_eq!(notebook.server.limits.max_message_size, 10_240_000);
        assert_eq!(notebook.notebook.max_message_size, 10_240_000);
        let echo = from_text("echo = true").unwrap();
        assert_eq!(echo.server.limits.max_message_size, 16 * 1024 * 1024);
        let cli_echo = resolve(
            FileConfig::default(),
            Overrides {
                echo: true,
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(cli_echo.server.limits.max_message_size, 16 * 1024 * 1024);
        // Set in the file, it holds in either mode.
        for text in ["", "echo = true\n"] {
            let set = from_text(&format!("{text}[limits]\nmax_message_size = 4096")).unwrap();
            assert_eq!(set.server.limits.max_message_size, 4096);
        }
    }

    #[test]
    fn inflate_slice_and_frame_timeout_are_read_from_limits() {
        let defaults = from_text("").unwrap().server.limits;
        assert_eq!(defaults.inflate_slice, 256 * 1024);
        assert_eq!(defaults.frame_timeout, Duration::from_secs(60));
        let set = from_text("[limits]\ninflate_slice = 65536\nframe_timeout = \"5s\"")
            .unwrap()
            .server
            .limits;
        assert_eq!(set.inflate_slice, 65536);
        assert_eq!(set.frame_timeout, Duration::from_secs(5));
        for (text, key) in [
            ("[limits]\ninflate_slice = 0", "limits.inflate_slice"),
            ("[limits]\nframe_timeout = \"0s\"", "limits.frame_timeout"),
            ("[limits]\nframe_timeout = \"soon\"", "limits.frame_timeout"),
        ] {
            assert_eq!(from_text(text).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn deflate_is_on_for_the_notebook_and_off_for_echo_unless_asked() {
        let notebook = from_text("").unwrap();
        assert_eq!(notebook.server.deflate, Some(DeflateConfig::default()));
        let echo = from_text("echo = true").unwrap();
        assert_eq!(echo.server.deflate, None);
        let echo_on = from_text("echo = true\n[deflate]\nenabled = true\nmin_compress_size = 0\nserver_no_context_takeover = true\nclient_max_window_bits = 10").unwrap();
        let config = echo_on.server.deflate.unwrap();
        assert_eq!(config.min_compress_size, 0);
        assert!(config.server_no_context_takeover);
        assert_eq!(config.client_max_window_bits, 10);
        let cli = |deflate| {
            resolve(
                parse("[deflate]\nenabled = false").unwrap(),
                Overrides {
                    deflate,
                    ..Overrides::default()
                },
            )
            .unwrap()
            .server
            .deflate
        };
        assert_eq!(cli(None), None);
        assert!(cli(Some(true)).is_some());
    }

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let example = from_text(include_str!("../wsloop.example.toml")).unwrap();
        let defaults = resolve(FileConfig::default(), Overrides::default()).unwrap();
        assert_eq!(example.server.limits, defaults.server.limits);
        assert_eq!(example.server.listen, defaults.server.listen);
        assert_eq!(
            example.server.max_connections,
            defaults.server.max_connections
        );
        let budgets = |server: &ServerConfig| {
            (
                server.max_buffered_total,
                server.max_connections_per_address,
                server.max_handshakes_per_address,
            )
        };
        assert_eq!(budgets(&example.server), budgets(&defaults.server));
        assert_eq!(budgets(&defaults.server), (512 << 20, 256, 64));
        assert_eq!(example.notebook, defaults.notebook);
        assert_eq!(example.server.deflate, defaults.server.deflate);
        assert_eq!(example.server.deflate, Some(DeflateConfig::default()));
        assert!(!example.echo);
    }

    #[test]
    fn every_problem_names_its_key() {
        let cases = [
            ("listen = \"nowhere\"", "listen"),
            ("log_level = \"loud\"", "log_level"),
            ("busy_poll = \"a while\"", "busy_poll"),
            ("[limits]\nping_interval = \"soon\"", "limits.ping_interval"),
            ("[limits]\nclose_timeout = \"0s\"", "limits.close_timeout"),
            ("[limits]\nmax_frame_size = 0", "limits.max_frame_size"),
            (
                "[limits]\nmax_buffered_total = 0",
                "limits.max_buffered_total",
            ),
            (
                "[limits]\nmax_connections_per_address = 0",
                "limits.max_connections_per_address",
            ),
            (
                "[limits]\nmax_handshakes_per_address = 0",
                "limits.max_handshakes_per_address",
            ),
            (
                "[limits]\nwrite_buffer_soft = 10\nwrite_buffer_hard = 5",
                "limits.write_buffer_soft",
            ),
            ("[limits]\nmax_headers = 1000", "limits.max_headers"),
            ("[tls]\ncert = \"cert.pem\"", "tls.key"),
            ("[tls]\nkey = \"key.pem\"", "tls.cert"),
            (
                "[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"",
                "tls",
            ),
            (
                "[deflate]\nserver_max_window_bits = 8",
                "deflate.server_max_window_bits",
            ),
            (
                "[deflate]\nclient_max_window_bits = 16",
                "deflate.client_max_window_bits",
            ),
            (
                "[notebook]\ndefault_interpreter = \"scala\"",
                "notebook.default_interpreter",
            ),
            (
                "[notebook]\nsql_database = \"../x.db\"",
                "notebook.sql_database",
            ),
            (
                "[notebook]\nsql_max_value_bytes = 0",
                "notebook.sql_max_value_bytes",
            ),
            (
                "[notebook]\nsql_max_value_bytes = 2000000000",
                "notebook.sql_max_value_bytes",
            ),
            (
                "[notebook]\nsql_max_heap_bytes = 1048576",
                "notebook.sql_max_heap_bytes",
            ),
            (
                "[notebook]\nmax_result_bytes = 0",
                "notebook.max_result_bytes",
            ),
            (
                "[notebook]\nmax_runs_per_user = 0",
                "notebook.max_runs_per_user",
            ),
            ("[notebook]\nmax_runs = 0", "notebook.max_runs"),
            (
                "[[security.users]]\nname = \"bob\"\npassword_hash = \"plain\"",
                "security.users[0].password_hash",
            ),
            (
                "[[security.users]]\nname = \"anonymous\"\npassword_hash = \"x\"",
                "security.users[0].name",
            ),
        ];
        for (text, key) in cases {
            let err = from_text(text).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn every_bad_value_is_reported_not_only_the_first() {
        let text = "listen = \"nowhere\"\n[limits]\nping_interval = \"often\"\nmax_connections = 0\n\
                    [notebook]\ndefault_interpreter = \"cobol\"\n[tls]\ncert = \"c.pem\"\n";
        let problems = resolve(parse(text).unwrap(), Overrides::default()).unwrap_err();
        let keys: Vec<&str> = problems.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "limits.max_connections",
                "limits.ping_interval",
                "notebook.default_interpreter",
                "tls.key"
            ],
            "{problems}"
        );
        assert_eq!(problems.to_string().lines().count(), 5, "{problems}");
    }

    #[test]
    fn listen_takes_host_names() {
        let address = listen_address("localhost:8081").unwrap();
        assert!(address.ip().is_loopback(), "{address}");
        assert_eq!(address.port(), 8081);
        assert_eq!(
            listen_address("[::1]:80").unwrap(),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_address("localhost").is_err());
        assert!(listen_address("localhost:http-alt-nonsense").is_err());
    }

    #[test]
    fn syntax_errors_and_unknown_keys_point_at_the_line() {
        let err =
            from_text("listen = \"127.0.0.1:1\"\n[limits]\nmax_frame_sise = 10\n").unwrap_err();
        assert_eq!(err.key, "line 3");
        assert!(err.problem.contains("max_frame_sise"), "{err}");
        let err = from_text("[limits\n").unwrap_err();
        assert!(err.key.starts_with("line"), "{err}");
        let err = from_text("[limits]\nmax_frame_size = \"big\"\n").unwrap_err();
        assert_eq!(err.key, "line 2", "{err}");
    }
}
