//! A running paragraph's output as it streams in: split into Zeppelin's
//! result messages (a line starting `%html`, `%table` or `%text` starts a
//! message of that type), capped, and told to watchers in batches of
//! appends.

use crate::notebook::model::{ResultMessage, Results};

/// Directives that start a result message of their type.
const DIRECTIVES: &[(&str, &str)] = &[("%html", "HTML"), ("%table", "TABLE"), ("%text", "TEXT")];

/// What watchers need to be told since the last batch, per message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamUpdate {
    /// A message they have not seen: its type and everything so far
    /// (Zeppelin's `PARAGRAPH_UPDATE_OUTPUT`).
    Replace {
        /// Position in the paragraph's results.
        index: usize,
        /// `TEXT`, `HTML` or `TABLE`.
        kind: &'static str,
        /// The message's data so far.
        data: String,
    },
    /// More data for a message they have seen (`PARAGRAPH_APPEND_OUTPUT`).
    Append {
        /// Position in the paragraph's results.
        index: usize,
        /// The new data.
        data: String,
    },
    /// How far the run's work is, in percent (Zeppelin's `PROGRESS`): the
    /// tasks of Spark's active jobs that are done.
    Progress {
        /// 0 to 100.
        percent: u8,
    },
}

#[derive(Debug)]
struct Part {
    kind: &'static str,
    data: String,
    /// Bytes of `data` watchers were told; `None` until they saw it.
    told: Option<usize>,
}

/// One run's output.
#[derive(Debug)]
pub struct OutputStream {
    parts: Vec<Part>,
    /// A partial line that may turn out to be a directive.
    pending_line: String,
    /// Bytes of an incomplete UTF-8 sequence at the end of the last chunk.
    partial_char: Vec<u8>,
    at_line_start: bool,
    kept: usize,
    max_bytes: usize,
    dropped: usize,
}

impl OutputStream {
    /// An empty output keeping at most `max_bytes` of data.
    pub fn new(max_bytes: usize) -> OutputStream {
        OutputStream {
            parts: Vec::new(),
            pending_line: String::new(),
            partial_char: Vec::new(),
            at_line_start: true,
            kept: 0,
            max_bytes,
            dropped: 0,
        }
    }

    /// Bytes dropped past the cap.
    #[cfg(test)]
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Takes a chunk of the child's output, as read.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        let mut joined;
        let bytes = if self.partial_char.is_empty() {
            bytes
        } else {
            joined = std::mem::take(&mut self.partial_char);
            joined.extend_from_slice(bytes);
            &joined[..]
        };
        let valid_up_to = match std::str::from_utf8(bytes) {
            Ok(text) => return self.push(text),
            Err(error) => error,
        };
        let (good, rest) = bytes.split_at(valid_up_to.valid_up_to());
        // `good` is valid UTF-8: from_utf8 said so up to this point.
        self.push(std::str::from_utf8(good).unwrap_or_default());
        match valid_up_to.error_len() {
            None => self.partial_char = rest.to_vec(),
            Some(bad) => {
                self.push("\u{fffd}");
                let tail = rest[bad..].to_vec();
                self.push_bytes(&tail);
            }
        }
    }

    /// Takes a chunk of text.
    pub fn push(&mut self, mut text: &str) {
        while !text.is_empty() {
            if self.at_line_start || !self.pending_line.is_empty() {
                // Hold a line that starts with '%' until it is complete.
                let starts_directive = self.pending_line.starts_with('%')
                    || (self.pending_line.is_empty() && text.starts_with('%'));
                if starts_directive {
                    match text.find('\n') {
                        Some(end) => {
                            self.pending_line.push_str(&text[..=end]);
                            text = &text[end + 1..];
                            let line = std::mem::take(&mut self.pending_line);
                            self.line(&line);
                        }
                        None => {
                            if self.pending_line.len() + text.len() > 64 {
                                let line = std::mem::take(&mut self.pending_line);
                                self.append(&line);
                                self.append(text);
                                self.at_line_start = false;
                            } else {
                                self.pending_line.push_str(text);
                            }
                            return;
                        }
                    }
                    continue;
                }
            }
            let end = text.find('\n').map_or(text.len(), |at| at + 1);
            self.append(&text[..end]);
            self.at_line_start = text[..end].ends_with('\n');
            text = &text[end..];
        }
    }

    /// A complete line held because it starts with '%'.
    fn line(&mut self, line: &str) {
        self.at_line_start = true;
        for (directive, kind) in DIRECTIVES {
            let Some(rest) = line.strip_prefix(directive) else {
                continue;
            };
            let data = if let Some(data) = rest.strip_prefix(' ') {
                data
            } else if rest.trim().is_empty() {
                ""
            } else {
                continue;
            };
            self.start(kind);
            self.append(data);
            return;
        }
        self.append(line);
    }

    fn start(&mut self, kind: &'static str) {
        // A whitespace-only text before a directive is only the newline
        // that separates them.
        if let Some(last) = self.parts.last()
            && last.told.is_none()
            && last.data.trim().is_empty()
        {
            self.kept -= last.data.len();
            self.parts.pop();
        }
        self.parts.push(Part {
            kind,
            data: String::new(),
            told: None,
        });
    }

    fn append(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let room = self.max_bytes.saturating_sub(self.kept);
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.dropped += text.len() - take;
        if take == 0 {
            return;
        }
        if self.parts.is_empty() {
            self.parts.push(Part {
                kind: "TEXT",
                data: String::new(),
                told: None,
            });
        }
        if let Some(last) = self.parts.last_mut() {
            last.data.push_str(&text[..take]);
            self.kept += take;
        }
    }

    /// What changed since the last call, for the watchers.
    pub fn take_updates(&mut self) -> Vec<StreamUpdate> {
        let mut updates = Vec::new();
        for (index, part) in self.parts.iter_mut().enumerate() {
            match part.told {
                None => {
                    updates.push(StreamUpdate::Replace {
                        index,
                        kind: part.kind,
                        data: part.data.clone(),
                    });
                    part.told = Some(part.data.len());
                }
                Some(told) if told < part.data.len() => {
                    updates.push(StreamUpdate::Append {
                        index,
                        data: part.data[told..].to_owned(),
                    });
                    part.told = Some(part.data.len());
                }
                Some(_) => {}
            }
        }
        updates
    }

    /// The whole output as results with status `code`, a notice appended
    /// when some of it was dropped and `notice` (e.g. why the run ended).
    pub fn finish(mut self, code: &str, notice: Option<&str>) -> Results {
        let held = std::mem::take(&mut self.pending_line);
        self.append(&held);
        let mut msg: Vec<ResultMessage> = self
            .parts
            .into_iter()
            .filter(|part| part.kind != "TEXT" || !part.data.is_empty())
            .map(|part| ResultMessage::new(part.kind, part.data))
            .collect();
        let mut tail = String::new();
        if self.dropped > 0 {
            tail.push_str(&format!(
                "Output exceeds {} bytes: {} bytes not kept (notebook.max_result_bytes).\n",
                self.max_bytes, self.dropped
            ));
        }
        if let Some(notice) = notice {
            tail.push_str(notice);
            tail.push('\n');
        }
        if !tail.is_empty() {
            match msg.last_mut() {
                Some(last) if last.kind == "TEXT" => {
                    if !last.data.ends_with('\n') {
                        last.data.push('\n');
                    }
                    last.data.push_str(&tail);
                }
                _ => msg.push(ResultMessage::text(tail)),
            }
        }
        Results {
            code: code.to_owned(),
            msg,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds_and_data(results: &Results) -> Vec<(&str, &str)> {
        results
            .msg
            .iter()
            .map(|m| (m.kind.as_str(), m.data.as_str()))
            .collect()
    }

    #[test]
    fn directives_at_line_start_split_messages_even_across_chunks() {
        let mut out = OutputStream::new(1 << 20);
        out.push("hello\n");
        out.push("%ta");
        out.push("ble a\tb\n1\t2\n");
        out.push("\n%html <b>x</b>\nnot %html here\n");
        let results = out.finish("SUCCESS", None);
        assert_eq!(
            kinds_and_data(&results),
            vec![
                ("TEXT", "hello\n"),
                ("TABLE", "a\tb\n1\t2\n\n"),
                ("HTML", "<b>x</b>\nnot %html here\n"),
            ]
        );
    }

    #[test]
    fn output_past_the_cap_is_dropped_with_a_notice() {
        let mut out = OutputStream::new(10);
        for _ in 0..100 {
            out.push("1\n");
        }
        assert_eq!(out.dropped(), 190);
        let results = out.finish("SUCCESS", None);
        assert!(
            results.msg[0]
                .data
                .starts_with("1\n1\n1\n1\n1\nOutput exceeds 10 bytes")
        );
    }

    #[test]
    fn updates_announce_new_messages_then_append() {
        let mut out = OutputStream::new(1 << 20);
        out.push("a\n");
        assert_eq!(
            out.take_updates(),
            vec![StreamUpdate::Replace {
                index: 0,
                kind: "TEXT",
                data: "a\n".into()
            }]
        );
        out.push("b\n%html <i>");
        assert_eq!(
            out.take_updates(),
            vec![StreamUpdate::Append {
                index: 0,
                data: "b\n".into()
            }]
        );
        out.push("</i>\n");
        assert_eq!(
            out.take_updates(),
            vec![StreamUpdate::Replace {
                index: 1,
                kind: "HTML",
                data: "<i></i>\n".into()
            }]
        );
        assert!(out.take_updates().is_empty());
    }

    #[test]
    fn split_utf8_sequences_are_joined() {
        let mut out = OutputStream::new(100);
        let bytes = "é€".as_bytes();
        out.push_bytes(&bytes[..1]);
        out.push_bytes(&bytes[1..3]);
        out.push_bytes(&bytes[3..]);
        out.push_bytes(b"\xff!");
        let results = out.finish("SUCCESS", None);
        assert_eq!(results.msg[0].data, "é€\u{fffd}!");
    }
}
