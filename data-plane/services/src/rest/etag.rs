//! Conditional GETs of lists: the `ETag` of a JSON answer is a digest of its bytes, and a caller
//! that sends it back in `If-None-Match` gets `304 Not Modified` while the answer is the same.
//! A client polling a list (the dashboard) then transfers and redraws it only when it changed.
//! A digest rather than a change counter: it needs no shared state between replicas, and it
//! changes exactly when the answer does.

use axum::http::{
    HeaderMap, HeaderValue, StatusCode,
    header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH},
};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AppError;

/// `body` as JSON with its `ETag`, or 304 when `request`'s `If-None-Match` names that tag.
pub fn json_with_etag<T: Serialize>(request: &HeaderMap, body: &T) -> Result<Response, AppError> {
    let bytes = serde_json::to_vec(body).map_err(AppError::internal)?;
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    let tag = HeaderValue::try_from(format!("\"{hex}\"")).map_err(AppError::internal)?;
    // Caches may keep the answer but must ask again each time: the list changes at any moment.
    let headers = [
        (ETAG, tag.clone()),
        (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    if none_match_names(request, &tag) {
        return Ok((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    let json = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    Ok((headers, json, bytes).into_response())
}

/// Whether `If-None-Match` lists `tag` (weak comparison, RFC 9110 section 13.1.2) or is `*`.
fn none_match_names(request: &HeaderMap, tag: &HeaderValue) -> bool {
    let tag = tag.as_bytes();
    request
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t).as_bytes() == tag)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn answer(if_none_match: Option<&str>, body: &serde_json::Value) -> (StatusCode, String) {
        let mut request = HeaderMap::new();
        if let Some(tag) = if_none_match {
            request.insert(IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        let response = json_with_etag(&request, body).unwrap();
        let tag = response.headers()[ETAG].to_str().unwrap().to_owned();
        (response.status(), tag)
    }

    #[test]
    fn the_tag_follows_the_content_and_a_match_is_not_modified() {
        let list = serde_json::json!({"content": [1, 2]});
        let (status, tag) = answer(None, &list);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer(Some(&tag), &list), (StatusCode::NOT_MODIFIED, tag.clone()));
        assert_eq!(
            answer(Some(&format!("\"x\", W/{tag}")), &list).0,
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(answer(Some("*"), &list).0, StatusCode::NOT_MODIFIED);
        let changed = serde_json::json!({"content": [1, 3]});
        let (status, other) = answer(Some(&tag), &changed);
        assert_eq!(status, StatusCode::OK);
        assert_ne!(other, tag);
    }
}
