//! EPR's metadata routes: the whole object (GET, PUT, RFC 6902 PATCH), single keys and the key
//! listing, with the metadata version as ETag and If-Match for safe concurrent writers.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetadataQuery {
    /// Comma-separated keys to return; absent = all.
    include: Option<String>,
}

pub(super) async fn get_metadata(
    State(state): State<EprState>,
    Path(id): Path<String>,
    query: Result<Query<MetadataQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let mut md = state.store().metadata(&id).await?;
    if let Some(include) = q.include {
        let wanted: Vec<&str> = include
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        md.body.retain(|k, _| wanted.contains(&k.as_str()));
    }
    Ok(metadata_response(md))
}

pub(super) async fn put_metadata(
    State(state): State<EprState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let expected = if_match(&headers)?;
    let body: Map<String, Value> = parse_json(&headers, &body, Media::Json)?;
    let update = state.store().replace_metadata(&id, body, expected).await?;
    Ok(metadata_response(update.current))
}

pub(super) async fn patch_metadata(
    State(state): State<EprState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let expected = if_match(&headers)?;
    let patch: json_patch::Patch = parse_json(&headers, &body, Media::JsonPatch)?;
    let update = state.store().patch_metadata(&id, &patch, expected).await?;
    Ok(metadata_response(update.current))
}

pub(super) async fn get_metadata_key(
    State(state): State<EprState>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, AppError> {
    check_key(&key)?;
    let mut md = state.store().metadata(&id).await?;
    let value = md
        .body
        .remove(&key)
        .ok_or_else(|| AppError::NotFound(format!("metadata key {key} not found")))?;
    Ok(value_response(value, md.version))
}

pub(super) async fn put_metadata_key(
    State(state): State<EprState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    check_key(&key)?;
    let expected = if_match(&headers)?;
    let value: Value = parse_json(&headers, &body, Media::Json)?;
    let update = state
        .store()
        .set_metadata_key(&id, &key, value.clone(), expected)
        .await?;
    Ok(value_response(value, update.current.version))
}

pub(super) async fn delete_metadata_key(
    State(state): State<EprState>,
    Path((id, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    check_key(&key)?;
    let expected = if_match(&headers)?;
    let update = state.store().delete_metadata_key(&id, &key, expected).await?;
    Ok((StatusCode::NO_CONTENT, [(ETAG, etag(update.current.version))]).into_response())
}

pub(super) async fn metadata_keys(
    State(state): State<EprState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>, AppError> {
    Ok(Json(state.store().metadata_keys(&id).await?))
}

pub(super) fn metadata_response(md: Metadata) -> Response {
    (StatusCode::OK, [(ETAG, etag(md.version))], Json(md.body)).into_response()
}

pub(super) fn value_response(value: Value, version: i64) -> Response {
    (StatusCode::OK, [(ETAG, etag(version))], Json(value)).into_response()
}

/// Strong ETag of a metadata version: `"7"`.
pub(super) fn etag(version: i64) -> HeaderValue {
    // A quoted decimal is always a valid header value.
    HeaderValue::try_from(format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The metadata version an `If-Match` header pins; `None` when absent or `*`.
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<i64>, AppError> {
    let Some(raw) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = raw
        .to_str()
        .map_err(|_| AppError::BadRequest("If-Match is not a visible ASCII string".to_owned()))?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    if text.contains(',') {
        return Err(AppError::BadRequest(
            "If-Match with several ETags is not supported".to_owned(),
        ));
    }
    // Weak comparison is fine for a version counter: W/"3" and "3" name the same state.
    let tag = text.strip_prefix("W/").unwrap_or(text);
    let tag = tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag);
    tag.parse::<i64>().map(Some).map_err(|_| {
        AppError::PreconditionFailed(format!("If-Match {text} does not match the metadata ETag"))
    })
}

pub(super) fn check_key(key: &str) -> Result<(), AppError> {
    match is_valid_metadata_key(key) {
        true => Ok(()),
        false => Err(AppError::BadRequest(format!(
            "metadata key {key:?} does not match ^[a-zA-Z0-9_]+$"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rest::test_headers as headers;

    #[test]
    fn if_match_forms() {
        assert_eq!(if_match(&headers(&[])).unwrap(), None);
        assert_eq!(if_match(&headers(&[("if-match", "*")])).unwrap(), None);
        assert_eq!(if_match(&headers(&[("if-match", "\"3\"")])).unwrap(), Some(3));
        assert_eq!(if_match(&headers(&[("if-match", "W/\"4\"")])).unwrap(), Some(4));
        assert_eq!(if_match(&headers(&[("if-match", "5")])).unwrap(), Some(5));
        assert!(matches!(
            if_match(&headers(&[("if-match", "\"abc\"")])),
            Err(AppError::PreconditionFailed(_))
        ));
        assert!(matches!(
            if_match(&headers(&[("if-match", "\"1\", \"2\"")])),
            Err(AppError::BadRequest(_))
        ));
    }
}
