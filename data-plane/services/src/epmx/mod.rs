//! EPMX, the endpoint metadata extension: 10/EPMP for devices, backed by EPR via 19/EPMMP.
//!
//! # Layout
//! - this file: [`Config`], [`serve`] (subscription on `kaa.v1.service.{instance}.esp.ClientData`,
//!   queue group = instance) and [`handle`] (one ClientData -> one ExtensionData).
//! - [`request`]: resource path + payload -> validated [`request::Request`] (RFC 0010 schemas).
//! - [`epr_client`]: the 19/EPMMP calls to EPR, with timeouts.
//!
//! Flow per message (each in its own task, bounded by `max_in_flight`): decode ClientData ->
//! validate -> one or two EPMMP requests -> ExtensionData on the ClientData's `replyTo`, echoing
//! appVersionName, endpointId, resourcePath, requestId and correlationId.
//!
//! Mapping onto 19/EPMMP (EPMX holds no state of its own):
//! - `/get/keys` -> keys-get; `/get` -> get with `include` = the requested keys;
//! - `/update/keys` -> patch with one `add` per key (add replaces an existing member);
//! - `/update` -> get, then a patch adding every given key and removing every other key,
//!   conditional on the eTag just read; retried when another writer got in between;
//! - `/delete/keys` -> get of those keys, then a conditional patch removing the ones present
//!   (deleting an absent key is not an error: the end state is what the device asked for).

use std::time::Duration;

use kaa_blueprint::config::Live;
use kaa_bus::Bus;
use kaa_protocol::{
    esp::{ClientData, ExtensionData},
    subject,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{extension, worker};

pub mod epr_client;
pub mod request;

use epr_client::{EprClient, Failure};
use request::Request;

/// How often a conditional write (`/update`, `/delete/keys`) is retried after losing a race.
const CONDITIONAL_RETRIES: usize = 3;

/// EPMX configuration: the one typed config rendered from a Blueprint
/// ([`kaa_blueprint::config::EpmxConfig`]).
pub use kaa_blueprint::config::EpmxConfig as Config;

pub use crate::ServeError;

/// Checks the instance names and the timeout.
pub fn validate(config: &Config) -> Result<(), ServeError> {
    if !subject::is_valid_token(&config.instance) {
        return Err(ServeError::config(
            "EPMX",
            "instance must be a non-empty NATS subject token",
        ));
    }
    if !subject::is_valid_token(&config.epr_instance) {
        return Err(ServeError::config(
            "EPMX",
            "eprInstance must be a non-empty NATS subject token",
        ));
    }
    if config.request_timeout_ms == 0 {
        return Err(ServeError::config(
            "EPMX",
            "requestTimeoutMs must be greater than 0",
        ));
    }
    Ok(())
}

/// Runs EPMX until `shutdown` is cancelled (then waits for requests in flight). Each request
/// reads the live config once: a changed `platformKeys` or timeout applies to the next request
/// (the instance names and `maxInFlight` are fixed at start).
///
/// Returns early only if the config is invalid or the subscription cannot be made.
pub async fn serve(
    bus: Bus,
    config: impl Into<Live<Config>>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let live = config.into();
    let config = live.get();
    validate(&config)?;
    let subject = subject::esp_client_data(&config.instance);
    let sub = worker::subscribe(&bus, subject, &config.instance, |subject, source| {
        ServeError::Subscribe { subject, source }
    })
    .await?;
    tracing::info!(instance = %config.instance, epr = %config.epr_instance, "EPMX ready");
    let epr_bus = bus.clone();
    extension::serve_client_data(
        "epmx.esp.ClientData",
        &bus,
        sub,
        config.max_in_flight,
        &shutdown,
        move |_msg, data| {
            let config = live.get();
            let epr = EprClient::new(
                epr_bus.clone(),
                config.epr_instance.clone(),
                Duration::from_millis(config.request_timeout_ms),
            );
            async move { handle(&epr, &config.instance, &config.platform_keys, data).await }
        },
    )
    .await;
    Ok(())
}

/// Answers one 10/EPMP request. `platform_keys` are hidden from the device (10/EPMP access
/// control: keys it may neither read nor write are left out of listings; naming one is 403).
pub async fn handle(
    epr: &EprClient,
    instance: &str,
    platform_keys: &[String],
    data: ClientData,
) -> ExtensionData {
    let outcome = match &data.endpoint_id {
        None => Err(Failure::new(
            400,
            "10/EPMP is endpoint-aware: the request carries no endpoint (token)",
        )),
        Some(endpoint_id) => match request::parse(&data.resource_path, &data.payload) {
            Err(e) => Err(Failure::new(e.status_code(), e.to_string())),
            Ok(req) => match named_platform_key(&req, platform_keys) {
                Some(key) => Err(Failure::new(
                    403,
                    format!("metadata key {key} is maintained by the platform"),
                )),
                None => execute(epr, &data.correlation_id, endpoint_id, platform_keys, req).await,
            },
        },
    };
    extension::answer(data, instance, outcome)
}

/// The first platform key a request names explicitly.
fn named_platform_key<'a>(req: &'a Request, platform_keys: &[String]) -> Option<&'a str> {
    let named: Box<dyn Iterator<Item = &String>> = match req {
        Request::GetKeys | Request::Get(None) => return None,
        Request::Get(Some(keys)) | Request::DeleteKeys(keys) => Box::new(keys.iter()),
        Request::Update(values) | Request::UpdateKeys(values) => Box::new(values.keys()),
    };
    named
        .map(String::as_str)
        .find(|k| platform_keys.iter().any(|p| p == k))
}

/// Runs a validated request against EPR; `Some(bytes)` is the response payload.
async fn execute(
    epr: &EprClient,
    cid: &str,
    endpoint_id: &str,
    platform_keys: &[String],
    req: Request,
) -> Result<Option<Vec<u8>>, Failure> {
    let hidden = |k: &String| platform_keys.contains(k);
    match req {
        Request::GetKeys => {
            let mut keys = epr.keys(cid, endpoint_id).await?;
            keys.retain(|k| !hidden(k));
            Ok(Some(Value::from(keys).to_string().into_bytes()))
        }
        Request::Get(keys) => {
            let body = match keys {
                // EPMMP's empty `include` means "all", so "none of them" is asked as an existence check.
                Some(keys) if keys.is_empty() => {
                    epr.keys(cid, endpoint_id).await?;
                    serde_json::Map::new()
                }
                Some(keys) => epr.get(cid, endpoint_id, &keys).await?.body,
                None => {
                    let mut body = epr.get(cid, endpoint_id, &[]).await?.body;
                    body.retain(|k, _| !hidden(k));
                    body
                }
            };
            Ok(Some(Value::Object(body).to_string().into_bytes()))
        }
        Request::UpdateKeys(values) => {
            let ops = values
                .into_iter()
                .map(|(k, v)| json!({"op": "add", "path": pointer(&k), "value": v}))
                .collect();
            epr.patch(cid, endpoint_id, None, ops).await?;
            Ok(None)
        }
        Request::Update(values) => {
            conditional(epr, cid, endpoint_id, &[], |current| {
                let removals = current
                    .keys()
                    .filter(|k| !values.contains_key(*k) && !hidden(k))
                    .map(|k| json!({"op": "remove", "path": pointer(k)}));
                let adds = values
                    .iter()
                    .map(|(k, v)| json!({"op": "add", "path": pointer(k), "value": v}));
                removals.chain(adds).collect()
            })
            .await?;
            Ok(None)
        }
        Request::DeleteKeys(keys) => {
            conditional(epr, cid, endpoint_id, &keys, |current| {
                current
                    .keys()
                    .map(|k| json!({"op": "remove", "path": pointer(k)}))
                    .collect()
            })
            .await?;
            Ok(None)
        }
    }
}

/// Read (the `include` keys), compute a patch from what is there, write it conditional on the
/// eTag read; start over when EPR reports the eTag stale (412).
async fn conditional(
    epr: &EprClient,
    cid: &str,
    endpoint_id: &str,
    include: &[String],
    ops_for: impl Fn(&serde_json::Map<String, Value>) -> Vec<Value>,
) -> Result<(), Failure> {
    for _ in 0..CONDITIONAL_RETRIES {
        let snapshot = epr.get(cid, endpoint_id, include).await?;
        let ops = ops_for(&snapshot.body);
        if ops.is_empty() {
            return Ok(());
        }
        match epr.patch(cid, endpoint_id, snapshot.e_tag, ops).await {
            Err(f) if f.status_code == 412 => continue,
            other => return other,
        }
    }
    Err(Failure::new(
        409,
        "metadata kept changing concurrently; try again",
    ))
}

/// JSON Pointer to a top-level key. Valid keys (`^[a-zA-Z0-9_]+$`) need no `~` escaping.
fn pointer(key: &str) -> String {
    format!("/{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_rejects_unknown_fields() {
        let cfg: Config =
            serde_json::from_str(r#"{"instance": "epmx", "eprInstance": "epr", "requestTimeoutMs": 250}"#)
                .unwrap();
        assert_eq!(cfg.instance, "epmx");
        assert_eq!(cfg.epr_instance, "epr");
        assert_eq!(cfg.request_timeout_ms, 250);
        assert_eq!(cfg.max_in_flight, Config::default().max_in_flight);
        validate(&cfg).unwrap();
        validate(&Config::default()).unwrap();
        assert!(
            serde_json::from_str::<Config>(r#"{"instance": "epmx", "eprInstance": "epr", "timeout": 1}"#)
                .is_err()
        );
        let zero = Config {
            request_timeout_ms: 0,
            ..Config::default()
        };
        assert!(validate(&zero).is_err());
        let bad = Config {
            epr_instance: "a.b".into(),
            ..Config::default()
        };
        assert!(validate(&bad).is_err());
    }
}
