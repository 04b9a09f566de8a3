//! The message envelope: `{"op", "data", "principal", "ticket", "roles",
//! "msgId"}`, parsed with clear errors, and written once per broadcast.

use serde::Serialize;
use serde_json::Value;

use super::model::Object;

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The operation, e.g. `RUN_PARAGRAPH`.
    pub op: String,
    /// The op's arguments (empty when absent).
    pub data: Object,
    /// Who the client says it is (`anonymous` when absent).
    pub principal: String,
    /// The ticket proving it (`anonymous` when absent).
    pub ticket: String,
    /// An id to echo on the replies this request causes.
    pub msg_id: Option<String>,
}

/// Parses one text message; the error is the `info` for ERROR_INFO.
pub fn parse(text: &str) -> Result<Request, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("a message must be a JSON object".to_owned());
    };
    let op = match object.remove("op") {
        Some(Value::String(op)) => op,
        Some(_) => return Err("\"op\" must be a string".to_owned()),
        None => return Err("missing \"op\"".to_owned()),
    };
    let data = match object.remove("data") {
        None | Some(Value::Null) => Object::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err("\"data\" must be an object".to_owned()),
    };
    let mut text_field = |name: &str, default: &str| match object.remove(name) {
        None | Some(Value::Null) => Ok(default.to_owned()),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    };
    let principal = text_field("principal", "anonymous")?;
    let ticket = text_field("ticket", "anonymous")?;
    text_field("roles", "")?;
    let msg_id = match object.remove("msgId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return Err("\"msgId\" must be a string".to_owned()),
    };
    Ok(Request {
        op,
        data,
        principal,
        ticket,
        msg_id,
    })
}

#[derive(Serialize)]
struct Outgoing<'a, T: Serialize> {
    op: &'a str,
    data: &'a T,
    ticket: &'a str,
    principal: &'a str,
    roles: &'a str,
    #[serde(rename = "msgId", skip_serializing_if = "Option::is_none")]
    msg_id: Option<&'a str>,
}

/// Serializes a server message. Like Zeppelin's, server messages carry the
/// anonymous identity: they are the same bytes for every recipient.
pub fn encode<T: Serialize>(op: &str, data: &T, msg_id: Option<&str>) -> String {
    serde_json::to_string(&Outgoing {
        op,
        data,
        ticket: "anonymous",
        principal: "anonymous",
        roles: "",
        msg_id,
    })
    .unwrap_or_else(|e| {
        format!("{{\"op\":\"ERROR_INFO\",\"data\":{{\"info\":\"cannot encode reply: {e}\"}}}}")
    })
}

/// Typed access to `data` fields, with errors that name the field.
#[derive(Clone, Copy)]
pub struct Data<'a>(pub &'a Object);

impl<'a> Data<'a> {
    /// A required string field.
    pub fn string(&self, key: &str) -> Result<&'a str, String> {
        self.opt_string(key)?
            .ok_or_else(|| format!("data.{key} is required"))
    }

    /// An optional string field.
    pub fn opt_string(&self, key: &str) -> Result<Option<&'a str>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("data.{key} must be a string")),
        }
    }

    /// An optional object field.
    pub fn opt_object(&self, key: &str) -> Result<Option<&'a Object>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o)),
            Some(_) => Err(format!("data.{key} must be an object")),
        }
    }

    /// An optional non-negative integer field.
    pub fn opt_index(&self, key: &str) -> Result<Option<usize>, String> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| format!("data.{key} must be a non-negative integer")),
            Some(_) => Err(format!("data.{key} must be a number")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_messages() {
        let r = parse(r#"{"op":"PING","principal":"anonymous","ticket":"anonymous","roles":"[\"anonymous\"]"}"#).unwrap();
        assert_eq!(
            (r.op.as_str(), r.principal.as_str(), r.ticket.as_str()),
            ("PING", "anonymous", "anonymous")
        );
        assert!(r.data.is_empty());
        let r = parse(r#"{"op":"GET_NOTE","data":{"id":"X"},"msgId":"m-1"}"#).unwrap();
        assert_eq!(r.msg_id.as_deref(), Some("m-1"));
        assert_eq!(Data(&r.data).string("id"), Ok("X"));
    }

    #[test]
    fn bad_envelopes_say_what_is_wrong() {
        assert!(parse("{nope").unwrap_err().starts_with("malformed JSON"));
        assert_eq!(parse("[1]").unwrap_err(), "a message must be a JSON object");
        assert_eq!(parse("{}").unwrap_err(), "missing \"op\"");
        assert_eq!(parse(r#"{"op":5}"#).unwrap_err(), "\"op\" must be a string");
        assert_eq!(
            parse(r#"{"op":"X","data":[]}"#).unwrap_err(),
            "\"data\" must be an object"
        );
        assert_eq!(
            parse(r#"{"op":"X","ticket":1}"#).unwrap_err(),
            "\"ticket\" must be a string"
        );
        let r = parse(r#"{"op":"X","data":{"id":1,"index":-1}}"#).unwrap();
        assert_eq!(
            Data(&r.data).string("id"),
            Err("data.id must be a string".to_owned())
        );
        assert_eq!(
            Data(&r.data).string("name"),
            Err("data.name is required".to_owned())
        );
        assert!(Data(&r.data).opt_index("index").is_err());
    }

    #[test]
    fn encodes_like_zeppelin() {
        let text = encode("NOTES_INFO", &serde_json::json!({"notes": []}), None);
        assert_eq!(
            text,
            r#"{"op":"NOTES_INFO","data":{"notes":[]},"ticket":"anonymous","principal":"anonymous","roles":""}"#
        );
        assert!(
            encode("PARAGRAPH", &serde_json::json!({}), Some("7")).ends_with(r#","msgId":"7"}"#)
        );
    }
}
