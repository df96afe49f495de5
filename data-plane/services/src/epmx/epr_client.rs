//! EPMX's only way to metadata: 19/EPMMP requests to EPR over the bus.
//!
//! Each call is one request/reply with the configured timeout. Failures become a [`Failure`]
//! already phrased for the device: EPR's own 4xx answers pass through, a silent EPR becomes 504,
//! an unreachable one 503, and a garbled or unexpected answer 502.

use std::time::Duration;

use bytes::Bytes;
use kaa_bus::{Bus, BusError};
use kaa_protocol::{
    avro::AvroRecord,
    epmmp::{
        self, EndpointMetadataGetRequest, EndpointMetadataGetResponse, EndpointMetadataKeysGetRequest,
        EndpointMetadataKeysGetResponse, EndpointMetadataPatchRequest, EndpointMetadataPatchResponse,
    },
    now_millis, subject,
};
use serde_json::{Map, Value};

/// A failed 10/EPMP request: status code and reason phrase for the ExtensionData reply.
pub use crate::extension::Failure;

/// Metadata as read from EPR.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub e_tag: Option<String>,
    pub body: Map<String, Value>,
}

/// 19/EPMMP client bound to one EPR instance.
#[derive(Debug, Clone)]
pub struct EprClient {
    bus: Bus,
    epr_instance: String,
    timeout: Duration,
}

impl EprClient {
    pub fn new(bus: Bus, epr_instance: String, timeout: Duration) -> Self {
        Self {
            bus,
            epr_instance,
            timeout,
        }
    }

    fn timeout_ms(&self) -> i64 {
        i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX)
    }

    /// The metadata (only `include` keys, or all when empty) with its ETag.
    pub async fn get(
        &self,
        correlation_id: &str,
        endpoint_id: &str,
        include: &[String],
    ) -> Result<Snapshot, Failure> {
        let req = EndpointMetadataGetRequest {
            correlation_id: correlation_id.to_owned(),
            timestamp: now_millis(),
            timeout: self.timeout_ms(),
            endpoint_id: endpoint_id.to_owned(),
            include: include.to_vec(),
            include_metadata: true,
        };
        let resp: EndpointMetadataGetResponse = self.call(epmmp::GET_REQUEST, &req).await?;
        check(resp.status_code, resp.reason_phrase, endpoint_id)?;
        let body = match resp.payload.as_deref().map(serde_json::from_slice::<Value>) {
            None => Map::new(),
            Some(Ok(Value::Object(map))) => map,
            Some(_) => {
                return Err(Failure::new(
                    502,
                    "endpoint register returned metadata that is not a JSON object",
                ));
            }
        };
        Ok(Snapshot {
            e_tag: resp.e_tag,
            body,
        })
    }

    /// The endpoint's metadata keys.
    pub async fn keys(&self, correlation_id: &str, endpoint_id: &str) -> Result<Vec<String>, Failure> {
        let req = EndpointMetadataKeysGetRequest {
            correlation_id: correlation_id.to_owned(),
            timestamp: now_millis(),
            timeout: self.timeout_ms(),
            endpoint_id: endpoint_id.to_owned(),
        };
        let resp: EndpointMetadataKeysGetResponse = self.call(epmmp::KEYS_GET_REQUEST, &req).await?;
        check(resp.status_code, resp.reason_phrase, endpoint_id)?;
        Ok(resp.keys)
    }

    /// Applies RFC 6902 operations; `if_match` makes it conditional (412 when stale).
    pub async fn patch(
        &self,
        correlation_id: &str,
        endpoint_id: &str,
        if_match: Option<String>,
        operations: Vec<Value>,
    ) -> Result<(), Failure> {
        let req = EndpointMetadataPatchRequest {
            correlation_id: correlation_id.to_owned(),
            timestamp: now_millis(),
            timeout: self.timeout_ms(),
            endpoint_id: endpoint_id.to_owned(),
            if_match,
            patch: Value::Array(operations).to_string().into_bytes(),
        };
        let resp: EndpointMetadataPatchResponse = self.call(epmmp::PATCH_REQUEST, &req).await?;
        check(resp.status_code, resp.reason_phrase, endpoint_id)
    }

    async fn call<Req: AvroRecord, Resp: AvroRecord>(
        &self,
        message_type: &str,
        req: &Req,
    ) -> Result<Resp, Failure> {
        let subject = subject::epmmp_request(&self.epr_instance, message_type);
        let reply = self
            .bus
            .request(&subject, Bytes::from(req.to_avro()), self.timeout)
            .await
            .map_err(|e| match e {
                BusError::Timeout => Failure::new(
                    504,
                    format!(
                        "endpoint register did not answer within {} ms",
                        self.timeout.as_millis()
                    ),
                ),
                BusError::NoResponders(_) => Failure::new(503, "endpoint register is not available"),
                other => {
                    tracing::warn!(subject = %subject, error = %other, "EPMMP request failed");
                    Failure::new(503, "endpoint register is not reachable")
                }
            })?;
        Resp::from_avro(&reply.payload).map_err(|e| {
            tracing::warn!(subject = %subject, error = %e, "undecodable EPMMP response");
            Failure::new(502, "endpoint register sent an invalid response")
        })
    }
}

/// Maps EPR's status to success or a device-facing failure.
fn check(status_code: i32, reason: Option<String>, endpoint_id: &str) -> Result<(), Failure> {
    match status_code {
        200..=299 => Ok(()),
        404 => Err(Failure::new(404, format!("endpoint {endpoint_id} not found"))),
        // EPR's client errors are about this request: pass them on as they are.
        400..=499 => Err(Failure::new(
            status_code,
            reason.unwrap_or_else(|| "rejected by the endpoint register".into()),
        )),
        _ => Err(Failure::new(
            502,
            format!(
                "endpoint register failed with status {status_code}{}",
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        )),
    }
}
