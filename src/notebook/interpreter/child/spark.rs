//! Spark: starting `spark-shell`'s Scala REPL, framing runs for it, finding
//! their ends in its output, and the SparkSession set-up for `%pyspark`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::process::Command;

use base64::Engine;

use super::{ChildSettings, CurrentRun, Process, RunStatus};

/// Starts the REPL through `spark-submit` (which `exec`s the JVM, so the
/// child is the JVM itself). Spark's home is `spark_home`, else
/// `$SPARK_HOME`, else the directory of Python's `pyspark` package, found
/// by the child, not the loop.
pub fn shell_command(settings: &ChildSettings) -> Command {
    const FIND_AND_START: &str = r#"home=${1:-$SPARK_HOME}
python=$2; master=$3; shift 3
if [ -z "$home" ]; then
  home=$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))' 2>/dev/null)
fi
if [ -z "$home" ] || [ ! -x "$home/bin/spark-submit" ]; then
  echo "Spark not found: set SPARK_HOME or interpreters.spark.spark_home (pip install pyspark ships a Spark home)"
  exit 127
fi
export SPARK_HOME="$home"
# The REPL compiles against the JVM's class path, as spark-shell sets up.
export SPARK_SUBMIT_OPTS="${SPARK_SUBMIT_OPTS:-} -Dscala.usejavacp=true"
exec "$home/bin/spark-submit" --class org.apache.spark.repl.Main --name wsloop --master "$master" "$@" spark-shell"#;
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(FIND_AND_START)
        .arg("sh")
        .arg(
            settings
                .spark_home
                .as_ref()
                .map(|home| home.as_os_str().to_owned())
                .unwrap_or_default(),
        )
        .arg(&settings.python)
        .arg(&settings.spark_master);
    for (key, value) in &settings.spark_conf {
        command.arg("--conf").arg(format!("{key}={value}"));
    }
    command
}

/// A fresh marker nonce, so a paragraph cannot end its run by printing.
pub fn nonce() -> String {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(std::process::id() as u64);
    format!("{:016x}", hasher.finish())
}

/// The marker that starts a status line.
fn marker(nonce: &str) -> String {
    format!("\u{1}WSLOOP-{nonce} ")
}

/// The line that tells when the REPL is up. It also makes a cancel
/// (SIGINT, which Spark's REPL turns into cancelling its jobs) interrupt
/// the jobs' running tasks, so their executor slots free at once, and
/// starts a daemon thread that reports, twice a second while jobs run, the
/// share of their tasks that are done, as `{"progress": N}` lines on the
/// control pipe (fd 3: one write per line, never mixed into the REPL's
/// output).
pub fn ready_line(nonce: &str) -> String {
    format!(
        "sc.setLocalProperty(\"spark.job.interruptOnCancel\", \"true\"); {PROGRESS_THREAD} println(\"\\u0001WSLOOP-{nonce} Ready\")\n"
    )
}

/// Scala (one line) for the progress thread; without a control pipe it
/// ends quietly.
const PROGRESS_THREAD: &str = "{ val wsloopTracker = sc.statusTracker; val wsloopProgress = new Thread(new Runnable { def run(): Unit = try { val control = new java.io.FileOutputStream(\"/dev/fd/3\"); var last = -1; while (true) { Thread.sleep(500); var total = 0L; var done = 0L; for (j <- wsloopTracker.getActiveJobIds(); info <- wsloopTracker.getJobInfo(j).toSeq; s <- info.stageIds(); stage <- wsloopTracker.getStageInfo(s).toSeq) { total += stage.numTasks(); done += stage.numCompletedTasks() }; val now = if (total > 0) (done * 100 / total).toInt else -1; if (now >= 0 && now != last) control.write((\"{\\\"progress\\\": \" + now + \"}\\n\").getBytes(\"UTF-8\")); last = now } } catch { case _: Throwable => () } }, \"wsloop-progress\"); wsloopProgress.setDaemon(true); wsloopProgress.start() };";

/// The line that interprets `code` as one unit and prints its status.
pub fn run_line(code: &str, nonce: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(code);
    format!(
        "{{ val wsloopResult = org.apache.spark.repl.Main.interp.intp.interpret(new String(java.util.Base64.getDecoder.decode(\"{encoded}\"), \"UTF-8\")); println(\"\\u0001WSLOOP-{nonce} \" + wsloopResult) }}\n"
    )
}

/// Scala that runs `query` with `spark.sql` and prints up to `max_rows`
/// rows as a Zeppelin `%table`.
pub fn sql_code(query: &str, max_rows: usize) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(query);
    format!(
        r#"{{
  val wsloopDf = spark.sql(new String(java.util.Base64.getDecoder.decode("{encoded}"), "UTF-8"))
  if (wsloopDf.columns.nonEmpty) {{
    val wsloopRows = wsloopDf.take({limit})
    val wsloopCell = (v: Any) => if (v == null) "null" else v.toString.replace('\t', ' ').replace('\n', ' ')
    println("%table " + wsloopDf.columns.map(wsloopCell).mkString("\t"))
    wsloopRows.take({max_rows}).foreach(r => println(r.toSeq.map(wsloopCell).mkString("\t")))
    if (wsloopRows.length > {max_rows}) println("\n%text Results are limited by {max_rows} rows.")
  }}
}}"#,
        limit = max_rows.saturating_add(1),
    )
}

/// Python run before the driver's first paragraph for `%pyspark`: `spark`
/// and `sc` on the configured master.
pub fn pyspark_setup(settings: &ChildSettings) -> String {
    let conf: Vec<(&str, &str)> = settings
        .spark_conf
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let master = serde_json::to_string(&settings.spark_master).unwrap_or_default();
    let conf = serde_json::to_string(&conf).unwrap_or_default();
    format!(
        r#"import glob as _glob, os as _os, sys as _sys
try:
    import pyspark
except ImportError:
    _home = _os.environ.get("SPARK_HOME", "")
    _sys.path[:0] = [_os.path.join(_home, "python")] + _glob.glob(_os.path.join(_home, "python", "lib", "py4j-*.zip"))
    import pyspark
from pyspark.sql import SparkSession as _SparkSession
_builder = _SparkSession.builder.master({master}).appName("wsloop pyspark")
for _key, _value in {conf}:
    _builder = _builder.config(_key, _value)
spark = _builder.getOrCreate()
sc = spark.sparkContext
# A cancel (SIGINT: pyspark cancels the jobs) also interrupts their tasks.
sc.setInterruptOnCancel(True)
del _builder


def _wsloop_watch_progress(tracker=sc.statusTracker(), report=_wsloop_progress):
    # Twice a second while jobs run: the share of their tasks done.
    import time
    last = -1
    while True:
        time.sleep(0.5)
        try:
            total = done = 0
            for job in tracker.getActiveJobsIds():
                info = tracker.getJobInfo(job)
                for stage in info.stageIds if info else []:
                    stage_info = tracker.getStageInfo(stage)
                    if stage_info:
                        total += stage_info.numTasks
                        done += stage_info.numCompletedTasks
            now = done * 100 // total if total else -1
            if now >= 0 and now != last:
                report(now)
            last = now
        except Exception:
            pass


import threading as _threading
_threading.Thread(target=_wsloop_watch_progress, name="wsloop-progress", daemon=True).start()
"#
    )
}

/// Most bytes of start-up output kept to explain a REPL that dies before
/// it is ready.
const STARTUP_TAIL: usize = 4096;

/// Hands the REPL's complete output lines to the run, dropping prompts,
/// and finds marker lines. `Some(None)`: the REPL became ready;
/// `Some(Some(status))`: the run ended.
pub fn take_output(
    process: &mut Process,
    mut run: Option<&mut CurrentRun>,
) -> Option<Option<RunStatus>> {
    let marker = marker(&process.nonce);
    let mut outcome = None;
    let mut consumed = 0;
    while let Some(end) = process.carry[consumed..].iter().position(|&b| b == b'\n') {
        let line_end = consumed + end + 1;
        let line = String::from_utf8_lossy(&process.carry[consumed..line_end]).into_owned();
        consumed = line_end;
        let mut text = line.as_str();
        while let Some(rest) = text.strip_prefix("scala> ") {
            text = rest;
        }
        let (before, status) = match text.find(&marker) {
            Some(at) => (&text[..at], Some(text[at + marker.len()..].trim())),
            None => (text, None),
        };
        if !process.ready {
            keep_tail(&mut process.startup_tail, before);
            if status == Some("Ready") {
                process.ready = true;
                outcome = Some(None);
            }
            continue;
        }
        if let Some(run) = run.as_deref_mut() {
            run.output.push(before);
            run.changed = true;
        }
        if let Some(status) = status {
            let status = match status {
                "Success" => RunStatus::Success,
                _ => RunStatus::Error,
            };
            process.carry.drain(..consumed);
            return Some(Some(status));
        }
    }
    process.carry.drain(..consumed);
    // A line with no end yet: give it to the run once it is long enough
    // that it cannot be a marker waiting for its newline.
    if process.carry.len() > 4096 && process.ready {
        let text = String::from_utf8_lossy(&process.carry).into_owned();
        if let Some(run) = run {
            run.output.push(&text);
            run.changed = true;
        }
        process.carry.clear();
    }
    outcome
}

fn keep_tail(tail: &mut String, text: &str) {
    tail.push_str(text);
    if tail.len() > STARTUP_TAIL {
        let mut cut = tail.len() - STARTUP_TAIL;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_lines_carry_the_code_encoded_and_print_the_marker() {
        let line = run_line("sc.version", "abc");
        assert!(line.ends_with("}\n") && !line[..line.len() - 1].contains('\n'));
        assert!(line.contains("c2MudmVyc2lvbg=="));
        assert!(line.contains("\\u0001WSLOOP-abc "));
        let sql = sql_code("select 1", 1000);
        assert!(sql.contains("take(1001)") && sql.contains("%table "));
    }
}
