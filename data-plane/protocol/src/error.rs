//! The 1/KP error payload: the UTF-8 JSON object a server publishes on a `.../error` topic.
//!
//! Schema `schemas/0001/0001-error-response.schema.json`: exactly `statusCode` (integer,
//! an HTTP status) and `reasonPhrase` (string), both required, nothing else.

use serde::{Deserialize, Serialize};

/// A 1/KP error response body, e.g. `{"statusCode":400,"reasonPhrase":"Bad request"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KpError {
    /// HTTP status code of the request processing.
    pub status_code: u16,
    /// Human-readable reason, shown to device developers.
    pub reason_phrase: String,
}

impl KpError {
    pub fn new(status_code: u16, reason_phrase: impl Into<String>) -> Self {
        Self {
            status_code,
            reason_phrase: reason_phrase.into(),
        }
    }

    /// The JSON bytes to publish on the `/error` topic.
    pub fn to_json(&self) -> Vec<u8> {
        // serde_json can only fail here on a map with non-string keys or a failing
        // Serialize impl; this struct has neither, so the fallback is unreachable in
        // practice. It still yields valid JSON rather than panicking.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            format!(r#"{{"statusCode":{},"reasonPhrase":""}}"#, self.status_code).into_bytes()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_exactly_the_two_schema_properties() {
        let e = KpError::new(400, "The topic must start with \"kp1/\".");
        assert_eq!(
            String::from_utf8(e.to_json()).unwrap(),
            r#"{"statusCode":400,"reasonPhrase":"The topic must start with \"kp1/\"."}"#
        );
    }

    #[test]
    fn round_trips_through_json() {
        let e = KpError::new(404, "Unknown endpoint token.");
        let back: KpError = serde_json::from_slice(&e.to_json()).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn rejects_unknown_and_missing_properties() {
        assert!(
            serde_json::from_str::<KpError>(r#"{"statusCode":400,"reasonPhrase":"x","extra":1}"#).is_err()
        );
        assert!(serde_json::from_str::<KpError>(r#"{"statusCode":400}"#).is_err());
    }

    #[test]
    fn non_ascii_reason_stays_utf8() {
        let e = KpError::new(400, "Ungültiger Schlüssel «ä»");
        let json = e.to_json();
        assert!(std::str::from_utf8(&json).unwrap().contains("Ungültiger"));
    }
}
