//! 1/KP MQTT topics: parsing what a device publishes, formatting what the server answers.
//!
//! Request topic: `kp1/{appVersion}/{extension}/{extPath}[/{requestId}]`, where `extPath`
//! is `{token}/{resource...}` for endpoint-aware extensions. The request id is the last
//! level when it is a canonical positive decimal that fits an Avro `int`
//! (`1..=2147483647`, no sign, no leading zero); any other last level (`0`, `007`,
//! `9999999999`, `json`) belongs to the path.
//!
//! Response topic: the request topic plus `/status` (success) or `/error` (failure).
//!
//! Parsing runs once per PUBLISH on the gateway's hot path, so it borrows slices of the
//! input and allocates nothing. The [`TopicError`] texts are sent back to devices as the
//! `reasonPhrase` of a 400 error, so they are written for device developers.

use std::fmt::{self, Write as _};

/// Longest topic accepted, in bytes (far above any real Kaa topic; bounds work per message).
pub const MAX_TOPIC_LEN: usize = 1024;

const PREFIX: &str = "kp1/";
const STATUS: &str = "status";
const ERROR: &str = "error";

/// A parsed device request topic; all fields borrow from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTopic<'a> {
    pub app_version: &'a str,
    pub extension: &'a str,
    /// everything after the extension level, request id removed, e.g. "tok/update/keys"
    pub ext_path: &'a str,
    /// last level if it is a canonical decimal 1..=i32::MAX
    pub request_id: Option<i32>,
}

/// Why a topic is not a valid 1/KP request topic. `Display` is a sentence for devices.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    #[error("The topic is empty.")]
    Empty,
    #[error("The topic is {len} bytes long; the maximum is {MAX_TOPIC_LEN} bytes.")]
    TooLong { len: usize },
    #[error("The topic contains a NUL character, which is not allowed.")]
    NulCharacter,
    #[error("The topic contains the MQTT wildcard '{0}', which is not allowed in a published topic.")]
    Wildcard(char),
    #[error("The topic has an empty level (a leading, trailing or doubled '/').")]
    EmptyLevel,
    #[error("The topic must start with \"kp1/\" (Kaa Protocol version 1).")]
    NotKp1,
    #[error(
        "The topic must have the form kp1/{{appVersion}}/{{extension}}/{{resourcePath}}; \
         the application version, extension or resource path is missing."
    )]
    TooFewLevels,
    #[error(
        "The extension name \"{0}\" is invalid: it must not contain '.', '*', '>', whitespace \
         or control characters."
    )]
    InvalidExtension(String),
    #[error(
        "The topic ends with \"/{0}\", which is reserved for server responses; \
         publish requests without it."
    )]
    ResponseTopic(&'static str),
    #[error("The topic has a request id but no resource path after the extension name.")]
    MissingResourcePath,
    #[error("The topic has no resource path after the endpoint token.")]
    MissingEndpointResource,
}

impl<'a> RequestTopic<'a> {
    /// Parses and validates a topic a device published to.
    pub fn parse(topic: &'a str) -> Result<Self, TopicError> {
        if topic.is_empty() {
            return Err(TopicError::Empty);
        }
        if topic.len() > MAX_TOPIC_LEN {
            return Err(TopicError::TooLong { len: topic.len() });
        }
        // One pass over the bytes for the character rules and empty levels. All the
        // characters we look for are ASCII, so byte matching is UTF-8 safe.
        let mut after_slash = true; // a leading '/' is an empty first level
        for &b in topic.as_bytes() {
            match b {
                0 => return Err(TopicError::NulCharacter),
                b'+' => return Err(TopicError::Wildcard('+')),
                b'#' => return Err(TopicError::Wildcard('#')),
                b'/' if after_slash => return Err(TopicError::EmptyLevel),
                b'/' => after_slash = true,
                _ => after_slash = false,
            }
        }
        if after_slash {
            return Err(TopicError::EmptyLevel); // trailing '/'
        }

        let rest = topic.strip_prefix(PREFIX).ok_or(TopicError::NotKp1)?;
        let (app_version, rest) = rest.split_once('/').ok_or(TopicError::TooFewLevels)?;
        let (extension, path) = rest.split_once('/').ok_or(TopicError::TooFewLevels)?;
        // The extension name becomes a NATS subject token (kaa.v1.service.{ext}.esp...);
        // a '.' or wildcard in it would route the message to another subject.
        if !crate::subject::is_valid_token(extension) {
            return Err(TopicError::InvalidExtension(extension.to_owned()));
        }

        let (head, last) = match path.rfind('/') {
            Some(i) => (Some(&path[..i]), &path[i + 1..]),
            None => (None, path),
        };
        match last {
            STATUS => return Err(TopicError::ResponseTopic(STATUS)),
            ERROR => return Err(TopicError::ResponseTopic(ERROR)),
            _ => {}
        }
        let (ext_path, request_id) = match parse_request_id(last) {
            Some(id) => (head.ok_or(TopicError::MissingResourcePath)?, Some(id)),
            None => (path, None),
        };
        Ok(Self {
            app_version,
            extension,
            ext_path,
            request_id,
        })
    }

    /// Endpoint-aware split of [`Self::ext_path`] into the token and the resource path
    /// (with its leading `/`), e.g. `("tok", "/update/keys")`.
    pub fn endpoint_resource(&self) -> Result<(&'a str, &'a str), TopicError> {
        match self.ext_path.find('/') {
            Some(i) => Ok((&self.ext_path[..i], &self.ext_path[i..])),
            None => Err(TopicError::MissingEndpointResource),
        }
    }
}

/// Formats the request topic back (`kp1/av/ext/ext_path[/rid]`).
impl fmt::Display for RequestTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}{}/{}/{}",
            self.app_version, self.extension, self.ext_path
        )?;
        if let Some(id) = self.request_id {
            write!(f, "/{id}")?;
        }
        Ok(())
    }
}

/// A canonical request id: `1..=i32::MAX`, ASCII digits only, no leading zero.
fn parse_request_id(level: &str) -> Option<i32> {
    let bytes = level.as_bytes();
    // i32::MAX has 10 digits; longer cannot fit, and this bounds the loop.
    if bytes.is_empty() || bytes.len() > 10 || bytes[0] == b'0' {
        return None;
    }
    let mut value: i64 = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i64::from(b - b'0');
    }
    i32::try_from(value).ok()
}

/// Which suffix a response topic gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// `/status`: success (2xx) responses and observe pushes.
    Status,
    /// `/error`: failures, with a [`crate::error::KpError`] JSON payload.
    Error,
}

impl ResponseKind {
    /// The topic level: `status` or `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Status => STATUS,
            Self::Error => ERROR,
        }
    }
}

/// `kp1/{av}/{ext}[/{token}]{resource_path}[/{rid}]/{status|error}`.
///
/// `resource_path` starts with `/` (as in ESP `resourcePath`); one is inserted if missing
/// so the result is always a well-formed topic, and an empty path adds nothing.
pub fn response_topic(
    app_version: &str,
    extension: &str,
    token: Option<&str>,
    resource_path: &str,
    request_id: Option<i32>,
    kind: ResponseKind,
) -> String {
    let kind = kind.as_str();
    let len = PREFIX.len()
        + app_version.len()
        + 1
        + extension.len()
        + token.map_or(0, |t| t.len() + 1)
        + resource_path.len()
        + 1
        + if request_id.is_some() { 11 } else { 0 }
        + 1
        + kind.len();
    let mut s = String::with_capacity(len);
    s.push_str(PREFIX);
    s.push_str(app_version);
    s.push('/');
    s.push_str(extension);
    if let Some(token) = token {
        s.push('/');
        s.push_str(token);
    }
    if !resource_path.is_empty() && !resource_path.starts_with('/') {
        s.push('/');
    }
    s.push_str(resource_path);
    if let Some(id) = request_id {
        // Writing to a String cannot fail.
        let _ = write!(s, "/{id}");
    }
    s.push('/');
    s.push_str(kind);
    s
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse(t: &str) -> Result<RequestTopic<'_>, TopicError> {
        RequestTopic::parse(t)
    }

    #[test]
    fn endpoint_aware_request_with_id() {
        let t = parse("kp1/smart-v1/epmx/tok/update/keys/42").unwrap();
        assert_eq!(
            t,
            RequestTopic {
                app_version: "smart-v1",
                extension: "epmx",
                ext_path: "tok/update/keys",
                request_id: Some(42),
            }
        );
        assert_eq!(t.endpoint_resource().unwrap(), ("tok", "/update/keys"));
        assert_eq!(t.to_string(), "kp1/smart-v1/epmx/tok/update/keys/42");
    }

    #[test]
    fn request_without_id() {
        let t = parse("kp1/av/dcx/tok/json").unwrap();
        assert_eq!(t.ext_path, "tok/json");
        assert_eq!(t.request_id, None);
        assert_eq!(t.endpoint_resource().unwrap(), ("tok", "/json"));
    }

    #[test]
    fn endpoint_unaware_single_level_path() {
        let t = parse("kp1/av/reg/register").unwrap();
        assert_eq!((t.ext_path, t.request_id), ("register", None));
        assert_eq!(t.endpoint_resource(), Err(TopicError::MissingEndpointResource));
        let t = parse("kp1/av/reg/register/7").unwrap();
        assert_eq!((t.ext_path, t.request_id), ("register", Some(7)));
    }

    #[test]
    fn request_id_must_be_canonical_and_fit_an_avro_int() {
        let cases = [
            ("1", Some(1)),
            ("2147483647", Some(i32::MAX)),
            ("2147483648", None),
            ("99999999999", None),
            ("0", None),
            ("007", None),
            ("-1", None),
            ("1e3", None),
            ("١٢", None), // non-ASCII digits
            ("json", None),
        ];
        for (last, expected) in cases {
            let topic = format!("kp1/av/ext/tok/res/{last}");
            let t = parse(&topic).unwrap();
            assert_eq!(t.request_id, expected, "{last}");
            let expected_path = if expected.is_some() {
                "tok/res".to_string()
            } else {
                format!("tok/res/{last}")
            };
            assert_eq!(t.ext_path, expected_path, "{last}");
        }
    }

    #[test]
    fn numeric_tokens_and_inner_numeric_levels_stay_in_the_path() {
        let t = parse("kp1/av/cmx/12345/config/json/9").unwrap();
        assert_eq!(t.ext_path, "12345/config/json");
        assert_eq!(t.endpoint_resource().unwrap(), ("12345", "/config/json"));
        assert_eq!(t.request_id, Some(9));
    }

    #[test]
    fn rejections() {
        let long = format!("kp1/av/ext/{}", "a".repeat(MAX_TOPIC_LEN));
        let cases: Vec<(&str, TopicError)> = vec![
            ("", TopicError::Empty),
            (&long, TopicError::TooLong { len: long.len() }),
            ("kp1/av/ext/a\0b", TopicError::NulCharacter),
            ("kp1/av/ext/+/json", TopicError::Wildcard('+')),
            ("kp1/av/ext/#", TopicError::Wildcard('#')),
            ("/kp1/av/ext/tok", TopicError::EmptyLevel),
            ("kp1/av/ext/tok/", TopicError::EmptyLevel),
            ("kp1/av//tok/json", TopicError::EmptyLevel),
            ("/", TopicError::EmptyLevel),
            ("kp2/av/ext/tok", TopicError::NotKp1),
            ("KP1/av/ext/tok", TopicError::NotKp1),
            ("kp1", TopicError::NotKp1),
            ("kp1/av", TopicError::TooFewLevels),
            ("kp1/av/ext", TopicError::TooFewLevels),
            ("kp1/av/ext/42", TopicError::MissingResourcePath),
            (
                "kp1/av/ext/tok/json/42/status",
                TopicError::ResponseTopic("status"),
            ),
            ("kp1/av/ext/tok/json/error", TopicError::ResponseTopic("error")),
            ("kp1/av/ext/status", TopicError::ResponseTopic("status")),
            ("kp1/av/a.b/tok/json", TopicError::InvalidExtension("a.b".into())),
            ("kp1/av/a*/tok/json", TopicError::InvalidExtension("a*".into())),
            ("kp1/av/a b/tok/json", TopicError::InvalidExtension("a b".into())),
        ];
        for (topic, expected) in cases {
            assert_eq!(parse(topic), Err(expected), "{topic:?}");
        }
    }

    #[test]
    fn max_length_topic_is_accepted() {
        let topic = format!("kp1/av/ext/{}", "a".repeat(MAX_TOPIC_LEN - 11));
        assert_eq!(topic.len(), MAX_TOPIC_LEN);
        assert!(parse(&topic).is_ok());
    }

    #[test]
    fn status_or_error_inside_the_path_is_fine() {
        let t = parse("kp1/av/cex/tok/status/5").unwrap();
        assert_eq!(t.ext_path, "tok/status");
        let t = parse("kp1/av/cex/tok/error/json").unwrap();
        assert_eq!(t.ext_path, "tok/error/json");
    }

    #[test]
    fn error_texts_are_sentences() {
        let errors = [
            TopicError::Empty,
            TopicError::TooLong { len: 2000 },
            TopicError::NulCharacter,
            TopicError::Wildcard('#'),
            TopicError::EmptyLevel,
            TopicError::NotKp1,
            TopicError::TooFewLevels,
            TopicError::InvalidExtension("a.b".into()),
            TopicError::ResponseTopic("status"),
            TopicError::MissingResourcePath,
            TopicError::MissingEndpointResource,
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.starts_with("The "), "{text}");
            assert!(text.ends_with('.'), "{text}");
        }
        assert_eq!(
            TopicError::TooFewLevels.to_string(),
            "The topic must have the form kp1/{appVersion}/{extension}/{resourcePath}; \
             the application version, extension or resource path is missing."
        );
        assert_eq!(
            TopicError::TooLong { len: 2000 }.to_string(),
            "The topic is 2000 bytes long; the maximum is 1024 bytes."
        );
    }

    #[test]
    fn response_topics() {
        assert_eq!(
            response_topic(
                "av",
                "epmx",
                Some("tok"),
                "/update/keys",
                Some(42),
                ResponseKind::Status
            ),
            "kp1/av/epmx/tok/update/keys/42/status"
        );
        assert_eq!(
            response_topic(
                "av",
                "cmx",
                Some("tok"),
                "/config/json",
                None,
                ResponseKind::Status
            ),
            "kp1/av/cmx/tok/config/json/status"
        );
        assert_eq!(
            response_topic("av", "reg", None, "/register", Some(1), ResponseKind::Error),
            "kp1/av/reg/register/1/error"
        );
        // Lenient about the leading '/'.
        assert_eq!(
            response_topic("av", "dcx", Some("tok"), "json", Some(3), ResponseKind::Error),
            "kp1/av/dcx/tok/json/3/error"
        );
        let max = response_topic("a", "b", Some("c"), "/d", Some(i32::MAX), ResponseKind::Status);
        assert_eq!(max, "kp1/a/b/c/d/2147483647/status");
    }

    /// A topic level: printable characters without '/', '+', '#', NUL.
    fn level() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9_.:~=ä€-]{1,12}"
    }

    fn ext_name() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,10}"
    }

    proptest! {
        #[test]
        fn parse_format_round_trip(
            av in level(),
            ext in ext_name(),
            token in level(),
            resource in prop::collection::vec(level(), 1..5),
            rid in prop::option::of(1..=i32::MAX),
        ) {
            let resource_path: String = resource.iter().map(|l| format!("/{l}")).collect();
            let request = match rid {
                Some(id) => format!("kp1/{av}/{ext}/{token}{resource_path}/{id}"),
                None => format!("kp1/{av}/{ext}/{token}{resource_path}"),
            };
            // Without an explicit id, a numeric last level is legitimately read as one.
            let last = resource.last().map(String::as_str).unwrap_or_default();
            prop_assume!(rid.is_some() || parse_request_id(last).is_none());
            prop_assume!(!matches!(last, "status" | "error"));

            let t = RequestTopic::parse(&request).unwrap();
            prop_assert_eq!(t.app_version, av.as_str());
            prop_assert_eq!(t.extension, ext.as_str());
            prop_assert_eq!(t.request_id, rid);
            prop_assert_eq!(t.endpoint_resource().unwrap(), (token.as_str(), resource_path.as_str()));
            prop_assert_eq!(t.to_string(), request.clone());

            let (tok, res) = t.endpoint_resource().unwrap();
            for (kind, suffix) in [(ResponseKind::Status, "/status"), (ResponseKind::Error, "/error")] {
                let response = response_topic(t.app_version, t.extension, Some(tok), res, t.request_id, kind);
                prop_assert_eq!(response, format!("{request}{suffix}"));
            }
        }

        #[test]
        fn any_parsed_topic_reformats_to_itself(s in "kp1/[a-z0-9/]{0,30}") {
            if let Ok(t) = RequestTopic::parse(&s) {
                prop_assert_eq!(t.to_string(), s);
            }
        }

        #[test]
        fn parse_never_panics_on_arbitrary_strings(s in ".{0,1100}") {
            let _ = RequestTopic::parse(&s).map(|t| t.endpoint_resource());
        }

        #[test]
        fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
            let s = String::from_utf8_lossy(&bytes);
            if let Ok(t) = RequestTopic::parse(&s) {
                // Whatever is accepted obeys the rules.
                prop_assert!(s.len() <= MAX_TOPIC_LEN);
                prop_assert!(!s.contains(['\0', '+', '#']));
                prop_assert!(!t.ext_path.is_empty());
                let _ = t.endpoint_resource();
            }
        }

        #[test]
        fn kp1_shaped_noise_never_panics(
            levels in prop::collection::vec("[a-z0-9+#/\\x00 .]{0,4}", 0..8)
        ) {
            let s = format!("kp1/{}", levels.join("/"));
            let _ = RequestTopic::parse(&s).map(|t| t.endpoint_resource());
        }
    }
}
