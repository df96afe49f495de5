//! Endpoint identification: endpoint token -> endpoint id, through the 16/ECAP provider on the bus.
//!
//! KPC never holds the credential store; it asks the provider once per token per session
//! (the session caches the answer).

use std::time::Duration;

use bytes::Bytes;
use kaa_bus::{Bus, BusError};
use kaa_protocol::avro::AvroRecord;
use kaa_protocol::ecap::{EndpointTokenValidationRequest, EndpointTokenValidationResponse};
use kaa_protocol::{now_millis, subject};

/// A token the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub endpoint_id: String,
    pub token_id: String,
    pub app_version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown or invalid endpoint token")]
    Unknown,
    #[error("token provider unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug)]
pub struct TokenResolver {
    bus: Bus,
    subject: String,
    timeout: Duration,
}

impl TokenResolver {
    pub fn new(bus: Bus, provider: String, timeout: Duration) -> Self {
        TokenResolver {
            bus,
            subject: subject::ecap_token_request(&provider),
            timeout,
        }
    }

    pub async fn resolve(&self, app: &str, app_version: &str, token: &str) -> Result<Identified, TokenError> {
        let request = EndpointTokenValidationRequest {
            correlation_id: format!("ecap-{}", uuid::Uuid::new_v4().simple()),
            timestamp: now_millis(),
            timeout: self.timeout.as_millis() as i64,
            app_name: app.to_owned(),
            token: token.to_owned(),
        };
        let reply = self
            .bus
            .request(&self.subject, Bytes::from(request.to_avro()), self.timeout)
            .await
            .map_err(|e: BusError| TokenError::Unavailable(e.to_string()))?;
        let response = EndpointTokenValidationResponse::from_avro(&reply.payload)
            .map_err(|e| TokenError::Unavailable(format!("malformed ECAP response: {e}")))?;
        match response {
            EndpointTokenValidationResponse {
                status_code: 200..=299,
                endpoint_id: Some(endpoint_id),
                token_id,
                ..
            } => Ok(Identified {
                token_id: token_id.unwrap_or_else(|| endpoint_id.clone()),
                endpoint_id,
                app_version: app_version.to_owned(),
            }),
            EndpointTokenValidationResponse {
                status_code: 400..=499,
                ..
            } => Err(TokenError::Unknown),
            other => Err(TokenError::Unavailable(format!(
                "provider answered {}: {}",
                other.status_code,
                other.reason_phrase.unwrap_or_default()
            ))),
        }
    }
}
