//! 10/EPMP requests: resource path + device payload -> [`Request`], validated by hand against
//! the RFC 0010 JSON schemas (`shared/kaa-rfcs/0010/`). Pure: no I/O.
//!
//! | Path | Payload (schema) |
//! |---|---|
//! | `/get/keys` | ignored |
//! | `/get` | empty, or `{"keys"?: [key..]}` (unique keys, no other properties) |
//! | `/update` | object, >= 1 property, keys match the key pattern (full replace) |
//! | `/update/keys` | same as `/update` (partial upsert) |
//! | `/delete/keys` | array of keys, >= 1, unique |
//!
//! Keys match `^[a-zA-Z0-9_]+$`. Failures carry a reason phrase meant for the device developer.

use serde_json::{Map, Value};

use kaa_store::is_valid_metadata_key;

use crate::extension::is_blank;

/// A validated 10/EPMP request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    GetKeys,
    /// `None` = all keys.
    Get(Option<Vec<String>>),
    Update(Map<String, Value>),
    UpdateKeys(Map<String, Value>),
    DeleteKeys(Vec<String>),
}

/// Why a request was refused before reaching EPR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(
        "unknown 10/EPMP resource path {0:?}; supported: /get, /get/keys, /update, /update/keys, /delete/keys"
    )]
    UnknownPath(String),
    #[error("invalid {path} payload: {reason}")]
    Invalid { path: &'static str, reason: String },
}

impl RequestError {
    /// The 1/KP status code: 404 for a path EPMX does not serve, 400 for a bad payload.
    pub fn status_code(&self) -> i32 {
        match self {
            Self::UnknownPath(_) => 404,
            Self::Invalid { .. } => 400,
        }
    }
}

/// Parses one request.
pub fn parse(resource_path: &str, payload: &[u8]) -> Result<Request, RequestError> {
    match resource_path {
        "/get/keys" => Ok(Request::GetKeys),
        "/get" => parse_get(payload),
        "/update" => parse_object("/update", payload).map(Request::Update),
        "/update/keys" => parse_object("/update/keys", payload).map(Request::UpdateKeys),
        "/delete/keys" => parse_key_array("/delete/keys", payload).map(Request::DeleteKeys),
        other => Err(RequestError::UnknownPath(other.to_owned())),
    }
}

fn invalid(path: &'static str, reason: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        path,
        reason: reason.into(),
    }
}

fn json(path: &'static str, payload: &[u8]) -> Result<Value, RequestError> {
    serde_json::from_slice(payload).map_err(|e| invalid(path, format!("not valid JSON ({e})")))
}

fn parse_get(payload: &[u8]) -> Result<Request, RequestError> {
    const PATH: &str = "/get";
    if is_blank(payload) {
        return Ok(Request::Get(None));
    }
    let Value::Object(mut object) = json(PATH, payload)? else {
        return Err(invalid(
            PATH,
            "expected a JSON object like {\"keys\": [\"name\"]} or an empty payload",
        ));
    };
    if let Some(extra) = object.keys().find(|k| *k != "keys") {
        return Err(invalid(
            PATH,
            format!("unexpected property {extra:?}; only \"keys\" is allowed"),
        ));
    }
    match object.remove("keys") {
        None => Ok(Request::Get(None)),
        Some(keys) => keys_from(PATH, keys, 0).map(|keys| Request::Get(Some(keys))),
    }
}

fn parse_object(path: &'static str, payload: &[u8]) -> Result<Map<String, Value>, RequestError> {
    let Value::Object(object) = json(path, payload)? else {
        return Err(invalid(path, "expected a JSON object of metadata key -> value"));
    };
    if object.is_empty() {
        return Err(invalid(path, "the object must have at least one property"));
    }
    if let Some(bad) = object.keys().find(|k| !is_valid_metadata_key(k)) {
        return Err(invalid(
            path,
            format!("key {bad:?} does not match ^[a-zA-Z0-9_]+$"),
        ));
    }
    Ok(object)
}

fn parse_key_array(path: &'static str, payload: &[u8]) -> Result<Vec<String>, RequestError> {
    keys_from(path, json(path, payload)?, 1)
}

/// A JSON array of unique, valid keys with at least `min_items` entries.
fn keys_from(path: &'static str, value: Value, min_items: usize) -> Result<Vec<String>, RequestError> {
    let Value::Array(items) = value else {
        return Err(invalid(path, "keys must be a JSON array of strings"));
    };
    if items.len() < min_items {
        return Err(invalid(path, format!("at least {min_items} key is required")));
    }
    let mut keys: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(key) = item else {
            return Err(invalid(path, format!("keys must be strings, found {item}")));
        };
        if !is_valid_metadata_key(&key) {
            return Err(invalid(
                path,
                format!("key {key:?} does not match ^[a-zA-Z0-9_]+$"),
            ));
        }
        if keys.contains(&key) {
            return Err(invalid(path, format!("key {key:?} is listed twice")));
        }
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn reason(path: &str, payload: &str) -> String {
        match parse(path, payload.as_bytes()) {
            Err(RequestError::Invalid { reason, .. }) => reason,
            other => panic!("{path} {payload}: expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn valid_requests() {
        assert_eq!(parse("/get/keys", b"whatever").unwrap(), Request::GetKeys);
        assert_eq!(parse("/get", b"").unwrap(), Request::Get(None));
        assert_eq!(parse("/get", b" \n").unwrap(), Request::Get(None));
        assert_eq!(parse("/get", b"{}").unwrap(), Request::Get(None));
        assert_eq!(
            parse("/get", br#"{"keys":["a","b_2"]}"#).unwrap(),
            Request::Get(Some(vec!["a".into(), "b_2".into()]))
        );
        assert_eq!(
            parse("/get", br#"{"keys":[]}"#).unwrap(),
            Request::Get(Some(vec![]))
        );
        let md = br#"{"model":"MySmartMeter A300","mac":"00-14-22-01-23-45"}"#;
        let expected = obj(json!({"model": "MySmartMeter A300", "mac": "00-14-22-01-23-45"}));
        assert_eq!(
            parse("/update/keys", md).unwrap(),
            Request::UpdateKeys(expected.clone())
        );
        assert_eq!(parse("/update", md).unwrap(), Request::Update(expected));
        assert_eq!(
            parse("/delete/keys", br#"["a"]"#).unwrap(),
            Request::DeleteKeys(vec!["a".into()])
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        for path in ["/get/", "/update/key", "/", "", "/delete", "/GET"] {
            let err = parse(path, b"{}").unwrap_err();
            assert_eq!(err.status_code(), 404, "{path}");
            assert!(matches!(err, RequestError::UnknownPath(_)));
        }
    }

    #[test]
    fn invalid_payloads_are_400_with_a_reason() {
        assert!(reason("/update/keys", "{not json").contains("not valid JSON"));
        assert!(reason("/update/keys", "{}").contains("at least one property"));
        assert!(reason("/update/keys", "[1]").contains("JSON object"));
        assert!(reason("/update", r#"{"bad-key":1}"#).contains("\"bad-key\""));
        assert!(reason("/update", r#"{"":1}"#).contains("does not match"));
        assert!(reason("/get", r#"{"keys":["a"],"x":1}"#).contains("unexpected property"));
        assert!(reason("/get", r#"{"keys":"a"}"#).contains("array"));
        assert!(reason("/get", r#"{"keys":["a","a"]}"#).contains("twice"));
        assert!(reason("/get", r#"[]"#).contains("JSON object"));
        assert!(reason("/delete/keys", "[]").contains("at least 1"));
        assert!(reason("/delete/keys", r#"["a",1]"#).contains("strings"));
        assert!(reason("/delete/keys", r#"{"a":1}"#).contains("array"));
        assert!(reason("/delete/keys", r#"["a b"]"#).contains("does not match"));
        assert!(reason("/delete/keys", "").contains("not valid JSON"));
        assert!(reason("/update/keys", "\u{0}\u{1}").contains("not valid JSON"));
        let err = parse("/update/keys", b"{}").unwrap_err();
        assert_eq!(err.status_code(), 400);
        assert_eq!(
            err.to_string(),
            "invalid /update/keys payload: the object must have at least one property"
        );
    }
}
