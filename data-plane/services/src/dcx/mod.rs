//! DCX, the 2/DCP data collection extension: device samples -> 13/DSTP data sample events.
//!
//! # Layout
//! - this file: [`Config`], [`validate`], [`serve`] (subscription on
//!   `kaa.v1.service.{instance}.esp.ClientData`, queue group = instance, plus this replica's
//!   answer subject) and [`Dcx::handle`] (one ClientData -> one ExtensionData).
//! - [`batch`]: payload -> samples (pure).
//! - [`acks`]: receivers' `DataSamplesProcessed` answers routed to the batch waiting for them.
//!
//! Flow per request: `/json` only; validate the batch against the version's `maxBatch`;
//! broadcast a `DataSamplesEvent` on `kaa.v1.events.{instance}.endpoint.data-collection.
//! data-samples-received` (with `replyTo` = `kaa.v1.replica.{replica}.dstp.DataSamplesProcessed`
//! when any receiver of the version is reliable); wait up to `receiverTimeoutMs` for every reliable
//! receiver's answer; then answer the device: 200 with an empty payload, or `/error` with 500 (a
//! receiver failed; its reason included) or 504 (a receiver did not answer in time). DCX stores
//! nothing itself. A request without request id is handled the same; the gateway drops the
//! empty success (1/KP), so the device sees only errors.

use std::time::Duration;

use bytes::Bytes;
use kaa_blueprint::config::Live;
use kaa_bus::{Bus, BusError, Message};
use kaa_protocol::{
    avro::AvroRecord,
    collection::{self, DataSamplesEvent},
    esp::{ClientData, ExtensionData},
    now_millis, subject,
};
use tokio_util::sync::CancellationToken;

use crate::worker;

pub mod acks;
pub mod batch;

pub use kaa_blueprint::config::{DataReceiver, DcxAppVersion, DcxConfig as Config};

/// The one resource of 2/DCP.
const JSON_RESOURCE: &str = "/json";

pub use crate::ServeError;

/// Checks the instance and receiver names, limits and the timeout.
pub fn validate(config: &Config) -> Result<(), ServeError> {
    let fail = |m: String| Err(ServeError::config("DCX", m));
    if !subject::is_valid_token(&config.instance) {
        return fail("instance must be a non-empty NATS subject token".into());
    }
    if config.receiver_timeout_ms == 0 {
        return fail("receiverTimeoutMs must be greater than 0".into());
    }
    for (version, settings) in &config.app_versions {
        if settings.max_batch == 0 {
            return fail(format!("{version}: maxBatch must be at least 1"));
        }
        if let Some(bad) = settings.receivers.iter().find(|r| r.name.is_empty()) {
            return fail(format!("{version}: receiver name {:?} is empty", bad.name));
        }
    }
    Ok(())
}

/// What every request handler of one DCX replica shares.
#[derive(Debug, Clone)]
pub struct Dcx {
    bus: Bus,
    /// Read once per request; replaced by a live config change.
    config: Live<Config>,
    /// Where receivers answer this replica.
    reply_subject: String,
    acks: acks::Acks,
}

/// Runs DCX until `shutdown` is cancelled (then waits for requests in flight). `replica` names
/// this replica's answer subject.
pub async fn serve(
    bus: Bus,
    config: impl Into<Live<Config>>,
    replica: &str,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let live = config.into();
    let config = live.get();
    validate(&config)?;
    let subscribe_error = |subject, source| ServeError::Subscribe { subject, source };
    let reply_subject = subject::dstp_processed_replica(replica);
    // Plain subscription: the subject is this replica's own.
    let answers = bus
        .subscribe(&reply_subject, None)
        .await
        .map_err(|e| subscribe_error(reply_subject.clone(), e))?;
    let requests = worker::subscribe(
        &bus,
        subject::esp_client_data(&config.instance),
        &config.instance,
        subscribe_error,
    )
    .await?;
    let dcx = Dcx {
        bus: bus.clone(),
        reply_subject,
        acks: acks::Acks::default(),
        config: live,
    };
    let router = {
        let (acks, stop) = (dcx.acks.clone(), shutdown.clone());
        tokio::spawn(async move { acks.route(answers, stop).await })
    };
    tracing::info!(instance = %config.instance, versions = config.app_versions.len(), "DCX ready");
    let max_in_flight = config.max_in_flight;
    worker::run(
        "dcx.esp.ClientData",
        requests,
        max_in_flight,
        &shutdown,
        move |msg: Message| {
            let dcx = dcx.clone();
            async move {
                let data = match ClientData::from_avro(&msg.payload) {
                    Ok(data) => data,
                    Err(e) => {
                        tracing::warn!(subject = %msg.subject, error = %e, "undecodable ClientData dropped");
                        return;
                    }
                };
                let reply = dcx.handle(data).await;
                worker::reply(&dcx.bus, &msg, reply.to_avro()).await;
            }
        },
    )
    .await;
    let _ = router.await;
    Ok(())
}

impl Dcx {
    /// Answers one 2/DCP request.
    pub async fn handle(&self, data: ClientData) -> ExtensionData {
        let outcome = self.collect(&data).await;
        if let Err((status, reason)) = &outcome {
            tracing::debug!(correlation_id = %data.correlation_id, status, %reason, "DCP request failed");
        }
        let (status_code, reason_phrase) = match outcome {
            Ok(()) => (200, None),
            Err((status, reason)) => (status, Some(reason)),
        };
        ExtensionData {
            correlation_id: data.correlation_id,
            timestamp: now_millis(),
            timeout: 0,
            app_version_name: Some(data.app_version_name),
            extension_instance_name: Some(self.config.get().instance.clone()),
            endpoint_id: data.endpoint_id,
            resource_path: data.resource_path,
            request_id: data.request_id,
            payload: None,
            status_code,
            reason_phrase,
        }
    }

    async fn collect(&self, data: &ClientData) -> Result<(), (i32, String)> {
        let config = self.config.get();
        let Some(endpoint_id) = &data.endpoint_id else {
            return Err((
                400,
                "2/DCP is endpoint-aware: the request carries no endpoint (token)".into(),
            ));
        };
        if data.resource_path != JSON_RESOURCE {
            return Err((
                404,
                format!("unknown resource {}: 2/DCP has /json", data.resource_path),
            ));
        }
        let Some(settings) = config.app_versions.get(&data.app_version_name) else {
            return Err((
                404,
                format!("application version {} is not served here", data.app_version_name),
            ));
        };
        let samples =
            batch::parse(&data.payload, settings.max_batch).map_err(|e| (e.status_code(), e.to_string()))?;
        let reliable: Vec<String> = settings
            .receivers
            .iter()
            .filter(|r| r.reliable)
            .map(|r| r.name.clone())
            .collect();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let event = DataSamplesEvent {
            correlation_id: correlation_id.clone(),
            // When the gateway received the samples: receivers use it for samples without a time.
            timestamp: data.timestamp,
            timeout: i64::try_from(config.receiver_timeout_ms).unwrap_or(i64::MAX),
            app_version_name: data.app_version_name.clone(),
            endpoint_id: endpoint_id.clone(),
            content_type: collection::JSON.to_owned(),
            data_samples: samples,
        };
        let subject = subject::dstp_data_samples(&config.instance);
        let payload = Bytes::from(event.to_avro());
        tracing::debug!(request = %data.correlation_id, batch = %correlation_id, "forwarding data samples");
        if reliable.is_empty() {
            return self.bus.publish(&subject, payload).await.map_err(unavailable);
        }
        let waiter = self.acks.register(&correlation_id);
        self.bus
            .publish_with_reply(&subject, &self.reply_subject, payload)
            .await
            .map_err(unavailable)?;
        let timeout = Duration::from_millis(config.receiver_timeout_ms);
        let (answers, missing) = waiter.collect(&reliable, timeout).await;
        let failed: Vec<String> = answers
            .iter()
            .filter(|a| !(200..300).contains(&a.status_code))
            .map(|a| {
                format!(
                    "{}: {} {}",
                    a.receiver_service_instance_name,
                    a.status_code,
                    a.reason_phrase.as_deref().unwrap_or("")
                )
                .trim_end()
                .to_owned()
            })
            .collect();
        match (failed.is_empty(), missing.is_empty()) {
            (true, true) => Ok(()),
            (false, _) => Err((500, format!("data receivers failed: {}", failed.join("; ")))),
            (true, false) => Err((
                504,
                format!(
                    "no confirmation from {} within {} ms",
                    missing.join(", "),
                    config.receiver_timeout_ms
                ),
            )),
        }
    }
}

fn unavailable(e: BusError) -> (i32, String) {
    tracing::warn!(error = %e, "cannot publish data samples");
    (503, "data samples cannot be forwarded right now".into())
}
