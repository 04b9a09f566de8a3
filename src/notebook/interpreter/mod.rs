//! Interpreters, selected by a paragraph's leading `%name` directive.

mod child;
mod markdown;
mod output;
mod sql;

pub use child::{ChildInterpreter, ChildSettings, Kind, LoopIo, Reaper, RunEnd, StreamUpdate};
pub use markdown::MarkdownInterpreter;
pub use output::{CappedResults, DEFAULT_MAX_RESULT_BYTES};
pub use sql::{
    DEFAULT_MAX_HEAP_BYTES, DEFAULT_MAX_VALUE_BYTES, MAX_ROWS, SqlCancel, SqlInterpreter, SqlLimits,
};

use super::model::{ResultMessage, Results};

/// Runs paragraph scripts of one language. Called on the job thread, never
/// on the event loop, so a slow script cannot stall the server.
pub trait Interpreter: Send {
    /// The `%name` that selects it.
    fn name(&self) -> &'static str;
    /// Runs `script` and returns its results.
    fn run(&mut self, script: &str) -> Results;
}

/// What the editor needs to know about an interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterInfo {
    /// Its name: the `%name` that selects it (`spark.sql` for Spark SQL).
    pub name: &'static str,
    /// Its Zeppelin interpreter group (`spark` for `spark.sql`).
    pub group: &'static str,
    /// The lane that runs it: interpreters sharing a process share a lane.
    pub lane: &'static str,
    /// The editor's language mode.
    pub language: &'static str,
    /// Rendered output: the editor opens on double click.
    pub edit_on_double_click: bool,
    /// Whether the editor offers completion.
    pub completion_support: bool,
    /// It runs as a child process: arbitrary code (see
    /// `security.allow_anonymous_code`).
    pub runs_code: bool,
}

const fn info_of(
    name: &'static str,
    group: &'static str,
    lane: &'static str,
    language: &'static str,
    runs_code: bool,
) -> InterpreterInfo {
    InterpreterInfo {
        name,
        group,
        lane,
        language,
        edit_on_double_click: false,
        completion_support: false,
        runs_code,
    }
}

/// Every interpreter, in the order they are listed to clients.
pub const BUILT_IN: &[InterpreterInfo] = &[
    InterpreterInfo {
        edit_on_double_click: true,
        ..info_of("md", "md", "md", "markdown", false)
    },
    InterpreterInfo {
        completion_support: true,
        ..info_of("sql", "sql", "sql", "sql", false)
    },
    info_of("python", "python", "python", "python", true),
    info_of("sh", "sh", "sh", "sh", true),
    info_of("spark", "spark", "spark", "scala", true),
    info_of("spark.sql", "spark", "spark", "sql", true),
    info_of("pyspark", "spark", "pyspark", "python", true),
];

/// Zeppelin's `group.interpreter` spellings of the names above.
const ALIASES: &[(&str, &str)] = &[
    ("md.md", "md"),
    ("sql.sql", "sql"),
    ("python.python", "python"),
    ("sh.sh", "sh"),
    ("spark.spark", "spark"),
    ("spark.scala", "spark"),
    ("spark.pyspark", "pyspark"),
];

/// The interpreter called `name`, if any.
pub fn info(name: &str) -> Option<&'static InterpreterInfo> {
    BUILT_IN.iter().find(|i| i.name == name)
}

/// The interpreter a directive's name selects: `md`, or in Zeppelin's
/// `group.interpreter` form `md.md`, `spark.sql`, `spark.pyspark`.
pub fn resolve(name: &str) -> Option<&'static InterpreterInfo> {
    info(name).or_else(|| {
        ALIASES
            .iter()
            .find(|(alias, _)| *alias == name)
            .and_then(|(_, target)| info(target))
    })
}

/// The interpreter groups whose programs this machine has: `md` and
/// `sql` always; `python` and `sh` when their commands are found; `spark`
/// when a Spark home is configured or set, or Python is there to find
/// `pyspark` with.
pub fn available_groups(settings: &ChildSettings) -> Vec<&'static str> {
    let python = program_exists(&settings.python);
    let spark = settings.spark_home.is_some()
        || std::env::var_os("SPARK_HOME").is_some_and(|home| !home.is_empty())
        || python;
    let mut groups = vec!["md", "sql"];
    for (group, found) in [
        ("python", python),
        ("sh", program_exists(&settings.shell)),
        ("spark", spark),
    ] {
        if found {
            groups.push(group);
        }
    }
    groups
}

/// Whether `program` names an executable file, directly or on `PATH`.
fn program_exists(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let executable = |path: &std::path::Path| {
        path.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return executable(std::path::Path::new(program));
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(program))))
}

/// The interpreter instances the job thread runs paragraphs with.
pub struct Interpreters {
    all: Vec<Box<dyn Interpreter>>,
}

impl Interpreters {
    /// The given interpreters.
    pub fn new(all: Vec<Box<dyn Interpreter>>) -> Interpreters {
        Interpreters { all }
    }

    /// Runs a paragraph's text: its directive picks the interpreter, or
    /// `default_group` when it has none.
    pub fn run(&mut self, text: &str, default_group: &str) -> Results {
        let directive = parse_directive(text);
        let name = directive.name.unwrap_or(default_group);
        let Some(found) = resolve(name) else {
            return not_found();
        };
        match self.all.iter_mut().find(|i| i.name() == found.lane) {
            Some(interpreter) => interpreter.run(directive.script),
            None => not_found(),
        }
    }
}

/// A paragraph's text split into its directive and script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive<'a> {
    /// The interpreter name (`md` in `%md`), or `None` without a directive.
    pub name: Option<&'a str>,
    /// The `(k=v, …)` properties after the name, unparsed.
    pub properties: Option<&'a str>,
    /// The script after the directive.
    pub script: &'a str,
}

/// Splits `^\s*%name(.sub)*(props)?` off the front of a paragraph.
pub fn parse_directive(text: &str) -> Directive<'_> {
    let trimmed = text.trim_start();
    let Some(rest) = trimmed.strip_prefix('%') else {
        return Directive {
            name: None,
            properties: None,
            script: text,
        };
    };
    let name_len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    let name = &rest[..name_len];
    let mut after = &rest[name_len..];
    let mut properties = None;
    if let Some(inner) = after.strip_prefix('(')
        && let Some(close) = inner.find(')')
    {
        properties = Some(&inner[..close]);
        after = &inner[close + 1..];
    }
    Directive {
        name: Some(name),
        properties,
        script: after.trim_start(),
    }
}

/// The results of a paragraph whose interpreter does not exist.
pub fn not_found() -> Results {
    Results {
        code: "ERROR".to_owned(),
        msg: vec![ResultMessage::text("Interpreter name not found")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_split_off() {
        let d = parse_directive("  %sql select 1");
        assert_eq!((d.name, d.script), (Some("sql"), "select 1"));
        let d = parse_directive("%md\n# Title\n");
        assert_eq!((d.name, d.script), (Some("md"), "# Title\n"));
        let d = parse_directive("%spark.sql(maxRows=10) select 2");
        assert_eq!(
            (d.name, d.properties, d.script),
            (Some("spark.sql"), Some("maxRows=10"), "select 2")
        );
        let d = parse_directive("sc.version\n");
        assert_eq!((d.name, d.script), (None, "sc.version\n"));
        let d = parse_directive("%");
        assert_eq!(d.name, Some(""));
    }

    #[test]
    fn group_dot_interpreter_names_select_the_built_ins() {
        let name = |directive: &str| resolve(directive).map(|found| found.name);
        assert_eq!(name("md"), Some("md"));
        assert_eq!(name("md.md"), Some("md"));
        assert_eq!(name("sql.sql"), Some("sql"));
        assert_eq!(name("sql.x"), None);
        assert_eq!(name("spark.sql"), Some("spark.sql"));
        assert_eq!(name("spark.pyspark"), Some("pyspark"));
        assert_eq!(name("python.python"), Some("python"));
        assert_eq!(name("python.x"), None);
        assert_eq!(name(""), None);
        let mut interpreters = Interpreters::new(vec![Box::new(MarkdownInterpreter)]);
        assert_eq!(interpreters.run("%md.md **x**", "md").code, "SUCCESS");
        assert_eq!(interpreters.run("%md.x **x**", "md"), not_found());
    }
}
