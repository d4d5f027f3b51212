//! Field-by-field validation of JSON objects, so every function reports bad input the same
//! way: `field "rules[2].team": expected a non-empty string, got 5`.

use serde_json::{Map, Value};

use crate::Error;

/// How many characters of a rejected string value an error message quotes.
const QUOTE_CHARS: usize = 60;

/// Describes a JSON value for an error message: strings quoted (shortened), numbers and
/// booleans as written, containers by kind.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => quote(s),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Quotes a string for an error message, shortened to a readable length.
pub fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_CHARS {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_CHARS).collect();
        format!("{head:?}...")
    }
}

/// A borrowed JSON object plus its path in the message, for precise error messages.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    /// The top-level object of a message body.
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Self { map, path: "" }
    }

    /// A nested object found at `path` (e.g. `rules[2]`); a permanent error if `value` is
    /// not an object.
    pub fn nested(value: &'a Value, path: &'a str) -> Result<Self, Error> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => Err(Error::invalid_field(path, "an object", describe(other))),
        }
    }

    /// The full name of field `name`, as error messages show it.
    pub fn path(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// The permanent error for field `name` holding `got` where `expected` is allowed.
    pub fn invalid(&self, name: &str, expected: &str, got: impl std::fmt::Display) -> Error {
        Error::invalid_field(&self.path(name), expected, got)
    }

    /// Rejects any field not in `allowed`, so misspelt optional fields do not pass silently.
    pub fn deny_unknown(&self, allowed: &[&str]) -> Result<(), Error> {
        // Map iteration is sorted, so the first unknown field reported is deterministic.
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(Error::permanent(format!(
                "field \"{}\": unknown, expected only {}",
                self.path(unknown),
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// The raw value of field `name`, if present and not null.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    /// A required string, trimmed, that must not be empty.
    pub fn str(&self, name: &str) -> Result<&'a str, Error> {
        self.opt_str(name)?
            .ok_or_else(|| self.invalid(name, "a non-empty string", "nothing (missing)"))
    }

    /// An optional string, trimmed; present but empty or not a string is an error.
    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
            Some(other) => Err(self.invalid(name, "a non-empty string", describe(other))),
        }
    }

    /// A required string (trimmed) usable as one segment of a kv key such as
    /// `conv/{org}/{conversation}`: 1 to `max_chars` characters, no '/' and no control
    /// characters, so one tenant's value cannot address another's keys.
    pub fn key_segment(&self, name: &str, max_chars: usize) -> Result<&'a str, Error> {
        let s = self.str(name)?;
        if s.chars().count() > max_chars || s.chars().any(|c| c == '/' || c.is_control()) {
            return Err(self.invalid(
                name,
                &format!("1 to {max_chars} characters without '/' or control characters"),
                quote(s),
            ));
        }
        Ok(s)
    }

    /// An optional unsigned integer.
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, Error> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.invalid(name, "a non-negative integer", describe(v))),
        }
    }

    /// A required array (may be empty).
    pub fn array(&self, name: &str) -> Result<&'a [Value], Error> {
        match self.get(name) {
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(self.invalid(name, "an array", describe(other))),
            None => Err(self.invalid(name, "an array", "nothing (missing)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn strings_are_trimmed_and_must_be_non_empty() {
        let m = obj(json!({"a": "  x ", "b": "   ", "c": 5, "d": null}));
        let f = Fields::new(&m);
        assert_eq!(f.str("a").unwrap(), "x");
        assert_eq!(
            f.str("b").unwrap_err().message(),
            r#"field "b": expected a non-empty string, got "   ""#
        );
        assert_eq!(
            f.str("c").unwrap_err().message(),
            r#"field "c": expected a non-empty string, got 5"#
        );
        assert_eq!(
            f.str("d").unwrap_err().message(),
            r#"field "d": expected a non-empty string, got nothing (missing)"#
        );
        assert_eq!(f.opt_str("d").unwrap(), None);
    }

    #[test]
    fn nested_paths_appear_in_errors() {
        let v = json!({"team": ["x"]});
        let f = Fields::nested(&v, "rules[2]").unwrap();
        assert_eq!(
            f.str("team").unwrap_err().message(),
            r#"field "rules[2].team": expected a non-empty string, got an array"#
        );
        let e = Fields::nested(&json!(3), "rules[0]").unwrap_err();
        assert_eq!(
            e.message(),
            r#"field "rules[0]": expected an object, got 3"#
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let m = obj(json!({"org": "a", "chanel": "chat"}));
        let e = Fields::new(&m)
            .deny_unknown(&["org", "channel"])
            .unwrap_err();
        assert_eq!(
            e.message(),
            r#"field "chanel": unknown, expected only org, channel"#
        );
        assert!(Fields::new(&m).deny_unknown(&["org", "chanel"]).is_ok());
    }

    #[test]
    fn numbers_and_arrays() {
        let m = obj(json!({"n": 4, "neg": -1, "list": [1], "s": "x"}));
        let f = Fields::new(&m);
        assert_eq!(f.opt_u64("n").unwrap(), Some(4));
        assert_eq!(f.opt_u64("missing").unwrap(), None);
        assert!(
            f.opt_u64("neg")
                .unwrap_err()
                .message()
                .contains("non-negative integer")
        );
        assert_eq!(f.array("list").unwrap().len(), 1);
        assert_eq!(
            f.array("s").unwrap_err().message(),
            r#"field "s": expected an array, got "x""#
        );
    }

    #[test]
    fn key_segments_reject_slashes_and_overlong_values() {
        let m = obj(json!({"org": " acme ", "bad": "a/b", "long": "xxxx"}));
        let f = Fields::new(&m);
        assert_eq!(f.key_segment("org", 10).unwrap(), "acme");
        assert_eq!(
            f.key_segment("bad", 10).unwrap_err().message(),
            r#"field "bad": expected 1 to 10 characters without '/' or control characters, got "a/b""#
        );
        assert!(f.key_segment("long", 3).is_err());
        assert!(f.key_segment("missing", 3).is_err());
    }

    #[test]
    fn long_strings_are_shortened_in_messages() {
        let long = "y".repeat(500);
        let d = describe(&Value::String(long));
        assert!(d.len() < 80 && d.ends_with("..."), "{d}");
    }
}
