//! A paragraph's result messages, kept within a byte budget while they are
//! built, so an interpreter that produces a huge result never holds, saves
//! or sends more than the budget. Sizes are counted as the JSON the
//! messages become (escapes included), since that is what is stored in the
//! note and sent to every watcher.

use crate::notebook::model::ResultMessage;

/// Default budget of one paragraph's results: 1 MiB.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 1 << 20;

/// What a message costs besides its data: `{"type":"TABLE","data":""},`.
const MESSAGE_OVERHEAD: usize = 32;

/// What the `cells` of a TABLE cost besides its rows: `,"cells":[]`.
const CELLS_OVERHEAD: usize = 11;

/// How a NULL is written in a TABLE's `data`.
const NULL_TEXT: &str = "null";

/// One table line as rendered, and what it costs.
#[derive(Debug, Clone, Copy)]
struct Line {
    /// JSON bytes of the line in `data`.
    cost: usize,
    /// JSON bytes of the line as a row of `cells`.
    cells_cost: usize,
    /// The line in `data` lost something: a NULL, a tab or a line break.
    lossy: bool,
}

/// Where the budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Inside a TABLE, after this many rows.
    Table { rows: usize },
    /// Inside a TEXT message, or before a message could start.
    Message,
}

/// Result messages under construction, within a byte budget. Once the
/// budget is spent, everything later is left out and counted, and one
/// notice (outside the budget, a few hundred bytes) says what was cut.
#[derive(Debug)]
pub struct CappedResults {
    limit: usize,
    used: usize,
    messages: Vec<ResultMessage>,
    /// The last message is a TABLE that rows may still be added to.
    table_open: bool,
    rows_in_table: usize,
    /// What the open table's `cells` cost, whether or not it has them yet.
    cells_cost: usize,
    cut: Option<Cut>,
    /// Outputs left out after the budget ran out.
    left_out: usize,
    /// One row being rendered, kept between rows to reuse its allocation.
    line: String,
}

impl CappedResults {
    /// Empty results that may grow to `limit` bytes of JSON.
    pub fn new(limit: usize) -> CappedResults {
        CappedResults {
            limit,
            used: 0,
            messages: Vec::new(),
            table_open: false,
            rows_in_table: 0,
            cells_cost: 0,
            cut: None,
            left_out: 0,
            line: String::new(),
        }
    }

    /// Whether the budget ran out: later outputs are left out.
    pub fn is_full(&self) -> bool {
        self.cut.is_some()
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Adds a TEXT message, cut short (at a character boundary) if it does
    /// not fit.
    pub fn push_text(&mut self, text: &str) {
        self.table_open = false;
        if self.is_full() {
            self.left_out += 1;
            return;
        }
        let Some(room) = self.room().checked_sub(MESSAGE_OVERHEAD) else {
            self.cut = Some(Cut::Message);
            self.left_out += 1;
            return;
        };
        let (kept, cost) = prefix_within(text, room);
        self.used += MESSAGE_OVERHEAD + cost;
        if kept < text.len() {
            self.cut = Some(Cut::Message);
        }
        self.messages.push(ResultMessage::text(&text[..kept]));
    }

    /// Starts a TABLE with these column names. False (and no table) when
    /// the budget is already spent or the header does not fit: its rows are
    /// not wanted.
    pub fn begin_table<S: AsRef<str>>(&mut self, columns: &[S]) -> bool {
        self.table_open = false;
        if self.is_full() {
            self.left_out += 1;
            return false;
        }
        let header: Vec<Option<&str>> = columns.iter().map(|name| Some(name.as_ref())).collect();
        let line = self
            .room()
            .checked_sub(MESSAGE_OVERHEAD)
            .and_then(|room| self.render_line(&header, room).map(|line| (room, line)));
        let Some((room, line)) = line else {
            self.cut = Some(Cut::Message);
            self.left_out += 1;
            return false;
        };
        self.cells_cost = CELLS_OVERHEAD + line.cells_cost;
        let cost = if line.lossy {
            line.cost + self.cells_cost
        } else {
            line.cost
        };
        if cost > room {
            self.cut = Some(Cut::Message);
            self.left_out += 1;
            return false;
        }
        self.used += MESSAGE_OVERHEAD + cost;
        let mut message = ResultMessage::new("TABLE", std::mem::take(&mut self.line));
        if line.lossy {
            message.cells = Some(vec![exact_row(&header)]);
        }
        self.messages.push(message);
        self.table_open = true;
        self.rows_in_table = 0;
        true
    }

    /// Adds a row to the TABLE begun last; `None` is a NULL. False when it
    /// does not fit (the row is left out and the budget is spent) or no
    /// table is open.
    pub fn add_row<S: AsRef<str>>(&mut self, cells: &[Option<S>]) -> bool {
        if !self.table_open {
            return false;
        }
        // The row separator, `\n`, is two bytes as JSON.
        let Some(room) = self.room().checked_sub(2) else {
            return self.cut_table();
        };
        let Some(line) = self.render_line(cells, room) else {
            return self.cut_table();
        };
        let table = self.messages.last_mut().expect("a table is open");
        // The comma before this row in `cells`.
        let row_cells_cost = 1 + line.cells_cost;
        let cells_cost = match (&table.cells, line.lossy) {
            (Some(_), _) => row_cells_cost,
            (None, true) => self.cells_cost + row_cells_cost,
            (None, false) => 0,
        };
        if line.cost + cells_cost > room {
            return self.cut_table();
        }
        self.used += 2 + line.cost + cells_cost;
        self.cells_cost += row_cells_cost;
        if table.cells.is_none() && line.lossy {
            // Every line so far is exact: no NULL, tab or line break.
            table.cells = Some(
                table
                    .data
                    .split('\n')
                    .map(|row| row.split('\t').map(|cell| Some(cell.to_owned())).collect())
                    .collect(),
            );
        }
        if let Some(rows) = &mut table.cells {
            rows.push(exact_row(cells));
        }
        table.data.push('\n');
        table.data.push_str(&self.line);
        self.rows_in_table += 1;
        true
    }

    fn cut_table(&mut self) -> bool {
        self.cut = Some(Cut::Table {
            rows: self.rows_in_table,
        });
        self.table_open = false;
        false
    }

    /// Renders cells into `self.line`: `\t` between them, NULL as `null`,
    /// and tabs and line breaks inside them turned into spaces (they would
    /// split the table). Gives its JSON cost, or `None` as soon as it
    /// exceeds `room`, so a huge cell is never copied whole.
    fn render_line<S: AsRef<str>>(&mut self, cells: &[Option<S>], room: usize) -> Option<Line> {
        self.line.clear();
        let mut line = Line {
            cost: 0,
            // `[` and `]`, and the commas between cells.
            cells_cost: 2 + cells.len().saturating_sub(1),
            lossy: false,
        };
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                line.cost += 2;
                self.line.push('\t');
            }
            let Some(text) = cell else {
                line.lossy = true;
                line.cost += NULL_TEXT.len();
                line.cells_cost += "null".len();
                self.line.push_str(NULL_TEXT);
                continue;
            };
            // The quotes around it.
            line.cells_cost += 2;
            for c in text.as_ref().chars() {
                line.cells_cost += json_cost(c);
                let c = if matches!(c, '\t' | '\n' | '\r') {
                    line.lossy = true;
                    ' '
                } else {
                    c
                };
                line.cost += json_cost(c);
                if line.cost > room {
                    self.line.clear();
                    return None;
                }
                self.line.push(c);
            }
        }
        (line.cost <= room).then_some(line)
    }

    /// The messages, followed by a TEXT notice if anything was cut;
    /// `setting` names the configuration key that raises the budget.
    pub fn finish(mut self, setting: &str) -> Vec<ResultMessage> {
        let Some(cut) = self.cut else {
            return self.messages;
        };
        let mut notice = format!(
            "Output truncated at {}, the limit on one paragraph's results",
            human_bytes(self.limit)
        );
        match cut {
            Cut::Table { rows } => notice.push_str(&format!(
                ": {rows} rows of this table shown, later rows not read."
            )),
            Cut::Message => notice.push('.'),
        }
        if self.left_out > 0 {
            notice.push_str(&format!(
                " {} later outputs left out (their statements still ran).",
                self.left_out
            ));
        }
        notice.push_str(&format!(" Raise {setting} to see more."));
        self.messages.push(ResultMessage::text(notice));
        self.messages
    }
}

/// A row of `cells`: exact values, `None` for NULL.
fn exact_row<S: AsRef<str>>(cells: &[Option<S>]) -> Vec<Option<String>> {
    cells
        .iter()
        .map(|cell| cell.as_ref().map(|text| text.as_ref().to_owned()))
        .collect()
}

/// `text` cut to at most `room` bytes of JSON, at a character boundary:
/// the length kept and its JSON cost.
pub fn prefix_within(text: &str, room: usize) -> (usize, usize) {
    let mut cost = 0;
    for (index, c) in text.char_indices() {
        let next = cost + json_cost(c);
        if next > room {
            return (index, cost);
        }
        cost = next;
    }
    (text.len(), cost)
}

/// Bytes `c` takes inside a JSON string, as serde_json writes it.
fn json_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\u{8}' | '\u{c}' | '\n' | '\r' | '\t' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// A byte count as people read it: `1 MiB`, `512 KiB`, or `1000 bytes`.
pub fn human_bytes(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * KIB;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON size of messages, as they are stored and sent.
    fn json_size(messages: &[ResultMessage]) -> usize {
        serde_json::to_string(messages).unwrap().len()
    }

    #[test]
    fn json_cost_matches_serde_json() {
        let text = "a\"b\\c\u{1}\u{8}\u{c}é€😀\t\n\r\u{7f}";
        let (kept, cost) = prefix_within(text, usize::MAX);
        assert_eq!(kept, text.len());
        assert_eq!(cost + 2, serde_json::to_string(text).unwrap().len());
    }

    #[test]
    fn text_is_cut_at_a_character_boundary_with_a_notice() {
        let mut results = CappedResults::new(MESSAGE_OVERHEAD + 5);
        results.push_text("ab€cd");
        results.push_text("never");
        let messages = results.finish("notebook.max_result_bytes");
        assert_eq!(messages[0].data, "ab€");
        assert_eq!(messages.len(), 2);
        assert!(
            messages[1].data.starts_with("Output truncated at 37 bytes")
                && messages[1].data.contains("1 later outputs left out")
                && messages[1]
                    .data
                    .ends_with("Raise notebook.max_result_bytes to see more."),
            "{:?}",
            messages[1]
        );
    }

    #[test]
    fn tables_stop_at_the_first_row_that_does_not_fit() {
        let limit = 4096;
        let mut results = CappedResults::new(limit);
        assert!(results.begin_table(&["n", "text"]));
        let mut added = 0;
        while results.add_row(&[Some(added.to_string()), Some("x y\"".repeat(20))]) {
            added += 1;
        }
        assert!(results.is_full());
        assert!(
            !results.add_row(&[Some("1"), Some("2")]),
            "the table is closed"
        );
        assert!(!results.begin_table(&["later"]));
        results.push_text("later");
        let messages = results.finish("k");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].kind, "TABLE");
        assert_eq!(messages[0].data.lines().count(), added + 1);
        assert!(messages[0].data.contains("\tx y\"x y\""));
        assert_eq!(messages[0].cells, None);
        assert!(
            json_size(&messages[..1]) <= limit,
            "{}",
            json_size(&messages)
        );
        assert!(json_size(&messages[..1]) > limit - 200);
        assert_eq!(
            messages[1].data,
            format!(
                "Output truncated at 4 KiB, the limit on one paragraph's results: {added} rows of this table shown, later rows not read. 2 later outputs left out (their statements still ran). Raise k to see more."
            )
        );
    }

    #[test]
    fn a_huge_cell_is_not_copied_whole() {
        let mut results = CappedResults::new(1024);
        assert!(results.begin_table(&["big"]));
        let big = "y".repeat(1 << 20);
        assert!(!results.add_row(&[Some(big.as_str())]));
        assert!(
            results.line.capacity() < 4096,
            "{}",
            results.line.capacity()
        );
        let messages = results.finish("k");
        assert_eq!(messages[0].data, "big");
    }

    #[test]
    fn results_within_the_budget_are_untouched() {
        let mut results = CappedResults::new(DEFAULT_MAX_RESULT_BYTES);
        assert!(results.begin_table(&["a", "b"]));
        assert!(results.add_row(&[Some("1"), Some("x y")]));
        results.push_text("3 rows affected");
        let messages = results.finish("k");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].data, "a\tb\n1\tx y");
        assert_eq!(messages[0].cells, None);
        assert_eq!(messages[1].data, "3 rows affected");
        assert_eq!(human_bytes(DEFAULT_MAX_RESULT_BYTES), "1 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }

    fn cells(rows: &[&[Option<&str>]]) -> Option<Vec<Vec<Option<String>>>> {
        Some(rows.iter().map(|row| exact_row(row)).collect())
    }

    #[test]
    fn a_lossy_table_also_has_exact_cells() {
        let mut results = CappedResults::new(DEFAULT_MAX_RESULT_BYTES);
        assert!(results.begin_table(&["a", "b"]));
        assert!(results.add_row(&[Some("1"), Some("null")]));
        assert!(results.add_row(&[None, Some("x\ty\r\nz")]));
        assert!(results.add_row(&[Some("3"), Some("")]));
        let messages = results.finish("k");
        assert_eq!(messages[0].data, "a\tb\n1\tnull\nnull\tx y  z\n3\t");
        assert_eq!(
            messages[0].cells,
            cells(&[
                &[Some("a"), Some("b")],
                &[Some("1"), Some("null")],
                &[None, Some("x\ty\r\nz")],
                &[Some("3"), Some("")],
            ])
        );
        let json = serde_json::to_string(&messages[0]).unwrap();
        assert!(json.contains(r#""cells":[["a","b"],["1","null"],[null,"x\ty\r\nz"],["3",""]]"#));
        assert_eq!(
            serde_json::from_str::<ResultMessage>(&json).unwrap(),
            messages[0]
        );
        assert!(
            !serde_json::to_string(&ResultMessage::text("t"))
                .unwrap()
                .contains("cells")
        );
    }

    #[test]
    fn a_tab_in_a_column_name_is_kept_too() {
        let mut results = CappedResults::new(DEFAULT_MAX_RESULT_BYTES);
        assert!(results.begin_table(&["a\tb"]));
        assert!(results.add_row(&[Some("1")]));
        let messages = results.finish("k");
        assert_eq!(messages[0].data, "a b\n1");
        assert_eq!(messages[0].cells, cells(&[&[Some("a\tb")], &[Some("1")]]));
    }

    /// The budget is counted exactly, `cells` included: every prefix of
    /// rows that was accepted fits, and the first refused would not.
    #[test]
    fn cells_count_against_the_budget() {
        for limit in (40..400).step_by(7) {
            let mut results = CappedResults::new(limit);
            let mut rows = 0;
            if results.begin_table(&["n", "s"]) {
                for n in 0..50 {
                    // Three exact rows, then NULLs and tabs.
                    let number = n.to_string();
                    let value = match n {
                        0..3 => Some("plain \"é\""),
                        n if n % 2 == 1 => None,
                        _ => Some("v\t\"é\""),
                    };
                    let row = [Some(number.as_str()), value];
                    if !results.add_row(&row) {
                        break;
                    }
                    rows += 1;
                }
            }
            let messages = results.finish("k");
            let kept: Vec<_> = messages.iter().filter(|m| m.kind == "TABLE").collect();
            let size = serde_json::to_string(&kept).unwrap().len();
            assert!(size <= limit, "limit {limit}: {size} bytes, {rows} rows");
            if let Some(table) = kept.first() {
                assert_eq!(table.data.lines().count(), rows + 1);
                assert_eq!(table.cells.is_some(), rows > 3, "limit {limit}");
            }
        }
    }
}
