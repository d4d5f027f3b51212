//! The message a handler receives.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::Error;

/// One queued message delivered to a handler.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The queue's id for this message; stable across redeliveries, so handlers key
    /// idempotency on it.
    pub id: String,
    /// The payload; Levee functions exchange JSON.
    pub body: Vec<u8>,
    /// Producer-set attributes (name, value), in the order they were sent.
    pub attributes: Vec<(String, String)>,
    /// 1 on first delivery; higher on retries.
    pub receive_count: u32,
}

impl Message {
    /// A first delivery of `body` with no attributes.
    pub fn new(id: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            id: id.into(),
            body: body.into(),
            attributes: Vec::new(),
            receive_count: 1,
        }
    }

    /// A first delivery whose body is `value` serialised as JSON.
    pub fn from_json<T: Serialize + ?Sized>(id: impl Into<String>, value: &T) -> Self {
        // Serialising plain data (maps with string keys, structs) cannot fail.
        let body = serde_json::to_vec(value).expect("message body serialises to JSON");
        Self::new(id, body)
    }

    /// Adds an attribute.
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push((name.into(), value.into()));
        self
    }

    /// Sets how many times the message has been delivered.
    pub fn with_receive_count(mut self, receive_count: u32) -> Self {
        self.receive_count = receive_count;
        self
    }

    /// The first attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text; a permanent error if it is not.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::permanent(format!("message body is not UTF-8: {e}")))
    }

    /// The body deserialised from JSON; a permanent error naming the problem (serde's message
    /// names the missing or mistyped field and its position) if it does not fit `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::permanent(format!("message body is not the expected JSON: {e}")))
    }

    /// The body as a JSON object, for handlers that validate field by field with
    /// [`Fields`](crate::Fields).
    pub fn json_object(&self) -> Result<Map<String, Value>, Error> {
        let value: Value = serde_json::from_slice(&self.body)
            .map_err(|e| Error::permanent(format!("message body is not valid JSON: {e}")))?;
        match value {
            Value::Object(map) => Ok(map),
            other => Err(Error::permanent(format!(
                "message body must be a JSON object, got {}",
                crate::fields::describe(&other)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Order {
        id: u32,
    }

    #[test]
    fn json_deserialises_the_body() {
        let m = Message::from_json("m1", &json!({"id": 7}));
        assert_eq!(m.json::<Order>().unwrap(), Order { id: 7 });
        assert_eq!(m.receive_count, 1);
    }

    #[test]
    fn json_errors_are_permanent_and_name_the_problem() {
        let e = Message::new("m1", r#"{"other": 1}"#)
            .json::<Order>()
            .unwrap_err();
        assert!(!e.is_retryable());
        assert!(e.message().contains("missing field `id`"), "{e}");
        let e = Message::new("m1", "not json").json::<Order>().unwrap_err();
        assert!(e.message().contains("expected"), "{e}");
    }

    #[test]
    fn json_object_rejects_non_objects() {
        let e = Message::new("m1", "[1]").json_object().unwrap_err();
        assert_eq!(
            e.message(),
            "message body must be a JSON object, got an array"
        );
        let e = Message::new("m1", "{").json_object().unwrap_err();
        assert!(
            e.message().starts_with("message body is not valid JSON"),
            "{e}"
        );
    }

    #[test]
    fn attributes_and_text() {
        let m = Message::new("m1", "hi")
            .with_attribute("source", "api")
            .with_receive_count(3);
        assert_eq!(m.attribute("source"), Some("api"));
        assert_eq!(m.attribute("missing"), None);
        assert_eq!(m.text().unwrap(), "hi");
        assert_eq!(m.receive_count, 3);
        assert!(Message::new("m1", vec![0xff]).text().is_err());
    }
}
