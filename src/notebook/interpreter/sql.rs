//! `%sql`: SQL on an embedded SQLite database file. Each query has a time
//! budget; a query that runs past it (or is cancelled) is interrupted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, ErrorCode, InterruptHandle, Statement};

use super::Interpreter;
use crate::notebook::model::{ResultMessage, Results};

/// Most rows a TABLE result carries; the rest are counted, not kept.
pub const MAX_ROWS: usize = 1000;

/// Interrupts the query running on the job thread, from the loop thread.
#[derive(Clone, Default)]
pub struct SqlCancel {
    handle: Arc<Mutex<Option<InterruptHandle>>>,
}

impl SqlCancel {
    /// Interrupts the running query, if any.
    pub fn cancel(&self) {
        if let Ok(guard) = self.handle.lock()
            && let Some(handle) = guard.as_ref()
        {
            handle.interrupt();
        }
    }
}

/// The SQL interpreter; opens its database on first use.
pub struct SqlInterpreter {
    path: PathBuf,
    budget: Duration,
    connection: Option<Connection>,
    cancel: SqlCancel,
}

impl SqlInterpreter {
    /// An interpreter on the database file `path`, with a per-query time
    /// budget.
    pub fn new(path: PathBuf, budget: Duration) -> SqlInterpreter {
        SqlInterpreter {
            path,
            budget,
            connection: None,
            cancel: SqlCancel::default(),
        }
    }

    /// A handle that interrupts this interpreter's running query.
    pub fn canceller(&self) -> SqlCancel {
        self.cancel.clone()
    }

    fn connection(&mut self) -> rusqlite::Result<&mut Connection> {
        if self.connection.is_none() {
            let connection = Connection::open(&self.path)?;
            connection.busy_timeout(Duration::from_secs(1))?;
            if let Ok(mut guard) = self.cancel.handle.lock() {
                *guard = Some(connection.get_interrupt_handle());
            }
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("opened above"))
    }

    fn execute(&mut self, script: &str) -> rusqlite::Result<Vec<ResultMessage>> {
        let budget = self.budget;
        let connection = self.connection()?;
        let deadline = Instant::now() + budget;
        connection.progress_handler(10_000, Some(move || Instant::now() >= deadline))?;
        let mut messages = Vec::new();
        let result = (|| {
            let mut batch = Batch::new(connection, script);
            while let Some(mut statement) = batch.next()? {
                if statement.column_count() > 0 {
                    messages.extend(table(&mut statement)?);
                } else {
                    let changed = statement.execute([])?;
                    messages.push(ResultMessage::text(format!("{changed} rows affected")));
                }
            }
            Ok(())
        })();
        connection.progress_handler(0, None::<fn() -> bool>)?;
        result.map(|()| messages)
    }
}

/// Runs a row-returning statement into a TABLE message (plus a TEXT note
/// when rows were cut at [`MAX_ROWS`]).
fn table(statement: &mut Statement<'_>) -> rusqlite::Result<Vec<ResultMessage>> {
    let columns = statement.column_count();
    let mut data: String = statement
        .column_names()
        .map(clean_cell)
        .collect::<Vec<_>>()
        .join("\t");
    let mut rows = statement.query([])?;
    let mut count = 0usize;
    while let Some(row) = rows.next()? {
        count += 1;
        if count > MAX_ROWS {
            continue;
        }
        data.push('\n');
        for column in 0..columns {
            if column > 0 {
                data.push('\t');
            }
            data.push_str(&match row.get_ref(column)? {
                ValueRef::Null => "null".to_owned(),
                ValueRef::Integer(i) => i.to_string(),
                ValueRef::Real(f) => f.to_string(),
                ValueRef::Text(t) => clean_cell(&String::from_utf8_lossy(t)),
                ValueRef::Blob(b) => format!("<blob {} bytes>", b.len()),
            });
        }
    }
    let mut messages = vec![ResultMessage {
        kind: "TABLE".to_owned(),
        data,
    }];
    if count > MAX_ROWS {
        messages.push(ResultMessage::text(format!(
            "Results truncated to {MAX_ROWS} of {count} rows."
        )));
    }
    Ok(messages)
}

/// Tabs and newlines separate cells and rows: replace them inside cells.
fn clean_cell(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

impl Interpreter for SqlInterpreter {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn run(&mut self, script: &str) -> Results {
        match self.execute(script) {
            Ok(msg) => Results {
                code: "SUCCESS".to_owned(),
                msg,
            },
            Err(error) => {
                let text = if error.sqlite_error_code() == Some(ErrorCode::OperationInterrupted) {
                    format!(
                        "Query interrupted (time budget {:?}, or cancelled)",
                        self.budget
                    )
                } else {
                    error.to_string()
                };
                Results {
                    code: "ERROR".to_owned(),
                    msg: vec![ResultMessage::text(text)],
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interpreter(budget: Duration) -> (SqlInterpreter, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "wsloop-sql-{}-{:?}.sqlite3",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        (SqlInterpreter::new(path.clone(), budget), path)
    }

    #[test]
    fn select_gives_a_table_and_other_statements_a_row_count() {
        let (mut sql, path) = interpreter(Duration::from_secs(10));
        let results = sql.run("select 1+1 as two, 'a\tb' as s, null as n");
        assert_eq!(results.code, "SUCCESS");
        assert_eq!(results.msg[0].kind, "TABLE");
        assert_eq!(results.msg[0].data, "two\ts\tn\n2\ta b\tnull");
        let results = sql.run("create table t(x); insert into t values (1), (2), (3);");
        assert_eq!(
            results
                .msg
                .iter()
                .map(|m| m.data.as_str())
                .collect::<Vec<_>>(),
            ["0 rows affected", "3 rows affected"]
        );
        let results = sql.run("select count(*) as c from t");
        assert_eq!(results.msg[0].data, "c\n3");
        let results = sql.run("select * from missing");
        assert_eq!(results.code, "ERROR");
        assert!(
            results.msg[0].data.contains("no such table"),
            "{:?}",
            results.msg
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn runaway_query_is_interrupted_at_its_budget() {
        let (mut sql, path) = interpreter(Duration::from_millis(200));
        let started = Instant::now();
        let results = sql.run(
            "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c",
        );
        assert_eq!(results.code, "ERROR");
        assert!(
            results.msg[0].data.contains("interrupted"),
            "{:?}",
            results.msg
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The connection is usable afterwards.
        assert_eq!(sql.run("select 7 as n").msg[0].data, "n\n7");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn large_results_are_capped() {
        let (mut sql, path) = interpreter(Duration::from_secs(10));
        let results = sql.run("with recursive c(x) as (select 1 union all select x + 1 from c limit 1500) select x from c");
        assert_eq!(results.msg[0].data.lines().count(), MAX_ROWS + 1);
        assert_eq!(
            results.msg[1].data,
            "Results truncated to 1000 of 1500 rows."
        );
        std::fs::remove_file(path).unwrap();
    }
}
