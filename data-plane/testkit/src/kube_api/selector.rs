//! Query parameters, and the label and field selectors of lists and watches.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::Value;

use super::routes::{Failure, failure};

#[derive(Debug, Default)]
pub(super) struct Query {
    params: BTreeMap<String, String>,
}

impl Query {
    pub(super) fn parse(query: &str) -> Query {
        let params = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Query { params }
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    pub(super) fn is_watch(&self) -> bool {
        matches!(self.get("watch"), Some("true" | "1"))
    }

    pub(super) fn selector(&self) -> Result<Selector, Failure> {
        let labels = parse_label_selector(self.get("labelSelector").unwrap_or(""))
            .map_err(|e| failure(StatusCode::BAD_REQUEST, "BadRequest", &e))?;
        let fields = parse_field_selector(self.get("fieldSelector").unwrap_or(""))
            .map_err(|e| failure(StatusCode::BAD_REQUEST, "BadRequest", &e))?;
        Ok(Selector { labels, fields })
    }
}

pub(super) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
pub(super) enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Default)]
pub(super) struct Selector {
    pub(super) labels: Vec<Requirement>,
    /// (field path, value, equal?)
    pub(super) fields: Vec<(String, String, bool)>,
}

impl Selector {
    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = object["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|r| match r {
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|(path, value, equal)| {
            let actual = match path.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str(),
                "metadata.namespace" => object["metadata"]["namespace"].as_str(),
                _ => None,
            };
            (actual == Some(value.as_str())) == *equal
        });
        labels_ok && fields_ok
    }
}

/// Splits on commas outside parentheses.
pub(super) fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

pub(super) fn parse_label_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("invalid set in label selector term {term:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            if let Some((k, v)) = term.split_once("!=") {
                Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once("==") {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = term.split_once('=') {
                Ok(Requirement::Equals(k.trim().into(), v.trim().into()))
            } else if let Some((k, rest)) = term.split_once(" notin ") {
                Ok(Requirement::NotIn(k.trim().into(), set(rest)?))
            } else if let Some((k, rest)) = term.split_once(" in ") {
                Ok(Requirement::In(k.trim().into(), set(rest)?))
            } else if let Some(k) = term.strip_prefix('!') {
                Ok(Requirement::NotExists(k.trim().into()))
            } else if term.contains([' ', '(', ')']) {
                Err(format!("unable to parse label selector term {term:?}"))
            } else {
                Ok(Requirement::Exists(term.into()))
            }
        })
        .collect()
}

pub(super) fn parse_field_selector(selector: &str) -> Result<Vec<(String, String, bool)>, String> {
    split_terms(selector)
        .into_iter()
        .map(|term| {
            let (path, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, v, true)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            match path.trim() {
                p @ ("metadata.name" | "metadata.namespace") => {
                    Ok((p.to_owned(), value.trim().to_owned(), equal))
                }
                other => Err(format!("field label not supported: {other}")),
            }
        })
        .collect()
}
