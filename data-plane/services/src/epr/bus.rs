//! EPR's bus face: the 19/EPMMP metadata provider.
//!
//! Subjects (queue group = the EPR instance name, so replicas share the load):
//! - `kaa.v1.service.{epr}.epmmp.ep-metadata-get-request`
//! - `kaa.v1.service.{epr}.epmmp.ep-metadata-patch-request`
//! - `kaa.v1.service.{epr}.epmmp.ep-metadata-keys-get-request`
//!
//! (Endpoint tokens, and so 16/ECAP, are the credential service's: [`crate::cm`].)
//!
//! Each request is decoded, answered by a pure-ish `answer_*` function (store in, response record
//! out; tested without a bus) and the Avro response is published on the request's `replyTo`.
//! Status codes and reason phrases come from [`AppError`], the same mapping the REST API uses.
//! The metadata ETag on the bus is the version counter as a bare decimal string (`"7"`).

use kaa_bus::{Bus, BusError};
use kaa_protocol::{
    epmmp::{
        self, EndpointMetadataGetRequest, EndpointMetadataGetResponse, EndpointMetadataKeysGetRequest,
        EndpointMetadataKeysGetResponse, EndpointMetadataPatchRequest, EndpointMetadataPatchResponse,
    },
    now_millis, subject,
};
use kaa_store::Store;
use tokio_util::sync::CancellationToken;

use super::{AppError, Config, ConfigError, EprState};
use crate::worker;

/// Requests handled at once per subject; EPR work is short database calls.
const MAX_IN_FLIGHT: usize = 64;

/// Why [`serve`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("invalid EPR config: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: BusError,
    },
}

/// Runs EPR's bus handlers until `shutdown` is cancelled (then waits for requests in flight).
///
/// Returns early only if the config is invalid or a subscription cannot be made.
pub async fn serve(
    bus: Bus,
    store: Store,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_state(EprState::new(store, bus, config)?, shutdown).await
}

/// [`serve`] sharing `state` (and so its live config) with the REST API.
pub async fn serve_state(state: EprState, shutdown: CancellationToken) -> Result<(), ServeError> {
    let bus = state.bus().clone();
    let instance = state.config().instance.clone();
    let subscribe = |subject| {
        worker::subscribe(&bus, subject, &instance, |subject, source| {
            ServeError::Subscribe { subject, source }
        })
    };
    let get = subscribe(subject::epmmp_request(&instance, epmmp::GET_REQUEST)).await?;
    let patch = subscribe(subject::epmmp_request(&instance, epmmp::PATCH_REQUEST)).await?;
    let keys = subscribe(subject::epmmp_request(&instance, epmmp::KEYS_GET_REQUEST)).await?;
    tracing::info!(instance = %instance, "EPR bus handlers ready");

    tokio::join!(
        worker::run(
            "epr.epmmp.get",
            get,
            MAX_IN_FLIGHT,
            &shutdown,
            worker::responder(&bus, &state, answer_get)
        ),
        worker::run(
            "epr.epmmp.patch",
            patch,
            MAX_IN_FLIGHT,
            &shutdown,
            worker::responder(&bus, &state, answer_patch)
        ),
        worker::run(
            "epr.epmmp.keys",
            keys,
            MAX_IN_FLIGHT,
            &shutdown,
            worker::responder(&bus, &state, answer_keys)
        ),
    );
    Ok(())
}

/// 19/EPMMP `ep-metadata-get-request`: the (optionally filtered) metadata, its ETag and app version.
pub async fn answer_get(state: EprState, req: EndpointMetadataGetRequest) -> EndpointMetadataGetResponse {
    let mut resp = EndpointMetadataGetResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        endpoint_id: req.endpoint_id,
        ..Default::default()
    };
    match state.store().metadata(&resp.endpoint_id).await {
        Ok(mut md) => {
            if !req.include.is_empty() {
                md.body.retain(|k, _| req.include.contains(k));
            }
            resp.status_code = 200;
            resp.e_tag = Some(md.version.to_string());
            resp.app_version_name = Some(md.app_version);
            if req.include_metadata {
                resp.payload = Some(serde_json::Value::Object(md.body).to_string().into_bytes());
            }
        }
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = AppError::from(e).rfc_status();
        }
    }
    resp
}

/// 19/EPMMP `ep-metadata-patch-request`: applies an RFC 6902 patch, honouring `ifMatch`.
pub async fn answer_patch(
    state: EprState,
    req: EndpointMetadataPatchRequest,
) -> EndpointMetadataPatchResponse {
    let mut resp = EndpointMetadataPatchResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        endpoint_id: req.endpoint_id,
        ..Default::default()
    };
    let outcome = async {
        let expected = match req.if_match.as_deref() {
            None | Some("*") => None,
            Some(tag) => Some(tag.trim_matches('"').parse::<i64>().map_err(|_| {
                AppError::PreconditionFailed(format!("ifMatch {tag:?} does not match the metadata eTag"))
            })?),
        };
        let patch: json_patch::Patch = serde_json::from_slice(&req.patch)
            .map_err(|e| AppError::BadRequest(format!("patch is not an RFC 6902 JSON Patch: {e}")))?;
        state
            .store()
            .patch_metadata(&resp.endpoint_id, &patch, expected)
            .await?;
        Ok::<_, AppError>(())
    };
    match outcome.await {
        Ok(()) => resp.status_code = 200,
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = e.rfc_status();
        }
    }
    resp
}

/// 19/EPMMP `ep-metadata-keys-get-request`: the endpoint's metadata keys.
pub async fn answer_keys(
    state: EprState,
    req: EndpointMetadataKeysGetRequest,
) -> EndpointMetadataKeysGetResponse {
    let mut resp = EndpointMetadataKeysGetResponse {
        correlation_id: req.correlation_id,
        timestamp: now_millis(),
        endpoint_id: req.endpoint_id,
        ..Default::default()
    };
    match state.store().metadata_keys(&resp.endpoint_id).await {
        Ok(keys) => {
            resp.status_code = 200;
            resp.keys = keys;
        }
        Err(e) => {
            (resp.status_code, resp.reason_phrase) = AppError::from(e).rfc_status();
        }
    }
    resp
}

worker::undecodable!(
    EndpointMetadataGetResponse,
    EndpointMetadataPatchResponse,
    EndpointMetadataKeysGetResponse,
);
