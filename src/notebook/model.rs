//! Notes and paragraphs in Zeppelin's JSON layout. Fields wsloop does not
//! know are kept as they came (`extra`), so real Zeppelin notes survive a
//! load and save unchanged in substance.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::dates;

/// A JSON object.
pub type Object = Map<String, Value>;

/// Paragraph status (Zeppelin's `Job.Status` subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// Never run, or edited since.
    #[default]
    Ready,
    /// Queued to run.
    Pending,
    /// Running now.
    Running,
    /// Ran successfully.
    Finished,
    /// Ran and failed.
    Error,
    /// Cancelled.
    Abort,
}

impl Status {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ready => "READY",
            Status::Pending => "PENDING",
            Status::Running => "RUNNING",
            Status::Finished => "FINISHED",
            Status::Error => "ERROR",
            Status::Abort => "ABORT",
        }
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    /// Unknown statuses (Zeppelin has a few more) load as READY.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(match name.as_str() {
            "PENDING" => Status::Pending,
            "RUNNING" => Status::Running,
            "FINISHED" => Status::Finished,
            "ERROR" => Status::Error,
            "ABORT" => Status::Abort,
            _ => Status::Ready,
        })
    }
}

/// One output of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    /// `TEXT`, `HTML`, `TABLE`, `IMG` or `SVG`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The content; for TABLE, rows split by `\n`, columns by `\t`.
    pub data: String,
    /// wsloop's extension on a TABLE whose `data` is lossy (a NULL, or a
    /// tab or line break inside a value): the header and every row with
    /// exact values, `None` for NULL. Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cells: Option<Vec<Vec<Option<String>>>>,
}

impl ResultMessage {
    /// A `TEXT` message.
    pub fn text(data: impl Into<String>) -> Self {
        ResultMessage::new("TEXT", data)
    }

    /// A message of this kind, without `cells`.
    pub fn new(kind: &str, data: impl Into<String>) -> Self {
        ResultMessage {
            kind: kind.to_owned(),
            data: data.into(),
            cells: None,
        }
    }
}

/// The results of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// `SUCCESS`, `INCOMPLETE` or `ERROR`.
    pub code: String,
    /// The outputs, in order.
    #[serde(default)]
    pub msg: Vec<ResultMessage>,
}

/// Dynamic-form state of a paragraph.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Parameter values.
    #[serde(default)]
    pub params: Object,
    /// Form definitions.
    #[serde(default)]
    pub forms: Object,
    /// Anything else Zeppelin put here.
    #[serde(flatten)]
    pub extra: Object,
}

fn default_progress_interval() -> u64 {
    500
}

/// One paragraph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paragraph {
    /// Opaque id, unique across notes.
    pub id: String,
    /// Optional title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The source, including any `%interpreter` directive.
    #[serde(default)]
    pub text: String,
    /// Who last changed it.
    #[serde(default)]
    pub user: String,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_created: Option<String>,
    /// When it was last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_updated: Option<String>,
    /// When its last run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_started: Option<String>,
    /// When its last run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_finished: Option<String>,
    /// Run status.
    #[serde(default)]
    pub status: Status,
    /// Editor and display settings, kept as given.
    #[serde(default)]
    pub config: Object,
    /// Dynamic forms.
    #[serde(default)]
    pub settings: Settings,
    /// The last run's outputs, shared rather than copied when a note is
    /// (a snapshot for the writer thread costs no copy of large results).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<std::sync::Arc<Results>>,
    /// Helium apps (always empty here).
    #[serde(default)]
    pub apps: Vec<Value>,
    /// Zeppelin's job name.
    #[serde(default)]
    pub job_name: String,
    /// How often a client may poll progress.
    #[serde(default = "default_progress_interval")]
    pub progress_update_interval_ms: u64,
    /// Fields wsloop does not interpret.
    #[serde(flatten)]
    pub extra: Object,
}

impl Paragraph {
    /// A new empty paragraph by `user`, with a fresh id.
    pub fn new(user: &str) -> Paragraph {
        let id = super::ids::paragraph_id();
        Paragraph::with_id(id, user)
    }

    /// A new empty paragraph with the given id.
    pub fn with_id(id: String, user: &str) -> Paragraph {
        let now = dates::now_disk();
        Paragraph {
            job_name: id.clone(),
            id,
            title: None,
            text: String::new(),
            user: user.to_owned(),
            date_created: Some(now.clone()),
            date_updated: Some(now),
            date_started: None,
            date_finished: None,
            status: Status::Ready,
            config: Object::new(),
            settings: Settings::default(),
            results: None,
            apps: Vec::new(),
            progress_update_interval_ms: default_progress_interval(),
            extra: Object::new(),
        }
    }

    /// A copy with dates in the wire format, for sending.
    pub fn for_wire(&self) -> Paragraph {
        let mut copy = self.clone();
        for date in [
            &mut copy.date_created,
            &mut copy.date_updated,
            &mut copy.date_started,
            &mut copy.date_finished,
        ]
        .into_iter()
        .flatten()
        {
            *date = dates::disk_to_wire(date);
        }
        copy
    }
}

fn default_group() -> String {
    "md".to_owned()
}

/// One note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Note {
    /// The paragraphs, in order.
    #[serde(default)]
    pub paragraphs: Vec<Paragraph>,
    /// The last segment of the path.
    #[serde(default)]
    pub name: String,
    /// 9-character id.
    pub id: String,
    /// Interpreter for paragraphs without a `%` directive.
    #[serde(default = "default_group")]
    pub default_interpreter_group: String,
    /// Note parameters.
    #[serde(default)]
    pub note_params: Object,
    /// Note forms.
    #[serde(default)]
    pub note_forms: Object,
    /// Angular objects (kept, unused).
    #[serde(default)]
    pub angular_objects: Object,
    /// Note config.
    #[serde(default)]
    pub config: Object,
    /// Note info.
    #[serde(default)]
    pub info: Object,
    /// Folder path and name, e.g. `/reports/Daily`.
    #[serde(default)]
    pub path: String,
    /// Fields wsloop does not interpret (e.g. `version`).
    #[serde(flatten)]
    pub extra: Object,
}

impl Note {
    /// A new note at `path` with one empty paragraph.
    pub fn new(id: String, path: String, default_group: &str, user: &str) -> Note {
        let name = name_of(&path).to_owned();
        Note {
            paragraphs: vec![Paragraph::new(user)],
            name,
            id,
            default_interpreter_group: default_group.to_owned(),
            note_params: Object::new(),
            note_forms: Object::new(),
            angular_objects: Object::new(),
            config: Object::new(),
            info: Object::new(),
            path,
            extra: Object::new(),
        }
    }

    /// The paragraph with `id`, if it is in this note.
    pub fn paragraph_mut(&mut self, id: &str) -> Option<&mut Paragraph> {
        self.paragraphs.iter_mut().find(|p| p.id == id)
    }

    /// Fills the path of notes saved by Zeppelin versions that had only a
    /// name (and the name of notes that had only a path), and marks runs
    /// that a stop or crash cut short as ABORT, as Zeppelin does when it
    /// loads a note: no job survives a restart, and a paragraph left
    /// PENDING or RUNNING could be neither cancelled nor trusted.
    pub fn after_load(&mut self) {
        for paragraph in &mut self.paragraphs {
            if matches!(paragraph.status, Status::Pending | Status::Running) {
                paragraph.status = Status::Abort;
            }
        }
        if self.path.is_empty() {
            self.path = format!("/{}", self.name);
        }
        if self.name.is_empty() {
            self.name = name_of(&self.path).to_owned();
        }
    }

    /// A copy with dates in the wire format, for sending.
    pub fn for_wire(&self) -> Note {
        Note {
            paragraphs: self.paragraphs.iter().map(Paragraph::for_wire).collect(),
            ..self.clone()
        }
    }
}

/// The last segment of a note path.
pub fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zeppelin_note_round_trips_with_unknown_fields() {
        let raw = r#"{
          "paragraphs": [{
            "text": "%md\n# Hello", "user": "anonymous", "dateUpdated": "2019-02-26 16:54:09.123",
            "progress": 0, "config": {"editorMode": "ace/mode/markdown", "custom": [1, 2]},
            "settings": {"params": {}, "forms": {}}, "apps": [], "runtimeInfos": {},
            "jobName": "paragraph_1551171249437_-1857577060", "id": "20190226-165409_698627529",
            "dateCreated": "2019-02-26 16:54:09.000", "status": "SOMETHING_NEW",
            "focus": true, "$$hashKey": "object:1"
          }],
          "name": "Hello", "id": "2E1J8R2JS", "defaultInterpreterGroup": "spark", "version": "0.10.1",
          "noteParams": {}, "noteForms": {}, "angularObjects": {}, "config": {"isZeppelinNotebookCronEnable": false},
          "info": {}, "path": "/demo/Hello"
        }"#;
        let mut note: Note = serde_json::from_str(raw).unwrap();
        note.after_load();
        let p = &note.paragraphs[0];
        assert_eq!(p.status, Status::Ready);
        assert_eq!(
            p.for_wire().date_updated.as_deref(),
            Some("2019-02-26T16:54:09+0000")
        );
        assert_eq!(p.extra["focus"], Value::Bool(true));
        assert_eq!(note.extra["version"], "0.10.1");
        let saved = serde_json::to_value(&note).unwrap();
        assert_eq!(
            saved["paragraphs"][0]["dateUpdated"],
            "2019-02-26 16:54:09.123"
        );
        assert_eq!(
            saved["paragraphs"][0]["config"]["custom"],
            serde_json::json!([1, 2])
        );
        assert_eq!(
            saved["paragraphs"][0]["runtimeInfos"],
            serde_json::json!({})
        );
        assert_eq!(saved["path"], "/demo/Hello");
    }

    #[test]
    fn runs_cut_short_by_a_restart_load_as_aborted() {
        let raw = r#"{"id":"ABCDEFGHJ","path":"/p","paragraphs":[
            {"id":"a","status":"PENDING"},{"id":"b","status":"RUNNING"},
            {"id":"c","status":"FINISHED"},{"id":"d","status":"ERROR"},{"id":"e"}]}"#;
        let mut note: Note = serde_json::from_str(raw).unwrap();
        note.after_load();
        let statuses: Vec<Status> = note.paragraphs.iter().map(|p| p.status).collect();
        assert_eq!(
            statuses,
            [
                Status::Abort,
                Status::Abort,
                Status::Finished,
                Status::Error,
                Status::Ready
            ]
        );
    }

    #[test]
    fn old_notes_without_a_path_get_one_from_their_name() {
        let mut note: Note = serde_json::from_str(r#"{"id":"ABCDEFGHJ","name":"Old"}"#).unwrap();
        note.after_load();
        assert_eq!(note.path, "/Old");
        assert_eq!(note.default_interpreter_group, "md");
    }
}
