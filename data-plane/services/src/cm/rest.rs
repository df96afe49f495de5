//! CM REST APIs: endpoint tokens under `/cm/api/v1`, client credentials under `/ccm/api/v1`.
//!
//! | Method | Path | Success |
//! |---|---|---|
//! | POST | `/cm/api/v1/endpoints/{endpointId}/tokens` (body optional: `{"token"?}`) | 201 token with its value + `Location` |
//! | GET | `/cm/api/v1/endpoints/{endpointId}/tokens` | 200 `[token..]` (never values) |
//! | GET | `/cm/api/v1/tokens/{tokenId}` | 200 token |
//! | PUT | `/cm/api/v1/tokens/{tokenId}/status` `{"status":"Active"\|"Suspended"\|"Revoked"}` | 200 token; 409 out of `Revoked` |
//! | POST | `/ccm/api/v1/clients` | 201 credential + `Location` |
//! | GET | `/ccm/api/v1/clients?clientId&offset&limit` | 200 `{"content":[credential..],"offset","limit","totalElements"}` |
//! | GET / DELETE | `/ccm/api/v1/clients/{credentialId}` | 200 credential / 204 (revokes at once) |
//!
//! A token is `{"tokenId","endpointId","appName","appVersion","status","createdAt"}`; only the
//! 201 of its creation adds `"token"`, the value (random 256-bit base64url unless the caller chose
//! one). Issuing asks EPR (19/EPMMP, over the bus) which application version the endpoint has, so
//! tokens exist only for registered endpoints.
//!
//! `POST /clients` takes `{"clientId"}` plus exactly one of `"username"`+`"password"`,
//! `"certificate"` (PEM; issuer and serial number are read from it) or `"issuer"`+`"serialNumber"`
//! (base 10). A credential is `{"credentialId","clientId","kind":"password"|"certificate",
//! "username"? | "issuer"?,"serialNumber"?,"status","createdAt"}`; passwords are never returned.
//! Errors have the crate's one shape (`{"error","message"}`); none quotes a secret.

use std::time::Duration;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header::LOCATION},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use kaa_bus::BusError;
use kaa_protocol::{
    avro::AvroRecord,
    ecap::{CertificateIdentity, canonical_serial},
    epmmp::{self, EndpointMetadataGetRequest, EndpointMetadataGetResponse},
    now_millis, subject,
};
use kaa_store::{ClientCredential, CmError, CredentialKind, EndpointToken, NewAuth, NewCredential, NewToken};
use serde::{Deserialize, Serialize};

use super::{CmState, Secret, bus::target_status, check_token_value, generate_token};
use crate::rest::{AppError, Media, parse_json};

/// Path prefix of the token API.
pub const CM_PREFIX: &str = "/cm/api/v1";
/// Path prefix of the client credential API.
pub const CCM_PREFIX: &str = "/ccm/api/v1";
/// Page size when the caller gives no `limit`.
const DEFAULT_LIMIT: u64 = 100;
/// Largest page served.
const MAX_LIMIT: u64 = 1000;
/// Longest client id, username or issuer accepted.
const MAX_NAME_LEN: usize = 1024;
/// Longest password accepted (argon2 hashes any length; this bounds the request, not security).
const MAX_PASSWORD_LEN: usize = 1024;

/// Both CM APIs (absolute paths), ready to merge into the binary's app.
pub fn router(state: CmState) -> Router {
    Router::new()
        .route(
            "/cm/api/v1/endpoints/{endpoint_id}/tokens",
            post(issue_token).get(list_tokens),
        )
        .route("/cm/api/v1/tokens/{token_id}", get(get_token))
        .route("/cm/api/v1/tokens/{token_id}/status", put(put_token_status))
        .route("/ccm/api/v1/clients", post(create_client).get(list_clients))
        .route(
            "/ccm/api/v1/clients/{credential_id}",
            get(get_client).delete(delete_client),
        )
        .with_state(state)
}

// --- endpoint tokens -------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct IssueTokenRequest {
    token: Option<Secret>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StatusRequest {
    status: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenJson {
    token_id: String,
    endpoint_id: String,
    app_name: String,
    app_version: String,
    status: &'static str,
    created_at: i64,
    /// Only in the answer that creates the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<EndpointToken> for TokenJson {
    fn from(t: EndpointToken) -> Self {
        TokenJson {
            token_id: t.id,
            endpoint_id: t.endpoint_id,
            app_name: t.app_name,
            app_version: t.app_version,
            status: t.status.as_str(),
            created_at: t.created_at,
            token: None,
        }
    }
}

async fn issue_token(
    State(state): State<CmState>,
    Path(endpoint_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: IssueTokenRequest = match body.is_empty() {
        true => IssueTokenRequest::default(),
        false => parse_json(&headers, &body, Media::Json)?,
    };
    let value = match req.token {
        Some(chosen) => {
            check_token_value(chosen.expose()).map_err(|m| AppError::BadRequest(format!("token: {m}")))?;
            chosen
        }
        None => generate_token(),
    };
    let (app_name, app_version) = endpoint_application(&state, &endpoint_id).await?;
    let token = state
        .store()
        .insert_token(NewToken {
            endpoint_id,
            app_name,
            app_version,
            token: value.expose().to_owned(),
        })
        .await
        .map_err(|e| match e.as_cm() {
            Some(CmError::DuplicateToken) => {
                AppError::Conflict("token: this endpoint token is already in use".to_owned())
            }
            _ => e.into(),
        })?;
    tracing::info!(token_id = %token.id, endpoint_id = %token.endpoint_id, "endpoint token issued");
    let location = location(&format!("{CM_PREFIX}/tokens/{}", token.id))?;
    let mut body = TokenJson::from(token);
    body.token = Some(value.into_inner());
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(body)).into_response())
}

/// The endpoint's (application, application version), asked of EPR over 19/EPMMP.
async fn endpoint_application(state: &CmState, endpoint_id: &str) -> Result<(String, String), AppError> {
    let config = state.config();
    let request = EndpointMetadataGetRequest {
        correlation_id: uuid::Uuid::new_v4().to_string(),
        timestamp: now_millis(),
        timeout: i64::try_from(config.request_timeout_ms).unwrap_or(i64::MAX),
        endpoint_id: endpoint_id.to_owned(),
        include: Vec::new(),
        include_metadata: false,
    };
    let unavailable = |why: String| {
        AppError::ServiceUnavailable(format!(
            "the endpoint register `{}` {why}; try again",
            config.epr_instance
        ))
    };
    let reply = state
        .bus()
        .request(
            &subject::epmmp_request(&config.epr_instance, epmmp::GET_REQUEST),
            request.to_avro().into(),
            Duration::from_millis(config.request_timeout_ms),
        )
        .await
        .map_err(|e| match e {
            BusError::Timeout => {
                unavailable(format!("did not answer within {} ms", config.request_timeout_ms))
            }
            BusError::NoResponders(_) => unavailable("is not running".to_owned()),
            other => unavailable(format!("is unreachable ({other})")),
        })?;
    let response = EndpointMetadataGetResponse::from_avro(&reply.payload)
        .map_err(|e| unavailable(format!("sent an unreadable answer ({e})")))?;
    match (response.status_code, response.app_version_name) {
        (200..=299, Some(app_version)) => match config.application_of(&app_version) {
            Some(app) => Ok((app.to_owned(), app_version)),
            None => Err(AppError::Conflict(format!(
                "endpoint {endpoint_id} has application version {app_version:?}, which the credential \
                 service's configuration does not list"
            ))),
        },
        (404, _) => Err(AppError::NotFound(format!("endpoint {endpoint_id} not found"))),
        (status, _) => Err(unavailable(format!(
            "answered {status} {}",
            response.reason_phrase.unwrap_or_default()
        ))),
    }
}

async fn list_tokens(
    State(state): State<CmState>,
    Path(endpoint_id): Path<String>,
) -> Result<Json<Vec<TokenJson>>, AppError> {
    let tokens = state.store().endpoint_tokens(&endpoint_id).await?;
    Ok(Json(tokens.into_iter().map(TokenJson::from).collect()))
}

async fn get_token(
    State(state): State<CmState>,
    Path(token_id): Path<String>,
) -> Result<Json<TokenJson>, AppError> {
    Ok(Json(state.store().token(&token_id).await?.into()))
}

async fn put_token_status(
    State(state): State<CmState>,
    Path(token_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<TokenJson>, AppError> {
    let req: StatusRequest = parse_json(&headers, &body, Media::Json)?;
    let to = target_status(&req.status)?;
    let transition = state.set_token_status(&token_id, to).await?;
    Ok(Json(transition.token.into()))
}

// --- client credentials ----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewClientRequest {
    client_id: String,
    username: Option<String>,
    password: Option<Secret>,
    certificate: Option<String>,
    issuer: Option<String>,
    serial_number: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClientsQuery {
    client_id: Option<String>,
    offset: Option<u64>,
    limit: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialJson {
    credential_id: String,
    client_id: String,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<String>,
    status: &'static str,
    created_at: i64,
}

impl From<ClientCredential> for CredentialJson {
    fn from(c: ClientCredential) -> Self {
        let kind = c.kind.as_str();
        let (username, issuer, serial_number) = match c.kind {
            CredentialKind::Password { username } => (Some(username), None, None),
            CredentialKind::Certificate { issuer, serial } => (None, Some(issuer), Some(serial)),
        };
        CredentialJson {
            credential_id: c.id,
            client_id: c.client_id,
            kind,
            username,
            issuer,
            serial_number,
            status: c.status.as_str(),
            created_at: c.created_at,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CredentialPageJson {
    content: Vec<CredentialJson>,
    offset: u64,
    limit: u64,
    total_elements: u64,
}

async fn create_client(
    State(state): State<CmState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AppError> {
    let req: NewClientRequest = parse_json(&headers, &body, Media::Json)?;
    check_name("clientId", &req.client_id)?;
    let auth = match (
        req.username,
        req.password,
        req.certificate,
        req.issuer,
        req.serial_number,
    ) {
        (Some(username), Some(password), None, None, None) => {
            check_name("username", &username)?;
            if password.expose().is_empty() || password.expose().len() > MAX_PASSWORD_LEN {
                return Err(AppError::BadRequest(format!(
                    "password must be 1..={MAX_PASSWORD_LEN} bytes"
                )));
            }
            let password_hash = state
                .passwords()
                .hash(&password)
                .await
                .map_err(AppError::internal)?;
            NewAuth::Password {
                username,
                password_hash,
            }
        }
        (None, None, Some(pem), None, None) => {
            let id = CertificateIdentity::from_pem(pem.as_bytes())
                .map_err(|e| AppError::BadRequest(format!("certificate: {e}")))?;
            NewAuth::Certificate {
                issuer: id.issuer,
                serial: id.serial_number,
            }
        }
        (None, None, None, Some(issuer), Some(serial)) => {
            check_name("issuer", &issuer)?;
            let serial = canonical_serial(&serial).ok_or_else(|| {
                AppError::BadRequest("serialNumber must be a base-10 integer (digits only)".to_owned())
            })?;
            NewAuth::Certificate { issuer, serial }
        }
        _ => {
            return Err(AppError::BadRequest(
                "give clientId and exactly one of: username + password, certificate (PEM), \
                 or issuer + serialNumber"
                    .to_owned(),
            ));
        }
    };
    let credential = state
        .store()
        .insert_credential(NewCredential {
            client_id: req.client_id,
            auth,
        })
        .await?;
    tracing::info!(
        credential_id = %credential.id,
        client_id = %credential.client_id,
        kind = credential.kind.as_str(),
        "client credential created"
    );
    let location = location(&format!("{CCM_PREFIX}/clients/{}", credential.id))?;
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(CredentialJson::from(credential)),
    )
        .into_response())
}

async fn list_clients(
    State(state): State<CmState>,
    query: Result<Query<ClientsQuery>, QueryRejection>,
) -> Result<Json<CredentialPageJson>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let offset = q.offset.unwrap_or(0);
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    let page = state
        .store()
        .credentials(q.client_id.as_deref(), offset, limit)
        .await?;
    Ok(Json(CredentialPageJson {
        content: page.items.into_iter().map(CredentialJson::from).collect(),
        offset,
        limit,
        total_elements: page.total,
    }))
}

async fn get_client(
    State(state): State<CmState>,
    Path(credential_id): Path<String>,
) -> Result<Json<CredentialJson>, AppError> {
    Ok(Json(state.store().credential(&credential_id).await?.into()))
}

async fn delete_client(
    State(state): State<CmState>,
    Path(credential_id): Path<String>,
) -> Result<StatusCode, AppError> {
    let credential = state.store().delete_credential(&credential_id).await?;
    tracing::info!(credential_id = %credential.id, client_id = %credential.client_id, "client credential deleted");
    state.credential_revoked(&credential.id).await;
    Ok(StatusCode::NO_CONTENT)
}

// --- helpers ---------------------------------------------------------------------------------

fn check_name(field: &str, value: &str) -> Result<(), AppError> {
    if value.is_empty() || value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!(
            "{field} must be 1..={MAX_NAME_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn location(path: &str) -> Result<HeaderValue, AppError> {
    HeaderValue::try_from(path).map_err(|_| AppError::BadRequest("the id is not usable in a URL".to_owned()))
}
