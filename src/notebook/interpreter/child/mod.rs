//! Interpreters that run as child processes (`%python`, `%pyspark`,
//! `%spark`, `%spark.sql`, `%sh`), driven from the event loop: their pipes
//! are watched by the loop, so output streams to watchers while a
//! paragraph runs, without a thread per interpreter and without the loop
//! ever waiting on a child.
//!
//! The wire protocol with a child is deliberately small:
//! - Python (and PySpark): the driver in `driver.py` reads one JSON line
//!   per run on stdin, `{"run": ID, "code": "..."}`; the paragraph's
//!   stdout and stderr come back on the output pipe as they are printed;
//!   `{"ready": true}` (at start) and `{"done": ID, "status": S}` come as
//!   JSON lines on the control pipe (its fd 3). SIGINT interrupts a run.
//! - Spark (Scala): `spark-shell`'s REPL reads one line per run on stdin,
//!   which interprets the paragraph (sent base64-encoded) and then prints
//!   a marker line `\u{1}WSLOOP-<nonce> <Success|Error|Incomplete>`; the
//!   output before the marker is the paragraph's.
//! - Shell: each run is `bash -c SCRIPT` in a process group of its own;
//!   the run ends with its exit status.
//!
//! Output of any of them is split into Zeppelin's result messages by
//! leading `%html`, `%table` and `%text` lines (see [`stream`]).

mod process;
mod spark;
mod stream;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::notebook::model::Results;
use crate::server::{Context, SourceId, Watch};

pub use process::Reaper;
pub use stream::{OutputStream, StreamUpdate};

/// The Python driver, run with `python3 -u -c`.
const PYTHON_DRIVER: &str = include_str!("driver.py");

/// Most output bytes read from one child per wake-up, so one that floods
/// cannot hold the loop; the rest is read on the loop's next turn.
const READ_BUDGET: usize = 256 * 1024;

/// How long a cancelled run may take to stop before its process group is
/// killed (and the interpreter restarted on its next run).
const CANCEL_GRACE: Duration = Duration::from_secs(3);

/// How often a child whose output closed is checked for having exited.
const REAP_POLL: Duration = Duration::from_millis(10);

/// What the loop offers a child interpreter: watching its pipes, and an
/// alarm. [`Context`] is one; tests may drive children with another.
pub trait LoopIo {
    /// Watch `fd` (see [`Context::watch`]).
    fn watch(&mut self, fd: std::os::fd::RawFd, watch: Watch) -> io::Result<SourceId>;
    /// Stop watching it.
    fn unwatch(&mut self, id: SourceId);
    /// Call for it again next turn.
    fn call_again(&mut self, id: SourceId);
    /// The loop's current time.
    fn now(&self) -> Instant;
}

impl LoopIo for Context<'_> {
    fn watch(&mut self, fd: std::os::fd::RawFd, watch: Watch) -> io::Result<SourceId> {
        Context::watch(self, fd, watch)
    }
    fn unwatch(&mut self, id: SourceId) {
        Context::unwatch(self, id)
    }
    fn call_again(&mut self, id: SourceId) {
        Context::call_again(self, id)
    }
    fn now(&self) -> Instant {
        Context::now(self)
    }
}

/// Which program a child interpreter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `%python`: the driver under `python3`.
    Python,
    /// `%pyspark`: the driver under `python3`, with a SparkSession.
    PySpark,
    /// `%spark` and `%spark.sql`: Spark's Scala REPL.
    Spark,
    /// `%sh`: a shell per paragraph.
    Shell,
}

impl Kind {
    /// The interpreter's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Python => "python",
            Kind::PySpark => "pyspark",
            Kind::Spark => "spark",
            Kind::Shell => "sh",
        }
    }
}

/// How to start child interpreters (`[interpreters]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSettings {
    /// The Python 3 command (`interpreters.python.command`). Default
    /// `python3`.
    pub python: String,
    /// The shell command (`interpreters.sh.command`). Default `bash`.
    pub shell: String,
    /// Where `%sh` paragraphs run (`interpreters.sh.working_dir`); default
    /// the server's working directory.
    pub shell_dir: Option<PathBuf>,
    /// Time limit of one `%sh` paragraph (`interpreters.sh.timeout`).
    /// Default 10 min.
    pub shell_timeout: Duration,
    /// Spark's home (`interpreters.spark.spark_home`); default
    /// `$SPARK_HOME`, else the `pyspark` package's directory.
    pub spark_home: Option<PathBuf>,
    /// Spark's master URL (`interpreters.spark.master`). Default
    /// `local[*]`.
    pub spark_master: String,
    /// Extra `--conf key=value` pairs for Spark (`interpreters.spark.conf`).
    pub spark_conf: Vec<(String, String)>,
    /// Where Spark's own log goes, so it does not mix into output.
    pub log_dir: PathBuf,
    /// Most output bytes one paragraph keeps (`notebook.max_result_bytes`).
    pub max_output: usize,
    /// Rows a table shows (`%spark.sql`, `z.show`).
    pub max_rows: usize,
}

impl Default for ChildSettings {
    fn default() -> Self {
        ChildSettings {
            python: "python3".to_owned(),
            shell: "bash".to_owned(),
            shell_dir: None,
            shell_timeout: Duration::from_secs(600),
            spark_home: None,
            spark_master: "local[*]".to_owned(),
            spark_conf: Vec::new(),
            log_dir: std::env::temp_dir(),
            max_output: super::DEFAULT_MAX_RESULT_BYTES,
            max_rows: super::MAX_ROWS,
        }
    }
}

/// A run that ended: its results, and whether a cancel ended it.
#[derive(Debug)]
pub struct RunEnd {
    /// The results, whole.
    pub results: Results,
    /// A cancel (or a note's deletion) ended it.
    pub cancelled: bool,
}

/// A started child and the server's ends of its pipes.
struct Process {
    child: std::process::Child,
    group: u32,
    input: std::process::ChildStdin,
    input_source: Option<SourceId>,
    pending_input: Vec<u8>,
    output: File,
    output_source: Option<SourceId>,
    control: Option<(File, SourceId)>,
    control_line: Vec<u8>,
    /// Spark: output not yet given to the run, which may hold part of a
    /// marker line.
    carry: Vec<u8>,
    /// The driver said it is ready (Python), or the REPL answered the
    /// start-up marker (Spark); shells are ready at once.
    ready: bool,
    /// Spark's marker nonce.
    nonce: String,
    /// Spark: the end of what the REPL printed before it was ready, to
    /// explain a start that failed.
    startup_tail: String,
    /// The output pipe closed: the child exited or is exiting.
    output_closed: bool,
}

struct CurrentRun {
    id: u64,
    output: OutputStream,
    /// When a cancel escalates to killing the group.
    kill_at: Option<Instant>,
    /// When a shell run's time limit is up.
    time_limit_at: Option<Instant>,
    cancelled: bool,
    /// The time limit ended it.
    timed_out: bool,
    /// Output updates not yet taken by [`ChildInterpreter::take_updates`].
    changed: bool,
    /// Progress reported and not yet taken, in percent.
    progress: Option<u8>,
}

/// One child interpreter: its process (started on first use, restarted
/// after it dies), and the run it is doing.
pub struct ChildInterpreter {
    kind: Kind,
    settings: ChildSettings,
    process: Option<Process>,
    run: Option<CurrentRun>,
    next_run: u64,
    reap_at: Option<Instant>,
    /// An ended run, until taken.
    ended: Option<RunEnd>,
    /// A status line for watchers while the interpreter starts.
    starting_note: Option<String>,
}

impl ChildInterpreter {
    /// An interpreter of `kind`; nothing starts until its first run.
    pub fn new(kind: Kind, settings: ChildSettings) -> ChildInterpreter {
        ChildInterpreter {
            kind,
            settings,
            process: None,
            run: None,
            next_run: 0,
            reap_at: None,
            ended: None,
            starting_note: None,
        }
    }

    /// Which interpreter this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Whether a run is in progress.
    pub fn is_running(&self) -> bool {
        self.run.is_some()
    }

    /// Starts running `script` (for `interpreter`, e.g. `spark.sql`),
    /// starting the process first if it is not running. An error means the
    /// run could not start; it says why (e.g. what to install).
    pub fn start(
        &mut self,
        io: &mut dyn LoopIo,
        reaper: &mut Reaper,
        interpreter: &str,
        script: &str,
    ) -> Result<(), String> {
        let now = io.now();
        if self.kind == Kind::Shell {
            self.spawn_shell(io, reaper, script)?;
        } else if self.process.is_none() {
            self.spawn_persistent(io, reaper)?;
        }
        self.next_run += 1;
        let id = self.next_run;
        let time_limit_at = (self.kind == Kind::Shell).then(|| now + self.settings.shell_timeout);
        self.run = Some(CurrentRun {
            id,
            output: OutputStream::new(self.settings.max_output),
            kill_at: None,
            time_limit_at,
            cancelled: false,
            timed_out: false,
            changed: false,
            progress: None,
        });
        let command = match self.kind {
            Kind::Python | Kind::PySpark => {
                let mut line = serde_json::json!({ "run": id, "code": script }).to_string();
                line.push('\n');
                line
            }
            Kind::Spark => {
                let code = if interpreter == "spark.sql" {
                    spark::sql_code(script, self.settings.max_rows)
                } else {
                    script.to_owned()
                };
                let nonce = self.process.as_ref().map_or("", |p| p.nonce.as_str());
                spark::run_line(&code, nonce)
            }
            Kind::Shell => String::new(),
        };
        if !command.is_empty() {
            self.write_input(io, command.as_bytes());
        }
        Ok(())
    }

    fn spawn_persistent(&mut self, io: &mut dyn LoopIo, reaper: &mut Reaper) -> Result<(), String> {
        let settings = &self.settings;
        let (command, with_control, stderr_to, note) = match self.kind {
            Kind::Python | Kind::PySpark => {
                let mut command = Command::new(&settings.python);
                command
                    .arg("-u")
                    .arg("-c")
                    .arg(PYTHON_DRIVER)
                    .env("WSLOOP_MAX_ROWS", settings.max_rows.to_string());
                let mut stderr_to = None;
                let mut note = None;
                if self.kind == Kind::PySpark {
                    command.env("WSLOOP_PYTHON_SETUP", spark::pyspark_setup(settings));
                    if let Some(home) = &settings.spark_home {
                        command.env("SPARK_HOME", home);
                    }
                    stderr_to = self.log_file();
                    note = Some(format!(
                        "Starting the pyspark interpreter (master {})…\n",
                        settings.spark_master
                    ));
                }
                (command, true, stderr_to, note)
            }
            Kind::Spark => {
                let note = format!(
                    "Starting the spark interpreter (spark-shell, master {})…\n",
                    settings.spark_master
                );
                // The control pipe carries the progress of its jobs.
                (
                    spark::shell_command(settings),
                    true,
                    self.log_file(),
                    Some(note),
                )
            }
            Kind::Shell => return Ok(()),
        };
        let spawned = process::spawn(command, with_control, stderr_to).map_err(|error| {
            let what = match self.kind {
                Kind::Spark => "Spark (set SPARK_HOME or interpreters.spark.spark_home; `pip install pyspark` ships one)",
                Kind::PySpark => "Python 3 with pyspark",
                _ => "Python 3 (set interpreters.python.command)",
            };
            format!(
                "{} interpreter is not available: cannot start {:?} ({error}); install {what}",
                self.kind.name(),
                command_name(self.kind, settings)
            )
        })?;
        let nonce = spark::nonce();
        let mut process = self.adopt(io, reaper, spawned)?;
        process.nonce = nonce;
        if self.kind == Kind::Spark {
            let line = spark::ready_line(&process.nonce);
            process.pending_input.extend_from_slice(line.as_bytes());
        }
        self.starting_note = note;
        self.process = Some(process);
        Ok(())
    }

    fn spawn_shell(
        &mut self,
        io: &mut dyn LoopIo,
        reaper: &mut Reaper,
        script: &str,
    ) -> Result<(), String> {
        let mut command = Command::new(&self.settings.shell);
        command.arg("-c").arg(script);
        if let Some(dir) = &self.settings.shell_dir {
            command.current_dir(dir);
        }
        let spawned = process::spawn(command, false, None).map_err(|error| {
            format!(
                "sh interpreter is not available: cannot start {:?} ({error}); install it or set interpreters.sh.command",
                self.settings.shell
            )
        })?;
        let mut process = self.adopt(io, reaper, spawned)?;
        process.ready = true;
        // The script is an argument: nothing to say on stdin.
        if let Some(id) = process.input_source.take() {
            io.unwatch(id);
        }
        self.process = Some(process);
        Ok(())
    }

    /// Watches a spawned child's pipes.
    fn adopt(
        &self,
        io: &mut dyn LoopIo,
        reaper: &mut Reaper,
        spawned: process::Spawned,
    ) -> Result<Process, String> {
        let process::Spawned {
            child,
            input,
            output,
            control,
        } = spawned;
        let group = child.id();
        reaper.started(group);
        let watch_error =
            |error: io::Error| format!("cannot watch the interpreter's pipes: {error}");
        let output_source = io
            .watch(output.as_raw_fd(), Watch::Readable)
            .map_err(watch_error)?;
        let control = match control {
            Some(file) => {
                let id = io
                    .watch(file.as_raw_fd(), Watch::Readable)
                    .map_err(watch_error)?;
                Some((file, id))
            }
            None => None,
        };
        let input_source = io
            .watch(input.as_raw_fd(), Watch::Writable)
            .map_err(watch_error)?;
        log::debug!("{} interpreter started (pid {group})", self.kind.name());
        Ok(Process {
            child,
            group,
            input,
            input_source: Some(input_source),
            pending_input: Vec::new(),
            output,
            output_source: Some(output_source),
            control,
            control_line: Vec::new(),
            carry: Vec::new(),
            ready: false,
            nonce: String::new(),
            startup_tail: String::new(),
            output_closed: false,
        })
    }

    fn log_file(&self) -> Option<File> {
        let path = self
            .settings
            .log_dir
            .join(format!("interpreter-{}.log", self.kind.name()));
        File::options().create(true).append(true).open(path).ok()
    }

    fn write_input(&mut self, io: &mut dyn LoopIo, bytes: &[u8]) {
        let _ = io;
        if let Some(process) = &mut self.process {
            process.pending_input.extend_from_slice(bytes);
            flush_input(process);
        }
    }

    /// Whether `source` is one of this interpreter's pipes.
    pub fn owns(&self, source: SourceId) -> bool {
        self.process.as_ref().is_some_and(|p| {
            p.output_source == Some(source)
                || p.input_source == Some(source)
                || p.control.as_ref().is_some_and(|(_, id)| *id == source)
        })
    }

    /// One of its pipes is ready: read what it has (within the budget),
    /// write what waits, and notice the end of a run or of the child.
    pub fn on_ready(&mut self, io: &mut dyn LoopIo, reaper: &mut Reaper, source: SourceId) {
        let Some(process) = &mut self.process else {
            return;
        };
        if process.input_source == Some(source) {
            flush_input(process);
            return;
        }
        if process
            .control
            .as_ref()
            .is_some_and(|(_, id)| *id == source)
        {
            self.read_control(io);
        } else if process.output_source == Some(source) {
            let drained = self.read_output(io, READ_BUDGET);
            if !drained {
                io.call_again(source);
            }
        }
        self.check_exit(io, reaper);
    }

    /// Reads the output pipe, up to `budget` bytes; whether it was
    /// drained (or closed).
    fn read_output(&mut self, io: &mut dyn LoopIo, budget: usize) -> bool {
        let kind = self.kind;
        let mut buf = [0u8; 16 * 1024];
        let mut read = 0;
        while read < budget {
            let Some(process) = self.process.as_mut() else {
                return true;
            };
            let n = match process.output.read(&mut buf) {
                Ok(0) => {
                    process.output_closed = true;
                    if let Some(id) = process.output_source.take() {
                        io.unwatch(id);
                    }
                    return true;
                }
                Ok(n) => n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("{} interpreter output: {error}", kind.name());
                    return true;
                }
            };
            read += n;
            if kind == Kind::Spark {
                process.carry.extend_from_slice(&buf[..n]);
                if let Some(outcome) = spark::take_output(process, self.run.as_mut()) {
                    self.starting_note = None;
                    if let Some(status) = outcome {
                        self.end_run(status, None);
                    }
                }
            } else if let Some(run) = self.run.as_mut() {
                run.output.push_bytes(&buf[..n]);
                run.changed = true;
            }
        }
        false
    }

    /// Reads the Python driver's control lines.
    fn read_control(&mut self, io: &mut dyn LoopIo) {
        let mut lines = Vec::new();
        if let Some(process) = self.process.as_mut()
            && let Some((control, id)) = process.control.as_mut()
        {
            let mut buf = [0u8; 4096];
            loop {
                match control.read(&mut buf) {
                    Ok(0) => {
                        io.unwatch(*id);
                        process.control = None;
                        break;
                    }
                    Ok(n) => {
                        for &byte in &buf[..n] {
                            if byte == b'\n' {
                                lines.push(std::mem::take(&mut process.control_line));
                            } else if process.control_line.len() < 4096 {
                                process.control_line.push(byte);
                            }
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        for line in lines {
            let Ok(message) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(percent) = message.get("progress").and_then(|v| v.as_u64()) {
                // How far the current run is (%pyspark's jobs).
                if let Some(run) = self.run.as_mut() {
                    run.progress = Some(percent.min(100) as u8);
                }
            } else if message.get("ready").is_some() {
                if let Some(process) = self.process.as_mut() {
                    process.ready = true;
                }
                self.starting_note = None;
            } else if let Some(done) = message.get("done").and_then(|v| v.as_u64())
                && self.run.as_ref().is_some_and(|run| run.id == done)
            {
                // What the run printed is in the output pipe before its
                // end was written here: read all of it first.
                self.read_output(io, usize::MAX);
                let status = match message.get("status").and_then(|v| v.as_str()) {
                    Some("SUCCESS") => RunStatus::Success,
                    Some("ABORT") => RunStatus::Aborted,
                    _ => RunStatus::Error,
                };
                self.end_run(status, None);
            }
        }
    }

    /// Ends the current run with `status`, adding `notice` to its output.
    fn end_run(&mut self, status: RunStatus, notice: Option<String>) {
        let Some(run) = self.run.take() else {
            return;
        };
        let cancelled = run.cancelled || status == RunStatus::Aborted;
        let code = match status {
            RunStatus::Success if !run.timed_out => "SUCCESS",
            _ => "ERROR",
        };
        let mut notice = notice;
        if run.timed_out {
            notice = Some(format!(
                "Time limit of {} s exceeded (interpreters.sh.timeout); the paragraph was stopped.",
                self.settings.shell_timeout.as_secs()
            ));
        }
        let results = run.output.finish(code, notice.as_deref());
        self.ended = Some(RunEnd {
            results,
            cancelled: cancelled && !run.timed_out,
        });
    }

    /// The child's output closed: once it has exited, end its run (a shell
    /// run by its exit status; any other run because the interpreter died)
    /// and forget the process, so the next run starts a new one.
    fn check_exit(&mut self, io: &mut dyn LoopIo, reaper: &mut Reaper) {
        let Some(process) = self.process.as_mut() else {
            return;
        };
        if !process.output_closed {
            return;
        }
        let status = match process.child.try_wait() {
            Ok(Some(status)) => status,
            Ok(None) => {
                self.reap_at = Some(io.now() + REAP_POLL);
                return;
            }
            Err(error) => {
                log::warn!("{} interpreter: waiting for it: {error}", self.kind.name());
                return;
            }
        };
        self.reap_at = None;
        let Some(mut process) = self.process.take() else {
            return;
        };
        reaper.reaped(process.group);
        let mut how = process::describe_exit(status);
        if !process.ready && !process.startup_tail.trim().is_empty() {
            how = format!(
                "{how} before it was ready:\n{}",
                process.startup_tail.trim_end()
            );
        }
        forget(io, &mut process);
        log::debug!("{} interpreter exited: {how}", self.kind.name());
        if self.kind == Kind::Shell {
            if status.success() {
                self.end_run(RunStatus::Success, None);
            } else {
                let notice = format!("Exited with {how}.");
                self.end_run(RunStatus::Error, Some(notice));
            }
        } else if self.run.is_some() {
            let cancelled = self.run.as_ref().is_some_and(|run| run.cancelled);
            let notice = if cancelled {
                format!(
                    "{} interpreter stopped ({how}) to cancel the paragraph; it restarts on the next run.",
                    self.kind.name()
                )
            } else {
                format!(
                    "{} interpreter exited: {how}; it restarts on the next run.",
                    self.kind.name()
                )
            };
            let status = if cancelled {
                RunStatus::Aborted
            } else {
                RunStatus::Error
            };
            self.end_run(status, Some(notice));
        }
    }

    /// Cancels the current run: SIGINT for Python and Spark (the run ends
    /// with ABORT and the interpreter stays), SIGTERM for a shell's group;
    /// if the run has not ended after a grace period its process group is
    /// killed. Whether a run was cancelled.
    pub fn cancel(&mut self, now: Instant) -> bool {
        let (Some(run), Some(process)) = (self.run.as_mut(), self.process.as_ref()) else {
            return false;
        };
        if run.cancelled {
            return true;
        }
        run.cancelled = true;
        run.kill_at = Some(now + CANCEL_GRACE);
        match self.kind {
            Kind::Python | Kind::PySpark | Kind::Spark => {
                if let Ok(pid) = libc::pid_t::try_from(process.group) {
                    // SAFETY: kill(2) on our own child's pid.
                    unsafe {
                        libc::kill(pid, libc::SIGINT);
                    }
                }
            }
            Kind::Shell => process::signal_group(process.group, libc::SIGTERM),
        }
        true
    }

    /// When [`ChildInterpreter::on_alarm`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let run = self.run.as_ref();
        [
            run.and_then(|run| run.kill_at),
            run.and_then(|run| run.time_limit_at),
            self.reap_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Escalates overdue cancels, enforces a shell's time limit, and
    /// checks again for a child that is exiting.
    pub fn on_alarm(&mut self, io: &mut dyn LoopIo, reaper: &mut Reaper) {
        let now = io.now();
        let overdue = self
            .run
            .as_ref()
            .is_some_and(|run| run.kill_at.is_some_and(|at| at <= now));
        if overdue {
            // The run may have ended in time with its report still unread
            // (the alarm and the pipe's readiness in one wake-up, or a
            // loop that ran late): read it before deciding to kill.
            self.read_control(io);
            if self.kind == Kind::Spark {
                self.read_output(io, READ_BUDGET);
            }
        }
        if let (Some(run), Some(process)) = (self.run.as_mut(), self.process.as_ref()) {
            if run.kill_at.is_some_and(|at| at <= now) {
                run.kill_at = None;
                log::warn!(
                    "{} interpreter did not stop within {:?} of a cancel; killing it",
                    self.kind.name(),
                    CANCEL_GRACE
                );
                process::signal_group(process.group, libc::SIGKILL);
            }
            if run.time_limit_at.is_some_and(|at| at <= now) {
                run.time_limit_at = None;
                run.timed_out = true;
                process::signal_group(process.group, libc::SIGTERM);
                run.kill_at = Some(now + CANCEL_GRACE);
            }
        }
        if self.reap_at.is_some_and(|at| at <= now) {
            self.reap_at = None;
            self.check_exit(io, reaper);
        }
    }

    /// Output changes of the current run since the last call.
    pub fn take_updates(&mut self) -> Vec<StreamUpdate> {
        let mut updates = Vec::new();
        if let Some(note) = self.starting_note.take() {
            updates.push(StreamUpdate::Replace {
                index: 0,
                kind: "TEXT",
                data: note,
            });
        }
        if let Some(run) = self.run.as_mut() {
            if std::mem::take(&mut run.changed) {
                updates.extend(run.output.take_updates());
            }
            if let Some(percent) = run.progress.take() {
                updates.push(StreamUpdate::Progress { percent });
            }
        }
        updates
    }

    /// Whether output changed since the last [`ChildInterpreter::take_updates`].
    pub fn has_updates(&self) -> bool {
        self.starting_note.is_some()
            || self
                .run
                .as_ref()
                .is_some_and(|run| run.changed || run.progress.is_some())
    }

    /// The run that ended, if one did since the last call.
    pub fn take_ended(&mut self) -> Option<RunEnd> {
        self.ended.take()
    }

    /// Ends the child (and its group) now: the server is stopping, or the
    /// interpreter is being restarted. A run in progress ends as ABORT.
    pub fn stop(&mut self, mut io: Option<&mut dyn LoopIo>, reaper: &mut Reaper) {
        if let Some(mut process) = self.process.take() {
            if let Some(io) = io.as_mut() {
                forget(&mut **io, &mut process);
            }
            reaper.reaped(process.group);
            process::kill_and_reap(process.child);
        }
        self.reap_at = None;
        if let Some(run) = self.run.as_mut() {
            run.cancelled = true;
            self.end_run(
                RunStatus::Aborted,
                Some(format!("{} interpreter restarted.", self.kind.name())),
            );
        }
    }
}

impl Drop for ChildInterpreter {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            process::kill_and_reap(process.child);
        }
    }
}

/// How a run ended, before it is turned into results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunStatus {
    Success,
    Error,
    Aborted,
}

/// Writes what waits for the child's stdin, as far as the pipe takes it.
fn flush_input(process: &mut Process) {
    while !process.pending_input.is_empty() {
        match process.input.write(&process.pending_input) {
            Ok(0) => break,
            Ok(n) => {
                process.pending_input.drain(..n);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => {
                // The child is gone; its output's end will say so.
                process.pending_input.clear();
                break;
            }
        }
    }
    if process.pending_input.capacity() > 64 * 1024 && process.pending_input.is_empty() {
        process.pending_input = Vec::new();
    }
}

/// Stops watching a process's pipes (before they close with it).
fn forget(io: &mut dyn LoopIo, process: &mut Process) {
    for id in [process.output_source.take(), process.input_source.take()]
        .into_iter()
        .flatten()
    {
        io.unwatch(id);
    }
    if let Some((_, id)) = process.control.take() {
        io.unwatch(id);
    }
}

/// The program an interpreter starts, for messages.
fn command_name(kind: Kind, settings: &ChildSettings) -> String {
    match kind {
        Kind::Python | Kind::PySpark => settings.python.clone(),
        Kind::Shell => settings.shell.clone(),
        Kind::Spark => "spark-submit".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;

    /// Reads `from` until `text` has appeared; all read.
    fn read_until(from: &mut File, text: &str) -> String {
        let read = process::tests::read_pipe(from, Some(text));
        assert!(read.contains(text), "no {text:?} in {read:?}");
        read
    }

    #[test]
    fn the_python_driver_keeps_its_namespace_through_a_cancel_that_came_late() {
        let mut command = Command::new("python3");
        command.arg("-u").arg("-c").arg(PYTHON_DRIVER);
        let mut child = process::spawn(command, true, None).unwrap();
        let mut control = child.control.take().unwrap();
        read_until(&mut control, "\"ready\"");
        child
            .input
            .write_all(b"{\"run\": 1, \"code\": \"kept = 'yes'\"}\n")
            .unwrap();
        read_until(&mut control, "\"done\": 1");
        // The run ended; a cancel sent for it now finds the driver idle.
        std::thread::sleep(Duration::from_millis(100));
        let pid = libc::pid_t::try_from(child.child.id()).unwrap();
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(pid, libc::SIGINT);
        }
        std::thread::sleep(Duration::from_millis(100));
        child
            .input
            .write_all(b"{\"run\": 2, \"code\": \"print(kept)\"}\n")
            .unwrap();
        let done = read_until(&mut control, "\"done\": 2");
        assert!(done.contains("\"SUCCESS\""), "{done}");
        assert!(read_until(&mut child.output, "yes\n").contains("yes"));
        process::signal_group(child.child.id(), libc::SIGKILL);
        let _ = child.child.wait();
    }
}
