//! What every 1/KP extension service shares: the answer to a device request ([`answer`]) and the
//! 4/ESP `ClientData` loop ([`serve_client_data`]: decode, handle, reply on `replyTo`).

use std::future::Future;

use kaa_bus::{Bus, Message, Subscription};
use kaa_protocol::{
    avro::AvroRecord,
    esp::{ClientData, ExtensionData},
    now_millis,
};
use tokio_util::sync::CancellationToken;

use crate::worker;

/// A failed device request: the status code and reason phrase of its ExtensionData (the device
/// gets them as the 1/KP error on `/error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status_code} {reason}")]
pub struct Failure {
    pub status_code: i32,
    pub reason: String,
}

impl Failure {
    pub fn new(status_code: i32, reason: impl Into<String>) -> Self {
        Self {
            status_code,
            reason: reason.into(),
        }
    }
}

/// The ExtensionData answering `data`: `Ok(payload)` is a 200 (with the payload, if any).
pub fn answer(data: ClientData, instance: &str, outcome: Result<Option<Vec<u8>>, Failure>) -> ExtensionData {
    if let Err(f) = &outcome {
        tracing::debug!(
            correlation_id = %data.correlation_id,
            path = %data.resource_path,
            status = f.status_code,
            reason = %f.reason,
            "device request failed"
        );
    }
    let (status_code, payload, reason_phrase) = match outcome {
        Ok(payload) => (200, payload, None),
        Err(f) => (f.status_code, None, Some(f.reason)),
    };
    ExtensionData {
        correlation_id: data.correlation_id,
        timestamp: now_millis(),
        timeout: 0,
        app_version_name: Some(data.app_version_name),
        extension_instance_name: Some(instance.to_owned()),
        endpoint_id: data.endpoint_id,
        resource_path: data.resource_path,
        request_id: data.request_id,
        payload,
        status_code,
        reason_phrase,
    }
}

/// Runs `handle` for every ClientData of `sub` and publishes its answer on the message's
/// `replyTo`, until `shutdown` (see [`worker::run`]). `handle` also gets the message, for its
/// `replyTo`. An undecodable ClientData is dropped: there is nothing to route an answer by.
pub async fn serve_client_data<H, Fut>(
    name: &str,
    bus: &Bus,
    sub: Subscription,
    max_in_flight: usize,
    shutdown: &CancellationToken,
    handle: H,
) where
    H: Fn(Message, ClientData) -> Fut,
    Fut: Future<Output = ExtensionData> + Send + 'static,
{
    worker::run(name, sub, max_in_flight, shutdown, |msg: Message| {
        let bus = bus.clone();
        let work = match ClientData::from_avro(&msg.payload) {
            Ok(data) => Some(handle(msg.clone(), data)),
            Err(e) => {
                tracing::warn!(subject = %msg.subject, error = %e, "undecodable ClientData dropped");
                None
            }
        };
        async move {
            if let Some(work) = work {
                let reply = work.await;
                worker::reply(&bus, &msg, reply.to_avro()).await;
            }
        }
    })
    .await;
}

/// Whether `payload` is empty or whitespace only (devices send no payload for "nothing").
pub fn is_blank(payload: &[u8]) -> bool {
    payload.iter().all(u8::is_ascii_whitespace)
}
