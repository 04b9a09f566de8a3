//! Interpreters, selected by a paragraph's leading `%name` directive.

mod markdown;
mod output;
mod sql;

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

/// What the editor needs to know about a built-in interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterpreterInfo {
    /// The `%name`.
    pub name: &'static str,
    /// The editor's language mode.
    pub language: &'static str,
    /// Rendered output: the editor opens on double click.
    pub edit_on_double_click: bool,
    /// Whether the editor offers completion.
    pub completion_support: bool,
}

/// The built-in interpreters, in the order they are listed to clients.
pub const BUILT_IN: &[InterpreterInfo] = &[
    InterpreterInfo {
        name: "md",
        language: "markdown",
        edit_on_double_click: true,
        completion_support: false,
    },
    InterpreterInfo {
        name: "sql",
        language: "sql",
        edit_on_double_click: false,
        completion_support: true,
    },
];

/// The built-in interpreter called `name`, if any.
pub fn info(name: &str) -> Option<&'static InterpreterInfo> {
    BUILT_IN.iter().find(|i| i.name == name)
}

/// The built-in interpreter a directive's name selects: `md` or, in
/// Zeppelin's `group.interpreter` form, `md.md` (each built-in group holds
/// the one interpreter of its name, so `sql.x` selects nothing).
pub fn resolve(name: &str) -> Option<&'static InterpreterInfo> {
    match name.split_once('.') {
        None => info(name),
        Some((group, interpreter)) => info(group).filter(|found| found.name == interpreter),
    }
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
        match self.all.iter_mut().find(|i| i.name() == found.name) {
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
        assert_eq!(name("spark.sql"), None);
        assert_eq!(name("python"), None);
        assert_eq!(name(""), None);
        let mut interpreters = Interpreters::new(vec![Box::new(MarkdownInterpreter)]);
        assert_eq!(interpreters.run("%md.md **x**", "md").code, "SUCCESS");
        assert_eq!(interpreters.run("%md.x **x**", "md"), not_found());
    }
}
