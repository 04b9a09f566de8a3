//! `%sql`: SQL on an embedded SQLite database file, confined to that file
//! and to a memory budget. Each query has a time budget; a query that runs
//! past it (or is cancelled) is interrupted. An authorizer refuses what
//! would reach other files or process-wide settings (ATTACH, DETACH,
//! VACUUM INTO, extension loading, a few pragmas); SQLite's heap and its
//! largest string or blob are capped; results are kept within a byte budget
//! while rows are read, so a huge result is never built.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::fallible_iterator::FallibleIterator;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Batch, Connection, ErrorCode, InterruptHandle, Statement, ffi};

use super::Interpreter;
use super::output::{CappedResults, DEFAULT_MAX_RESULT_BYTES, human_bytes};
use crate::notebook::model::{ResultMessage, Results};

/// Most rows a TABLE result carries; later rows are not read.
pub const MAX_ROWS: usize = 1000;

/// Default largest string or blob SQLite builds: 16 MiB.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 << 20;

/// Default ceiling of SQLite's heap: 256 MiB.
pub const DEFAULT_MAX_HEAP_BYTES: usize = 256 << 20;

/// The configuration key that raises the result budget, named in notices.
const RESULT_SETTING: &str = "notebook.max_result_bytes";

/// Pragmas that may be read but not set: they point SQLite at other files
/// (`temp_store_directory`, `data_store_directory`), change process-wide
/// limits (`hard_heap_limit`, `soft_heap_limit`), map the file outside the
/// heap limit (`mmap_size`), start helper threads (`threads`), or undo the
/// defensive settings (`writable_schema`, `trusted_schema`).
const LOCKED_PRAGMAS: &[&str] = &[
    "temp_store_directory",
    "data_store_directory",
    "hard_heap_limit",
    "soft_heap_limit",
    "mmap_size",
    "threads",
    "writable_schema",
    "trusted_schema",
];

/// The budgets of the `%sql` interpreter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlLimits {
    /// Time budget of one paragraph.
    pub timeout: Duration,
    /// Largest string or blob (and row) SQLite builds
    /// (`SQLITE_LIMIT_LENGTH`): bigger ones end the statement with an
    /// error instead of being held in memory.
    pub max_value_bytes: usize,
    /// Ceiling of SQLite's heap (`sqlite3_hard_heap_limit64`). SQLite only
    /// has a process-wide one; the server has one `%sql` interpreter, so it
    /// is that interpreter's memory budget. Allocations past it fail, and
    /// the statement ends with "out of memory".
    pub max_heap_bytes: usize,
    /// Most bytes (as JSON) of results one paragraph keeps.
    pub max_result_bytes: usize,
}

impl Default for SqlLimits {
    fn default() -> Self {
        SqlLimits {
            timeout: Duration::from_secs(10),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_heap_bytes: DEFAULT_MAX_HEAP_BYTES,
            max_result_bytes: DEFAULT_MAX_RESULT_BYTES,
        }
    }
}

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

/// What the interpreter and its authorizer share. SQLite calls the
/// authorizer on the job thread, while a statement is prepared or, for
/// VACUUM's own statements, while it runs.
#[derive(Debug, Default)]
struct AuthState {
    /// A statement is running (not being prepared): the only ATTACH SQLite
    /// compiles then is VACUUM's own.
    running: bool,
    /// Why the authorizer last refused, for the error message.
    refused: Option<String>,
}

/// The SQL interpreter; opens its database on first use.
pub struct SqlInterpreter {
    path: PathBuf,
    limits: SqlLimits,
    connection: Option<Connection>,
    cancel: SqlCancel,
    auth: Arc<Mutex<AuthState>>,
}

impl SqlInterpreter {
    /// An interpreter on the database file `path`, within `limits`.
    pub fn new(path: PathBuf, limits: SqlLimits) -> SqlInterpreter {
        SqlInterpreter {
            path,
            limits,
            connection: None,
            cancel: SqlCancel::default(),
            auth: Arc::default(),
        }
    }

    /// A handle that interrupts this interpreter's running query.
    pub fn canceller(&self) -> SqlCancel {
        self.cancel.clone()
    }

    fn connection(&mut self) -> rusqlite::Result<&mut Connection> {
        if self.connection.is_none() {
            let connection = self.open()?;
            if let Ok(mut guard) = self.cancel.handle.lock() {
                *guard = Some(connection.get_interrupt_handle());
            }
            self.connection = Some(connection);
        }
        Ok(self.connection.as_mut().expect("opened above"))
    }

    /// Opens the database with the heap and value limits, the defensive
    /// settings and the authorizer in place.
    fn open(&self) -> rusqlite::Result<Connection> {
        let heap = i64::try_from(self.limits.max_heap_bytes).unwrap_or(i64::MAX);
        // SAFETY: sqlite3_hard_heap_limit64 takes no pointers and is
        // thread-safe; it only sets SQLite's process-wide heap ceiling.
        unsafe { ffi::sqlite3_hard_heap_limit64(heap) };
        let mut connection = Connection::open(&self.path)?;
        connection.busy_timeout(Duration::from_secs(1))?;
        let length = i32::try_from(self.limits.max_value_bytes).unwrap_or(i32::MAX);
        connection.set_limit(Limit::SQLITE_LIMIT_LENGTH, length)?;
        for (setting, on) in [
            // No writes to the schema table, shadow tables or the
            // journal settings that can corrupt the file.
            (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
            // Functions with side effects only in top-level SQL, never
            // from a view or trigger stored in the file.
            (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
            // fts3_tokenizer() with two arguments takes a C pointer.
            (DbConfig::SQLITE_DBCONFIG_ENABLE_FTS3_TOKENIZER, false),
            // Behind the authorizer: an ATTACH that got through could
            // still neither create nor write a file.
            (DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_CREATE, false),
            (DbConfig::SQLITE_DBCONFIG_ENABLE_ATTACH_WRITE, false),
        ] {
            connection.set_db_config(setting, on)?;
        }
        let auth = Arc::clone(&self.auth);
        connection.authorizer(Some(move |context: AuthContext<'_>| {
            authorize(&auth, &context.action)
        }))?;
        Ok(connection)
    }

    fn execute(&mut self, script: &str) -> rusqlite::Result<Vec<ResultMessage>> {
        let limits = self.limits;
        let auth = Arc::clone(&self.auth);
        if let Ok(mut state) = auth.lock() {
            *state = AuthState::default();
        }
        let running = |on: bool| {
            if let Ok(mut state) = auth.lock() {
                state.running = on;
            }
        };
        let connection = self.connection()?;
        let deadline = Instant::now() + limits.timeout;
        connection.progress_handler(10_000, Some(move || Instant::now() >= deadline))?;
        let mut output = CappedResults::new(limits.max_result_bytes);
        let result = (|| {
            let mut batch = Batch::new(connection, script);
            loop {
                running(false);
                let Some(mut statement) = batch.next()? else {
                    return Ok(());
                };
                running(true);
                if statement.column_count() > 0 {
                    table(&mut statement, &mut output)?;
                } else {
                    let changed = statement.execute([])?;
                    output.push_text(&format!("{changed} rows affected"));
                }
            }
        })();
        running(false);
        connection.progress_handler(0, None::<fn() -> bool>)?;
        result.map(|()| output.finish(RESULT_SETTING))
    }

    /// The text of an ERROR result for `error`.
    fn error_text(&self, error: &rusqlite::Error) -> String {
        let refused = self.auth.lock().ok().and_then(|mut s| s.refused.take());
        if let Some(reason) = refused {
            return format!("not authorized: {reason}");
        }
        match error.sqlite_error_code() {
            Some(ErrorCode::OperationInterrupted) => format!(
                "Query interrupted (time budget {:?}, or cancelled)",
                self.limits.timeout
            ),
            Some(ErrorCode::TooBig) => format!(
                "{error} (a string or blob in %sql may hold at most {}; raise notebook.sql_max_value_bytes)",
                human_bytes(self.limits.max_value_bytes)
            ),
            Some(ErrorCode::OutOfMemory) => format!(
                "{error} (%sql may use at most {} of memory; raise notebook.sql_max_heap_bytes)",
                human_bytes(self.limits.max_heap_bytes)
            ),
            _ => error.to_string(),
        }
    }
}

/// The authorizer: allows `action` or refuses it, noting why.
fn authorize(state: &Mutex<AuthState>, action: &AuthAction<'_>) -> Authorization {
    let Ok(mut state) = state.lock() else {
        return Authorization::Deny;
    };
    match refusal(action, state.running) {
        None => Authorization::Allow,
        Some(reason) => {
            state.refused.get_or_insert(reason);
            Authorization::Deny
        }
    }
}

/// Why `action` is refused, or `None` if it is allowed; `running` tells a
/// statement's run from its preparation.
///
/// VACUUM copies the database through an ATTACH it compiles while it runs:
/// of an empty file name (a private temporary database) for plain VACUUM,
/// of the target for VACUUM INTO. So an ATTACH is allowed only then and
/// only with an empty name.
fn refusal(action: &AuthAction<'_>, running: bool) -> Option<String> {
    const ATTACH: &str = "ATTACH is disabled in wsloop's %sql";
    let reason = match *action {
        AuthAction::Attach { filename } if running && filename.is_empty() => return None,
        AuthAction::Attach { .. } if running => "VACUUM INTO is disabled in wsloop's %sql",
        AuthAction::Attach { .. } => ATTACH,
        // An ATTACH of a computed file name comes without the name.
        AuthAction::Unknown {
            code: ffi::SQLITE_ATTACH,
            ..
        } => ATTACH,
        AuthAction::Detach { .. }
        | AuthAction::Unknown {
            code: ffi::SQLITE_DETACH,
            ..
        } => "DETACH is disabled in wsloop's %sql",
        AuthAction::Function { function_name }
            if function_name.eq_ignore_ascii_case("load_extension") =>
        {
            "load_extension() is disabled in wsloop's %sql"
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } if LOCKED_PRAGMAS
            .iter()
            .any(|locked| locked.eq_ignore_ascii_case(pragma_name)) =>
        {
            return Some(format!(
                "PRAGMA {} cannot be set in wsloop's %sql",
                pragma_name.to_ascii_lowercase()
            ));
        }
        _ => return None,
    };
    Some(reason.to_owned())
}

/// Runs a row-returning statement into a TABLE, reading rows only while
/// they fit: at most [`MAX_ROWS`] (then a TEXT notice) and within the
/// result budget.
fn table(statement: &mut Statement<'_>, output: &mut CappedResults) -> rusqlite::Result<()> {
    let names: Vec<String> = statement.column_names().map(str::to_owned).collect();
    let mut rows = statement.query([])?;
    if !output.begin_table(&names) {
        // Its output is not kept, but the statement still takes effect
        // (`DELETE … RETURNING` makes every change on its first step).
        rows.next()?;
        return Ok(());
    }
    let mut shown = 0;
    while let Some(row) = rows.next()? {
        if shown == MAX_ROWS {
            output.push_text(&format!(
                "Output truncated at {MAX_ROWS} rows, the most one table shows: later rows not read."
            ));
            break;
        }
        let cells = (0..names.len())
            .map(|column| row.get_ref(column).map(cell_text))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if !output.add_row(&cells) {
            break;
        }
        shown += 1;
    }
    Ok(())
}

/// A value as a table cell shows it; `None` for NULL.
fn cell_text(value: ValueRef<'_>) -> Option<Cow<'_, str>> {
    Some(match value {
        ValueRef::Null => return None,
        ValueRef::Integer(i) => Cow::Owned(i.to_string()),
        ValueRef::Real(f) => Cow::Owned(f.to_string()),
        ValueRef::Text(t) => String::from_utf8_lossy(t),
        ValueRef::Blob(b) => Cow::Owned(format!("<blob {} bytes>", b.len())),
    })
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
                let mut output = CappedResults::new(self.limits.max_result_bytes);
                output.push_text(&self.error_text(&error));
                Results {
                    code: "ERROR".to_owned(),
                    msg: output.finish(RESULT_SETTING),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// SQLite's heap limit and memory counters are process-wide, and every
    /// interpreter sets the limit when it opens its database: the tests
    /// take turns.
    static SQLITE_MEMORY: Mutex<()> = Mutex::new(());

    fn memory_lock() -> std::sync::MutexGuard<'static, ()> {
        SQLITE_MEMORY
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An empty directory for one test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wsloop-sql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn interpreter_in(dir: &Path, limits: SqlLimits) -> SqlInterpreter {
        SqlInterpreter::new(dir.join("notebook.sqlite3"), limits)
    }

    /// An interpreter on a database in its own new directory.
    fn interpreter(name: &str, limits: SqlLimits) -> (SqlInterpreter, PathBuf) {
        let dir = scratch_dir(name);
        (interpreter_in(&dir, limits), dir)
    }

    fn with_timeout(timeout: Duration) -> SqlLimits {
        SqlLimits {
            timeout,
            ..SqlLimits::default()
        }
    }

    /// The files in `dir`, sorted.
    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn only_error(results: &Results) -> &str {
        assert_eq!(results.code, "ERROR", "{:?}", results.msg);
        assert_eq!(results.msg.len(), 1, "{:?}", results.msg);
        &results.msg[0].data
    }

    /// The results as JSON, as they are sent and saved.
    fn json_size(results: &Results) -> usize {
        serde_json::to_string(results).unwrap().len()
    }

    #[test]
    fn select_gives_a_table_and_other_statements_a_row_count() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("basics", SqlLimits::default());
        let results = sql.run("select 1+1 as two, 'a\tb' as s, null as n");
        assert_eq!(results.code, "SUCCESS");
        assert_eq!(results.msg[0].kind, "TABLE");
        assert_eq!(results.msg[0].data, "two\ts\tn\n2\ta b\tnull");
        let exact = |cells: &[Option<&str>]| cells.iter().map(|c| c.map(str::to_owned)).collect();
        assert_eq!(
            results.msg[0].cells,
            Some(vec![
                exact(&[Some("two"), Some("s"), Some("n")]),
                exact(&[Some("2"), Some("a\tb"), None]),
            ])
        );
        let results = sql.run("select 'null' as s, 'x' as t");
        assert_eq!(results.msg[0].data, "s\tt\nnull\tx");
        assert_eq!(results.msg[0].cells, None, "exact as TSV");
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
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn runaway_query_is_interrupted_at_its_budget() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("runaway", with_timeout(Duration::from_millis(200)));
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
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn tables_stop_at_max_rows_with_a_notice() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("max-rows", SqlLimits::default());
        let results = sql.run("with recursive c(x) as (select 1 union all select x + 1 from c limit 1500) select x from c");
        assert_eq!(results.msg.len(), 2);
        assert_eq!(results.msg[0].data.lines().count(), MAX_ROWS + 1);
        assert_eq!(
            results.msg[1].data,
            "Output truncated at 1000 rows, the most one table shows: later rows not read."
        );
        // Rows past the cap are not read: an endless query ends at once.
        let (mut endless, endless_dir) =
            interpreter("endless", with_timeout(Duration::from_secs(3)));
        let results = endless
            .run("with recursive c(x) as (select 1 union all select x + 1 from c) select x from c");
        assert_eq!(results.code, "SUCCESS", "{:?}", results.msg.last());
        assert_eq!(results.msg[0].data.lines().count(), MAX_ROWS + 1);
        std::fs::remove_dir_all(endless_dir).unwrap();
        // Exactly MAX_ROWS rows: nothing was cut, no notice.
        let results = sql.run("with recursive c(x) as (select 1 union all select x + 1 from c limit 1000) select x from c");
        assert_eq!(results.msg.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn attach_and_detach_are_refused() {
        let _memory = memory_lock();
        let dir = scratch_dir("attach");
        // An existing database outside the notebook's file.
        let outside = dir.join("outside.db");
        Connection::open(&outside)
            .unwrap()
            .execute_batch("create table secret(x); insert into secret values ('hidden');")
            .unwrap();
        let mut sql = interpreter_in(&dir, SqlLimits::default());
        assert_eq!(sql.run("create table t(x)").code, "SUCCESS");
        let before = files(&dir);
        for script in [
            format!(
                "ATTACH DATABASE '{}' AS other",
                dir.join("new.db").display()
            ),
            format!("attach '{}' as other", outside.display()),
            format!(
                "ATTACH 'file:{}?mode=rwc' AS other",
                dir.join("uri.db").display()
            ),
            "ATTACH '' AS scratch".to_owned(),
            "ATTACH ':memory:' AS scratch".to_owned(),
            format!("ATTACH '{}' || '/computed.db' AS other", dir.display()),
            "select 1; attach 'x.db' as other".to_owned(),
        ] {
            assert_eq!(
                only_error(&sql.run(&script)),
                "not authorized: ATTACH is disabled in wsloop's %sql",
                "{script}"
            );
        }
        assert_eq!(
            only_error(&sql.run("DETACH DATABASE other")),
            "not authorized: DETACH is disabled in wsloop's %sql"
        );
        assert_eq!(files(&dir), before);
        // The refusal does not stick to later statements.
        assert_eq!(sql.run("select 1 as one").msg[0].data, "one\n1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn vacuum_into_is_refused_and_plain_vacuum_works() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("vacuum", SqlLimits::default());
        let results = sql.run(
            "create table t(x); insert into t select value from json_each('[1,2,3]'); delete from t where x = 2;",
        );
        assert_eq!(results.code, "SUCCESS", "{:?}", results.msg);
        let before = files(&dir);
        let target = dir.join("copy.db");
        for script in [
            format!("VACUUM INTO '{}'", target.display()),
            format!("vacuum main into '{}'", target.display()),
            format!("VACUUM INTO 'file:{}?mode=rwc'", target.display()),
            format!("VACUUM INTO '{}' || '/computed.db'", dir.display()),
        ] {
            assert_eq!(
                only_error(&sql.run(&script)),
                "not authorized: VACUUM INTO is disabled in wsloop's %sql",
                "{script}"
            );
        }
        // A computed name that is not UTF-8 is refused too (rusqlite
        // cannot hand it to the authorizer, and fails it).
        let hex: String = format!("{}/\u{1}", dir.display())
            .bytes()
            .chain([0xff])
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let results = sql.run(&format!("VACUUM INTO cast(x'{hex}' as text)"));
        assert_eq!(results.code, "ERROR", "{:?}", results.msg);
        assert_eq!(files(&dir), before);
        // VACUUM of the database itself still works, and keeps the data.
        for script in ["VACUUM", "vacuum main", "VACUUM INTO ''"] {
            let results = sql.run(script);
            assert_eq!(results.code, "SUCCESS", "{script}: {:?}", results.msg);
        }
        assert_eq!(
            sql.run("select group_concat(x) as xs from t").msg[0].data,
            "xs\n1,3"
        );
        assert_eq!(files(&dir), before);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn extensions_and_pragmas_that_reach_outside_are_refused() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("pragmas", SqlLimits::default());
        assert_eq!(
            only_error(&sql.run(&format!(
                "select load_extension('{}')",
                dir.join("evil.so").display()
            ))),
            "not authorized: load_extension() is disabled in wsloop's %sql"
        );
        for (script, name) in [
            (
                format!("PRAGMA temp_store_directory = '{}'", dir.display()),
                "temp_store_directory",
            ),
            ("PRAGMA HARD_HEAP_LIMIT = 1".to_owned(), "hard_heap_limit"),
            ("pragma soft_heap_limit = 1".to_owned(), "soft_heap_limit"),
            ("PRAGMA main.mmap_size = 1000000000".to_owned(), "mmap_size"),
            ("PRAGMA threads = 8".to_owned(), "threads"),
            ("PRAGMA writable_schema = 1".to_owned(), "writable_schema"),
            ("PRAGMA trusted_schema = 1".to_owned(), "trusted_schema"),
        ] {
            assert_eq!(
                only_error(&sql.run(&script)),
                format!("not authorized: PRAGMA {name} cannot be set in wsloop's %sql"),
            );
        }
        // Reading them is fine, and the heap limit stayed.
        let results = sql.run("PRAGMA hard_heap_limit");
        assert_eq!(results.code, "SUCCESS", "{:?}", results.msg);
        assert_ne!(results.msg[0].data, "hard_heap_limit\n1");
        // Functions of the SQLite shell that reach files are not built in.
        for function in [
            "readfile('/etc/hostname')",
            "writefile('x', 'y')",
            "edit('x')",
        ] {
            let error = only_error(&sql.run(&format!("select {function}"))).to_owned();
            assert!(error.contains("no such function"), "{error}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn ordinary_sql_still_works_confined() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("ordinary", SqlLimits::default());
        let script = "
            PRAGMA foreign_keys = on;
            PRAGMA cache_size = 1000;
            PRAGMA journal_mode = wal;
            create table person(id integer primary key, name text not null, born text default (date('now')));
            create index person_name on person(name);
            create table log(what text);
            create trigger person_added after insert on person begin
                insert into log values ('added ' || upper(new.name) || ' ' || abs(-1) || length(hex(randomblob(2))));
            end;
            create view adults as select name, json_object('n', name) as j, random() is not null as r from person;
            begin;
            insert into person(name) values ('ada'), ('alan');
            savepoint s; delete from person; rollback to s; release s;
            commit;
            create virtual table docs using fts5(body);
            insert into docs values ('the quick brown fox'), ('lazy dog');
            create virtual table boxes using rtree(id, x0, x1);
            insert into boxes values (1, 0, 10);
            create temp table scratch as select 1 as x;
            analyze;
            ";
        let results = sql.run(script);
        assert_eq!(results.code, "SUCCESS", "{:?}", results.msg);
        let check = |sql: &mut SqlInterpreter, query: &str, expected: &str| {
            let results = sql.run(query);
            assert_eq!(results.code, "SUCCESS", "{query}: {:?}", results.msg);
            assert_eq!(results.msg[0].data, expected, "{query}");
        };
        check(
            &mut sql,
            "select name, j, r from adults order by name",
            "name\tj\tr\nada\t{\"n\":\"ada\"}\t1\nalan\t{\"n\":\"alan\"}\t1",
        );
        check(
            &mut sql,
            "select what from log order by what",
            "what\nadded ADA 14\nadded ALAN 14",
        );
        check(
            &mut sql,
            "select body from docs where docs match 'fox'",
            "body\nthe quick brown fox",
        );
        check(&mut sql, "select id from boxes where x1 > 5", "id\n1");
        check(&mut sql, "select x from scratch", "x\n1");
        check(
            &mut sql,
            "select count(*) > 0 as pages from dbstat",
            "pages\n1",
        );
        check(
            &mut sql,
            "select name from pragma_table_info('person') limit 1",
            "name\nid",
        );
        check(
            &mut sql,
            "delete from log returning what is not null as gone",
            "gone\n1\n1",
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_500_mb_string_is_refused_without_being_built() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("huge-string", SqlLimits::default());
        assert_eq!(sql.run("select 1").code, "SUCCESS");
        // SAFETY: resetting and reading SQLite's own counters takes no
        // pointers.
        unsafe { ffi::sqlite3_memory_highwater(1) };
        for script in [
            "select length(printf('%.*c', 500000000, 'x')) as n",
            "select length(randomblob(500000000)) as n",
            "select length(zeroblob(500000000)) as n",
            "select length(replace(printf('%.*c', 1000000, 'x'), 'x', printf('%.*c', 500, 'y'))) as n",
        ] {
            let error = only_error(&sql.run(script)).to_owned();
            assert_eq!(
                error,
                "string or blob too big (a string or blob in %sql may hold at most 16 MiB; raise notebook.sql_max_value_bytes)",
                "{script}"
            );
        }
        // SAFETY: as above.
        let highwater = unsafe { ffi::sqlite3_memory_highwater(0) };
        assert!(
            highwater < 64 << 20,
            "SQLite's heap reached {highwater} bytes"
        );
        // Up to the limit is fine.
        assert_eq!(
            sql.run("select length(printf('%.*c', 1000000, 'x')) as n")
                .msg[0]
                .data,
            "n\n1000000"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_heap_limit_ends_a_statement_with_out_of_memory() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter(
            "heap",
            SqlLimits {
                max_heap_bytes: 32 << 20,
                ..SqlLimits::default()
            },
        );
        assert_eq!(sql.run("select 1").code, "SUCCESS");
        // SAFETY: resetting SQLite's own counter takes no pointers.
        unsafe { ffi::sqlite3_memory_highwater(1) };
        // 100 MB of temporary table held in memory.
        let results = sql.run(
            "PRAGMA temp_store = memory;
             create temp table big as
                 with recursive c(x) as (select 1 union all select x + 1 from c limit 100)
                 select x, randomblob(1000000) as b from c;",
        );
        // SAFETY: reading SQLite's own counter takes no pointers.
        let highwater = unsafe { ffi::sqlite3_memory_highwater(0) };
        // SAFETY: restores the process-wide default for the other tests.
        unsafe { ffi::sqlite3_hard_heap_limit64(DEFAULT_MAX_HEAP_BYTES as i64) };
        assert_eq!(
            only_error(&results),
            "out of memory (%sql may use at most 32 MiB of memory; raise notebook.sql_max_heap_bytes)"
        );
        assert!(
            highwater <= 32 << 20,
            "SQLite's heap reached {highwater} bytes"
        );
        // The connection still works.
        assert_eq!(sql.run("select 2 as n").msg[0].data, "n\n2");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_100_mb_result_is_cut_at_the_byte_budget_and_stops_reading() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter("big-result", with_timeout(Duration::from_secs(5)));
        assert_eq!(sql.run("create table t(x)").code, "SUCCESS");
        // A million rows of 100 KB: 100 GB if read to the end, far more
        // than the time budget allows; the budget stops it after ~10 rows.
        let started = Instant::now();
        let results = sql.run(
            "with recursive c(x) as (select 1 union all select x + 1 from c limit 1000000)
                 select x, printf('%.*c', 100000, 'y') as s from c;
             insert into t values (1);
             select * from t;",
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(results.code, "SUCCESS", "{:?}", &results.msg.last());
        assert_eq!(results.msg.len(), 2);
        assert_eq!(results.msg[0].kind, "TABLE");
        let rows = results.msg[0].data.lines().count() - 1;
        assert_eq!(rows, 10);
        let size = json_size(&results);
        assert!(size <= DEFAULT_MAX_RESULT_BYTES + 1024, "{size}");
        assert!(size > DEFAULT_MAX_RESULT_BYTES - 110_000, "{size}");
        assert_eq!(
            results.msg[1].data,
            "Output truncated at 1 MiB, the limit on one paragraph's results: 10 rows of this table shown, later rows not read. 2 later outputs left out (their statements still ran). Raise notebook.max_result_bytes to see more."
        );
        // The statements after the cut ran.
        assert_eq!(sql.run("select count(*) as n from t").msg[0].data, "n\n1");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn text_results_and_errors_are_capped_too() {
        let _memory = memory_lock();
        let (mut sql, dir) = interpreter(
            "text-cap",
            SqlLimits {
                max_result_bytes: 4096,
                ..SqlLimits::default()
            },
        );
        // Errors can quote a token of the script, which may be megabytes
        // long.
        let script = format!("select x'{}'", "z".repeat(2 << 20));
        let results = sql.run(&script);
        assert_eq!(results.code, "ERROR");
        assert!(json_size(&results) < 4096 + 512, "{}", json_size(&results));
        assert!(
            results.msg[0]
                .data
                .starts_with("unrecognized token: \"x'zzz"),
            "{:?}",
            results.msg[0]
        );
        assert!(
            results.msg[1].data.starts_with("Output truncated at 4 KiB"),
            "{:?}",
            results.msg[1]
        );
        // Many small outputs add up.
        let results = sql.run(&"select 1 as one;".repeat(10_000));
        assert_eq!(results.code, "SUCCESS");
        assert!(json_size(&results) < 4096 + 512, "{}", json_size(&results));
        assert!(
            results
                .msg
                .last()
                .unwrap()
                .data
                .contains("later outputs left out")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
