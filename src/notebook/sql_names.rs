//! Table and column names of the `%sql` database, for COMPLETION: read by
//! a worker thread through its own read-only connection (the database is
//! in WAL mode, so this never waits for a running paragraph), never on
//! the event loop.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::handler::ConnectionId;
use crate::server::Notifier;

/// Completion requests the worker may have queued; more get keywords only.
const MAX_QUEUED: usize = 64;

/// Most names one completion lists.
const MAX_NAMES: usize = 200;

/// One completion to look names up for: who asked, for which paragraph,
/// and the word being typed.
pub struct NameLookup {
    /// The connection to answer.
    pub conn: ConnectionId,
    /// The paragraph the completion is for.
    pub paragraph_id: String,
    /// The word before the cursor (names starting with it are listed).
    pub prefix: String,
}

/// A finished lookup: the request and the names found (tables first).
pub struct FoundNames {
    /// The request.
    pub lookup: NameLookup,
    /// `(name, "table" | "column")`.
    pub names: Vec<(String, &'static str)>,
}

/// The worker and its finished lookups.
pub struct SqlNames {
    database: PathBuf,
    sender: Option<SyncSender<NameLookup>>,
    done: Arc<Mutex<Vec<FoundNames>>>,
    worker: Option<JoinHandle<()>>,
}

impl SqlNames {
    /// Names from the database at `database`; nothing runs until
    /// [`SqlNames::start`].
    pub fn new(database: PathBuf) -> SqlNames {
        SqlNames {
            database,
            sender: None,
            done: Arc::default(),
            worker: None,
        }
    }

    /// Starts the worker; it notifies the loop after each lookup.
    pub fn start(&mut self, notifier: Notifier) {
        let (sender, receiver) = mpsc::sync_channel(MAX_QUEUED);
        let done = self.done.clone();
        let database = self.database.clone();
        let spawned = std::thread::Builder::new()
            .name("wsloop-sql-names".to_owned())
            .spawn(move || run_lookups(&database, &receiver, &done, &notifier));
        match spawned {
            Ok(worker) => {
                self.sender = Some(sender);
                self.worker = Some(worker);
            }
            Err(error) => log::warn!("sql completion: could not start its worker: {error}"),
        }
    }

    /// Queues a lookup; gives it back when the worker is busy or absent.
    pub fn submit(&self, lookup: NameLookup) -> Result<(), NameLookup> {
        match &self.sender {
            Some(sender) => sender.try_send(lookup).map_err(|error| match error {
                mpsc::TrySendError::Full(lookup) | mpsc::TrySendError::Disconnected(lookup) => {
                    lookup
                }
            }),
            None => Err(lookup),
        }
    }

    /// The lookups finished since the last call.
    pub fn collect(&self) -> Vec<FoundNames> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for SqlNames {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn run_lookups(
    database: &PathBuf,
    receiver: &Receiver<NameLookup>,
    done: &Mutex<Vec<FoundNames>>,
    notifier: &Notifier,
) {
    while let Ok(lookup) = receiver.recv() {
        let names = names_in(database, &lookup.prefix).unwrap_or_default();
        done.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FoundNames { lookup, names });
        if notifier.notify().is_err() {
            return;
        }
    }
}

/// Tables, views and their columns whose names start with `prefix`
/// (case-insensitive). A database that does not exist yet has none.
fn names_in(database: &PathBuf, prefix: &str) -> rusqlite::Result<Vec<(String, &'static str)>> {
    if !database.exists() {
        return Ok(Vec::new());
    }
    let connection = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(Duration::from_millis(200))?;
    let mut statement = connection.prepare(
        "select name from sqlite_schema where type in ('table', 'view') and name not like 'sqlite_%' order by name",
    )?;
    let tables: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let prefix = prefix.to_lowercase();
    let matches = |name: &str| name.to_lowercase().starts_with(&prefix);
    let mut names: Vec<(String, &'static str)> = tables
        .iter()
        .filter(|table| matches(table))
        .map(|table| (table.clone(), "table"))
        .collect();
    let mut columns = Vec::new();
    for table in &tables {
        let mut info = connection.prepare("select name from pragma_table_info(?1)")?;
        for column in info.query_map([table], |row| row.get::<_, String>(0))? {
            let column = column?;
            if matches(&column) && !columns.contains(&column) {
                columns.push(column);
            }
        }
    }
    names.extend(columns.into_iter().map(|column| (column, "column")));
    names.truncate(MAX_NAMES);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_columns_by_prefix() {
        let dir = std::env::temp_dir().join(format!("wsloop-sql-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let database = dir.join("db.sqlite3");
        let connection = Connection::open(&database).unwrap();
        connection
            .execute_batch("create table orders (id integer, owner text); create table other (x);")
            .unwrap();
        drop(connection);
        let names = names_in(&database, "o").unwrap();
        assert_eq!(
            names,
            [
                ("orders".to_owned(), "table"),
                ("other".to_owned(), "table"),
                ("owner".to_owned(), "column")
            ]
        );
        assert_eq!(
            names_in(&database, "ID").unwrap(),
            [("id".to_owned(), "column")]
        );
        assert!(names_in(&dir.join("missing"), "").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
